package integration

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// The admin console (README "Admin console"): database pgtenant, for
// --admin-users, over psql and over pgx's simple protocol.

func withAdmin(c *config.Config) { c.AdminUsers = []string{"admin"} }

// consoleConn opens a console connection as user (admin by default) with
// pgx's simple protocol.
func consoleConn(t testing.TB, p *Proxy) *pgx.Conn {
	t.Helper()
	conn, err := consoleDial(p, "admin", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatalf("connect to the console: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func consoleDial(p *Proxy, user string, mode pgx.QueryExecMode) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=pgtenant sslmode=disable connect_timeout=10",
		p.Host, p.Port, user))
	if err != nil {
		return nil, err
	}
	cfg.DefaultQueryExecMode = mode
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// consoleRows runs a console command and returns its column names and rows
// as text ("NULL" for NULL).
func consoleRows(t testing.TB, conn *pgx.Conn, cmd string) ([]string, []map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	defer rows.Close()
	var cols []string
	for _, f := range rows.FieldDescriptions() {
		cols = append(cols, f.Name)
	}
	var out []map[string]string
	for rows.Next() {
		row := map[string]string{}
		for i, v := range rows.RawValues() {
			if v == nil {
				row[cols[i]] = "NULL"
			} else {
				row[cols[i]] = string(v)
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return cols, out
}

// rowWhere returns the row whose column key is val, or nil.
func rowWhere(rows []map[string]string, key, val string) map[string]string {
	for _, r := range rows {
		if r[key] == val {
			return r
		}
	}
	return nil
}

// consolePsql runs one console command with psql as admin, unaligned with
// a header: the first line is the column names.
func consolePsql(t testing.TB, p *Proxy, user, cmd string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-A", "-P", "footer=off",
		"-h", p.Host, "-p", strconv.Itoa(p.Port), "-U", user, "-d", "pgtenant", "-c", cmd)
	c.Env = cleanEnv()
	out, err := c.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func mustPsql(t testing.TB, p *Proxy, cmd string) string {
	t.Helper()
	out, err := consolePsql(t, p, "admin", cmd)
	if err != nil {
		t.Fatalf("psql %s: %v\n%s", cmd, err, out)
	}
	return out
}

func consoleExec(t testing.TB, conn *pgx.Conn, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tag, err := conn.Exec(ctx, cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return tag.String()
}

func ctx30(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConsoleShow(t *testing.T) {
	createTenant(t, "con_show", "CREATE TABLE t (v int)")
	p := startProxy(t, withAdmin)
	ctx := ctx30(t)
	c1 := p.Connect(t, "con_show", pgx.QueryExecModeCacheStatement)
	c2 := p.Connect(t, "con_show", pgx.QueryExecModeSimpleProtocol)
	for _, c := range []*pgx.Conn{c1, c2} {
		if _, err := c.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			t.Fatal(err)
		}
	}
	admin := consoleConn(t, p)

	// SHOW TENANTS: two clients, neither waiting nor holding a backend.
	cols, rows := consoleRows(t, admin, "SHOW TENANTS")
	if got := strings.Join(cols, ","); got != "name,schema,state,clients,waiting,backends,transactions,schema_size,tier" {
		t.Errorf("SHOW TENANTS columns = %s", got)
	}
	r := rowWhere(rows, "name", "con_show")
	if r == nil || r["schema"] != "con_show" || r["state"] != "active" || r["clients"] != "2" || r["waiting"] != "0" || r["backends"] != "0" {
		t.Fatalf("SHOW TENANTS row of con_show = %v", r)
	}
	if _, err := strconv.ParseInt(r["transactions"], 10, 64); err != nil {
		t.Errorf("transactions = %q, not a number", r["transactions"])
	}
	out := mustPsql(t, p, "show tenants;")
	if !strings.HasPrefix(out, "name|schema|state|clients|waiting|backends|transactions|schema_size|tier\n") ||
		!strings.Contains(out, "\ncon_show|con_show|active|2|0|0|") {
		t.Errorf("psql SHOW TENANTS:\n%s", out)
	}

	// A transaction open on c1: it holds a backend.
	tx, err := c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	c1id := strconv.FormatUint(uint64(c1.PgConn().PID()), 10)
	c2id := strconv.FormatUint(uint64(c2.PgConn().PID()), 10)

	cols, rows = consoleRows(t, admin, "SHOW POOLS")
	if got := strings.Join(cols, ","); got != "tenant,cl_active,cl_waiting,sv_active,sv_idle,sv_open,pool_size,pool_waiting,pool_mode,paused,backend" {
		t.Errorf("SHOW POOLS columns = %s", got)
	}
	r = rowWhere(rows, "tenant", "con_show")
	if r == nil || r["cl_active"] != "2" || r["cl_waiting"] != "0" || r["sv_active"] != "1" || r["pool_size"] != "4" ||
		r["pool_mode"] != "transaction" || r["paused"] != "f" {
		t.Errorf("SHOW POOLS row = %v", r)
	}
	out = mustPsql(t, p, "SHOW POOLS")
	if !strings.Contains(out, "\ncon_show|2|0|1|") {
		t.Errorf("psql SHOW POOLS:\n%s", out)
	}

	cols, rows = consoleRows(t, admin, "SHOW CLIENTS")
	if got := strings.Join(cols, ","); got != "id,user,tenant,addr,state,connected_since,in_transaction" {
		t.Errorf("SHOW CLIENTS columns = %s", got)
	}
	if r := rowWhere(rows, "id", c1id); r == nil || r["user"] != "app" || r["tenant"] != "con_show" ||
		r["state"] != "idle in transaction" || r["in_transaction"] != "t" || !strings.HasPrefix(r["addr"], "127.0.0.1:") {
		t.Errorf("SHOW CLIENTS row of c1 = %v", r)
	}
	if r := rowWhere(rows, "id", c2id); r == nil || r["state"] != "idle" || r["in_transaction"] != "f" {
		t.Errorf("SHOW CLIENTS row of c2 = %v", r)
	}
	if r := rowWhere(rows, "tenant", "pgtenant"); r == nil || r["user"] != "admin" || r["state"] != "console" {
		t.Errorf("SHOW CLIENTS has no console row: %v", rows)
	}
	out = mustPsql(t, p, "SHOW CLIENTS")
	if !strings.Contains(out, "\n"+c1id+"|app|con_show|127.0.0.1:") || !strings.Contains(out, "|idle in transaction|") {
		t.Errorf("psql SHOW CLIENTS:\n%s", out)
	}

	var serverPID int64
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&serverPID); err != nil {
		t.Fatal(err)
	}
	cols, rows = consoleRows(t, admin, "SHOW SERVERS")
	if got := strings.Join(cols, ","); got != "pid,state,tenant,client_id,role,connected_since,idle_since,backend" {
		t.Errorf("SHOW SERVERS columns = %s", got)
	}
	if r := rowWhere(rows, "pid", strconv.FormatInt(serverPID, 10)); r == nil || r["state"] != "active" ||
		r["tenant"] != "con_show" || r["client_id"] != c1id {
		t.Errorf("SHOW SERVERS: no active row for server %d held by %s: %v", serverPID, c1id, rows)
	}
	for _, r := range rows {
		if r["state"] == "idle" && (r["client_id"] != "NULL" || r["idle_since"] == "NULL") {
			t.Errorf("SHOW SERVERS idle row = %v", r)
		}
	}
	out = mustPsql(t, p, "SHOW SERVERS")
	if !strings.Contains(out, fmt.Sprintf("\n%d|active|con_show|%s|", serverPID, c1id)) {
		t.Errorf("psql SHOW SERVERS:\n%s", out)
	}

	cols, rows = consoleRows(t, admin, "SHOW STATS")
	if got := strings.Join(cols, ","); got != "tenants,clients,waiting,backends,transactions,pool_size,pool_open,pool_idle,pool_waiting,dials,dial_failures,destroys,timeouts" {
		t.Errorf("SHOW STATS columns = %s", got)
	}
	if len(rows) != 1 || rows[0]["tenants"] != "1" || rows[0]["clients"] != "2" || rows[0]["backends"] != "1" ||
		rows[0]["waiting"] != "0" || rows[0]["pool_size"] != "4" || rows[0]["timeouts"] != "0" {
		t.Errorf("SHOW STATS = %v", rows)
	}
	out = mustPsql(t, p, "SHOW STATS")
	if !strings.Contains(out, "\n1|2|0|1|") {
		t.Errorf("psql SHOW STATS:\n%s", out)
	}

	cols, rows = consoleRows(t, admin, "SHOW CONFIG")
	if got := strings.Join(cols, ","); got != "key,value" {
		t.Errorf("SHOW CONFIG columns = %s", got)
	}
	for key, want := range map[string]string{"pool-size": "4", "admin-users": "admin", "query-wait-timeout": "10s",
		"pool-mode": "transaction", "role-secret": ""} {
		if r := rowWhere(rows, "key", key); r == nil || r["value"] != want {
			t.Errorf("SHOW CONFIG %s = %v, want %q", key, r, want)
		}
	}
	out = mustPsql(t, p, "SHOW CONFIG")
	if !strings.Contains(out, "\npool-size|4\n") {
		t.Errorf("psql SHOW CONFIG:\n%s", out)
	}

	cols, rows = consoleRows(t, admin, "SHOW VERSION")
	if len(cols) != 1 || cols[0] != "version" || len(rows) != 1 || !strings.HasPrefix(rows[0]["version"], "pgtenant ") {
		t.Errorf("SHOW VERSION = %v %v", cols, rows)
	}
	out = mustPsql(t, p, "SHOW VERSION")
	if !strings.HasPrefix(out, "version\npgtenant ") {
		t.Errorf("psql SHOW VERSION:\n%s", out)
	}
}

// TestConsolePauseResume: PAUSE of one tenant holds its new transactions
// back while another tenant keeps working; a transaction running when
// PAUSE is given finishes, and PAUSE answers once it has; RESUME lets the
// held one through.
func TestConsolePauseResume(t *testing.T) {
	createTenant(t, "con_pa", "CREATE TABLE t (v int)", "INSERT INTO t VALUES (7)")
	createTenant(t, "con_pb", "CREATE TABLE t (v int)", "INSERT INTO t VALUES (8)")
	p := startProxy(t, withAdmin)
	ctx := ctx30(t)
	a1 := p.Connect(t, "con_pa", pgx.QueryExecModeCacheStatement)
	a2 := p.Connect(t, "con_pa", pgx.QueryExecModeCacheStatement)
	b1 := p.Connect(t, "con_pb", pgx.QueryExecModeCacheStatement)
	admin := consoleConn(t, p)

	// a2 is inside a transaction when PAUSE comes.
	tx, err := a2.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (9)"); err != nil {
		t.Fatal(err)
	}
	paused := make(chan string, 1)
	go func() {
		tag, err := admin.Exec(ctx, "PAUSE con_pa")
		if err != nil {
			paused <- "error: " + err.Error()
			return
		}
		paused <- tag.String()
	}()
	// PAUSE waits for a2's transaction: the tenant shows paused meanwhile.
	check := consoleConn(t, p)
	eventually(t, 10*time.Second, "con_pa paused", func() bool {
		_, rows := consoleRows(t, check, "SHOW TENANTS")
		r := rowWhere(rows, "name", "con_pa")
		return r != nil && r["state"] == "paused"
	})
	select {
	case got := <-paused:
		t.Fatalf("PAUSE answered %q while a transaction of the tenant still ran", got)
	default:
	}
	// The running transaction finishes.
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (10)"); err != nil {
		t.Fatalf("a running transaction of a paused tenant: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("COMMIT under PAUSE: %v", err)
	}
	select {
	case got := <-paused:
		if got != "PAUSE" {
			t.Fatalf("PAUSE answered %q", got)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("PAUSE did not answer after the tenant's transaction ended")
	}

	// a1's new transaction waits; b1 works meanwhile.
	got := make(chan string, 1)
	go func() {
		var n int
		err := a1.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
		got <- fmt.Sprint(n, err)
	}()
	eventually(t, 10*time.Second, "a1 waiting", func() bool {
		_, rows := consoleRows(t, check, "SHOW TENANTS")
		r := rowWhere(rows, "name", "con_pa")
		return r != nil && r["waiting"] == "1"
	})
	for i := 0; i < 3; i++ {
		var v int
		if err := b1.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != 8 {
			t.Fatalf("tenant con_pb while con_pa is paused: %d, %v", v, err)
		}
	}
	_, rows := consoleRows(t, check, "SHOW CLIENTS")
	if r := rowWhere(rows, "id", strconv.FormatUint(uint64(a1.PgConn().PID()), 10)); r == nil || r["state"] != "waiting" {
		t.Errorf("SHOW CLIENTS row of the waiting client = %v", r)
	}
	select {
	case g := <-got:
		t.Fatalf("a paused tenant's query returned %s before RESUME", g)
	default:
	}
	if tag := consoleExec(t, admin, "RESUME con_pa"); tag != "RESUME" {
		t.Errorf("RESUME answered %q", tag)
	}
	select {
	case g := <-got:
		if g != "3 <nil>" {
			t.Fatalf("after RESUME: %s, want 3 rows", g)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the held query did not run after RESUME")
	}

	// The same over psql, with every tenant paused.
	if out := mustPsql(t, p, "PAUSE"); out != "PAUSE" {
		t.Errorf("psql PAUSE: %q", out)
	}
	_, rows = consoleRows(t, check, "SHOW TENANTS")
	if r := rowWhere(rows, "name", "con_pb"); r == nil || r["state"] != "paused" {
		t.Errorf("after PAUSE of every tenant, con_pb = %v", r)
	}
	held := make(chan error, 1)
	go func() { _, err := b1.Exec(ctx, "SELECT 1"); held <- err }()
	eventually(t, 10*time.Second, "b1 waiting", func() bool {
		_, rows := consoleRows(t, check, "SHOW POOLS")
		r := rowWhere(rows, "tenant", "con_pb")
		return r != nil && r["cl_waiting"] == "1" && r["paused"] == "t"
	})
	if out := mustPsql(t, p, "RESUME"); out != "RESUME" {
		t.Errorf("psql RESUME: %q", out)
	}
	if err := <-held; err != nil {
		t.Fatalf("after RESUME: %v", err)
	}
}

// TestConsolePauseTimeout: a transaction held by PAUSE longer than
// query-wait-timeout fails as a checkout that found no backend does
// (57014), and the client carries on.
func TestConsolePauseTimeout(t *testing.T) {
	createTenant(t, "con_pt")
	p := startProxy(t, withAdmin, func(c *config.Config) { c.QueryWaitTimeout = 300 * time.Millisecond })
	ctx := ctx30(t)
	c := p.Connect(t, "con_pt", pgx.QueryExecModeSimpleProtocol)
	admin := consoleConn(t, p)
	consoleExec(t, admin, "PAUSE con_pt")
	_, err := c.Exec(ctx, "SELECT 1")
	if sqlState(err) != "57014" || !strings.Contains(err.Error(), "paused") {
		t.Fatalf("a paused tenant's query after query-wait-timeout: %v, want 57014", err)
	}
	consoleExec(t, admin, "RESUME con_pt")
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("after RESUME: %v", err)
	}
}

// TestConsoleKill: KILL ends every client of a tenant with 57P01, rolling
// their transactions back; other tenants are untouched, and the tenant's
// next client finds a clean backend.
func TestConsoleKill(t *testing.T) {
	createTenant(t, "con_k", "CREATE TABLE t (v int)")
	createTenant(t, "con_k2", "CREATE TABLE t (v int)")
	p := startProxy(t, withAdmin)
	ctx := ctx30(t)
	k1 := p.Connect(t, "con_k", pgx.QueryExecModeCacheStatement)
	k2 := p.Connect(t, "con_k", pgx.QueryExecModeSimpleProtocol)
	other := p.Connect(t, "con_k2", pgx.QueryExecModeCacheStatement)
	if _, err := k2.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	tx, err := k1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	admin := consoleConn(t, p)
	if tag := consoleExec(t, admin, "KILL con_k"); tag != "KILL" {
		t.Errorf("KILL answered %q", tag)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (43)"); sqlState(err) != "57P01" {
		t.Errorf("killed client in a transaction: %v, want 57P01", err)
	}
	if _, err := k2.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
		t.Errorf("killed idle client: %v, want 57P01", err)
	}
	var n int
	if err := direct(t).QueryRow(ctx, "SELECT count(*) FROM con_k.t").Scan(&n); err != nil || n != 0 {
		t.Errorf("rows of the killed transaction: %d, %v; want 0", n, err)
	}
	if _, err := other.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Errorf("another tenant's client after KILL: %v", err)
	}
	_, rows := consoleRows(t, admin, "SHOW TENANTS")
	if r := rowWhere(rows, "name", "con_k"); r == nil || r["clients"] != "0" || r["backends"] != "0" {
		t.Errorf("after KILL, con_k = %v", r)
	}
	// The tenant's next client: a clean backend, on which a transaction of
	// its own begins and commits.
	k3 := p.Connect(t, "con_k", pgx.QueryExecModeCacheStatement)
	tx3, err := k3.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx3.Exec(ctx, "INSERT INTO t VALUES (44)"); err != nil {
		t.Fatal(err)
	}
	if err := tx3.Commit(ctx); err != nil {
		t.Fatalf("a new client's transaction after KILL: %v", err)
	}
	if err := direct(t).QueryRow(ctx, "SELECT count(*) FROM con_k.t").Scan(&n); err != nil || n != 1 {
		t.Errorf("rows after the new client's commit: %d, %v; want 1", n, err)
	}

	// Over psql: KILL of a tenant, and of one that does not exist.
	k4 := p.Connect(t, "con_k", pgx.QueryExecModeSimpleProtocol)
	if out := mustPsql(t, p, "KILL con_k"); out != "KILL" {
		t.Errorf("psql KILL: %q", out)
	}
	if _, err := k4.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
		t.Errorf("client killed over psql: %v, want 57P01", err)
	}
	if out, err := consolePsql(t, p, "admin", "KILL con_nosuch"); err == nil || !strings.Contains(out, `tenant "con_nosuch" does not exist`) {
		t.Errorf("psql KILL of an unknown tenant: %v\n%s", err, out)
	}
}

// TestConsoleKillClient: KILL_CLIENT ends one client by its SHOW CLIENTS id.
func TestConsoleKillClient(t *testing.T) {
	createTenant(t, "con_kc")
	p := startProxy(t, withAdmin)
	ctx := ctx30(t)
	c1 := p.Connect(t, "con_kc", pgx.QueryExecModeCacheStatement)
	c2 := p.Connect(t, "con_kc", pgx.QueryExecModeCacheStatement)
	c3 := p.Connect(t, "con_kc", pgx.QueryExecModeCacheStatement)
	admin := consoleConn(t, p)
	if tag := consoleExec(t, admin, fmt.Sprintf("KILL_CLIENT %d", c1.PgConn().PID())); tag != "KILL_CLIENT" {
		t.Errorf("KILL_CLIENT answered %q", tag)
	}
	if _, err := c1.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
		t.Errorf("killed client: %v, want 57P01", err)
	}
	if _, err := c2.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("the other client: %v", err)
	}
	if out := mustPsql(t, p, fmt.Sprintf("KILL_CLIENT %d", c2.PgConn().PID())); out != "KILL_CLIENT" {
		t.Errorf("psql KILL_CLIENT: %q", out)
	}
	if _, err := c2.Exec(ctx, "SELECT 1"); sqlState(err) != "57P01" {
		t.Errorf("client killed over psql: %v, want 57P01", err)
	}
	if _, err := c3.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("the third client: %v", err)
	}
	if _, err := admin.Exec(ctx, "KILL_CLIENT 1"); sqlState(err) != "42704" {
		t.Errorf("KILL_CLIENT of no client: %v, want 42704", err)
	}
}

