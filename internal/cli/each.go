package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// pgtenant each: any program run once per selected tenant, pointed at that
// tenant through a running pgtenant by the variables every PostgreSQL
// client library reads. `pgtenant each --all --proxy HOST:PORT -- python
// manage.py migrate` is django-tenants' migrate_schemas for any framework.
//
// Output: with one run at a time (-j 1, or one tenant) the program has
// pgtenant's standard input, output and error itself, so prompts, colours and progress bars work as they do when
// it runs alone, and each run is announced on standard error
// ("== tenant acme"). With runs side by side, or --prefix, every line it writes
// is prefixed "[acme] " and written whole, so that runs side by side do not
// interleave within a line; standard input is then empty.

// eachStopGrace is how long a program gets to exit after SIGTERM, when
// pgtenant is interrupted, before it is killed.
const eachStopGrace = 10 * time.Second

// eachMaxLine bounds the bytes held for one unfinished output line; a
// longer line is written in parts.
const eachMaxLine = 64 << 10

func eachCommand() *cli.Command {
	flags := append(config.BackendFlags(), config.SettingFlags("tenant-from")...)
	flags = append(flags, tenantSelectionFlags()...)
	flags = append(flags, proxyFlags()...)
	flags = append(flags, &cli.BoolFlag{
		Name:  "prefix",
		Usage: "prefix every output line with [tenant] also when one run goes at a time (-j 1 or one tenant), which otherwise has the terminal itself",
	})
	return &cli.Command{
		Name: "each",
		Usage: "run a program once per selected tenant with PGTENANT_TENANT, PGDATABASE, PGHOST, PGPORT, PGUSER and " +
			"DATABASE_URL pointing at the tenant through the pgtenant at --proxy",
		ArgsUsage: "(--tenant NAME | --all) [-j N] --proxy HOST:PORT [--user USER] -- COMMAND [ARGS...]",
		Flags:     flags,
		Before:    config.LoadConfigFile(flags),
		Action:    eachAction,
	}
}

func eachAction(c *cli.Context) error {
	const usage = "usage: pgtenant each (--tenant NAME | --all) [-j N] --proxy HOST:PORT [--user USER] -- COMMAND [ARGS...]"
	sel, err := selectionFromContext(c)
	if err != nil {
		return err
	}
	if c.NArg() == 0 {
		return cli.Exit(usage, exitUsage)
	}
	target, err := proxyFromContext(c)
	if err != nil {
		return err
	}
	if target == nil {
		return cli.Exit("--proxy HOST:PORT is required: each runs the program against a running pgtenant, "+
			"so that the tenant's grants and role mode apply", exitUsage)
	}
	if target.User == "" {
		target.User = os.Getenv("PGUSER")
		if target.User == "" {
			target.User = currentUser()
		}
	}
	argv := c.Args().Slice()
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return cli.Exit(err, exitUsage)
	}
	tenants, _, err := selectTenants(c, sel)
	if err != nil || len(tenants) == 0 {
		return err
	}
	r := eachRun{
		name: argv[0], path: path, args: argv[1:], target: target, base: os.Environ(),
		prefix: min(sel.Jobs, len(tenants)) > 1 || c.Bool("prefix"),
		stdin:  c.App.Reader, stdout: c.App.Writer, stderr: c.App.ErrWriter,
	}
	failures := forEachTenant(c.Context, tenants, sel.Jobs, r.tenant)
	return failureSummaryDetailed("the command", tenants, failures)
}

// eachRun runs the program for one tenant.
type eachRun struct {
	name   string // COMMAND as given
	path   string // COMMAND found on PATH
	args   []string
	target *proxyTarget
	base   []string // pgtenant's environment, which the program's starts from
	prefix bool
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	mu     sync.Mutex // serialises whole lines to stdout and stderr
}

func (r *eachRun) tenant(ctx context.Context, t router.Tenant) error {
	cmd := exec.CommandContext(ctx, r.path, r.args...)
	cmd.Args[0] = r.name // as the person wrote it, as a shell would pass it
	cmd.Env = tenantEnv(r.base, r.target, t.Name)
	// Interrupted, the program gets to stop cleanly (a migration to roll
	// back) before it is killed.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = eachStopGrace
	if !r.prefix {
		r.mu.Lock()
		fmt.Fprintf(r.stderr, "== tenant %s\n", t.Name)
		r.mu.Unlock()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = r.stdin, r.stdout, r.stderr
		return exitErr(cmd.Run())
	}
	out := &linePrefixer{mu: &r.mu, dst: r.stdout, prefix: "[" + t.Name + "] "}
	errOut := &linePrefixer{mu: &r.mu, dst: r.stderr, prefix: "[" + t.Name + "] "}
	cmd.Stdout, cmd.Stderr = out, errOut
	err := cmd.Run()
	out.Close()
	errOut.Close()
	return exitErr(err)
}

