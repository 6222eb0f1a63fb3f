package integration

// The differential protocol test (issues 9 and 17): seeded sequences of
// frontend messages (diffgen_test.go) are run directly against PostgreSQL
// and through pgtenant, and every client's reply stream is compared message
// by message. A direct client connects as pgtenant promises its clients a
// session looks: search_path "<schema>", public (as options -c, so that
// RESET restores it), and the same startup parameters.
//
// Both passes of a sequence run on the same two tenants, whose tables are
// recreated before each pass; each proxy pass gets a fresh pgtenant (pool
// size 1 or 2), so nothing of one sequence leaks into the next.
//
// What is compared: message types and, per type, RowDescription column
// names, type OIDs (user-defined ones as "user"), sizes, modifiers and
// formats; DataRow values; CommandComplete tags; ErrorResponse and
// NoticeResponse severity, SQLSTATE, message, detail, hint and position;
// ParameterStatus; ParameterDescription; ReadyForQuery status; COPY
// responses and data. Not compared: BackendKeyData (pgtenant's own key),
// the order of the startup ParameterStatus messages, table OIDs.
//
// Knobs (flags go after the package: go test ./integration -run
// TestDifferential -diff.seed=7 -diff.n=1 -diff.categories=all):
//
//	-diff.seed N        first sequence's seed (sequence i uses N+i); default 1.
//	                    A failure prints the seed that reproduces it with -diff.n=1.
//	-diff.n N           sequences per pool mode; default 40.
//	-diff.categories L  comma list of categories (see diffgen_test.go), or
//	                    "all"; default defaultCategories.
//	-diff.all           go on after a failing sequence (one failure per sequence).
//	-diff.trace         log every step and what PostgreSQL answered (with -v).
//
// or the environment: PGTENANT_DIFF_SEED, PGTENANT_DIFF_N,
// PGTENANT_DIFF_CATEGORIES (a flag, when given, wins). Both pool modes run
// as subtests: -run 'TestDifferential/transaction' runs one.

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

var (
	diffSeedFlag  = flag.Int64("diff.seed", 0, "differential test: first sequence's seed (default 1)")
	diffNFlag     = flag.Int("diff.n", 0, "differential test: sequences per pool mode (default 40)")
	diffCatsFlag  = flag.String("diff.categories", "", "differential test: comma list of categories, or all")
	diffAllFlag   = flag.Bool("diff.all", false, "differential test: go on after a failing sequence")
	diffTraceFlag = flag.Bool("diff.trace", false, "differential test: log every step and its direct replies")
)

// diffSettings resolves the knobs: flag, else environment, else default.
func diffSettings(t *testing.T) (seed int64, n int, cats diffCats) {
	t.Helper()
	seed, n, catList := 1, 40, defaultCategories
	if v := os.Getenv("PGTENANT_DIFF_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("PGTENANT_DIFF_SEED: %v", err)
		}
		seed = s
	}
	if v := os.Getenv("PGTENANT_DIFF_N"); v != "" {
		k, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("PGTENANT_DIFF_N: %v", err)
		}
		n = k
	}
	if v, ok := os.LookupEnv("PGTENANT_DIFF_CATEGORIES"); ok {
		catList = v
	}
	if *diffSeedFlag != 0 {
		seed = *diffSeedFlag
	}
	if *diffNFlag != 0 {
		n = *diffNFlag
	}
	if *diffCatsFlag != "" {
		catList = *diffCatsFlag
	}
	cats, err := parseDiffCats(catList)
	if err != nil {
		t.Fatal(err)
	}
	return seed, n, cats
}

// diffSetupSQL makes a tenant's tables; both tenants get the same.
var diffSetupSQL = []string{
	"drop table if exists items, log, moods cascade",
	"drop type if exists mood cascade",
	"create type mood as enum ('sad', 'ok', 'happy')",
	"create table items (id int primary key, name text, qty int)",
	"insert into items select g, 'item' || g, g * 10 from generate_series(1, 5) g",
	"create table log (id int, note text)",
	"create table moods (id int, m mood)",
	"insert into moods values (1, 'ok'), (2, 'happy')",
}

