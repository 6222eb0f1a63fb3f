"""What the driver scripts share: the command line, the schema changes and
the one-line outcome of each step that drivers_test.go compares.

A script is run as
    <script> <scenario> <change> <target-json>
where target-json holds host, port, user, dbname and, for a direct
connection, search_path (put in the startup options, so that it sees the
tables pgtenant would pin for the tenant). It prints
    STEP <name> ok <rows as JSON>
    STEP <name> error <exception class> <SQLSTATE>
for each step, NOTE lines the test only logs (error messages, which name
statements differently through pgtenant), and DONE at the end.
"""

import json
import sys

# A change is: the query a driver prepares, its parameter, and the DDL that
# breaks the plan of a statement prepared before it.
CHANGES = {
    # A column added: "select *" now returns three columns, so a statement
    # prepared before fails with 0A000 cached plan must not change result
    # type until it is prepared again.
    "addcol": (
        "select * from t where id = $1",
        1,
        ["ALTER TABLE t ADD COLUMN extra int NOT NULL DEFAULT 7"],
    ),
    # The enum the parameter is inferred as dropped and made again under a
    # new OID: a statement prepared before refers to a type that no longer
    # exists (XX000 cache lookup failed for type).
    "enum": (
        "select id, mo::text from m where mo = $1",
        "ok",
        [
            "DROP TABLE m",
            "DROP TYPE mood",
            "CREATE TYPE mood AS ENUM ('sad', 'ok')",
            "CREATE TABLE m (id int, mo mood)",
            "INSERT INTO m VALUES (1, 'ok'), (2, 'sad')",
        ],
    ),
}


def args():
    if len(sys.argv) != 4:
        sys.exit("usage: %s <scenario> <change> <target-json>" % sys.argv[0])
    scenario, change, target = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if change not in CHANGES:
        sys.exit("unknown change %r" % change)
    return scenario, CHANGES[change], target


def literal(param):
    """param as an SQL literal, for an EXECUTE text."""
    if isinstance(param, int):
        return str(param)
    return "'" + param.replace("'", "''") + "'"


def ok(name, rows):
    print("STEP", name, "ok", json.dumps([[str(v) for v in r] for r in rows]), flush=True)


def error(name, exc):
    state = getattr(exc, "sqlstate", None) or "-"
    print("STEP", name, "error", type(exc).__name__, state, flush=True)
    print("NOTE", name, type(exc).__module__ + "." + type(exc).__name__ + ":",
          str(exc).replace("\n", " | "), flush=True)


def note(name, text):
    print("NOTE", name, text, flush=True)


def done():
    print("DONE", flush=True)
