package integration

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
)

// Per-tenant limits and fair turns at the pool (issue 12).

// TestFairnessQuietTenant: a pool of 4, tenant noisy with 40 clients that
// each run 50ms transactions back to back, tenant quiet with one client
// running short ones. The pool serves the tenants waiting in turn, so the
// quiet client waits for at most two releases; releases come every
// 50ms/4 on average and each backend releases within one noisy transaction,
// so its wait is bounded by about two noisy transactions (100ms). Asserted
// with room for a loaded machine: the 90th percentile of the quiet
// transactions within three (150ms). Served first come, first served, each
// quiet transaction would wait behind the ~36 noisy waiters, 36/4 x 50ms =
// about 450ms, as the noisy ones do.
func TestFairnessQuietTenant(t *testing.T) {
	const (
		noisyClients = 40
		noisyTxn     = 50 * time.Millisecond
		runFor       = 3 * time.Second
	)
	createTenant(t, "fair_noisy")
	createTenant(t, "fair_quiet")
	p := startProxy(t, func(c *config.Config) {
		c.PoolSize = 4
		c.QueryWaitTimeout = 30 * time.Second
		c.LogLevel = "info"
	})
	ctx := prpCtx(t, 2*time.Minute)
	quiet := p.Connect(t, "fair_quiet", pgx.QueryExecModeSimpleProtocol)
	noisy := make([]*pgx.Conn, noisyClients)
	for i := range noisy {
		noisy[i] = p.Connect(t, "fair_noisy", pgx.QueryExecModeSimpleProtocol)
	}

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		noisyLat []time.Duration
		noisyErr error
	)
	for _, c := range noisy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				start := time.Now()
				if _, err := c.Exec(ctx, fmt.Sprintf("SELECT pg_sleep(%g)", noisyTxn.Seconds())); err != nil {
					mu.Lock()
					noisyErr = err
					mu.Unlock()
					return
				}
				mu.Lock()
				noisyLat = append(noisyLat, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	// Let the noisy tenant fill the pool and its queue first.
	time.Sleep(time.Second)
	var quietLat []time.Duration
	for end := time.Now().Add(runFor); time.Now().Before(end); {
		start := time.Now()
		if _, err := quiet.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("quiet transaction: %v", err)
		}
		quietLat = append(quietLat, time.Since(start))
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if noisyErr != nil {
		t.Fatalf("noisy transaction: %v", noisyErr)
	}

	pct := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[int(float64(len(s)-1)*p)]
	}
	qMed, q90, qMax := pct(quietLat, 0.5), pct(quietLat, 0.9), pct(quietLat, 1)
	nMed := pct(noisyLat, 0.5)
	t.Logf("quiet: %d transactions, median %v, p90 %v, max %v; noisy: %d transactions, median %v",
		len(quietLat), qMed.Round(time.Millisecond), q90.Round(time.Millisecond), qMax.Round(time.Millisecond),
		len(noisyLat), nMed.Round(time.Millisecond))
	// The noisy tenant saturates the pool: 40 clients on at most 4
	// backends, 50ms each, cannot take less than 40/4 x 50ms = 500ms a
	// transaction on average; their median shows them waiting.
	if nMed < 4*noisyTxn {
		t.Fatalf("noisy median %v: its clients did not wait for backends, the pool was not saturated", nMed)
	}
	if bound := 3 * noisyTxn; q90 > bound {
		t.Fatalf("quiet p90 %v over %v (three noisy transactions); noisy median %v", q90, bound, nMed)
	}
}

