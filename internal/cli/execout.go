package cli

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/pgtenant/pgtenant/router"
)

// What pgtenant exec prints. Results are printed in tenant order whatever
// order the tenants finish in, each as soon as it and every tenant before
// it are done; a tenant's result is held in memory until then.

// column is one column of a result.
type column struct {
	Name string
	OID  uint32
}

// stmtResult is one statement's result in text format: Rows hold nil for
// NULL. A statement that returns no rows (INSERT, CREATE) has no Columns;
// Command is its tag either way.
type stmtResult struct {
	Columns []column
	Rows    [][][]byte
	Command string
}

// tenantResult is what exec got from one tenant: the last statement's
// result, or the error that stopped it.
type tenantResult struct {
	Tenant router.Tenant
	stmtResult
	Err error
}

// runInOrder runs run for each tenant, at most j at once, and calls write
// with each result in tenant order, from one goroutine. It returns the
// failures as forEachTenant does.
func runInOrder(ctx context.Context, tenants []router.Tenant, j int,
	run func(context.Context, router.Tenant) *tenantResult, write func(*tenantResult)) []tenantError {
	n := len(tenants)
	results := make([]*tenantResult, n)
	done := make([]chan struct{}, n)
	for i := range done {
		done[i] = make(chan struct{})
	}
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		for i := range n {
			<-done[i]
			if results[i] != nil {
				write(results[i])
			}
		}
	}()
	errs := forEachIndex(ctx, n, j, func(ctx context.Context, i int) error {
		defer close(done[i])
		results[i] = run(ctx, tenants[i])
		return results[i].Err
	})
	var failures []tenantError
	for i, err := range errs {
		var ns errNotStarted
		if errors.As(err, &ns) {
			close(done[i]) // never ran, so never closed
		}
		if err != nil {
			failures = append(failures, tenantError{Tenant: tenants[i], Err: err})
		}
	}
	<-printed
	return failures
}

// resultWriter prints tenant results in one format. Failures go in the
// result where the format has room for them (table, json) and to errOut
// for csv, whose output stays rows only.
type resultWriter struct {
	format      string
	out, errOut io.Writer
	csv         *csv.Writer
	// csvHeader is the last header csv wrote; a new one is written when a
	// tenant's columns differ (its schema does), so that every row is
	// under its own.
	csvHeader []string
	err       error // the first write error
}

func newResultWriter(format string, out, errOut io.Writer) *resultWriter {
	w := &resultWriter{format: format, out: out, errOut: errOut}
	if format == "csv" {
		w.csv = csv.NewWriter(out)
	}
	return w
}

func (w *resultWriter) write(r *tenantResult) {
	var err error
	switch w.format {
	case "csv":
		err = w.writeCSV(r)
	case "json":
		err = writeJSON(w.out, r)
	default:
		err = writeTable(w.out, r)
	}
	if err != nil && w.err == nil {
		w.err = err
	}
}

// flush ends the output and returns the first error writing it.
func (w *resultWriter) flush() error {
	if w.csv != nil {
		w.csv.Flush()
		if err := w.csv.Error(); err != nil && w.err == nil {
			w.err = err
		}
	}
	return w.err
}

// pgFailure is an error as exec reports it: PostgreSQL's SQLSTATE and
// message when it came from a server (the proxy's refusals included), else
// no SQLSTATE and the error's text.
type pgFailure struct {
	SQLState string `json:"sqlstate"`
	Message  string `json:"message"`
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
}

func failureOf(err error) pgFailure {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgFailure{SQLState: pe.Code, Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint}
	}
	return pgFailure{Message: err.Error()}
}

// String is the failure on one line: "42P01: relation "t" does not exist".
func (f pgFailure) String() string {
	s := f.Message
	if f.SQLState != "" {
		s = f.SQLState + ": " + s
	}
	if f.Detail != "" {
		s += " (" + f.Detail + ")"
	}
	if f.Hint != "" {
		s += " (hint: " + f.Hint + ")"
	}
	return s
}

