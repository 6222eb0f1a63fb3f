package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"

	"github.com/pgtenant/pgtenant/config"
)

// TLS with clients. A client gets TLS in one of two ways:
//
//   - negotiated: it sends an SSLRequest, pgtenant answers 'S' and the TLS
//     handshake follows on the same socket (every libpq, pgx, JDBC);
//   - direct (PostgreSQL 17, sslnegotiation=direct): its first byte is
//     already a TLS handshake record, saving a round trip. Such a client
//     must negotiate the ALPN protocol "postgresql", so that a TLS
//     connection meant for another protocol (an HTTPS client pointed at the
//     wrong port) can never be taken for a PostgreSQL session.
//
// In both, a client that offers ALPN at all must offer "postgresql", as
// PostgreSQL requires. After the handshake the session's socket, reader and
// writer are the *tls.Conn; nothing else about the session changes.

// alpnPostgres is the ALPN protocol name PostgreSQL 17 registered.
const alpnPostgres = "postgresql"

// tlsRecordHandshake is the first byte of a TLS connection (a handshake
// record). A startup packet begins with its length, at most 10000, so its
// first byte is always 0: the two cannot be confused.
const tlsRecordHandshake = 0x16

// serverTLS is pgtenant's TLS state for clients: the certificate in force
// and the two handshake configurations, built once and shared by every
// connection (a per-connection config would cost every client memory).
type serverTLS struct {
	// require: clients that do not use TLS are refused (client-tls require).
	require bool

	certFile, keyFile string
	// cert is the certificate in force. A reload swaps it whole, so a
	// handshake sees either the old pair or the new one, never a mix;
	// connections already established keep the session they negotiated.
	cert atomic.Pointer[tls.Certificate]

	// negotiated serves clients that sent an SSLRequest, direct those that
	// began with a TLS record.
	negotiated, direct *tls.Config
}

// newServerTLS loads the certificate cfg names. It returns nil, nil when
// pgtenant does not offer TLS: no certificate, or client-tls disable.
func newServerTLS(cfg config.Config) (*serverTLS, error) {
	if cfg.TLSCert == "" || cfg.ClientTLS == config.ClientTLSDisable {
		return nil, nil
	}
	t := &serverTLS{
		require:  cfg.ClientTLS == config.ClientTLSRequire,
		certFile: cfg.TLSCert,
		keyFile:  cfg.TLSKey,
	}
	if err := t.reload(); err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{alpnPostgres},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cert.Load(), nil
		},
	}
	t.negotiated = base.Clone()
	t.negotiated.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		// Go would let a client that offers only http/1.1 through without
		// ALPN; PostgreSQL refuses any offer that lacks postgresql.
		if len(h.SupportedProtos) > 0 && !slices.Contains(h.SupportedProtos, alpnPostgres) {
			return nil, fmt.Errorf("client offered ALPN protocols %q, not %q", h.SupportedProtos, alpnPostgres)
		}
		return nil, nil // nil: use the config as it is
	}
	t.direct = base.Clone()
	t.direct.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if !slices.Contains(h.SupportedProtos, alpnPostgres) {
			return nil, fmt.Errorf("direct TLS without ALPN protocol %q (client offered %q): "+
				"PostgreSQL 17 clients send it with sslnegotiation=direct", alpnPostgres, h.SupportedProtos)
		}
		return nil, nil
	}
	return t, nil
}

// reload rereads the certificate and key files and puts them in force. On
// error the certificate in force stays: a half-copied file during a
// rotation must not take TLS down.
func (t *serverTLS) reload() error {
	cert, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
	if err != nil {
		return fmt.Errorf("tls-cert %s / tls-key %s: %w", t.certFile, t.keyFile, err)
	}
	t.cert.Store(&cert)
	return nil
}

// errTLSOff: a client began with a TLS handshake while pgtenant offers no
// TLS. It is not told anything: it expects TLS records, and a plaintext
// ErrorResponse would only be misread.
var errTLSOff = errors.New("client began with a TLS handshake (sslnegotiation=direct) " +
	"but TLS is off: set tls-cert and tls-key, and client-tls allow or require")

// admitDirectTLS does the handshake of a client whose first byte is a TLS
// record. It only peeks, so a client that sent a startup packet finds it
// still unread.
func (s *session) admitDirectTLS() error {
	b, err := s.cr.Peek(1)
	if err != nil {
		return err
	}
	if b[0] != tlsRecordHandshake {
		return nil
	}
	if s.srv.tls == nil {
		return errTLSOff
	}
	return s.startTLS(true)
}

// startTLS runs the TLS handshake on the client's socket and moves the
// session onto the *tls.Conn. For a direct client, the start of its
// ClientHello may already sit in s.cr (read with the peek that told it
// apart): the handshake reads those bytes first. In the negotiated flow
// admit has checked that nothing is buffered.
func (s *session) startTLS(direct bool) error {
	cfg := s.srv.tls.negotiated
	var conn net.Conn = s.nc
	if direct {
		cfg = s.srv.tls.direct
		if n := s.cr.Buffered(); n > 0 {
			b, _ := s.cr.Peek(n)
			conn = &replayConn{Conn: s.nc, pending: bytes.Clone(b)}
		}
	}
	tc := tls.Server(conn, cfg)
	// The startup deadline set on the socket bounds the handshake too.
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	if direct && tc.ConnectionState().NegotiatedProtocol != alpnPostgres {
		// GetConfigForClient has refused these already; this keeps the
		// rule true should the configuration ever change.
		return fmt.Errorf("direct TLS without ALPN protocol %q", alpnPostgres)
	}
	s.nc = tc
	// The old reader holds nothing (its bytes went to the handshake) and
	// only a small inline array, so it is simply dropped.
	s.cr = newInBuf(tc)
	s.cw.Reset(tc)
	return nil
}

// replayConn is a net.Conn whose reads return pending first. It carries
// the bytes of a ClientHello that were read before the session knew the
// client spoke TLS; once they are consumed it holds nothing.
type replayConn struct {
	net.Conn
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		return c.Conn.Read(p)
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	if len(c.pending) == 0 {
		c.pending = nil
	}
	return n, nil
}

// serverName is the host name the client sent in TLS SNI, "" without TLS
// or SNI.
func (s *session) serverName() string {
	if tc, ok := s.nc.(*tls.Conn); ok {
		return tc.ConnectionState().ServerName
	}
	return ""
}

// clientTLSMode says, for the start-up log line, what TLS clients get.
func clientTLSMode(t *serverTLS) string {
	switch {
	case t == nil:
		return "off"
	case t.require:
		return config.ClientTLSRequire
	default:
		return config.ClientTLSAllow
	}
}
