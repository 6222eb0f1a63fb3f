package proxy

import (
	"fmt"
	"log/slog"

	"github.com/pgtenant/pgtenant/auth"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// reloader rereads one file named in the config; what it read last stays in
// force when it fails.
type reloader struct {
	what   string
	reload func() error
}

// newAuth builds the authentication method cfg asks for, and the reloaders
// of the files it reads. Auth queries run on the registry's connections:
// they are small, and cached nowhere, so a changed password counts at once.
func newAuth(cfg config.Config, reg *router.PGRegistry, log *slog.Logger) (auth.Method, []reloader, error) {
	kind := cfg.EffectiveAuthType()
	if kind == config.AuthTrust {
		return auth.Trust{}, nil, nil
	}
	var sources auth.FirstOf
	var reloaders []reloader
	if cfg.AuthFile != "" {
		f, err := auth.OpenUserFile(cfg.AuthFile)
		if err != nil {
			return nil, nil, err
		}
		sources = append(sources, f)
		reloaders = append(reloaders, reloader{"auth file " + cfg.AuthFile, f.Reload})
	}
	if cfg.AuthQuery != "" {
		q, err := auth.NewAuthQuery(reg.Pool(), cfg.AuthQuery, 0)
		if err != nil {
			return nil, nil, err
		}
		sources = append(sources, q)
	}
	var src auth.UserSource = sources
	if len(sources) == 1 {
		src = sources[0]
	}
	method, err := auth.NewMethod(kind, src, auth.Options{AllowCleartextWithoutTLS: cfg.AuthCleartextWithoutTLS, MockSecret: []byte(cfg.AuthMockSecret)})
	if err != nil {
		return nil, nil, err
	}
	limiter, err := auth.NewLimiter(auth.LimiterOptions{Log: log})
	if err != nil {
		return nil, nil, fmt.Errorf("auth limiter: %w", err)
	}
	return limiter.Wrap(method), reloaders, nil
}
