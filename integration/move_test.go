package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/internal/cli"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/router"
)

// The online move (issue 16), with clusters of the test's own: the source
// (which holds the registry too) and the target, both wal_level=logical,
// and two pgtenant processes on the one registry. A ledger client writes through each
// proxy all along: each transaction inserts a row with a client-side id,
// and the client records every COMMIT it saw succeed.

const moveDB = "pgtenant_mv"

type moveEnv struct {
	src, dst *pgcluster.Cluster
	reg      *pgx.Conn
	p1, p2   *Proxy
}

func startMoveEnv(t *testing.T) *moveEnv {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := pgcluster.Options{MaxConnections: 100, Settings: map[string]string{"wal_level": "logical"}}
	e := &moveEnv{src: startOwnCluster(ctx, t, opts, moveDB), dst: startOwnCluster(ctx, t, opts, moveDB)}
	var err error
	if e.reg, err = pgx.Connect(ctx, e.src.DSN(moveDB)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.reg.Close(context.Background()) })
	if err := router.AddBackend(ctx, e.reg, "mvtarget", e.dst.DSN(moveDB)); err != nil {
		t.Fatal(err)
	}
	// Two pgtenant processes (`pgtenant serve`, built from this tree) that
	// share nothing but the registry: each must see the pause, the switch
	// and the resume through it.
	e.p1 = startChildProxy(t, 0, "--backend", e.src.DSN(moveDB), "--pool-size", "4").Proxy
	e.p2 = startChildProxy(t, 0, "--backend", e.src.DSN(moveDB), "--pool-size", "4").Proxy
	return e
}

func (e *moveEnv) cli(t *testing.T, ctx context.Context, args ...string) (string, int, error) {
	var stdout, stderr bytes.Buffer
	code, err := cli.Run(ctx, append(args, "--backend", e.src.DSN(moveDB)), strings.NewReader(""), &stdout, &stderr)
	out := stdout.String() + stderr.String()
	if err != nil {
		out += "error: " + err.Error() + "\n"
	}
	return out, code, err
}

