package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// `tenant move NAME --to BACKEND` (issue 16): an online move of a tenant's
// schema to another backend with PostgreSQL's logical replication.
//
//  1. preflight: wal_level = logical on the source, PostgreSQL 15 on both,
//     no unlogged tables, no large-object (oid) columns, every table with a
//     primary key or a replica identity, the schema absent on the target;
//  2. the structure (pg_dump --schema-only -n) is restored on the target;
//  3. a publication FOR TABLES IN SCHEMA on the source, with a one-row
//     marker table (pgtenant_move.<tenant>), and a subscription on the
//     target, which copies the rows and then streams every change;
//  4. progress (tables copied, lag) until every table is copied and a bump
//     of the marker reaches the target quickly;
//  5. the tenant is paused on every proxy (router.PauseTenant) and the
//     move waits until every proxy drained it (router.AwaitDrained);
//     transactions still running after --drain-timeout are ended;
//  6. the source's tables are locked against writes (EXCLUSIVE: reads go
//     on), the schema's structure is checked unchanged since the start,
//     the marker is bumped once more and awaited on the target: every
//     commit made before it is there; the sequences are copied;
//  7. placement switch and resume in one registry transaction
//     (router.SwitchMove); the replication is dropped; the source schema
//     stays until --drop-source or `tenant cleanup`.
//
// DDL during the move is refused rather than waited out: the structure is
// fingerprinted at the start and compared under the source's locks before
// the switch; a change fails the move, leaving the tenant on the source
// (run --abort, then the move again).

// moveReadyLag is the marker's round trip under which the target counts as
// caught up, so that the pause waits for little more than that.
const moveReadyLag = 300 * time.Millisecond

func tenantMoveCommand() *cli.Command {
	return adminCommand("move",
		"move NAME's schema to backend --to online with logical replication (wal_level = logical on the source): "+
			"copy, catch up, pause about a second on every proxy, switch; the source schema stays until --drop-source or tenant cleanup",
		"NAME", tenantMove,
		&cli.StringFlag{Name: "to", Usage: "the backend to move the tenant to (pgtenant backend list)"},
		&cli.BoolFlag{Name: "dry-run", Usage: "check that the move can run and say what it would do; change nothing"},
		&cli.BoolFlag{Name: "abort", Usage: "undo a move under way or interrupted: the tenant stays on its source"},
		&cli.BoolFlag{Name: "drop-source", Usage: "drop the schema on the source once the tenant is switched"},
		&cli.DurationFlag{Name: "drain-timeout", Value: 5 * time.Second,
			Usage: "how long transactions running when the tenant is paused may go on before their clients are ended"},
		&cli.DurationFlag{Name: "catchup-timeout", Value: time.Hour, Usage: "give up if the copy and catch-up take longer"})
}

func tenantCleanupCommand() *cli.Command {
	return adminCommand("cleanup",
		"drop the source schema that a finished `tenant move` kept, and forget the move",
		"NAME", tenantCleanup)
}

// moveRun is one move's connections and names.
type moveRun struct {
	c            *cli.Context
	out          io.Writer
	reg          *pgx.Conn // registry
	src, dst     *pgx.Conn
	srcDSN       string // for pg_dump and the subscription's connection
	tenant       router.Tenant
	target       string
	schema       string
	pub, sub     string
	markTable    string // pgtenant_move.<tenant>, quoted
	tables, seqs []string
}

func (m *moveRun) logf(format string, args ...any) {
	fmt.Fprintf(m.out, format+"\n", args...)
}

func tenantMove(c *cli.Context) error {
	name, err := oneTenantArg(c, "move NAME --to BACKEND")
	if err != nil {
		return err
	}
	if c.Bool("abort") {
		return withAdminConn(c, func(reg *pgx.Conn) error { return moveAbort(c, reg, name) })
	}
	target := c.String("to")
	if target == "" {
		return cli.Exit("tenant move needs --to BACKEND (see pgtenant backend list), or --abort", exitUsage)
	}
	return withAdminConn(c, func(reg *pgx.Conn) error {
		m := &moveRun{c: c, out: c.App.Writer, reg: reg, target: target}
		defer m.close()
		if err := m.open(name); err != nil {
			return err
		}
		if err := m.preflight(); err != nil {
			return err
		}
		if c.Bool("dry-run") {
			return m.dryRun()
		}
		return m.run()
	})
}

