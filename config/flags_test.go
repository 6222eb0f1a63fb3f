package config

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

const testFile = "testdata/pgtenant.toml"

// clearEnv unsets every variable the flags read, so a PGTENANT_* variable in
// the shell running the tests cannot change a result. t.Setenv restores them.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, f := range ServeFlags() {
		for _, name := range f.(cli.DocGenerationFlag).GetEnvVars() {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
	t.Setenv(RoleSecretEnv, "")
	os.Unsetenv(RoleSecretEnv)
}

// runCommand runs `pgtenant <command...> <args...>` with flags and
// LoadConfigFile wired the way main wires them, and returns what FromContext
// built.
func runCommand(t *testing.T, flags []cli.Flag, command []string, args ...string) (Config, error) {
	t.Helper()
	var got Config
	leaf := &cli.Command{
		Name:   command[len(command)-1],
		Flags:  flags,
		Before: LoadConfigFile(flags),
		Action: func(c *cli.Context) error {
			var err error
			got, err = FromContext(c)
			return err
		},
	}
	root := leaf
	for i := len(command) - 2; i >= 0; i-- {
		root = &cli.Command{Name: command[i], Subcommands: []*cli.Command{root}}
	}
	app := &cli.App{
		Name:      "pgtenant",
		Writer:    io.Discard,
		ErrWriter: io.Discard,
		Commands:  []*cli.Command{root},
	}
	err := app.Run(append(append([]string{"pgtenant"}, command...), args...))
	return got, err
}

func runServe(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	return runCommand(t, ServeFlags(), []string{"serve"}, args...)
}

