package cli

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// The commands of role isolation (--isolation role): they give tenants
// LOGIN roles of their own, and set those roles' passwords from the role
// secret.

func tenantIsolateCommand() *cli.Command {
	flags := append(config.BackendFlags(), config.IsolationFlags()...)
	flags = append(flags, &cli.BoolFlag{Name: "all", Usage: "every tenant in the registry"})
	return &cli.Command{
		Name: "isolate",
		Usage: "give TENANT (or --all tenants) a LOGIN role of its own that owns its schema and every object in it, " +
			"for serve --isolation role; the password derives from " + config.RoleSecretEnv + " or --role-secret-file " +
			"and PostgreSQL is sent only its SCRAM verifier. Running it again is harmless; with a new secret it rotates the passwords",
		ArgsUsage: "TENANT | --all",
		Flags:     flags,
		Before:    config.LoadConfigFile(flags),
		Action:    tenantIsolate,
	}
}

// roleSecret reads the role secret the way serve does, and refuses one too
// short to derive passwords from.
func roleSecret(c *cli.Context) (string, error) {
	secret, err := config.RoleSecret(c)
	if err != nil {
		return "", cli.Exit(err, exitUsage)
	}
	if len(secret) < config.MinRoleSecretLen {
		return "", cli.Exit(fmt.Sprintf("tenant roles need the role secret their passwords derive from, at least %d bytes: set %s or --role-secret-file",
			config.MinRoleSecretLen, config.RoleSecretEnv), exitUsage)
	}
	return secret, nil
}

func tenantIsolate(c *cli.Context) error {
	all := c.Bool("all")
	if all == (c.NArg() == 1) || c.NArg() > 1 {
		return cli.Exit("usage: pgtenant tenant isolate TENANT | --all --backend DSN", exitUsage)
	}
	if !all {
		if err := tenantArg(c.Args().First(), false); err != nil {
			return err
		}
	}
	secret, err := roleSecret(c)
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		var tenants []router.Tenant
		if all {
			if tenants, err = router.ListTenants(c.Context, conn); err != nil {
				return cli.Exit(err, exitRuntime)
			}
		} else {
			t := router.Tenant{Name: c.Args().First()}
			// Its placement says which server gets the role; a tenant that
			// does not exist is EnsureTenantRole's to report.
			if found, ok, err := router.FindTenant(c.Context, conn, t.Name); err != nil {
				return cli.Exit(err, exitRuntime)
			} else if ok {
				t.Backend = found.Backend
			}
			tenants = []router.Tenant{t}
		}
		if err := router.EnsureTenantGroup(c.Context, conn, sharedSchemas(c)); err != nil {
			return cli.Exit(err, exitRuntime)
		}
		for _, t := range tenants {
			if t.BackendOf() != router.DefaultBackend {
				if err := isolateElsewhere(c, conn, t, secret); err != nil {
					return err
				}
				continue
			}
			if err := router.EnsureTenantRole(c.Context, conn, t, secret); err != nil {
				return adminExit(err)
			}
			fmt.Fprintf(c.App.Writer, "tenant %s: role %s owns its schema\n", t.Name, router.TenantRoleName(t.Name))
		}
		return nil
	})
}

// sharedSchemas is --shared-schemas as a list.
func sharedSchemas(c *cli.Context) []string {
	var out []string
	for _, s := range strings.Split(c.String("shared-schemas"), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// createSecret is the role secret `tenant create` needs: "" without
// --isolation role. It is read before anything connects, so that a missing
// secret does not leave a tenant created without its role.
func createSecret(c *cli.Context) (string, error) {
	switch c.String("isolation") {
	case config.IsolationRole:
		return roleSecret(c)
	case config.IsolationSchema:
		return "", nil
	default:
		return "", cli.Exit(fmt.Sprintf("--isolation must be schema or role, got %q", c.String("isolation")), exitUsage)
	}
}

// isolateCreated gives a tenant just created its role when secret is set
// (tenant create --isolation role).
func isolateCreated(c *cli.Context, conn *pgx.Conn, t router.Tenant, secret string) error {
	if secret == "" {
		return nil
	}
	if t.BackendOf() != router.DefaultBackend {
		return isolateElsewhere(c, conn, t, secret)
	}
	if err := router.EnsureTenantGroup(c.Context, conn, sharedSchemas(c)); err != nil {
		return cli.Exit(err, exitRuntime)
	}
	if err := router.EnsureTenantRole(c.Context, conn, t, secret); err != nil {
		return adminExit(err)
	}
	fmt.Fprintf(c.App.Writer, "tenant %s: role %s owns its schema\n", t.Name, router.TenantRoleName(t.Name))
	return nil
}

// isolateElsewhere gives a tenant placed on another backend its role
// there: roles belong to a server, and the proxy logs the tenant's role in
// to the tenant's backend.
func isolateElsewhere(c *cli.Context, conn *pgx.Conn, t router.Tenant, secret string) error {
	return withBackendConn(c.Context, conn, t.BackendOf(), func(target *pgx.Conn) error {
		if err := router.EnsureTenantRoleOn(c.Context, conn, target, t, secret, sharedSchemas(c)); err != nil {
			return adminExit(err)
		}
		fmt.Fprintf(c.App.Writer, "tenant %s: role %s owns its schema on backend %s\n",
			t.Name, router.TenantRoleName(t.Name), t.BackendOf())
		return nil
	})
}
