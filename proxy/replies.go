package proxy

import "fmt"

// The reply model: what every message sent to a backend will be answered
// with, in sending order, whoever sent it (the client, or pgtenant itself:
// the pin, a statement re-prepared on a backend that lacks it, a Close of an
// evicted statement, the rollback of a vanished client).
//
// Every message sent that the server answers gets an entry; the backend
// goroutine matches each reply against the oldest entry, which says whose
// reply it is and when that entry is complete:
//
//	Parse          ParseComplete
//	Bind           BindComplete
//	Describe S     ParameterDescription, then RowDescription or NoData
//	Describe P     RowDescription or NoData
//	Execute        DataRow*, then CommandComplete, EmptyQueryResponse or
//	               PortalSuspended; or a COPY (below)
//	Close          CloseComplete
//	Sync           ReadyForQuery
//	Query, FunctionCall  anything, up to and including ReadyForQuery
//
// NoticeResponse, NotificationResponse and ParameterStatus may come at any
// time and belong to the oldest entry (or to nobody when none is open).
//
// Two server behaviours make the entries of later messages go unanswered,
// and the model follows both:
//   - After an error in an extended-protocol message the server skips every
//     message up to the next Sync (Query and FunctionCall included): the
//     entries up to that Sync are dropped, and when the client has not sent
//     that Sync yet, the model remembers that the server is skipping, so what
//     the client sends meanwhile is not expected to be answered either.
//   - In COPY FROM STDIN the server reads CopyData, CopyDone and CopyFail,
//     and ignores Sync and Flush: when a COPY starts (CopyInResponse), the
//     Syncs sent before the client ended it are dropped. The client's
//     CopyDone/CopyFail is kept as a marker entry, without a reply, to know
//     which Syncs those are; a marker the server never needed (the COPY had
//     already failed, or none started) is dropped when it reaches the front.
//
// A reply that fits no entry is a protocol mismatch: the caller destroys
// the backend rather than guess whose reply it is, so a reply can never
// reach another client.
//
// The model does no I/O and takes no locks; the session calls it under its
// mutex.

// replyKind is what kind of message an entry stands for.
type replyKind uint8

const (
	replyParse replyKind = iota + 1
	replyBind
	replyDescribeStmt
	replyDescribePortal
	replyExecute
	replyClose
	replySync
	// replyQuery: a Query or FunctionCall, answered up to ReadyForQuery.
	replyQuery
	// replyCopyEnd: the client's CopyDone or CopyFail, a marker with no
	// reply of its own.
	replyCopyEnd
)

func (k replyKind) String() string {
	switch k {
	case replyParse:
		return "Parse"
	case replyBind:
		return "Bind"
	case replyDescribeStmt:
		return "Describe statement"
	case replyDescribePortal:
		return "Describe portal"
	case replyExecute:
		return "Execute"
	case replyClose:
		return "Close"
	case replySync:
		return "Sync"
	case replyQuery:
		return "Query"
	case replyCopyEnd:
		return "CopyDone"
	}
	return "none"
}

// extended says whether an error in this message makes the server skip to
// the next Sync.
func (k replyKind) extended() bool {
	switch k {
	case replyParse, replyBind, replyDescribeStmt, replyDescribePortal, replyExecute, replyClose:
		return true
	}
	return false
}

