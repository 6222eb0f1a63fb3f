package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// sharedSchemaPattern is what --shared-schemas accepts: names that need no
// quoting, so the list reads the same in the flag, in SQL and in errors.
var sharedSchemaPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// PoolMode says when a backend connection changes hands.
type PoolMode string

const (
	// PoolTransaction releases the backend at every safe point: after the
	// client's last Sync/Query is answered by ReadyForQuery 'I'.
	PoolTransaction PoolMode = "transaction"
	// PoolSession keeps one backend for the whole client session.
	PoolSession PoolMode = "session"
)

// Unpoolable says what transaction pooling does with a client that uses
// session-level features a backend cannot carry from one client to the next.
type Unpoolable string

const (
	// UnpoolablePin keeps the client on its backend until it disconnects.
	UnpoolablePin Unpoolable = "pin"
	// UnpoolableRefuse answers the statement with an error.
	UnpoolableRefuse Unpoolable = "refuse"
)

// TenantSource says which startup value names the tenant.
type TenantSource string

const (
	TenantFromDatabase TenantSource = "database"
	TenantFromUser     TenantSource = "user"
	// TenantFromSNI takes the tenant from the TLS server name the client
	// sent (acme.db.example.com with SNISuffix .db.example.com names acme),
	// or, when it sent none, from the startup options (-c pgtenant.tenant=acme).
	TenantFromSNI TenantSource = "sni"
)

// Authentication types, the values of --auth-type.
const (
	AuthSCRAM    = "scram-sha-256"
	AuthMD5      = "md5"
	AuthPassword = "password"
	AuthTrust    = "trust"
)

// Tenant access policies, the values of --tenant-access.
const (
	// AccessGranted admits a user only to the tenants it is granted in
	// pgtenant.tenant_users.
	AccessGranted = "granted"
	// AccessAll admits every user to every tenant.
	AccessAll = "all"
)

// Client TLS policies, the values of --client-tls.
const (
	ClientTLSDisable = "disable" // answer every SSLRequest 'N'
	ClientTLSAllow   = "allow"   // TLS when the client asks and a certificate is set
	ClientTLSRequire = "require" // refuse clients that do not use TLS
)

// Registry sources, the values of --registry-source.
const (
	// RegistryPgtenant reads tenants from pgtenant's own registry
	// (pgtenant.tenants and pgtenant.tenant_aliases).
	RegistryPgtenant = "pgtenant"
	// RegistryDjangoTenants reads tenants, read-only, from the tables of a
	// django-tenants deployment: the tenant model (schema_name) and the
	// domain model (domain, tenant_id). See router.DjangoRegistry.
	RegistryDjangoTenants = "django-tenants"
)

// The default table names of --registry-source django-tenants: those of
// django-tenants' documented example, an app called customers with the
// models Client(TenantMixin) and Domain(DomainMixin). A deployment whose
// models are named otherwise sets the flags to its own tables
// (<app label>_<model name>, or the models' db_table).
const (
	DefaultDjangoTenantTable = "customers_client"
	DefaultDjangoDomainTable = "customers_domain"
)

// Isolation modes, the values of --isolation.
const (
	// IsolationSchema runs every tenant's traffic as the backend DSN's role,
	// each tenant's schema first on its search_path: isolation for
	// cooperative applications, not a security boundary.
	IsolationSchema = "schema"
	// IsolationRole runs each tenant's traffic as a LOGIN role of its own
	// (router.TenantRoleName) that owns the tenant's schema and nothing
	// else, so PostgreSQL itself refuses whatever crosses tenants.
	IsolationRole = "role"
)

// RoleSecretEnv is the variable that holds the role secret (see
// Config.RoleSecret). It is read only from the environment or from
// --role-secret-file, never from a flag value, so the secret stays out of
// process listings.
const RoleSecretEnv = "PGTENANT_ROLE_SECRET"

// MinRoleSecretLen is the shortest role secret accepted: every tenant
// role's password derives from it.
const MinRoleSecretLen = 16

