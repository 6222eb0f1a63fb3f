package pool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// roleDialer is a fakeDialer that logs in as roles, and keeps how many
// connections of each role are open at once.
type roleDialer struct {
	*fakeDialer
	// refuse, when it has the role, is the login error of that role.
	refuse map[string]error

	mu   sync.Mutex
	live map[string]int
}

func newRoleDialer(t *testing.T) *roleDialer {
	return &roleDialer{fakeDialer: newFakeDialer(t), live: map[string]int{}}
}

func (d *roleDialer) DialAs(ctx context.Context, role string) (*Conn, error) {
	if err := d.refuse[role]; err != nil {
		return nil, err
	}
	c, err := d.Dial(ctx)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.live[role]++
	d.mu.Unlock()
	c.NetConn = &roleConn{Conn: c.NetConn, d: d, role: role}
	return c, nil
}

func (d *roleDialer) liveAs(role string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.live[role]
}

// roleConn counts itself among its role's live connections until closed;
// the trackedConn inside counts the dialer's total.
type roleConn struct {
	net.Conn
	d    *roleDialer
	role string
	once sync.Once
}

func (c *roleConn) Close() error {
	c.once.Do(func() {
		c.d.mu.Lock()
		c.d.live[c.role]--
		c.d.mu.Unlock()
	})
	return c.Conn.Close()
}

func mustCheckoutAs(t *testing.T, p *Pool, role string) *Conn {
	t.Helper()
	c, err := p.CheckoutAs(context.Background(), role)
	if err != nil {
		t.Fatalf("CheckoutAs(%s): %v", role, err)
	}
	if c.Role != role {
		t.Fatalf("CheckoutAs(%s) gave a connection of role %q", role, c.Role)
	}
	return c
}

// queueWaiterAs is queueWaiter for CheckoutAs.
func queueWaiterAs(t *testing.T, p *Pool, role string, id int, results chan<- result) {
	t.Helper()
	before := p.Stats().Waiting
	go func() {
		c, err := p.CheckoutAs(context.Background(), role)
		results <- result{id, c, err}
	}()
	eventually(t, "the checkout is queued", func() bool { return p.Stats().Waiting == before+1 })
}

// A role's own idle connections are reused first, the most recently
// used one before the others; nothing is dialled or closed.
func TestCheckoutAsReusesOwnIdleFirst(t *testing.T) {
	d := newRoleDialer(t)
	p := newTestPool(t, testConfig(3), d)
	a1, b1, a2 := mustCheckoutAs(t, p, "a"), mustCheckoutAs(t, p, "b"), mustCheckoutAs(t, p, "a")
	p.Release(a1)
	p.Release(b1)
	p.Release(a2)
	if c := mustCheckoutAs(t, p, "a"); c != a2 {
		t.Fatal("CheckoutAs(a) did not take a's most recently used idle connection")
	}
	if c := mustCheckoutAs(t, p, "b"); c != b1 {
		t.Fatal("CheckoutAs(b) did not take b's idle connection")
	}
	if c := mustCheckoutAs(t, p, "a"); c != a1 {
		t.Fatal("CheckoutAs(a) did not take a's other idle connection")
	}
	if s := p.Stats(); d.fakeDialer.dials.Load() != 3 || s.Evictions != 0 || s.Open != 3 {
		t.Fatalf("dials %d, stats %+v; want 3 dials and no eviction", d.fakeDialer.dials.Load(), s)
	}
}

// When the pool is full and only other roles' connections are idle, the
// least recently used of them is closed and the new role dialled in its
// slot: never more than Size open.
func TestCheckoutAsEvictsLeastRecentlyUsed(t *testing.T) {
	d := newRoleDialer(t)
	p := newTestPool(t, testConfig(2), d)
	a, b := mustCheckoutAs(t, p, "a"), mustCheckoutAs(t, p, "b")
	p.Release(a) // a is the least recently used
	p.Release(b)
	c := mustCheckoutAs(t, p, "c")
	if !d.closedByPool(a) {
		t.Fatal("a's idle connection, the least recently used, was not closed")
	}
	if s := p.Stats(); s.Evictions != 1 || s.Open != 2 || s.Idle != 1 {
		t.Fatalf("stats %+v; want one eviction, 2 open, b idle", s)
	}
	if got := mustCheckoutAs(t, p, "b"); got != b {
		t.Fatal("b's idle connection was not kept")
	}
	p.Release(c)
	p.Release(b)
	if d.fakeDialer.maxLive.Load() != 2 {
		t.Fatalf("%d connections were open at once with Size 2", d.fakeDialer.maxLive.Load())
	}
	if d.liveAs("a") != 0 || d.liveAs("b") != 1 || d.liveAs("c") != 1 {
		t.Fatalf("live by role: a %d b %d c %d", d.liveAs("a"), d.liveAs("b"), d.liveAs("c"))
	}
}