func TestDifferential(t *testing.T) {
	t.Parallel()
	seed, n, cats := diffSettings(t)
	for _, mode := range prmModes {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			tenants := []string{"diff_" + string(mode)[:2] + "_a", "diff_" + string(mode)[:2] + "_b"}
			for _, tn := range tenants {
				fltTenant(t, tn)
			}
			admin := direct(t)
			// What the sequences exercised, for -v: how many messages of
			// each type and errors of each SQLSTATE the server sent.
			seen := map[string]int{}
			defer func() { t.Logf("seeds %d.., categories %s; direct replies seen: %v", seed, cats, seen) }()
			for i := 0; i < n; i++ {
				s := seed + int64(i)
				seq := genSeq(s, cats, mode == config.PoolSession, tenants)
				ok := t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
					diffRun(t, mode, tenants, admin, seq, seen)
				})
				if !ok && !*diffAllFlag {
					// One reproducible failure is enough; the rest would
					// mostly repeat it.
					t.Logf("stopping after the first failing sequence (seed %d)", s)
					break
				}
			}
		})
	}
}

// diffResetTenants recreates the tenants' tables, in one round trip.
func diffResetTenants(t *testing.T, admin *pgx.Conn, tenants []string) {
	t.Helper()
	var sql strings.Builder
	for _, tn := range tenants {
		sql.WriteString("set search_path to " + pgx.Identifier{tn}.Sanitize() + ";\n")
		for _, q := range diffSetupSQL {
			sql.WriteString(q + ";\n")
		}
	}
	sql.WriteString("reset search_path")
	if _, err := admin.PgConn().Exec(fltCtx(t), sql.String()).ReadAll(); err != nil {
		t.Fatalf("reset tenants %v: %v", tenants, err)
	}
}

// diffConn is one raw protocol connection of a pass.
type diffConn struct {
	nc   net.Conn
	fe   *pgproto3.Frontend
	dead string // why it can no longer be used
}

// diffDial opens a connection and logs in with params; it returns the
// normalised startup replies.
func diffDial(addr string, params map[string]string) (*diffConn, []string) {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return &diffConn{dead: "dial: " + err.Error()}, []string{"<dial error>"}
	}
	c := &diffConn{nc: nc, fe: pgproto3.NewFrontend(nc, nc)}
	b, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params}).Encode(nil)
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := nc.Write(b); err != nil {
		c.fail("write startup: " + err.Error())
		return c, []string{"<" + c.dead + ">"}
	}
	ps := map[string]string{}
	var out []string
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			c.fail("startup: " + err.Error())
			return c, append(sortedParams(ps), "<"+c.dead+">")
		}
		switch m := msg.(type) {
		case *pgproto3.AuthenticationOk, *pgproto3.BackendKeyData:
		case *pgproto3.ParameterStatus:
			ps[m.Name] = m.Value
		case *pgproto3.ReadyForQuery:
			return c, append(append(sortedParams(ps), out...), fmtReply(m))
		default:
			out = append(out, fmtReply(msg))
			if _, isErr := msg.(*pgproto3.ErrorResponse); isErr {
				c.fail("login refused")
				return c, append(sortedParams(ps), out...)
			}
		}
	}
}

func (c *diffConn) fail(why string) {
	if c.dead == "" {
		c.dead = why
	}
	if c.nc != nil {
		_ = c.nc.Close()
	}
}

// exchange sends msgs and reads replies up to the rfq-th ReadyForQuery.
func (c *diffConn) exchange(msgs []pgproto3.FrontendMessage, rfq int) []string {
	if c.dead != "" {
		return []string{"<dead: " + c.dead + ">"}
	}
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			panic(err) // the generator made a message that cannot be encoded
		}
	}
	// Generous: pgtenant waits up to QueryWaitTimeout (10s) for a backend.
	_ = c.nc.SetDeadline(time.Now().Add(25 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.fail("write: " + err.Error())
		return []string{"<" + c.dead + ">"}
	}
	var out []string
	for rfq > 0 {
		msg, err := c.fe.Receive()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.fail(fmt.Sprintf("no ReadyForQuery within 25s, %d still expected (hang)", rfq))
			} else {
				c.fail("read: " + err.Error())
			}
			return append(out, "<"+c.dead+">")
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			rfq--
		}
		out = append(out, fmtReply(msg))
	}
	return out
}

func (c *diffConn) leave() {
	if c.dead != "" {
		return
	}
	b, _ := (&pgproto3.Terminate{}).Encode(nil)
	_, _ = c.nc.Write(b)
	_ = c.nc.Close()
	c.dead = "left"
}

// diffUserOID: OIDs of objects the test creates change with every reset,
// so they are compared as "user".
const diffFirstUserOID = 16384

