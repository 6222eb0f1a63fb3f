package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgtenant/pgtenant/config"
)

// Target names, as --targets spells them.
const (
	TargetPgtenant  = "pgtenant"
	TargetPgbouncer = "pgbouncer"
	TargetDirect    = "direct"
)

// allTargets is the order targets are listed in, and the order the first
// round runs them in; later rounds rotate it.
var allTargets = []string{TargetPgtenant, TargetPgbouncer, TargetDirect}

// Defaults of Options fields left zero. Quick ones apply with Options.Quick.
const (
	defaultRounds       = 5
	quickRounds         = 2
	defaultPoolSize     = 16
	defaultDuration     = 5 * time.Second
	quickDuration       = time.Second
	defaultScale        = 10
	quickScale          = 2
	defaultTenants      = 100
	defaultIdleClients  = 5000
	quickIdleClients    = 500
	defaultOutDir       = "bench-out"
	defaultSamplingRate = 0.1
	// tenantPoolSize is PgBouncer's pool_size for each tenant's database
	// entry in the many-tenants scenario: what a PgBouncer user who gives
	// every tenant an entry of its own would pick to keep hundreds of
	// tenants under max_connections.
	tenantPoolSize = 2
	// benchTenant is the tenant (and schema) holding the pgbench tables of
	// every scenario but the many-tenants one.
	benchTenant = "bench"
	// runSlack bounds what one pgbench run may take beyond its -T: connecting
	// hundreds of clients, the pre-run vacuum, writing its logs.
	runSlack = 90 * time.Second
)

// ServeCommandFunc returns a command that runs pgtenant as a process of its
// own, serving listen against backend: the many-tenants scenario runs its
// clients against it, the idle-clients scenario measures its resident
// memory. The command must not have been started.
type ServeCommandFunc func(listen, backend string, poolSize, maxClientConn int) *exec.Cmd

// Options configures Run. The zero value runs the full benchmark against a
// throwaway PostgreSQL, an in-process pgtenant and a PgBouncer the harness
// starts itself.
type Options struct {
	// Quick shortens everything so the whole run takes a few minutes (4.5
	// on a 2-core machine): fewer rounds, shorter runs, a smaller pgbench
	// scale, fewer idle clients, smaller crowds. Fields set explicitly
	// still win.
	Quick bool
	// Rounds is how many times every scenario runs against every target.
	// Default 5 (quick: 2).
	Rounds int
	// PoolSize is the server pool size of every pooler (pgtenant's pool,
	// PgBouncer's default_pool_size). Default 16.
	PoolSize int
	// ClientsScale multiplies the client count of every pgbench scenario
	// (10, 50, 200, 20); at least one client is kept. Default 1.
	ClientsScale float64
	// Duration is one pgbench run's -T, rounded up to whole seconds.
	// Default 5s (quick: 1s).
	Duration time.Duration
	// OutDir receives bench.json and tps-by-clients.svg. Default ./bench-out.
	OutDir string
	// Targets are the targets to measure, a subset of pgtenant, pgbouncer,
	// direct. Default all three.
	Targets []string
	// Only names the scenarios to run (names or numbers, see Scenarios).
	// Default all.
	Only []string
	// Backend is the DSN of an existing PostgreSQL database to use instead
	// of a throwaway one; its role must be able to create roles, schemas
	// and tables.
	Backend string
	// PgtenantAddr is the host:port of a pgtenant already serving Backend;
	// empty starts one in this process.
	PgtenantAddr string
	// PgbouncerAddr is the host:port of a PgBouncer already pooling
	// Backend, with a database entry per tenant (bench, t001...); empty
	// starts one.
	PgbouncerAddr string

	// Scale is pgbench -i's scale for the bench tenant. Default 10
	// (quick: 2).
	Scale int
	// Tenants is the number of tenant schemas in the many-tenants scenario.
	// Default 100.
	Tenants int
	// IdleClients is the number of idle connections the idle scenario
	// opens to each pooler. Default 5000 (quick: 500).
	IdleClients int
	// ServeCommand runs pgtenant as a separate process for the
	// many-tenants and idle scenarios. Default: this executable's `serve`
	// command.
	ServeCommand ServeCommandFunc
	// Isolation is the --isolation of the pgtenant target and of the
	// pgtenant process of the many-tenants scenario: schema (default) or
	// role, for which the harness gives every tenant its role (router.
	// EnsureTenantRole) with a secret of its own. The pin-cost and SCRAM
	// scenarios' pgtenants stay in schema mode.
	Isolation string
	// Metrics runs every pgtenant the harness starts with its metrics
	// endpoint on (--metrics-listen), scraped every second while it serves,
	// as a busy Prometheus would: with and without it, a scenario measures
	// what metrics cost. (The counting itself is always on; the endpoint and
	// the scrapes are what this adds.)
	Metrics bool
	// BackendTCP makes the poolers reach the throwaway PostgreSQL over
	// loopback TCP instead of its unix socket (the default, for pgtenant
	// and PgBouncer alike). A --backend given by DSN is always reached as
	// it says.
	BackendTCP bool
	// CPUProfile, when set, is a file that receives a Go CPU profile of
	// this process taken during the in-process pgtenant's pgbench runs
	// (and only those): where pgtenant spends its CPU per transaction.
	CPUProfile string
	// Progress receives one line per run as the benchmark goes. Default:
	// discarded.
	Progress io.Writer
}

