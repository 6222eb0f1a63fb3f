package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pgtenant/pgtenant/config"
)

// Files written into the output directory.
const (
	jsonFile = "bench.json"
	svgFile  = "tps-by-clients.svg"
)

// Sample is one run of one case against one target.
type Sample struct {
	Round   int `json:"round"`
	Clients int `json:"clients"`
	// TPS is pgbench's tps (summed over processes in the many-tenants
	// scenario), without initial connection time.
	TPS float64 `json:"tps,omitempty"`
	// P99Ms is the 99th percentile of the sampled transactions' latency.
	P99Ms float64 `json:"p99_ms,omitempty"`
	// Backends is the most server connections of the target PostgreSQL had
	// at once during the run; -1 when not counted.
	Backends int `json:"backends"`
	// RegistryBackends counts pgtenant's tenant-registry connections, which
	// Backends leaves out.
	RegistryBackends int `json:"registry_backends,omitempty"`
	// Transactions is how many transactions the run completed.
	Transactions int64 `json:"transactions,omitempty"`
	// ProxyCPUMs is the CPU time (user + system) the pooler's process used
	// over the run, and CPUUsPerTx that divided by Transactions: what the
	// pooler costs per transaction, taken from the CPU that PostgreSQL and
	// the clients share with it. Zero when not counted (direct, a target
	// given by flag).
	ProxyCPUMs float64 `json:"proxy_cpu_ms,omitempty"`
	CPUUsPerTx float64 `json:"cpu_us_per_tx,omitempty"`
	// FailedTx is pgbench's "number of failed transactions".
	FailedTx int `json:"failed_transactions,omitempty"`
	// Errors counts the errors the crowd scenario's clients saw (failed
	// logins and queries; each client retries and goes on), FirstError is
	// the earliest one's text and ErrorKinds counts them by SQLSTATE and
	// message (or by kind: timeout, refused). Served is how many clients
	// completed at least one transaction within the run.
	Errors     int            `json:"errors,omitempty"`
	FirstError string         `json:"first_error,omitempty"`
	ErrorKinds map[string]int `json:"error_kinds,omitempty"`
	Served     int            `json:"clients_served,omitempty"`
	// Idle scenario: resident memory before the idle clients and its growth.
	RSSBeforeKiB   int64   `json:"rss_before_kib,omitempty"`
	RSSGrowthKiB   int64   `json:"rss_growth_kib,omitempty"`
	BytesPerClient float64 `json:"bytes_per_client,omitempty"`
	// Error says why the run failed; empty on success.
	Error string `json:"error,omitempty"`
	Note  string `json:"note,omitempty"`
}

func (s Sample) ok() bool { return s.Error == "" }

// summary is the sample in a progress line.
func (s Sample) summary(metric string) string {
	switch {
	case !s.ok():
		return "fails: " + s.Error
	case metric == "bytes_per_client":
		return fmt.Sprintf("%.1f KiB/client (RSS +%d KiB for %d clients)", s.BytesPerClient/1024, s.RSSGrowthKiB, s.Clients)
	}
	b := "?"
	if s.Backends >= 0 {
		b = fmt.Sprint(s.Backends)
	}
	cpu := ""
	if s.CPUUsPerTx > 0 {
		cpu = fmt.Sprintf("  cpu %5.1f µs/tx", s.CPUUsPerTx)
	}
	errs := ""
	if s.Errors > 0 {
		errs = fmt.Sprintf("  %d errors, served %d/%d (first: %s)", s.Errors, s.Served, s.Clients, s.FirstError)
	}
	return fmt.Sprintf("%9.0f tps  p99 %6.2f ms  backends %s%s%s", s.TPS, s.P99Ms, b, cpu, errs)
}

