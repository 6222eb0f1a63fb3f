"""asyncpg with its default statement cache (every query with parameters is
prepared as __asyncpg_stmt_N__ and kept). See drvscen.py for the command line
and the output.

Scenarios:
  existing  one connection runs the query, the schema changes, and the same
            connection runs it three more times (outside a transaction,
            asyncpg itself prepares again once after InvalidCachedStatementError);
  new       two connections run the query inside transactions open at once
            (so that both backends of a pool of two prepare it) and leave,
            the schema changes, and three new connections run it one after
            the other.
"""

import asyncio

import asyncpg

import drvscen


async def connect(tg):
    kw = dict(host=tg["host"], port=tg["port"], user=tg["user"], database=tg["dbname"],
              timeout=10, ssl=False)
    if tg.get("search_path"):
        kw["server_settings"] = {"search_path": tg["search_path"]}
    return await asyncpg.connect(**kw)


async def step(name, conn, query, param):
    try:
        drvscen.ok(name, await conn.fetch(query, param))
    except asyncpg.PostgresError as e:
        drvscen.error(name, e)
    except asyncpg.InterfaceError as e:
        # Not the server's: asyncpg's own complaint, e.g. about a type.
        drvscen.error(name, e)


async def ddl(tg, statements):
    c = await connect(tg)
    try:
        for s in statements:
            await c.execute(s)  # no arguments: simple protocol, nothing prepared
    finally:
        await c.close()


async def main():
    scenario, (query, param, change), tg = drvscen.args()
    if scenario == "existing":
        c = await connect(tg)
        await step("before", c, query, param)
        await ddl(tg, change)
        for i in (1, 2, 3):
            await step("after%d" % i, c, query, param)
        await c.close()
    elif scenario == "new":
        a, b = await connect(tg), await connect(tg)
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        for c in (a, b):
            await c.fetch(query, param)
        await ta.commit()
        await tb.commit()
        await a.close()
        await b.close()
        await ddl(tg, change)
        for i in (1, 2, 3):
            c = await connect(tg)
            await step("new%d" % i, c, query, param)
            await c.close()
    else:
        raise SystemExit("unknown scenario %r" % scenario)
    drvscen.done()


if __name__ == "__main__":
    asyncio.run(main())
