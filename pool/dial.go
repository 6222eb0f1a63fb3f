package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Dialer opens one authenticated backend connection. It is the pool's seam
// to the network: tests substitute it to inject faults.
type Dialer interface {
	Dial(ctx context.Context) (*Conn, error)
}

// RoleDialer is a Dialer that can also log in as a given role, on the same
// server and database (CheckoutAs).
type RoleDialer interface {
	Dialer
	DialAs(ctx context.Context, role string) (*Conn, error)
}

// roleRefused says whether a dial error is the server refusing one role's
// login (SQLSTATE class 28: the role does not exist or may not log in, the
// password is wrong, pg_hba rejects it), as opposed to the server failing.
func roleRefused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "28")
}

// PgDialer logs in with pgconn (which handles every authentication method
// and TLS mode libpq knows) and then takes the raw connection over: from
// there on the proxy speaks the protocol itself.
type PgDialer struct {
	Config *pgconn.Config
	// checkIntervalAdded: NewPgDialer added client_connection_check_interval
	// to the login, which PostgreSQL before 14 does not know; noCheck is
	// set once such a server refused it, and later dials leave it out.
	checkIntervalAdded bool
	noCheck            atomic.Bool
	// Log receives what the dial's check of role settings removed or
	// refused (rolesettings.go); nil logs nothing.
	Log *slog.Logger
	// RolePassword, when set, gives the password of a role for DialAs
	// (role isolation derives it from a secret). Nil: DialAs is refused.
	RolePassword func(role string) string
}

// NewPgDialer parses a libpq URL or key=value DSN.
func NewPgDialer(dsn string) (*PgDialer, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse backend DSN: %w", err)
	}
	// Name the pool's connections so operators can find them in
	// pg_stat_activity, unless the DSN already does.
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "pgtenant"
	}
	// pgtenant closes a backend connection with a command still running on
	// it when it cannot trust it any more (its client vanished mid-batch,
	// a reply fit nothing). PostgreSQL notices a closed client only when it
	// next writes, so a long statement would run on, holding its locks, for
	// as long as it takes; with this it checks every second and stops.
	// A startup parameter, so the pin's RESET ALL keeps it.
	added := false
	if _, ok := cfg.RuntimeParams["client_connection_check_interval"]; !ok {
		cfg.RuntimeParams["client_connection_check_interval"] = "1s"
		added = true
	}
	return &PgDialer{Config: cfg, checkIntervalAdded: added}, nil
}

// Dial implements Dialer.
func (d *PgDialer) Dial(ctx context.Context) (*Conn, error) {
	return d.dial(ctx, nil)
}

// DialAs implements RoleDialer: the same server, database and settings as
// the DSN, logged in as role with RolePassword's password.
func (d *PgDialer) DialAs(ctx context.Context, role string) (*Conn, error) {
	if d.RolePassword == nil {
		return nil, errors.New("no password source for role logins")
	}
	return d.dial(ctx, func(cfg *pgconn.Config) {
		cfg.User = role
		// pgconn logs every host of the DSN (its fallbacks) in with
		// these two.
		cfg.Password = d.RolePassword(role)
	})
}

// dial logs in with the DSN's config, changed by as when it is set. Each
// new backend is checked for settings of its role or database before anyone
// uses it (see rolesettings.go).
func (d *PgDialer) dial(ctx context.Context, as func(*pgconn.Config)) (*Conn, error) {
	for attempt := 1; ; attempt++ {
		pc, err := d.login(ctx, as)
		if err != nil {
			return nil, err
		}
		role, database, found, err := sessionDefaults(ctx, pc)
		if err == nil && len(found) == 0 {
			return d.takeOver(ctx, pc)
		}
		if err == nil {
			err = removeSessionDefaults(ctx, pc, role, database, found)
			if err == nil {
				for _, s := range found {
					d.log().Warn("removed a setting of the pool's role that would have reached every tenant's new backends; "+
						"set defaults in the backend DSN's options instead", "setting", s.name, "where", s.where(role, database))
				}
				if attempt == maxSettingDials {
					err = fmt.Errorf("settings of role %q were written again each time they were removed, %d times", role, attempt)
				}
			} else {
				d.log().Error("refusing a backend connection", "err", err)
			}
		}
		// The connection took the settings at login: it goes either way.
		pc.Close(ctx)
		if err != nil {
			return nil, fmt.Errorf("backend connection refused: %w", err)
		}
	}
}

