package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtenant/pgtenant/config"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serverMetrics are the server's own counters, apart from any tenant's:
// authentication by method, the registry watch, refusals at startup before
// the client's tenant is known. Counted whether or not metrics are served.
type serverMetrics struct {
	authOK, authFailed [len(authMethods)]atomic.Uint64
	// registryReloads: the tenant cache was dropped whole (the registry
	// watch (re)connected); registryNotifies: NOTIFYs received.
	registryReloads, registryNotifies atomic.Uint64
	startupRefusals                   [len(refusalCodes)]atomic.Uint64
}

// authMethods are the values of the method label.
var authMethods = [...]string{config.AuthTrust, config.AuthPassword, config.AuthMD5, config.AuthSCRAM}

// authenticated counts one authentication by method, successful or not.
// Not inlined: session.start's frame, on the stack of every client's
// startup, would grow by its loop (see statsNoinline).
//
//go:noinline
func (m *serverMetrics) authenticated(method string, ok bool) {
	for i, name := range authMethods {
		if name == method {
			if ok {
				m.authOK[i].Add(1)
			} else {
				m.authFailed[i].Add(1)
			}
			return
		}
	}
}

// countAuth counts one authentication by the server's method. Not
// inlined: the method's name comes from a Config method with a value
// receiver, whose copy of the Config (hundreds of bytes) would otherwise sit
// in session.start's frame, on every client's stack (statsNoinline).
//
//go:noinline
func (srv *Server) countAuth(ok bool) { srv.met.authenticated(srv.cfg.EffectiveAuthType(), ok) }

// registryEvent counts what the registry watch reports: "" is a reload
// (everything forgotten), a name a NOTIFY.
func (m *serverMetrics) registryEvent(name string) {
	if name == "" {
		m.registryReloads.Add(1)
	} else {
		m.registryNotifies.Add(1)
	}
}

// refusedAtStartup counts a refusal of a client whose tenant is not known.
func (m *serverMetrics) refusedAtStartup(code string) {
	for i, c := range refusalCodes {
		if c == code {
			m.startupRefusals[i].Add(1)
			return
		}
	}
}

// otherTenant is the tenant label of the series that sum the tenants
// beyond --metrics-tenants.
const otherTenant = "other"

// groupKind is which series a tenant's stats went into at the last scrape.
type groupKind uint8

const (
	groupUnseen groupKind = iota // not scraped yet
	groupNamed                   // series of its own
	groupOther                   // summed into tenant="other"
)

// statsSnap is a tenant's counters read at one moment, or a sum of them.
// Arithmetic on it wraps (uint64), so the collector can carry differences.
type statsSnap struct {
	txns, queries, bytesIn, bytesOut, pinsFull, pinsReused uint64
	refusals                                               [len(refusalCodes)]uint64
	errs                                                   map[string]uint64
	hist                                                   [3]histSnap // transaction, query, wait
}

func (st *tenantStats) snapshot() statsSnap {
	s := statsSnap{
		txns: st.txns.Load(), queries: st.queries.Load(),
		bytesIn: st.bytesIn.Load(), bytesOut: st.bytesOut.Load(),
		pinsFull: st.pinsFull.Load(), pinsReused: st.pinsReused.Load(),
		errs: map[string]uint64{},
		hist: [3]histSnap{st.txnTime.snapshot(), st.queryTime.snapshot(), st.waitTime.snapshot()},
	}
	for i := range st.refusals {
		s.refusals[i] = st.refusals[i].Load()
	}
	st.errs.snapshot(s.errs)
	return s
}

// add adds b into s, or takes it away when sub.
func (s *statsSnap) add(b *statsSnap, sub bool) {
	op := func(x *uint64, y uint64) {
		if sub {
			*x -= y
		} else {
			*x += y
		}
	}
	op(&s.txns, b.txns)
	op(&s.queries, b.queries)
	op(&s.bytesIn, b.bytesIn)
	op(&s.bytesOut, b.bytesOut)
	op(&s.pinsFull, b.pinsFull)
	op(&s.pinsReused, b.pinsReused)
	for i := range s.refusals {
		op(&s.refusals[i], b.refusals[i])
	}
	if s.errs == nil {
		s.errs = map[string]uint64{}
	}
	for c, n := range b.errs {
		v := s.errs[c]
		op(&v, n)
		s.errs[c] = v
	}
	for h := range s.hist {
		for i := range s.hist[h].counts {
			op(&s.hist[h].counts[i], b.hist[h].counts[i])
		}
		op(&s.hist[h].sum, b.hist[h].sum)
	}
}

