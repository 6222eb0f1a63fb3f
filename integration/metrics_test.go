package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// freeAddr is a loopback address with a port that was free a moment ago,
// for --metrics-listen (RunListener listens on it itself).
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// withMetrics serves metrics on a free port, for tenants (all or N).
func withMetrics(addr, tenants string) func(*config.Config) {
	return func(c *config.Config) {
		c.MetricsListen = addr
		c.MetricsTenants = tenants
	}
}

// scrape is one read of /metrics, parsed.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t testing.TB, addr string) scrape {
	t.Helper()
	var resp *http.Response
	var err error
	// The endpoint starts with the proxy: the first scrape may come first.
	eventually(t, 10*time.Second, "the metrics endpoint", func() bool {
		resp, err = http.Get("http://" + addr + "/metrics")
		return err == nil
	})
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// find returns the series of name whose labels include labels ("k=v"...).
func (s scrape) find(name string, labels ...string) *dto.Metric {
	fam := s[name]
	if fam == nil {
		return nil
	}
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		ok := true
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				ok = false
			}
		}
		if ok {
			return m
		}
	}
	return nil
}

// value is the value of a counter or gauge series (or a histogram's
// sample count); a missing series fails the test.
func (s scrape) value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	m := s.find(name, labels...)
	if m == nil {
		t.Fatalf("no series %s%v", name, labels)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("series %s%v has no value", name, labels)
	return 0
}