func (m *moveRun) close() {
	for _, conn := range []*pgx.Conn{m.src, m.dst} {
		if conn != nil && conn != m.reg {
			_ = conn.Close(context.Background())
		}
	}
}

// backendConn connects to backend name: the default one with the admin
// connection's DSN, others with their registered DSN. It returns the DSN.
func backendConn(c *cli.Context, reg *pgx.Conn, name string) (*pgx.Conn, string, error) {
	dsn := adminDSN(c)
	if name != router.DefaultBackend {
		b, found, err := router.GetBackend(c.Context, reg, name)
		if err != nil {
			return nil, "", cli.Exit(err, exitRuntime)
		}
		if !found {
			return nil, "", cli.Exit(&router.UnknownBackendError{Name: name}, exitUsage)
		}
		dsn = b.DSN
	}
	conn, err := pgx.Connect(c.Context, dsn)
	if err != nil {
		return nil, "", cli.Exit(fmt.Errorf("connect to backend %q: %w", name, err), exitRuntime)
	}
	return conn, dsn, nil
}

// open finds the tenant and connects to both backends.
func (m *moveRun) open(name string) error {
	ctx := m.c.Context
	t, found, err := router.FindTenant(ctx, m.reg, name)
	if err != nil {
		return cli.Exit(err, exitRuntime)
	}
	if !found {
		return cli.Exit(fmt.Errorf("tenant %q does not exist", name), exitUsage)
	}
	m.tenant, m.schema = t, t.Schema
	if t.BackendOf() == m.target {
		return cli.Exit(fmt.Errorf("tenant %q is already on backend %q", name, m.target), exitUsage)
	}
	if mv, found, err := router.GetMove(ctx, m.reg, name); err != nil {
		return cli.Exit(err, exitRuntime)
	} else if found {
		return cli.Exit(&router.MoveInProgressError{Move: mv}, exitUsage)
	}
	if m.src, m.srcDSN, err = backendConn(m.c, m.reg, t.BackendOf()); err != nil {
		return err
	}
	if m.dst, _, err = backendConn(m.c, m.reg, m.target); err != nil {
		return err
	}
	m.pub, m.sub = router.MoveNames(name)
	m.markTable = pgx.Identifier{"pgtenant_move", name}.Sanitize()
	return nil
}

