package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

// The cancel tests check the promise of DESIGN.md: a CancelRequest is
// forwarded only to the backend running that client's query right now,
// never to a connection that has since moved to another client. With a pool
// of one, every query of every client runs on the same backend, so a cancel
// that arrives late, early, or with a stale key would hit the other
// client's query if pgtenant forwarded it.

// cnlWaitSleeping polls pg_stat_activity (on a direct connection) until a
// query containing marker is inside pg_sleep on some backend. Waiting for
// the PgSleep wait event, not just an active state, makes sure a cancel
// sent next finds the query running (not in a Parse or Bind of it).
func cnlWaitSleeping(t testing.TB, d *pgx.Conn, marker string) {
	t.Helper()
	eventually(t, 15*time.Second, "a backend sleeping in the query marked "+marker, func() bool {
		var n int
		err := d.QueryRow(fltCtx(t),
			`select count(*) from pg_stat_activity
			 where wait_event = 'PgSleep' and query like '%' || $1 || '%' and pid <> pg_backend_pid()`,
			marker).Scan(&n)
		if err != nil {
			t.Fatalf("poll pg_stat_activity: %v", err)
		}
		return n > 0
	})
}

// cnlSendCancel sends a CancelRequest with the given key to pgtenant on a
// connection of its own, as libpq does, and waits for pgtenant to close it.
func cnlSendCancel(t testing.TB, p *Proxy, pid uint32, secret []byte) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", net.JoinHostPort(p.Host, fmt.Sprint(p.Port)), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msg, err := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: secret}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, nc); err != nil || n != 0 {
		t.Fatalf("CancelRequest: pgtenant answered %d bytes, %v; want a plain close", n, err)
	}
}

// cnlSleepB runs b's short query in a goroutine and returns its result.
func cnlSleepB(ctx context.Context, b *pgx.Conn, seconds, marker string) <-chan error {
	errc := make(chan error, 1)
	go func() {
		var s string
		err := b.QueryRow(ctx, "select pg_sleep("+seconds+"), 'B done' /* "+marker+" */").Scan(nil, &s)
		if err == nil && s != "B done" {
			err = fmt.Errorf("b's query returned %q", s)
		}
		errc <- err
	}()
	return errc
}

// TestCancelNeverHitsWrongQuery: a's pg_sleep(30) is cancelled while b's
// query waits for, or has just got, the one backend; a gets 57014, b's
// query always succeeds. The order of b's query and a's cancel varies from
// round to round to stress the race around the backend changing hands.
func TestCancelNeverHitsWrongQuery(t *testing.T) {
	t.Parallel()
	const a, b = "cnl_a", "cnl_b"
	fltTenant(t, a)
	fltTenant(t, b)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1; c.LogLevel = "info" })
	d := direct(t)
	connsA := []*pgx.Conn{
		p.Connect(t, a, pgx.QueryExecModeSimpleProtocol),
		p.Connect(t, a, pgx.QueryExecModeExec),
	}
	connB := p.Connect(t, b, pgx.QueryExecModeExec)

	for round := 0; round < 30; round++ {
		connA := connsA[round%2]
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		marker := fmt.Sprintf("cnl_wrong_%d", round)
		errA := make(chan error, 1)
		go func() {
			_, err := connA.Exec(ctx, "select pg_sleep(30) /* "+marker+" */")
			errA <- err
		}()
		cnlWaitSleeping(t, d, marker)
		sendCancel := func() error { return connA.PgConn().CancelRequest(ctx) }
		// A short pause of 0 to 0.9 ms moves b's query around the
		// moment the cancel lands; it is not a wait for anything.
		jitter := func() { time.Sleep(time.Duration(round%10) * 100 * time.Microsecond) }
		var errB <-chan error
		switch round % 3 {
		case 0: // b is already waiting for the backend when the cancel goes
			errB = cnlSleepB(ctx, connB, "0.5", "cnl_wrong_b")
			jitter()
			if err := sendCancel(); err != nil {
				t.Fatal(err)
			}
		case 1: // b asks for the backend while the cancel is on its way
			cancelErr := make(chan error, 1)
			go func() { cancelErr <- sendCancel() }()
			jitter()
			errB = cnlSleepB(ctx, connB, "0.5", "cnl_wrong_b")
			if err := <-cancelErr; err != nil {
				t.Fatal(err)
			}
		case 2: // b asks right after pgtenant has handled the cancel
			if err := sendCancel(); err != nil {
				t.Fatal(err)
			}
			jitter()
			errB = cnlSleepB(ctx, connB, "0.5", "cnl_wrong_b")
		}
		if err := fltResult(t, errA, "a's cancelled pg_sleep"); sqlState(err) != "57014" {
			t.Fatalf("round %d: a's cancelled query: want 57014, got %v", round, err)
		}
		if err := fltResult(t, errB, "b's query"); err != nil {
			t.Fatalf("round %d: b's query (cancel sent for a): %v (SQLSTATE %s); the cancel hit the wrong query", round, err, sqlState(err))
		}
		cancel()
	}
	fltCheckSchema(t, connsA[0], a)
	fltCheckSchema(t, connsA[1], a)
	fltCheckSchema(t, connB, b)
}