// createMoveTenant makes tenant on the source with rows rows spread over
// three tables, and the ledger.
func (e *moveEnv) createMoveTenant(t *testing.T, tenant string, rows int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, _, err := router.CreateTenant(ctx, e.reg, tenant, ""); err != nil {
		t.Fatal(err)
	}
	s := pgx.Identifier{tenant}.Sanitize()
	for _, q := range []string{
		`CREATE TABLE ` + s + `.ledger (id bigserial PRIMARY KEY, client text NOT NULL, client_id bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())`,
		`CREATE TABLE ` + s + `.items (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL)`,
		`CREATE TABLE ` + s + `.events (id bigserial PRIMARY KEY, item int REFERENCES ` + s + `.items (id), payload jsonb)`,
		`CREATE TABLE ` + s + `.notes (body text NOT NULL)`,
		`ALTER TABLE ` + s + `.notes REPLICA IDENTITY FULL`,
		fmt.Sprintf(`INSERT INTO %s.items SELECT g, 'item ' || g, g * 0.01 FROM generate_series(1, %d) g`, s, rows/2),
		fmt.Sprintf(`INSERT INTO %s.events (item, payload) SELECT 1 + g %% %d, jsonb_build_object('n', g) FROM generate_series(1, %d) g`, s, rows/2, rows*3/10),
		fmt.Sprintf(`INSERT INTO %s.notes SELECT repeat('x', 50) FROM generate_series(1, %d) g`, s, rows/5),
	} {
		if _, err := e.reg.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// moveLedger is a client writing through a proxy until stopped.
type moveLedger struct {
	name      string
	committed []int64
	errs      []error
	maxWait   time.Duration
	stop      atomic.Bool
	done      chan struct{}
}

func runLedger(t *testing.T, p *Proxy, tenant, name string) *moveLedger {
	l := &moveLedger{name: name, done: make(chan struct{})}
	conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	go func() {
		defer close(l.done)
		ctx := context.Background()
		for id := int64(1); !l.stop.Load(); id++ {
			start := time.Now()
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `INSERT INTO ledger (client, client_id) VALUES ($1, $2)`, name, id)
				return err
			})
			if d := time.Since(start); d > l.maxWait {
				l.maxWait = d
			}
			if err != nil {
				l.errs = append(l.errs, err)
				if len(l.errs) > 5 {
					return
				}
				continue
			}
			l.committed = append(l.committed, id)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return l
}

func (l *moveLedger) finish(t *testing.T) {
	l.stop.Store(true)
	select {
	case <-l.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("ledger %s did not stop", l.name)
	}
}

// checkLedger checks that every id l saw committed is in conn's ledger
// exactly once, and nothing else of l's is there.
func checkLedger(t *testing.T, conn *pgx.Conn, tenant string, l *moveLedger) {
	ctx := context.Background()
	var total, distinct, seen int
	err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT client_id), count(*) FILTER (WHERE client_id = ANY ($2))
		FROM `+pgx.Identifier{tenant, "ledger"}.Sanitize()+` WHERE client = $1`, l.name, l.committed).Scan(&total, &distinct, &seen)
	if err != nil {
		t.Fatal(err)
	}
	if total != distinct || seen != len(l.committed) || total != len(l.committed) {
		t.Errorf("ledger %s: %d commits seen by the client; on the target %d rows, %d distinct ids, %d of the committed ones",
			l.name, len(l.committed), total, distinct, seen)
	}
	if len(l.errs) > 0 {
		t.Errorf("ledger %s saw errors: %v", l.name, l.errs)
	}
}

func TestMove(t *testing.T) {
	rows := 100_000
	if os.Getenv("PGTENANT_MOVE_1M") == "1" {
		rows = 1_000_000
	}
	e := startMoveEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const tenant = "mv_acme"
	e.createMoveTenant(t, tenant, rows)

	// Preflight: what logical replication does not carry is refused.
	if _, _, err := router.CreateTenant(ctx, e.reg, "mv_bad", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Exec(ctx, `CREATE UNLOGGED TABLE mv_bad.cache (k int PRIMARY KEY); CREATE TABLE mv_bad.nokey (v int)`); err != nil {
		t.Fatal(err)
	}
	out, code, _ := e.cli(t, ctx, "tenant", "move", "mv_bad", "--to", "mvtarget", "--dry-run")
	if code != 1 || !strings.Contains(out, "unlogged tables") || !strings.Contains(out, "nokey") {
		t.Fatalf("move of a tenant with an unlogged table and a table without a key: exit %d\n%s", code, out)
	}
	out, code, _ = e.cli(t, ctx, "tenant", "move", tenant, "--to", "mvtarget", "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run") {
		t.Fatalf("dry run: exit %d\n%s", code, out)
	}
	t.Logf("dry run:\n%s", out)

	l1 := runLedger(t, e.p1, tenant, "p1")
	l2 := runLedger(t, e.p2, tenant, "p2")
	time.Sleep(300 * time.Millisecond)
	out, code, err := e.cli(t, ctx, "tenant", "move", tenant, "--to", "mvtarget")
	t.Logf("tenant move (%d rows):\n%s", rows, out)
	if code != 0 {
		l1.finish(t)
		l2.finish(t)
		t.Fatalf("tenant move: exit %d, %v", code, err)
	}
	time.Sleep(500 * time.Millisecond) // the ledgers go on, on the target
	l1.finish(t)
	l2.finish(t)
	t.Logf("ledger p1: %d commits, longest transaction %v; ledger p2: %d commits, longest %v",
		len(l1.committed), l1.maxWait.Round(time.Millisecond), len(l2.committed), l2.maxWait.Round(time.Millisecond))

	dst, err := pgx.Connect(ctx, e.dst.DSN(moveDB))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close(ctx)
	checkLedger(t, dst, tenant, l1)
	checkLedger(t, dst, tenant, l2)
	var placed string
	if err := e.reg.QueryRow(ctx, `SELECT backend FROM pgtenant.tenants WHERE name = $1`, tenant).Scan(&placed); err != nil || placed != "mvtarget" {
		t.Fatalf("placement after the move = %q, %v", placed, err)
	}
	// Every row was copied.
	for _, tbl := range []string{"items", "events", "notes"} {
		var a, b int
		q := `SELECT count(*) FROM ` + pgx.Identifier{tenant, tbl}.Sanitize()
		if err := e.reg.QueryRow(ctx, q).Scan(&a); err != nil {
			t.Fatal(err)
		}
		if err := dst.QueryRow(ctx, q).Scan(&b); err != nil {
			t.Fatal(err)
		}
		if a != b {
			t.Errorf("%s: %d rows on the source, %d on the target", tbl, a, b)
		}
	}
	// The sequence continues on the target without collision.
	var maxID, next int64
	if err := dst.QueryRow(ctx, `SELECT max(id) FROM mv_acme.ledger`).Scan(&maxID); err != nil {
		t.Fatal(err)
	}
	c := e.p1.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	if err := c.QueryRow(ctx, `INSERT INTO ledger (client, client_id) VALUES ('after', 1) RETURNING id`).Scan(&next); err != nil {
		t.Fatalf("insert after the move: %v", err)
	}
	if next <= maxID {
		t.Errorf("the ledger's sequence gave %d after the move, not above %d", next, maxID)
	}
	// Nothing of the move is left on either side.
	var subs, slots, pubs int
	_ = dst.QueryRow(ctx, `SELECT count(*) FROM pg_subscription`).Scan(&subs)
	_ = e.reg.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication)`).Scan(&slots, &pubs)
	if subs+slots+pubs != 0 {
		t.Errorf("left after the move: %d subscriptions, %d slots, %d publications", subs, slots, pubs)
	}
	// The source schema is kept until cleanup.
	out, code, _ = e.cli(t, ctx, "tenant", "cleanup", tenant)
	if code != 0 {
		t.Fatalf("tenant cleanup: exit %d\n%s", code, out)
	}
	var kept bool
	_ = e.reg.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, tenant).Scan(&kept)
	if kept {
		t.Errorf("schema %s still on the source after cleanup", tenant)
	}
	for _, l := range []*moveLedger{l1, l2} {
		fmt.Printf("move %d rows: ledger %s longest transaction (the pause it saw) %v\n", rows, l.name, l.maxWait.Round(time.Millisecond))
	}

	// A third cluster: the tenant moves on, between two backends neither of
	// which holds the registry, while both processes' ledgers write again.
	// Every commit of all four ledgers must be on the third server.
	third := startOwnCluster(ctx, t, pgcluster.Options{MaxConnections: 100, Settings: map[string]string{"wal_level": "logical"}}, moveDB)
	if err := router.AddBackend(ctx, e.reg, "mvthird", third.DSN(moveDB)); err != nil {
		t.Fatal(err)
	}
	l3 := runLedger(t, e.p1, tenant, "p1b")
	l4 := runLedger(t, e.p2, tenant, "p2b")
	time.Sleep(300 * time.Millisecond)
	out, code, err = e.cli(t, ctx, "tenant", "move", tenant, "--to", "mvthird", "--drop-source")
	t.Logf("tenant move to a third backend:\n%s", out)
	time.Sleep(300 * time.Millisecond)
	l3.finish(t)
	l4.finish(t)
	if code != 0 {
		t.Fatalf("tenant move --to mvthird: exit %d, %v", code, err)
	}
	thirdConn, err := pgx.Connect(ctx, third.DSN(moveDB))
	if err != nil {
		t.Fatal(err)
	}
	defer thirdConn.Close(ctx)
	for _, l := range []*moveLedger{l1, l2, l3, l4} {
		checkLedger(t, thirdConn, tenant, l)
	}
	if err := e.reg.QueryRow(ctx, `SELECT backend FROM pgtenant.tenants WHERE name = $1`, tenant).Scan(&placed); err != nil || placed != "mvthird" {
		t.Fatalf("placement after the second move = %q, %v", placed, err)
	}
	_ = dst.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, tenant).Scan(&kept)
	if kept {
		t.Errorf("schema %s still on mvtarget after --drop-source", tenant)
	}
	fmt.Printf("second move (mvtarget -> mvthird): ledgers p1b, p2b longest transaction %v, %v\n",
		l3.maxWait.Round(time.Millisecond), l4.maxWait.Round(time.Millisecond))
}

