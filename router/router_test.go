package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/config"
)

// fakeRegistry is a Registry held in memory that counts its lookups. When
// gate is set, each lookup signals entered and then waits for gate to be
// closed (or its context to be done), so tests can hold lookups in flight.
type fakeRegistry struct {
	mu      sync.Mutex
	tenants map[string]Tenant
	fail    error // returned by the next lookup, then cleared
	outage  error // returned by every lookup while set
	calls   map[string]int

	gate    chan struct{}
	entered chan string
}

func newFakeRegistry(tenants ...Tenant) *fakeRegistry {
	f := &fakeRegistry{tenants: make(map[string]Tenant), calls: make(map[string]int)}
	for _, t := range tenants {
		f.tenants[t.Name] = t
	}
	return f
}

func (f *fakeRegistry) LookupTenant(ctx context.Context, name string) (Tenant, error) {
	f.mu.Lock()
	f.calls[name]++
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if gate != nil {
		entered <- name
		select {
		case <-gate:
		case <-ctx.Done():
			return Tenant{}, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail; err != nil {
		f.fail = nil
		return Tenant{}, err
	}
	if f.outage != nil {
		return Tenant{}, f.outage
	}
	t, ok := f.tenants[name]
	if !ok {
		return Tenant{}, fmt.Errorf("fake: %q: %w", name, ErrNotFound)
	}
	return t, nil
}

func (f *fakeRegistry) set(t Tenant) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tenants[t.Name] = t
}

func (f *fakeRegistry) failNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// setOutage makes every lookup fail with err until it is called with nil.
func (f *fakeRegistry) setOutage(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outage = err
}

func (f *fakeRegistry) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

// hold makes lookups block until the returned release is called.
func (f *fakeRegistry) hold() (entered <-chan string, release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate = make(chan struct{})
	f.entered = make(chan string, 100)
	gate := f.gate
	var once sync.Once
	return f.entered, func() { once.Do(func() { close(gate) }) }
}

var (
	acme   = Tenant{Name: "acme", Schema: "acme", Active: true}
	globex = Tenant{Name: "globex", Schema: "globex_s", Active: true}
	initec = Tenant{Name: "initech", Schema: "initech", Active: false}
)

// Long TTLs for tests that must not see an entry expire. expirable runs a
// cleanup ticker at TTL/100 for the life of the process, so short TTLs are
// kept to the few tests about expiry.
const (
	longTTL = time.Hour
	noCache = 0
)

func TestResolveTenant(t *testing.T) {
	tests := []struct {
		name    string
		from    config.TenantSource
		startup Startup
		want    Tenant
		wantErr error // compared by type and message
	}{
		{"database names the tenant", config.TenantFromDatabase, Startup{Database: "acme", User: "globex"}, acme, nil},
		{"empty source means database", "", Startup{Database: "acme", User: "globex"}, acme, nil},
		{"user names the tenant", config.TenantFromUser, Startup{Database: "acme", User: "globex"}, globex, nil},
		{"unknown database", config.TenantFromDatabase, Startup{Database: "nope", User: "acme"}, Tenant{}, &UnknownTenantError{Name: "nope"}},
		{"unknown user", config.TenantFromUser, Startup{Database: "acme", User: "nope"}, Tenant{}, &UnknownTenantError{Name: "nope"}},
		{"empty database", config.TenantFromDatabase, Startup{User: "acme"}, Tenant{}, &UnknownTenantError{Name: ""}},
		{"empty user", config.TenantFromUser, Startup{Database: "acme"}, Tenant{}, &UnknownTenantError{Name: ""}},
		{"disabled", config.TenantFromDatabase, Startup{Database: "initech"}, Tenant{}, &DisabledTenantError{Name: "initech"}},
		{"name is not normalised", config.TenantFromDatabase, Startup{Database: "ACME"}, Tenant{}, &UnknownTenantError{Name: "ACME"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry(acme, globex, initec)
			r := New(reg, tt.from, longTTL, longTTL)
			got, err := r.ResolveTenant(context.Background(), tt.startup)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ResolveTenant(%+v) error: %v", tt.startup, err)
				}
			} else if err == nil || fmt.Sprintf("%T %v", err, err) != fmt.Sprintf("%T %v", tt.wantErr, tt.wantErr) {
				t.Fatalf("ResolveTenant(%+v) error = %T %v, want %T %v", tt.startup, err, err, tt.wantErr, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ResolveTenant(%+v) = %+v, want %+v", tt.startup, got, tt.want)
			}
			if n := reg.count(""); n != 0 {
				t.Fatalf("an empty name reached the registry %d times", n)
			}
		})
	}
}