// TestTenantMaxBackends: with --tenant-max-backends 2, a tenant with four
// clients in pg_sleep at once never has more than two backends running
// them (counted by the server, pg_stat_activity); its other two wait for
// one of its own, while another tenant's client finds a free backend at
// once in the pool of 4.
func TestTenantMaxBackends(t *testing.T) {
	createTenant(t, "maxb_busy")
	createTenant(t, "maxb_other")
	p := startProxy(t, func(c *config.Config) {
		c.PoolSize = 4
		c.TenantMaxBackends = 2
	})
	ctx := prpCtx(t, time.Minute)
	d := direct(t)
	other := p.Connect(t, "maxb_other", pgx.QueryExecModeSimpleProtocol)
	var clients []*pgx.Conn
	for range 4 {
		clients = append(clients, p.Connect(t, "maxb_busy", pgx.QueryExecModeSimpleProtocol))
	}

	const marker = "SELECT pg_sleep(0.4) /* maxb_busy */"
	var (
		wg       sync.WaitGroup
		finished atomic.Int32
		errs     = make(chan error, 4)
	)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Exec(ctx, marker); err != nil {
				errs <- err
			}
			finished.Add(1)
		}()
	}
	running := func() int {
		var n int
		if err := d.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND query = $1 AND pid <> pg_backend_pid()`, marker).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	eventually(t, 10*time.Second, "two sleeps running", func() bool { return running() == 2 })
	// Another tenant is not held up by the capped one's waiters.
	if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("other tenant: %v", err)
	}
	if n := finished.Load(); n > 2 {
		t.Fatalf("the other tenant's transaction ended after %d of the capped tenant's 4: it waited behind them", n)
	}
	most := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(10 * time.Millisecond):
			most = max(most, running())
		}
	}
	close(errs)
	for err := range errs {
		t.Fatalf("capped tenant's transaction: %v", err)
	}
	if most > 2 {
		t.Fatalf("the tenant ran %d backends at once, its max is 2", most)
	}
	if finished.Load() != 4 {
		t.Fatalf("%d of 4 transactions finished", finished.Load())
	}
}

// TestTenantMaxClients: with --tenant-max-clients 2 the tenant's third
// client is refused with FATAL 53300 after authentication; other tenants
// are not; when one of the two leaves, a new one gets in.
func TestTenantMaxClients(t *testing.T) {
	createTenant(t, "maxc_t")
	createTenant(t, "maxc_other")
	p := startProxy(t, func(c *config.Config) { c.TenantMaxClients = 2 })
	ctx := prpCtx(t, time.Minute)
	first := p.Connect(t, "maxc_t", pgx.QueryExecModeSimpleProtocol)
	p.Connect(t, "maxc_t", pgx.QueryExecModeSimpleProtocol)

	_, err := pgx.Connect(ctx, p.DSN("maxc_t"))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "53300" || pe.Severity != "FATAL" || !strings.Contains(pe.Message, "too many clients for tenant") {
		t.Fatalf("third client: %v, want FATAL 53300 too many clients for tenant", err)
	}
	other := p.Connect(t, "maxc_other", pgx.QueryExecModeSimpleProtocol)
	if _, err := other.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a client of maxc_t gets in after one left", func() bool {
		c, err := pgx.Connect(ctx, p.DSN("maxc_t"))
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "SELECT 1")
		return err == nil
	})
}

// TestTenantRateWindow: at --tenant-rate 10 with a burst of 1, four clients
// of one tenant running as many transactions as they can for two seconds
// end at most 1 + 10 x 2 of them (plus one for a token that comes due as
// the window closes). The rate is per tenant: another tenant's one client,
// running alongside, has a bucket of its own and gets its own ~20, not the
// fifth of a shared one.
func TestTenantRateWindow(t *testing.T) {
	createTenant(t, "rate_t")
	createTenant(t, "rate_free")
	p := startProxy(t, func(c *config.Config) {
		c.TenantRate = 10
		c.TenantRateBurst = 1
	})
	ctx := prpCtx(t, time.Minute)
	var clients []*pgx.Conn
	for range 4 {
		clients = append(clients, p.Connect(t, "rate_t", pgx.QueryExecModeSimpleProtocol))
	}
	free := p.Connect(t, "rate_free", pgx.QueryExecModeSimpleProtocol)

	const window = 2 * time.Second
	var (
		wg    sync.WaitGroup
		count atomic.Int64
		fails atomic.Int64
	)
	end := time.Now().Add(window)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				_, err := c.Exec(ctx, "SELECT 1")
				if err != nil {
					fails.Add(1)
					return
				}
				if time.Now().Before(end) {
					count.Add(1)
				}
			}
		}()
	}
	freeCount := 0
	for time.Now().Before(end) {
		if _, err := free.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		freeCount++
	}
	wg.Wait()
	n := count.Load()
	t.Logf("rate_t: %d transactions in %v at 10/s; rate_free: %d", n, window, freeCount)
	if fails.Load() > 0 {
		t.Fatalf("%d rate-limited transactions failed; they should have waited", fails.Load())
	}
	if n > 22 || n < 5 {
		t.Fatalf("%d transactions ended in %v at 10 a second, burst 1: want at most 22 (and some progress)", n, window)
	}
	if freeCount > 22 || freeCount < 10 {
		t.Fatalf("the other tenant ran %d transactions in %v: want its own 10 a second (at most 22, at least 10)", freeCount, window)
	}
}

// TestTenantRateRefused: at 1 transaction a second with a query wait of
// 200ms, a transaction that would wait for a token past the wait gets ERROR
// 53400 naming the rate; the client stays usable and runs the next one once
// a token is due.
func TestTenantRateRefused(t *testing.T) {
	createTenant(t, "rate_ref")
	p := startProxy(t, func(c *config.Config) {
		c.TenantRate = 1
		c.TenantRateBurst = 1
		c.QueryWaitTimeout = 200 * time.Millisecond
	})
	ctx := prpCtx(t, time.Minute)
	c := p.Connect(t, "rate_ref", pgx.QueryExecModeSimpleProtocol)
	var refused *pgconn.PgError
	for range 3 {
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			if !errors.As(err, &refused) {
				t.Fatalf("transaction over the rate: %v", err)
			}
			break
		}
	}
	if refused == nil {
		t.Fatal("three transactions at once at 1 a second, burst 1: none refused")
	}
	if refused.Code != "53400" || refused.Severity != "ERROR" || !strings.Contains(refused.Message, "transaction rate") {
		t.Fatalf("refusal %s %s %q, want ERROR 53400 about the transaction rate", refused.Severity, refused.Code, refused.Message)
	}
	eventually(t, 10*time.Second, "the client runs a transaction again", func() bool {
		var one int
		return c.QueryRow(ctx, "SELECT 1").Scan(&one) == nil && one == 1
	})
}
