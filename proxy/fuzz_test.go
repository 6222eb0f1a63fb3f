package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Fuzz targets for every parser of bytes a client or server controls.
// Run one with: go test ./proxy -run='^$' -fuzz='^FuzzPeekForward$' -fuzztime=30s

// startupSeeds are startup-phase packet bodies real clients send, and a few
// broken ones.
func startupSeeds() [][]byte {
	cancel := binary.BigEndian.AppendUint32(startupBody(codeCancelRequest), 1234)
	cancel = binary.BigEndian.AppendUint32(cancel, 0x01020304)
	return [][]byte{
		startupBody(codeSSLRequest),
		startupBody(codeGSSENCRequest),
		cancel,
		startupBody(codeCancelRequest, "\x00\x00\x04\xd2", strings.Repeat("\xaa", 32)), // protocol 3.2 key length
		// psql
		startupBody(protocolV3, "user\x00bob\x00database\x00acme\x00application_name\x00psql\x00client_encoding\x00UTF8\x00\x00"),
		// pgjdbc
		startupBody(protocolV3, "user\x00bob\x00database\x00acme\x00client_encoding\x00UTF8\x00DateStyle\x00ISO\x00TimeZone\x00UTC\x00extra_float_digits\x002\x00\x00"),
		// libpq with options
		startupBody(protocolV3, "user\x00bob\x00options\x00-c statement_timeout=5s --lock-timeout=1s\x00\x00"),
		startupBody(protocolV3, "user\x00bob\x00replication\x00database\x00\x00"),
		startupBody(protocolV3, "user\x00bob\x00_pq_.compression\x00on\x00\x00"),
		startupBody(protocolV3, "user\x00bob\x00\x00junk"),
		startupBody(protocolV3, "user\x00bob"),
		startupBody(protocolV3),
		startupBody(2<<16, "bob\x00\x00"),
		startupBody(pgproto3.ProtocolVersion32, "user\x00bob\x00\x00"),
		{0, 3},
	}
}

func FuzzDecodeStartupPacket(f *testing.F) {
	for _, s := range startupSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msg, err := decodeStartupPacket(body)
		if err != nil {
			var pe *pgError
			if !errors.As(err, &pe) || (pe.Code != codeProtocolViolation && pe.Code != codeFeatureUnsupported) {
				t.Fatalf("error %v (%T) is not a 08P01/0A000 pgError", err, err)
			}
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if len(body) != 4 {
				t.Fatalf("%T accepted from a %d-byte body", m, len(body))
			}
		case *pgproto3.CancelRequest:
			enc, err := m.Encode(nil)
			if err != nil {
				t.Fatalf("accepted CancelRequest does not re-encode: %v", err)
			}
			if !bytes.Equal(enc[4:], body) {
				t.Fatalf("CancelRequest re-encodes as %q, read from %q", enc[4:], body)
			}
		case *pgproto3.StartupMessage:
			if m.ProtocolVersion>>16 != 3 {
				t.Fatalf("accepted protocol version %#x", m.ProtocolVersion)
			}
			if _, ok := m.Parameters[""]; ok {
				t.Fatalf("accepted an empty parameter name: %q", m.Parameters)
			}
			enc, err := m.Encode(nil)
			if err != nil {
				t.Fatalf("accepted StartupMessage %q does not re-encode: %v", m.Parameters, err)
			}
			again, err := readStartupPacket(bufio.NewReader(bytes.NewReader(enc)))
			if err != nil {
				t.Fatalf("re-encoded StartupMessage %q does not decode: %v", enc, err)
			}
			if !reflect.DeepEqual(again, msg) {
				t.Fatalf("round trip changed the message: %#v became %#v", msg, again)
			}
		default:
			t.Fatalf("unexpected message type %T", msg)
		}
	})
}

