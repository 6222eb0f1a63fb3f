package router

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeGrants is a GrantSource held in memory that counts its lookups. When
// gate is set, each lookup signals entered and then waits for gate to be
// closed (or its context to be done), so tests can hold lookups in flight.
type fakeGrants struct {
	mu     sync.Mutex
	grants map[string]UserGrants
	fail   error // returned by the next lookup, then cleared
	calls  map[string]int
	panics bool

	gate    chan struct{}
	entered chan string
}

func newFakeGrants() *fakeGrants {
	return &fakeGrants{grants: make(map[string]UserGrants), calls: make(map[string]int)}
}

func (f *fakeGrants) LookupGrants(ctx context.Context, user string) (UserGrants, error) {
	f.mu.Lock()
	f.calls[user]++
	gate, entered, panics := f.gate, f.entered, f.panics
	f.mu.Unlock()
	if gate != nil {
		entered <- user
		select {
		case <-gate:
		case <-ctx.Done():
			return UserGrants{}, ctx.Err()
		}
	}
	if panics {
		panic("fake grants: boom")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail; err != nil {
		f.fail = nil
		return UserGrants{}, err
	}
	return f.grants[user], nil
}

func (f *fakeGrants) set(user string, g UserGrants) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[user] = g
}

func (f *fakeGrants) count(user string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[user]
}

// hold makes lookups block until the returned release is called.
func (f *fakeGrants) hold() (entered <-chan string, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = make(chan struct{})
	ch := make(chan string, 100)
	f.entered = ch
	gate := f.gate
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			close(gate)
			f.mu.Lock()
			f.gate, f.entered = nil, nil
			f.mu.Unlock()
		})
	}
}

func (g *Grants) waitersOn(user string) int { return g.users.waitersOn(user) }

// acme and globex are router_test.go's tenants.

// wantDenied fails unless err refuses user access to tenant.
func wantDenied(t *testing.T, err error, user, tenant string) {
	t.Helper()
	var denied *AccessDeniedError
	if !errors.As(err, &denied) {
		t.Fatalf("CheckAccess(%s, %s) = %v, want *AccessDeniedError", user, tenant, err)
	}
	if denied.User != user || denied.Tenant != tenant {
		t.Fatalf("AccessDeniedError = %+v, want user %q tenant %q", denied, user, tenant)
	}
}

func TestUserGrantsAllows(t *testing.T) {
	tests := []struct {
		g      UserGrants
		tenant string
		want   bool
	}{
		{UserGrants{}, "acme", false},
		{UserGrants{Tenants: []string{"acme"}}, "acme", true},
		{UserGrants{Tenants: []string{"acme", "globex", "initech"}}, "globex", true},
		{UserGrants{Tenants: []string{"acme", "globex", "initech"}}, "acm", false},
		{UserGrants{Tenants: []string{"acme", "globex", "initech"}}, "", false},
		{UserGrants{All: true}, "acme", true},
		{UserGrants{All: true, Tenants: []string{"globex"}}, "acme", true},
	}
	for _, tt := range tests {
		if got := tt.g.Allows(tt.tenant); got != tt.want {
			t.Errorf("%+v.Allows(%q) = %v, want %v", tt.g, tt.tenant, got, tt.want)
		}
	}
}

func TestGrantsCheckAccess(t *testing.T) {
	ctx := context.Background()
	src := newFakeGrants()
	src.set("alice", UserGrants{Tenants: []string{"acme"}})
	src.set("root", UserGrants{All: true})
	g := NewGrants(src, time.Hour, time.Hour)

	if err := g.CheckAccess(ctx, "alice", acme); err != nil {
		t.Fatalf("alice, granted acme: %v", err)
	}
	wantDenied(t, g.CheckAccess(ctx, "alice", globex), "alice", "globex")
	for _, tn := range []Tenant{acme, globex} {
		if err := g.CheckAccess(ctx, "root", tn); err != nil {
			t.Fatalf("root, granted every tenant, to %s: %v", tn.Name, err)
		}
	}
	wantDenied(t, g.CheckAccess(ctx, "mallory", acme), "mallory", "acme")
	// A user name is data, compared exactly.
	wantDenied(t, g.CheckAccess(ctx, "Alice", acme), "Alice", "acme")
}

