package pool

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// errTooMany is what PostgreSQL answers a login beyond max_connections.
var errTooMany = &pgconn.PgError{Severity: "FATAL", Code: "53300", Message: "sorry, too many clients already"}

// limitServer makes d refuse a dial with errTooMany while it has max
// connections live, as a server at max_connections does. max may be moved
// while the test runs.
func limitServer(d *fakeDialer, max int64) *atomic.Int64 {
	var limit atomic.Int64
	limit.Store(max)
	d.hook = func(context.Context, int) error {
		if d.live.Load() >= limit.Load() {
			return errTooMany
		}
		return nil
	}
	return &limit
}

// fakeClock is the pool's clock in backoff tests: it moves only when the
// test moves it, so "how many dials in this window" has one answer.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// logBuffer collects a pool's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count is how many log lines contain s.
func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDialFailureQueuesWhileBackendsExist: a server that takes only 3
// connections of a pool of 10. Clients beyond the 3 are not failed with the
// dial error: they wait, and each is served as a connection is released.
func TestDialFailureQueuesWhileBackendsExist(t *testing.T) {
	d := newFakeDialer(t)
	limitServer(d, 3)
	p := newTestPool(t, testConfig(10), d)
	var held []*Conn
	for i := 0; i < 3; i++ {
		held = append(held, mustCheckout(t, p))
	}

	const clients = 12
	results := make(chan result, clients)
	for i := 0; i < clients; i++ {
		go func() {
			c, err := p.Checkout(context.Background())
			if err == nil {
				p.Release(c)
			}
			results <- result{i, c, err}
		}()
	}
	var got []result
	eventually(t, "every client is queued or answered", func() bool {
		for {
			select {
			case r := <-results:
				got = append(got, r)
				continue
			default:
			}
			return p.Stats().Waiting+len(got) == clients
		}
	})
	for _, c := range held {
		p.Release(c)
	}
	for len(got) < clients {
		got = append(got, <-results)
	}
	failed := 0
	var first error
	for _, r := range got {
		if r.err != nil {
			failed++
			if first == nil {
				first = r.err
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d clients failed although 3 connections worked; first: %v", failed, clients, first)
	}
	if m := d.maxLive.Load(); m > 3 {
		t.Fatalf("%d connections live at once, the server takes 3", m)
	}
	if s := p.Stats(); s.Open != 3 || s.Waiting != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// TestDialBackoff: while dials fail, the pool dials again only when the
// backoff has passed, the backoff doubling from 50ms to 5s, and a
// successful dial starts it over. Each window is probed with many checkouts;
// the dials they make are counted (the clock is the test's).
func TestDialBackoff(t *testing.T) {
	clock := newFakeClock()
	d := newFakeDialer(t)
	limit := limitServer(d, 1)
	p := newTestPool(t, testConfig(5), d)
	p.now = clock.Now
	held := mustCheckout(t, p)
	defer p.Release(held)

	failedDials := func() int64 { return d.dials.Load() - int64(p.Stats().Dials) }
	probe := func(when string, want int64) {
		t.Helper()
		for i := 0; i < 10; i++ {
			if c, err := p.TryCheckout(context.Background()); err == nil {
				t.Fatalf("%s: a checkout succeeded with the server full", when)
				p.Release(c)
			}
		}
		if got := failedDials(); got != want {
			t.Fatalf("%s: %d failed dials, want %d", when, got, want)
		}
	}
	backoff := 50 * time.Millisecond
	probe("first failure", 1)
	for n := int64(1); n <= 9; n++ {
		clock.Add(backoff - time.Millisecond)
		probe("just before the backoff of "+backoff.String(), n)
		clock.Add(time.Millisecond)
		probe("once the backoff of "+backoff.String()+" passed", n+1)
		backoff = min(2*backoff, 5*time.Second)
	}
	if backoff != 5*time.Second {
		t.Fatalf("the test did not reach the cap: %s", backoff)
	}

	// The server makes room: the next dial (after the backoff) succeeds
	// and starts the backoff over.
	limit.Store(2)
	clock.Add(backoff)
	c, err := p.TryCheckout(context.Background())
	if err != nil {
		t.Fatalf("checkout once the server has room: %v", err)
	}
	defer p.Release(c)
	failed := failedDials()
	probe("after a success", failed+1)
	clock.Add(50 * time.Millisecond)
	probe("50ms after the first failure of a new burst", failed+2)
}

// TestDialFailureLoggedOncePerBurst: one line when dials start failing,
// naming PostgreSQL's error, none for the failures that follow, one when a
// dial succeeds again, and one for the next burst.
func TestDialFailureLoggedOncePerBurst(t *testing.T) {
	clock := newFakeClock()
	d := newFakeDialer(t)
	limit := limitServer(d, 1)
	logs := &logBuffer{}
	cfg := testConfig(5)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	p := newTestPool(t, cfg, d)
	p.now = clock.Now
	a := mustCheckout(t, p)
	defer p.Release(a)

	const failing, recovered = "backend dials failing", "backend dials succeed again"
	for i := 0; i < 5; i++ {
		if _, err := p.TryCheckout(context.Background()); err == nil {
			t.Fatal("a checkout succeeded with the server full")
		}
		clock.Add(10 * time.Second)
	}
	if got := d.dials.Load(); got != 6 {
		t.Fatalf("dials = %d, want 6 (each past the backoff)", got)
	}
	if n := logs.count(failing); n != 1 {
		t.Fatalf("%d lines say %q after one burst, want 1:\n%s", n, failing, logs)
	}
	if !strings.Contains(logs.String(), "53300 sorry, too many clients already") {
		t.Fatalf("the log does not name PostgreSQL's error:\n%s", logs)
	}
	if n := logs.count(recovered); n != 0 {
		t.Fatalf("%q logged before any dial succeeded:\n%s", recovered, logs)
	}

	limit.Store(2)
	b := mustCheckout(t, p)
	defer p.Release(b)
	if n := logs.count(recovered); n != 1 {
		t.Fatalf("%d lines say %q, want 1:\n%s", n, recovered, logs)
	}
	clock.Add(10 * time.Second)
	if _, err := p.TryCheckout(context.Background()); err == nil {
		t.Fatal("a checkout succeeded with the server full")
	}
	if n := logs.count(failing); n != 2 {
		t.Fatalf("%d lines say %q after two bursts, want 2:\n%s", n, failing, logs)
	}
}

// TestNoBackendDialErrorIsPrompt: with no backend connection at all, a
// failing dial fails the caller and the clients queued behind it with the
// dial error, at once rather than at the wait timeout; a checkout during the
// backoff gets the same error without dialling.
func TestNoBackendDialErrorIsPrompt(t *testing.T) {
	errRefused := errors.New("connection refused")
	firstDial := make(chan struct{})
	failFirst := make(chan struct{})
	d := newFakeDialer(t)
	d.hook = func(_ context.Context, n int) error {
		if n == 1 {
			close(firstDial)
			<-failFirst
		}
		return errRefused
	}
	cfg := testConfig(1)
	cfg.WaitTimeout = time.Hour // a waiter left hanging would show
	p := newTestPool(t, cfg, d)
	clock := newFakeClock()
	p.now = clock.Now

	results := make(chan result, 2)
	go func() {
		c, err := p.Checkout(context.Background())
		results <- result{0, c, err}
	}()
	<-firstDial // the only slot is taken by a dial in progress
	queueWaiter(t, context.Background(), p, 1, results)
	close(failFirst)
	for i := 0; i < 2; i++ {
		select {
		case r := <-results:
			if !errors.Is(r.err, errRefused) {
				t.Fatalf("checkout %d: %v, want the dial error", r.id, r.err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a client is still waiting with no backend to serve it")
		}
	}
	dials := d.dials.Load()
	if _, err := p.Checkout(context.Background()); !errors.Is(err, errRefused) {
		t.Fatalf("checkout during the backoff: %v, want the dial error", err)
	}
	if got := d.dials.Load(); got != dials {
		t.Fatalf("a checkout during the backoff dialled (%d dials, was %d)", got, dials)
	}
	if s := p.Stats(); s.Open != 0 || s.Waiting != 0 {
		t.Fatalf("stats = %+v", s)
	}
}

// TestWaiterDialsWhenServerMakesRoom: clients queued behind failing dials
// are not left to releases alone: once the server has room, a dial after
// the backoff serves them, though nobody releases anything.
func TestWaiterDialsWhenServerMakesRoom(t *testing.T) {
	d := newFakeDialer(t)
	limit := limitServer(d, 1)
	p := newTestPool(t, testConfig(3), d)
	held := mustCheckout(t, p)
	defer p.Release(held)

	results := make(chan result, 1)
	go func() {
		c, err := p.Checkout(context.Background())
		results <- result{0, c, err}
	}()
	eventually(t, "a dial failed", func() bool { return d.dials.Load() >= 2 })
	limit.Store(2)
	r := <-results
	if r.err != nil {
		t.Fatalf("queued checkout: %v", r.err)
	}
	p.Release(r.conn)
}
