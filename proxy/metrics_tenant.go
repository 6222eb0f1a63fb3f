package proxy

import (
	"sync"
	"sync/atomic"
	"time"
)

// tenantStats are a tenant's counters and histograms, read by the metrics
// collector (metrics.go) and the console. They are plain atomics, kept per
// tenant, not per session: counting costs a session no memory, and the
// request path an atomic add or two, with no lookup by label. The collector
// turns them into Prometheus series at scrape time, which is also where
// tenants beyond --metrics-tenants are summed into "other".
type tenantStats struct {
	txns, queries        atomic.Uint64
	bytesIn, bytesOut    atomic.Uint64 // client side
	pinsFull, pinsReused atomic.Uint64
	refusals             [len(refusalCodes)]atomic.Uint64
	errs                 errorClasses

	txnTime, queryTime, waitTime histogram

	// size is the tenant schema's size in bytes as last measured in the
	// background (metrics_schema.go); sized says it has been.
	size  atomic.Int64
	sized atomic.Bool
	// migVersion and migMicros are the tenant's migration version and the
	// time its migrations took (pgtenant migrate), read with the schema
	// sizes; migrated says they have been.
	migVersion, migMicros atomic.Int64
	migrated              atomic.Bool

	// group and score are the collector's, under its lock (metrics.go):
	// which series the tenant went into at the last scrape, and how active
	// it has been lately (activity seen at the last scrape in seen).
	group groupKind
	score float64
	seen  uint64
}

// transactions is the number of transactions the tenant's clients ended.
func (st *tenantStats) transactions() uint64 { return st.txns.Load() }

// schemaSize is the tenant schema's size in bytes as last measured in the
// background, and whether it has been measured.
func (st *tenantStats) schemaSize() (int64, bool) { return st.size.Load(), st.sized.Load() }

// setSchemaSize records a measurement of the tenant schema's size.
func (st *tenantStats) setSchemaSize(n int64) {
	st.size.Store(n)
	st.sized.Store(true)
}

// The counting hooks the session calls, each one line at its call site.
//
// statsNoinline: hooks with a loop are kept out of line (go:noinline).
// Inlined, their locals would grow the frames of the session's functions
// that call them, and a goroutine's stack, which grows to its deepest
// frame chain and is then kept while the client idles, would grow with
// them: that cost every idle client kilobytes in the idle benchmark.

func (st *tenantStats) query()                    { st.queries.Add(1) }
func (st *tenantStats) read(n int)                { st.bytesIn.Add(uint64(n)) }
func (st *tenantStats) wrote(n int)               { st.bytesOut.Add(uint64(n)) }
func (st *tenantStats) waited(d time.Duration)    { st.waitTime.observe(d) }
func (st *tenantStats) queryDone(d time.Duration) { st.queryTime.observe(d) }

// pinned counts a backend put in the client's state: reused when the pin
// could be skipped (pinReusable).
func (st *tenantStats) pinned(reused bool) {
	if reused {
		st.pinsReused.Add(1)
	} else {
		st.pinsFull.Add(1)
	}
}

// txnDone counts a transaction that ended, d after its first message.
func (st *tenantStats) txnDone(d time.Duration) {
	st.txns.Add(1)
	st.txnTime.observe(d)
}

// failed counts an error the client was told, by SQLSTATE; a refusal of
// pgtenant's (refused) is counted here too, when the client hears it.
func (st *tenantStats) failed(code string) { st.errs.add(code) }

// refused counts a refusal of pgtenant's with one of refusalCodes; other
// codes are not refusals for the metrics. Not inlined (statsNoinline).
//
//go:noinline
func (st *tenantStats) refused(code string) {
	for i, c := range refusalCodes {
		if c == code {
			st.refusals[i].Add(1)
			return
		}
	}
}

// refusalCodes are the SQLSTATEs of pgtenant's refusals that the metrics
// count (pgtenant_refusals_total): a statement that would leave the tenant
// (42501), a feature pgtenant cannot pool (0A000), too many clients
// (53300), no backend within query-wait-timeout (57014), a limit of the
// tenant's reached (53400).
var refusalCodes = [...]string{"42501", "0A000", "53300", "57014", "53400"}

