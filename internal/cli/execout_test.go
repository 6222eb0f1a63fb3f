package cli

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/pgtenant/pgtenant/config"
	"github.com/pgtenant/pgtenant/router"
)

// sampleResults are three tenants' results: rows (with a NULL, a number,
// a line break), a failure, and a statement without rows.
func sampleResults() []*tenantResult {
	cols := []column{{"id", pgtype.Int4OID}, {"name", pgtype.TextOID}, {"ok", pgtype.BoolOID}, {"doc", pgtype.JSONBOID}}
	return []*tenantResult{
		{Tenant: router.Tenant{Name: "acme", Schema: "acme"}, stmtResult: stmtResult{
			Columns: cols,
			Rows: [][][]byte{
				{[]byte("7"), []byte("anvil"), []byte("t"), []byte(`{"a": 1}`)},
				{[]byte("12"), []byte("two\nlines"), []byte("f"), nil},
			},
			Command: "SELECT 2",
		}},
		{Tenant: router.Tenant{Name: "globex", Schema: "gx"}, Err: &pgconn.PgError{
			Severity: "ERROR", Code: "42P01", Message: `relation "t" does not exist`}},
		{Tenant: router.Tenant{Name: "initech", Schema: "initech"}, stmtResult: stmtResult{Command: "INSERT 0 3"}},
	}
}

func render(t *testing.T, format string) (out, errOut string) {
	t.Helper()
	var o, e bytes.Buffer
	w := newResultWriter(format, &o, &e)
	for _, r := range sampleResults() {
		w.write(r)
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String()
}

func TestExecTable(t *testing.T) {
	out, errOut := render(t, "table")
	want := `-- tenant acme
 id | name       | ok | doc
----+------------+----+----------
  7 | anvil      | t  | {"a": 1}
 12 | two\nlines | f  |
(2 rows)

-- tenant globex (schema gx)
ERROR: 42P01: relation "t" does not exist

-- tenant initech
INSERT 0 3

`
	if out != want || errOut != "" {
		t.Fatalf("table:\n%s\nwant:\n%s\nstderr: %q", out, want, errOut)
	}
}

func TestExecCSV(t *testing.T) {
	out, errOut := render(t, "csv")
	want := `tenant,id,name,ok,doc
acme,7,anvil,t,"{""a"": 1}"
acme,12,"two
lines",f,
tenant,command
initech,INSERT 0 3
`
	if out != want {
		t.Fatalf("csv:\n%s\nwant:\n%s", out, want)
	}
	if errOut != "pgtenant: tenant globex: ERROR: 42P01: relation \"t\" does not exist\n" {
		t.Fatalf("csv stderr %q", errOut)
	}
}

func TestExecJSON(t *testing.T) {
	out, errOut := render(t, "json")
	want := `{"tenant":"acme","schema":"acme","columns":["id","name","ok","doc"],"rows":[[7,"anvil",true,{"a":1}],[12,"two\nlines",false,null]],"command":"SELECT 2","error":null}
{"tenant":"globex","schema":"gx","columns":[],"rows":[],"error":{"sqlstate":"42P01","message":"relation \"t\" does not exist"}}
{"tenant":"initech","schema":"initech","columns":[],"rows":[],"command":"INSERT 0 3","error":null}
`
	if out != want || errOut != "" {
		t.Fatalf("json:\n%s\nwant:\n%s", out, want)
	}
}

func TestJSONValue(t *testing.T) {
	for _, tc := range []struct {
		v    string
		oid  uint32
		want any
	}{
		{"NaN", pgtype.NumericOID, "NaN"},
		{"Infinity", pgtype.Float8OID, "Infinity"},
		{"-1.5e3", pgtype.Float8OID, "-1.5e3"},
		{"not json", pgtype.JSONOID, "not json"},
		{"123", pgtype.TextOID, "123"},
	} {
		got := jsonValue([]byte(tc.v), tc.oid)
		if s, ok := got.(interface{ String() string }); ok {
			got = s.String()
		}
		if got != tc.want {
			t.Errorf("jsonValue(%q, %d) = %#v, want %#v", tc.v, tc.oid, got, tc.want)
		}
	}
}

// TestRunInOrder: results are written in tenant order although the
// tenants finish in reverse.
func TestRunInOrder(t *testing.T) {
	tenants := tenantsNamed("a", "b", "c", "d")
	var mu sync.Mutex
	finished := map[string]chan struct{}{}
	for _, tn := range tenants {
		finished[tn.Name] = make(chan struct{})
	}
	var written []string
	failures := runInOrder(context.Background(), tenants, 4, func(ctx context.Context, tn router.Tenant) *tenantResult {
		// d finishes first, then c, b, a.
		next := map[string]string{"a": "b", "b": "c", "c": "d"}[tn.Name]
		if next != "" {
			<-finished[next]
		}
		mu.Lock()
		defer mu.Unlock()
		defer close(finished[tn.Name])
		r := &tenantResult{Tenant: tn}
		if tn.Name == "c" {
			r.Err = &pgconn.PgError{Code: "42P01", Message: "no"}
		}
		return r
	}, func(r *tenantResult) { written = append(written, r.Tenant.Name) })
	if !slices.Equal(written, []string{"a", "b", "c", "d"}) {
		t.Fatalf("written in order %v", written)
	}
	if len(failures) != 1 || failures[0].Tenant.Name != "c" {
		t.Fatalf("failures %v", failures)
	}
}

// TestLinePrefixer: whole lines, each prefixed, however the writes split
// them; an unfinished last line is ended at Close; an endless line is
// written in parts.
func TestLinePrefixer(t *testing.T) {
	var out bytes.Buffer
	w := &linePrefixer{mu: &sync.Mutex{}, dst: &out, prefix: "[acme] "}
	for _, p := range []string{"one\ntw", "o\n", "", "thr", "ee\nfour\nfi", "ve"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
		if strings.Count(out.String(), "\n") != strings.Count(out.String(), "[acme] ") {
			t.Fatalf("a partial line was written: %q", out.String())
		}
	}
	w.Close()
	if out.String() != "[acme] one\n[acme] two\n[acme] three\n[acme] four\n[acme] five\n" {
		t.Fatalf("%q", out.String())
	}
	out.Reset()
	w.Write(bytes.Repeat([]byte("x"), eachMaxLine+10))
	w.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 2 || len(lines[0]) != len("[acme] ")+eachMaxLine || lines[1] != "[acme] xxxxxxxxxx" {
		t.Fatalf("endless line written as %d lines", len(lines))
	}
}

// TestLinePrefixerConcurrent: two programs writing at once never share a
// line.
func TestLinePrefixerConcurrent(t *testing.T) {
	var out bytes.Buffer
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &linePrefixer{mu: &mu, dst: &out, prefix: "[" + name + "] "}
			for range 200 {
				w.Write([]byte(name + name))
				time.Sleep(time.Microsecond)
				w.Write([]byte(name + "\n"))
			}
			w.Close()
		}()
	}
	wg.Wait()
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		if l != "[a] aaa" && l != "[b] bbb" {
			t.Fatalf("mixed line %q", l)
		}
	}
}