// The range of MaxMessageSize. Below 1 KiB ordinary queries would be
// refused; 1 GiB is PostgreSQL's own limit on a message (MaxAllocSize).
const (
	MinMessageSize      = 1 << 10
	MaxMessageSizeLimit = 1 << 30
)

// Config is everything `pgtenant serve` needs. The zero value is not valid;
// use Default and then override.
type Config struct {
	// Listen is the TCP address clients connect to. Default 127.0.0.1:6432.
	Listen string
	// Backend is the libpq URL or key=value DSN of the database holding the
	// tenant schemas; the pool logs in with it, so its role is the one
	// tenant traffic runs as. Required.
	Backend string
	// Registry is the DSN of the admin connection: registry lookups, the
	// NOTIFY listener and the auth query run on it, never tenant traffic.
	// Its role owns the registry (schema pgtenant), which the Backend role
	// must not be able to write. Empty (the default) means Backend, which
	// the privilege check at start refuses unless the Backend role cannot
	// write the registry or AllowPrivilegedBackend is set; see
	// RegistryDSN.
	Registry string
	// RegistrySource says where tenants are looked up: pgtenant (default,
	// pgtenant's own registry) or django-tenants (the tables
	// DjangoTenantTable and DjangoDomainTable, read-only).
	RegistrySource string
	// DjangoTenantTable is the table of the django-tenants tenant model
	// (the one with schema_name), optionally schema-qualified; without a
	// schema it is in public. Default customers_client.
	DjangoTenantTable string
	// DjangoDomainTable is the table of the django-tenants domain model
	// (domain, tenant_id), optionally schema-qualified; without a schema
	// it is in public. Default customers_domain.
	DjangoDomainTable string
	// AllowPrivilegedBackend lets serve start although the Backend role is
	// a superuser, has CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, owns
	// the database or can write the registry: tenants sending SQL could
	// then take over the database or the proxy. Default false.
	AllowPrivilegedBackend bool
	// PoolSize is the number of backend connections shared by all tenants.
	// Default 20.
	PoolSize int
	// GoMaxProcs is how many threads run pgtenant's Go code at once
	// (runtime.GOMAXPROCS). 0, the default, leaves Go's choice: every CPU
	// the process may use (its affinity mask and cgroup quota), or the
	// GOMAXPROCS variable. Measured on a 2-core host that pgtenant shares
	// with PostgreSQL and the clients (pgtenant bench --only cpu): one
	// thread costs the same CPU per transaction as two and serves about
	// 12% fewer transactions, so the default stays; the setting is for a
	// host where pgtenant must leave cores to others.
	GoMaxProcs int
	// PoolMode is transaction (default) or session.
	PoolMode PoolMode
	// TenantFrom says whether the startup database (default) or user names
	// the tenant.
	TenantFrom TenantSource
	// SNISuffix is the domain under which each tenant has a host name:
	// with ".db.example.com", a client that sends the TLS server name
	// acme.db.example.com names the tenant (or alias) acme. Whatever
	// TenantFrom says, a tenant named this way must agree with the others
	// the client names. Default none.
	SNISuffix string
	// AuthType is how clients prove who they are: scram-sha-256, md5,
	// password or trust. Empty (the default) means scram-sha-256 when a
	// user source (AuthFile, AuthQuery) is set and trust otherwise; see
	// EffectiveAuthType.
	AuthType string
	// AuthFile is a PgBouncer-style userlist ("user" "secret" per line),
	// reread on SIGHUP.
	AuthFile string
	// AuthQuery looks up a user's secret; it runs on the registry
	// connection (see Registry), takes the user name as $1 and returns
	// (name, secret). With AuthFile too, it is asked
	// for users the file does not list.
	AuthQuery string
	// AuthMockSecret keys the salts pgtenant makes up: the fake salt an
	// unknown user is shown, and the salt of verifiers derived from plain
	// passwords. Set it to keep them stable across restarts, so that
	// comparing salts before and after a restart cannot tell which users
	// exist. Default: random per process.
	AuthMockSecret string
	// AuthCleartextWithoutTLS lets auth-type password ask for a cleartext
	// password on a connection without TLS. Default false.
	AuthCleartextWithoutTLS bool
	// TenantAccess is granted or all: whether a user may connect only to
	// the tenants it is granted. Empty (the default) means granted when a
	// user source is set and all otherwise; see EffectiveTenantAccess.
	TenantAccess string
	// TLSCert and TLSKey are the PEM certificate chain and key pgtenant
	// shows clients; both or neither. Reread on SIGHUP.
	TLSCert string
	TLSKey  string
	// ClientTLS is disable, allow (default: TLS for clients that ask, when
	// a certificate is set) or require (clients without TLS are refused).
	ClientTLS string
	// QueryWaitTimeout bounds how long a client waits for a backend
	// connection before it gets an error. Default 30s.
	QueryWaitTimeout time.Duration
	// MaxClientConn caps concurrent client connections; one more gets
	// 53300. Default 5000.
	MaxClientConn int
	// MaxStartupConn caps connections accepted but not yet authenticated:
	// those whose StartupMessage has not arrived (TLS handshake,
	// SSLRequest, or nothing at all) and those still authenticating.
	// Authenticated clients count toward MaxClientConn instead,
	// so pgtenant holds at most MaxClientConn + MaxStartupConn client
	// sockets. One more gets 53300 at once. Default 1000.
	MaxStartupConn int
	// MaxStartupPerAddr caps the connections of one client IP address
	// among MaxStartupConn, so that one host cannot take every startup
	// slot; 0 turns it off. Default 250.
	MaxStartupPerAddr int
	// MaxMessageSize is the largest length a client message may claim
	// (its length word, in bytes). A claim over it is refused with FATAL
	// 08P01 before anything is read or allocated; under it, pgtenant holds
	// only what has arrived. Server replies are not capped. Default 64 MiB.
	MaxMessageSize int
	// MaxClientStatements caps the named prepared statements one client
	// keeps (pgtenant remembers each to prepare it again on any backend);
	// a Parse of one more is refused with ERROR 53400 until the client
	// closes some. 0: no cap. Default 1000.
	MaxClientStatements int
	// MaxClientStatementBytes caps the memory, in bytes, that one client's
	// named prepared statements take in pgtenant (each statement's Parse
	// message and bookkeeping); a Parse that would go over it is refused
	// with ERROR 53400. 0: no cap. Default 16 MiB.
	MaxClientStatementBytes int
	// TenantMaxBackends caps the backend connections one tenant holds at
	// once; its further transactions wait for one of its own, and do not
	// hold up other tenants. 0 (the default): no cap but PoolSize. A
	// tenant's own value in the registry overrides it.
	TenantMaxBackends int
	// TenantMaxClients caps one tenant's concurrent clients; one more gets
	// FATAL 53300 after authentication. 0 (the default): no cap. A
	// tenant's own value in the registry overrides it.
	TenantMaxClients int
	// TenantRate is the transactions per second one tenant may start (a
	// token bucket); over it transactions wait, and get ERROR 53400 when
	// the wait would pass QueryWaitTimeout. 0 (the default) turns it off.
	TenantRate float64
	// TenantRateBurst is the bucket's size: how many transactions a
	// tenant may start at once after a quiet spell. 0 (the default): one
	// second's worth of TenantRate, at least 1.
	TenantRateBurst int
	// IdleTransactionTimeout ends a client that stays idle inside a
	// transaction (its last ReadyForQuery said T or E, nothing sent since)
	// longer than this: it gets FATAL 25P03, its transaction is rolled back
	// and its backend goes back to the pool. 0 (the default) turns it off.
	IdleTransactionTimeout time.Duration
	// ServerIdleTimeout closes backend connections idle longer than this;
	// 0 keeps them. Default 10m.
	ServerIdleTimeout time.Duration
	// ServerLifetime closes backend connections older than this (with up to
	// 10% jitter so they do not all reconnect at once); 0 keeps them.
	// Default 1h.
	ServerLifetime time.Duration
	// ServerConnectTimeout bounds dialling and logging in to the backend.
	// Default 10s.
	ServerConnectTimeout time.Duration
	// ServerCheckIdle is how long a backend connection may sit idle before
	// checkout probes it (one non-blocking peek) for a server that went
	// away. Default 1s.
	ServerCheckIdle time.Duration
	// TenantCacheTTL is how long a found tenant stays cached; NOTIFY on the
	// registry channel drops entries at once. Default 60s.
	TenantCacheTTL time.Duration
	// TenantMissTTL is how long an unknown tenant name stays cached, to keep
	// a flood of bad names off the registry. Default 1s.
	TenantMissTTL time.Duration
	// StartupTimeout bounds a client's startup and authentication. Default 15s.
	StartupTimeout time.Duration
	// ShutdownTimeout is how long shutdown waits for clients in a
	// transaction before closing them. Default 30s.
	ShutdownTimeout time.Duration
	// MaxPreparedStatements bounds the named prepared statements kept on
	// each backend connection. Default 200.
	MaxPreparedStatements int
	// Unpoolable is pin (default) or refuse; see the Unpoolable type.
	Unpoolable Unpoolable
	// SharedSchemas may be put on a client's search_path by every tenant,
	// besides the tenant's own schema and public. Default none.
	SharedSchemas []string
	// PinReuse lets a backend skip the pin when its last holder was a
	// client of the same tenant with the same settings that sent nothing
	// pgtenant recognises as changing session state. Default true; false
	// resets every backend at every checkout (which also undoes changes
	// made inside functions, which pgtenant cannot see).
	PinReuse bool
	// Isolation is schema (default) or role; see IsolationSchema and
	// IsolationRole.
	Isolation string
	// RoleSecretFile names a file holding the role secret (surrounding
	// blanks and newlines are dropped). It wins over RoleSecretEnv.
	RoleSecretFile string
	// RoleSecret is the operator secret every tenant role's password
	// derives from (auth.TenantRolePassword), read from RoleSecretFile or
	// RoleSecretEnv by FromContext; tests set it directly. Required in
	// role mode, at least MinRoleSecretLen bytes.
	RoleSecret string
	// MetricsListen is the host:port of the Prometheus endpoint (/metrics);
	// empty (the default) serves no metrics.
	MetricsListen string
	// MetricsTenants bounds the tenants that get series of their own: "all",
	// or a number N, the N most active tenants, the rest summed into
	// tenant="other". Default 100: each tenant costs some 60 series, so 100
	// keeps a proxy near 6000, which one Prometheus takes from many proxies;
	// see MetricsTenantLimit.
	MetricsTenants string
	// SchemaSizeInterval is how often every tenant schema's size is
	// measured in the background (one query on the registry connection),
	// for the metrics, SHOW TENANTS and storage quotas; 0 turns it off,
	// and with it the quotas. Default 1m.
	SchemaSizeInterval time.Duration
	// LogFormat is text (default) or json.
	LogFormat string
	// LogLevel is debug, info (default), warn or error.
	LogLevel string
	// AdminUsers may use the admin console (database pgtenant), once
	// authenticated like any client. Default none: the console is off.
	AdminUsers []string
}

