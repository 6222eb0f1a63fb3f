package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/router"
)

// The crowd scenario: the case the shared pool exists for. Many tenants,
// each with a couple of clients, on a PostgreSQL whose max_connections is
// far below what a pool per tenant needs.
const (
	// crowdMaxConnections is the crowd cluster's max_connections: what a
	// modest managed PostgreSQL allows.
	crowdMaxConnections = 200
	// crowdPoolSize is pgtenant's pool in the crowd scenario, whatever
	// --pool-size says: a pool that leaves most of max_connections free.
	crowdPoolSize = 32
	// crowdClientsPerTenant is each tenant's clients (an app server's small
	// pool, or two app servers).
	crowdClientsPerTenant = 2
	// crowdAccounts is the rows of each crowd tenant's pgbench_accounts:
	// enough for a point SELECT by primary key, few enough that a thousand
	// schemas fill in seconds.
	crowdAccounts = 100
	// crowdBatch is how many schemas one setup statement batch creates.
	crowdBatch = 100
	// crowdDialers is how many clients log in at once in the connect phase.
	crowdDialers = 32
	// crowdConnectPhase bounds the connect phase: clients not logged in by
	// then try again during the run (and count an error if they fail).
	crowdConnectPhase = 30 * time.Second
	// crowdConnectTimeout bounds one login, warm-up query included.
	crowdConnectTimeout = 10 * time.Second
	// crowdRetryPause is how long a client waits after an error before it
	// logs in again, as an application's retry would.
	crowdRetryPause = 500 * time.Millisecond
	// crowdGrace is how long past the run's end a query may take before it
	// counts as an error (a client queued for a server that never comes).
	crowdGrace = 5 * time.Second
	// crowdQuietTimeout bounds the wait, before a run, for the previous
	// run's server connections to go.
	crowdQuietTimeout = 15 * time.Second
)

// crowdNominal are the crowd scenario's tenant counts at the default
// --tenants (100): below, near and far above max_connections for PgBouncer's
// pool per tenant.
var crowdNominal = []int{200, 500, 1000}

// crowdSizes are the crowd scenario's tenant counts for o: crowdNominal
// scaled by o.Tenants/100 (so a tiny run stays tiny), halved by --quick.
func crowdSizes(o Options) []int {
	f := float64(o.Tenants) / defaultTenants
	if o.Quick {
		f /= 2
	}
	out := make([]int, 0, len(crowdNominal))
	for _, n := range crowdNominal {
		out = append(out, max(2, int(math.Round(float64(n)*f))))
	}
	return out
}

// crowdTenantName is the crowd scenario's i-th tenant (from 1).
func crowdTenantName(i int) string { return fmt.Sprintf("c%04d", i) }

// crowdEnv is the crowd scenario's own cluster, where max_connections is
// real, and its tenants.
type crowdEnv struct {
	backend backendInfo
	// pooled is where the poolers reach it (env.pooled).
	pooled  backendInfo
	poll    *pgx.Conn
	tenants []string
}

// pollDSN is the poller's DSN on the crowd cluster.
func (c *crowdEnv) pollDSN() string {
	return c.backend.dsn("", "application_name=pgtenant-bench-poller")
}

