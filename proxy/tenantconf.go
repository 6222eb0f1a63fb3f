package proxy

// tenantConf is a tenant's own settings from the registry (tier, limits,
// session settings, storage quota). (Stub.)
type tenantConf struct{}

// tier is the tenant's free-form tier label ("" when none).
func (c *tenantConf) tier() string { return "" }
