package cli

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// The lifecycle commands (issue 13): disable, enable, drop, rename, clone,
// export, import, and `tenant list` with each tenant's state. They go
// through the registry, so every running proxy follows at once (its NOTIFY
// trigger, and the kick payload); they ask no questions, so scripts can run
// them, and print what they did.

// kickWait is how long drop --kick waits for the kicked clients to go, and
// dropSettle how long drop waits after disabling the tenant before it looks
// for clients (a client admitted just before reaches its proxy's presence
// lock a moment later).
const (
	kickWait   = 10 * time.Second
	dropSettle = time.Second
)

func lifecycleCommands() []*cli.Command {
	kick := func(usage string) cli.Flag { return &cli.BoolFlag{Name: "kick", Usage: usage} }
	schemaFlag := &cli.StringFlag{Name: "schema", Usage: "schema of the new tenant (default: its name)"}
	return []*cli.Command{
		adminCommand("disable",
			"refuse new clients of NAME (55000) on every proxy; --kick also closes its connected clients (open transactions roll back)",
			"NAME", tenantDisable, kick("also close the tenant's connected clients on every proxy")),
		adminCommand("enable", "let NAME's clients connect again", "NAME", tenantEnable),
		adminCommand("drop",
			"remove NAME: its schema (refused while it holds tables, unless --force), registry rows, aliases, grants, settings "+
				"and, in role mode, its role; refused while clients are connected, unless --kick",
			"NAME", tenantDrop,
			&cli.BoolFlag{Name: "force", Usage: "drop the schema even though it holds tables"},
			kick("close the tenant's clients on every proxy first, and wait for them to go"),
			&cli.BoolFlag{Name: "keep-schema", Usage: "leave the schema and its data; remove only the tenant"}),
		adminCommand("rename",
			"rename tenant OLD to NEW; OLD stays an alias (unless --no-alias); --schema or --rename-schema renames the schema too",
			"OLD NEW", tenantRename, append([]cli.Flag{
				&cli.StringFlag{Name: "schema", Usage: "rename the tenant's schema to this too"},
				&cli.BoolFlag{Name: "rename-schema", Usage: "rename the tenant's schema to NEW too"},
				&cli.BoolFlag{Name: "no-alias", Usage: "do not keep OLD as an alias"},
				kick("close the tenant's clients on every proxy (needed while clients are connected, to rename the schema or drop the old name)"),
			}, config.IsolationFlags()...)...),
		adminCommand("clone",
			"create tenant DST with a copy of SRC's schema (tables, indexes, sequences, functions, views), with pg_dump; --with-data copies the rows too",
			"SRC DST", tenantClone, append([]cli.Flag{
				&cli.BoolFlag{Name: "with-data", Usage: "copy SRC's rows too"},
				schemaFlag,
			}, config.IsolationFlags()...)...),
		adminCommand("export",
			"write NAME's schema and rows to stdout as SQL (pg_dump -n), for tenant import",
			"NAME", tenantExport),
		adminCommand("import",
			"create tenant NAME from the SQL of tenant export (or pg_dump -n) on stdin, its schema renamed",
			"NAME", tenantImport, append([]cli.Flag{schemaFlag}, config.IsolationFlags()...)...),
	}
}

func tenantListCommand() *cli.Command {
	return adminCommand("list",
		"list tenants: state, schema size, migration version, proxies with clients, aliases",
		"", tenantList,
		&cli.StringFlag{Name: "format", Value: "table", Usage: "table, csv or json"})
}

// oneTenantArg reads the single NAME argument of a command, validated.
func oneTenantArg(c *cli.Context, usage string) (string, error) {
	if c.NArg() != 1 {
		return "", cli.Exit("usage: pgtenant tenant "+usage, exitUsage)
	}
	name := c.Args().First()
	return name, tenantArg(name, false)
}

// lifecycleExit is adminExit, with the refusals of drop and rename as
// usage errors: the person decides (--force, --kick).
func lifecycleExit(err error) error {
	var connected *router.ClientsConnectedError
	var tables *router.TablesInSchemaError
	var taken *router.NameInUseError
	if errors.As(err, &connected) || errors.As(err, &tables) || errors.As(err, &taken) {
		return cli.Exit(err, exitUsage)
	}
	return adminExit(err)
}

