package bench

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// scenario is one numbered scenario of the benchmark; its cases are the
// runs that make up one round of it.
type scenario struct {
	num   int
	name  string
	title string
	cases func(o Options) []*benchCase
	// named scenarios run only when --only names them: they repeat a case
	// of the full run for a quick check of one figure.
	named bool
}

// benchCase is one measurement, run against each of its targets once per
// round.
type benchCase struct {
	scenario *scenario
	label    string
	clients  int
	// metric is what Sample field the case measures: "tps" or
	// "bytes_per_client".
	metric string
	// only restricts the case to some targets; nil means every target.
	only []string
	run  func(ctx context.Context, e *env, t *target) Sample
}

// targets are the names of e's targets this case runs against, in order.
func (c *benchCase) targets(e *env) []string {
	var ts []string
	names := allTargets
	if c.only != nil {
		names = c.only
	}
	for _, n := range names {
		if _, ok := e.targets[n]; ok {
			ts = append(ts, n)
		}
	}
	return ts
}

// Scenarios, in the order they run. The names are what --only takes (the
// numbers work too).
var scenarios = []*scenario{
	{num: 1, name: "select", title: "pgbench -S, simple protocol", cases: func(o Options) []*benchCase {
		var cs []*benchCase
		for _, n := range []int{10, 50, 200} {
			cs = append(cs, pgbenchCase(o, fmt.Sprintf("-S simple c=%d", o.clients(n)), o.clients(n), "-S", "-n", "-M", "simple"))
		}
		return cs
	}},
	{num: 2, name: "protocol", title: "pgbench -S, extended and prepared protocol", cases: func(o Options) []*benchCase {
		c := o.clients(50)
		return []*benchCase{
			pgbenchCase(o, fmt.Sprintf("-S extended c=%d", c), c, "-S", "-n", "-M", "extended"),
			pgbenchCase(o, fmt.Sprintf("-S prepared c=%d", c), c, "-S", "-n", "-M", "prepared"),
		}
	}},
	{num: 3, name: "tpcb", title: "TPC-B (pgbench's default script)", cases: func(o Options) []*benchCase {
		c := o.clients(50)
		// Not -n: pgbench vacuums and truncates pgbench_history before each
		// run, so every target starts from the same tables.
		return []*benchCase{pgbenchCase(o, fmt.Sprintf("TPC-B c=%d", c), c, "-M", "simple")}
	}},
	{num: 4, name: "connect", title: "connect per transaction (pgbench -S -C)", cases: func(o Options) []*benchCase {
		c := o.clients(20)
		return []*benchCase{pgbenchCase(o, fmt.Sprintf("-S -C c=%d", c), c, "-S", "-n", "-C", "-M", "simple")}
	}},
	{num: 5, name: "tenants", title: "many tenants: one client per tenant schema, pgbench -S's query", cases: func(o Options) []*benchCase {
		return []*benchCase{{
			label: fmt.Sprintf("%d tenants x 1 client", o.Tenants), clients: o.Tenants, metric: "tps",
			run: func(ctx context.Context, e *env, t *target) Sample { return e.runTenants(ctx, t) },
		}}
	}},
	{num: 6, name: "idle", title: "idle clients: resident memory per connection", cases: func(o Options) []*benchCase {
		return []*benchCase{{
			label: fmt.Sprintf("%d idle clients", o.IdleClients), clients: o.IdleClients, metric: "bytes_per_client",
			only: []string{TargetPgtenant, TargetPgbouncer},
			run:  func(ctx context.Context, e *env, t *target) Sample { return e.runIdle(ctx, t) },
		}}
	}},
	{num: 7, name: "pin", title: "pin cost: pgtenant with tenant pinning on (default, and without pin reuse) and off", cases: func(o Options) []*benchCase {
		c := pgbenchCase(o, fmt.Sprintf("pin -S simple c=%d", o.clients(50)), o.clients(50), "-S", "-n", "-M", "simple")
		c.only = pinTargets
		return []*benchCase{c}
	}},
	{num: 8, name: "scram", title: "connect per transaction with SCRAM-SHA-256 client authentication (pgbench -S -C)", cases: func(o Options) []*benchCase {
		c := o.clients(20)
		bc := pgbenchCase(o, fmt.Sprintf("-S -C scram c=%d", c), c, "-S", "-n", "-C", "-M", "simple")
		bc.only = scramTargets
		return []*benchCase{bc}
	}},
	{num: 9, name: "cpu", title: "proxy CPU per transaction: pgbench -S, simple protocol, pgtenant and PgBouncer", cases: func(o Options) []*benchCase {
		c := o.clients(50)
		bc := pgbenchCase(o, fmt.Sprintf("cpu -S simple c=%d", c), c, "-S", "-n", "-M", "simple")
		bc.only = []string{TargetPgtenant, TargetPgbouncer}
		return []*benchCase{bc}
	}, named: true},
	{num: 10, name: "crowd", title: "crowd: N tenants x 2 clients each on a PostgreSQL with max_connections 200; pgtenant's pool of 32 against PgBouncer's pool per tenant", cases: func(o Options) []*benchCase {
		var cs []*benchCase
		for _, n := range crowdSizes(o) {
			cs = append(cs, &benchCase{
				label: fmt.Sprintf("%d tenants x %d clients", n, crowdClientsPerTenant), clients: n * crowdClientsPerTenant, metric: "tps",
				// Not direct: a server of max_connections 200 refuses all
				// but ~200 of the clients at login (FATAL 53300), known by
				// construction, and their retries would measure how fast
				// PostgreSQL forks a backend to refuse one.
				only: []string{TargetPgtenant, TargetPgbouncer},
				run:  func(ctx context.Context, e *env, t *target) Sample { return e.runCrowd(ctx, t, n) },
			})
		}
		return cs
	}},
	{num: 11, name: "mixed", title: "mixed: a read-mostly pgbench script mix (point reads, a join, an insert, an update), one pgbench client per tenant", cases: func(o Options) []*benchCase {
		return []*benchCase{{
			label: fmt.Sprintf("mixed %d tenants x 1 client", o.Tenants), clients: o.Tenants, metric: "tps",
			run: func(ctx context.Context, e *env, t *target) Sample { return e.runMixed(ctx, t) },
		}}
	}},
}