// preflight refuses what logical replication would not carry, before
// anything is changed.
func (m *moveRun) preflight() error {
	ctx := m.c.Context
	var problems []string
	var walLevel string
	var srcVersion, dstVersion int
	if err := m.src.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('server_version_num')::int`).Scan(&walLevel, &srcVersion); err != nil {
		return cli.Exit(fmt.Errorf("read the source's settings: %w", err), exitRuntime)
	}
	if err := m.dst.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&dstVersion); err != nil {
		return cli.Exit(fmt.Errorf("read the target's settings: %w", err), exitRuntime)
	}
	if walLevel != "logical" {
		problems = append(problems, fmt.Sprintf("wal_level is %q on the source backend %q: set wal_level = logical in its postgresql.conf and restart it",
			walLevel, m.tenant.BackendOf()))
	}
	if srcVersion < 150000 || dstVersion < 150000 {
		problems = append(problems, "both backends must run PostgreSQL 15 or later (publications FOR TABLES IN SCHEMA)")
	}
	list := func(q string) []string {
		rows, err := m.src.Query(ctx, q, m.schema)
		if err != nil {
			problems = append(problems, "check the schema: "+err.Error())
			return nil
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			problems = append(problems, "check the schema: "+err.Error())
		}
		return names
	}
	const inSchema = `c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)`
	if l := list(`SELECT c.relname FROM pg_class c WHERE ` + inSchema + ` AND c.relkind IN ('r', 'p') AND c.relpersistence = 'u' ORDER BY 1`); len(l) > 0 {
		problems = append(problems, "unlogged tables, which logical replication does not carry (ALTER TABLE ... SET LOGGED first): "+strings.Join(l, ", "))
	}
	if l := list(`SELECT c.relname || '.' || a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
		WHERE ` + inSchema + ` AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
		  AND a.atttypid IN ('oid'::regtype, coalesce(to_regtype('lo'), 'oid'::regtype)) ORDER BY 1`); len(l) > 0 {
		problems = append(problems, "columns holding large objects (type oid or lo), whose contents logical replication does not carry: "+strings.Join(l, ", "))
	}
	if l := list(`SELECT c.relname FROM pg_class c WHERE ` + inSchema + ` AND c.relkind = 'r'
		AND (c.relreplident = 'n' OR (c.relreplident = 'd' AND NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
		     OR (c.relreplident = 'i' AND NOT EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
		ORDER BY 1`); len(l) > 0 {
		problems = append(problems, "tables without a primary key or replica identity, whose UPDATEs and DELETEs the source would refuse while published "+
			"(add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL): "+strings.Join(l, ", "))
	}
	var onTarget bool
	if err := m.dst.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)`, m.schema).Scan(&onTarget); err != nil {
		return cli.Exit(fmt.Errorf("check the target: %w", err), exitRuntime)
	}
	if onTarget {
		problems = append(problems, fmt.Sprintf("schema %q already exists on backend %q: drop it there first (or, if an earlier move left it, run tenant move %s --abort)",
			m.schema, m.target, m.tenant.Name))
	}
	m.tables = list(`SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE ` + inSchema + ` AND c.relkind IN ('r', 'p') ORDER BY 1`)
	m.seqs = list(`SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE ` + inSchema + ` AND c.relkind = 'S' ORDER BY 1`)
	if len(problems) > 0 {
		return cli.Exit(fmt.Errorf("cannot move tenant %q:\n  %s", m.tenant.Name, strings.Join(problems, "\n  ")), exitUsage)
	}
	return nil
}

func (m *moveRun) dryRun() error {
	var rows int64
	var size string
	_ = m.src.QueryRow(m.c.Context, `SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint,
		pg_size_pretty(coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint)
		FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1) AND c.relkind = 'r'`, m.schema).Scan(&rows, &size)
	m.logf("dry run: tenant %s (schema %s) can move from backend %s to %s", m.tenant.Name, m.schema, m.tenant.BackendOf(), m.target)
	m.logf("  %d tables (about %d rows, %s), %d sequences", len(m.tables), rows, size, len(m.seqs))
	m.logf("  would: restore the structure on %s (pg_dump --schema-only), publish the schema on %s (%s), subscribe on %s (%s),",
		m.target, m.tenant.BackendOf(), m.pub, m.target, m.sub)
	m.logf("  wait for the copy and catch-up, pause the tenant on every proxy, copy %d sequences, switch the placement and resume;", len(m.seqs))
	m.logf("  the source schema stays until --drop-source or pgtenant tenant cleanup %s", m.tenant.Name)
	return nil
}

// fingerprint sums up the schema's structure: tables, columns, indexes,
// constraints. DDL during the move changes it.
func fingerprint(ctx context.Context, conn *pgx.Conn, schema string) (string, error) {
	var fp string
	err := conn.QueryRow(ctx, `WITH n AS (SELECT oid FROM pg_namespace WHERE nspname = $1)
	SELECT md5(coalesce(string_agg(x, E'\n' ORDER BY x), '')) FROM (
		SELECT format('%s %s %s', c.relname, c.relkind, c.relreplident) AS x FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM n)
		UNION ALL
		SELECT format('%s.%s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull)
		  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
		 WHERE c.relnamespace = (SELECT oid FROM n) AND a.attnum > 0 AND NOT a.attisdropped
		UNION ALL
		SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = (SELECT oid FROM n)
		UNION ALL
		SELECT format('%s %s', co.conname, pg_get_constraintdef(co.oid)) FROM pg_constraint co WHERE co.connamespace = (SELECT oid FROM n)
	) s`, schema).Scan(&fp)
	return fp, err
}

func (m *moveRun) run() error {
	ctx := m.c.Context
	start := time.Now()
	fp, err := fingerprint(ctx, m.src, m.schema)
	if err != nil {
		return cli.Exit(fmt.Errorf("read the schema's structure: %w", err), exitRuntime)
	}
	err = router.StartMove(ctx, m.reg, router.Move{Tenant: m.tenant.Name, Source: m.tenant.BackendOf(), Target: m.target,
		Schema: m.schema, Publication: m.pub, Subscription: m.sub})
	if err != nil {
		return adminExit(err)
	}
	m.logf("moving tenant %s (schema %s, %d tables, %d sequences) from backend %s to %s",
		m.tenant.Name, m.schema, len(m.tables), len(m.seqs), m.tenant.BackendOf(), m.target)
	fail := func(err error) error {
		return cli.Exit(fmt.Errorf("%w\nthe tenant is still served from backend %q; undo what the move set up with: pgtenant tenant move %s --abort",
			err, m.tenant.BackendOf(), m.tenant.Name), exitRuntime)
	}
	if err := m.copyStructure(); err != nil {
		return fail(err)
	}
	if err := m.subscribe(); err != nil {
		return fail(err)
	}
	copied, err := m.awaitCopy(start)
	if err != nil {
		return fail(err)
	}
	caughtUp, err := m.awaitCatchUp()
	if err != nil {
		return fail(err)
	}
	if now, err := fingerprint(ctx, m.src, m.schema); err != nil || now != fp {
		return fail(fmt.Errorf("the schema's structure changed during the move (DDL): refusing to switch"))
	}
	pause, err := m.switchOver(fp)
	if err != nil {
		return fail(err)
	}
	m.logf("switched: tenant %s is served from backend %s", m.tenant.Name, m.target)
	m.logf("timings: copy %v, catch-up %v, pause %v, total %v",
		copied.Round(time.Millisecond), caughtUp.Round(time.Millisecond), pause.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	m.dropReplication(m.src, m.dst, m.pub, m.sub)
	if m.c.Bool("drop-source") {
		return cleanupSource(m.c, m.reg, m.tenant.Name)
	}
	m.logf("the source schema %s is kept on backend %s; drop it with: pgtenant tenant cleanup %s", m.schema, m.tenant.BackendOf(), m.tenant.Name)
	return nil
}

// copyStructure restores pg_dump --schema-only of the schema on the
// target, and makes the marker table on both.
func (m *moveRun) copyStructure() error {
	ctx := m.c.Context
	bin, err := pgTool("pg_dump")
	if err != nil {
		return err
	}
	conn, env, err := libpqArgs(m.srcDSN)
	if err != nil {
		return err
	}
	var dump, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--schema-only", "--no-owner", "--no-privileges", "-n", `"`+m.schema+`"`, "-d", conn)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &dump, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pg_dump --schema-only of schema %s: %v: %s", m.schema, err, strings.TrimSpace(stderr.String()))
	}
	// pg_dump 15.14 and later fence the script with psql's \restrict and
	// \unrestrict, which the server does not know: a schema-only dump
	// holds no other backslash command.
	var script strings.Builder
	script.WriteString("BEGIN;\n")
	for _, line := range strings.SplitAfter(dump.String(), "\n") {
		if !strings.HasPrefix(line, `\`) {
			script.WriteString(line)
		}
	}
	script.WriteString("\nCOMMIT;")
	if _, err := m.dst.PgConn().Exec(ctx, script.String()).ReadAll(); err != nil {
		return fmt.Errorf("restore the structure on backend %q: %w", m.target, err)
	}
	// search_path was emptied by the dump's preamble.
	if _, err := m.dst.Exec(ctx, `RESET ALL`); err != nil {
		return err
	}
	mark := `CREATE SCHEMA IF NOT EXISTS pgtenant_move; CREATE TABLE IF NOT EXISTS ` + m.markTable +
		` (id int PRIMARY KEY, n bigint NOT NULL)`
	if _, err := m.src.PgConn().Exec(ctx, mark+`; INSERT INTO `+m.markTable+` VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0`).ReadAll(); err != nil {
		return fmt.Errorf("make the move's marker table on the source: %w", err)
	}
	if _, err := m.dst.PgConn().Exec(ctx, mark+`; TRUNCATE `+m.markTable).ReadAll(); err != nil {
		return fmt.Errorf("make the move's marker table on the target: %w", err)
	}
	m.logf("structure copied to backend %s", m.target)
	return nil
}

func (m *moveRun) subscribe() error {
	ctx := m.c.Context
	_, err := m.src.Exec(ctx, `CREATE PUBLICATION `+pgx.Identifier{m.pub}.Sanitize()+` FOR TABLES IN SCHEMA `+
		pgx.Identifier{m.schema}.Sanitize()+`, TABLE `+m.markTable)
	if err != nil {
		return fmt.Errorf("create the publication on the source: %w", err)
	}
	_, err = m.dst.Exec(ctx, `CREATE SUBSCRIPTION `+pgx.Identifier{m.sub}.Sanitize()+` CONNECTION `+quoteLiteralSQL(m.srcDSN)+
		` PUBLICATION `+pgx.Identifier{m.pub}.Sanitize()+` WITH (copy_data = true)`)
	if err != nil {
		return fmt.Errorf("create the subscription on the target (it connects to the source with the source's DSN): %w", err)
	}
	return nil
}

func quoteLiteralSQL(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// replicationErrors reads the subscription's error counts on the target.
func (m *moveRun) replicationErrors() error {
	var applyErr, syncErr int64
	err := m.dst.QueryRow(m.c.Context, `SELECT apply_error_count, sync_error_count FROM pg_stat_subscription_stats WHERE subname = $1`, m.sub).
		Scan(&applyErr, &syncErr)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return router.ErrMoveAborted
	case err != nil:
		return err
	case applyErr+syncErr > 0:
		return fmt.Errorf("the subscription on backend %q reports %d copy and %d apply errors: see that server's log", m.target, syncErr, applyErr)
	}
	return nil
}

// awaitCopy waits until the subscription copied every table, printing
// progress; it returns how long the copy took.
func (m *moveRun) awaitCopy(start time.Time) (time.Duration, error) {
	ctx := m.c.Context
	deadline := time.Now().Add(m.c.Duration("catchup-timeout"))
	lastPrint := time.Time{}
	for {
		var ready, total int
		err := m.dst.QueryRow(ctx, `SELECT count(*) FILTER (WHERE r.srsubstate IN ('r', 's')), count(*)
			FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1`, m.sub).Scan(&ready, &total)
		if err != nil {
			return 0, fmt.Errorf("follow the copy: %w", err)
		}
		if total == 0 {
			return 0, router.ErrMoveAborted
		}
		if err := m.replicationErrors(); err != nil {
			return 0, err
		}
		if ready == total {
			d := time.Since(start)
			m.logf("copy: %d/%d tables copied in %v", total-1, total-1, d.Round(time.Millisecond))
			return d, nil
		}
		if time.Since(lastPrint) >= time.Second {
			lastPrint = time.Now()
			m.logf("copy: %d/%d tables copied, lag %s", max(ready-1, 0), total-1, m.lagBytes())
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the copy did not finish within --catchup-timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lagBytes is how far the move's replication slot is behind the source's
// WAL, for the progress lines.
func (m *moveRun) lagBytes() string {
	var lag string
	err := m.src.QueryRow(m.c.Context, `SELECT pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))
		FROM pg_replication_slots WHERE slot_name = $1`, m.sub).Scan(&lag)
	if err != nil {
		return "unknown"
	}
	return lag
}

// bumpMarker writes the marker on the source through conn (committed at
// once) and returns its new value.
func (m *moveRun) bumpMarker(conn *pgx.Conn) (int64, error) {
	var n int64
	ctx := m.c.Context
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// Flushed at its commit whatever the server's synchronous_commit:
		// a walsender sends only flushed WAL, so under synchronous_commit
		// off the marker, and every commit before it, would wait for the
		// WAL writer (wal_writer_delay, 200 ms by default) before the
		// target could apply it, and the pause would last that long.
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `UPDATE `+m.markTable+` SET n = n + 1 WHERE id = 1 RETURNING n`).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("write the move's marker on the source: %w", err)
	}
	return n, nil
}

// awaitMarker waits until the target has applied marker value n: every
// transaction the source committed before it is applied too.
func (m *moveRun) awaitMarker(n int64, wait time.Duration) error {
	ctx := m.c.Context
	deadline := time.Now().Add(wait)
	for {
		var got int64
		err := m.dst.QueryRow(ctx, `SELECT coalesce((SELECT n FROM `+m.markTable+` WHERE id = 1), -1)`).Scan(&got)
		if err != nil {
			return fmt.Errorf("read the move's marker on the target: %w", err)
		}
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			if err := m.replicationErrors(); err != nil {
				return err
			}
			return fmt.Errorf("the target did not catch up within %v", wait)
		}
		time.Sleep(time.Millisecond)
	}
}

// awaitCatchUp bumps the marker until its round trip is under
// moveReadyLag; it returns how long the catch-up took.
func (m *moveRun) awaitCatchUp() (time.Duration, error) {
	start := time.Now()
	deadline := start.Add(m.c.Duration("catchup-timeout"))
	for {
		t0 := time.Now()
		n, err := m.bumpMarker(m.src)
		if err != nil {
			return 0, err
		}
		if err := m.awaitMarker(n, time.Until(deadline)); err != nil {
			return 0, err
		}
		rt := time.Since(t0)
		m.logf("catch-up: the target applies the source's commits %v behind (slot lag %s)", rt.Round(time.Millisecond), m.lagBytes())
		if rt < moveReadyLag {
			return time.Since(start), nil
		}
	}
}

// switchOver pauses the tenant on every proxy, fences the source, waits
// for zero lag, copies the sequences and switches; it returns the pause's
// length. On failure the pause is lifted with the tenant on the source.
func (m *moveRun) switchOver(fp string) (time.Duration, error) {
	ctx := m.c.Context
	drain := m.c.Duration("drain-timeout")
	lockConn, err := pgx.Connect(ctx, adminDSN(m.c))
	if err != nil {
		return 0, fmt.Errorf("connect to the registry: %w", err)
	}
	defer lockConn.Close(context.WithoutCancel(ctx))
	fence, err := pgx.Connect(ctx, m.srcDSN)
	if err != nil {
		return 0, fmt.Errorf("connect to the source: %w", err)
	}
	defer fence.Close(context.WithoutCancel(ctx))

	start := time.Now()
	// The deadline leaves room for the drain, the fence and the last
	// catch-up; proxies resume by themselves after it.
	if err := router.PauseTenant(ctx, m.reg, m.tenant.Name, "moving to backend "+m.target, drain, drain+30*time.Second); err != nil {
		return 0, err
	}
	switched := false
	defer func() {
		if !switched {
			if _, err := router.ResumeTenant(context.WithoutCancel(ctx), m.reg, m.tenant.Name); err != nil {
				m.logf("warning: could not lift the tenant's pause (it lapses by itself within a minute): %v", err)
			}
		}
	}()
	got, err := router.AwaitDrained(ctx, lockConn, m.tenant.Name, drain+3*time.Second)
	if err != nil {
		return 0, err
	}
	if !got {
		return 0, fmt.Errorf("a proxy did not drain the tenant within --drain-timeout (%v) and a few seconds", drain)
	}
	drained := time.Since(start)

	// Fence: no write to the tenant's tables on the source from here on;
	// reads go on. A write that some proxy still sends waits, and is ended
	// below rather than lost.
	tx, err := fence.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '3s'`); err != nil {
		return 0, err
	}
	if len(m.tables) > 0 {
		if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(m.tables, ", ")+` IN EXCLUSIVE MODE`); err != nil {
			return 0, fmt.Errorf("lock the tenant's tables on the source: %w", err)
		}
	}
	if now, err := fingerprint(ctx, fence, m.schema); err != nil || now != fp {
		return 0, fmt.Errorf("the schema's structure changed during the move (DDL): refusing to switch")
	}
	n, err := m.bumpMarker(m.src)
	if err != nil {
		return 0, err
	}
	if err := m.awaitMarker(n, 10*time.Second); err != nil {
		return 0, err
	}
	caught := time.Since(start)
	if err := m.copySequences(tx); err != nil {
		return 0, err
	}
	if err := router.SwitchMove(ctx, m.reg, m.tenant.Name); err != nil {
		return 0, err
	}
	switched = true
	pause := time.Since(start)
	_ = router.ReleaseDrained(ctx, lockConn, m.tenant.Name)
	// Writers queued behind the fence were sent to the source after the
	// pause: end them, so that their clients see an error, not a loss.
	var ended int
	_ = m.src.QueryRow(ctx, `SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l
		WHERE NOT l.granted AND l.relation = ANY ($1::text[]::regclass[])`, m.tables).Scan(&ended)
	if ended > 0 {
		m.logf("warning: ended %d session(s) that wrote to the source after the pause", ended)
	}
	m.logf("pause: %v (drained %v, caught up %v)", pause.Round(time.Millisecond), drained.Round(time.Millisecond), caught.Round(time.Millisecond))
	return pause, nil
}

