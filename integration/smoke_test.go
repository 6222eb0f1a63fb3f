package integration

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestSmoke: a client of tenant acme lands in schema acme.
func TestSmoke(t *testing.T) {
	createTenant(t, "smoke")
	p := startProxy(t)
	out, err := p.Psql(t, "smoke", "-c", "select current_schema()")
	if err != nil || out != "smoke" {
		t.Fatalf("psql: %q, %v", out, err)
	}
	conn := p.Connect(t, "smoke", pgx.QueryExecModeSimpleProtocol)
	var schema string
	if err := conn.QueryRow(context.Background(), "select current_schema()").Scan(&schema); err != nil || schema != "smoke" {
		t.Fatalf("pgx: %q, %v", schema, err)
	}
}
