package router

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestCheckBackendDSN(t *testing.T) {
	for _, dsn := range []string{
		"postgres://app@10.0.0.2:5432/app",
		"postgresql://10.0.0.2/app?sslmode=require",
		"host=10.0.0.2 port=5432 dbname=app user=app",
		"host = 10.0.0.2 dbname='my app' user=app",
		`host=h application_name='it\'s password=x'`,
	} {
		if err := CheckBackendDSN(dsn); err != nil {
			t.Errorf("CheckBackendDSN(%q) = %v, want nil", dsn, err)
		}
	}
	for _, dsn := range []string{
		"postgres://app:hunter2@10.0.0.2/app",
		"postgres://app:@10.0.0.2/app",
		"postgres://app@10.0.0.2/app?password=hunter2",
		"host=10.0.0.2 password=hunter2",
		"host=10.0.0.2 password = 'a b'",
	} {
		err := CheckBackendDSN(dsn)
		if err == nil || !strings.Contains(err.Error(), "holds a password") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("CheckBackendDSN(%q) = %v, want a refusal of the password that does not repeat it", dsn, err)
		}
	}
	for _, dsn := range []string{"", "   ", "host", "host=h user='x", "postgres://h:notaport/db"} {
		if err := CheckBackendDSN(dsn); err == nil {
			t.Errorf("CheckBackendDSN(%q) = nil, want an error", dsn)
		}
	}
}