// copySequences sets each sequence on the target to its value on the
// source, read under the fence.
func (m *moveRun) copySequences(tx pgx.Tx) error {
	ctx := m.c.Context
	for _, seq := range m.seqs {
		var last int64
		var called bool
		if err := tx.QueryRow(ctx, `SELECT last_value, is_called FROM `+seq).Scan(&last, &called); err != nil {
			return fmt.Errorf("read sequence %s on the source: %w", seq, err)
		}
		if _, err := m.dst.Exec(ctx, `SELECT setval($1::regclass, $2, $3)`, seq, last, called); err != nil {
			return fmt.Errorf("set sequence %s on the target: %w", seq, err)
		}
	}
	return nil
}

// dropReplication drops the move's subscription (and with it the slot on
// the source), publication and marker tables. Either connection may be nil
// (that backend is unreachable or gone); what fails is reported.
func (m *moveRun) dropReplication(src, dst *pgx.Conn, pub, sub string) {
	ctx := context.WithoutCancel(m.c.Context)
	run := func(conn *pgx.Conn, what, q string) {
		if conn == nil {
			return
		}
		if _, err := conn.Exec(ctx, q); err != nil {
			m.logf("warning: %s: %v", what, err)
		}
	}
	if dst != nil {
		var exists bool
		_ = dst.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_subscription WHERE subname = $1)`, sub).Scan(&exists)
		if exists {
			run(dst, "disable the subscription", `ALTER SUBSCRIPTION `+pgx.Identifier{sub}.Sanitize()+` DISABLE`)
			run(dst, "drop the subscription", `DROP SUBSCRIPTION `+pgx.Identifier{sub}.Sanitize())
		}
	}
	run(src, "drop the publication", `DROP PUBLICATION IF EXISTS `+pgx.Identifier{pub}.Sanitize())
	if src != nil {
		// A slot the subscription could not drop (it was disabled first
		// without one, or the target is gone) would keep WAL forever.
		var slot bool
		_ = src.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)`, sub).Scan(&slot)
		if slot {
			for range 50 {
				if _, err := src.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, sub); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	run(src, "drop the marker table on the source", `DROP TABLE IF EXISTS `+m.markTable)
	run(dst, "drop the marker table on the target", `DROP TABLE IF EXISTS `+m.markTable)
	for _, conn := range []*pgx.Conn{src, dst} {
		run(conn, "drop schema pgtenant_move", `DO $$ BEGIN
			IF NOT EXISTS (SELECT FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'pgtenant_move')) THEN
				DROP SCHEMA IF EXISTS pgtenant_move;
			END IF; END $$`)
	}
}