// sum adds up every series of name that has labels.
func (s scrape) sum(name string, labels ...string) float64 {
	total := 0.0
	fam := s[name]
	if fam == nil {
		return 0
	}
	for _, m := range fam.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		match := true
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				match = false
			}
		}
		if match {
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

// tenantsOf lists the tenant label values of name.
func (s scrape) tenantsOf(name string) []string {
	var out []string
	if fam := s[name]; fam != nil {
		for _, m := range fam.Metric {
			for _, lp := range m.Label {
				if lp.GetName() == "tenant" {
					out = append(out, lp.GetValue())
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// connectMode logs in as app with password to tenant, with mode.
func connectMode(t testing.TB, p *Proxy, password, tenant string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.DSN(tenant))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = password
	cfg.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to %s: %v", tenant, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t testing.TB, conn *pgx.Conn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func wantErr(t testing.TB, conn *pgx.Conn, sql, state string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql); sqlState(err) != state {
		t.Fatalf("%s: %v, want SQLSTATE %s", sql, err, state)
	}
}

// TestMetrics runs known traffic for two tenants and reads the counts back
// from /metrics: exact for transactions, queries, refusals, errors by class
// and authentications; histograms with as many observations as
// transactions and queries; the pool's numbers consistent with each other;
// schema sizes measured in the background.
func TestMetrics(t *testing.T) {
	createTenant(t, "met_a", "CREATE TABLE IF NOT EXISTS t (x int)", "INSERT INTO t SELECT generate_series(1, 1000)")
	createTenant(t, "met_b")
	createTenant(t, "met_quiet", "CREATE TABLE IF NOT EXISTS big (x text)", "INSERT INTO big SELECT repeat('x', 100) FROM generate_series(1, 1000)")
	file := newUserList(t, map[string]string{"app": scramVerifier(t, "app-secret")})
	addr := freeAddr(t)
	p := startProxy(t, withAuthFile(file), withMetrics(addr, "all"),
		func(c *config.Config) { c.SchemaSizeInterval = 100 * time.Millisecond })

	// A wrong password: one failure.
	if _, err := connectAs(p, "app", "wrong", "met_a"); sqlState(err) != "28P01" {
		t.Fatalf("wrong password: %v, want 28P01", err)
	}

	// Tenant met_a, simple protocol: one Query message per Exec.
	a := connectMode(t, p, "app-secret", "met_a", pgx.QueryExecModeSimpleProtocol)
	mustExec(t, a, "INSERT INTO t VALUES (1)")            // transaction 1, query 1
	mustExec(t, a, "BEGIN")                               // transaction 2, query 2
	mustExec(t, a, "INSERT INTO t VALUES (2)")            // query 3
	mustExec(t, a, "COMMIT")                              // query 4
	mustExec(t, a, "SELECT 1")                            // transaction 3, query 5
	wantErr(t, a, "SELECT * FROM no_such_table", "42P01") // transaction 4, query 6
	wantErr(t, a, "SELECT 1/0", "22012")                  // transaction 5, query 7
	wantErr(t, a, "SET search_path TO met_b", "42501")    // transaction 6, query 8: refused
	mustExec(t, a, "BEGIN; SELECT 1; SELECT 2; COMMIT")   // transaction 7, query 9
	const aTxns, aQueries = 7, 9

	// Tenant met_b, extended protocol: one Execute per Exec.
	b := connectMode(t, p, "app-secret", "met_b", pgx.QueryExecModeExec)
	for i := range 3 {
		mustExec(t, b, fmt.Sprintf("SELECT %d", i))
	}
	const bTxns, bQueries = 3, 3

	s := scrapeMetrics(t, addr)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgtenant_tenant_transactions_total", []string{"tenant=met_a"}, aTxns},
		{"pgtenant_tenant_queries_total", []string{"tenant=met_a"}, aQueries},
		{"pgtenant_tenant_transactions_total", []string{"tenant=met_b"}, bTxns},
		{"pgtenant_tenant_queries_total", []string{"tenant=met_b"}, bQueries},
		{"pgtenant_tenant_transaction_duration_seconds", []string{"tenant=met_a"}, aTxns},
		{"pgtenant_tenant_query_duration_seconds", []string{"tenant=met_a"}, aQueries},
		{"pgtenant_tenant_transaction_duration_seconds", []string{"tenant=met_b"}, bTxns},
		{"pgtenant_tenant_query_duration_seconds", []string{"tenant=met_b"}, bQueries},
		{"pgtenant_tenant_refusals_total", []string{"tenant=met_a", "code=42501"}, 1},
		{"pgtenant_tenant_refusals_total", []string{"tenant=met_a", "code=0A000"}, 0},
		{"pgtenant_tenant_refusals_total", []string{"tenant=met_b", "code=42501"}, 0},
		{"pgtenant_tenant_errors_total", []string{"tenant=met_a", "class=42"}, 2},
		{"pgtenant_tenant_errors_total", []string{"tenant=met_a", "class=22"}, 1},
		{"pgtenant_tenant_clients", []string{"tenant=met_a"}, 1},
		{"pgtenant_tenant_clients", []string{"tenant=met_b"}, 1},
		{"pgtenant_tenant_clients_waiting", []string{"tenant=met_a"}, 0},
		{"pgtenant_clients", nil, 2},
		{"pgtenant_auth_successes_total", []string{"method=scram-sha-256"}, 2},
		{"pgtenant_auth_failures_total", []string{"method=scram-sha-256"}, 1},
		{"pgtenant_auth_failures_total", []string{"method=md5"}, 0},
		{"pgtenant_pool_size", nil, 4},
	} {
		if got := s.value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if s.find("pgtenant_tenant_errors_total", "tenant=met_b") != nil {
		t.Errorf("tenant met_b has errors counted, and made none")
	}
	// Histograms: observations in buckets, a positive sum.
	for _, name := range []string{"pgtenant_tenant_transaction_duration_seconds", "pgtenant_tenant_query_duration_seconds"} {
		h := s.find(name, "tenant=met_a").GetHistogram()
		if h.GetSampleSum() <= 0 || len(h.Bucket) == 0 || h.Bucket[len(h.Bucket)-1].GetCumulativeCount() > h.GetSampleCount() {
			t.Errorf("%s{met_a}: sum %v, buckets %v, count %d", name, h.GetSampleSum(), h.Bucket, h.GetSampleCount())
		}
	}
	// Every checkout but the pin check at startup waited, if only a moment.
	if n := s.value(t, "pgtenant_tenant_backend_wait_seconds", "tenant=met_a"); n < 1 {
		t.Errorf("backend waits of met_a: %v observations, want some", n)
	}
	for _, name := range []string{"pgtenant_tenant_client_received_bytes_total", "pgtenant_tenant_client_sent_bytes_total"} {
		if v := s.value(t, name, "tenant=met_a"); v <= 0 {
			t.Errorf("%s{met_a} = %v, want > 0", name, v)
		}
	}
	if v := s.sum("pgtenant_tenant_pins_total", "tenant=met_a"); v < 1 {
		t.Errorf("pins of met_a: %v, want at least 1", v)
	}
	// The pool: numbers that agree with each other and the traffic.
	size, open, idle := s.value(t, "pgtenant_pool_size"), s.value(t, "pgtenant_pool_connections_open"), s.value(t, "pgtenant_pool_connections_idle")
	dials, checkouts := s.value(t, "pgtenant_pool_dials_total"), s.value(t, "pgtenant_pool_checkouts_total")
	if open > size || idle > open || dials < 1 || dials < open {
		t.Errorf("pool: size %v, open %v, idle %v, dials %v", size, open, idle, dials)
	}
	// Each transaction took a backend, except those that were part of one
	// already (none here) and the refused one, which a backend ran too.
	if checkouts < aTxns+bTxns {
		t.Errorf("pool checkouts %v, want at least %d", checkouts, aTxns+bTxns)
	}
	if v := s.value(t, "pgtenant_pool_timeouts_total"); v != 0 {
		t.Errorf("pool timeouts %v, want 0", v)
	}

	// A backend goes back to the pool just after the client is answered.
	eventually(t, 10*time.Second, "met_a holding no backend", func() bool {
		return scrapeMetrics(t, addr).value(t, "pgtenant_tenant_backends", "tenant=met_a") == 0
	})

	// Schema sizes, measured in the background: every tenant's, also one
	// no client has used.
	eventually(t, 10*time.Second, "schema sizes of met_a and met_quiet", func() bool {
		s := scrapeMetrics(t, addr)
		a, q := s.find("pgtenant_tenant_schema_size_bytes", "tenant=met_a"), s.find("pgtenant_tenant_schema_size_bytes", "tenant=met_quiet")
		return a != nil && q != nil && a.GetGauge().GetValue() >= 8192 && q.GetGauge().GetValue() > 100_000
	})
	var want int64
	if err := direct(t).QueryRow(context.Background(),
		`SELECT pg_total_relation_size('met_quiet.big')`).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if got := scrapeMetrics(t, addr).value(t, "pgtenant_tenant_schema_size_bytes", "tenant=met_quiet"); got != float64(want) {
		t.Errorf("schema size of met_quiet = %v, want pg_total_relation_size %d", got, want)
	}
	// The Go runtime's and the process's collectors are there.
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if s[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}

// TestMetricsTenantBound: with --metrics-tenants 1, the most active tenant
// has series of its own and the others are summed into tenant="other";
// the sums are the totals, and when the most active tenant changes, other's
// counters do not go back.
func TestMetricsTenantBound(t *testing.T) {
	createTenant(t, "met_top")
	createTenant(t, "met_low")
	addr := freeAddr(t)
	p := startProxy(t, withMetrics(addr, "1"), func(c *config.Config) { c.SchemaSizeInterval = 0 })
	top := p.Connect(t, "met_top", pgx.QueryExecModeSimpleProtocol)
	low := p.Connect(t, "met_low", pgx.QueryExecModeSimpleProtocol)
	run := func(conn *pgx.Conn, n int) {
		for range n {
			mustExec(t, conn, "SELECT 1")
		}
	}
	run(top, 5)
	run(low, 3)

	s := scrapeMetrics(t, addr)
	if got, want := s.tenantsOf("pgtenant_tenant_transactions_total"), []string{"met_top", "other"}; !equalStrings(got, want) {
		t.Fatalf("tenants with series: %v, want %v", got, want)
	}
	if v := s.value(t, "pgtenant_tenant_transactions_total", "tenant=met_top"); v != 5 {
		t.Errorf("met_top transactions %v, want 5", v)
	}
	if v := s.value(t, "pgtenant_tenant_transactions_total", "tenant=other"); v != 3 {
		t.Errorf("other transactions %v, want 3 (met_low's)", v)
	}
	if v := s.value(t, "pgtenant_tenant_clients", "tenant=other"); v != 1 {
		t.Errorf("other clients %v, want 1", v)
	}
	if v := s.value(t, "pgtenant_metrics_other_tenants"); v != 1 {
		t.Errorf("pgtenant_metrics_other_tenants %v, want 1", v)
	}
	if n := len(s.tenantsOf("pgtenant_tenant_query_duration_seconds")); n != 2 {
		t.Errorf("query duration histograms for %d tenants, want 2", n)
	}

	// met_low becomes the busier one: it takes the named series, met_top
	// goes into other, and other's counter does not go back.
	run(low, 30)
	s = scrapeMetrics(t, addr)
	if got, want := s.tenantsOf("pgtenant_tenant_transactions_total"), []string{"met_low", "other"}; !equalStrings(got, want) {
		t.Fatalf("after met_low's burst, tenants with series: %v, want %v", got, want)
	}
	if v := s.value(t, "pgtenant_tenant_transactions_total", "tenant=met_low"); v != 33 {
		t.Errorf("met_low transactions %v, want 33", v)
	}
	if v := s.value(t, "pgtenant_tenant_transactions_total", "tenant=other"); v < 3 {
		t.Errorf("other transactions went back to %v from 3", v)
	}
	run(top, 2)
	s2 := scrapeMetrics(t, addr)
	before, after := s.value(t, "pgtenant_tenant_transactions_total", "tenant=other"), s2.value(t, "pgtenant_tenant_transactions_total", "tenant=other")
	if s2.find("pgtenant_tenant_transactions_total", "tenant=met_low") != nil && after != before+2 {
		t.Errorf("other transactions %v after met_top ran 2 more, want %v", after, before+2)
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}
