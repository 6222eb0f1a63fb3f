package integration

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

// The raw-wire tests speak the protocol byte by byte to pgtenant, to check
// the admission stage and the relay against what real clients never send:
// encryption requests, oversized or old-protocol startup packets, garbage,
// unknown or malformed messages, stray cancel requests and half messages.
// Every read has a deadline: the wrong answer to a bad peer is a hang.

// rawDial opens a TCP connection to pgtenant with a deadline for the
// whole exchange.
func rawDial(t testing.TB, p *Proxy) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return nc
}

// rawWrite writes raw bytes.
func rawWrite(t testing.TB, nc net.Conn, b []byte) {
	t.Helper()
	if _, err := nc.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// rawSend encodes and writes one message.
func rawSend(t testing.TB, nc net.Conn, msg pgproto3.FrontendMessage) {
	t.Helper()
	b, err := msg.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	rawWrite(t, nc, b)
}

// rawStartup sends a StartupMessage for tenant on nc and reads up to
// ReadyForQuery; it returns the frontend to go on with.
func rawStartup(t testing.TB, nc net.Conn, tenant string) *pgproto3.Frontend {
	t.Helper()
	rawSend(t, nc, &pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": "app", "database": tenant},
	})
	fe := pgproto3.NewFrontend(nc, nc)
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("startup as %s: %v", tenant, err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("startup as %s: %s %s", tenant, m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			return fe
		}
	}
}

// rawQueryOne runs a one-value query and returns the value.
func rawQueryOne(t testing.TB, nc net.Conn, fe *pgproto3.Frontend, sql string) string {
	t.Helper()
	rawSend(t, nc, &pgproto3.Query{String: sql})
	var val string
	var rows int
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			rows++
			val = string(m.Values[0])
		case *pgproto3.ErrorResponse:
			t.Fatalf("%s: %s %s", sql, m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			if rows != 1 {
				t.Fatalf("%s: %d rows", sql, rows)
			}
			return val
		}
	}
}

// rawExpectError reads until an ErrorResponse and then the connection's
// end; it returns the error. A clean close without an error is reported as
// nil when allowClose is set, else fails the test.
func rawExpectError(t testing.TB, nc net.Conn, allowClose bool) *pgproto3.ErrorResponse {
	t.Helper()
	fe := pgproto3.NewFrontend(nc, io.Discard)
	var er *pgproto3.ErrorResponse
	for {
		msg, err := fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no error and no close within the deadline (hang); got error %v so far", er)
			}
			if er == nil && !allowClose {
				t.Fatalf("connection ended without an ErrorResponse: %v", err)
			}
			return er
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			if er != nil {
				t.Fatalf("second ErrorResponse %s %s after %s", m.Code, m.Message, er.Code)
			}
			c := *m
			er = &c
		default:
			t.Fatalf("unexpected %T from pgtenant", msg)
		}
	}
}

// rawHealthy checks that pgtenant still serves a normal client of tenant.
func rawHealthy(t testing.TB, p *Proxy, tenant string) {
	t.Helper()
	fltCheckSchema(t, p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol), tenant)
}

func TestRawEncryptionRequestsDeclined(t *testing.T) {
	t.Parallel()
	const tenant = "raw_enc"
	fltTenant(t, tenant)
	p := startProxy(t)

	for _, c := range []struct {
		name string
		req  pgproto3.FrontendMessage
	}{
		{"SSLRequest", &pgproto3.SSLRequest{}},
		{"GSSENCRequest", &pgproto3.GSSEncRequest{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc := rawDial(t, p)
			rawSend(t, nc, c.req)
			var b [1]byte
			if _, err := io.ReadFull(nc, b[:]); err != nil {
				t.Fatalf("answer to %s: %v", c.name, err)
			}
			if b[0] != 'N' {
				t.Fatalf("answer to %s: %q, want 'N'", c.name, b[0])
			}
			fe := rawStartup(t, nc, tenant)
			if got := rawQueryOne(t, nc, fe, "select current_schema()"); got != tenant {
				t.Fatalf("after %s: current_schema %q", c.name, got)
			}
			rawSend(t, nc, &pgproto3.Terminate{})
		})
	}

	// Both requests, one after the other, as libpq does with
	// gssencmode=prefer and sslmode=prefer.
	nc := rawDial(t, p)
	for _, req := range []pgproto3.FrontendMessage{&pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}} {
		rawSend(t, nc, req)
		var b [1]byte
		if _, err := io.ReadFull(nc, b[:]); err != nil || b[0] != 'N' {
			t.Fatalf("answer to %T: %q, %v", req, b[0], err)
		}
	}
	fe := rawStartup(t, nc, tenant)
	if got := rawQueryOne(t, nc, fe, "select 6 * 7"); got != "42" {
		t.Fatalf("after both requests: %q", got)
	}
}