func tenantDisable(c *cli.Context) error {
	name, err := oneTenantArg(c, "disable NAME [--kick]")
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		found, err := router.DisableTenant(c.Context, conn, name, c.Bool("kick"))
		if err != nil {
			return adminExit(err)
		}
		if !found {
			return adminExit(&router.UnknownTenantError{Name: name})
		}
		fmt.Fprintf(c.App.Writer, "disabled tenant %s: new clients get 55000\n", name)
		if c.Bool("kick") {
			fmt.Fprintf(c.App.Writer, "asked every proxy to close the clients of %s\n", name)
		}
		return nil
	})
}

func tenantEnable(c *cli.Context) error {
	name, err := oneTenantArg(c, "enable NAME")
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		found, err := router.SetTenantActive(c.Context, conn, name, true)
		if err != nil {
			return adminExit(err)
		}
		if !found {
			return adminExit(&router.UnknownTenantError{Name: name})
		}
		fmt.Fprintf(c.App.Writer, "enabled tenant %s\n", name)
		return nil
	})
}

func tenantDrop(c *cli.Context) error {
	name, err := oneTenantArg(c, "drop NAME [--force] [--kick] [--keep-schema]")
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		w := c.App.Writer
		if err := refuseTenantElsewhere(c.Context, conn, name, "tenant drop"); err != nil {
			return err
		}
		res, err := router.DropTenant(c.Context, conn, name, router.DropOptions{
			Force: c.Bool("force"), Kick: c.Bool("kick"), KeepSchema: c.Bool("keep-schema"),
			KickWait: kickWait, Settle: dropSettle,
			Progress: func(msg string) { fmt.Fprintln(w, msg) },
		})
		if err != nil {
			return lifecycleExit(err)
		}
		switch {
		case res.SchemaDropped:
			fmt.Fprintf(w, "dropped schema %s (%d table(s))\n", res.Schema, res.Tables)
		case c.Bool("keep-schema"):
			fmt.Fprintf(w, "kept schema %s (%d table(s)); it belongs to no tenant now\n", res.Schema, res.Tables)
		default:
			fmt.Fprintf(w, "schema %s did not exist\n", res.Schema)
		}
		if res.Role != "" {
			fmt.Fprintf(w, "dropped role %s\n", res.Role)
		}
		fmt.Fprintf(w, "removed tenant %s from the registry, with %d alias(es), %d grant(s), %d setting(s)\n",
			name, res.Aliases, res.Grants, res.Settings)
		return nil
	})
}

func tenantRename(c *cli.Context) error {
	usage := "usage: pgtenant tenant rename OLD NEW [--schema SCHEMA | --rename-schema] [--no-alias] [--kick]"
	if c.NArg() != 2 {
		return cli.Exit(usage, exitUsage)
	}
	old, new := c.Args().Get(0), c.Args().Get(1)
	if err := tenantArg(old, false); err != nil {
		return err
	}
	if err := tenantArg(new, false); err != nil {
		return err
	}
	schema := c.String("schema")
	if c.Bool("rename-schema") {
		if schema != "" {
			return cli.Exit("--schema and --rename-schema: give one\n"+usage, exitUsage)
		}
		schema = new
	}
	if schema != "" {
		if err := router.ValidateSchemaName(schema); err != nil {
			return cli.Exit(err, exitUsage)
		}
	}
	secret, err := createSecret(c)
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		if err := refuseTenantElsewhere(c.Context, conn, old, "tenant rename"); err != nil {
			return err
		}
		res, err := router.RenameTenant(c.Context, conn, old, new, router.RenameOptions{
			Schema: schema, NoAlias: c.Bool("no-alias"), Kick: c.Bool("kick"), RoleSecret: secret,
		})
		if err != nil {
			return lifecycleExit(err)
		}
		w := c.App.Writer
		fmt.Fprintf(w, "renamed tenant %s to %s\n", old, new)
		if res.Schema != res.OldSchema {
			fmt.Fprintf(w, "renamed schema %s to %s\n", res.OldSchema, res.Schema)
		}
		if res.AliasKept {
			fmt.Fprintf(w, "%s stays an alias of %s (remove it with: pgtenant tenant alias remove %s)\n", old, new, old)
		}
		if res.Role != "" {
			fmt.Fprintf(w, "renamed the tenant's role to %s and set its password\n", res.Role)
		}
		if c.Bool("kick") {
			fmt.Fprintf(w, "asked every proxy to close the clients of %s\n", old)
		}
		return nil
	})
}