func TestBackendsAndPlacement(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()

	// Before the registry exists there is the default backend alone.
	if bs, err := ListBackends(ctx, db); err != nil || len(bs) != 1 || bs[0].Name != DefaultBackend {
		t.Fatalf("ListBackends before the registry = %+v, %v", bs, err)
	}
	if b, ok, err := GetBackend(ctx, db, DefaultBackend); err != nil || !ok || b.DSN != "" {
		t.Fatalf("GetBackend(default) before the registry = %+v, %v, %v", b, ok, err)
	}

	// The schema of a tenant on another backend lives there, not on the
	// registry's server: a second database of the test cluster stands in
	// for the second server.
	otherDSN := newDatabase(t)
	if err := AddBackend(ctx, db, "eu2", otherDSN); err != nil {
		t.Fatal(err)
	}
	if err := AddBackend(ctx, db, "eu2", otherDSN); err != nil {
		t.Fatalf("adding a backend again: %v", err)
	}
	if err := AddBackend(ctx, db, "eu2", otherDSN+" application_name=x"); err == nil || !strings.Contains(err.Error(), "remove it first") {
		t.Fatalf("AddBackend with another DSN = %v, want a refusal", err)
	}
	if err := AddBackend(ctx, db, DefaultBackend, otherDSN); err == nil {
		t.Fatal("AddBackend(default) succeeded")
	}
	if err := AddBackend(ctx, db, "eu3", "postgres://u:pw@h/db"); err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("AddBackend with a password = %v", err)
	}
	if err := AddBackend(ctx, db, "Bad", otherDSN); err == nil {
		t.Fatal("AddBackend with a bad name succeeded")
	}
	bs, err := ListBackends(ctx, db)
	if err != nil || len(bs) != 2 || bs[0].Name != DefaultBackend || bs[1].Name != "eu2" || bs[1].DSN != otherDSN {
		t.Fatalf("ListBackends = %+v, %v", bs, err)
	}

	target, err := ConnectBackend(ctx, db, "eu2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = target.Close(context.Background()) })
	if _, err := ConnectBackend(ctx, db, "nope"); !errors.As(err, new(*UnknownBackendError)) {
		t.Fatalf("ConnectBackend(nope) = %v", err)
	}

	tn, created, err := CreateTenant(ctx, db, "acme", "", OnBackend("eu2", target))
	if err != nil || !created || tn.Backend != "eu2" {
		t.Fatalf("CreateTenant on eu2 = %+v, %v, %v", tn, created, err)
	}
	if _, _, err := CreateTenant(ctx, db, "acme", "", OnBackend("eu2", target)); err != nil {
		t.Fatalf("CreateTenant again: %v", err)
	}
	if _, _, err := CreateTenant(ctx, db, "acme", ""); err == nil || !strings.Contains(err.Error(), `on backend "eu2"`) {
		t.Fatalf("CreateTenant on default of a tenant on eu2 = %v", err)
	}
	if _, _, err := CreateTenant(ctx, db, "initech", "", OnBackend("nope", target)); !errors.As(err, new(*UnknownBackendError)) {
		t.Fatalf("CreateTenant on an unknown backend = %v", err)
	}
	mustCreate(t, db, "globex")
	schemaOn := func(db DB, schema string) bool {
		var ok bool
		if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, schema).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !schemaOn(target, "acme") || schemaOn(db, "acme") || !schemaOn(db, "globex") || schemaOn(target, "globex") {
		t.Fatal("schemas not where their tenants are placed")
	}

	got, err := reg.LookupTenant(ctx, "acme")
	if err != nil || got.Backend != "eu2" {
		t.Fatalf("LookupTenant(acme) = %+v, %v", got, err)
	}
	ts, err := ListTenants(ctx, db)
	if err != nil || len(ts) != 2 || ts[0].Backend != "eu2" || ts[1].Backend != DefaultBackend {
		t.Fatalf("ListTenants = %+v, %v", ts, err)
	}

	var inUse *BackendInUseError
	if _, err := RemoveBackend(ctx, db, "eu2"); !errors.As(err, &inUse) || inUse.Count != 1 || inUse.Tenants[0] != "acme" {
		t.Fatalf("RemoveBackend with a tenant on it = %v", err)
	}
	if _, err := RemoveBackend(ctx, db, DefaultBackend); err == nil {
		t.Fatal("RemoveBackend(default) succeeded")
	}

	// A placement change, announced under the tenant's name and, through
	// it, its aliases.
	if err := AddTenantAlias(ctx, db, "acme_co", "acme"); err != nil {
		t.Fatal(err)
	}
	changes := startWatch(t, reg)
	nextChange(t, changes, "")
	if err := SetPlacement(ctx, db, "acme", DefaultBackend); err != nil {
		t.Fatal(err)
	}
	waitAll(t, changes, "acme", "acme_co")
	if got, err := reg.LookupTenant(ctx, "acme_co"); err != nil || got.Backend != DefaultBackend {
		t.Fatalf("LookupTenant after SetPlacement = %+v, %v", got, err)
	}
	if err := SetPlacement(ctx, db, "acme", "nope"); !errors.As(err, new(*UnknownBackendError)) {
		t.Fatalf("SetPlacement on an unknown backend = %v", err)
	}
	if err := SetPlacement(ctx, db, "nope", "eu2"); !errors.As(err, new(*UnknownTenantError)) {
		t.Fatalf("SetPlacement of an unknown tenant = %v", err)
	}
	// Within a caller's transaction, as a move switches and resumes.
	err = inTx(ctx, db, func(tx pgx.Tx) error { return SetPlacementTx(ctx, tx, "acme", "eu2") })
	if err != nil {
		t.Fatal(err)
	}
	nextChange(t, changes, "acme")

	if err := SetPlacement(ctx, db, "acme", DefaultBackend); err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveBackend(ctx, db, "eu2")
	if err != nil || !removed {
		t.Fatalf("RemoveBackend(eu2) = %v, %v", removed, err)
	}
	nextChange(t, changes, BackendNotifyPrefix+"eu2")
	if removed, err := RemoveBackend(ctx, db, "eu2"); err != nil || removed {
		t.Fatalf("RemoveBackend(eu2) again = %v, %v", removed, err)
	}
	if err := AddBackend(ctx, db, "eu4", otherDSN); err != nil {
		t.Fatal(err)
	}
	nextChange(t, changes, BackendNotifyPrefix+"eu4")
	if b, ok := BackendChangedFor(BackendNotifyPrefix + "eu4"); !ok || b != "eu4" {
		t.Fatalf("BackendChangedFor = %q, %v", b, ok)
	}
}

// waitAll waits for each of want, in any order, skipping others.
func waitAll(t *testing.T, changes <-chan string, want ...string) {
	t.Helper()
	pending := map[string]bool{}
	for _, w := range want {
		pending[w] = true
	}
	deadline := time.After(10 * time.Second)
	for len(pending) > 0 {
		select {
		case got := <-changes:
			delete(pending, got)
		case <-deadline:
			t.Fatalf("no notification of %q within 10s", keys(pending))
		}
	}
}
