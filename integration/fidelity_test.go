package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/pgtenant/pgtenant/config"
)

// The fidelity tests run pgx in every query exec mode through pgtenant in
// transaction pooling, on pools smaller than the number of clients, and
// check that every result is what PostgreSQL itself would give: typed
// parameters and results, explicit transactions, batches, pipelines, COPY
// and cancellation, always in the client's own tenant schema.

var fidModes = []struct {
	name string
	mode pgx.QueryExecMode
}{
	{"cache_statement", pgx.QueryExecModeCacheStatement},
	{"cache_describe", pgx.QueryExecModeCacheDescribe},
	{"describe_exec", pgx.QueryExecModeDescribeExec},
	{"exec", pgx.QueryExecModeExec},
	{"simple_protocol", pgx.QueryExecModeSimpleProtocol},
}

// fidTenant creates a tenant afresh with the fidelity tables; fid_items
// holds items rows tagged with the tenant's name.
func fidTenant(t testing.TB, name string, items int) {
	t.Helper()
	fltTenant(t, name,
		"CREATE TABLE fid_items (id int PRIMARY KEY, tenant text NOT NULL)",
		fmt.Sprintf("INSERT INTO fid_items SELECT g, '%s' FROM generate_series(1, %d) g", name, items),
		"CREATE TABLE fid_log (client int NOT NULL, mode text NOT NULL, i int NOT NULL, tenant text NOT NULL)",
		"CREATE TABLE fid_batch (id int NOT NULL, v text NOT NULL, mode text NOT NULL)",
		"CREATE TABLE fid_copy (id int NOT NULL, v text NOT NULL, mode text NOT NULL)")
}

// fidTypes runs one parameterised query with parameters and results of
// several types and checks every value.
func fidTypes(ctx context.Context, conn *pgx.Conn, tenant string, client, j int) error {
	base := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	var (
		i8         int64
		s, num     string
		nb         bool
		ts, dt     time.Time
		alen, blen int
		f          float64
	)
	err := conn.QueryRow(ctx,
		`select $1::int8 + 1, $2::text || '@' || current_schema(), ($3::numeric * 2)::text, not $4::bool,
		        $5::timestamptz + interval '1 hour', array_length($6::text[], 1), octet_length($7::bytea),
		        $8::float8 / 2, $9::date + 1`,
		int64(client*1000+j), fmt.Sprintf("c%d", client), 12.25, j%2 == 0, base,
		[]string{"x", "y, z", tenant}, []byte{0, 1, '\\', 255}, 3.5, time.Date(2024, 2, 28, 0, 0, 0, 0, time.UTC),
	).Scan(&i8, &s, &num, &nb, &ts, &alen, &blen, &f, &dt)
	if err != nil {
		return fmt.Errorf("typed query: %w", err)
	}
	got := fmt.Sprintf("%d|%s|%s|%t|%s|%d|%d|%g|%s", i8, s, num, nb, ts.UTC().Format(time.RFC3339), alen, blen, f, dt.Format("2006-01-02"))
	want := fmt.Sprintf("%d|c%d@%s|24.50|%t|2024-01-02T04:04:05Z|3|4|1.75|2024-02-29", client*1000+j+1, client, tenant, j%2 != 0)
	if got != want {
		return fmt.Errorf("typed query: got %s, want %s", got, want)
	}
	return nil
}