// Default returns the documented defaults.
func Default() Config {
	return Config{
		Listen:                  "127.0.0.1:6432",
		RegistrySource:          RegistryPgtenant,
		DjangoTenantTable:       DefaultDjangoTenantTable,
		DjangoDomainTable:       DefaultDjangoDomainTable,
		PoolSize:                20,
		PoolMode:                PoolTransaction,
		TenantFrom:              TenantFromDatabase,
		QueryWaitTimeout:        30 * time.Second,
		MaxClientConn:           5000,
		MaxStartupConn:          1000,
		MaxStartupPerAddr:       250,
		MaxMessageSize:          64 << 20,
		MaxClientStatements:     1000,
		MaxClientStatementBytes: 16 << 20,
		ServerIdleTimeout:       10 * time.Minute,
		ServerLifetime:          time.Hour,
		ServerConnectTimeout:    10 * time.Second,
		ServerCheckIdle:         time.Second,
		TenantCacheTTL:          time.Minute,
		TenantMissTTL:           time.Second,
		StartupTimeout:          15 * time.Second,
		ShutdownTimeout:         30 * time.Second,
		MaxPreparedStatements:   200,
		Unpoolable:              UnpoolablePin,
		ClientTLS:               ClientTLSAllow,
		PinReuse:                true,
		Isolation:               IsolationSchema,
		MetricsTenants:          "100",
		SchemaSizeInterval:      time.Minute,
		LogFormat:               "text",
		LogLevel:                "info",
	}
}

