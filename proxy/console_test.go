package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/config"
)

func TestParseConsole(t *testing.T) {
	tests := []struct {
		in   string
		want consoleCmd
		code string // SQLSTATE when refused
	}{
		{in: "SHOW TENANTS", want: consoleCmd{verb: "SHOW TENANTS"}},
		{in: "  show\ttenants  ", want: consoleCmd{verb: "SHOW TENANTS"}},
		{in: "Show Pools", want: consoleCmd{verb: "SHOW POOLS"}},
		{in: "show clients", want: consoleCmd{verb: "SHOW CLIENTS"}},
		{in: "show servers", want: consoleCmd{verb: "SHOW SERVERS"}},
		{in: "show stats", want: consoleCmd{verb: "SHOW STATS"}},
		{in: "show config", want: consoleCmd{verb: "SHOW CONFIG"}},
		{in: "show version", want: consoleCmd{verb: "SHOW VERSION"}},
		{in: "pause", want: consoleCmd{verb: "PAUSE"}},
		{in: "PAUSE Acme", want: consoleCmd{verb: "PAUSE", arg: "acme"}},
		{in: `PAUSE "acme"`, want: consoleCmd{verb: "PAUSE", arg: "acme"}},
		{in: `PAUSE "Acme"`, want: consoleCmd{verb: "PAUSE", arg: "Acme"}},
		{in: "resume acme", want: consoleCmd{verb: "RESUME", arg: "acme"}},
		{in: "resume", want: consoleCmd{verb: "RESUME"}},
		{in: "disable acme", want: consoleCmd{verb: "DISABLE", arg: "acme"}},
		{in: "enable acme", want: consoleCmd{verb: "ENABLE", arg: "acme"}},
		{in: "kill acme", want: consoleCmd{verb: "KILL", arg: "acme"}},
		{in: "kill_client 42", want: consoleCmd{verb: "KILL_CLIENT", arg: "42"}},
		{in: "reload", want: consoleCmd{verb: "RELOAD"}},
		{in: "shutdown", want: consoleCmd{verb: "SHUTDOWN"}},
		{in: "shutdown wait_for_clients", want: consoleCmd{verb: "SHUTDOWN", arg: "wait_for_clients"}},
		{in: "shutdown now", code: "42601"},
		{in: "SHOW", code: "42601"},
		{in: "SHOW DATABASES", code: "42601"},
		{in: "SELECT 1", code: "42601"},
		{in: "SHOW TENANTS acme", code: "42601"},
		{in: "DISABLE", code: "42601"},
		{in: "KILL a b", code: "42601"},
		{in: "reload now", code: "42601"},
	}
	for _, tt := range tests {
		got, err := parseConsole(tt.in)
		if tt.code != "" {
			if err == nil || err.Code != tt.code {
				t.Errorf("parseConsole(%q) = %v, %v; want SQLSTATE %s", tt.in, got, err, tt.code)
			} else if err.Hint == "" {
				t.Errorf("parseConsole(%q): error %q has no hint listing the commands", tt.in, err.Message)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseConsole(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestKebab(t *testing.T) {
	for in, want := range map[string]string{
		"MaxClientConn": "max-client-conn", "TLSCert": "tls-cert", "SNISuffix": "sni-suffix",
		"AuthCleartextWithoutTLS": "auth-cleartext-without-tls", "Listen": "listen", "AdminUsers": "admin-users",
	} {
		if got := kebab(in); got != want {
			t.Errorf("kebab(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestConfigRowsHideSecrets: SHOW CONFIG shows no password and no secret.
func TestConfigRowsHideSecrets(t *testing.T) {
	cfg := config.Default()
	cfg.Backend = "host=db user=pool password='s3cr3t word' dbname=app"
	cfg.Registry = "postgres://admin:hunter2@db/app?password=other&sslmode=disable"
	cfg.RoleSecret = "rolesecretrolesecretrolesecret!!"
	cfg.AuthMockSecret = "mockmockmock"
	cfg.QueryWaitTimeout = 5 * time.Second
	var all strings.Builder
	keys := map[string]string{}
	for _, kv := range configRows(cfg) {
		keys[kv[0]] = kv[1]
		all.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	for _, secret := range []string{"s3cr3t", "hunter2", "other", "rolesecret", "mockmock"} {
		if strings.Contains(all.String(), secret) {
			t.Errorf("SHOW CONFIG shows %q:\n%s", secret, all.String())
		}
	}
	if keys["query-wait-timeout"] != "5s" || keys["pool-size"] != "20" || !strings.Contains(keys["backend"], "host=db") {
		t.Errorf("unexpected rows:\n%s", all.String())
	}
}
