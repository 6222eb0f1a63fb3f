package pool

import (
	"context"
	"testing"
)

// idleWith checks out n connections, labels them as the proxy would
// (State, Tenant) and releases them in order, so the last is the most
// recently used.
func idleWith(t *testing.T, p *Pool, labels ...[2]string) []*Conn {
	t.Helper()
	conns := make([]*Conn, len(labels))
	for i := range labels {
		conns[i] = mustGet(t, p, Request{})
	}
	for i, l := range labels {
		conns[i].State, conns[i].Tenant = l[0], l[1]
		p.Release(conns[i])
	}
	return conns
}

// TestAffinityPrefersMatchingState: among idle connections, a checkout
// takes the one left in the state it asks for, else one of its tenant,
// else the most recently used, as without affinity.
func TestAffinityPrefersMatchingState(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want int // index into the idle connections
	}{
		{name: "state matches an older connection", req: Request{Key: "acme", Affinity: "acme/u/1"}, want: 0},
		{name: "state beats tenant", req: Request{Key: "globex", Affinity: "acme/u/1"}, want: 0},
		{name: "no state match: the tenant's", req: Request{Key: "acme", Affinity: "acme/u/other"}, want: 1},
		{name: "no state or tenant match: most recent", req: Request{Key: "initech", Affinity: "initech/u"}, want: 2},
		{name: "no affinity: the tenant's", req: Request{Key: "acme"}, want: 1},
		{name: "nothing asked: most recent", req: Request{}, want: 2},
		{name: "the empty state is not a match", req: Request{Key: "initech", Affinity: ""}, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDialer(t)
			p := newTestPool(t, testConfig(3), d)
			idle := idleWith(t, p, [2]string{"acme/u/1", "globex"}, [2]string{"acme/u/2", "acme"}, [2]string{"", "globex"})
			got, err := p.Get(context.Background(), tt.req, false)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if got != idle[tt.want] {
				t.Fatalf("got the connection in state %q of %q, want %q of %q",
					got.State, got.Tenant, idle[tt.want].State, idle[tt.want].Tenant)
			}
			if n := d.dials.Load(); n != 3 {
				t.Fatalf("dials = %d, want 3: an idle connection was there", n)
			}
		})
	}
}

// TestAffinityRespectsRole: a connection in the state asked for, logged in
// as another role, is not taken.
func TestAffinityRespectsRole(t *testing.T) {
	d := newRoleDialer(t)
	p := newTestPool(t, testConfig(3), d)
	other := mustGet(t, p, Request{Role: "r2"})
	mine := mustGet(t, p, Request{Role: "r1"})
	other.State, mine.State = "s", "t"
	p.Release(mine)
	p.Release(other)
	got := mustGet(t, p, Request{Role: "r1", Affinity: "s"})
	if got != mine {
		t.Fatalf("got role %q's connection, want role r1's", got.Role)
	}
}

// TestAffinityNeverWaits: affinity only picks among what is handed out at
// once. A checkout whose state no idle connection has takes another idle
// one rather than waiting or dialling, even a non-waiting one; and a
// released connection goes to the oldest waiter whatever state either
// has, never held back for a better match.
func TestAffinityNeverWaits(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(2), d)
	idle := idleWith(t, p, [2]string{"a", "acme"})
	got, err := p.Get(context.Background(), Request{Key: "globex", Affinity: "b"}, false)
	if err != nil || got != idle[0] {
		t.Fatalf("Get without wait = %v, %v; want the idle connection at once", got, err)
	}
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("dials = %d, want 1: the idle connection served", n)
	}
	second := mustGet(t, p, Request{Key: "globex"})

	// Full: a waiter asking for state "x" gets the first connection
	// released, in state "y", at once; the one in state "x" released
	// after it goes to the next waiter.
	results := make(chan result, 2)
	queueGet(t, p, Request{Key: "acme", Affinity: "x"}, 1, results)
	queueGet(t, p, Request{Key: "globex", Affinity: "y"}, 2, results)
	got.State, second.State = "y", "x"
	p.Release(got)
	r := recv(t, results)
	if r.id != 1 || r.conn != got {
		t.Fatalf("waiter %d got the connection in state %q; want waiter 1 served first with the one released", r.id, r.conn.State)
	}
	p.Release(second)
	if r := recv(t, results); r.id != 2 || r.conn != second {
		t.Fatalf("waiter %d got the connection in state %q; want waiter 2 served with the next released", r.id, r.conn.State)
	}
}

// TestAffinityForWaiterServedFromIdle: a waiter of a key at its Max is
// served from the idle connections when its key's connection is
// destroyed, and gets the one in its state there too.
func TestAffinityForWaiterServedFromIdle(t *testing.T) {
	d := newFakeDialer(t)
	p := newTestPool(t, testConfig(3), d)
	idle := idleWith(t, p, [2]string{"s", "globex"}, [2]string{"", "initech"}, [2]string{"", "initech"})
	held := mustGet(t, p, Request{Key: "acme", Max: 1})
	if held != idle[2] {
		t.Fatal("without a match, the most recently used should have been taken")
	}
	results := make(chan result, 1)
	queueGet(t, p, Request{Key: "acme", Max: 1, Affinity: "s"}, 1, results)
	p.Destroy(held)
	if r := recv(t, results); r.conn != idle[0] {
		t.Fatalf("waiter got the connection in state %q of %q, want the one in state s", r.conn.State, r.conn.Tenant)
	}
}
