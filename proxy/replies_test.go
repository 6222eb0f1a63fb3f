package proxy

import (
	"strings"
	"testing"
)

// A script step of the reply model: a message sent ("send Parse"), or a
// reply received ("recv 1") with what it must mean.
type modelStep struct {
	send replyKind // when set: a message sent
	own  bool
	// queued is what sent must return (true unless the server ignores it).
	queued bool
	recv   byte // when set: a reply received
	// whose and done: the kind of the entry it belongs to, and whether it
	// completes it; failed: an error that ended it.
	whose  replyKind
	done   bool
	failed bool
	// mismatch: the reply fits nothing.
	mismatch bool
}

func send(k replyKind) modelStep    { return modelStep{send: k, queued: true} }
func ignored(k replyKind) modelStep { return modelStep{send: k} }
func recv(typ byte, whose replyKind, done bool) modelStep {
	return modelStep{recv: typ, whose: whose, done: done}
}
func recvErr(whose replyKind) modelStep {
	return modelStep{recv: 'E', whose: whose, done: true, failed: true}
}

func runModel(t *testing.T, steps []modelStep) *replyModel {
	t.Helper()
	var m replyModel
	var skipped []string
	for i, st := range steps {
		if st.send != 0 {
			if got := m.sent(entry{kind: st.send, own: st.own}); got != st.queued {
				t.Fatalf("step %d: sent(%v) = %v, want %v", i, st.send, got, st.queued)
			}
			continue
		}
		v, err := m.reply(st.recv, func(e entry) { skipped = append(skipped, e.kind.String()) })
		if st.mismatch {
			if err == nil {
				t.Fatalf("step %d: reply %q accepted as %+v, want a mismatch", i, st.recv, v)
			}
			return &m
		}
		if err != nil {
			t.Fatalf("step %d: reply %q: %v", i, st.recv, err)
		}
		if v.e.kind != st.whose || v.done != st.done || v.failed != st.failed {
			t.Fatalf("step %d: reply %q belongs to %v (done %v failed %v), want %v (done %v failed %v); skipped %v",
				i, st.recv, v.e.kind, v.done, v.failed, st.whose, st.done, st.failed, skipped)
		}
	}
	return &m
}

