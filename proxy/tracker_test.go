package proxy

import (
	"reflect"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/router"
)

// newTestTracker is a tracker of tenant "acme" alone, with no session
// around it: the tracker needs neither a connection nor a lock.
func newTestTracker() *tracker {
	t := &tracker{tenant: router.Tenant{Name: "acme", Schema: "acme", Active: true}, shared: []string{"shared"}}
	t.pin = buildPin(pinOwner(t.tenant.Name, t.user), t.tenant.Schema, nil)
	return t
}

// TestTrackerReadyForQuery drives a tracker as the relay does, reply by
// reply: changes count when their transaction commits, not when it fails,
// rolls back or is still open.
func TestTrackerReadyForQuery(t *testing.T) {
	type step struct {
		text     string // a Query of the client's, "" for none
		fail     bool   // the server reports an error in it
		rollback bool   // its last CommandComplete is tagged ROLLBACK
		status   byte   // the ReadyForQuery that ends it
	}
	tests := []struct {
		name  string
		steps []step
		want  map[string]string
	}{
		{"autocommit", []step{{text: "SET a.b = 1", status: 'I'}}, map[string]string{"a.b": "1"}},
		{"failed query", []step{{text: "SET a.b = 1; SELECT 1/0", fail: true, status: 'I'}}, nil},
		{"open then commit", []step{
			{text: "BEGIN; SET a.b = 1", status: 'T'},
			{text: "COMMIT", status: 'I'},
		}, map[string]string{"a.b": "1"}},
		{"open then rollback", []step{
			{text: "BEGIN; SET a.b = 1", status: 'T'},
			{text: "ROLLBACK", rollback: true, status: 'I'},
		}, nil},
		{"failed transaction", []step{
			{text: "BEGIN; SET a.b = 1", status: 'T'},
			{text: "SELECT 1/0", fail: true, status: 'E'},
			{text: "COMMIT", rollback: true, status: 'I'},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTestTracker()
			pinBefore := tr.pin.key
			for _, st := range tt.steps {
				res := tr.scanText(st.text)
				if st.fail {
					tr.commandFailed(true)
				}
				tr.readyForQuery(st.status, true, res.changes, true, st.rollback)
			}
			got := tr.settings
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("settings %v, want %v", got, tt.want)
			}
			if len(tr.txnChanges) != 0 {
				t.Errorf("tentative left: %+v", tr.txnChanges)
			}
			if changed := tr.pin.key != pinBefore; changed != (tt.want != nil) {
				t.Errorf("pin changed %v, want %v", changed, tt.want != nil)
			}
		})
	}
}

// TestTrackerBindChanges: a statement's set_config parameter is read from
// its Bind, and a portal of a statement that changes nothing has no
// effects.
func TestTrackerBindChanges(t *testing.T) {
	tr := newTestTracker()
	res := tr.scanText("SELECT set_config('app.user', $1, false)")
	tr.unnamed = stmtEffects{params: res.params}
	if !tr.bindChanges("", "p1", bindBody(t, &pgproto3.Bind{DestinationPortal: "p1", Parameters: [][]byte{[]byte("alice")}})) {
		t.Fatal("bindChanges says the statement changes nothing")
	}
	if got := tr.portalFx["p1"].changes; !reflect.DeepEqual(got, []change{set("app.user", "'alice'")}) {
		t.Errorf("portal changes %+v", got)
	}
	tr.unnamed = stmtEffects{}
	if tr.bindChanges("", "p1", nil) {
		t.Error("bindChanges of a plain statement says it changes the session")
	}
	if _, ok := tr.portalFx["p1"]; ok {
		t.Error("portal p1 kept the effects of the statement it was bound to before")
	}
	tr.completed(tr.portalFx["p1"].changes)
	tr.backendLost()
	if len(tr.txnChanges) != 0 {
		t.Errorf("backendLost kept %+v", tr.txnChanges)
	}
}
