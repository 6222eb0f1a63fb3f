package proxy

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
	"github.com/pgtenant/pgtenant/router"
)

// Column types of console result sets: text, and int8 for counts and
// sizes, bool for flags, as PostgreSQL's own views have them.
const (
	oidBool = 16
	oidInt8 = 20
	oidText = 25
)

type consoleCol struct {
	name string
	oid  uint32
}

// resultSet is one console answer: RowDescription, DataRows and
// CommandComplete.
type resultSet struct {
	cols []consoleCol
	rows [][]*string
}

func textCol(name string) consoleCol { return consoleCol{name, oidText} }
func intCol(name string) consoleCol  { return consoleCol{name, oidInt8} }
func boolCol(name string) consoleCol { return consoleCol{name, oidBool} }

// The cells of a row: nil is NULL.
func str(v string) *string   { return &v }
func num(v int64) *string    { return str(strconv.FormatInt(v, 10)) }
func unum(v uint64) *string  { return str(strconv.FormatUint(v, 10)) }
func boolean(v bool) *string { return str(map[bool]string{true: "t", false: "f"}[v]) }
func stamp(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	return str(t.UTC().Format("2006-01-02 15:04:05 UTC"))
}

func (r *resultSet) add(cells ...*string) { r.rows = append(r.rows, cells) }

// encode appends the result set's messages, tagged tag.
func (r *resultSet) encode(out []byte, tag string) []byte {
	rd := &pgproto3.RowDescription{}
	for _, c := range r.cols {
		size := int16(-1)
		switch c.oid {
		case oidInt8:
			size = 8
		case oidBool:
			size = 1
		}
		rd.Fields = append(rd.Fields, pgproto3.FieldDescription{Name: []byte(c.name), DataTypeOID: c.oid,
			DataTypeSize: size, TypeModifier: -1})
	}
	out, _ = rd.Encode(out)
	for _, row := range r.rows {
		dr := &pgproto3.DataRow{Values: make([][]byte, len(row))}
		for i, v := range row {
			if v != nil {
				dr.Values[i] = []byte(*v)
			}
		}
		out, _ = dr.Encode(out)
	}
	out, _ = (&pgproto3.CommandComplete{CommandTag: []byte(tag)}).Encode(out)
	return out
}

// consoleTimeout bounds the console's registry queries.
const consoleTimeout = 10 * time.Second

