package proxy

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// BenchmarkPinServerCPU measures what the pin costs PostgreSQL: the CPU
// the backend process spends per client transaction (a simple-protocol
// SELECT 1) with each pin part sent ahead of it, in the same bytes and the
// same write as the proxy sends them. The metric is server-µs/op, the
// backend's own CPU time (/proc/PID/schedstat, in nanoseconds; the ticks
// of /proc/PID/stat are too coarse for a few microseconds), so the load of
// the shared machine and this process's own work do not count.
//
// "reuse" is the same-tenant reuse (no pin): the baseline. "pin" is the
// pin a backend gets when it changes tenants, DEALLOCATE ALL included;
// "pin-before" is that pin as it was before BenchmarkPinServerCPU
// (issue 8's), one statement per part. "pin-same-tenant" the one it gets when the state differs but the tenant
// does not. Each part alone is sent as BEGIN, the part, COMMIT: its own
// cost is its figure less "begin-commit". The "+temp" variants run on a
// backend whose earlier holder once created a temporary table, so that its
// temporary schema exists (PostgreSQL keeps it for the session, and
// DISCARD TEMP then has a schema to empty).
//
//	go test ./proxy -run '^$' -bench BenchmarkPinServerCPU -benchtime 20000x
func BenchmarkPinServerCPU(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pg, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		b.Skipf("start PostgreSQL: %v", err)
	}
	b.Cleanup(func() { _ = pg.Stop() })
	setup, err := pgconn.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	if err := setup.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS bench_a; CREATE SCHEMA IF NOT EXISTS bench_b;
		CREATE TABLE IF NOT EXISTS bench_a.t (id int); CREATE TABLE IF NOT EXISTS bench_b.t (id int)`).Close(); err != nil {
		b.Fatal(err)
	}
	_ = setup.Close(ctx)

	pinA := buildPin(pinOwner("bench_a", "u"), "bench_a", []startupParam{{"application_name", "pgbench"}})
	pinB := buildPin(pinOwner("bench_b", "u"), "bench_b", []startupParam{{"application_name", "pgbench"}})
	cross := [2][]byte{
		append(append([]byte(nil), deallocatePin...), pinA.msgs...),
		append(append([]byte(nil), deallocatePin...), pinB.msgs...),
	}
	// before is the cross-tenant pin as issue 8 left it, for comparison:
	// one statement for each part.
	before := func(schema string) []byte {
		var out []byte
		for _, st := range []string{"DEALLOCATE ALL", "BEGIN", "SET SESSION AUTHORIZATION DEFAULT", "RESET ALL",
			"SET search_path TO " + quoteIdent(schema) + ", public",
			"SELECT pg_catalog.set_config('lock_timeout', '2s', true), pg_catalog.set_config('statement_timeout', '5s', true), " +
				"pg_catalog.pg_advisory_unlock_all()",
			"CLOSE ALL", "UNLISTEN *", "DISCARD TEMP", "DISCARD SEQUENCES", `SET "application_name" TO 'pgbench'`, "COMMIT"} {
			out = appendStatement(out, st)
		}
		return append(out, flushMsg...)
	}
	crossBefore := [2][]byte{before("bench_a"), before("bench_b")}
	// part renders BEGIN, the statements, COMMIT, as the pin frames them.
	part := func(stmts ...string) []byte {
		var out []byte
		out = appendStatement(out, "BEGIN")
		for _, s := range stmts {
			out = appendStatement(out, s)
		}
		out = appendStatement(out, "COMMIT")
		return append(out, flushMsg...)
	}
	same := func(i int) []byte { return nil }
	fixed := func(msgs []byte) func(int) []byte { return func(int) []byte { return msgs } }
	cases := []struct {
		name string
		temp bool // the backend has a temporary schema
		pin  func(i int) []byte
	}{
		{name: "reuse", pin: same},
		{name: "pin", pin: func(i int) []byte { return cross[i&1] }},
		{name: "pin+temp", temp: true, pin: func(i int) []byte { return cross[i&1] }},
		{name: "pin-before", pin: func(i int) []byte { return crossBefore[i&1] }},
		{name: "pin-before+temp", temp: true, pin: func(i int) []byte { return crossBefore[i&1] }},
		{name: "pin-same-tenant", pin: fixed(pinA.msgs)},
		{name: "begin-commit", pin: fixed(part())},
		{name: "session-authorization", pin: fixed(part("SET SESSION AUTHORIZATION DEFAULT"))},
		{name: "reset-all", pin: fixed(part("RESET ALL"))},
		{name: "search-path", pin: fixed(part(`SET search_path TO "bench_a", public`))},
		{name: "select-timeouts-unlock", pin: fixed(part("SELECT pg_catalog.set_config('lock_timeout', '2s', true), " +
			"pg_catalog.set_config('statement_timeout', '5s', true), pg_catalog.pg_advisory_unlock_all()"))},
		{name: "set-local-timeouts", pin: fixed(part("SET LOCAL lock_timeout = '2s'", "SET LOCAL statement_timeout = '5s'"))},
		{name: "select-unlock", pin: fixed(part("SELECT pg_catalog.pg_advisory_unlock_all()"))},
		{name: "select-session-authorization", pin: fixed(part("SELECT pg_catalog.set_config('session_authorization', NULL, false)"))},
		{name: "close-all", pin: fixed(part("CLOSE ALL"))},
		{name: "unlisten", pin: fixed(part("UNLISTEN *"))},
		{name: "discard-temp", pin: fixed(part("DISCARD TEMP"))},
		{name: "discard-temp+temp", temp: true, pin: fixed(part("DISCARD TEMP"))},
		{name: "discard-sequences", pin: fixed(part("DISCARD SEQUENCES"))},
		{name: "deallocate-all", pin: fixed(append(append([]byte(nil), deallocatePin...), part()...))},
		{name: "client-setting", pin: fixed(part(`SET "application_name" TO 'pgbench'`))},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			be := dialBench(ctx, b, pg, tc.temp)
			query := (&pgproto3.Query{String: "SELECT 1"})
			q, _ := query.Encode(nil)
			var buf []byte
			op := func(i int, pin func(int) []byte) {
				buf = append(append(buf[:0], pin(i)...), q...)
				if _, err := be.Conn.Write(buf); err != nil {
					b.Fatal(err)
				}
				for {
					msg, err := be.Frontend.Receive()
					if err != nil {
						b.Fatal(err)
					}
					switch m := msg.(type) {
					case *pgproto3.ErrorResponse:
						b.Fatalf("%s: %s (%s)", tc.name, m.Message, m.Code)
					case *pgproto3.ReadyForQuery:
						return
					}
				}
			}
			for i := 0; i < 200; i++ { // warm the caches
				op(i, tc.pin)
			}
			// Each op is measured alone, and interleaved with a reuse op
			// on the same backend: the medians shrug off what the shared
			// machine does to a few of them, and the difference is the
			// pin's own cost under the same conditions.
			mine := make([]time.Duration, 0, b.N)
			base := make([]time.Duration, 0, b.N)
			last := backendCPU(b, be.PID)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				op(i, tc.pin)
				now := backendCPU(b, be.PID)
				mine = append(mine, now-last)
				op(i, same)
				last = backendCPU(b, be.PID)
				base = append(base, last-now)
			}
			b.StopTimer()
			m, r := quantile(mine, 0.5), quantile(base, 0.5)
			b.ReportMetric(float64(m.Nanoseconds())/1e3, "server-µs/op")
			b.ReportMetric(float64((m-r).Nanoseconds())/1e3, "over-reuse-µs/op")
			m, r = quantile(mine, 0.1), quantile(base, 0.1)
			b.ReportMetric(float64(m.Nanoseconds())/1e3, "p10-µs/op")
			b.ReportMetric(float64((m-r).Nanoseconds())/1e3, "p10-over-reuse-µs/op")
			_ = be.Conn.Close()
		})
	}
}

// dialBench opens a backend connection and takes its socket over, so the
// benchmark writes the proxy's bytes itself. temp gives it a temporary
// schema first.
func dialBench(ctx context.Context, b *testing.B, pg *pgcluster.Cluster, temp bool) *pgconn.HijackedConn {
	b.Helper()
	c, err := pgconn.Connect(ctx, pg.DSN("postgres"))
	if err != nil {
		b.Fatal(err)
	}
	if temp {
		if err := c.Exec(ctx, "CREATE TEMP TABLE pinbench_tmp (id int); DROP TABLE pinbench_tmp").Close(); err != nil {
			b.Fatal(err)
		}
	}
	h, err := c.Hijack()
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// backendCPU is the CPU time the backend process has run, in nanoseconds
// (the first field of /proc/PID/schedstat).
func backendCPU(b *testing.B, pid uint32) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		b.Skipf("backend CPU: %v", err)
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		b.Fatalf("backend CPU: empty schedstat")
	}
	ns, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		b.Fatalf("backend CPU: %v", err)
	}
	return time.Duration(ns)
}

// quantile q of ds (which it sorts).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[int(float64(len(ds)-1)*q)]
}
