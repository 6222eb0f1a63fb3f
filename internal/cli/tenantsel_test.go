package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

func tenantsNamed(names ...string) []router.Tenant {
	ts := make([]router.Tenant, len(names))
	for i, n := range names {
		ts[i] = router.Tenant{Name: n, Schema: n, Active: true}
	}
	return ts
}

// TestSelectionFlags reads --tenant, --all and -j as a command would, and
// refuses what names no tenant or names them twice over.
func TestSelectionFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    tenantSelection
		wantErr string
	}{
		{args: []string{"--all"}, want: tenantSelection{All: true, Jobs: defaultJobs}},
		{args: []string{"--tenant", "b", "--tenant", "a", "--tenant", "b", "-j", "2"},
			want: tenantSelection{Names: []string{"b", "a"}, Jobs: 2}},
		{args: []string{"--tenant", "a,c", "--jobs", "1"}, want: tenantSelection{Names: []string{"a", "c"}, Jobs: 1}},
		{args: nil, wantErr: "--tenant NAME (repeatable) or --all"},
		{args: []string{"--all", "--tenant", "a"}, wantErr: "not both"},
		{args: []string{"--all", "-j", "0"}, wantErr: "-j must be at least 1"},
		{args: []string{"--tenant", "Bad-Name"}, wantErr: `invalid tenant name "Bad-Name"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var got tenantSelection
			var gotErr error
			a := &cli.App{
				Flags: tenantSelectionFlags(),
				Action: func(c *cli.Context) error {
					got, gotErr = selectionFromContext(c)
					return nil
				},
			}
			if err := a.Run(append([]string{"x"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" {
				var ec cli.ExitCoder
				if gotErr == nil || !strings.Contains(gotErr.Error(), tc.wantErr) || !errors.As(gotErr, &ec) || ec.ExitCode() != exitUsage {
					t.Fatalf("error %v, want a usage error containing %q", gotErr, tc.wantErr)
				}
				return
			}
			if gotErr != nil {
				t.Fatal(gotErr)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestForEachTenantBound runs 20 tenants with j 3: never more than 3 at
// once, every tenant once, and the failures in tenant order however the
// runs finish.
func TestForEachTenantBound(t *testing.T) {
	tenants := tenantsNamed("t00", "t01", "t02", "t03", "t04", "t05", "t06", "t07", "t08", "t09",
		"t10", "t11", "t12", "t13", "t14", "t15", "t16", "t17", "t18", "t19")
	var running, peak atomic.Int32
	var mu sync.Mutex
	ran := map[string]int{}
	// Each run waits for the next one to start (up to the bound), so
	// that runs overlap and finish out of order.
	gate := make(chan struct{})
	var once sync.Once
	failures := forEachTenant(context.Background(), tenants, 3, func(ctx context.Context, tn router.Tenant) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if n == 3 {
			once.Do(func() { close(gate) })
		}
		<-gate
		mu.Lock()
		ran[tn.Name]++
		mu.Unlock()
		if strings.HasSuffix(tn.Name, "3") || strings.HasSuffix(tn.Name, "7") {
			return fmt.Errorf("boom %s", tn.Name)
		}
		return nil
	})
	if p := peak.Load(); p != 3 {
		t.Errorf("at most %d ran at once, want 3", p)
	}
	for _, tn := range tenants {
		if ran[tn.Name] != 1 {
			t.Errorf("tenant %s ran %d times", tn.Name, ran[tn.Name])
		}
	}
	var got []string
	for _, f := range failures {
		got = append(got, f.Error())
	}
	want := "tenant t03: boom t03|tenant t07: boom t07|tenant t13: boom t13|tenant t17: boom t17"
	if strings.Join(got, "|") != want {
		t.Fatalf("failures %q, want %q", strings.Join(got, "|"), want)
	}
}

// TestForEachTenantStops: once ctx ends no tenant starts; those not started
// are reported as such, after the ones that ran.
func TestForEachTenantStops(t *testing.T) {
	tenants := tenantsNamed("a", "b", "c", "d", "e")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var started []string
	failures := forEachTenant(ctx, tenants, 1, func(ctx context.Context, tn router.Tenant) error {
		started = append(started, tn.Name)
		if tn.Name == "b" {
			cancel()
			return ctx.Err()
		}
		return nil
	})
	if strings.Join(started, ",") != "a,b" {
		t.Fatalf("started %v, want a,b", started)
	}
	var got []string
	for _, f := range failures {
		var ns errNotStarted
		got = append(got, fmt.Sprintf("%s:%v", f.Tenant.Name, errors.As(f.Err, &ns)))
		if !errors.Is(f.Err, context.Canceled) {
			t.Errorf("%s: %v does not wrap context.Canceled", f.Tenant.Name, f.Err)
		}
	}
	if strings.Join(got, " ") != "b:false c:true d:true e:true" {
		t.Fatalf("failures %v", got)
	}
	if err := failureSummary("the SQL", tenants, failures); err == nil ||
		err.Error() != "the SQL failed for 1 of 5 tenants: b; interrupted: 3 of 5 tenants not started: c, d, e" {
		t.Fatalf("summary %v", err)
	}
}

// TestForEachTenantNone: no tenants, no runs, no failures, whatever j.
func TestForEachTenantNone(t *testing.T) {
	if f := forEachTenant(context.Background(), nil, 4, func(context.Context, router.Tenant) error {
		t.Fatal("ran")
		return nil
	}); len(f) != 0 {
		t.Fatal(f)
	}
}