func TestReplyModelScripts(t *testing.T) {
	tests := []struct {
		name  string
		steps []modelStep
	}{
		{"extended batch", []modelStep{
			send(replyParse), send(replyBind), send(replyDescribePortal), send(replyExecute), send(replySync),
			recv('1', replyParse, true), recv('2', replyBind, true), recv('T', replyDescribePortal, true),
			recv('D', replyExecute, false), recv('D', replyExecute, false), recv('C', replyExecute, true),
			recv('Z', replySync, true),
		}},
		// Issue 9 item 2: the client's own Describe replies are told
		// apart from those of other Describes in the same batch.
		{"describes of two statements in one batch", []modelStep{
			send(replyParse), send(replyDescribeStmt), send(replyParse), send(replyDescribeStmt), send(replySync),
			recv('1', replyParse, true), recv('t', replyDescribeStmt, false), recv('T', replyDescribeStmt, true),
			recv('1', replyParse, true), recv('t', replyDescribeStmt, false), recv('n', replyDescribeStmt, true),
			recv('Z', replySync, true),
		}},
		{"portal suspended and notices", []modelStep{
			send(replyBind), send(replyExecute), send(replyExecute), send(replySync),
			recv('2', replyBind, true), recv('N', replyExecute, false), recv('D', replyExecute, false),
			recv('s', replyExecute, true), recv('D', replyExecute, false), recv('C', replyExecute, true),
			recv('S', replySync, false), recv('Z', replySync, true),
		}},
		{"simple query with rows, error and copy out", []modelStep{
			send(replyQuery),
			recv('T', replyQuery, false), recv('D', replyQuery, false), recv('C', replyQuery, false),
			recv('E', replyQuery, false), recv('H', replyQuery, false), recv('d', replyQuery, false),
			recv('c', replyQuery, false), recv('C', replyQuery, false), recv('I', replyQuery, false),
			recv('Z', replyQuery, true),
		}},
		// Issue 9 item 4: after an error, what the client sends before its
		// Sync is skipped by the server, and expected by nobody.
		{"messages sent after an error, before Sync", []modelStep{
			send(replyBind), send(replyExecute),
			recvErr(replyBind),
			ignored(replyBind), ignored(replyExecute), ignored(replyQuery),
			send(replySync),
			recv('Z', replySync, true),
		}},
		{"error skips to the Sync already sent, not past it", []modelStep{
			send(replyParse), send(replyBind), send(replyExecute), send(replySync), send(replyBind), send(replySync),
			recvErr(replyParse),
			recv('Z', replySync, true),
			recv('2', replyBind, true),
			recv('Z', replySync, true),
		}},
		// Issue 9 item 1: a COPY the server failed, with the client's
		// CopyDone sent afterwards: no reply is owed for it, and nothing
		// of pgtenant's is sent in its place.
		{"simple COPY failed by the server, CopyDone after", []modelStep{
			send(replyQuery),
			recv('G', replyQuery, false), recv('E', replyQuery, false), recv('Z', replyQuery, true),
			ignored(replyCopyEnd),
			send(replyQuery),
			recv('C', replyQuery, false), recv('Z', replyQuery, true),
		}},
		{"simple COPY, data and CopyDone sent before CopyInResponse", []modelStep{
			send(replyQuery), send(replyCopyEnd),
			recv('G', replyQuery, false), recv('C', replyQuery, false), recv('Z', replyQuery, true),
		}},
		{"simple COPY failed by the server, CopyDone sent before the error", []modelStep{
			send(replyQuery), send(replyCopyEnd), send(replyQuery),
			recv('G', replyQuery, false), recv('E', replyQuery, false), recv('Z', replyQuery, true),
			recv('C', replyQuery, false), recv('Z', replyQuery, true),
		}},
		// libpq: Execute, Sync, then data, CopyDone, Sync. The first Sync
		// reaches a server in COPY mode, which ignores it.
		{"extended COPY as libpq sends it", []modelStep{
			send(replyBind), send(replyExecute), send(replySync),
			recv('2', replyBind, true), recv('G', replyExecute, false),
			ignored(replyCopyEnd), send(replySync),
			recv('C', replyExecute, true), recv('Z', replySync, true),
		}},
		{"extended COPY with everything pipelined", []modelStep{
			send(replyBind), send(replyExecute), send(replySync), send(replyCopyEnd), send(replySync),
			recv('2', replyBind, true), recv('G', replyExecute, false),
			recv('C', replyExecute, true), recv('Z', replySync, true),
		}},
		{"extended COPY failed by the server", []modelStep{
			send(replyBind), send(replyExecute), send(replySync),
			recv('2', replyBind, true), recv('G', replyExecute, false),
			recvErr(replyExecute),
			ignored(replyCopyEnd), send(replySync),
			recv('Z', replySync, true),
		}},
		{"extended COPY that fails to start keeps its Sync", []modelStep{
			send(replyBind), send(replyExecute), send(replySync),
			recv('2', replyBind, true), recvErr(replyExecute),
			recv('Z', replySync, true),
		}},
		{"CopyDone marker of no COPY is dropped at the front", []modelStep{
			send(replyExecute), send(replyCopyEnd), send(replySync),
			recv('C', replyExecute, true), recv('Z', replySync, true),
		}},
		{"own pin query ahead of the client's", []modelStep{
			{send: replyQuery, own: true, queued: true}, send(replyQuery),
			{recv: 'C', whose: replyQuery}, {recv: 'Z', whose: replyQuery, done: true},
			recv('T', replyQuery, false), recv('Z', replyQuery, true),
		}},
		{"a ReadyForQuery nobody asked for", []modelStep{
			send(replyExecute),
			{recv: 'Z', mismatch: true},
		}},
		{"a reply with nothing owed", []modelStep{
			{recv: 'C', mismatch: true},
		}},
		{"a BindComplete for a Parse", []modelStep{
			send(replyParse),
			{recv: '2', mismatch: true},
		}},
		{"asynchronous messages with nothing owed", []modelStep{
			{recv: 'N'}, {recv: 'A'}, {recv: 'S'},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := runModel(t, tt.steps)
			if !strings.HasPrefix(tt.name, "a ") && (m.len() != 0 || m.skipping || m.copyIn || m.clientWait != 0 || m.own != 0) {
				t.Fatalf("left: len %d skipping %v copyIn %v clientWait %d own %d", m.len(), m.skipping, m.copyIn, m.clientWait, m.own)
			}
		})
	}
}

// The skip callback sees every entry the server will not answer, so a
// Parse among them is forgotten.
func TestReplyModelSkipReportsEntries(t *testing.T) {
	var m replyModel
	for _, k := range []replyKind{replyBind, replyParse, replyDescribeStmt, replyClose, replySync} {
		m.sent(entry{kind: k})
	}
	var skipped []replyKind
	v, err := m.reply('E', func(e entry) { skipped = append(skipped, e.kind) })
	if err != nil || v.e.kind != replyBind || !v.failed {
		t.Fatalf("%+v, %v", v, err)
	}
	if len(skipped) != 3 || skipped[0] != replyParse || skipped[2] != replyClose {
		t.Fatalf("skipped %v", skipped)
	}
}

// A client that pipelines without draining does not grow the queue without
// bound once replies come.
func TestReplyModelBounded(t *testing.T) {
	var m replyModel
	for i := 0; i < 10000; i++ {
		m.sent(entry{kind: replySync})
		m.sent(entry{kind: replySync})
		if _, err := m.reply('Z', nil); err != nil {
			t.Fatal(err)
		}
	}
	if m.len() != 10000 || cap(m.items) > 4*10000 {
		t.Fatalf("len %d cap %d", m.len(), cap(m.items))
	}
}
