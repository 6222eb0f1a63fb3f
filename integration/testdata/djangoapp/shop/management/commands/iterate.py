"""
iterate holds QuerySet.iterator() open in several threads at once, the way
a report or an export streams a large table, and shows what that costs a
transaction-pooling proxy.

Each thread (its own Django connection, in autocommit: no transaction is
open) starts iterating over shop_customer in chunks, takes the first row,
and then waits. When every thread holds its iterator, the command prints

    ready: 4 threads hold an iterator

and waits for its standard input to close; then each thread reads the rest
of its rows, closes its connection, and the command prints

    iterate ok: 4 threads, 120 rows each, server-side cursors off

With DISABLE_SERVER_SIDE_CURSORS True, iterator() runs an ordinary query and
Django reads the rows from memory: no backend is held while a thread waits.
With it False, each iterator is a named cursor DECLAREd WITH HOLD (outside a
transaction a cursor must outlive the statement), which ties each client to
one backend until it disconnects.
"""

import sys
import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from shop.models import Customer


class Command(BaseCommand):
    help = 'Hold QuerySet.iterator() open in several threads at once.'

    def add_arguments(self, parser):
        parser.add_argument('--threads', type=int, default=4)
        parser.add_argument('--chunk-size', type=int, default=10)

    def handle(self, *args, threads, chunk_size, **options):
        ready = threading.Barrier(threads + 1, timeout=120)
        release = threading.Event()
        counts = [None] * threads
        errors = []

        def work(i):
            try:
                it = Customer.objects.order_by('id').iterator(chunk_size=chunk_size)
                next(it)
                ready.wait()
                release.wait()
                counts[i] = 1 + sum(1 for _ in it)
            except Exception as e:  # reported by the main thread
                errors.append(f'thread {i}: {e!r}')
                ready.abort()
            finally:
                connection.close()

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            release.set()
            for w in workers:
                w.join()
            raise CommandError('threads failed before all held an iterator: ' + '; '.join(errors))
        self.stdout.write(f'ready: {threads} threads hold an iterator')
        self.stdout.flush()
        sys.stdin.read()
        release.set()
        for w in workers:
            w.join()
        if errors:
            raise CommandError('; '.join(errors))
        if len(set(counts)) != 1:
            raise CommandError(f'threads read different row counts: {counts}')
        mode = 'off' if connection.settings_dict['DISABLE_SERVER_SIDE_CURSORS'] else 'on'
        self.stdout.write(f'iterate ok: {threads} threads, {counts[0]} rows each, server-side cursors {mode}')
