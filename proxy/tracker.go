package proxy

import (
	"bytes"
	"encoding/binary"

	"github.com/pgtenant/pgtenant/router"
)

// tracker is what pgtenant knows of the client's session, apart from any
// backend: the client's settings and the changes of its open transaction
// (state.go), the pin that reproduces them on a backend (pin.go), its
// prepared statements and portals (stmt.go), and what a statement text
// means for all of these (classify). It does no I/O and takes no locks:
// the session calls it from the client goroutine, and under mu where the
// backend goroutine reads it too (settle at a ReadyForQuery, statements a
// reply confirms or drops).
//
// The rules it carries, by name:
//   - scanText/classify: what a Query or Parse text changes, refuses
//     (search_path outside the tenant, lexer preconditions) or pins;
//   - settle: tentative changes become settings when their transaction
//     commits, at ReadyForQuery 'I';
//   - rebuildPin: the pin follows the settings;
//   - restoreSQL/inlineRestores: a reset returns to the client's defaults,
//     not the pool login's;
//   - stmts/effectsOf/bindChanges: the client's statements and what
//     running them changes.
type tracker struct {
	// tenant is the client's tenant and user its user name (both begin
	// the pin's key); shared the schemas every tenant may put on its
	// search_path (--shared-schemas).
	tenant router.Tenant
	user   string
	shared []string

	// params are the client's startup parameters; settings what it has
	// changed since (lower-case name to rendered SQL value); txnChanges the
	// changes of its open transaction that completed, applied when it
	// commits (settle).
	params     []startupParam
	settings   map[string]string
	txnChanges []change
	// conf is the tenant's settings snapshot (tenantconf.go) the pin was
	// built from, nil when the tenant has none loaded: its session settings
	// are the client's defaults, and over its storage quota the pin makes
	// the session read-only.
	conf *confSnap
	// pin puts a backend in the client's state: its key says which state
	// (pin.go).
	pin pin

	// segmentFailed: an error since the client's last ReadyForQuery;
	// queryFailed: an error in the Query being answered. lastRollback: the
	// last command completed was a ROLLBACK (or a COMMIT of a failed
	// transaction, which the server also tags ROLLBACK). Inputs of settle.
	segmentFailed, queryFailed bool
	lastRollback               bool

	// stmts are the client's named prepared statements (stmt.go);
	// stmtBytes the memory they take (stmtCost). maxStmts and maxStmtBytes
	// cap them (--max-client-statements, --max-client-statement-bytes;
	// 0: no cap), see stmtLimit.
	stmts                  map[string]*clientStmt
	stmtBytes              int
	maxStmts, maxStmtBytes int
	// errNames maps backend statement names to the client's, for errors.
	errNames map[string]string
	// portalFx is what executing a bound portal means for the session, by
	// portal name.
	portalFx map[string]stmtEffects
	// unnamedParse is the client's unnamed statement (its Parse body after
	// the empty name), nil when it has none; unnamedBuf the buffer it is
	// read into; unnamed what its last unnamed Parse means for the session,
	// applied when it is bound.
	unnamedParse []byte
	unnamedBuf   []byte
	unnamed      stmtEffects

	// What the client was told of the run-time parameters, as PostgreSQL
	// keeps it per session, so that a value is reported again only when it
	// changes (report): greeting is the ParameterStatus messages of its
	// greeting, encoded as sent and shared with the server's greeting cache
	// (never written; an idle client pays for no copy), and reported the
	// values it was told since.
	greeting []byte
	reported map[string]string
}

// report says whether a ParameterStatus the server sent for one of the
// client's commands is news to the client, and records it. The server
// reports a value when it differs from what it last reported on that
// backend; since PostgreSQL 14 it does so just before ReadyForQuery, so
// the values the pin set (the client's own, on a backend that had another
// holder's) come with the client's first ReadyForQuery. Directly, the
// client would not hear them: they are what it was told already.
func (t *tracker) report(name, value string) bool {
	old, ok := t.reported[name]
	if !ok {
		old, ok = greetingValue(t.greeting, name)
	}
	if ok && old == value {
		return false
	}
	if t.reported == nil {
		t.reported = map[string]string{}
	}
	t.reported[name] = value
	return true
}

// greeted records the ParameterStatus messages of the client's greeting
// (encoded, as sent) as reported. greeting must not change afterwards.
func (t *tracker) greeted(greeting []byte) { t.greeting = greeting }

// greetingValue finds the value of parameter name in the ParameterStatus
// messages of an encoded greeting.
func greetingValue(greeting []byte, name string) (string, bool) {
	for len(greeting) >= 5 && greeting[0] == 'S' {
		n := int(binary.BigEndian.Uint32(greeting[1:5]))
		if n < 4 || 1+n > len(greeting) {
			break
		}
		body := greeting[5 : 1+n]
		greeting = greeting[1+n:]
		if i := bytes.IndexByte(body, 0); i == len(name) && string(body[:i]) == name {
			v := body[i+1:]
			if j := bytes.IndexByte(v, 0); j >= 0 {
				return string(v[:j]), true
			}
		}
	}
	return "", false
}

// effectsOf returns the session effects of the client's statement name
// ("" for the unnamed one), or nil.
func (t *tracker) effectsOf(name string) *stmtEffects {
	if name == "" {
		return &t.unnamed
	}
	if cs, ok := t.stmts[name]; ok {
		return &cs.effects
	}
	return nil
}

// bindChanges records what executing the portal a Bind creates will change
// in the session: the statement's changes, and set_config values that come
// as its parameters (body is the whole Bind body when the statement has
// such parameters). It reports whether the statement changes the session,
// which marks the backend dirty each time it is bound, whether its text was
// scanned now or when it was prepared.
func (t *tracker) bindChanges(name, portal string, body []byte) bool {
	eff := t.effectsOf(name)
	if eff == nil || (eff.empty() && eff.tag == "") {
		if len(t.portalFx) > 0 {
			delete(t.portalFx, portal)
		}
		return false
	}
	fx := stmtEffects{changes: append([]change(nil), eff.changes...), tag: eff.tag}
	var params [][]byte
	if len(eff.params) > 0 {
		params = bindParams(body) // decoded once for all of them
	}
	for _, pc := range eff.params {
		if v, ok := paramText(params, pc.param); ok {
			fx.changes = append(fx.changes, change{name: pc.name, value: quoteLiteral(v)})
		}
	}
	if t.portalFx == nil {
		t.portalFx = map[string]stmtEffects{}
	}
	t.portalFx[portal] = fx
	return true
}
