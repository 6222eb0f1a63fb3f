package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

// A hostile tenant against the pin (issue 11 A), in schema mode: a client
// of acme that controls its own SQL, functions and timing tries to make the
// pin of the next holder of its backend fail or leave acme's state behind,
// and to run or replace another tenant's prepared statements. Each test
// states what must hold: the other tenant's work runs in its own schema or
// is refused outright, never half-done in acme's state.

// hostileTenants creates tenants <prefix>_acme and <prefix>_globex, each
// with a table orders(item text) and acme with a table loot(item text).
func hostileTenants(t *testing.T, prefix string) (acme, globex string) {
	t.Helper()
	acme, globex = prefix+"_acme", prefix+"_globex"
	createTenant(t, acme, "CREATE TABLE orders (item text)", "CREATE TABLE loot (item text)")
	createTenant(t, globex, "CREATE TABLE orders (item text)")
	return acme, globex
}

// holdShareLock begins a transaction on conn that holds ACCESS SHARE on
// table until the caller rolls it back (or the test ends).
func holdShareLock(t *testing.T, ctx context.Context, conn *pgx.Conn, table string) pgx.Tx {
	t.Helper()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, "LOCK TABLE "+table+" IN ACCESS SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	return tx
}

// armPinTrap leaves the backend serving conn (a client of schema's tenant)
// as a hostile tenant would, from a DO block pgtenant cannot read:
// search_path set to schema, a pg_temp trigger function and a trigger
// named trigger on schema.orders. The next pin's DISCARD TEMP drops them,
// which needs a lock on schema.orders.
func armPinTrap(t *testing.T, ctx context.Context, conn *pgx.Conn, schema, trigger string) {
	t.Helper()
	if _, err := conn.Exec(ctx, `DO $$ BEGIN
		PERFORM pg_catalog.set_config('search_path', '`+schema+`', false);
		EXECUTE 'CREATE FUNCTION pg_temp.steal() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NEW; END $f$';
		EXECUTE 'CREATE TRIGGER `+trigger+` BEFORE INSERT ON `+schema+`.orders FOR EACH ROW EXECUTE FUNCTION pg_temp.steal()';
	END $$`); err != nil {
		t.Fatalf("arming: %v", err)
	}
}

