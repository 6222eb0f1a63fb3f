package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// Choosing the tenants a command runs for (--tenant NAME..., --all) and
// running it for them a few at a time. pgtenant exec and each use it; so
// can any command that works through every tenant.

// defaultJobs is -j's default: enough to hide one tenant's round trips
// behind another's, few enough not to crowd a production server.
const defaultJobs = 4

// tenantSelection is what --tenant, --all and -j asked for.
type tenantSelection struct {
	// Names are the --tenant values, in the order given, without repeats.
	Names []string
	// All is --all: every enabled tenant.
	All bool
	// Jobs is -j: how many tenants run at once.
	Jobs int
}

// tenantSelectionFlags returns --tenant, --all and -j (--jobs). Read them
// back with selectionFromContext.
func tenantSelectionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{
			Name:  "tenant",
			Usage: "run for tenant NAME (repeat for more); a tenant's name, not an alias, and enabled",
		},
		&cli.BoolFlag{
			Name:  "all",
			Usage: "run for every enabled tenant, in name order",
		},
		&cli.IntFlag{
			Name:    "jobs",
			Aliases: []string{"j"},
			Usage:   "tenants run at once",
			Value:   defaultJobs,
		},
	}
}

// selectionFromContext reads and checks the selection flags before
// anything connects, so that a typo fails fast and alone.
func selectionFromContext(c *cli.Context) (tenantSelection, error) {
	s := tenantSelection{All: c.Bool("all"), Jobs: c.Int("jobs")}
	for _, n := range c.StringSlice("tenant") {
		// --tenant a,b is split by cli already; be as lenient with blanks.
		n = strings.TrimSpace(n)
		if n == "" || slices.Contains(s.Names, n) {
			continue
		}
		s.Names = append(s.Names, n)
	}
	return s, s.check()
}

// check refuses a selection that names no tenant, or names them twice
// over, and a -j below 1.
func (s tenantSelection) check() error {
	switch {
	case s.All && len(s.Names) > 0:
		return cli.Exit("give either --tenant NAME or --all, not both", exitUsage)
	case !s.All && len(s.Names) == 0:
		return cli.Exit("name the tenants: --tenant NAME (repeatable) or --all", exitUsage)
	case s.Jobs < 1:
		return cli.Exit(fmt.Sprintf("-j must be at least 1, got %d", s.Jobs), exitUsage)
	}
	for _, n := range s.Names {
		// An alias's name is let through, for resolve to name its tenant.
		if err := router.ValidateTenantName(n); err != nil && router.ValidateAliasName(n) != nil {
			return cli.Exit(err, exitUsage)
		}
	}
	return nil
}

// resolve returns the selected tenants from the registry: with --all every
// enabled tenant in name order (none is not an error), else the named ones
// in the order given. A name that is no tenant, only an alias of one, or a
// disabled tenant is refused, all such names in one error, before anything
// runs: a command meant for three tenants should not quietly run for two.
func (s tenantSelection) resolve(ctx context.Context, db router.DB) ([]router.Tenant, error) {
	all, err := router.ListTenants(ctx, db)
	if err != nil {
		return nil, cli.Exit(err, exitRuntime)
	}
	if s.All {
		var enabled []router.Tenant
		for _, t := range all {
			if t.Active {
				enabled = append(enabled, t)
			}
		}
		return enabled, nil
	}
	byName := make(map[string]router.Tenant, len(all))
	for _, t := range all {
		byName[t.Name] = t
	}
	var aliasOf map[string]string // read only when a name is missing
	var problems []string
	var out []router.Tenant
	for _, n := range s.Names {
		t, ok := byName[n]
		switch {
		case ok && t.Active:
			out = append(out, t)
		case ok:
			problems = append(problems, fmt.Sprintf("tenant %q is disabled (pgtenant tenant enable %s)", n, n))
		default:
			if aliasOf == nil {
				aliases, err := router.ListAliases(ctx, db)
				if err != nil {
					return nil, cli.Exit(err, exitRuntime)
				}
				aliasOf = make(map[string]string, len(aliases))
				for _, a := range aliases {
					aliasOf[a.Alias] = a.Tenant
				}
			}
			if of, isAlias := aliasOf[n]; isAlias {
				problems = append(problems, fmt.Sprintf("%q is an alias of tenant %q; name the tenant itself", n, of))
			} else {
				problems = append(problems, fmt.Sprintf("tenant %q does not exist (pgtenant tenant list shows them)", n))
			}
		}
	}
	if len(problems) > 0 {
		return nil, cli.Exit(strings.Join(problems, "; "), exitUsage)
	}
	return out, nil
}

