// Package bench measures pgtenant: speed and memory are measured here, by
// benchmarks, never by timed assertions in tests.
//
// # The harness: pgtenant bench
//
// Run (Options, Run) starts whatever it is not pointed at (a throwaway
// PostgreSQL, pgtenant in this process, a PgBouncer configured as its users
// configure it for schema-per-tenant transaction pooling), loads pgbench
// data into the tenant schema "bench" and 100 tenant schemas t001..t100,
// and runs each scenario against each target, alternating targets within a
// round, for several rounds. It prints a markdown table of medians and of
// per-round ratios to PgBouncer and to a direct connection, and writes
// bench.json and an SVG chart.
//
// # Files
//
//   - harness.go: Options and Run, the round loop.
//   - env.go: setting up PostgreSQL, roles, pgtenant; the targets.
//   - data.go: pgbench data for the bench tenant and the many tenants.
//   - pgbouncer.go: PgBouncer's configuration and process.
//   - scenarios.go: the scenarios and their cases.
//   - pgbench.go: running pgbench and reading its output and latency log.
//   - tenants.go: the many-tenants load (one client per tenant schema).
//   - crowd.go: the crowd scenario: a cluster of its own with
//     max_connections 200, up to 1,000 tenants x 2 clients that count
//     their errors and go on.
//   - mixed.go: the mixed scenario's pgbench scripts and their interpreter.
//   - idle.go: idle clients and resident memory.
//   - activity.go: counting each target's server connections.
//   - report.go, svg.go, machine.go: the table, bench.json, the chart.
//   - command.go: `pgtenant bench`'s flags.
//
// Each target logs in to PostgreSQL with a role of its own, so that
// pg_stat_activity tells whose server connections are whose.
//
// # Micro-benchmarks
//
// The `go test -bench` benchmarks run the same query through pgtenant and
// directly against a throwaway PostgreSQL, so the proxy's cost per round
// trip is visible in one run:
//
//	go test -run '^$' -bench . -benchmem ./bench/
//
// `go test ./bench/` (no -bench) runs the harness once on a tiny
// configuration to prove it works; it asserts no speed.
package bench
