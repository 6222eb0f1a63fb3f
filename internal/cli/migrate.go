package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// `pgtenant migrate` applies plain SQL migration files to every tenant's
// schema, and `migrate status` shows where each tenant is. What ran where
// is kept in the registry (router/migrate.go); the files are read here.
//
// Each file runs on a connection of the admin role (--registry, else
// --backend, as the other tenant commands connect), in one transaction per
// tenant together with the row that records it, with search_path set as
// the proxy pins it for the tenant's clients. The tables it creates belong
// to the admin role, whose default privileges in each tenant schema
// (router's grantPoolRoles) give the pool role what its clients need.

const defaultMigrateJobs = 4

func migrateCommand() *cli.Command {
	runFlags := append(config.BackendFlags(),
		&cli.StringFlag{Name: "dir", Usage: "directory of the tenant migrations, files NNNN_name.sql applied in version order to each tenant's schema"},
		&cli.StringFlag{Name: "shared-dir", Usage: "directory of shared migrations (NNNN_name.sql), applied once to schema public before any tenant's"},
		&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Value: defaultMigrateJobs, Usage: "tenants migrated at once, each on a connection of its own"},
		&cli.StringSliceFlag{Name: "tenant", Usage: "migrate only this tenant (repeatable; it may be disabled); default: every enabled tenant"},
		&cli.BoolFlag{Name: "dry-run", Usage: "list what would run for each tenant, change nothing"},
		&cli.BoolFlag{Name: "stop-on-error", Usage: "start no further tenant after one fails (those running finish)"},
		&cli.BoolFlag{Name: "wait", Usage: "wait for another migrate that is running to finish, instead of refusing to start"},
	)
	statusFlags := append(config.BackendFlags(),
		&cli.StringFlag{Name: "dir", Usage: "directory of the tenant migrations, to list each tenant's pending files"},
		&cli.StringFlag{Name: "shared-dir", Usage: "directory of the shared migrations, to list public's pending files"},
		&cli.StringSliceFlag{Name: "tenant", Usage: "show only this tenant (repeatable); default: every tenant"},
		&cli.StringFlag{Name: "format", Value: "table", Usage: "table, csv or json"},
	)
	return &cli.Command{
		Name: "migrate",
		Usage: "apply the SQL migrations of --dir to every enabled tenant's schema, each file in one transaction " +
			"per tenant, recording what ran in the registry",
		Flags:  runFlags,
		Before: config.LoadConfigFile(runFlags),
		Action: migrate,
		Subcommands: []*cli.Command{{
			Name:   "status",
			Usage:  "show each tenant's migration version, when it last migrated, how long its migrations took, and (with --dir) its pending files",
			Flags:  statusFlags,
			Before: config.LoadConfigFile(statusFlags),
			Action: migrateStatus,
		}},
	}
}