// log is the dialer's logger; a dialer without one logs nothing.
func (d *PgDialer) log() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// login dials and logs in, with the login changed by as when it is set.
func (d *PgDialer) login(ctx context.Context, as func(*pgconn.Config)) (*pgconn.PgConn, error) {
	connect := func() (*pgconn.PgConn, error) {
		cfg := d.Config
		if d.noCheck.Load() {
			cfg = d.withoutCheckInterval()
		} else if as != nil {
			cfg = cfg.Copy()
		}
		if as != nil {
			as(cfg)
		}
		return pgconn.ConnectConfig(ctx, cfg)
	}
	pc, err := connect()
	var pe *pgconn.PgError
	if err != nil && d.checkIntervalAdded && !d.noCheck.Load() && errors.As(err, &pe) && pe.Code == "42704" {
		// "unrecognized configuration parameter": a server before
		// PostgreSQL 14. Log in without the check from now on.
		d.noCheck.Store(true)
		pc, err = connect()
	}
	return pc, err
}

// takeOver hands pc's raw connection to a Conn: from there on the proxy
// speaks the protocol itself.
func (d *PgDialer) takeOver(ctx context.Context, pc *pgconn.PgConn) (*Conn, error) {
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(ctx)
		return nil, err
	}
	hc, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return nil, err
	}
	params := make(map[string]string, len(hc.ParameterStatuses))
	for k, v := range hc.ParameterStatuses {
		params[k] = v
	}
	return newConn(hc.Conn, hc.PID, hc.SecretKey, params), nil
}

// withoutCheckInterval is the login without the parameter NewPgDialer added.
func (d *PgDialer) withoutCheckInterval() *pgconn.Config {
	cfg := d.Config.Copy()
	delete(cfg.RuntimeParams, "client_connection_check_interval")
	return cfg
}

// The backoff between dials while they fail: short at first, because one
// refused dial is often a server that was briefly full, and capped so that a
// pool notices within seconds that the server has room again.
const (
	dialBackoffMin = 50 * time.Millisecond
	dialBackoffMax = 5 * time.Second
)

// dialHealth remembers a burst of failing dials: from the first failure to
// the next success. While dials fail the pool dials at most once per
// backoff, one dial at a time, so its effective size is what the server
// gives it; the backoff doubles with each failure and starts over after a
// success. The Pool guards it with its mutex.
type dialHealth struct {
	failing  bool
	err      error         // the burst's latest dial error
	next     time.Time     // no dial before this while failing
	backoff  time.Duration // the wait after the next failure
	since    time.Time     // the burst's first failure
	failures int
}

// failed records a dial that failed at now; it reports whether the failure
// starts a burst.
func (h *dialHealth) failed(now time.Time, err error) (first bool) {
	first = !h.failing
	if first {
		*h = dialHealth{failing: true, since: now, backoff: dialBackoffMin}
	}
	h.failures++
	h.err = err
	h.next = now.Add(h.backoff)
	h.backoff = min(2*h.backoff, dialBackoffMax)
	return first
}

// succeeded records a dial, begun at started, that succeeded at now; it
// reports whether that ends a burst, and the burst's failures and length.
// A dial begun before the burst's first failure does not end it: the server
// gave it a slot before it began refusing, which says nothing about now
// (when a pool starts, many dials are in flight at once).
func (h *dialHealth) succeeded(started, now time.Time) (ended bool, failures int, lasted time.Duration) {
	if !h.failing || started.Before(h.since) {
		return false, 0, 0
	}
	failures, lasted = h.failures, now.Sub(h.since)
	*h = dialHealth{}
	return true, failures, lasted
}

// dialErrorText is what an operator needs of a dial error: PostgreSQL's
// SQLSTATE and message when the server refused the login ("53300 sorry,
// too many clients already"), the error itself otherwise.
func dialErrorText(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code + " " + pe.Message
	}
	return err.Error()
}