func TestResolveTenantUnknownSource(t *testing.T) {
	r := New(newFakeRegistry(acme), "host", longTTL, longTTL)
	_, err := r.ResolveTenant(context.Background(), Startup{Database: "acme"})
	if err == nil {
		t.Fatal("ResolveTenant with tenant source \"host\" succeeded, want an error")
	}
}

// TestCaching checks how many registry lookups a sequence of resolves of
// one name costs.
func TestCaching(t *testing.T) {
	tests := []struct {
		name            string
		tenant          string
		hitTTL, missTTL time.Duration
		resolves        int
		wantCalls       int
	}{
		{"hits are cached", "acme", longTTL, longTTL, 5, 1},
		{"hits not cached with zero hit TTL", "acme", noCache, longTTL, 5, 5},
		{"disabled tenants are cached as hits", "initech", longTTL, noCache, 5, 1},
		{"misses are cached", "nope", longTTL, longTTL, 5, 1},
		{"misses not cached with zero miss TTL", "nope", longTTL, noCache, 5, 5},
		{"negative TTL means no cache", "nope", longTTL, -time.Second, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry(acme, initec)
			r := New(reg, config.TenantFromDatabase, tt.hitTTL, tt.missTTL)
			var first error
			for i := range tt.resolves {
				_, err := r.ResolveTenant(context.Background(), Startup{Database: tt.tenant})
				if i == 0 {
					first = err
				} else if fmt.Sprint(err) != fmt.Sprint(first) {
					t.Fatalf("resolve %d: error %v, first resolve gave %v", i, err, first)
				}
			}
			if got := reg.count(tt.tenant); got != tt.wantCalls {
				t.Fatalf("%d resolves cost %d registry lookups, want %d", tt.resolves, got, tt.wantCalls)
			}
		})
	}
}

