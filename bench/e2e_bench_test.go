package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/proxy"
	"github.com/pgtenant/pgtenant/router"
)

var (
	pg       *pgcluster.Cluster
	proxyDSN string
)

// TestMain starts PostgreSQL and pgtenant once, only when benchmarks run.
// Started by the harness test as a pgtenant child process, it serves
// instead (see serveChild).
func TestMain(m *testing.M) {
	if os.Getenv(childListenEnv) != "" {
		os.Exit(serveChild())
	}
	if !benchmarking() {
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	pg, err = pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	stopProxy, err := startProxy(ctx)
	if err != nil {
		_ = pg.Stop()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	code := m.Run()
	stopProxy()
	_ = pg.Stop()
	os.Exit(code)
}

func benchmarking() bool {
	for _, a := range os.Args {
		if len(a) > 11 && a[:11] == "-test.bench" {
			return true
		}
	}
	return false
}

func startProxy(ctx context.Context) (func(), error) {
	conn, err := pgx.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		return nil, err
	}
	_, _, err = router.CreateTenant(ctx, conn, "acme", "")
	conn.Close(ctx)
	if err != nil {
		return nil, err
	}
	cfg := config.Default()
	cfg.Backend = pg.DSN("postgres")
	cfg.AllowPrivilegedBackend = true // a throwaway superuser cluster
	cfg.PoolSize = 4
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	proxyDSN = fmt.Sprintf("host=127.0.0.1 port=%d user=bench dbname=acme sslmode=disable", ln.Addr().(*net.TCPAddr).Port)
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = proxy.RunListener(pctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln)
	}()
	return func() { stop(); <-done }, nil
}

func benchSelect(b *testing.B, dsn string, mode pgx.QueryExecMode) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		b.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	b.ReportAllocs()
	for b.Loop() {
		if err := conn.QueryRow(ctx, "select 1").Scan(&n); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSelect1 is one round trip per op: the difference between the
// direct and proxied variants is pgtenant's cost (relay, checkout, pin).
func BenchmarkSelect1(b *testing.B) {
	for _, m := range []struct {
		name string
		mode pgx.QueryExecMode
	}{{"simple", pgx.QueryExecModeSimpleProtocol}, {"extended", pgx.QueryExecModeExec}} {
		b.Run("direct/"+m.name, func(b *testing.B) { benchSelect(b, pg.DSN("postgres"), m.mode) })
		b.Run("pgtenant/"+m.name, func(b *testing.B) { benchSelect(b, proxyDSN, m.mode) })
	}
}

// BenchmarkConnect is pgbench -C's unit of work: connect, one query,
// disconnect. Through pgtenant the client's login never reaches a backend
// (the greeting is cached), so the difference to direct is PostgreSQL's
// own backend start-up against pgtenant's admission.
func BenchmarkConnect(b *testing.B) {
	for _, t := range []struct{ name, dsn string }{{"direct", pg.DSN("postgres")}, {"pgtenant", proxyDSN}} {
		b.Run(t.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				conn, err := pgconn.Connect(ctx, t.dsn)
				if err != nil {
					b.Fatal(err)
				}
				if err := conn.Exec(ctx, "select 1").Close(); err != nil {
					b.Fatal(err)
				}
				if err := conn.Close(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIdleClientMemory opens b.N idle clients (logged in, nothing
// sent since) to the in-process pgtenant and reports what each holds of
// the Go heap and of goroutine stacks, after a GC: the live part of the
// idle scenario's resident memory per client, broken down. The client
// side's own connections are counted too (a net.Conn each, a few hundred
// bytes), so the figures are an upper bound.
func BenchmarkIdleClientMemory(b *testing.B) {
	ctx := context.Background()
	addr := proxyDSN[len("host=127.0.0.1 port="):]
	addr = "127.0.0.1:" + addr[:strings.IndexByte(addr, ' ')]
	warm, err := startupConn(ctx, addr, "bench", "acme")
	if err != nil {
		b.Fatal(err)
	}
	defer warm.Close()
	n := max(b.N, 100)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	conns, err := openIdle(ctx, addr, "bench", "acme", n)
	if err != nil {
		b.Fatal(err)
	}
	defer closeAll(conns)
	time.Sleep(200 * time.Millisecond) // every session parked in its first read
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	b.ReportMetric(per(after.HeapAlloc, before.HeapAlloc), "heap-B/client")
	b.ReportMetric(per(after.StackInuse, before.StackInuse), "stack-B/client")
	b.ReportMetric(per(after.Sys, before.Sys), "sys-B/client")
}
