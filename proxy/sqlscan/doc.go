// Package sqlscan finds, in the SQL text of a Query or Parse message, the
// few statements that change session state, so that a transaction-pooling
// proxy can carry a client's settings from one server connection to the
// next, refuse a search_path it must not allow, and notice what cannot be
// pooled per transaction. It is a lexer that follows PostgreSQL's own
// (scan.l) and reads no further into the grammar than those statements
// need. It never allocates for text that holds nothing of interest.
//
// # What is recognised
//
// Statements, by their first words (case-insensitive, after any
// whitespace and comments):
//
//   - SET [SESSION|LOCAL] name {TO|=} value[, ...] | DEFAULT, SET name FROM
//     CURRENT, SET TIME ZONE, SET SCHEMA, SET NAMES, SET XML OPTION, SET
//     ROLE, SET SESSION AUTHORIZATION (Set, SetLocal, SetRole,
//     SetSessionAuthorization); SET TRANSACTION, SET SESSION
//     CHARACTERISTICS and SET CONSTRAINTS (SetTransaction);
//   - RESET name, RESET ALL;
//   - LISTEN, UNLISTEN;
//   - PREPARE, EXECUTE, DEALLOCATE (SQL-level prepared statements);
//   - DECLARE ... CURSOR WITH HOLD;
//   - CREATE TEMP/TEMPORARY ..., CREATE statements that name something in
//     pg_temp (CREATE TABLE pg_temp.t, CREATE FUNCTION pg_temp.f), SELECT
//     ... INTO TEMP t (also in a WITH statement, in parentheses, and under
//     EXPLAIN);
//   - DISCARD, LOAD.
//
// Calls found anywhere in any statement, as a name followed by '(',
// unqualified or qualified by pg_catalog (quoted or U&-escaped names
// included):
//
//   - set_config(name, value, is_local), with its arguments when they are
//     literals or bind parameters;
//   - the session-level advisory lock functions pg_advisory_lock,
//     pg_advisory_lock_shared, pg_try_advisory_lock and
//     pg_try_advisory_lock_shared (the _xact_ variants release their locks
//     at the end of the transaction and are not reported).
//
// Parameter names are lower-cased even when quoted, because PostgreSQL
// looks them up ignoring case: SET "Search_Path" changes search_path.
// Other identifiers are folded to lower case unless quoted. Identifiers are
// truncated to 63 bytes as PostgreSQL truncates them.
//
// # Lexing
//
// Text inside '--' and nested '/* */' comments, '...' strings (a quote
// inside doubled), E'...' strings (with backslash escapes), U&'...'
// strings and U&"..." identifiers (with UESCAPE), B'...', X'...' and
// N'...' strings, "..." identifiers (a double quote inside doubled), and
// $$...$$ and $tag$...$tag$ dollar quotes is
// never taken for a statement boundary or a keyword. String constants
// separated by whitespace holding a newline are joined, as SQL requires.
// $1 is a parameter, not a dollar quote, and in a$$ the '$' characters
// belong to the identifier. Statements are split on ';' outside
// parentheses, where PostgreSQL splits them.
//
// The lexer assumes what a proxy must therefore enforce:
//
//   - standard_conforming_strings is on. With it off, a backslash escapes
//     a quote in '...' too, and a statement can hide inside what the scan
//     takes for a string. A proxy must refuse to let a client turn it off
//     (by SET, set_config, or the startup packet's parameters and options).
//   - The client encoding keeps ASCII bytes ASCII. Every server encoding
//     does, but the client-only encodings SJIS, BIG5, GBK, UHC, GB18030
//     and JOHAB put bytes such as '\' inside multibyte characters, and the
//     server reads the text only after converting it. A proxy must refuse
//     them as client_encoding.
//
// Text that PostgreSQL rejects (an unterminated quote, a syntax error
// anywhere) runs not at all, because the server parses a whole query
// string before it runs any of it; Scan returns ErrUnterminated for the
// former. Where PostgreSQL versions lex a number directly followed by
// letters differently (1e'x', 0x'1F'), the scan reads it as the older
// versions do, and the newer ones reject such text.
//
// # What is not recognised
//
// Only the statement text is read, so session state changed by code that
// runs inside the server is not seen: settings, LISTEN, temporary tables,
// cursors and advisory locks in functions, procedures (CALL), DO blocks,
// triggers, rules and views, including set_config reached through any of
// them and statements run by PL/pgSQL EXECUTE. Neither is:
//
//   - a statement run by EXPLAIN ANALYZE other than CREATE ... AS and
//     SELECT INTO (EXPLAIN EXECUTE q is Other);
//   - a table created without TEMP in the temporary schema because
//     search_path starts with pg_temp, or a view that becomes temporary
//     because it reads a temporary table named without pg_temp;
//   - other per-session state: sequence values for currval and lastval,
//     setseed, prepared statements made with the extended protocol (a
//     proxy sees those Parse messages itself);
//   - ALTER ROLE/DATABASE ... SET, which change only the settings of
//     connections made later (such as the proxy's own new ones).
//
// Scan reports what a statement asks for, not what it did: a SET that
// fails, or runs in a transaction that rolls back, changes nothing.
//
// # False positives
//
// The scan errs on the side of reporting. A set_config or lock call is
// reported where it is written even if it does not run now: in PREPARE
// (not when the statement is executed), in CREATE VIEW, CREATE RULE or a
// SQL-standard function body, and under a plain EXPLAIN. A BEGIN ATOMIC
// function body is split into statements at its semicolons. An
// unqualified set_config may resolve to another schema's function if
// search_path puts that schema before pg_catalog. A CREATE statement that
// merely reads from pg_temp is taken for CreateTemp.
package sqlscan