// collector is the prometheus.Collector of a server: at each scrape it
// reads the tenants' stats and the pool's, and makes const metrics of them.
//
// With a limit (--metrics-tenants N), the N tenants most active lately
// have series of their own and the rest are summed into tenant="other".
// Activity is the transactions and queries since the last scrape, decayed
// by half at each scrape, so a tenant that was busy a while ago gives way
// to one busy now, but a short pause does not move a tenant out. A tenant
// moving between its own series and "other" must not make "other" go back
// or jump (a counter that went back reads as a reset): carry holds what has
// been added to or taken from the sum of other's members so that other's
// counters only ever grow by what its members did while members.
type collector struct {
	srv   *Server
	limit int // 0: every tenant has series of its own

	mu    sync.Mutex // one scrape at a time: the groups and carry are its
	carry statsSnap
}

func newCollector(srv *Server, limit int) *collector {
	return &collector{srv: srv, limit: limit}
}

var tenantLabel = []string{"tenant"}

func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics' descriptions: README's "### Metrics" lists the same.
var (
	descClients      = newDesc("pgtenant_tenant_clients", "Clients of the tenant connected (authenticated).", tenantLabel...)
	descWaiting      = newDesc("pgtenant_tenant_clients_waiting", "Clients of the tenant waiting for a backend connection.", tenantLabel...)
	descBackends     = newDesc("pgtenant_tenant_backends", "Backend connections held by the tenant's clients.", tenantLabel...)
	descTxns         = newDesc("pgtenant_tenant_transactions_total", "Transactions the tenant's clients ended (ReadyForQuery idle after their statements).", tenantLabel...)
	descQueries      = newDesc("pgtenant_tenant_queries_total", "Queries of the tenant's clients: Query, Execute and FunctionCall messages.", tenantLabel...)
	descTxnTime      = newDesc("pgtenant_tenant_transaction_duration_seconds", "Time from a transaction's first statement sent to the server to its end.", tenantLabel...)
	descQueryTime    = newDesc("pgtenant_tenant_query_duration_seconds", "Time from a query sent to the server (or the end of the one before it in a pipeline) to its end.", tenantLabel...)
	descWaitTime     = newDesc("pgtenant_tenant_backend_wait_seconds", "Time a client waited for a backend connection (pause and rate limit included).", tenantLabel...)
	descBytesIn      = newDesc("pgtenant_tenant_client_received_bytes_total", "Bytes received from the tenant's clients.", tenantLabel...)
	descBytesOut     = newDesc("pgtenant_tenant_client_sent_bytes_total", "Bytes sent to the tenant's clients.", tenantLabel...)
	descErrors       = newDesc("pgtenant_tenant_errors_total", "Errors the tenant's clients were told, by SQLSTATE class (first two characters).", "tenant", "class")
	descPins         = newDesc("pgtenant_tenant_pins_total", "Backends put in a client's state at checkout: full (reset and search_path set) or reused (already in that state).", "tenant", "kind")
	descRefusals     = newDesc("pgtenant_tenant_refusals_total", "Statements or clients refused by pgtenant, by SQLSTATE.", "tenant", "code")
	descSchemaSize   = newDesc("pgtenant_tenant_schema_size_bytes", "Size of the tenant's schema (tables, indexes, TOAST), as last measured in the background.", tenantLabel...)
	descMigVersion   = newDesc("pgtenant_tenant_migration_version", "The highest migration version pgtenant migrate applied to the tenant; absent before its first.", tenantLabel...)
	descMigSeconds   = newDesc("pgtenant_tenant_migration_seconds", "The time all the tenant's migrations took, as pgtenant migrate recorded it.", tenantLabel...)
	descQuota        = newDesc("pgtenant_tenant_storage_quota_bytes", "The tenant's storage quota; absent when it has none.", tenantLabel...)
	descTier         = newDesc("pgtenant_tenant_info", "1 for each tenant with a tier label.", "tenant", "tier")
	descOtherTenants = newDesc("pgtenant_metrics_other_tenants", "Tenants summed into tenant=\"other\" (beyond --metrics-tenants).")

	descPoolSize     = newDesc("pgtenant_pool_size", "Most backend connections the pool opens.")
	descPoolOpen     = newDesc("pgtenant_pool_connections_open", "Backend connections open or being dialled.")
	descPoolIdle     = newDesc("pgtenant_pool_connections_idle", "Backend connections idle in the pool.")
	descPoolWaiting  = newDesc("pgtenant_pool_waiting", "Checkouts waiting for a backend connection.")
	descPoolDials    = newDesc("pgtenant_pool_dials_total", "Backend connections dialled.")
	descPoolDialErrs = newDesc("pgtenant_pool_dial_failures_total", "Dials of backend connections that failed.")
	descPoolDestroys = newDesc("pgtenant_pool_destroys_total", "Backend connections closed (dead, too old, in doubt, evicted).")
	descPoolCheckout = newDesc("pgtenant_pool_checkouts_total", "Backend connections handed out.")
	descPoolTimeouts = newDesc("pgtenant_pool_timeouts_total", "Checkouts that gave up after query-wait-timeout.")

	descClientsAll  = newDesc("pgtenant_clients", "Clients connected (authenticated), all tenants.")
	descReloads     = newDesc("pgtenant_registry_reloads_total", "Times the tenant cache was dropped whole, when the registry watch (re)connected.")
	descNotifies    = newDesc("pgtenant_registry_notifications_total", "NOTIFYs received from the registry.")
	descAuthOK      = newDesc("pgtenant_auth_successes_total", "Clients that authenticated, by method.", "method")
	descAuthFailed  = newDesc("pgtenant_auth_failures_total", "Clients refused at authentication, by method.", "method")
	descStartupRefs = newDesc("pgtenant_startup_refusals_total", "Clients refused before their tenant was known, by SQLSTATE.", "code")
)