func TestMissExpires(t *testing.T) {
	reg := newFakeRegistry()
	r := New(reg, config.TenantFromDatabase, longTTL, 20*time.Millisecond)
	ctx := context.Background()
	var unknown *UnknownTenantError
	if _, err := r.ResolveTenant(ctx, Startup{Database: "acme"}); !errors.As(err, &unknown) {
		t.Fatalf("before creation: got %v, want UnknownTenantError", err)
	}
	reg.set(acme)
	// The miss is cached for a while, then expires without a Forget.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := r.ResolveTenant(ctx, Startup{Database: "acme"})
		if err == nil {
			if got != acme {
				t.Fatalf("got %+v, want %+v", got, acme)
			}
			break
		}
		if !errors.As(err, &unknown) {
			t.Fatalf("got %v, want UnknownTenantError while the miss is cached", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("cached miss never expired")
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for an event
	}
}

func TestRegistryErrorNotCached(t *testing.T) {
	reg := newFakeRegistry(acme)
	r := New(reg, config.TenantFromDatabase, longTTL, longTTL)
	ctx := context.Background()
	outage := errors.New("connection refused")
	reg.failNext(outage)

	_, err := r.ResolveTenant(ctx, Startup{Database: "acme"})
	if !errors.Is(err, outage) {
		t.Fatalf("during outage: got %v, want it to wrap %v", err, outage)
	}
	var unknown *UnknownTenantError
	if errors.As(err, &unknown) {
		t.Fatalf("a registry failure was reported as an unknown tenant: %v", err)
	}
	got, err := r.ResolveTenant(ctx, Startup{Database: "acme"})
	if err != nil || got != acme {
		t.Fatalf("after outage: got %+v, %v; want %+v", got, err, acme)
	}
	if n := reg.count("acme"); n != 2 {
		t.Fatalf("registry lookups = %d, want 2 (the failure must not be cached)", n)
	}
}

func TestForget(t *testing.T) {
	tests := []struct {
		name   string
		forget func(r *Router)
		// wantAcme and wantGlobex are the registry lookups of each name
		// after: resolve both, change both, forget, resolve both.
		wantAcme, wantGlobex int
	}{
		{"nothing forgotten", func(r *Router) {}, 1, 1},
		{"forget one", func(r *Router) { r.Forget("acme") }, 2, 1},
		{"forget a name not cached", func(r *Router) { r.Forget("nope") }, 1, 1},
		{"forget all", func(r *Router) { r.ForgetAll() }, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// acme starts as a cached miss, globex as a cached hit.
			reg := newFakeRegistry(globex)
			r := New(reg, config.TenantFromDatabase, longTTL, longTTL)
			ctx := context.Background()
			resolve := func(name string) (Tenant, error) { return r.ResolveTenant(ctx, Startup{Database: name}) }
			if _, err := resolve("acme"); err == nil {
				t.Fatal("acme found before it exists")
			}
			if _, err := resolve("globex"); err != nil {
				t.Fatal(err)
			}
			reg.set(acme)
			disabled := globex
			disabled.Active = false
			reg.set(disabled)

			tt.forget(r)

			gotAcme, errAcme := resolve("acme")
			_, errGlobex := resolve("globex")
			if n := reg.count("acme"); n != tt.wantAcme {
				t.Fatalf("acme lookups = %d, want %d", n, tt.wantAcme)
			}
			if n := reg.count("globex"); n != tt.wantGlobex {
				t.Fatalf("globex lookups = %d, want %d", n, tt.wantGlobex)
			}
			// What the router answers follows from whether it asked again.
			if tt.wantAcme == 2 && (errAcme != nil || gotAcme != acme) {
				t.Fatalf("acme after forget: %+v, %v", gotAcme, errAcme)
			}
			var disabledErr *DisabledTenantError
			if tt.wantGlobex == 2 && !errors.As(errGlobex, &disabledErr) {
				t.Fatalf("globex after forget: %v, want DisabledTenantError", errGlobex)
			}
			if tt.wantGlobex == 1 && errGlobex != nil {
				t.Fatalf("globex from cache: %v", errGlobex)
			}
		})
	}
}

// waiters returns how many callers are waiting on the lookup of name.
func waiters(r *Router, name string) int { return r.tenants.waitersOn(name) }

// receive returns the next value from ch, failing the test if none comes
// in time, so that a regression fails rather than hangs.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestConcurrentLookupsShareOne(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tenant string
	}{
		{"found", "acme"},
		// Misses are not cached here, so only the shared flight keeps
		// the count at one.
		{"unknown", "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry(acme)
			r := New(reg, config.TenantFromDatabase, longTTL, noCache)
			entered, release := reg.hold()
			defer release()

			const clients = 50
			type result struct {
				t   Tenant
				err error
			}
			results := make(chan result, clients)
			for range clients {
				go func() {
					got, err := r.ResolveTenant(context.Background(), Startup{Database: tc.tenant})
					results <- result{got, err}
				}()
			}
			receive(t, "a registry lookup", entered)
			waitFor(t, "every client to join the lookup", func() bool { return waiters(r, tc.tenant) == clients-1 })
			release()
			for range clients {
				res := receive(t, "a client", results)
				if tc.tenant == "acme" && (res.err != nil || res.t != acme) {
					t.Fatalf("got %+v, %v; want %+v", res.t, res.err, acme)
				}
				var unknown *UnknownTenantError
				if tc.tenant == "nope" && !errors.As(res.err, &unknown) {
					t.Fatalf("got %v, want UnknownTenantError", res.err)
				}
			}
			if n := reg.count(tc.tenant); n != 1 {
				t.Fatalf("%d concurrent lookups cost %d registry lookups, want 1", clients, n)
			}
		})
	}
}

