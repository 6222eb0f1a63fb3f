package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// startupBody builds a startup-phase packet body (no length prefix): the
// request code followed by raw bytes.
func startupBody(code uint32, rest ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, code)
	for _, s := range rest {
		b = append(b, s...)
	}
	return b
}

// withLength prefixes a body with its length, as it travels on the wire.
func withLength(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
}

// wantPgError checks that err is a *pgError with the given SQLSTATE.
func wantPgError(t *testing.T, err error, code string) {
	t.Helper()
	var pe *pgError
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v (%T), want *pgError %s", err, err, code)
	}
	if pe.Code != code {
		t.Fatalf("SQLSTATE = %s (%q), want %s", pe.Code, pe.Message, code)
	}
	if pe.Severity != "FATAL" {
		t.Errorf("severity = %q, want FATAL during startup", pe.Severity)
	}
}

func TestDecodeStartupPacket(t *testing.T) {
	cancelBody := binary.BigEndian.AppendUint32(startupBody(codeCancelRequest), 4242)
	cancelBody = binary.BigEndian.AppendUint32(cancelBody, 0xdeadbeef)

	tests := []struct {
		name string
		body []byte
		want pgproto3.FrontendMessage // nil: an error is expected
		code string                   // SQLSTATE of the expected *pgError
	}{
		{name: "SSLRequest", body: startupBody(codeSSLRequest), want: &pgproto3.SSLRequest{}},
		{name: "SSLRequest with extra bytes", body: startupBody(codeSSLRequest, "x"), code: codeProtocolViolation},
		{name: "GSSENCRequest", body: startupBody(codeGSSENCRequest), want: &pgproto3.GSSEncRequest{}},
		{name: "GSSENCRequest with extra bytes", body: startupBody(codeGSSENCRequest, "\x00\x00\x00\x00"), code: codeProtocolViolation},
		{
			name: "CancelRequest",
			body: cancelBody,
			want: &pgproto3.CancelRequest{ProcessID: 4242, SecretKey: []byte{0xde, 0xad, 0xbe, 0xef}},
		},
		{name: "CancelRequest without key", body: startupBody(codeCancelRequest, "\x00\x00\x10\x92"), code: codeProtocolViolation},
		{name: "CancelRequest code only", body: startupBody(codeCancelRequest), code: codeProtocolViolation},
		{name: "CancelRequest key too long", body: startupBody(codeCancelRequest, strings.Repeat("k", 300)), code: codeProtocolViolation},
		{
			name: "StartupMessage v3",
			body: startupBody(protocolV3, "user\x00bob\x00database\x00acme\x00application_name\x00psql\x00\x00"),
			want: &pgproto3.StartupMessage{ProtocolVersion: protocolV3, Parameters: map[string]string{
				"user": "bob", "database": "acme", "application_name": "psql",
			}},
		},
		{
			name: "StartupMessage empty value",
			body: startupBody(protocolV3, "user\x00bob\x00options\x00\x00\x00"),
			want: &pgproto3.StartupMessage{ProtocolVersion: protocolV3, Parameters: map[string]string{
				"user": "bob", "options": "",
			}},
		},
		{name: "StartupMessage missing terminator", body: startupBody(protocolV3, "user\x00bob\x00"), code: codeProtocolViolation},
		{name: "StartupMessage value not terminated", body: startupBody(protocolV3, "user\x00bob"), code: codeProtocolViolation},
		{name: "StartupMessage trailing junk", body: startupBody(protocolV3, "user\x00bob\x00\x00junk"), code: codeProtocolViolation},
		{name: "StartupMessage terminator not last", body: startupBody(protocolV3, "user\x00bob\x00\x00\x00"), code: codeProtocolViolation},
		{name: "protocol 2.0", body: startupBody(2<<16, "bob\x00"), code: codeFeatureUnsupported},
		{name: "protocol 4.0", body: startupBody(4<<16, "user\x00bob\x00\x00"), code: codeFeatureUnsupported},
		{name: "unknown request code", body: startupBody(1234<<16 | 5555), code: codeFeatureUnsupported},
		{name: "too short", body: []byte{0, 3, 0}, code: codeProtocolViolation},
		{name: "empty", body: nil, code: codeProtocolViolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeStartupPacket(tt.body)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("decodeStartupPacket = %#v, want error %s", got, tt.code)
				}
				wantPgError(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatalf("decodeStartupPacket: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("decodeStartupPacket = %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestDecodeStartupPacketBytesAfterTerminator: PostgreSQL ends the
// parameter list at the first empty name and then requires that terminator
// to be the packet's last byte ("invalid startup packet layout: expected
// terminator as last byte"). Bytes after the terminator are a protocol
// violation, not an extra parameter with an empty name.
func TestDecodeStartupPacketBytesAfterTerminator(t *testing.T) {
	for _, body := range []string{
		"user\x00bob\x00\x00x\x00\x00",                 // junk pair after the terminator
		"\x00\x00user\x00bob\x00\x00",                  // terminator first, parameters after it
		"user\x00bob\x00\x00database\x00other\x00\x00", // a second list smuggled behind the first
	} {
		t.Run(strings.ReplaceAll(body, "\x00", `\0`), func(t *testing.T) {
			got, err := decodeStartupPacket(startupBody(protocolV3, body))
			if err == nil {
				t.Fatalf("decodeStartupPacket accepted %#v, want 08P01", got)
			}
			wantPgError(t, err, codeProtocolViolation)
		})
	}
}

func TestReadStartupPacket(t *testing.T) {
	startup := startupBody(protocolV3, "user\x00bob\x00\x00")
	lengthOnly := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

	tests := []struct {
		name    string
		in      []byte
		want    pgproto3.FrontendMessage
		code    string // *pgError expected
		ioError error  // plain I/O error expected
		rest    string // what must remain unread
	}{
		{name: "SSLRequest", in: withLength(startupBody(codeSSLRequest)), want: &pgproto3.SSLRequest{}},
		{
			name: "SSLRequest then startup stays buffered",
			in:   append(withLength(startupBody(codeSSLRequest)), "next"...),
			want: &pgproto3.SSLRequest{}, rest: "next",
		},
		{
			name: "StartupMessage",
			in:   withLength(startup),
			want: &pgproto3.StartupMessage{ProtocolVersion: protocolV3, Parameters: map[string]string{"user": "bob"}},
		},
		{name: "protocol 2.0", in: withLength(startupBody(2<<16, "bob\x00")), code: codeFeatureUnsupported},
		{name: "length 7", in: append(lengthOnly(7), "abcdefgh"...), code: codeProtocolViolation},
		{name: "length 0", in: lengthOnly(0), code: codeProtocolViolation},
		{name: "negative length", in: lengthOnly(0xffffffff), code: codeProtocolViolation},
		{name: "length 10001", in: lengthOnly(10001), code: codeProtocolViolation},
		{name: "length 2^31-1", in: lengthOnly(0x7fffffff), code: codeProtocolViolation},
		{name: "length 10000 accepted", in: withLength(startupBody(protocolV3, "user\x00bob\x00application_name\x00"+strings.Repeat("a", 10000-4-4-9-17-2)+"\x00\x00")),
			want: &pgproto3.StartupMessage{ProtocolVersion: protocolV3, Parameters: map[string]string{
				"user": "bob", "application_name": strings.Repeat("a", 10000-4-4-9-17-2),
			}}},
		{name: "empty stream", in: nil, ioError: io.EOF},
		{name: "truncated length", in: []byte{0, 0}, ioError: io.ErrUnexpectedEOF},
		{name: "truncated body", in: withLength(startup)[:10], ioError: io.ErrUnexpectedEOF},
		{name: "length without body", in: lengthOnly(8), ioError: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bufio.NewReader(bytes.NewReader(tt.in))
			got, err := readStartupPacket(r)
			switch {
			case tt.code != "":
				if err == nil {
					t.Fatalf("readStartupPacket = %#v, want %s", got, tt.code)
				}
				wantPgError(t, err, tt.code)
				return
			case tt.ioError != nil:
				if !errors.Is(err, tt.ioError) {
					t.Fatalf("readStartupPacket error = %v, want %v", err, tt.ioError)
				}
				var pe *pgError
				if errors.As(err, &pe) {
					t.Fatalf("a short read is not the client's protocol error: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("readStartupPacket: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("readStartupPacket = %#v, want %#v", got, tt.want)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != tt.rest {
				t.Fatalf("left unread %q, want %q", rest, tt.rest)
			}
		})
	}
}

// TestReadStartupPacketHugeLengthAllocatesNothing: the length cap is checked
// before the body is allocated, so a client claiming 2 GB costs nothing.
func TestReadStartupPacketHugeLengthAllocatesNothing(t *testing.T) {
	in := binary.BigEndian.AppendUint32(nil, 0x7fffffff)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 10; i++ {
		if _, err := readStartupPacket(bufio.NewReaderSize(bytes.NewReader(in), 16)); err == nil {
			t.Fatal("readStartupPacket accepted a 2 GB packet")
		}
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("10 refused packets allocated %d bytes", d)
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		in      string
		want    []startupParam
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "   \t ", want: nil},
		{in: "-c a=b", want: []startupParam{{"a", "b"}}},
		{in: "-ca=b", want: []startupParam{{"a", "b"}}},
		{in: "--statement-timeout=5s", want: []startupParam{{"statement_timeout", "5s"}}},
		{in: "--a-b=c-d", want: []startupParam{{"a_b", "c-d"}}},
		{in: "-c work_mem=64MB", want: []startupParam{{"work_mem", "64MB"}}},
		{in: `-c application_name=my\ app`, want: []startupParam{{"application_name", "my app"}}},
		{in: `-c application_name=a\\b`, want: []startupParam{{"application_name", `a\b`}}},
		{in: "-c a=", want: []startupParam{{"a", ""}}},
		{in: "-c a=b=c", want: []startupParam{{"a", "b=c"}}},
		{
			in:   "-c a=1 -cb=2\t--c-d=3\n -c  e=4",
			want: []startupParam{{"a", "1"}, {"b", "2"}, {"c_d", "3"}, {"e", "4"}},
		},
		{in: "  -c a=b  ", want: []startupParam{{"a", "b"}}},
		{in: "-x", wantErr: true},
		{in: "a=b", wantErr: true},
		{in: "-c", wantErr: true},
		{in: "-c a=b -c", wantErr: true},
		{in: "-c noequals", wantErr: true},
		{in: "-c =value", wantErr: true},
		{in: "-c=value", wantErr: true},
		{in: "--", wantErr: true},
		{in: "--name", wantErr: true},
		{in: "--=x", wantErr: true},
		{in: "-", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseOptions(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parseOptions(%q) = %v, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseOptions(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseOptions(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestNegotiation: a newer 3.x client or protocol options get
// NegotiateProtocolVersion naming 3.0 and the options; a plain 3.0 client
// gets none.
func TestNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version uint32
		params  map[string]string
		want    *pgproto3.NegotiateProtocolVersion
	}{
		{"3.0", protocolV3, map[string]string{"user": "a"}, nil},
		{"3.2", 3<<16 | 2, map[string]string{"user": "a"},
			&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0}},
		{"3.0 with options", protocolV3, map[string]string{"user": "a", "_pq_.b": "1", "_pq_.a": "2"},
			&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: []string{"_pq_.a", "_pq_.b"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := negotiation(&pgproto3.StartupMessage{ProtocolVersion: tc.version, Parameters: tc.params})
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("negotiation = %#v, want %#v", got, tc.want)
			}
		})
	}
	body := startupBody(3<<16|2, "user\x00bob\x00\x00")
	msg, err := decodeStartupPacket(body)
	if err != nil {
		t.Fatalf("3.2 startup refused: %v", err)
	}
	if sm := msg.(*pgproto3.StartupMessage); sm.ProtocolVersion != 3<<16|2 || sm.Parameters["user"] != "bob" {
		t.Fatalf("3.2 startup decoded as %#v", sm)
	}
}

// TestTakeTenantOption: pgtenant.tenant is taken out of the startup
// parameters (in options or on its own, any case) and the other options
// stay, so it reaches neither the backend nor the pin.
func TestTakeTenantOption(t *testing.T) {
	tests := []struct {
		name     string
		params   map[string]string
		want     string
		code     string            // SQLSTATE of the expected *pgError
		wantLeft map[string]string // the parameters afterwards
	}{
		{name: "none", params: map[string]string{"user": "bob", "options": "-c work_mem=1MB"},
			wantLeft: map[string]string{"user": "bob", "options": "-c work_mem=1MB"}},
		{name: "only the tenant", params: map[string]string{"user": "bob", "options": "-c pgtenant.tenant=acme"},
			want: "acme", wantLeft: map[string]string{"user": "bob"}},
		{name: "among other options", params: map[string]string{"options": `-c work_mem=1MB -cpgtenant.tenant=acme --application-name=my\ app`},
			want: "acme", wantLeft: map[string]string{"options": `-c work_mem=1MB -c application_name=my\ app`}},
		{name: "name in another case", params: map[string]string{"options": "-c PGTenant.Tenant=acme"},
			want: "acme", wantLeft: map[string]string{}},
		{name: "a startup parameter of its own", params: map[string]string{"user": "bob", "pgtenant.tenant": "acme"},
			want: "acme", wantLeft: map[string]string{"user": "bob"}},
		{name: "twice the same", params: map[string]string{"pgtenant.tenant": "acme", "options": "-c pgtenant.tenant=acme"},
			want: "acme", wantLeft: map[string]string{}},
		{name: "two tenants", params: map[string]string{"pgtenant.tenant": "acme", "options": "-c pgtenant.tenant=globex"},
			code: codeRejectedConnection},
		{name: "two tenants in options", params: map[string]string{"options": "-c pgtenant.tenant=acme -c pgtenant.tenant=globex"},
			code: codeRejectedConnection},
		{name: "empty", params: map[string]string{"options": "-c pgtenant.tenant="}, code: codeUnknownTenant},
		{name: "malformed options are left for checkParams", params: map[string]string{"options": "-c pgtenant.tenant=acme -x"},
			wantLeft: map[string]string{"options": "-c pgtenant.tenant=acme -x"}},
		{name: "an extension's own tenant setting is not ours", params: map[string]string{"options": "-c myext.tenant=acme"},
			wantLeft: map[string]string{"options": "-c myext.tenant=acme"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := takeTenantOption(tt.params)
			if tt.code != "" {
				if err == nil {
					t.Fatalf("takeTenantOption = %q, want %s", got, tt.code)
				}
				wantPgError(t, err, tt.code)
				return
			}
			if err != nil {
				t.Fatalf("takeTenantOption: %v", err)
			}
			if got != tt.want {
				t.Fatalf("tenant = %q, want %q", got, tt.want)
			}
			if !reflect.DeepEqual(tt.params, tt.wantLeft) {
				t.Fatalf("parameters left = %q, want %q", tt.params, tt.wantLeft)
			}
		})
	}
}

// TestTenantOptionNeverInPin: what is left after takeTenantOption renders
// into a pin without pgtenant.tenant, and keeps the other settings.
func TestTenantOptionNeverInPin(t *testing.T) {
	params := map[string]string{"user": "bob", "options": `-c pgtenant.tenant=acme -c statement_timeout=5s`}
	if _, err := takeTenantOption(params); err != nil {
		t.Fatal(err)
	}
	checked, perr := checkParams(params)
	if perr != nil {
		t.Fatal(perr)
	}
	p := buildPin(pinOwner("acme", "u"), "acme", checked)
	if bytes.Contains(bytes.ToLower(p.msgs), []byte("pgtenant.tenant")) {
		t.Fatalf("the pin carries pgtenant.tenant: %q", p.msgs)
	}
	if !bytes.Contains(p.msgs, []byte(`"statement_timeout" TO '5s'`)) {
		t.Fatalf("the pin lost statement_timeout: %q", p.msgs)
	}
}

func TestFormatOptions(t *testing.T) {
	params := []startupParam{{"application_name", `a b\c`}, {"x", "\t\n\r"}, {"work_mem", "1MB"}}
	got, err := parseOptions(formatOptions(params))
	if err != nil || !reflect.DeepEqual(got, params) {
		t.Fatalf("parseOptions(formatOptions(%q)) = %q, %v", params, got, err)
	}
}
