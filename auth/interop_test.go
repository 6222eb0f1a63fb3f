package auth

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgtenant/pgtenant/internal/pgcluster"
)

// wireConn is a Conn over a real socket, as the proxy implements it: it
// reads raw messages with a length cap and hands ReceivePassword the body
// of a 'p' message.
type wireConn struct {
	nc net.Conn
	r  *bufio.Reader
	w  *bufio.Writer
}

func (c *wireConn) Send(msg pgproto3.BackendMessage) error {
	b, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	_, err = c.w.Write(b)
	return err
}

func (c *wireConn) Flush() error         { return c.w.Flush() }
func (c *wireConn) TLS() bool            { return false }
func (c *wireConn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

func (c *wireConn) ReceivePassword() ([]byte, error) {
	typ, b, err := c.readMessage()
	if err != nil {
		return nil, err
	}
	if typ != 'p' {
		return nil, &UnexpectedMessageError{Type: typ}
	}
	return b, nil
}

func (c *wireConn) readMessage() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 || n > MaxPasswordMessageLen {
		return 0, nil, fmt.Errorf("message length %d out of range", n)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(c.r, b)
	return hdr[0], b, err
}

// readStartup reads the startup packet, refusing SSL and GSS encryption.
func (c *wireConn) readStartup() (map[string]string, error) {
	for {
		var l [4]byte
		if _, err := io.ReadFull(c.r, l[:]); err != nil {
			return nil, err
		}
		n := int(binary.BigEndian.Uint32(l[:])) - 4
		if n < 4 || n > 10000 {
			return nil, fmt.Errorf("startup length %d", n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return nil, err
		}
		switch code := binary.BigEndian.Uint32(b); code {
		case 80877103, 80877104: // SSLRequest, GSSENCRequest
			if _, err := c.nc.Write([]byte{'N'}); err != nil {
				return nil, err
			}
			continue
		}
		var sm pgproto3.StartupMessage
		if err := sm.Decode(b); err != nil {
			return nil, err
		}
		return sm.Parameters, nil
	}
}

// authServer accepts connections and runs m on each, as a tiny proxy that
// answers queries with an empty result. Errors go to the client as FATAL,
// and the result of every Authenticate to results.
func authServer(t *testing.T, m Method) (host, port string, results chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	results = make(chan error, 16)
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
				c := &wireConn{nc: nc, r: bufio.NewReader(nc), w: bufio.NewWriter(nc)}
				params, err := c.readStartup()
				if err != nil {
					return
				}
				err = m.Authenticate(context.Background(), c, params["user"])
				results <- err
				var ae *Error
				if errors.As(err, &ae) {
					_ = c.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL",
						Code: ae.Code, Message: ae.Message, Detail: ae.Detail})
				}
				if err != nil {
					_ = c.Flush()
					return
				}
				for _, kv := range [][2]string{{"server_version", "15.0"}, {"client_encoding", "UTF8"},
					{"server_encoding", "UTF8"}, {"DateStyle", "ISO, MDY"}, {"integer_datetimes", "on"},
					{"standard_conforming_strings", "on"}} {
					_ = c.Send(&pgproto3.ParameterStatus{Name: kv[0], Value: kv[1]})
				}
				_ = c.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 1}})
				_ = c.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				_ = c.Flush()
				for {
					typ, _, err := c.readMessage()
					if err != nil || typ == 'X' {
						return
					}
					if typ == 'Q' {
						_ = c.Send(&pgproto3.EmptyQueryResponse{})
						_ = c.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
						_ = c.Flush()
					}
				}
			}()
		}
	}()
	h, p, _ := net.SplitHostPort(ln.Addr().String())
	return h, p, results
}

func result(t *testing.T, results chan error) error {
	t.Helper()
	select {
	case err := <-results:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("no authentication result")
		return nil
	}
}

// interopUsers has one user per kind of secret, all with password
// "s3cret", and a non-ASCII plain password to exercise SASLprep.
func interopUsers(t *testing.T) StaticUsers {
	return StaticUsers{
		"scram": verifierFor(t, "s3cret"),
		"md5":   {Kind: SecretMD5, Text: MD5Hash("md5", "s3cret")},
		"plain": {Kind: SecretPlain, Text: "s3cret"},
		"utf8":  {Kind: SecretPlain, Text: "p\u00e4ss\u00A0w\u00f6rd\u00AD"},
	}
}

