package proxy

import "context"

// tenantPause is a tenant's PAUSE state (console). (Stub.)
type tenantPause struct{}

// wait returns once the tenant is not paused, or with an error when ctx
// ends or, with wait false, at once if it is paused.
func (p *tenantPause) wait(ctx context.Context, wait bool) error { return nil }
