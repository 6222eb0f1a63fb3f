package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather runs one scrape of c and returns counter values of name by tenant.
func gather(t *testing.T, c *collector, name string) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.Metric {
			out[tenantOf(m)] = m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return out
}

func tenantOf(m *dto.Metric) string {
	for _, lp := range m.Label {
		if lp.GetName() == "tenant" {
			return lp.GetValue()
		}
	}
	return ""
}

func TestCollectorOtherStaysMonotonic(t *testing.T) {
	srv := &Server{met: new(serverMetrics)}
	c := newCollector(srv, 1)
	txn := func(name string, n int) {
		for range n {
			srv.tenants.entry(name).stats.txnDone(time.Millisecond)
		}
	}
	txn("a", 5)
	txn("b", 3)
	got := gather(t, c, "pgtenant_tenant_transactions_total")
	if got["a"] != 5 || got["other"] != 3 || len(got) != 2 {
		t.Fatalf("first scrape: %v, want a 5, other 3", got)
	}
	// b becomes the busiest: it is named, a joins other, and other's count
	// does not go back. b was in other until this scrape, so its 20 count
	// there; a's 5, made under its own name, do not.
	txn("b", 20)
	got = gather(t, c, "pgtenant_tenant_transactions_total")
	if got["b"] != 23 || got["other"] != 23 || len(got) != 2 {
		t.Fatalf("second scrape: %v, want b 23, other 23", got)
	}
	// Now other grows by what its member a does.
	txn("a", 2)
	txn("b", 20)
	got = gather(t, c, "pgtenant_tenant_transactions_total")
	if got["b"] != 43 || got["other"] != 25 {
		t.Fatalf("third scrape: %v, want b 43, other 25", got)
	}
	hist := gather(t, c, "pgtenant_tenant_transaction_duration_seconds")
	if hist["b"] != 43 || hist["other"] != 25 {
		t.Fatalf("histogram counts: %v, want b 43, other 25", hist)
	}
}

func TestCollectorAll(t *testing.T) {
	srv := &Server{met: new(serverMetrics)}
	c := newCollector(srv, 0)
	for _, name := range []string{"a", "b", "c"} {
		srv.tenants.entry(name).stats.query()
	}
	got := gather(t, c, "pgtenant_tenant_queries_total")
	if len(got) != 3 || got["a"] != 1 || got["other"] != 0 {
		t.Fatalf("queries: %v, want a, b and c with 1 each", got)
	}
}

func TestErrorClasses(t *testing.T) {
	var e errorClasses
	for _, code := range []string{"42P01", "42501", "22012", "ZZ001", "bad"} {
		e.add(code)
	}
	for i := range maxExtraClasses + 2 {
		e.add(string([]byte{'Q', byte('A' + i), '0', '0', '0'}))
	}
	m := map[string]uint64{}
	e.snapshot(m)
	if m["42"] != 2 || m["22"] != 1 || m["ZZ"] != 1 || m["XX"] != 1 {
		t.Fatalf("classes: %v", m)
	}
	if len(m) != 3+1+maxExtraClasses || m["other"] != 3 {
		t.Fatalf("made-up classes beyond %d should count as other: %v", maxExtraClasses, m)
	}
}

func TestHistogramBuckets(t *testing.T) {
	var h histogram
	h.observe(0)
	h.observe(time.Millisecond)     // on a bound: that bucket
	h.observe(3 * time.Millisecond) // 0.005
	h.observe(time.Hour)            // past every bound
	s := h.snapshot()
	if s.counts[0] != 1 || s.counts[1] != 1 || s.counts[3] != 1 || s.counts[len(boundSeconds)] != 1 {
		t.Fatalf("counts %v", s.counts)
	}
	if want := uint64(time.Hour + 4*time.Millisecond); s.sum != want {
		t.Fatalf("sum %d, want %d", s.sum, want)
	}
}