// writeTable prints a tenant's header line, then its result as an aligned
// table the way psql does, or its error.
func writeTable(out io.Writer, r *tenantResult) error {
	var b strings.Builder
	fmt.Fprintf(&b, "-- tenant %s", r.Tenant.Name)
	if r.Tenant.Schema != r.Tenant.Name {
		fmt.Fprintf(&b, " (schema %s)", r.Tenant.Schema)
	}
	b.WriteByte('\n')
	switch {
	case r.Err != nil:
		fmt.Fprintf(&b, "ERROR: %s\n", failureOf(r.Err))
	case len(r.Columns) == 0:
		b.WriteString(r.Command)
		b.WriteByte('\n')
	default:
		renderTable(&b, r.stmtResult)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(out, b.String())
	return err
}

// renderTable writes sr as psql's aligned format: a header, a rule, one
// line per row (numbers right-aligned, NULL empty, line breaks shown as
// \n so that a row stays on one line) and the row count.
func renderTable(b *strings.Builder, sr stmtResult) {
	cells := make([][]string, len(sr.Rows))
	widths := make([]int, len(sr.Columns))
	for i, c := range sr.Columns {
		widths[i] = utf8.RuneCountInString(c.Name)
	}
	for r, row := range sr.Rows {
		cells[r] = make([]string, len(row))
		for i, v := range row {
			s := strings.ReplaceAll(strings.ReplaceAll(string(v), "\r", `\r`), "\n", `\n`)
			cells[r][i] = s
			widths[i] = max(widths[i], utf8.RuneCountInString(s))
		}
	}
	pad := func(s string, w int, right bool) string {
		fill := strings.Repeat(" ", w-utf8.RuneCountInString(s))
		if right {
			return fill + s
		}
		return s + fill
	}
	line := func(vals []string, header bool) {
		var l strings.Builder
		for i, v := range vals {
			if i > 0 {
				l.WriteString(" |")
			}
			l.WriteByte(' ')
			// psql centres headers; left is as readable and diffs better.
			l.WriteString(pad(v, widths[i], !header && isNumeric(sr.Columns[i].OID)))
		}
		b.WriteString(strings.TrimRight(l.String(), " ")) // no trailing blanks
		b.WriteByte('\n')
	}
	names := make([]string, len(sr.Columns))
	for i, c := range sr.Columns {
		names[i] = c.Name
	}
	line(names, true)
	for i, w := range widths {
		if i > 0 {
			b.WriteByte('+')
		}
		b.WriteString(strings.Repeat("-", w+2))
	}
	b.WriteByte('\n')
	for _, row := range cells {
		line(row, false)
	}
	if len(sr.Rows) == 1 {
		b.WriteString("(1 row)\n")
	} else {
		fmt.Fprintf(b, "(%d rows)\n", len(sr.Rows))
	}
}

// isNumeric reports whether values of type oid are numbers, which tables
// right-align and json prints as numbers.
func isNumeric(oid uint32) bool {
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID,
		pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
		return true
	}
	return false
}

// writeCSV writes the tenant's rows with its name in a first column named
// tenant; a statement without rows is one row of its command tag under a
// column named command. An error goes to errOut.
func (w *resultWriter) writeCSV(r *tenantResult) error {
	if r.Err != nil {
		_, err := fmt.Fprintf(w.errOut, "pgtenant: tenant %s: ERROR: %s\n", r.Tenant.Name, failureOf(r.Err))
		return err
	}
	header := []string{"tenant"}
	var rows [][]string
	if len(r.Columns) == 0 {
		header = append(header, "command")
		rows = [][]string{{r.Tenant.Name, r.Command}}
	} else {
		for _, c := range r.Columns {
			header = append(header, c.Name)
		}
		for _, row := range r.Rows {
			rec := make([]string, 0, len(row)+1)
			rec = append(rec, r.Tenant.Name)
			for _, v := range row {
				rec = append(rec, string(v))
			}
			rows = append(rows, rec)
		}
	}
	if !slices.Equal(header, w.csvHeader) {
		if err := w.csv.Write(header); err != nil {
			return err
		}
		w.csvHeader = header
	}
	if err := w.csv.WriteAll(rows); err != nil { // WriteAll flushes
		return err
	}
	return nil
}

// jsonResult is one line of --format json.
type jsonResult struct {
	Tenant  string     `json:"tenant"`
	Schema  string     `json:"schema"`
	Columns []string   `json:"columns"`
	Rows    [][]any    `json:"rows"`
	Command string     `json:"command,omitempty"`
	Error   *pgFailure `json:"error"`
}

// writeJSON writes the tenant's result as one JSON object on one line
// (JSON Lines: `jq -s` reads them as an array). Numbers and booleans are
// JSON's own, json and jsonb values are embedded, NULL is null, anything
// else is its text as a string.
func writeJSON(out io.Writer, r *tenantResult) error {
	j := jsonResult{Tenant: r.Tenant.Name, Schema: r.Tenant.Schema, Columns: []string{}, Rows: [][]any{}}
	if r.Err != nil {
		f := failureOf(r.Err)
		j.Error = &f
	} else {
		j.Command = r.Command
		for _, c := range r.Columns {
			j.Columns = append(j.Columns, c.Name)
		}
		for _, row := range r.Rows {
			vals := make([]any, len(row))
			for i, v := range row {
				vals[i] = jsonValue(v, r.Columns[i].OID)
			}
			j.Rows = append(j.Rows, vals)
		}
	}
	line, err := json.Marshal(j)
	if err != nil {
		return err
	}
	_, err = out.Write(append(line, '\n'))
	return err
}

// jsonValue is v, a value of type oid in text format, as JSON.
func jsonValue(v []byte, oid uint32) any {
	switch {
	case v == nil:
		return nil
	case oid == pgtype.BoolOID:
		return string(v) == "t"
	case oid == pgtype.JSONOID || oid == pgtype.JSONBOID:
		if json.Valid(v) {
			return json.RawMessage(v)
		}
	case isNumeric(oid):
		// NaN and Infinity are numbers to PostgreSQL, not to JSON.
		if n := json.Number(v); json.Valid(v) {
			return n
		}
	}
	return string(v)
}
