package proxy

import (
	"reflect"
	"testing"
)

func TestReplyQueueOrder(t *testing.T) {
	var q replyQueue
	if q.len() != 0 || q.front() != nil {
		t.Fatalf("zero queue: len %d, front %v; want 0, nil", q.len(), q.front())
	}
	want := []expectation{
		{kind: expectParse, key: "k1", clientName: "s1"},
		{kind: expectParseViaDescribe, own: true},
		{kind: expectClose},
		{kind: expectSync, copyWindow: 3},
		{kind: expectQuery, own: true},
	}
	for i, e := range want {
		q.push(e)
		if q.len() != i+1 {
			t.Fatalf("after %d pushes len = %d", i+1, q.len())
		}
	}
	for i, w := range want {
		f := q.front()
		if f == nil || !reflect.DeepEqual(*f, w) {
			t.Fatalf("front #%d = %+v, want %+v", i, f, w)
		}
		if got := q.pop(); !reflect.DeepEqual(got, w) {
			t.Fatalf("pop #%d = %+v, want %+v", i, got, w)
		}
		if q.len() != len(want)-i-1 {
			t.Fatalf("after pop #%d len = %d, want %d", i, q.len(), len(want)-i-1)
		}
	}
	if q.front() != nil {
		t.Fatalf("front of a drained queue = %+v, want nil", q.front())
	}
}

// front hands out a pointer into the queue: changes through it stick.
func TestReplyQueueFrontIsInPlace(t *testing.T) {
	var q replyQueue
	q.push(expectation{kind: expectSync, copyWindow: 1})
	q.front().copyWindow = 0
	if got := q.pop(); got.copyWindow != 0 {
		t.Fatalf("change through front lost: %+v", got)
	}
}

func TestReplyQueueReusesBackingArray(t *testing.T) {
	var q replyQueue
	for i := 0; i < 8; i++ {
		q.push(expectation{kind: expectClose, key: "x"})
	}
	base := &q.items[:1][0]
	capBefore := cap(q.items)
	for q.len() > 0 {
		q.pop()
	}
	if q.head != 0 || len(q.items) != 0 {
		t.Fatalf("drained queue: head %d len(items) %d, want 0 0", q.head, len(q.items))
	}
	// Popped slots are zeroed so they keep nothing (a *clientStmt) alive.
	for i, e := range q.items[:capBefore] {
		if !reflect.DeepEqual(e, expectation{}) {
			t.Fatalf("popped slot %d not cleared: %+v", i, e)
		}
	}
	for i := 0; i < 8; i++ {
		q.push(expectation{kind: expectQuery})
	}
	if &q.items[0] != base || cap(q.items) != capBefore {
		t.Fatal("pushing after draining allocated a new backing array")
	}

	q.reset()
	if q.len() != 0 || q.front() != nil || q.head != 0 {
		t.Fatalf("after reset: len %d head %d", q.len(), q.head)
	}
	for i, e := range q.items[:capBefore] {
		if !reflect.DeepEqual(e, expectation{}) {
			t.Fatalf("reset left slot %d: %+v", i, e)
		}
	}
	q.push(expectation{kind: expectSync})
	if &q.items[0] != base {
		t.Fatal("pushing after reset allocated a new backing array")
	}
	if q.front().kind != expectSync || q.len() != 1 {
		t.Fatalf("after reset and push: front %+v len %d", q.front(), q.len())
	}
}

// A pipelining client may keep the queue from ever draining: each reply
// arrives after the next message was sent. The queue must not grow with the
// number of messages it has seen, only with the number outstanding.
func TestReplyQueueBoundedWhenNeverDrained(t *testing.T) {
	var q replyQueue
	q.push(expectation{kind: expectSync})
	for i := 0; i < 100000; i++ {
		q.push(expectation{kind: expectSync})
		q.pop()
	}
	if q.len() != 1 {
		t.Fatalf("len = %d, want 1", q.len())
	}
	if c := cap(q.items); c > 1024 {
		t.Errorf("backing array holds %d slots for 1 outstanding expectation: popped slots are never reclaimed while the queue is not empty", c)
	}
}

func TestReplyQueueRemoveCopyWindow(t *testing.T) {
	sync := func(w uint64) expectation { return expectation{kind: expectSync, copyWindow: w} }
	tests := []struct {
		name        string
		popped      int // expectations popped before the removal
		items       []expectation
		window      uint64
		wantRemoved []expectation
		wantKept    []expectation
	}{
		{
			name:     "empty queue",
			window:   1,
			wantKept: nil,
		},
		{
			name:        "only Syncs of that window",
			items:       []expectation{sync(1), sync(2), sync(1), {kind: expectParse}, sync(3)},
			window:      1,
			wantRemoved: []expectation{sync(1), sync(1)},
			wantKept:    []expectation{sync(2), {kind: expectParse}, sync(3)},
		},
		{
			name: "other kinds with the same window number stay",
			items: []expectation{
				{kind: expectQuery, copyWindow: 2},
				{kind: expectClose, copyWindow: 2},
				{kind: expectParse, copyWindow: 2, key: "k"},
				sync(2),
				{kind: expectSync, own: true, copyWindow: 2},
			},
			window:      2,
			wantRemoved: []expectation{sync(2), {kind: expectSync, own: true, copyWindow: 2}},
			wantKept: []expectation{
				{kind: expectQuery, copyWindow: 2},
				{kind: expectClose, copyWindow: 2},
				{kind: expectParse, copyWindow: 2, key: "k"},
			},
		},
		{
			name:     "window 0 means no window",
			items:    []expectation{sync(0), sync(0), {kind: expectQuery}},
			window:   0,
			wantKept: []expectation{sync(0), sync(0), {kind: expectQuery}},
		},
		{
			name:     "no match",
			items:    []expectation{sync(4), {kind: expectClose}},
			window:   5,
			wantKept: []expectation{sync(4), {kind: expectClose}},
		},
		{
			name:        "popped entries are not looked at and head is kept",
			popped:      2,
			items:       []expectation{sync(7), {kind: expectParse}, {kind: expectClose}, sync(7), sync(8), sync(7)},
			window:      7,
			wantRemoved: []expectation{sync(7), sync(7)},
			wantKept:    []expectation{{kind: expectClose}, sync(8)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q replyQueue
			for _, e := range tt.items {
				q.push(e)
			}
			for i := 0; i < tt.popped; i++ {
				q.pop()
			}
			capBefore := cap(q.items)
			removed := q.removeCopyWindow(tt.window)
			if !reflect.DeepEqual(removed, tt.wantRemoved) {
				t.Errorf("removed %+v, want %+v", removed, tt.wantRemoved)
			}
			if cap(q.items) != capBefore {
				t.Errorf("removal reallocated the backing array")
			}
			// Slots past the end are cleared.
			for i, e := range q.items[len(q.items):capBefore] {
				if !reflect.DeepEqual(e, expectation{}) {
					t.Errorf("slot %d past the end not cleared: %+v", len(q.items)+i, e)
				}
			}
			var kept []expectation
			for q.len() > 0 {
				kept = append(kept, q.pop())
			}
			if !reflect.DeepEqual(kept, tt.wantKept) {
				t.Errorf("kept %+v, want %+v", kept, tt.wantKept)
			}
		})
	}
}
