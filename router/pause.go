package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The cross-proxy pause (issue 16): a pause of one tenant recorded in the
// registry (pgtenant.tenant_pauses), which every proxy applies when the
// NOTIFY of the tenant's name arrives, and which each proxy acknowledges
// through its presence session once it holds no backend for the tenant any
// more. `tenant move` pauses a tenant this way to switch its placement.
//
// The acknowledgement is an advisory lock: every proxy holds, on its
// presence session, pg_advisory_lock_shared(ServeLockClass,
// hashtext(tenant)) while it may run the tenant's transactions: while it
// has clients of the tenant and the tenant is not paused, or is paused but
// still has a transaction running. A proxy lets a tenant's transactions
// start only while it holds that lock (the first checkout after it took
// none waits for it), so when the pauser gets the lock exclusive, no proxy
// runs a transaction of the tenant and none can start one until the pauser
// lets go. See proxy/presence.go.
//
// A pause carries two times: drain_until, after which a proxy ends the
// tenant's clients whose transactions still run (their backends would hold
// the pause up), and deadline, after which a proxy resumes on its own (the
// pauser died). ResumeAndPlace checks the deadline in the transaction that
// lifts the pause, so a switch is never made after proxies resumed by
// themselves.

// ServeLockClass is the first key of the serve locks above. It spells
// "pgtp" in ASCII.
const ServeLockClass int32 = 0x70677470

// pauseDeadlineMargin is how much of a pause's deadline must be left for
// ResumeAndPlace to switch the placement: proxies resume by themselves at
// the deadline, and the switch must reach them before that.
const pauseDeadlineMargin = 2 * time.Second

// pauseDDL is appended to registryDDL: the pauses, and a trigger that
// announces a change of one with the tenant's name (proxies read the pause
// again when they hear it, alongside the tenant's other state).
var pauseDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgtenant.tenant_pauses (
		tenant      text        PRIMARY KEY REFERENCES pgtenant.tenants (name)
		                        ON DELETE CASCADE ON UPDATE CASCADE,
		reason      text        NOT NULL,
		drain_until timestamptz NOT NULL,
		deadline    timestamptz NOT NULL,
		created_at  timestamptz NOT NULL DEFAULT now()
	)`,
	`CREATE OR REPLACE FUNCTION pgtenant.notify_pause() RETURNS trigger
	LANGUAGE plpgsql AS $fn$
	BEGIN
		IF TG_LEVEL = 'STATEMENT' THEN
			PERFORM pg_notify('` + NotifyChannel + `', '');
			RETURN NULL;
		END IF;
		IF TG_OP IN ('UPDATE', 'DELETE') THEN
			PERFORM pg_notify('` + NotifyChannel + `', OLD.tenant);
		END IF;
		IF TG_OP IN ('INSERT', 'UPDATE') THEN
			PERFORM pg_notify('` + NotifyChannel + `', NEW.tenant);
		END IF;
		RETURN NULL;
	END
	$fn$`,
	`DO $do$
	BEGIN
		IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'pgtenant.tenant_pauses'::regclass
		                AND tgname = 'pgtenant_notify') THEN
			CREATE TRIGGER pgtenant_notify AFTER INSERT OR UPDATE OR DELETE ON pgtenant.tenant_pauses
				FOR EACH ROW EXECUTE FUNCTION pgtenant.notify_pause();
		END IF;
		IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'pgtenant.tenant_pauses'::regclass
		                AND tgname = 'pgtenant_notify_truncate') THEN
			CREATE TRIGGER pgtenant_notify_truncate AFTER TRUNCATE ON pgtenant.tenant_pauses
				FOR EACH STATEMENT EXECUTE FUNCTION pgtenant.notify_pause();
		END IF;
	END
	$do$`,
}

func init() { registryDDL = append(registryDDL, pauseDDL...) }

// Pause is a tenant's registry pause as a proxy applies it. The times are
// left relative to the registry's clock when it was read, so that a proxy
// whose clock differs still resumes no earlier than the deadline.
type Pause struct {
	Reason string
	// DrainIn: after this long, clients whose transactions still run are
	// ended. DeadlineIn: after this long, the pause no longer holds.
	DrainIn, DeadlineIn time.Duration
}

// LookupPause returns tenant's registry pause, if it has one in force. A
// registry without the pauses table has none.
func LookupPause(ctx context.Context, db DB, tenant string) (Pause, bool, error) {
	var p Pause
	var drainMs, deadlineMs float64
	err := db.QueryRow(ctx, `SELECT reason,
		extract(epoch FROM drain_until - clock_timestamp()) * 1000,
		extract(epoch FROM deadline - clock_timestamp()) * 1000
		FROM pgtenant.tenant_pauses WHERE tenant = $1 AND deadline > clock_timestamp()`, tenant).
		Scan(&p.Reason, &drainMs, &deadlineMs)
	switch {
	case errors.Is(err, pgx.ErrNoRows), isMissingRegistry(err):
		return Pause{}, false, nil
	case err != nil:
		return Pause{}, false, fmt.Errorf("read the pause of tenant %q: %w", tenant, err)
	}
	p.DrainIn = time.Duration(drainMs * float64(time.Millisecond))
	p.DeadlineIn = time.Duration(deadlineMs * float64(time.Millisecond))
	return p, true, nil
}

// LookupPauses returns every tenant's registry pause in force, by tenant,
// in one query: a proxy that must read them all (its registry watch
// reconnected) asks once, not once per tenant.
func LookupPauses(ctx context.Context, db DB) (map[string]Pause, error) {
	rows, err := db.Query(ctx, `SELECT tenant, reason,
		extract(epoch FROM drain_until - clock_timestamp()) * 1000,
		extract(epoch FROM deadline - clock_timestamp()) * 1000
		FROM pgtenant.tenant_pauses WHERE deadline > clock_timestamp()`)
	if err != nil {
		if isMissingRegistry(err) {
			return map[string]Pause{}, nil
		}
		return nil, fmt.Errorf("read the tenants' pauses: %w", err)
	}
	defer rows.Close()
	out := map[string]Pause{}
	for rows.Next() {
		var (
			tenant              string
			p                   Pause
			drainMs, deadlineMs float64
		)
		if err := rows.Scan(&tenant, &p.Reason, &drainMs, &deadlineMs); err != nil {
			return nil, fmt.Errorf("read the tenants' pauses: %w", err)
		}
		p.DrainIn = time.Duration(drainMs * float64(time.Millisecond))
		p.DeadlineIn = time.Duration(deadlineMs * float64(time.Millisecond))
		out[tenant] = p
	}
	if err := rows.Err(); err != nil {
		if isMissingRegistry(err) {
			return map[string]Pause{}, nil
		}
		return nil, fmt.Errorf("read the tenants' pauses: %w", err)
	}
	return out, nil
}

// PauseTenant records a pause of tenant (its clients' new transactions wait
// on every proxy); transactions still running after drain are ended, and
// the pause lapses by itself after deadline (both from now). A pause
// already there is replaced.
func PauseTenant(ctx context.Context, db DB, tenant, reason string, drain, deadline time.Duration) error {
	if deadline < drain {
		deadline = drain
	}
	return inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO pgtenant.tenant_pauses (tenant, reason, drain_until, deadline)
			SELECT name, $2, clock_timestamp() + $3 * interval '1 millisecond', clock_timestamp() + $4 * interval '1 millisecond'
			  FROM pgtenant.tenants WHERE name = $1
			ON CONFLICT (tenant) DO UPDATE SET reason = EXCLUDED.reason, drain_until = EXCLUDED.drain_until,
				deadline = EXCLUDED.deadline, created_at = now()`,
			tenant, reason, drain.Milliseconds(), deadline.Milliseconds())
		if err != nil {
			return fmt.Errorf("pause tenant %q: %w", tenant, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("tenant %q: %w", tenant, ErrNotFound)
		}
		return nil
	})
}

