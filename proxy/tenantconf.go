package proxy

// tenantConf is a tenant's own settings from the registry (tier, limits,
// session settings, storage quota). (Stub.)
type tenantConf struct{}

// tier is the tenant's free-form tier label ("" when none).
func (c *tenantConf) tier() string { return "" }

// maxBackends, maxClients and rate are the tenant's own limits; 0 means
// the flag's default (--tenant-max-backends, --tenant-max-clients,
// --tenant-rate and --tenant-rate-burst), a negative value no limit. (Stubs:
// the SETTINGS part reads them from the registry.)
func (c *tenantConf) maxBackends() int                  { return 0 }
func (c *tenantConf) maxClients() int                   { return 0 }
func (c *tenantConf) rate() (perSec float64, burst int) { return 0, 0 }