func fmtOID(oid uint32) string {
	if oid >= diffFirstUserOID {
		return "user"
	}
	return strconv.FormatUint(uint64(oid), 10)
}

// fmtReply renders a backend message with the fields that are compared.
func fmtReply(msg pgproto3.BackendMessage) string {
	switch m := msg.(type) {
	case *pgproto3.ParseComplete:
		return "ParseComplete"
	case *pgproto3.BindComplete:
		return "BindComplete"
	case *pgproto3.CloseComplete:
		return "CloseComplete"
	case *pgproto3.NoData:
		return "NoData"
	case *pgproto3.PortalSuspended:
		return "PortalSuspended"
	case *pgproto3.EmptyQueryResponse:
		return "EmptyQueryResponse"
	case *pgproto3.CommandComplete:
		return fmt.Sprintf("CommandComplete(%s)", m.CommandTag)
	case *pgproto3.ReadyForQuery:
		return fmt.Sprintf("ReadyForQuery(%c)", m.TxStatus)
	case *pgproto3.RowDescription:
		var b strings.Builder
		b.WriteString("RowDescription[")
		for i, f := range m.Fields {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s:%s/%d/%d/%d/%d", f.Name, fmtOID(f.DataTypeOID), f.TableAttributeNumber,
				f.DataTypeSize, f.TypeModifier, f.Format)
		}
		return b.String() + "]"
	case *pgproto3.ParameterDescription:
		ps := make([]string, len(m.ParameterOIDs))
		for i, o := range m.ParameterOIDs {
			ps[i] = fmtOID(o)
		}
		return "ParameterDescription[" + strings.Join(ps, " ") + "]"
	case *pgproto3.DataRow:
		vs := make([]string, len(m.Values))
		for i, v := range m.Values {
			if v == nil {
				vs[i] = "NULL"
			} else {
				vs[i] = strconv.Quote(string(v))
			}
		}
		return "DataRow[" + strings.Join(vs, " ") + "]"
	case *pgproto3.ErrorResponse:
		return fmt.Sprintf("ErrorResponse(%s %s %q detail=%q hint=%q pos=%d)",
			m.Severity, m.Code, m.Message, m.Detail, m.Hint, m.Position)
	case *pgproto3.NoticeResponse:
		return fmt.Sprintf("NoticeResponse(%s %s %q detail=%q hint=%q)", m.Severity, m.Code, m.Message, m.Detail, m.Hint)
	case *pgproto3.ParameterStatus:
		return fmt.Sprintf("ParameterStatus(%s=%s)", m.Name, m.Value)
	case *pgproto3.CopyInResponse:
		return fmt.Sprintf("CopyInResponse(%d %v)", m.OverallFormat, m.ColumnFormatCodes)
	case *pgproto3.CopyOutResponse:
		return fmt.Sprintf("CopyOutResponse(%d %v)", m.OverallFormat, m.ColumnFormatCodes)
	case *pgproto3.CopyData:
		return fmt.Sprintf("CopyData(%q)", m.Data)
	case *pgproto3.CopyDone:
		return "CopyDone"
	case *pgproto3.BackendKeyData:
		return "BackendKeyData"
	case *pgproto3.NotificationResponse:
		return fmt.Sprintf("NotificationResponse(%s %s)", m.Channel, m.Payload)
	default:
		return fmt.Sprintf("%T", msg)
	}
}

// diffRecord is what one step produced on one side.
type diffRecord []string

