package integration

// The fault suite of issue 9: a ledger client (ledgerclient_test.go) runs
// through pgtenant while the backend side fails, and afterwards what the
// client was told is held against what is in the tables:
//   - every transaction it saw committed is there, whole;
//   - none it saw fail or roll back is there at all;
//   - one it was told "outcome unknown" (08007, or a connection lost with
//     COMMIT in flight) is there whole or not at all;
//   - no transaction is there in part: that would be a statement that
//     escaped its transaction (item 6 of the issue);
//   - under TPC-B, sum(abalance) = sum(tbalance) = sum(bbalance) =
//     sum(delta).
//
// Each test has a PostgreSQL of its own, so that its faults disturb no
// other test:
//   - TestLedgerTerminateLoop, TestLedgerTPCBTerminateLoop: every pool
//     backend terminated every 100–500 ms;
//   - TestLedgerIdleInTransactionTimeout: idle_in_transaction_session_
//     timeout firing while the client's next statement is on its way;
//   - TestLedgerRestart: PostgreSQL restarted, fast and immediate;
//   - TestLedgerMaxConnectionsBelowPool: max_connections 10, pool 20;
//   - TestLedgerEscapeRepro, TestLedgerEscapeReproStalled: item 6 in
//     trials (a few in a hundred; about one in three with a slow client);
//   - TestLedgerCommitInFlight: item 7, every trial;
//   - TestLedgerDirectControl: the same clients and faults directly
//     against PostgreSQL, which must show no violation: that is what makes
//     a violation through pgtenant pgtenant's.
//
// Knobs (environment):
//   - PGTENANT_LEDGER_SECONDS sets how long each fault run lasts (default
//     6; the restart test also waits for one restart of each mode; each
//     run is also bounded by ledgerMaxTx transactions).
//   - PGTENANT_LEDGER_TRIALS sets the trials of the escape repro (default
//     100; the stalled one runs a tenth as many).
// Together they take about 65 s on a loaded 2-core machine.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/proxy"
)

const (
	// ledgerMaxTx bounds a fault run's transactions, whatever its time.
	ledgerMaxTx = 200000
	// idleTimeout is the idle_in_transaction_session_timeout of the
	// idle-timeout runs.
	idleTimeout = 200 * time.Millisecond
)

// ledgerSeconds is how long each fault run lasts.
func ledgerSeconds(t *testing.T) time.Duration {
	return envDuration(t, "PGTENANT_LEDGER_SECONDS", 6) * time.Second
}

func envDuration(t *testing.T, name string, def int) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return time.Duration(def)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return time.Duration(n)
}

// startLedgerProxy starts pgtenant in front of env's PostgreSQL. Unlike
// startProxy it logs at warn level and shows only the log's tail when the
// test fails: under a fault loop every lost backend is a line.
func startLedgerProxy(t *testing.T, env *ledgerEnv, poolSize int) *Proxy {
	t.Helper()
	cfg := config.Default()
	cfg.Backend = env.backend()
	cfg.AllowPrivilegedBackend = true // the ledger cluster's superuser; see startProxy
	cfg.Listen = "127.0.0.1:0"
	cfg.PoolSize = poolSize
	cfg.QueryWaitTimeout = 5 * time.Second
	cfg.ShutdownTimeout = 2 * time.Second
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, Cfg: cfg, cancel: cancel,
		done: make(chan error, 1), logs: logs, reload: make(chan struct{})}
	go func() { p.done <- proxy.RunListener(ctx, cfg, log, ln) }()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			s := logs.String()
			if len(s) > 6000 {
				s = s[len(s)-6000:]
			}
			t.Logf("pgtenant log (tail):\n%s", s)
		}
	})
	return p
}

// faultLoop runs fault in a goroutine until the returned stop is called;
// stop waits for it.
func faultLoop(fault func(stop <-chan struct{})) (stop func()) {
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		fault(quit)
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}

// sleepOr waits d or until stop is closed, and reports whether to go on.
func sleepOr(stop <-chan struct{}, d time.Duration) bool {
	select {
	case <-stop:
		return false
	case <-time.After(d):
		return true
	}
}

