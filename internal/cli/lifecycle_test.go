package cli

import (
	"slices"
	"strings"
	"testing"
)

// The admin DSN's password reaches pg_dump and psql through PGPASSWORD, not
// their command line, where ps would show it.
func TestLibpqArgsHidePassword(t *testing.T) {
	for _, dsn := range []string{
		"host=db port=5432 user=admin password=s3cret dbname=app",
		"host=db user=admin password='s3 cret' dbname=app",
		"postgres://admin:s3cret@db:5432/app?sslmode=disable",
		"postgres://admin@db/app?password=s3cret",
	} {
		conn, env, err := libpqArgs(dsn)
		if err != nil {
			t.Fatalf("%s: %v", dsn, err)
		}
		if strings.Contains(conn, "s3") || !strings.Contains(conn, "admin") || !strings.Contains(conn, "app") {
			t.Errorf("%s: connection string %q", dsn, conn)
		}
		if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PGPASSWORD=s3") }) {
			t.Errorf("%s: no PGPASSWORD in the environment", dsn)
		}
	}
}

// import finds the dump's schema in export's header, else in pg_dump's
// CREATE SCHEMA, and refuses a dump without one.
func TestDumpSchema(t *testing.T) {
	for in, want := range map[string]string{
		"-- pgtenant tenant export\n-- tenant: acme\n-- schema: acme_s\n\nCREATE SCHEMA acme_s;\n": "acme_s",
		"--\n-- PostgreSQL database dump\n--\nSET x = 1;\nCREATE SCHEMA globex;\n":                 "globex",
		"CREATE SCHEMA \"order\";\n": "order",
	} {
		if got, err := dumpSchema([]byte(in)); err != nil || got != want {
			t.Errorf("dumpSchema(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"nothing here\n", "CREATE SCHEMA public;\n"} {
		if _, err := dumpSchema([]byte(in)); err == nil {
			t.Errorf("dumpSchema(%q) passed", in)
		}
	}
}

// Bad arguments of the lifecycle commands are refused before anything
// connects. (runCLI does not move flags first, as Main does.)
func TestLifecycleArgs(t *testing.T) {
	t.Setenv("PGTENANT_BACKEND", "")
	t.Setenv("PGTENANT_REGISTRY", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tenant", "disable"}, "usage: pgtenant tenant disable"},
		{[]string{"tenant", "drop", "Bad!"}, "invalid tenant name"},
		{[]string{"tenant", "rename", "acme"}, "usage: pgtenant tenant rename"},
		{[]string{"tenant", "rename", "--schema", "x", "--rename-schema", "acme", "globex"}, "give one"},
		{[]string{"tenant", "rename", "--schema", "pg_x", "acme", "globex"}, "invalid schema name"},
		{[]string{"tenant", "clone", "acme"}, "usage: pgtenant tenant clone"},
		{[]string{"tenant", "import", "--schema", "public", "acme"}, "invalid schema name"},
		{[]string{"tenant", "list", "--format", "xml"}, "--format must be"},
		{[]string{"tenant", "drop", "acme"}, "--registry or --backend"},
	} {
		_, code, err := runCLI(t, tc.args...)
		if code != exitUsage || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pgtenant %s: exit %d, %v; want exit %d saying %q", strings.Join(tc.args, " "), code, err, exitUsage, tc.want)
		}
	}
}
