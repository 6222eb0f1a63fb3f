package pool

import "time"

// ConnInfo describes one backend connection for the admin console (SHOW
// SERVERS).
type ConnInfo struct {
	PID uint32 // the server process
	// Role is the role it logged in as through CheckoutAs; "" for the
	// Dialer's own login.
	Role string
	// Tenant is the tenant whose prepared statements it holds: the last
	// tenant it served.
	Tenant    string
	CreatedAt time.Time
	IdleSince time.Time
}

// Conns returns the pool's idle connections, the most recently used last.
// The pool does not track connections while they are held; their holders
// describe them (Conn.Info).
func (p *Pool) Conns() []ConnInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ConnInfo, 0, len(p.idle))
	for _, c := range p.idle {
		// An idle connection has no holder: its fields are the pool's,
		// under p.mu.
		out = append(out, ConnInfo{PID: c.PID, Role: c.Role, Tenant: c.Tenant, CreatedAt: c.createdAt, IdleSince: c.idleSince})
	}
	return out
}

// Info describes a held connection. Tenant is the holder's to write, so
// the caller must hold whatever guards the holder's writes (the proxy: the
// session's lock); the pool's own fields it reads do not change while the
// connection is held.
func (c *Conn) Info() ConnInfo {
	return ConnInfo{PID: c.PID, Role: c.Role, Tenant: c.Tenant, CreatedAt: c.createdAt}
}