// terminateLoop terminates every backend whose application_name is app,
// every 100–500 ms, on the env's admin connection, and counts them.
func terminateLoop(env *ledgerEnv, app string, kills, rounds *atomic.Int64) func(<-chan struct{}) {
	return func(stop <-chan struct{}) {
		for sleepOr(stop, time.Duration(100+rand.IntN(400))*time.Millisecond) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var n int64
			err := env.admin.QueryRow(ctx, `
				select count(*) filter (where pg_terminate_backend(pid))
				  from pg_stat_activity
				 where application_name = $1 and backend_type = 'client backend' and pid <> pg_backend_pid()`,
				app).Scan(&n)
			cancel()
			if err == nil {
				kills.Add(n)
				rounds.Add(1)
			}
		}
	}
}

// poolApp is the application_name of pgtenant's pool connections (its
// registry's are "pgtenant registry…"): the clients here set none, so the
// pin leaves it alone.
const poolApp = "pgtenant"

// idlePause makes transactions sit idle inside for about the idle timeout:
// half not at all, most of the others within 20 ms of the timeout either
// way (a race between the timeout's FATAL and the client's next message),
// and a few well past it.
func idlePause(rng *rand.Rand) time.Duration {
	switch x := rng.IntN(10); {
	case x < 5:
		return 0
	case x < 9:
		return idleTimeout - 20*time.Millisecond + time.Duration(rng.IntN(40))*time.Millisecond
	default:
		return idleTimeout + 50*time.Millisecond + time.Duration(rng.IntN(150))*time.Millisecond
	}
}

func newLedgerRun(t *testing.T, target ledgerTarget, l *ledger) *ledgerRun {
	return &ledgerRun{target: target, l: l, interactive: 4, pipelined: 4,
		until: time.Now().Add(ledgerSeconds(t)), maxTx: ledgerMaxTx}
}

// TestLedgerDirectControl runs the ledger, TPC-B and the escape repro
// directly against PostgreSQL under the same faults as the tests through
// pgtenant: backends terminated in a loop, and idle_in_transaction_
// session_timeout firing. PostgreSQL keeps every promise, so any violation
// here is a fault of the checks, not of pgtenant.
func TestLedgerDirectControl(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_ctl"
	settings := map[string]string{"idle_in_transaction_session_timeout": idleTimeout.String()}
	for k, v := range syncRepSettings {
		settings[k] = v
	}
	env := startLedgerEnv(t, pgcluster.Options{Settings: settings}, tenant, append([]string{ledgerTable}, tpcbSetup...)...)
	target := directTarget(env.c, env.db, tenant)

	t.Run("ledger", func(t *testing.T) {
		l := newLedger()
		r := newLedgerRun(t, target, l)
		r.pause = idlePause
		var kills, rounds atomic.Int64
		stop := faultLoop(terminateLoop(env, ledgerDirectApp, &kills, &rounds))
		r.run(t)
		stop()
		t.Logf("direct ledger: %s; %d backends terminated in %d rounds", r.summary(), kills.Load(), rounds.Load())
		l.check(t, env.admin, env.table("ledger"))
	})
	t.Run("TPC-B", func(t *testing.T) {
		l := newLedger()
		r := newLedgerRun(t, target, l)
		r.work, r.waitBegin = tpcbWorkload, true
		var kills, rounds atomic.Int64
		stop := faultLoop(terminateLoop(env, ledgerDirectApp, &kills, &rounds))
		r.run(t)
		stop()
		t.Logf("direct TPC-B: %s; %d backends terminated in %d rounds", r.summary(), kills.Load(), rounds.Load())
		checkTPCB(t, env, l)
	})
	t.Run("escape repro", func(t *testing.T) {
		escapeRepro(t, env, target, ledgerTrials(t)/4, escapeTrial)
	})
	t.Run("escape repro, stalled client", func(t *testing.T) {
		escapeRepro(t, env, target, max(1, stalledTrials(t)/3), stalledEscapeTrial)
	})
	t.Run("COMMIT in flight", func(t *testing.T) {
		commitInFlight(t, env, target, commitTrials/4)
	})
}

