package integration

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// logLine returns the first line of logs whose msg is msg, or fails.
func logLine(t *testing.T, logs, msg string) string {
	t.Helper()
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "msg="+strconv.Quote(msg)) || strings.Contains(l, "msg="+msg+" ") {
			return l
		}
	}
	t.Fatalf("no %q line in the log:\n%s", msg, logs)
	return ""
}

// logField is the value of key in a text-handler log line ("" if absent).
func logField(line, key string) string {
	m := regexp.MustCompile(`(?:^| )` + regexp.QuoteMeta(key) + `=("(?:[^"\\]|\\.)*"|\S*)`).FindStringSubmatch(line)
	if m == nil {
		return ""
	}
	if v, err := strconv.Unquote(m[1]); err == nil {
		return v
	}
	return m[1]
}

// TestStartStopLog: pgtenant says at start how it runs (address, pool,
// mode, isolation, tenant source, tenants in the registry, metrics) and at
// shutdown why it stops and what became of its clients: one idle client
// closed at once, one that finished its transaction.
func TestStartStopLog(t *testing.T) {
	createTenant(t, "cli14_a")
	createTenant(t, "cli14_b")
	p := startProxy(t, func(c *config.Config) { c.MetricsListen = "127.0.0.1:0" })
	ctx := ctx30(t)
	eventually(t, 20*time.Second, "pgtenant serving", func() bool { return strings.Contains(p.Logs(), "pgtenant serving") })
	start := logLine(t, p.Logs(), "pgtenant serving")
	want := map[string]string{
		"listen":        p.Host + ":" + strconv.Itoa(p.Port),
		"pool_size":     "4",
		"pool_mode":     "transaction",
		"isolation":     "schema",
		"tenant_source": "pgtenant",
	}
	for k, v := range want {
		if got := logField(start, k); got != v {
			t.Errorf("start line: %s=%q, want %q\n%s", k, got, v, start)
		}
	}
	if n, err := strconv.Atoi(logField(start, "tenants")); err != nil || n < 2 {
		t.Errorf("start line: tenants=%q, want the registry's count (at least 2)\n%s", logField(start, "tenants"), start)
	}
	if m := logField(start, "metrics"); !regexp.MustCompile(`^http://127\.0\.0\.1:\d+/metrics$`).MatchString(m) {
		t.Errorf("start line: metrics=%q, want http://127.0.0.1:PORT/metrics\n%s", m, start)
	}

	idle := p.Connect(t, "cli14_a", pgx.QueryExecModeSimpleProtocol)
	busy := p.Connect(t, "cli14_b", pgx.QueryExecModeSimpleProtocol)
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { p.Stop(t); close(stopped) }()
	eventually(t, 10*time.Second, "shutting down logged", func() bool { return strings.Contains(p.Logs(), `msg="shutting down"`) })
	if err := tx.Commit(ctx); err != nil {
		t.Errorf("commit after shutdown began: %v", err)
	}
	busy.Close(ctx)
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("pgtenant did not stop")
	}
	if _, err := idle.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("the idle client still works after shutdown")
	}

	down := logLine(t, p.Logs(), "shutting down")
	// The harness ends the proxy's context as Main's signal handler does;
	// under a signal the reason is its name ("terminated signal received").
	if r := logField(down, "reason"); r != "context canceled" {
		t.Errorf("shutting down: reason=%q, want the context's cause\n%s", r, down)
	}
	if c := logField(down, "clients"); c != "2" {
		t.Errorf("shutting down: clients=%q, want 2\n%s", c, down)
	}
	end := logLine(t, p.Logs(), "stopped")
	for k, v := range map[string]string{"clients_closed": "1", "clients_finished": "1", "clients_cut_off": "0"} {
		if got := logField(end, k); got != v {
			t.Errorf("stopped: %s=%q, want %q\n%s", k, got, v, end)
		}
	}
	if d, err := time.ParseDuration(logField(end, "took")); err != nil || d <= 0 {
		t.Errorf("stopped: took=%q, want a duration\n%s", logField(end, "took"), end)
	}
}

// TestStartStopLogConsole: the console's SHUTDOWN is the reason given.
func TestStartStopLogConsole(t *testing.T) {
	p := startProxy(t, withAdmin)
	if out, _ := consolePsql(t, p, "admin", "SHUTDOWN"); !strings.Contains("\n"+out+"\n", "\nSHUTDOWN\n") {
		t.Fatalf("psql SHUTDOWN: %q", out)
	}
	waitDone(t, p, 20*time.Second)
	if r := logField(logLine(t, p.Logs(), "shutting down"), "reason"); r != "admin console SHUTDOWN" {
		t.Errorf("shutting down: reason=%q, want %q", r, "admin console SHUTDOWN")
	}
	logLine(t, p.Logs(), "stopped")
}
