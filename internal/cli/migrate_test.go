package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgtenant/pgtenant/router"
)

func TestLoadMigrations(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"0002_b.sql":   "-- pgtenant:no-transaction\nCREATE INDEX CONCURRENTLY x ON t (a);\n",
		"0010_c.sql":   "SELECT 1; -- pgtenant:no-transaction\n",
		"0001_a.sql":   "CREATE TABLE t (a int);",
		"README.md":    "not a migration",
		"notes.sql~":   "an editor's backup",
		"0003_d.sql":   "\n\n  --   pgtenant:no-transaction  \n",
		"0004_e.sql":   "SELECT '\n-- pgtenant:no-transaction';\n",
		"0005_f.sql":   "",
		"0006_x.y.sql": "",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files, err := loadMigrations(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		s := f.Name
		if f.NoTx {
			s += "!"
		}
		got = append(got, s)
	}
	if want := "0001_a.sql 0002_b.sql! 0003_d.sql! 0004_e.sql 0005_f.sql 0006_x.y.sql 0010_c.sql"; strings.Join(got, " ") != want {
		t.Fatalf("loaded %v, want %s", got, want)
	}
	if files[0].Version != 1 || files[6].Version != 10 ||
		files[0].Checksum != "291a0f6d454589b4c8571acec911dc477d44327957e3b24cb804d2286eacca3a" {
		t.Fatalf("versions or checksum: %+v", files[0])
	}

	for _, tc := range []struct{ files, want string }{
		{"1_a.sql 01_b.sql", "01_b.sql and 1_a.sql both have version 1"},
		{"0001-a.sql", "0001-a.sql: name it NNNN_name.sql"},
		{"0000_zero.sql", "0000_zero.sql: the version must be a number from 1"},
		{"a_0001.sql", "a_0001.sql: name it NNNN_name.sql"},
	} {
		dir := t.TempDir()
		for _, n := range strings.Fields(tc.files) {
			if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := loadMigrations(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.files, err, tc.want)
		}
	}
}

func TestCheckChecksums(t *testing.T) {
	files := []migFile{{Version: 1, Name: "0001_a.sql", Checksum: "aa"}, {Version: 2, Name: "0002_b.sql", Checksum: "bb"}}
	applied := []router.AppliedMigration{
		{Tenant: "acme", Version: 1, Checksum: "aa"},
		{Tenant: "acme", Version: 2, Checksum: "b0"},
		{Tenant: "acme", Version: 3, Checksum: "cc"}, // its file is gone: not checked
		{Tenant: "globex", Version: 1, Checksum: "aa"},
	}
	shared := []router.AppliedMigration{{Version: 1, Checksum: "s0"}}
	err := checkChecksums(files, []migFile{{Version: 1, Name: "0001_s.sql", Checksum: "s1"}}, applied, shared)
	want := "tenant acme: 0002_b.sql was applied with sha256 b0, the file now has sha256 bb\n" +
		"  public (shared): 0001_s.sql was applied with sha256 s0, the file now has sha256 s1"
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("checkChecksums = %v, want it to end with %q", err, want)
	}
	if err := checkChecksums(files, nil, applied[:1], nil); err != nil {
		t.Fatal(err)
	}
	if p := pendingFiles(files, applied[:1]); len(p) != 1 || p[0].Version != 2 {
		t.Fatalf("pending = %+v", p)
	}
}

func TestLineColumn(t *testing.T) {
	sql := "SELECT 1;\n  SELEC é;\nx"
	for _, tc := range []struct{ pos, line, col int }{{1, 1, 1}, {9, 1, 9}, {11, 2, 1}, {13, 2, 3}, {19, 2, 9}, {21, 2, 11}, {22, 3, 1}} {
		if l, c := lineColumn(sql, tc.pos); l != tc.line || c != tc.col {
			t.Errorf("lineColumn(%d) = %d:%d, want %d:%d", tc.pos, l, c, tc.line, tc.col)
		}
	}
}

// migrateEach gives every plan to exactly one worker, never runs more than
// j at once, and starts no plan after one asked to stop.
func TestMigrateEach(t *testing.T) {
	var plans []tenantPlan
	for i := range 50 {
		plans = append(plans, tenantPlan{Tenant: router.Tenant{Name: fmt.Sprint(i)}})
	}
	var mu sync.Mutex
	seen := map[string]int{}
	running, most := 0, 0
	migrateEach(plans, 4, func(worker int, p tenantPlan) bool {
		mu.Lock()
		seen[p.Tenant.Name]++
		running++
		most = max(most, running)
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		running--
		mu.Unlock()
		return false
	})
	if len(seen) != 50 || most > 4 {
		t.Fatalf("%d plans run, at most %d at once", len(seen), most)
	}
	for name, n := range seen {
		if n != 1 {
			t.Fatalf("plan %s ran %d times", name, n)
		}
	}
	var ran atomic.Int32
	migrateEach(plans, 1, func(_ int, p tenantPlan) bool {
		ran.Add(1)
		return p.Tenant.Name == "2"
	})
	if ran.Load() != 3 {
		t.Fatalf("with one worker stopping at the third plan, %d ran", ran.Load())
	}
}
