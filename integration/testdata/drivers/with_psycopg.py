"""psycopg 3 with server-side prepared statements (prepare_threshold=0:
every query with parameters is prepared, as _pg3_N). See drvscen.py for the
command line and the output.

Scenarios:
  existing  one connection runs the query, the schema changes, and the same
            connection runs it three more times;
  new       two connections run the query at once (so that both backends of
            a pool of two prepare it) and leave, the schema changes, and
            three new connections run it one after the other;
  dealloc   (issue 9 item 5) the query is prepared, the transaction rolls
            back (psycopg then sends DEALLOCATE ALL), and the statement is
            used by name afterwards: EXECUTE and a protocol-level Bind.
The mode argument "tx" (the default mode: commit after each step, rollback
after an error) or "autocommit" follows the scenario, as scenario:mode.
"""

import psycopg

import drvscen


def connect(tg, autocommit):
    kw = dict(host=tg["host"], port=tg["port"], user=tg["user"], dbname=tg["dbname"],
              connect_timeout=10, sslmode="disable", autocommit=autocommit)
    if tg.get("search_path"):
        kw["options"] = "-c search_path=" + tg["search_path"]
    conn = psycopg.connect(**kw)
    conn.prepare_threshold = 0
    return conn


def to_psycopg(query):
    return query.replace("$1", "%s")


def step(name, conn, query, param):
    try:
        rows = conn.execute(to_psycopg(query), (param,)).fetchall()
        if not conn.autocommit:
            conn.commit()
        drvscen.ok(name, rows)
    except psycopg.Error as e:
        drvscen.error(name, e)
        if not conn.autocommit:
            # What an application does after an error; psycopg follows the
            # ROLLBACK with DEALLOCATE ALL, as it has prepared statements.
            try:
                conn.rollback()
            except psycopg.Error as e2:
                drvscen.error(name + "-rollback", e2)


def ddl(tg, statements):
    with connect(tg, autocommit=True) as c:
        c.prepare_threshold = None
        for s in statements:
            c.execute(s)


def main():
    scenario, (query, param, change), tg = drvscen.args()
    scenario, _, mode = scenario.partition(":")
    autocommit = mode == "autocommit"
    if scenario == "existing":
        c = connect(tg, autocommit)
        step("before", c, query, param)
        ddl(tg, change)
        for i in (1, 2, 3):
            step("after%d" % i, c, query, param)
        c.close()
    elif scenario == "new":
        # Both connections hold a transaction open while they run the
        # query, so through a pool of two each has a backend of its own.
        a, b = connect(tg, False), connect(tg, False)
        for c in (a, b):
            c.execute(to_psycopg(query), (param,)).fetchall()
        for c in (a, b):
            c.commit()
            c.close()
        ddl(tg, change)
        for i in (1, 2, 3):
            with connect(tg, autocommit) as c:
                step("new%d" % i, c, query, param)
    elif scenario == "dealloc":
        c = connect(tg, False)
        step("prepare", c, query, param)
        c.execute("select 1 where false", prepare=False)
        c.rollback()  # ROLLBACK, then DEALLOCATE ALL
        # The statement psycopg prepared first is _pg3_0: it is gone now.
        try:
            rows = c.execute("EXECUTE _pg3_0(%s)" % drvscen.literal(param), prepare=False).fetchall()
            drvscen.ok("execute-dropped", rows)
        except psycopg.Error as e:
            drvscen.error("execute-dropped", e)
        c.rollback()
        res = c.pgconn.exec_prepared(b"_pg3_0", [str(param).encode()])
        if res.status == psycopg.pq.ExecStatus.FATAL_ERROR:
            state = res.error_field(psycopg.pq.DiagnosticField.SQLSTATE)
            print("STEP bind-dropped error pq", state.decode() if state else "-", flush=True)
            drvscen.note("bind-dropped", res.error_message.decode().strip())
        else:
            print("STEP bind-dropped ok", res.status.name, flush=True)
        c.rollback()
        step("after", c, query, param)
        c.close()
    else:
        raise SystemExit("unknown scenario %r" % scenario)
    drvscen.done()


if __name__ == "__main__":
    main()
