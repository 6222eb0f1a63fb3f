package proxy

// The reply queue. Every message sent to a backend that the server answers
// with a message pgtenant must account for is recorded here, in sending
// order, as an expectation. The backend goroutine pops expectations as the
// replies arrive, which tells it, for each ParseComplete, CloseComplete and
// ReadyForQuery, whether the client or pgtenant asked for it.
//
// Replies to Bind, Describe and Execute are not tracked one by one: they
// are always the client's and always forwarded. Parse and Close are tracked
// because pgtenant injects its own (re-preparing a statement on a backend
// that lacks it, closing one evicted from the backend's cache) in the middle
// of a client's batch; Sync, Query and FunctionCall because their
// ReadyForQuery marks the safe point.
//
// After an error in the extended protocol the server skips messages up to
// the next Sync, so their expectations are dropped unanswered (skipToSync).

// expectKind is what a reply looks like.
type expectKind uint8

const (
	// expectParse: ParseComplete (or an error).
	expectParse expectKind = iota
	// expectParseViaDescribe: the statement was already prepared on the
	// backend, so pgtenant sent Describe instead of Parse; the reply
	// (ParameterDescription, then RowDescription or NoData) is swallowed
	// and the client gets ParseComplete in its place.
	expectParseViaDescribe
	// expectClose: CloseComplete.
	expectClose
	// expectSync: ReadyForQuery answering a Sync.
	expectSync
	// expectQuery: everything up to and including the ReadyForQuery
	// answering a Query or FunctionCall.
	expectQuery
)

// expectation is one reply the backend owes.
type expectation struct {
	kind expectKind
	// own: pgtenant's own message; its reply never reaches the client
	// (for expectParseViaDescribe, the client gets a ParseComplete).
	own bool
	// key is the backend statement an expectParse prepares, dropped from
	// the backend's cache if the Parse fails or is skipped.
	key string
	// clientName and stmt: the client statement an expectParse defines
	// (its own Parse, or pgtenant's preparing it on this backend); it is
	// forgotten if the Parse fails.
	clientName string
	stmt       *clientStmt
	// copyWindow marks a Sync sent after an Execute and before the client
	// ended any COPY: if that Execute starts a COPY FROM STDIN, the server
	// ignores the Sync (it ignores Sync in copy-in mode), so it will never
	// be answered. The value is the Execute's sequence number.
	copyWindow uint64
}

// replyQueue is a FIFO of expectations; it reuses its backing array.
type replyQueue struct {
	items []expectation
	head  int
}

func (q *replyQueue) len() int { return len(q.items) - q.head }

func (q *replyQueue) push(e expectation) { q.items = append(q.items, e) }

// front returns the oldest expectation, or nil.
func (q *replyQueue) front() *expectation {
	if q.head == len(q.items) {
		return nil
	}
	return &q.items[q.head]
}

func (q *replyQueue) pop() expectation {
	e := q.items[q.head]
	q.items[q.head] = expectation{}
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 64 && q.head*2 >= len(q.items):
		// A client that pipelines without ever draining would otherwise
		// grow the array without bound: move the live part to the front.
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return e
}

// reset drops everything.
func (q *replyQueue) reset() {
	clear(q.items)
	q.items, q.head = q.items[:0], 0
}

// removeCopyWindow drops the Syncs the server will ignore because the
// Execute numbered window started a COPY FROM STDIN, and returns them.
func (q *replyQueue) removeCopyWindow(window uint64) (removed []expectation) {
	kept := q.items[q.head:q.head]
	for _, e := range q.items[q.head:] {
		if e.kind == expectSync && e.copyWindow == window && window != 0 {
			removed = append(removed, e)
			continue
		}
		kept = append(kept, e)
	}
	clear(q.items[q.head+len(kept):])
	q.items = q.items[:q.head+len(kept)]
	return removed
}