// TestLeaderCancelled checks that when the caller whose lookup others are
// sharing gives up, the others still get an answer.
func TestLeaderCancelled(t *testing.T) {
	reg := newFakeRegistry(acme)
	r := New(reg, config.TenantFromDatabase, longTTL, longTTL)
	entered, release := reg.hold()
	defer release()

	leaderCtx, cancelLeader := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := r.ResolveTenant(leaderCtx, Startup{Database: "acme"})
		leaderErr <- err
	}()
	receive(t, "a registry lookup", entered)
	followerDone := make(chan error, 1)
	go func() {
		got, err := r.ResolveTenant(context.Background(), Startup{Database: "acme"})
		if err == nil && got != acme {
			err = fmt.Errorf("got %+v, want %+v", got, acme)
		}
		followerDone <- err
	}()
	waitFor(t, "the follower to join", func() bool { return waiters(r, "acme") == 1 })
	cancelLeader()
	if err := receive(t, "the leader", leaderErr); !errors.Is(err, context.Canceled) {
		t.Fatalf("leader: got %v, want context.Canceled", err)
	}
	// The follower retries as the new leader.
	receive(t, "a registry lookup", entered)
	release()
	if err := receive(t, "the follower", followerDone); err != nil {
		t.Fatalf("follower: %v", err)
	}
}

func TestWaiterCancelled(t *testing.T) {
	reg := newFakeRegistry(acme)
	r := New(reg, config.TenantFromDatabase, longTTL, longTTL)
	entered, release := reg.hold()
	defer release()
	go func() { _, _ = r.ResolveTenant(context.Background(), Startup{Database: "acme"}) }()
	receive(t, "a registry lookup", entered)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := r.ResolveTenant(ctx, Startup{Database: "acme"})
		done <- err
	}()
	waitFor(t, "the waiter to join", func() bool { return waiters(r, "acme") == 1 })
	cancel()
	if err := receive(t, "the waiter", done); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// TestForgetDuringLookup checks that a lookup that read the registry before
// a change, and finished after the Forget that the change caused, does not
// leave its stale answer in the cache.
func TestForgetDuringLookup(t *testing.T) {
	for _, tc := range []struct {
		name   string
		forget func(r *Router)
	}{
		{"Forget", func(r *Router) { r.Forget("acme") }},
		{"ForgetAll", func(r *Router) { r.ForgetAll() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry()
			r := New(reg, config.TenantFromDatabase, longTTL, longTTL)
			entered, release := reg.hold()
			stale := make(chan error, 1)
			go func() {
				_, err := r.ResolveTenant(context.Background(), Startup{Database: "acme"})
				stale <- err
			}()
			receive(t, "a registry lookup", entered)
			// The lookup is out and will answer "not found": as if it read
			// the registry just before acme was created. The creation's
			// notification arrives now, before the lookup returns.
			tc.forget(r)
			// Later lookups must not block.
			reg.mu.Lock()
			reg.gate = nil
			reg.mu.Unlock()
			release()
			var unknown *UnknownTenantError
			if err := receive(t, "the stale lookup", stale); !errors.As(err, &unknown) {
				t.Fatalf("stale lookup: got %v, want UnknownTenantError", err)
			}
			reg.set(acme)
			got, err := r.ResolveTenant(context.Background(), Startup{Database: "acme"})
			if err != nil || got != acme {
				t.Fatalf("after forget: got %+v, %v; want %+v (a stale miss was cached)", got, err, acme)
			}
		})
	}
}