func countRows(t *testing.T, d *pgx.Conn, table string) int {
	t.Helper()
	var n int
	if err := d.QueryRow(context.Background(), "select count(*) from "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// Escape 1: acme arms its backend (inside a DO block, which pgtenant cannot
// read: search_path to acme, a pg_temp trigger function and a trigger on an
// acme table), then holds a lock that the next pin's DISCARD TEMP must wait
// for. globex's INSERT INTO orders, sent behind that pin, must never run in
// acme's state: the pin fails on its own lock_timeout, globex hears an error
// for a statement that did not run, and its retry lands in globex.orders.
func TestHostilePinCannotHalfFail(t *testing.T) {
	t.Parallel()
	acme, globex := hostileTenants(t, "hpfail")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// globex's client connects first (its startup check takes a backend
	// and gives it back).
	victim := p.Connect(t, globex, pgx.QueryExecModeSimpleProtocol)
	// One acme client takes a backend and holds a lock on acme.orders,
	// which dropping the trigger below (DISCARD TEMP drops pg_temp.steal
	// and the trigger with it) must wait for.
	holder := p.Connect(t, acme, pgx.QueryExecModeSimpleProtocol)
	tx := holdShareLock(t, ctx, holder, acme+".orders")
	// Another arms the other backend and leaves it idle: the only one
	// globex can get.
	armer := p.Connect(t, acme, pgx.QueryExecModeSimpleProtocol)
	armPinTrap(t, ctx, armer, acme, "steal")

	_, err := victim.Exec(ctx, "INSERT INTO orders VALUES ('globex order')")
	// acme lets go of its lock: the closed backend, on its way out, drops
	// its temporary objects and the trigger with them, which waits for it.
	if rerr := tx.Rollback(ctx); rerr != nil {
		t.Fatal(rerr)
	}
	d := direct(t)
	if n := countRows(t, d, acme+".orders"); n != 0 {
		t.Fatalf("globex's INSERT ran in acme's state: %d rows in %s.orders", n, acme)
	}
	if err == nil {
		// The pin did not wait: acme's trigger was gone already. Then
		// the row must be globex's.
		if n := countRows(t, d, globex+".orders"); n != 1 {
			t.Fatalf("INSERT succeeded but %s.orders has %d rows", globex, n)
		}
		t.Fatal("the pin did not have to drop acme's trigger; the test did not test the failed pin")
	}
	if sqlState(err) != "08006" || !strings.Contains(err.Error(), "Nothing this transaction sent ran") &&
		!strings.Contains(err.Error(), "could not prepare a server connection") {
		t.Fatalf("globex got %v (SQLSTATE %s), want 08006 saying nothing ran", err, sqlState(err))
	}
	if n := countRows(t, d, globex+".orders"); n != 0 {
		t.Fatalf("globex was told its INSERT failed, but %s.orders has %d rows", globex, n)
	}
	// globex's client carries on: the retry gets a fresh backend.
	if _, err := victim.Exec(ctx, "INSERT INTO orders VALUES ('globex order')"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if n := countRows(t, d, globex+".orders"); n != 1 {
		t.Fatalf("after the retry %s.orders has %d rows, want 1", globex, n)
	}
	if n := countRows(t, d, acme+".orders"); n != 0 {
		t.Fatalf("%s.orders has %d rows", acme, n)
	}

	// The same trap set for a client that is still connecting: its
	// startup check of its parameters meets the armed backend, fails, and
	// is tried once more on another, so the client gets in.
	tx2 := holdShareLock(t, ctx, holder, acme+".orders")
	armPinTrap(t, ctx, armer, acme, "steal2")
	cfg, err := pgx.ParseConfig(p.DSN(globex) + " application_name=late")
	if err != nil {
		t.Fatal(err)
	}
	late, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("a client connecting while only the armed backend was free: %v", err)
	}
	defer late.Close(ctx)
	if err := tx2.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := late.Exec(ctx, "INSERT INTO orders VALUES ('late order')"); err != nil {
		t.Fatalf("late client: %v", err)
	}
	if n := countRows(t, d, globex+".orders"); n != 2 {
		t.Fatalf("%s.orders has %d rows, want 2", globex, n)
	}
	if n := countRows(t, d, acme+".orders"); n != 0 {
		t.Fatalf("%s.orders has %d rows", acme, n)
	}
	if !strings.Contains(p.Logs(), "trying another server connection") {
		t.Fatalf("the late client's startup did not meet the armed backend; the test did not test it")
	}
}

// Escape 2: acme replaces the statements pgtenant prepared (names pgt_N)
// with its own, from a DO block that pgtenant cannot read, so that globex's
// cached INSERT would run acme's SQL. A backend that changes tenants drops
// every prepared statement, so acme never sees globex's statements nor
// leaves its own for globex; and SQL naming pgtenant's statements is
// refused where pgtenant can see it.
func TestHostilePreparedStatementHijack(t *testing.T) {
	t.Parallel()
	acme, globex := hostileTenants(t, "hphijack")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	victim := p.Connect(t, globex, pgx.QueryExecModeCacheStatement)
	if _, err := victim.Exec(ctx, "INSERT INTO orders VALUES ($1)", "first"); err != nil {
		t.Fatal(err)
	}
	attacker := p.Connect(t, acme, pgx.QueryExecModeSimpleProtocol)
	var seen int
	if err := attacker.QueryRow(ctx, "select count(*) from pg_prepared_statements").Scan(&seen); err != nil {
		t.Fatal(err)
	}
	if seen != 0 {
		t.Errorf("acme sees %d prepared statements of another tenant on its backend", seen)
	}
	if _, err := attacker.Exec(ctx, `DO $$ DECLARE i int; BEGIN
		FOR i IN 1..50 LOOP
			BEGIN EXECUTE 'DEALLOCATE pgt_' || i; EXCEPTION WHEN OTHERS THEN NULL; END;
			EXECUTE 'PREPARE pgt_' || i || ' (text) AS INSERT INTO `+acme+`.loot VALUES ($1)';
		END LOOP;
	END $$`); err != nil {
		t.Fatalf("attack: %v", err)
	}
	for _, q := range []string{"EXECUTE pgt_1('x')", "DEALLOCATE pgt_1", "PREPARE pgt_99 (text) AS SELECT $1"} {
		if _, err := attacker.Exec(ctx, q); sqlState(err) != "42501" {
			t.Errorf("%s: got %v, want 42501", q, err)
		}
	}
	if _, err := victim.Exec(ctx, "INSERT INTO orders VALUES ($1)", "secret"); err != nil {
		t.Fatalf("globex after the attack: %v", err)
	}
	d := direct(t)
	if n := countRows(t, d, acme+".loot"); n != 0 {
		t.Fatalf("globex's statement ran acme's SQL: %d rows in %s.loot", n, acme)
	}
	if n := countRows(t, d, globex+".orders"); n != 2 {
		t.Fatalf("%s.orders has %d rows, want 2", globex, n)
	}
}

// Escape 3: two tenants whose clients set the same search_path and settings
// must still not share a pin key: acme changes a setting inside a function
// (invisible to pgtenant), and globex must not run with it.
func TestHostilePinKeyNotShared(t *testing.T) {
	t.Parallel()
	acme, globex := hostileTenants(t, "hpkey")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a := p.Connect(t, acme, pgx.QueryExecModeSimpleProtocol)
	g := p.Connect(t, globex, pgx.QueryExecModeSimpleProtocol)
	for _, c := range []*pgx.Conn{a, g} {
		if _, err := c.Exec(ctx, "SET search_path TO public"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Exec(ctx, `DO $$ BEGIN PERFORM pg_catalog.set_config('application_name', 'acme-was-here', false); END $$`); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := g.QueryRow(ctx, "show application_name").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if name == "acme-was-here" {
		t.Fatalf("globex runs with a setting acme made: application_name = %q", name)
	}
}

// Escape 7: set_config through a FunctionCall message (oid 2078) would
// change search_path unseen; it is refused with 0A000, and the session
// keeps its own schema.
func TestHostileFunctionCallSetConfig(t *testing.T) {
	t.Parallel()
	acme, globex := hostileTenants(t, "hpfcall")
	p := startProxy(t)
	nc := rawDial(t, p)
	fe := rawStartup(t, nc, acme)
	rawSend(t, nc, &pgproto3.FunctionCall{Function: 2078, ArgFormatCodes: []uint16{0},
		Arguments: [][]byte{[]byte("search_path"), []byte(globex), []byte("false")}, ResultFormatCode: 0})
	var code string
	for done := false; !done; {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			code = m.Code
		case *pgproto3.FunctionCallResponse:
			t.Errorf("set_config ran through a FunctionCall: %q", m.Result)
		case *pgproto3.ReadyForQuery:
			done = true
		}
	}
	if code != "0A000" {
		t.Fatalf("FunctionCall set_config: SQLSTATE %q, want 0A000", code)
	}
	if got := rawQueryOne(t, nc, fe, "select current_schema()"); got != acme {
		t.Fatalf("current_schema() = %q after the refused call, want %q", got, acme)
	}
}

// The pin sets the client's own parameters on a backend another client
// left with other values. PostgreSQL reports changed values just before
// ReadyForQuery, so those reports arrive with the client's first reply;
// the client was told these values at startup, and directly it would hear
// nothing. It must not hear them through pgtenant either.
func TestPinParameterStatusNotRepeated(t *testing.T) {
	t.Parallel()
	acme, globex := hostileTenants(t, "hpstatus")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	start := func(tenant, app string) (*pgproto3.Frontend, func(string) []string) {
		nc := rawDial(t, p)
		rawSend(t, nc, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": "app", "database": tenant, "application_name": app, "TimeZone": app}})
		fe := pgproto3.NewFrontend(nc, nc)
		for {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		query := func(sql string) []string {
			rawSend(t, nc, &pgproto3.Query{String: sql})
			var status []string
			for {
				msg, err := fe.Receive()
				if err != nil {
					t.Fatal(err)
				}
				switch m := msg.(type) {
				case *pgproto3.ParameterStatus:
					status = append(status, m.Name+"="+m.Value)
				case *pgproto3.ErrorResponse:
					t.Fatalf("%s: %s %s", sql, m.Code, m.Message)
				case *pgproto3.ReadyForQuery:
					return status
				}
			}
		}
		return fe, query
	}
	_, qa := start(acme, "UTC")
	_, qg := start(globex, "Asia/Tokyo")
	for round := 0; round < 3; round++ {
		// One backend, two clients with different application_name and
		// TimeZone: every query gets a full pin.
		if got := qa("select 1"); len(got) != 0 {
			t.Fatalf("round %d: acme was told %v, which it knew", round, got)
		}
		if got := qg("select 1"); len(got) != 0 {
			t.Fatalf("round %d: globex was told %v, which it knew", round, got)
		}
	}
	// A change of the client's own is reported, once.
	if got := qg("set application_name = 'renamed'"); len(got) != 1 || got[0] != "application_name=renamed" {
		t.Fatalf("globex's own change: told %v", got)
	}
	if got := qa("select 1"); len(got) != 0 {
		t.Fatalf("acme was told %v after globex's change", got)
	}
	if got := qg("select 1"); len(got) != 0 {
		t.Fatalf("globex was told %v again", got)
	}
}
