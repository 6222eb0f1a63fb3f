package bench

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/router"
)

// copyWorkers is how many connections copy tenant tables at once.
const copyWorkers = 4

// pgbenchInit runs `pgbench -i -s scale` straight at PostgreSQL with
// search_path set to schema, so the tables land in that schema.
func (e *env) pgbenchInit(ctx context.Context, schema string, scale int) error {
	b := e.backend
	cmd := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(scale),
		"-h", b.host, "-p", strconv.Itoa(b.port), "-U", b.user, b.database)
	cmd.Env = append(pgEnv(), "PGOPTIONS=-c search_path="+schema)
	if b.password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+b.password)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgbench -i -s %d in schema %s: %w\n%s", scale, schema, err, out)
	}
	return nil
}

// tenantName is the many-tenants scenario's i-th tenant (from 1).
func tenantName(i int) string { return fmt.Sprintf("t%03d", i) }

// createTenants registers n tenants t001... and gives each pgbench tables
// at scale 1. pgbench -i fills the first; the others are copied from it in
// SQL, a few at a time, which takes a fraction of n pgbench -i runs.
func (e *env) createTenants(ctx context.Context, n int) error {
	e.tenants = e.tenants[:0]
	for i := 1; i <= n; i++ {
		name := tenantName(i)
		if _, _, err := router.CreateTenant(ctx, e.admin, name, ""); err != nil {
			return err
		}
		e.tenants = append(e.tenants, name)
	}
	first := e.tenants[0]
	if err := e.pgbenchInit(ctx, first, 1); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	errs := make([]error, copyWorkers)
	var wg sync.WaitGroup
	for w := range copyWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[w] = copyWorker(ctx, e.backend.dsn(""), first, work); errs[w] != nil {
				cancel() // the feeder stops; the other workers drain and end
			}
		}()
	}
feed:
	for _, s := range e.tenants[1:] {
		select {
		case work <- s:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	return errors.Join(errs...)
}

// copyWorker copies from's tables into every schema it receives until work
// is closed; after an error it only drains work.
func copyWorker(ctx context.Context, dsn, from string, work <-chan string) error {
	c, err := pgx.Connect(ctx, dsn)
	if err == nil {
		defer c.Close(context.WithoutCancel(ctx))
	}
	for schema := range work {
		if err != nil {
			continue
		}
		if cerr := copyPgbenchTables(ctx, c, from, schema); cerr != nil {
			err = fmt.Errorf("copy pgbench tables to %s: %w", schema, cerr)
		}
	}
	return err
}

// copyPgbenchTables makes schema's pgbench tables a copy of from's, built
// as pgbench -i builds them: data first, then primary keys, then VACUUM
// ANALYZE.
func copyPgbenchTables(ctx context.Context, c *pgx.Conn, from, schema string) error {
	src := func(t string) string { return pgx.Identifier{from, t}.Sanitize() }
	dst := func(t string) string { return pgx.Identifier{schema, t}.Sanitize() }
	tables := []struct{ name, key string }{
		{"pgbench_branches", "bid"}, {"pgbench_tellers", "tid"},
		{"pgbench_accounts", "aid"}, {"pgbench_history", ""},
	}
	var sql strings.Builder
	names := make([]string, 0, len(tables))
	for _, t := range tables {
		names = append(names, dst(t.name))
	}
	fmt.Fprintf(&sql, "DROP TABLE IF EXISTS %s;\n", strings.Join(names, ", "))
	for _, t := range tables {
		fmt.Fprintf(&sql, "CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS);\n", dst(t.name), src(t.name))
		if t.key != "" {
			fmt.Fprintf(&sql, "INSERT INTO %s SELECT * FROM %s;\n", dst(t.name), src(t.name))
			fmt.Fprintf(&sql, "ALTER TABLE %s ADD PRIMARY KEY (%s);\n", dst(t.name), t.key)
		}
	}
	// One multi-statement Query: one implicit transaction, one round trip.
	if _, err := c.PgConn().Exec(ctx, sql.String()).ReadAll(); err != nil {
		return err
	}
	// VACUUM cannot run inside that transaction.
	_, err := c.PgConn().Exec(ctx, "VACUUM (ANALYZE) "+strings.Join(names, ", ")).ReadAll()
	return err
}
