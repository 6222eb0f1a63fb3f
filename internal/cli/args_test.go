package cli

import (
	"slices"
	"testing"
)

func TestFlagsFirst(t *testing.T) {
	a := app()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"pgtenant", "tenant", "create", "acme", "--backend", "DSN"},
			[]string{"pgtenant", "tenant", "create", "--backend", "DSN", "acme"}},
		{[]string{"pgtenant", "tenant", "create", "acme", "--schema=s", "--backend", "DSN"},
			[]string{"pgtenant", "tenant", "create", "--schema=s", "--backend", "DSN", "acme"}},
		{[]string{"pgtenant", "tenant", "grant", "*", "ops", "--backend", "DSN"},
			[]string{"pgtenant", "tenant", "grant", "--backend", "DSN", "*", "ops"}},
		// Already in order: unchanged.
		{[]string{"pgtenant", "tenant", "create", "--backend", "DSN", "acme"},
			[]string{"pgtenant", "tenant", "create", "--backend", "DSN", "acme"}},
		// A boolean flag takes no value: the next word stays an argument.
		{[]string{"pgtenant", "serve", "--pin-reuse", "--backend", "DSN"},
			[]string{"pgtenant", "serve", "--pin-reuse", "--backend", "DSN"}},
		// So does serve's (an altsrc wrapper): the next flag keeps its value.
		{[]string{"pgtenant", "serve", "--allow-privileged-backend", "--pool-size", "2", "--log-level", "info"},
			[]string{"pgtenant", "serve", "--allow-privileged-backend", "--pool-size", "2", "--log-level", "info"}},
		{[]string{"pgtenant", "tenant", "create", "acme", "--adopt-schema", "--pool-role", "pool"},
			[]string{"pgtenant", "tenant", "create", "--adopt-schema", "--pool-role", "pool", "acme"}},
		// After "--" nothing moves.
		{[]string{"pgtenant", "tenant", "create", "--", "-odd", "--backend"},
			[]string{"pgtenant", "tenant", "create", "--", "-odd", "--backend"}},
		{[]string{"pgtenant"}, []string{"pgtenant"}},
	} {
		if got := flagsFirst(a, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("flagsFirst(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
