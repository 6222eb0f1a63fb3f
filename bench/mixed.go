package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// mixedScript is one of the mixed scenario's transactions, as a pgbench
// script, and its weight: a client picks a script per transaction at
// random in proportion, as `pgbench -f file@weight` does.
type mixedScript struct {
	name   string
	weight int
	text   string
}

// mixedScripts are a read-mostly application's transactions on a tenant's
// pgbench tables (scale 1): 8 reads (6 point reads, 2 small joins) to 1
// insert and 1 update, one statement each, autocommit.
var mixedScripts = []mixedScript{
	{"read", 6, `\set aid random(1, 100000)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
`},
	{"join", 2, `\set aid random(1, 99991)
SELECT a.aid, a.abalance, b.bbalance FROM pgbench_accounts a JOIN pgbench_branches b ON b.bid = a.bid WHERE a.aid BETWEEN :aid AND :aid + 9;
`},
	{"insert", 1, `\set aid random(1, 100000)
\set tid random(1, 10)
\set delta random(-5000, 5000)
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, 1, :aid, :delta, CURRENT_TIMESTAMP);
`},
	{"update", 1, `\set aid random(1, 100000)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
`},
}

// writeMixedScripts writes the scripts into dir as pgbench script files,
// so that the mix can be rerun by hand against one tenant:
//
//	pgbench -n -f mixed-read.sql@6 -f mixed-join.sql@2 -f mixed-insert.sql@1 -f mixed-update.sql@1 t001
func writeMixedScripts(dir string) error {
	for _, s := range mixedScripts {
		if err := os.WriteFile(filepath.Join(dir, "mixed-"+s.name+".sql"), []byte(s.text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// mixedStep is a parsed script: its \set random variables and its SQL.
type mixedStep struct {
	weight int
	vars   []mixedVar
	sql    string
}

type mixedVar struct {
	name   string
	lo, hi int
}

var (
	mixedSetRe = regexp.MustCompile(`^\\set (\w+) random\((-?\d+), *(-?\d+)\)$`)
	mixedVarRe = regexp.MustCompile(`:(\w+)`)
)

// parseMixed reads the subset of pgbench's script language the mixed
// scripts use: `\set name random(lo, hi)` lines, then one SQL statement
// with :name references.
func parseMixed(scripts []mixedScript) ([]mixedStep, error) {
	var steps []mixedStep
	for _, s := range scripts {
		st := mixedStep{weight: s.weight}
		var sql []string
		for _, line := range strings.Split(strings.TrimSpace(s.text), "\n") {
			if m := mixedSetRe.FindStringSubmatch(line); m != nil {
				lo, _ := strconv.Atoi(m[2])
				hi, _ := strconv.Atoi(m[3])
				st.vars = append(st.vars, mixedVar{m[1], lo, hi})
				continue
			}
			if strings.HasPrefix(line, `\`) {
				return nil, fmt.Errorf("mixed script %s: unsupported meta-command %q", s.name, line)
			}
			sql = append(sql, line)
		}
		st.sql = strings.Join(sql, "\n")
		steps = append(steps, st)
	}
	return steps, nil
}

// mixedQuery returns a function that picks a script by weight and returns
// its SQL with fresh random values, as pgbench would run it (simple
// protocol). It is safe for concurrent use.
func mixedQuery(steps []mixedStep) func() string {
	total := 0
	for _, s := range steps {
		total += s.weight
	}
	return func() string {
		r := rand.IntN(total)
		st := steps[len(steps)-1]
		for _, s := range steps {
			if r < s.weight {
				st = s
				break
			}
			r -= s.weight
		}
		vals := make(map[string]string, len(st.vars))
		for _, v := range st.vars {
			vals[v.name] = strconv.Itoa(v.lo + rand.IntN(v.hi-v.lo+1))
		}
		return mixedVarRe.ReplaceAllStringFunc(st.sql, func(ref string) string {
			if v, ok := vals[ref[1:]]; ok {
				return v
			}
			return ref
		})
	}
}

// runMixed is the mixed scenario against t: one client per tenant, each
// running the mixed scripts back to back for --duration.
//
// The clients are the harness's own, as in the many-tenants scenario
// (runTenantsWith), not one pgbench -f process per tenant: pgbench connects
// a process to one database, which is the tenant, and a hundred pgbench
// processes started at once on a 2-core machine under load were measured
// starting further apart than a whole 7 s run lasts, so no window had all
// clients running. The scripts are still pgbench's, interpreted here
// (\set random and :variables) and written to --out for a rerun by hand.
func (e *env) runMixed(ctx context.Context, t *target) Sample {
	if e.mixedNext == nil {
		return Sample{Clients: len(e.tenants), Backends: -1, Error: "the mixed scripts are not loaded"}
	}
	return e.runTenantsWith(ctx, t, e.mixedNext)
}
