package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgtenant/pgtenant/config"
)

// Startup holds the startup values that routing looks at. It is a plain
// struct rather than a pgproto3 message so that the router knows nothing of
// the wire protocol; the proxy copies the values out of the StartupMessage.
type Startup struct {
	// Database is the startup "database" parameter.
	Database string
	// User is the startup "user" parameter.
	User string
	// ServerName is the host name the client sent in TLS SNI, "" when it
	// sent none (no TLS, or an IP address as the host: libpq sends no SNI
	// for those).
	ServerName string
	// OptionsTenant is the tenant the client named in its startup options
	// (-c pgtenant.tenant=NAME), "" when it named none.
	OptionsTenant string
}

// Router turns a client's startup values into a tenant. It caches what the
// registry says, so that a burst of connections costs one registry query,
// and it is safe for concurrent use.
type Router struct {
	reg  Registry
	from config.TenantSource
	// sniSuffix is the lower-cased domain under which a TLS server name
	// names a tenant (".db.example.com"); "" when server names name none.
	sniSuffix string
	// sniHosts makes a whole TLS server name a claim when sniSuffix is
	// empty (WithSNIHostNames).
	sniHosts bool

	// tenants caches the registry's answers by name: found tenants
	// (active or not) for the hit TTL, unknown names for the miss TTL.
	tenants *lookupCache[Tenant]
}

// Option adjusts a Router made by New.
type Option func(*Router)

// WithSNISuffix makes a TLS server name under suffix (".db.example.com")
// a claim: acme.db.example.com names the tenant (or alias) acme. With an
// empty suffix, server names name nothing (the default). The suffix is
// compared without regard to case, as host names are.
func WithSNISuffix(suffix string) Option {
	return func(r *Router) { r.sniSuffix = strings.ToLower(suffix) }
}

// WithSNIHostNames makes a whole TLS server name (acme.example.com) a
// claim when no SNI suffix is set, for registries that know tenants by
// their domains (DjangoRegistry): the host name a client connects to is
// looked up as a domain. The name is lower-cased and a trailing dot
// dropped, as host names compare.
//
// Unless tenant-from is sni, such a claim is optional: a server name that
// names no tenant is ignored rather than refused, because libpq sends the
// host name it connects to whenever it is a name, and the proxy's own host
// name (db.internal) is no tenant's domain. A server name that does name a
// tenant must agree with the other claims as always. With tenant-from sni
// it is the primary claim, and must name a tenant.
func WithSNIHostNames() Option {
	return func(r *Router) { r.sniHosts = true }
}

// New returns a Router that names the tenant by the startup value that
// from selects (the database by default, when from is empty) and looks it
// up in reg. See ResolveTenant for how the values a client sends combine.
//
// Found tenants are cached for hitTTL and unknown names for missTTL; a TTL
// of zero or less turns that cache off. The miss TTL is kept short because a
// tenant created while its name is cached as a miss stays unreachable until
// the entry expires or is forgotten (see Forget and PGRegistry.Watch).
//
// The caches each run a cleanup goroutine that lives as long as the
// process, so a program makes one Router and keeps it.
func New(reg Registry, from config.TenantSource, hitTTL, missTTL time.Duration, opts ...Option) *Router {
	if from == "" {
		from = config.TenantFromDatabase
	}
	r := &Router{reg: reg, from: from}
	for _, o := range opts {
		o(r)
	}
	r.tenants = newLookupCache(reg.LookupTenant, tenantAnswer, hitTTL, missTTL)
	return r
}

// tenantAnswer sorts a registry answer for the cache: a tenant found is a
// hit, ErrNotFound a miss.
func tenantAnswer(_ Tenant, err error) answerKind {
	switch {
	case err == nil:
		return answerHit
	case errors.Is(err, ErrNotFound):
		return answerMiss
	default:
		return answerFailure
	}
}

// A claim is one startup value that names a tenant.
type claim struct {
	// what and value say where the name came from ("TLS server name",
	// "acme.db.example.com"); they are only read for an error.
	what, value string
	name        string
	// optional: a name no tenant has is no claim (WithSNIHostNames).
	optional bool
}

