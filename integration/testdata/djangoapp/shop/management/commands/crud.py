"""
crud exercises the ORM the way an application does, through pgtenant, and
checks that it only ever sees its own tenant's rows.

Every row it writes carries --tenant-label. It runs alone in its tenant, so
besides refusing any row with another label it also keeps a model of what
its tables must hold and compares counts and sums with it: a row of another
tenant, a lost write or a rolled-back write that stuck all show up.

On success it prints one line:

    crud ok: 200 iterations, 0 foreign rows, 134 customers, 536 orders, qty 1234

and on any mismatch it exits non-zero (CommandError) saying what it saw.
"""

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Sum

from shop.models import Customer, Order


class Rollback(Exception):
    """Raised inside transaction.atomic() to roll the block back."""


class Command(BaseCommand):
    help = 'CRUD through the ORM, checking that only this tenant\'s rows are ever seen.'

    def add_arguments(self, parser):
        parser.add_argument('--tenant-label', required=True,
                            help='label written into every row; any other label seen is an error')
        parser.add_argument('--n', type=int, default=200, help='iterations')
        parser.add_argument('--expect-schema',
                            help='if set, current_schema() must be this whenever it is checked')

    def handle(self, *args, tenant_label, n, expect_schema, **options):
        self.label = tenant_label
        self.foreign = 0
        label = tenant_label
        # model is what the tables must hold: customer id -> {item: qty}.
        model = {}

        def check_schema():
            if not expect_schema:
                return
            with connection.cursor() as cur:
                cur.execute('SELECT current_schema()')
                (schema,) = cur.fetchone()
            if schema != expect_schema:
                raise CommandError(f'current_schema() is {schema!r}, want {expect_schema!r}')

        def check_totals(where):
            customers = Customer.objects.count()
            agg = Order.objects.aggregate(n=Count('id'), total=Sum('qty'))
            want_orders = sum(len(items) for items in model.values())
            want_qty = sum(sum(items.values()) for items in model.values())
            got = (customers, agg['n'], agg['total'] or 0)
            want = (len(model), want_orders, want_qty)
            if got != want:
                raise CommandError(
                    f'{where}: (customers, orders, qty) = {got}, want {want}')

        def scan_labels(where):
            # Every row, read the way a report would: through .iterator(),
            # which DISABLE_SERVER_SIDE_CURSORS turns into a plain query.
            for c in Customer.objects.all().iterator():
                self.own(c.tenant_label, f'{where}: customer {c.id} {c.name!r}')
            for o in Order.objects.select_related('customer').iterator():
                self.own(o.tenant_label, f'{where}: order {o.id}')
                self.own(o.customer.tenant_label, f'{where}: customer of order {o.id}')
            for row in Order.objects.values('tenant_label', 'customer__tenant_label').annotate(n=Count('id')):
                self.own(row['tenant_label'], f'{where}: grouped orders')
                self.own(row['customer__tenant_label'], f'{where}: grouped customers')
            for u in User.objects.all():
                if not u.username.startswith(label + '-'):
                    self.foreign += 1
                    raise CommandError(f'{where}: user {u.username!r} belongs to another tenant')

        check_schema()
        user, created = User.objects.get_or_create(username=f'{label}-admin', defaults={'email': f'admin@{label}.test'})
        if not created:
            raise CommandError(f'user {user.username!r} already existed: run crud on a freshly migrated tenant')
        user.set_unusable_password()
        user.save()
        scan_labels('start')
        check_totals('start')

        for i in range(n):
            name = f'{label}-c{i}'

            # Create a customer and its orders in one transaction.
            with transaction.atomic():
                c = Customer.objects.create(name=name, tenant_label=label)
                for k in range(3):
                    Order.objects.create(customer=c, item=f'item-{k}', qty=k + 1, tenant_label=label)
            model[c.id] = {'item-0': 1, 'item-1': 2, 'item-2': 3}

            # Update: with an F() expression, and by loading and saving.
            if Order.objects.filter(customer=c, item='item-0').update(qty=F('qty') + i) != 1:
                raise CommandError(f'{name}: update of item-0 did not touch exactly one row')
            model[c.id]['item-0'] += i
            o = Order.objects.get(customer=c, item='item-1')
            o.qty = 10
            o.save(update_fields=['qty'])
            model[c.id]['item-1'] = 10

            # Read back with select_related and compare with the model.
            orders = list(Order.objects.select_related('customer').filter(customer__name=name).order_by('item'))
            got = {}
            for o in orders:
                self.own(o.tenant_label, f'{name}: order {o.id}')
                self.own(o.customer.tenant_label, f'{name}: customer of order {o.id}')
                got[o.item] = o.qty
            if got != model[c.id]:
                raise CommandError(f'{name}: orders {got}, want {model[c.id]}')

            # Aggregates, over one customer and over the whole tenant.
            one = Customer.objects.filter(pk=c.pk).annotate(n=Count('orders'), total=Sum('orders__qty')).get()
            if (one.n, one.total) != (len(model[c.id]), sum(model[c.id].values())):
                raise CommandError(f'{name}: annotate gave n={one.n} total={one.total}, want {model[c.id]}')
            check_totals(name)

            # A transaction that fails half-way is rolled back whole.
            ghost = f'{label}-ghost{i}'
            try:
                with transaction.atomic():
                    Customer.objects.create(name=ghost, tenant_label=label)
                    Order.objects.filter(customer=c).update(qty=0)
                    raise Rollback()
            except Rollback:
                pass
            if Customer.objects.filter(name=ghost).exists():
                raise CommandError(f'{ghost}: created in a rolled-back transaction, yet it exists')
            if Order.objects.filter(customer=c, qty=0).exists():
                raise CommandError(f'{name}: an update rolled back with its transaction stuck')

            # A savepoint: the inner block's IntegrityError (duplicate unique
            # name) rolls back to the savepoint and the outer block commits.
            with transaction.atomic():
                Order.objects.create(customer=c, item='item-3', qty=7, tenant_label=label)
                try:
                    with transaction.atomic():
                        Customer.objects.create(name=name, tenant_label=label)
                    raise CommandError(f'{name}: a duplicate customer name was accepted')
                except IntegrityError:
                    pass
                obj, created = Customer.objects.update_or_create(name=name, defaults={'tenant_label': label})
                if created or obj.pk != c.pk:
                    raise CommandError(f'{name}: update_or_create did not find the customer')
            model[c.id]['item-3'] = 7

            # bulk_create, now and then.
            if i % 5 == 4:
                Order.objects.bulk_create(
                    [Order(customer=c, item=f'bulk-{k}', qty=1, tenant_label=label) for k in range(5)])
                model[c.id].update({f'bulk-{k}': 1 for k in range(5)})

            # Delete the oldest customer every third iteration; its orders go
            # with it (ON DELETE CASCADE is done by Django, in a transaction).
            if i % 3 == 2:
                victim = min(model)
                deleted, _ = Customer.objects.filter(pk=victim).delete()
                if deleted != 1 + len(model[victim]):
                    raise CommandError(f'delete of customer {victim} removed {deleted} rows, want {1 + len(model[victim])}')
                del model[victim]

            if i % 10 == 9:
                check_schema()
            if i % 20 == 19:
                scan_labels(f'iteration {i}')
            # Every 25 iterations, end the "request": with CONN_MAX_AGE 0 the
            # next query opens a new connection to pgtenant.
            if i % 25 == 24:
                connection.close()

        scan_labels('end')
        check_totals('end')
        check_schema()
        orders = sum(len(items) for items in model.values())
        qty = sum(sum(items.values()) for items in model.values())
        self.stdout.write(
            f'crud ok: {n} iterations, {self.foreign} foreign rows, '
            f'{len(model)} customers, {orders} orders, qty {qty}')

    def own(self, label, what):
        """Fail at once on a row written by another tenant."""
        if label != self.label:
            self.foreign += 1
            raise CommandError(
                f'{what} has tenant label {label!r}, want {self.label!r} '
                f'({self.foreign} foreign rows seen)')
