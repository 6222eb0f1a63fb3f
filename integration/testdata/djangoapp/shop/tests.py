"""
Tests manage.py test runs (integration/django14_test.go runs them through
pgtenant with --keepdb, against a test tenant created beforehand).
"""

from django.db import connection
from django.test import TestCase

from shop.models import Customer, Order


class ShopTests(TestCase):
    def test_orders_of_a_customer(self):
        c = Customer.objects.create(name='Ada', tenant_label='test')
        Order.objects.create(customer=c, item='widget', qty=3, tenant_label='test')
        Order.objects.create(customer=c, item='gadget', qty=4, tenant_label='test')
        self.assertEqual(sorted(o.qty for o in c.orders.all()), [3, 4])

    def test_runs_in_the_test_tenant(self):
        # Through pgtenant the test database is the tenant test_<NAME>,
        # whose schema holds the tables migrate made for the test run.
        name = connection.settings_dict['NAME']
        self.assertTrue(name.startswith('test_'), name)
        with connection.cursor() as cur:
            cur.execute('SELECT current_schema()')
            self.assertEqual(cur.fetchone()[0], name)
        self.assertEqual(Customer.objects.count(), 0)
