package proxy

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

func TestBackendDSN(t *testing.T) {
	const def = "postgres://pool@10.0.0.1:5432/app"
	for _, tc := range []struct{ in, want string }{
		// A DSN without a user is dialled as --backend's user.
		{"postgres://10.0.0.2:5432/app", "postgres://pool@10.0.0.2:5432/app"},
		{"host=10.0.0.2 dbname=app", "host=10.0.0.2 dbname=app user='pool'"},
		// One that names its own keeps it.
		{"postgres://other@10.0.0.2/app", "postgres://other@10.0.0.2/app"},
		{"postgres://10.0.0.2/app?user=other", "postgres://10.0.0.2/app?user=other"},
		{"host=10.0.0.2 user = other", "host=10.0.0.2 user = other"},
	} {
		got, err := backendDSN(tc.in, def)
		if err != nil || got != tc.want {
			t.Errorf("backendDSN(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// fakePlacements answers LookupTenant with the backend it holds now.
type fakePlacements struct {
	mu      sync.Mutex
	backend string
	lookups int
}

func (f *fakePlacements) set(b string) { f.mu.Lock(); f.backend = b; f.mu.Unlock() }

func (f *fakePlacements) LookupTenant(_ context.Context, name string) (router.Tenant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	return router.Tenant{Name: name, Schema: name, Active: true, Backend: f.backend}, nil
}

// A placement change is seen by the first checkout after its notification
// reached the watch, however late the background read is: the watch marks
// the placement stale at once.
func TestPlacementFollowsNotify(t *testing.T) {
	srv := NewServer(config.Default(), slog.New(slog.DiscardHandler), nil, nil, nil)
	src := &fakePlacements{backend: router.DefaultBackend}
	srv.placements = src
	te := srv.tenants.entry("acme")
	s := &session{srv: srv, te: te}
	s.tr.tenant = router.Tenant{Name: "acme", Schema: "acme", Active: true, Backend: router.DefaultBackend}
	if b := s.backendOf(); b != router.DefaultBackend {
		t.Fatalf("backendOf before any change = %q", b)
	}
	for _, want := range []string{"eu2", router.DefaultBackend, "eu3"} {
		src.set(want)
		srv.placementChanged(context.Background(), "acme")
		if b := s.backendOf(); b != want {
			t.Fatalf("backendOf after the change to %s = %q", want, b)
		}
	}
	// Payloads that name no tenant of this server, or other kinds, change
	// nothing.
	src.set("eu9")
	for _, p := range []string{"globex", "user:alice", "kick:acme", router.BackendNotifyPrefix + "eu3"} {
		srv.placementChanged(context.Background(), p)
	}
	if b := s.backendOf(); b != "eu3" {
		t.Fatalf("backendOf after unrelated payloads = %q", b)
	}
	// "" (the watch reconnected) reads every placement again.
	srv.placementChanged(context.Background(), "")
	if b := s.backendOf(); b != "eu9" {
		t.Fatalf("backendOf after a reconnect = %q", b)
	}
}
