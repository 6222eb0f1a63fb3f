//go:build unix

package pool

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// alive peeks at the socket without blocking and without consuming anything.
// An idle backend connection has nothing to say: any byte (an ErrorResponse
// from pg_terminate_backend) or EOF means the server is gone or going.
func alive(nc net.Conn) bool {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait: this is a probe
	})
	if err != nil {
		return false
	}
	if errors.Is(rerr, syscall.EAGAIN) || errors.Is(rerr, syscall.EWOULDBLOCK) {
		return true
	}
	_ = n
	return false
}