// entry is one message sent that the server owes a reply.
type entry struct {
	kind replyKind
	// own: pgtenant's own message; its replies never reach the client,
	// except an error of a Parse pgtenant sent on the client's behalf (see
	// the relay).
	own bool
	// paramDesc: a Describe of a statement got its ParameterDescription.
	paramDesc bool
	// key is the backend statement a Parse prepares (dropped from the
	// backend's cache if the Parse fails or is skipped), or the one a Bind
	// or Describe uses (dropped if the server finds it stale).
	key string
	// clientName and stmt: the client statement a Parse defines, forgotten
	// if the Parse fails or is skipped (a failed Parse defines nothing);
	// for a Bind or Describe, the client's name of the statement it uses.
	clientName string
	stmt       *clientStmt
	// refuse: pgtenant refused the client's Parse (refuseParseLocked) and
	// sent one that fails; the client hears refuse instead of its error.
	refuse *pgError
	// changes are the session settings an Execute or Query changes; they
	// count once it completes without error (state.go).
	changes []change
	// tag, when set, replaces the CommandComplete tag the server sends for
	// this Query (a statement pgtenant answers in its own way).
	tag string
	// soft: pgtenant's own follow-up to a client's statement (restoring
	// the client's defaults after a RESET); its failure means the client's
	// transaction failed first, not that the backend is in doubt, and the
	// ParameterStatus it causes is the client's to see.
	soft bool
	// restoreInline: pgtenant inserted its restore statement into this
	// Query; that statement's result set is swallowed.
	restoreInline bool
	// pin: a message of the pin (pin.go); an error in it means the pin
	// failed. pinEnd: the pin's last message, whose completion confirms
	// the pin.
	pin, pinEnd bool
}

// replyModel is the queue of entries and the server's skip and copy modes.
type replyModel struct {
	items []entry
	head  int
	// skipping: the server is discarding messages until the next Sync,
	// and the client has not sent it yet.
	skipping bool
	// copyIn: the server is in COPY FROM STDIN and the client has not sent
	// its CopyDone/CopyFail yet.
	copyIn bool
	// clientWait counts the client's Sync and Query entries: the
	// ReadyForQuery replies the client is waiting for. own counts
	// pgtenant's entries.
	clientWait, own int
}

func (m *replyModel) len() int { return len(m.items) - m.head }

// front returns the oldest entry, or nil.
func (m *replyModel) front() *entry {
	if m.head == len(m.items) {
		return nil
	}
	return &m.items[m.head]
}

// sent records a message written to the backend. It returns false when the
// server will not answer it (it is skipping to Sync, or reading COPY data);
// the caller then treats the message as skipped (see skipped). Flush and
// CopyData have no entry and are not passed here.
func (m *replyModel) sent(e entry) bool {
	switch e.kind {
	case replyCopyEnd:
		if m.copyIn {
			m.copyIn = false // the server leaves COPY on it
			return false
		}
		if m.len() == 0 {
			// No COPY is under way or can start: the server ignores it.
			return false
		}
	case replySync:
		if m.copyIn {
			return false // ignored in COPY FROM STDIN
		}
		m.skipping = false
	default:
		if m.skipping {
			return false
		}
	}
	m.push(e)
	return true
}

func (m *replyModel) push(e entry) {
	m.items = append(m.items, e)
	m.count(e, 1)
}

func (m *replyModel) count(e entry, d int) {
	switch {
	case e.own:
		m.own += d
	case e.kind == replySync || e.kind == replyQuery:
		m.clientWait += d
	}
}

func (m *replyModel) pop() entry {
	e := m.items[m.head]
	m.items[m.head] = entry{}
	m.head++
	m.count(e, -1)
	m.compact()
	return e
}

// compact reuses the backing array; a client that pipelines without ever
// draining would otherwise grow it without bound.
func (m *replyModel) compact() {
	switch {
	case m.head == len(m.items):
		m.items, m.head = m.items[:0], 0
	case m.head >= 64 && m.head*2 >= len(m.items):
		n := copy(m.items, m.items[m.head:])
		clear(m.items[n:])
		m.items, m.head = m.items[:n], 0
	}
}

// dropMarkers pops CopyDone markers that reached the front: no COPY took
// them, so the server ignored them.
func (m *replyModel) dropMarkers() {
	for f := m.front(); f != nil && f.kind == replyCopyEnd; f = m.front() {
		m.pop()
	}
}

// replyVerdict is what one reply means.
type replyVerdict struct {
	// e is the entry the reply belongs to (a copy); e.kind is 0 for an
	// asynchronous message while nothing is owed.
	e entry
	// done: the reply completed e, which has left the queue.
	done bool
	// failed: the reply is an ErrorResponse that ended e (extended
	// protocol); the server now skips to Sync, and the entries it will not
	// answer were handed to the skip callback.
	failed bool
}