// exitErr says how a run ended in the summary's words.
func exitErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return fmt.Errorf("killed by signal %s", ws.Signal())
		}
		return fmt.Errorf("exit code %d", ee.ExitCode())
	}
	return err
}

// failureSummaryDetailed is failureSummary with one line per failed tenant
// saying how its run ended.
func failureSummaryDetailed(what string, tenants []router.Tenant, failures []tenantError) error {
	err := failureSummary(what, tenants, failures)
	if err == nil {
		return nil
	}
	var b strings.Builder
	b.WriteString(err.Error())
	listed := 0
	for _, f := range failures {
		var ns errNotStarted
		if errors.As(f.Err, &ns) {
			continue
		}
		if listed == summaryNames {
			b.WriteString("\n  ...")
			break
		}
		fmt.Fprintf(&b, "\n  %s: %v", f.Tenant.Name, f.Err)
		listed++
	}
	return cli.Exit(b.String(), exitRuntime)
}

// tenantVars are the variables tenantEnv sets; any value they had is
// dropped, with PGHOSTADDR, PGSERVICE and PGOPTIONS, which would otherwise
// point a client elsewhere than the tenant.
var tenantVars = []string{"PGTENANT_TENANT", "PGDATABASE", "PGHOST", "PGPORT", "PGUSER", "DATABASE_URL",
	"PGHOSTADDR", "PGSERVICE", "PGOPTIONS"}

// tenantEnv is base with the variables that point a client at tenant
// through the proxy: PGTENANT_TENANT, PGDATABASE (the tenant), PGHOST,
// PGPORT, PGUSER (the tenant itself with tenant-from user) and
// DATABASE_URL, a postgres:// URL of the same without a password. With
// tenant-from sni, PGOPTIONS carries -c pgtenant.tenant=NAME. Passwords
// are the program's own business: PGPASSWORD and PGPASSFILE pass through.
func tenantEnv(base []string, p *proxyTarget, tenant string) []string {
	env := make([]string, 0, len(base)+len(tenantVars))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, v := range tenantVars {
			if name == v {
				drop = true
				break
			}
		}
		if !drop {
			env = append(env, kv)
		}
	}
	env = append(env,
		"PGTENANT_TENANT="+tenant,
		"PGDATABASE="+tenant,
		"PGHOST="+p.Host,
		"PGPORT="+p.Port,
		"PGUSER="+p.userFor(tenant),
		"DATABASE_URL="+p.url(tenant),
	)
	if p.From == config.TenantFromSNI {
		env = append(env, "PGOPTIONS=-c pgtenant.tenant="+tenant)
	}
	return env
}

// linePrefixer writes what a program prints as whole lines, each with
// prefix, so that programs running side by side interleave only between
// lines. Close writes an unfinished last line.
type linePrefixer struct {
	mu     *sync.Mutex
	dst    io.Writer
	prefix string
	buf    []byte
}

func (w *linePrefixer) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	var out []byte
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) < eachMaxLine {
				break
			}
			i = eachMaxLine - 1 // write a part of an endless line
			out = append(append(append(out, w.prefix...), w.buf[:i+1]...), '\n')
		} else {
			out = append(append(out, w.prefix...), w.buf[:i+1]...)
		}
		w.buf = w.buf[i+1:]
	}
	if len(out) > 0 {
		w.mu.Lock()
		_, err := w.dst.Write(out)
		w.mu.Unlock()
		if err != nil {
			return 0, err
		}
	}
	// Keep the unfinished line in a buffer of its own, not in the tail
	// of an ever-growing one.
	w.buf = append([]byte(nil), w.buf...)
	return len(p), nil
}

// Close writes the unfinished last line, if any, ending it.
func (w *linePrefixer) Close() error {
	if len(w.buf) == 0 {
		return nil
	}
	line := append(append([]byte(w.prefix), w.buf...), '\n')
	w.buf = nil
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.dst.Write(line)
	return err
}
