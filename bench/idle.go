package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
)

const (
	// idleDialers is how many goroutines open the idle connections.
	idleDialers = 16
	// startupTimeout bounds one client's login.
	startupTimeout = 15 * time.Second
	// rssPoll and rssSettle: after the connections are up, RSS is read every
	// rssPoll until two readings agree within rssTolerance, or rssSettle.
	rssPoll      = 100 * time.Millisecond
	rssSettle    = 3 * time.Second
	rssTolerance = 0.005
	// childStopTimeout bounds the wait for a pgtenant child after SIGTERM.
	childStopTimeout = 40 * time.Second
)

// startupConn dials addr and logs in as user to database with a bare
// startup message, returning the connection once ReadyForQuery arrives.
// It is all an idle client costs this process: no driver state.
func startupConn(ctx context.Context, addr, user, database string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	msg := &pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": user, "database": database},
	}
	buf, err := msg.Encode(nil)
	if err == nil {
		_, err = c.Write(buf)
	}
	fe := pgproto3.NewFrontend(c, c)
	for err == nil {
		var m pgproto3.BackendMessage
		if m, err = fe.Receive(); err != nil {
			break
		}
		switch m := m.(type) {
		case *pgproto3.ReadyForQuery:
			c.SetDeadline(time.Time{})
			return c, nil
		case *pgproto3.ErrorResponse:
			err = fmt.Errorf("%s %s: %s", m.Severity, m.Code, m.Message)
		case *pgproto3.AuthenticationOk, *pgproto3.ParameterStatus, *pgproto3.BackendKeyData, *pgproto3.NoticeResponse:
		default:
			err = fmt.Errorf("unexpected %T during startup (the harness logs in without a password)", m)
		}
	}
	c.Close()
	return nil, err
}