// fidClient runs txs transactions of one client and returns how many rows
// it committed to fid_log.
func fidClient(ctx context.Context, conn *pgx.Conn, tenant string, items, client int, mode string, txs int) (int, error) {
	committed := 0
	for j := 0; j < txs; j++ {
		switch j % 5 {
		case 0:
			if err := fidTypes(ctx, conn, tenant, client, j); err != nil {
				return committed, err
			}
		case 1, 2:
			commit := j%5 == 1
			tx, err := conn.Begin(ctx)
			if err != nil {
				return committed, err
			}
			if _, err := tx.Exec(ctx, "insert into fid_log (client, mode, i, tenant) values ($1, $2, $3, $4)", client, mode, j, tenant); err != nil {
				tx.Rollback(ctx)
				return committed, fmt.Errorf("insert: %w", err)
			}
			var schema string
			var mine, n int
			err = tx.QueryRow(ctx,
				"select current_schema(), (select count(*) from fid_log where client = $1 and mode = $2), (select count(*) from fid_items where tenant = $3)",
				client, mode, tenant).Scan(&schema, &mine, &n)
			if err != nil {
				tx.Rollback(ctx)
				return committed, err
			}
			if schema != tenant || mine != committed+1 || n != items {
				tx.Rollback(ctx)
				return committed, fmt.Errorf("in a transaction: schema %s, %d own log rows, %d items; want %s, %d, %d",
					schema, mine, n, tenant, committed+1, items)
			}
			if commit {
				if err := tx.Commit(ctx); err != nil {
					return committed, err
				}
				committed++
			} else if err := tx.Rollback(ctx); err != nil {
				return committed, err
			}
		case 3:
			var n int
			var lo, hi, schema string
			if err := conn.QueryRow(ctx, "select count(*), min(tenant), max(tenant), current_schema() from fid_items").Scan(&n, &lo, &hi, &schema); err != nil {
				return committed, err
			}
			if n != items || lo != tenant || hi != tenant || schema != tenant {
				return committed, fmt.Errorf("own rows: %d items of %s..%s in schema %s; want %d of %s", n, lo, hi, schema, items, tenant)
			}
		case 4:
			if j%10 == 4 {
				// Errors: autocommit, then inside a transaction; the
				// client carries on after each.
				var v int
				err := conn.QueryRow(ctx, "select 10 / $1::int", 0).Scan(&v)
				if sqlState(err) != "22012" {
					return committed, fmt.Errorf("division by zero: want 22012, got %v", err)
				}
				tx, err := conn.Begin(ctx)
				if err != nil {
					return committed, err
				}
				err = tx.QueryRow(ctx, "select 10 / $1::int", 0).Scan(&v)
				if sqlState(err) != "22012" {
					tx.Rollback(ctx)
					return committed, fmt.Errorf("division by zero in a transaction: want 22012, got %v", err)
				}
				if _, err := tx.Exec(ctx, "select 1"); sqlState(err) != "25P02" {
					tx.Rollback(ctx)
					return committed, fmt.Errorf("statement in an aborted transaction: want 25P02, got %v", err)
				}
				if err := tx.Rollback(ctx); err != nil {
					return committed, err
				}
			} else {
				rows, err := conn.Query(ctx, "select id from fid_items where id = any($1::int[]) order by id", []int32{1, 2, 99})
				if err != nil {
					return committed, err
				}
				ids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
				if err != nil {
					return committed, err
				}
				if fmt.Sprint(ids) != "[1 2]" {
					return committed, fmt.Errorf("any($1): got %v, want [1 2]", ids)
				}
			}
		}
	}
	return committed, nil
}

