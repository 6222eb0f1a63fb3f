package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// The commands that manage who may reach which tenant (grants, for
// --tenant-access granted) and under which other names (aliases). They
// print to c.App.Writer, so that tests can read what a person would see.

// adminCommand is a command of the registry: --config and --backend, read
// the same way as serve reads them, and the command's own flags (extra).
func adminCommand(name, usage, argsUsage string, action cli.ActionFunc, extra ...cli.Flag) *cli.Command {
	flags := append(config.BackendFlags(), extra...)
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: argsUsage,
		Flags:     flags,
		Before:    config.LoadConfigFile(flags),
		Action:    action,
	}
}

func tenantGrantCommand() *cli.Command {
	return adminCommand("grant",
		"let USER connect to TENANT when serving with --tenant-access granted (TENANT * = every tenant, "+
			"including ones created later); running it again is harmless",
		"TENANT USER", tenantGrant)
}

func tenantRevokeCommand() *cli.Command {
	return adminCommand("revoke",
		"undo `tenant grant TENANT USER`; new connections are refused at once, open ones stay",
		"TENANT USER", tenantRevoke)
}

func tenantAliasCommand() *cli.Command {
	return &cli.Command{
		Name:  "alias",
		Usage: "manage other names clients may connect to a tenant with",
		Subcommands: []*cli.Command{
			adminCommand("add", "make ALIAS another name for TENANT; running it again is harmless",
				"ALIAS TENANT", aliasAdd),
			adminCommand("remove", "remove ALIAS; clients using it get \"does not exist\"",
				"ALIAS", aliasRemove),
			adminCommand("list", "list aliases and the tenants they name", "", aliasList),
		},
	}
}

// adminExit gives an admin function's error its exit code: a name or
// tenant the person can correct (including a schema named like a role) is
// a usage error, anything else (the backend, a conflict in the registry) a
// runtime one.
func adminExit(err error) error {
	var invalid *router.InvalidNameError
	var unknown *router.UnknownTenantError
	var roleNamed *router.RoleNamedSchemaError
	var notEmpty *router.SchemaNotEmptyError
	if errors.As(err, &invalid) || errors.As(err, &unknown) || errors.As(err, &roleNamed) || errors.As(err, &notEmpty) {
		return cli.Exit(err, exitUsage)
	}
	return cli.Exit(err, exitRuntime)
}

// tenantArg validates a TENANT argument (a tenant name, or * where allowed)
// before anything connects, so that a typo fails fast and alone.
func tenantArg(tenant string, allowAll bool) error {
	if allowAll && tenant == router.AllTenants {
		return nil
	}
	if err := router.ValidateTenantName(tenant); err != nil {
		return cli.Exit(err, exitUsage)
	}
	return nil
}

// describeTenant says what a grant of tenant covers.
func describeTenant(tenant string) string {
	if tenant == router.AllTenants {
		return "every tenant (*)"
	}
	return "tenant " + tenant
}

// grantArgs reads and checks the TENANT USER of grant and revoke before
// anything connects, so that a typo fails fast and alone.
func grantArgs(c *cli.Context, usage string) (tenant, user string, err error) {
	if c.NArg() != 2 {
		return "", "", cli.Exit(usage, exitUsage)
	}
	tenant, user = c.Args().Get(0), c.Args().Get(1)
	if err := tenantArg(tenant, true); err != nil {
		return "", "", err
	}
	if err := router.ValidateUserName(user); err != nil {
		return "", "", cli.Exit(err, exitUsage)
	}
	return tenant, user, nil
}

func tenantGrant(c *cli.Context) error {
	tenant, user, err := grantArgs(c, "usage: pgtenant tenant grant [--backend DSN] TENANT USER (TENANT * for every tenant)")
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		created, err := router.GrantTenant(c.Context, conn, tenant, user)
		if err != nil {
			return adminExit(err)
		}
		if created {
			fmt.Fprintf(c.App.Writer, "granted %s to user %s\n", describeTenant(tenant), user)
		} else {
			fmt.Fprintf(c.App.Writer, "user %s already has %s\n", user, describeTenant(tenant))
		}
		return nil
	})
}

func tenantRevoke(c *cli.Context) error {
	tenant, user, err := grantArgs(c, "usage: pgtenant tenant revoke [--backend DSN] TENANT USER (TENANT * for the grant of every tenant)")
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		removed, err := router.RevokeTenant(c.Context, conn, tenant, user)
		if err != nil {
			return adminExit(err)
		}
		if removed {
			fmt.Fprintf(c.App.Writer, "revoked %s from user %s\n", describeTenant(tenant), user)
		} else {
			fmt.Fprintf(c.App.Writer, "user %s had no grant of %s; nothing changed\n", user, describeTenant(tenant))
		}
		if tenant == router.AllTenants {
			return nil
		}
		// Each grant is revoked as it was given, so a grant of every tenant
		// still lets the user in; say so rather than let the person believe
		// the door is shut.
		grants, err := router.ListGrants(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		for _, g := range grants {
			if g.User == user && g.Tenant == router.AllTenants {
				fmt.Fprintf(c.App.Writer,
					"note: user %s can still connect to %s through its grant of every tenant (*); "+
						"revoke that with: pgtenant tenant revoke '*' %s\n", user, tenant, user)
			}
		}
		return nil
	})
}

func aliasAdd(c *cli.Context) error {
	if c.NArg() != 2 {
		return cli.Exit("usage: pgtenant tenant alias add [--backend DSN] ALIAS TENANT", exitUsage)
	}
	alias, tenant := c.Args().Get(0), c.Args().Get(1)
	if err := router.ValidateAliasName(alias); err != nil {
		return cli.Exit(err, exitUsage)
	}
	if err := tenantArg(tenant, false); err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		if err := router.AddTenantAlias(c.Context, conn, alias, tenant); err != nil {
			return adminExit(err)
		}
		fmt.Fprintf(c.App.Writer, "alias %s names tenant %s\n", alias, tenant)
		return nil
	})
}

func aliasRemove(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("usage: pgtenant tenant alias remove [--backend DSN] ALIAS", exitUsage)
	}
	alias := c.Args().First()
	if err := router.ValidateAliasName(alias); err != nil {
		return cli.Exit(err, exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		removed, err := router.RemoveTenantAlias(c.Context, conn, alias)
		if err != nil {
			return adminExit(err)
		}
		if removed {
			fmt.Fprintf(c.App.Writer, "removed alias %s\n", alias)
		} else {
			fmt.Fprintf(c.App.Writer, "there is no alias %s; nothing changed\n", alias)
		}
		return nil
	})
}

func aliasList(c *cli.Context) error {
	if c.NArg() != 0 {
		return cli.Exit("usage: pgtenant tenant alias list [--backend DSN]", exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		aliases, err := router.ListAliases(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ALIAS\tTENANT")
		for _, a := range aliases {
			fmt.Fprintf(w, "%s\t%s\n", a.Alias, a.Tenant)
		}
		return w.Flush()
	})
}
