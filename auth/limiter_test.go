package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fakeClock is the Limiter's clock in tests: sleeping advances it at once
// and records how long.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

func newTestLimiter(t *testing.T, opts LimiterOptions) (*Limiter, *fakeClock) {
	t.Helper()
	l, err := NewLimiter(opts)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	l.now, l.sleep = clock.Now, clock.Sleep
	return l, clock
}

var (
	ipA = netip.MustParseAddr("192.0.2.1")
	ipB = netip.MustParseAddr("192.0.2.2")
)

func TestLimiterDelaysGrowAndReset(t *testing.T) {
	l, clock := newTestLimiter(t, LimiterOptions{Threshold: 3, BaseDelay: time.Second, MaxDelay: 8 * time.Second, Window: time.Minute})
	ctx := context.Background()

	// attempt waits, then fails; it returns how long it waited.
	attempt := func(ip netip.Addr) time.Duration {
		before := len(clock.sleeps)
		if err := l.Wait(ctx, ip); err != nil {
			t.Fatal(err)
		}
		l.Failed(ip)
		if len(clock.sleeps) == before {
			return 0
		}
		return clock.sleeps[len(clock.sleeps)-1]
	}
	var got []time.Duration
	for range 8 {
		got = append(got, attempt(ipA))
	}
	want := []time.Duration{0, 0, 0, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	// Another address is not affected.
	if d := l.Delay(ipB); d != 0 {
		t.Fatalf("other address delayed %v", d)
	}

	// A success lifts the delay but leaves the address one failure short
	// of the threshold, so the next failure brings the delay back.
	l.Succeeded(ipA)
	if d := l.Delay(ipA); d != 0 {
		t.Fatalf("delay after success %v", d)
	}
	if d := attempt(ipA); d != 0 {
		t.Fatalf("first attempt after success waited %v", d)
	}
	if d := l.Delay(ipA); d != time.Second {
		t.Fatalf("delay after success and one failure %v, want 1s", d)
	}

	// Failures are forgotten a Window after the last one.
	clock.now = clock.now.Add(time.Minute + time.Second)
	if d := l.Delay(ipA); d != 0 {
		t.Fatalf("delay after the window %v", d)
	}
	if l.addrs.Len() != 0 {
		t.Fatalf("%d addresses still tracked after the window", l.addrs.Len())
	}
}

// TestLimiterQueuesParallelAttempts checks that attempts in flight together
// from a delayed address are spaced a delay apart, and that one queued too
// far is refused.
func TestLimiterQueuesParallelAttempts(t *testing.T) {
	l, clock := newTestLimiter(t, LimiterOptions{Threshold: 1, BaseDelay: time.Second, MaxDelay: time.Second, MaxWait: 3 * time.Second})
	l.Failed(ipA)
	// Four attempts arrive at the same instant; the sleeps of the fake
	// clock must not move time for the others, so reset it each time.
	start := clock.now
	var waits []time.Duration
	for range 3 {
		clock.now = start
		if err := l.Wait(context.Background(), ipA); err != nil {
			t.Fatal(err)
		}
		waits = append(waits, clock.sleeps[len(clock.sleeps)-1])
	}
	if waits[0] != time.Second || waits[1] != 2*time.Second || waits[2] != 3*time.Second {
		t.Fatalf("queued waits %v, want 1s 2s 3s", waits)
	}
	clock.now = start
	err := l.Wait(context.Background(), ipA)
	authError(t, err, CodeTooManyConnections, "")
}

// TestLimiterDeadline checks that an attempt whose turn would come after its
// context's deadline (the client's startup deadline) is refused at once and
// does not take a slot: the attempts queued after it are not pushed back.
func TestLimiterDeadline(t *testing.T) {
	l, clock := newTestLimiter(t, LimiterOptions{Threshold: 1, BaseDelay: time.Second, MaxDelay: time.Second, MaxWait: time.Minute})
	l.Failed(ipA)
	start := clock.now
	// A deadline on the fake clock, which a real context would take for
	// long past.
	short := fakeDeadline{context.Background(), start.Add(1500 * time.Millisecond)}
	// First in the queue: its turn (1s) comes before its deadline.
	if err := l.Wait(short, ipA); err != nil {
		t.Fatalf("attempt within its deadline: %v", err)
	}
	// Second: its turn (2s) would come after its deadline.
	clock.now = start
	err := l.Wait(short, ipA)
	authError(t, err, CodeTooManyConnections, "")
	if n := len(clock.sleeps); n != 1 {
		t.Fatalf("%d sleeps, want only the first attempt's", n)
	}
	// The refused attempt took no slot: the next one is second in line.
	clock.now = start
	if err := l.Wait(context.Background(), ipA); err != nil {
		t.Fatal(err)
	}
	if got := clock.sleeps[len(clock.sleeps)-1]; got != 2*time.Second {
		t.Fatalf("attempt after a refused one waited %v, want 2s", got)
	}
}

// fakeDeadline is a context whose deadline is on the fake clock.
type fakeDeadline struct {
	context.Context
	deadline time.Time
}

func (c fakeDeadline) Deadline() (time.Time, bool) { return c.deadline, true }

func TestLimiterContext(t *testing.T) {
	l, err := NewLimiter(LimiterOptions{Threshold: 1, BaseDelay: time.Hour, MaxDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l.Failed(ipA)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Wait(ctx, ipA); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context: %v", err)
	}
}

func TestLimiterBoundedMemory(t *testing.T) {
	l, _ := newTestLimiter(t, LimiterOptions{MaxAddrs: 100})
	for i := range 10000 {
		l.Failed(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := l.addrs.Len(); n != 100 {
		t.Fatalf("%d addresses tracked, want 100", n)
	}
}

func TestLimiterIPv6Prefix(t *testing.T) {
	l, _ := newTestLimiter(t, LimiterOptions{Threshold: 2})
	// Addresses of one /64 count together.
	l.Failed(netip.MustParseAddr("2001:db8::1"))
	l.Failed(netip.MustParseAddr("2001:db8::2"))
	if d := l.Delay(netip.MustParseAddr("2001:db8::ffff")); d == 0 {
		t.Fatal("/64 not grouped")
	}
	if d := l.Delay(netip.MustParseAddr("2001:db8:0:1::1")); d != 0 {
		t.Fatal("another /64 delayed")
	}
	// An IPv4-mapped address is the IPv4 address.
	l.Failed(netip.MustParseAddr("::ffff:192.0.2.9"))
	l.Failed(netip.MustParseAddr("192.0.2.9"))
	if d := l.Delay(netip.MustParseAddr("192.0.2.9")); d == 0 {
		t.Fatal("IPv4-mapped address counted apart")
	}
}

func TestLimiterWrap(t *testing.T) {
	l, clock := newTestLimiter(t, LimiterOptions{Threshold: 2, BaseDelay: time.Second, MaxDelay: time.Minute})
	m := l.Wrap(newSCRAM(StaticUsers{"u": verifierFor(t, "right")}))
	addr := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}
	login := func(password string) error {
		sc := newSCRAMClient(t, password)
		return m.Authenticate(context.Background(), &fakeConn{addr: addr, client: sc.respond}, "u")
	}
	for range 3 {
		if err := login("wrong"); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	if len(clock.sleeps) != 1 || clock.sleeps[0] != time.Second {
		t.Fatalf("sleeps %v, want one of 1s", clock.sleeps)
	}
	// A hang-up is not a failure.
	hangUp := &fakeConn{addr: addr, client: func([]pgproto3.BackendMessage) ([]byte, error) { return nil, net.ErrClosed }}
	_ = m.Authenticate(context.Background(), hangUp, "u")
	ip := netip.MustParseAddr("198.51.100.7")
	if d := l.Delay(ip); d != 2*time.Second {
		t.Fatalf("delay %v after 3 failures and a hang-up, want 2s", d)
	}
	if err := login("right"); err != nil {
		t.Fatal(err)
	}
	if d := l.Delay(ip); d != 0 {
		t.Fatalf("delay %v after a success", d)
	}
	// No IP (a Unix socket): no limiting.
	unix := &fakeConn{addr: &net.UnixAddr{Name: "/tmp/.s.PGSQL.5432", Net: "unix"}, client: newSCRAMClient(t, "right").respond}
	if err := m.Authenticate(context.Background(), unix, "u"); err != nil {
		t.Fatal(err)
	}
}

func TestNewLimiterOptions(t *testing.T) {
	if _, err := NewLimiter(LimiterOptions{BaseDelay: time.Minute, MaxDelay: time.Second}); err == nil {
		t.Error("MaxDelay below BaseDelay accepted")
	}
	if _, err := NewLimiter(LimiterOptions{Threshold: -1}); err == nil {
		t.Error("negative threshold accepted")
	}
}

// TestConcurrentLogins runs logins in parallel through one limited method,
// as the proxy does with one Method for every session; run with -race.
func TestConcurrentLogins(t *testing.T) {
	l, err := NewLimiter(LimiterOptions{Threshold: 1000})
	if err != nil {
		t.Fatal(err)
	}
	users := StaticUsers{"a": {Kind: SecretPlain, Text: "pa"}, "b": verifierFor(t, "pb")}
	m := l.Wrap(newSCRAM(users))
	done := make(chan error)
	for i := range 16 {
		go func() {
			user, password := "a", "pa"
			if i%2 == 1 {
				user, password = "b", "pb"
			}
			if i%4 == 3 {
				password = "wrong"
			}
			sc := newSCRAMClient(t, password)
			err := m.Authenticate(context.Background(), &fakeConn{client: sc.respond}, user)
			if (err == nil) != (password != "wrong") {
				done <- fmt.Errorf("%s with %q: %v", user, password, err)
				return
			}
			done <- nil
		}()
	}
	for range 16 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
