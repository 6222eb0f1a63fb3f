package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/router"
)

// The ledger client of the fault suite (see ledger_test.go). Each worker
// runs transactions that insert two rows tagged with a txid of their own
// into table ledger, and writes down what it was told about each one.
// Afterwards the table is read directly and held against the ledger.

// outcome is what a client was told about one transaction.
type outcome int

const (
	// committed: COMMIT was answered with the tag COMMIT. Both rows must
	// be there.
	committed outcome = iota
	// failed: the transaction ended before COMMIT was sent, an error that
	// a server sends only for a transaction it did not commit came back
	// (an ERROR, a FATAL before COMMIT was reached, COMMIT answered with
	// ROLLBACK), or the client was told in so many words that it was
	// rolled back. Neither row may be there.
	failed
	// unknown: the connection was lost, or an error that promises nothing
	// came back, while COMMIT was in flight: SQLSTATE 08007, any other
	// class 08 SQLSTATE, a FATAL that does not say what became of the
	// transaction, an I/O error. Both rows or neither.
	unknown
	// split: a pipelined BEGIN was refused (ReadyForQuery 'I'), so the
	// INSERTs behind it ran each on its own, as a client that does not
	// wait for BEGIN gets. Each row is there when its INSERT said so,
	// absent when its INSERT failed with an ERROR, and unknown otherwise.
	split
)

func (o outcome) String() string {
	return [...]string{"committed", "failed", "unknown", "split"}[o]
}

// presence is what the ledger expects of one row of a split transaction.
type presence int

const (
	mayBe presence = iota
	present
	absent
)

// ledgerEntry is one transaction as its client saw it.
type ledgerEntry struct {
	out outcome
	// toldRolledBack: the error said the transaction was rolled back.
	toldRolledBack bool
	// code is the SQLSTATE of the error that decided the outcome, if any.
	code string
	// note says what decided the outcome, for the report.
	note string
	// parts, for split transactions: what to expect of rows 1 and 2.
	parts [2]presence
}

// ledger records every transaction's outcome by txid.
type ledger struct {
	next atomic.Int64
	mu   sync.Mutex
	tx   map[int64]ledgerEntry
}

func newLedger() *ledger { return &ledger{tx: map[int64]ledgerEntry{}} }

// id hands out the next txid.
func (l *ledger) id() int64 { return l.next.Add(1) }

func (l *ledger) record(id int64, e ledgerEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tx[id] = e
}

// ledgerTable is the table the ledger workers write, in the tenant schema.
const ledgerTable = "create table ledger (txid bigint not null, part int not null, primary key (txid, part))"

// ledgerTarget is where a worker connects: pgtenant, or PostgreSQL itself
// for the control runs.
type ledgerTarget struct {
	host string
	port int
	// params are the startup parameters: user, database, and settings.
	params map[string]string
}

func proxyTarget(p *Proxy, tenant string) ledgerTarget {
	return ledgerTarget{host: p.Host, port: p.Port, params: map[string]string{"user": "app", "database": tenant}}
}

// directTarget reaches the tenant's tables on the backend directly, with
// the tenant's schema on the search_path, as pgtenant would put it.
func directTarget(c *pgcluster.Cluster, db, schema string) ledgerTarget {
	return ledgerTarget{host: c.Host, port: c.Port, params: map[string]string{
		"user": c.User, "database": db, "search_path": schema, "application_name": ledgerDirectApp,
	}}
}

// ledgerDirectApp names the control runs' worker connections, so that the
// fault loops find them as they find pgtenant's.
const ledgerDirectApp = "ledger direct worker"

func (tg ledgerTarget) pgxConfig(mode pgx.QueryExecMode) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d sslmode=disable connect_timeout=5", tg.host, tg.port))
	if err != nil {
		return nil, err
	}
	cfg.User = tg.params["user"]
	cfg.Database = tg.params["database"]
	for k, v := range tg.params {
		if k != "user" && k != "database" {
			cfg.RuntimeParams[k] = v
		}
	}
	cfg.DefaultQueryExecMode = mode
	return cfg, nil
}

// ledgerStepTimeout bounds one statement or one pipelined transaction: a
// client that waits longer has found a hang, which is reported as such.
const ledgerStepTimeout = 15 * time.Second

