package pool

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// queueGet starts a waiting Get of req and returns once the pool counts it
// among the waiters, so waiters queue in a known order.
func queueGet(t *testing.T, p *Pool, req Request, id int, results chan<- result) {
	t.Helper()
	before := p.Stats().Waiting
	go func() {
		c, err := p.Get(context.Background(), req, true)
		results <- result{id, c, err}
	}()
	eventually(t, "the checkout is queued", func() bool { return p.Stats().Waiting == before+1 })
}

func mustGet(t *testing.T, p *Pool, req Request) *Conn {
	t.Helper()
	c, err := p.Get(context.Background(), req, true)
	if err != nil {
		t.Fatalf("Get(%+v): %v", req, err)
	}
	return c
}

func recv(t *testing.T, results <-chan result) result {
	t.Helper()
	select {
	case r := <-results:
		if r.err != nil {
			t.Fatalf("waiter %d: %v", r.id, r.err)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no waiter was served")
		return result{}
	}
}

// TestFairAcrossKeys: a key with 40 waiters queued before a key with one.
// First come, first served, the lone waiter would get the 41st released
// connection; served in turn, it gets the second.
func TestFairAcrossKeys(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(2), d)
	noisy, quiet := Request{Key: "noisy"}, Request{Key: "quiet"}
	a, b := mustGet(t, p, noisy), mustGet(t, p, noisy)

	results := make(chan result, 41)
	for id := 1; id <= 40; id++ {
		queueGet(t, p, noisy, id, results)
	}
	queueGet(t, p, quiet, 0, results)

	p.Release(a)
	if r := recv(t, results); r.id != 1 {
		t.Fatalf("first release went to waiter %d, want noisy's oldest (1)", r.id)
	} else {
		defer p.Release(r.conn)
	}
	p.Release(b)
	if r := recv(t, results); r.id != 0 {
		t.Fatalf("second release went to noisy's waiter %d, want quiet's", r.id)
	} else {
		p.Release(r.conn)
	}
	// The rest of noisy is served in its own order.
	for want := 2; want <= 40; want++ {
		r := recv(t, results)
		if r.id != want {
			t.Fatalf("noisy waiter %d served before %d", r.id, want)
		}
		p.Release(r.conn)
	}
	if got := d.dials.Load(); got != 2 {
		t.Fatalf("dials = %d, want 2: the hand-offs need no dial", got)
	}
}

// TestKeysTakeTurns: three keys with waiters are served a, b, c, a, b, c,
// each key's own waiters in their order, whatever order they came in.
func TestKeysTakeTurns(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(1), d)
	held := mustGet(t, p, Request{Key: "x"})

	results := make(chan result, 9)
	// Arrival: a1 a2 a3 b1 c1 b2 c2 b3 c3 (id = key*10 + n).
	for _, id := range []int{11, 12, 13, 21, 31, 22, 32, 23, 33} {
		queueGet(t, p, Request{Key: fmt.Sprint(id / 10)}, id, results)
	}
	p.Release(held)
	var order []int
	for range 9 {
		r := recv(t, results)
		order = append(order, r.id)
		p.Release(r.conn)
	}
	want := []int{11, 21, 31, 12, 22, 32, 13, 23, 33}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("served %v, want %v", order, want)
	}
}

