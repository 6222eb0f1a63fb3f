package proxy

import (
	"context"
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

// measureSchemaSizes measures, every schema-size-interval (read live, so
// a reload changes it), the schemas of the tenants this proxy serves that
// have a storage quota, in one query on the registry's connections, and
// turns each read-only or back. It returns when ctx ends.
func (srv *Server) measureSchemaSizes(ctx context.Context) {
	if srv.settings == nil {
		return
	}
	for {
		interval := srv.liveConfig().SchemaSizeInterval
		if interval <= 0 {
			interval = time.Minute
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		srv.measureOnce(ctx)
	}
}

// measureOnce is one round of measureSchemaSizes.
func (srv *Server) measureOnce(ctx context.Context) {
	var names []string
	var entries []*tenantEntry
	for _, te := range srv.tenants.all() {
		if te.conf.quotaBytes() > 0 || te.conf.overQuota() {
			names = append(names, te.name)
			entries = append(entries, te)
		}
	}
	if len(names) == 0 {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	sizes, err := srv.settings.SchemaSizes(qctx, names)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			srv.log.Warn("cannot measure tenant schemas for their storage quotas", "err", err)
		}
		return
	}
	for _, te := range entries {
		if size, ok := sizes[te.name]; ok {
			srv.setSchemaSize(te, size)
		}
	}
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