// stmt is one statement of a transaction: SQL with $n parameters for pgx,
// and the same with the values written in for the raw client.
type stmt struct {
	name string
	sql  string
	args []int64
}

// raw returns the statement with its arguments as literals.
func (s stmt) raw() string {
	out := s.sql
	for i := len(s.args); i >= 1; i-- { // $10 before $1
		out = strings.ReplaceAll(out, "$"+strconv.Itoa(i), strconv.FormatInt(s.args[i-1], 10))
	}
	return out
}

// workload makes the statements of transaction id: BEGIN first, COMMIT
// last.
type workload func(id int64, rng *rand.Rand) []stmt

// ledgerWorkload inserts the transaction's two rows.
func ledgerWorkload(id int64, _ *rand.Rand) []stmt {
	return []stmt{
		{"BEGIN", "begin", nil},
		{"INSERT 1", "insert into ledger (txid, part) values ($1, 1)", []int64{id}},
		{"INSERT 2", "insert into ledger (txid, part) values ($1, 2)", []int64{id}},
		{"COMMIT", "commit", nil},
	}
}

// ledgerRun is one bounded run of ledger workers.
type ledgerRun struct {
	target ledgerTarget
	l      *ledger
	work   workload
	// interactive and pipelined are the number of workers of each kind.
	interactive, pipelined int
	// waitBegin makes the pipelined workers wait for BEGIN's answer before
	// they pipeline the rest, so that a refused BEGIN does not leave the
	// rest to run as separate transactions (the TPC-B sums would be off
	// by what the client chose to do, not by what pgtenant did).
	waitBegin bool
	// until and maxTx bound the run.
	until time.Time
	maxTx int64
	// pause, when set, returns how long a transaction sits idle after its
	// first statement of work, before the rest (0: no pause).
	pause func(r *rand.Rand) time.Duration

	// stop ends the run early.
	stop atomic.Bool

	started  atomic.Int64
	connects atomic.Int64
	connErrs atomic.Int64
	hangs    atomic.Int64
}

// run starts the workers and waits for them.
func (r *ledgerRun) run(t testing.TB) {
	if r.work == nil {
		r.work = ledgerWorkload
	}
	var wg sync.WaitGroup
	for i := range r.interactive + r.pipelined {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			if i < r.interactive {
				// Half the interactive workers use the simple protocol,
				// half pgx's statement cache (named prepared statements).
				mode := pgx.QueryExecModeSimpleProtocol
				if i%2 == 1 {
					mode = pgx.QueryExecModeCacheStatement
				}
				r.interactiveWorker(t, rng, mode)
			} else {
				r.pipelinedWorker(rng)
			}
		}()
	}
	wg.Wait()
}

// summary is one line on how the run went.
func (r *ledgerRun) summary() string {
	return fmt.Sprintf("%d transactions started, %d connects (%d failed), %d hangs",
		min(r.started.Load(), r.maxTx), r.connects.Load(), r.connErrs.Load(), r.hangs.Load())
}

// more reports whether the run goes on, and counts the transaction it
// starts.
func (r *ledgerRun) more() bool {
	if r.stop.Load() || time.Now().After(r.until) {
		return false
	}
	return r.started.Add(1) <= r.maxTx
}

func (r *ledgerRun) pauseFor(rng *rand.Rand) time.Duration {
	if r.pause == nil {
		return 0
	}
	return r.pause(rng)
}

// reconnectPause paces a worker whose connect failed (a server
// restarting, max_connections reached), so that it does not spin.
const reconnectPause = 50 * time.Millisecond

func (r *ledgerRun) interactiveWorker(t testing.TB, rng *rand.Rand, mode pgx.QueryExecMode) {
	cfg, err := r.target.pgxConfig(mode)
	if err != nil {
		t.Error(err)
		return
	}
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for r.more() {
		if conn == nil || conn.IsClosed() {
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), ledgerStepTimeout)
			c, err := pgx.ConnectConfig(ctx, cfg)
			cancel()
			r.connects.Add(1)
			if err != nil {
				r.connErrs.Add(1)
				r.started.Add(-1)
				time.Sleep(reconnectPause)
				continue
			}
			conn = c
		}
		id := r.l.id()
		r.l.record(id, r.interactiveTx(conn, r.work(id, rng), r.pauseFor(rng)))
	}
}

