package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// dialFunc is a pool.Dialer that hands out unconnected Conns: enough for
// tests that only use a Conn's statement cache.
type dialFunc func(ctx context.Context) (*pool.Conn, error)

func (f dialFunc) Dial(ctx context.Context) (*pool.Conn, error) { return f(ctx) }

// testBackend returns a backend connection with an empty statement cache
// of at most maxStatements (0: the default). pool.Statements has no
// exported constructor, so the Conn comes out of a pool, which gives it one.
func testBackend(t *testing.T, maxStatements int) *pool.Conn {
	t.Helper()
	p, err := pool.New(pool.Config{
		Size:           1,
		WaitTimeout:    time.Second,
		ConnectTimeout: time.Second,
		MaxStatements:  maxStatements,
	}, dialFunc(func(context.Context) (*pool.Conn, error) {
		return &pool.Conn{Params: map[string]string{}}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	be, err := p.Checkout(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if be.Statements == nil {
		t.Fatal("pool gave a Conn without a statement cache")
	}
	return be
}

// parseRest is a Parse body after the statement name, as stmt.go keeps it.
func parseRest(t testing.TB, query string, oids ...uint32) []byte {
	t.Helper()
	msg, err := (&pgproto3.Parse{Query: query, ParameterOIDs: oids}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Header (5 bytes), then the empty name's NUL.
	return msg[6:]
}

// frontendMsgs splits b into messages and decodes each with pgproto3, as
// the server would read them.
func frontendMsgs(t *testing.T, b []byte) []pgproto3.FrontendMessage {
	t.Helper()
	var out []pgproto3.FrontendMessage
	for len(b) > 0 {
		if len(b) < 5 {
			t.Fatalf("%d bytes left, not a message: %q", len(b), b)
		}
		n := int(binary.BigEndian.Uint32(b[1:5]))
		if n < 4 || 1+n > len(b) {
			t.Fatalf("message %q length %d does not fit %d bytes", b[0], n, len(b))
		}
		var m pgproto3.FrontendMessage
		switch b[0] {
		case 'P':
			m = &pgproto3.Parse{}
		case 'D':
			m = &pgproto3.Describe{}
		case 'C':
			m = &pgproto3.Close{}
		case 'B':
			m = &pgproto3.Bind{}
		case 'Q':
			m = &pgproto3.Query{}
		default:
			t.Fatalf("unexpected message type %q", b[0])
		}
		if err := m.Decode(b[5 : 1+n]); err != nil {
			t.Fatalf("message %q does not decode: %v (%q)", b[0], err, b[:1+n])
		}
		if p, ok := m.(*pgproto3.Parse); ok && len(p.ParameterOIDs) == 0 {
			p.ParameterOIDs = nil // compare equal to a literal without types
		}
		out = append(out, m)
		b = b[1+n:]
	}
	return out
}

func TestStatementKey(t *testing.T) {
	base := statementKey("acme", parseRest(t, "SELECT $1", 23))
	tests := []struct {
		name string
		key  string
		same bool
	}{
		{"same schema, text, types", statementKey("acme", parseRest(t, "SELECT $1", 23)), true},
		{"other schema", statementKey("globex", parseRest(t, "SELECT $1", 23)), false},
		{"schema is a prefix", statementKey("acm", parseRest(t, "SELECT $1", 23)), false},
		{"other text", statementKey("acme", parseRest(t, "SELECT $1 ", 23)), false},
		{"other parameter type", statementKey("acme", parseRest(t, "SELECT $1", 25)), false},
		{"no parameter types", statementKey("acme", parseRest(t, "SELECT $1")), false},
		{"an extra parameter type", statementKey("acme", parseRest(t, "SELECT $1", 23, 0)), false},
	}
	for _, tt := range tests {
		if got := tt.key == base; got != tt.same {
			t.Errorf("%s: key equal = %v, want %v", tt.name, got, tt.same)
		}
	}
	// The schema cannot run into the text: "a" + "b..." differs from "ab" + "...".
	if statementKey("a", []byte("bSELECT 1\x00\x00\x00")) == statementKey("ab", []byte("SELECT 1\x00\x00\x00")) {
		t.Error("schema and text are not separated in the key")
	}
}

func TestSplitName(t *testing.T) {
	tests := []struct {
		in, name, rest string
		ok             bool
	}{
		{"s1\x00SELECT 1\x00\x00\x00", "s1", "SELECT 1\x00\x00\x00", true},
		{"\x00rest", "", "rest", true},
		{"name\x00", "name", "", true},
		{"\x00", "", "", true},
		{"a\x00b\x00", "a", "b\x00", true},
		{"no terminator", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		name, rest, ok := splitName([]byte(tt.in))
		if name != tt.name || string(rest) != tt.rest || ok != tt.ok || (!ok && rest != nil) {
			t.Errorf("splitName(%q) = %q, %q, %v; want %q, %q, %v", tt.in, name, rest, ok, tt.name, tt.rest, tt.ok)
		}
	}
}

func TestAppendMessagesDecode(t *testing.T) {
	rest := parseRest(t, "SELECT $1::int, $2", 23, 25)
	var b []byte
	b = append(b, "prefix"...) // appends, never overwrites
	b = appendParse(b, "pgt_1", rest)
	b = appendDescribe(b, 'S', "pgt_1")
	b = appendClose(b, 'S', "pgt_2")
	b = appendDescribe(b, 'P', "")
	b = appendClose(b, 'P', "portal")
	b = appendParse(b, "", parseRest(t, ""))
	if !strings.HasPrefix(string(b), "prefix") {
		t.Fatalf("append clobbered what was there: %q", b)
	}
	got := frontendMsgs(t, b[len("prefix"):])
	want := []pgproto3.FrontendMessage{
		&pgproto3.Parse{Name: "pgt_1", Query: "SELECT $1::int, $2", ParameterOIDs: []uint32{23, 25}},
		&pgproto3.Describe{ObjectType: 'S', Name: "pgt_1"},
		&pgproto3.Close{ObjectType: 'S', Name: "pgt_2"},
		&pgproto3.Describe{ObjectType: 'P', Name: ""},
		&pgproto3.Close{ObjectType: 'P', Name: "portal"},
		&pgproto3.Parse{Name: "", Query: ""},
	}
	if len(got) != len(want) {
		t.Fatalf("decoded %d messages, want %d: %#v", len(got), len(want), got)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("message %d = %#v, want %#v", i, got[i], want[i])
		}
	}
}

func TestUnknownStmtName(t *testing.T) {
	names := []string{
		"s1",
		"",
		"pgt_1",
		"stmtcache_0123456789abcdef0123456789abcdef0123456789abcdef01234567", // pgx's cache names
		strings.Repeat("x", 49),
		strings.Repeat("x", 50),
		strings.Repeat("x", 200),
	}
	for _, name := range names {
		got := unknownStmtName(name)
		if len(got) > 63 {
			t.Errorf("unknownStmtName(%q) is %d bytes, more than the server keeps", name, len(got))
		}
		if !strings.HasPrefix(got, unknownStmtPrefix) {
			t.Errorf("unknownStmtName(%q) = %q lacks the prefix", name, got)
		}
		// pgtenant's own names are pgt_N and have no '/'.
		if strings.HasPrefix(got, "pgt_") || !strings.Contains(got, "/") {
			t.Errorf("unknownStmtName(%q) = %q could be one of pgtenant's names", name, got)
		}
		if len(unknownStmtPrefix)+len(name) <= 63 && got != unknownStmtPrefix+name {
			t.Errorf("unknownStmtName(%q) = %q, want the name kept whole", name, got)
		}
	}
	if unknownStmtName("a") == unknownStmtName("b") {
		t.Error("two short names map to one")
	}
}

// The server checks that a message's strings are valid in the client
// encoding: a name cut inside a multibyte character would be answered with
// 22021 (invalid byte sequence) instead of 26000.
func TestUnknownStmtNameKeepsUTF8Valid(t *testing.T) {
	for pad := 0; pad < 4; pad++ {
		name := strings.Repeat("a", pad) + strings.Repeat("é", 40) // 2 bytes each
		got := unknownStmtName(name)
		if !utf8.ValidString(got) {
			t.Errorf("unknownStmtName(%q) = %q: cut inside a UTF-8 character", name, got)
		}
		if len(got) > 63 {
			t.Errorf("unknownStmtName(%q) is %d bytes", name, len(got))
		}
	}
}

func TestClientNames(t *testing.T) {
	s := &session{}
	s.tr.noteErrorName("pgt_1", "s1")
	s.tr.noteErrorName("pgt_12", "other")
	tests := []struct{ in, want string }{
		{`prepared statement "pgtenant/none/s1" does not exist`, `prepared statement "s1" does not exist`},
		{`prepared statement "pgtenant/none/Weird ""name" does not exist`, `prepared statement "Weird ""name" does not exist`},
		{`prepared statement "pgt_1" already exists`, `prepared statement "s1" already exists`},
		{`prepared statement "pgt_12" already exists`, `prepared statement "other" already exists`},
		{`prepared statement "pgt_123" already exists`, `prepared statement "pgt_123" already exists`},
		{`relation "pgt_1x" does not exist`, `relation "pgt_1x" does not exist`},
		{`pgt_1 without quotes`, `pgt_1 without quotes`},
		{`nothing to do`, `nothing to do`},
		{``, ``},
	}
	for _, tt := range tests {
		if got := s.tr.clientNames(tt.in); got != tt.want {
			t.Errorf("clientNames(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}

	// A session that never noted a name still strips the unknown prefix.
	var fresh session
	if got := fresh.tr.clientNames(`prepared statement "pgtenant/none/x" does not exist`); got != `prepared statement "x" does not exist` {
		t.Errorf("fresh session: %q", got)
	}
}

// noteErrorName keeps the map small.
func TestNoteErrorNameBounded(t *testing.T) {
	s := &session{}
	for i := 0; i < 1000; i++ {
		s.tr.noteErrorName(fmt.Sprintf("pgt_%d", i), fmt.Sprintf("s%d", i))
	}
	if len(s.tr.errNames) > 65 {
		t.Fatalf("errNames holds %d entries", len(s.tr.errNames))
	}
	if got := s.tr.clientNames(`prepared statement "pgt_999" already exists`); got != `prepared statement "s999" already exists` {
		t.Fatalf("latest name lost: %q", got)
	}
}

// A client may name its statements like pgtenant names its own. Rewriting
// must be one substitution per name in the message, not depend on the order
// the map is walked in.
func TestClientNamesDoesNotChain(t *testing.T) {
	for i := 0; i < 50; i++ {
		s := &session{}
		s.tr.noteErrorName("pgt_1", "pgt_2") // the client's statement "pgt_2" is the backend's pgt_1
		s.tr.noteErrorName("pgt_2", "b")
		got := s.tr.clientNames(`prepared statement "pgt_1" already exists`)
		if want := `prepared statement "pgt_2" already exists`; got != want {
			t.Fatalf("clientNames = %q, want %q (a rewritten name was rewritten again)", got, want)
		}
	}
}

func TestEnsureStatementAndParseNamed(t *testing.T) {
	s := newTestSession(t)
	s.link.be = testBackend(t, 3)
	restA := parseRest(t, "SELECT 1")
	restB := parseRest(t, "SELECT 2")
	restC := parseRest(t, "SELECT 3")

	// A new statement: the Parse goes out under a name of pgtenant's, as
	// the client's own copy.
	s.parseNamedLocked("a", restA, stmtEffects{})
	msgs := frontendMsgs(t, s.out)
	if len(msgs) != 1 || !reflect.DeepEqual(msgs[0], &pgproto3.Parse{Name: "pgt_1", Query: "SELECT 1"}) {
		t.Fatalf("first Parse sent as %#v", msgs)
	}
	a := s.tr.stmts["a"]
	if e := s.link.rm.pop(); e.kind != replyParse || e.own || e.clientName != "a" || e.stmt != a || e.key != a.ownKey || a.ownKey == a.key {
		t.Fatalf("entry %+v", e)
	}

	// Another client name for the same text: an explicit Parse always
	// prepares afresh (the backend's copy may be stale), as that
	// statement's own copy, and leaves the first one's alone.
	s.out = nil
	s.parseNamedLocked("a2", restA, stmtEffects{})
	msgs = frontendMsgs(t, s.out)
	if want := []pgproto3.FrontendMessage{&pgproto3.Parse{Name: "pgt_2", Query: "SELECT 1"}}; !reflect.DeepEqual(msgs, want) {
		t.Fatalf("Parse of a known text sent as %#v, want %#v", msgs, want)
	}
	s.link.rm.reset()
	if name, key := s.backendStmtNameLocked("a"); name != "pgt_1" || key != a.ownKey {
		t.Fatalf("statement a is %q (%q) on the backend, want its own pgt_1", name, key)
	}
	if name, _ := s.backendStmtNameLocked("a2"); name != "pgt_2" {
		t.Fatalf("statement a2 is %q on the backend, want pgt_2", name)
	}

	// Redefining a name: the server must say 42P05 about the client's name.
	s.out = nil
	s.parseNamedLocked("a", restB, stmtEffects{})
	msgs = frontendMsgs(t, s.out)
	if len(msgs) != 1 || msgs[0].(*pgproto3.Parse).Name != "pgt_1" || msgs[0].(*pgproto3.Parse).Query != "SELECT 2" {
		t.Fatalf("redefinition sent as %#v", msgs)
	}
	if got := s.tr.clientNames(`prepared statement "pgt_1" already exists`); got != `prepared statement "a" already exists` {
		t.Fatalf("42P05 message reads %q", got)
	}
	s.link.rm.reset()

	// A full cache (3) evicts the least recently used statement and closes
	// it before the new Parse.
	s.out = nil
	s.parseNamedLocked("b", restB, stmtEffects{})
	s.out = nil
	s.parseNamedLocked("c", restC, stmtEffects{})
	msgs = frontendMsgs(t, s.out)
	want := []pgproto3.FrontendMessage{
		&pgproto3.Close{ObjectType: 'S', Name: "pgt_2"},
		&pgproto3.Parse{Name: "pgt_4", Query: "SELECT 3"},
	}
	if !reflect.DeepEqual(msgs, want) {
		t.Fatalf("with a full cache sent %#v, want %#v", msgs, want)
	}

	// The evicted statement is prepared again, as the tenant's shared
	// copy, when it is used.
	s.out = nil
	s.link.rm.reset()
	name, key := s.backendStmtNameLocked("a2")
	if name == "pgt_2" || key != s.tr.stmts["a2"].key {
		t.Fatalf("evicted statement used as %q (%q)", name, key)
	}
	msgs = frontendMsgs(t, s.out)
	last, ok := msgs[len(msgs)-1].(*pgproto3.Parse)
	if !ok || last.Name != name || last.Query != "SELECT 1" {
		t.Fatalf("re-prepare sent %#v", msgs)
	}

	// A name the client never prepared goes out as one no statement has.
	s.out = nil
	if got, _ := s.backendStmtNameLocked("nope"); got != unknownStmtName("nope") || len(s.out) != 0 {
		t.Fatalf("unknown name sent as %q with %q queued", got, s.out)
	}
}

// The cache key holds a hash, not the text: backends keep keys after the
// clients close their statements.
func TestStatementKeyHoldsNoText(t *testing.T) {
	short := statementKey("acme", parseRest(t, "SELECT 1"))
	long := statementKey("acme", parseRest(t, "SELECT '"+strings.Repeat("x", 1<<20)+"'"))
	if len(short) != len(long) || len(long) != len("acme")+1+statementHashLen {
		t.Fatalf("key lengths %d and %d, want %d", len(short), len(long), len("acme")+1+statementHashLen)
	}
}

// The client's statements are counted and capped by number and by bytes;
// dropping them, one or all, frees room.
func TestClientStatementLimits(t *testing.T) {
	tr := tracker{tenant: router.Tenant{Name: "acme", Schema: "acme"}, maxStmts: 3}
	add := func(name string, text string) *pgError {
		rest := parseRest(t, text)
		if e := tr.stmtLimit(name, rest); e != nil {
			return e
		}
		tr.addClientStmt(name, rest, stmtEffects{}, false, 1)
		return nil
	}
	for _, name := range []string{"a", "b", "c"} {
		if e := add(name, "SELECT 1"); e != nil {
			t.Fatalf("%s: %v", name, e)
		}
	}
	if e := add("d", "SELECT 1"); e == nil || e.Code != codeConfigurationLimit || !strings.Contains(e.Message, "max-client-statements 3") {
		t.Fatalf("fourth statement: %v, want 53400 naming max-client-statements", e)
	}
	tr.dropClientStmt("b")
	tr.dropClientStmt("nonesuch")
	if e := add("d", "SELECT 1"); e != nil {
		t.Fatalf("after a drop: %v", e)
	}

	tr.dropClientStmts()
	if tr.stmtBytes != 0 || len(tr.stmts) != 0 {
		t.Fatalf("after dropping all: %d statements, %d bytes", len(tr.stmts), tr.stmtBytes)
	}
	big := "SELECT '" + strings.Repeat("x", 4000) + "'"
	tr.maxStmts, tr.maxStmtBytes = 0, 10000
	for i, want := range []bool{true, true, false} {
		e := add(fmt.Sprint("big", i), big)
		if (e == nil) != want {
			t.Fatalf("statement %d of ~4 KB under a 10000-byte cap: %v", i+1, e)
		}
		if e != nil && (e.Code != codeConfigurationLimit || !strings.Contains(e.Message, "max-client-statement-bytes 10000")) {
			t.Fatalf("refusal: %v", e)
		}
	}
	if tr.stmtBytes <= 8000 || tr.stmtBytes > 10000 {
		t.Fatalf("two ~4 KB statements counted as %d bytes", tr.stmtBytes)
	}
	tr.dropClientStmt("big0")
	if e := add("big2", big); e != nil {
		t.Fatalf("after closing one: %v", e)
	}
}