func tenantClone(c *cli.Context) error {
	if c.NArg() != 2 {
		return cli.Exit("usage: pgtenant tenant clone SRC DST [--with-data] [--schema SCHEMA]", exitUsage)
	}
	src, dst := c.Args().Get(0), c.Args().Get(1)
	if err := tenantArg(src, false); err != nil {
		return err
	}
	if err := tenantArg(dst, false); err != nil {
		return err
	}
	secret, err := createSecret(c)
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		st, found, err := router.FindTenant(c.Context, conn, src)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		if !found {
			return adminExit(&router.UnknownTenantError{Name: src})
		}
		if err := refuseElsewhere([]router.Tenant{st}, "tenant clone"); err != nil {
			return err
		}
		schema := c.String("schema")
		if schema == "" {
			schema = dst
		}
		if err := router.CheckNewTenant(c.Context, conn, dst, schema); err != nil {
			return lifecycleExit(fmt.Errorf("clone tenant %q to %q: %w", src, dst, err))
		}
		dump, err := pgDump(c, st.Schema, !c.Bool("with-data"))
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		if err := restoreAs(c, conn, dump, st.Schema, dst, schema, secret); err != nil {
			return err
		}
		what := "structure"
		if c.Bool("with-data") {
			what = "structure and rows"
		}
		fmt.Fprintf(c.App.Writer, "cloned tenant %s (schema %s) to %s (schema %s): %s\n", src, st.Schema, dst, schema, what)
		return nil
	})
}

// exportMarker starts the header of `tenant export`; exportSchemaLine
// names the schema in it, which import reads.
const (
	exportMarker     = "-- pgtenant tenant export"
	exportSchemaLine = "-- schema: "
)

func tenantExport(c *cli.Context) error {
	name, err := oneTenantArg(c, "export NAME > FILE.sql")
	if err != nil {
		return err
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		t, found, err := router.FindTenant(c.Context, conn, name)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		if !found {
			return adminExit(&router.UnknownTenantError{Name: name})
		}
		if err := refuseElsewhere([]router.Tenant{t}, "tenant export"); err != nil {
			return err
		}
		header := fmt.Sprintf("%s\n-- tenant: %s\n%s%s\n-- exported: %s\n"+
			"-- restore as a new tenant with: pgtenant tenant import NAME [--schema SCHEMA] < this-file\n\n",
			exportMarker, t.Name, exportSchemaLine, t.Schema, time.Now().UTC().Format(time.RFC3339))
		if _, err := io.WriteString(c.App.Writer, header); err != nil {
			return cli.Exit(err, exitRuntime)
		}
		if err := pgDumpTo(c, t.Schema, false, c.App.Writer); err != nil {
			return cli.Exit(err, exitRuntime)
		}
		return nil
	})
}

func tenantImport(c *cli.Context) error {
	name, err := oneTenantArg(c, "import NAME [--schema SCHEMA] < FILE.sql")
	if err != nil {
		return err
	}
	schema := c.String("schema")
	if schema == "" {
		schema = name
	}
	if err := router.ValidateSchemaName(schema); err != nil {
		return cli.Exit(err, exitUsage)
	}
	secret, err := createSecret(c)
	if err != nil {
		return err
	}
	dump, err := io.ReadAll(c.App.Reader)
	if err != nil {
		return cli.Exit(fmt.Errorf("read the dump from stdin: %w", err), exitRuntime)
	}
	from, err := dumpSchema(dump)
	if err != nil {
		return cli.Exit(err, exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		if err := router.CheckNewTenant(c.Context, conn, name, schema); err != nil {
			return lifecycleExit(fmt.Errorf("import tenant %q: %w", name, err))
		}
		if err := restoreAs(c, conn, dump, from, name, schema, secret); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "imported tenant %s (schema %s) from a dump of schema %s\n", name, schema, from)
		return nil
	})
}

