package pgcluster

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// managedSettings are set by Start from the cluster's own state; a caller
// overriding them would make Host, Port or the socket directory lie.
var managedSettings = map[string]string{
	"port":                    "chosen by Start and passed on the command line",
	"listen_addresses":        "the cluster listens on 127.0.0.1 only",
	"unix_socket_directories": "the socket lives in the cluster's own directory",
	"max_connections":         "use Options.MaxConnections",
}

// settingName matches a PostgreSQL parameter name, custom ones
// ("pg_stat_statements.max") included.
var settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// checkSettings rejects names and values that postgresql.conf cannot hold or
// that the cluster manages itself.
func checkSettings(settings map[string]string) error {
	for name, value := range settings {
		if !settingName.MatchString(name) {
			return fmt.Errorf("cluster: setting name %q is not a PostgreSQL parameter name", name)
		}
		if why, ok := managedSettings[strings.ToLower(name)]; ok {
			return fmt.Errorf("cluster: setting %q is managed by the cluster (%s)", name, why)
		}
		if strings.ContainsAny(value, "\x00\r\n") {
			return fmt.Errorf("cluster: value of setting %q holds a NUL or line break", name)
		}
	}
	return nil
}

// serverSettings returns the postgresql.conf lines for a cluster in dir:
// this package's defaults first, then the caller's, sorted by name, so that
// the caller's win (the last assignment in the file is the one in force).
func serverSettings(dir string, maxConns int, extra map[string]string) []string {
	lines := []string{
		"listen_addresses = " + confQuote("127.0.0.1"),
		"unix_socket_directories = " + confQuote(dir),
		"max_connections = " + strconv.Itoa(maxConns),
		// Throwaway data: durability buys nothing and costs test time.
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		// The log must reach stderr, which is the pipe serverLog copies.
		"logging_collector = off",
		"log_destination = 'stderr'",
	}
	names := make([]string, 0, len(extra))
	for name := range extra {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		lines = append(lines, name+" = "+confQuote(extra[name]))
	}
	return lines
}

// confQuote quotes a postgresql.conf value. Inside single quotes the file's
// lexer takes ” for a quote and processes backslash escapes, so both are
// doubled.
func confQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(v) + "'"
}

// appendConf appends lines to the postgresql.conf at path. Appending keeps
// the file's owner, which matters when initdb ran as another OS user.
func appendConf(path string, lines []string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("cluster: open postgresql.conf: %w", err)
	}
	text := "\n# Added by pgtenant's internal/pgcluster.\n" + strings.Join(lines, "\n") + "\n"
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("cluster: write postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cluster: write postgresql.conf: %w", err)
	}
	return nil
}
