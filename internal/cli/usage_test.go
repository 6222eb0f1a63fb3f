package cli

import (
	"bytes"
	"context"
	"errors"
	"net"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// runMain runs pgtenant with args as Main does, and returns its exit code
// and what it printed on stdout and stderr.
func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

// checkPrefixed fails unless every line of stderr starts with "pgtenant: "
// and says "pgtenant:" nowhere else (an indented line, which continues the
// one above, says it nowhere).
func checkPrefixed(t *testing.T, args []string, stderr string) {
	t.Helper()
	if stderr == "" {
		t.Errorf("pgtenant %s printed nothing on stderr", strings.Join(args, " "))
	}
	for _, l := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
		if strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
			if strings.Contains(l, "pgtenant:") {
				t.Errorf("pgtenant %s: continuation line %q says pgtenant:", strings.Join(args, " "), l)
			}
			continue
		}
		if !strings.HasPrefix(l, "pgtenant: ") || strings.Count(l, "pgtenant:") != 1 {
			t.Errorf("pgtenant %s: stderr line %q does not start with pgtenant: exactly once", strings.Join(args, " "), l)
		}
	}
}

var versionRE = regexp.MustCompile(`^pgtenant \S+ \(commit (unknown|[0-9a-f]{1,12})(, modified)?, go[0-9][^)]*\)\n$`)

// TestVersion: --version and the version command print one line and
// exit 0.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, out, errOut := runMain(t, args...)
		if code != 0 || errOut != "" || !versionRE.MatchString(out) {
			t.Errorf("pgtenant %s: exit %d, stdout %q, stderr %q", args[0], code, out, errOut)
		}
	}
}

// TestFormatVersion: the module version as the build info has it, the
// commit shortened, whether the tree was modified, the Go version.
func TestFormatVersion(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0de7217a1b2c3d4e5f60718293a4b5c6d7e8f901"},
		{Key: "vcs.modified", Value: "true"},
	}}
	if got, want := formatVersion(bi), "pgtenant (devel) (commit 0de7217a1b2c, modified, go1.26.8)"; got != want {
		t.Errorf("formatVersion = %q, want %q", got, want)
	}
	bi = &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}}
	if got, want := formatVersion(bi), "pgtenant v1.2.0 (commit unknown, go1.26.8)"; got != want {
		t.Errorf("formatVersion = %q, want %q", got, want)
	}
}

// TestUsageErrors: a bad flag, a bad PGTENANT_* value or an unknown
// command is one line and a hint, not the help, with the usage exit code.
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		env  string // NAME=value, or ""
		args []string
		want string
	}{
		{"", []string{"serve", "--versio"},
			"pgtenant: flag provided but not defined: -versio\npgtenant: see 'pgtenant serve --help'\n"},
		{"", []string{"--versio"},
			"pgtenant: flag provided but not defined: -versio\npgtenant: see 'pgtenant --help'\n"},
		{"", []string{"tenant", "create", "acme", "--frob"},
			"pgtenant: flag provided but not defined: -frob\npgtenant: see 'pgtenant tenant create --help'\n"},
		{"PGTENANT_POOL_SIZE=abc", []string{"serve"},
			"pgtenant: PGTENANT_POOL_SIZE=\"abc\": --pool-size must be a whole number\npgtenant: see 'pgtenant serve --help'\n"},
		{"PGTENANT_QUERY_WAIT_TIMEOUT=5", []string{"serve"},
			"pgtenant: PGTENANT_QUERY_WAIT_TIMEOUT=\"5\": --query-wait-timeout must be a duration such as 30s, 5m or 1h\npgtenant: see 'pgtenant serve --help'\n"},
		{"", []string{"frob"},
			"pgtenant: unknown command \"frob\"\npgtenant: see 'pgtenant --help'\n"},
		{"", []string{"tenant", "frob"},
			"pgtenant: unknown command \"frob\"\npgtenant: see 'pgtenant tenant --help'\n"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			if name, value, ok := strings.Cut(tc.env, "="); ok {
				t.Setenv(name, value)
			}
			code, out, errOut := runMain(t, tc.args...)
			if code != exitUsage || out != "" || errOut != tc.want {
				t.Errorf("pgtenant %s: exit %d, stdout %q, stderr\n%s\nwant exit %d, no stdout, stderr\n%s",
					strings.Join(tc.args, " "), code, out, errOut, exitUsage, tc.want)
			}
		})
	}
}