// TestLedgerTerminateLoop: every backend of pgtenant's pool is terminated
// every 100–500 ms while the ledger runs (issue 9, item 6: 4–10 escapes in
// 300 trials).
func TestLedgerTerminateLoop(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_term"
	env := startLedgerEnv(t, pgcluster.Options{}, tenant, ledgerTable)
	p := startLedgerProxy(t, env, 6)
	l := newLedger()
	r := newLedgerRun(t, proxyTarget(p, tenant), l)
	var kills, rounds atomic.Int64
	stop := faultLoop(terminateLoop(env, poolApp, &kills, &rounds))
	r.run(t)
	stop()
	t.Logf("terminate loop: %s; %d backends terminated in %d rounds", r.summary(), kills.Load(), rounds.Load())
	l.check(t, env.admin, env.table("ledger"))
}

// TestLedgerIdleInTransactionTimeout: PostgreSQL's own idle_in_transaction_
// session_timeout ends backends whose client pauses inside a transaction
// for about as long, while its next statement is on the way (issue 9, item
// 6: 6 escapes in 300 trials).
func TestLedgerIdleInTransactionTimeout(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_idle"
	env := startLedgerEnv(t, pgcluster.Options{}, tenant, ledgerTable)
	// On the database, as an operator would set it: the pool's
	// connections get it at login and RESET ALL returns to it.
	if _, err := env.admin.Exec(context.Background(), fmt.Sprintf(
		"alter database %s set idle_in_transaction_session_timeout = '%dms'",
		pgx.Identifier{env.db}.Sanitize(), idleTimeout.Milliseconds())); err != nil {
		t.Fatal(err)
	}
	p := startLedgerProxy(t, env, 6)
	l := newLedger()
	r := newLedgerRun(t, proxyTarget(p, tenant), l)
	r.pause = idlePause
	r.run(t)
	t.Logf("idle timeout: %s; %d idle-in-transaction timeouts in the server log", r.summary(),
		strings.Count(env.c.ServerLog(), "idle-in-transaction timeout"))
	l.check(t, env.admin, env.table("ledger"))
}

// TestLedgerRestart: PostgreSQL is restarted, alternately in fast and in
// immediate mode, while the ledger runs (passes on the current relay). The server commits synchronously
// here: a crash may not lose a commit PostgreSQL acknowledged.
func TestLedgerRestart(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_restart"
	env := startLedgerEnv(t, pgcluster.Options{Settings: map[string]string{"synchronous_commit": "on"}},
		tenant, ledgerTable)
	p := startLedgerProxy(t, env, 6)
	l := newLedger()
	r := newLedgerRun(t, proxyTarget(p, tenant), l)
	// The restarts, not the clock, end this run: at least one of each
	// mode, then as many as fit in the run's time (a restart takes
	// seconds under load).
	runFor := ledgerSeconds(t)
	r.until = time.Now().Add(10 * time.Minute)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.run(t)
	}()
	var restarts []string
	modes := []pgcluster.ShutdownMode{pgcluster.ShutdownFast, pgcluster.ShutdownImmediate}
	began := time.Now()
	for i := 0; i < 2 || time.Since(began) < runFor; i++ {
		time.Sleep(time.Duration(300+rand.IntN(500)) * time.Millisecond) // clients run between restarts
		mode := modes[i%2]
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		err := env.c.Restart(ctx, mode)
		cancel()
		if err != nil {
			r.stop.Store(true)
			wg.Wait()
			t.Fatalf("restart %s: %v", mode, err)
		}
		restarts = append(restarts, fmt.Sprintf("%s in %s", mode, time.Since(start).Round(time.Millisecond)))
	}
	r.stop.Store(true)
	wg.Wait()
	t.Logf("restarts: %s; %d restarts (%s)", r.summary(), len(restarts), strings.Join(restarts, ", "))
	l.check(t, env.connectAdmin(t), env.table("ledger"))
}

