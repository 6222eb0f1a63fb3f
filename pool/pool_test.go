package pool

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// eventually polls cond until it holds, failing the test after a generous
// limit. It is for waiting on state the test can observe (Stats), never a
// stand-in for a fixed delay.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		<-tick.C
	}
}

// trackedConn counts itself in its dialer's live connections until closed.
type trackedConn struct {
	net.Conn
	d    *fakeDialer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.d.live.Add(-1) })
	return c.Conn.Close()
}

// fakeDialer hands out net.Pipe connections and keeps the server ends.
type fakeDialer struct {
	// hook, when set, runs before each dial with its 1-based number; an
	// error it returns is the dial's error.
	hook func(ctx context.Context, n int) error

	dials   atomic.Int64
	live    atomic.Int64 // dialled and not yet closed
	maxLive atomic.Int64

	mu    sync.Mutex
	peers map[*Conn]net.Conn
}

func newFakeDialer(t *testing.T) *fakeDialer {
	d := &fakeDialer{peers: map[*Conn]net.Conn{}}
	t.Cleanup(func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, p := range d.peers {
			_ = p.Close()
		}
	})
	return d
}

func (d *fakeDialer) Dial(ctx context.Context) (*Conn, error) {
	n := int(d.dials.Add(1))
	if d.hook != nil {
		if err := d.hook(ctx, n); err != nil {
			return nil, err
		}
	}
	client, server := net.Pipe()
	live := d.live.Add(1)
	for {
		m := d.maxLive.Load()
		if live <= m || d.maxLive.CompareAndSwap(m, live) {
			break
		}
	}
	c := newConn(&trackedConn{Conn: client, d: d}, uint32(1000+n), []byte{1, 2, 3, 4}, nil)
	d.mu.Lock()
	d.peers[c] = server
	d.mu.Unlock()
	return c, nil
}

// peer is the server end of c.
func (d *fakeDialer) peer(c *Conn) net.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.peers[c]
}

// closedByPool reports whether the pool closed c, as its server sees it.
func (d *fakeDialer) closedByPool(c *Conn) bool {
	p := d.peer(c)
	_ = p.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := p.Read(make([]byte, 1))
	return errors.Is(err, io.EOF)
}

func testConfig(size int) Config {
	return Config{Size: size, WaitTimeout: 10 * time.Second, ConnectTimeout: 10 * time.Second}
}

