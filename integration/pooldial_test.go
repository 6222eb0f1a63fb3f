package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/router"
)

// TestPoolLargerThanServer: pgtenant with --pool-size 20 in front of a
// PostgreSQL with max_connections=10, which gives the pool about half of
// what it asks for. 30 clients run short transactions at once; the pool
// works with the backends the server gives it and queues the rest, so
// every transaction succeeds, and the refused dials are logged.
func TestPoolLargerThanServer(t *testing.T) {
	t.Parallel()
	const (
		db      = "pgtenant_small"
		tenant  = "small_t1"
		clients = 30
		txns    = 20
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startOwnCluster(ctx, t, pgcluster.Options{MaxConnections: 10}, db)
	setup := func() {
		conn, err := pgx.Connect(ctx, c.DSN(db))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, _, err := router.CreateTenant(ctx, conn, tenant, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `CREATE TABLE small_t1.hits (client int, n int)`); err != nil {
			t.Fatal(err)
		}
	}
	setup() // and close the connection, which would take one of the 10

	p := startProxy(t, func(cfg *config.Config) {
		cfg.Backend = c.DSN(db)
		cfg.PoolSize = 20
	})

	var wg sync.WaitGroup
	errs := make(chan error, clients*txns)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, p.DSN(tenant))
			if err != nil {
				errs <- fmt.Errorf("client %d: connect: %w", i, err)
				return
			}
			defer conn.Close(context.Background())
			for n := 0; n < txns; n++ {
				err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO hits VALUES ($1, $2)`, i, n); err != nil {
						return err
					}
					var count int
					return tx.QueryRow(ctx, `SELECT count(*) FROM hits WHERE client = $1`, i).Scan(&count)
				})
				if err != nil {
					errs <- fmt.Errorf("client %d transaction %d: %w (SQLSTATE %s)", i, n, err, sqlState(err))
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	var failed []error
	for err := range errs {
		failed = append(failed, err)
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d transactions failed; first: %v", len(failed), clients*txns, errors.Join(failed[:min(3, len(failed))]...))
	}

	// Counted through pgtenant: its pool holds what the server has left.
	check := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	var rows int
	if err := check.QueryRow(ctx, `SELECT count(*) FROM small_t1.hits`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != clients*txns {
		t.Fatalf("%d rows committed, want %d", rows, clients*txns)
	}
	// The pool met the server's limit (it is set so that it must), and
	// said so once per burst of refused dials, naming the server's error.
	logs := p.Logs()
	if !strings.Contains(logs, "backend dials failing") || !strings.Contains(logs, "53300 sorry, too many clients already") {
		t.Fatalf("no log line about the refused dials:\n%s", lastChars(logs, 4000))
	}
}

func lastChars(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
