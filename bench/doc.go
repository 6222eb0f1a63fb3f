// Package bench measures pgtenant: speed and memory are measured here, by
// benchmarks, never by timed assertions in tests.
//
// For now it holds end-to-end `go test -bench` benchmarks that run the same
// query through pgtenant and directly against a throwaway PostgreSQL, so the
// proxy's cost per round trip is visible in one run:
//
//	go test -run '^$' -bench . -benchmem ./bench/
//
// The side-by-side harness against PgBouncer (`pgtenant bench`) comes with
// its own issue.
package bench
