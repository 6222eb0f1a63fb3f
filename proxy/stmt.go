package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Named prepared statements in transaction pooling.
//
// A client's statement names mean nothing to the backends: each client
// statement is remembered here (its Parse, minus the name) under a key of
// tenant schema, query text and parameter types (hashed), and each backend keeps its
// own statements by that key under names pgtenant generates
// (pool.Statements). When a client's Bind or Describe lands on a backend
// that lacks the statement, pgtenant first sends the Parse it remembered. A
// client's own Parse always prepares afresh (parseNamedLocked). Close
// forgets the client's statement and leaves the backend's, which other
// clients of the same tenant may share; backends evict by LRU. When the
// server reports a statement stale (DDL changed what it reads), every
// backend prepares the tenant's statements again (staleStatementLocked).
//
// Because the key starts with the tenant's schema, two tenants that prepare
// the same text under the same name get two server statements: neither can
// ever run a plan made for the other's search_path.

// clientStmt is a named statement as a client prepared it.
type clientStmt struct {
	// name is the client's name for it.
	name string
	// key names the backend statement: schema, query text, parameter types.
	key string
	// parse is the Parse body after the statement name (query text,
	// parameter count, parameter type OIDs), to prepare it on any backend.
	parse []byte
	// effects is what running it means for the session (state.go).
	effects stmtEffects
	// answered: pgtenant answered the client's Parse itself, without a
	// backend; it is prepared on one at first use.
	answered bool
	// seq is when the client prepared it (Server.stmtSeq): a backend's copy
	// made before that is made again for this client (ensureStatementLocked).
	seq uint64
	// ownKey is the cache key of the copy the client's own Parse made, on
	// the backend it was sent to ("" when pgtenant answered the Parse).
	ownKey string
	// size is what it costs in memory (stmtCost), counted in
	// tracker.stmtBytes while the client keeps it.
	size int
}

// stmtEffects are the session changes a statement makes each time it runs:
// fixed ones, and set_config values that come as bind parameters.
type stmtEffects struct {
	changes []change
	params  []paramChange
	// tag replaces the CommandComplete tag of each execution (a statement
	// pgtenant stands in for, see deallocateAllStandIn).
	tag string
}

func (e *stmtEffects) empty() bool { return len(e.changes) == 0 && len(e.params) == 0 }

// unknownStmtName is what a reference to a statement the client never
// prepared is sent as: a name pgtenant never gives a statement (its own
// names have no '/'), so the server answers 26000 as it would have to the
// client, and never binds another client's statement by accident.
func unknownStmtName(name string) string {
	if max := 63 - len(unknownStmtPrefix); len(name) > max {
		// Cut on a character boundary: a split UTF-8 sequence would make
		// the server answer 22021 instead of 26000.
		cut := max
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut--
		}
		name = name[:cut]
	}
	return unknownStmtPrefix + name
}

const unknownStmtPrefix = "pgtenant/none/"

// ensureStatementLocked makes sure the attached backend holds cs, queueing a
// Parse (and Closes of statements the cache evicts) into s.out when it does
// not, and returns the backend's name for it and the cache key it is under.
// The client's own copy (made by its Parse on this backend) comes first;
// then the tenant's shared copy, unless it was prepared before the client
// prepared cs (see "Statements and DDL"), in which case the shared copy is
// prepared again.
func (s *session) ensureStatementLocked(cs *clientStmt) (name, key string) {
	if cs.ownKey != "" {
		if name, _, ok := s.link.be.Statements.Lookup(cs.ownKey); ok {
			return name, cs.ownKey
		}
	}
	if name, seq, ok := s.link.be.Statements.Lookup(cs.key); ok && seq >= cs.seq {
		return name, cs.key
	}
	return s.prepareLocked(cs, cs.key, true), cs.key
}

// prepareLocked names cs on the attached backend under key and queues its
// Parse (after Closes of the statements it replaces or the cache evicts).
// own says whether the ParseComplete is pgtenant's (re-preparing) or the
// client's.
func (s *session) prepareLocked(cs *clientStmt, key string, own bool) string {
	name, evicted := s.link.be.Statements.Add(key, s.srv.stmtSeq.Add(1))
	for _, old := range evicted {
		s.out = appendClose(s.out, 'S', old)
		s.expectLocked(entry{kind: replyClose, own: true})
	}
	s.out = appendParse(s.out, name, cs.parse)
	s.expectLocked(entry{kind: replyParse, own: own, key: key, clientName: cs.name, stmt: cs})
	return name
}

// addClientStmt records a client's named statement, prepared at seq
// (Server.stmtSeq).
func (t *tracker) addClientStmt(name string, rest []byte, effects stmtEffects, answered bool, seq uint64) *clientStmt {
	cs := &clientStmt{name: name, key: statementKey(t.tenant.Schema, rest), parse: rest, effects: effects, answered: answered,
		seq: seq, size: t.stmtCost(name, rest)}
	if t.stmts == nil {
		t.stmts = map[string]*clientStmt{}
	}
	t.stmts[name] = cs
	t.stmtBytes += cs.size
	return cs
}

