package proxy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

// The link's life against scripted fake backends: when a backend changes
// hands (the safe point), and what each failure does to it and the client.

// extendedServer answers the extended protocol and Queries like a server
// outside a transaction, except where over (if set) takes the message.
func extendedServer(over func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) (bool, error)) fakeServer {
	return func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) error {
		if over != nil {
			if done, err := over(be, msg); done || err != nil {
				return err
			}
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			status := byte('I')
			switch m.String {
			case "begin", "insert":
				status = 'T'
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte(strings.ToUpper(m.String))})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: status})
		case *pgproto3.Parse:
			be.Send(&pgproto3.ParseComplete{})
		case *pgproto3.Bind:
			be.Send(&pgproto3.BindComplete{})
		case *pgproto3.Execute:
			be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}})
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
		case *pgproto3.Sync:
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Flush:
		default:
			return nil
		}
		return be.Flush()
	}
}

// pins counts the pin queries backend i received: one per attach, with pin
// reuse off.
func (f *fakeBackends) pins(i int) int {
	n := 0
	for _, m := range f.received(i) {
		if m == "pin BEGIN" {
			n++
		}
	}
	return n
}

// waitLink waits until the link is in state want (the backend goroutine
// releases after the client has its ReadyForQuery).
func waitLink(t *testing.T, rig *relayRig, want linkState) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rig.s.mu.Lock()
		got := rig.s.link.state
		rig.s.mu.Unlock()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %v, want %v", got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func extQuery() []pgproto3.FrontendMessage {
	return []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "select 1"}, &pgproto3.Bind{}, &pgproto3.Execute{},
	}
}

// The backend is released only at a ReadyForQuery 'I' with nothing in
// flight: not inside a transaction, not between two pipelined Syncs, not
// while the client has sent messages after its last Sync.
func TestRelaySafePoint(t *testing.T) {
	rig := newRelayRig(t, extendedServer(nil))
	rig.s.srv.cfg.PinReuse = false // every attach sends the pin: attaches are counted

	// A transaction: three ReadyForQuery, two of them 'T'; one attach.
	for _, q := range []string{"begin", "insert", "commit"} {
		rig.send(t, &pgproto3.Query{String: q})
		got := rig.recv(t)
		if len(got) != 2 || got[1] != "Z"+map[string]string{"begin": "T", "insert": "T", "commit": "I"}[q] {
			t.Fatalf("%s: %v", q, got)
		}
	}
	waitLink(t, rig, linkDetached)
	if n := rig.fake.pins(0); n != 1 {
		t.Fatalf("the transaction took %d attaches, want 1: released inside it", n)
	}

	// Two Sync batches pipelined: the first ReadyForQuery 'I' comes with
	// the second Sync still owed. One attach.
	batch := append(extQuery(), &pgproto3.Sync{})
	batch = append(batch, extQuery()...)
	rig.send(t, append(batch, &pgproto3.Sync{})...)
	for i := 0; i < 2; i++ {
		if got := rig.recv(t); len(got) != 5 || got[4] != "ZI" {
			t.Fatalf("batch %d: %v", i, got)
		}
	}
	waitLink(t, rig, linkDetached)
	if n := rig.fake.pins(0); n != 2 {
		t.Fatalf("two pipelined Syncs took %d attaches, want 1", n-1)
	}

	// Messages after the last Sync (open) hold the backend: a Query's
	// ReadyForQuery 'I' arrives while the client has sent a Flush behind
	// it, which owes no reply but opens a batch only a Sync ends.
	rig.send(t, &pgproto3.Query{String: "select"}, &pgproto3.Flush{})
	if got := rig.recv(t); len(got) != 2 || got[1] != "ZI" {
		t.Fatalf("query before the open batch: %v", got)
	}
	rig.send(t, append(extQuery(), &pgproto3.Sync{})...)
	if got := rig.recv(t); len(got) != 5 || got[4] != "ZI" {
		t.Fatalf("open batch: %v", got)
	}
	waitLink(t, rig, linkDetached)
	if n := rig.fake.pins(0); n != 3 {
		t.Fatalf("an open batch took %d attaches, want 1", n-2)
	}
	if st := rig.s.srv.pool.Stats(); st.Dials != 1 || st.Destroys != 0 {
		t.Fatalf("pool %+v: want one backend, reused", st)
	}
}