// interactiveTx runs one transaction a statement at a time, each waited
// for, and returns what the client was told.
func (r *ledgerRun) interactiveTx(conn *pgx.Conn, stmts []stmt, pause time.Duration) ledgerEntry {
	last := len(stmts) - 1
	for i, s := range stmts[:last] {
		if i == 2 && pause > 0 {
			time.Sleep(pause) // the point: sit idle inside the transaction
		}
		ctx, cancel := context.WithTimeout(context.Background(), ledgerStepTimeout)
		args := make([]any, len(s.args))
		for j, a := range s.args {
			args[j] = a
		}
		_, err := conn.Exec(ctx, s.sql, args...)
		cancel()
		if err != nil {
			r.noteHang(err)
			abandon(conn)
			// COMMIT was never sent: whatever the error, nothing of this
			// transaction may have been committed.
			return failedBefore(s.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), ledgerStepTimeout)
	tag, err := conn.Exec(ctx, stmts[last].sql)
	cancel()
	if err == nil {
		if tag.String() == "COMMIT" {
			return ledgerEntry{out: committed}
		}
		return ledgerEntry{out: failed, note: "COMMIT answered " + tag.String()}
	}
	r.noteHang(err)
	if pgconn.SafeToRetry(err) {
		// pgx did not send the COMMIT.
		return failedBefore("COMMIT (not sent)", err)
	}
	return commitError(err)
}

func (r *ledgerRun) noteHang(err error) {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		r.hangs.Add(1)
	}
}

// abandon ends what is left of a failed transaction: a client rolls back
// on an open connection, and gives up a broken one.
func abandon(conn *pgx.Conn) {
	if conn.IsClosed() || conn.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), ledgerStepTimeout)
	defer cancel()
	if _, err := conn.Exec(ctx, "rollback"); err != nil {
		conn.Close(ctx)
	}
}

func failedBefore(step string, err error) ledgerEntry {
	e := ledgerEntry{out: failed, code: sqlState(err), note: step + ": " + oneLine(err.Error())}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		e.toldRolledBack = claimsRollback(pe.Message, pe.Detail)
	}
	return e
}

// commitError classifies an error answered to a COMMIT that was sent.
func commitError(err error) ledgerEntry {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return ledgerEntry{out: unknown, note: "COMMIT: " + oneLine(err.Error())}
	}
	return commitPgError(pe.Severity, pe.Code, pe.Message, pe.Detail)
}

// commitPgError classifies an ErrorResponse answered to a COMMIT. A
// message that says the transaction was rolled back is taken at its word,
// whatever its SQLSTATE (08007 aside): item 7 of issue 9 is a proxy that
// says so when nobody knows.
func commitPgError(severity, code, message, detail string) ledgerEntry {
	note := fmt.Sprintf("COMMIT: %s %s %s", severity, code, message)
	if detail != "" {
		note += " (" + detail + ")"
	}
	e := ledgerEntry{code: code, note: note}
	switch {
	case code == "08007":
		e.out = unknown
	case claimsRollback(message, detail):
		e.out, e.toldRolledBack = failed, true
	case strings.HasPrefix(code, "08"):
		e.out = unknown
	case severity == "ERROR":
		// The server answered the COMMIT and the session goes on: it did
		// not commit (serialization failure, deferred constraint).
		e.out = failed
	default:
		// FATAL or PANIC: PostgreSQL's own "terminating connection" says
		// nothing of a COMMIT it may have finished.
		e.out = unknown
	}
	return e
}