// reply accounts for one reply of type typ. skip is called for each entry
// the server will not answer because of an error (in sending order). An
// error means the reply fits no entry: the backend cannot be trusted.
func (m *replyModel) reply(typ byte, skip func(entry)) (replyVerdict, error) {
	f := m.front()
	switch typ {
	case 'N', 'A', 'S':
		if f == nil {
			return replyVerdict{}, nil
		}
		return replyVerdict{e: *f}, nil
	}
	if f == nil {
		return replyVerdict{}, fmt.Errorf("server sent message type %q with no reply owed", typ)
	}
	v := replyVerdict{e: *f}
	ok := false
	switch typ {
	case 'E':
		m.copyIn = false // an error ends a COPY
		if !f.kind.extended() {
			// In a Query the server goes on to ReadyForQuery; at a Sync
			// (the implicit transaction failed to commit) likewise.
			return v, nil
		}
		v.e = m.pop()
		v.done, v.failed = true, true
		m.skipToSync(skip)
		return v, nil
	case 'Z':
		ok = f.kind == replySync || f.kind == replyQuery
		if ok {
			return m.complete(), nil
		}
	case '1':
		ok = f.kind == replyParse
	case '2':
		ok = f.kind == replyBind
	case '3':
		ok = f.kind == replyClose
	case 't':
		if f.kind == replyDescribeStmt && !f.paramDesc {
			f.paramDesc = true
			return v, nil
		}
	case 'T', 'n':
		switch {
		case f.kind == replyDescribeStmt && f.paramDesc, f.kind == replyDescribePortal:
			ok = true
		case f.kind == replyQuery && typ == 'T':
			return v, nil
		}
	case 'C', 'I':
		switch f.kind {
		case replyExecute:
			ok = true
		case replyQuery:
			return v, nil
		}
	case 's':
		ok = f.kind == replyExecute
	case 'D', 'H', 'd', 'c':
		// Rows, and COPY TO STDOUT (its CopyOutResponse, data and done).
		if f.kind == replyExecute || f.kind == replyQuery {
			return v, nil
		}
	case 'G':
		if f.kind == replyExecute || f.kind == replyQuery {
			m.copyStarted()
			return v, nil
		}
	case 'V':
		if f.kind == replyQuery {
			return v, nil
		}
	}
	if !ok {
		return replyVerdict{}, fmt.Errorf("server sent message type %q where a reply to %v was owed", typ, f.kind)
	}
	return m.complete(), nil
}

// complete pops the front entry, which the last reply completed.
func (m *replyModel) complete() replyVerdict {
	v := replyVerdict{e: m.pop(), done: true}
	m.dropMarkers()
	return v
}

// skipToSync drops the entries up to the next Sync, which the server will
// not answer; with no Sync sent yet, it remembers that the server skips.
func (m *replyModel) skipToSync(skip func(entry)) {
	for f := m.front(); f != nil; f = m.front() {
		if f.kind == replySync {
			return
		}
		e := m.pop()
		if skip != nil {
			skip(e)
		}
	}
	m.skipping = true
}

// copyStarted: the server sent CopyInResponse for the front entry. The
// Syncs sent after it and before the client's CopyDone/CopyFail reach a
// server in COPY mode, which ignores them; the marker of that CopyDone is
// used up. With no CopyDone sent yet, the server is in COPY mode until it
// comes.
func (m *replyModel) copyStarted() {
	kept := m.items[:m.head+1]
	i := m.head + 1
	ended := false
	for ; i < len(m.items); i++ {
		e := m.items[i]
		if e.kind == replyCopyEnd {
			ended = true
			i++
			break
		}
		if e.kind == replySync {
			m.count(e, -1)
			continue
		}
		kept = append(kept, e)
	}
	kept = append(kept, m.items[i:]...)
	clear(m.items[len(kept):])
	m.items = kept
	m.copyIn = !ended
}

// reset forgets everything: the backend is gone.
func (m *replyModel) reset() {
	clear(m.items)
	*m = replyModel{items: m.items[:0]}
}