// ResumeTenant lifts tenant's registry pause; it reports whether there was
// one.
func ResumeTenant(ctx context.Context, db DB, tenant string) (bool, error) {
	return registryDelete(ctx, db, `DELETE FROM pgtenant.tenant_pauses WHERE tenant = $1`, tenant)
}

// ErrPauseLapsed says that a pause's deadline came too close for a switch:
// proxies may already have resumed the tenant where it was.
var ErrPauseLapsed = errors.New("the pause reached its deadline before the switch; proxies resume the tenant where it was")

// ResumeAndPlace lifts tenant's registry pause and places it on backend in
// one registry transaction, so that every proxy hears both in one NOTIFY
// and resumes the tenant's transactions on the new backend only. It fails
// with ErrPauseLapsed, changing nothing, when the pause is gone or its
// deadline is less than a couple of seconds away (proxies resume on their
// own at the deadline, on the old backend).
func ResumeAndPlace(ctx context.Context, db DB, tenant, backend string) error {
	return inRegistryTx(ctx, db, func(tx pgx.Tx) error {
		if err := liftPauseForSwitch(ctx, tx, tenant); err != nil {
			return err
		}
		return SetPlacementTx(ctx, tx, tenant, backend)
	})
}

// liftPauseForSwitch deletes tenant's pause within tx, or fails with
// ErrPauseLapsed when it is gone or its deadline is too close.
func liftPauseForSwitch(ctx context.Context, tx pgx.Tx, tenant string) error {
	var ok bool
	err := tx.QueryRow(ctx, `SELECT deadline - clock_timestamp() > $2 * interval '1 millisecond'
		FROM pgtenant.tenant_pauses WHERE tenant = $1 FOR UPDATE`, tenant, pauseDeadlineMargin.Milliseconds()).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !ok) {
		return ErrPauseLapsed
	}
	if err != nil {
		return fmt.Errorf("read the pause of tenant %q: %w", tenant, err)
	}
	_, err = tx.Exec(ctx, `DELETE FROM pgtenant.tenant_pauses WHERE tenant = $1`, tenant)
	return err
}

// AwaitDrained waits until every proxy has stopped running tenant's
// transactions (the serve lock, taken exclusive on conn, a session of the
// registry that the caller keeps until the switch is made), or until wait
// passes. It returns whether it got the lock; the caller releases it with
// ReleaseDrained, or by closing conn.
func AwaitDrained(ctx context.Context, conn *pgx.Conn, tenant string, wait time.Duration) (bool, error) {
	deadline := time.Now().Add(wait)
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_try_advisory_lock($1::int4, pg_catalog.hashtext($2))`,
			ServeLockClass, tenant).Scan(&got); err != nil {
			return false, fmt.Errorf("wait for proxies to drain tenant %q: %w", tenant, err)
		}
		if got {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		if err := sleepCtx(ctx, 2*time.Millisecond); err != nil {
			return false, err
		}
	}
}

// ReleaseDrained lets go of the serve lock AwaitDrained took.
func ReleaseDrained(ctx context.Context, conn *pgx.Conn, tenant string) error {
	_, err := conn.Exec(ctx, `SELECT pg_catalog.pg_advisory_unlock($1::int4, pg_catalog.hashtext($2))`, ServeLockClass, tenant)
	return err
}
