package proxy

// tenantConf is a tenant's own settings from the registry (tier, limits,
// session settings, storage quota). (Stub.)
type tenantConf struct{}

// tier is the tenant's free-form tier label ("" when none).
func (c *tenantConf) tier() string { return "" }

// quotaBytes is the tenant's storage quota in bytes, 0 when it has none.
// (Stub for the metrics: the settings work provides it.)
func (c *tenantConf) quotaBytes() int64 { return 0 }
