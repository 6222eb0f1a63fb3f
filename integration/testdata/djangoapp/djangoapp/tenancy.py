"""
tenancy is README "Django"'s database router for one project serving
several tenants through pgtenant, as the README shows it: each tenant is a
DATABASES alias whose NAME is the tenant, and every query goes to the
current request's tenant. settings.py installs it when DJANGO_DB_TENANTS
lists tenants; the tenants command of the shop app drives it
(integration/django14_test.go, TestDjangoRouter).
"""

from contextvars import ContextVar

tenant = ContextVar("tenant", default="default")


class TenantRouter:   # every query goes to the current request's tenant
    def db_for_read(self, model, instance=None, **hints):
        # ... but an object read from one tenant stays with it
        # (manage.py migrate --database acme relates objects it reads)
        if instance is not None and instance._state.db:
            return instance._state.db
        return tenant.get()
    db_for_write = db_for_read


def middleware(get_response):   # in MIDDLEWARE, before anything that queries
    def handle(request):
        token = tenant.set(request.get_host().split(".")[0])  # acme.example.com
        try: return get_response(request)
        finally: tenant.reset(token)
    return handle
