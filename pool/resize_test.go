package pool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Growing the pool lets its waiters dial at once; shrinking closes idle
// connections over the size at once and busy ones when released, and no
// holder loses its connection.
func TestSetSize(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(2), d)
	ctx := context.Background()
	a, b := mustCheckout(t, p), mustCheckout(t, p)

	results := make(chan result, 2)
	queueWaiter(t, ctx, p, 1, results)
	queueWaiter(t, ctx, p, 2, results)
	p.SetSize(4)
	for i := 0; i < 2; i++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("waiter %d after growing: %v", r.id, r.err)
		}
		defer p.Release(r.conn)
	}
	if s := p.Stats(); s.Open != 4 || p.Size() != 4 {
		t.Fatalf("after growing to 4 with 4 holders: open %d, size %d", s.Open, p.Size())
	}

	// Shrink to 1 with a and b idle and two busy: the idle ones close at
	// once, the busy ones as they are released.
	p.Release(a)
	p.Release(b)
	p.SetSize(1)
	if s := p.Stats(); s.Open != 2 || s.Idle != 0 {
		t.Fatalf("after shrinking to 1 with 2 busy: open %d idle %d, want 2 busy and none idle", s.Open, s.Idle)
	}
	if !d.closedByPool(a) || !d.closedByPool(b) {
		t.Fatal("the idle connections over the size were not closed")
	}
	// The deferred releases run at the end; do the first here: it is
	// closed, since 2 are open for a size of 1.
	c := mustCheckoutWithin(t, p, 50*time.Millisecond)
	if c != nil {
		t.Fatal("a checkout got a connection while the pool was over its size")
	}
}

// mustCheckoutWithin is a Checkout with a short wait timeout, which
// returns nil when it times out.
func mustCheckoutWithin(t *testing.T, p *Pool, d time.Duration) *Conn {
	t.Helper()
	old := p.waitTimeout()
	p.SetWaitTimeout(d)
	defer p.SetWaitTimeout(old)
	c, err := p.Checkout(context.Background())
	if errors.Is(err, ErrTimeout) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSetSizeReleaseOverSize(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(3), d)
	a, b, c := mustCheckout(t, p), mustCheckout(t, p), mustCheckout(t, p)
	p.SetSize(1)
	p.Release(a)
	p.Release(b)
	if !d.closedByPool(a) || !d.closedByPool(b) {
		t.Fatal("connections released while over the size were kept")
	}
	p.Release(c)
	if s := p.Stats(); s.Open != 1 || s.Idle != 1 {
		t.Fatalf("after releasing down to the size: open %d idle %d, want 1 and 1", s.Open, s.Idle)
	}
	if d.live.Load() != 1 {
		t.Fatalf("%d connections live, want 1", d.live.Load())
	}
}
