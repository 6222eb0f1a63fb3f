package cli

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgtenant/pgtenant/router"
	"github.com/urfave/cli/v2"
)

// migStatus is one row of `migrate status`: a tenant, or public's shared
// migrations (Tenant "(shared)").
type migStatus struct {
	Tenant  string `json:"tenant"`
	Schema  string `json:"schema"`
	Enabled bool   `json:"enabled"`
	// Version is the highest version applied, 0 for none.
	Version int64 `json:"version"`
	// Applied is how many files were applied.
	Applied       int        `json:"applied"`
	LastAppliedAt *time.Time `json:"last_applied_at"`
	// DurationMS is the time all its applied files took to run, summed.
	DurationMS float64 `json:"duration_ms"`
	// Pending are the files of --dir not applied yet; null without --dir.
	Pending []string `json:"pending"`
	// Changed are applied files whose content differs now (migrate would
	// refuse to run); null without --dir.
	Changed []string `json:"changed"`
}

const sharedStatusName = "(shared)"

func migrateStatus(c *cli.Context) error {
	format := c.String("format")
	if format != "table" && format != "csv" && format != "json" {
		return cli.Exit(fmt.Sprintf("--format %q: use table, csv or json", format), exitUsage)
	}
	if c.NArg() != 0 {
		return cli.Exit("usage: pgtenant migrate status [--dir DIR] [--shared-dir DIR] [--tenant NAME]... [--format table|csv|json]", exitUsage)
	}
	names := c.StringSlice("tenant")
	for _, n := range names {
		if err := tenantArg(n, false); err != nil {
			return err
		}
	}
	files, shared, err := migrateFiles(c, false)
	if err != nil {
		return err
	}
	ctx := c.Context
	conn, err := migrateConnect(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	tenants, err := migrateTenants(ctx, conn, names, false)
	if err != nil {
		return err
	}
	applied, appliedShared, err := appliedMigrations(ctx, conn)
	if err != nil {
		return err
	}

	var rows []migStatus
	if c.String("shared-dir") != "" || len(appliedShared) > 0 {
		rows = append(rows, statusRow(sharedStatusName, "public", true, appliedShared, shared, c.String("shared-dir") != ""))
	}
	byTenant := map[string][]router.AppliedMigration{}
	for _, m := range applied {
		byTenant[m.Tenant] = append(byTenant[m.Tenant], m)
	}
	for _, t := range tenants {
		rows = append(rows, statusRow(t.Name, t.Schema, t.Active, byTenant[t.Name], files, c.String("dir") != ""))
	}
	return printStatus(c, format, rows, c.String("dir") != "" || c.String("shared-dir") != "")
}

func statusRow(name, schema string, enabled bool, ms []router.AppliedMigration, files []migFile, withFiles bool) migStatus {
	s := migStatus{Tenant: name, Schema: schema, Enabled: enabled, Version: maxVersion(ms), Applied: len(ms)}
	var total time.Duration
	for _, m := range ms {
		total += m.Duration
		if s.LastAppliedAt == nil || m.AppliedAt.After(*s.LastAppliedAt) {
			at := m.AppliedAt.UTC()
			s.LastAppliedAt = &at
		}
	}
	s.DurationMS = float64(total.Microseconds()) / 1000
	if withFiles {
		s.Pending, s.Changed = []string{}, []string{}
		for _, f := range pendingFiles(files, ms) {
			s.Pending = append(s.Pending, f.Name)
		}
		sums := map[int64]string{}
		for _, m := range ms {
			sums[m.Version] = m.Checksum
		}
		for _, f := range files {
			if sum, ok := sums[f.Version]; ok && sum != f.Checksum {
				s.Changed = append(s.Changed, f.Name)
			}
		}
	}
	return s
}

func printStatus(c *cli.Context, format string, rows []migStatus, withFiles bool) error {
	w := c.App.Writer
	state := func(r migStatus) string {
		if r.Enabled {
			return "enabled"
		}
		return "disabled"
	}
	at := func(r migStatus) string {
		if r.LastAppliedAt == nil {
			return ""
		}
		return r.LastAppliedAt.Format(time.RFC3339)
	}
	switch format {
	case "json":
		if rows == nil {
			rows = []migStatus{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	case "csv":
		cw := csv.NewWriter(w)
		header := []string{"tenant", "schema", "state", "version", "applied", "last_applied_at", "duration_ms"}
		if withFiles {
			header = append(header, "pending", "changed")
		}
		_ = cw.Write(header)
		for _, r := range rows {
			rec := []string{r.Tenant, r.Schema, state(r), strconv.FormatInt(r.Version, 10), strconv.Itoa(r.Applied), at(r),
				strconv.FormatFloat(r.DurationMS, 'f', 3, 64)}
			if withFiles {
				rec = append(rec, strings.Join(r.Pending, " "), strings.Join(r.Changed, " "))
			}
			_ = cw.Write(rec)
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := "TENANT\tSCHEMA\tSTATE\tVERSION\tAPPLIED\tLAST APPLIED\tDURATION"
	if withFiles {
		header += "\tPENDING"
	}
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		line := fmt.Sprintf("%s\t%s\t%s\t%d\t%d\t%s\t%s", r.Tenant, r.Schema, state(r), r.Version, r.Applied, at(r),
			(time.Duration(r.DurationMS*1000) * time.Microsecond).Round(time.Millisecond))
		if withFiles {
			pending := "-"
			if len(r.Pending) > 0 {
				pending = strings.Join(r.Pending, ",")
			}
			for _, ch := range r.Changed {
				pending += " (" + ch + " CHANGED since applied)"
			}
			line += "\t" + pending
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}
