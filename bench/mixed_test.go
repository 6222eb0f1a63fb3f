package bench

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestMixedQuery checks that the mixed scripts parse, that every variable
// is filled within its random() range, and that the weights hold roughly
// (8 reads to 1 insert to 1 update).
func TestMixedQuery(t *testing.T) {
	steps, err := parseMixed(mixedScripts)
	if err != nil {
		t.Fatal(err)
	}
	next := mixedQuery(steps)
	counts := map[string]int{}
	num := regexp.MustCompile(`aid = (-?\d+)`)
	const n = 20000
	for range n {
		q := next()
		if strings.Contains(q, ":") && !strings.Contains(q, "::") {
			t.Fatalf("unfilled variable in %q", q)
		}
		switch {
		case strings.HasPrefix(q, "SELECT a.aid"):
			counts["join"]++
		case strings.HasPrefix(q, "SELECT"):
			counts["read"]++
		case strings.HasPrefix(q, "INSERT"):
			counts["insert"]++
		case strings.HasPrefix(q, "UPDATE"):
			counts["update"]++
		default:
			t.Fatalf("unexpected query %q", q)
		}
		if m := num.FindStringSubmatch(q); m != nil {
			if v, _ := strconv.Atoi(m[1]); v < 1 || v > 100000 {
				t.Fatalf("aid %d out of range in %q", v, q)
			}
		}
	}
	for _, s := range mixedScripts {
		want := float64(n) * float64(s.weight) / 10
		if got := float64(counts[s.name]); got < want*0.8 || got > want*1.2 {
			t.Errorf("%s: %v of %d, want about %v", s.name, got, n, want)
		}
	}
	if _, err := parseMixed([]mixedScript{{"bad", 1, `\sleep 1ms
SELECT 1;`}}); err == nil {
		t.Errorf("an unsupported meta-command parsed")
	}
}

// TestCrowdSizes checks the crowd scenario's tenant counts: nominal at the
// default --tenants, halved by --quick, tiny for a tiny run.
func TestCrowdSizes(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want []int
	}{
		{Options{Tenants: 100}, []int{200, 500, 1000}},
		{Options{Tenants: 100, Quick: true}, []int{100, 250, 500}},
		{Options{Tenants: 3}, []int{6, 15, 30}},
		{Options{Tenants: 1}, []int{2, 5, 10}},
	} {
		if got := crowdSizes(c.o); !slices.Equal(got, c.want) {
			t.Errorf("crowdSizes(%+v) = %v, want %v", c.o, got, c.want)
		}
	}
}
