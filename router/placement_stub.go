package router

// TEMPORARY: the BACKENDS helper's router API (router/backends.go on
// h16/backends), stubbed until that branch is merged here. Delete at merge.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const DefaultBackend = "default"

type Backend struct {
	Name, DSN string
	CreatedAt time.Time
}

func GetBackend(ctx context.Context, db DB, name string) (Backend, bool, error) {
	b := Backend{Name: name}
	err := db.QueryRow(ctx, `SELECT dsn, created_at FROM pgtenant.backends WHERE name = $1`, name).Scan(&b.DSN, &b.CreatedAt)
	switch {
	case err == nil:
		return b, true, nil
	case errors.Is(err, pgx.ErrNoRows), isMissingRegistry(err):
		if name == DefaultBackend {
			return Backend{Name: DefaultBackend}, true, nil
		}
		return Backend{}, false, nil
	default:
		return Backend{}, false, fmt.Errorf("look up backend %q: %w", name, err)
	}
}

func SetPlacementTx(ctx context.Context, tx pgx.Tx, tenant, backend string) error {
	_, err := tx.Exec(ctx, `UPDATE pgtenant.tenants SET backend = $2 WHERE name = $1`, tenant, backend)
	return err
}
