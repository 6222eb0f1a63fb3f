package cli

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// The commands of per-tenant settings (router/tenantsettings.go): set,
// unset and show. Every proxy follows a change at once (NOTIFY).

const settingKeysHelp = "keys: max_backends, max_clients, rate (transactions/s), rate_burst, storage_quota (bytes; 500MB, 10GB), " +
	"tier (a label), set.NAME (a session setting such as set.statement_timeout=5s)"

func tenantSetCommand() *cli.Command {
	return adminCommand("set",
		"set TENANT's own settings; every proxy applies them at once ("+settingKeysHelp+")",
		"TENANT KEY=VALUE [KEY=VALUE...]", tenantSet)
}

func tenantUnsetCommand() *cli.Command {
	return adminCommand("unset", "remove settings of TENANT: they go back to the proxy's defaults",
		"TENANT KEY [KEY...]", tenantUnset)
}

func tenantShowCommand() *cli.Command {
	return adminCommand("show", "show TENANT and its own settings", "TENANT", tenantShow)
}

// settingArgs reads KEY=VALUE arguments and checks them before anything
// connects, so that a typo fails fast and alone.
func settingArgs(args []string) (map[string]string, error) {
	kv := make(map[string]string, len(args))
	for _, a := range args {
		key, value, ok := strings.Cut(a, "=")
		if !ok {
			return nil, cli.Exit(fmt.Sprintf("%q is not KEY=VALUE (%s)", a, settingKeysHelp), exitUsage)
		}
		key, value, err := router.ValidateSetting(key, value)
		if err != nil {
			return nil, cli.Exit(err, exitUsage)
		}
		if _, dup := kv[key]; dup {
			return nil, cli.Exit(fmt.Sprintf("%s is given twice", key), exitUsage)
		}
		kv[key] = value
	}
	return kv, nil
}

func tenantSet(c *cli.Context) error {
	if c.NArg() < 2 {
		return cli.Exit("usage: pgtenant tenant set [--backend DSN] TENANT KEY=VALUE [KEY=VALUE...] ("+settingKeysHelp+")", exitUsage)
	}
	tenant := c.Args().First()
	if err := tenantArg(tenant, false); err != nil {
		return err
	}
	kv, err := settingArgs(c.Args().Tail())
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		if err := router.SetTenantSettings(c.Context, conn, tenant, kv); err != nil {
			return settingsExit(err)
		}
		keys := make([]string, 0, len(kv))
		for k := range kv {
			keys = append(keys, k+"="+kv[k])
		}
		sort.Strings(keys)
		fmt.Fprintf(c.App.Writer, "tenant %s: set %s\n", tenant, strings.Join(keys, " "))
		return nil
	})
}

func tenantUnset(c *cli.Context) error {
	if c.NArg() < 2 {
		return cli.Exit("usage: pgtenant tenant unset [--backend DSN] TENANT KEY [KEY...]", exitUsage)
	}
	tenant := c.Args().First()
	if err := tenantArg(tenant, false); err != nil {
		return err
	}
	keys := c.Args().Tail()
	for _, k := range keys {
		if _, err := router.ValidateSettingKey(k); err != nil {
			return cli.Exit(err, exitUsage)
		}
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		removed, err := router.UnsetTenantSettings(c.Context, conn, tenant, keys)
		if err != nil {
			return settingsExit(err)
		}
		if len(removed) == 0 {
			fmt.Fprintf(c.App.Writer, "tenant %s had none of these settings; nothing changed\n", tenant)
			return nil
		}
		fmt.Fprintf(c.App.Writer, "tenant %s: unset %s\n", tenant, strings.Join(removed, " "))
		return nil
	})
}

func tenantShow(c *cli.Context) error {
	if c.NArg() != 1 {
		return cli.Exit("usage: pgtenant tenant show [--backend DSN] TENANT", exitUsage)
	}
	tenant := c.Args().First()
	if err := tenantArg(tenant, false); err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		t, kv, err := router.ListTenantSettings(c.Context, conn, tenant)
		if err != nil {
			return settingsExit(err)
		}
		state := "active"
		if !t.Active {
			state = "disabled"
		}
		fmt.Fprintf(c.App.Writer, "tenant %s (schema %s, %s)\n", t.Name, t.Schema, state)
		if len(kv) == 0 {
			fmt.Fprintln(c.App.Writer, "no settings of its own: the proxy's defaults apply")
			return nil
		}
		keys := make([]string, 0, len(kv))
		for k := range kv {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return showOrder(keys[i]) < showOrder(keys[j]) })
		w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "KEY\tVALUE")
		for _, k := range keys {
			fmt.Fprintf(w, "%s\t%s\n", k, kv[k])
		}
		return w.Flush()
	})
}

// showOrder sorts the plain keys in their documented order, then session
// settings by name.
func showOrder(key string) string {
	for i, k := range router.SettingKeys {
		if k == key {
			return fmt.Sprintf("0%02d", i)
		}
	}
	return "1" + key
}

// settingsExit is adminExit that also takes a refused setting for a usage
// error.
func settingsExit(err error) error {
	var invalid *router.InvalidSettingError
	if errors.As(err, &invalid) {
		return cli.Exit(err, exitUsage)
	}
	return adminExit(err)
}