// pgClasses are PostgreSQL's SQLSTATE classes (errcodes.txt), counted in
// fixed slots; an error of any other class (a RAISE with a code of the
// application's own) goes to errorClasses.extra.
var pgClasses = [...]string{
	"00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z",
	"20", "21", "22", "23", "24", "25", "26", "27", "28", "2B", "2D", "2F",
	"34", "38", "39", "3B", "3D", "3F", "40", "42", "44", "53", "54", "55",
	"57", "58", "72", "F0", "HV", "P0", "XX",
}

// classSlot is the index of a class in pgClasses, built once.
var classSlot = func() map[string]int {
	m := make(map[string]int, len(pgClasses))
	for i, c := range pgClasses {
		m[c] = i
	}
	return m
}()

// maxExtraClasses bounds the classes outside pgClasses kept per tenant, so
// an application raising made-up codes cannot grow the series without end;
// beyond it they count as class "other".
const maxExtraClasses = 16

// errorClasses counts errors by SQLSTATE class.
type errorClasses struct {
	known [len(pgClasses)]atomic.Uint64
	mu    sync.Mutex
	extra map[string]uint64 // rare: classes outside pgClasses
}

func (e *errorClasses) add(code string) {
	class := "XX"
	if len(code) == 5 {
		class = code[:2]
	}
	if i, ok := classSlot[class]; ok {
		e.known[i].Add(1)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.extra == nil {
		e.extra = map[string]uint64{}
	}
	if _, ok := e.extra[class]; !ok && len(e.extra) >= maxExtraClasses {
		class = "other"
	}
	e.extra[class]++
}

// snapshot adds the counts into m by class.
func (e *errorClasses) snapshot(m map[string]uint64) {
	for i := range e.known {
		if n := e.known[i].Load(); n > 0 {
			m[pgClasses[i]] += n
		}
	}
	e.mu.Lock()
	for c, n := range e.extra {
		m[c] += n
	}
	e.mu.Unlock()
}

// durationBounds are the upper bounds of the histograms' buckets, from half
// a millisecond (a short query on a near server) to half a minute (the
// default query-wait-timeout is 30s); in nanoseconds, so observe compares
// integers. boundSeconds are the same in seconds, for Prometheus.
var (
	boundSeconds   = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	durationBounds = func() (b [len(boundSeconds)]int64) {
		for i, s := range boundSeconds {
			b[i] = int64(s * 1e9)
		}
		return b
	}()
)

// histogram is a fixed-bucket histogram of durations made of atomics: a
// count per bucket (the last one past every bound) and the sum. Counts are
// per bucket, not cumulative, so an observation adds to one bucket only;
// the collector accumulates them.
type histogram struct {
	counts [len(boundSeconds) + 1]atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
}

func (h *histogram) observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := 0
	for i < len(durationBounds) && int64(d) > durationBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(uint64(d))
}

// histSnap is a histogram read at one moment.
type histSnap struct {
	counts [len(boundSeconds) + 1]uint64
	sum    uint64
}

func (h *histogram) snapshot() (s histSnap) {
	for i := range h.counts {
		s.counts[i] = h.counts[i].Load()
	}
	s.sum = h.sum.Load()
	return s
}

// monoNow is a monotonic clock reading in nanoseconds (never 0), for the
// moments a session keeps (the start of a transaction or query): 8 bytes
// where a time.Time takes 24. monoTime turns one back into a time.Time.
func monoNow() int64 { return int64(time.Since(monoBase)) + 1 }

func monoTime(t int64) time.Time { return monoBase.Add(time.Duration(t - 1)) }

var monoBase = time.Now()

// setMigration records the tenant's migration version and total time.
func (st *tenantStats) setMigration(version int64, took time.Duration) {
	st.migVersion.Store(version)
	st.migMicros.Store(took.Microseconds())
	st.migrated.Store(true)
}
