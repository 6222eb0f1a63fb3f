package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

const (
	// tenantDialers is how many of the many-tenants clients connect at once.
	tenantDialers = 16
	// tenantAccounts is pgbench_accounts' row count at scale 1, which every
	// tenant has.
	tenantAccounts = 100000
	// tenantQueryTimeout bounds one query of a many-tenants client: a run
	// that stalls fails instead of hanging the harness.
	tenantQueryTimeout = 30 * time.Second
)

// runTenants is the many-tenants scenario against t: one client per
// tenant, each running pgbench -S's transaction (SELECT abalance FROM
// pgbench_accounts WHERE aid = random) in the simple protocol, back to
// back, for --duration.
//
// The clients are the harness's own rather than one pgbench process per
// tenant (pgbench connects a process to one database, and the tenant is
// the database): a hundred pgbench processes started at once on a small
// machine take seconds to all get going, the first ones taking the CPU the
// last ones need to start, so their runs barely overlap. Here every client
// connects and runs one warm-up query (so that each pooler has its server
// connections before the clock starts), then all start together and stop
// together, and every transaction's latency is kept.
//
// pgtenant runs as a process of its own here, as PgBouncer does, so that
// the clients in this process do not share a Go runtime with it.
func (e *env) runTenants(ctx context.Context, t *target) Sample {
	return e.runTenantsWith(ctx, t, pointSelect)
}

// pointSelect is pgbench -S's transaction on a tenant's tables at scale 1.
func pointSelect() string {
	return "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(rand.IntN(tenantAccounts)+1)
}

// runTenantsWith is runTenants with each transaction's SQL from next
// (called from many goroutines at once).
func (e *env) runTenantsWith(ctx context.Context, t *target, next func() string) Sample {
	addr := t.addr()
	pid := t.cpuPID()
	if t.name == TargetPgtenant && !t.external {
		p, err := e.startPgtenantProcess(ctx, e.loginRole(rolePgtenantProcess))
		if err != nil {
			return Sample{Error: errText(err), Backends: -1}
		}
		defer p.stop()
		addr, pid = p.addr, p.pid
	}
	prefix := ""
	if t.name == TargetPgtenant && !t.external {
		prefix = e.tenantRolePrefix()
	}
	watch := e.watchBackendsOf(ctx, t.tenantsRole(), prefix)
	cpu := cpuMeter(pid)
	res := e.tenantLoad(ctx, t, addr, next)
	backends, counted := watch()
	return sampleOf(res, len(e.tenants), backends, counted).withCPU(cpu)
}

// tenantLoad connects one client per tenant to addr and runs the load,
// each transaction's SQL from next.
func (e *env) tenantLoad(ctx context.Context, t *target, addr string, next func() string) pgbenchResult {
	host, port, err := splitAddr(addr)
	if err != nil {
		return pgbenchResult{err: err}
	}
	conns, err := e.connectTenants(ctx, t, host, port)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	if err != nil {
		return pgbenchResult{err: err}
	}

	d := time.Duration(seconds(e.o.Duration)) * time.Second
	start := make(chan struct{})
	var (
		wg     sync.WaitGroup
		counts = make([]int, len(conns))
		lats   = make([][]float64, len(conns))
		errs   = make([]error, len(conns))
		ends   = make([]time.Time, len(conns))
		began  time.Time
	)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			stopAt := began.Add(d)
			for time.Now().Before(stopAt) {
				q := next()
				t0 := time.Now()
				if err := execDrain(c, q); err != nil {
					errs[i] = err
					return
				}
				now := time.Now()
				lats[i] = append(lats[i], float64(now.Sub(t0).Microseconds()))
				counts[i]++
				ends[i] = now
			}
		}()
	}
	began = time.Now()
	close(start)
	wg.Wait()

	var res pgbenchResult
	if err := errors.Join(errs...); err != nil {
		res.err = err
		return res
	}
	last, n := began, 0
	for i := range conns {
		n += counts[i]
		if ends[i].After(last) {
			last = ends[i]
		}
		for _, l := range lats[i] {
			res.txs = append(res.txs, txRecord{latencyUS: l})
		}
	}
	if n == 0 {
		res.err = errors.New("no transaction completed")
		return res
	}
	res.tps = float64(n) / last.Sub(began).Seconds()
	res.processed = int64(n)
	return res
}

// connectTenants opens one connection per tenant and runs a warm-up query
// on each. The conns slice it returns may hold some nil on error; the
// caller closes the others.
func (e *env) connectTenants(ctx context.Context, t *target, host string, port int) ([]*pgconn.PgConn, error) {
	conns := make([]*pgconn.PgConn, len(e.tenants))
	errs := make([]error, len(e.tenants))
	sem := make(chan struct{}, tenantDialers)
	var wg sync.WaitGroup
	for i, tenant := range e.tenants {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			conns[i], errs[i] = e.connectTenant(ctx, t, host, port, tenant)
		}()
	}
	wg.Wait()
	return conns, errors.Join(errs...)
}

// connectTenant logs a client of tenant in to t at host:port, as pgbench
// would (user, database, and for a direct connection search_path in
// options), and runs the warm-up query.
func (e *env) connectTenant(ctx context.Context, t *target, host string, port int, tenant string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%d sslmode=disable connect_timeout=15", host, port))
	if err != nil {
		return nil, err
	}
	cfg.User = e.clientUser(t)
	cfg.Database = t.database(tenant)
	cfg.RuntimeParams["application_name"] = "pgtenant-bench"
	if t.name == TargetDirect {
		cfg.RuntimeParams["options"] = "-c search_path=" + tenant
		cfg.Password = e.backend.password
	}
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: %w", tenant, err)
	}
	// Queries run with context.Background (no context watcher per query);
	// this deadline is what bounds a stalled one.
	c.Conn().SetDeadline(time.Now().Add(time.Duration(seconds(e.o.Duration))*time.Second + tenantQueryTimeout))
	if err := execDrain(c, "SELECT count(*) FROM pgbench_branches"); err != nil {
		c.Close(ctx)
		return nil, fmt.Errorf("tenant %s: %w", tenant, err)
	}
	return c, nil
}

// execDrain runs sql in the simple protocol and discards the rows.
func execDrain(c *pgconn.PgConn, sql string) error {
	mrr := c.Exec(context.Background(), sql)
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		for rr.NextRow() {
		}
		if _, err := rr.Close(); err != nil {
			mrr.Close()
			return err
		}
	}
	return mrr.Close()
}
