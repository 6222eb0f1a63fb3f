package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// The relay against scripted fake backends: each backend the pool dials is
// one end of a net.Pipe, served by a script that reads frontend messages
// and answers as the test says, and records everything it received.

// fakeServer answers one frontend message; it may write replies to be.
type fakeServer func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) error

// fakeBackends dials fake backends and keeps what each received. Each
// answers pgtenant's pin itself, like a server (fakePin).
type fakeBackends struct {
	t      *testing.T
	script fakeServer
	mu     sync.Mutex
	got    [][]string // per backend, the frontend messages received
	conns  []net.Conn
	ended  []chan struct{} // per backend, closed when its server side is done
	// failPin: the pin statement that fails on the next backend dialed;
	// "" none.
	failPin string
}

// fakePin is one fake backend's handling of the pin: Parse, Bind and
// Execute of a pin statement are answered as a server would, and after
// an error the backend skips every message up to Sync, as PostgreSQL does.
type fakePin struct {
	stmt     string // the pin statement parsed, awaiting Bind and Execute
	skipping bool
}

// isPinStatement says whether a Parse text is one of the pin's.
func isPinStatement(q string) bool {
	for _, st := range append(append([]string{"COMMIT", "DEALLOCATE ALL"}, resetStatements...), cleanupStatements...) {
		if q == st {
			return true
		}
	}
	return strings.HasPrefix(q, "SET search_path TO ") || strings.HasPrefix(q, `SET "`)
}

// fakeHandled is what fakePin did with a message.
type fakeHandled uint8

const (
	notPin      fakeHandled = iota // the script's to answer
	pinMsg                         // a message of the pin, answered
	skippedMsg                     // skipped after an error, unanswered
	skipEndSync                    // the Sync that ends a skip, answered
)

// handle answers msg if it is the pin's, or skips it after an error.
func (p *fakePin) handle(be *pgproto3.Backend, msg pgproto3.FrontendMessage, fail string) (fakeHandled, error) {
	if _, ok := msg.(*pgproto3.Sync); ok && p.skipping {
		p.skipping = false
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return skipEndSync, be.Flush()
	}
	if p.skipping {
		return skippedMsg, nil
	}
	switch m := msg.(type) {
	case *pgproto3.Flush:
		return pinMsg, be.Flush()
	case *pgproto3.Parse:
		if m.Name == "" && isPinStatement(m.Query) {
			p.stmt = m.Query
			be.Send(&pgproto3.ParseComplete{})
			return pinMsg, nil
		}
	case *pgproto3.Bind:
		if p.stmt != "" {
			be.Send(&pgproto3.BindComplete{})
			return pinMsg, nil
		}
	case *pgproto3.Execute:
		if p.stmt != "" {
			st := p.stmt
			p.stmt = ""
			if st == fail {
				be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "55P03", Message: "canceling statement due to lock timeout"})
				p.skipping = true
				return pinMsg, be.Flush()
			}
			tag := st
			if i := strings.IndexByte(tag, ' '); i > 0 {
				tag = tag[:i]
			}
			if tag == "SELECT" {
				be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("x"), []byte("x"), []byte("")}})
				tag = "SELECT 1"
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
			return pinMsg, be.Flush()
		}
	}
	return notPin, nil
}

func (f *fakeBackends) Dial(ctx context.Context) (*pool.Conn, error) {
	proxySide, serverSide := net.Pipe()
	f.mu.Lock()
	idx := len(f.got)
	f.got = append(f.got, nil)
	f.conns = append(f.conns, serverSide)
	ended := make(chan struct{})
	f.ended = append(f.ended, ended)
	fail := f.failPin
	f.failPin = "" // the first backend dialed only
	f.mu.Unlock()
	go func() {
		defer close(ended)
		defer serverSide.Close()
		be := pgproto3.NewBackend(serverSide, serverSide)
		var pin fakePin
		for {
			msg, err := be.Receive()
			if err != nil {
				return
			}
			h, err := pin.handle(be, msg, fail)
			if err != nil {
				return
			}
			d := describeFrontend(msg)
			switch h {
			case pinMsg:
				d = ""
				if p, ok := msg.(*pgproto3.Parse); ok {
					d = "pin " + p.Query
				}
			case skippedMsg:
				d = "skipped " + d
			}
			if d != "" {
				f.mu.Lock()
				f.got[idx] = append(f.got[idx], d)
				f.mu.Unlock()
			}
			if h != notPin {
				continue
			}
			if err := f.script(be, msg); err != nil {
				return
			}
		}
	}()
	return &pool.Conn{NetConn: proxySide, Reader: bufio.NewReader(proxySide), Params: map[string]string{}}, nil
}

