package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

// Issue 9 items 1, 2 and 4, with pgx, through pgtenant on a pool of one
// backend (so every reply that went astray would reach the next client)
// and directly, with the same outcome required.

func rmCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rmTargets connects a pgx client of tenant through pgtenant and directly.
func rmTargets(t *testing.T, p *Proxy, tenant string, mode pgx.QueryExecMode) map[string]*pgx.Conn {
	return map[string]*pgx.Conn{
		"pgtenant": p.Connect(t, tenant, mode),
		"direct":   rstTargets(t, p)[1].connect(t, tenant, mode, nil),
	}
}

// Item 1: a CopyFrom the server fails midway, then a query on the same
// connection, while another client waits for the only backend. Each client
// gets its own answer; nothing is left for the next holder.
func TestReplyModelCopyFailedThenQuery(t *testing.T) {
	t.Parallel()
	const tenant, other = "rm_copy", "rm_copy_other"
	createTenant(t, tenant, "CREATE TABLE rm_rows (id int PRIMARY KEY, v text NOT NULL)")
	createTenant(t, other, "CREATE TABLE rm_secret (v text)", "INSERT INTO rm_secret VALUES ('other-secret')")
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := rmCtx(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		got := map[string]string{}
		for name, conn := range rmTargets(t, p, tenant, mode) {
			var out []string
			for round := 0; round < 5; round++ {
				// Row 300 breaks the NOT NULL constraint: the server fails
				// the COPY while the client is still sending rows.
				n := 0
				src := pgx.CopyFromFunc(func() ([]any, error) {
					n++
					if n > 600 {
						return nil, nil
					}
					if n == 300 {
						return []any{n, nil}, nil
					}
					return []any{n, strings.Repeat("x", 200)}, nil
				})
				_, err := conn.CopyFrom(ctx, pgx.Identifier{"rm_rows"}, []string{"id", "v"}, src)
				out = append(out, "copy "+sqlState(err))
				var secret string
				err = conn.QueryRow(ctx, "select 'mine-' || $1::text", mode, fmt.Sprint(round)).Scan(&secret)
				out = append(out, fmt.Sprintf("query %q %s", secret, sqlState(err)))
				if name == "pgtenant" {
					// The next holder of the backend gets its own rows.
					oc := p.Connect(t, other, pgx.QueryExecModeSimpleProtocol)
					var v string
					if err := oc.QueryRow(ctx, "select v from rm_secret").Scan(&v); err != nil || v != "other-secret" {
						t.Fatalf("%v round %d: the next client got %q, %v", mode, round, v, err)
					}
					oc.Close(ctx)
				}
			}
			got[name] = strings.Join(out, "; ")
		}
		if got["pgtenant"] != got["direct"] {
			t.Errorf("%v:\n pgtenant %s\n direct   %s", mode, got["pgtenant"], got["direct"])
		}
	}
}

// Item 2: a batch that prepares and describes two statements whose
// parameters differ, on a backend that already holds both (another client
// of the tenant prepared them): each statement gets its own description.
func TestReplyModelDescribesInOneBatch(t *testing.T) {
	t.Parallel()
	const tenant = "rm_describe"
	createTenant(t, tenant)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := rmCtx(t)
	queries := []string{"select $1::int4 + 1 as a", "select $1::text || 'b' as b", "select $1::int8 * 2 as c"}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec} {
		for round := 0; round < 3; round++ {
			got := map[string]string{}
			for name, conn := range rmTargets(t, p, tenant, mode) {
				b := &pgx.Batch{}
				b.Queue(queries[0], 41)
				b.Queue(queries[1], "a")
				b.Queue(queries[2], int64(21))
				br := conn.SendBatch(ctx, b)
				var a int32
				var s string
				var c int64
				e1 := br.QueryRow().Scan(&a)
				e2 := br.QueryRow().Scan(&s)
				e3 := br.QueryRow().Scan(&c)
				e4 := br.Close()
				got[name] = fmt.Sprint(a, s, c, e1, e2, e3, e4)
			}
			if got["pgtenant"] != got["direct"] || got["direct"] != "42ab42 <nil> <nil> <nil> <nil>" {
				t.Errorf("%v round %d:\n pgtenant %s\n direct   %s", mode, round, got["pgtenant"], got["direct"])
			}
		}
	}
}

// Item 4: after an error, the client sends more (and flushes) before its
// Sync. The server skips those messages; pgtenant must expect no reply for
// them, whether they were sent before or after the error reached it.
func TestReplyModelMessagesAfterErrorBeforeSync(t *testing.T) {
	t.Parallel()
	const tenant = "rm_afterr"
	createTenant(t, tenant)
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })
	ctx := rmCtx(t)
	dsns := map[string]string{
		"pgtenant": p.DSN(tenant),
		"direct":   backendDSN() + " options='-c search_path=" + tenant + ",public'",
	}
	got := map[string]string{}
	for name, dsn := range dsns {
		pc, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		hj, err := pc.Hijack()
		if err != nil {
			t.Fatal(err)
		}
		defer hj.Conn.Close()
		fe := hj.Frontend
		_ = hj.Conn.SetDeadline(time.Now().Add(30 * time.Second))
		// readUntil reads replies up to one of the given types.
		readUntil := func(stop ...byte) string {
			var b strings.Builder
			for {
				msg, err := fe.Receive()
				if err != nil {
					return b.String() + " receive error: " + err.Error()
				}
				typ := rmType(msg)
				b.WriteByte(typ)
				for _, s := range stop {
					if typ == s {
						return b.String()
					}
				}
			}
		}
		var out []string
		for round := 0; round < 3; round++ {
			fe.SendParse(&pgproto3.Parse{Query: "select 1/0"})
			fe.SendBind(&pgproto3.Bind{})
			fe.SendDescribe(&pgproto3.Describe{ObjectType: 'P'})
			fe.SendExecute(&pgproto3.Execute{})
			fe.Send(&pgproto3.Flush{})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			out = append(out, readUntil('E'))
			// Sent after the error reached pgtenant: skipped by the server.
			fe.SendParse(&pgproto3.Parse{Query: "select 2"})
			fe.SendBind(&pgproto3.Bind{})
			fe.SendExecute(&pgproto3.Execute{})
			fe.Send(&pgproto3.Flush{})
			fe.SendQuery(&pgproto3.Query{String: "select 3"})
			fe.SendSync(&pgproto3.Sync{})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			out = append(out, readUntil('Z'))
			fe.SendQuery(&pgproto3.Query{String: "select 7"})
			if err := fe.Flush(); err != nil {
				t.Fatal(err)
			}
			out = append(out, readUntil('Z'))
		}
		got[name] = strings.Join(out, " ")
	}
	if got["pgtenant"] != got["direct"] {
		t.Errorf("\n pgtenant %s\n direct   %s", got["pgtenant"], got["direct"])
	}
}

// rmType is a backend message's type byte.
func rmType(msg pgproto3.BackendMessage) byte {
	b, err := msg.Encode(nil)
	if err != nil || len(b) == 0 {
		return '?'
	}
	return b[0]
}