// Result is one case against one target over all rounds.
type Result struct {
	Scenario       string `json:"scenario"`
	ScenarioNumber int    `json:"scenario_number"`
	Case           string `json:"case"`
	Clients        int    `json:"clients"`
	Target         string `json:"target"`
	// Metric is "tps" or "bytes_per_client" (idle scenario).
	Metric string `json:"metric"`
	// Median is the metric's median over the rounds that succeeded.
	Median float64 `json:"median"`
	// P99Ms is the median over rounds of each round's p99 latency.
	P99Ms float64 `json:"p99_ms,omitempty"`
	// Backends is the most server connections seen in any round; -1 when
	// not counted.
	Backends         int `json:"backends"`
	RegistryBackends int `json:"registry_backends,omitempty"`
	// VsPgbouncer and VsDirect are the medians over rounds of this target's
	// metric divided by the other's in the same round.
	VsPgbouncer *float64 `json:"vs_pgbouncer,omitempty"`
	VsDirect    *float64 `json:"vs_direct,omitempty"`
	// CPUUsPerTx is the median over rounds of the pooler's CPU µs per
	// transaction, and CPUVsPgbouncer the median over rounds of its ratio
	// to PgBouncer's in the same round; absent when not counted.
	CPUUsPerTx     float64  `json:"cpu_us_per_tx,omitempty"`
	CPUVsPgbouncer *float64 `json:"cpu_vs_pgbouncer,omitempty"`
	// PinCost (pin-on rows of the pin scenario) is the median over rounds
	// of 1 - tps(pinning)/tps(pin off).
	PinCost  *float64 `json:"pin_cost,omitempty"`
	OKRounds int      `json:"ok_rounds"`
	// Error is the first failure when no round succeeded.
	Error   string   `json:"error,omitempty"`
	Notes   string   `json:"notes,omitempty"`
	Samples []Sample `json:"samples"`
}

// Machine is what the numbers were measured on.
type Machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	MemoryMiB  int64  `json:"memory_mib"`
	Kernel     string `json:"kernel"`
	OS         string `json:"os,omitempty"`
	PostgreSQL string `json:"postgresql"`
	PgBouncer  string `json:"pgbouncer,omitempty"`
	Pgbench    string `json:"pgbench"`
	Go         string `json:"go"`
}

// RunConfig is how the run was configured.
type RunConfig struct {
	Quick        bool     `json:"quick"`
	Rounds       int      `json:"rounds"`
	PoolSize     int      `json:"pool_size"`
	ClientsScale float64  `json:"clients_scale"`
	DurationSec  int      `json:"duration_sec"`
	Scale        int      `json:"pgbench_scale"`
	Tenants      int      `json:"tenants"`
	IdleClients  int      `json:"idle_clients"`
	Targets      []string `json:"targets"`
	Scenarios    []string `json:"scenarios"`
	SamplingRate float64  `json:"latency_sampling_rate"`
	// Isolation is pgtenant's --isolation in the run.
	Isolation string `json:"isolation,omitempty"`
}

// Report is a whole run: bench.json holds it.
type Report struct {
	Machine Machine   `json:"machine"`
	Config  RunConfig `json:"config"`
	Started time.Time `json:"started"`
	Elapsed string    `json:"elapsed"`
	Results []Result  `json:"results"`
}

// collector gathers samples by case and target, in first-seen case order.
type collector struct {
	cases   []*benchCase
	samples map[*benchCase]map[string][]Sample
}

func newCollector() *collector {
	return &collector{samples: map[*benchCase]map[string][]Sample{}}
}

func (c *collector) add(bc *benchCase, target string, s Sample) {
	if c.samples[bc] == nil {
		c.samples[bc] = map[string][]Sample{}
		c.cases = append(c.cases, bc)
	}
	c.samples[bc][target] = append(c.samples[bc][target], s)
}

// targetOrder lists targets in table order.
var targetOrder = []string{TargetPgtenant, TargetPgbouncer, TargetDirect, targetPinOn, targetPinAlways, targetPinOff,
	targetScramPgtenant, targetScramPgbouncer}

func (c *collector) results() []Result {
	var out []Result
	for _, bc := range c.cases {
		byTarget := c.samples[bc]
		for _, t := range targetOrder {
			ss, ok := byTarget[t]
			if !ok {
				continue
			}
			out = append(out, aggregate(bc, t, ss, byTarget))
		}
	}
	return out
}