// TestKeyMax: a key at its Max waits, in its own queue, although the pool
// has room; other keys are not held up, neither by it nor by its waiters;
// its waiter gets the first of its own connections to come back.
func TestKeyMax(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(4), d)
	a := Request{Key: "a", Max: 2}
	a1, a2 := mustGet(t, p, a), mustGet(t, p, a)
	if _, err := p.Get(context.Background(), a, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("Try at the key's max: %v, want ErrBusy", err)
	}
	results := make(chan result, 2)
	queueGet(t, p, a, 3, results)
	queueGet(t, p, a, 4, results)
	if held, waiting := p.Held("a"); held != 2 || waiting != 2 {
		t.Fatalf("Held(a) = %d, %d; want 2 held, 2 waiting", held, waiting)
	}

	// Another key dials in the room left, waiters of a notwithstanding.
	b1 := mustGet(t, p, Request{Key: "b", Max: 2})
	b2 := mustGet(t, p, Request{Key: "b"})
	if s := p.Stats(); s.Open != 4 || s.Waiting != 2 {
		t.Fatalf("stats = %+v", s)
	}
	// A connection of b comes back: a is still at its max, so it goes idle.
	p.Release(b2)
	if s := p.Stats(); s.Idle != 1 {
		t.Fatalf("b's released connection was not left idle: %+v", s)
	}
	select {
	case r := <-results:
		t.Fatalf("waiter %d of a served beyond a's max", r.id)
	default:
	}
	// One of a's comes back: a's oldest waiter gets it.
	p.Release(a1)
	r := recv(t, results)
	if r.id != 3 || r.conn != a1 {
		t.Fatalf("waiter %d got %p, want waiter 3 with a's released connection", r.id, r.conn)
	}
	// Destroyed, the slot goes to a's next waiter, which takes the idle
	// connection rather than dial.
	dials := d.dials.Load()
	p.Destroy(a2)
	r = recv(t, results)
	if r.id != 4 || r.conn != b2 {
		t.Fatalf("waiter %d got %p, want waiter 4 with the idle connection", r.id, r.conn)
	}
	if d.dials.Load() != dials {
		t.Fatal("a dial was made although a connection was idle")
	}
	if held, _ := p.Held("a"); held != 2 {
		t.Fatalf("Held(a) = %d, want 2", held)
	}
	p.Release(b1)
	p.Release(r.conn)
	p.Release(a1)
	if held, _ := p.Held("a"); held != 0 {
		t.Fatalf("Held(a) after every release = %d", held)
	}
	if held, _ := p.Held("b"); held != 0 {
		t.Fatalf("Held(b) after every release = %d", held)
	}
}

// TestKeyMaxTimeout: a wait that times out because the key holds its max
// says so (ErrKeyMax, an ErrTimeout), and is counted as a timeout.
func TestKeyMaxTimeout(t *testing.T) {
	d := newFakeDialer(t)
	cfg := testConfig(3)
	cfg.WaitTimeout = 50 * time.Millisecond
	p := newTestPool(t, cfg, d)
	req := Request{Key: "a", Max: 1}
	held := mustGet(t, p, req)
	_, err := p.Get(context.Background(), req, true)
	if !errors.Is(err, ErrKeyMax) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("Get at the key's max: %v, want ErrKeyMax", err)
	}
	if s := p.Stats(); s.Timeouts != 1 || s.Waiting != 0 || s.Open != 1 {
		t.Fatalf("stats = %+v", s)
	}
	// The max is the request's: raised, the next checkout gets one.
	req.Max = 2
	p.Release(mustGet(t, p, req))
	p.Release(held)
	// A plain timeout (the pool full) is not ErrKeyMax.
	all := []*Conn{mustGet(t, p, Request{}), mustGet(t, p, Request{}), mustGet(t, p, Request{})}
	if _, err := p.Get(context.Background(), Request{Key: "a", Max: 5}, true); !errors.Is(err, ErrTimeout) || errors.Is(err, ErrKeyMax) {
		t.Fatalf("Get in a full pool: %v, want ErrTimeout alone", err)
	}
	for _, c := range all {
		p.Release(c)
	}
}

