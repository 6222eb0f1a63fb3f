package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

// Limits on the named prepared statements pgtenant keeps for one client
// (issue 11 D): --max-client-statements and --max-client-statement-bytes.

// limPrepareErr prepares name as sql and returns the server's error, if any.
func limPrepareErr(ctx context.Context, t *testing.T, pgc *pgconn.PgConn, name, sql string) *pgconn.PgError {
	t.Helper()
	_, err := pgc.Prepare(ctx, name, sql, nil)
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("prepare %s: %v", name, err)
	}
	return pe
}

// limWantLimit fails unless pe is the 53400 refusal naming flag.
func limWantLimit(t *testing.T, what string, pe *pgconn.PgError, flag string) {
	t.Helper()
	if pe == nil {
		t.Fatalf("%s: prepared, want ERROR 53400 (%s)", what, flag)
	}
	if pe.Code != "53400" || pe.Severity != "ERROR" || !strings.Contains(pe.Message, flag) {
		t.Fatalf("%s: got %s %s %q, want ERROR 53400 naming %s", what, pe.Severity, pe.Code, pe.Message, flag)
	}
}

// TestLimitsClientStatements: a client parses named statements until it is
// refused with 53400; the refused Parse defines nothing and skips its batch
// to the Sync, as a failed Parse does in PostgreSQL; closing statements
// (Close, DEALLOCATE) makes room again. Tried with a backend attached
// (inside a transaction) and without one (every backend busy, so pgtenant
// answers the Parse itself).
func TestLimitsClientStatements(t *testing.T) {
	const tenant, limit = "lim_stmts", 5
	createTenant(t, tenant, "create table never (x int)")
	p := startProxy(t, func(c *config.Config) {
		c.MaxClientStatements = limit
		c.PoolSize = 1
	})
	ctx := prpCtx(t, 60*time.Second)

	// With a backend attached: inside a transaction.
	t.Run("attached", func(t *testing.T) {
		conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		pgc := conn.PgConn()
		if _, err := conn.Exec(ctx, "begin"); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= limit; i++ {
			if pe := limPrepareErr(ctx, t, pgc, fmt.Sprintf("s%d", i), fmt.Sprintf("select %d", i)); pe != nil {
				t.Fatalf("statement %d of %d: %s %s", i, limit, pe.Code, pe.Message)
			}
		}
		limWantLimit(t, "statement over the cap", limPrepareErr(ctx, t, pgc, "over", "select 'over'"), "max-client-statements")
		// The refusal failed the transaction, as PostgreSQL's own error
		// would have.
		if s := pgc.TxStatus(); s != 'E' {
			t.Fatalf("transaction status after the refusal %q, want E", s)
		}
		if _, err := conn.Exec(ctx, "rollback"); err != nil {
			t.Fatal(err)
		}
		// The refused statement does not exist; the others do.
		if _, err := prpExecPrepared(ctx, pgc, "over"); sqlState(err) != "26000" {
			t.Fatalf("execute the refused statement: %v, want 26000", err)
		}
		if rows, err := prpExecPrepared(ctx, pgc, "s3"); err != nil || rows[0][0] != "3" {
			t.Fatalf("execute s3: %v %v", rows, err)
		}
		// Close by protocol and by DEALLOCATE: two free places.
		if err := pgc.Deallocate(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "deallocate s2"); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"again1", "again2"} {
			if pe := limPrepareErr(ctx, t, pgc, name, "select '"+name+"'"); pe != nil {
				t.Fatalf("%s after closing two: %s %s", name, pe.Code, pe.Message)
			}
		}
		limWantLimit(t, "full again", limPrepareErr(ctx, t, pgc, "over", "select 'over'"), "max-client-statements")
		if rows, err := prpExecPrepared(ctx, pgc, "again2"); err != nil || rows[0][0] != "again2" {
			t.Fatalf("execute again2: %v %v", rows, err)
		}
		// Redefining a statement the client keeps is PostgreSQL's 42P05,
		// not a limit.
		if pe := limPrepareErr(ctx, t, pgc, "s3", "select 3"); pe == nil || pe.Code != "42P05" {
			t.Fatalf("redefine s3: %v, want 42P05", pe)
		}
		// DEALLOCATE ALL frees every place.
		if _, err := conn.Exec(ctx, "deallocate all"); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= limit; i++ {
			if pe := limPrepareErr(ctx, t, pgc, fmt.Sprintf("s%d", i), "select 1"); pe != nil {
				t.Fatalf("statement %d after DEALLOCATE ALL: %s %s", i, pe.Code, pe.Message)
			}
		}
	})

	// Without a backend: another client holds the only one in a
	// transaction, so pgtenant answers Parse, Close and Sync itself.
	t.Run("detached", func(t *testing.T) {
		holder := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
		if _, err := holder.Exec(ctx, "begin; select 1"); err != nil {
			t.Fatal(err)
		}
		nc := rawDial(t, p)
		fe := rawStartup(t, nc, tenant)
		send := limSender(t, fe)
		for i := 1; i <= limit; i++ {
			send(&pgproto3.Parse{Name: fmt.Sprintf("s%d", i), Query: fmt.Sprintf("select %d", i)}, &pgproto3.Sync{})
			limExpect(t, fe, &pgproto3.ParseComplete{}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		}
		// The Close behind the refused Parse is skipped: s1 stays.
		send(&pgproto3.Parse{Name: "over", Query: "select 'over'"}, &pgproto3.Close{ObjectType: 'S', Name: "s1"},
			&pgproto3.Sync{})
		limWantLimit(t, "statement over the cap", limError(t, fe), "max-client-statements")
		limExpect(t, fe, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		send(&pgproto3.Parse{Name: "over", Query: "select 'over'"}, &pgproto3.Sync{})
		limWantLimit(t, "still over the cap", limError(t, fe), "max-client-statements")
		limExpect(t, fe, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		send(&pgproto3.Close{ObjectType: 'S', Name: "s1"}, &pgproto3.Sync{})
		limExpect(t, fe, &pgproto3.CloseComplete{}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		send(&pgproto3.Parse{Name: "again", Query: "select 'again'"}, &pgproto3.Sync{})
		limExpect(t, fe, &pgproto3.ParseComplete{}, &pgproto3.ReadyForQuery{TxStatus: 'I'})

		if _, err := holder.Exec(ctx, "rollback"); err != nil {
			t.Fatal(err)
		}
		send(&pgproto3.Bind{PreparedStatement: "again"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		limExpect(t, fe, &pgproto3.BindComplete{}, &pgproto3.DataRow{Values: [][]byte{[]byte("again")}},
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		send(&pgproto3.Bind{PreparedStatement: "over"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		if er := limError(t, fe); er.Code != "26000" {
			t.Fatalf("bind the refused statement: %s %s, want 26000", er.Code, er.Message)
		}
		limExpect(t, fe, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})

	// In a pipelined batch, the refused Parse skips the rest of the batch
	// up to its Sync: the insert behind it never runs.
	t.Run("batch skipped", func(t *testing.T) {
		nc := rawDial(t, p)
		fe := rawStartup(t, nc, tenant)
		send := limSender(t, fe)
		for i := 1; i <= limit; i++ {
			send(&pgproto3.Parse{Name: fmt.Sprintf("b%d", i), Query: "select 1"}, &pgproto3.Sync{})
			limExpect(t, fe, &pgproto3.ParseComplete{}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		}
		send(&pgproto3.Parse{Name: "b_over", Query: "select 2"},
			&pgproto3.Parse{Query: "insert into never values (1)"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Sync{})
		limWantLimit(t, "pipelined Parse over the cap", limError(t, fe), "max-client-statements")
		limExpect(t, fe, &pgproto3.ReadyForQuery{TxStatus: 'I'})
		var n int
		if err := direct(t).QueryRow(ctx, "select count(*) from "+tenant+".never").Scan(&n); err != nil || n != 0 {
			t.Fatalf("the insert behind the refused Parse ran: %d rows, %v", n, err)
		}
		// The client goes on, and its statements are there.
		send(&pgproto3.Bind{PreparedStatement: "b1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		limExpect(t, fe, &pgproto3.BindComplete{}, &pgproto3.DataRow{Values: [][]byte{[]byte("1")}},
			&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	})
}

// limSender returns a function that sends messages on fe in one write.
func limSender(t *testing.T, fe *pgproto3.Frontend) func(...pgproto3.FrontendMessage) {
	return func(msgs ...pgproto3.FrontendMessage) {
		t.Helper()
		for _, m := range msgs {
			fe.Send(m)
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// limError reads the next message, which must be an ErrorResponse.
func limError(t *testing.T, fe *pgproto3.Frontend) *pgconn.PgError {
	t.Helper()
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	er, ok := msg.(*pgproto3.ErrorResponse)
	if !ok {
		t.Fatalf("got %#v, want an ErrorResponse", msg)
	}
	return pgconn.ErrorResponseToPgError(er)
}

// limExpect reads the messages want, in order, and nothing else.
func limExpect(t *testing.T, fe *pgproto3.Frontend, want ...pgproto3.BackendMessage) {
	t.Helper()
	for _, w := range want {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("want %T: %v", w, err)
		}
		if er, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("want %T, got error %s %s", w, er.Code, er.Message)
		}
		if fmt.Sprintf("%#v", msg) != fmt.Sprintf("%#v", w) {
			t.Fatalf("got %#v, want %#v", msg, w)
		}
	}
}

// TestLimitsStatementBytes: a gigabyte of Parse texts cannot grow pgtenant.
// With --max-client-statement-bytes at 4 MiB, 64 Parses of 16 MiB are each
// refused with 53400 (and the client goes on), and rounds of three
// statements of 1 MiB, prepared and closed, are taken, the fourth of each
// refused: pgtenant's resident memory stays bounded throughout.
func TestLimitsStatementBytes(t *testing.T) {
	const tenant = "lim_stmt_bytes"
	const boundKiB = 200 * 1024
	createTenant(t, tenant)
	// Few statements per backend: the server's memory for 1 MiB statements
	// is not what this test measures.
	c := startChildProxy(t, 0, "--max-client-statement-bytes", fmt.Sprint(4<<20), "--max-prepared-statements", "10")
	c.queryOver(t, tenant, "")
	base := c.rssKiB(t)
	ctx := prpCtx(t, 5*time.Minute)
	conn, err := pgx.Connect(ctx, c.DSN(tenant))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	pgc := conn.PgConn()

	big := strings.Repeat("x", 16<<20)
	for i := range 64 {
		pe := limPrepareErr(ctx, t, pgc, fmt.Sprintf("big%d", i), fmt.Sprintf("select %d, '%s'", i, big))
		limWantLimit(t, fmt.Sprintf("16 MiB statement %d", i+1), pe, "max-client-statement-bytes")
		if rss := c.rssKiB(t); rss > boundKiB {
			t.Fatalf("after %d refused 16 MiB Parses: VmRSS %d KiB (from %d), bound %d KiB", i+1, rss, base, boundKiB)
		}
	}
	afterRefused := c.rssKiB(t)

	mib := strings.Repeat("y", 1<<20)
	const rounds = 40
	for round := range rounds {
		for j := range 3 {
			name := fmt.Sprintf("m%d", j)
			if pe := limPrepareErr(ctx, t, pgc, name, fmt.Sprintf("select %d, %d, '%s'", round, j, mib)); pe != nil {
				t.Fatalf("round %d, statement %d of 1 MiB: %s %s", round, j+1, pe.Code, pe.Message)
			}
		}
		limWantLimit(t, fmt.Sprintf("round %d, fourth 1 MiB statement", round),
			limPrepareErr(ctx, t, pgc, "m3", fmt.Sprintf("select %d, 3, '%s'", round, mib)), "max-client-statement-bytes")
		if rows, err := prpExecPrepared(ctx, pgc, "m1"); err != nil || rows[0][0] != fmt.Sprint(round) {
			t.Fatalf("round %d: execute m1: %v", round, err)
		}
		for j := range 3 {
			if err := pgc.Deallocate(ctx, fmt.Sprintf("m%d", j)); err != nil {
				t.Fatal(err)
			}
		}
		if rss := c.rssKiB(t); rss > boundKiB {
			t.Fatalf("after round %d of 1 MiB statements: VmRSS %d KiB (from %d), bound %d KiB", round, rss, base, boundKiB)
		}
	}
	t.Logf("VmRSS: %d KiB at start, %d KiB after 64 refused 16 MiB Parses, %d KiB after %d statements of 1 MiB prepared and closed",
		base, afterRefused, c.rssKiB(t), 3*rounds)
	c.queryOver(t, tenant, "")
}