// TestPgxInterop logs in with pgx's own client implementations of SCRAM,
// md5 and cleartext against the methods over a real socket.
func TestPgxInterop(t *testing.T) {
	users := interopUsers(t)
	for _, tc := range []struct {
		kind, user, password string
		opts                 Options
		code                 string // "" for success
	}{
		{KindSCRAM, "scram", "s3cret", Options{}, ""},
		{KindSCRAM, "plain", "s3cret", Options{}, ""},
		{KindSCRAM, "utf8", "p\u00e4ss w\u00f6rd", Options{}, ""}, // SASLprep on both sides
		{KindSCRAM, "scram", "wrong", Options{}, CodeInvalidPassword},
		{KindSCRAM, "nobody", "s3cret", Options{}, CodeInvalidPassword},
		{KindSCRAM, "md5", "s3cret", Options{}, CodeInvalidPassword}, // md5 hash cannot do SCRAM
		{KindMD5, "md5", "s3cret", Options{}, ""},
		{KindMD5, "plain", "s3cret", Options{}, ""},
		{KindMD5, "scram", "s3cret", Options{}, ""}, // SCRAM under md5
		{KindMD5, "md5", "wrong", Options{}, CodeInvalidPassword},
		{KindMD5, "nobody", "s3cret", Options{MockMethod: KindMD5}, CodeInvalidPassword},
		{KindPassword, "scram", "s3cret", Options{AllowCleartextWithoutTLS: true}, ""},
		// A plain password is compared as it is, as PostgreSQL compares a
		// cleartext password with a plain one: no SASLprep.
		{KindPassword, "utf8", "p\u00e4ss\u00A0w\u00f6rd\u00AD", Options{AllowCleartextWithoutTLS: true}, ""},
		{KindPassword, "utf8", "p\u00e4ss w\u00f6rd", Options{AllowCleartextWithoutTLS: true}, CodeInvalidPassword},
		{KindPassword, "plain", "wrong", Options{AllowCleartextWithoutTLS: true}, CodeInvalidPassword},
		{KindPassword, "plain", "s3cret", Options{}, CodeInvalidAuthorization},
	} {
		t.Run(fmt.Sprintf("%s/%s/%s", tc.kind, tc.user, tc.password), func(t *testing.T) {
			m, err := NewMethod(tc.kind, users, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			host, port, results := authServer(t, m)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s password='%s' sslmode=disable",
				host, port, tc.user, strings.ReplaceAll(tc.password, "'", `\'`)))
			serverErr := result(t, results)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("connect: %v (server: %v)", err, serverErr)
				}
				conn.Close(ctx)
				return
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != tc.code || pe.Severity != "FATAL" {
				t.Fatalf("connect error %v, want FATAL %s", err, tc.code)
			}
			if tc.code == CodeInvalidPassword && pe.Message != fmt.Sprintf("password authentication failed for user %q", tc.user) {
				t.Fatalf("message %q", pe.Message)
			}
		})
	}
}

// TestPsqlInterop logs in with psql, that is with libpq's SCRAM and md5.
func TestPsqlInterop(t *testing.T) {
	psql := filepath.Join(binDir(), "psql")
	if _, err := os.Stat(psql); err != nil {
		psql, err = exec.LookPath("psql")
		if err != nil {
			t.Skip("psql not installed")
		}
	}
	users := interopUsers(t)
	for _, tc := range []struct {
		kind, user, password string
		ok                   bool
	}{
		{KindSCRAM, "scram", "s3cret", true},
		{KindSCRAM, "plain", "s3cret", true},
		{KindSCRAM, "utf8", "p\u00e4ss w\u00f6rd", true},
		{KindSCRAM, "scram", "wrong", false},
		{KindSCRAM, "nobody", "s3cret", false},
		{KindMD5, "md5", "s3cret", true},
		{KindMD5, "md5", "wrong", false},
	} {
		t.Run(fmt.Sprintf("%s/%s/%s", tc.kind, tc.user, tc.password), func(t *testing.T) {
			m, err := NewMethod(tc.kind, users, Options{})
			if err != nil {
				t.Fatal(err)
			}
			host, port, results := authServer(t, m)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, psql, "-X", "-w", "-c", "",
				fmt.Sprintf("host=%s port=%s user=%s dbname=db sslmode=disable gssencmode=disable", host, port, tc.user))
			cmd.Env = append(os.Environ(), "PGPASSWORD="+tc.password, "LC_ALL=C", "PGCONNECT_TIMEOUT=10")
			out, err := cmd.CombinedOutput()
			serverErr := result(t, results)
			if tc.ok {
				if err != nil || serverErr != nil {
					t.Fatalf("psql: %v\n%s\nserver: %v", err, out, serverErr)
				}
				return
			}
			want := fmt.Sprintf(`FATAL:  password authentication failed for user "%s"`, tc.user)
			if err == nil || !strings.Contains(string(out), want) {
				t.Fatalf("psql: %v\n%s\nwant %q", err, out, want)
			}
		})
	}
}

// binDir is where the PostgreSQL binaries are, as internal/pgcluster
// finds them.
func binDir() string {
	if d := os.Getenv(pgcluster.BinDirEnv); d != "" {
		return d
	}
	return pgcluster.DefaultBinDir
}
