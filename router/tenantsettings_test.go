package router

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestValidateSetting(t *testing.T) {
	good := []struct{ key, value, wantKey, wantValue string }{
		{"max_backends", "4", "max_backends", "4"},
		{"MAX_CLIENTS", " 10 ", "max_clients", "10"},
		{"rate", "12.5", "rate", "12.5"},
		{"rate_burst", "0", "rate_burst", "0"},
		{"storage_quota", "10GB", "storage_quota", "10GB"},
		{"tier", "gold plan", "tier", "gold plan"},
		{"set.statement_timeout", "5s", "set.statement_timeout", "5s"},
		{"set.Work_Mem", "64MB", "set.work_mem", "64MB"},
		{"set.myext.opt", "x", "set.myext.opt", "x"},
	}
	for _, g := range good {
		k, v, err := ValidateSetting(g.key, g.value)
		if err != nil || k != g.wantKey || v != g.wantValue {
			t.Errorf("ValidateSetting(%q, %q) = %q, %q, %v; want %q, %q", g.key, g.value, k, v, err, g.wantKey, g.wantValue)
		}
	}
	bad := []struct{ key, value, reason string }{
		{"max_backends", "-1", "whole number"},
		{"max_backends", "four", "whole number"},
		{"rate", "fast", "transactions per second"},
		{"rate", "-2", "transactions per second"},
		{"storage_quota", "10 parsecs", "unknown unit"},
		{"storage_quota", "GB", "want a size"},
		{"tier", "a\x01b", "control character"},
		{"colour", "red", "unknown key"},
		{"set.search_path", "x", "search_path"},
		{"set.role", "admin", "role"},
		{"set.session_authorization", "admin", "session_authorization"},
		{"set.client_encoding", "SJIS", "client_encoding"},
		{"set.bad-name", "1", "not a run-time parameter name"},
		{"set.pgtenant.tenant", "x", "pgtenant's own"},
		{"set.work_mem", "a\x00b", "NUL"},
	}
	for _, b := range bad {
		_, _, err := ValidateSetting(b.key, b.value)
		var ise *InvalidSettingError
		if !errors.As(err, &ise) || !strings.Contains(err.Error(), b.reason) {
			t.Errorf("ValidateSetting(%q, %q) = %v; want an InvalidSettingError saying %q", b.key, b.value, err, b.reason)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1024": 1024, "1kB": 1024, "500MB": 500 << 20, "10GB": 10 << 30, "10 gb": 10 << 30, "2TiB": 2 << 40, "7b": 7,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "1.5GB", "99999999999999999999", "9999999999TB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded; want an error", in)
		}
	}
}

func TestTenantSettingsInRegistry(t *testing.T) {
	ctx := testContext(t)
	reg := openRegistry(t, newDatabase(t))
	db := reg.Pool()

	// No registry yet: no settings, and no error.
	if s, err := reg.LookupTenantSettings(ctx, "acme"); err != nil || !reflect.DeepEqual(s, TenantSettings{}) {
		t.Fatalf("LookupTenantSettings without a registry = %+v, %v", s, err)
	}
	var unknown *UnknownTenantError
	if err := SetTenantSettings(ctx, db, "acme", map[string]string{"tier": "gold"}); !errors.As(err, &unknown) {
		t.Fatalf("SetTenantSettings of a tenant that does not exist = %v, want *UnknownTenantError", err)
	}
	mustCreate(t, db, "acme", "globex")

	err := SetTenantSettings(ctx, db, "acme", map[string]string{
		"max_backends": "3", "max_clients": "50", "rate": "100", "rate_burst": "20",
		"storage_quota": "1GB", "tier": "gold", "set.statement_timeout": "5s", "set.work_mem": "64MB",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := TenantSettings{MaxBackends: 3, MaxClients: 50, Rate: 100, RateBurst: 20, StorageQuota: 1 << 30, Tier: "gold",
		Session: []SessionSetting{{"statement_timeout", "5s"}, {"work_mem", "64MB"}}}
	if s, err := reg.LookupTenantSettings(ctx, "acme"); err != nil || !reflect.DeepEqual(s, want) {
		t.Fatalf("LookupTenantSettings = %+v, %v; want %+v", s, err, want)
	}

	// The server checks session settings: unknown names, values it
	// refuses, and parameters an ordinary role cannot set. Nothing of a
	// refused call is stored.
	for kv, reason := range map[[2]string]string{
		{"set.no_such_parameter", "1"}:           "no such parameter",
		{"set.statement_timeout", "banana"}:      "the server refuses it",
		{"set.log_min_duration_statement", "1s"}: "context is superuser",
		{"set.shared_buffers", "1GB"}:            "context is postmaster",
	} {
		err := SetTenantSettings(ctx, db, "acme", map[string]string{"tier": "silver", kv[0]: kv[1]})
		var ise *InvalidSettingError
		if !errors.As(err, &ise) || !strings.Contains(err.Error(), reason) {
			t.Errorf("SetTenantSettings(%s=%s) = %v; want an InvalidSettingError saying %q", kv[0], kv[1], err, reason)
		}
	}
	_, kv, err := ListTenantSettings(ctx, db, "acme")
	if err != nil || kv["tier"] != "gold" || len(kv) != 8 {
		t.Fatalf("ListTenantSettings after refusals = %v, %v; want the 8 settings as they were", kv, err)
	}

	removed, err := UnsetTenantSettings(ctx, db, "acme", []string{"set.work_mem", "rate", "tier", "max_clients"})
	if err != nil || !reflect.DeepEqual(removed, []string{"max_clients", "rate", "set.work_mem", "tier"}) {
		t.Fatalf("UnsetTenantSettings = %v, %v", removed, err)
	}
	if removed, err := UnsetTenantSettings(ctx, db, "acme", []string{"tier"}); err != nil || len(removed) != 0 {
		t.Fatalf("UnsetTenantSettings of what is not set = %v, %v; want nothing removed", removed, err)
	}
	if s, err := reg.LookupTenantSettings(ctx, "acme"); err != nil || s.Tier != "" || s.Rate != 0 || len(s.Session) != 1 {
		t.Fatalf("LookupTenantSettings after unset = %+v, %v", s, err)
	}

	// A row put in by hand that does not parse is reported; the rest apply.
	if _, err := db.Exec(ctx, `INSERT INTO pgtenant.tenant_settings (tenant, key, value) VALUES ('acme', 'rate', 'lots')`); err != nil {
		t.Fatal(err)
	}
	s, err := reg.LookupTenantSettings(ctx, "acme")
	if err == nil || s.MaxBackends != 3 {
		t.Fatalf("LookupTenantSettings with a bad row = %+v, %v; want the good rows and an error", s, err)
	}

	// Settings go with their tenant.
	if _, err := db.Exec(ctx, `DELETE FROM pgtenant.tenants WHERE name = 'acme'`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM pgtenant.tenant_settings`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("settings left after their tenant was deleted: %d, %v", n, err)
	}

	sizes, err := reg.SchemaSizes(ctx, nil)
	if err != nil || len(sizes) != 1 {
		t.Fatalf("SchemaSizes = %v, %v; want globex alone", sizes, err)
	}
	if _, err := db.Exec(ctx, `CREATE TABLE globex.big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}
	sizes, err = reg.SchemaSizes(ctx, []string{"globex"})
	if err != nil || sizes["globex"] < 5000*200 {
		t.Fatalf("SchemaSizes after 1 MB of rows = %v, %v", sizes, err)
	}
}