// fromFile is Default with testdata/pgtenant.toml applied.
func fromFile(c *Config) {
	c.Backend = "postgres://pgtenant@db.internal:5432/registry"
	c.PoolSize = 4
	c.PoolMode = PoolSession
	c.QueryWaitTimeout = 5 * time.Second
	c.ServerLifetime = 0
	c.LogFormat = "json"
	c.MaxMessageSize = 1 << 20
	c.MaxStartupPerAddr = 0
	c.MetricsTenants = "7"
}

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want func(*Config)
	}{
		{
			name: "defaults when nothing but the backend is set",
			args: []string{"--backend", "postgres://localhost/registry"},
			want: func(c *Config) { c.Backend = "postgres://localhost/registry" },
		},
		{
			name: "file only",
			args: []string{"--config", testFile},
			want: fromFile,
		},
		{
			name: "file named by PGTENANT_CONFIG",
			env:  map[string]string{"PGTENANT_CONFIG": testFile},
			want: fromFile,
		},
		{
			name: "environment only",
			env: map[string]string{
				"PGTENANT_BACKEND":          "postgres://env/registry",
				"PGTENANT_MAX_CLIENT_CONN":  "100",
				"PGTENANT_TENANT_CACHE_TTL": "90s",
				"PGTENANT_TENANT_FROM":      "user",
				"PGTENANT_TENANT_RATE":      "2.5",
			},
			want: func(c *Config) {
				c.Backend = "postgres://env/registry"
				c.TenantRate = 2.5
				c.MaxClientConn = 100
				c.TenantCacheTTL = 90 * time.Second
				c.TenantFrom = TenantFromUser
			},
		},
		{
			name: "environment over file",
			env: map[string]string{
				"PGTENANT_POOL_SIZE":          "8",
				"PGTENANT_QUERY_WAIT_TIMEOUT": "7s",
				"PGTENANT_SERVER_LIFETIME":    "2h",
				"PGTENANT_LOG_FORMAT":         "text",
			},
			args: []string{"--config", testFile},
			want: func(c *Config) {
				fromFile(c)
				c.PoolSize = 8
				c.QueryWaitTimeout = 7 * time.Second
				c.ServerLifetime = 2 * time.Hour
				c.LogFormat = "text"
			},
		},
		{
			name: "flag over environment over file",
			env: map[string]string{
				"PGTENANT_POOL_SIZE":           "8",
				"PGTENANT_QUERY_WAIT_TIMEOUT":  "7s",
				"PGTENANT_SERVER_IDLE_TIMEOUT": "2m",
				"PGTENANT_MAX_MESSAGE_SIZE":    "2097152",
				"PGTENANT_MAX_STARTUP_CONN":    "300",
			},
			args: []string{"--config", testFile, "--pool-size", "16", "--query-wait-timeout", "9s", "--pool-mode", "transaction",
				"--max-message-size", "4194304"},
			want: func(c *Config) {
				fromFile(c)
				c.MaxMessageSize = 4 << 20
				c.MaxStartupConn = 300
				c.PoolSize = 16
				c.QueryWaitTimeout = 9 * time.Second
				c.PoolMode = PoolTransaction
				c.ServerIdleTimeout = 2 * time.Minute
			},
		},
		{
			name: "flag over file",
			args: []string{"--config", testFile, "--pool-size=2", "--server-lifetime=30m"},
			want: func(c *Config) {
				fromFile(c)
				c.PoolSize = 2
				c.ServerLifetime = 30 * time.Minute
			},
		},
		{
			// The file's pool-mode is invalid, but it must never be read.
			name: "environment hides a bad file value",
			env:  map[string]string{"PGTENANT_POOL_MODE": "session"},
			args: []string{"--config", "testdata/bad-enum.toml"},
			want: func(c *Config) {
				c.Backend = "postgres://db/registry"
				c.PoolMode = PoolSession
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := runServe(t, tt.args...)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestServeErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string // substrings of the error
	}{
		{
			name: "nothing set",
			want: []string{"backend is required"},
		},
		{
			name: "missing file",
			args: []string{"--config", "testdata/missing.toml"},
			want: []string{"testdata/missing.toml", "no such file"},
		},
		{
			name: "bad TOML",
			args: []string{"--config", "testdata/bad-syntax.toml"},
			want: []string{"testdata/bad-syntax.toml", "line 2"},
		},
		{
			name: "unknown key in file",
			args: []string{"--config", "testdata/unknown-key.toml"},
			want: []string{"testdata/unknown-key.toml", "unknown setting(s) pool_size"},
		},
		{
			name: "wrong type in file",
			args: []string{"--config", "testdata/wrong-type.toml"},
			want: []string{"testdata/wrong-type.toml", "pool-size"},
		},
		{
			name: "bad enum in file",
			args: []string{"--config", "testdata/bad-enum.toml"},
			want: []string{`pool-mode must be transaction or session, got "statement"`},
		},
		{
			name: "bad enum in environment",
			env:  map[string]string{"PGTENANT_POOL_MODE": "statement"},
			args: []string{"--backend", "postgres://localhost/registry"},
			want: []string{`pool-mode must be transaction or session, got "statement"`},
		},
		{
			name: "bad enum in environment over a good file",
			env:  map[string]string{"PGTENANT_LOG_FORMAT": "logfmt"},
			args: []string{"--config", testFile},
			want: []string{`log-format must be text or json, got "logfmt"`},
		},
		{
			name: "bad enum on the command line",
			args: []string{"--backend", "postgres://localhost/registry", "--tenant-from", "host"},
			want: []string{`tenant-from must be database, user or sni, got "host"`},
		},
		{
			name: "bad int in environment",
			env:  map[string]string{"PGTENANT_POOL_SIZE": "many"},
			args: []string{"--backend", "postgres://localhost/registry"},
			want: []string{"PGTENANT_POOL_SIZE", "pool-size"},
		},
		{
			name: "duration without a unit in environment",
			env:  map[string]string{"PGTENANT_QUERY_WAIT_TIMEOUT": "5"},
			args: []string{"--backend", "postgres://localhost/registry"},
			want: []string{"PGTENANT_QUERY_WAIT_TIMEOUT", "query-wait-timeout"},
		},
		{
			name: "negative duration on the command line",
			args: []string{"--backend", "postgres://localhost/registry", "--server-lifetime", "-1m"},
			want: []string{"server-lifetime must not be negative"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, err := runServe(t, tt.args...)
			if err == nil {
				t.Fatalf("run succeeded, want an error containing %q", tt.want)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

// Every Config field must be reachable from a flag, and each flag must land
// in its own field: set every flag to a non-default value and check that no
// field kept its default.
func TestEveryFieldHasAFlag(t *testing.T) {
	clearEnv(t)
	secretFile := t.TempDir() + "/role-secret"
	if err := os.WriteFile(secretFile, []byte("0123456789abcdef0123"), 0o600); err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"isolation":                  "role",
		"role-secret-file":           secretFile,
		"listen":                     "0.0.0.0:7000",
		"backend":                    "postgres://localhost/registry",
		"registry":                   "postgres://admin@localhost/registry",
		"allow-privileged-backend":   "true",
		"registry-source":            "django-tenants",
		"django-tenant-table":        "tenants_tenant",
		"django-domain-table":        "shared.tenants_domain",
		"pool-size":                  "3",
		"gomaxprocs":                 "2",
		"pool-mode":                  "session",
		"tenant-from":                "user",
		"query-wait-timeout":         "1s",
		"max-client-conn":            "9",
		"max-startup-conn":           "10",
		"max-startup-per-addr":       "11",
		"max-message-size":           "4096",
		"max-client-statements":      "12",
		"max-client-statement-bytes": "65536",
		"idle-transaction-timeout":   "13s",
		"tenant-max-backends":        "14",
		"tenant-max-clients":         "15",
		"tenant-rate":                "1.5",
		"tenant-rate-burst":          "16",
		"server-idle-timeout":        "2s",
		"server-lifetime":            "3s",
		"server-connect-timeout":     "4s",
		"server-check-idle":          "5s",
		"tenant-cache-ttl":           "6s",
		"tenant-miss-ttl":            "7s",
		"startup-timeout":            "8s",
		"shutdown-timeout":           "9s",
		"log-format":                 "json",
		"log-level":                  "debug",
		"schema-size-interval":       "14s",
		"max-prepared-statements":    "17",
		"unpoolable":                 "refuse",
		"shared-schemas":             "shared, lookup",
		"pin-reuse":                  "false",
		"sni-suffix":                 ".db.example.com",
		"auth-type":                  "md5",
		"auth-file":                  "/etc/pgtenant/userlist.txt",
		"auth-query":                 "SELECT rolname, rolpassword FROM auth.secret($1)",
		"auth-cleartext-without-tls": "true",
		"auth-mock-secret":           "0123456789abcdef",
		"tenant-access":              "granted",
		"tls-cert":                   "/etc/pgtenant/server.crt",
		"tls-key":                    "/etc/pgtenant/server.key",
		"client-tls":                 "require",
		"admin-users":                "admin, ops",
		"metrics-listen":             "127.0.0.1:9187",
		"metrics-tenants":            "all",
	}
	var args []string
	for _, f := range ServeFlags() {
		name := f.Names()[0]
		if name == "config" {
			continue
		}
		v, ok := values[name]
		if !ok {
			t.Fatalf("flag --%s has no test value", name)
		}
		args = append(args, "--"+name+"="+v)
	}
	// RoleSecret comes from --role-secret-file (or the environment).
	if fields := reflect.TypeFor[Config]().NumField() - 1; len(args) != fields || len(values) != fields {
		t.Fatalf("%d flags and %d test values for %d Config fields", len(args), len(values), fields)
	}
	got, err := runServe(t, args...)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if want := []string{"shared", "lookup"}; !reflect.DeepEqual(got.SharedSchemas, want) {
		t.Errorf("SharedSchemas = %q, want %q", got.SharedSchemas, want)
	}
	if want := []string{"admin", "ops"}; !reflect.DeepEqual(got.AdminUsers, want) {
		t.Errorf("AdminUsers = %q, want %q", got.AdminUsers, want)
	}
	gotV, defV := reflect.ValueOf(got), reflect.ValueOf(Default())
	for i := range gotV.NumField() {
		if reflect.DeepEqual(gotV.Field(i).Interface(), defV.Field(i).Interface()) {
			t.Errorf("Config.%s kept its default %v", gotV.Type().Field(i).Name, gotV.Field(i))
		}
	}
}

func TestEnvVarNames(t *testing.T) {
	env := map[string]string{}
	for _, f := range ServeFlags() {
		vars := f.(cli.DocGenerationFlag).GetEnvVars()
		if len(vars) != 1 {
			t.Fatalf("--%s reads %v, want one variable", f.Names()[0], vars)
		}
		env[f.Names()[0]] = vars[0]
	}
	for flag, want := range map[string]string{
		"config":                 "PGTENANT_CONFIG",
		"backend":                "PGTENANT_BACKEND",
		"pool-size":              "PGTENANT_POOL_SIZE",
		"query-wait-timeout":     "PGTENANT_QUERY_WAIT_TIMEOUT",
		"server-connect-timeout": "PGTENANT_SERVER_CONNECT_TIMEOUT",
		"tenant-cache-ttl":       "PGTENANT_TENANT_CACHE_TTL",
	} {
		if env[flag] != want {
			t.Errorf("--%s reads %q, want %q", flag, env[flag], want)
		}
	}
}

func TestBackendFlags(t *testing.T) {
	var names []string
	for _, f := range BackendFlags() {
		names = append(names, f.Names()...)
	}
	if !slices.Equal(names, []string{"config", "backend", "registry"}) {
		t.Fatalf("BackendFlags() = %v, want [config backend registry]", names)
	}

	tenantCreate := []string{"tenant", "create"}
	t.Run("shares the serve file", func(t *testing.T) {
		// The file also holds pool-size and other serve settings; an
		// admin command must accept them and keep its own defaults.
		clearEnv(t)
		got, err := runCommand(t, BackendFlags(), tenantCreate, "--config", testFile)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		want := Default()
		want.Backend = "postgres://pgtenant@db.internal:5432/registry"
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	})
	t.Run("environment over file", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("PGTENANT_BACKEND", "postgres://env/registry")
		got, err := runCommand(t, BackendFlags(), tenantCreate, "--config", testFile)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if got.Backend != "postgres://env/registry" {
			t.Errorf("Backend = %q, want the environment's", got.Backend)
		}
	})
	t.Run("flag over environment", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("PGTENANT_BACKEND", "postgres://env/registry")
		got, err := runCommand(t, BackendFlags(), tenantCreate, "--backend", "postgres://flag/registry")
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		if got.Backend != "postgres://flag/registry" {
			t.Errorf("Backend = %q, want the flag's", got.Backend)
		}
	})
	t.Run("backend required", func(t *testing.T) {
		clearEnv(t)
		_, err := runCommand(t, BackendFlags(), tenantCreate)
		if err == nil || !strings.Contains(err.Error(), "backend is required") {
			t.Fatalf("err = %v, want backend is required", err)
		}
	})
}

func TestNewLogger(t *testing.T) {
	t.Run("json at warn", func(t *testing.T) {
		var buf bytes.Buffer
		cfg := Default()
		cfg.LogFormat, cfg.LogLevel = "json", "warn"
		log := NewLogger(cfg, &buf)
		log.Info("dropped")
		log.Warn("kept", "tenant", "acme")
		var line map[string]any
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatalf("want exactly one JSON line, got %q: %v", buf.String(), err)
		}
		if line["msg"] != "kept" || line["level"] != "WARN" || line["tenant"] != "acme" {
			t.Errorf("got %v", line)
		}
	})
	t.Run("text at debug", func(t *testing.T) {
		var buf bytes.Buffer
		cfg := Default()
		cfg.LogLevel = "debug"
		NewLogger(cfg, &buf).Debug("probe", "tenant", "acme")
		if got := buf.String(); !strings.Contains(got, "level=DEBUG msg=probe tenant=acme") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("default is info", func(t *testing.T) {
		var buf bytes.Buffer
		log := NewLogger(Default(), &buf)
		log.Debug("dropped")
		log.Info("kept")
		if got := buf.String(); strings.Contains(got, "dropped") || !strings.Contains(got, "msg=kept") {
			t.Errorf("got %q", got)
		}
	})
}

// Role mode needs the role secret, which comes from --role-secret-file or
// PGTENANT_ROLE_SECRET (never a flag value), the file winning.
func TestIsolationRoleSecret(t *testing.T) {
	backend := []string{"--backend", "postgres://x/y"}
	t.Run("schema mode needs none", func(t *testing.T) {
		clearEnv(t)
		got, err := runServe(t, backend...)
		if err != nil || got.Isolation != IsolationSchema || got.RoleSecret != "" {
			t.Fatalf("got %q/%q, %v", got.Isolation, got.RoleSecret, err)
		}
	})
	t.Run("role mode without a secret", func(t *testing.T) {
		clearEnv(t)
		_, err := runServe(t, append(backend, "--isolation", "role")...)
		if err == nil || !strings.Contains(err.Error(), RoleSecretEnv) {
			t.Fatalf("err = %v, want one naming %s", err, RoleSecretEnv)
		}
	})
	t.Run("too short", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(RoleSecretEnv, "short")
		if _, err := runServe(t, append(backend, "--isolation", "role")...); err == nil {
			t.Fatal("a 5-byte secret was accepted")
		}
	})
	t.Run("from the environment", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(RoleSecretEnv, "0123456789abcdef-env")
		got, err := runServe(t, append(backend, "--isolation", "role")...)
		if err != nil || got.Isolation != IsolationRole || got.RoleSecret != "0123456789abcdef-env" {
			t.Fatalf("got %q/%q, %v", got.Isolation, got.RoleSecret, err)
		}
	})
	t.Run("the file wins", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(RoleSecretEnv, "0123456789abcdef-env")
		file := t.TempDir() + "/secret"
		if err := os.WriteFile(file, []byte("0123456789abcdef-file\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := runServe(t, append(backend, "--isolation", "role", "--role-secret-file", file)...)
		if err != nil || got.RoleSecret != "0123456789abcdef-file" {
			t.Fatalf("got %q, %v", got.RoleSecret, err)
		}
	})
	t.Run("unknown mode", func(t *testing.T) {
		clearEnv(t)
		if _, err := runServe(t, append(backend, "--isolation", "table")...); err == nil ||
			!strings.Contains(err.Error(), "isolation must be schema or role") {
			t.Fatalf("err = %v", err)
		}
	})
}
