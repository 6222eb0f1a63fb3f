package proxy

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Admission: the first packets of a connection have no type byte, only a
// length and a request code. PostgreSQL caps them at 10000 bytes
// (MAX_STARTUP_PACKET_LENGTH); so do we, before allocating anything.
const maxStartupPacket = 10000

const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	protocolV3        = 196608 // 3.0
)

// readStartupPacket reads one length-prefixed startup-phase packet and
// decodes it into *pgproto3.StartupMessage, *pgproto3.SSLRequest,
// *pgproto3.GSSEncRequest or *pgproto3.CancelRequest.
func readStartupPacket(r io.Reader) (pgproto3.FrontendMessage, error) {
	var lenBuf [4]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(lenBuf[:])))
	if n < 8 || n > maxStartupPacket {
		return nil, fatalf(codeProtocolViolation, "invalid startup packet length %d", n)
	}
	// Capped, but still only claimed: a connection that sends a length and
	// stops costs what it sent, not 10000 bytes.
	body, err := readWhole(r, n-4)
	if err != nil {
		return nil, err
	}
	return decodeStartupPacket(body)
}

// decodeStartupPacket decodes a startup-phase packet body (after the length).
func decodeStartupPacket(body []byte) (pgproto3.FrontendMessage, error) {
	if len(body) < 4 {
		return nil, fatalf(codeProtocolViolation, "startup packet too short")
	}
	code := binary.BigEndian.Uint32(body)
	switch code {
	case codeSSLRequest:
		if len(body) != 4 {
			return nil, fatalf(codeProtocolViolation, "malformed SSLRequest")
		}
		return &pgproto3.SSLRequest{}, nil
	case codeGSSENCRequest:
		if len(body) != 4 {
			return nil, fatalf(codeProtocolViolation, "malformed GSSENCRequest")
		}
		return &pgproto3.GSSEncRequest{}, nil
	case codeCancelRequest:
		msg := &pgproto3.CancelRequest{}
		if err := msg.Decode(body); err != nil {
			return nil, fatalf(codeProtocolViolation, "malformed CancelRequest: %v", err)
		}
		return msg, nil
	default:
		if code>>16 != 3 {
			break
		}
		// Any 3.x: pgtenant speaks 3.0 and says so with
		// NegotiateProtocolVersion after admission, as PostgreSQL does, so
		// a newer client (libpq 18 asks for 3.2) carries on in 3.0.
		// pgproto3 only decodes the versions it knows, so decode a copy
		// relabelled 3.0 and keep the version the client asked for.
		relabelled := append([]byte(nil), body...)
		binary.BigEndian.PutUint32(relabelled, protocolV3)
		msg := &pgproto3.StartupMessage{}
		if err := msg.Decode(relabelled); err != nil {
			return nil, fatalf(codeProtocolViolation, "malformed startup packet: %v", err)
		}
		if _, ok := msg.Parameters[""]; ok {
			// pgproto3 reads bytes after the terminator as one more
			// parameter with an empty name; PostgreSQL refuses them.
			return nil, fatalf(codeProtocolViolation, "malformed startup packet: invalid parameter name")
		}
		msg.ProtocolVersion = code
		return msg, nil
	}
	{
		return nil, fatalf(codeFeatureUnsupported,
			"unsupported frontend protocol %d.%d: pgtenant speaks 3.0", code>>16, code&0xffff)
	}
}

// negotiation returns the NegotiateProtocolVersion a client must get: when
// it asked for a 3.x newer than 3.0, or for protocol options (_pq_.*),
// none of which pgtenant supports. Nil when none is due.
func negotiation(sm *pgproto3.StartupMessage) *pgproto3.NegotiateProtocolVersion {
	var unknown []string
	for name := range sm.Parameters {
		if strings.HasPrefix(name, "_pq_.") {
			unknown = append(unknown, name)
		}
	}
	if sm.ProtocolVersion == protocolV3 && len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown}
}

// startupParam is one run-time parameter a client asked for at startup.
type startupParam struct{ Name, Value string }

// parseOptions splits a startup `options` value the way PostgreSQL does:
// arguments separated by unescaped white space, backslash escapes the next
// character, and each argument is `-c name=value`, `-cname=value` or
// `--name=value` (dashes in the name become underscores).
func parseOptions(s string) ([]startupParam, error) {
	var args []string
	var cur strings.Builder
	inArg := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			// A backslash escapes the next byte; a trailing one is dropped,
			// as PostgreSQL drops it.
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
				inArg = true
			}
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	var params []startupParam
	for i := 0; i < len(args); i++ {
		a := args[i]
		var nv string
		switch {
		case a == "-c":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("options: -c needs name=value")
			}
			i++
			nv = args[i]
		case strings.HasPrefix(a, "-c"):
			nv = a[2:]
		case strings.HasPrefix(a, "--"):
			nv = a[2:]
		default:
			return nil, fmt.Errorf("options: unsupported argument %q (use -c name=value)", a)
		}
		eq := strings.IndexByte(nv, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("options: %q is not name=value", nv)
		}
		// PostgreSQL turns dashes in the name into underscores for both
		// forms (-c statement-timeout=5s).
		name := strings.ReplaceAll(nv[:eq], "-", "_")
		params = append(params, startupParam{Name: name, Value: nv[eq+1:]})
	}
	return params, nil
}

