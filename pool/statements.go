package pool

import (
	"strconv"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// DefaultMaxStatements bounds the named prepared statements pgtenant keeps
// on one backend connection when the pool's user does not say otherwise.
const DefaultMaxStatements = 200

// Statements are the named prepared statements a backend connection holds,
// by a key the holder chooses (the proxy uses tenant schema, query text and
// parameter types, so two tenants never share one). Names are generated
// here, unique per connection, and never chosen by a client.
//
// The set is bounded: adding to a full set evicts the least recently used
// statement, and the holder must then Close it on the server (Add reports
// which). Like everything on a Conn, it is used by one holder at a time.
type Statements struct {
	lru     *simplelru.LRU[string, stmtEntry]
	next    uint64
	evicted []string
	// closeLater are server statements no key names any more, to be
	// closed by whoever next sends on the connection.
	closeLater []string
}

// StatementPrefix begins the name of every statement Statements names on a
// server. The proxy refuses clients' SQL that names one (PREPARE, EXECUTE,
// DEALLOCATE), so that no client can run or replace a statement prepared for
// another.
const StatementPrefix = "pgt_"

func newStatements(max int) *Statements {
	if max < 1 {
		max = DefaultMaxStatements
	}
	st := &Statements{}
	st.lru, _ = simplelru.NewLRU[string, stmtEntry](max, func(_ string, e stmtEntry) {
		st.evicted = append(st.evicted, e.name)
	})
	return st
}

// stmtEntry is a statement's server-side name and the tag it was prepared
// with.
type stmtEntry struct {
	name string
	tag  uint64
}

// Lookup returns the server-side name of the statement with key and the tag
// it was added with, marking it recently used.
func (st *Statements) Lookup(key string) (name string, tag uint64, ok bool) {
	e, ok := st.lru.Get(key)
	return e.name, e.tag, ok
}

// Add names a new statement for key, replacing any it had, and returns the
// names of statements evicted to make room; the caller closes those on the
// server before the connection changes hands. The returned slice is only
// valid until the next call. tag is the holder's to interpret (the proxy
// keeps the statement generation of the tenant it was prepared for, so
// statements made stale by DDL are prepared again).
func (st *Statements) Add(key string, tag uint64) (name string, evicted []string) {
	st.next++
	name = StatementPrefix + strconv.FormatUint(st.next, 10)
	st.evicted = st.evicted[:0]
	if old, ok := st.lru.Peek(key); ok {
		// The key's statement is replaced: the server's copy must be
		// closed like an evicted one.
		st.evicted = append(st.evicted, old.name)
	}
	st.lru.Add(key, stmtEntry{name: name, tag: tag})
	return name, st.evicted
}

// Remove forgets key (its Parse failed, or it was closed on the server).
func (st *Statements) Remove(key string) {
	st.evicted = st.evicted[:0]
	st.lru.Remove(key)
	st.evicted = st.evicted[:0]
}

// Clear forgets everything, after the server dropped all prepared
// statements (DISCARD ALL, DEALLOCATE ALL).
func (st *Statements) Clear() {
	st.lru.Purge()
	st.evicted = st.evicted[:0]
	st.closeLater = st.closeLater[:0]
}

// Promote moves the statement under key from to key to, replacing what to
// had; the replaced statement's name is queued for closing (TakeCloses).
// It reports whether from was there.
func (st *Statements) Promote(from, to string) bool {
	e, ok := st.lru.Peek(from)
	if !ok {
		return false
	}
	st.lru.Remove(from)
	if old, had := st.lru.Peek(to); had && old.name != e.name {
		st.closeLater = append(st.closeLater, old.name)
	}
	st.lru.Add(to, e)
	st.evicted = st.evicted[:0] // Remove and Add report no evictions here
	return true
}

// TakeCloses returns the server statements queued for closing and forgets
// them; the caller closes them on the server.
func (st *Statements) TakeCloses() []string {
	if len(st.closeLater) == 0 {
		return nil
	}
	out := st.closeLater
	st.closeLater = nil
	return out
}

// Len is how many statements the connection holds.
func (st *Statements) Len() int { return st.lru.Len() }