func aggregate(bc *benchCase, target string, ss []Sample, all map[string][]Sample) Result {
	r := Result{
		Scenario: bc.scenario.name, ScenarioNumber: bc.scenario.num, Case: bc.label,
		Clients: bc.clients, Target: target, Metric: bc.metric, Backends: -1, Samples: ss,
	}
	value := func(s Sample) float64 {
		if bc.metric == "bytes_per_client" {
			return s.BytesPerClient
		}
		return s.TPS
	}
	var vals, p99s, cpus []float64
	var errs []string
	failedTx := 0
	for _, s := range ss {
		if s.Backends >= 0 {
			r.Backends = max(r.Backends, s.Backends)
		}
		r.RegistryBackends = max(r.RegistryBackends, s.RegistryBackends)
		failedTx += s.FailedTx
		if !s.ok() {
			errs = append(errs, s.Error)
			continue
		}
		r.OKRounds++
		vals = append(vals, value(s))
		if s.P99Ms > 0 {
			p99s = append(p99s, s.P99Ms)
		}
		if s.CPUUsPerTx > 0 {
			cpus = append(cpus, s.CPUUsPerTx)
		}
	}
	r.CPUUsPerTx = median(cpus)
	r.Median = median(vals)
	r.P99Ms = median(p99s)
	// ratio is the median over rounds of this target's value over ref's.
	ratio := func(ref string, f func(mine, theirs Sample) (float64, bool)) *float64 {
		theirs, ok := all[ref]
		if !ok {
			return nil
		}
		var rs []float64
		for _, mine := range ss {
			for _, th := range theirs {
				if th.Round == mine.Round && mine.ok() && th.ok() {
					if v, ok := f(mine, th); ok {
						rs = append(rs, v)
					}
				}
			}
		}
		if len(rs) == 0 {
			return nil
		}
		m := median(rs)
		return &m
	}
	div := func(mine, theirs Sample) (float64, bool) {
		if value(theirs) <= 0 {
			return 0, false
		}
		return value(mine) / value(theirs), true
	}
	bouncer := TargetPgbouncer
	if target == targetScramPgtenant {
		bouncer = targetScramPgbouncer
	}
	if target != targetScramPgbouncer {
		r.VsPgbouncer = ratio(bouncer, div)
	}
	if target != bouncer && target != targetScramPgbouncer {
		r.CPUVsPgbouncer = ratio(bouncer, func(mine, theirs Sample) (float64, bool) {
			if mine.CPUUsPerTx <= 0 || theirs.CPUUsPerTx <= 0 {
				return 0, false
			}
			return mine.CPUUsPerTx / theirs.CPUUsPerTx, true
		})
	}
	r.VsDirect = ratio(TargetDirect, div)
	if target == targetPinOn || target == targetPinAlways {
		r.PinCost = ratio(targetPinOff, func(on, off Sample) (float64, bool) {
			if off.TPS <= 0 {
				return 0, false
			}
			return 1 - on.TPS/off.TPS, true
		})
	}

	var notes []string
	switch {
	case r.OKRounds == 0 && len(errs) > 0:
		r.Error = errs[0]
		notes = append(notes, "fails: "+errs[0])
	case len(errs) > 0:
		notes = append(notes, fmt.Sprintf("%d of %d rounds failed: %s", len(errs), len(ss), errs[0]))
	}
	if bc.metric == "bytes_per_client" && r.OKRounds > 0 {
		var growth []float64
		for _, s := range ss {
			if s.ok() {
				growth = append(growth, float64(s.RSSGrowthKiB))
			}
		}
		notes = append(notes, fmt.Sprintf("RSS +%.1f MiB for %d clients (median)", median(growth)/1024, bc.clients))
		if ss[0].Note != "" {
			notes = append(notes, ss[0].Note)
		}
	}
	if r.PinCost != nil {
		notes = append(notes, fmt.Sprintf("pin cost %.1f%% (1 - tps/tps pin off)", *r.PinCost*100))
	}
	if r.RegistryBackends > 0 {
		notes = append(notes, fmt.Sprintf("+%d registry conns not counted", r.RegistryBackends))
	}
	if failedTx > 0 {
		notes = append(notes, fmt.Sprintf("%d failed transactions", failedTx))
	}
	notes = append(notes, errorNotes(bc, ss)...)
	r.Notes = strings.Join(notes, "; ")
	return r
}

