package config

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// Reloader builds the config again as serve built it: the file is read
// anew, while what the command line and the environment set still wins.
func TestReloader(t *testing.T) {
	clearEnv(t)
	path := filepath.Join(t.TempDir(), "pgtenant.toml")
	write := func(text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("backend = \"host=db\"\npool-size = 2\nlog-level = \"info\"\nquery-wait-timeout = \"9s\"\n")
	t.Setenv("PGTENANT_QUERY_WAIT_TIMEOUT", "3s")

	var start Config
	var reload func() (Config, error)
	flags := ServeFlags()
	app := &cli.App{Name: "pgtenant", Writer: io.Discard, ErrWriter: io.Discard, Commands: []*cli.Command{{
		Name: "serve", Flags: flags, Before: LoadConfigFile(flags),
		Action: func(c *cli.Context) error {
			var err error
			start, err = FromContext(c)
			reload = Reloader(c)
			return err
		},
	}}}
	if err := app.Run([]string{"pgtenant", "serve", "--config", path, "--max-client-conn", "77"}); err != nil {
		t.Fatal(err)
	}
	if start.PoolSize != 2 || start.QueryWaitTimeout != 3*time.Second || start.MaxClientConn != 77 {
		t.Fatalf("start config: pool-size %d, query-wait-timeout %s, max-client-conn %d", start.PoolSize, start.QueryWaitTimeout, start.MaxClientConn)
	}

	write("backend = \"host=db\"\npool-size = 6\nlog-level = \"warn\"\nquery-wait-timeout = \"9s\"\nmax-client-conn = 5\n")
	got, err := reload()
	if err != nil {
		t.Fatal(err)
	}
	want := start
	want.PoolSize, want.LogLevel = 6, "warn"
	if got.PoolSize != 6 || got.LogLevel != "warn" || got.QueryWaitTimeout != 3*time.Second || got.MaxClientConn != 77 || got.Backend != "host=db" {
		t.Fatalf("reloaded: %+v", got)
	}
	changes := Diff(start, got)
	if len(changes) != 2 || changes[0].Name != "pool-size" || changes[0].Old != 2 || changes[0].New != 6 ||
		changes[1].Name != "log-level" {
		t.Fatalf("Diff = %+v; want pool-size 2 -> 6 and log-level info -> warn", changes)
	}

	// A file that no longer validates is an error, not a config.
	write("backend = \"host=db\"\npool-size = 0\n")
	if _, err := reload(); err == nil {
		t.Fatal("reload of a file with pool-size 0 succeeded")
	}
	write("pool_size = 3\n")
	if _, err := reload(); err == nil {
		t.Fatal("reload of a file with an unknown key succeeded")
	}
}

func TestDiffHidesSecrets(t *testing.T) {
	a, b := Default(), Default()
	b.AuthMockSecret = "0123456789abcdef"
	d := Diff(a, b)
	if len(d) != 1 || d[0].Old != "(hidden)" || d[0].New != "(hidden)" {
		t.Fatalf("Diff = %+v", d)
	}
	var c Config
	CopySetting("pool-size", &b, &c)
	if c.PoolSize != b.PoolSize {
		t.Fatalf("CopySetting did not copy pool-size")
	}
}

// Every setting can be compared and copied by a reload: a constructor that
// forgets value or copy would make Diff or CopySetting panic at SIGHUP.
func TestEverySettingReloadable(t *testing.T) {
	for _, s := range settings {
		if s.value == nil || s.copy == nil {
			t.Errorf("setting %s lacks value or copy", s.name)
		}
	}
}
