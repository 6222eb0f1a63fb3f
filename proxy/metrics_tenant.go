package proxy

// tenantStats are a tenant's counters and histograms, read by the metrics
// collector and the console. (Stub: filled in by the metrics work.)
type tenantStats struct{}

// transactions is the number of transactions the tenant's clients ended.
func (st *tenantStats) transactions() uint64 { return 0 }

// schemaSize is the tenant schema's size in bytes as last measured in the
// background, and whether it has been measured.
func (st *tenantStats) schemaSize() (int64, bool) { return 0, false }
