package main

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// serveOnce answers one SSLRequest with answer, after checking it is one.
func serveOnce(t *testing.T, answer byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		var req [8]byte
		if _, err := io.ReadFull(conn, req[:]); err != nil ||
			binary.BigEndian.Uint32(req[:4]) != 8 || binary.BigEndian.Uint32(req[4:]) != sslRequestCode {
			return
		}
		conn.Write([]byte{answer})
	}()
	return ln.Addr().String()
}

func TestCheck(t *testing.T) {
	for _, answer := range []byte{'N', 'S'} {
		if err := check(serveOnce(t, answer), 2*time.Second); err != nil {
			t.Errorf("answer %q: %v", answer, err)
		}
	}
	if err := check(serveOnce(t, 'E'), 2*time.Second); err == nil || !strings.Contains(err.Error(), "not a PostgreSQL server") {
		t.Errorf("answer 'E': %v, want not a PostgreSQL server", err)
	}
	// A wildcard listen address is asked on loopback.
	_, port, _ := net.SplitHostPort(serveOnce(t, 'N'))
	if err := check("0.0.0.0:"+port, 2*time.Second); err != nil {
		t.Errorf("0.0.0.0:%s: %v", port, err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if err := check(addr, 2*time.Second); err == nil {
		t.Errorf("%s, nothing listening: passed", addr)
	}
}
