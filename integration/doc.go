// Package integration holds pgtenant's end-to-end tests: a real PostgreSQL
// started by the test binary itself (internal/pgcluster), pgtenant serving it
// in-process on a free loopback port, and real clients (psql, pgbench, pgx)
// talking to pgtenant.
package integration
