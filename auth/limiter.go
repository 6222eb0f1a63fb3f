package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// Limiter defaults (LimiterOptions' zero values).
const (
	DefaultLimiterThreshold = 5
	DefaultLimiterWindow    = 5 * time.Minute
	DefaultLimiterBaseDelay = 500 * time.Millisecond
	DefaultLimiterMaxDelay  = 10 * time.Second
	DefaultLimiterMaxAddrs  = 16384
	// ipv6PrefixLen groups IPv6 clients by /64, the block one host
	// usually has, so that one host cannot dodge the Limiter by rotating
	// addresses inside it.
	ipv6PrefixLen = 64
)

// LimiterOptions tunes a Limiter. The zero value is a working configuration.
type LimiterOptions struct {
	// Threshold is how many failures an address may have before its
	// attempts are delayed. Default DefaultLimiterThreshold.
	Threshold int
	// Window is how long an address's failures are remembered after its
	// last one: failures less than Window apart add up. Default
	// DefaultLimiterWindow.
	Window time.Duration
	// BaseDelay is the delay of the first attempt past Threshold; each
	// further failure doubles it. Default DefaultLimiterBaseDelay.
	BaseDelay time.Duration
	// MaxDelay caps the delay. Default DefaultLimiterMaxDelay.
	MaxDelay time.Duration
	// MaxWait caps how long an attempt may be queued behind the address's
	// other delayed attempts; past it the attempt is refused at once
	// (53300). Default 3 × MaxDelay.
	MaxWait time.Duration
	// MaxAddrs bounds the addresses tracked; past it the least recently
	// seen is forgotten. Default DefaultLimiterMaxAddrs.
	MaxAddrs int
	// Log, when set, gets a line for every attempt the Limiter delays or
	// refuses, so that an operator can see an address being slowed down
	// (and tell it from a slow backend). Default: none.
	Log *slog.Logger
}

// Limiter slows down repeated authentication failures from one address
// (IPv4 address, or IPv6 /64). Once an address has Threshold failures, each
// further attempt waits before it is answered: BaseDelay, doubling with
// every further failure up to MaxDelay. The delayed attempts of one address
// are queued one delay apart, so opening connections in parallel does not
// multiply an attacker's guesses. Failures are forgotten Window after the
// last one; a success lifts the delay at once but keeps the address just
// under Threshold, so a client that knows one password cannot use its own
// logins to wipe out the record of its guesses. Memory is bounded by
// MaxAddrs (least recently seen forgotten first).
//
// Successful logins from an address without failures never wait, so the
// Limiter costs a busy connect-per-transaction client one map lookup.
type Limiter struct {
	opts LimiterOptions

	mu    sync.Mutex
	addrs *simplelru.LRU[netip.Prefix, *addrState]

	// now and sleep are the clock; tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// addrState is what the Limiter knows of one address.
type addrState struct {
	failures    int
	lastFailure time.Time
	// nextSlot is when the address's latest queued attempt goes ahead; the
	// next one is queued a delay after it.
	nextSlot time.Time
}

// NewLimiter returns a Limiter; it checks opts and fills in the defaults.
func NewLimiter(opts LimiterOptions) (*Limiter, error) {
	if opts.Threshold < 0 || opts.Window < 0 || opts.BaseDelay < 0 || opts.MaxDelay < 0 || opts.MaxWait < 0 || opts.MaxAddrs < 0 {
		return nil, errors.New("auth: limiter options must not be negative")
	}
	if opts.Threshold == 0 {
		opts.Threshold = DefaultLimiterThreshold
	}
	if opts.Window == 0 {
		opts.Window = DefaultLimiterWindow
	}
	if opts.BaseDelay == 0 {
		opts.BaseDelay = DefaultLimiterBaseDelay
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = DefaultLimiterMaxDelay
	}
	if opts.MaxDelay < opts.BaseDelay {
		return nil, fmt.Errorf("auth: limiter MaxDelay %v is below BaseDelay %v", opts.MaxDelay, opts.BaseDelay)
	}
	if opts.MaxWait == 0 {
		opts.MaxWait = 3 * opts.MaxDelay
	}
	if opts.MaxAddrs == 0 {
		opts.MaxAddrs = DefaultLimiterMaxAddrs
	}
	addrs, err := simplelru.NewLRU[netip.Prefix, *addrState](opts.MaxAddrs, nil)
	if err != nil {
		return nil, fmt.Errorf("auth: limiter: %w", err)
	}
	return &Limiter{opts: opts, addrs: addrs, now: time.Now, sleep: sleepCtx}, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// addrKey is the Limiter's key for ip: the address itself for IPv4, its /64
// for IPv6.
func addrKey(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	bits := ip.BitLen()
	if ip.Is6() {
		bits = ipv6PrefixLen
	}
	p, _ := ip.Prefix(bits)
	return p
}

// AddrIP returns the IP address of a client address, false for one without
// (a Unix socket), which the Limiter leaves alone.
func AddrIP(a net.Addr) (netip.Addr, bool) {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case nil:
		return netip.Addr{}, false
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}, false
		}
		return ap.Addr().Unmap(), true
	}
}