// TestErrorMessages: failing commands print each line with pgtenant:
// once, say what failed once, name the fix where there is one, and never
// show a password.
func TestErrorMessages(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	const unreachable = "postgres://app:s3cret@127.0.0.1:1/appdb"
	cases := []struct {
		args []string
		code int
		want []string // each on a line of its own, after "pgtenant: "
	}{
		{[]string{"serve", "--backend", unreachable, "--pool-mode", "statement"}, exitUsage,
			[]string{`pool-mode must be transaction or session, got "statement"`}},
		{[]string{"serve", "--backend", unreachable, "--listen", busy.Addr().String()}, exitRuntime,
			[]string{"cannot listen on " + busy.Addr().String() + ": another process listens there already (stop it, or choose another address with --listen)"}},
		{[]string{"serve", "--backend", unreachable, "--listen", "127.0.0.1:0"}, exitRuntime,
			[]string{"cannot connect to the backend (--backend) at 127.0.0.1:1/appdb as app: dial error: dial tcp 127.0.0.1:1: connect: connection refused"}},
		{[]string{"tenant", "list", "--backend", unreachable}, exitRuntime,
			[]string{"cannot connect to the database (--backend) at 127.0.0.1:1/appdb as app: dial error: dial tcp 127.0.0.1:1: connect: connection refused"}},
		{[]string{"tenant", "create", "acme", "--registry", unreachable}, exitRuntime,
			[]string{"cannot connect to the registry (--registry) at 127.0.0.1:1/appdb as app: dial error: dial tcp 127.0.0.1:1: connect: connection refused"}},
		{[]string{"tenant", "create"}, exitUsage,
			[]string{"usage: pgtenant tenant create NAME [--on BACKEND] [--schema SCHEMA] [--adopt-schema] [--pool-role ROLE] --registry DSN"}},
		// Refused before connecting, without repeating the password.
		{[]string{"backend", "add", "eu2", "postgres://app:s3cret@10.0.0.2/app", "--backend", unreachable}, exitUsage,
			[]string{`backend "eu2": the DSN holds a password; store it without one and give the password in a passfile ` +
				`(PGPASSFILE or ~/.pgpass, matched by host, port, database and user) or PGPASSWORD in the environment of every ` +
				`pgtenant process, or use role isolation mode's role secret`}},
		{[]string{"backend", "remove", "default", "--backend", unreachable}, exitUsage,
			[]string{"backend default is the registry's own server and cannot be removed"}},
		{[]string{"tenant", "create", "acme", "--on", "EU", "--backend", unreachable}, exitUsage,
			[]string{`invalid backend name "EU": use 1-63 lower-case letters, digits or _ starting with a letter`}},
	}
	for _, tc := range cases {
		code, out, errOut := runMain(t, tc.args...)
		checkPrefixed(t, tc.args, errOut)
		var want strings.Builder
		for _, w := range tc.want {
			want.WriteString("pgtenant: " + w + "\n")
		}
		if code != tc.code || out != "" || errOut != want.String() {
			t.Errorf("pgtenant %s: exit %d, stdout %q, stderr\n%s\nwant exit %d, stderr\n%s",
				strings.Join(tc.args, " "), code, out, errOut, tc.code, want.String())
		}
		if strings.Contains(errOut, "s3cret") {
			t.Errorf("pgtenant %s printed the password: %s", strings.Join(tc.args, " "), errOut)
		}
	}
}

// TestPrintError: a message that starts with pgtenant: already is not
// prefixed twice; each line of a longer one is prefixed, but for indented
// lines, which continue the one above.
func TestPrintError(t *testing.T) {
	var b bytes.Buffer
	printError(&b, errors.Join(errors.New("pgtenant: one"), errors.New("two\n  two's detail")))
	if got, want := b.String(), "pgtenant: one\npgtenant: two\n  two's detail\n"; got != want {
		t.Errorf("printError printed %q, want %q", got, want)
	}
}

// TestConnectErrorOnce: a connection that fails is told once, with where
// it went and the cause, even when pgx tried the address twice (sslmode
// prefer) and OpenRegistry wrapped it.
func TestConnectErrorOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const dsn = "postgres://adm:s3cret@127.0.0.1:1/reg?sslmode=prefer"
	_, err := pgx.Connect(ctx, dsn)
	if err == nil {
		t.Fatal("connected to port 1")
	}
	got := config.NewConnectError("the tenant registry", dsn, err).Error()
	want := "cannot connect to the tenant registry at 127.0.0.1:1/reg as adm: dial error: dial tcp 127.0.0.1:1: connect: connection refused"
	if got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if _, err := router.OpenRegistry(ctx, dsn, nil); err == nil || !strings.Contains(err.Error(), "open registry") {
		t.Fatalf("OpenRegistry: %v", err)
	} else if got := config.NewConnectError("the tenant registry", dsn, err).Error(); got != want {
		t.Errorf("from OpenRegistry: got %q\nwant %q", got, want)
	}
}
