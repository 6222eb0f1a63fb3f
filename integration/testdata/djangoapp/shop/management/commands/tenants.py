"""
tenants sends requests for each tenant in settings.TENANTS through Django's
test client (the whole middleware stack, no server): each POST creates a
customer and each GET reports the alias, schema and customers the router
chose. With README "Django"'s router each tenant sees only its own rows, in
its own schema. It prints one line per tenant:

    tenant acme: alias acme, schema acme, customers 3, labels acme
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.test import Client


class Command(BaseCommand):
    help = "Requests for every tenant through the router of README \"Django\"."

    def add_arguments(self, parser):
        parser.add_argument('--n', type=int, default=3, help='customers per tenant')

    def handle(self, *args, n, **options):
        client = Client()
        # Interleave the tenants, as concurrent requests would.
        for i in range(n):
            for t in settings.TENANTS:
                r = client.post('/shop/customers', {'name': f'{t}-{i}'}, HTTP_HOST=f'{t}.example.com')
                if r.status_code != 200:
                    raise CommandError(f'POST for {t}: {r.status_code} {r.content[:500]!r}')
        for t in settings.TENANTS:
            r = client.get('/shop/customers', HTTP_HOST=f'{t}.example.com')
            if r.status_code != 200:
                raise CommandError(f'GET for {t}: {r.status_code} {r.content[:500]!r}')
            got = r.json()
            self.stdout.write(f"tenant {t}: alias {got['alias']}, schema {got['schema']}, "
                              f"customers {got['customers']}, labels {','.join(got['labels'])}")