var allDescs = []*prometheus.Desc{
	descClients, descWaiting, descBackends, descTxns, descQueries, descTxnTime, descQueryTime, descWaitTime,
	descBytesIn, descBytesOut, descErrors, descPins, descRefusals, descSchemaSize, descQuota, descMigVersion, descMigSeconds, descTier, descOtherTenants,
	descPoolSize, descPoolOpen, descPoolIdle, descPoolWaiting, descPoolDials, descPoolDialErrs, descPoolDestroys,
	descPoolCheckout, descPoolTimeouts, descClientsAll, descReloads, descNotifies, descAuthOK, descAuthFailed, descStartupRefs,
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// tenantGauges are a tenant's current values (or a sum of them).
type tenantGauges struct {
	clients, waiting, backends int64
	size                       int64
	sized                      bool
}

func gaugesOf(e *tenantEntry) tenantGauges {
	size, sized := e.stats.schemaSize()
	return tenantGauges{clients: e.clients.Load(), waiting: e.waiting.Load(), backends: e.backends.Load(), size: size, sized: sized}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.collectServer(ch)
	c.mu.Lock()
	defer c.mu.Unlock()
	entries := c.srv.tenants.all()
	named := c.chooseNamed(entries)
	var (
		other        statsSnap
		otherGauges  tenantGauges
		otherMembers int
	)
	for _, e := range entries {
		st := &e.stats
		snap := st.snapshot()
		if named[e] {
			switch st.group {
			case groupOther:
				c.carry.add(&snap, false) // leaves other: other keeps its value
			}
			st.group = groupNamed
			c.emitTenant(ch, e.name, &snap, gaugesOf(e))
			if q := e.conf.quotaBytes(); q > 0 {
				ch <- prometheus.MustNewConstMetric(descQuota, prometheus.GaugeValue, float64(q), e.name)
			}
			if st.migrated.Load() {
				ch <- prometheus.MustNewConstMetric(descMigVersion, prometheus.GaugeValue, float64(st.migVersion.Load()), e.name)
				ch <- prometheus.MustNewConstMetric(descMigSeconds, prometheus.GaugeValue, float64(st.migMicros.Load())/1e6, e.name)
			}
			if tier := e.conf.tier(); tier != "" {
				ch <- prometheus.MustNewConstMetric(descTier, prometheus.GaugeValue, 1, e.name, tier)
			}
			continue
		}
		if st.group == groupNamed {
			c.carry.add(&snap, true) // joins other: other keeps its value
		}
		st.group = groupOther
		other.add(&snap, false)
		g := gaugesOf(e)
		otherGauges.clients += g.clients
		otherGauges.waiting += g.waiting
		otherGauges.backends += g.backends
		otherGauges.size += g.size
		otherGauges.sized = otherGauges.sized || g.sized
		otherMembers++
	}
	if c.limit > 0 {
		ch <- prometheus.MustNewConstMetric(descOtherTenants, prometheus.GaugeValue, float64(otherMembers))
	}
	if otherMembers > 0 || c.everOther() {
		other.add(&c.carry, false)
		c.emitTenant(ch, otherTenant, &other, otherGauges)
	}
}

// everOther says whether "other" has had members, so its series, once
// there, stay (counters that vanish and come back read as resets).
func (c *collector) everOther() bool { return c.carry.errs != nil }

// chooseNamed picks the tenants that get series of their own: all of them
// without a limit, else the limit most active lately (see collector). It
// updates each tenant's score.
func (c *collector) chooseNamed(entries []*tenantEntry) map[*tenantEntry]bool {
	named := make(map[*tenantEntry]bool, len(entries))
	for _, e := range entries {
		st := &e.stats
		activity := st.txns.Load() + st.queries.Load()
		st.score = st.score/2 + float64(activity-st.seen)
		st.seen = activity
	}
	if c.limit == 0 || len(entries) <= c.limit {
		for _, e := range entries {
			named[e] = true
		}
		return named
	}
	ranked := append([]*tenantEntry(nil), entries...)
	sort.SliceStable(ranked, func(i, j int) bool {
		a, b := &ranked[i].stats, &ranked[j].stats
		if a.score != b.score {
			return a.score > b.score
		}
		// Ties (no activity at all): those with series keep them, then
		// those with clients, then by name (entries are sorted by name).
		if (a.group == groupNamed) != (b.group == groupNamed) {
			return a.group == groupNamed
		}
		return ranked[i].clients.Load() > ranked[j].clients.Load()
	})
	for _, e := range ranked[:c.limit] {
		named[e] = true
	}
	if c.carry.errs == nil {
		c.carry.errs = map[string]uint64{} // other exists from now on
	}
	return named
}

// emitTenant sends one tenant's series (or other's).
func (c *collector) emitTenant(ch chan<- prometheus.Metric, tenant string, s *statsSnap, g tenantGauges) {
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), tenant)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{tenant}, labels...)...)
	}
	gauge(descClients, g.clients)
	gauge(descWaiting, g.waiting)
	gauge(descBackends, g.backends)
	if g.sized {
		gauge(descSchemaSize, g.size)
	}
	counter(descTxns, s.txns)
	counter(descQueries, s.queries)
	counter(descBytesIn, s.bytesIn)
	counter(descBytesOut, s.bytesOut)
	counter(descPins, s.pinsFull, "full")
	counter(descPins, s.pinsReused, "reused")
	for i, code := range refusalCodes {
		counter(descRefusals, s.refusals[i], code)
	}
	classes := make([]string, 0, len(s.errs))
	for class, n := range s.errs {
		if n > 0 {
			classes = append(classes, class)
		}
	}
	sort.Strings(classes)
	for _, class := range classes {
		counter(descErrors, s.errs[class], class)
	}
	for i, d := range []*prometheus.Desc{descTxnTime, descQueryTime, descWaitTime} {
		h := &s.hist[i]
		buckets := make(map[float64]uint64, len(boundSeconds))
		var cum uint64
		for j, bound := range boundSeconds {
			cum += h.counts[j]
			buckets[bound] = cum
		}
		cum += h.counts[len(boundSeconds)]
		ch <- prometheus.MustNewConstHistogram(d, cum, float64(h.sum)/1e9, buckets, tenant)
	}
}