// TestForgetDetachesLookup checks that a caller arriving after a Forget
// does not join a lookup that started before it.
func TestForgetDetachesLookup(t *testing.T) {
	reg := newFakeRegistry()
	r := New(reg, config.TenantFromDatabase, longTTL, longTTL)
	entered, release := reg.hold()
	defer release()
	go func() { _, _ = r.ResolveTenant(context.Background(), Startup{Database: "acme"}) }()
	receive(t, "a registry lookup", entered)
	r.Forget("acme")
	go func() { _, _ = r.ResolveTenant(context.Background(), Startup{Database: "acme"}) }()
	receive(t, "a new lookup (a caller after Forget must not join the old one)", entered)
	if n := reg.count("acme"); n != 2 {
		t.Fatalf("registry lookups = %d, want 2", n)
	}
}

type panickyRegistry struct{ entered, proceed chan struct{} }

func (p panickyRegistry) LookupTenant(context.Context, string) (Tenant, error) {
	close(p.entered)
	<-p.proceed
	panic("registry bug")
}

func TestLookupPanicWakesWaiters(t *testing.T) {
	reg := panickyRegistry{entered: make(chan struct{}), proceed: make(chan struct{})}
	r := New(reg, config.TenantFromDatabase, longTTL, longTTL)
	leaderPanicked := make(chan any, 1)
	go func() {
		defer func() { leaderPanicked <- recover() }()
		_, _ = r.ResolveTenant(context.Background(), Startup{Database: "acme"})
	}()
	receive(t, "the lookup", reg.entered)
	waiter := make(chan error, 1)
	go func() {
		_, err := r.ResolveTenant(context.Background(), Startup{Database: "acme"})
		waiter <- err
	}()
	waitFor(t, "the waiter to join", func() bool { return waiters(r, "acme") == 1 })
	close(reg.proceed)
	if p := receive(t, "the leader", leaderPanicked); p == nil {
		t.Fatal("the leader did not see the registry's panic")
	}
	if err := receive(t, "the waiter", waiter); !errors.Is(err, errLookupPanicked) {
		t.Fatalf("waiter: got %v, want errLookupPanicked", err)
	}
}