func newTestPool(t *testing.T, cfg Config, d Dialer) *Pool {
	t.Helper()
	p, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func mustCheckout(t *testing.T, p *Pool) *Conn {
	t.Helper()
	c, err := p.Checkout(context.Background())
	if err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	return c
}

type result struct {
	id   int
	conn *Conn
	err  error
}

// queueWaiter starts a Checkout that must wait, and returns once the pool
// counts it among the waiters, so waiters queue in a known order.
func queueWaiter(t *testing.T, ctx context.Context, p *Pool, id int, results chan<- result) {
	t.Helper()
	before := p.Stats().Waiting
	go func() {
		c, err := p.Checkout(ctx)
		results <- result{id, c, err}
	}()
	eventually(t, "the checkout is queued", func() bool { return p.Stats().Waiting == before+1 })
}

func TestNewValidates(t *testing.T) {
	d := &fakeDialer{}
	for _, cfg := range []Config{
		{Size: 0, WaitTimeout: time.Second, ConnectTimeout: time.Second},
		{Size: 1, WaitTimeout: 0, ConnectTimeout: time.Second},
		{Size: 1, WaitTimeout: time.Second, ConnectTimeout: 0},
		{Size: 1, WaitTimeout: -time.Second, ConnectTimeout: time.Second},
	} {
		if p, err := New(cfg, d); err == nil {
			p.Close()
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func TestCheckoutDialsLazilyUpToSize(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(3), d)
	if s := p.Stats(); s.Open != 0 || d.dials.Load() != 0 {
		t.Fatalf("a new pool dialled: %+v", s)
	}
	a := mustCheckout(t, p)
	if got := d.dials.Load(); got != 1 {
		t.Fatalf("dials after one checkout = %d, want 1", got)
	}
	if a.pool != p || a.PID != 1001 || len(a.SecretKey) != 4 || a.Params == nil {
		t.Fatalf("checked-out conn not set up: %+v", a)
	}
	p.Release(a)
	if again := mustCheckout(t, p); again != a {
		t.Fatal("an idle connection was not reused")
	} else {
		p.Release(again)
	}
	if got := d.dials.Load(); got != 1 {
		t.Fatalf("dials after reuse = %d, want 1", got)
	}
	var held []*Conn
	for i := 0; i < 3; i++ {
		held = append(held, mustCheckout(t, p))
	}
	if s := p.Stats(); s.Open != 3 || s.Idle != 0 || s.Dials != 3 {
		t.Fatalf("stats with 3 held = %+v", s)
	}
	for _, c := range held {
		p.Release(c)
	}
	if s := p.Stats(); s.Open != 3 || s.Idle != 3 {
		t.Fatalf("stats with 3 released = %+v", s)
	}
}

func TestIdleReuseIsLIFO(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(3), d)
	a, b, c := mustCheckout(t, p), mustCheckout(t, p), mustCheckout(t, p)
	p.Release(a)
	p.Release(b)
	p.Release(c)
	for i, want := range []*Conn{c, b, a} {
		if got := mustCheckout(t, p); got != want {
			t.Fatalf("checkout %d got conn %d, want %d (most recently released first)", i, got.PID, want.PID)
		}
	}
}

func TestNeverMoreThanSizeUnderLoad(t *testing.T) {
	const size, workers, rounds = 4, 32, 200
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(size), d)

	var holding, maxHolding atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				c, err := p.Checkout(context.Background())
				if err != nil {
					errs <- err
					return
				}
				h := holding.Add(1)
				for {
					m := maxHolding.Load()
					if h <= m || maxHolding.CompareAndSwap(m, h) {
						break
					}
				}
				if s := p.Stats(); s.Open > size {
					errs <- errors.New("Stats().Open over Size")
					holding.Add(-1)
					return
				}
				holding.Add(-1)
				if (w+i)%10 == 0 {
					p.Destroy(c)
				} else {
					p.Release(c)
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := maxHolding.Load(); m > size {
		t.Fatalf("%d holders at once with Size %d", m, size)
	}
	if m := d.maxLive.Load(); m > size {
		t.Fatalf("%d connections open at once with Size %d", m, size)
	}
	s := p.Stats()
	if s.Open > size || s.Waiting != 0 || s.Idle != s.Open {
		t.Fatalf("stats after the load = %+v", s)
	}
	if live := d.live.Load(); live != int64(s.Open) {
		t.Fatalf("%d connections live, pool counts %d", live, s.Open)
	}
	if s.Destroys == 0 || s.Dials != s.Destroys+uint64(s.Open) {
		t.Fatalf("dials %d, destroys %d, open %d do not add up", s.Dials, s.Destroys, s.Open)
	}
}

func TestWaitersServedInArrivalOrder(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(1), d)
	held := mustCheckout(t, p)

	results := make(chan result, 3)
	for id := 1; id <= 3; id++ {
		queueWaiter(t, context.Background(), p, id, results)
	}
	p.Release(held)
	if s := p.Stats(); s.Idle != 0 {
		t.Fatalf("a released connection went idle while clients wait: %+v", s)
	}
	for want := 1; want <= 3; want++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("waiter %d: %v", r.id, r.err)
		}
		if r.id != want {
			t.Fatalf("waiter %d served before waiter %d", r.id, want)
		}
		if r.conn != held {
			t.Fatalf("waiter %d got a new connection instead of the released one", r.id)
		}
		p.Release(r.conn)
	}
	if got := d.dials.Load(); got != 1 {
		t.Fatalf("dials = %d, want 1: the hand-offs need no dial", got)
	}
}

// TestWaiterHandedDeadConnKeepsItsTurn: the oldest waiter is handed a
// connection that turns out unusable (the server spoke while nobody asked).
// The pool doc promises waiters strictly first come, first served, so that
// waiter must be the next one served (by a fresh dial in the freed slot),
// not pushed behind the waiter that arrived after it.
func TestWaiterHandedDeadConnKeepsItsTurn(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(1), d)
	held := mustCheckout(t, p)

	results := make(chan result, 2)
	queueWaiter(t, context.Background(), p, 1, results)
	queueWaiter(t, context.Background(), p, 2, results)

	// The server says something unsolicited, and the holder's reader has
	// buffered it: the connection's state is in doubt.
	go func() { _, _ = d.peer(held).Write([]byte("E")) }()
	if _, err := held.Reader.Peek(1); err != nil {
		t.Fatal(err)
	}
	p.Release(held)

	first := <-results
	if first.err != nil {
		t.Fatalf("waiter %d: %v", first.id, first.err)
	}
	if first.conn == held {
		t.Fatal("a connection with unread server bytes was handed out")
	}
	if first.id != 1 {
		t.Errorf("waiter %d served before waiter 1, which was handed the dead connection", first.id)
	}
	p.Release(first.conn)
	second := <-results
	if second.err != nil {
		t.Fatalf("waiter %d: %v", second.id, second.err)
	}
	p.Release(second.conn)
	if s := p.Stats(); s.DeadAtCheckout != 1 {
		t.Errorf("DeadAtCheckout = %d, want 1", s.DeadAtCheckout)
	}
	if !d.closedByPool(held) {
		t.Fatal("the dead connection was not closed")
	}
}