// Each rule of the safe point on its own: a link that breaks one rule only
// keeps its backend.
func TestSafePointRules(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *session)
		want  bool
	}{
		{"idle", func(s *session) {}, true},
		{"reply owed", func(s *session) { s.link.rm.push(entry{kind: replySync}) }, false},
		{"own reply owed", func(s *session) { s.link.rm.push(entry{kind: replyQuery, own: true}) }, false},
		{"open batch", func(s *session) { s.link.open = true }, false},
		{"COPY FROM STDIN", func(s *session) { s.link.rm.copyIn = true }, false},
		{"skipping to Sync", func(s *session) { s.link.rm.skipping = true }, false},
		{"in transaction", func(s *session) { s.link.status = 'T' }, false},
		{"failed transaction", func(s *session) { s.link.status = 'E' }, false},
		{"pinned", func(s *session) { s.setLinkLocked(linkPinned) }, false},
		{"pinned, client gone", func(s *session) { s.setLinkLocked(linkPinned); s.clientGone = true }, true},
	}
	for _, tt := range tests {
		s := newTestSession(t)
		s.setLinkLocked(linkAttached)
		tt.setup(s)
		if got := s.safePointLocked(); got != tt.want {
			t.Errorf("%s: safe point %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A reply of a kind the oldest entry cannot have (BindComplete for a
// Parse) destroys the backend: the client is told its session is lost,
// and the backend is never handed to anyone.
func TestRelayReplyMismatchDestroysBackend(t *testing.T) {
	rig := newRelayRig(t, extendedServer(func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) (bool, error) {
		if _, ok := msg.(*pgproto3.Parse); ok {
			be.Send(&pgproto3.BindComplete{})
			return true, be.Flush()
		}
		return false, nil
	}))
	rig.send(t, append(extQuery(), &pgproto3.Sync{})...)
	got := rig.recv(t)
	if len(got) == 0 || got[len(got)-1] != "FATAL 08007" {
		t.Fatalf("client got %v, want FATAL 08007", got)
	}
	waitDone(t, rig)
	if st := rig.s.srv.pool.Stats(); st.Destroys != 1 || st.Idle != 0 {
		t.Fatalf("pool %+v: the backend must be destroyed", st)
	}
}

// The backend dies with a Query in flight and no word: the client is told
// the outcome is unknown, and its session ends.
func TestRelayBackendDiesMidQuery(t *testing.T) {
	rig := newRelayRig(t, extendedServer(func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) (bool, error) {
		if q, ok := msg.(*pgproto3.Query); ok && q.String == "select 1" {
			be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("1")}}) // half an answer
			_ = be.Flush()
			return true, errors.New("killed")
		}
		return false, nil
	}))
	rig.send(t, &pgproto3.Query{String: "select 1"})
	got := rig.recv(t)
	if len(got) != 2 || got[0] != "D 1" || got[1] != "FATAL 08007" {
		t.Fatalf("client got %v, want the row, then FATAL 08007", got)
	}
	waitDone(t, rig)
	if st := rig.s.srv.pool.Stats(); st.Destroys != 1 {
		t.Fatalf("pool %+v: the dead backend must be destroyed", st)
	}
}

// The client vanishes inside a transaction: pgtenant rolls it back on the
// backend and returns the backend to the pool, clean.
func TestRelayClientGoneMidTransaction(t *testing.T) {
	rig := newRelayRig(t, extendedServer(nil))
	rig.send(t, &pgproto3.Query{String: "begin"})
	if got := rig.recv(t); len(got) != 2 || got[1] != "ZT" {
		t.Fatalf("begin: %v", got)
	}
	rig.cnc.Close()
	waitDone(t, rig)
	got := rig.fake.received(0)
	if len(got) == 0 || got[len(got)-1] != "Q ROLLBACK" {
		t.Fatalf("backend received %v, want a ROLLBACK last", got)
	}
	if st := rig.s.srv.pool.Stats(); st.Idle != 1 || st.Destroys != 0 {
		t.Fatalf("pool %+v: the rolled-back backend must be back, idle", st)
	}
	if rig.s.link.state != linkDetached {
		t.Fatalf("link %v after the release", rig.s.link.state)
	}
}

