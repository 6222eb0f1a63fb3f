package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

// flakyListener fails its first failures accepts with err, then hands out
// the conns of next, then blocks until closed.
type flakyListener struct {
	err      error
	failures int
	next     chan net.Conn

	mu      sync.Mutex
	accepts int // calls to Accept
	closed  chan struct{}
	once    sync.Once
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	l.accepts++
	fail := l.accepts <= l.failures
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", l.err)}
	}
	select {
	case nc := <-l.next:
		return nc, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *flakyListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *flakyListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6432} }

func testServer(cfg config.Config, logs io.Writer) *Server {
	return NewServer(cfg, slog.New(slog.NewTextHandler(logs, nil)), nil, nil, nil)
}

// An accept loop that runs out of file descriptors waits and tries again,
// logs the burst once, and serves the next connection.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED} {
		t.Run(errno.Error(), func(t *testing.T) {
			const failures = 6
			ln := &flakyListener{err: errno, failures: failures, next: make(chan net.Conn, 1), closed: make(chan struct{})}
			logs, mu := &bytes.Buffer{}, &sync.Mutex{}
			srv := testServer(config.Default(), lockedWriter{mu, logs})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ctx, ln) }()

			server, client := net.Pipe()
			defer client.Close()
			_ = client.SetDeadline(time.Now().Add(10 * time.Second))
			ln.next <- server
			// Served: an SSLRequest is answered (no TLS configured: 'N').
			if _, err := client.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil {
				t.Fatalf("write SSLRequest: %v", err)
			}
			var b [1]byte
			if _, err := io.ReadFull(client, b[:]); err != nil || b[0] != 'N' {
				t.Fatalf("after %d failed accepts: read %q, %v; want 'N'", failures, b[0], err)
			}
			client.Close() // the session ends; shutdown has none to wait for
			cancel()
			select {
			case err := <-served:
				if err != nil {
					t.Fatalf("Serve after cancel: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Serve did not return after cancel")
			}
			mu.Lock()
			logged := logs.String()
			mu.Unlock()
			if n := strings.Count(logged, "accept failed, retrying"); n != 1 {
				t.Errorf("burst of %d failures logged %d times, want once:\n%s", failures, n, logged)
			}
			if !strings.Contains(logged, errno.Error()) || !strings.Contains(logged, "failed_accepts=6") {
				t.Errorf("log does not name the error and the count:\n%s", logged)
			}
		})
	}
}

// A listener closed under Serve (not by ctx) ends it with an error.
func TestServeEndsOnClosedListener(t *testing.T) {
	ln := &flakyListener{next: make(chan net.Conn), closed: make(chan struct{})}
	srv := testServer(config.Default(), io.Discard)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()
	ln.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve: %v, want net.ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after its listener closed")
	}
}

// startupProbe dials srvAddr from the loopback address from and says
// whether the connection holds a startup slot (an SSLRequest is answered
// 'N') or was refused (FATAL 53300, then the close). The connection stays
// open in the first case.
func startupProbe(t *testing.T, srvAddr, from string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(30 * time.Second))
	// A refused connection may be closed before the request arrives.
	_, _ = nc.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f})
	r := bufio.NewReader(nc)
	first, err := r.Peek(1)
	if err != nil {
		t.Fatalf("from %s: %v", from, err)
	}
	if first[0] == 'N' {
		return nc, true
	}
	msg, err := pgproto3.NewFrontend(r, nil).Receive()
	er, ok := msg.(*pgproto3.ErrorResponse)
	if err != nil || !ok || er.Code != codeTooManyClients || er.Severity != "FATAL" ||
		!strings.Contains(er.Message, "too many connections still starting up") {
		t.Fatalf("from %s: got %#v (%v), want FATAL 53300", from, msg, err)
	}
	// A request that arrived after pgtenant read what was queued makes the
	// close a reset; either way the connection is over.
	if _, err := r.ReadByte(); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("from %s: not closed after 53300: %v", from, err)
	}
	return nil, false
}

// Connections before their startup packet count toward max-startup-conn
// and max-startup-per-addr, and give their slot back when they leave.
func TestStartupSlots(t *testing.T) {
	cfg := config.Default()
	cfg.MaxStartupConn, cfg.MaxStartupPerAddr = 3, 2
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := testServer(cfg, io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	var held []net.Conn
	defer func() {
		// Their sessions end, so shutdown has none to wait for.
		for _, nc := range held {
			nc.Close()
		}
		cancel()
		<-served
	}()
	addr := ln.Addr().String()

	a1, ok1 := startupProbe(t, addr, "127.0.0.1")
	a2, ok2 := startupProbe(t, addr, "127.0.0.1")
	if _, ok := startupProbe(t, addr, "127.0.0.1"); !ok1 || !ok2 || ok {
		t.Fatalf("from one address: %v %v %v, want two in and the third refused (max-startup-per-addr 2)", ok1, ok2, ok)
	}
	b, ok := startupProbe(t, addr, "127.0.0.2")
	if !ok {
		t.Fatal("another address was refused with a slot free")
	}
	held = append(held, a2, b)
	if _, ok := startupProbe(t, addr, "127.0.0.3"); ok {
		t.Fatal("a fourth connection got in with max-startup-conn 3")
	}
	// One leaves: its slot is free again, for its own address too.
	a1.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if nc, ok := startupProbe(t, addr, "127.0.0.1"); ok {
			held = append(held, nc)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot of a connection that left was not given back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The map is read under the lock: sessions still change it.
	srv.mu.Lock()
	starting, addrs := srv.starting, len(srv.startingFrom)
	srv.mu.Unlock()
	if starting != 3 || addrs != 2 {
		t.Fatalf("starting %d over %d addresses; want 3 over two", starting, addrs)
	}
}