// migrateConnect opens a connection of the admin role for migrate. Its
// statements use unnamed prepared statements (QueryExecModeExec), as the
// workers end each tenant with DISCARD ALL, which would drop pgx's cache.
func migrateConnect(ctx context.Context, c *cli.Context) (*pgx.Conn, error) {
	dsn := c.String("registry")
	if dsn == "" {
		dsn = c.String("backend")
	}
	if dsn == "" {
		return nil, cli.Exit("--registry or --backend (or PGTENANT_REGISTRY, PGTENANT_BACKEND, or registry or backend in --config) is required", exitUsage)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, cli.Exit(fmt.Errorf("--registry/--backend: %w", err), exitUsage)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	if _, set := cfg.RuntimeParams["application_name"]; !set {
		cfg.RuntimeParams["application_name"] = "pgtenant migrate"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, cli.Exit(config.NewConnectError(adminTarget(c), dsn, err), exitRuntime)
	}
	return conn, nil
}

// migrateFiles reads --dir and --shared-dir before anything connects, so
// that a misnamed file fails fast and alone.
func migrateFiles(c *cli.Context, required bool) (files, shared []migFile, err error) {
	dir, sharedDir := c.String("dir"), c.String("shared-dir")
	if required && dir == "" && sharedDir == "" {
		return nil, nil, cli.Exit("usage: pgtenant migrate --dir DIR [--shared-dir DIR] [-j N] [--tenant NAME]... [--dry-run] "+
			"[--stop-on-error] [--wait]: --dir or --shared-dir is required", exitUsage)
	}
	if dir != "" {
		if files, err = loadMigrations(dir); err != nil {
			return nil, nil, cli.Exit(err, exitUsage)
		}
	}
	if sharedDir != "" {
		if shared, err = loadMigrations(sharedDir); err != nil {
			return nil, nil, cli.Exit(err, exitUsage)
		}
	}
	return files, shared, nil
}

// migrateTenants picks the tenants of a run: those named by --tenant
// (which must exist, enabled or not), else every enabled one when
// enabledOnly, else every one. The integrator folds it onto the shared
// tenant selection of exec and each.
func migrateTenants(ctx context.Context, db router.DB, names []string, enabledOnly bool) ([]router.Tenant, error) {
	all, err := router.ListTenants(ctx, db)
	if err != nil {
		return nil, cli.Exit(err, exitRuntime)
	}
	if len(names) == 0 {
		var out []router.Tenant
		for _, t := range all {
			if t.Active || !enabledOnly {
				out = append(out, t)
			}
		}
		return out, nil
	}
	byName := make(map[string]router.Tenant, len(all))
	for _, t := range all {
		byName[t.Name] = t
	}
	var out []router.Tenant
	seen := map[string]bool{}
	for _, n := range names {
		t, ok := byName[n]
		if !ok {
			return nil, cli.Exit(&router.UnknownTenantError{Name: n}, exitUsage)
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// takeMigrateLock takes router.MigrateLockKey on conn, for the session, so
// that two runs never interleave: without wait it refuses when another run
// holds it, naming that run's backend; with wait it queues behind it.
func takeMigrateLock(ctx context.Context, conn *pgx.Conn, wait bool, w io.Writer) error {
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_try_advisory_lock($1)`, router.MigrateLockKey).Scan(&ok); err != nil {
		return cli.Exit(fmt.Errorf("take the migrate lock: %w", err), exitRuntime)
	}
	if ok {
		return nil
	}
	holder := migrateLockHolder(ctx, conn)
	if !wait {
		return cli.Exit(fmt.Sprintf("another migrate is running (%s); wait for it to finish, or pass --wait to start when it does",
			holder), exitRuntime)
	}
	fmt.Fprintf(w, "another migrate is running (%s); waiting for it to finish\n", holder)
	if _, err := conn.Exec(ctx, `SELECT pg_catalog.pg_advisory_lock($1)`, router.MigrateLockKey); err != nil {
		return cli.Exit(fmt.Errorf("wait for the migrate lock: %w", err), exitRuntime)
	}
	return nil
}

// migrateLockHolder says who holds the migrate lock, as far as this role
// may see; best effort.
func migrateLockHolder(ctx context.Context, conn *pgx.Conn) string {
	var pid int32
	var app, from string
	var since time.Time
	err := conn.QueryRow(ctx, `
		SELECT l.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),
		       coalesce(a.backend_start, now())
		  FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
		 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		   AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
		   AND l.classid::bigint = $1 AND l.objid::bigint = $2
		 LIMIT 1`, router.MigrateLockKey>>32, router.MigrateLockKey&0xffffffff).Scan(&pid, &app, &from, &since)
	if err != nil {
		return "it holds the advisory lock pgtenant migrate uses"
	}
	if app == "" {
		app = "a session"
	}
	return fmt.Sprintf("%s, PostgreSQL pid %d, from %s, connected at %s", app, pid, from, since.UTC().Format(time.RFC3339))
}

// tenantPlan is what one tenant (or public, with Tenant.Name "") gets.
type tenantPlan struct {
	Tenant  router.Tenant
	Version int64 // the highest version applied before the run
	Pending []migFile
}

// target names a plan's schema in messages.
func (p tenantPlan) target() string {
	if p.Tenant.Name == "" {
		return "public (shared)"
	}
	return p.Tenant.Name
}

// searchPath is the search_path the files run with: the tenant's schema
// then public, exactly as the proxy pins it for the tenant's clients, so
// that a migration resolves names as the application will; public alone
// for shared migrations.
func (p tenantPlan) searchPath() string {
	if p.Tenant.Name == "" {
		return "public"
	}
	return pgx.Identifier{p.Tenant.Schema}.Sanitize() + ", public"
}

func makePlans(tenants []router.Tenant, files []migFile, applied []router.AppliedMigration) []tenantPlan {
	byTenant := map[string][]router.AppliedMigration{}
	for _, m := range applied {
		byTenant[m.Tenant] = append(byTenant[m.Tenant], m)
	}
	plans := make([]tenantPlan, 0, len(tenants))
	for _, t := range tenants {
		plans = append(plans, tenantPlan{Tenant: t, Version: maxVersion(byTenant[t.Name]),
			Pending: pendingFiles(files, byTenant[t.Name])})
	}
	return plans
}

func maxVersion(ms []router.AppliedMigration) int64 {
	var v int64
	for _, m := range ms {
		v = max(v, m.Version)
	}
	return v
}

// migrateResult is how one plan went.
type migrateResult struct {
	Plan    tenantPlan
	Applied int   // files applied in this run
	Version int64 // the highest version applied after the run
	Took    time.Duration
	// FailedFile and Err say where the tenant stopped; Err is nil when it
	// did not.
	FailedFile string
	Err        error
}

// line is the one line a tenant's result gets in the output.
func (r migrateResult) line() string {
	switch {
	case r.Err != nil && r.FailedFile == "":
		return fmt.Sprintf("%s: FAILED: %s", r.Plan.target(), describeMigrateError(r.Err))
	case r.Err != nil:
		return fmt.Sprintf("%s: FAILED at %s (after %d file(s) applied in this run; %s rolled back): %s",
			r.Plan.target(), r.FailedFile, r.Applied, r.FailedFile, describeMigrateError(r.Err))
	case r.Applied == 0:
		return fmt.Sprintf("%s: up to date at version %d", r.Plan.target(), r.Version)
	default:
		return fmt.Sprintf("%s: applied %d file(s), now at version %d, in %s", r.Plan.target(), r.Applied, r.Version,
			r.Took.Round(time.Millisecond))
	}
}

// describeMigrateError renders a PostgreSQL error with what a person needs
// to find it in the file: the SQLSTATE, the message, the line and column
// (PostgreSQL's position counts characters of the text sent, which is the
// file alone), the detail and the hint.
func describeMigrateError(err error) string {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err.Error()
	}
	s := fmt.Sprintf("%s %s: %s", pe.Severity, pe.Code, pe.Message)
	var fe *migFileError
	if errors.As(err, &fe) && pe.Position > 0 {
		line, col := lineColumn(fe.sql, int(pe.Position))
		s += fmt.Sprintf(" (line %d, column %d)", line, col)
	}
	if pe.Detail != "" {
		s += "; DETAIL: " + pe.Detail
	}
	if pe.Hint != "" {
		s += "; HINT: " + pe.Hint
	}
	return s
}

// migFileError is an error of a file's own SQL, which knows the text that
// PostgreSQL's position counts in.
type migFileError struct {
	sql string
	err error
}

func (e *migFileError) Error() string { return e.err.Error() }
func (e *migFileError) Unwrap() error { return e.err }

// lineColumn turns a 1-based character position in sql into a line and
// column, both 1-based.
func lineColumn(sql string, pos int) (line, col int) {
	line, col = 1, 1
	i := 1
	for _, r := range sql {
		if i == pos {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		i++
	}
	return line, col
}

// applyPlan runs p's pending files in order on conn and stops at the first
// that fails. conn is the worker's: the session is reset first, so that
// nothing a previous tenant's file set (a role, a setting) carries over.
func applyPlan(ctx context.Context, conn *pgx.Conn, p tenantPlan) (r migrateResult) {
	r = migrateResult{Plan: p, Version: p.Version}
	start := time.Now()
	defer func() { r.Took = time.Since(start) }()
	if len(p.Pending) == 0 {
		return r
	}
	if _, err := conn.PgConn().Exec(ctx, `DISCARD ALL`).ReadAll(); err != nil {
		r.Err = fmt.Errorf("reset the connection: %w", err)
		return r
	}
	for _, f := range p.Pending {
		if err := applyFile(ctx, conn, p, f); err != nil {
			r.FailedFile, r.Err = f.Name, err
			return r
		}
		r.Applied++
		r.Version = max(r.Version, f.Version)
	}
	return r
}

// applyFile runs f for p's schema and records it, in one transaction: the
// file's SQL is sent as one simple query (so a file may hold many
// statements), inside BEGIN ... COMMIT together with the version row, so
// a file that fails leaves nothing behind, not even part of itself.
//
// A file marked no-transaction runs as it is, outside a transaction, for
// statements PostgreSQL refuses in one (CREATE INDEX CONCURRENTLY); its row
// is written after it succeeds. It should hold one statement: PostgreSQL
// runs several sent at once in one implicit transaction, which those
// statements refuse too. If it fails, what it did before the failure
// stays (an INVALID index for CONCURRENTLY), and the next run runs it
// again: write it to be rerun (IF NOT EXISTS, and DROP INDEX IF EXISTS for
// an invalid one).
func applyFile(ctx context.Context, conn *pgx.Conn, p tenantPlan, f migFile) error {
	pc := conn.PgConn()
	record := func(d time.Duration) error {
		return router.RecordMigration(ctx, conn, router.AppliedMigration{Tenant: p.Tenant.Name, Version: f.Version,
			Name: f.Name, Checksum: f.Checksum, Duration: d})
	}
	rollback := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = pc.Exec(rctx, `ROLLBACK`).ReadAll()
	}
	if f.NoTx {
		if _, err := pc.Exec(ctx, `SET search_path TO `+p.searchPath()).ReadAll(); err != nil {
			return fmt.Errorf("set search_path: %w", err)
		}
		start := time.Now()
		if _, err := pc.Exec(ctx, f.SQL).ReadAll(); err != nil {
			return &migFileError{sql: f.SQL, err: err}
		}
		d := time.Since(start)
		if pc.TxStatus() != 'I' {
			rollback()
			return errors.New("the file (marked " + noTxMarker + ") leaves a transaction open; it was rolled back")
		}
		return record(d)
	}
	if _, err := pc.Exec(ctx, `BEGIN; SET LOCAL search_path TO `+p.searchPath()).ReadAll(); err != nil {
		rollback()
		return fmt.Errorf("begin: %w", err)
	}
	start := time.Now()
	if _, err := pc.Exec(ctx, f.SQL).ReadAll(); err != nil {
		rollback()
		return &migFileError{sql: f.SQL, err: err}
	}
	d := time.Since(start)
	if pc.TxStatus() != 'T' {
		rollback()
		return errors.New("the file ends the transaction it runs in (a COMMIT or ROLLBACK in it), so what it did before " +
			"that stays while the file is not recorded as applied; remove the COMMIT/ROLLBACK (each file runs in a " +
			"transaction of its own) or mark the file -- " + noTxMarker)
	}
	if err := record(d); err != nil {
		rollback()
		return err
	}
	res, err := pc.Exec(ctx, `COMMIT`).ReadAll()
	if err != nil {
		rollback()
		return fmt.Errorf("commit: %w", err)
	}
	if len(res) != 1 || res[0].CommandTag.String() != "COMMIT" {
		return errors.New("commit: PostgreSQL rolled the transaction back")
	}
	return nil
}

// migrateEach runs f for each tenant plan on j workers at once, worker
// 0..j-1 each taking the next plan as it finishes one, and starts no
// further plan once f returned stop. It is migrate's own small pool; the
// integrator folds it onto the one exec and each share.
func migrateEach(plans []tenantPlan, j int, f func(worker int, p tenantPlan) (stop bool)) {
	next := make(chan tenantPlan)
	var wg sync.WaitGroup
	var stopped sync.Once
	done := make(chan struct{})
	for w := range max(1, min(j, len(plans))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range next {
				select {
				case <-done: // the feeder may have sent it as another stopped
					continue
				default:
				}
				if f(w, p) {
					stopped.Do(func() { close(done) })
				}
			}
		}()
	}
feed:
	for _, p := range plans {
		select {
		case <-done:
			break feed
		default:
		}
		select {
		case next <- p:
		case <-done:
			break feed
		}
	}
	close(next)
	wg.Wait()
}

func migrate(c *cli.Context) error {
	if c.NArg() != 0 {
		return cli.Exit(fmt.Sprintf("pgtenant migrate takes no arguments (got %q); did you mean --dir %s?",
			c.Args().First(), c.Args().First()), exitUsage)
	}
	jobs := c.Int("jobs")
	if jobs < 1 {
		return cli.Exit(fmt.Sprintf("-j %d: run at least 1 tenant at a time", jobs), exitUsage)
	}
	names := c.StringSlice("tenant")
	for _, n := range names {
		if err := tenantArg(n, false); err != nil {
			return err
		}
	}
	files, shared, err := migrateFiles(c, true)
	if err != nil {
		return err
	}
	ctx, w := c.Context, c.App.Writer
	dry := c.Bool("dry-run")

	conn, err := migrateConnect(ctx, c)
	if err != nil {
		return err
	}
	// Closing the session releases the migrate lock.
	defer conn.Close(context.Background())
	if !dry {
		if err := takeMigrateLock(ctx, conn, c.Bool("wait"), w); err != nil {
			return err
		}
		// The registry of an older pgtenant gets the migrations tables.
		if err := router.EnsureRegistry(ctx, conn); err != nil {
			return cli.Exit(err, exitRuntime)
		}
	}
	tenants, err := migrateTenants(ctx, conn, names, true)
	if err != nil {
		return err
	}
	if err := refuseElsewhere(tenants, "migrate"); err != nil {
		return err
	}
	applied, appliedShared, err := appliedMigrations(ctx, conn)
	if err != nil {
		return err
	}
	// Every tenant's record against the files, before anything runs: a
	// changed file would leave tenants on different schemas for good.
	if err := checkChecksums(files, shared, applied, appliedShared); err != nil {
		return cli.Exit(err, exitUsage)
	}
	sharedPlan := tenantPlan{Version: maxVersion(appliedShared), Pending: pendingFiles(shared, appliedShared)}
	var plans []tenantPlan
	if c.String("dir") != "" {
		plans = makePlans(tenants, files, applied)
	}

	if dry {
		printDryRun(w, c.String("shared-dir") != "", sharedPlan, plans)
		return nil
	}

	start := time.Now()
	// Shared migrations first, once: tenant migrations may refer to what
	// they create in public.
	if c.String("shared-dir") != "" {
		sc, err := migrateConnect(ctx, c)
		if err != nil {
			return err
		}
		r := applyPlan(ctx, sc, sharedPlan)
		sc.Close(context.Background())
		fmt.Fprintln(w, r.line())
		if r.Err != nil {
			return cli.Exit(fmt.Sprintf("the shared migration %s failed, so no tenant was migrated (tenant migrations "+
				"may depend on it); fix it and run migrate again", r.FailedFile), exitRuntime)
		}
	}
	if c.String("dir") == "" {
		return nil
	}

	progress := newMigrateProgress(w, len(plans), start)
	conns := make([]*pgx.Conn, min(jobs, len(plans)))
	defer func() {
		for _, wc := range conns {
			if wc != nil {
				wc.Close(context.Background())
			}
		}
	}()
	stopOnError := c.Bool("stop-on-error")
	var mu sync.Mutex
	var failed []migrateResult
	started := 0
	migrateEach(plans, jobs, func(worker int, p tenantPlan) bool {
		mu.Lock()
		started++
		mu.Unlock()
		var r migrateResult
		if len(p.Pending) == 0 {
			r = migrateResult{Plan: p, Version: p.Version}
		} else {
			// A worker connects when it first has work, and again after its
			// connection broke (a tenant's failure may have closed it).
			if conns[worker] == nil || conns[worker].IsClosed() {
				wc, err := migrateConnect(ctx, c)
				if err != nil {
					r = migrateResult{Plan: p, Version: p.Version, Err: err}
				}
				conns[worker] = wc
			}
			if r.Err == nil {
				r = applyPlan(ctx, conns[worker], p)
			}
		}
		progress.done(r)
		if r.Err != nil {
			mu.Lock()
			failed = append(failed, r)
			mu.Unlock()
			return stopOnError
		}
		return ctx.Err() != nil
	})
	progress.finish()
	notStarted := len(plans) - started
	if len(failed) == 0 && notStarted == 0 {
		return nil
	}
	sort.Slice(failed, func(i, j int) bool { return failed[i].Plan.Tenant.Name < failed[j].Plan.Tenant.Name })
	var fails []string
	for _, r := range failed {
		fails = append(fails, r.Plan.Tenant.Name)
	}
	msg := fmt.Sprintf("%d of %d tenant(s) failed: %s", len(failed), len(plans), strings.Join(fails, ", "))
	if notStarted > 0 {
		msg += fmt.Sprintf("; %d tenant(s) were not started", notStarted)
		if stopOnError && len(failed) > 0 {
			msg += " (--stop-on-error)"
		}
	}
	msg += ". A failed file left nothing behind: fix the cause and run migrate again, and each tenant resumes at its first pending file"
	return cli.Exit(msg, exitRuntime)
}

func printDryRun(w io.Writer, withShared bool, shared tenantPlan, plans []tenantPlan) {
	say := func(p tenantPlan) {
		if len(p.Pending) == 0 {
			fmt.Fprintf(w, "%s: up to date at version %d\n", p.target(), p.Version)
			return
		}
		var names []string
		for _, f := range p.Pending {
			n := f.Name
			if f.NoTx {
				n += " (no transaction)"
			}
			names = append(names, n)
		}
		fmt.Fprintf(w, "%s: would apply %s\n", p.target(), strings.Join(names, ", "))
	}
	if withShared {
		say(shared)
	}
	n := 0
	for _, p := range plans {
		say(p)
		if len(p.Pending) > 0 {
			n++
		}
	}
	fmt.Fprintf(w, "dry run: %d of %d tenant(s) have pending migrations; nothing was changed\n", n, len(plans))
}

// appliedMigrations reads what migrate recorded: every tenant's applied
// migrations and the shared ones.
func appliedMigrations(ctx context.Context, conn *pgx.Conn) (tenants, shared []router.AppliedMigration, err error) {
	if tenants, err = router.ListAppliedMigrations(ctx, conn); err != nil {
		return nil, nil, cli.Exit(err, exitRuntime)
	}
	if shared, err = router.ListSharedMigrations(ctx, conn); err != nil {
		return nil, nil, cli.Exit(err, exitRuntime)
	}
	return tenants, shared, nil
}