// describe is the claim as a client reads it in an error:
// `TLS server name "acme.db.example.com"`.
func (c claim) describe() string { return fmt.Sprintf("%s %q", c.what, c.value) }

// sniTenant returns the tenant name a TLS server name claims: the single
// label in front of the suffix (acme.db.example.com -> acme). A name not
// under the suffix, the suffix itself, or a deeper name
// (x.acme.db.example.com) claims nothing: a wildcard certificate covers one
// label only, so a deeper name could not have been verified anyway.
// Without a suffix, a server name claims nothing, unless WithSNIHostNames
// is set: then it claims the whole (lower-cased) name.
func (r *Router) sniTenant(serverName string) (string, bool) {
	if serverName == "" {
		return "", false
	}
	host := strings.TrimSuffix(strings.ToLower(serverName), ".")
	if r.sniSuffix == "" {
		// With WithSNIHostNames the whole name is looked up.
		return host, r.sniHosts && host != ""
	}
	label, ok := strings.CutSuffix(host, r.sniSuffix)
	if !ok || label == "" || strings.Contains(label, ".") {
		return "", false
	}
	return label, true
}

// claims lists what the client's startup values say about its tenant, the
// primary claim (the one TenantFrom selects) first, in buf: a client makes
// at most three, and a connect-per-transaction client should not pay an
// allocation for them. A claim may carry an empty name (an empty
// database), which resolves to an unknown tenant.
func (r *Router) claims(s Startup, buf *[3]claim) ([]claim, error) {
	var sni, opts claim
	sniName, hasSNI := r.sniTenant(s.ServerName)
	if hasSNI {
		sni = claim{what: "TLS server name", value: s.ServerName, name: sniName,
			optional: r.sniSuffix == "" && r.from != config.TenantFromSNI}
	}
	hasOpts := s.OptionsTenant != ""
	if hasOpts {
		opts = claim{what: "startup option pgtenant.tenant", value: s.OptionsTenant, name: s.OptionsTenant}
	}
	list := buf[:0]
	switch r.from {
	case config.TenantFromDatabase:
		list = append(list, claim{what: "database", value: s.Database, name: s.Database})
	case config.TenantFromUser:
		list = append(list, claim{what: "user", value: s.User, name: s.User})
	case config.TenantFromSNI:
		if !hasSNI && !hasOpts {
			return nil, &NoTenantError{ServerName: s.ServerName, SNISuffix: r.sniSuffix}
		}
	default:
		return nil, fmt.Errorf("router: unknown tenant source %q (want %q, %q or %q)",
			r.from, config.TenantFromDatabase, config.TenantFromUser, config.TenantFromSNI)
	}
	if hasSNI {
		list = append(list, sni)
	}
	if hasOpts {
		list = append(list, opts)
	}
	return list, nil
}

// ResolveTenant returns the tenant the client asked for.
//
// A client may name its tenant in several ways, each a claim:
//   - the primary claim, which TenantFrom selects: the startup database, the
//     startup user, or (tenant-from sni) the TLS server name, or when that
//     names no tenant the options claim;
//   - the TLS server name, whenever an SNI suffix is set and the name is
//     one label under it (acme.db.example.com names acme);
//   - with WithSNIHostNames and no SNI suffix, the whole TLS server name,
//     which is ignored when it names no tenant (unless tenant-from is sni);
//   - the startup options, -c pgtenant.tenant=NAME.
//
// Every claim present is resolved (a name may be a tenant or an alias of
// one), and all must come to the same tenant; otherwise the client is
// refused with a *ConflictingClaimsError naming two that disagree. So the
// host name a client checked the certificate against (sslmode=verify-full)
// is never overridden by a database name or an option it also sent, and
// one connection string cannot say two things.
// With tenant-from sni and no claim at all, the error is *NoTenantError.
//
// It returns an *UnknownTenantError when no tenant has a claimed name
// (including an empty name), a *DisabledTenantError when the tenant is
// disabled, and otherwise a wrapped registry error, which is not cached so
// that the next client tries again.
func (r *Router) ResolveTenant(ctx context.Context, s Startup) (Tenant, error) {
	var buf [3]claim
	list, err := r.claims(s, &buf)
	if err != nil {
		return Tenant{}, err
	}
	var first Tenant
	for i, c := range list {
		t, err := r.resolveName(ctx, c.name)
		var unknown *UnknownTenantError
		if c.optional && errors.As(err, &unknown) {
			continue
		}
		if err != nil {
			return Tenant{}, err
		}
		if i == 0 {
			first = t
			continue
		}
		if t.Name != first.Name {
			return Tenant{}, &ConflictingClaimsError{
				First: list[0].describe(), FirstTenant: first.Name,
				Second: c.describe(), SecondTenant: t.Name,
			}
		}
	}
	return first, nil
}