func TestWaitTimeout(t *testing.T) {
	d := newFakeDialer(t)
	cfg := testConfig(1)
	cfg.WaitTimeout = 50 * time.Millisecond
	p := newTestPool(t, cfg, d)
	held := mustCheckout(t, p)

	_, err := p.Checkout(context.Background())
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Checkout error = %v, want ErrTimeout", err)
	}
	if s := p.Stats(); s.Timeouts != 1 || s.Waiting != 0 {
		t.Fatalf("stats after a timeout = %+v", s)
	}
	// The pool is still usable afterwards.
	p.Release(held)
	if c := mustCheckout(t, p); c != held {
		t.Fatal("the released connection was not reused after a timeout")
	}
}

func TestWaiterContextCanceled(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(1), d)
	held := mustCheckout(t, p)

	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan result, 1)
	queueWaiter(t, ctx, p, 1, results)
	cancel()
	r := <-results
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Checkout error = %v, want context.Canceled", r.err)
	}
	if s := p.Stats(); s.Waiting != 0 || s.Timeouts != 0 {
		t.Fatalf("stats after a cancel = %+v", s)
	}
	p.Release(held)
	if s := p.Stats(); s.Idle != 1 {
		t.Fatalf("release after a withdrawn waiter did not go idle: %+v", s)
	}
}

func TestDestroyFreesSlotForWaiter(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(1), d)
	held := mustCheckout(t, p)

	results := make(chan result, 1)
	queueWaiter(t, context.Background(), p, 1, results)
	p.Destroy(held)
	r := <-results
	if r.err != nil {
		t.Fatalf("waiter: %v", r.err)
	}
	if r.conn == held {
		t.Fatal("waiter got the destroyed connection")
	}
	if !d.closedByPool(held) {
		t.Fatal("Destroy did not close the connection")
	}
	if s := p.Stats(); s.Open != 1 || s.Dials != 2 || s.Destroys != 1 {
		t.Fatalf("stats = %+v", s)
	}
	p.Destroy(r.conn)
	if s := p.Stats(); s.Open != 0 {
		t.Fatalf("Destroy without waiters left Open = %d", s.Open)
	}
}

func TestDialErrorFreesSlot(t *testing.T) {
	errRefused := errors.New("connection refused")
	d := newFakeDialer(t)
	d.hook = func(_ context.Context, n int) error {
		if n == 1 {
			return errRefused
		}
		return nil
	}
	p := newTestPool(t, testConfig(1), d)
	clock := newFakeClock()
	p.now = clock.Now
	_, err := p.Checkout(context.Background())
	if !errors.Is(err, errRefused) {
		t.Fatalf("Checkout error = %v, want it to wrap the dial error", err)
	}
	if s := p.Stats(); s.Open != 0 || s.Dials != 0 || s.DialFailures != 1 {
		t.Fatalf("stats after a failed dial = %+v", s)
	}
	clock.Add(dialBackoffMin) // the next dial waits for the backoff
	c := mustCheckout(t, p)
	p.Release(c)
	if s := p.Stats(); s.Open != 1 || s.Dials != 1 {
		t.Fatalf("stats after a good dial = %+v", s)
	}
}

func TestDialHonoursConnectTimeout(t *testing.T) {
	d := newFakeDialer(t)
	d.hook = func(ctx context.Context, n int) error {
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("dial context has no deadline")
		}
		return nil
	}
	p := newTestPool(t, testConfig(1), d)
	c := mustCheckout(t, p)
	p.Release(c)
}

