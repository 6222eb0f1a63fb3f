package cli

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/pgtenant/pgtenant/router"
)

// migFile is one migration file of a --dir or --shared-dir.
type migFile struct {
	Version  int64
	Name     string // the file's base name, 0001_create_items.sql
	SQL      string
	Checksum string // sha256 of the file's bytes, hex
	// NoTx is set by a `-- pgtenant:no-transaction` line in the file's
	// head: the file runs outside a transaction (see applyFile).
	NoTx bool
}

// migFileRE is what a migration file's name must look like: a version
// number, an underscore, a name, .sql.
var migFileRE = regexp.MustCompile(`^([0-9]+)_([A-Za-z0-9][A-Za-z0-9_.-]*)\.sql$`)

// noTxMarker in a file's head (the comment lines before its first
// statement) runs the file outside a transaction.
const noTxMarker = "pgtenant:no-transaction"

// loadMigrations reads dir's migration files in version order. Only files
// ending in .sql are migrations (a README beside them is fine), and each of
// those must be named NNNN_name.sql with a version no other file has: a
// typo must not silently leave a file out, or run two in an order nobody
// chose.
func loadMigrations(dir string) ([]migFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var files []migFile
	byVersion := map[int64]string{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		m := migFileRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name it NNNN_name.sql (a version number, an underscore, "+
				"then letters, digits, _, - or .), e.g. 0001_create_items.sql", filepath.Join(dir, e.Name()))
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration file %s: the version must be a number from 1 to %d",
				filepath.Join(dir, e.Name()), int64(1<<63-1))
		}
		if other, dup := byVersion[v]; dup {
			return nil, fmt.Errorf("migration files %s and %s both have version %d; renumber one of them",
				other, e.Name(), v)
		}
		byVersion[v] = e.Name()
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration: %w", err)
		}
		sum := sha256.Sum256(b)
		files = append(files, migFile{Version: v, Name: e.Name(), SQL: string(b),
			Checksum: hex.EncodeToString(sum[:]), NoTx: hasNoTxMarker(string(b))})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Version < files[j].Version })
	return files, nil
}

// hasNoTxMarker reports whether sql's head (blank and -- comment lines
// before anything else) holds the no-transaction marker. Only the head
// counts, so that a marker quoted further down changes nothing.
func hasNoTxMarker(sql string) bool {
	sc := bufio.NewScanner(strings.NewReader(sql))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "--"):
			if strings.TrimSpace(strings.TrimPrefix(line, "--")) == noTxMarker {
				return true
			}
		default:
			return false
		}
	}
	return false
}

// checksumError says that files applied before have changed since.
type checksumError struct {
	lines []string
}

func (e *checksumError) Error() string {
	const show = 10
	msg := "migration files changed after they were applied; nothing was run. " +
		"A migration that ran must stay as it ran: restore the file, and put the change in a new file:"
	for i, l := range e.lines {
		if i == show {
			msg += fmt.Sprintf("\n  ... and %d more", len(e.lines)-show)
			break
		}
		msg += "\n  " + l
	}
	return msg
}

// checkChecksums compares every applied migration (all tenants', and the
// shared ones) with the file of its version and returns a *checksumError
// naming each tenant, file and both checksums where they differ. A version
// whose file is gone is not checked: the directory may have been squashed.
func checkChecksums(files, shared []migFile, applied, appliedShared []router.AppliedMigration) error {
	var lines []string
	check := func(fs []migFile, ms []router.AppliedMigration) {
		byVersion := map[int64]migFile{}
		for _, f := range fs {
			byVersion[f.Version] = f
		}
		for _, m := range ms {
			f, ok := byVersion[m.Version]
			if !ok || f.Checksum == m.Checksum {
				continue
			}
			who := "tenant " + m.Tenant
			if m.Tenant == "" {
				who = "public (shared)"
			}
			lines = append(lines, fmt.Sprintf("%s: %s was applied with sha256 %s, the file now has sha256 %s",
				who, f.Name, m.Checksum, f.Checksum))
		}
	}
	check(files, applied)
	check(shared, appliedShared)
	if len(lines) > 0 {
		return &checksumError{lines: lines}
	}
	return nil
}

// pendingFiles returns the files whose versions are not among applied, in
// order. A file numbered below one already applied (merged from a branch)
// is pending too, and runs on the next migrate.
func pendingFiles(files []migFile, applied []router.AppliedMigration) []migFile {
	done := make(map[int64]bool, len(applied))
	for _, m := range applied {
		done[m.Version] = true
	}
	var out []migFile
	for _, f := range files {
		if !done[f.Version] {
			out = append(out, f)
		}
	}
	return out
}