// setUpCrowd starts the crowd cluster and gives it n tenants c0001... with
// a small pgbench_accounts each, plus the tenant bench (empty) that
// pgtenant's readiness probe logs in to.
func (e *env) setUpCrowd(ctx context.Context, n int) error {
	t0 := time.Now()
	e.progress("starting a second throwaway PostgreSQL with max_connections %d for the crowd scenario", crowdMaxConnections)
	cl, err := pgcluster.Start(ctx, pgcluster.Options{
		MaxConnections: crowdMaxConnections,
		Settings:       map[string]string{"shared_buffers": "128MB"},
	})
	if err != nil {
		if errors.Is(err, pgcluster.ErrNotInstalled) {
			return fmt.Errorf("crowd scenario: %w (run `make deps`)", err)
		}
		return fmt.Errorf("crowd scenario: %w", err)
	}
	e.stops = append(e.stops, func() { cl.Stop() })
	started := time.Since(t0)
	t0 = time.Now()
	c := &crowdEnv{backend: backendInfo{host: cl.Host, port: cl.Port, user: cl.User, database: "postgres", socketDir: cl.Dir}}
	// The poolers reach the crowd cluster as they reach the main one (see
	// env.pooled).
	c.pooled = c.backend
	if !e.o.BackendTCP {
		c.pooled.host = cl.Dir
	}
	// The setup connection goes when setup is done: during the runs the
	// poller is the harness's only connection there, so the poolers get
	// all but one of max_connections.
	admin, err := pgx.Connect(ctx, c.backend.dsn(""))
	if err != nil {
		return fmt.Errorf("crowd cluster: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if c.poll, err = pgx.Connect(ctx, c.pollDSN()); err != nil {
		return fmt.Errorf("crowd cluster: %w", err)
	}
	e.stops = append(e.stops, func() { c.poll.Close(context.Background()) })
	for _, r := range []string{rolePgtenantProcess, rolePgbouncer, rolePgbouncerTenants} {
		if _, err := admin.Exec(ctx, "CREATE ROLE "+r+" SUPERUSER LOGIN"); err != nil {
			return fmt.Errorf("crowd cluster: %w", err)
		}
	}
	// bench through the registry's own function, which creates the
	// registry; the crowd in bulk below, as CreateTenant would register each
	// (schema, row in pgtenant.tenants) but a hundred per statement: one
	// CreateTenant per tenant takes a registry transaction of ten round
	// trips, half a minute for a thousand on a busy small machine.
	if _, _, err := router.CreateTenant(ctx, admin, benchTenant, ""); err != nil {
		return fmt.Errorf("crowd cluster: %w", err)
	}
	for i := 1; i <= n; i++ {
		name := crowdTenantName(i)
		if err := router.ValidateTenantName(name); err != nil {
			return err
		}
		c.tenants = append(c.tenants, name)
	}
	// One multi-statement query per batch of schemas: one round trip and
	// one transaction for a hundred tenants.
	for start := 0; start < n; start += crowdBatch {
		var sql strings.Builder
		batch := c.tenants[start:min(n, start+crowdBatch)]
		rows := make([]string, 0, len(batch))
		for _, s := range batch {
			acc := pgx.Identifier{s, "pgbench_accounts"}.Sanitize()
			fmt.Fprintf(&sql, "CREATE SCHEMA %s;\n", pgx.Identifier{s}.Sanitize())
			fmt.Fprintf(&sql, "CREATE TABLE %s (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));\n", acc)
			fmt.Fprintf(&sql, "INSERT INTO %s SELECT g, 1, 0, '' FROM generate_series(1, %d) g;\n", acc, crowdAccounts)
			rows = append(rows, fmt.Sprintf("('%s', '%s')", s, s))
		}
		fmt.Fprintf(&sql, "INSERT INTO pgtenant.tenants (name, schema_name) VALUES %s;\n", strings.Join(rows, ", "))
		if _, err := admin.PgConn().Exec(ctx, sql.String()).ReadAll(); err != nil {
			return fmt.Errorf("crowd cluster: create tenants: %w", err)
		}
	}
	if _, err := admin.Exec(ctx, "ANALYZE"); err != nil {
		return fmt.Errorf("crowd cluster: %w", err)
	}
	e.crowd = c
	e.progress("created %d crowd tenant schemas in %s (the cluster started in %s)", n,
		time.Since(t0).Round(100*time.Millisecond), started.Round(100*time.Millisecond))
	return nil
}

// pgbouncerDatabases is the crowd PgBouncer's [databases]: one entry per
// tenant with pool_size=1, as a PgBouncer user gives each tenant a pool of
// its own (n tenants need n server connections).
func (c *crowdEnv) pgbouncerDatabases(n int) string {
	b := c.pooled
	var s strings.Builder
	for _, t := range c.tenants[:n] {
		fmt.Fprintf(&s, "%s = host=%s port=%d dbname=%s user=%s connect_query='SET search_path TO %s' pool_size=1\n",
			t, b.host, b.port, b.database, rolePgbouncerTenants, t)
	}
	return s.String()
}

// waitQuiet waits until the crowd cluster has no server connection left
// from an earlier run, which would take its slots.
func (c *crowdEnv) waitQuiet(ctx context.Context) error {
	deadline := time.Now().Add(crowdQuietTimeout)
	for {
		var left int
		// Every client backend but the poller's own, logins still being
		// refused included: they hold a slot too.
		qctx, cancel := context.WithTimeout(ctx, activityQueryTimeout)
		err := c.poll.QueryRow(qctx, `SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&left)
		cancel()
		if err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("crowd cluster: %d server connections of an earlier run still open after %s", left, crowdQuietTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runCrowd is one crowd case against t: n tenants x crowdClientsPerTenant
// clients of the harness's own, against a pooler started for this run
// alone on the crowd cluster.
//
// pgtenant runs as its own process with a pool of crowdPoolSize; PgBouncer
// gets an entry per tenant with pool_size=1. Every client retries after an
// error (after crowdRetryPause) instead of ending the run, so errors are a
// figure: their count, the first one's text, what kinds they were, and how
// many clients completed a transaction at all.
func (e *env) runCrowd(ctx context.Context, t *target, n int) Sample {
	fail := func(err error) Sample {
		return Sample{Clients: n * crowdClientsPerTenant, Backends: -1, Error: errText(err)}
	}
	c := e.crowd
	if c == nil {
		return fail(errors.New("the crowd cluster is not set up"))
	}
	if t.external {
		return fail(errors.New("the crowd scenario starts its own poolers on a cluster of its own; a pooler given by flag cannot take part"))
	}
	if err := c.waitQuiet(ctx); err != nil {
		return fail(err)
	}
	var (
		p    *poolerProcess
		role string
		logf string
	)
	switch t.name {
	case TargetPgtenant:
		var err error
		p, err = e.startPgtenantProcessOn(ctx, processSpec{
			backend: c.pooled, role: rolePgtenantProcess, poolSize: crowdPoolSize,
			maxClientConn: n*crowdClientsPerTenant + 1000, isolation: config.IsolationSchema,
		})
		if err != nil {
			return fail(err)
		}
		role = rolePgtenantProcess
	case TargetPgbouncer:
		if e.pgbouncerBin == "" {
			return fail(errors.New("pgbouncer is not installed"))
		}
		// Probed through its admin console, which needs no server
		// connection: a probe of a tenant's entry would keep one of the
		// slots the tenants compete for.
		b, err := e.startPgbouncer(ctx, pgbouncerAuth{databases: c.pgbouncerDatabases(n), probe: "pgbouncer"})
		if err != nil {
			return fail(err)
		}
		p = &poolerProcess{pid: b.cpuPID(), addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)), stop: b.stop}
		role = rolePgbouncerTenants
		logf = filepath.Join(b.dir, "pgbouncer.log")
	default:
		return fail(fmt.Errorf("no crowd measurement for target %s", t.name))
	}
	defer p.stop()
	watch := watchActivity(ctx, &c.poll, c.pollDSN(), role, "")
	var cpu func() (time.Duration, bool)
	res := e.crowdLoad(ctx, p.addr, c.tenants[:n], func() { cpu = cpuMeter(p.pid) })
	backends, counted := watch()
	s := sampleOf(res.pgbenchResult, n*crowdClientsPerTenant, backends, counted)
	s.Errors, s.FirstError, s.ErrorKinds, s.Served = res.errors, res.first, res.kinds, res.served
	if cpu != nil {
		s = s.withCPU(cpu)
	}
	if logf != "" {
		s.Note = pgbouncerRefusals(logf)
	}
	return s
}

// pgbouncerRefusals counts the server logins PostgreSQL refused in a
// PgBouncer log: why its clients saw what they saw.
func pgbouncerRefusals(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	n, first := 0, ""
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "too many clients") {
			if n == 0 {
				first = line
				if i := strings.Index(line, "server login failed:"); i >= 0 {
					first = strings.TrimSpace(line[i:])
				}
			}
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("PgBouncer logged %d refused server logins (%s)", n, first)
}

// crowdResult is a crowd load's outcome: pgbenchResult's figures plus the
// errors the clients went on after.
type crowdResult struct {
	pgbenchResult
	errors int
	first  string
	kinds  map[string]int
	served int
}

// errorTally counts the clients' errors from many goroutines.
type errorTally struct {
	mu    sync.Mutex
	n     int
	first string
	kinds map[string]int
}

func (t *errorTally) add(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	if t.first == "" {
		t.first = errText(err)
	}
	if t.kinds == nil {
		t.kinds = map[string]int{}
	}
	t.kinds[errorKind(err)]++
}

// errorKind groups an error for the notes: the server's severity, SQLSTATE
// and message, else a timeout or the system error, else its text.
func errorKind(err error) string {
	var pe *pgconn.PgError
	var ne net.Error
	var errno syscall.Errno
	switch {
	case errors.As(err, &pe):
		return fmt.Sprintf("%s %s %s", pe.Severity, pe.Code, pe.Message)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout (no answer in time)"
	case errors.As(err, &errno):
		return errno.Error()
	}
	s := errText(err)
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// crowdLoad runs crowdClientsPerTenant clients per tenant against addr: a
// connect phase (bounded by crowdConnectPhase, crowdDialers at once, a
// warm-up query each), then all clients run pgbench -S's query back to back
// for --duration. onStart is called as the measured phase begins. Clients
// that fail (to log in, or a query) count the error, wait crowdRetryPause
// and log in again.
func (e *env) crowdLoad(ctx context.Context, addr string, tenants []string, onStart func()) crowdResult {
	var res crowdResult
	host, port, err := splitAddr(addr)
	if err != nil {
		res.err = err
		return res
	}
	n := len(tenants) * crowdClientsPerTenant
	tenantOf := func(i int) string { return tenants[i/crowdClientsPerTenant] }
	var tally errorTally
	conns := make([]*pgconn.PgConn, n)

	phaseEnd := time.Now().Add(crowdConnectPhase)
	pctx, cancel := context.WithDeadline(ctx, phaseEnd)
	sem := make(chan struct{}, crowdDialers)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-pctx.Done():
				return // not tried in time: it logs in during the run
			}
			defer func() { <-sem }()
			c, err := crowdConnect(pctx, host, port, tenantOf(i), phaseEnd)
			if err != nil {
				tally.add(err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	cancel()
	if err := ctx.Err(); err != nil {
		closeConns(conns)
		res.err = err
		return res
	}

	d := time.Duration(seconds(e.o.Duration)) * time.Second
	began := time.Now()
	stopAt := began.Add(d)
	onStart()
	counts := make([]int, n)
	lats := make([][]float64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[i]
			defer func() {
				if c != nil {
					c.Close(context.Background())
				}
			}()
			pause := func() {
				wait := crowdRetryPause/2 + rand.N(crowdRetryPause)
				select {
				case <-time.After(min(wait, time.Until(stopAt))):
				case <-ctx.Done():
				}
			}
			if c != nil {
				c.Conn().SetDeadline(stopAt.Add(crowdGrace))
			}
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				if c == nil {
					var err error
					if c, err = crowdConnect(ctx, host, port, tenantOf(i), stopAt.Add(crowdGrace)); err != nil {
						tally.add(err)
						pause()
						continue
					}
					c.Conn().SetDeadline(stopAt.Add(crowdGrace))
				}
				q := "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(rand.IntN(crowdAccounts)+1)
				t0 := time.Now()
				if err := execDrain(c, q); err != nil {
					tally.add(err)
					c.Close(context.Background())
					c = nil
					pause()
					continue
				}
				end := time.Now()
				if end.After(stopAt) {
					break
				}
				lats[i] = append(lats[i], float64(end.Sub(t0).Microseconds()))
				counts[i]++
			}
		}()
	}
	wg.Wait()

	total := 0
	for i := range n {
		total += counts[i]
		if counts[i] > 0 {
			res.served++
		}
		for _, l := range lats[i] {
			res.txs = append(res.txs, txRecord{latencyUS: l})
		}
	}
	res.errors, res.first, res.kinds = tally.n, tally.first, tally.kinds
	if total == 0 {
		res.err = fmt.Errorf("no transaction completed (%d errors; first: %s)", tally.n, tally.first)
		return res
	}
	res.tps = float64(total) / d.Seconds()
	res.processed = int64(total)
	return res
}

// crowdConnect logs a client of tenant in to host:port and runs a warm-up
// query, all before deadline (and within crowdConnectTimeout).
func crowdConnect(ctx context.Context, host string, port int, tenant string, deadline time.Time) (*pgconn.PgConn, error) {
	if limit := time.Now().Add(crowdConnectTimeout); limit.Before(deadline) {
		deadline = limit
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%d sslmode=disable", host, port))
	if err != nil {
		return nil, err
	}
	cfg.User = clientUser
	cfg.Database = tenant
	cfg.RuntimeParams["application_name"] = "pgtenant-bench"
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: %w", tenant, err)
	}
	c.Conn().SetDeadline(deadline)
	if err := execDrain(c, "SELECT abalance FROM pgbench_accounts WHERE aid = 1"); err != nil {
		c.Close(context.Background())
		return nil, fmt.Errorf("tenant %s: %w", tenant, err)
	}
	return c, nil
}

func closeConns(conns []*pgconn.PgConn) {
	for _, c := range conns {
		if c != nil {
			c.Close(context.Background())
		}
	}
}
