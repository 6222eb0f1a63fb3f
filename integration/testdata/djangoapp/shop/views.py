"""
customers is the view the tenants command requests through Django's whole
middleware stack, so README "Django"'s router and middleware pick the
tenant from the host name (djangoapp/tenancy.py).
"""

from django.db import connections
from django.http import JsonResponse

from djangoapp.tenancy import tenant
from shop.models import Customer


def customers(request):
    label = request.get_host().split('.')[0]
    if request.method == 'POST':
        Customer.objects.create(name=request.POST['name'], tenant_label=label)
    # The query below goes where the router sends it: report which alias
    # and schema that was.
    alias = tenant.get()
    with connections[alias].cursor() as cur:
        cur.execute('SELECT current_schema()')
        (schema,) = cur.fetchone()
    return JsonResponse({
        'alias': alias,
        'schema': schema,
        'labels': sorted(set(Customer.objects.values_list('tenant_label', flat=True))),
        'customers': Customer.objects.count(),
    })
