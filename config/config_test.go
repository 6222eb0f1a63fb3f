package config

import (
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	c := Default()
	c.Backend = "postgres://pgtenant@localhost/registry"
	return c
}

func TestDefaultNeedsOnlyBackend(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("Default() plus a backend: %v", err)
	}
	err := Default().Validate()
	if err == nil || !strings.Contains(err.Error(), "backend") {
		t.Fatalf("Default() without a backend: got %v, want an error naming backend", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" means valid
	}{
		{"listen without port", func(c *Config) { c.Listen = "localhost" }, "listen"},
		{"empty backend", func(c *Config) { c.Backend = "" }, "backend is required"},
		{"zero pool size", func(c *Config) { c.PoolSize = 0 }, "pool-size must be at least 1, got 0"},
		{"unknown pool mode", func(c *Config) { c.PoolMode = "statement" }, `pool-mode must be transaction or session, got "statement"`},
		{"session pool mode", func(c *Config) { c.PoolMode = PoolSession }, ""},
		{"unknown tenant source", func(c *Config) { c.TenantFrom = "host" }, `tenant-from must be database, user or sni, got "host"`},
		{"tenant from user", func(c *Config) { c.TenantFrom = TenantFromUser }, ""},
		{"unknown registry source", func(c *Config) { c.RegistrySource = "django" }, `registry-source must be pgtenant or django-tenants, got "django"`},
		{"django-tenants registry", func(c *Config) {
			c.RegistrySource, c.DjangoTenantTable, c.DjangoDomainTable = RegistryDjangoTenants, "tenants.Tenant", "tenants_domain"
		}, ""},
		{"empty django tenant table", func(c *Config) { c.DjangoTenantTable = "" }, "django-tenant-table: \"\" is not a table name"},
		{"three-part django domain table", func(c *Config) { c.DjangoDomainTable = "db.public.customers_domain" }, "django-domain-table: \"db.public.customers_domain\" is not a table name"},
		{"zero max client conn", func(c *Config) { c.MaxClientConn = 0 }, "max-client-conn must be at least 1"},
		{"zero max startup conn", func(c *Config) { c.MaxStartupConn = 0 }, "max-startup-conn must be at least 1, got 0"},
		{"negative max startup per addr", func(c *Config) { c.MaxStartupPerAddr = -1 }, "max-startup-per-addr must not be negative"},
		{"max startup per addr off", func(c *Config) { c.MaxStartupPerAddr = 0 }, ""},
		{"tiny max message size", func(c *Config) { c.MaxMessageSize = 100 }, "max-message-size must be between 1024 and 1073741824 bytes, got 100"},
		{"negative statement cap", func(c *Config) { c.MaxClientStatements = -1 }, "max-client-statements must not be negative"},
		{"negative statement bytes", func(c *Config) { c.MaxClientStatementBytes = -1 }, "max-client-statement-bytes must not be negative"},
		{"negative tenant max backends", func(c *Config) { c.TenantMaxBackends = -1 }, "tenant-max-backends must not be negative"},
		{"negative tenant max clients", func(c *Config) { c.TenantMaxClients = -1 }, "tenant-max-clients must not be negative"},
		{"negative tenant rate", func(c *Config) { c.TenantRate = -1 }, "tenant-rate must be a number of transactions per second"},
		{"negative tenant rate burst", func(c *Config) { c.TenantRateBurst = -2 }, "tenant-rate-burst must not be negative"},
		{"tenant limits", func(c *Config) {
			c.TenantMaxBackends, c.TenantMaxClients, c.TenantRate, c.TenantRateBurst = 2, 10, 0.5, 3
		}, ""},
		{"negative idle transaction timeout", func(c *Config) { c.IdleTransactionTimeout = -time.Second }, "idle-transaction-timeout must not be negative"},
		{"max message size over 1 GiB", func(c *Config) { c.MaxMessageSize = 1<<30 + 1 }, "max-message-size must be between"},
		{"max message size at 1 GiB", func(c *Config) { c.MaxMessageSize = 1 << 30 }, ""},
		{"zero query wait timeout", func(c *Config) { c.QueryWaitTimeout = 0 }, "query-wait-timeout must be positive"},
		{"zero server connect timeout", func(c *Config) { c.ServerConnectTimeout = 0 }, "server-connect-timeout must be positive"},
		{"zero startup timeout", func(c *Config) { c.StartupTimeout = 0 }, "startup-timeout must be positive"},
		{"negative server idle timeout", func(c *Config) { c.ServerIdleTimeout = -time.Second }, "server-idle-timeout must not be negative, got -1s"},
		{"negative server lifetime", func(c *Config) { c.ServerLifetime = -time.Second }, "server-lifetime must not be negative"},
		{"negative server check idle", func(c *Config) { c.ServerCheckIdle = -time.Second }, "server-check-idle must not be negative"},
		{"negative tenant cache ttl", func(c *Config) { c.TenantCacheTTL = -time.Second }, "tenant-cache-ttl must not be negative"},
		{"negative tenant miss ttl", func(c *Config) { c.TenantMissTTL = -time.Second }, "tenant-miss-ttl must not be negative"},
		{"negative shutdown timeout", func(c *Config) { c.ShutdownTimeout = -time.Second }, "shutdown-timeout must not be negative"},
		{"zero durations that mean off", func(c *Config) {
			c.ServerIdleTimeout, c.ServerLifetime, c.ServerCheckIdle = 0, 0, 0
			c.TenantCacheTTL, c.TenantMissTTL, c.ShutdownTimeout = 0, 0, 0
		}, ""},
		{"sni without suffix", func(c *Config) { c.TenantFrom = TenantFromSNI; c.TLSCert, c.TLSKey = "c", "k" }, "tenant-from sni needs sni-suffix"},
		{"sni without suffix from django domains", func(c *Config) {
			c.TenantFrom, c.RegistrySource = TenantFromSNI, RegistryDjangoTenants
			c.TLSCert, c.TLSKey = "c", "k"
		}, ""},
		{"sni without tls", func(c *Config) { c.TenantFrom = TenantFromSNI; c.SNISuffix = ".db.example.com" }, "tenant-from sni needs tls-cert"},
		{"sni", func(c *Config) {
			c.TenantFrom, c.SNISuffix, c.TLSCert, c.TLSKey = TenantFromSNI, ".db.example.com", "c", "k"
		}, ""},
		{"sni suffix without dot", func(c *Config) { c.SNISuffix = "db.example.com" }, "sni-suffix must start with a dot"},
		{"unknown auth type", func(c *Config) { c.AuthType = "cert" }, `auth-type must be scram-sha-256, md5, password or trust, got "cert"`},
		{"scram without users", func(c *Config) { c.AuthType = AuthSCRAM }, "auth-type scram-sha-256 needs a user source"},
		{"md5 with auth query", func(c *Config) { c.AuthType, c.AuthQuery = AuthMD5, "SELECT 1" }, ""},
		{"granted under trust", func(c *Config) { c.TenantAccess = AccessGranted }, "tenant-access granted needs authentication"},
		{"unknown tenant access", func(c *Config) { c.TenantAccess = "some" }, `tenant-access must be granted or all, got "some"`},
		{"cert without key", func(c *Config) { c.TLSCert = "c" }, "tls-cert and tls-key go together"},
		{"require without cert", func(c *Config) { c.ClientTLS = ClientTLSRequire }, "client-tls require needs tls-cert"},
		{"unknown client tls", func(c *Config) { c.ClientTLS = "prefer" }, `client-tls must be disable, allow or require, got "prefer"`},
		{"unknown log format", func(c *Config) { c.LogFormat = "logfmt" }, `log-format must be text or json, got "logfmt"`},
		{"bad metrics listen", func(c *Config) { c.MetricsListen = "9187" }, `metrics-listen "9187"`},
		{"metrics for every tenant", func(c *Config) { c.MetricsListen, c.MetricsTenants = ":9187", "all" }, ""},
		{"metrics tenants not a number", func(c *Config) { c.MetricsTenants = "top10" }, `metrics-tenants must be all or a number of tenants of at least 1, got "top10"`},
		{"metrics tenants zero", func(c *Config) { c.MetricsTenants = "0" }, "metrics-tenants must be all or a number"},
		{"negative schema size interval", func(c *Config) { c.SchemaSizeInterval = -time.Second }, "schema-size-interval must not be negative"},
		{"unknown log level", func(c *Config) { c.LogLevel = "trace" }, `log-level must be debug, info, warn or error, got "trace"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Fatalf("Validate() = nil, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestEffectiveDefaults(t *testing.T) {
	c := validConfig()
	if got := c.EffectiveAuthType(); got != AuthTrust {
		t.Errorf("no user source: auth type %q, want trust", got)
	}
	if got := c.EffectiveTenantAccess(); got != AccessAll {
		t.Errorf("no user source: tenant access %q, want all", got)
	}
	c.AuthFile = "users.txt"
	if got := c.EffectiveAuthType(); got != AuthSCRAM {
		t.Errorf("auth file: auth type %q, want scram-sha-256", got)
	}
	if got := c.EffectiveTenantAccess(); got != AccessGranted {
		t.Errorf("auth file: tenant access %q, want granted", got)
	}
	c.AuthType = AuthTrust
	if got := c.EffectiveTenantAccess(); got != AccessAll {
		t.Errorf("auth file under trust: tenant access %q, want all", got)
	}
	c.AuthType, c.TenantAccess = AuthMD5, AccessAll
	if got := c.EffectiveTenantAccess(); got != AccessAll {
		t.Errorf("explicit all: tenant access %q", got)
	}
}

// An operator should fix a bad file in one pass, so every problem is named.
func TestValidateReportsEveryProblem(t *testing.T) {
	c := validConfig()
	c.PoolSize = -1
	c.PoolMode = "statement"
	c.LogLevel = "trace"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want three problems")
	}
	for _, want := range []string{"pool-size", "pool-mode", "log-level"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %q, want it to mention %s", err, want)
		}
	}
}

func TestMetricsTenantLimit(t *testing.T) {
	for value, want := range map[string]int{"all": 0, "1": 1, "250": 250} {
		c := Default()
		c.MetricsTenants = value
		if got := c.MetricsTenantLimit(); got != want {
			t.Errorf("MetricsTenantLimit() with %q = %d, want %d", value, got, want)
		}
	}
	if got := Default().MetricsTenantLimit(); got != 100 {
		t.Errorf("default MetricsTenantLimit() = %d, want 100", got)
	}
}

func TestParseTableName(t *testing.T) {
	long := strings.Repeat("t", 64)
	for _, tt := range []struct {
		in   string
		want []string // nil: an error
	}{
		{"customers_client", []string{"public", "customers_client"}},
		{"shared.customers_client", []string{"shared", "customers_client"}},
		// Used as given: Django quotes the names it creates, so case stays.
		{"Tenants.Client", []string{"Tenants", "Client"}},
		{"odd name-with$chars", []string{"public", "odd name-with$chars"}},
		{strings.Repeat("t", 63), []string{"public", strings.Repeat("t", 63)}},
		{"", nil},
		{".customers_client", nil},
		{"public.", nil},
		{"a.b.c", nil},
		{long, nil},
		{`bad"quote`, nil},
		{"tab\tname", nil},
		{"nul\x00name", nil},
	} {
		got, err := ParseTableName(tt.in)
		switch {
		case tt.want == nil && err == nil:
			t.Errorf("ParseTableName(%q) = %q, want an error", tt.in, got)
		case tt.want != nil && (err != nil || strings.Join(got, "|") != strings.Join(tt.want, "|")):
			t.Errorf("ParseTableName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