// UsageError is an Options mistake the caller can fix (an unknown target or
// scenario, a negative count).
type UsageError struct{ msg string }

func (e *UsageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &UsageError{fmt.Sprintf(format, args...)} }

// withDefaults fills zero fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	pick := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if o.Quick {
				*v = quick
			}
		}
	}
	pick(&o.Rounds, defaultRounds, quickRounds)
	pick(&o.PoolSize, defaultPoolSize, defaultPoolSize)
	pick(&o.Scale, defaultScale, quickScale)
	pick(&o.Tenants, defaultTenants, defaultTenants)
	pick(&o.IdleClients, defaultIdleClients, quickIdleClients)
	if o.Duration == 0 {
		o.Duration = defaultDuration
		if o.Quick {
			o.Duration = quickDuration
		}
	}
	if o.ClientsScale == 0 {
		o.ClientsScale = 1
	}
	if o.OutDir == "" {
		o.OutDir = defaultOutDir
	}
	if len(o.Targets) == 0 {
		o.Targets = slices.Clone(allTargets)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	switch {
	case o.Rounds < 1:
		return o, usagef("rounds must be at least 1, got %d", o.Rounds)
	case o.PoolSize < 1:
		return o, usagef("pool-size must be at least 1, got %d", o.PoolSize)
	case o.ClientsScale < 0:
		return o, usagef("clients-scale must be positive, got %g", o.ClientsScale)
	case o.Duration < 0:
		return o, usagef("duration must be positive, got %s", o.Duration)
	case o.Scale < 1 || o.Tenants < 1 || o.Tenants > 999 || o.IdleClients < 1:
		return o, usagef("scale, tenants (at most 999) and idle clients must be positive")
	}
	var targets []string
	for _, t := range o.Targets {
		t = strings.TrimSpace(t)
		if !slices.Contains(allTargets, t) {
			return o, usagef("unknown target %q (want some of %s)", t, strings.Join(allTargets, ","))
		}
		if !slices.Contains(targets, t) {
			targets = append(targets, t)
		}
	}
	// Keep the canonical order whatever order the flag gave.
	o.Targets = nil
	for _, t := range allTargets {
		if slices.Contains(targets, t) {
			o.Targets = append(o.Targets, t)
		}
	}
	for _, name := range o.Only {
		if _, ok := scenarioByName(name); !ok {
			return o, usagef("unknown scenario %q (want names or numbers of: %s)", name, scenarioNames())
		}
	}
	if o.Backend == "" && (o.PgtenantAddr != "" || o.PgbouncerAddr != "") {
		return o, usagef("--pgtenant and --pgbouncer need --backend: the database they pool, where the harness sets up pgbench data and counts backends")
	}
	switch o.Isolation {
	case "":
		o.Isolation = config.IsolationSchema
	case config.IsolationSchema, config.IsolationRole:
	default:
		return o, usagef("isolation must be schema or role, got %q", o.Isolation)
	}
	return o, nil
}

