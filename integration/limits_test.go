package integration

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Resource exhaustion (issue 9, items 8 and 9), tested on the pgtenant
// binary as an operator runs it: its own process, its own file limit, its
// resident memory read from /proc. An in-process proxy would share the test's
// file table and heap, and its failure would take the test down with it.

// childProxy is `pgtenant serve` running as a child process.
type childProxy struct {
	*Proxy // Host, Port: the harness's client helpers work on it
	pid    int
	logs   *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done
}

// startChildProxy builds pgtenant and runs `pgtenant serve` against the
// test cluster under an open-files limit of nofile (0: inherited), with
// extra flags. It is stopped when the test ends; its log is printed if the
// test failed.
func startChildProxy(t *testing.T, nofile int, flags ...string) *childProxy {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pgtenant")
	build := exec.Command("go", "build", "-o", bin, "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // the child binds it next; nothing else on loopback races for it in practice

	args := append([]string{"serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--backend", backendDSN(), "--allow-privileged-backend", "--pool-size", "2", "--log-level", "info"}, flags...)
	var cmd *exec.Cmd
	if nofile > 0 {
		// bash's ulimit -n sets the soft and the hard limit, so the Go
		// runtime cannot raise it again at start.
		cmd = exec.Command("bash", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "PGTENANT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childProxy{Proxy: &Proxy{Host: "127.0.0.1", Port: port}, pid: cmd.Process.Pid, logs: logs, done: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("pgtenant log (tail):\n%s", lastLines(logs.String(), 40))
		}
	})
	eventually(t, 20*time.Second, "pgtenant to listen", func() bool {
		if c.exited() {
			t.Fatalf("pgtenant exited at start: %v\n%s", c.err, logs.String())
		}
		nc, err := net.DialTimeout("tcp", net.JoinHostPort(c.Host, strconv.Itoa(port)), time.Second)
		if err != nil {
			return false
		}
		defer nc.Close()
		// A CancelRequest for no session, read to the close: pgtenant
		// gives the connection's startup slot back before it closes, so
		// the probe holds none when the test begins counting.
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := nc.Write([]byte{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 0}); err != nil {
			return false
		}
		_, err = io.Copy(io.Discard, nc)
		return err == nil
	})
	return c
}

func (c *childProxy) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// openFiles is how many descriptors the child has open; -1 once it is gone.
func (c *childProxy) openFiles() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// rssKiB is the child's resident memory (VmRSS) in KiB.
func (c *childProxy) rssKiB(t *testing.T) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.pid))
	if err != nil {
		t.Fatalf("pgtenant process gone: %v (exit: %v)", err, c.err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", sc.Text(), err)
			}
			return kib
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// queryOver checks that the child answers a real client of tenant,
// dialling from the loopback address from (empty: any).
func (c *childProxy) queryOver(t *testing.T, tenant, from string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(c.DSN(tenant))
	if err != nil {
		t.Fatal(err)
	}
	if from != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
		cfg.DialFunc = d.DialContext
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("a real client could not connect: %v", err)
	}
	defer conn.Close(context.Background())
	var schema string
	if err := conn.QueryRow(ctx, "select current_schema()").Scan(&schema); err != nil || schema != tenant {
		t.Fatalf("query: schema %q, err %v; want %q", schema, err, tenant)
	}
}

