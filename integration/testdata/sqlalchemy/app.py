"""
app.py is a small SQLAlchemy application run through pgtenant by
integration/django14_test.go (TestSQLAlchemy), with the settings README
"SQLAlchemy" recommends.

    python3 app.py URL LABEL ROWS

URL names pgtenant with the tenant as database. It creates a table with
the ORM, inserts ROWS rows carrying LABEL in a session, reads them back,
streams them (stream_results with yield_per: a server-side cursor inside
the session's transaction), and does it all twice: with SQLAlchemy's own
pool (pool_pre_ping) and with NullPool. It checks that it only ever sees
its own rows and prints one line:

    sqlalchemy ok: label acme, schema acme, rows 200, streamed 200, nullpool rows 400

Any mismatch exits non-zero, saying what it saw.
"""

import sys

import sqlalchemy
from sqlalchemy import Column, Integer, String, create_engine, func, select, text
from sqlalchemy.orm import Session, declarative_base
from sqlalchemy.pool import NullPool

Base = declarative_base()


class Item(Base):
    __tablename__ = 'sa_items'
    id = Column(Integer, primary_key=True)
    label = Column(String(50), nullable=False, index=True)
    n = Column(Integer, nullable=False)


def fail(msg):
    sys.exit(f'sqlalchemy app: {msg}')


def run(engine, label, rows):
    """Inserts rows, checks what the table holds and streams it; returns
    the schema the session ran in and the rows streamed."""
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Item(label=label, n=i) for i in range(rows))
        session.commit()
    with Session(engine) as session:
        schema = session.execute(text('SELECT current_schema()')).scalar_one()
        labels = session.execute(select(Item.label, func.count()).group_by(Item.label)).all()
        if [l for l, _ in labels] != [label]:
            fail(f'labels in sa_items: {labels}, want only {label!r}')
        streamed = 0
        # stream_results: a named (server-side) cursor, DECLAREd WITHOUT
        # HOLD inside the session's transaction; yield_per fetches in
        # batches of 25.
        result = session.execute(
            select(Item).order_by(Item.id).execution_options(stream_results=True, yield_per=25))
        for item in result.scalars():
            if streamed == 0:
                # The rows come from a cursor on the server, open in this
                # transaction, which ends with it.
                open_cursors = session.execute(text(
                    'SELECT count(*) FROM pg_cursors WHERE NOT is_holdable')).scalar_one()
                if open_cursors < 1:
                    fail('stream_results opened no server-side cursor')
            if item.label != label:
                fail(f'streamed a row of {item.label!r}')
            streamed += 1
        session.commit()
    return schema, labels[0][1], streamed


def main():
    url, label, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # SQLAlchemy's pool in front of pgtenant's: each pooled connection is a
    # pgtenant client (no backend while idle); pool_pre_ping replaces one
    # that pgtenant or a network closed.
    pooled = create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True, future=True)
    schema, total, streamed = run(pooled, label, rows)
    if total != rows or streamed != rows:
        fail(f'pooled engine: {total} rows, {streamed} streamed, want {rows}')
    pooled.dispose()
    # NullPool: a new pgtenant client per checkout; pgtenant does the pooling.
    unpooled = create_engine(url, poolclass=NullPool, future=True)
    schema2, total2, streamed2 = run(unpooled, label, rows)
    if schema2 != schema or total2 != 2 * rows or streamed2 != 2 * rows:
        fail(f'NullPool engine: schema {schema2}, {total2} rows, {streamed2} streamed, want {schema} and {2 * rows}')
    print(f'sqlalchemy ok: label {label}, schema {schema}, rows {rows}, streamed {streamed}, nullpool rows {total2}')


if __name__ == '__main__':
    main()
