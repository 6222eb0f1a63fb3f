package proxy

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/pgtenant/pgtenant/router"
)

// The tenant's session settings are the pin's defaults: the client's
// startup parameters and its own settings override them, the storage
// quota's read-only comes last, and all of them are in the pin's key.
func TestPinWithTenantSettings(t *testing.T) {
	s := newTestSession(t)
	tr := &s.tr
	tr.params = []startupParam{{Name: "work_mem", Value: "4MB"}}
	tr.rebuildPin()
	plainKey := tr.pin.key

	tr.conf = newSnap(router.TenantSettings{Session: []router.SessionSetting{
		{Name: "work_mem", Value: "64MB"}, {Name: "statement_timeout", Value: "5s"},
	}}, false)
	tr.rebuildPin()
	_, sets := pinParts(t, tr.pin)
	want := []string{`SET "statement_timeout" TO '5s'`, `SET "work_mem" TO '4MB'`}
	if !reflect.DeepEqual(sets, want) {
		t.Fatalf("pin settings = %q, want %q", sets, want)
	}
	withTenant := tr.pin.key
	if withTenant == plainKey {
		t.Fatal("the tenant's settings are not in the pin key")
	}

	tr.settings["default_transaction_read_only"] = "'off'"
	tr.conf = newSnap(tr.conf.s, true)
	tr.rebuildPin()
	_, sets = pinParts(t, tr.pin)
	if last := sets[len(sets)-1]; last != `SET "default_transaction_read_only" TO 'on'` {
		t.Fatalf("over the quota, the pin's last setting is %q", last)
	}
	if tr.pin.key == withTenant {
		t.Fatal("the quota state is not in the pin key")
	}

	// A reset returns to the tenant's defaults, and to read-only.
	restore := tr.restoreSQL([]change{{all: true}})
	for _, want := range []string{"'statement_timeout', '5s'", "'work_mem', '4MB'", "'default_transaction_read_only', 'on'"} {
		if !strings.Contains(restore, want) {
			t.Errorf("restore after RESET ALL lacks %s: %s", want, restore)
		}
	}
	if r := tr.restoreSQL([]change{{name: "statement_timeout"}}); !strings.Contains(r, "'statement_timeout', '5s'") || strings.Contains(r, "work_mem") {
		t.Errorf("restore after RESET statement_timeout: %s", r)
	}
}

// A session follows its tenant's settings when it next attaches a
// backend: a new snapshot rebuilds its pin.
func TestFollowConf(t *testing.T) {
	s := newTestSession(t)
	s.te = &tenantEntry{name: "acme"}
	s.followConfLocked()
	before := s.tr.pin.key
	s.te.conf.mu.Lock()
	s.te.conf.storeLocked(router.TenantSettings{Session: []router.SessionSetting{{Name: "statement_timeout", Value: "1s"}}})
	s.te.conf.mu.Unlock()
	s.followConfLocked()
	if s.tr.pin.key == before || !strings.Contains(s.tr.pin.key, "statement_timeout") {
		t.Fatalf("pin key after a settings change: %q", s.tr.pin.key)
	}
}

type fakeSettings struct {
	s     router.TenantSettings
	err   error
	sizes map[string]int64
}

func (f *fakeSettings) LookupTenantSettings(context.Context, string) (router.TenantSettings, error) {
	return f.s, f.err
}

func (f *fakeSettings) SchemaSizes(context.Context, []string) (map[string]int64, error) {
	return f.sizes, nil
}

// The quota: a measured size over it makes the snapshot read-only, and
// raising the quota (a refresh) or a smaller size turns it back.
func TestQuotaState(t *testing.T) {
	s := newTestSession(t)
	srv := s.srv
	src := &fakeSettings{s: router.TenantSettings{StorageQuota: 1000}, sizes: map[string]int64{"acme": 5000}}
	srv.settings = src
	te := srv.tenants.entry("acme")
	srv.loadConf(context.Background(), te)
	if te.conf.overQuota() {
		t.Fatal("over the quota before any measurement")
	}
	srv.measureOnce(context.Background())
	if !te.conf.overQuota() {
		t.Fatal("not over the quota with 5000 bytes for 1000")
	}
	src.s.StorageQuota = 10000
	srv.refreshConf(context.Background(), te)
	if te.conf.overQuota() {
		t.Fatal("still over the quota after it was raised")
	}
	src.s.StorageQuota = 1000
	srv.refreshConf(context.Background(), te)
	if !te.conf.overQuota() {
		t.Fatal("not over the lowered quota")
	}
	src.sizes["acme"] = 10
	srv.measureOnce(context.Background())
	if te.conf.overQuota() {
		t.Fatal("still over the quota after the schema shrank")
	}
	// A failed refresh keeps what was loaded.
	src.err = &router.SettingsLookupError{Err: errors.New("down")}
	src.s.StorageQuota = 1
	srv.refreshConf(context.Background(), te)
	if te.conf.quotaBytes() != 1000 {
		t.Fatalf("quota after a failed refresh = %d, want 1000", te.conf.quotaBytes())
	}
}