// moveAbort undoes a move that has not switched: the pause is lifted, the
// replication dropped, the schema the move made on the target dropped, and
// the record forgotten. The tenant stays on its source.
func moveAbort(c *cli.Context, reg *pgx.Conn, name string) error {
	ctx := c.Context
	mv, found, err := router.GetMove(ctx, reg, name)
	if err != nil {
		return cli.Exit(err, exitRuntime)
	}
	if !found {
		return cli.Exit(fmt.Errorf("tenant %q has no move to abort", name), exitUsage)
	}
	if mv.Phase == router.MoveSwitched {
		return cli.Exit(fmt.Errorf("the move of tenant %q has already switched: it is served from backend %q; to drop the source schema run: pgtenant tenant cleanup %s",
			name, mv.Target, name), exitUsage)
	}
	// Forget first: a move still running in another process then fails
	// its switch (router.SwitchMove) instead of completing it.
	if _, err := router.ForgetMove(ctx, reg, name); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	if _, err := router.ResumeTenant(ctx, reg, name); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	m := &moveRun{c: c, out: c.App.Writer, reg: reg, target: mv.Target, schema: mv.Schema,
		markTable: pgx.Identifier{"pgtenant_move", name}.Sanitize()}
	src, _, srcErr := backendConn(c, reg, mv.Source)
	dst, _, dstErr := backendConn(c, reg, mv.Target)
	m.src, m.dst = src, dst
	defer m.close()
	m.dropReplication(src, dst, mv.Publication, mv.Subscription)
	if dst != nil {
		if t, ok, err := router.FindTenant(ctx, reg, name); err == nil && ok && t.BackendOf() != mv.Target {
			if _, err := dst.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{mv.Schema}.Sanitize()+` CASCADE`); err != nil {
				m.logf("warning: drop the schema the move made on backend %s: %v", mv.Target, err)
			}
		}
	}
	for _, e := range []error{srcErr, dstErr} {
		if e != nil {
			m.logf("warning: %v (undo what is left there by hand: publication/subscription/slot %s)", e, mv.Subscription)
		}
	}
	m.logf("aborted the move of tenant %s to backend %s; it is served from backend %s", name, mv.Target, mv.Source)
	return nil
}