// TestConsoleDisableEnable: DISABLE and ENABLE go through the registry; a
// new client of a disabled tenant gets 55000.
func TestConsoleDisableEnable(t *testing.T) {
	createTenant(t, "con_d")
	p := startProxy(t, withAdmin)
	ctx := ctx30(t)
	admin := consoleConn(t, p)
	connect := func() error {
		conn, err := pgx.Connect(ctx, p.DSN("con_d"))
		if err == nil {
			_, err = conn.Exec(ctx, "SELECT 1")
			conn.Close(ctx)
		}
		return err
	}
	if err := connect(); err != nil {
		t.Fatal(err)
	}
	if tag := consoleExec(t, admin, "DISABLE con_d"); tag != "DISABLE" {
		t.Errorf("DISABLE answered %q", tag)
	}
	if err := connect(); sqlState(err) != "55000" {
		t.Errorf("client of a disabled tenant: %v, want 55000", err)
	}
	var active bool
	if err := direct(t).QueryRow(ctx, "SELECT active FROM pgtenant.tenants WHERE name = 'con_d'").Scan(&active); err != nil || active {
		t.Errorf("registry active = %v, %v after DISABLE", active, err)
	}
	_, rows := consoleRows(t, admin, "SHOW TENANTS")
	if r := rowWhere(rows, "name", "con_d"); r == nil || r["state"] != "disabled" {
		t.Errorf("SHOW TENANTS after DISABLE: %v", r)
	}
	if out := mustPsql(t, p, "ENABLE con_d"); out != "ENABLE" {
		t.Errorf("psql ENABLE: %q", out)
	}
	if err := connect(); err != nil {
		t.Errorf("client after ENABLE: %v", err)
	}
	if out := mustPsql(t, p, "DISABLE con_d"); out != "DISABLE" {
		t.Errorf("psql DISABLE: %q", out)
	}
	if err := connect(); sqlState(err) != "55000" {
		t.Errorf("client after psql DISABLE: %v, want 55000", err)
	}
	if tag := consoleExec(t, admin, "ENABLE con_d"); tag != "ENABLE" {
		t.Errorf("ENABLE answered %q", tag)
	}
	if err := connect(); err != nil {
		t.Errorf("client after ENABLE: %v", err)
	}
	if _, err := admin.Exec(ctx, "DISABLE con_nosuch"); sqlState(err) != "3D000" {
		t.Errorf("DISABLE of an unknown tenant: %v, want 3D000", err)
	}
}

