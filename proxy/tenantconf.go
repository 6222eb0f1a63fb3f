package proxy

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgtenant/pgtenant/router"
)

// TenantSettingsSource reads tenants' settings and schema sizes from the
// registry (router.PGRegistry).
type TenantSettingsSource interface {
	LookupTenantSettings(ctx context.Context, tenant string) (router.TenantSettings, error)
	SchemaSizes(ctx context.Context, tenants []string) (map[string]int64, error)
}

// tenantConf is a tenant's own settings from the registry (tier, limits,
// session settings, storage quota), as this proxy knows them now.
//
// They are an immutable snapshot behind an atomic pointer, so that readers
// on the request path (the pin, the limits) take no lock. A new snapshot is
// stored when the tenant's first client arrives (loadConf), when a NOTIFY
// says the settings changed (refreshConf), and when the tenant goes over or
// back under its storage quota (setOverQuota). A session compares the
// snapshot its pin was built from with the current one each time it checks
// out a backend (followConfLocked), so a change reaches connected clients
// at their next transaction.
type tenantConf struct {
	cur atomic.Pointer[confSnap]

	// mu serialises the stores of new snapshots (loads, refreshes, quota
	// flips), so that none is lost to another.
	mu sync.Mutex
	// size is the schema's size in bytes as last measured (quota.go),
	// sized whether it has been. Under mu.
	size  int64
	sized bool
}

// confSnap is one snapshot of a tenant's settings.
type confSnap struct {
	s router.TenantSettings
	// sets are the session settings rendered for the pin, by name.
	sets []renderedSetting
	// overQuota: the schema is over its storage quota; the pin makes the
	// tenant's sessions read-only.
	overQuota bool
}

// snap returns the current snapshot, nil before the settings were loaded.
func (c *tenantConf) snap() *confSnap { return c.cur.Load() }

// settings returns the tenant's settings (zero before they were loaded).
// The getters below read through it; they run at every checkout, so it
// hands out the snapshot's own (immutable) settings rather than a copy.
func (c *tenantConf) settings() *router.TenantSettings {
	if p := c.cur.Load(); p != nil {
		return &p.s
	}
	return &noSettings
}

// noSettings are the settings of a tenant whose settings are not loaded.
var noSettings router.TenantSettings

// tier is the tenant's free-form tier label ("" when none).
func (c *tenantConf) tier() string { return c.settings().Tier }

// maxBackends is the most backends the tenant may hold at once; 0: the
// flag default.
func (c *tenantConf) maxBackends() int { return c.settings().MaxBackends }

// maxClients is the most clients the tenant may have; 0: the flag default.
func (c *tenantConf) maxClients() int { return c.settings().MaxClients }

// rate is the tenant's transaction rate and burst; 0: the flag default.
func (c *tenantConf) rate() (perSec float64, burst int) {
	s := c.settings()
	return s.Rate, s.RateBurst
}

// quotaBytes is the tenant's storage quota in bytes; 0: none.
func (c *tenantConf) quotaBytes() int64 { return c.settings().StorageQuota }

// overQuota says whether the tenant's sessions run read-only now.
func (c *tenantConf) overQuota() bool {
	p := c.cur.Load()
	return p != nil && p.overQuota
}

// newSnap renders s; over is the quota state it starts with.
func newSnap(s router.TenantSettings, over bool) *confSnap {
	sets := make([]renderedSetting, len(s.Session))
	for i, st := range s.Session {
		sets[i] = renderedSetting{name: st.Name, sql: quoteLiteral(st.Value)}
	}
	sort.Slice(sets, func(i, j int) bool { return sets[i].name < sets[j].name })
	return &confSnap{s: s, sets: sets, overQuota: over}
}

// storeLocked stores the settings s, with the quota state that the last
// measured size gives under s's quota. Called with c.mu held.
func (c *tenantConf) storeLocked(s router.TenantSettings) (flipped bool) {
	over := c.sized && s.StorageQuota > 0 && c.size > s.StorageQuota
	old := c.cur.Load()
	c.cur.Store(newSnap(s, over))
	return old != nil && old.overQuota != over
}