// TestResolveTenantClaims: every value that names a tenant (the primary
// one TenantFrom selects, a TLS server name under the SNI suffix, the
// pgtenant.tenant option) is resolved, and all must come to one tenant.
func TestResolveTenantClaims(t *testing.T) {
	const suffix = ".db.example.com"
	sni := config.TenantFromSNI
	db := config.TenantFromDatabase
	conflict := func(first, firstTenant, second, secondTenant string) error {
		return &ConflictingClaimsError{First: first, FirstTenant: firstTenant, Second: second, SecondTenant: secondTenant}
	}
	tests := []struct {
		name    string
		from    config.TenantSource
		suffix  string
		startup Startup
		want    Tenant
		wantErr error // compared by type and message
	}{
		{"sni names the tenant", sni, suffix, Startup{ServerName: "acme.db.example.com"}, acme, nil},
		{"sni is case-insensitive", sni, suffix, Startup{ServerName: "ACME.DB.Example.COM"}, acme, nil},
		{"sni suffix is case-insensitive", sni, ".DB.EXAMPLE.com", Startup{ServerName: "acme.db.example.com"}, acme, nil},
		{"sni names an alias", sni, suffix, Startup{ServerName: "acmecorp.db.example.com"}, acme, nil},
		{"options when there is no server name", sni, suffix, Startup{OptionsTenant: "acme"}, acme, nil},
		{"options when the server name is not under the suffix", sni, suffix,
			Startup{ServerName: "proxy.example.org", OptionsTenant: "globex"}, globex, nil},
		{"sni and options agree", sni, suffix, Startup{ServerName: "acme.db.example.com", OptionsTenant: "acme"}, acme, nil},
		{"sni and an alias in options agree", sni, suffix,
			Startup{ServerName: "acme.db.example.com", OptionsTenant: "acmecorp"}, acme, nil},
		{"sni and options disagree", sni, suffix, Startup{ServerName: "acme.db.example.com", OptionsTenant: "globex"}, Tenant{},
			conflict(`TLS server name "acme.db.example.com"`, "acme", `startup option pgtenant.tenant "globex"`, "globex")},
		{"database is not a claim under tenant-from sni", sni, suffix,
			Startup{ServerName: "acme.db.example.com", Database: "globex", User: "globex"}, acme, nil},
		{"no claim at all", sni, suffix, Startup{Database: "acme"}, Tenant{}, &NoTenantError{SNISuffix: suffix}},
		{"the suffix itself is no claim", sni, suffix, Startup{ServerName: "db.example.com"}, Tenant{},
			&NoTenantError{ServerName: "db.example.com", SNISuffix: suffix}},
		{"a deeper name is no claim", sni, suffix, Startup{ServerName: "x.acme.db.example.com"}, Tenant{},
			&NoTenantError{ServerName: "x.acme.db.example.com", SNISuffix: suffix}},
		{"a look-alike domain is no claim", sni, suffix, Startup{ServerName: "acme.evildb.example.com"}, Tenant{},
			&NoTenantError{ServerName: "acme.evildb.example.com", SNISuffix: suffix}},
		{"unknown sni tenant", sni, suffix, Startup{ServerName: "nope.db.example.com"}, Tenant{}, &UnknownTenantError{Name: "nope"}},
		{"unknown options tenant beside a good sni", sni, suffix,
			Startup{ServerName: "acme.db.example.com", OptionsTenant: "nope"}, Tenant{}, &UnknownTenantError{Name: "nope"}},
		{"disabled sni tenant", sni, suffix, Startup{ServerName: "initech.db.example.com"}, Tenant{}, &DisabledTenantError{Name: "initech"}},

		{"database and sni agree", db, suffix, Startup{Database: "acme", ServerName: "acme.db.example.com"}, acme, nil},
		{"database alias and sni agree", db, suffix, Startup{Database: "acmecorp", ServerName: "acme.db.example.com"}, acme, nil},
		{"database and sni disagree", db, suffix, Startup{Database: "acme", ServerName: "globex.db.example.com"}, Tenant{},
			conflict(`database "acme"`, "acme", `TLS server name "globex.db.example.com"`, "globex")},
		{"database and options disagree", db, "", Startup{Database: "acme", OptionsTenant: "globex"}, Tenant{},
			conflict(`database "acme"`, "acme", `startup option pgtenant.tenant "globex"`, "globex")},
		{"server name ignored without a suffix", db, "", Startup{Database: "acme", ServerName: "globex.db.example.com"}, acme, nil},
		{"server name not under the suffix is no claim", db, suffix, Startup{Database: "acme", ServerName: "globex.example.org"}, acme, nil},
		{"unknown database beside sni", db, suffix, Startup{Database: "nope", ServerName: "acme.db.example.com"}, Tenant{},
			&UnknownTenantError{Name: "nope"}},
		{"user and options agree", config.TenantFromUser, "", Startup{User: "globex", Database: "acme", OptionsTenant: "globex"}, globex, nil},
		{"user and sni disagree", config.TenantFromUser, suffix, Startup{User: "globex", ServerName: "acme.db.example.com"}, Tenant{},
			conflict(`user "globex"`, "globex", `TLS server name "acme.db.example.com"`, "acme")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry(acme, globex, initec)
			reg.tenants["acmecorp"] = acme // an alias: the registry answers with the tenant's own name
			r := New(reg, tt.from, longTTL, longTTL, WithSNISuffix(tt.suffix))
			got, err := r.ResolveTenant(context.Background(), tt.startup)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("ResolveTenant(%+v) error: %v", tt.startup, err)
				}
			} else if err == nil || fmt.Sprintf("%T %v", err, err) != fmt.Sprintf("%T %v", tt.wantErr, tt.wantErr) {
				t.Fatalf("ResolveTenant(%+v) error = %T %v, want %T %v", tt.startup, err, err, tt.wantErr, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("ResolveTenant(%+v) = %+v, want %+v", tt.startup, got, tt.want)
			}
			if n := reg.count(""); n != 0 {
				t.Fatalf("an empty name reached the registry %d times", n)
			}
		})
	}
}

