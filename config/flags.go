package config

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// configFlagName names the flag, and the PGTENANT_CONFIG variable, that
// point at the TOML file. It is a plain cli flag rather than an altsrc one so
// that a file cannot name another file.
const configFlagName = "config"

// envPrefix keeps pgtenant's variables apart from libpq's PG* variables,
// which the backend driver reads on its own.
const envPrefix = "PGTENANT_"

// setting ties one Config field to its flag, so the name, the environment
// variable, the default and the way FromContext reads the value back are
// written once and shared by ServeFlags, BackendFlags and FromContext.
type setting struct {
	name string
	// newFlag returns a fresh flag on every call: cli flags keep state once
	// applied (the environment value, HasBeenSet, and for altsrc the
	// FlagSet), so two commands, or two runs in a test, must not share one.
	newFlag func() cli.Flag
	// load copies the parsed value into cfg.
	load func(c *cli.Context, cfg *Config)
	// value reads the setting's field of cfg (Diff); copy copies it from
	// src to dst (Reloader).
	value func(cfg *Config) any
	copy  func(src, dst *Config)
}

// settings is in the order --help lists the flags.
var settings = []setting{
	stringSetting("listen", "TCP host:port that clients connect to",
		func(c *Config) *string { return &c.Listen }),
	stringSetting("backend", "libpq URL or key=value DSN of the database holding the tenant schemas; the pool logs in with it, so tenant traffic runs as its role (required)",
		func(c *Config) *string { return &c.Backend }),
	stringSetting("registry", "DSN of the admin connection that reads the registry (schema pgtenant), listens for its changes and runs --auth-query; admin commands use it too; its role owns the registry (default: --backend)",
		func(c *Config) *string { return &c.Registry }),
	stringSetting("registry-source", "where tenants are looked up: pgtenant (its own registry, schema pgtenant) or django-tenants (read-only, from the tables of a django-tenants deployment: --django-tenant-table and --django-domain-table)",
		func(c *Config) *string { return &c.RegistrySource }),
	stringSetting("django-tenant-table", "with --registry-source django-tenants: the tenant model's table (the one with schema_name), table or schema.table; without a schema, in public",
		func(c *Config) *string { return &c.DjangoTenantTable }),
	stringSetting("django-domain-table", "with --registry-source django-tenants: the domain model's table (domain, tenant_id, is_primary), table or schema.table; without a schema, in public",
		func(c *Config) *string { return &c.DjangoDomainTable }),
	boolSetting("allow-privileged-backend", "start even though the --backend role is a superuser, has CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, owns the database or can write the registry (tenants could then take over the database)",
		func(c *Config) *bool { return &c.AllowPrivilegedBackend }),
	intSetting("pool-size", "number of backend connections shared by all tenants",
		func(c *Config) *int { return &c.PoolSize }),
	intSetting("gomaxprocs", "threads that run pgtenant at once (Go's GOMAXPROCS); 0: Go's default, every CPU the process may use or the GOMAXPROCS variable; set it lower to leave cores to a PostgreSQL on the same host",
		func(c *Config) *int { return &c.GoMaxProcs }),
	stringSetting("pool-mode", "when a backend changes hands: transaction (at every safe point) or session (when the client leaves)",
		func(c *Config) *string { return (*string)(&c.PoolMode) }),
	stringSetting("tenant-from", "which startup value names the tenant: database, user, or sni (the TLS server name under --sni-suffix, or else options=-c pgtenant.tenant=NAME)",
		func(c *Config) *string { return (*string)(&c.TenantFrom) }),
	stringSetting("sni-suffix", "domain under which tenants have host names (.db.example.com: acme.db.example.com is tenant or alias acme); a tenant named this way must agree with the one the startup packet names",
		func(c *Config) *string { return &c.SNISuffix }),
	stringSetting("auth-type", "how clients authenticate: scram-sha-256, md5, password or trust (default: scram-sha-256 with --auth-file or --auth-query, trust without)",
		func(c *Config) *string { return &c.AuthType }),
	stringSetting("auth-file", "PgBouncer-style userlist: one \"user\" \"SCRAM-SHA-256$...|md5...|plain\" per line; reread on SIGHUP",
		func(c *Config) *string { return &c.AuthFile }),
	stringSetting("auth-query", "SQL run on the registry connection (--registry) to find a user's secret, with the user name as $1, returning (name, secret); asked for users --auth-file does not list",
		func(c *Config) *string { return &c.AuthQuery }),
	stringSetting("auth-mock-secret", "secret that keys the salts shown to unknown users, so they stay the same across restarts and reveal nothing; give it through PGTENANT_AUTH_MOCK_SECRET or the config file, not the command line (default: random per process)",
		func(c *Config) *string { return &c.AuthMockSecret }),
	boolSetting("auth-cleartext-without-tls", "let --auth-type password ask for a cleartext password on a connection without TLS",
		func(c *Config) *bool { return &c.AuthCleartextWithoutTLS }),
	stringSetting("tenant-access", "granted (a user reaches only the tenants it is granted: pgtenant tenant grant) or all (default: granted with a user source, all without)",
		func(c *Config) *string { return &c.TenantAccess }),
	stringSetting("tls-cert", "PEM certificate chain shown to clients; reread on SIGHUP",
		func(c *Config) *string { return &c.TLSCert }),
	stringSetting("tls-key", "PEM private key of --tls-cert; reread on SIGHUP",
		func(c *Config) *string { return &c.TLSKey }),
	stringSetting("client-tls", "TLS from clients: disable, allow (when a certificate is set) or require (refuse clients without TLS)",
		func(c *Config) *string { return &c.ClientTLS }),
	durationSetting("query-wait-timeout", "how long a client waits for a backend connection before it gets an error",
		func(c *Config) *time.Duration { return &c.QueryWaitTimeout }),
	intSetting("max-client-conn", "number of concurrent client connections; one more is refused with SQLSTATE 53300",
		func(c *Config) *int { return &c.MaxClientConn }),
	intSetting("max-startup-conn", "number of connections accepted but not authenticated yet (TLS handshake, silence, password exchange); one more is refused with SQLSTATE 53300",
		func(c *Config) *int { return &c.MaxStartupConn }),
	intSetting("max-startup-per-addr", "number of connections from one client IP address still before their startup packet; one more is refused with SQLSTATE 53300; 0 turns it off",
		func(c *Config) *int { return &c.MaxStartupPerAddr }),
	intSetting("max-message-size", "largest length in bytes a client message may claim; a longer one is refused with SQLSTATE 08P01 before it is read",
		func(c *Config) *int { return &c.MaxMessageSize }),
	intSetting("max-client-statements", "named prepared statements one client may keep; a Parse of one more is refused with SQLSTATE 53400 until it closes some; 0: no cap",
		func(c *Config) *int { return &c.MaxClientStatements }),
	intSetting("max-client-statement-bytes", "bytes pgtenant may hold for one client's named prepared statements; a Parse over it is refused with SQLSTATE 53400; 0: no cap",
		func(c *Config) *int { return &c.MaxClientStatementBytes }),
	intSetting("tenant-max-backends", "backend connections one tenant may hold at once; its further transactions wait for one of its own without holding up other tenants; 0: no cap (a tenant's own setting overrides it)",
		func(c *Config) *int { return &c.TenantMaxBackends }),
	intSetting("tenant-max-clients", "concurrent clients of one tenant; one more is refused with SQLSTATE 53300; 0: no cap (a tenant's own setting overrides it)",
		func(c *Config) *int { return &c.TenantMaxClients }),
	floatSetting("tenant-rate", "transactions per second one tenant may start; over it they wait, and get SQLSTATE 53400 past --query-wait-timeout; 0 turns it off (a tenant's own setting overrides it)",
		func(c *Config) *float64 { return &c.TenantRate }),
	intSetting("tenant-rate-burst", "transactions a tenant may start at once under --tenant-rate; 0: one second's worth, at least 1",
		func(c *Config) *int { return &c.TenantRateBurst }),
	durationSetting("idle-transaction-timeout", "end a client idle inside a transaction longer than this (FATAL 25P03; the transaction is rolled back, the backend goes back to the pool); 0 turns it off",
		func(c *Config) *time.Duration { return &c.IdleTransactionTimeout }),
	durationSetting("server-idle-timeout", "close backend connections idle longer than this; 0 keeps them",
		func(c *Config) *time.Duration { return &c.ServerIdleTimeout }),
	durationSetting("server-lifetime", "close backend connections older than this, with up to 10% jitter; 0 keeps them",
		func(c *Config) *time.Duration { return &c.ServerLifetime }),
	durationSetting("server-connect-timeout", "limit on dialling and logging in to the backend",
		func(c *Config) *time.Duration { return &c.ServerConnectTimeout }),
	durationSetting("server-check-idle", "idle time after which checkout probes a backend connection for a server that went away",
		func(c *Config) *time.Duration { return &c.ServerCheckIdle }),
	durationSetting("tenant-cache-ttl", "how long a found tenant stays cached; NOTIFY on the registry channel drops it sooner",
		func(c *Config) *time.Duration { return &c.TenantCacheTTL }),
	durationSetting("tenant-miss-ttl", "how long an unknown tenant name stays cached, to keep floods of bad names off the registry",
		func(c *Config) *time.Duration { return &c.TenantMissTTL }),
	durationSetting("startup-timeout", "limit on a client's startup and authentication",
		func(c *Config) *time.Duration { return &c.StartupTimeout }),
	durationSetting("shutdown-timeout", "how long shutdown waits for clients in a transaction before closing them",
		func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
	intSetting("max-prepared-statements", "named prepared statements kept per backend connection (least recently used are closed beyond it)",
		func(c *Config) *int { return &c.MaxPreparedStatements }),
	stringSetting("unpoolable", "in transaction mode, what a client that uses LISTEN, session advisory locks, WITH HOLD cursors, temporary tables or SQL PREPARE gets: pin (keeps its backend until it disconnects) or refuse (an error)",
		func(c *Config) *string { return (*string)(&c.Unpoolable) }),
	boolSetting("pin-reuse", "skip the pin when a backend's last holder had the same tenant and settings and changed nothing pgtenant can see; false resets every backend at every checkout",
		func(c *Config) *bool { return &c.PinReuse }),
	listSetting("shared-schemas", "comma-separated schemas every tenant may put on its search_path besides its own and public",
		func(c *Config) *[]string { return &c.SharedSchemas }),
	stringSetting("isolation", "schema (tenants share the backend role; for cooperative applications) or role (each tenant's traffic runs as a LOGIN role of its own, made by pgtenant tenant isolate; PostgreSQL refuses whatever crosses tenants)",
		func(c *Config) *string { return &c.Isolation }),
	stringSetting("role-secret-file", "file holding the secret tenant role passwords derive from in --isolation role (default: the "+RoleSecretEnv+" variable)",
		func(c *Config) *string { return &c.RoleSecretFile }),
	stringSetting("metrics-listen", "host:port to serve Prometheus metrics on (/metrics); empty serves none",
		func(c *Config) *string { return &c.MetricsListen }),
	stringSetting("metrics-tenants", "tenants with series of their own: all, or N (the N most active; the rest are summed into tenant=\"other\")",
		func(c *Config) *string { return &c.MetricsTenants }),
	durationSetting("schema-size-interval", "how often every tenant schema's size is measured in the background, for metrics, SHOW TENANTS and storage quotas (a tenant over its quota turns read-only); 0 turns it off, quotas included",
		func(c *Config) *time.Duration { return &c.SchemaSizeInterval }),
	stringSetting("log-format", "log line format: text or json",
		func(c *Config) *string { return &c.LogFormat }),
	stringSetting("log-level", "least severe level logged: debug, info, warn or error",
		func(c *Config) *string { return &c.LogLevel }),
	listSetting("admin-users", "comma-separated users who may open the admin console (database pgtenant) after authenticating like any client; none turns the console off",
		func(c *Config) *[]string { return &c.AdminUsers }),
}

// stringSetting, intSetting, floatSetting and durationSetting take their defaults from
// Default so that --help, FromContext and the documented values cannot drift
// apart. None marks its flag Required: cli checks Required before any Before
// func runs, so a value that only the TOML file gives would be refused.
// Validate reports missing values instead.
func stringSetting(name, usage string, field func(*Config) *string) setting {
	def := Default()
	return setting{
		name: name,
		newFlag: func() cli.Flag {
			return altsrc.NewStringFlag(&cli.StringFlag{
				Name: name, Usage: usage, Value: *field(&def), EnvVars: envVars(name),
			})
		},
		load:  func(c *cli.Context, cfg *Config) { *field(cfg) = c.String(name) },
		copy:  func(src, dst *Config) { *field(dst) = *field(src) },
		value: func(cfg *Config) any { return *field(cfg) },
	}
}

// listSetting is a comma-separated string flag read into a slice; blanks
// around items are dropped.
func listSetting(name, usage string, field func(*Config) *[]string) setting {
	def := Default()
	return setting{
		name: name,
		newFlag: func() cli.Flag {
			return altsrc.NewStringFlag(&cli.StringFlag{
				Name: name, Usage: usage, Value: strings.Join(*field(&def), ","), EnvVars: envVars(name),
			})
		},
		load: func(c *cli.Context, cfg *Config) {
			var items []string
			for _, item := range strings.Split(c.String(name), ",") {
				if item = strings.TrimSpace(item); item != "" {
					items = append(items, item)
				}
			}
			*field(cfg) = items
		},
		copy:  func(src, dst *Config) { *field(dst) = *field(src) },
		value: func(cfg *Config) any { return strings.Join(*field(cfg), ",") },
	}
}

func boolSetting(name, usage string, field func(*Config) *bool) setting {
	def := Default()
	return setting{
		name: name,
		newFlag: func() cli.Flag {
			return altsrc.NewBoolFlag(&cli.BoolFlag{
				Name: name, Usage: usage, Value: *field(&def), EnvVars: envVars(name),
			})
		},
		load:  func(c *cli.Context, cfg *Config) { *field(cfg) = c.Bool(name) },
		copy:  func(src, dst *Config) { *field(dst) = *field(src) },
		value: func(cfg *Config) any { return *field(cfg) },
	}
}

func intSetting(name, usage string, field func(*Config) *int) setting {
	def := Default()
	return setting{
		name: name,
		newFlag: func() cli.Flag {
			return altsrc.NewIntFlag(&cli.IntFlag{
				Name: name, Usage: usage, Value: *field(&def), EnvVars: envVars(name),
			})
		},
		load:  func(c *cli.Context, cfg *Config) { *field(cfg) = c.Int(name) },
		copy:  func(src, dst *Config) { *field(dst) = *field(src) },
		value: func(cfg *Config) any { return *field(cfg) },
	}
}

func floatSetting(name, usage string, field func(*Config) *float64) setting {
	def := Default()
	return setting{
		name: name,
		newFlag: func() cli.Flag {
			return altsrc.NewFloat64Flag(&cli.Float64Flag{
				Name: name, Usage: usage, Value: *field(&def), EnvVars: envVars(name),
			})
		},
		load:  func(c *cli.Context, cfg *Config) { *field(cfg) = c.Float64(name) },
		copy:  func(src, dst *Config) { *field(dst) = *field(src) },
		value: func(cfg *Config) any { return *field(cfg) },
	}
}

func durationSetting(name, usage string, field func(*Config) *time.Duration) setting {
	def := Default()
	return setting{
		name: name,
		newFlag: func() cli.Flag {
			return altsrc.NewDurationFlag(&cli.DurationFlag{
				Name:    name,
				Usage:   usage + " (Go duration, e.g. 30s, 10m)",
				Value:   *field(&def),
				EnvVars: envVars(name),
			})
		},
		load:  func(c *cli.Context, cfg *Config) { *field(cfg) = c.Duration(name) },
		copy:  func(src, dst *Config) { *field(dst) = *field(src) },
		value: func(cfg *Config) any { return *field(cfg) },
	}
}

// envVars maps a flag name to its one variable: pool-size -> PGTENANT_POOL_SIZE.
func envVars(flagName string) []string {
	return []string{envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))}
}