// With every connection in use, a checkout waits; a released connection
// goes to the oldest waiter, as itself when the roles match, else as a
// slot in which the waiter dials its own role.
func TestCheckoutAsWaitsInOrder(t *testing.T) {
	d := newRoleDialer(t)
	p := newTestPool(t, testConfig(1), d)
	a := mustCheckoutAs(t, p, "a")
	results := make(chan result, 2)
	queueWaiterAs(t, p, "b", 1, results)
	queueWaiterAs(t, p, "a", 2, results)

	p.Release(a)
	r := <-results
	if r.id != 1 || r.err != nil || r.conn.Role != "b" {
		t.Fatalf("first served: %+v; want the b waiter with a b connection", r)
	}
	if !d.closedByPool(a) {
		t.Fatal("a's connection was not closed for b")
	}
	select {
	case r := <-results:
		t.Fatalf("the a waiter was served while b holds the only slot: %+v", r)
	default:
	}
	p.Release(r.conn)
	r = <-results
	if r.id != 2 || r.err != nil || r.conn.Role != "a" {
		t.Fatalf("second served: %+v", r)
	}
	p.Release(r.conn)

	// A waiter of the holder's own role gets the connection itself.
	held := mustCheckoutAs(t, p, "a")
	queueWaiterAs(t, p, "a", 3, results)
	dialsBefore := d.fakeDialer.dials.Load()
	p.Release(held)
	if r := <-results; r.err != nil || r.conn != held {
		t.Fatalf("the a waiter got %+v, want the released a connection", r)
	}
	if d.fakeDialer.dials.Load() != dialsBefore || d.fakeDialer.maxLive.Load() != 1 {
		t.Fatalf("dials %d (before %d), most open %d", d.fakeDialer.dials.Load(), dialsBefore, d.fakeDialer.maxLive.Load())
	}
}

// A waiter that nothing serves times out as in Checkout.
func TestCheckoutAsTimesOut(t *testing.T) {
	d := newRoleDialer(t)
	cfg := testConfig(1)
	cfg.WaitTimeout = 50 * time.Millisecond
	p := newTestPool(t, cfg, d)
	mustCheckoutAs(t, p, "a")
	if _, err := p.CheckoutAs(context.Background(), "b"); !errors.Is(err, ErrTimeout) {
		t.Fatalf("CheckoutAs(b) with the only connection held = %v, want ErrTimeout", err)
	}
	if _, err := p.TryCheckoutAs(context.Background(), "b"); !errors.Is(err, ErrBusy) {
		t.Fatalf("TryCheckoutAs(b) = %v, want ErrBusy", err)
	}
}

// A login the server refuses for one role fails that checkout at once and
// does not put the pool into its dial backoff: other roles still dial.
func TestCheckoutAsRoleRefused(t *testing.T) {
	d := newRoleDialer(t)
	refused := &pgconn.PgError{Severity: "FATAL", Code: "28000", Message: `role "pgt_x" does not exist`}
	d.refuse = map[string]error{"x": refused}
	p := newTestPool(t, testConfig(2), d)
	held := mustCheckoutAs(t, p, "a")
	_, err := p.CheckoutAs(context.Background(), "x")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" {
		t.Fatalf("CheckoutAs(x) = %v, want the server's 28000", err)
	}
	if s := p.Stats(); s.DialFailures != 0 || s.Open != 1 {
		t.Fatalf("stats after a refused role: %+v", s)
	}
	mustCheckoutAs(t, p, "b")
	p.Release(held)

	plain := newTestPool(t, testConfig(1), newFakeDialer(t))
	if _, err := plain.CheckoutAs(context.Background(), "a"); err == nil {
		t.Fatal("CheckoutAs on a pool whose dialer cannot log in as roles succeeded")
	}
}

// Many roles, more than the pool holds, checking out at random: the pool
// never has more than Size connections open, and every checkout gets its
// own role.
func TestCheckoutAsCapAcrossRoles(t *testing.T) {
	d := newRoleDialer(t)
	p := newTestPool(t, testConfig(3), d)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				role := fmt.Sprintf("r%d", rand.IntN(10))
				c, err := p.CheckoutAs(context.Background(), role)
				if err != nil {
					errs <- err
					return
				}
				if c.Role != role {
					errs <- fmt.Errorf("worker %d: asked for %s, got %s", w, role, c.Role)
					return
				}
				p.Release(c)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := d.fakeDialer.maxLive.Load(); m > 3 {
		t.Fatalf("%d connections open at once with Size 3", m)
	}
	if s := p.Stats(); s.Open > 3 || s.Evictions == 0 {
		t.Fatalf("stats %+v", s)
	}
}