// RegistryDSN is the DSN of the admin connection: Registry, or Backend
// when Registry is empty.
func (c Config) RegistryDSN() string {
	if c.Registry != "" {
		return c.Registry
	}
	return c.Backend
}

// MetricsTenantLimit is MetricsTenants as a number: how many tenants get
// series of their own, 0 meaning all of them. A value Validate refuses
// reads as the default's 100.
func (c Config) MetricsTenantLimit() int {
	if c.MetricsTenants == MetricsTenantsAll {
		return 0
	}
	n, err := strconv.Atoi(c.MetricsTenants)
	if err != nil || n < 1 {
		return 100
	}
	return n
}

// MetricsTenantsAll is the MetricsTenants value that gives every tenant
// series of its own.
const MetricsTenantsAll = "all"

// hasUserSource reports whether an auth file or query is configured.
func (c Config) hasUserSource() bool { return c.AuthFile != "" || c.AuthQuery != "" }

// EffectiveAuthType is AuthType with its default filled in: scram-sha-256
// when a user source is set, trust otherwise.
func (c Config) EffectiveAuthType() string {
	switch {
	case c.AuthType != "":
		return c.AuthType
	case c.hasUserSource():
		return AuthSCRAM
	default:
		return AuthTrust
	}
}

// EffectiveTenantAccess is TenantAccess with its default filled in:
// granted when a user source is set (users are known, so grants mean
// something), all otherwise.
func (c Config) EffectiveTenantAccess() string {
	switch {
	case c.TenantAccess != "":
		return c.TenantAccess
	case c.hasUserSource() && c.EffectiveAuthType() != AuthTrust:
		return AccessGranted
	default:
		return AccessAll
	}
}