// TestLedgerMaxConnectionsBelowPool: the server allows 10 connections and
// pgtenant's pool wants 20. Clients may get errors; the ledger must still
// hold (what the errors say is for the relay fix to get right).
func TestLedgerMaxConnectionsBelowPool(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_maxconn"
	env := startLedgerEnv(t, pgcluster.Options{MaxConnections: 10}, tenant, ledgerTable)
	p := startLedgerProxy(t, env, 20)
	l := newLedger()
	r := newLedgerRun(t, proxyTarget(p, tenant), l)
	r.interactive, r.pipelined = 12, 12
	r.run(t)
	t.Logf("max_connections 10, pool 20: %s", r.summary())
	l.check(t, env.admin, env.table("ledger"))
}

// TestLedgerTPCBTerminateLoop: TPC-B through pgtenant while every pool
// backend is terminated in a loop; afterwards the four sums agree and each
// transaction's history row is there as its client was told (issue 9: the
// sums diverged).
func TestLedgerTPCBTerminateLoop(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_tpcb"
	env := startLedgerEnv(t, pgcluster.Options{}, tenant, tpcbSetup...)
	p := startLedgerProxy(t, env, 6)
	l := newLedger()
	r := newLedgerRun(t, proxyTarget(p, tenant), l)
	r.work, r.waitBegin = tpcbWorkload, true
	var kills, rounds atomic.Int64
	stop := faultLoop(terminateLoop(env, poolApp, &kills, &rounds))
	r.run(t)
	stop()
	t.Logf("TPC-B, terminate loop: %s; %d backends terminated in %d rounds", r.summary(), kills.Load(), rounds.Load())
	checkTPCB(t, env, l)
}

// TestLedgerEscapeRepro: item 6 in one trial. A client is inside a
// transaction with one row inserted; its backend is terminated; at once the
// client streams more INSERTs of the same transaction, one Query message
// after another, until it hears of the loss. PostgreSQL runs none of them
// outside the transaction, and pgtenant must not either: no row of the
// trial's txid may ever appear.
func TestLedgerEscapeRepro(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_repro"
	env := startLedgerEnv(t, pgcluster.Options{}, tenant, ledgerTable)
	p := startLedgerProxy(t, env, 2)
	escapeRepro(t, env, proxyTarget(p, tenant), ledgerTrials(t), escapeTrial)
}

// TestLedgerEscapeReproStalled: item 6 with the client slow to read when
// its backend dies (see stalledEscapeTrial), which makes the escape happen
// in most trials rather than a few in a hundred.
func TestLedgerEscapeReproStalled(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_stall"
	env := startLedgerEnv(t, pgcluster.Options{}, tenant, ledgerTable)
	p := startLedgerProxy(t, env, 2)
	escapeRepro(t, env, proxyTarget(p, tenant), stalledTrials(t), stalledEscapeTrial)
}

// TestLedgerCommitInFlight: item 7 in one trial. A client's COMMIT is in
// flight, and PostgreSQL has committed it locally, when its backend is
// terminated: the commit waits for a synchronous standby that does not
// exist (see syncRepSettings), so the backend is terminated in that wait,
// and PostgreSQL itself warns that the transaction "has already committed
// locally". The client must not be told it was rolled back: 08007, or
// anything that does not claim an outcome, is the truth.
func TestLedgerCommitInFlight(t *testing.T) {
	t.Parallel()
	const tenant = "ledger_commit"
	env := startLedgerEnv(t, pgcluster.Options{Settings: syncRepSettings}, tenant, ledgerTable)
	p := startLedgerProxy(t, env, 2)
	commitInFlight(t, env, proxyTarget(p, tenant), commitTrials)
}

// syncRepSettings name a synchronous standby that never comes, with
// synchronous_commit local so that nothing waits for it: but a
// transaction that sets synchronous_commit on waits at COMMIT, after its
// commit record is written, until it is cancelled or terminated.
var syncRepSettings = map[string]string{
	"synchronous_standby_names": "ledger_nobody",
	"synchronous_commit":        "local",
}

// commitTrials is the number of COMMIT-in-flight trials.
const commitTrials = 20