// admit reads startup packets until a StartupMessage arrives, and sets up
// TLS on the way: a client whose first byte is a TLS record gets a direct
// TLS handshake (tls.go); an SSLRequest is answered 'S' and a handshake
// when pgtenant offers TLS, else 'N', and the client goes on in plaintext.
// GSSENCRequest is always declined. A CancelRequest is acted on, with or
// without TLS as PostgreSQL does, and the connection ends: admit then
// returns nil, nil.
func (s *session) admit() (*pgproto3.StartupMessage, error) {
	if err := s.admitDirectTLS(); err != nil {
		return nil, err
	}
	for {
		msg, err := readStartupPacket(s.cr)
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if s.cr.Buffered() > 0 {
				// Bytes behind the request before our answer: a client
				// trying to smuggle plaintext past the negotiation
				// (CVE-2021-23214): they would count as sent under TLS.
				return nil, fatalf(codeProtocolViolation, "unexpected data after encryption request")
			}
			_, isSSL := m.(*pgproto3.SSLRequest)
			if isSSL && s.TLS() {
				// PostgreSQL too allows one negotiation per connection.
				return nil, fatalf(codeProtocolViolation, "SSLRequest on a connection that already uses TLS")
			}
			if !isSSL || s.srv.tls == nil {
				if _, err := s.nc.Write([]byte{'N'}); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := s.nc.Write([]byte{'S'}); err != nil {
				return nil, err
			}
			if err := s.startTLS(false); err != nil {
				return nil, err
			}
		case *pgproto3.CancelRequest:
			s.srv.cancel(m.ProcessID, m.SecretKey)
			return nil, nil
		case *pgproto3.StartupMessage:
			if s.srv.tls != nil && s.srv.tls.require && !s.TLS() {
				return nil, &pgError{Severity: "FATAL", Code: codeInvalidAuthorization,
					Message: "pgtenant requires TLS: connect with sslmode=require (or verify-full)",
					Hint:    "This server has client-tls require: connections without TLS are refused."}
			}
			return m, nil
		}
	}
}

// tenantOption is the run-time parameter a client names its tenant with,
// in its startup options (options='-c pgtenant.tenant=acme') or, the same
// to PostgreSQL, as a startup parameter of its own. It is pgtenant's:
// takeTenantOption removes it, so it never reaches a backend.
const tenantOption = "pgtenant.tenant"

// takeTenantOption removes every pgtenant.tenant setting from a client's
// startup parameters, in options or on its own (the name in any case, as
// PostgreSQL parameter names are), and returns the tenant it names, "" when
// none. The remaining options are rewritten without it. Several settings
// must agree. Malformed options are left as they are, for checkParams to
// refuse.
func takeTenantOption(params map[string]string) (string, error) {
	var values []string
	for name, value := range params {
		if strings.EqualFold(name, tenantOption) {
			values = append(values, value)
			delete(params, name)
		}
	}
	if opts, ok := params["options"]; ok {
		parsed, err := parseOptions(opts)
		if err == nil {
			kept := parsed[:0]
			for _, o := range parsed {
				if strings.EqualFold(o.Name, tenantOption) {
					values = append(values, o.Value)
					continue
				}
				kept = append(kept, o)
			}
			if len(kept) < len(parsed) {
				if len(kept) == 0 {
					delete(params, "options")
				} else {
					params["options"] = formatOptions(kept)
				}
			}
		}
	}
	if len(values) == 0 {
		return "", nil
	}
	slices.Sort(values)
	values = slices.Compact(values)
	if len(values) > 1 {
		return "", fatalf(codeRejectedConnection, "the startup parameters name two tenants: %s %q and %q",
			tenantOption, values[0], values[1])
	}
	if values[0] == "" {
		return "", &pgError{Severity: "FATAL", Code: codeUnknownTenant,
			Message: "startup option pgtenant.tenant is empty",
			Hint:    "Name a tenant, as in options='-c pgtenant.tenant=acme'."}
	}
	return values[0], nil
}

// formatOptions writes params as an options value that parseOptions reads
// back as params: -c name=value, with white space and backslashes escaped.
func formatOptions(params []startupParam) string {
	var b strings.Builder
	for i, p := range params {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-c ")
		writeOptionEscaped(&b, p.Name)
		b.WriteByte('=')
		writeOptionEscaped(&b, p.Value)
	}
	return b.String()
}

func writeOptionEscaped(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
}
