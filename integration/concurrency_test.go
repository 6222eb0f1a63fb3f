package integration

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
)

// concPoolAppName names the pool's backend connections of the concurrency
// test in pg_stat_activity. It comes from the backend DSN, so the pin's
// RESET ALL brings it back (pgx clients send no application_name of their
// own); it keeps this test's connections apart from those of proxies that
// other tests run at the same time.
const concPoolAppName = "pgtenant_conc_pool"

// TestConcurrencyManyTenantsSmallPool: 40 clients of 8 tenants share a pool
// of 4 backend connections. Every transaction of every client checks that it
// runs in its own tenant's schema and sees only its own rows; writes are
// checked directly at the end. pgtenant must never open more than 4 backend
// connections.
func TestConcurrencyManyTenantsSmallPool(t *testing.T) {
	t.Parallel()
	const (
		tenants      = 8
		clients      = 40
		poolSize     = 4
		txPerClient  = 60 // 2400 transactions in all
		minChecked   = 2000
		maxWrongLogs = 10
	)
	names := make([]string, tenants)
	for i := range names {
		names[i] = fmt.Sprintf("conc_t%d", i)
		// Each tenant has a different number of items, all tagged with
		// its own name, so a count or a tag from another tenant shows.
		createTenant(t, names[i],
			"CREATE TABLE conc_marker (tenant text NOT NULL)",
			fmt.Sprintf("INSERT INTO conc_marker VALUES ('%s')", names[i]),
			"CREATE TABLE conc_items (id int, tenant text NOT NULL)",
			fmt.Sprintf("INSERT INTO conc_items SELECT g, '%s' FROM generate_series(1, %d) g", names[i], i+1),
			"CREATE TABLE conc_hits (client int NOT NULL, n int NOT NULL)")
	}
	itemCount := func(tenant string) int64 {
		var i int
		fmt.Sscanf(tenant, "conc_t%d", &i)
		return int64(i + 1)
	}

	p := startProxy(t, func(c *config.Config) {
		c.PoolSize = poolSize
		c.Backend = backendDSN() + " application_name=" + concPoolAppName
		c.QueryWaitTimeout = 30 * time.Second
		c.LogLevel = "info"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	type client struct {
		id     int
		tenant string
		mode   pgx.QueryExecMode
		conn   *pgx.Conn
		// committed counts this client's committed conc_hits rows.
		committed int64
	}
	cs := make([]*client, clients)
	for i := range cs {
		mode := pgx.QueryExecModeSimpleProtocol
		if i%2 == 1 {
			mode = pgx.QueryExecModeExec
		}
		tenant := names[i%tenants]
		cs[i] = &client{id: i, tenant: tenant, mode: mode, conn: p.Connect(t, tenant, mode)}
	}

	var checked, wrong, failed atomic.Int64
	var mu sync.Mutex
	var wrongLog []string
	clientPids := map[uint32]bool{}
	reportWrong := func(c *client, tx int, format string, args ...any) {
		wrong.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if len(wrongLog) < maxWrongLogs {
			wrongLog = append(wrongLog, fmt.Sprintf("client %d (%s, %v) tx %d: ", c.id, c.tenant, c.mode, tx)+fmt.Sprintf(format, args...))
		}
	}
	reportErr := func(c *client, tx int, err error) {
		failed.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if len(wrongLog) < maxWrongLogs {
			wrongLog = append(wrongLog, fmt.Sprintf("client %d (%s, %v) tx %d: error: %v", c.id, c.tenant, c.mode, tx, err))
		}
	}
	sawPid := func(pid uint32) {
		mu.Lock()
		clientPids[pid] = true
		mu.Unlock()
	}

	// autocommit: one statement, one implicit transaction.
	autocommit := func(c *client, tx int) error {
		var schema, marker string
		var items, foreign int64
		var pid uint32
		err := c.conn.QueryRow(ctx, `select current_schema(),
			(select string_agg(tenant, ',') from conc_marker),
			(select count(*) from conc_items),
			(select count(*) from conc_items where tenant <> $1),
			pg_backend_pid()`, c.tenant).Scan(&schema, &marker, &items, &foreign, &pid)
		if err != nil {
			return err
		}
		sawPid(pid)
		if schema != c.tenant || marker != c.tenant || items != itemCount(c.tenant) || foreign != 0 {
			reportWrong(c, tx, "autocommit saw schema %q marker %q items %d foreign %d", schema, marker, items, foreign)
		}
		return nil
	}
	// commitTx: several statements in BEGIN … COMMIT, with a write whose
	// count the client can predict.
	commitTx := func(c *client, tx int) error {
		btx, err := c.conn.Begin(ctx)
		if err != nil {
			return err
		}
		defer btx.Rollback(ctx)
		var schema string
		var pid1, pid2 uint32
		if err := btx.QueryRow(ctx, "select current_schema(), pg_backend_pid()").Scan(&schema, &pid1); err != nil {
			return err
		}
		var marker string
		if err := btx.QueryRow(ctx, "select string_agg(tenant, ',') from conc_marker where tenant = $1 or true", c.tenant).Scan(&marker); err != nil {
			return err
		}
		if _, err := btx.Exec(ctx, "insert into conc_hits (client, n) values ($1, $2)", c.id, tx); err != nil {
			return err
		}
		var mine, others int64
		if err := btx.QueryRow(ctx, "select count(*) filter (where client = $1), count(*) filter (where client % $2 <> $3) from conc_hits",
			c.id, tenants, c.id%tenants).Scan(&mine, &others); err != nil {
			return err
		}
		if err := btx.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid2); err != nil {
			return err
		}
		if err := btx.Commit(ctx); err != nil {
			return err
		}
		c.committed++
		sawPid(pid1)
		sawPid(pid2)
		if schema != c.tenant || marker != c.tenant || mine != c.committed || others != 0 || pid1 != pid2 {
			reportWrong(c, tx, "transaction saw schema %q marker %q own hits %d (want %d) foreign hits %d, pids %d/%d",
				schema, marker, mine, c.committed, others, pid1, pid2)
		}
		return nil
	}
	// rollbackTx: BEGIN with options, a write, ROLLBACK.
	rollbackTx := func(c *client, tx int) error {
		if _, err := c.conn.Exec(ctx, "begin isolation level repeatable read"); err != nil {
			return err
		}
		var iso, schema string
		var pid uint32
		var items int64
		err := c.conn.QueryRow(ctx, "select current_setting('transaction_isolation'), current_schema(), pg_backend_pid(), (select count(*) from conc_items where id > $1)", 0).
			Scan(&iso, &schema, &pid, &items)
		if err == nil {
			_, err = c.conn.Exec(ctx, "insert into conc_hits (client, n) values ($1, $2)", c.id, -1)
		}
		if _, rbErr := c.conn.Exec(ctx, "rollback"); err == nil {
			err = rbErr
		}
		if err != nil {
			return err
		}
		sawPid(pid)
		if iso != "repeatable read" || schema != c.tenant || items != itemCount(c.tenant) {
			reportWrong(c, tx, "repeatable read transaction saw isolation %q schema %q items %d", iso, schema, items)
		}
		return nil
	}

	// Watch pg_stat_activity while the load runs: how many connections
	// the pool holds open at once.
	mon := direct(t)
	monDone := make(chan struct{})
	var maxPool int
	poolPids := map[uint32]bool{}
	var samples int
	var monErr error
	var registryQueries []string
	stopMon := make(chan struct{})
	go func() {
		defer close(monDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			// The registry's pool logs in with the same DSN, so shares the
			// application_name; its connections only ever run the ping and
			// the tenant and settings lookups (pgtenant.tenants,
			// pgtenant.tenant_settings). The pool's connections only ever run the
			// pin or this test's client queries.
			rows, err := mon.Query(ctx, `select pid, coalesce(query, '') from pg_stat_activity
				where backend_type = 'client backend' and datname = $1 and application_name = $2
				and pid <> pg_backend_pid()`, backendDB, concPoolAppName)
			if err != nil {
				monErr = err
				return
			}
			n := 0
			for rows.Next() {
				var pid uint32
				var q string
				if err := rows.Scan(&pid, &q); err != nil {
					monErr = err
					return
				}
				if strings.Contains(q, "pgtenant.tenant") || strings.HasPrefix(q, "-- ping") {
					if len(registryQueries) < 4 {
						registryQueries = append(registryQueries, q)
					}
					continue
				}
				n++
				poolPids[pid] = true
			}
			if err := rows.Err(); err != nil {
				monErr = err
				return
			}
			samples++
			maxPool = max(maxPool, n)
			select {
			case <-stopMon:
				return
			case <-tick.C:
			}
		}
	}()

	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tx := 0; tx < txPerClient && ctx.Err() == nil; tx++ {
				var err error
				switch (tx + c.id) % 3 {
				case 0:
					err = autocommit(c, tx)
				case 1:
					err = commitTx(c, tx)
				case 2:
					err = rollbackTx(c, tx)
				}
				if err != nil {
					reportErr(c, tx, err)
					return
				}
				checked.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stopMon)
	<-monDone

	t.Logf("checked %d transactions of %d clients across %d tenants on a pool of %d: %d wrong answers, %d errors",
		checked.Load(), clients, tenants, poolSize, wrong.Load(), failed.Load())
	for _, l := range wrongLog {
		t.Error(l)
	}
	if wrong.Load() != 0 {
		t.Errorf("%d wrong answers", wrong.Load())
	}
	if failed.Load() != 0 {
		t.Errorf("%d clients failed with an error", failed.Load())
	}
	if checked.Load() < minChecked {
		t.Errorf("only %d transactions checked, want at least %d", checked.Load(), minChecked)
	}

	// Writes: each tenant's conc_hits holds exactly its own clients'
	// committed rows, and nothing rolled back.
	d := direct(t)
	for _, tenant := range names {
		rows, err := d.Query(ctx, "select client, count(*), count(*) filter (where n < 0) from "+
			pgx.Identifier{tenant, "conc_hits"}.Sanitize()+" group by client order by client")
		if err != nil {
			t.Fatal(err)
		}
		got := map[int]int64{}
		for rows.Next() {
			var cl int
			var n, rolledBack int64
			if err := rows.Scan(&cl, &n, &rolledBack); err != nil {
				t.Fatal(err)
			}
			got[cl] = n
			if rolledBack != 0 {
				t.Errorf("%s.conc_hits has %d rolled-back rows of client %d", tenant, rolledBack, cl)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.tenant == tenant {
				if got[c.id] != c.committed {
					t.Errorf("%s.conc_hits has %d rows of client %d, which committed %d", tenant, got[c.id], c.id, c.committed)
				}
				delete(got, c.id)
			}
		}
		if len(got) != 0 {
			t.Errorf("%s.conc_hits has rows of other tenants' clients: %v", tenant, got)
		}
	}

	// Backend connections: at most poolSize, both as seen by the clients
	// (pg_backend_pid) and in pg_stat_activity while the load ran.
	if monErr != nil {
		t.Fatalf("monitoring pg_stat_activity: %v", monErr)
	}
	all := map[uint32]bool{}
	for pid := range clientPids {
		all[pid] = true
	}
	for pid := range poolPids {
		all[pid] = true
	}
	t.Logf("backend connections: %d distinct pids seen by clients %v, %d seen in pg_stat_activity (at most %d at once in %d samples); registry queries seen: %q",
		len(clientPids), sortedPids(clientPids), len(poolPids), maxPool, samples, registryQueries)
	if maxPool > poolSize || len(all) > poolSize {
		t.Errorf("pgtenant opened more than %d backend connections: %d at once, %d distinct (%v)", poolSize, maxPool, len(all), sortedPids(all))
	}
	if samples == 0 || maxPool == 0 {
		t.Errorf("pg_stat_activity never showed a pool connection named %q (%d samples): the check proves nothing", concPoolAppName, samples)
	}
}

func sortedPids(m map[uint32]bool) []uint32 {
	s := make([]uint32, 0, len(m))
	for pid := range m {
		s = append(s, pid)
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}
