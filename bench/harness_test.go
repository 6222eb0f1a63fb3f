package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/proxy"
)

// The harness test runs this test binary as the separate pgtenant process
// of the idle scenario; these variables carry what `pgtenant serve` would
// get as flags.
const (
	childListenEnv     = "PGTENANT_BENCH_TEST_CHILD_LISTEN"
	childBackendEnv    = "PGTENANT_BENCH_TEST_CHILD_BACKEND"
	childPoolSizeEnv   = "PGTENANT_BENCH_TEST_CHILD_POOL_SIZE"
	childMaxClientsEnv = "PGTENANT_BENCH_TEST_CHILD_MAX_CLIENT_CONN"
)

// testServeCommand is the harness's ServeCommand under `go test`, where
// this executable is the test binary, not pgtenant.
func testServeCommand(listen, backend string, poolSize, maxClientConn int) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		childListenEnv+"="+listen, childBackendEnv+"="+backend,
		childPoolSizeEnv+"="+strconv.Itoa(poolSize), childMaxClientsEnv+"="+strconv.Itoa(maxClientConn))
	return cmd
}

// serveChild is `pgtenant serve` for testServeCommand, until SIGTERM.
func serveChild() int {
	cfg := config.Default()
	cfg.Listen = os.Getenv(childListenEnv)
	cfg.Backend = os.Getenv(childBackendEnv)
	cfg.AllowPrivilegedBackend = true // the bench's throwaway superuser cluster
	cfg.PoolSize = atoiOr(os.Getenv(childPoolSizeEnv), cfg.PoolSize)
	cfg.MaxClientConn = atoiOr(os.Getenv(childMaxClientsEnv), cfg.MaxClientConn)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := proxy.Run(ctx, cfg, log); err != nil {
		fmt.Fprintln(os.Stderr, "pgtenant child:", err)
		return 1
	}
	return 0
}

