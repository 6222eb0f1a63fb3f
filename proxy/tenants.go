package proxy

import (
	"sort"
	"sync"
	"sync/atomic"
)

// tenantEntry is what the server keeps for one tenant that has had clients
// since the server started: the live counts that the console (SHOW TENANTS)
// and the metrics read, and the per-tenant controls (pause, limits). One
// entry per tenant name, shared by all of the tenant's sessions; a session
// holds its entry from admission to close (session.te).
//
// Entries are kept after the tenant's last client leaves, so that counters
// stay monotonic for Prometheus; their number is bounded by the tenants that
// ever connected, and each costs a few hundred bytes.
type tenantEntry struct {
	name string

	// clients are the tenant's admitted clients, waiting those of them
	// waiting for a backend (in checkout), backends the backends attached to
	// its clients (link states that hold one).
	clients  atomic.Int64
	waiting  atomic.Int64
	backends atomic.Int64

	// Each part below lives in a file of its own.
	stats  tenantStats  // metrics_tenant.go: counters and histograms
	pause  tenantPause  // pause.go: PAUSE and RESUME of the console
	limits tenantLimits // limits.go: max clients, rate limit
	conf   tenantConf   // tenantconf.go: the tenant's settings from the registry
	place  placement    // backends.go: the backend the tenant is on
}

// tenantTable holds the server's tenant entries by tenant name.
type tenantTable struct {
	mu sync.Mutex
	m  map[string]*tenantEntry

	// changed, when set, is told (without waiting; one pending signal is
	// enough) whenever a tenant gains its first client or loses its last:
	// the presence locks follow (presence.go). Set before serving starts.
	changed chan struct{}
}

// join returns the entry of tenant name, made if missing, with one more
// client counted; the session gives it back with leave.
func (t *tenantTable) join(name string) *tenantEntry {
	e := t.entry(name)
	if e.clients.Add(1) == 1 {
		t.signal()
	}
	return e
}

// leave counts a client of e gone.
func (t *tenantTable) leave(e *tenantEntry) {
	if e.clients.Add(-1) == 0 {
		t.signal()
	}
}

// signal tells changed, if anyone listens, that the set of tenants with
// clients may have changed. It never blocks: a burst of joins and leaves
// is one signal, and the listener reads the whole table.
func (t *tenantTable) signal() {
	if t.changed == nil {
		return
	}
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// entry returns the entry of tenant name, made if missing.
func (t *tenantTable) entry(name string) *tenantEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*tenantEntry{}
	}
	e := t.m[name]
	if e == nil {
		e = &tenantEntry{name: name}
		t.m[name] = e
	}
	return e
}

// lookup returns the entry of tenant name, or nil when it has none.
func (t *tenantTable) lookup(name string) *tenantEntry {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[name]
}

// all returns every entry, by tenant name.
func (t *tenantTable) all() []*tenantEntry {
	t.mu.Lock()
	out := make([]*tenantEntry, 0, len(t.m))
	for _, e := range t.m {
		out = append(out, e)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
