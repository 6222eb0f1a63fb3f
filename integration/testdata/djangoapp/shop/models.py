from django.db import models


class Customer(models.Model):
    # name is unique so that the crud command can provoke an IntegrityError
    # inside a savepoint.
    name = models.CharField(max_length=100, unique=True)
    # tenant_label is written by the crud command with its own tenant's
    # label; a row with another label means rows leaked between tenants.
    tenant_label = models.CharField(max_length=50, db_index=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name='orders')
    item = models.CharField(max_length=100)
    qty = models.IntegerField()
    tenant_label = models.CharField(max_length=50, db_index=True)

    def __str__(self):
        return f'{self.qty} x {self.item}'