// Validate reports every problem with c at once, so an operator fixes a
// config file in one pass.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.Backend == "" {
		errs = append(errs, errors.New("backend is required (a libpq URL or key=value DSN)"))
	}
	switch c.RegistrySource {
	case RegistryPgtenant, RegistryDjangoTenants:
	default:
		errs = append(errs, fmt.Errorf("registry-source must be %s or %s, got %q", RegistryPgtenant, RegistryDjangoTenants, c.RegistrySource))
	}
	for _, tbl := range []struct{ name, value string }{
		{"django-tenant-table", c.DjangoTenantTable},
		{"django-domain-table", c.DjangoDomainTable},
	} {
		if _, err := ParseTableName(tbl.value); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", tbl.name, err))
		}
	}
	if c.PoolSize < 1 {
		errs = append(errs, fmt.Errorf("pool-size must be at least 1, got %d", c.PoolSize))
	}
	if c.GoMaxProcs < 0 {
		errs = append(errs, fmt.Errorf("gomaxprocs must be 0 (Go's default) or more, got %d", c.GoMaxProcs))
	}
	switch c.PoolMode {
	case PoolTransaction, PoolSession:
	default:
		errs = append(errs, fmt.Errorf("pool-mode must be transaction or session, got %q", c.PoolMode))
	}
	switch c.TenantFrom {
	case TenantFromDatabase, TenantFromUser:
	case TenantFromSNI:
		// A django-tenants registry knows tenants by their domains, so the
		// whole server name can name one; pgtenant's own knows names only.
		if c.SNISuffix == "" && c.RegistrySource != RegistryDjangoTenants {
			errs = append(errs, errors.New("tenant-from sni needs sni-suffix (for example .db.example.com), or registry-source django-tenants to look the whole host name up as a domain"))
		}
		if c.TLSCert == "" {
			errs = append(errs, errors.New("tenant-from sni needs tls-cert and tls-key: the server name comes with TLS"))
		}
	default:
		errs = append(errs, fmt.Errorf("tenant-from must be database, user or sni, got %q", c.TenantFrom))
	}
	if c.SNISuffix != "" && (!strings.HasPrefix(c.SNISuffix, ".") || len(c.SNISuffix) < 2) {
		errs = append(errs, fmt.Errorf("sni-suffix must start with a dot, as in .db.example.com, got %q", c.SNISuffix))
	}
	switch c.AuthType {
	case "", AuthTrust:
	case AuthSCRAM, AuthMD5, AuthPassword:
		if c.AuthFile == "" && c.AuthQuery == "" {
			errs = append(errs, fmt.Errorf("auth-type %s needs a user source: auth-file or auth-query", c.AuthType))
		}
	default:
		errs = append(errs, fmt.Errorf("auth-type must be scram-sha-256, md5, password or trust, got %q", c.AuthType))
	}
	switch c.TenantAccess {
	case "", AccessAll:
	case AccessGranted:
		if c.EffectiveAuthType() == AuthTrust {
			// Grants name users; under trust anyone can claim any name.
			errs = append(errs, errors.New("tenant-access granted needs authentication: set auth-file or auth-query"))
		}
	default:
		errs = append(errs, fmt.Errorf("tenant-access must be granted or all, got %q", c.TenantAccess))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key go together: set both or neither"))
	}
	switch c.ClientTLS {
	case ClientTLSDisable, ClientTLSAllow:
	case ClientTLSRequire:
		if c.TLSCert == "" {
			errs = append(errs, errors.New("client-tls require needs tls-cert and tls-key"))
		}
	default:
		errs = append(errs, fmt.Errorf("client-tls must be disable, allow or require, got %q", c.ClientTLS))
	}
	if c.MaxClientConn < 1 {
		errs = append(errs, fmt.Errorf("max-client-conn must be at least 1, got %d", c.MaxClientConn))
	}
	if c.MaxStartupConn < 1 {
		errs = append(errs, fmt.Errorf("max-startup-conn must be at least 1, got %d", c.MaxStartupConn))
	}
	if c.MaxStartupPerAddr < 0 {
		errs = append(errs, fmt.Errorf("max-startup-per-addr must not be negative (0 turns it off), got %d", c.MaxStartupPerAddr))
	}
	if c.MaxMessageSize < MinMessageSize || c.MaxMessageSize > MaxMessageSizeLimit {
		errs = append(errs, fmt.Errorf("max-message-size must be between %d and %d bytes, got %d",
			MinMessageSize, MaxMessageSizeLimit, c.MaxMessageSize))
	}
	if c.MaxClientStatements < 0 {
		errs = append(errs, fmt.Errorf("max-client-statements must not be negative (0 turns it off), got %d", c.MaxClientStatements))
	}
	if c.MaxClientStatementBytes < 0 {
		errs = append(errs, fmt.Errorf("max-client-statement-bytes must not be negative (0 turns it off), got %d", c.MaxClientStatementBytes))
	}
	for _, n := range []struct {
		name  string
		value int
	}{
		{"tenant-max-backends", c.TenantMaxBackends},
		{"tenant-max-clients", c.TenantMaxClients},
		{"tenant-rate-burst", c.TenantRateBurst},
	} {
		if n.value < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (0 turns it off), got %d", n.name, n.value))
		}
	}
	if c.TenantRate < 0 || math.IsNaN(c.TenantRate) || math.IsInf(c.TenantRate, 0) {
		errs = append(errs, fmt.Errorf("tenant-rate must be a number of transactions per second, 0 or more (0 turns it off), got %v", c.TenantRate))
	}
	type durationSetting struct {
		name      string
		value     time.Duration
		mayBeZero bool
	}
	for _, d := range []durationSetting{
		{"query-wait-timeout", c.QueryWaitTimeout, false},
		{"server-connect-timeout", c.ServerConnectTimeout, false},
		{"startup-timeout", c.StartupTimeout, false},
		{"server-idle-timeout", c.ServerIdleTimeout, true},
		{"server-lifetime", c.ServerLifetime, true},
		{"server-check-idle", c.ServerCheckIdle, true},
		{"tenant-cache-ttl", c.TenantCacheTTL, true},
		{"tenant-miss-ttl", c.TenantMissTTL, true},
		{"shutdown-timeout", c.ShutdownTimeout, true},
		{"idle-transaction-timeout", c.IdleTransactionTimeout, true},
		{"schema-size-interval", c.SchemaSizeInterval, true},
	} {
		switch {
		case d.value < 0:
			errs = append(errs, fmt.Errorf("%s must not be negative, got %s", d.name, d.value))
		case d.value == 0 && !d.mayBeZero:
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", d.name, d.value))
		}
	}
	if c.MaxPreparedStatements < 1 {
		errs = append(errs, fmt.Errorf("max-prepared-statements must be at least 1, got %d", c.MaxPreparedStatements))
	}
	switch c.Unpoolable {
	case UnpoolablePin, UnpoolableRefuse:
	default:
		errs = append(errs, fmt.Errorf("unpoolable must be pin or refuse, got %q", c.Unpoolable))
	}
	for _, s := range c.SharedSchemas {
		if !sharedSchemaPattern.MatchString(s) {
			errs = append(errs, fmt.Errorf("shared-schemas: %q is not a plain schema name (lower-case letters, digits, _)", s))
		}
	}
	switch c.Isolation {
	case IsolationSchema:
	case IsolationRole:
		if len(c.RoleSecret) < MinRoleSecretLen {
			errs = append(errs, fmt.Errorf("isolation role needs the role secret that tenant role passwords derive from, at least %d bytes: set %s or role-secret-file",
				MinRoleSecretLen, RoleSecretEnv))
		}
	default:
		errs = append(errs, fmt.Errorf("isolation must be schema or role, got %q", c.Isolation))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics-listen %q: %w", c.MetricsListen, err))
		}
	}
	if n, err := strconv.Atoi(c.MetricsTenants); c.MetricsTenants != MetricsTenantsAll && (err != nil || n < 1) {
		errs = append(errs, fmt.Errorf("metrics-tenants must be all or a number of tenants of at least 1, got %q", c.MetricsTenants))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log-format must be text or json, got %q", c.LogFormat))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log-level must be debug, info, warn or error, got %q", c.LogLevel))
	}
	for _, u := range c.AdminUsers {
		if strings.ContainsFunc(u, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			errs = append(errs, fmt.Errorf("admin-users: %q contains a control character", u))
		}
	}
	return errors.Join(errs...)
}