// countingReader counts the bytes taken from the underlying stream.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzReadStartupPacket(f *testing.F) {
	for _, s := range startupSeeds() {
		f.Add(withLength(s))
	}
	// An SSLRequest followed by the startup message, as libpq sends them.
	f.Add(append(withLength(startupSeeds()[0]), withLength(startupSeeds()[4])...))
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0})
	f.Add([]byte{0, 0, 0x27, 0x11, 0, 3, 0, 0}) // 10001
	f.Add([]byte{0xff, 0xff, 0xff, 0xf0})
	f.Fuzz(func(t *testing.T, data []byte) {
		const bufSize = 16 // bufio's minimum: it reads at most this much ahead
		cr := &countingReader{r: bytes.NewReader(data)}
		r := bufio.NewReaderSize(cr, bufSize)
		off := 0 // bytes the packets read so far account for
		for range 16 {
			msg, err := readStartupPacket(r)
			consumed := cr.n - r.Buffered()
			if len(data)-off < 4 {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("%d bytes left: got %v, %v; want EOF", len(data)-off, msg, err)
				}
				return
			}
			n := int(int32(binary.BigEndian.Uint32(data[off:])))
			if n < 8 || n > maxStartupPacket {
				var pe *pgError
				if !errors.As(err, &pe) || pe.Code != codeProtocolViolation {
					t.Fatalf("length %d: got %v, %v; want 08P01", n, msg, err)
				}
				// Refused on the length alone: the body was neither
				// allocated nor read.
				if consumed != off+4 || cr.n > off+4+bufSize {
					t.Fatalf("length %d: read %d bytes (%d consumed) past a %d-byte offset", n, cr.n, consumed, off)
				}
				return
			}
			if len(data)-off < n {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("truncated %d-byte packet: got %v, %v; want an I/O error", n, msg, err)
				}
				return
			}
			if consumed != off+n {
				t.Fatalf("%d-byte packet at %d: consumed up to %d", n, off, consumed)
			}
			if err != nil {
				var pe *pgError
				if !errors.As(err, &pe) {
					t.Fatalf("complete packet refused with a non-protocol error %v", err)
				}
				return
			}
			off += n
		}
	})
}

// escapeOption writes an options argument so that parseOptions reads it
// back as one argument.
func escapeOption(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		"-c statement_timeout=5s",
		"-cstatement_timeout=5s",
		"--statement-timeout=5s",
		`-c application_name=my\ app -c work_mem=64MB`,
		"-c geqo=off\t--search-path=x\n-c a.b=c",
		`-c a=b\`,
		`\-c a=b`,
		"-c",
		"-c noequals",
		"-x",
		"--=x",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		params, err := parseOptions(s)
		if err != nil {
			return
		}
		for _, p := range params {
			if p.Name == "" || strings.Contains(p.Name, "=") {
				t.Fatalf("parseOptions(%q) returned name %q", s, p.Name)
			}
		}
		// What was parsed, written back out escaped, parses the same.
		var args []string
		for _, p := range params {
			args = append(args, "-c "+escapeOption(p.Name+"="+p.Value))
		}
		again, err := parseOptions(strings.Join(args, " "))
		if err != nil {
			t.Fatalf("re-escaped options %q do not parse: %v", args, err)
		}
		if len(again) != len(params) || (len(params) > 0 && !reflect.DeepEqual(again, params)) {
			t.Fatalf("parseOptions(%q) = %q, but its re-escaped form gives %q", s, params, again)
		}
	})
}

// scanPinParams checks that a pin's second query is exactly the SET
// statements for params, by scanning it token by token: a quoting mistake
// shows as a statement that ends in the wrong place.
func scanPinParams(t *testing.T, q string, params []startupParam) {
	t.Helper()
	for i, p := range params {
		if i > 0 {
			if !strings.HasPrefix(q, "; ") {
				t.Fatalf("statement %d: %q does not start with a separator", i, q)
			}
			q = q[2:]
		}
		if !strings.HasPrefix(q, "SET ") {
			t.Fatalf("statement %d: %q is not a SET", i, q)
		}
		q = q[4:]
		name, n, ok := lexIdent(q)
		if !ok || name != p.Name {
			t.Fatalf("statement %d: identifier scans as %q (ok=%v), want %q", i, name, ok, p.Name)
		}
		q = q[n:]
		if !strings.HasPrefix(q, " TO ") {
			t.Fatalf("statement %d: %q after the name", i, q)
		}
		q = q[4:]
		for _, scs := range []bool{true, false} {
			val, n2, ok := lexString(q, scs)
			if !ok || val != p.Value {
				t.Fatalf("statement %d: value scans as %q (ok=%v, standard_conforming_strings=%v), want %q", i, val, ok, scs, p.Value)
			}
			n = n2
		}
		q = q[n:]
	}
	if q != "" {
		t.Fatalf("%q left after the last statement", q)
	}
}

func FuzzCheckParams(f *testing.F) {
	f.Add("application_name", "psql", "TimeZone", "UTC", "options", "-c statement_timeout=5s")
	f.Add("user", "bob", "database", "acme", "client_encoding", "UTF8")
	f.Add("DateStyle", "ISO, MDY", "extra_float_digits", "3", "replication", "false")
	f.Add("application_name", `it's \ tricky`, "search_path", "x", "", "")
	f.Add("options", `-c application_name=a\ b --work-mem=1MB`, "myext.flag", "on", "_pq_.x", "y")
	f.Add("Role", "admin", "a-b", "c", "x", "\x00")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		startup := map[string]string{k1: v1, k2: v2, k3: v3}
		params, perr := checkParams(startup)
		if perr != nil {
			switch perr.Code {
			case codeProtocolViolation, codeFeatureUnsupported, codeInsufficientPriv, codeInvalidParameter:
			default:
				t.Fatalf("unexpected SQLSTATE %s: %v", perr.Code, perr)
			}
			return
		}
		for i, p := range params {
			if !paramName.MatchString(p.Name) || len(p.Name) > 63 {
				t.Fatalf("accepted parameter name %q", p.Name)
			}
			if p.Name != strings.ToLower(p.Name) {
				t.Fatalf("name %q not case folded", p.Name)
			}
			if _, reserved := reservedParams[p.Name]; reserved {
				t.Fatalf("accepted reserved parameter %q", p.Name)
			}
			if strings.IndexByte(p.Value, 0) >= 0 {
				t.Fatalf("accepted NUL in the value of %q", p.Name)
			}
			if i > 0 && params[i-1].Name >= p.Name {
				t.Fatalf("parameters not sorted and unique: %q", params)
			}
		}
		if !sort.SliceIsSorted(params, func(i, j int) bool { return params[i].Name < params[j].Name }) {
			t.Fatalf("parameters not sorted: %q", params)
		}
		// Whatever was accepted renders into a pin that is exactly the
		// statements it means.
		pn := buildPin(pinOwner("acme", "u"), "acme", params)
		_, sets := pinParts(t, pn)
		if len(sets) != len(params) {
			t.Fatalf("pin has %d settings for %d parameters: %q", len(sets), len(params), sets)
		}
		if len(params) > 0 {
			scanPinParams(t, strings.Join(sets, "; "), params)
		}
	})
}