// received is what backend i got, as short strings.
func (f *fakeBackends) received(i int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i >= len(f.got) {
		return nil
	}
	return append([]string(nil), f.got[i]...)
}

func describeFrontend(msg pgproto3.FrontendMessage) string {
	switch m := msg.(type) {
	case *pgproto3.Query:
		return "Q " + m.String
	case *pgproto3.Parse:
		return "P " + m.Query
	case *pgproto3.Sync:
		return "S"
	case *pgproto3.Bind:
		return "B"
	case *pgproto3.Execute:
		return "E"
	case *pgproto3.Describe:
		return "D"
	case *pgproto3.Close:
		return "C"
	}
	return "?"
}

// relayRig is a session in transaction pooling relaying between a test
// client (fe) and fake backends.
type relayRig struct {
	s    *session
	fe   *pgproto3.Frontend
	cnc  net.Conn
	fake *fakeBackends
	done chan error
}

func newRelayRig(t *testing.T, script fakeServer, mods ...func(*config.Config)) *relayRig {
	t.Helper()
	cfg := config.Default()
	cfg.PoolSize = 1
	for _, m := range mods {
		m(&cfg)
	}
	fake := &fakeBackends{t: t, script: script}
	p, err := pool.New(pool.Config{Size: 1, WaitTimeout: 2 * time.Second, ConnectTimeout: time.Second}, fake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	srv := &Server{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil)), pool: p}
	proxySide, clientSide := net.Pipe()
	s := newSession(srv, proxySide)
	s.tr.tenant = router.Tenant{Name: "acme", Schema: "acme", Active: true}
	s.tr.pin = buildPin(pinOwner("acme", "u"), "acme", nil)
	rig := &relayRig{s: s, fe: pgproto3.NewFrontend(clientSide, clientSide), cnc: clientSide, fake: fake, done: make(chan error, 1)}
	go func() {
		err := s.relayClient(context.Background())
		s.endRelay(err)
		rig.done <- err
	}()
	t.Cleanup(func() {
		clientSide.Close()
		for _, c := range fake.conns {
			c.Close()
		}
	})
	return rig
}

func (r *relayRig) send(t *testing.T, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		r.fe.Send(m)
	}
	if err := r.fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

// recv reads replies until ReadyForQuery or an ErrorResponse with severity
// FATAL, or the connection ends; it returns them as short strings.
func (r *relayRig) recv(t *testing.T) []string {
	t.Helper()
	_ = r.cnc.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []string
	for {
		msg, err := r.fe.Receive()
		if err != nil {
			return append(out, "closed")
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			return append(out, "Z"+string(m.TxStatus))
		case *pgproto3.ErrorResponse:
			out = append(out, m.Severity+" "+m.Code)
			if m.Severity == "FATAL" {
				return out
			}
		case *pgproto3.CommandComplete:
			out = append(out, "C "+string(m.CommandTag))
		case *pgproto3.DataRow:
			out = append(out, "D "+string(m.Values[0]))
		default:
			out = append(out, "?")
		}
	}
}

// A reply the model does not expect destroys the backend; it never
// reaches the client as an answer, and the client is told the truth.
func TestRelayStrayReplyDestroysBackend(t *testing.T) {
	rig := newRelayRig(t, func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) error {
		if q, ok := msg.(*pgproto3.Query); ok {
			if q.String != "select 1" {
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 2")})
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				return be.Flush()
			}
			// A stray ReadyForQuery ahead of the real answer.
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("someone else's")}})
			return be.Flush()
		}
		return nil
	})
	rig.send(t, &pgproto3.Query{String: "select 1"})
	got := rig.recv(t)
	// The first ReadyForQuery answers the Query; the second fits nothing.
	if len(got) != 1 || got[0] != "ZI" {
		t.Fatalf("client got %v", got)
	}
	rig.send(t, &pgproto3.Query{String: "select 2"})
	got = rig.recv(t)
	if len(got) != 2 || got[0] != "C SELECT 2" || got[1] != "ZI" {
		t.Fatalf("after the stray reply the client got %v, want its own answer", got)
	}
	rig.fake.mu.Lock()
	defer rig.fake.mu.Unlock()
	if len(rig.fake.got) != 2 {
		t.Fatalf("%d backends dialed, want 2: the first must not be reused", len(rig.fake.got))
	}
}