func TestRawBadStartupPackets(t *testing.T) {
	t.Parallel()
	const tenant = "raw_startup"
	fltTenant(t, tenant)
	p := startProxy(t)

	be32 := func(vs ...uint32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.BigEndian.AppendUint32(b, v)
		}
		return b
	}
	v2 := append(be32(296, 2<<16), make([]byte, 288)...)
	copy(v2[8:], "app")

	for _, c := range []struct {
		name string
		data []byte
		code string // "" when a clean close without an error is acceptable
	}{
		{"length 100000", be32(100000, pgproto3.ProtocolVersionNumber), "08P01"},
		{"length 3", be32(3, pgproto3.ProtocolVersionNumber), "08P01"},
		{"negative length", be32(0xfffffff0, pgproto3.ProtocolVersionNumber), "08P01"},
		{"protocol 2.0", v2, "0A000"},
		{"protocol 4.0", append(be32(8+9, 4<<16), "user\x00app\x00\x00"...), "0A000"},
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: pgtenant\r\n\r\n"), ""},
		{"garbage", []byte{0, 0, 0, 12, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4}, ""},
		{"startup without terminator", append(be32(8+8, pgproto3.ProtocolVersionNumber), "user\x00app"...), "08P01"},
		{"SSLRequest with a body", append(be32(12, 80877103), 1, 2, 3, 4), "08P01"},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc := rawDial(t, p)
			rawWrite(t, nc, c.data)
			er := rawExpectError(t, nc, c.code == "")
			if c.code != "" && er.Code != c.code {
				t.Fatalf("got %s %s %q, want %s", er.Severity, er.Code, er.Message, c.code)
			}
			if er != nil && er.Severity != "FATAL" {
				t.Fatalf("severity %q, want FATAL", er.Severity)
			}
		})
	}
	rawHealthy(t, p, tenant)
}

func TestRawBadMessagesAfterStartup(t *testing.T) {
	t.Parallel()
	const tenant = "raw_msgs"
	fltTenant(t, tenant)
	for _, mode := range prmModes {
		t.Run(string(mode), func(t *testing.T) {
			p := startProxy(t, func(c *config.Config) { c.PoolMode = mode; c.PoolSize = 1 })
			for _, c := range []struct {
				name string
				data []byte
				inTx bool
			}{
				{"unknown type", []byte{'z', 0, 0, 0, 4}, false},
				{"backend message type", []byte{'T', 0, 0, 0, 6, 0, 0}, false},
				{"length 3", []byte{'Q', 0, 0, 0, 3}, false},
				{"length 0", []byte{'Q', 0, 0, 0, 0}, false},
				{"negative length", []byte{'Q', 0xff, 0xff, 0xff, 0xff}, false},
				{"unknown type in transaction", []byte{'z', 0, 0, 0, 4}, true},
				{"length 3 in transaction", []byte{'Q', 0, 0, 0, 3}, true},
			} {
				t.Run(c.name, func(t *testing.T) {
					nc := rawDial(t, p)
					fe := rawStartup(t, nc, tenant)
					if got := rawQueryOne(t, nc, fe, "select current_schema()"); got != tenant {
						t.Fatalf("current_schema %q", got)
					}
					if c.inTx {
						if got := rawQueryOne(t, nc, fe, "begin; select txid_current()::text"); got == "" {
							t.Fatal("no transaction id")
						}
					}
					rawWrite(t, nc, c.data)
					// A missing error is reported, but the health check below
					// still runs.
					switch er := rawExpectError(t, nc, true); {
					case er == nil:
						t.Errorf("connection closed without an ErrorResponse, want FATAL 08P01")
					case er.Code != "08P01" || er.Severity != "FATAL":
						t.Errorf("got %s %s %q, want FATAL 08P01", er.Severity, er.Code, er.Message)
					}
					// The single backend is back in the pool, clean.
					rawHealthy(t, p, tenant)
				})
			}
		})
	}
}

func TestRawCancelRequestUnknownKey(t *testing.T) {
	t.Parallel()
	const tenant = "raw_cancel"
	fltTenant(t, tenant)
	p := startProxy(t)

	// A key nobody holds: the connection is closed, nothing is sent.
	nc := rawDial(t, p)
	rawSend(t, nc, &pgproto3.CancelRequest{ProcessID: 12345, SecretKey: []byte{1, 2, 3, 4}})
	b, err := io.ReadAll(nc)
	if err != nil {
		t.Fatalf("after an unknown CancelRequest: %v (want a clean close)", err)
	}
	if len(b) != 0 {
		t.Fatalf("pgtenant answered a CancelRequest with %q", b)
	}

	// A real client's pid with the wrong secret, while its query runs: the
	// query is not cancelled.
	conn := p.Connect(t, tenant, pgx.QueryExecModeSimpleProtocol)
	d := direct(t)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Exec(fltCtx(t), "select pg_sleep(1) /* raw_cancel_wrong */")
		errc <- err
	}()
	fltWaitRunning(t, d, "raw_cancel_wrong")
	secret := append([]byte(nil), conn.PgConn().SecretKey()...)
	secret[0] ^= 0xff
	nc = rawDial(t, p)
	rawSend(t, nc, &pgproto3.CancelRequest{ProcessID: conn.PgConn().PID(), SecretKey: secret})
	if b, err := io.ReadAll(nc); err != nil || len(b) != 0 {
		t.Fatalf("after a wrong-secret CancelRequest: %q, %v", b, err)
	}
	if err := fltResult(t, errc, "query under a wrong-secret cancel"); err != nil {
		t.Fatalf("a CancelRequest with the wrong secret affected the query: %v", err)
	}
	fltCheckSchema(t, conn, tenant)
	rawHealthy(t, p, tenant)
}