func TestCloseWakesWaitersAndRefusesCheckouts(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(1), d)
	held := mustCheckout(t, p)

	results := make(chan result, 2)
	queueWaiter(t, context.Background(), p, 1, results)
	queueWaiter(t, context.Background(), p, 2, results)
	p.Close()
	for i := 0; i < 2; i++ {
		if r := <-results; !errors.Is(r.err, ErrClosed) {
			t.Fatalf("waiter %d error = %v, want ErrClosed", r.id, r.err)
		}
	}
	if _, err := p.Checkout(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Checkout after Close = %v, want ErrClosed", err)
	}
	// A connection held across Close is closed when released.
	p.Release(held)
	if !d.closedByPool(held) {
		t.Fatal("a connection released after Close was not closed")
	}
	if s := p.Stats(); s.Open != 0 || s.Idle != 0 || s.Waiting != 0 {
		t.Fatalf("stats after Close = %+v", s)
	}
	p.Close() // idempotent
}

func TestCloseClosesIdle(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(2), d)
	a, b := mustCheckout(t, p), mustCheckout(t, p)
	p.Release(a)
	p.Release(b)
	p.Close()
	for _, c := range []*Conn{a, b} {
		if !d.closedByPool(c) {
			t.Fatalf("idle conn %d not closed by Close", c.PID)
		}
	}
	if s := p.Stats(); s.Open != 0 || s.Idle != 0 {
		t.Fatalf("stats after Close = %+v", s)
	}
}

func TestMaxLifetime(t *testing.T) {
	d := newFakeDialer(t)
	cfg := testConfig(1)
	cfg.MaxLifetime = time.Hour
	p := newTestPool(t, cfg, d)

	old := mustCheckout(t, p)
	if lo, hi := old.createdAt.Add(time.Hour), old.createdAt.Add(time.Hour+6*time.Minute); old.expiresAt.Before(lo) || old.expiresAt.After(hi) {
		t.Fatalf("expiresAt = created + %v, want MaxLifetime plus at most 10%%", old.expiresAt.Sub(old.createdAt))
	}
	p.Release(old)

	// Expire it while idle. The reaper reads expiresAt under the lock.
	p.mu.Lock()
	old.expiresAt = time.Now().Add(-time.Second)
	p.mu.Unlock()

	fresh := mustCheckout(t, p)
	if fresh == old {
		t.Fatal("an expired connection was handed out")
	}
	if !d.closedByPool(old) {
		t.Fatal("the expired connection was not closed")
	}
	if s := p.Stats(); s.Dials != 2 || s.Destroys != 1 || s.Open != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

func TestReleaseOfExpiredConnDestroysIt(t *testing.T) {
	d := newFakeDialer(t)
	cfg := testConfig(1)
	cfg.MaxLifetime = time.Hour
	p := newTestPool(t, cfg, d)
	c := mustCheckout(t, p)
	c.expiresAt = time.Now().Add(-time.Second) // held: the pool does not look at it
	p.Release(c)
	if !d.closedByPool(c) {
		t.Fatal("an expired connection was not closed at release")
	}
	if s := p.Stats(); s.Idle != 0 || s.Open != 0 || s.Destroys != 1 {
		t.Fatalf("stats = %+v", s)
	}
}

// A proxy with a pool per backend server releases through any of them: the
// connection goes back to the pool that dialled it.
func TestReleaseThroughAnotherPool(t *testing.T) {
	d := newFakeDialer(t)
	p1 := newTestPool(t, testConfig(1), d)
	p2 := newTestPool(t, testConfig(1), d)
	c := mustCheckout(t, p1)
	p2.Release(c)
	if s1, s2 := p1.Stats(), p2.Stats(); s1.Idle != 1 || s1.Open != 1 || s2.Idle != 0 || s2.Open != 0 {
		t.Fatalf("after Release through p2: p1 %+v, p2 %+v", s1, s2)
	}
	c = mustCheckout(t, p1)
	p2.Destroy(c)
	if s1, s2 := p1.Stats(), p2.Stats(); s1.Open != 0 || s1.Destroys != 1 || s2.Destroys != 0 {
		t.Fatalf("after Destroy through p2: p1 %+v, p2 %+v", s1, s2)
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		_ = client.Close()
		_ = server.Close()
	})
	return client, server
}