// settingsTimeout bounds a refresh of a tenant's settings after a NOTIFY.
const settingsTimeout = 10 * time.Second

// loadConf loads te's settings the first time one of its clients arrives
// (later clients find them loaded). Clients of the tenant arriving
// meanwhile wait for the same load. When the registry cannot answer, the
// client is served without the tenant's settings, which is logged, and the
// next client tries again; a NOTIFY or a reconnect of the watch brings them
// later too.
func (srv *Server) loadConf(ctx context.Context, te *tenantEntry) {
	if srv.settings == nil || te.conf.cur.Load() != nil {
		return
	}
	te.conf.mu.Lock()
	defer te.conf.mu.Unlock()
	if te.conf.cur.Load() != nil {
		return
	}
	s, err := srv.settings.LookupTenantSettings(ctx, te.name)
	var lookupErr *router.SettingsLookupError
	if errors.As(err, &lookupErr) {
		srv.log.Warn("cannot read the tenant's settings; serving it without them for now",
			"tenant", te.name, "err", err)
		return
	}
	if err != nil {
		srv.log.Warn("some of the tenant's settings are invalid and are ignored", "tenant", te.name, "err", err)
	}
	te.conf.storeLocked(s)
}

// confChanged is the registry watch's callback for a NOTIFY payload
// (router.NotifyChannel): the settings of the tenant it names, or of every
// tenant ("", after a reconnect), are read again, in the background so the
// watch never waits on the registry.
func (srv *Server) confChanged(ctx context.Context, payload string) {
	if srv.settings == nil {
		return
	}
	if payload == "" {
		entries := srv.tenants.all()
		go func() {
			for _, te := range entries {
				srv.refreshConf(ctx, te)
			}
		}()
		return
	}
	if strings.HasPrefix(payload, router.UserNotifyPrefix) {
		return
	}
	if te := srv.tenants.lookup(payload); te != nil {
		go srv.refreshConf(ctx, te)
	}
}

// refreshConf reads te's settings again, if they were loaded. A refresh
// that fails keeps what was loaded before. Refreshes of one tenant run one
// at a time (conf.mu); each reads the registry after the NOTIFY that
// caused it, so the last one stored is never older than the last change.
func (srv *Server) refreshConf(ctx context.Context, te *tenantEntry) {
	te.conf.mu.Lock()
	defer te.conf.mu.Unlock()
	old := te.conf.cur.Load()
	if old == nil {
		return // loaded by the tenant's next client
	}
	ctx, cancel := context.WithTimeout(ctx, settingsTimeout)
	defer cancel()
	s, err := srv.settings.LookupTenantSettings(ctx, te.name)
	var lookupErr *router.SettingsLookupError
	if errors.As(err, &lookupErr) {
		if ctx.Err() == nil {
			srv.log.Warn("cannot read the tenant's changed settings; keeping the ones loaded before",
				"tenant", te.name, "err", err)
		}
		return
	}
	if err != nil {
		srv.log.Warn("some of the tenant's settings are invalid and are ignored", "tenant", te.name, "err", err)
	}
	if reflect.DeepEqual(old.s, s) {
		return // a forget-everything NOTIFY, or a change undone
	}
	if te.conf.storeLocked(s) {
		srv.logQuota(te, te.conf.overQuota(), te.conf.size, s.StorageQuota)
	}
	srv.log.Info("tenant settings changed", "tenant", te.name)
}

// followConfLocked brings the session's pin up to date with its tenant's
// settings when they changed since it was built: it runs when a backend is
// attached, before the pin is chosen, so a changed setting applies from
// the client's next transaction and a backend pinned under the old
// settings (whose key no longer matches) is pinned again. Called with mu
// held.
func (s *session) followConfLocked() {
	if s.te == nil {
		return
	}
	if c := s.te.conf.snap(); c != s.tr.conf {
		s.tr.conf = c
		s.tr.rebuildPin()
	}
}
