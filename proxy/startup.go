package proxy

import (
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Startup slots. A connection holds one from accept until its StartupMessage
// arrives (admit returns), when it counts toward max-client-conn instead, or
// until it leaves. So every client socket pgtenant holds counts toward one
// of two limits, and a crowd of connections that never send a startup packet
// (or never finish a TLS handshake) is bounded by max-startup-conn overall
// and by max-startup-per-addr for one address, however long startup-timeout
// lets each of them wait.

// refuseWriteTimeout bounds the write of a refusal in the accept loop. A
// fresh socket's send buffer is empty, so the write does not wait; the
// deadline is there for the impossible case, not for a slow client.
const refuseWriteTimeout = 100 * time.Millisecond

// startupSlot is a connection's place among those in startup. release
// gives it back; calling it again does nothing. It belongs to the
// connection's goroutine.
type startupSlot struct {
	srv  *Server
	addr netip.Addr // invalid when the peer has no IP (a pipe in tests)
	held bool
}

// takeStartupSlotLocked gives nc a startup slot, or says why not. srv.mu is
// held.
func (srv *Server) takeStartupSlotLocked(nc net.Conn) (*startupSlot, *pgError) {
	addr := peerIP(nc)
	if srv.starting >= srv.cfg.MaxStartupConn {
		return nil, fatalf(codeTooManyClients,
			"sorry, too many connections still starting up (max-startup-conn %d)", srv.cfg.MaxStartupConn)
	}
	if limit := srv.cfg.MaxStartupPerAddr; limit > 0 && addr.IsValid() {
		if srv.startingFrom[addr] >= limit {
			return nil, fatalf(codeTooManyClients,
				"sorry, too many connections still starting up from this address (max-startup-per-addr %d)", limit)
		}
		if srv.startingFrom == nil {
			srv.startingFrom = map[netip.Addr]int{}
		}
		srv.startingFrom[addr]++
	}
	srv.starting++
	return &startupSlot{srv: srv, addr: addr, held: true}, nil
}

func (s *startupSlot) release() {
	if !s.held {
		return
	}
	s.held = false
	srv := s.srv
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.starting--
	if n, ok := srv.startingFrom[s.addr]; ok {
		if n <= 1 {
			delete(srv.startingFrom, s.addr)
		} else {
			srv.startingFrom[s.addr] = n - 1
		}
	}
}

// peerIP is the client's IP address (an IPv4 client of a dual-stack
// listener as IPv4), or the invalid Addr when it has none.
func peerIP(nc net.Conn) netip.Addr {
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// refuseEarly sends a connection refused at accept its error and closes
// it. No session, buffer or goroutine is made for it: a flood of them costs
// one short write each.
func refuseEarly(nc net.Conn, e *pgError) {
	msg, _ := e.Response().Encode(nil)
	_ = nc.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
	_, _ = nc.Write(msg)
	drainQueued(nc)
	_ = nc.Close()
}

// drainQueued reads, without waiting, what the client has already sent (a
// libpq client sends its startup packet at once). Closing a socket with
// unread bytes sends a reset instead of a FIN, and a reset may destroy the
// error in the client's receive queue before the client reads it.
func drainQueued(nc net.Conn) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var buf [512]byte
	_ = rc.Read(func(fd uintptr) bool {
		// Bounded: a client that keeps sending cannot keep the accept
		// loop here; its close is then a reset, as it asked for.
		for range 20 {
			if n, err := syscall.Read(int(fd), buf[:]); n <= 0 || err != nil {
				break
			}
		}
		return true // done, whatever happened: never wait for more
	})
}
