package config

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// explicitKey is where LoadConfigFile records, in the App's Metadata, the
// settings the command line and the environment gave, before the file's
// values are mixed in: a reload must read the file again for the others
// only (Reloader).
const explicitKey = "pgtenant/config.explicit"

// rememberExplicit records which settings c's command line or environment
// set.
func rememberExplicit(c *cli.Context) {
	if c.App == nil {
		return
	}
	explicit := map[string]bool{}
	for _, s := range settings {
		if c.IsSet(s.name) {
			explicit[s.name] = true
		}
	}
	if c.App.Metadata == nil {
		c.App.Metadata = map[string]any{}
	}
	c.App.Metadata[explicitKey] = explicit
}

// Reloader returns a function that builds the Config again as FromContext
// built it for c, for a reload (SIGHUP): Default, then the config file
// (--config) read anew, then what the command line and the environment set,
// which win as they did at start. keep names settings that are always taken
// from c as they are now (the demo sets its backend itself). c must be the
// context of a command whose Before is LoadConfigFile.
func Reloader(c *cli.Context, keep ...string) func() (Config, error) {
	explicit, _ := c.App.Metadata[explicitKey].(map[string]bool)
	if explicit == nil {
		explicit = map[string]bool{}
		for _, s := range settings {
			explicit[s.name] = c.IsSet(s.name)
		}
	}
	path := ""
	if c.IsSet(configFlagName) {
		path = c.Path(configFlagName)
	}
	// The values to keep are read now: c is not used after the command's
	// Action returned.
	fixed := Default()
	for _, s := range settings {
		if (explicit[s.name] || slices.Contains(keep, s.name)) && c.IsSet(s.name) {
			s.load(c, &fixed)
		}
	}
	return func() (Config, error) {
		cfg := Default()
		var fromFile *cli.Context
		if path != "" {
			var err error
			if fromFile, err = fileContext(path); err != nil {
				return Config{}, err
			}
		}
		for _, s := range settings {
			switch {
			case explicit[s.name] || slices.Contains(keep, s.name):
				s.copy(&fixed, &cfg)
			case fromFile != nil && fromFile.IsSet(s.name):
				s.load(fromFile, &cfg)
			}
		}
		secret, err := readRoleSecret(cfg.RoleSecretFile)
		if err != nil {
			return Config{}, err
		}
		cfg.RoleSecret = secret
		if err := cfg.Validate(); err != nil {
			return Config{}, err
		}
		return cfg, nil
	}
}

// fileContext reads the config file at path into a context of fresh flags,
// as LoadConfigFile does at start: the environment's values win over the
// file's, and both are IsSet.
func fileContext(path string) (*cli.Context, error) {
	source, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	set := flag.NewFlagSet("reload", flag.ContinueOnError)
	set.SetOutput(io.Discard)
	flags := make([]cli.Flag, 0, len(settings))
	for _, s := range settings {
		f := s.newFlag()
		if err := f.Apply(set); err != nil {
			return nil, err
		}
		flags = append(flags, f)
	}
	ctx := cli.NewContext(&cli.App{}, set, nil)
	ctx.Command = &cli.Command{Name: "reload", Flags: flags}
	if err := altsrc.ApplyInputSourceValues(ctx, source, flags); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return ctx, nil
}

// Change is one setting whose value differs between two Configs.
type Change struct {
	// Name is the setting's flag name (pool-size).
	Name string
	// Old and New are the values, for the log; a secret's are both
	// "(hidden)".
	Old, New any
}

// Diff returns the settings whose values differ from old to new, in the
// order --help lists them.
func Diff(old, new Config) []Change {
	var out []Change
	for _, s := range settings {
		a, b := s.value(&old), s.value(&new)
		if a == b {
			continue
		}
		if strings.Contains(s.name, "secret") {
			a, b = "(hidden)", "(hidden)"
		}
		out = append(out, Change{Name: s.name, Old: a, New: b})
	}
	return out
}

// NewLevelLogger is NewLogger with its level in level, which it sets from
// cfg: a reload changes the level by setting level.
func NewLevelLogger(cfg Config, w io.Writer, level *slog.LevelVar) *slog.Logger {
	level.Set(ParseLogLevel(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// ParseLogLevel reads a log-level value; an unknown one, which Validate
// refuses, is info.
func ParseLogLevel(s string) slog.Level {
	var level slog.Level
	_ = level.UnmarshalText([]byte(s))
	return level
}

// CopySetting copies the setting called name (a flag name) from src to
// dst; an unknown name copies nothing.
func CopySetting(name string, src, dst *Config) {
	for _, s := range settings {
		if s.name == name {
			s.copy(src, dst)
			return
		}
	}
}
