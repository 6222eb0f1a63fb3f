package config

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// ConnectError is a failed connection to PostgreSQL, told once: what it was
// for, where (host:port/database as user, never the password) and the
// cause. pgx's own error names the user and database and then repeats the
// cause once per address tried (sslmode prefer tries each twice), and its
// callers used to wrap it once more per layer.
type ConnectError struct {
	What  string // "the tenant registry", "the backend"
	Where string // host:port/database as user
	Err   error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("cannot connect to %s at %s: %s", e.What, e.Where, connectCause(e.Err))
}

func (e *ConnectError) Unwrap() error { return e.Err }

// NewConnectError describes err, a failure to connect with dsn to what.
func NewConnectError(what, dsn string, err error) *ConnectError {
	return &ConnectError{What: what, Where: DescribeDSN(dsn), Err: err}
}

// DescribeDSN is where dsn connects, host:port/database as user, for
// messages: it leaves the password out. A DSN that does not parse is
// described as such (its parse error, which pgconn redacts, is the
// caller's to report).
func DescribeDSN(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "(a DSN that does not parse)"
	}
	host := cfg.Host
	if !strings.HasPrefix(host, "/") {
		host = net.JoinHostPort(host, strconv.Itoa(int(cfg.Port)))
	} else {
		host += ":" + strconv.Itoa(int(cfg.Port)) // a Unix socket directory
	}
	return fmt.Sprintf("%s/%s as %s", host, cfg.Database, cfg.User)
}

// connectCause is err's cause without what ConnectError says already: for
// pgx's error, each distinct per-address cause once.
func connectCause(err error) string {
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		return err.Error()
	}
	inner := ce.Unwrap()
	var parts []error
	if j, ok := inner.(interface{ Unwrap() []error }); ok {
		parts = j.Unwrap()
	} else {
		parts = []error{inner}
	}
	var causes []string
	for _, p := range parts {
		// A per-address error is "addr (host): cause"; the address is in
		// the message already, and the cause usually names it again.
		if u := errors.Unwrap(p); u != nil && strings.HasSuffix(p.Error(), ": "+u.Error()) {
			p = u
		}
		if msg := p.Error(); !slices.Contains(causes, msg) {
			causes = append(causes, msg)
		}
	}
	return strings.Join(causes, "; ")
}

// ListenError is a failure to listen on a flag's address, with what to do
// about the usual cause.
func ListenError(flag, addr string, err error) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("cannot listen on %s: another process listens there already (stop it, or choose another address with --%s)", addr, flag)
	}
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("cannot listen on %s: permission denied (ports below 1024 need privileges; choose another address with --%s)", addr, flag)
	}
	return fmt.Errorf("cannot listen on %s (--%s): %w", addr, flag, err)
}