func claimsRollback(message, detail string) bool {
	return strings.Contains(strings.ToLower(message+" "+detail), "rolled back")
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// rawConn is a client that speaks the simple query protocol itself, so
// that it can write several Query messages back to back before reading
// any reply: the next message is already on its way when the backend dies.
type rawConn struct {
	nc     net.Conn
	fe     *pgproto3.Frontend
	closed bool
}

// rawReply is what one Query was answered with.
type rawReply struct {
	tag    string                  // the last CommandComplete tag
	err    *pgproto3.ErrorResponse // the ErrorResponse, if any
	status byte                    // ReadyForQuery's status; 0 after a FATAL
	value  []byte                  // the first column of the first row
}

func (rp rawReply) fatal() bool {
	return rp.err != nil && (rp.err.Severity == "FATAL" || rp.err.Severity == "PANIC")
}

func dialRaw(tg ledgerTarget) (*rawConn, error) {
	nc, err := net.DialTimeout("tcp", net.JoinHostPort(tg.host, strconv.Itoa(tg.port)), 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &rawConn{nc: nc, fe: pgproto3.NewFrontend(nc, nc)}
	b, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: tg.params}).Encode(nil)
	if err == nil {
		_ = nc.SetDeadline(time.Now().Add(ledgerStepTimeout))
		_, err = nc.Write(b)
	}
	if err == nil {
		var rp rawReply
		rp, err = c.recv()
		if err == nil && rp.err != nil {
			err = fmt.Errorf("startup: %s %s", rp.err.Code, rp.err.Message)
		}
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// send writes one Query message per text, all in one write.
func (c *rawConn) send(texts ...string) error {
	var b []byte
	for _, s := range texts {
		var err error
		if b, err = (&pgproto3.Query{String: s}).Encode(b); err != nil {
			return err
		}
	}
	_ = c.nc.SetDeadline(time.Now().Add(ledgerStepTimeout))
	_, err := c.nc.Write(b)
	return err
}

// recv reads the answer to one Query, up to its ReadyForQuery, or up to a
// FATAL (after which the connection is closed). A read error is returned
// as such; the connection is then closed too.
func (c *rawConn) recv() (rawReply, error) {
	var rp rawReply
	_ = c.nc.SetDeadline(time.Now().Add(ledgerStepTimeout))
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			c.close()
			return rp, err
		}
		switch m := msg.(type) {
		case *pgproto3.CommandComplete:
			rp.tag = string(m.CommandTag)
		case *pgproto3.DataRow:
			if rp.value == nil && len(m.Values) > 0 {
				rp.value = append([]byte{}, m.Values[0]...)
			}
		case *pgproto3.ErrorResponse:
			e := *m // its strings are copies; the struct is reused
			rp.err = &e
			if rp.fatal() {
				c.close()
				return rp, nil
			}
		case *pgproto3.ReadyForQuery:
			rp.status = m.TxStatus
			return rp, nil
		}
	}
}

func (c *rawConn) close() {
	if !c.closed {
		c.closed = true
		c.nc.Close()
	}
}

func (r *ledgerRun) pipelinedWorker(rng *rand.Rand) {
	var c *rawConn
	defer func() {
		if c != nil {
			c.close()
		}
	}()
	for r.more() {
		if c == nil || c.closed {
			var err error
			c, err = dialRaw(r.target)
			r.connects.Add(1)
			if err != nil {
				c = nil
				r.connErrs.Add(1)
				r.started.Add(-1)
				time.Sleep(reconnectPause)
				continue
			}
		}
		id := r.l.id()
		e := r.pipelinedTx(c, r.work(id, rng), r.pauseFor(rng))
		if !c.closed && e.out != committed {
			// Whatever is left of the transaction goes.
			if c.send("rollback") != nil {
				c.close()
			} else if rp, err := c.recv(); err != nil || rp.err != nil {
				c.close()
			}
		}
		r.l.record(id, e)
	}
}

// pipelinedTx writes the transaction's statements, BEGIN to COMMIT,
// without waiting for any answer, then reads the answers in order, and
// returns what the client was told. With waitBegin, BEGIN is answered
// first; with a pause, BEGIN and the first statement of work are answered
// first, then the rest follows back to back after the pause.
func (r *ledgerRun) pipelinedTx(c *rawConn, stmts []stmt, pause time.Duration) ledgerEntry {
	n := len(stmts)
	var batches [][]stmt
	switch {
	case pause > 0:
		batches = [][]stmt{stmts[:2], stmts[2:]}
	case r.waitBegin:
		batches = [][]stmt{stmts[:1], stmts[1:]}
	default:
		batches = [][]stmt{stmts}
	}
	var replies []rawReply
	sent := 0
	for bi, batch := range batches {
		if bi > 0 {
			if replies[0].err != nil && r.waitBegin {
				return ledgerEntry{out: failed, code: replies[0].err.Code, note: "BEGIN: " + replies[0].err.Message}
			}
			if pause > 0 {
				time.Sleep(pause) // idle inside the transaction
			}
		}
		texts := make([]string, len(batch))
		for i, s := range batch {
			texts[i] = s.raw()
		}
		// A failed write is not the end: a FATAL the peer sent before it
		// closed may be waiting to be read, and tells more.
		_ = c.send(texts...)
		sent += len(batch)
		for range batch {
			rp, err := c.recv()
			if err != nil {
				r.noteHang(err)
				return pipelineOutcome(stmts, replies, err, sent == n)
			}
			replies = append(replies, rp)
			if rp.fatal() {
				return pipelineOutcome(stmts, replies, nil, sent == n)
			}
		}
	}
	return pipelineOutcome(stmts, replies, nil, true)
}

