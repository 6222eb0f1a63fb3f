package router

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"

	"github.com/jackc/pgx/v5"
)

// The registry's record of a tenant's move between backends (`tenant move`,
// issue 16): what a later `tenant move --abort` must undo, and, once the
// placement switched, where the source schema that `tenant cleanup` drops
// is. The replication itself lives on the two backends (a publication on
// the source, a subscription on the target); the record names them.

// Move phases.
const (
	// MoveCopying: structure copied, the target subscribed; the tenant
	// is still served from the source.
	MoveCopying = "copying"
	// MoveSwitched: the tenant is served from the target; the source
	// schema is kept until cleanup.
	MoveSwitched = "switched"
)

var moveDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgtenant.tenant_moves (
		tenant       text        PRIMARY KEY REFERENCES pgtenant.tenants (name)
		                         ON DELETE CASCADE ON UPDATE CASCADE,
		source       text        NOT NULL,
		target       text        NOT NULL,
		schema_name  text        NOT NULL,
		publication  text        NOT NULL,
		subscription text        NOT NULL,
		phase        text        NOT NULL,
		started_at   timestamptz NOT NULL DEFAULT now(),
		switched_at  timestamptz
	)`,
}

func init() { registryDDL = append(registryDDL, moveDDL...) }

// Move is a row of pgtenant.tenant_moves.
type Move struct {
	Tenant, Source, Target, Schema string
	Publication, Subscription      string
	Phase                          string
}

// MoveNames returns the publication and subscription (and replication
// slot) names of a move of tenant: short and fixed, so that an abort from
// another process finds them.
func MoveNames(tenant string) (publication, subscription string) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenant))
	return fmt.Sprintf("pgtenant_move_%08x", h.Sum32()), fmt.Sprintf("pgtenant_move_%08x", h.Sum32())
}

// MoveInProgressError says that a tenant already has a move recorded.
type MoveInProgressError struct{ Move Move }

func (e *MoveInProgressError) Error() string {
	if e.Move.Phase == MoveSwitched {
		return fmt.Sprintf("tenant %q was moved from backend %q to %q and its source schema is kept; run: pgtenant tenant cleanup %s",
			e.Move.Tenant, e.Move.Source, e.Move.Target, e.Move.Tenant)
	}
	return fmt.Sprintf("a move of tenant %q to backend %q is under way or was interrupted; run: pgtenant tenant move %s --abort",
		e.Move.Tenant, e.Move.Target, e.Move.Tenant)
}

// StartMove records a move of m.Tenant (phase MoveCopying); it fails with
// a *MoveInProgressError when one is recorded already.
func StartMove(ctx context.Context, db DB, m Move) error {
	return inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		if old, found, err := getMove(ctx, tx, m.Tenant, false); err != nil {
			return err
		} else if found {
			return &MoveInProgressError{Move: old}
		}
		_, err := tx.Exec(ctx, `INSERT INTO pgtenant.tenant_moves (tenant, source, target, schema_name, publication, subscription, phase)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, m.Tenant, m.Source, m.Target, m.Schema, m.Publication, m.Subscription, MoveCopying)
		if err != nil {
			return fmt.Errorf("record the move of tenant %q: %w", m.Tenant, err)
		}
		return nil
	})
}

// GetMove returns the move recorded for tenant, if any.
func GetMove(ctx context.Context, db DB, tenant string) (Move, bool, error) {
	if ok, err := tableExists(ctx, db, "pgtenant.tenant_moves"); err != nil || !ok {
		return Move{}, false, err
	}
	return getMove(ctx, db, tenant, false)
}

func getMove(ctx context.Context, db DB, tenant string, lock bool) (Move, bool, error) {
	q := `SELECT tenant, source, target, schema_name, publication, subscription, phase
		FROM pgtenant.tenant_moves WHERE tenant = $1`
	if lock {
		q += ` FOR UPDATE`
	}
	var m Move
	err := db.QueryRow(ctx, q, tenant).Scan(&m.Tenant, &m.Source, &m.Target, &m.Schema, &m.Publication, &m.Subscription, &m.Phase)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return Move{}, false, nil
	case err != nil:
		return Move{}, false, fmt.Errorf("read the move of tenant %q: %w", tenant, err)
	}
	return m, true, nil
}

// ForgetMove removes tenant's move record; it reports whether there was
// one.
func ForgetMove(ctx context.Context, db DB, tenant string) (bool, error) {
	return registryDelete(ctx, db, `DELETE FROM pgtenant.tenant_moves WHERE tenant = $1`, tenant)
}

// ErrMoveAborted says that the move's record went away under it (a
// `tenant move --abort` from elsewhere).
var ErrMoveAborted = errors.New("the move was aborted (its record in the registry is gone)")

// SwitchMove ends a move's pause: in one registry transaction it places
// the tenant on the move's target, lifts the tenant's registry pause and
// marks the move switched, so that every proxy hears the new placement and
// the resume in one NOTIFY. It fails, changing nothing, with ErrMoveAborted
// when the move is no longer recorded, and with ErrPauseLapsed when the
// pause is gone or about to lapse (proxies resume at its deadline on the
// source).
func SwitchMove(ctx context.Context, db DB, tenant string) error {
	return inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		m, found, err := getMove(ctx, tx, tenant, true)
		if err != nil {
			return err
		}
		if !found || m.Phase != MoveCopying {
			return ErrMoveAborted
		}
		if err := liftPauseForSwitch(ctx, tx, tenant); err != nil {
			return err
		}
		if err := SetPlacementTx(ctx, tx, tenant, m.Target); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE pgtenant.tenant_moves SET phase = $2, switched_at = now() WHERE tenant = $1`, tenant, MoveSwitched)
		return err
	})
}
