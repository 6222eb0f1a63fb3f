package cli

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/auth"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/urfave/cli/v2"
)

// runCLI runs pgtenant with args as the shell would, and returns what it
// printed on stdout, the exit code main would use, and the error it ended
// with.
func runCLI(t *testing.T, args ...string) (out string, code int, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	a := app()
	a.Writer, a.ErrWriter = &stdout, &stderr
	// Without this, cli would call os.Exit on an ExitCoder.
	a.ExitErrHandler = func(*cli.Context, error) {}
	err = a.RunContext(ctx, append([]string{"pgtenant"}, args...))
	var ec cli.ExitCoder
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ec):
		code = ec.ExitCode()
	default:
		code = exitUsage // as main does
	}
	return stdout.String(), code, err
}

// trimLines drops the spaces tabwriter leaves after an empty last cell.
func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// TestAccessCommands runs the grant, revoke, alias and user commands
// against a throwaway PostgreSQL, checking what they print, their exit
// codes and what they leave in the registry.
func TestAccessCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("PostgreSQL log:\n%s", pg.ServerLog())
		}
		if err := pg.Stop(); err != nil {
			t.Error(err)
		}
	})
	if err := pg.CreateDatabase(ctx, "cli"); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGTENANT_BACKEND", pg.DSN("cli"))

	// ok runs a command that must succeed and print want.
	ok := func(want string, args ...string) {
		t.Helper()
		out, code, err := runCLI(t, args...)
		if err != nil || code != 0 {
			t.Fatalf("pgtenant %s: exit %d, %v\n%s", strings.Join(args, " "), code, err, out)
		}
		if want != "" && trimLines(out) != want {
			t.Fatalf("pgtenant %s printed\n%s\nwant\n%s", strings.Join(args, " "), out, want)
		}
	}
	// fails runs a command that must fail with exit code wantCode and an
	// error containing wantErr.
	fails := func(wantCode int, wantErr string, args ...string) {
		t.Helper()
		out, code, err := runCLI(t, args...)
		if code != wantCode || err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("pgtenant %s: exit %d, %v; want exit %d with %q\n%s",
				strings.Join(args, " "), code, err, wantCode, wantErr, out)
		}
	}

	fails(exitUsage, `tenant "acme" does not exist`, "tenant", "grant", "acme", "alice")
	ok("", "tenant", "create", "acme")
	ok("", "tenant", "create", "globex")

	ok("granted tenant acme to user alice\n", "tenant", "grant", "acme", "alice")
	ok("user alice already has tenant acme\n", "tenant", "grant", "acme", "alice")
	ok("granted tenant globex to user alice\n", "tenant", "grant", "globex", "alice")
	ok("granted every tenant (*) to user root\n", "tenant", "grant", "*", "root")
	fails(exitUsage, `invalid tenant name "Acme"`, "tenant", "grant", "Acme", "alice")
	fails(exitUsage, `invalid user name "": it is empty`, "tenant", "grant", "acme", "")
	fails(exitUsage, "usage: pgtenant tenant grant", "tenant", "grant", "acme")
	fails(exitUsage, "usage: pgtenant tenant revoke", "tenant", "revoke", "acme", "alice", "bob")

	ok("USER   TENANTS\nalice  acme,globex\nroot   *\n", "user", "list")
	out, code, err := runCLI(t, "user", "show", "alice")
	showRE := regexp.MustCompile(`^TENANT  GRANTED AT\nacme    \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\nglobex  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$`)
	if err != nil || code != 0 || !showRE.MatchString(out) {
		t.Fatalf("pgtenant user show alice: exit %d, %v, printed\n%s", code, err, out)
	}
	ok("user nobody is granted no tenant\n", "user", "show", "nobody")

	ok("alias acme_co names tenant acme\n", "tenant", "alias", "add", "acme_co", "acme")
	ok("alias acme.example.com names tenant acme\n", "tenant", "alias", "add", "acme.example.com", "acme")
	ok("alias acme_co names tenant acme\n", "tenant", "alias", "add", "acme_co", "acme")
	fails(exitRuntime, `"globex" is the name of a tenant`, "tenant", "alias", "add", "globex", "acme")
	fails(exitRuntime, `alias "acme_co" already names tenant "acme"`, "tenant", "alias", "add", "acme_co", "globex")
	fails(exitUsage, `tenant "nope" does not exist`, "tenant", "alias", "add", "x", "nope")
	fails(exitUsage, `invalid alias "Acme_Co"`, "tenant", "alias", "add", "Acme_Co", "acme")
	fails(exitRuntime, `"acme_co" is already an alias of tenant "acme"`, "tenant", "create", "acme_co")
	fails(exitUsage, `"acme_co" is an alias of tenant "acme"`, "tenant", "grant", "acme_co", "bob")
	// A schema called like a role ("$user" in a search_path would reach
	// it) is the operator's choice to change, like a bad name; the listing
	// below shows that nothing was registered.
	fails(exitUsage, `schema "postgres" has the name of role "postgres": "$user" in a search_path would reach it; choose another name`,
		"tenant", "create", "postgres")
	fails(exitUsage, `schema "postgres" has the name of role "postgres"`, "tenant", "create", "--schema", "postgres", "initech")

	ok("NAME    SCHEMA  STATE   SIZE  MIGRATION  CLIENTS  BACKEND  ALIASES\nacme    acme    active  0 B   -          -        default  acme.example.com,acme_co\nglobex  globex  active  0 B   -          -        default\n", "tenant", "list")
	ok("ALIAS             TENANT\nacme.example.com  acme\nacme_co           acme\n", "tenant", "alias", "list")

	ok("revoked tenant acme from user alice\n", "tenant", "revoke", "acme", "alice")
	ok("user alice had no grant of tenant acme; nothing changed\n", "tenant", "revoke", "acme", "alice")
	ok("granted tenant acme to user root\n", "tenant", "grant", "acme", "root")
	ok("revoked tenant acme from user root\n"+
		"note: user root can still connect to acme through its grant of every tenant (*); "+
		"revoke that with: pgtenant tenant revoke '*' root\n",
		"tenant", "revoke", "acme", "root")
	ok("removed alias acme_co\n", "tenant", "alias", "remove", "acme_co")
	ok("there is no alias acme_co; nothing changed\n", "tenant", "alias", "remove", "acme_co")
	ok("USER   TENANTS\nalice  globex\nroot   *\n", "user", "list")

	// What the commands left in the registry, read directly.
	conn, err := pgx.Connect(ctx, pg.DSN("cli"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT user_name || ':' || coalesce(tenant, '(every tenant)')
		FROM pgtenant.tenant_users ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	grants, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if want := []string{"alice:globex", "root:(every tenant)"}; err != nil || !slices.Equal(grants, want) {
		t.Fatalf("pgtenant.tenant_users = %q, %v; want %q", grants, err, want)
	}
	rows, err = conn.Query(ctx, `SELECT alias || '>' || tenant FROM pgtenant.tenant_aliases ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	aliases, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if want := []string{"acme.example.com>acme"}; err != nil || !slices.Equal(aliases, want) {
		t.Fatalf("pgtenant.tenant_aliases = %q, %v; want %q", aliases, err, want)
	}

	t.Setenv("PGTENANT_BACKEND", "")
	fails(exitUsage, "--backend", "user", "list")
}

// `pgtenant user secret` prints an auth-file line whose verifier proves the
// password read from standard input, and that auth.ParseUserList reads back.
func TestUserSecret(t *testing.T) {
	const password = "correct horse \"battery\""
	a := app()
	var stdout, stderr bytes.Buffer
	a.Writer, a.ErrWriter = &stdout, &stderr
	a.Reader = strings.NewReader(password + "\n")
	a.ExitErrHandler = func(*cli.Context, error) {}
	if err := a.Run([]string{"pgtenant", "user", "secret", `o"brien`}); err != nil {
		t.Fatalf("user secret: %v (%s)", err, stderr.String())
	}
	users, err := auth.ParseUserList(stdout.Bytes())
	if err != nil {
		t.Fatalf("output %q is not a userlist: %v", stdout.String(), err)
	}
	secret, ok := users[`o"brien`]
	if !ok || secret.Kind != auth.SecretSCRAM {
		t.Fatalf("output %q: no SCRAM secret for o\"brien", stdout.String())
	}
	v := secret.SCRAM
	for _, tc := range []struct {
		password string
		want     bool
	}{{password, true}, {password + "\n", false}, {"wrong", false}} {
		again, err := auth.NewSCRAMVerifier(tc.password, v.Salt, v.Iterations)
		if err != nil {
			t.Fatal(err)
		}
		if got := again.StoredKey == v.StoredKey; got != tc.want {
			t.Errorf("password %q matches: %v, want %v", tc.password, got, tc.want)
		}
	}
	if strings.Contains(stdout.String(), "horse") {
		t.Errorf("the output holds the password: %q", stdout.String())
	}

	a = app()
	a.Writer, a.ErrWriter = &stdout, &stderr
	a.Reader = strings.NewReader("")
	a.ExitErrHandler = func(*cli.Context, error) {}
	var ec cli.ExitCoder
	if err := a.Run([]string{"pgtenant", "user", "secret", "alice"}); !errors.As(err, &ec) || ec.ExitCode() != exitUsage {
		t.Errorf("empty password: %v, want a usage error", err)
	}
}
