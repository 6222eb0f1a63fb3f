// Package pgcluster owns a throwaway PostgreSQL server: one initdb'd data
// directory in a fresh temporary directory, one postmaster listening on a free
// loopback port, and the removal of both when the caller is done. The
// `pgtenant demo` and `pgtenant bench` commands and the tests start their
// backends through it; it is product code (demo and bench ship in the
// binary), so it lives outside integration/, and nothing in the proxy
// itself imports it.
//
// # Lifecycle
//
// Start finds the server binaries (Options.BinDir, else $PGTENANT_PG_BIN, else
// /usr/lib/postgresql/15/bin), creates the directory with os.MkdirTemp, runs
// initdb (trust authentication, superuser "postgres", UTF8, locale C, no
// fsync), appends the server settings to postgresql.conf, and starts the server
// with pg_ctl on a port it has just seen free, trying a few ports if another
// process wins the race for one. It returns only once a pgx connection
// succeeds, polling until the context's deadline (DefaultStartTimeout when the
// context has none). If anything fails after the directory exists, Start stops
// what it started, removes the directory and puts the tail of the server log
// in its error.
//
// Stop shuts the server down with pg_ctl's immediate mode (the data is
// throwaway, so crash recovery is never needed) and removes the directory. It
// is safe to call more than once; ServerLog keeps working after it.
//
// # Isolation from a system server
//
// The server listens only on 127.0.0.1 and puts its Unix socket in its own
// temporary directory, so it never collides with a PostgreSQL the machine's
// package started on 5432 or /var/run/postgresql. PG* environment variables
// are not passed to the server binaries.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When the process is root (as in CI and
// containers), initdb and pg_ctl run as the "postgres" OS user through
// `runuser -u postgres --`, and the temporary directory is handed to that user
// first. The directory must therefore be reachable by that user: the default
// os.TempDir() (/tmp) is; a TMPDIR under /root is not.
//
// # Server log
//
// The postmaster's stderr is a pipe that this package copies into server.log in
// the temporary directory and, when Options.Log is set, to that writer as
// well. Options.Log must stay usable until Stop returns; Stop waits for the
// copy to finish before it returns.
package pgcluster