// TestConsoleRefusals: who may not use the console, and what it does not
// understand.
func TestConsoleRefusals(t *testing.T) {
	p := startProxy(t, withAdmin)
	ctx := ctx30(t)
	// A user that is not an admin user: 28000, over pgx and psql.
	if _, err := consoleDial(p, "app", pgx.QueryExecModeSimpleProtocol); sqlState(err) != "28000" {
		t.Errorf("non-admin user: %v, want 28000", err)
	}
	if out, err := consolePsql(t, p, "app", "SHOW VERSION"); err == nil || !strings.Contains(out, "may not use the pgtenant admin console") {
		t.Errorf("psql as a non-admin user: %v\n%s", err, out)
	}
	// Without --admin-users the console is off.
	off := startProxy(t)
	if _, err := consoleDial(off, "admin", pgx.QueryExecModeSimpleProtocol); sqlState(err) != "28000" ||
		!strings.Contains(err.Error(), "console is off") {
		t.Errorf("console without admin users: %v, want 28000 saying it is off", err)
	}

	// The extended protocol is refused at its Sync; the connection goes on.
	ext, err := consoleDial(p, "admin", pgx.QueryExecModeCacheStatement)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close(ctx)
	rows, err := ext.Query(ctx, "SHOW VERSION") // pgx: Parse, Describe, Sync
	if err == nil {
		rows.Close()
		err = rows.Err()
	}
	if sqlState(err) != "0A000" {
		t.Errorf("extended-protocol query: %v, want 0A000", err)
	}
	var v string
	if err := ext.QueryRow(ctx, "SHOW VERSION", pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil || !strings.HasPrefix(v, "pgtenant ") {
		t.Errorf("a simple query after the refused one: %q, %v", v, err)
	}

	// Unknown commands: 42601 with a hint that lists the commands.
	admin := consoleConn(t, p)
	_, err = admin.Exec(ctx, "SELECT 1")
	if sqlState(err) != "42601" || !strings.Contains(err.Error(), "unknown pgtenant console command") {
		t.Errorf("unknown command: %v, want 42601", err)
	}
	if out, err := consolePsql(t, p, "admin", "SHOW DATABASES"); err == nil ||
		!strings.Contains(out, "unknown pgtenant console command") || !strings.Contains(out, "HINT:  Commands: SHOW TENANTS") {
		t.Errorf("psql unknown command: %v\n%s", err, out)
	}
	// RELOAD answers.
	if tag := consoleExec(t, admin, "RELOAD"); tag != "RELOAD" {
		t.Errorf("RELOAD answered %q", tag)
	}
	if out := mustPsql(t, p, "reload;"); out != "RELOAD" {
		t.Errorf("psql RELOAD: %q", out)
	}
	// Several commands in one query, as psql -c sends them.
	if out := mustPsql(t, p, "SHOW VERSION; RELOAD"); !strings.HasPrefix(out, "version\npgtenant ") || !strings.HasSuffix(out, "RELOAD") {
		t.Errorf("psql two commands:\n%s", out)
	}
}

// waitDone waits for a proxy to exit on its own and marks it stopped.
func waitDone(t *testing.T, p *Proxy, within time.Duration) {
	t.Helper()
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("pgtenant exited with error: %v", err)
		}
		p.stopOnce.Do(func() {})
	case <-time.After(within):
		t.Fatalf("pgtenant did not exit within %s", within)
	}
}