// Issue 9 item 12: a panic in the relay (here: a backend Conn without a
// parameter map, written to when the server reports a parameter) ends the
// session with the backend destroyed, and leaves no lock held.
func TestRelayPanicEndsSessionWithoutWedging(t *testing.T) {
	rig := newRelayRig(t, func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) error {
		if _, ok := msg.(*pgproto3.Query); ok {
			be.Send(&pgproto3.ParameterStatus{Name: "application_name", Value: "x"})
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SET")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			return be.Flush()
		}
		return nil
	})
	// Break the next backend: the pool hands out what the dialer made.
	var logs syncBuf
	rig.s.srv.log = slog.New(slog.NewTextHandler(&logs, nil))
	rig.s.srv.pool.Close()
	p, err := pool.New(pool.Config{Size: 1, WaitTimeout: 2 * time.Second, ConnectTimeout: time.Second},
		dialerFunc(func(ctx context.Context) (*pool.Conn, error) {
			c, err := rig.fake.Dial(ctx)
			if c != nil {
				c.Params = nil // a write to it panics
			}
			return c, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	rig.s.srv.pool = p
	rig.send(t, &pgproto3.Query{String: "set application_name = 'x'"})
	got := rig.recv(t)
	if len(got) == 0 || got[len(got)-1] != "FATAL XX000" {
		t.Fatalf("client got %v, want FATAL XX000", got)
	}
	select {
	case <-rig.done:
	case <-time.After(5 * time.Second):
		t.Fatal("session still running after the panic")
	}
	if !rig.s.mu.TryLock() {
		t.Fatal("the session's lock is still held after the panic")
	}
	rig.s.mu.Unlock()
	if rig.s.link.be != nil || rig.s.link.state.serving() {
		t.Fatalf("backend still attached: link %v", rig.s.link.state)
	}
	if !strings.Contains(logs.String(), "backend relay panic") {
		t.Fatalf("no panic logged; the test did not test it: %s", logs.String())
	}
}

// syncBuf is a log sink safe for concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type dialerFunc func(ctx context.Context) (*pool.Conn, error)

func (f dialerFunc) Dial(ctx context.Context) (*pool.Conn, error) { return f(ctx) }

// Issue 9 items 6 and 7: the backend dies inside a transaction while the
// client has already sent its next command. The client is told FATAL (the
// outcome of the command in flight is unknown), and the next command runs
// nowhere: no other backend ever receives it.
func TestRelayLostInTransactionRunsNothingMore(t *testing.T) {
	rig := newRelayRig(t, func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) error {
		q, ok := msg.(*pgproto3.Query)
		if !ok {
			return nil
		}
		switch q.String {
		case "begin":
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("BEGIN")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'T'})
			return be.Flush()
		case "commit":
			// The server dies with the COMMIT in flight.
			return errors.New("killed")
		}
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'T'})
		return be.Flush()
	})
	rig.send(t, &pgproto3.Query{String: "begin"})
	if got := rig.recv(t); len(got) != 2 || got[1] != "ZT" {
		t.Fatalf("begin: %v", got)
	}
	// COMMIT and, right behind it, a statement that must never run.
	rig.send(t, &pgproto3.Query{String: "commit"}, &pgproto3.Query{String: "insert escaped"})
	got := rig.recv(t)
	if len(got) == 0 || got[0] != "FATAL 08007" {
		t.Fatalf("client got %v, want FATAL 08007 (outcome unknown)", got)
	}
	select {
	case <-rig.done:
	case <-time.After(5 * time.Second):
		t.Fatal("session still running")
	}
	rig.fake.mu.Lock()
	defer rig.fake.mu.Unlock()
	for i, r := range rig.fake.got {
		for _, m := range r {
			if m == "Q insert escaped" {
				t.Fatalf("backend %d ran the statement sent after the loss: %v", i, r)
			}
		}
	}
}

// A server FATAL while the client waits for one command outside a
// transaction arrives as an ERROR, and the client carries on on a fresh
// backend.
func TestRelayServerFatalOutsideTransactionIsAnError(t *testing.T) {
	rig := newRelayRig(t, func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) error {
		q, ok := msg.(*pgproto3.Query)
		if !ok {
			return nil
		}
		if q.String == "select pg_sleep(10)" {
			be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"})
			_ = be.Flush()
			return errors.New("terminated")
		}
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return be.Flush()
	})
	rig.send(t, &pgproto3.Query{String: "select pg_sleep(10)"})
	if got := rig.recv(t); len(got) != 2 || got[0] != "ERROR 57P01" || got[1] != "ZI" {
		t.Fatalf("client got %v, want ERROR 57P01 then ReadyForQuery", got)
	}
	rig.send(t, &pgproto3.Query{String: "select 1"})
	if got := rig.recv(t); len(got) != 2 || got[0] != "C SELECT 1" {
		t.Fatalf("after the loss: %v", got)
	}
}

