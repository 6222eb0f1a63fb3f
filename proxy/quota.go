package proxy

import (
	"context"
	"github.com/pgtenant/pgtenant/router"
	"time"
)

// The storage quota. A tenant's schema size is measured in the background
// (measureSchemaSizes), never on a client's path; while it is over the
// tenant's storage_quota, the pin sets default_transaction_read_only for
// its sessions (tracker.rebuildPin), so from their next transaction on
// writes fail with PostgreSQL's own 25006 read_only_sql_transaction, and
// reads go on. Once the schema is back under the quota (rows deleted, the
// quota raised), the next pin leaves it out again.
//
// It is a guard against a tenant filling the disk by accident, not a
// security boundary: default_transaction_read_only is a default, which a
// client that asks for it (BEGIN READ WRITE, SET default_transaction_read_only
// = off inside its transaction) can override, and a tenant can grow past
// its quota within one measuring interval.

// measureSchemaSizes measures every tenant's schema at once and then every
// schema-size-interval (read live, so a reload changes it; 0 measures
// nothing until a reload sets one), in one query on the registry's
// connections, for the metrics, SHOW TENANTS and the storage quotas. Tenants
// that have had no clients get an entry, so that their sizes show too. It
// runs in the background, never on a client's path, and returns when ctx
// ends. A failure is logged once per run of failures; the sizes measured
// before stay.
func (srv *Server) measureSchemaSizes(ctx context.Context) {
	if srv.settings == nil {
		return
	}
	failing := false
	for {
		interval := srv.liveConfig().SchemaSizeInterval
		if interval > 0 {
			err := srv.measureOnce(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil && !failing:
				srv.log.Warn("measuring tenant schema sizes failed; trying again at the next interval",
					"err", err, "interval", interval)
			case err == nil && failing:
				srv.log.Info("measuring tenant schema sizes works again")
			}
			failing = err != nil
		} else {
			interval = time.Minute // off: look again for a reload that turns it on
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// measureOnce is one round of measureSchemaSizes.
func (srv *Server) measureOnce(ctx context.Context) error {
	qctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	sizes, err := srv.settings.SchemaSizes(qctx, nil)
	cancel()
	if err != nil {
		return err
	}
	for name, size := range sizes {
		te := srv.tenants.entry(name)
		te.stats.setSchemaSize(size)
		srv.setSchemaSize(te, size)
	}
	// The migration versions come with the sizes, for the metrics; a
	// registry source without them (django-tenants) has none.
	if src, ok := srv.settings.(migrationSource); ok {
		qctx, cancel := context.WithTimeout(ctx, settingsTimeout)
		states, err := src.MigrationStates(qctx)
		cancel()
		if err != nil {
			return err
		}
		for name, st := range states {
			srv.tenants.entry(name).stats.setMigration(st.Version, st.Duration)
		}
	}
	return nil
}

// migrationSource reads the versions pgtenant migrate recorded
// (router.PGRegistry).
type migrationSource interface {
	MigrationStates(ctx context.Context) (map[string]router.MigrationState, error)
}

// setSchemaSize records te's measured schema size and turns its sessions
// read-only, or back, when that crosses its quota.
func (srv *Server) setSchemaSize(te *tenantEntry, size int64) {
	c := &te.conf
	c.mu.Lock()
	c.size, c.sized = size, true
	old := c.cur.Load()
	if old == nil {
		c.mu.Unlock()
		return
	}
	over := old.s.StorageQuota > 0 && size > old.s.StorageQuota
	if over != old.overQuota {
		c.cur.Store(&confSnap{s: old.s, sets: old.sets, overQuota: over})
	}
	c.mu.Unlock()
	if over != old.overQuota {
		srv.logQuota(te, over, size, old.s.StorageQuota)
	}
}

// logQuota says that te went over its storage quota or back under it.
func (srv *Server) logQuota(te *tenantEntry, over bool, size, quota int64) {
	if over {
		srv.log.Warn("tenant is over its storage quota: its sessions are read-only from their next transaction",
			"tenant", te.name, "schema_bytes", size, "quota_bytes", quota)
		return
	}
	srv.log.Info("tenant is back under its storage quota: writes are allowed again",
		"tenant", te.name, "schema_bytes", size, "quota_bytes", quota)
}