// median of xs (0 for none); xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Markdown is the machine, the run's settings and the results table.
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Machine: %s, %d cores, %.1f GiB RAM, Linux %s", m.CPU, m.Cores, float64(m.MemoryMiB)/1024, m.Kernel)
	if m.OS != "" {
		fmt.Fprintf(&b, " (%s)", m.OS)
	}
	b.WriteString("\n")
	var versions []string
	for _, v := range []string{m.PostgreSQL, m.PgBouncer, m.Pgbench, m.Go} {
		if v != "" {
			versions = append(versions, v)
		}
	}
	fmt.Fprintf(&b, "Versions: %s\n", strings.Join(versions, ", "))
	c := r.Config
	mode := "full"
	if c.Quick {
		mode = "quick"
	}
	fmt.Fprintf(&b, "Run: %s, %d rounds x %ds per run, targets alternating within each round; pool size %d for every pooler; "+
		"pgbench scale %d; clients x%g; latency from a %g sample of transactions; took %s\n\n",
		mode, c.Rounds, c.DurationSec, c.PoolSize, c.Scale, c.ClientsScale, c.SamplingRate, r.Elapsed)
	if c.Isolation == config.IsolationRole {
		b.WriteString("pgtenant runs with --isolation role: each tenant's backends log in as its own role, under one pool cap.\n\n")
	}

	b.WriteString("| scenario | target | tps (median) | vs PgBouncer | vs direct | proxy CPU µs/tx | CPU vs PgBouncer | p99 ms | backends | notes |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, res := range r.Results {
		fmt.Fprintf(&b, "| %d %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			res.ScenarioNumber, res.Case, res.Target, res.valueCell(),
			res.ratioCell(res.VsPgbouncer), res.ratioCell(res.VsDirect),
			cell(res.CPUUsPerTx > 0, "%.1f", res.CPUUsPerTx), res.ratioCell(res.CPUVsPgbouncer),
			cell(res.P99Ms > 0, "%.2f", res.P99Ms), cell(res.Backends >= 0, "%d", res.Backends),
			strings.ReplaceAll(res.Notes, "|", `\|`))
	}
	for _, res := range r.Results {
		if res.Scenario == "cpu" && res.CPUVsPgbouncer != nil {
			fmt.Fprintf(&b, "\n%s uses %.2fx PgBouncer's CPU per transaction (%.1f µs; median of %d rounds' ratios)\n",
				res.Target, *res.CPUVsPgbouncer, res.CPUUsPerTx, res.OKRounds)
		}
	}
	return b.String()
}

func (res Result) valueCell() string {
	switch {
	case res.OKRounds == 0:
		return "fails"
	case res.Metric == "bytes_per_client":
		return fmt.Sprintf("%.1f KiB/client", res.Median/1024)
	}
	return fmt.Sprintf("%.0f", res.Median)
}

func (res Result) ratioCell(r *float64) string {
	if r == nil {
		return "—"
	}
	if res.Metric == "bytes_per_client" {
		return fmt.Sprintf("%.2fx mem", *r)
	}
	return fmt.Sprintf("%.2fx", *r)
}

func cell(ok bool, format string, v any) string {
	if !ok {
		return "—"
	}
	return fmt.Sprintf(format, v)
}

// writeFiles writes bench.json and the chart into dir.
func (r *Report) writeFiles(dir string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, jsonFile), append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, svgFile), []byte(r.chartSVG()), 0o644)
}

// errorNotes are the notes of a case whose clients count their errors and
// go on (crowd), or whose samples carry a note of their own (mixed): the
// errors of the round with the most, what they were, and how many clients
// were served.
func errorNotes(bc *benchCase, ss []Sample) []string {
	if bc.metric != "tps" {
		return nil
	}
	var notes []string
	worst, counted := -1, false
	for i, s := range ss {
		if !s.ok() {
			continue
		}
		if s.Served > 0 || s.Errors > 0 {
			counted = true
		}
		if worst < 0 || s.Errors > ss[worst].Errors {
			worst = i
		}
	}
	if worst < 0 {
		return nil
	}
	w := ss[worst]
	if counted {
		if w.Errors == 0 {
			notes = append(notes, fmt.Sprintf("0 errors, all %d clients served", w.Clients))
		} else {
			notes = append(notes, fmt.Sprintf("%d errors, %d of %d clients served (round %d); first: %s",
				w.Errors, w.Served, w.Clients, w.Round, w.FirstError))
			kinds := make([]string, 0, len(w.ErrorKinds))
			for k := range w.ErrorKinds {
				kinds = append(kinds, k)
			}
			slices.SortFunc(kinds, func(a, b string) int { return w.ErrorKinds[b] - w.ErrorKinds[a] })
			for _, k := range kinds[:min(3, len(kinds))] {
				notes = append(notes, fmt.Sprintf("%dx %s", w.ErrorKinds[k], k))
			}
		}
	}
	if w.Note != "" {
		notes = append(notes, w.Note)
	}
	return notes
}