func tenantCleanup(c *cli.Context) error {
	name, err := oneTenantArg(c, "cleanup NAME")
	if err != nil {
		return err
	}
	return withAdminConn(c, func(reg *pgx.Conn) error { return cleanupSource(c, reg, name) })
}

// cleanupSource drops the schema a switched move kept on its source, and
// forgets the move.
func cleanupSource(c *cli.Context, reg *pgx.Conn, name string) error {
	ctx := c.Context
	mv, found, err := router.GetMove(ctx, reg, name)
	if err != nil {
		return cli.Exit(err, exitRuntime)
	}
	if !found {
		return cli.Exit(fmt.Errorf("tenant %q has no finished move whose source schema is kept", name), exitUsage)
	}
	if mv.Phase != router.MoveSwitched {
		return cli.Exit(fmt.Errorf("the move of tenant %q has not switched; undo it with: pgtenant tenant move %s --abort", name, name), exitUsage)
	}
	t, ok, err := router.FindTenant(ctx, reg, name)
	if err != nil {
		return cli.Exit(err, exitRuntime)
	}
	if ok && t.BackendOf() == mv.Source {
		return cli.Exit(fmt.Errorf("tenant %q is placed on backend %q again: refusing to drop its schema there", name, mv.Source), exitUsage)
	}
	src, _, err := backendConn(c, reg, mv.Source)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	if _, err := src.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{mv.Schema}.Sanitize()+` CASCADE`); err != nil {
		return cli.Exit(fmt.Errorf("drop schema %s on backend %q: %w", mv.Schema, mv.Source, err), exitRuntime)
	}
	if _, err := router.ForgetMove(ctx, reg, name); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	fmt.Fprintf(c.App.Writer, "dropped schema %s on backend %s (tenant %s is served from %s)\n", mv.Schema, mv.Source, name, mv.Target)
	return nil
}
