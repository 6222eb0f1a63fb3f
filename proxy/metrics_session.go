package proxy

import (
	"context"
	"math"
	"time"

	"github.com/pgtenant/pgtenant/pool"
)

// The session's side of the metrics: where a session counts into its
// tenant's stats (metrics_tenant.go). What a session keeps for them is the
// start of its open transaction and query, and how many of its queries are
// in flight (link.txnStart, link.queryStart, link.queriesOpen), paid for
// by keeping link.readyAt as 8 bytes: the session is no larger.

// noStats takes the counts of a session whose tenant is not known (a
// client refused before its tenant was resolved; the relay's unit tests):
// they are counted nowhere anyone reads.
var noStats tenantStats

// stats is the tenant's stats the session counts into.
func (s *session) stats() *tenantStats {
	if s.te == nil {
		return &noStats
	}
	return &s.te.stats
}

// clientIO is the session as the client connection's reader and writer:
// the bytes each read and write moves are counted for the tenant, one
// atomic add per syscall. It is the session itself (a conversion, not a
// wrapper), so counting costs an idle client no memory.
type clientIO session

func (c *clientIO) Read(p []byte) (int, error) {
	n, err := c.nc.Read(p)
	(*session)(c).stats().read(n)
	return n, err
}

func (c *clientIO) Write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	(*session)(c).stats().wrote(n)
	return n, err
}

// countClientIO makes the client's reader and writer count bytes for the
// tenant, once it is known.
func (s *session) countClientIO() {
	s.cr.r = (*clientIO)(s)
	s.cw.w = (*clientIO)(s)
}

// statementLocked: a client Query or Execute (query) or FunctionCall is
// about to be sent. The transaction it belongs to started now unless it
// started before; the query too, unless another of the client's is in
// flight (a pipeline), whose end it then starts at. Called with mu held.
func (s *session) statementLocked(query bool) {
	now := monoNow()
	if s.link.txnStart == 0 {
		s.link.txnStart = now
	}
	if !query {
		return
	}
	s.stats().query()
	if s.link.queriesOpen == 0 {
		s.link.queryStart = now
	}
	if s.link.queriesOpen < math.MaxUint16 {
		s.link.queriesOpen++
	}
}

// queryEndedLocked: one of the client's queries in flight ended (its
// Execute completed or failed, its Query was answered ReadyForQuery). The
// next one in flight, if any, starts now. Called with mu held.
func (s *session) queryEndedLocked() {
	if s.link.queriesOpen == 0 {
		return
	}
	now := monoNow()
	s.stats().queryDone(time.Duration(now - s.link.queryStart))
	s.link.queriesOpen--
	s.link.queryStart = now
}

// readyLocked: a ReadyForQuery of the client's with status came, after
// the reply that ended a Query if query. Status 'I' ends the transaction
// the client's statements began; when nothing more is owed, no query is in
// flight either (an Execute skipped after an error never ended on its own).
// Called with mu held.
func (s *session) readyLocked(status byte, query bool) {
	if query {
		s.queryEndedLocked()
	}
	if s.link.rm.len() == 0 {
		s.link.queriesOpen = 0
	}
	if status == 'I' && s.link.txnStart != 0 {
		s.stats().txnDone(time.Duration(monoNow() - s.link.txnStart))
		s.link.txnStart = 0
	}
}

// checkoutTimed is checkout (waiting) with the wait recorded. It is a
// function of its own, not inlined, so that the frames of the loops that
// call it, which every idle client's goroutine keeps on its stack, stay as
// small as they were.
//
//go:noinline
func (s *session) checkoutTimed(ctx context.Context) (*pool.Conn, error) {
	start := time.Now()
	be, err := s.checkout(ctx, true)
	s.stats().waited(time.Since(start))
	return be, err
}

// toldError counts an error the client is told.
func (s *session) toldError(code string) { s.stats().failed(code) }

// refusedStartup counts a refusal of pgtenant's at startup: the tenant's
// when it is known, else the server's (pgtenant_startup_refusals_total).
func (s *session) refusedStartup(code string) {
	if s.te != nil {
		s.te.stats.refused(code)
		return
	}
	s.srv.met.refusedAtStartup(code)
}