// selectOne answers every Query with one row and ReadyForQuery, and an
// extended-protocol batch likewise.
func selectOne(be *pgproto3.Backend, msg pgproto3.FrontendMessage) error {
	switch msg.(type) {
	case *pgproto3.Query:
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return be.Flush()
	case *pgproto3.Parse:
		be.Send(&pgproto3.ParseComplete{})
	case *pgproto3.Bind:
		be.Send(&pgproto3.BindComplete{})
	case *pgproto3.Execute:
		be.Send(&pgproto3.CommandComplete{CommandTag: []byte("INSERT 0 1")})
	case *pgproto3.Sync:
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return be.Flush()
	}
	return nil
}

// Issue 11 A: the pin travels ahead of the client's first message, and when
// it fails nothing the client sent runs: not on that backend (the server
// skips to Sync), and not later on it either. The client hears one error,
// as if its statement had failed, and carries on with a fresh backend.
func TestRelayPinFailureRunsNothingOfTheClients(t *testing.T) {
	for _, tt := range []struct {
		name string
		send []pgproto3.FrontendMessage
	}{
		{"query", []pgproto3.FrontendMessage{&pgproto3.Query{String: "insert a"}}},
		{"extended", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "insert a"}, &pgproto3.Bind{},
			&pgproto3.Execute{}, &pgproto3.Sync{}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rig := newRelayRig(t, selectOne)
			rig.fake.mu.Lock()
			rig.fake.failPin = "DISCARD TEMP"
			rig.fake.mu.Unlock()
			// The client's statement and, pipelined behind it, the next one.
			rig.send(t, append(tt.send, &pgproto3.Query{String: "insert b"})...)
			got := rig.recv(t)
			if len(got) != 2 || got[0] != "ERROR 08006" || got[1] != "ZI" {
				t.Fatalf("client got %v, want ERROR 08006 then ReadyForQuery", got)
			}
			if got := rig.recv(t); len(got) != 2 || got[0] != "C INSERT 0 1" || got[1] != "ZI" {
				t.Fatalf("the next statement: %v", got)
			}
			// Backend 0 was closed: once its server side is done, it has
			// recorded everything it got.
			rig.fake.mu.Lock()
			ended := rig.fake.ended[0]
			rig.fake.mu.Unlock()
			select {
			case <-ended:
			case <-time.After(5 * time.Second):
				t.Fatal("backend 0 still open after its pin failed")
			}
			first, second := rig.fake.received(0), rig.fake.received(1)
			for _, m := range first {
				if m == "Q insert a" || m == "P insert a" || m == "Q insert b" {
					t.Fatalf("the failed pin's backend ran %q: %v", m, first)
				}
			}
			if !strings.HasPrefix(first[0], "pin ") || !strings.HasPrefix(first[len(first)-1], "skipped ") &&
				first[len(first)-1] != "S" {
				t.Fatalf("backend 0 got %v, want the pin then the client's messages skipped", first)
			}
			if len(second) == 0 || second[len(second)-1] != "Q insert b" || second[0] != "pin DEALLOCATE ALL" {
				t.Fatalf("backend 1 got %v, want a fresh pin then only insert b", second)
			}
			for _, m := range second {
				if m == "Q insert a" || m == "P insert a" {
					t.Fatalf("the failed statement ran later on another backend: %v", second)
				}
			}
		})
	}
}

// The client's messages of one batch behind the pin go out at once (no
// round trip for the pin), and the pin is one transaction that starts with
// the reset and ends before the client's first message.
func TestRelayPinTravelsWithTheFirstMessage(t *testing.T) {
	rig := newRelayRig(t, selectOne)
	rig.send(t, &pgproto3.Query{String: "insert a"})
	if got := rig.recv(t); len(got) != 2 || got[1] != "ZI" {
		t.Fatalf("client got %v", got)
	}
	got := rig.fake.received(0)
	want := []string{"pin DEALLOCATE ALL", "pin BEGIN", "pin SET SESSION AUTHORIZATION DEFAULT", "pin RESET ALL",
		`pin SET search_path TO "acme", public`}
	if len(got) < len(want) || !slicesEqual(got[:len(want)], want) {
		t.Fatalf("backend got %v, want it to start %v", got, want)
	}
	if got[len(got)-2] != "pin COMMIT" || got[len(got)-1] != "Q insert a" {
		t.Fatalf("backend got %v, want the pin to end with COMMIT right before the client's query", got)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