// dialSilent opens n TCP connections to the child that send nothing.
// The kernel completes them whether or not pgtenant accepts them.
func dialSilent(t *testing.T, c *childProxy, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, nc := range conns {
			nc.Close()
		}
	})
	for range n {
		nc, err := net.DialTimeout("tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port)), 5*time.Second)
		if err != nil {
			t.Fatalf("silent connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, nc)
	}
	return conns
}

// TestLimitsSilentConnectionsUnderFileLimit: more silent connections than
// the process may have files. pgtenant runs out of descriptors, keeps
// accepting once it has them again, and serves a real client.
func TestLimitsSilentConnectionsUnderFileLimit(t *testing.T) {
	const tenant, nofile, silent = "lim_fd", 256, 300
	createTenant(t, tenant)
	// A short shutdown timeout: an accept loop that gives up ends the
	// process quickly rather than after waiting for the silent clients.
	c := startChildProxy(t, nofile, "--startup-timeout", "60s", "--shutdown-timeout", "1s")

	conns := dialSilent(t, c, silent)
	most := 0
	eventually(t, 30*time.Second, "pgtenant to run out of file descriptors (or exit)", func() bool {
		most = max(most, c.openFiles())
		return c.exited() || strings.Contains(c.logs.String(), "accept failed, retrying")
	})
	if c.exited() {
		t.Fatalf("pgtenant exited with %d silent connections under ulimit -n %d (most descriptors seen open: %d): %v\n%s",
			silent, nofile, most, c.err, lastLines(c.logs.String(), 5))
	}
	t.Logf("%d silent connections, ulimit -n %d: pgtenant alive with %d descriptors open", silent, nofile, most)

	for _, nc := range conns {
		nc.Close()
	}
	c.queryOver(t, tenant, "")
	if c.exited() {
		t.Fatalf("pgtenant exited: %v", c.err)
	}
}

// TestLimitsStartupConnections: connections still in startup count toward
// --max-startup-per-addr and --max-startup-conn; the ones over get 53300
// and a close, and a client from another address still gets in while the
// silent ones hold their slots.
func TestLimitsStartupConnections(t *testing.T) {
	const tenant, perAddr, silent = "lim_startup", 40, 100
	createTenant(t, tenant)
	c := startChildProxy(t, 256, "--startup-timeout", "60s",
		"--max-startup-conn", "60", "--max-startup-per-addr", strconv.Itoa(perAddr))

	// Accepts are taken in order and no silent connection leaves: the
	// first perAddr hold the slots, every later one is refused.
	conns := dialSilent(t, c, silent)
	refused := 0
	for _, nc := range conns[perAddr:] {
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		msg, err := pgproto3.NewFrontend(nc, nil).Receive()
		er, ok := msg.(*pgproto3.ErrorResponse)
		if err != nil || !ok || er.Code != "53300" || er.Severity != "FATAL" || !strings.Contains(er.Message, "still starting up") {
			t.Fatalf("connection %d over the limit: got %#v (err %v), want FATAL 53300", perAddr+refused+1, msg, err)
		}
		if _, err := nc.Read(make([]byte, 1)); err == nil {
			t.Fatalf("connection %d: not closed after its 53300", perAddr+refused+1)
		}
		refused++
	}
	t.Logf("%d silent connections from 127.0.0.1: %d hold startup slots, %d refused with 53300", silent, silent-refused, refused)
	// Another address still has startup slots.
	c.queryOver(t, tenant, "127.0.0.2")
	if n := c.openFiles(); n > 2*perAddr+40 {
		t.Fatalf("pgtenant holds %d descriptors with %d clients in startup", n, perAddr)
	}
}

// claim writes the header of a Query claiming bodyLen body bytes.
func claim(t *testing.T, nc net.Conn, length uint32) {
	t.Helper()
	var h [5]byte
	h[0] = 'Q'
	binary.BigEndian.PutUint32(h[1:], length)
	rawWrite(t, nc, h[:])
}

// unreadByProxy is how many bytes pgtenant has not yet read from the
// client connection whose local end is local (its socket's receive queue,
// from /proc/net/tcp).
func unreadByProxy(t *testing.T, proxyPort int, local net.Addr) int {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(":%04X", proxyPort)
	peer := fmt.Sprintf(":%04X", local.(*net.TCPAddr).Port)
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], want) || !strings.HasSuffix(f[2], peer) {
			continue
		}
		_, rx, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(rx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/tcp queue %q: %v", f[4], err)
		}
		return int(n)
	}
	t.Fatalf("no socket 127.0.0.1%s <- %s in /proc/net/tcp", want, local)
	return 0
}

// TestLimitsClaimedLengthMemory: a message's claimed length costs nothing
// until its bytes arrive. Over max-message-size (64 MiB by default) it is
// refused with 08P01 at the header; under it, only what arrived is held.
func TestLimitsClaimedLengthMemory(t *testing.T) {
	const tenant = "lim_mem"
	const boundKiB = 200 * 1024
	createTenant(t, tenant)
	c := startChildProxy(t, 0, "--startup-timeout", "10s")
	c.queryOver(t, tenant, "")
	base := c.rssKiB(t)

	// Over the cap: 20 claims of 100 MB and one of 2 GiB-1, each on a
	// connection of its own, logged in first.
	claims := make([]uint32, 0, 21)
	for range 20 {
		claims = append(claims, 100_000_000)
	}
	claims = append(claims, 0x7fffffff)
	for i, n := range claims {
		nc := rawDial(t, c.Proxy)
		rawStartup(t, nc, tenant)
		claim(t, nc, n)
		_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
		msg, err := pgproto3.NewFrontend(nc, nil).Receive()
		if er, ok := msg.(*pgproto3.ErrorResponse); err != nil || !ok || er.Code != "08P01" || er.Severity != "FATAL" {
			t.Errorf("claim %d of %d bytes: got %#v (err %v), want FATAL 08P01", i+1, n, msg, err)
		}
		nc.Close()
		if rss := c.rssKiB(t); rss > boundKiB {
			t.Fatalf("after claim %d of %d bytes: VmRSS %d KiB (from %d), bound %d KiB", i+1, n, rss, base, boundKiB)
		}
	}
	afterOver := c.rssKiB(t)

	// Under the cap: 10 claims of 60 MB that send 1 MB each and stop.
	// pgtenant must hold what arrived, not what was claimed. The proxy's
	// receive queue says when it has read what was sent.
	const held, sent = 10, 1 << 20
	body := make([]byte, sent)
	for i := range body {
		body[i] = 'x'
	}
	for i := range held {
		nc := rawDial(t, c.Proxy)
		rawStartup(t, nc, tenant)
		claim(t, nc, 60_000_000)
		rawWrite(t, nc, body)
		eventually(t, 10*time.Second, "pgtenant to read the partial message", func() bool {
			return unreadByProxy(t, c.Port, nc.LocalAddr()) == 0
		})
		if rss := c.rssKiB(t); rss > boundKiB {
			t.Fatalf("after partial message %d: VmRSS %d KiB (from %d), bound %d KiB", i+1, rss, base, boundKiB)
		}
	}
	afterUnder := c.rssKiB(t)
	t.Logf("VmRSS: %d KiB at start, %d KiB after %d over-cap claims, %d KiB holding %d partial 60 MB messages (%d KiB sent each)",
		base, afterOver, len(claims), afterUnder, held, sent/1024)
	c.queryOver(t, tenant, "")
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