// TestConflictingClaimsErrorNamesBoth: the refusal tells the client both
// values and what each resolved to, so it can see which one to fix.
func TestConflictingClaimsErrorNamesBoth(t *testing.T) {
	r := New(newFakeRegistry(acme, globex), config.TenantFromDatabase, longTTL, longTTL, WithSNISuffix(".db.example.com"))
	_, err := r.ResolveTenant(context.Background(), Startup{Database: "acme", ServerName: "globex.db.example.com"})
	var ce *ConflictingClaimsError
	if !errors.As(err, &ce) {
		t.Fatalf("error = %v, want *ConflictingClaimsError", err)
	}
	for _, want := range []string{`database "acme"`, `"globex.db.example.com"`, `tenant "acme"`, `tenant "globex"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	var nt *NoTenantError
	_, err = New(newFakeRegistry(acme), config.TenantFromSNI, longTTL, longTTL, WithSNISuffix(".db.example.com")).
		ResolveTenant(context.Background(), Startup{})
	if !errors.As(err, &nt) || !strings.Contains(nt.Hint(), "pgtenant.tenant=") || !strings.Contains(nt.Hint(), ".db.example.com") {
		t.Fatalf("no-tenant error = %v, want a *NoTenantError whose hint names both ways", err)
	}
}

// TestStaleAnswerServedWhileRegistryFails: while the registry cannot answer,
// a tenant the router found before is still found, even when its entry has
// expired (here: a hit TTL of zero) or was dropped by ForgetAll (a watcher
// that reconnected); a name it never found, or one forgotten because it
// changed, gets the registry's error.
func TestStaleAnswerServedWhileRegistryFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hitTTL time.Duration
		forget func(r *Router)
		stale  bool
	}{
		{"expired entry", noCache, func(*Router) {}, true},
		{"after forget all", longTTL, func(r *Router) { r.ForgetAll() }, true},
		{"after forget of the name", longTTL, func(r *Router) { r.Forget("acme") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry(acme)
			r := New(reg, config.TenantFromDatabase, tc.hitTTL, longTTL)
			ctx := context.Background()
			if got, err := r.ResolveTenant(ctx, Startup{Database: "acme"}); err != nil || got != acme {
				t.Fatalf("before the outage: %+v, %v", got, err)
			}
			tc.forget(r)
			outage := errors.New("registry lookup: FATAL: terminating connection due to administrator command (SQLSTATE 57P01)")
			reg.setOutage(outage)
			for i := 0; i < 3; i++ {
				got, err := r.ResolveTenant(ctx, Startup{Database: "acme"})
				if tc.stale && (err != nil || got != acme) {
					t.Fatalf("during the outage: %+v, %v; want the last answer %+v", got, err, acme)
				}
				if !tc.stale && !errors.Is(err, outage) {
					t.Fatalf("during the outage: %+v, %v; want the registry's error", got, err)
				}
			}
			if n := reg.count("acme"); n < 2 {
				t.Fatalf("registry lookups = %d: the stale answer was not asked for first", n)
			}
			if _, err := r.ResolveTenant(ctx, Startup{Database: "globex"}); !errors.Is(err, outage) {
				t.Fatalf("a name never found, during the outage: %v, want the registry's error", err)
			}

			// The registry answers again: its answer wins over the stale one.
			reg.setOutage(nil)
			disabled := acme
			disabled.Active = false
			reg.set(disabled)
			r.Forget("acme")
			var disabledErr *DisabledTenantError
			if _, err := r.ResolveTenant(ctx, Startup{Database: "acme"}); !errors.As(err, &disabledErr) {
				t.Fatalf("after the outage: %v, want DisabledTenantError", err)
			}
		})
	}
}