// dumpSchema finds the schema a dump holds: the header of tenant export,
// else its CREATE SCHEMA statement (pg_dump quotes a name that is a
// keyword).
func dumpSchema(dump []byte) (string, error) {
	var created string
	for _, line := range strings.Split(string(dump), "\n") {
		if s, ok := strings.CutPrefix(line, exportSchemaLine); ok {
			created = strings.TrimSpace(s)
			break
		}
		if s, ok := strings.CutPrefix(line, "CREATE SCHEMA "); ok {
			created = strings.Trim(strings.TrimSuffix(strings.TrimSpace(s), ";"), `"`)
			break
		}
	}
	if created == "" {
		return "", errors.New("stdin holds no schema: give the output of `pgtenant tenant export` or `pg_dump -n SCHEMA`")
	}
	if err := router.ValidateSchemaName(created); err != nil {
		return "", fmt.Errorf("the dump's schema: %w", err)
	}
	return created, nil
}

func tenantList(c *cli.Context) error {
	if c.NArg() != 0 {
		return cli.Exit("usage: pgtenant tenant list [--format table|csv|json]", exitUsage)
	}
	format := c.String("format")
	switch format {
	case "table", "csv", "json":
	default:
		return cli.Exit(fmt.Sprintf("--format must be table, csv or json, not %q", format), exitUsage)
	}
	return withAdminConn(c, func(conn *pgx.Conn) error {
		ts, err := router.DescribeTenants(c.Context, conn)
		if err != nil {
			return cli.Exit(err, exitRuntime)
		}
		return writeTenantList(c.App.Writer, format, ts)
	})
}

// listedTenant is a tenant list row as json and csv give it.
type listedTenant struct {
	Name             string   `json:"name"`
	Schema           string   `json:"schema"`
	State            string   `json:"state"`
	SizeBytes        int64    `json:"size_bytes"`
	MigrationVersion string   `json:"migration_version"`
	ConnectedProxies int      `json:"connected_proxies"`
	Aliases          []string `json:"aliases"`
	Backend          string   `json:"backend"`
}

func writeTenantList(w io.Writer, format string, ts []router.TenantInfo) error {
	rows := make([]listedTenant, len(ts))
	for i, t := range ts {
		state := "active"
		if !t.Active {
			state = "disabled"
		}
		aliases := t.Aliases
		if aliases == nil {
			aliases = []string{}
		}
		rows[i] = listedTenant{Name: t.Name, Schema: t.Schema, State: state, SizeBytes: t.SizeBytes,
			MigrationVersion: t.MigrationVersion, ConnectedProxies: t.ConnectedProxies, Aliases: aliases,
			Backend: t.BackendOf()}
	}
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write([]string{"name", "schema", "state", "size_bytes", "migration_version", "connected_proxies", "aliases", "backend"})
		for _, r := range rows {
			_ = cw.Write([]string{r.Name, r.Schema, r.State, strconv.FormatInt(r.SizeBytes, 10), r.MigrationVersion,
				strconv.Itoa(r.ConnectedProxies), strings.Join(r.Aliases, " "), r.Backend})
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCHEMA\tSTATE\tSIZE\tMIGRATION\tCLIENTS\tBACKEND\tALIASES")
	for _, r := range rows {
		mig := r.MigrationVersion
		if mig == "" {
			mig = "-"
		}
		clients := "-"
		switch {
		case r.ConnectedProxies == 1:
			clients = "via 1 proxy"
		case r.ConnectedProxies > 1:
			clients = fmt.Sprintf("via %d proxies", r.ConnectedProxies)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Schema, r.State, humanBytes(r.SizeBytes), mig, clients,
			r.Backend, strings.Join(r.Aliases, ","))
	}
	return tw.Flush()
}

// humanBytes shows a size with a 1024-based unit, as tenant set reads them.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	units := []string{"kB", "MB", "GB", "TB"}
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