func commitInFlight(t *testing.T, env *ledgerEnv, target ledgerTarget, trials int) {
	t.Helper()
	l := newLedger()
	first := escapeTxidBase.Add(int64(trials)) - int64(trials)
	for i := range trials {
		id := first + int64(i)
		e, err := commitInFlightTrial(env, target, id)
		if err != nil {
			t.Fatalf("txid %d: %v", id, err)
		}
		l.record(id, e)
	}
	l.checkRows(t, env.admin, fmt.Sprintf("select txid, array_agg(part order by part) from %s where txid between %d and %d group by txid",
		env.table("ledger"), first, first+int64(trials)-1), 2)
}

// commitInFlightTrial runs one transaction whose COMMIT waits for the
// standby, terminates its backend in that wait, and returns what the
// client was told.
func commitInFlightTrial(env *ledgerEnv, target ledgerTarget, id int64) (ledgerEntry, error) {
	c, err := dialRaw(target)
	if err != nil {
		return ledgerEntry{}, err
	}
	defer c.close()
	var pid int
	for _, q := range []string{
		"begin",
		fmt.Sprintf("insert into ledger (txid, part) values (%d, 1) returning pg_backend_pid()", id),
		fmt.Sprintf("insert into ledger (txid, part) values (%d, 2)", id),
		"set local synchronous_commit = on",
	} {
		if err := c.send(q); err != nil {
			return ledgerEntry{}, err
		}
		rp, err := c.recv()
		if err != nil || rp.err != nil || rp.status != 'T' {
			return ledgerEntry{}, fmt.Errorf("%s: %v, %v, status %q", q, rp.err, err, rp.status)
		}
		if rp.value != nil {
			pid, _ = strconv.Atoi(string(rp.value))
		}
	}
	if err := c.send("commit"); err != nil {
		return ledgerEntry{}, err
	}
	if err := waitBackend(env, pid, "wait_event = 'SyncRep'"); err != nil {
		return ledgerEntry{}, err
	}
	if err := terminate(env, pid); err != nil {
		return ledgerEntry{}, err
	}
	rp, err := c.recv()
	switch {
	case err != nil:
		return ledgerEntry{out: unknown, note: "COMMIT: " + oneLine(err.Error())}, nil
	case rp.err != nil:
		return commitPgError(rp.err.Severity, rp.err.Code, rp.err.Message, rp.err.Detail), nil
	case rp.tag == "COMMIT":
		return ledgerEntry{out: committed}, nil
	default:
		return ledgerEntry{out: failed, note: "COMMIT answered " + rp.tag}, nil
	}
}

// stalledTrials is the number of stalled-client trials: a tenth of
// PGTENANT_LEDGER_TRIALS, as each takes about half a second.
func stalledTrials(t *testing.T) int { return max(1, ledgerTrials(t)/10) }

func ledgerTrials(t *testing.T) int {
	return int(envDuration(t, "PGTENANT_LEDGER_TRIALS", 100))
}

// escapeTxidBase hands out the repros' txids, far from the ledger's.
var escapeTxidBase = func() *atomic.Int64 {
	var a atomic.Int64
	a.Store(1_000_000_000)
	return &a
}()

// escapeMaxStream bounds the INSERTs a trial streams after the kill.
const escapeMaxStream = 2000