// TestFidQueryExecModes: in each pgx query exec mode, 10 clients of 4
// tenants on a pool of 3 each run 100 transactions of typed parameterised
// queries, explicit transactions committed and rolled back, and errors;
// each sees its own schema and rows, and its commits (and only those) land
// in its tenant's table.
func TestFidQueryExecModes(t *testing.T) {
	t.Parallel()
	const clients, txs = 10, 100
	tenants := []string{"fid_m0", "fid_m1", "fid_m2", "fid_m3"}
	for i, name := range tenants {
		fidTenant(t, name, i+2)
	}
	p := startProxy(t, func(c *config.Config) {
		c.PoolSize = 3
		c.LogLevel = "info"
		c.QueryWaitTimeout = 30 * time.Second
	})
	d := direct(t)
	for _, m := range fidModes {
		t.Run(m.name, func(t *testing.T) {
			ctx := prpCtx(t, 3*time.Minute)
			conns := make([]*pgx.Conn, clients)
			for k := range conns {
				conns[k] = p.Connect(t, tenants[k%len(tenants)], m.mode)
			}
			committed := map[string]int{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for k, conn := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					tenant := tenants[k%len(tenants)]
					n, err := fidClient(ctx, conn, tenant, k%len(tenants)+2, k, m.name, txs)
					mu.Lock()
					committed[tenant] += n
					mu.Unlock()
					if err != nil {
						errs <- fmt.Errorf("client %d (%s): %w", k, tenant, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for _, tenant := range tenants {
				var n, foreign int
				err := d.QueryRow(ctx, fmt.Sprintf(
					"select count(*), count(*) filter (where tenant <> $2) from %s.fid_log where mode = $1",
					pgx.Identifier{tenant}.Sanitize()), m.name, tenant).Scan(&n, &foreign)
				if err != nil {
					t.Fatal(err)
				}
				if n != committed[tenant] || foreign != 0 {
					t.Errorf("%s.fid_log: %d rows for mode %s (%d of other tenants), want %d committed by its clients",
						tenant, n, m.name, foreign, committed[tenant])
				}
			}
		})
	}
}

// TestFidBatch: pgx batches of 20 queries (inserts and selects), outside a
// transaction, inside one committed and inside one rolled back, and a batch
// that fails midway, in every exec mode, two tenants at once on a pool of 1.
func TestFidBatch(t *testing.T) {
	t.Parallel()
	tenants := []string{"fid_b0", "fid_b1"}
	for i, name := range tenants {
		fidTenant(t, name, i+2)
	}
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1; c.LogLevel = "info" })
	d := direct(t)
	for _, m := range fidModes {
		t.Run(m.name, func(t *testing.T) {
			ctx := prpCtx(t, 2*time.Minute)
			var wg sync.WaitGroup
			errs := make(chan error, len(tenants))
			for _, tenant := range tenants {
				conn := p.Connect(t, tenant, m.mode)
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := fidBatches(ctx, conn, tenant, m.name); err != nil {
						errs <- fmt.Errorf("%s: %w", tenant, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for _, tenant := range tenants {
				var n, foreign int
				err := d.QueryRow(ctx, fmt.Sprintf(
					"select count(*), count(*) filter (where v not like $2 || '-%%') from %s.fid_batch where mode = $1",
					pgx.Identifier{tenant}.Sanitize()), m.name, tenant).Scan(&n, &foreign)
				if err != nil {
					t.Fatal(err)
				}
				if n != 20 || foreign != 0 {
					t.Errorf("%s.fid_batch: %d rows for mode %s (%d of other tenants), want 20", tenant, n, m.name, foreign)
				}
			}
		})
	}
}

// fidBatches runs the batches of TestFidBatch for one client.
func fidBatches(ctx context.Context, conn *pgx.Conn, tenant, mode string) error {
	type sender interface {
		SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
	}
	// run sends 10 inserts each followed by a count, ids from first; the
	// table holds before rows of this mode when it starts.
	run := func(s sender, first, before int) error {
		b := &pgx.Batch{}
		for i := 0; i < 10; i++ {
			id := first + i
			b.Queue("insert into fid_batch (id, v, mode) values ($1, $2, $3)", id, fmt.Sprintf("%s-%d", tenant, id), mode)
			b.Queue("select count(*), current_schema() from fid_batch where mode = $1", mode)
		}
		br := s.SendBatch(ctx, b)
		for i := 0; i < 10; i++ {
			ct, err := br.Exec()
			if err != nil {
				br.Close()
				return fmt.Errorf("batch insert %d: %w", i, err)
			}
			if ct.RowsAffected() != 1 {
				br.Close()
				return fmt.Errorf("batch insert %d: %s", i, ct)
			}
			var n int
			var schema string
			if err := br.QueryRow().Scan(&n, &schema); err != nil {
				br.Close()
				return fmt.Errorf("batch select %d: %w", i, err)
			}
			if n != before+i+1 || schema != tenant {
				br.Close()
				return fmt.Errorf("batch select %d: %d rows in schema %s, want %d in %s", i, n, schema, before+i+1, tenant)
			}
		}
		return br.Close()
	}
	count := func() (int, error) {
		var n int
		err := conn.QueryRow(ctx, "select count(*) from fid_batch where mode = $1", mode).Scan(&n)
		return n, err
	}
	if err := run(conn, 0, 0); err != nil {
		return fmt.Errorf("outside a transaction: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	if err := run(tx, 10, 10); err != nil {
		tx.Rollback(ctx)
		return fmt.Errorf("in a transaction: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	tx, err = conn.Begin(ctx)
	if err != nil {
		return err
	}
	if err := run(tx, 20, 20); err != nil {
		tx.Rollback(ctx)
		return fmt.Errorf("in a transaction to roll back: %w", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	if n, err := count(); err != nil || n != 20 {
		return fmt.Errorf("after the rolled-back batch: %d rows, %v; want 20", n, err)
	}

	// A batch that fails midway runs as one implicit transaction: the
	// insert before the error is undone.
	b := &pgx.Batch{}
	b.Queue("insert into fid_batch (id, v, mode) values ($1, $2, $3)", 100, tenant+"-100", mode)
	b.Queue("select 10 / $1::int", 0)
	b.Queue("insert into fid_batch (id, v, mode) values ($1, $2, $3)", 101, tenant+"-101", mode)
	br := conn.SendBatch(ctx, b)
	_, err1 := br.Exec()
	_, err2 := br.Exec()
	_, err3 := br.Exec()
	errClose := br.Close()
	if sqlState(err2) != "22012" && sqlState(err1) != "22012" {
		return fmt.Errorf("failing batch: results %v, %v, %v, close %v; want 22012", err1, err2, err3, errClose)
	}
	if n, err := count(); err != nil || n != 20 {
		return fmt.Errorf("after the failed batch: %d rows, %v; want 20", n, err)
	}
	var schema string
	if err := conn.QueryRow(ctx, "select current_schema()").Scan(&schema); err != nil || schema != tenant {
		return fmt.Errorf("after the failed batch: schema %q, %v", schema, err)
	}
	return nil
}

// TestFidPipeline: a pgconn pipeline of several queries and Syncs gets
// correct results, and its backend (the only one) goes to another tenant's
// client only after the pipeline's last Sync: a query of that client that
// ran inside the pipeline's open implicit transaction would see the
// pipeline's uncommitted (and in the end rolled back) insert.
func TestFidPipeline(t *testing.T) {
	t.Parallel()
	const a, b = "fid_pipe_a", "fid_pipe_b"
	fltTenant(t, a, "CREATE TABLE fid_pipe (v text NOT NULL)")
	fltTenant(t, b)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := prpCtx(t, 2*time.Minute)
	connA := p.Connect(t, a, pgx.QueryExecModeExec)
	connB := p.Connect(t, b, pgx.QueryExecModeExec)
	pa := connA.PgConn()
	text := func(s string) [][]byte { return [][]byte{[]byte(s)} }

	for iter := 0; iter < 5; iter++ {
		seg1, seg2 := fmt.Sprintf("seg1-%d", iter), fmt.Sprintf("seg2-%d", iter)
		pl := pa.StartPipeline(ctx)
		pl.SendQueryParams("insert into fid_pipe values ($1)", text(seg1), nil, nil, nil)
		pl.SendQueryParams("select current_schema()", nil, nil, nil, nil)
		pl.SendQueryParams("select $1::int * 2", text("21"), nil, nil, nil)
		pl.SendPipelineSync()
		// The second segment is sent at once, behind the Sync: the
		// backend must stay with this client.
		pl.SendQueryParams("insert into fid_pipe values ($1)", text(seg2), nil, nil, nil)
		pl.SendFlushRequest()
		if err := pl.Flush(); err != nil {
			t.Fatal(err)
		}
		want := []string{"INSERT 0 1", a, "42", "sync", "INSERT 0 1"}
		for i, w := range want {
			got, err := fidPipelineResult(pl)
			if err != nil {
				t.Fatalf("iteration %d, pipeline result %d: %v", iter, i, err)
			}
			if got != w {
				t.Fatalf("iteration %d, pipeline result %d: %q, want %q", iter, i, got, w)
			}
		}

		// Another tenant's client asks for the one backend now.
		type result struct {
			schema       string
			seen1, seen2 int
			err          error
		}
		resB := make(chan result, 1)
		go func() {
			var r result
			r.err = connB.QueryRow(ctx,
				"select current_schema(), count(*) filter (where v = $1), count(*) filter (where v = $2) from fid_pipe_a.fid_pipe",
				seg1, seg2).Scan(&r.schema, &r.seen1, &r.seen2)
			resB <- r
		}()
		// More work in the open segment, while b waits.
		for k := 0; k < 30; k++ {
			pl.SendQueryParams("select count(*) from fid_pipe where v = $1", text(seg2), nil, nil, nil)
			pl.SendFlushRequest()
			if err := pl.Flush(); err != nil {
				t.Fatal(err)
			}
			got, err := fidPipelineResult(pl)
			if err != nil || got != "1" {
				t.Fatalf("iteration %d: own uncommitted row in the open segment: %q, %v", iter, got, err)
			}
			select {
			case r := <-resB:
				t.Fatalf("iteration %d: %s's query finished while %s's pipeline had an open segment: %+v", iter, b, a, r)
			default:
			}
		}
		// The segment fails, so its implicit transaction rolls back.
		pl.SendQueryParams("select 1 / $1::int", text("0"), nil, nil, nil)
		pl.SendPipelineSync()
		if err := pl.Flush(); err != nil {
			t.Fatal(err)
		}
		if _, err := fidPipelineResult(pl); sqlState(err) != "22012" {
			t.Fatalf("iteration %d: failing query in the pipeline: want 22012, got %v", iter, err)
		}
		if got, err := fidPipelineResult(pl); err != nil || got != "sync" {
			t.Fatalf("iteration %d: after the error: %q, %v; want the Sync", iter, got, err)
		}
		if err := pl.Close(); err != nil {
			t.Fatal(err)
		}
		var r result
		select {
		case r = <-resB:
		case <-time.After(30 * time.Second):
			t.Fatalf("iteration %d: %s's query did not run after the pipeline ended", iter, b)
		}
		if r.err != nil || r.schema != b || r.seen1 != 1 || r.seen2 != 0 {
			t.Fatalf("iteration %d: %s saw schema %q, %d committed and %d rolled-back rows, err %v; want %s, 1, 0",
				iter, b, r.schema, r.seen1, r.seen2, r.err, b)
		}
		fltCheckSchema(t, connA, a)
	}
	var rows string
	if err := direct(t).QueryRow(ctx, "select string_agg(v, ',' order by v) from fid_pipe_a.fid_pipe").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != "seg1-0,seg1-1,seg1-2,seg1-3,seg1-4" {
		t.Fatalf("fid_pipe_a.fid_pipe holds %s; want only the first segments' rows", rows)
	}
}

// fidPipelineResult reads the next pipeline result as a string: a command
// tag for a statement without rows, the first column of the first row, or
// "sync".
func fidPipelineResult(pl *pgconn.Pipeline) (string, error) {
	res, err := pl.GetResults()
	if err != nil {
		return "", err
	}
	switch r := res.(type) {
	case *pgconn.PipelineSync:
		return "sync", nil
	case *pgconn.ResultReader:
		out := r.Read()
		if out.Err != nil {
			return "", out.Err
		}
		if len(out.Rows) > 0 {
			return string(out.Rows[0][0]), nil
		}
		return out.CommandTag.String(), nil
	case nil:
		return "", errors.New("no result")
	}
	return "", fmt.Errorf("unexpected pipeline result %T", res)
}

// TestFidCopyFrom: pgx CopyFrom of 10,000 rows in every exec mode, two
// tenants at once on a pool smaller than the clients: the rows land in each
// tenant's own table.
func TestFidCopyFrom(t *testing.T) {
	t.Parallel()
	const rows = 10000
	tenants := []string{"fid_cp0", "fid_cp1"}
	for i, name := range tenants {
		fidTenant(t, name, i+2)
	}
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1; c.LogLevel = "info" })
	d := direct(t)
	for _, m := range fidModes {
		t.Run(m.name, func(t *testing.T) {
			ctx := prpCtx(t, 2*time.Minute)
			var wg sync.WaitGroup
			errs := make(chan error, 2*len(tenants))
			for _, tenant := range tenants {
				conn := p.Connect(t, tenant, m.mode)
				other := p.Connect(t, tenant, m.mode)
				wg.Add(2)
				go func() {
					defer wg.Done()
					n, err := conn.CopyFrom(ctx, pgx.Identifier{"fid_copy"}, []string{"id", "v", "mode"},
						pgx.CopyFromSlice(rows, func(i int) ([]any, error) {
							return []any{i, fmt.Sprintf("%s-%d", tenant, i), m.name}, nil
						}))
					if err != nil || n != rows {
						errs <- fmt.Errorf("%s: CopyFrom: %d rows, %v", tenant, n, err)
						return
					}
					var got int
					if err := conn.QueryRow(ctx, "select count(*) from fid_copy where mode = $1", m.name).Scan(&got); err != nil || got != rows {
						errs <- fmt.Errorf("%s: after CopyFrom: %d rows, %v", tenant, got, err)
					}
				}()
				// Meanwhile another client of the tenant queries.
				go func() {
					defer wg.Done()
					for i := 0; i < 20; i++ {
						if err := fidTypes(ctx, other, tenant, 99, i); err != nil {
							errs <- fmt.Errorf("%s: %w", tenant, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for _, tenant := range tenants {
				var n, foreign, sum int64
				err := d.QueryRow(ctx, fmt.Sprintf(
					"select count(*), count(*) filter (where v <> $2 || '-' || id), coalesce(sum(id), 0) from %s.fid_copy where mode = $1",
					pgx.Identifier{tenant}.Sanitize()), m.name, tenant).Scan(&n, &foreign, &sum)
				if err != nil {
					t.Fatal(err)
				}
				if n != rows || foreign != 0 || sum != rows*(rows-1)/2 {
					t.Errorf("%s.fid_copy, mode %s: %d rows (%d not its own), sum of ids %d; want %d rows of its own", tenant, m.name, n, foreign, sum, rows)
				}
			}
		})
	}
	var inPublic bool
	if err := d.QueryRow(context.Background(), "select to_regclass('public.fid_copy') is not null").Scan(&inPublic); err != nil {
		t.Fatal(err)
	}
	if inPublic {
		t.Error("a table public.fid_copy exists")
	}
}

// TestFidCancel: in every exec mode, cancelling the context of a running
// pg_sleep(30) (pgx sends a CancelRequest to pgtenant) ends it with 57014,
// and the connection and new ones work.
func TestFidCancel(t *testing.T) {
	t.Parallel()
	const tenant = "fid_cancel"
	fidTenant(t, tenant, 3)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 2 })
	d := direct(t)
	for _, m := range fidModes {
		t.Run(m.name, func(t *testing.T) {
			conn, err := fltConnect(t, p, tenant, func(c *pgx.ConnConfig) {
				c.DefaultQueryExecMode = m.mode
				c.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
					return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 15 * time.Second}
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			// Another client keeps the second backend busy meanwhile.
			busy := p.Connect(t, tenant, m.mode)
			busyCtx := prpCtx(t, time.Minute)
			busyDone := make(chan error, 1)
			stopBusy := make(chan struct{})
			go func() {
				for i := 0; ; i++ {
					select {
					case <-stopBusy:
						busyDone <- nil
						return
					default:
					}
					if err := fidTypes(busyCtx, busy, tenant, 7, i); err != nil {
						busyDone <- err
						return
					}
				}
			}()
			marker := "fid_cancel_" + m.name
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := conn.Exec(ctx, "select pg_sleep(30) /* "+marker+" */")
				errc <- err
			}()
			cnlWaitSleeping(t, d, marker)
			cancel()
			err = fltResult(t, errc, "pg_sleep with a cancelled context")
			if sqlState(err) != "57014" {
				t.Fatalf("cancelled pg_sleep: want 57014, got %v", err)
			}
			if conn.IsClosed() {
				t.Fatal("the connection closed after the cancel")
			}
			close(stopBusy)
			if err := <-busyDone; err != nil {
				t.Fatalf("the other client: %v", err)
			}
			if err := fidTypes(prpCtx(t, 20*time.Second), conn, tenant, 1, 1); err != nil {
				t.Fatalf("after the cancel: %v", err)
			}
			fltCheckSchema(t, conn, tenant)
			fltCheckSchema(t, p.Connect(t, tenant, m.mode), tenant)
			eventually(t, 10*time.Second, "the cancelled pg_sleep to end", func() bool { return fltActive(t, d, marker) == 0 })
		})
	}
}
