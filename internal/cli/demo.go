package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/internal/pgcluster"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// demoTenants get a schema each with an orders table holding different rows,
// so `select * from orders` shows at once which tenant a client is in.
var demoTenants = []struct {
	name   string
	orders []string
}{
	{"acme", []string{"anvil", "rocket skates"}},
	{"globex", []string{"hammock", "doomsday device", "flamethrower"}},
}

// demo is `pgtenant demo`: a throwaway PostgreSQL 15 from the installed
// server binaries, the demo tenants, and pgtenant serving it until Ctrl-C.
func demo(c *cli.Context) error {
	ctx := c.Context
	fmt.Fprintln(os.Stderr, "pgtenant demo: starting a throwaway PostgreSQL ...")
	cl, err := pgcluster.Start(ctx, pgcluster.Options{})
	if err != nil {
		if errors.Is(err, pgcluster.ErrNotInstalled) {
			return cli.Exit(fmt.Errorf("%w (run `make deps`)", err), exitRuntime)
		}
		return cli.Exit(err, exitRuntime)
	}
	defer cl.Stop()

	// As in production (README "Production setup"): the registry belongs
	// to an admin (here the cluster's superuser) and tenant traffic runs as
	// demoPoolRole, which can do nothing else.
	dsn := cl.DSN("postgres")
	if err := seedDemo(ctx, dsn); err != nil {
		return cli.Exit(fmt.Errorf("create demo tenants: %w", err), exitRuntime)
	}
	if !c.IsSet("backend") {
		poolDSN := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable", cl.Host, cl.Port, demoPoolRole)
		if err := c.Set("backend", poolDSN); err != nil {
			return err
		}
		if !c.IsSet("registry") {
			if err := c.Set("registry", dsn); err != nil {
				return err
			}
		}
	}
	cfg, err := config.FromContext(c)
	if err != nil {
		return cli.Exit(err, exitUsage)
	}
	level := new(slog.LevelVar)
	log := config.NewLevelLogger(cfg, os.Stderr, level)
	fmt.Fprintf(os.Stderr, "\npgtenant demo is up. Tenants acme and globex each have their own schema with an orders table.\n")
	if kind := cfg.EffectiveAuthType(); kind == config.AuthTrust {
		fmt.Fprintf(os.Stderr, "Authentication: trust, no password: anyone who can reach %s gets in (loopback only by default).\n", cfg.Listen)
	} else {
		sources := strings.TrimPrefix(cfg.AuthFile+" and "+cfg.AuthQuery, " and ")
		fmt.Fprintf(os.Stderr, "Authentication: %s, users from %s.\n", kind, strings.TrimSuffix(sources, " and "))
	}
	fmt.Fprintf(os.Stderr, `
  psql -h 127.0.0.1 -p 6432 -d acme -c 'select current_schema(), * from orders'
  psql -h 127.0.0.1 -p 6432 -d globex -c 'select current_schema(), * from orders'
  DSN for an app:  postgres://app@%s/acme?sslmode=disable

Backend (the throwaway PostgreSQL), tenant traffic: %s
Registry (admin): %s
Press Ctrl-C to stop; the throwaway PostgreSQL is removed on exit.

`, cfg.Listen, cfg.Backend, cfg.RegistryDSN())
	// The demo's backend and registry are its throwaway server's, set
	// above: a reload keeps them.
	if err := runProxy(ctx, cfg, log, level, config.Reloader(c, "backend", "registry")); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	return nil
}

// demoPoolRole is the role the demo's tenant traffic runs as.
const demoPoolRole = "pgtenant_pool"

func seedDemo(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE ROLE "+demoPoolRole+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"); err != nil {
		return err
	}
	for _, dt := range demoTenants {
		t, _, err := router.CreateTenant(ctx, conn, dt.name, "", router.PoolRole(demoPoolRole))
		if err != nil {
			return err
		}
		table := pgx.Identifier{t.Schema, "orders"}.Sanitize()
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+table+
			" (id serial PRIMARY KEY, item text NOT NULL)"); err != nil {
			return err
		}
		for _, item := range dt.orders {
			if _, err := conn.Exec(ctx, "INSERT INTO "+table+" (item) VALUES ($1)", item); err != nil {
				return err
			}
		}
	}
	return nil
}