// TestHarnessTiny runs `pgtenant bench` on a tiny configuration and checks
// that what it writes is well formed. It asserts no speed: only that the
// harness works end to end.
func TestHarnessTiny(t *testing.T) {
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Fatalf("pgbench not found (run `make deps`): %v", err)
	}
	targets := allTargets
	if _, err := findPgbouncer(); err != nil {
		t.Logf("%v: measuring pgtenant and direct only", err)
		targets = []string{TargetPgtenant, TargetDirect}
	}
	// Generous: the run takes about a minute on a quiet 2-core machine, and
	// this one is shared with PostgreSQL and other tests.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out := t.TempDir()
	var stdout, progress bytes.Buffer
	rep, err := Run(ctx, Options{
		Rounds: 1, Duration: time.Second, ClientsScale: 0.1, Scale: 1,
		Tenants: 3, IdleClients: 20, Targets: targets,
		Only:         []string{"select", "tenants", "idle", "scram", "crowd", "mixed"},
		OutDir:       out,
		ServeCommand: testServeCommand,
		Progress:     &progress,
	}, &stdout)
	t.Logf("progress:\n%s", progress.String())
	t.Logf("stdout:\n%s", stdout.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}

	// The table has a row per case and target.
	table := stdout.String()
	if !strings.Contains(table, "| scenario | target | tps (median) | vs PgBouncer | vs direct | proxy CPU µs/tx | CPU vs PgBouncer | p99 ms | backends | notes |") {
		t.Errorf("no table header in stdout")
	}
	for _, tg := range targets {
		for _, row := range []string{"| 1 -S simple c=1 | " + tg + " |", "| 5 3 tenants x 1 client | " + tg + " |"} {
			if !strings.Contains(table, row) {
				t.Errorf("no row %q in the table", row)
			}
		}
	}
	if !strings.Contains(table, "| 6 20 idle clients | pgtenant |") {
		t.Errorf("no idle row for pgtenant in the table")
	}
	// The SCRAM targets log clients in with a password; a row without an
	// error shows the exchange worked through each.
	scram := []string{targetScramPgtenant}
	if slices.Contains(targets, TargetPgbouncer) {
		scram = append(scram, targetScramPgbouncer)
	}
	for _, tg := range scram {
		found := false
		for _, r := range rep.Results {
			if r.Target != tg {
				continue
			}
			found = true
			if r.OKRounds == 0 || r.Median <= 0 {
				t.Errorf("%s: no successful round (error %q)", tg, r.Error)
			}
		}
		if !found {
			t.Errorf("no result for %s", tg)
		}
	}

	// bench.json parses back into the report.
	data, err := os.ReadFile(filepath.Join(out, jsonFile))
	if err != nil {
		t.Fatal(err)
	}
	var got Report
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("bench.json: %v", err)
	}
	if len(got.Results) != len(rep.Results) || len(got.Results) == 0 {
		t.Fatalf("bench.json has %d results, the report %d", len(got.Results), len(rep.Results))
	}
	if got.Machine.Cores < 1 || got.Machine.PostgreSQL == "" {
		t.Errorf("machine not described: %+v", got.Machine)
	}

	// Every select case and the tenants case measured pgtenant and direct.
	for _, r := range got.Results {
		if r.Scenario != "select" && r.Scenario != "tenants" {
			continue
		}
		if (r.Target == TargetPgtenant || r.Target == TargetDirect) && !(r.Median > 0) {
			t.Errorf("%s %s: tps %v, want > 0 (error: %s)", r.Case, r.Target, r.Median, r.Error)
		}
		if r.Target == TargetPgtenant && r.VsDirect == nil {
			t.Errorf("%s %s: no ratio to direct", r.Case, r.Target)
		}
	}
	// The crowd cases (6, 15 and 30 tenants at this size: far under
	// max_connections 200) run through pgtenant and PgBouncer alike with no
	// error (whether every client got a turn in a 1 s run is speed, not
	// asserted); the mixed case runs on every target.
	crowd, mixed := 0, 0
	for _, r := range got.Results {
		switch r.Scenario {
		case "crowd":
			crowd++
			if r.Target == TargetDirect {
				t.Errorf("crowd %s: direct is not a crowd target", r.Case)
			}
			for _, s := range r.Samples {
				if !s.ok() || s.TPS <= 0 || s.Errors != 0 || s.Served < 1 {
					t.Errorf("crowd %s %s: tps %v, %d errors (first %q), served %d of %d; error %q",
						r.Case, r.Target, s.TPS, s.Errors, s.FirstError, s.Served, r.Clients, s.Error)
				}
			}
		case "mixed":
			mixed++
			if !(r.Median > 0) {
				t.Errorf("mixed %s: tps %v, want > 0 (error: %s)", r.Target, r.Median, r.Error)
			}
		}
	}
	if crowd != 3*(len(targets)-1) || mixed != len(targets) {
		t.Errorf("%d crowd and %d mixed results, want %d and %d", crowd, mixed, 3*(len(targets)-1), len(targets))
	}
	if _, err := os.Stat(filepath.Join(out, "mixed-read.sql")); err != nil {
		t.Errorf("the mixed scripts are not in --out: %v", err)
	}

	idle := 0
	for _, r := range got.Results {
		if r.Scenario == "idle" {
			idle++
			if r.OKRounds != 1 {
				t.Errorf("idle %s: %s", r.Target, r.Error)
			}
		}
	}
	if idle == 0 {
		t.Errorf("no idle results")
	}

	// The chart is XML with an svg root and a line per target.
	svg, err := os.ReadFile(filepath.Join(out, svgFile))
	if err != nil {
		t.Fatal(err)
	}
	root, err := parseXML(svg)
	if err != nil {
		t.Fatalf("%s: %v", svgFile, err)
	}
	if root != "svg" {
		t.Errorf("%s: root element %q, want svg", svgFile, root)
	}
	if n := bytes.Count(svg, []byte("<polyline")); n != len(targets) {
		t.Errorf("%s: %d lines, want one per target (%d)", svgFile, n, len(targets))
	}
}

// parseXML reads all of data as XML and returns the root element's name.
func parseXML(data []byte) (string, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	root := ""
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return root, nil
		}
		if err != nil {
			return root, err
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
}
