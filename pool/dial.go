package pool

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// Dialer opens one authenticated backend connection. It is the pool's seam
// to the network: tests substitute it to inject faults.
type Dialer interface {
	Dial(ctx context.Context) (*Conn, error)
}

// PgDialer logs in with pgconn (which handles every authentication method
// and TLS mode libpq knows) and then takes the raw connection over: from
// there on the proxy speaks the protocol itself.
type PgDialer struct {
	Config *pgconn.Config
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
	return &PgDialer{Config: cfg}, nil
}

// Dial implements Dialer.
func (d *PgDialer) Dial(ctx context.Context) (*Conn, error) {
	pc, err := pgconn.ConnectConfig(ctx, d.Config)
	if err != nil {
		return nil, err
	}
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