// TestCancelIdleClient: a CancelRequest with the key of a client that has
// nothing running, or of a client that is gone, cancels nothing, even
// though the backend that client last used is running another client's
// query right now.
func TestCancelIdleClient(t *testing.T) {
	t.Parallel()
	const a, b, c = "cnl_idle_a", "cnl_idle_b", "cnl_idle_c"
	fltTenant(t, a)
	fltTenant(t, b)
	fltTenant(t, c)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	d := direct(t)
	ctx := prpCtx(t, time.Minute)
	connA := p.Connect(t, a, pgx.QueryExecModeExec)
	connB := p.Connect(t, b, pgx.QueryExecModeExec)

	t.Run("idle client", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			// a has just used the one backend and is idle.
			fltCheckSchema(t, connA, a)
			errB := cnlSleepB(ctx, connB, "1", "cnl_idle_b_sleep")
			cnlWaitSleeping(t, d, "cnl_idle_b_sleep")
			if i%2 == 0 {
				if err := connA.PgConn().CancelRequest(ctx); err != nil {
					t.Fatal(err)
				}
			} else {
				cnlSendCancel(t, p, connA.PgConn().PID(), connA.PgConn().SecretKey())
			}
			if err := fltResult(t, errB, "b's query"); err != nil {
				t.Fatalf("b's query while idle a's key was used to cancel: %v (SQLSTATE %s)", err, sqlState(err))
			}
			fltCheckSchema(t, connA, a)
		}
	})

	t.Run("stale key", func(t *testing.T) {
		connC := p.Connect(t, c, pgx.QueryExecModeExec)
		fltCheckSchema(t, connC, c)
		pid, secret := connC.PgConn().PID(), append([]byte(nil), connC.PgConn().SecretKey()...)
		if err := connC.Close(ctx); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			errB := cnlSleepB(ctx, connB, "1", "cnl_stale_b_sleep")
			cnlWaitSleeping(t, d, "cnl_stale_b_sleep")
			cnlSendCancel(t, p, pid, secret)
			if err := fltResult(t, errB, "b's query"); err != nil {
				t.Fatalf("b's query while a closed client's key was used to cancel: %v (SQLSTATE %s)", err, sqlState(err))
			}
		}
	})

	t.Run("wrong secret", func(t *testing.T) {
		errA := make(chan error, 1)
		go func() {
			_, err := connA.Exec(ctx, "select pg_sleep(1) /* cnl_idle_wrong_secret */")
			errA <- err
		}()
		cnlWaitSleeping(t, d, "cnl_idle_wrong_secret")
		secret := append([]byte(nil), connA.PgConn().SecretKey()...)
		secret[0] ^= 0xff
		cnlSendCancel(t, p, connA.PgConn().PID(), secret)
		if err := fltResult(t, errA, "a's query"); err != nil {
			t.Fatalf("a's query after a cancel with a wrong secret: %v", err)
		}
	})
}