// openIdle opens n idle client connections; on error it closes the ones it
// opened.
func openIdle(ctx context.Context, addr, user, database string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	var (
		mu   sync.Mutex
		errs error
		wg   sync.WaitGroup
	)
	next := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range idleDialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, err := startupConn(ctx, addr, user, database)
				mu.Lock()
				if err != nil {
					if errs == nil {
						errs = err
					}
					cancel()
				} else {
					conns = append(conns, c)
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for range n {
		select {
		case next <- struct{}{}:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if errs != nil {
		opened := len(conns)
		closeAll(conns)
		return nil, fmt.Errorf("opened %d of %d idle clients: %w", opened, n, errs)
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// rssKiB is VmRSS of process pid, in KiB.
func rssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// settledRSS polls pid's RSS until two readings agree, so that memory the
// process is still touching after the last login is counted.
func settledRSS(ctx context.Context, pid int) (int64, error) {
	last, err := rssKiB(pid)
	if err != nil {
		return 0, err
	}
	t := time.NewTicker(rssPoll)
	defer t.Stop()
	deadline := time.Now().Add(rssSettle)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
		cur, err := rssKiB(pid)
		if err != nil {
			return 0, err
		}
		if diff := cur - last; float64(max(diff, -diff)) <= rssTolerance*float64(last) {
			return cur, nil
		}
		last = cur
	}
	return last, nil
}

// poolerProcess is a pooler process a scenario started (or found) for one
// measurement.
type poolerProcess struct {
	pid  int
	addr string
	stop func()
	// fresh is false for a process that already served other scenarios (a
	// target given by flag): memory it freed may be reused by the new
	// clients, understating their cost.
	fresh bool
}

// runIdle opens o.IdleClients idle connections to t and reports how much
// the pooler's resident memory grew per connection. Each measurement gets a
// fresh process: a pooler that already held clients keeps their memory for
// reuse.
func (e *env) runIdle(ctx context.Context, t *target) Sample {
	p, err := e.poolerProcess(ctx, t)
	if err != nil {
		return Sample{Error: errText(err), Backends: -1}
	}
	defer p.stop()
	db := t.database(benchTenant)
	// One client first, so that what the first client sets up (a server
	// connection for the parameters every client is told, caches) is in the
	// baseline and not charged to the idle clients.
	warm, err := startupConn(ctx, p.addr, clientUser, db)
	if err != nil {
		return Sample{Error: errText(err), Backends: -1}
	}
	defer warm.Close()
	before, err := settledRSS(ctx, p.pid)
	if err != nil {
		return Sample{Error: errText(err), Backends: -1}
	}
	n := e.o.IdleClients
	conns, err := openIdle(ctx, p.addr, clientUser, db, n)
	if err != nil {
		return Sample{Error: errText(err), Backends: -1}
	}
	defer closeAll(conns)
	after, err := settledRSS(ctx, p.pid)
	if err != nil {
		return Sample{Error: errText(err), Backends: -1}
	}
	s := Sample{
		Backends:       -1,
		Clients:        n,
		RSSBeforeKiB:   before,
		RSSGrowthKiB:   after - before,
		BytesPerClient: float64(after-before) * 1024 / float64(n),
	}
	if !p.fresh {
		s.Note = "process not fresh"
	}
	return s
}

// poolerProcess starts (or, for a target given by flag, finds) the
// process behind t.
func (e *env) poolerProcess(ctx context.Context, t *target) (*poolerProcess, error) {
	switch {
	case t.external:
		pid, err := pidListening(t.port)
		if err != nil {
			return nil, fmt.Errorf("find the process listening on %s: %w", t.addr(), err)
		}
		return &poolerProcess{pid: pid, addr: t.addr(), stop: func() {}}, nil
	case t.name == TargetPgbouncer:
		b, err := e.startPgbouncer(ctx, pgbouncerAuth{})
		if err != nil {
			return nil, err
		}
		pid, err := b.pid()
		if err != nil {
			b.stop()
			return nil, err
		}
		return &poolerProcess{pid: pid, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)), stop: b.stop, fresh: true}, nil
	case t.name == TargetPgtenant:
		return e.startPgtenantProcess(ctx, e.loginRole(rolePgtenantProcess))
	}
	return nil, fmt.Errorf("no idle measurement for target %s", t.name)
}

// startPgtenantProcess runs pgtenant as a process of its own (so that its
// RSS is pgtenant's alone) and returns once it admits a client.
func (e *env) startPgtenantProcess(ctx context.Context, role string) (*poolerProcess, error) {
	return e.startPgtenantProcessOn(ctx, processSpec{
		backend: e.pooled(), role: role, poolSize: e.o.PoolSize,
		maxClientConn: e.o.IdleClients + 1000, isolation: e.o.Isolation,
	})
}

// processSpec is what a pgtenant process serves, and with how much.
type processSpec struct {
	backend       backendInfo
	role          string
	poolSize      int
	maxClientConn int
	isolation     string
}

// startPgtenantProcessOn is startPgtenantProcess for any backend, pool size
// and isolation (the crowd scenario's cluster of its own, its pool of 32).
// Its backend must have a tenant called bench, which the readiness probe
// logs in to.
func (e *env) startPgtenantProcessOn(ctx context.Context, ps processSpec) (*poolerProcess, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	serve := e.o.ServeCommand
	if serve == nil {
		serve = defaultServeCommand
	}
	cmd := serve(addr, ps.backend.dsn(ps.role), ps.poolSize, ps.maxClientConn)
	var metricsAddr string
	if e.o.Metrics {
		if metricsAddr, err = freeAddr(); err != nil {
			return nil, err
		}
		cmd.Args = append(cmd.Args, "--metrics-listen", metricsAddr)
	}
	if ps.isolation == config.IsolationRole {
		cmd.Args = append(cmd.Args, "--isolation", config.IsolationRole)
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, config.RoleSecretEnv+"="+benchRoleSecret)
	}
	logf, err := os.CreateTemp(e.tmp, "pgtenant-child-*.log")
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start pgtenant process: %w", err)
	}
	// exited closes when the process is gone; done hands its exit to
	// waitReady, which takes it, so stop waits on exited instead (a child
	// that died starting must not leave stop waiting forever).
	exited := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		close(exited)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(childStopTimeout):
				cmd.Process.Kill()
				<-exited
			}
			logf.Close()
		})
	}
	if err := waitReady(ctx, addr, benchTenant, "", done); err != nil {
		stop()
		out, _ := os.ReadFile(logf.Name())
		return nil, fmt.Errorf("pgtenant process: %w\n%s", err, lastBytes(string(out), 2000))
	}
	if metricsAddr != "" {
		sctx, cancel := context.WithCancel(context.Background())
		go scrapeEverySecond(sctx, metricsAddr)
		stop = func(stop func()) func() { return func() { cancel(); stop() } }(stop)
	}
	return &poolerProcess{pid: cmd.Process.Pid, addr: addr, stop: stop, fresh: true}, nil
}

// defaultServeCommand re-runs this executable, which is pgtenant, as
// `pgtenant serve`. PGTENANT_* variables are left out so that the caller's
// environment or config file cannot change what is measured.
func defaultServeCommand(listen, backend string, poolSize, maxClientConn int) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe, "serve", "--listen", listen, "--backend", backend,
		"--pool-size", strconv.Itoa(poolSize), "--max-client-conn", strconv.Itoa(maxClientConn),
		"--log-level", "warn", "--allow-privileged-backend")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PGTENANT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}

// pidListening finds the process with a TCP socket listening on port, from
// /proc/net/tcp{,6} and the processes' fd tables.
func pidListening(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			// sl local_address rem_address st ... inode (field 9)
			if len(fields) < 10 || fields[3] != "0A" {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); ok && err == nil && int(p) == port {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no listening socket on port %d", port)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		if link, err := os.Readlink(fd); err == nil && inodes[link] {
			return strconv.Atoi(strings.Split(fd, "/")[2])
		}
	}
	return 0, errors.New("the listening socket belongs to no process this user can see")
}

// raiseOpenFiles raises this process's open-files limit to want (the hard
// limit too when root), or as far as it goes, and returns the soft limit in
// force. Children inherit the hard limit: PgBouncer's shell raises its own
// soft limit up to it.
func raiseOpenFiles(want int) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024
	}
	w := uint64(want)
	if lim.Cur >= w {
		return int(lim.Cur)
	}
	if lim.Max < w {
		raised := syscall.Rlimit{Cur: w, Max: w}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return want
		}
		w = lim.Max
	}
	lim.Cur = w
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return int(lim.Cur)
}

// lastBytes is at most n bytes from the end of s.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
