// Command healthcheck is the Docker image's HEALTHCHECK. The image is
// distroless, with no shell, nc or psql to probe with, so this small static
// binary sits next to pgtenant. It asks pgtenant's listener the first
// question of the PostgreSQL protocol, an SSLRequest, and is healthy when
// the answer is 'S' or 'N': that proves pgtenant's accept loop is serving,
// which a bare TCP connect (answered by the kernel) would not. It needs no
// credentials and no tenant, and closes before any startup packet, so it
// touches neither the pool nor the registry.
//
// The address is the first argument, else PGTENANT_LISTEN, else
// 127.0.0.1:6432; a wildcard host (0.0.0.0, ::, empty) is asked on loopback.
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// sslRequestCode is the SSLRequest's protocol code (PostgreSQL's 1234 5679).
const sslRequestCode = 80877103

func main() {
	addr := "127.0.0.1:6432"
	if v := os.Getenv("PGTENANT_LISTEN"); v != "" {
		addr = v
	}
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	if err := check(addr, 3*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

func check(addr string, timeout time.Duration) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	var req [8]byte
	binary.BigEndian.PutUint32(req[0:4], 8)
	binary.BigEndian.PutUint32(req[4:8], sslRequestCode)
	if _, err := conn.Write(req[:]); err != nil {
		return err
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return fmt.Errorf("no answer to SSLRequest from %s: %w", addr, err)
	}
	if answer[0] != 'S' && answer[0] != 'N' {
		return fmt.Errorf("%s answered SSLRequest with %q, not S or N: not a PostgreSQL server", addr, answer[0])
	}
	return nil
}