// pipelineOutcome works out what a pipelining client was told: replies
// holds the answers read, in order (the last one FATAL when a FATAL ended
// the connection), ioErr the error that cut the rest off, commitSent
// whether COMMIT had been written.
func pipelineOutcome(stmts []stmt, replies []rawReply, ioErr error, commitSent bool) ledgerEntry {
	n := len(stmts)
	if len(replies) > 0 && replies[0].status == 'I' && replies[0].err != nil && len(stmts) == 4 {
		// The ledger's BEGIN was refused and its INSERTs ran on their own.
		e := ledgerEntry{out: split, code: replies[0].err.Code,
			note: "BEGIN refused: " + replies[0].err.Code + " " + replies[0].err.Message}
		for p := range 2 {
			i := p + 1
			switch {
			case i >= len(replies):
				e.parts[p] = mayBe
			case replies[i].err == nil && strings.HasPrefix(replies[i].tag, "INSERT"):
				e.parts[p] = present
			case replies[i].err != nil && !replies[i].fatal():
				e.parts[p] = absent
			default:
				e.parts[p] = mayBe
			}
		}
		return e
	}
	if ioErr != nil {
		if !commitSent {
			return ledgerEntry{out: failed, note: "connection lost before COMMIT was sent: " + oneLine(ioErr.Error())}
		}
		return ledgerEntry{out: unknown, note: fmt.Sprintf("connection lost after %d of %d answers: %s", len(replies), n, oneLine(ioErr.Error()))}
	}
	at := len(replies) - 1
	if fe := replies[at].err; replies[at].fatal() {
		if at == n-1 {
			return commitPgError(fe.Severity, fe.Code, fe.Message, fe.Detail)
		}
		// The session ended at an earlier statement: the server never
		// reached COMMIT.
		return ledgerEntry{out: failed, code: fe.Code, toldRolledBack: claimsRollback(fe.Message, fe.Detail),
			note: fmt.Sprintf("%s: %s %s %s (%s)", stmts[at].name, fe.Severity, fe.Code, fe.Message, fe.Detail)}
	}
	commit := replies[n-1]
	for i, rp := range replies[:n-1] {
		if rp.err != nil {
			return ledgerEntry{out: failed, code: rp.err.Code,
				note: fmt.Sprintf("%s: %s %s; COMMIT answered %q", stmts[i].name, rp.err.Code, rp.err.Message, commit.tag)}
		}
	}
	if commit.err != nil {
		return commitPgError(commit.err.Severity, commit.err.Code, commit.err.Message, commit.err.Detail)
	}
	if commit.tag == "COMMIT" {
		return ledgerEntry{out: committed}
	}
	return ledgerEntry{out: failed, note: "COMMIT answered " + commit.tag}
}

// check holds the table against the ledger, directly on the
// backend, and reports every violation with the txids; it returns the
// number of violations of each kind.
func (l *ledger) check(t testing.TB, conn *pgx.Conn, table string) map[string]int {
	t.Helper()
	return l.checkRows(t, conn, "select txid, array_agg(part order by part) from "+table+" group by txid", 2)
}