// escapeRepro runs trials of the item 6 repro against target and reports
// the trials in which rows escaped.
func escapeRepro(t *testing.T, env *ledgerEnv, target ledgerTarget, trials int,
	trial func(*ledgerEnv, ledgerTarget, int64) (int, bool, error)) {
	t.Helper()
	var escapedTrials, escapedRows, fatals, streamed int
	var bad []string
	first := escapeTxidBase.Add(int64(trials)) - int64(trials)
	for i := range trials {
		id := first + int64(i)
		sent, sawFatal, err := trial(env, target, id)
		if err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		streamed += sent
		if sawFatal {
			fatals++
		}
	}
	rows, err := env.admin.Query(context.Background(),
		"select txid, count(*), array_agg(part order by part) from "+env.table("ledger")+
			" where txid >= $1 and txid < $2 group by txid order by txid", first, first+int64(trials))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, n int64
		var parts []int32
		if err := rows.Scan(&id, &n, &parts); err != nil {
			t.Fatal(err)
		}
		escapedTrials++
		escapedRows += int(n)
		if len(bad) < 10 {
			bad = append(bad, fmt.Sprintf("txid %d: parts %v", id, firstN(parts, 10)))
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	t.Logf("escape repro: %d trials, %d statements streamed after the kills, %d FATALs heard; %d trials with escaped rows, %d rows",
		trials, streamed, fatals, escapedTrials, escapedRows)
	if escapedTrials > 0 {
		t.Errorf("statements escaped their lost transaction in %d of %d trials (%d rows committed outside it): %s",
			escapedTrials, trials, escapedRows, strings.Join(bad, "; "))
	}
}

// escapeTrial runs one trial with txid id; it returns how many INSERTs it
// streamed after the kill and whether the client heard a FATAL.
func escapeTrial(env *ledgerEnv, target ledgerTarget, id int64) (sent int, sawFatal bool, err error) {
	c, err := dialRaw(target)
	if err != nil {
		return 0, false, err
	}
	defer c.close()
	for _, q := range []string{"begin", fmt.Sprintf("insert into ledger (txid, part) values (%d, 1) returning pg_backend_pid()", id)} {
		if err := c.send(q); err != nil {
			return 0, false, err
		}
		rp, err := c.recv()
		if err != nil {
			return 0, false, err
		}
		if rp.err != nil || rp.status != 'T' {
			return 0, false, fmt.Errorf("%s: %v, status %q", q, rp.err, rp.status)
		}
		if rp.value != nil {
			pid, _ := strconv.Atoi(string(rp.value))
			if pid == 0 {
				return 0, false, fmt.Errorf("no backend pid in %q", rp.value)
			}
			if err := terminate(env, pid); err != nil {
				return 0, false, err
			}
		}
	}
	// The reader hears the answers, and the FATAL, while the stream goes
	// out; the stream stops when it does.
	_ = c.nc.SetDeadline(time.Now().Add(ledgerStepTimeout))
	var ended atomic.Bool
	done := make(chan bool)
	go func() {
		fe := pgproto3.NewFrontend(c.nc, io.Discard)
		fatal := false
		for {
			msg, err := fe.Receive()
			if err != nil {
				break
			}
			if e, ok := msg.(*pgproto3.ErrorResponse); ok && (e.Severity == "FATAL" || e.Severity == "PANIC") {
				fatal = true
				ended.Store(true) // what comes after it cannot be meant to run
			}
		}
		ended.Store(true)
		done <- fatal
	}()
	for k := 2; k < 2+escapeMaxStream && !ended.Load(); k++ {
		b, _ := (&pgproto3.Query{String: fmt.Sprintf("insert into ledger (txid, part) values (%d, %d)", id, k)}).Encode(nil)
		if _, err := c.nc.Write(b); err != nil {
			break
		}
		sent++
	}
	if !ended.Load() {
		// PostgreSQL (or pgtenant) had not ended the session after all
		// that: end it here, and let the check find what ran.
		c.nc.(*net.TCPConn).CloseWrite()
	}
	sawFatal = <-done
	return sent, sawFatal, nil
}

// stalledEscapeTrial is the repro made (nearly) deterministic. The client
// is in a transaction with one row inserted and asks for a large result,
// which it reads slowly, so that pgtenant's writes to it block. Its
// backend is terminated; pgtenant relays what the backend had sent and
// then, with the client still slow, must tell it that the backend is gone,
// a write that waits for the client to read while the client's next
// INSERTs keep arriving. Any INSERT pgtenant takes in while it does so must
// not run anywhere. It returns how many INSERTs the client streamed and
// whether it heard a FATAL.
func stalledEscapeTrial(env *ledgerEnv, target ledgerTarget, id int64) (sent int, sawFatal bool, err error) {
	c, err := dialRaw(target)
	if err != nil {
		return 0, false, err
	}
	defer c.close()
	if err := c.send("begin"); err != nil {
		return 0, false, err
	}
	if rp, err := c.recv(); err != nil || rp.status != 'T' {
		return 0, false, fmt.Errorf("begin: %v, %v", rp.err, err)
	}
	if err := c.send(fmt.Sprintf("insert into ledger (txid, part) values (%d, 1) returning pg_backend_pid()", id)); err != nil {
		return 0, false, err
	}
	rp, err := c.recv()
	if err != nil || rp.err != nil {
		return 0, false, fmt.Errorf("insert: %v, %v", rp.err, err)
	}
	pid, _ := strconv.Atoi(string(rp.value))
	if err := c.send(fmt.Sprintf("select repeat('x', %d) from generate_series(1, %d)", stallRowBytes, stallRows)); err != nil {
		return 0, false, err
	}
	// The backend fills the buffers between it and the client, which
	// does not read yet, and waits to write (or, when they hold it all,
	// is done).
	if err := waitBackend(env, pid, "wait_event = 'ClientWrite' or state = 'idle in transaction'"); err != nil {
		return 0, false, err
	}
	if err := terminate(env, pid); err != nil {
		return 0, false, err
	}
	_ = c.nc.SetDeadline(time.Now().Add(ledgerStepTimeout))
	var ended atomic.Bool
	done := make(chan bool)
	go func() {
		fe := pgproto3.NewFrontend(&slowReader{r: c.nc}, io.Discard)
		fatal := false
		for {
			msg, err := fe.Receive()
			if err != nil {
				break
			}
			if e, ok := msg.(*pgproto3.ErrorResponse); ok && (e.Severity == "FATAL" || e.Severity == "PANIC") {
				fatal = true
				break
			}
		}
		ended.Store(true)
		done <- fatal
	}()
	for k := 2; k < 2+stallMaxStream && !ended.Load(); k++ {
		b, _ := (&pgproto3.Query{String: fmt.Sprintf("insert into ledger (txid, part) values (%d, %d)", id, k)}).Encode(nil)
		if _, err := c.nc.Write(b); err != nil {
			break
		}
		sent++
		time.Sleep(stallStreamGap) // paces the stream over the slow read; nothing is awaited
	}
	if !ended.Load() {
		c.nc.(*net.TCPConn).CloseWrite()
	}
	sawFatal = <-done
	return sent, sawFatal, nil
}

const (
	// The stalled trial's result: 16 MiB, more than the socket buffers
	// between pgtenant and the client hold on loopback.
	stallRowBytes = 1 << 20
	stallRows     = 16
	// stallReadChunk and stallReadGap make the client read at about
	// 16 MiB/s, slower than pgtenant writes.
	stallReadChunk = 16 << 10
	stallReadGap   = time.Millisecond
	// stallStreamGap and stallMaxStream pace and bound the INSERTs.
	stallStreamGap = 200 * time.Microsecond
	stallMaxStream = 20000
)

// slowReader reads at most stallReadChunk at a time, each read after a
// pause: a client that keeps up, but slowly.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(stallReadGap)
	if len(p) > stallReadChunk {
		p = p[:stallReadChunk]
	}
	return s.r.Read(p)
}

// waitBackend polls pg_stat_activity until backend pid's row meets cond
// (SQL over its columns), for at most ledgerStepTimeout.
func waitBackend(env *ledgerEnv, pid int, cond string) error {
	ctx, cancel := context.WithTimeout(context.Background(), ledgerStepTimeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		var ok bool
		err := env.admin.QueryRow(ctx, "select coalesce(("+cond+"), false) from pg_stat_activity where pid = $1", pid).Scan(&ok)
		if err != nil {
			return fmt.Errorf("backend %d, waiting for %s: %w", pid, cond, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("backend %d: not %s within %s", pid, cond, ledgerStepTimeout)
		case <-tick.C:
		}
	}
}

// terminate ends backend pid, as an operator or a failover would.
func terminate(env *ledgerEnv, pid int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var ok bool
	if err := env.admin.QueryRow(ctx, "select pg_terminate_backend($1)", pid).Scan(&ok); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pg_terminate_backend(%d) found no such backend", pid)
	}
	return nil
}