// current returns the live state of key, forgetting it when its failures
// are older than Window. The caller holds mu.
func (l *Limiter) current(key netip.Prefix, now time.Time) (*addrState, bool) {
	st, ok := l.addrs.Get(key)
	if !ok {
		return nil, false
	}
	if now.Sub(st.lastFailure) > l.opts.Window && !st.nextSlot.After(now) {
		l.addrs.Remove(key)
		return nil, false
	}
	return st, true
}

// delayFor is the delay an attempt waits with failures on record.
func (l *Limiter) delayFor(failures int) time.Duration {
	excess := failures - l.opts.Threshold
	if excess < 0 {
		return 0
	}
	d := l.opts.BaseDelay
	for range excess {
		if d >= l.opts.MaxDelay/2 {
			return l.opts.MaxDelay
		}
		d *= 2
	}
	return min(d, l.opts.MaxDelay)
}

// Delay is the delay the next attempt from ip would wait now, queueing
// included.
func (l *Limiter) Delay(ip netip.Addr) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	st, ok := l.current(addrKey(ip), now)
	if !ok {
		return 0
	}
	d := l.delayFor(st.failures)
	if d == 0 {
		return 0
	}
	return later(now, st.nextSlot).Add(d).Sub(now)
}

// Wait delays an attempt from ip as its failures require, and returns
// ctx's error if ctx ends first, or an *Error (53300) without waiting when
// the attempt would be queued longer than MaxWait or past ctx's deadline
// (the client's startup deadline: an attempt that cannot be answered in
// time must not take a slot in the address's queue, pushing back the
// attempts behind it, only to find its connection gone).
func (l *Limiter) Wait(ctx context.Context, ip netip.Addr) error {
	l.mu.Lock()
	now := l.now()
	key := addrKey(ip)
	st, ok := l.current(key, now)
	var (
		wait     time.Duration
		failures int
	)
	if ok {
		failures = st.failures
		if d := l.delayFor(st.failures); d > 0 {
			slot := later(now, st.nextSlot).Add(d)
			wait = slot.Sub(now)
			deadline, hasDeadline := ctx.Deadline()
			if wait > l.opts.MaxWait || (hasDeadline && slot.After(deadline)) {
				l.mu.Unlock()
				if l.opts.Log != nil {
					l.opts.Log.Warn("authentication attempt refused after repeated failures",
						"addr", key.String(), "failures", failures, "would_wait", wait)
				}
				return &Error{
					Code:    CodeTooManyConnections,
					Message: "too many failed authentication attempts from this address, try again later",
					Log:     fmt.Sprintf("limiter: %d recent failures, attempt would wait %v", failures, wait),
				}
			}
			st.nextSlot = slot
		}
	}
	l.mu.Unlock()
	if wait == 0 {
		return nil
	}
	if l.opts.Log != nil {
		l.opts.Log.Warn("authentication attempt delayed after repeated failures",
			"addr", key.String(), "failures", failures, "delay", wait)
	}
	return l.sleep(ctx, wait)
}

// Failed records a failed authentication from ip.
func (l *Limiter) Failed(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	key := addrKey(ip)
	st, ok := l.current(key, now)
	if !ok {
		st = &addrState{}
		l.addrs.Add(key, st)
	}
	st.failures++
	st.lastFailure = now
}

// Succeeded records a successful authentication from ip: the delay is
// lifted, and the address is left one failure short of Threshold.
func (l *Limiter) Succeeded(ip netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.current(addrKey(ip), l.now())
	if !ok {
		return
	}
	st.failures = min(st.failures, l.opts.Threshold-1)
	st.nextSlot = time.Time{}
}

// Wrap returns m with the Limiter in front: each attempt from an IP address
// waits as Wait says, a wrong password (28P01) is recorded with Failed and
// a success with Succeeded. Other outcomes (the client hung up, a protocol
// error, a refusal before any password) are not counted.
func (l *Limiter) Wrap(m Method) Method { return &limited{m: m, l: l} }

type limited struct {
	m Method
	l *Limiter
}

func (w *limited) Authenticate(ctx context.Context, c Conn, user string) error {
	ip, ok := AddrIP(c.RemoteAddr())
	if !ok {
		return w.m.Authenticate(ctx, c, user)
	}
	if err := w.l.Wait(ctx, ip); err != nil {
		return err
	}
	err := w.m.Authenticate(ctx, c, user)
	var ae *Error
	switch {
	case err == nil:
		w.l.Succeeded(ip)
	case errors.As(err, &ae) && ae.Code == CodeInvalidPassword:
		w.l.Failed(ip)
	}
	return err
}