func newConfigFlag() cli.Flag {
	return &cli.PathFlag{
		Name:      configFlagName,
		Usage:     "TOML file of settings keyed by flag name (pool-size = 4, query-wait-timeout = \"5s\"); flags and PGTENANT_* variables override it",
		EnvVars:   envVars(configFlagName),
		TakesFile: true,
	}
}

// ServeFlags returns the flags of `pgtenant serve`: --config and one flag per
// Config field. Call it once per command; the flags must not be shared (see
// setting.newFlag). Pair it with LoadConfigFile on the same command.
func ServeFlags() []cli.Flag {
	flags := []cli.Flag{newConfigFlag()}
	for _, s := range settings {
		flags = append(flags, s.newFlag())
	}
	return flags
}

// BackendFlags returns --config, --backend and --registry for admin
// commands such as `pgtenant tenant create`, which only talk to the registry
// but should read the same TOML file and variables as serve. They connect
// with --registry when it is set (the admin role that owns the registry),
// else with --backend.
func BackendFlags() []cli.Flag {
	flags := []cli.Flag{newConfigFlag()}
	for _, s := range settings {
		if usage, ok := adminUsage[s.name]; ok {
			f := s.newFlag()
			// serve's wording is about the pool and the running proxy;
			// an admin command only connects as the admin role.
			if sf, ok := f.(*altsrc.StringFlag); ok {
				sf.Usage = usage
			}
			flags = append(flags, f)
		}
	}
	return flags
}