// tenantError is one tenant's failure in forEachTenant.
type tenantError struct {
	Tenant router.Tenant
	Err    error
}

func (e tenantError) Error() string { return "tenant " + e.Tenant.Name + ": " + e.Err.Error() }
func (e tenantError) Unwrap() error { return e.Err }

// errNotStarted is the error of a tenant forEachTenant never ran fn for,
// because ctx ended first.
type errNotStarted struct{ cause error }

func (e errNotStarted) Error() string { return "not started: " + e.cause.Error() }
func (e errNotStarted) Unwrap() error { return e.cause }

// forEachTenant runs fn for each tenant, at most j at once, starting them
// in order, and returns the failures in tenant order. Once ctx ends it
// starts no more: the tenants it did not start are failures too (an
// errNotStarted), so that the caller can say which tenants were left out.
// fn gets ctx and should stop when it ends.
func forEachTenant(ctx context.Context, tenants []router.Tenant, j int,
	fn func(ctx context.Context, t router.Tenant) error) []tenantError {
	errs := forEachIndex(ctx, len(tenants), j, func(ctx context.Context, i int) error {
		return fn(ctx, tenants[i])
	})
	var out []tenantError
	for i, err := range errs {
		if err != nil {
			out = append(out, tenantError{Tenant: tenants[i], Err: err})
		}
	}
	return out
}

// forEachIndex is forEachTenant on indexes 0..n-1: it returns one error
// per index, nil for a success.
func forEachIndex(ctx context.Context, n, j int, fn func(ctx context.Context, i int) error) []error {
	errs := make([]error, n)
	if j < 1 {
		j = 1
	}
	j = min(j, n)
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	// take hands out the next index, or -1 once all are out or ctx ended.
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		if next >= n || ctx.Err() != nil {
			return -1
		}
		next++
		return next - 1
	}
	for range j {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := take(); i >= 0; i = take() {
				errs[i] = fn(ctx, i)
			}
		}()
	}
	wg.Wait()
	for i := next; i < n; i++ {
		errs[i] = errNotStarted{cause: context.Cause(ctx)}
	}
	return errs
}

// selectTenants resolves sel on an admin connection, and returns the
// tenants and the connection's DSN. When no tenant is selected (--all on a
// registry without enabled tenants) it says so on stderr and returns none,
// which is no error: there was nothing to run.
func selectTenants(c *cli.Context, sel tenantSelection) (tenants []router.Tenant, adminDSN string, err error) {
	err = withAdminConn(c, func(conn *pgx.Conn) error {
		adminDSN = conn.Config().ConnString()
		tenants, err = sel.resolve(c.Context, conn)
		// Through a proxy (--proxy; each always) a tenant is reached on
		// whatever backend it is placed on; straight to the admin
		// connection's server, only when it is there.
		if err == nil && c.String("proxy") == "" {
			err = refuseElsewhere(tenants, c.Command.FullName())
		}
		return err
	})
	if err == nil && len(tenants) == 0 {
		fmt.Fprintln(c.App.ErrWriter, "pgtenant: there are no enabled tenants; nothing ran")
	}
	return tenants, adminDSN, err
}
