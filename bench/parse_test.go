package bench

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPgbenchError(t *testing.T) {
	for _, tc := range []struct{ name, out, want string }{
		{
			"aborted by the server",
			"pgbench (15.18 (Debian 15.18-0+deb12u1))\n" +
				`pgbench: error: client 3 script 0 aborted in command 1 query 0: ERROR:  prepared statement "P_0" already exists` + "\n" +
				`pgbench: error: client 1 script 0 aborted in command 1 query 0: ERROR:  prepared statement "P_1" does not exist` + "\n",
			`prepared statement "P_0" already exists`,
		},
		{
			"cannot connect",
			"pgbench: error: connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n",
			`error: connection to server at "127.0.0.1", port 1 failed: Connection refused`,
		},
		{
			"fatal",
			"pgbench: error: connection to server failed: FATAL:  tenant \"x\" does not exist\n",
			`tenant "x" does not exist`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pgbenchError(tc.out, nil).Error(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReadLog(t *testing.T) {
	prefix := filepath.Join(t.TempDir(), "pgbench")
	// client_id transaction_no time script_no time_epoch time_us
	logs := map[string]string{
		prefix + ".100":   "0 1 1500 0 1700000000 250000\n0 2 failed 0 1700000000 260000\n",
		prefix + ".100.1": "1 1 2500 0 1700000001 0\nnot a line\n",
	}
	for f, text := range logs {
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	txs, err := readLog(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(txs) != 2 {
		t.Fatalf("got %d records, want 2: %+v", len(txs), txs)
	}
	lat := latencies(txs)
	if p := percentile(lat, 99); p != 2500 {
		t.Errorf("p99 = %v, want 2500", p)
	}
	left, _ := filepath.Glob(prefix + ".*")
	if len(left) != 0 {
		t.Errorf("log files left behind: %v", left)
	}
}

func TestPercentileAndMedian(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i) // 100..1
	}
	if got := percentile(xs, 99); got != 99 {
		t.Errorf("p99 of 1..100 = %v, want 99", got)
	}
	if got := percentile(nil, 99); !math.IsNaN(got) {
		t.Errorf("p99 of nothing = %v, want NaN", got)
	}
	if got := median([]float64{3, 1, 2, 10}); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
}

func TestRatiosAndTable(t *testing.T) {
	sc := &scenario{num: 1, name: "select"}
	bc := &benchCase{scenario: sc, label: "-S simple c=50", clients: 50, metric: "tps"}
	c := newCollector()
	for round, tps := range [][3]float64{{110, 100, 200}, {90, 100, 100}, {120, 100, 150}} {
		// CPU per transaction: pgtenant 40, 60, 50 against PgBouncer's 50.
		c.add(bc, TargetPgtenant, Sample{Round: round + 1, TPS: tps[0], Backends: 16, CPUUsPerTx: 40 + 20*float64(round%2) + 10*float64(round/2)})
		c.add(bc, TargetPgbouncer, Sample{Round: round + 1, TPS: tps[1], Backends: 16, CPUUsPerTx: 50})
		c.add(bc, TargetDirect, Sample{Round: round + 1, TPS: tps[2], Backends: 50})
	}
	res := c.results()
	if len(res) != 3 || res[0].Target != TargetPgtenant {
		t.Fatalf("results: %+v", res)
	}
	pt := res[0]
	// Per-round ratios 1.1, 0.9, 1.2 → median 1.1; to direct 0.55, 0.9, 0.8 → 0.8.
	if pt.Median != 110 || pt.VsPgbouncer == nil || math.Abs(*pt.VsPgbouncer-1.1) > 1e-9 ||
		pt.VsDirect == nil || math.Abs(*pt.VsDirect-0.8) > 1e-9 {
		t.Errorf("pgtenant: median %v, vs pgbouncer %v, vs direct %v", pt.Median, deref(pt.VsPgbouncer), deref(pt.VsDirect))
	}

	// Per-round CPU ratios 0.8, 1.2, 1.0 → median 1.0; PgBouncer has none.
	if pt.CPUUsPerTx != 50 || pt.CPUVsPgbouncer == nil || math.Abs(*pt.CPUVsPgbouncer-1.0) > 1e-9 || res[1].CPUVsPgbouncer != nil {
		t.Errorf("cpu: pgtenant %v µs/tx, ratio %v; pgbouncer's ratio %v", pt.CPUUsPerTx, deref(pt.CPUVsPgbouncer), res[1].CPUVsPgbouncer)
	}

	rep := &Report{Config: RunConfig{Rounds: 3, PoolSize: 16}, Results: res, Started: time.Now()}
	md := rep.Markdown()
	for _, want := range []string{"| 1 -S simple c=50 | pgtenant | 110 | 1.10x | 0.80x | 50.0 | 1.00x | — | 16 |  |", "| 1 -S simple c=50 | direct | 150 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	root, err := parseXML([]byte(rep.chartSVG()))
	if err != nil || root != "svg" {
		t.Errorf("chart: root %q, %v", root, err)
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis, utime 250 and stime
	// 130 ticks.
	line := "4242 (pg (bouncer) x) S 1 4242 4242 0 -1 4194560 300 0 0 0 250 130 0 0 20 0 1 0 100 1000 200"
	got, err := parseStatCPU(line)
	if err != nil || got != 3800*time.Millisecond {
		t.Errorf("parseStatCPU = %v, %v; want 3.8s", got, err)
	}
	if _, err := parseStatCPU("4242 (x) S 1"); err == nil {
		t.Errorf("a short line parsed")
	}
	if d, err := processCPU(os.Getpid()); err != nil || d < 0 {
		t.Errorf("processCPU(self) = %v, %v", d, err)
	}
}