func TestGrantsCaching(t *testing.T) {
	ctx := context.Background()
	src := newFakeGrants()
	src.set("alice", UserGrants{Tenants: []string{"acme"}})
	g := NewGrants(src, time.Hour, time.Hour)

	// A client connecting for every transaction: one lookup in all.
	for range 5 {
		if err := g.CheckAccess(ctx, "alice", acme); err != nil {
			t.Fatal(err)
		}
		wantDenied(t, g.CheckAccess(ctx, "alice", globex), "alice", "globex")
		wantDenied(t, g.CheckAccess(ctx, "bob", acme), "bob", "acme")
	}
	if n, m := src.count("alice"), src.count("bob"); n != 1 || m != 1 {
		t.Fatalf("lookups: alice %d, bob %d; want 1 each", n, m)
	}

	// A change is seen only once it is forgotten: that is what NOTIFY is
	// for, and the TTLs here are far longer than the test.
	src.set("alice", UserGrants{})
	src.set("bob", UserGrants{Tenants: []string{"acme"}})
	if err := g.CheckAccess(ctx, "alice", acme); err != nil {
		t.Fatalf("alice before Forget: %v (the cache should still say granted)", err)
	}
	g.Forget("alice")
	wantDenied(t, g.CheckAccess(ctx, "alice", acme), "alice", "acme")
	wantDenied(t, g.CheckAccess(ctx, "bob", acme), "bob", "acme")
	g.ForgetAll()
	if err := g.CheckAccess(ctx, "bob", acme); err != nil {
		t.Fatalf("bob after ForgetAll: %v", err)
	}
	if n, m := src.count("alice"), src.count("bob"); n != 2 || m != 2 {
		t.Fatalf("lookups after forgetting: alice %d, bob %d; want 2 each", n, m)
	}
}

func TestGrantsNoCache(t *testing.T) {
	ctx := context.Background()
	src := newFakeGrants()
	src.set("alice", UserGrants{Tenants: []string{"acme"}})
	g := NewGrants(src, 0, 0)
	for range 3 {
		if err := g.CheckAccess(ctx, "alice", acme); err != nil {
			t.Fatal(err)
		}
		wantDenied(t, g.CheckAccess(ctx, "bob", acme), "bob", "acme")
	}
	if n, m := src.count("alice"), src.count("bob"); n != 3 || m != 3 {
		t.Fatalf("lookups without caches: alice %d, bob %d; want 3 each", n, m)
	}
}

func TestGrantsMissExpires(t *testing.T) {
	ctx := context.Background()
	src := newFakeGrants()
	g := NewGrants(src, time.Hour, time.Millisecond)
	wantDenied(t, g.CheckAccess(ctx, "alice", acme), "alice", "acme")
	src.set("alice", UserGrants{Tenants: []string{"acme"}})
	// Without any Forget, the short-lived "no grants" entry runs out.
	waitFor(t, "alice's empty grants to expire", func() bool {
		return g.CheckAccess(ctx, "alice", acme) == nil
	})
}

func TestGrantsLookupErrorNotCached(t *testing.T) {
	ctx := context.Background()
	src := newFakeGrants()
	src.set("alice", UserGrants{Tenants: []string{"acme"}})
	g := NewGrants(src, time.Hour, time.Hour)
	boom := errors.New("registry down")
	src.fail = boom
	err := g.CheckAccess(ctx, "alice", acme)
	var denied *AccessDeniedError
	if !errors.Is(err, boom) || errors.As(err, &denied) {
		t.Fatalf("CheckAccess with the registry down = %v, want a wrapped lookup error, not a refusal", err)
	}
	if err := g.CheckAccess(ctx, "alice", acme); err != nil {
		t.Fatalf("after the registry is back: %v (the failure was cached)", err)
	}
}

func TestGrantsConcurrentChecksShareOne(t *testing.T) {
	ctx := context.Background()
	src := newFakeGrants()
	src.set("alice", UserGrants{Tenants: []string{"acme"}})
	g := NewGrants(src, time.Hour, time.Hour)
	entered, release := src.hold()
	defer release()

	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() { errs <- g.CheckAccess(ctx, "alice", acme) }()
	}
	receive(t, "the first lookup", entered)
	waitFor(t, "every check to join the lookup", func() bool { return g.waitersOn("alice") == n-1 })
	release()
	for range n {
		if err := receive(t, "a check to finish", errs); err != nil {
			t.Fatal(err)
		}
	}
	if c := src.count("alice"); c != 1 {
		t.Fatalf("%d concurrent checks made %d lookups, want 1", n, c)
	}
}