// seconds is pgbench's -T for d: whole seconds, at least one.
func seconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// clients scales a scenario's nominal client count.
func (o Options) clients(nominal int) int {
	return max(1, int(float64(nominal)*o.ClientsScale+0.5))
}

// Run sets up whatever the options do not name, runs every selected
// scenario against every target for o.Rounds rounds, prints the markdown
// table to out and writes bench.json and the SVG chart into o.OutDir.
func Run(ctx context.Context, o Options, out io.Writer) (*Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	started := time.Now()
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	// The crowd scenario holds up to 2,000 clients here, in the pgtenant
	// process or PgBouncer, which has 1,000 server connections besides.
	nofile := raiseOpenFiles(max(o.IdleClients*2, slices.Max(crowdSizes(o))*crowdClientsPerTenant*2) + 4096)

	scenarios := selectScenarios(o.Only)
	e, err := setUp(ctx, o, scenarios, nofile)
	if err != nil {
		return nil, err
	}
	defer e.tearDown()

	rep := &Report{
		Machine: machineInfo(ctx, e),
		Config: RunConfig{
			Quick: o.Quick, Rounds: o.Rounds, PoolSize: o.PoolSize, ClientsScale: o.ClientsScale,
			DurationSec: seconds(o.Duration), Scale: o.Scale, Tenants: o.Tenants,
			IdleClients: o.IdleClients, Targets: o.Targets, Scenarios: scenarioList(scenarios),
			SamplingRate: defaultSamplingRate, Isolation: o.Isolation,
		},
		Started: started,
	}
	// The cases are made once: the collector groups rounds by case.
	var cases []*benchCase
	for _, sc := range scenarios {
		for _, c := range sc.cases(o) {
			c.scenario = sc
			cases = append(cases, c)
		}
	}
	coll := newCollector()
	for round := 0; round < o.Rounds; round++ {
		for _, c := range cases {
			// Targets alternate within the round, each case starting with a
			// different one from round to round, so that drift (caches
			// warming, a noisy neighbour) spreads over all.
			for _, name := range rotate(c.targets(e), round) {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				s := c.run(ctx, e, e.targets[name])
				s.Round = round + 1
				coll.add(c, name, s)
				fmt.Fprintf(o.Progress, "bench: round %d/%d  %-28s %-19s %s\n",
					round+1, o.Rounds, c.label, name, s.summary(c.metric))
			}
		}
	}
	rep.Results = coll.results()
	rep.Elapsed = time.Since(started).Round(time.Second).String()

	table := rep.Markdown()
	if _, err := io.WriteString(out, table); err != nil {
		return rep, err
	}
	if err := rep.writeFiles(o.OutDir); err != nil {
		return rep, err
	}
	fmt.Fprintf(out, "\nwrote %s and %s\n", filepath.Join(o.OutDir, jsonFile), filepath.Join(o.OutDir, svgFile))
	return rep, nil
}

// rotate returns ts starting at index round (mod len).
func rotate(ts []string, round int) []string {
	if len(ts) == 0 {
		return nil
	}
	k := round % len(ts)
	return append(slices.Clone(ts[k:]), ts[:k]...)
}

// errText shortens an error for a table cell or a note.
func errText(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// atoiOr parses s or returns def.
func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return def
	}
	return n
}