// maxIdentifierLen is PostgreSQL's NAMEDATALEN-1: a longer name would be
// truncated by the server, and then name another table than the one given.
const maxIdentifierLen = 63

// ParseTableName splits a table name given in the configuration, "table"
// or "schema.table", into its parts, which are used as they are, case and
// all: they are quoted as identifiers (pgx.Identifier) in SQL, as Django
// quotes them when it creates the tables. A name without a schema is in
// public, where django-tenants keeps the shared apps' tables: the lookup
// does not depend on the search_path of the registry role.
func ParseTableName(s string) ([]string, error) {
	parts := strings.Split(s, ".")
	if len(parts) == 1 {
		parts = []string{"public", parts[0]}
	}
	if len(parts) != 2 {
		return nil, fmt.Errorf("%q is not a table name: want table or schema.table", s)
	}
	for _, p := range parts {
		switch {
		case p == "":
			return nil, fmt.Errorf("%q is not a table name: want table or schema.table, neither part empty", s)
		case len(p) > maxIdentifierLen:
			return nil, fmt.Errorf("%q is not a table name: %q is longer than %d bytes", s, p, maxIdentifierLen)
		case strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f || r == '"' }):
			return nil, fmt.Errorf("%q is not a table name: it contains a control character or a double quote", s)
		}
	}
	return parts, nil
}

// ApplyGoMaxProcs sets runtime.GOMAXPROCS to GoMaxProcs when that is set
// and returns the value in force.
func (c Config) ApplyGoMaxProcs() int {
	if c.GoMaxProcs > 0 {
		runtime.GOMAXPROCS(c.GoMaxProcs)
	}
	return runtime.GOMAXPROCS(0)
}