// dropClientStmt forgets the client's statement name, if it has one.
func (t *tracker) dropClientStmt(name string) {
	if cs, ok := t.stmts[name]; ok {
		t.stmtBytes -= cs.size
		delete(t.stmts, name)
	}
}

// dropClientStmts forgets all the client's statements.
func (t *tracker) dropClientStmts() {
	clear(t.stmts)
	t.stmtBytes = 0
}

// Limits on what a client keeps. pgtenant holds every named statement a
// client prepares until the client closes it (it must be able to prepare it
// again on whatever backend serves the client next), so without a cap a
// client could grow pgtenant by a gigabyte of Parse texts. The caps are
// per client: --max-client-statements on their number and
// --max-client-statement-bytes on the memory they take (stmtCost). A Parse
// of one more statement over either is refused as PostgreSQL refuses a
// Parse (ERROR 53400, and the rest of the batch is skipped to its Sync);
// closing statements, by Close or DEALLOCATE, makes room again. The
// client's unnamed statement is one at most, and bounded by
// --max-message-size.

// stmtOverhead is what a client statement costs besides its bytes counted
// in stmtCost: the clientStmt itself (its slice and string headers, its
// effects) and its map entry.
const stmtOverhead = 192

// stmtCost is the memory, in bytes, a client statement name with Parse body
// rest (after the name) holds in pgtenant: the Parse message it was read
// into (rest is a slice of it, which keeps it whole: the name, its NUL and
// rest's capacity), the name again as the map key, the cache key (schema
// and hash, see statementKey) and the client's own copy's key (ownKey, a
// few bytes longer), and the fixed overhead. Effects are derived from the
// text and small beside it.
func (t *tracker) stmtCost(name string, rest []byte) int {
	key := len(t.tenant.Schema) + 1 + statementHashLen
	return 2*len(name) + 1 + cap(rest) + 2*key + 24 + stmtOverhead
}

// stmtLimit says why the client may not keep one more named statement,
// name with Parse body rest, or returns nil when it may.
func (t *tracker) stmtLimit(name string, rest []byte) *pgError {
	if t.maxStmts > 0 && len(t.stmts) >= t.maxStmts {
		return &pgError{Severity: "ERROR", Code: codeConfigurationLimit,
			Message: fmt.Sprintf("pgtenant: too many prepared statements: this connection keeps %d (max-client-statements %d)",
				len(t.stmts), t.maxStmts),
			Hint: "Close (DEALLOCATE) prepared statements the application no longer uses, or raise --max-client-statements."}
	}
	if cost := t.stmtCost(name, rest); t.maxStmtBytes > 0 && t.stmtBytes+cost > t.maxStmtBytes {
		return &pgError{Severity: "ERROR", Code: codeConfigurationLimit,
			Message: fmt.Sprintf("pgtenant: prepared statements take too much memory: this connection's take %d bytes, this one %d (max-client-statement-bytes %d)",
				t.stmtBytes, cost, t.maxStmtBytes),
			Hint: "Close (DEALLOCATE) prepared statements the application no longer uses, or raise --max-client-statement-bytes."}
	}
	return nil
}

// refuseParseLocked answers a client's Parse of a named statement with e
// (a limit, stmtLimit) as PostgreSQL answers a Parse that fails: the server
// is sent a Parse that fails in its parser, under a name pgtenant never
// defines, so it skips the rest of the client's batch to its Sync as after
// any failed Parse, and the backend goroutine tells the client e in place
// of the server's syntax error (entry.refuse). Nothing is recorded for
// the client.
func (s *session) refuseParseLocked(m *clientMsg, e *pgError) {
	s.stats().refused(e.Code)
	s.out = appendParse(s.out, unknownStmtName(m.name), failingParse)
	s.expectLocked(entry{kind: replyParse, refuse: e})
}

// failingParse is a Parse body (after the name) that every server refuses
// in its raw parser, with 42601, whatever its state.
var failingParse = []byte(")\x00\x00\x00")

// parseNamedLocked maps a client's Parse of a named statement.
//
// An explicit Parse is always prepared afresh on the server, as the
// client's own copy (under a key of its own, ownKey), even when the backend
// holds a statement of the same tenant, text and types: that one may be
// stale (its plan broken by DDL since), and a driver that re-prepares after
// such an error must get what PostgreSQL would give it, a new statement.
// It replaces the tenant's shared copy only once the server confirms it
// (promoteLocked): until then, a Bind of another statement sent meanwhile
// must find that statement as it was, as it would directly (the Parse may
// yet be skipped after an error).
func (s *session) parseNamedLocked(name string, rest []byte, effects stmtEffects) {
	if old, ok := s.tr.stmts[name]; ok {
		// PostgreSQL refuses to redefine a named statement (42P05). Let
		// the server say so: Parse the backend's existing name again.
		backendName, _ := s.ensureStatementLocked(old)
		s.out = appendParse(s.out, backendName, rest)
		s.expectLocked(entry{kind: replyParse})
		s.tr.noteErrorName(backendName, name)
		return
	}
	cs := s.tr.addClientStmt(name, rest, effects, false, s.srv.stmtSeq.Add(1))
	cs.ownKey = cs.key + "\x00" + strconv.FormatUint(cs.seq, 10)
	s.prepareLocked(cs, cs.ownKey, false)
}