// The pin fails on the server (one of its statements reports an error):
// the backend is in a state pgtenant did not mean, so it is destroyed; the
// client's statement, skipped by the server, never ran, and the client
// hears that, not the pin's own error, and carries on.
func TestRelayPinErrorDestroysBackend(t *testing.T) {
	rig := newRelayRig(t, extendedServer(nil))
	rig.fake.mu.Lock()
	rig.fake.failPin = "RESET ALL"
	rig.fake.mu.Unlock()
	rig.send(t, &pgproto3.Query{String: "select 1"})
	got := rig.recv(t)
	if len(got) != 2 || got[0] != "ERROR 08006" || got[1] != "ZI" {
		t.Fatalf("client got %v, want ERROR 08006 and ReadyForQuery", got)
	}
	for _, m := range got {
		if m == "ERROR 55P03" {
			t.Fatalf("the pin's own error reached the client: %v", got)
		}
	}
	waitLink(t, rig, linkDetached)
	if st := rig.s.srv.pool.Stats(); st.Destroys != 1 {
		t.Fatalf("pool %+v: the backend must be destroyed", st)
	}
}

// Moves the diagram does not have are refused (and end the session).
func TestLinkMoves(t *testing.T) {
	s := newTestSession(t)
	for _, bad := range []linkState{linkDraining, linkFailing, linkLost, linkClosing, linkDetached} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("detached → %v allowed", bad)
				}
			}()
			s.setLinkLocked(bad)
		}()
	}
	for _, to := range []linkState{linkAttached, linkPinned, linkClosing, linkFailing, linkLost} {
		s.setLinkLocked(to) // each move of a session that pins and then loses its backend
	}
	if s.link.state != linkLost || s.link.be != nil {
		t.Fatalf("link %v, be %v", s.link.state, s.link.be)
	}
}

func waitDone(t *testing.T, rig *relayRig) {
	t.Helper()
	select {
	case <-rig.done:
	case <-time.After(5 * time.Second):
		t.Fatal("session still running")
	}
}

// A client idle inside a transaction longer than idle-transaction-timeout
// hears FATAL 25P03 and is closed; its transaction is rolled back and the
// backend goes back to the pool, not destroyed. A command that runs longer
// than the timeout, and a client idle outside a transaction, are left alone.
func TestRelayIdleTransactionTimeout(t *testing.T) {
	release := make(chan struct{})
	rig := newRelayRig(t, extendedServer(func(be *pgproto3.Backend, msg pgproto3.FrontendMessage) (bool, error) {
		if q, ok := msg.(*pgproto3.Query); ok && q.String == "slow" {
			<-release // the command runs until the test says
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'T'})
			return true, be.Flush()
		}
		return false, nil
	}), func(c *config.Config) { c.IdleTransactionTimeout = 20 * time.Millisecond })

	// A query outside a transaction: attached while it ran, then released.
	rig.send(t, &pgproto3.Query{String: "select"})
	if got := rig.recv(t); len(got) != 2 || got[1] != "ZI" {
		t.Fatalf("select: %v", got)
	}
	waitLink(t, rig, linkDetached)

	rig.send(t, &pgproto3.Query{String: "begin"})
	if got := rig.recv(t); len(got) != 2 || got[1] != "ZT" {
		t.Fatalf("begin: %v", got)
	}
	rig.send(t, &pgproto3.Query{String: "slow"})
	// The command runs: the client's read deadline passes, several times,
	// while it is owed. Once it is in the reply model, let five timeouts
	// go by (a shorter wait would only make the check weaker, never fail
	// it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		rig.s.mu.Lock()
		owed := rig.s.link.rm.len()
		rig.s.mu.Unlock()
		if owed == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	if got := rig.recv(t); len(got) != 2 || got[1] != "ZT" {
		t.Fatalf("slow command inside the transaction: %v, want it answered", got)
	}
	// Now idle in the transaction: the client is told, and closed.
	if got := rig.recv(t); len(got) != 1 || got[0] != "FATAL 25P03" {
		t.Fatalf("idle in transaction: %v, want FATAL 25P03", got)
	}
	if got := rig.recv(t); len(got) != 1 || got[0] != "closed" {
		t.Fatalf("after FATAL: %v, want the connection closed", got)
	}
	select {
	case err := <-rig.done:
		if !errors.Is(err, errIdleInTransaction) {
			t.Fatalf("relay ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("session did not end")
	}
	got := rig.fake.received(0)
	if last := got[len(got)-1]; last != "Q ROLLBACK" {
		t.Fatalf("backend got %v, want the ROLLBACK last", got)
	}
	if st := rig.s.srv.pool.Stats(); st.Destroys != 0 || st.Idle != 1 {
		t.Fatalf("pool %+v: want the backend back in the pool", st)
	}
}