// showTenants: every tenant of the registry, with the live counts of those
// that have had clients. A tenant that has clients but is no longer in the
// registry shows as removed. When the registry cannot be read, the tenants
// that have had clients are shown, with a notice.
func (srv *Server) showTenants(ctx context.Context, out []byte) []byte {
	var reg []router.Tenant
	var regErr error
	switch {
	case srv.foreign != nil:
		rctx, cancel := context.WithTimeout(ctx, consoleTimeout)
		reg, regErr = srv.foreign.ListTenants(rctx)
		cancel()
	case srv.registryDB == nil:
		regErr = fmt.Errorf("pgtenant runs without a registry connection")
	default:
		rctx, cancel := context.WithTimeout(ctx, consoleTimeout)
		reg, regErr = router.ListTenants(rctx, srv.registryDB)
		cancel()
	}
	if regErr != nil {
		out = consoleNotice(out, "cannot read the tenant registry; showing only tenants that had clients: "+regErr.Error())
	}
	type row struct {
		t     *router.Tenant
		e     *tenantEntry
		state string
	}
	rows := map[string]*row{}
	for i := range reg {
		rows[reg[i].Name] = &row{t: &reg[i]}
	}
	for _, e := range srv.tenants.all() {
		r := rows[e.name]
		if r == nil {
			r = &row{}
			rows[e.name] = r
		}
		r.e = e
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	sort.Strings(names)
	rs := resultSet{cols: []consoleCol{textCol("name"), textCol("schema"), textCol("state"), intCol("clients"),
		intCol("waiting"), intCol("backends"), intCol("transactions"), intCol("schema_size"), textCol("tier")}}
	for _, n := range names {
		r := rows[n]
		var schema *string
		state := "active"
		switch {
		case r.t == nil && regErr == nil:
			state = "removed"
		case r.t != nil && !r.t.Active:
			state = "disabled"
		case r.e != nil && r.e.pause.paused(), r.e == nil && srv.pausedAll.Load():
			state = "paused"
		}
		if r.t != nil {
			schema = str(r.t.Schema)
		}
		cells := []*string{str(n), schema, str(state)}
		if r.e == nil {
			cells = append(cells, num(0), num(0), num(0), num(0), nil, nil)
		} else {
			e := r.e
			var size *string
			if v, ok := e.stats.schemaSize(); ok {
				size = num(v)
			}
			var tier *string
			if t := e.conf.tier(); t != "" {
				tier = str(t)
			}
			cells = append(cells, num(e.clients.Load()), num(e.waiting.Load()), num(e.backends.Load()),
				unum(e.stats.transactions()), size, tier)
		}
		rs.add(cells...)
	}
	return rs.encode(out, "SHOW")
}

// showPools: one row per tenant that has had clients, in PgBouncer's
// columns, and the backend the tenant is on. Tenants share their backend's
// pool, so sv_idle, sv_open, pool_size and pool_waiting are that pool's, the
// same on each row of one backend (0 for a backend whose pool is not made
// yet).
func (srv *Server) showPools(out []byte) []byte {
	rs := resultSet{cols: []consoleCol{textCol("tenant"), intCol("cl_active"), intCol("cl_waiting"), intCol("sv_active"),
		intCol("sv_idle"), intCol("sv_open"), intCol("pool_size"), intCol("pool_waiting"), textCol("pool_mode"), boolCol("paused"),
		textCol("backend")}}
	for _, e := range srv.tenants.all() {
		backend := router.DefaultBackend
		if b := e.place.cur.Load(); b != nil {
			backend = *b
		}
		ps, _ := srv.poolStatsOf(backend)
		clients, waiting := e.clients.Load(), e.waiting.Load()
		rs.add(str(e.name), num(clients-waiting), num(waiting), num(e.backends.Load()),
			num(int64(ps.Idle)), num(int64(ps.Open)), num(int64(ps.Size)), num(int64(ps.Waiting)),
			str(string(srv.cfg.PoolMode)), boolean(e.pause.paused()), str(backend))
	}
	return rs.encode(out, "SHOW")
}

// sessionList returns the registered sessions, oldest first. They are copied
// out under srv.mu and read afterwards under each one's own mu: a session
// takes its mu before srv.mu (start), so the two are never held the other
// way round.
func (srv *Server) sessionList() []*session {
	srv.mu.Lock()
	list := make([]*session, 0, len(srv.byKey))
	for _, s := range srv.byKey {
		list = append(list, s)
	}
	srv.mu.Unlock()
	sort.Slice(list, func(i, j int) bool {
		if list[i].since != list[j].since {
			return list[i].since < list[j].since
		}
		return list[i].key.pid < list[j].key.pid
	})
	return list
}

// clientView is what SHOW CLIENTS and SHOW SERVERS say of one session.
type clientView struct {
	state  string
	inTx   bool
	server *pool.ConnInfo // the backend it holds, if any
	pool   *pool.Pool     // the pool server came from
}

// view reads the session's link under its lock, which every holder keeps
// for short sections only.
func (s *session) view() clientView {
	s.mu.Lock()
	defer s.mu.Unlock()
	var v clientView
	l := &s.link
	holds := l.state.holds() && l.be != nil
	if holds {
		info := l.be.Info()
		v.server = &info
		v.pool = l.be.Pool()
	}
	v.inTx = holds && l.status != 'I'
	switch {
	case s.console:
		v.state = "console"
	case holds && (l.rm.len() > 0 || l.open):
		v.state = "active"
	case v.inTx:
		v.state = "idle in transaction"
	case s.waitingBackend.Load():
		v.state = "waiting"
	default:
		v.state = "idle"
	}
	return v
}

func (s *session) tenantName() string {
	if s.console {
		return router.ConsoleDatabase
	}
	return s.tr.tenant.Name
}

// showClients: every client past its startup, console clients included.
// id is the cancel key's process id, which KILL_CLIENT takes.
func (srv *Server) showClients(out []byte) []byte {
	rs := resultSet{cols: []consoleCol{intCol("id"), textCol("user"), textCol("tenant"), textCol("addr"),
		textCol("state"), textCol("connected_since"), boolCol("in_transaction")}}
	for _, s := range srv.sessionList() {
		v := s.view()
		rs.add(num(int64(s.key.pid)), str(s.user), str(s.tenantName()), str(s.nc.RemoteAddr().String()),
			str(v.state), stamp(time.UnixMicro(s.since)), boolean(v.inTx))
	}
	return rs.encode(out, "SHOW")
}

// showServers: the backend connections, those clients hold (with the
// client's id) and then the pools' idle ones, each with the backend it is
// to. A connection being dialled, or between a client and the pool, is in
// neither list.
func (srv *Server) showServers(out []byte) []byte {
	rs := resultSet{cols: []consoleCol{intCol("pid"), textCol("state"), textCol("tenant"), intCol("client_id"),
		textCol("role"), textCol("connected_since"), textCol("idle_since"), textCol("backend")}}
	role := func(r string) *string {
		if r == "" {
			return nil
		}
		return str(r)
	}
	for _, s := range srv.sessionList() {
		v := s.view()
		if v.server == nil {
			continue
		}
		c := v.server
		rs.add(num(int64(c.PID)), str("active"), str(s.tenantName()), num(int64(s.key.pid)), role(c.Role),
			stamp(c.CreatedAt), nil, str(srv.backendName(v.pool)))
	}
	srv.eachPool(func(backend string, p *pool.Pool) {
		for _, c := range p.Conns() {
			var tenant *string
			if c.Tenant != "" {
				tenant = str(c.Tenant)
			}
			rs.add(num(int64(c.PID)), str("idle"), tenant, nil, role(c.Role), stamp(c.CreatedAt), stamp(c.IdleSince), str(backend))
		}
	})
	return rs.encode(out, "SHOW")
}

// showStats: server-wide totals in one row. tenants counts the tenants
// with clients connected now.
func (srv *Server) showStats(out []byte) []byte {
	var clients, waiting, backends, connected int64
	var txns uint64
	for _, e := range srv.tenants.all() {
		if n := e.clients.Load(); n > 0 {
			connected++
			clients += n
		}
		waiting += e.waiting.Load()
		backends += e.backends.Load()
		txns += e.stats.transactions()
	}
	var ps pool.Stats
	if srv.pool != nil {
		ps = srv.pool.Stats()
	}
	rs := resultSet{cols: []consoleCol{intCol("tenants"), intCol("clients"), intCol("waiting"), intCol("backends"),
		intCol("transactions"), intCol("pool_size"), intCol("pool_open"), intCol("pool_idle"), intCol("pool_waiting"),
		intCol("dials"), intCol("dial_failures"), intCol("destroys"), intCol("timeouts")}}
	rs.add(num(connected), num(clients), num(waiting), num(backends), unum(txns),
		num(int64(ps.Size)), num(int64(ps.Open)), num(int64(ps.Idle)), num(int64(ps.Waiting)),
		unum(ps.Dials), unum(ps.DialFailures), unum(ps.Destroys), unum(ps.Timeouts))
	return rs.encode(out, "SHOW")
}

// showVersion: pgtenant's version and the Go it was built with.
func showVersion(out []byte) []byte {
	rs := resultSet{cols: []consoleCol{textCol("version")}}
	rs.add(str("pgtenant " + version() + " (" + runtime.Version() + ")"))
	return rs.encode(out, "SHOW")
}

// showConfig: the effective config, one row per setting, keyed by flag
// name. Secrets never show: passwords in DSNs are masked, and the role
// secret and the auth mock secret say only whether they are set.
func (srv *Server) showConfig(out []byte) []byte {
	rs := resultSet{cols: []consoleCol{textCol("key"), textCol("value")}}
	for _, kv := range configRows(srv.cfg) {
		rs.add(str(kv[0]), str(kv[1]))
	}
	return rs.encode(out, "SHOW")
}

// configRows lists cfg's fields as (flag name, value), secrets masked.
func configRows(cfg config.Config) [][2]string {
	v := reflect.ValueOf(cfg)
	var rows [][2]string
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		key := kebab(f.Name)
		val := fmt.Sprint(v.Field(i).Interface())
		switch x := v.Field(i).Interface().(type) {
		case []string:
			val = strings.Join(x, ",")
		case time.Duration:
			val = x.String()
		}
		switch f.Name {
		case "AuthType":
			val = cfg.EffectiveAuthType()
		case "TenantAccess":
			val = cfg.EffectiveTenantAccess()
		case "Backend", "Registry":
			val = maskDSN(val)
		case "RoleSecret", "AuthMockSecret":
			if val != "" {
				val = "(set)"
			}
		}
		rows = append(rows, [2]string{key, val})
	}
	return rows
}

// kebab turns a Go field name into its flag name: MaxClientConn is
// max-client-conn, TLSCert tls-cert.
func kebab(name string) string {
	r := []rune(name)
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) && i > 0 {
			prevLower := unicode.IsLower(r[i-1]) || unicode.IsDigit(r[i-1])
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if prevLower || (unicode.IsUpper(r[i-1]) && nextLower) {
				b.WriteByte('-')
			}
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}

// dsnPassword finds a password in a key=value DSN.
var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// maskDSN hides the password of a libpq URL or key=value DSN.
func maskDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparsable URL)"
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return dsnPassword.ReplaceAllString(dsn, "${1}xxxxx")
}
