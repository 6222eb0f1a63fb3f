package pool

import (
	"reflect"
	"testing"
)

// Promote moves a statement to the shared key; the one it replaces is
// queued for closing, once, and nothing is reported as evicted.
func TestStatementsPromote(t *testing.T) {
	st := newStatements(4)
	shared, _ := st.Add("k", 1)
	own, evicted := st.Add("k\x00own", 2)
	if len(evicted) != 0 {
		t.Fatalf("evicted %v", evicted)
	}
	if !st.Promote("k\x00own", "k") {
		t.Fatal("Promote of a present key reported false")
	}
	if name, tag, ok := st.Lookup("k"); !ok || name != own || tag != 2 {
		t.Fatalf("shared key holds %q (tag %d, %v), want %q", name, tag, ok, own)
	}
	if _, _, ok := st.Lookup("k\x00own"); ok {
		t.Fatal("the own key is still there")
	}
	if got := st.TakeCloses(); !reflect.DeepEqual(got, []string{shared}) {
		t.Fatalf("closes %v, want [%s]", got, shared)
	}
	if got := st.TakeCloses(); got != nil {
		t.Fatalf("closes taken twice: %v", got)
	}
	if st.Promote("gone", "k") {
		t.Fatal("Promote of a missing key reported true")
	}
	// Clear forgets queued closes too: the server dropped everything.
	st.Add("k2\x00own", 3)
	st.Promote("k2\x00own", "k")
	st.Clear()
	if got := st.TakeCloses(); got != nil || st.Len() != 0 {
		t.Fatalf("after Clear: closes %v, len %d", got, st.Len())
	}
}