// diffRun runs seq directly, then through pgtenant, and compares.
func diffRun(t *testing.T, mode config.PoolMode, tenants []string, admin *pgx.Conn, seq *diffSeq, seen map[string]int) {
	// The direct pass.
	diffResetTenants(t, admin, tenants)
	want := diffPass(seq, func(c diffClientSpec) (string, map[string]string) {
		return net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)), map[string]string{
			"user": pg.User, "database": backendDB,
			// The escaped space: options are split at unescaped spaces.
			"options":          `-c search_path=` + tenants[c.tenant] + `,\ public`,
			"application_name": c.app, "TimeZone": c.tz, "extra_float_digits": c.extraFlt,
		}
	}, nil)
	for i, rec := range want {
		// The generator promises batches that leave their client idle;
		// a client in a transaction would make other clients wait for
		// its backend (transaction mode) or its locks.
		if st := seq.steps[i]; st.kind == stepBatch && (len(rec) == 0 || rec[len(rec)-1] != "ReadyForQuery(I)") {
			t.Fatalf("generator bug: seed %d, categories %s: step %d (client %d) leaves the client not idle on PostgreSQL itself:\n  %s\n%s",
				seq.seed, seq.cats, i, st.client, fmtSent(st.msgs), diffIndent(rec))
		}
		for _, m := range rec {
			kind, _, _ := strings.Cut(m, "(")
			kind, _, _ = strings.Cut(kind, "[")
			if kind == "ErrorResponse" {
				kind += " " + strings.Fields(m)[1]
			}
			seen[kind]++
		}
		if *diffTraceFlag {
			st := seq.steps[i]
			t.Logf("step %d client %d: %s\n%s", i, st.client, fmtSent(st.msgs), diffIndent(rec))
		}
	}

	// The proxy pass, compared step by step.
	diffResetTenants(t, admin, tenants)
	p := startProxy(t, func(c *config.Config) { c.PoolMode = mode; c.PoolSize = seq.poolSize })
	defer p.Stop(t)
	diffPass(seq, func(c diffClientSpec) (string, map[string]string) {
		return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), map[string]string{
			"user": "app", "database": tenants[c.tenant],
			"application_name": c.app, "TimeZone": c.tz, "extra_float_digits": c.extraFlt,
		}
	}, func(step int, got diffRecord) bool {
		w := want[step]
		k := 0
		for k < len(w) && k < len(got) && w[k] == got[k] {
			k++
		}
		if k == len(w) && k == len(got) {
			return true
		}
		at := func(r diffRecord) string {
			if k < len(r) {
				return r[k]
			}
			return "(nothing more: the step ended)"
		}
		t.Errorf("differential mismatch\n"+
			"  reproduce: go test ./integration -run 'TestDifferential/%s/seed=%d$' -diff.seed=%d -diff.n=1 -diff.categories=%s\n"+
			"  seed %d, mode %s, pool size %d, categories %s, %d clients\n"+
			"  the failing step is client %d's (tenant %s); all steps so far (* that client):\n%s\n"+
			"  reply %d of step %d differs:\n    direct:   %s\n    pgtenant: %s\n"+
			"  direct replies of the step:\n%s\n  pgtenant replies of the step:\n%s",
			mode, seq.seed, seq.seed, seq.cats, seq.seed, mode, seq.poolSize, seq.cats, len(seq.clients),
			seq.steps[step].client, tenants[seq.clients[seq.steps[step].client].tenant], diffHistory(seq, step),
			k, step, at(w), at(got), diffIndent(w), diffIndent(got))
		return false
	})
}

// diffPass runs seq on one side; addr gives each client's address and
// startup parameters. check, when set, compares each step as it ends and
// stops the pass at the first mismatch. It returns every step's replies.
func diffPass(seq *diffSeq, addr func(diffClientSpec) (string, map[string]string),
	check func(step int, got diffRecord) bool) []diffRecord {
	conns := make([]*diffConn, len(seq.clients))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.leave()
			}
		}
	}()
	recs := make([]diffRecord, len(seq.steps))
	for i, st := range seq.steps {
		switch st.kind {
		case stepConnect:
			a, params := addr(seq.clients[st.client])
			conns[st.client], recs[i] = diffDial(a, params)
		case stepBatch:
			recs[i] = conns[st.client].exchange(st.msgs, st.rfq)
		case stepLeave:
			conns[st.client].leave()
		}
		if check != nil && !check(i, recs[i]) {
			return recs
		}
	}
	return recs
}

// diffHistory is what every client sent up to and including step last,
// one step a line, in the order sent; the lines of step last's client are
// marked with '*'.
func diffHistory(seq *diffSeq, last int) string {
	c := seq.steps[last].client
	var b strings.Builder
	for i := 0; i <= last; i++ {
		st := seq.steps[i]
		mark := ' '
		if st.client == c {
			mark = '*'
		}
		fmt.Fprintf(&b, "   %c[step %d] client %d: ", mark, i, st.client)
		switch st.kind {
		case stepConnect:
			fmt.Fprintf(&b, "connect %+v\n", seq.clients[st.client])
		case stepBatch:
			fmt.Fprintf(&b, "%s\n", fmtSent(st.msgs))
		case stepLeave:
			b.WriteString("leave\n")
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func diffIndent(r diffRecord) string {
	var b strings.Builder
	for i, s := range r {
		fmt.Fprintf(&b, "    %2d %s\n", i, s)
	}
	return strings.TrimRight(b.String(), "\n")
}