func FuzzQuote(f *testing.F) {
	for _, v := range []string{"", "plain", "it's", `C:\dir`, `\'; DROP TABLE t; --`, `"`, `x", public; --`, "é\\'"} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		q := quoteLiteral(v)
		for _, scs := range []bool{true, false} {
			got, n, ok := lexString(q+"; SELECT 1", scs)
			if !ok || n != len(q) || got != v {
				t.Fatalf("quoteLiteral(%q) = %s scans as %q over %d bytes (ok=%v, standard_conforming_strings=%v)", v, q, got, n, ok, scs)
			}
		}
		qi := quoteIdent(v)
		got, n, ok := lexIdent(qi + ", public")
		if !ok || n != len(qi) || got != v {
			t.Fatalf("quoteIdent(%q) = %s scans as %q over %d bytes (ok=%v)", v, qi, got, n, ok)
		}
	})
}

// messageStreamSeed is a realistic server reply: a one-row result.
func messageStreamSeed() []byte {
	var b []byte
	b, _ = (&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("n"), DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}}).Encode(b)
	b, _ = (&pgproto3.DataRow{Values: [][]byte{[]byte("42")}}).Encode(b)
	b, _ = (&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}).Encode(b)
	b, _ = (&pgproto3.ReadyForQuery{TxStatus: 'I'}).Encode(b)
	return b
}