// TestKeysTakeTurnsAcrossRoles: in role mode each key logs in as its own
// role. A released connection of role a goes to b when it is b's turn, and b
// closes it and dials its own role in the slot.
func TestKeysTakeTurnsAcrossRoles(t *testing.T) {
	d := newRoleDialer(t)
	p := newTestPool(t, testConfig(1), d)
	ra, rb := Request{Key: "a", Role: "a"}, Request{Key: "b", Role: "b"}
	held := mustGet(t, p, ra)

	results := make(chan result, 4)
	queueGet(t, p, ra, 1, results)
	queueGet(t, p, ra, 2, results)
	queueGet(t, p, ra, 3, results)
	queueGet(t, p, rb, 10, results)

	p.Release(held)
	r := recv(t, results)
	if r.id != 1 || r.conn != held {
		t.Fatalf("waiter %d served first, want 1 with the released connection", r.id)
	}
	p.Release(r.conn)
	r = recv(t, results)
	if r.id != 10 || r.conn.Role != "b" {
		t.Fatalf("waiter %d (role %q) served second, want b's", r.id, r.conn.Role)
	}
	if s := p.Stats(); s.Evictions != 1 || s.Open != 1 {
		t.Fatalf("stats = %+v, want the connection of a closed for b's", s)
	}
	if d.liveAs("a") != 0 || d.liveAs("b") != 1 {
		t.Fatalf("live a=%d b=%d", d.liveAs("a"), d.liveAs("b"))
	}
	p.Release(r.conn)
	for _, want := range []int{2, 3} {
		r = recv(t, results)
		if r.id != want || r.conn.Role != "a" {
			t.Fatalf("waiter %d served, want %d", r.id, want)
		}
		p.Release(r.conn)
	}
}

// TestDialFailureKeepsKeysTurn: a waiter granted the right to dial whose
// dial fails goes back first in line, its key before the keys that waited
// behind it: the next released connection is its.
func TestDialFailureKeepsKeysTurn(t *testing.T) {
	d := newFakeDialer(t)
	limit := limitServer(d, 2)
	clk := newFakeClock()
	p := newTestPool(t, testConfig(2), d)
	p.now = clk.Now
	x1, x2 := mustGet(t, p, Request{Key: "x"}), mustGet(t, p, Request{Key: "x"})

	results := make(chan result, 3)
	queueGet(t, p, Request{Key: "b"}, 1, results)
	queueGet(t, p, Request{Key: "c"}, 2, results)
	queueGet(t, p, Request{Key: "b"}, 3, results)

	// The server now takes one connection: the slot x1 frees goes to b's
	// waiter, whose dial is refused.
	limit.Store(1)
	p.Destroy(x1)
	eventually(t, "the refused dial is counted", func() bool { return p.Stats().DialFailures == 1 })
	eventually(t, "waiter 1 queued again", func() bool { return p.Stats().Waiting == 3 })
	p.Release(x2)
	r := recv(t, results)
	if r.id != 1 {
		t.Fatalf("waiter %d got the released connection, want 1, whose dial failed", r.id)
	}
	p.Release(r.conn)
	if r = recv(t, results); r.id != 2 {
		t.Fatalf("waiter %d served second, want c's (2)", r.id)
	}
	p.Release(r.conn)
	if r = recv(t, results); r.id != 3 {
		t.Fatalf("waiter %d served third, want 3", r.id)
	}
	p.Release(r.conn)
	if held, _ := p.Held("b"); held != 0 {
		t.Fatalf("Held(b) = %d after the failed dial and the releases", held)
	}
}

// TestKeyWaiterTimeoutLeavesTurns: a key whose only waiter gives up leaves
// the turns; the other keys are served as before.
func TestKeyWaiterTimeoutLeavesTurns(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(1), d)
	held := mustGet(t, p, Request{Key: "x"})
	results := make(chan result, 3)
	ctx, cancel := context.WithCancel(context.Background())
	before := p.Stats().Waiting
	go func() {
		c, err := p.Get(ctx, Request{Key: "gone"}, true)
		results <- result{9, c, err}
	}()
	eventually(t, "queued", func() bool { return p.Stats().Waiting == before+1 })
	queueGet(t, p, Request{Key: "a"}, 1, results)
	cancel()
	if r := <-results; r.id != 9 || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled waiter: %d %v", r.id, r.err)
	}
	p.Release(held)
	if r := recv(t, results); r.id != 1 {
		t.Fatalf("waiter %d served", r.id)
	} else {
		p.Release(r.conn)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queues) != 0 || len(p.turns) != 0 || p.nwait != 0 || len(p.held) != 0 {
		t.Fatalf("pool keeps state of keys gone: queues %d turns %d waiting %d held %v",
			len(p.queues), len(p.turns), p.nwait, p.held)
	}
}