// scenarioByName finds a scenario by name or number.
func scenarioByName(name string) (*scenario, bool) {
	name = strings.TrimSpace(strings.ToLower(name))
	for _, s := range scenarios {
		if s.name == name || strconv.Itoa(s.num) == name {
			return s, true
		}
	}
	return nil, false
}

func scenarioNames() string {
	var names []string
	for _, s := range scenarios {
		names = append(names, fmt.Sprintf("%d %s", s.num, s.name))
	}
	return strings.Join(names, ", ")
}

// selectScenarios returns the scenarios only names, in run order; all when
// only is empty.
func selectScenarios(only []string) []*scenario {
	if len(only) == 0 {
		return slices.DeleteFunc(slices.Clone(scenarios), func(s *scenario) bool { return s.named })
	}
	var out []*scenario
	for _, s := range scenarios {
		if slices.ContainsFunc(only, func(n string) bool { f, _ := scenarioByName(n); return f == s }) {
			out = append(out, s)
		}
	}
	return out
}

func scenarioList(ss []*scenario) []string {
	var names []string
	for _, s := range ss {
		names = append(names, s.name)
	}
	return names
}

// pgbenchCase is a case that runs one pgbench process of clients against
// the bench tenant.
func pgbenchCase(o Options, label string, clients int, workload ...string) *benchCase {
	return &benchCase{
		label: label, clients: clients, metric: "tps",
		run: func(ctx context.Context, e *env, t *target) Sample {
			spec := pgbenchSpec{
				workload: workload, clients: clients, seconds: seconds(o.Duration),
				tenant: benchTenant, logPrefix: e.logPrefix("run"),
			}
			watch := e.watchBackends(ctx, t.role)
			cpu := cpuMeter(t.cpuPID())
			stopProfile := e.profile(t)
			res := e.runPgbench(ctx, t, spec)
			stopProfile()
			backends, counted := watch()
			return sampleOf(res, clients, backends, counted).withCPU(cpu)
		},
	}
}

// logPrefix is a fresh --log-prefix (or directory) under the temporary
// directory.
func (e *env) logPrefix(kind string) string {
	e.runs++
	return filepath.Join(e.tmp, fmt.Sprintf("%s-%d", kind, e.runs))
}

// withCPU adds the pooler's CPU over the run, stopping meter, when it was
// counted and the run succeeded.
func (s Sample) withCPU(meter func() (time.Duration, bool)) Sample {
	cpu, ok := meter()
	if !ok || !s.ok() || s.Transactions <= 0 {
		return s
	}
	s.ProxyCPUMs = float64(cpu.Microseconds()) / 1000
	s.CPUUsPerTx = cpuPerTx(cpu, s.Transactions)
	return s
}

// sampleOf turns a pgbench result and the backend count into a Sample.
func sampleOf(res pgbenchResult, clients int, b backendCount, counted bool) Sample {
	s := Sample{Clients: clients, Backends: -1, FailedTx: res.failed}
	if counted {
		s.Backends, s.RegistryBackends = b.pool, b.registry
	}
	if res.err != nil {
		s.Error = errText(res.err)
		return s
	}
	s.TPS = res.tps
	s.Transactions = res.processed
	if p := percentile(latencies(res.txs), 99); !math.IsNaN(p) {
		s.P99Ms = p / 1000
	}
	return s
}
