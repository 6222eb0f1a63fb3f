package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPReloadsConfigFile runs `pgtenant serve --config FILE` as an
// operator would, changes the file's pool size and log level, and sends
// the process SIGHUP: the new pool size is applied without a restart, and
// a setting that needs one is named as such and left alone. (The reload
// itself under load is TestReloadPoolSize's; this holds the wiring from
// the signal to it.)
func TestSIGHUPReloadsConfigFile(t *testing.T) {
	createTenant(t, "hup_t")
	bin := buildPgtenant(t)
	addr := freeAddr(t)
	file := filepath.Join(t.TempDir(), "pgtenant.toml")
	write := func(poolSize int, mode string) {
		t.Helper()
		conf := fmt.Sprintf("listen = %q\nbackend = %q\nallow-privileged-backend = true\npool-size = %d\npool-mode = %q\nlog-level = \"info\"\nadmin-users = \"admin\"\n",
			addr, backendDSN(), poolSize, mode)
		if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(2, "transaction")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logs := &syncBuffer{}
	cmd := exec.CommandContext(ctx, bin, "serve", "--config", file)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pgtenant log:\n%s", logs.String())
		}
	})
	eventually(t, 20*time.Second, "pgtenant serving", func() bool { return strings.Contains(logs.String(), "pgtenant serving") })

	host, port, _ := strings.Cut(addr, ":")
	psqlAs := func(user, db, sql string) string {
		t.Helper()
		out, err := exec.Command("psql", "-X", "-At", "-h", host, "-p", port, "-U", user, "-d", db,
			"-c", sql).CombinedOutput()
		if err != nil {
			t.Fatalf("psql: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	psql := func() string { return psqlAs("app", "hup_t", "select current_schema()") }
	// poolSize is the pool size in force, as the console shows it (SHOW
	// STATS: tenants|clients|waiting|backends|transactions|pool_size|...).
	poolSize := func() string {
		fields := strings.Split(psqlAs("admin", "pgtenant", "SHOW STATS"), "|")
		if len(fields) < 6 {
			t.Fatalf("SHOW STATS: %q", fields)
		}
		return fields[5]
	}
	if got := psql(); got != "hup_t" {
		t.Fatalf("before the reload: current_schema %q", got)
	}
	if got := poolSize(); got != "2" {
		t.Fatalf("before the reload: pool_size %s", got)
	}

	write(5, "session")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the reload logged", func() bool {
		l := logs.String()
		return strings.Contains(l, "reload: setting changed") && strings.Contains(l, "key=pool-size old=2 new=5") &&
			strings.Contains(l, "needs a restart") && strings.Contains(l, "key=pool-mode")
	})
	// The process still serves, still in transaction mode (the restart-only
	// setting kept its value).
	if got := psql(); got != "hup_t" {
		t.Fatalf("after the reload: current_schema %q", got)
	}
	if got := poolSize(); got != "5" {
		t.Fatalf("after the reload: pool_size %s, want 5", got)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("errors in the log after the reload")
	}
}
