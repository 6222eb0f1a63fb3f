package bench

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// activityPollInterval is how often the poller reads pg_stat_activity during
// a run: often enough to catch a pool at its largest, rarely enough that the
// poller's own queries cost the server nothing measurable.
const activityPollInterval = 100 * time.Millisecond

// activityQueryTimeout bounds one poll.
const activityQueryTimeout = 5 * time.Second

// backendCount is the most server connections of one role PostgreSQL had at
// once during a run.
type backendCount struct {
	// pool counts the connections that serve clients.
	pool int
	// registry counts pgtenant's tenant-registry connections (a pgxpool and
	// the LISTEN connection), which never run a client's query.
	registry int
}

// watchBackends polls pg_stat_activity from the poller's own connection
// until the returned function is called, which returns the maximum counts
// of role's client backends (the poller excluded). With no role (a target
// the harness did not start) it polls nothing and returns ok=false.
func (e *env) watchBackends(ctx context.Context, role string) (stop func() (c backendCount, ok bool)) {
	return e.watchBackendsOf(ctx, role, "")
}

// watchBackendsOf is watchBackends that also counts, as pool connections,
// those of the roles whose names start with prefix (role mode's tenant
// roles), when prefix is not "".
func (e *env) watchBackendsOf(ctx context.Context, role, prefix string) (stop func() (c backendCount, ok bool)) {
	return watchActivity(ctx, &e.poll, e.backend.dsn("", "application_name=pgtenant-bench-poller"), role, prefix)
}

// watchActivity is watchBackendsOf on the cluster *poll is connected to;
// dsn reconnects it after a failed poll. The crowd scenario's cluster has a
// poller of its own.
func watchActivity(ctx context.Context, poll **pgx.Conn, dsn, role, prefix string) (stop func() (c backendCount, ok bool)) {
	if role == "" {
		return func() (backendCount, bool) { return backendCount{}, false }
	}
	quit := make(chan struct{})
	var (
		mu   sync.Mutex
		most backendCount
		seen bool
		done = make(chan struct{})
	)
	pollOnce := func() {
		// Not the run's ctx: a query cancelled half-way would cost pgx the
		// connection, and the poller needs it for the next run.
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), activityQueryTimeout)
		defer cancel()
		var c backendCount
		err := (*poll).QueryRow(qctx, `
			SELECT count(*) FILTER (WHERE coalesce(application_name, '') NOT LIKE 'pgtenant registry%'),
			       count(*) FILTER (WHERE application_name LIKE 'pgtenant registry%')
			  FROM pg_stat_activity
			 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
			   AND (usename = $1 OR ($2 <> '' AND starts_with(usename::text, $2)))`,
			role, prefix).Scan(&c.pool, &c.registry)
		if err != nil {
			// A slow or failed poll is skipped; the others still count.
			// pgx closes a connection whose query timed out: replace it.
			if (*poll).IsClosed() {
				if c, err := pgx.Connect(qctx, dsn); err == nil {
					*poll = c
				}
			}
			return
		}
		mu.Lock()
		most.pool = max(most.pool, c.pool)
		most.registry = max(most.registry, c.registry)
		seen = true
		mu.Unlock()
	}
	go func() {
		defer close(done)
		t := time.NewTicker(activityPollInterval)
		defer t.Stop()
		for {
			pollOnce()
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() (backendCount, bool) {
		close(quit)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return most, seen
	}
}