// checkRows holds the rows of each txid that query returns (txid, and an
// int array with one element per row) against the ledger: a committed
// transaction has full rows, a failed one none, an unknown one either.
func (l *ledger) checkRows(t testing.TB, conn *pgx.Conn, query string, full int) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, query)
	if err != nil {
		t.Fatal(err)
	}
	found := map[int64][]int32{}
	for rows.Next() {
		var id int64
		var parts []int32
		if err := rows.Scan(&id, &parts); err != nil {
			t.Fatal(err)
		}
		found[id] = parts
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	counts := map[outcome]int{}
	var rolledBack, unknown08007 int
	violations := map[string][]int64{}
	notes := map[int64]string{}
	add := func(kind string, id int64, e ledgerEntry) {
		violations[kind] = append(violations[kind], id)
		notes[id] = fmt.Sprintf("%s, rows %v: %s", e.out, firstN(found[id], 10), e.note)
	}
	for id, e := range l.tx {
		counts[e.out]++
		if e.toldRolledBack {
			rolledBack++
		}
		if e.out == unknown && e.code == "08007" {
			unknown08007++
		}
		parts := found[id]
		has := func(p int32) bool { return slices.Contains(parts, p) }
		switch e.out {
		case split:
			for p := range 2 {
				if (e.parts[p] == present && !has(int32(p+1))) || (e.parts[p] == absent && has(int32(p+1))) {
					add("split transaction's rows differ from its INSERTs' answers", id, e)
					break
				}
			}
			continue
		}
		switch {
		case len(parts) != 0 && len(parts) != full:
			add("partly applied (a statement ran outside its transaction)", id, e)
		case e.out == committed && len(parts) == 0:
			add("told committed, but absent", id, e)
		case e.out == failed && len(parts) == full && e.toldRolledBack:
			add("told rolled back, but committed", id, e)
		case e.out == failed && len(parts) == full:
			add("told failed, but committed", id, e)
		}
	}
	for id := range found {
		if _, ok := l.tx[id]; !ok {
			violations["rows of a txid no client ran"] = append(violations["rows of a txid no client ran"], id)
		}
	}
	t.Logf("ledger: %d transactions: %d committed, %d failed (%d told rolled back), %d unknown (%d with 08007), %d split (BEGIN refused)",
		len(l.tx), counts[committed], counts[failed], rolledBack, counts[unknown], unknown08007, counts[split])
	res := map[string]int{}
	kinds := make([]string, 0, len(violations))
	for k := range violations {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, kind := range kinds {
		ids := violations[kind]
		slices.Sort(ids)
		res[kind] = len(ids)
		var b strings.Builder
		for i, id := range ids {
			if i == 10 {
				fmt.Fprintf(&b, "\n    … and %d more", len(ids)-10)
				break
			}
			fmt.Fprintf(&b, "\n    txid %d: %s", id, notes[id])
		}
		t.Errorf("ledger violation: %s: %d of %d transactions; txids %v%s", kind, len(ids), len(l.tx), firstN(ids, 30), b.String())
	}
	return res
}

func firstN[T any](ids []T, n int) []T {
	if len(ids) > n {
		return ids[:n]
	}
	return ids
}

// ledgerEnv is a throwaway PostgreSQL of a fault test's own, with one
// tenant, so that killing, timing out and restarting its backends
// disturbs no other test.
type ledgerEnv struct {
	c      *pgcluster.Cluster
	db     string
	tenant string
	// admin is a direct connection for the checks and the fault loops.
	admin *pgx.Conn
}

// ledgerAdminApp names the test's own direct connections, which the
// fault loops leave alone.
const ledgerAdminApp = "ledger admin"

func startLedgerEnv(t *testing.T, opts pgcluster.Options, tenant string, setupSQL ...string) *ledgerEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const db = "ledger"
	c := startOwnCluster(ctx, t, opts, db)
	env := &ledgerEnv{c: c, db: db, tenant: tenant}
	env.admin = env.connectAdmin(t)
	if _, _, err := router.CreateTenant(ctx, env.admin, tenant, ""); err != nil {
		t.Fatal(err)
	}
	for _, q := range setupSQL {
		if _, err := env.admin.Exec(ctx, "set search_path to "+pgx.Identifier{tenant}.Sanitize()+"; "+q); err != nil {
			t.Fatalf("setup %q: %v", q, err)
		}
	}
	if _, err := env.admin.Exec(ctx, "reset search_path"); err != nil {
		t.Fatal(err)
	}
	return env
}