// TestGrantsForgetDuringLookup is the race a revoke can meet: a lookup
// reads the grants, the revoke commits and is notified (Forget), and only
// then does the lookup finish. Its answer may serve the check that asked,
// but caching it would let the revoked user in for a whole TTL.
func TestGrantsForgetDuringLookup(t *testing.T) {
	ctx := context.Background()
	src := newFakeGrants()
	src.set("alice", UserGrants{Tenants: []string{"acme"}})
	g := NewGrants(src, time.Hour, time.Hour)
	entered, release := src.hold()
	done := make(chan error, 1)
	go func() { done <- g.CheckAccess(ctx, "alice", acme) }()
	receive(t, "the lookup to start", entered)
	g.Forget("alice")
	release()
	if err := receive(t, "the check", done); err != nil {
		t.Fatalf("the check that raced the revoke: %v", err)
	}
	// No Forget after this change: only a fresh lookup can see it.
	src.set("alice", UserGrants{})
	wantDenied(t, g.CheckAccess(ctx, "alice", acme), "alice", "acme")
	if c := src.count("alice"); c != 2 {
		t.Fatalf("lookups = %d, want 2: the raced answer must not be cached", c)
	}
}

func TestGrantsLeaderCancelled(t *testing.T) {
	src := newFakeGrants()
	src.set("alice", UserGrants{Tenants: []string{"acme"}})
	g := NewGrants(src, time.Hour, time.Hour)
	entered, release := src.hold()
	defer release()

	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() { leader <- g.CheckAccess(leaderCtx, "alice", acme) }()
	receive(t, "the leader's lookup", entered)
	waiter := make(chan error, 1)
	go func() { waiter <- g.CheckAccess(context.Background(), "alice", acme) }()
	waitFor(t, "the waiter to join", func() bool { return g.waitersOn("alice") == 1 })
	cancelLeader()
	if err := receive(t, "the leader", leader); !errors.Is(err, context.Canceled) {
		t.Fatalf("leader = %v, want context.Canceled", err)
	}
	// The waiter still wants an answer: it asks again, and gets one.
	receive(t, "the waiter's own lookup", entered)
	release()
	if err := receive(t, "the waiter", waiter); err != nil {
		t.Fatalf("waiter after its leader gave up: %v", err)
	}
}

func TestGrantsLookupPanicWakesWaiters(t *testing.T) {
	src := newFakeGrants()
	src.panics = true
	g := NewGrants(src, time.Hour, time.Hour)
	entered, release := src.hold()
	defer release()
	leader := make(chan any, 1)
	go func() {
		defer func() { leader <- recover() }()
		_ = g.CheckAccess(context.Background(), "alice", acme)
	}()
	receive(t, "the leader's lookup", entered)
	waiter := make(chan error, 1)
	go func() { waiter <- g.CheckAccess(context.Background(), "alice", acme) }()
	waitFor(t, "the waiter to join", func() bool { return g.waitersOn("alice") == 1 })
	release()
	if p := receive(t, "the leader to panic", leader); p == nil {
		t.Fatal("the leader did not panic")
	}
	if err := receive(t, "the waiter", waiter); !errors.Is(err, errLookupPanicked) {
		t.Fatalf("waiter = %v, want errLookupPanicked", err)
	}
}

func TestGrantsChangedFor(t *testing.T) {
	tests := []struct {
		payload, user string
		ok            bool
	}{
		{"user:alice", "alice", true},
		{"user:", "", true},
		{"user:a:b", "a:b", true},
		{"acme", "", false},
		{"", "", false},
		{"users", "", false},
	}
	for _, tt := range tests {
		user, ok := GrantsChangedFor(tt.payload)
		if user != tt.user || ok != tt.ok {
			t.Errorf("GrantsChangedFor(%q) = %q, %v; want %q, %v", tt.payload, user, ok, tt.user, tt.ok)
		}
	}
	// No tenant name or alias can be taken for a user payload.
	for _, name := range []string{"acme", "acme.example.com"} {
		if _, ok := GrantsChangedFor(name); ok {
			t.Errorf("GrantsChangedFor(%q) took a name for a user", name)
		}
		if ValidateAliasName(UserNotifyPrefix+name) == nil || ValidateTenantName(UserNotifyPrefix+name) == nil {
			t.Errorf("%q is a valid tenant name or alias; it would clash with user payloads", UserNotifyPrefix+name)
		}
	}
}