// adminUsage is what --backend and --registry are for in an admin command
// (tenant, user, migrate, exec, each), where serve's --help would mislead.
var adminUsage = map[string]string{
	"backend": "libpq URL or key=value DSN of the database holding the tenant schemas; without --registry this command " +
		"connects with it as the admin role: the role that creates and owns the registry (schema pgtenant) and the tenant schemas",
	"registry": "DSN of the admin connection this command works with: its role creates and owns the registry (schema pgtenant) " +
		"and the tenant schemas (default: --backend)",
}

// SettingFlags returns the flags of the named settings of serve, for an
// admin command that must agree with how serve runs: pgtenant exec and each
// read tenant-from, to name a tenant as serve routes. Pair them with
// BackendFlags on the same command; an unknown name panics, as it is a bug.
func SettingFlags(names ...string) []cli.Flag {
	var flags []cli.Flag
	for _, name := range names {
		i := slices.IndexFunc(settings, func(s setting) bool { return s.name == name })
		if i < 0 {
			panic("config: no setting " + name)
		}
		flags = append(flags, settings[i].newFlag())
	}
	return flags
}

// IsolationFlags returns --isolation, --role-secret-file and
// --shared-schemas, for the admin commands that make tenant roles (tenant
// create, tenant isolate). Pair them with BackendFlags on the same command.
func IsolationFlags() []cli.Flag {
	var flags []cli.Flag
	for _, s := range settings {
		if s.name == "isolation" || s.name == "role-secret-file" || s.name == "shared-schemas" {
			flags = append(flags, s.newFlag())
		}
	}
	return flags
}