func exited(p *Proxy) bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// TestConsoleShutdown: SHUTDOWN over psql shuts pgtenant down as SIGTERM
// does; idle clients are told 57P01.
func TestConsoleShutdown(t *testing.T) {
	createTenant(t, "con_sd")
	p := startProxy(t, withAdmin)
	ctx := ctx30(t)
	c := p.Connect(t, "con_sd", pgx.QueryExecModeSimpleProtocol)
	// The answer, and then (the console client is idle) the FATAL every
	// idle client gets.
	if out, _ := consolePsql(t, p, "admin", "SHUTDOWN"); !strings.Contains("\n"+out+"\n", "\nSHUTDOWN\n") {
		t.Errorf("psql SHUTDOWN: %q", out)
	}
	waitDone(t, p, 20*time.Second)
	if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("an idle client still works after SHUTDOWN")
	}
	if _, err := pgx.Connect(ctx, p.DSN("con_sd")); err == nil {
		t.Error("a new client was accepted after SHUTDOWN")
	}
}

// TestConsoleShutdownWaitForClients: SHUTDOWN WAIT_FOR_CLIENTS (over pgx)
// stops accepting, lets connected clients go on, and exits when the last
// one leaves.
func TestConsoleShutdownWaitForClients(t *testing.T) {
	createTenant(t, "con_sw", "CREATE TABLE t (v int)")
	p := startProxy(t, withAdmin)
	ctx := ctx30(t)
	c, err := pgx.Connect(ctx, p.DSN("con_sw"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin := consoleConn(t, p)
	if tag := consoleExec(t, admin, "SHUTDOWN WAIT_FOR_CLIENTS"); tag != "SHUTDOWN" {
		t.Errorf("SHUTDOWN WAIT_FOR_CLIENTS answered %q", tag)
	}
	eventually(t, 10*time.Second, "new clients refused", func() bool {
		conn, err := pgx.Connect(ctx, p.DSN("con_sw"))
		if err == nil {
			conn.Close(ctx)
		}
		return err != nil
	})
	// The connected client goes on: its transaction and a new one.
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatalf("a new transaction while waiting for clients: %v", err)
	}
	if exited(p) {
		t.Fatal("pgtenant exited with a client still connected")
	}
	var n int
	if err := direct(t).QueryRow(ctx, "SELECT count(*) FROM con_sw.t").Scan(&n); err != nil || n != 2 {
		t.Errorf("rows = %d, %v; want 2", n, err)
	}
	c.Close(ctx)
	waitDone(t, p, 20*time.Second)
}

// TestConsoleKillPaused: KILL of a paused tenant ends its clients that wait
// for RESUME at once, with 57P01, not at the end of their wait.
func TestConsoleKillPaused(t *testing.T) {
	createTenant(t, "con_kp")
	p := startProxy(t, withAdmin, func(c *config.Config) { c.QueryWaitTimeout = 30 * time.Second })
	ctx := ctx30(t)
	c := p.Connect(t, "con_kp", pgx.QueryExecModeSimpleProtocol)
	admin := consoleConn(t, p)
	consoleExec(t, admin, "PAUSE con_kp")
	errc := make(chan error, 1)
	go func() { _, err := c.Exec(ctx, "SELECT 1"); errc <- err }()
	eventually(t, 10*time.Second, "the client waiting for RESUME", func() bool {
		_, rows := consoleRows(t, admin, "SHOW TENANTS")
		r := rowWhere(rows, "name", "con_kp")
		return r != nil && r["waiting"] == "1"
	})
	if tag := consoleExec(t, admin, "KILL con_kp"); tag != "KILL" {
		t.Errorf("KILL answered %q", tag)
	}
	if err := <-errc; sqlState(err) != "57P01" {
		t.Errorf("a paused client killed: %v, want 57P01", err)
	}
	consoleExec(t, admin, "RESUME con_kp")
}
