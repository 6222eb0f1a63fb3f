package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/pool"
)

// ms is a duration in milliseconds, for reading the expectations below.
func ms(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

// near says whether d is within a microsecond of want (float rounding).
func near(d, want time.Duration) bool { return d-want < time.Microsecond && want-d < time.Microsecond }

func TestBucketRate(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var b bucket
	b.set(10, 1, t0) // a token every 100ms, one at most
	steps := []struct {
		at      time.Duration // since t0
		maxWait time.Duration
		wait    time.Duration
		ok      bool
	}{
		{0, time.Second, 0, true},              // the bucket starts full
		{0, time.Second, ms(100), true},        // the next token, reserved
		{0, time.Second, ms(200), true},        // and the one after
		{0, ms(150), ms(300), false},           // too far ahead: not taken
		{ms(50), time.Second, ms(250), true},   // time passes for the queue too
		{ms(1000), time.Second, 0, true},       // earned back, up to the burst alone
		{ms(1000), time.Second, ms(100), true}, // the burst was 1
	}
	for i, st := range steps {
		wait, ok := b.reserve(t0.Add(st.at), st.maxWait)
		if ok != st.ok || !near(wait, st.wait) {
			t.Fatalf("step %d at %v: reserve = %v, %v; want %v, %v", i, st.at, wait, ok, st.wait, st.ok)
		}
	}
}

func TestBucketBurstAndGiveBack(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var b bucket
	b.set(2.5, 0, t0) // burst 0: one second's worth, rounded up: 3
	for i := 0; i < 3; i++ {
		if wait, ok := b.reserve(t0, 0); !ok || wait != 0 {
			t.Fatalf("token %d of the burst: %v, %v", i+1, wait, ok)
		}
	}
	if wait, ok := b.reserve(t0, 0); ok || !near(wait, ms(400)) {
		t.Fatalf("beyond the burst: %v, %v; want 400ms, refused", wait, ok)
	}
	b.unreserve(t0)
	if wait, ok := b.reserve(t0, 0); !ok || wait != 0 {
		t.Fatalf("the token given back: %v, %v", wait, ok)
	}
	// Given back past the burst, a token is lost: the bucket never holds
	// more than its size.
	later := t0.Add(time.Hour)
	b.unreserve(later)
	for i := 0; i < 3; i++ {
		if _, ok := b.reserve(later, 0); !ok {
			t.Fatalf("token %d after an hour refused", i+1)
		}
	}
	if _, ok := b.reserve(later, 0); ok {
		t.Fatal("a fourth token after an hour: the bucket held more than its burst")
	}
	// A smaller size takes effect at once; a larger one fills with time.
	b.set(2.5, 1, later.Add(time.Hour))
	if b.tokens != 1 {
		t.Fatalf("tokens after shrinking the burst to 1 = %v", b.tokens)
	}
}

// fakeNow is a clock that moves only when told.
type fakeNow struct{ t time.Time }

func (c *fakeNow) now() time.Time { return c.t }

func TestTakeTxn(t *testing.T) {
	ctx := context.Background()
	clk := &fakeNow{t: time.Unix(1_700_000_000, 0)}
	l := &tenantLimits{now: clk.now}

	// Off: never waits.
	l.setRate(0, 0, time.Second)
	for i := 0; i < 100; i++ {
		if err := l.takeTxn(ctx, false); err != nil {
			t.Fatalf("rate off: %v", err)
		}
	}
	// 1000 a second, burst 1: the second transaction waits a millisecond
	// (of real time: the clock only tells the bucket when it is).
	l.setRate(1000, 1, time.Second)
	if err := l.takeTxn(ctx, true); err != nil {
		t.Fatal(err)
	}
	// A checkout that must not wait is told the pool is busy, and takes
	// no token.
	if err := l.takeTxn(ctx, false); !errors.Is(err, pool.ErrBusy) {
		t.Fatalf("no-wait take over the rate: %v, want pool.ErrBusy", err)
	}
	if err := l.takeTxn(ctx, true); err != nil {
		t.Fatalf("waiting take: %v", err)
	}
	// 1 a second, with a wait of 20ms: the token is a second away, so the
	// transaction waits its 20ms out and is refused.
	clk.t = clk.t.Add(time.Hour)
	l.setRate(1, 1, ms(20))
	if err := l.takeTxn(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := l.takeTxn(ctx, true); !errors.Is(err, errRateLimited) {
		t.Fatalf("take a second ahead with a 20ms wait: %v, want errRateLimited", err)
	}
	// A waiter whose context ends gives its token back.
	l.setRate(1, 1, time.Hour)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.takeTxn(cctx, true) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled take: %v", err)
	}
	l.mu.Lock()
	tokens := l.bucket.tokens
	l.mu.Unlock()
	if tokens < -1e-9 {
		t.Fatalf("tokens after the cancelled take = %v: its reservation was kept", tokens)
	}
}

// TestBucketCharge: a transaction that needed no checkout takes its token
// ahead of time, and the next reservation waits for it; the debt stops at
// its bound.
func TestBucketCharge(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	var b bucket
	b.set(10, 1, t0)
	b.charge(t0, 2) // the burst's token
	b.charge(t0, 2) // 100ms ahead
	if wait, ok := b.reserve(t0, time.Second); !ok || !near(wait, ms(200)) {
		t.Fatalf("reserve after two charges: %v, %v; want 200ms", wait, ok)
	}
	for range 10 {
		b.charge(t0, 2)
	}
	if b.tokens != -2 {
		t.Fatalf("tokens after charges past the bound = %v, want -2", b.tokens)
	}
	if wait, ok := b.reserve(t0, time.Second); !ok || !near(wait, ms(300)) {
		t.Fatalf("reserve at the bound: %v, %v; want 300ms", wait, ok)
	}
}