// resolveName looks one claimed name up, through the caches.
func (r *Router) resolveName(ctx context.Context, name string) (Tenant, error) {
	if name == "" {
		// No tenant can have an empty name; do not ask the registry.
		return Tenant{}, &UnknownTenantError{Name: ""}
	}
	t, err := r.tenants.get(ctx, name)
	return outcome(name, t, err)
}

// outcome turns a registry answer into what ResolveTenant returns.
func outcome(name string, t Tenant, err error) (Tenant, error) {
	switch {
	case err == nil && !t.Active:
		return Tenant{}, &DisabledTenantError{Name: name}
	case err == nil:
		return t, nil
	case errors.Is(err, ErrNotFound):
		return Tenant{}, &UnknownTenantError{Name: name}
	default:
		return Tenant{}, fmt.Errorf("look up tenant %q: %w", name, err)
	}
}

// Forget drops what the router has cached about name, found or not, so the
// next lookup asks the registry. A lookup of name already in progress is
// detached: later callers start a new one, and its result is not cached.
func (r *Router) Forget(name string) { r.tenants.Forget(name) }

// ForgetAll drops everything the router has cached. PGRegistry.Watch asks
// for it after (re)connecting, since notifications sent while it was not
// listening are lost.
func (r *Router) ForgetAll() { r.tenants.ForgetAll() }

// ConflictingClaimsError says that two of the values a client sent name
// different tenants (see ResolveTenant). The proxy answers it with FATAL
// 08004. First is the primary claim; each claim is described as the client
// sent it (`TLS server name "acme.db.example.com"`) with the tenant it
// resolved to.
type ConflictingClaimsError struct {
	First, FirstTenant   string
	Second, SecondTenant string
}

func (e *ConflictingClaimsError) Error() string {
	return fmt.Sprintf("the connection names two tenants: %s names tenant %q, but %s names tenant %q",
		e.First, e.FirstTenant, e.Second, e.SecondTenant)
}

// NoTenantError says that the client named no tenant at all, which can only
// happen with tenant-from sni: it sent no server name under the SNI suffix
// (ServerName is what it sent, maybe "") and no pgtenant.tenant option. The
// proxy answers it with FATAL 3D000 and Hint.
type NoTenantError struct {
	ServerName, SNISuffix string
}

func (e *NoTenantError) Error() string {
	if e.ServerName == "" {
		return "no tenant named: the client sent no TLS server name and no pgtenant.tenant option"
	}
	return fmt.Sprintf("no tenant named: the TLS server name %q is not a single label under %q, and the client sent no pgtenant.tenant option",
		e.ServerName, e.SNISuffix)
}

// Hint says how to name a tenant.
func (e *NoTenantError) Hint() string {
	if e.SNISuffix == "" {
		return "Connect with TLS to one of the tenant's domains, as in host=acme.example.com sslmode=verify-full, " +
			"or name the tenant in the options: options='-c pgtenant.tenant=acme'."
	}
	return fmt.Sprintf("Connect with TLS to the tenant's host name, as in host=acme%s sslmode=verify-full, "+
		"or name the tenant in the options: options='-c pgtenant.tenant=acme'.", e.SNISuffix)
}