func FuzzPeekForward(f *testing.F) {
	f.Add(messageStreamSeed(), uint8(0))
	f.Add(messageStreamSeed(), uint8(200))
	f.Add(wireMsg('d', strings.Repeat("copy data ", 30)), uint8(0))
	f.Add(append(wireMsg('Q', "SELECT 1\x00"), header('Q', 3)...), uint8(8))
	f.Add(header('D', 0x7fffffff), uint8(0))
	f.Add(append(wireMsg('D', "short"), 'Z', 0, 0), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, extra uint8) {
		size := 16 + int(extra)
		r := bufio.NewReaderSize(bytes.NewReader(data), size)
		var out bytes.Buffer
		w := &outBuf{w: &out}
		off := 0
		for {
			typ, bodyLen, err := peekHeader(r)
			left := len(data) - off
			if left < 5 {
				if !errors.Is(err, io.EOF) {
					t.Fatalf("%d bytes left: peekHeader error %v, want EOF", left, err)
				}
				return
			}
			n := int32(binary.BigEndian.Uint32(data[off+1:]))
			if n < 4 {
				if !errors.Is(err, errMalformed) {
					t.Fatalf("length %d: peekHeader error %v, want errMalformed", n, err)
				}
				return
			}
			if err != nil || typ != data[off] || bodyLen != int(n)-4 {
				t.Fatalf("peekHeader = %q, %d, %v; header is %q", typ, bodyLen, err, data[off:off+5])
			}
			out.Reset()
			err = forward(r, w, bodyLen)
			if ferr := w.Flush(); ferr != nil {
				t.Fatal(ferr)
			}
			total := 5 + bodyLen
			if total > left {
				var ce *copyError
				if !errors.As(err, &ce) || ce.write {
					t.Fatalf("%d-byte message with %d bytes left: forward error %v, want a read-side copyError", total, left, err)
				}
				if !bytes.Equal(out.Bytes(), data[off:][:min(out.Len(), left)]) || out.Len() > left {
					t.Fatalf("forwarded %d bytes that are not the input", out.Len())
				}
				return
			}
			if err != nil {
				t.Fatalf("forward of a complete %d-byte message: %v", total, err)
			}
			if !bytes.Equal(out.Bytes(), data[off:off+total]) {
				t.Fatalf("forwarded %q, want %q", out.Bytes(), data[off:off+total])
			}
			off += total
		}
	})
}

// FuzzTakeTenantOption: whatever options a client sends, pgtenant.tenant
// is gone afterwards, the other options mean what they meant, and options
// without it are left byte for byte.
func FuzzTakeTenantOption(f *testing.F) {
	f.Add("-c pgtenant.tenant=acme")
	f.Add(`-c work_mem=1MB -cpgtenant.tenant=acme --application-name=my\ app`)
	f.Add("-c PGTENANT.TENANT=a -c pgtenant.tenant=b")
	f.Add(`-c a=\\ -c pgtenant.tenant=\ x`)
	f.Add("-c statement_timeout=5s")
	f.Add("-c pgtenant.tenant=")
	f.Fuzz(func(t *testing.T, opts string) {
		before, perr := parseOptions(opts)
		params := map[string]string{"options": opts}
		tenant, err := takeTenantOption(params)
		if perr != nil {
			if err != nil || tenant != "" || params["options"] != opts {
				t.Fatalf("malformed options %q were touched: %q, %q, %v", opts, params, tenant, err)
			}
			return
		}
		var rest []startupParam
		var named []string
		for _, p := range before {
			if strings.EqualFold(p.Name, tenantOption) {
				named = append(named, p.Value)
				continue
			}
			rest = append(rest, p)
		}
		if err != nil {
			var pe *pgError
			if !errors.As(err, &pe) || (pe.Code != codeRejectedConnection && pe.Code != codeUnknownTenant) {
				t.Fatalf("error %v is not a 08004/3D000 pgError", err)
			}
			return
		}
		if len(named) == 0 {
			if tenant != "" || params["options"] != opts {
				t.Fatalf("options %q without a tenant became %q (tenant %q)", opts, params["options"], tenant)
			}
			return
		}
		if tenant != named[0] {
			t.Fatalf("tenant = %q, want %q", tenant, named[0])
		}
		left, ok := params["options"]
		if len(rest) == 0 {
			if ok {
				t.Fatalf("options %q left %q", opts, left)
			}
			return
		}
		after, err := parseOptions(left)
		if err != nil {
			t.Fatalf("rewritten options %q do not parse: %v", left, err)
		}
		if !reflect.DeepEqual(after, rest) {
			t.Fatalf("options %q: rewritten %q means %q, want %q", opts, left, after, rest)
		}
	})
}