// connectAdmin opens a direct connection to the env's database, retrying
// while the server restarts.
func (env *ledgerEnv) connectAdmin(t testing.TB) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(env.c.DSN(env.db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = ledgerAdminApp
	var conn *pgx.Conn
	eventually(t, 60*time.Second, "a direct connection to "+env.db, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err = pgx.ConnectConfig(ctx, cfg)
		return err == nil
	})
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// backend is the DSN pgtenant's pool uses for this env.
func (env *ledgerEnv) backend() string { return env.c.DSN(env.db) }

// table names a table of the tenant for a direct query.
func (env *ledgerEnv) table(name string) string {
	return pgx.Identifier{env.tenant, name}.Sanitize()
}

// TPC-B as pgbench runs it (its built-in tpcb-like script), on pgbench's
// tables at a small scale: 1 branch, 10 tellers, 1000 accounts. The
// history row's filler carries the txid, so each transaction can be found.
const (
	tpcbTellers  = 10
	tpcbAccounts = 1000
)

var tpcbSetup = []string{
	"create table pgbench_branches (bid int not null primary key, bbalance int not null, filler char(88))",
	"create table pgbench_tellers (tid int not null primary key, bid int not null, tbalance int not null, filler char(84))",
	"create table pgbench_accounts (aid int not null primary key, bid int not null, abalance int not null, filler char(84))",
	"create table pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))",
	"insert into pgbench_branches (bid, bbalance) values (1, 0)",
	fmt.Sprintf("insert into pgbench_tellers (tid, bid, tbalance) select t, 1, 0 from generate_series(1, %d) t", tpcbTellers),
	fmt.Sprintf("insert into pgbench_accounts (aid, bid, abalance) select a, 1, 0 from generate_series(1, %d) a", tpcbAccounts),
}

func tpcbWorkload(id int64, rng *rand.Rand) []stmt {
	aid, tid, bid := rng.Int64N(tpcbAccounts)+1, rng.Int64N(tpcbTellers)+1, int64(1)
	delta := rng.Int64N(10001) - 5000
	return []stmt{
		{"BEGIN", "begin", nil},
		{"UPDATE accounts", "update pgbench_accounts set abalance = abalance + $1 where aid = $2", []int64{delta, aid}},
		{"SELECT abalance", "select abalance from pgbench_accounts where aid = $1", []int64{aid}},
		{"UPDATE tellers", "update pgbench_tellers set tbalance = tbalance + $1 where tid = $2", []int64{delta, tid}},
		{"UPDATE branches", "update pgbench_branches set bbalance = bbalance + $1 where bid = $2", []int64{delta, bid}},
		{"INSERT history", "insert into pgbench_history (tid, bid, aid, delta, mtime, filler) " +
			"values ($1, $2, $3, $4, current_timestamp, ($5::bigint)::text)", []int64{tid, bid, aid, delta, id}},
		{"COMMIT", "end", nil},
	}
}

// checkTPCB checks, directly on the backend, that the four TPC-B sums
// agree and that each transaction's history row is there as its client
// was told.
func checkTPCB(t *testing.T, env *ledgerEnv, l *ledger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var a, tl, b, h, n int64
	err := env.admin.QueryRow(ctx, fmt.Sprintf(`select
		(select coalesce(sum(abalance), 0) from %s), (select coalesce(sum(tbalance), 0) from %s),
		(select coalesce(sum(bbalance), 0) from %s), (select coalesce(sum(delta), 0) from %s),
		(select count(*) from %[4]s)`,
		env.table("pgbench_accounts"), env.table("pgbench_tellers"), env.table("pgbench_branches"),
		env.table("pgbench_history"))).Scan(&a, &tl, &b, &h, &n)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TPC-B sums: accounts %d, tellers %d, branches %d, history %d (%d rows)", a, tl, b, h, n)
	if a != tl || tl != b || b != h {
		t.Errorf("TPC-B sums disagree: sum(abalance) %d, sum(tbalance) %d, sum(bbalance) %d, sum(delta) %d",
			a, tl, b, h)
	}
	l.checkRows(t, env.admin, "select trim(filler)::bigint, array_agg(1) from "+env.table("pgbench_history")+" group by 1", 1)
}