// promoteLocked: the server confirmed the client's own Parse of cs (its
// ParseComplete arrived), so that copy becomes the tenant's shared one on
// this backend, and the copy it replaces is closed with the next message
// sent. Bind of other statements sent before the confirmation went to the
// copy they had, as they would have directly.
func (s *session) promoteLocked(cs *clientStmt) {
	if s.link.be.Statements.Promote(cs.ownKey, cs.key) {
		cs.ownKey = ""
	}
}

// backendStmtNameLocked returns what a client's reference to statement name
// is sent as, preparing the statement on the backend first if needed, and
// the statement's key ("" when it is none of pgtenant's).
func (s *session) backendStmtNameLocked(name string) (string, string) {
	if name == "" {
		return unknownStmtName(""), "" // see accountLocked 'B'
	}
	cs, ok := s.tr.stmts[name]
	if !ok {
		unknown := unknownStmtName(name)
		if len(unknown) != len(unknownStmtPrefix)+len(name) {
			// Cut to fit: the server's 26000 must still name the
			// client's statement whole.
			s.tr.noteErrorName(unknown, name)
		}
		return unknown, ""
	}
	return s.ensureStatementLocked(cs)
}

// vanishedStatementLocked: the server says a statement of pgtenant's does
// not exist (26000), though this backend's cache has it (something dropped
// it behind pgtenant's back, such as a DEALLOCATE inside a function). The
// cache forgets it, so the next use prepares it again.
func (s *session) vanishedStatementLocked(key string) {
	if s.link.be != nil {
		s.link.be.Statements.Remove(key)
	}
}

// statementKey is schema, then a hash of query text and parameter types:
// the key names a statement for every backend's cache (pool.Statements),
// which keeps it after the client closes its statement, so it must not hold
// the text (that would put up to --max-prepared-statements texts per
// backend beyond the clients' caps). SHA-256 makes two different texts
// under one key as unlikely as a collision of it; the schema (which cannot
// hold a NUL) comes whole, so tenants never share a key.
func statementKey(schema string, rest []byte) string {
	sum := sha256.Sum256(rest)
	b := make([]byte, 0, len(schema)+1+statementHashLen)
	b = append(b, schema...)
	b = append(b, 0)
	b = append(b, sum[:]...)
	return string(b)
}

const statementHashLen = sha256.Size

// splitName splits a NUL-terminated name off the front of b.
func splitName(b []byte) (name string, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

func appendHeader(dst []byte, typ byte, bodyLen int) []byte {
	dst = append(dst, typ)
	return binary.BigEndian.AppendUint32(dst, uint32(4+bodyLen))
}

func appendParse(dst []byte, name string, rest []byte) []byte {
	dst = appendHeader(dst, 'P', len(name)+1+len(rest))
	dst = append(dst, name...)
	dst = append(dst, 0)
	return append(dst, rest...)
}

func appendDescribe(dst []byte, kind byte, name string) []byte {
	dst = appendHeader(dst, 'D', 1+len(name)+1)
	dst = append(dst, kind)
	dst = append(dst, name...)
	return append(dst, 0)
}

func appendClose(dst []byte, kind byte, name string) []byte {
	dst = appendHeader(dst, 'C', 1+len(name)+1)
	dst = append(dst, kind)
	dst = append(dst, name...)
	return append(dst, 0)
}

// noteErrorName remembers which client name a backend name stands for, for
// the error the server is about to report with it.
func (t *tracker) noteErrorName(backendName, clientName string) {
	if t.errNames == nil || len(t.errNames) > 64 {
		t.errNames = map[string]string{}
	}
	t.errNames[backendName] = clientName
}

// clientNames rewrites statement names in a server error message into the
// names the client used, so it reads as PostgreSQL would have put it to the
// client: "prepared statement "pgtenant/none/s1" does not exist" becomes
// "prepared statement "s1" does not exist".
func (t *tracker) clientNames(msg string) string {
	if !strings.Contains(msg, `"pgt`) {
		return msg
	}
	msg = strings.ReplaceAll(msg, `prepared statement "`+unknownStmtPrefix+`" does not exist`, "unnamed prepared statement does not exist")
	// One pass over the message with every pair, longest first, so a
	// replacement is never replaced again and map order does not matter;
	// the bare prefix of unknown names goes last, as at one position the
	// first pair that matches wins.
	var pairs []string
	names := make([]string, 0, len(t.errNames))
	for backendName := range t.errNames {
		names = append(names, backendName)
	}
	sort.Slice(names, func(i, j int) bool {
		return len(names[i]) > len(names[j]) || (len(names[i]) == len(names[j]) && names[i] < names[j])
	})
	for _, backendName := range names {
		pairs = append(pairs, `"`+backendName+`"`, `"`+t.errNames[backendName]+`"`)
	}
	pairs = append(pairs, `"`+unknownStmtPrefix, `"`)
	return strings.NewReplacer(pairs...).Replace(msg)
}