// TestMoveAbort: a move aborted halfway leaves the tenant on the source,
// where every commit is, and nothing of the move behind.
func TestMoveAbort(t *testing.T) {
	e := startMoveEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const tenant = "mv_abort"
	e.createMoveTenant(t, tenant, 100_000)
	dst, err := pgx.Connect(ctx, e.dst.DSN(moveDB))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close(ctx)

	l := runLedger(t, e.p1, tenant, "p1")
	var wg sync.WaitGroup
	var moveOut string
	var moveCode int
	wg.Add(1)
	go func() {
		defer wg.Done()
		moveOut, moveCode, _ = e.cli(t, ctx, "tenant", "move", tenant, "--to", "mvtarget")
	}()
	eventually(t, time.Minute, "the move's subscription on the target", func() bool {
		var n int
		_ = dst.QueryRow(ctx, `SELECT count(*) FROM pg_subscription`).Scan(&n)
		return n > 0
	})
	out, code, _ := e.cli(t, ctx, "tenant", "move", tenant, "--abort")
	t.Logf("tenant move --abort:\n%s", out)
	if code != 0 {
		t.Fatalf("tenant move --abort: exit %d", code)
	}
	wg.Wait()
	t.Logf("the aborted move (exit %d):\n%s", moveCode, moveOut)
	if moveCode == 0 {
		t.Fatalf("the move finished although it was aborted")
	}
	time.Sleep(300 * time.Millisecond)
	l.finish(t)
	checkLedger(t, e.reg, tenant, l)
	var placed string
	if err := e.reg.QueryRow(ctx, `SELECT backend FROM pgtenant.tenants WHERE name = $1`, tenant).Scan(&placed); err != nil || placed != router.DefaultBackend {
		t.Fatalf("placement after the abort = %q, %v", placed, err)
	}
	var subs, slots, pubs, schemas int
	_ = dst.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_subscription), (SELECT count(*) FROM pg_namespace WHERE nspname = $1)`, tenant).Scan(&subs, &schemas)
	_ = e.reg.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots), (SELECT count(*) FROM pg_publication)`).Scan(&slots, &pubs)
	if subs+slots+pubs+schemas != 0 {
		t.Errorf("left after the abort: %d subscriptions, %d slots, %d publications, %d target schemas", subs, slots, pubs, schemas)
	}
	// The tenant can move again afterwards.
	out, code, _ = e.cli(t, ctx, "tenant", "move", tenant, "--to", "mvtarget", "--dry-run")
	if code != 0 {
		t.Fatalf("dry run after the abort: exit %d\n%s", code, out)
	}
}