func TestRawHalfMessageThenClose(t *testing.T) {
	t.Parallel()
	const tenant, next = "raw_half", "raw_half_next"
	fltTenant(t, tenant)
	fltTenant(t, next)
	// One backend: a half message must not leave it stuck or dirty.
	p := startProxy(t, func(c *config.Config) { c.PoolSize = 1 })

	big := make([]byte, 0, 64*1024)
	big = append(big, 'Q', 0, 1, 0, 0) // a 64 KiB Query...
	big = append(big, "select '"...)
	big = append(big, strings.Repeat("x", 30000)...) // ...cut off at about half

	for _, c := range []struct {
		name string
		data []byte
	}{
		{"header only", []byte{'Q', 0, 0, 0, 100}},
		{"small message cut", append([]byte{'Q', 0, 0, 0, 100}, "select 1"...)},
		{"large message cut", big},
		{"half a header", []byte{'Q', 0, 0}},
		{"parse without sync", func() []byte {
			b, _ := (&pgproto3.Parse{Query: "select pg_sleep(30)"}).Encode(nil)
			b, _ = (&pgproto3.Bind{}).Encode(b)
			b, _ = (&pgproto3.Execute{}).Encode(b)
			return b
		}()},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc := rawDial(t, p)
			rawStartup(t, nc, tenant)
			rawWrite(t, nc, c.data)
			_ = nc.Close()
			// The next client gets the single backend, in its own schema.
			conn := p.Connect(t, next, pgx.QueryExecModeSimpleProtocol)
			fltCheckSchema(t, conn, next)
			var inTx bool
			if err := conn.QueryRow(fltCtx(t), "select now() <> statement_timestamp()").Scan(&inTx); err != nil || inTx {
				t.Fatalf("next client in a leftover transaction: %v, %v", inTx, err)
			}
		})
	}
	d := direct(t)
	eventually(t, 15*time.Second, "no leftover pg_sleep(30) from a half-sent batch", func() bool {
		var n int
		err := d.QueryRow(fltCtx(t), `select count(*) from pg_stat_activity
			where state = 'active' and query = 'select pg_sleep(30)'`).Scan(&n)
		return err == nil && n == 0
	})
}

// A client may send a COPY FROM STDIN's data and CopyDone right behind the
// Query, without waiting for CopyInResponse (pgx's CopyFrom does). The
// backend must still be released when the COPY is over.
func TestRawPipelinedCopy(t *testing.T) {
	t.Parallel()
	const tenant, next = "raw_pcopy", "raw_pcopy_next"
	fltTenant(t, tenant, "create table raw_items (id int, name text)")
	fltTenant(t, next)
	p := startProxy(t, func(c *config.Config) {
		c.PoolSize = 1
		c.QueryWaitTimeout = 3 * time.Second
	})
	for _, c := range []struct {
		name, data, code string
	}{
		{"good data", "1\tone\n2\ttwo\n", ""},
		{"bad data", "1\tone\nzwei\ttwo\n", "22P02"},
	} {
		t.Run(c.name, func(t *testing.T) {
			nc := rawDial(t, p)
			fe := rawStartup(t, nc, tenant)
			var b []byte
			b, _ = (&pgproto3.Query{String: "copy raw_items from stdin"}).Encode(b)
			b, _ = (&pgproto3.CopyData{Data: []byte(c.data)}).Encode(b)
			b, _ = (&pgproto3.CopyDone{}).Encode(b)
			rawWrite(t, nc, b)
			var code, tag string
			for done := false; !done; {
				msg, err := fe.Receive()
				if err != nil {
					t.Fatalf("COPY: %v", err)
				}
				switch m := msg.(type) {
				case *pgproto3.ErrorResponse:
					code = m.Code
				case *pgproto3.CommandComplete:
					tag = string(m.CommandTag)
				case *pgproto3.ReadyForQuery:
					if m.TxStatus != 'I' {
						t.Fatalf("status after COPY %q", m.TxStatus)
					}
					done = true
				}
			}
			if code != c.code || (c.code == "" && tag != "COPY 2") {
				t.Fatalf("COPY: SQLSTATE %q, tag %q; want %q", code, tag, c.code)
			}
			// The COPY is over and the client idle: the single backend is
			// free for another tenant's client.
			other, err := fltConnect(t, p, next, nil)
			if err != nil {
				t.Fatalf("another client after a finished COPY: %v", err)
			}
			fltCheckSchema(t, other, next)
			if got := rawQueryOne(t, nc, fe, "select count(*) from raw_items"); got == "" {
				t.Fatal("no count")
			}
		})
	}
}