func TestUsable(t *testing.T) {
	pipe := func(t *testing.T) (*Conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		return newConn(a, 1, nil, nil), b
	}
	t.Run("fresh", func(t *testing.T) {
		c, _ := pipe(t)
		if !c.usable(0) {
			t.Fatal("a fresh connection is not usable")
		}
	})
	t.Run("not yet expired", func(t *testing.T) {
		c, _ := pipe(t)
		c.expiresAt = time.Now().Add(time.Hour)
		if !c.usable(0) {
			t.Fatal("unusable before its expiry")
		}
	})
	t.Run("expired", func(t *testing.T) {
		c, _ := pipe(t)
		c.expiresAt = time.Now().Add(-time.Second)
		if c.usable(0) {
			t.Fatal("an expired connection is usable")
		}
	})
	t.Run("buffered bytes", func(t *testing.T) {
		c, peer := pipe(t)
		go func() { _, _ = peer.Write([]byte("N\x00\x00\x00\x04")) }()
		if _, err := c.Reader.Peek(1); err != nil {
			t.Fatal(err)
		}
		if c.usable(0) {
			t.Fatal("a connection with buffered server bytes is usable")
		}
	})
	t.Run("probe cannot peek a pipe", func(t *testing.T) {
		c, _ := pipe(t)
		c.idleSince = time.Now().Add(-time.Hour)
		if !c.usable(time.Second) {
			t.Fatal("a connection the probe cannot inspect is not usable")
		}
	})
	t.Run("dead TCP peer, recently idle: not probed", func(t *testing.T) {
		client, server := tcpPair(t)
		c := newConn(client, 1, nil, nil)
		_ = server.Close()
		eventually(t, "the close reaches the client", func() bool { return !alive(client) })
		c.idleSince = time.Now()
		if !c.usable(time.Hour) {
			t.Fatal("probed although idle for less than CheckIdle")
		}
	})
	t.Run("dead TCP peer, idle past CheckIdle", func(t *testing.T) {
		client, server := tcpPair(t)
		c := newConn(client, 1, nil, nil)
		_ = server.Close()
		eventually(t, "the close reaches the client", func() bool { return !alive(client) })
		c.idleSince = time.Now().Add(-time.Hour)
		if c.usable(time.Second) {
			t.Fatal("a connection whose server hung up is usable")
		}
	})
}

func TestAliveProbe(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		client, _ := tcpPair(t)
		for i := 0; i < 3; i++ {
			if !alive(client) {
				t.Fatal("an idle connection is not alive")
			}
		}
	})
	t.Run("peer wrote", func(t *testing.T) {
		client, server := tcpPair(t)
		if _, err := server.Write([]byte("E")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the byte is seen", func() bool { return !alive(client) })
		// The probe peeks: the byte is still there for a reader.
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1)
		if n, err := client.Read(b); n != 1 || b[0] != 'E' {
			t.Fatalf("after the probe, Read = %q, %v; the probe consumed the byte", b[:n], err)
		}
	})
	t.Run("peer closed", func(t *testing.T) {
		client, server := tcpPair(t)
		if !alive(client) {
			t.Fatal("not alive before the close")
		}
		_ = server.Close()
		eventually(t, "the close is seen", func() bool { return !alive(client) })
	})
	t.Run("closed locally", func(t *testing.T) {
		client, _ := tcpPair(t)
		_ = client.Close()
		if alive(client) {
			t.Fatal("a closed connection is alive")
		}
	})
}

// tcpDialer dials a loopback listener whose accepted ends the test keeps.
type tcpDialer struct {
	addr     string
	accepted chan net.Conn
}

func newTCPDialer(t *testing.T) *tcpDialer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &tcpDialer{addr: ln.Addr().String(), accepted: make(chan net.Conn, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d.accepted <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		for {
			select {
			case c := <-d.accepted:
				_ = c.Close()
			default:
				return
			}
		}
	})
	return d
}

func (d *tcpDialer) Dial(ctx context.Context) (*Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	return newConn(c, 1, nil, nil), nil
}

// TestCheckIdleReplacesTerminatedConn: a backend terminated while idle is
// noticed at checkout and replaced, instead of being handed to a client.
func TestCheckIdleReplacesTerminatedConn(t *testing.T) {
	d := newTCPDialer(t)
	cfg := testConfig(1)
	cfg.CheckIdle = time.Nanosecond // probe every idle connection
	p := newTestPool(t, cfg, d)

	c := mustCheckout(t, p)
	server := <-d.accepted
	p.Release(c)
	// The server terminates the idle backend: an ErrorResponse, then EOF.
	if _, err := server.Write([]byte("E")); err != nil {
		t.Fatal(err)
	}
	_ = server.Close()
	eventually(t, "the termination reaches the pool's socket", func() bool { return !alive(c.NetConn) })

	fresh := mustCheckout(t, p)
	defer p.Release(fresh)
	if fresh == c {
		t.Fatal("a terminated connection was handed out")
	}
	if s := p.Stats(); s.DeadAtCheckout != 1 || s.Dials != 2 || s.Open != 1 {
		t.Fatalf("stats = %+v", s)
	}
}