// RoleSecret reads the role secret as FromContext does: from the file named
// by --role-secret-file when set, else from RoleSecretEnv. It returns ""
// when neither is set and an error when the file cannot be read.
func RoleSecret(c *cli.Context) (string, error) {
	return readRoleSecret(c.String("role-secret-file"))
}

func readRoleSecret(file string) (string, error) {
	if file == "" {
		return os.Getenv(RoleSecretEnv), nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("role-secret-file: %w", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// LoadConfigFile returns the Before func that fills flags from the TOML file
// named by --config (or PGTENANT_CONFIG); without one it does nothing.
//
// Precedence is altsrc's: each altsrc flag takes the file's value only when
// it was set neither on the command line nor through its environment
// variable, so flags > environment > file > Default. One quirk comes with
// it: a variable that is set but empty counts as set, so the file's value is
// skipped and the default (or, for strings, "") is used.
//
// It must be the Before of the command that owns flags: altsrc can only set a
// flag after cli has applied it to that command's FlagSet, and it skips
// flags it has not seen without a word.
func LoadConfigFile(flags []cli.Flag) cli.BeforeFunc {
	return func(c *cli.Context) error {
		rememberExplicit(c)
		if !c.IsSet(configFlagName) {
			return nil
		}
		path := c.Path(configFlagName)
		source, err := readConfigFile(path)
		if err != nil {
			return err
		}
		if err := altsrc.ApplyInputSourceValues(c, source, flags); err != nil {
			return fmt.Errorf("config file %s: %w", path, err)
		}
		return nil
	}
}

// readConfigFile decodes the file itself instead of using
// altsrc.NewTomlSourceFromFile for two reasons: altsrc ignores keys no flag
// asks for, so a typo such as pool_size would silently leave the default in
// place; and its errors arrive nested in "inner error" wrappers that hide
// the line number. Keys are checked against every setting, not only the
// command's flags, so serve and the admin commands can share one file.
func readConfigFile(path string) (altsrc.InputSourceContext, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var raw map[string]any
	if err := toml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	var unknown []string
	values := make(map[any]any, len(raw))
	for key, value := range raw {
		if !slices.ContainsFunc(settings, func(s setting) bool { return s.name == key }) {
			unknown = append(unknown, key)
			continue
		}
		// TOML integers decode as int64, but altsrc's IntFlag only
		// accepts int.
		if n, ok := value.(int64); ok {
			value = int(n)
			if key == "metrics-tenants" {
				// A string setting that is often a number.
				value = strconv.Itoa(int(n))
			}
		}
		values[key] = value
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, fmt.Errorf("config file %s: unknown setting(s) %s; keys are flag names such as pool-size",
			path, strings.Join(unknown, ", "))
	}
	return altsrc.NewMapInputSource(path, values), nil
}

// FromContext returns Default overridden by every setting that was given on
// the command line, in the environment or in the TOML file, and validated.
// Settings the command has no flag for keep their defaults, so admin commands
// built on BackendFlags can use it too.
func FromContext(c *cli.Context) (Config, error) {
	cfg := Default()
	for _, s := range settings {
		if c.IsSet(s.name) {
			s.load(c, &cfg)
		}
	}
	secret, err := readRoleSecret(cfg.RoleSecretFile)
	if err != nil {
		return Config{}, err
	}
	cfg.RoleSecret = secret
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// NewLogger builds the process logger from a validated Config. An unknown
// level, which Validate would have refused, falls back to info rather than
// silencing the log.
func NewLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level // info
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
