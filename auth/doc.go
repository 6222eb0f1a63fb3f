// Package auth owns how a client proves who it is to pgtenant.
//
// A client's password exchange never reaches the backend: the pool logs in
// with its own credentials, and a Method here decides whether the client may
// in. The proxy hands a Method its side of the connection (Conn: send,
// flush, read the next password message, is it TLS, where from) and the
// startup packet's user name; the Method either sends AuthenticationOk or
// returns an error, an *Error for what the client must be told.
//
// # Methods
//
// NewMethod builds one by kind, the values of --auth-type:
//
//   - scram-sha-256 (SCRAMSHA256): SASL SCRAM-SHA-256 (RFC 5802, RFC 7677)
//     as PostgreSQL's auth-scram.c runs it. Only SCRAM-SHA-256 is offered,
//     not SCRAM-SHA-256-PLUS: no channel binding yet.
//   - md5 (MD5): the salted md5 challenge for users with an md5 hash or a
//     plain password; users with a SCRAM verifier get SCRAM instead, as
//     PostgreSQL does with md5 in pg_hba.conf.
//   - password (Password): the cleartext password, refused (28000) on a
//     connection without TLS unless Options.AllowCleartextWithoutTLS.
//   - trust (Trust): no password at all.
//
// Failures are answered as PostgreSQL answers them, FATAL 28P01 `password
// authentication failed for user "x"` whatever the reason: wrong password,
// unknown user, or a user whose secret cannot serve the method (an md5 hash
// under scram-sha-256). Malformed messages get 08P01 with PostgreSQL's
// wording. Error.Log says the real reason, for the proxy's log only.
//
// # No user enumeration
//
// An unknown user goes through the same exchange as a known one, in the same
// messages and round trips, and fails at the same point with the same error.
// Under SCRAM the exchange runs against a mock verifier whose salt is an HMAC
// of the user name under Options.MockSecret, so the same unknown name always
// gets the same salt, like a real user, with the same iteration count
// (Options.Iterations). Verifiers derived from plain passwords use that same
// salt derivation, so they cannot be told from the mock either. Set
// MockSecret from configuration to keep salts stable across restarts; by
// default it is random per process. The client proof is computed in the mock
// exchange too, so the time spent does not tell either.
//
// Under md5, an unknown user gets the mock exchange of Options.MockMethod
// (SCRAM by default, as PostgreSQL with its default password_encryption):
// choose the kind most users in the source have.
//
// # User sources
//
// A UserSource maps a user name to a Secret: a SCRAM-SHA-256 verifier
// ("SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>", what PostgreSQL
// stores), an md5 hash ("md5" and 32 hex digits) or a plain password.
//
// UserFile reads PgBouncer's userlist.txt format (ParseUserList):
//
//	; comment
//	"alice" "SCRAM-SHA-256$4096:c2FsdA==$...:..."
//	"bob"   "md5d1d3d1b0d0d9e9f3a0bd6f3e4c1c5c2b"
//	"carol" "plain ""quoted"" password"
//
// It reloads without a restart (UserFile.Reload, for the proxy to call on
// SIGHUP): the new file is parsed in full and swapped in atomically, and a
// broken file keeps the old users in force and reports every bad line with
// its number.
//
// AuthQuery asks the backend with a query that takes the user name as $1
// (always a bind parameter, never spliced in) and returns (rolname text,
// rolpassword text), PgBouncer's auth_query convention; no row or a NULL
// password is an unknown user. It runs on whatever Querier it is given; the
// proxy gives it the tenant registry's connections (a small pool of their
// own on the backend DSN, application_name "pgtenant registry"), not the
// pool that carries tenant traffic, so a login never waits for a backend
// that tenants' queries are holding. The default query calls a function
// that reads pg_authid, which only a superuser may read, so the function
// runs as its owner (SECURITY DEFINER) and the proxy's own role needs
// nothing but the right to call it. As a superuser, in the database of the
// backend DSN:
//
//	CREATE SCHEMA IF NOT EXISTS pgtenant;
//
//	CREATE OR REPLACE FUNCTION pgtenant.user_secret(p_user text)
//	RETURNS TABLE (rolname text, rolpassword text)
//	LANGUAGE sql STABLE STRICT SECURITY DEFINER
//	-- A SECURITY DEFINER function must not trust the caller's search_path.
//	SET search_path = pg_catalog, pg_temp
//	AS $$
//	    SELECT a.rolname::text,
//	           CASE WHEN a.rolvaliduntil < now() THEN NULL
//	                ELSE a.rolpassword END
//	      FROM pg_catalog.pg_authid a
//	     WHERE a.rolname = p_user
//	       AND a.rolcanlogin
//	       AND NOT a.rolsuper   -- superusers do not log in through the proxy
//	$$;
//
//	REVOKE ALL ON FUNCTION pgtenant.user_secret(text) FROM PUBLIC;
//	GRANT USAGE ON SCHEMA pgtenant TO pgtenant_proxy;
//	GRANT EXECUTE ON FUNCTION pgtenant.user_secret(text) TO pgtenant_proxy;
//
// where pgtenant_proxy is the role of the proxy's backend DSN. The function
// is owned by the superuser that created it; nobody else may replace it
// (only the owner can), and the proxy's role gets no read access to
// pg_authid itself. A custom query must use $1 only and should
// schema-qualify every object it names.
//
// # Slowing down failures
//
// Limiter delays the attempts of an address (IPv4, or IPv6 /64) after
// repeated wrong passwords, with a growing, bounded delay, and queues its
// delayed attempts so that parallel connections gain nothing; Limiter.Wrap
// puts it in front of a Method. Its memory is bounded. Successful logins
// from a well-behaved address never wait. An attempt whose turn would come
// after its context's deadline (the proxy passes the client's startup
// deadline) is refused at once with 53300 instead of taking a place in the
// queue it could not use. With LimiterOptions.Log, every delayed or refused
// attempt is logged with its address, so an operator can tell an address
// being slowed down from a slow backend.
package auth