// collectServer sends the pool's and the server's series.
func (c *collector) collectServer(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	if c.srv.pool != nil {
		ps := c.srv.pool.Stats()
		gauge(descPoolSize, ps.Size)
		gauge(descPoolOpen, ps.Open)
		gauge(descPoolIdle, ps.Idle)
		gauge(descPoolWaiting, ps.Waiting)
		counter(descPoolDials, ps.Dials)
		counter(descPoolDialErrs, ps.DialFailures)
		counter(descPoolDestroys, ps.Destroys)
		counter(descPoolCheckout, ps.Checkouts)
		counter(descPoolTimeouts, ps.Timeouts)
	}
	gauge(descClientsAll, int(c.srv.clients.Load()))
	m := c.srv.met
	counter(descReloads, m.registryReloads.Load())
	counter(descNotifies, m.registryNotifies.Load())
	for i, method := range authMethods {
		counter(descAuthOK, m.authOK[i].Load(), method)
		counter(descAuthFailed, m.authFailed[i].Load(), method)
	}
	for i, code := range refusalCodes {
		counter(descStartupRefs, m.startupRefusals[i].Load(), code)
	}
}

// metricsHandler is the /metrics handler of srv: its collector with the Go
// runtime's and the process's, on a registry of its own (not the global
// one, which a library could add series to).
func metricsHandler(srv *Server) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newCollector(srv, srv.cfg.MetricsTenantLimit()),
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{srv.log}})
}

// slogPrinter gives promhttp's errors to the log.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics scrape failed", "err", v) }

// serveMetrics serves /metrics on ln until ctx is done; it closes ln.
func serveMetrics(ctx context.Context, srv *Server, ln net.Listener) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler(srv))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = hs.Shutdown(shutCtx)
	}()
	if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		srv.log.Error("metrics endpoint stopped", "err", err)
	}
}
