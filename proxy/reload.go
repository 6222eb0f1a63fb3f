package proxy

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/pool"
)

// Settings reload. SIGHUP (WithReload) and the console's RELOAD call
// reloadNow, which rereads the config as the command line built it
// (WithConfigLoader: file, environment, flags) and applies what can change
// while clients stay connected:
//
//   - pool-size: the pool grows at once (waiting clients dial), or shrinks
//     by closing idle connections over the size and busy ones as they are
//     released (pool.SetSize);
//   - query-wait-timeout: for checkouts that start after the reload;
//   - idle-transaction-timeout, max-client-conn: read live by sessions;
//   - log-level (with WithLogLevel);
//   - schema-size-interval: from the next measurement;
//   - the files named in the config (auth file, TLS certificate and key)
//     are read again, as before.
//
// Each change is logged with its old and new value. Any other setting that
// changed (listen, backend, registry, pool-mode, isolation, auth-type ...)
// is logged as needing a restart, and keeps its old value until then. A
// config that does not load or validate changes nothing.

// reloadState is what reloadNow needs.
type reloadState struct {
	loader func() (config.Config, error)
	level  *slog.LevelVar
	files  []reloader
	// mu runs one reload at a time (SIGHUP and RELOAD may meet).
	mu sync.Mutex
}

// liveSettings are the settings a reload applies, by flag name, each with
// the function that puts the new value in force (nil: readers use
// liveConfig and nothing more is needed).
var liveSettings = map[string]func(srv *Server, cfg *config.Config){
	"pool-size": func(srv *Server, cfg *config.Config) {
		srv.eachPool(func(_ string, p *pool.Pool) { p.SetSize(cfg.PoolSize) })
	},
	"query-wait-timeout": func(srv *Server, cfg *config.Config) {
		srv.eachPool(func(_ string, p *pool.Pool) { p.SetWaitTimeout(cfg.QueryWaitTimeout) })
	},
	"idle-transaction-timeout": nil,
	"max-client-conn":          nil,
	"schema-size-interval":     nil,
	"log-level":                nil, // set once the reload's lines are logged (reloadConfig)
	"tenant-max-backends":      nil,
	"tenant-max-clients":       nil,
	"tenant-rate":              nil,
	"tenant-rate-burst":        nil,
	"admin-users":              nil,
}

// liveConfig is the config in force for the settings a reload changes
// (the one the server started with, until a reload).
func (srv *Server) liveConfig() *config.Config {
	if c := srv.live.Load(); c != nil {
		return c
	}
	return &srv.cfg // a Server made by hand, in tests
}

// reloadOn calls reloadNow each time ch receives, until ctx is done.
func (srv *Server) reloadOn(ctx context.Context, ch <-chan struct{}) {
	if ch == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		_ = srv.reloadNow()
	}
}

// errNoLoader: a reload without WithConfigLoader rereads the files alone.
var errNoLoader = errors.New("no config loader")

// reloadNow reloads the config and the files it names (see above). It
// returns the error that kept the config from loading; the files are
// reread whatever it is.
func (srv *Server) reloadNow() error {
	srv.reload.mu.Lock()
	defer srv.reload.mu.Unlock()
	err := srv.reloadConfig()
	if err != nil && !errors.Is(err, errNoLoader) {
		srv.log.Error("reload: cannot load the config; keeping the one in force", "err", err)
	}
	for _, r := range srv.reload.files {
		if ferr := r.reload(); ferr != nil {
			srv.log.Error("reload failed; keeping what was read before", "what", r.what, "err", ferr)
			continue
		}
		srv.log.Info("reloaded", "what", r.what)
	}
	if errors.Is(err, errNoLoader) {
		return nil
	}
	return err
}

// reloadConfig loads the config again and applies what changed live.
func (srv *Server) reloadConfig() error {
	if srv.reload.loader == nil {
		return errNoLoader
	}
	next, err := srv.reload.loader()
	if err != nil {
		return err
	}
	old := srv.liveConfig()
	live := *old
	changes := config.Diff(*old, next)
	// The lines about this reload are logged at the more verbose of the
	// old and new levels, so that a change of the level is itself seen;
	// the new level is in force once they are out.
	if lv := srv.reload.level; lv != nil && old.LogLevel != next.LogLevel {
		lv.Set(min(config.ParseLogLevel(old.LogLevel), config.ParseLogLevel(next.LogLevel)))
	}
	var restart []string
	for _, ch := range changes {
		apply, ok := liveSettings[ch.Name]
		if !ok {
			restart = append(restart, ch.Name)
			srv.log.Warn("reload: setting changed but needs a restart; the old value stays in force",
				"key", ch.Name, "old", ch.Old, "new", ch.New)
			continue
		}
		config.CopySetting(ch.Name, &next, &live)
		srv.log.Info("reload: setting changed", "key", ch.Name, "old", ch.Old, "new", ch.New)
		if apply != nil {
			apply(srv, &live)
		}
	}
	srv.live.Store(&live)
	srv.log.Info("reload: config reloaded", "changed", len(changes)-len(restart), "need_restart", len(restart))
	if lv := srv.reload.level; lv != nil {
		lv.Set(config.ParseLogLevel(live.LogLevel))
	}
	return nil
}