func TestTenantEnv(t *testing.T) {
	base := []string{"PATH=/bin", "PGHOST=elsewhere", "PGHOSTADDR=10.0.0.1", "PGPASSWORD=secret", "DATABASE_URL=postgres://x", "PGTENANT_TENANTS=keep"}
	get := func(env []string, name string) (string, int) {
		var v string
		n := 0
		for _, kv := range env {
			if k, val, _ := strings.Cut(kv, "="); k == name {
				v, n = val, n+1
			}
		}
		return v, n
	}
	p := &proxyTarget{Host: "127.0.0.1", Port: "6432", User: "o'brien app", From: config.TenantFromDatabase}
	env := tenantEnv(base, p, "acme")
	for name, want := range map[string]string{
		"PATH": "/bin", "PGPASSWORD": "secret", "PGTENANT_TENANTS": "keep",
		"PGTENANT_TENANT": "acme", "PGDATABASE": "acme", "PGHOST": "127.0.0.1", "PGPORT": "6432",
		"PGUSER": "o'brien app", "DATABASE_URL": "postgres://o%27brien%20app@127.0.0.1:6432/acme",
	} {
		if got, n := get(env, name); got != want || n != 1 {
			t.Errorf("%s = %q (%d times), want %q once", name, got, n, want)
		}
	}
	if _, n := get(env, "PGHOSTADDR"); n != 0 {
		t.Error("PGHOSTADDR kept")
	}

	p = &proxyTarget{Host: "::1", Port: "6432", From: config.TenantFromUser}
	env = tenantEnv(base, p, "acme")
	if u, _ := get(env, "PGUSER"); u != "acme" {
		t.Errorf("tenant-from user: PGUSER %q", u)
	}
	if u, _ := get(env, "DATABASE_URL"); u != "postgres://acme@[::1]:6432/acme" {
		t.Errorf("tenant-from user: DATABASE_URL %q", u)
	}

	p = &proxyTarget{Host: "db", Port: "6432", User: "app", From: config.TenantFromSNI}
	env = tenantEnv(base, p, "acme")
	if o, _ := get(env, "PGOPTIONS"); o != "-c pgtenant.tenant=acme" {
		t.Errorf("tenant-from sni: PGOPTIONS %q", o)
	}
	if u, _ := get(env, "DATABASE_URL"); u != "postgres://app@db:6432/acme?options=-c%20pgtenant.tenant%3Dacme" {
		t.Errorf("tenant-from sni: DATABASE_URL %q", u)
	}
	cfg, err := pgconn.ParseConfig(p.url("acme"))
	if err != nil || cfg.RuntimeParams["options"] != "-c pgtenant.tenant=acme" || cfg.Database != "acme" || cfg.User != "app" {
		t.Errorf("the URL reads back as %+v, %v", cfg, err)
	}
}
