package bench

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// Exit codes of `pgtenant bench`, as for the other commands: 1 for a usage
// error, 2 for a failure while running.
const (
	exitUsage   = 1
	exitRuntime = 2
)

// Flags are `pgtenant bench`'s flags.
func Flags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "quick", Usage: "a short run (a few minutes): 2 rounds of 1s runs, pgbench scale 2, 500 idle clients, smaller crowds"},
		&cli.IntFlag{Name: "rounds", Usage: "rounds of every scenario against every target", DefaultText: "5, quick 2"},
		&cli.IntFlag{Name: "pool-size", Value: defaultPoolSize, Usage: "server pool size of every pooler"},
		&cli.Float64Flag{Name: "clients-scale", Value: 1, Usage: "multiply every pgbench client count by this"},
		&cli.DurationFlag{Name: "duration", Usage: "length of one pgbench run, whole seconds", DefaultText: "5s, quick 1s"},
		&cli.StringFlag{Name: "out", Value: defaultOutDir, Usage: "directory for bench.json and the SVG chart"},
		&cli.StringFlag{Name: "targets", Value: strings.Join(allTargets, ","), Usage: "comma-separated targets to measure: pgtenant, pgbouncer, direct"},
		&cli.StringFlag{Name: "backend", Usage: "DSN of an existing PostgreSQL database to use; its role must be able to create roles, schemas and tables", DefaultText: "a throwaway PostgreSQL"},
		&cli.StringFlag{Name: "pgtenant", Usage: "host:port of a pgtenant already serving --backend", DefaultText: "start one in this process"},
		&cli.StringFlag{Name: "pgbouncer", Usage: "host:port of a PgBouncer already pooling --backend, with database entries bench and t001...", DefaultText: "start one"},
		&cli.StringFlag{Name: "isolation", Value: "schema", Usage: "pgtenant's --isolation: schema, or role (every tenant gets its own LOGIN role; the many-tenants scenario then measures role mode)"},
		&cli.BoolFlag{Name: "metrics", Usage: "run pgtenant with --metrics-listen and scrape /metrics every second, to measure what metrics cost"},
		&cli.BoolFlag{Name: "backend-tcp", Usage: "poolers reach the throwaway PostgreSQL over loopback TCP rather than its unix socket"},
		&cli.StringFlag{Name: "cpuprofile", Usage: "write a Go CPU profile of the in-process pgtenant, taken during its pgbench runs only, to this file"},
		&cli.StringFlag{Name: "only", Usage: "comma-separated scenarios to run, by name or number: " + scenarioNames(), DefaultText: "all"},
	}
}

// Command is `pgtenant bench`'s action.
func Command(c *cli.Context) error {
	if c.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("unexpected arguments: %s", strings.Join(c.Args().Slice(), " ")), exitUsage)
	}
	o := Options{
		Quick:         c.Bool("quick"),
		Rounds:        c.Int("rounds"),
		PoolSize:      c.Int("pool-size"),
		ClientsScale:  c.Float64("clients-scale"),
		Duration:      c.Duration("duration"),
		OutDir:        c.String("out"),
		Targets:       splitList(c.String("targets")),
		Only:          splitList(c.String("only")),
		Backend:       c.String("backend"),
		PgtenantAddr:  c.String("pgtenant"),
		PgbouncerAddr: c.String("pgbouncer"),
		Isolation:     c.String("isolation"),
		Metrics:       c.Bool("metrics"),
		CPUProfile:    c.String("cpuprofile"),
		BackendTCP:    c.Bool("backend-tcp"),
		Progress:      os.Stderr,
	}
	if c.IsSet("clients-scale") && o.ClientsScale <= 0 {
		return cli.Exit("clients-scale must be positive", exitUsage)
	}
	if c.IsSet("duration") && o.Duration < time.Second {
		return cli.Exit("duration must be at least 1s (pgbench -T takes whole seconds)", exitUsage)
	}
	_, err := Run(c.Context, o, os.Stdout)
	var ue *UsageError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ue):
		return cli.Exit(err, exitUsage)
	default:
		return cli.Exit(err, exitRuntime)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
