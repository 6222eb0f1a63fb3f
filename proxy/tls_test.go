package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// tlsFixture is a Server offering TLS with a certificate for "localhost"
// from a throwaway CA, and the pool a client trusts it with.
type tlsFixture struct {
	srv   *Server
	roots *x509.CertPool
	logs  *bytes.Buffer
	mu    *sync.Mutex
}

func newTLSFixture(t *testing.T, clientTLS string) tlsFixture {
	t.Helper()
	ca, err := pgcluster.NewCA("proxy test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := leaf.WriteFiles(t.TempDir(), "server.crt", "server.key")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.TLSCert, cfg.TLSKey, cfg.ClientTLS = certFile, keyFile, clientTLS
	st, err := newServerTLS(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs, mu := &bytes.Buffer{}, &sync.Mutex{}
	log := slog.New(slog.NewTextHandler(lockedWriter{mu, logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := &Server{cfg: cfg, log: log, tls: st, byKey: map[uint32]*session{}}
	return tlsFixture{srv: srv, roots: ca.Pool(), logs: logs, mu: mu}
}

func (f tlsFixture) logged() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type admitResult struct {
	sm  *pgproto3.StartupMessage
	err error
	s   *session
}

// admitOn runs admit for a new session of srv on one end of a pipe and
// returns the other end, for the test to play the client, and the result.
func admitOn(t *testing.T, srv *Server) (net.Conn, <-chan admitResult) {
	t.Helper()
	server, client := net.Pipe()
	t.Cleanup(func() { server.Close(); client.Close() })
	deadline := time.Now().Add(30 * time.Second) // a hung test fails instead of hanging
	_ = server.SetDeadline(deadline)
	_ = client.SetDeadline(deadline)
	done := make(chan admitResult, 1)
	go func() {
		s := newSession(srv, server)
		sm, err := s.admit()
		if err != nil {
			// As serve does: the client hears a refusal before the close.
			var pe *pgError
			if errors.As(err, &pe) {
				s.fail(pe)
			}
			_ = s.nc.Close()
		}
		done <- admitResult{sm, err, s}
	}()
	return client, done
}

func startupPacket(user string) []byte {
	b, _ := (&pgproto3.StartupMessage{ProtocolVersion: protocolV3, Parameters: map[string]string{"user": user}}).Encode(nil)
	return b
}

func sslRequestPacket() []byte {
	b, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	return b
}

// readRefusal reads the ErrorResponse a refused client gets.
func readRefusal(t *testing.T, c io.Reader) *pgproto3.ErrorResponse {
	t.Helper()
	fe := pgproto3.NewFrontend(c, io.Discard)
	msg, err := fe.Receive()
	if err != nil {
		t.Fatalf("reading the refusal: %v", err)
	}
	er, ok := msg.(*pgproto3.ErrorResponse)
	if !ok {
		t.Fatalf("got %T, want ErrorResponse", msg)
	}
	return er
}

func wantAdmitted(t *testing.T, done <-chan admitResult, user string, wantTLS bool) *session {
	t.Helper()
	r := <-done
	if r.err != nil {
		t.Fatalf("admit: %v", r.err)
	}
	if r.sm == nil || r.sm.Parameters["user"] != user {
		t.Fatalf("admit returned %#v, want the startup message of %s", r.sm, user)
	}
	if r.s.TLS() != wantTLS {
		t.Fatalf("session TLS() = %v, want %v", r.s.TLS(), wantTLS)
	}
	return r.s
}

// TestAdmitDirectTLS: a client whose first byte is a TLS record (PostgreSQL
// 17 sslnegotiation=direct) gets a handshake at once, and its startup
// message is then read over TLS. Go's ClientHello (with a post-quantum key
// share) is larger than the first read, so this also covers replaying the
// part of it read before the session knew it was TLS.
func TestAdmitDirectTLS(t *testing.T) {
	f := newTLSFixture(t, config.ClientTLSAllow)
	client, done := admitOn(t, f.srv)
	tc := tls.Client(client, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: []string{alpnPostgres}})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("direct TLS handshake: %v", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != alpnPostgres {
		t.Fatalf("negotiated ALPN %q, want %q", p, alpnPostgres)
	}
	if _, err := tc.Write(startupPacket("bob")); err != nil {
		t.Fatal(err)
	}
	s := wantAdmitted(t, done, "bob", true)
	if got := s.serverName(); got != "localhost" {
		t.Fatalf("serverName() = %q, want localhost", got)
	}
	if _, ok := s.cw.w.(*tls.Conn); !ok {
		t.Fatalf("the session writes to %T, want the *tls.Conn", s.cw.w)
	}
}

// TestAdmitDirectTLSRequiresALPN: a direct-TLS client that does not
// negotiate "postgresql" is refused in the handshake and never admitted.
func TestAdmitDirectTLSRequiresALPN(t *testing.T) {
	for name, protos := range map[string][]string{"no ALPN": nil, "other protocols": {"h2", "http/1.1"}} {
		t.Run(name, func(t *testing.T) {
			f := newTLSFixture(t, config.ClientTLSAllow)
			client, done := admitOn(t, f.srv)
			tc := tls.Client(client, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: protos})
			if err := tc.Handshake(); err == nil {
				t.Fatalf("direct TLS with ALPN %q: handshake succeeded, want refusal", protos)
			}
			r := <-done
			if r.err == nil || r.sm != nil {
				t.Fatalf("admit = %v, %v; want an error", r.sm, r.err)
			}
			if !strings.Contains(r.err.Error(), "ALPN") {
				t.Fatalf("admit error %q does not say ALPN is the reason", r.err)
			}
		})
	}
}

// TestAdmitDirectTLSWhenOff: with no TLS on offer, a client starting with a
// TLS record is closed without a plaintext reply it could only misread.
func TestAdmitDirectTLSWhenOff(t *testing.T) {
	srv := &Server{cfg: config.Default(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	client, done := admitOn(t, srv)
	go func() {
		tc := tls.Client(client, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpnPostgres}})
		_ = tc.Handshake()
	}()
	r := <-done
	if !errors.Is(r.err, errTLSOff) {
		t.Fatalf("admit error = %v, want errTLSOff", r.err)
	}
}

// TestAdmitSSLRequest: 'S', a handshake, and the startup message over TLS.
// A client offering ALPN must offer postgresql; one offering none is fine
// (libpq before 17 sends none).
func TestAdmitSSLRequest(t *testing.T) {
	for _, tc := range []struct {
		name   string
		protos []string
		ok     bool
	}{
		{"no ALPN", nil, true},
		{"postgresql", []string{alpnPostgres}, true},
		{"postgresql among others", []string{"h2", alpnPostgres}, true},
		{"http/1.1 only", []string{"http/1.1"}, false},
		{"h2 only", []string{"h2"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTLSFixture(t, config.ClientTLSAllow)
			client, done := admitOn(t, f.srv)
			if _, err := client.Write(sslRequestPacket()); err != nil {
				t.Fatal(err)
			}
			var answer [1]byte
			if _, err := io.ReadFull(client, answer[:]); err != nil || answer[0] != 'S' {
				t.Fatalf("answer to SSLRequest = %q, %v; want S", answer[:], err)
			}
			conn := tls.Client(client, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: tc.protos})
			err := conn.Handshake()
			if !tc.ok {
				if err == nil {
					t.Fatalf("handshake with ALPN %q succeeded, want refusal", tc.protos)
				}
				if r := <-done; r.err == nil {
					t.Fatalf("admitted a client offering ALPN %q", tc.protos)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if _, err := conn.Write(startupPacket("bob")); err != nil {
				t.Fatal(err)
			}
			wantAdmitted(t, done, "bob", true)
		})
	}
}

// TestAdmitSSLRequestDeclined: without a certificate, or with client-tls
// disable, an SSLRequest gets 'N' and the client carries on in plaintext.
func TestAdmitSSLRequestDeclined(t *testing.T) {
	plain := &Server{cfg: config.Default(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	disabled := newTLSFixture(t, config.ClientTLSDisable).srv
	if disabled.tls != nil {
		t.Fatal("client-tls disable still offers TLS")
	}
	for name, srv := range map[string]*Server{"no certificate": plain, "client-tls disable": disabled} {
		t.Run(name, func(t *testing.T) {
			client, done := admitOn(t, srv)
			if _, err := client.Write(sslRequestPacket()); err != nil {
				t.Fatal(err)
			}
			var answer [1]byte
			if _, err := io.ReadFull(client, answer[:]); err != nil || answer[0] != 'N' {
				t.Fatalf("answer to SSLRequest = %q, %v; want N", answer[:], err)
			}
			if _, err := client.Write(startupPacket("bob")); err != nil {
				t.Fatal(err)
			}
			wantAdmitted(t, done, "bob", false)
		})
	}
}

// TestAdmitPlaintextBehindSSLRequest: bytes sent behind the SSLRequest
// before the answer would be read as if they had come over TLS
// (CVE-2021-23214). They are refused with 08P01 and no 'S' is sent.
func TestAdmitPlaintextBehindSSLRequest(t *testing.T) {
	f := newTLSFixture(t, config.ClientTLSAllow)
	client, done := admitOn(t, f.srv)
	go func() { _, _ = client.Write(append(sslRequestPacket(), startupPacket("mallory")...)) }()
	er := readRefusal(t, client)
	if er.Code != codeProtocolViolation {
		t.Fatalf("SQLSTATE %s (%s), want 08P01", er.Code, er.Message)
	}
	if r := <-done; r.sm != nil {
		t.Fatalf("admitted %v", r.sm.Parameters)
	}
}

// TestAdmitSecondSSLRequest: one TLS negotiation per connection.
func TestAdmitSecondSSLRequest(t *testing.T) {
	f := newTLSFixture(t, config.ClientTLSAllow)
	client, done := admitOn(t, f.srv)
	tc := tls.Client(client, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: []string{alpnPostgres}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = tc.Write(sslRequestPacket()) }()
	if er := readRefusal(t, tc); er.Code != codeProtocolViolation {
		t.Fatalf("SQLSTATE %s (%s), want 08P01", er.Code, er.Message)
	}
	go func() { _, _ = io.Copy(io.Discard, tc) }() // take the close_notify alert, so the close does not wait for it
	if r := <-done; r.sm != nil {
		t.Fatalf("admitted %v", r.sm.Parameters)
	}
}

// TestAdmitRequire: with client-tls require a plaintext startup message is
// refused with 28000 and a message that says what to do; over TLS it is
// admitted.
func TestAdmitRequire(t *testing.T) {
	f := newTLSFixture(t, config.ClientTLSRequire)
	client, done := admitOn(t, f.srv)
	go func() { _, _ = client.Write(startupPacket("bob")) }()
	er := readRefusal(t, client)
	if er.Code != codeInvalidAuthorization || er.Severity != "FATAL" || !strings.Contains(er.Message, "sslmode=require") {
		t.Fatalf("refusal = %s %s %q, want FATAL 28000 naming sslmode=require", er.Severity, er.Code, er.Message)
	}
	if r := <-done; r.sm != nil {
		t.Fatalf("admitted %v over plaintext", r.sm.Parameters)
	}

	client, done = admitOn(t, f.srv)
	tc := tls.Client(client, &tls.Config{RootCAs: f.roots, ServerName: "localhost", NextProtos: []string{alpnPostgres}})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Write(startupPacket("bob")); err != nil {
		t.Fatal(err)
	}
	wantAdmitted(t, done, "bob", true)
}

// TestAdmitRequireHonoursCancel: a CancelRequest needs no TLS even under
// client-tls require (PostgreSQL acts on it too: it carries a secret key,
// and clients such as libpq send it over a fresh plaintext connection).
func TestAdmitRequireHonoursCancel(t *testing.T) {
	f := newTLSFixture(t, config.ClientTLSRequire)
	// A registered session with nothing running: the cancel reaches it and
	// is dropped there, which the debug log says.
	tnc, tpeer := net.Pipe()
	t.Cleanup(func() { tnc.Close(); tpeer.Close() })
	target := newSession(f.srv, tnc)
	f.srv.assignKey(target)

	client, done := admitOn(t, f.srv)
	req, _ := (&pgproto3.CancelRequest{ProcessID: target.key.pid, SecretKey: target.key.secret[:]}).Encode(nil)
	if _, err := client.Write(req); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.sm != nil {
		t.Fatalf("admit = %v, %v; want nil, nil for a cancel", r.sm, r.err)
	}
	if logs := f.logged(); !strings.Contains(logs, "cancel request with nothing running") {
		t.Fatalf("the cancel did not reach its session; log:\n%s", logs)
	}
}

// TestReplayConn: the bytes read before the handshake come first, then the
// socket.
func TestReplayConn(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() { _, _ = b.Write([]byte("world")) }()
	rc := &replayConn{Conn: a, pending: []byte("hello ")}
	got := make([]byte, 0, 16)
	buf := make([]byte, 4)
	for len(got) < len("hello world") {
		n, err := rc.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "hello world" || rc.pending != nil {
		t.Fatalf("read %q (pending %q), want hello world and nothing pending", got, rc.pending)
	}
}

// TestServerTLSReload: a reload swaps the certificate; a failed one keeps
// the certificate in force.
func TestServerTLSReload(t *testing.T) {
	f := newTLSFixture(t, config.ClientTLSAllow)
	st := f.srv.tls
	first := st.cert.Load()

	ca2, err := pgcluster.NewCA("second CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf2, err := ca2.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(st.keyFile, []byte("not a key")); err != nil {
		t.Fatal(err)
	}
	if err := st.reload(); err == nil {
		t.Fatal("reload of a broken key succeeded")
	}
	if st.cert.Load() != first {
		t.Fatal("a failed reload replaced the certificate")
	}
	if err := writeFile(st.certFile, leaf2.CertPEM); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(st.keyFile, leaf2.KeyPEM); err != nil {
		t.Fatal(err)
	}
	if err := st.reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	got := st.cert.Load()
	if got == first || !bytes.Equal(got.Certificate[0], mustLeafDER(t, leaf2.CertPEM)) {
		t.Fatal("reload did not put the new certificate in force")
	}
}

// TestDirectTLSByteIsNoLength: the first byte of any startup packet
// pgtenant accepts is 0, so a TLS record can never be taken for one.
func TestDirectTLSByteIsNoLength(t *testing.T) {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], maxStartupPacket)
	if b[0] == tlsRecordHandshake || b[0] != 0 {
		t.Fatalf("a %d-byte startup packet begins with %#x", maxStartupPacket, b[0])
	}
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }

func mustLeafDER(t *testing.T, certPEM []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no PEM block in the certificate")
	}
	return block.Bytes
}
