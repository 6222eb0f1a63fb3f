// test.js drives node-postgres (pg.Pool) through pgtenant as one tenant and
// checks every answer: named prepared statements reused across many pool
// clients, transactions that commit and roll back, errors the client must
// survive, and current_schema() being the tenant's schema throughout.
//
// Environment: PGTENANT_HOST, PGTENANT_PORT, PGTENANT_TENANT (database name
// and schema), and optionally PGTENANT_USER (default app). The tenant's
// schema must hold, before the run:
//
//   items(id int primary key, name text unique, tenant text, qty int)
//       with rows 1..ITEMS named '<tenant>-item-<id>', tenant '<tenant>', qty 0
//   ledger(id serial primary key, tenant text, note text, amount int), empty
//
// On success it prints
//
//   node ok: N queries, C committed, R rolled back, E expected errors
//
// and exits 0; on any mismatch it prints "node FAIL: ..." to stderr and
// exits 1.
'use strict';

const pg = require('pg');

const ITEMS = 50;
const WORKERS = 10;
const ROUNDS = 30;

function env(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (dflt !== undefined) return dflt;
    throw new Error(`environment variable ${name} is not set`);
  }
  return v;
}

const tenant = env('PGTENANT_TENANT');
const pool = new pg.Pool({
  host: env('PGTENANT_HOST'),
  port: Number(env('PGTENANT_PORT')),
  user: env('PGTENANT_USER', 'app'),
  database: tenant,
  password: '',
  ssl: false,
  application_name: 'pgtenant-nodeapp',
  max: 5,
  connectionTimeoutMillis: 20000,
  idleTimeoutMillis: 1000,
  query_timeout: 30000,
});
// An idle client's error (its server went away) must not crash the
// process before the failing query says what happened.
pool.on('error', (err) => console.error(`node: idle client error: ${err.message}`));

// The named statements. node-postgres sends Parse for a name once per
// connection and afterwards only Bind/Execute, so pgtenant has to make each
// name exist on whichever backend serves the next use.
const stmt = {
  getItem: 'select id, name, tenant, qty from items where id = $1',
  schema: 'select current_schema() as s',
  countItems: 'select count(*)::int as n, min(tenant) as lo, max(tenant) as hi from items where id <= $1',
  ledgerInsert: 'insert into ledger (tenant, note, amount) values ($1, $2, $3) returning id, tenant',
  ledgerByNote: 'select count(*)::int as n from ledger where note = $1',
  bumpQty: 'update items set qty = qty + $2 where id = $1 returning qty, tenant',
  insertItem: 'insert into items (id, name, tenant, qty) values ($1, $2, $3, 0)',
  divide: 'select 10 / $1::int as x',
  badSyntax: 'selec $1::int',
};

const stats = { queries: 0, committed: 0, rolledBack: 0, expectedErrors: 0 };

class Mismatch extends Error {}

function check(cond, what) {
  if (!cond) throw new Mismatch(what);
}

// q runs a named statement (or plain text) on a client or the pool.
async function q(on, name, values) {
  stats.queries++;
  if (stmt[name] === undefined) {
    return on.query(name, values);
  }
  return on.query({ name, text: stmt[name], values });
}

// expectError runs a statement that must fail with code.
async function expectError(on, name, values, code, what) {
  let err;
  try {
    await q(on, name, values);
  } catch (e) {
    err = e;
  }
  check(err !== undefined, `${what}: succeeded, want error ${code}`);
  check(err.code === code, `${what}: error code ${err.code} (${err.message}), want ${code}`);
  stats.expectedErrors++;
}

async function checkSchema(on, where) {
  const r = await q(on, 'schema', []);
  check(r.rows.length === 1 && r.rows[0].s === tenant,
    `${where}: current_schema() = ${JSON.stringify(r.rows.map((x) => x.s))}, want ${tenant}`);
}

async function checkItem(on, id, where) {
  const r = await q(on, 'getItem', [id]);
  check(r.rows.length === 1, `${where}: item ${id}: ${r.rows.length} rows, want 1`);
  const row = r.rows[0];
  check(row.tenant === tenant && row.name === `${tenant}-item-${id}` && row.id === id,
    `${where}: item ${id} is ${JSON.stringify(row)}, want tenant ${tenant}`);
}

// reads: named statements on whatever pool client comes next.
async function reads(w, round) {
  const id = ((w * 7 + round * 13) % ITEMS) + 1;
  await checkItem(pool, id, `worker ${w} round ${round}`);
  await checkSchema(pool, `worker ${w} round ${round}`);
  const c = await q(pool, 'countItems', [ITEMS]);
  check(c.rows[0].n === ITEMS && c.rows[0].lo === tenant && c.rows[0].hi === tenant,
    `worker ${w} round ${round}: items summary ${JSON.stringify(c.rows[0])}, want ${ITEMS} rows of ${tenant}`);
  // An unnamed extended-protocol query and a simple-protocol one.
  const u = await q(pool, 'select $1::text as t, current_schema() as s', [`${tenant}/${w}/${round}`]);
  check(u.rows[0].t === `${tenant}/${w}/${round}` && u.rows[0].s === tenant,
    `worker ${w} round ${round}: unnamed query gave ${JSON.stringify(u.rows[0])}`);
  const s = await q(pool, 'select current_schema() as s, count(*)::int as n from ledger where tenant <> current_schema()');
  check(s.rows[0].s === tenant && s.rows[0].n === 0,
    `worker ${w} round ${round}: simple query gave ${JSON.stringify(s.rows[0])}`);
}

// transaction runs BEGIN ... COMMIT or BEGIN ... ROLLBACK on one client and
// checks its effects from inside and, afterwards, from the pool.
async function transaction(w, round, commit) {
  const note = `${tenant}-w${w}-r${round}-${commit ? 'commit' : 'rollback'}`;
  // Each worker bumps only its own items, so that the qty read before the
  // update is still the qty the update starts from.
  const id = ((w * (ITEMS / WORKERS) + (round % (ITEMS / WORKERS))) % ITEMS) + 1;
  const client = await pool.connect();
  let release = true;
  try {
    await q(client, 'BEGIN');
    await checkSchema(client, note);
    const before = (await q(client, 'getItem', [id])).rows[0].qty;
    const ins = await q(client, 'ledgerInsert', [tenant, note, w + round]);
    check(ins.rows.length === 1 && ins.rows[0].tenant === tenant, `${note}: insert returned ${JSON.stringify(ins.rows)}`);
    const upd = await q(client, 'bumpQty', [id, 1]);
    check(upd.rows.length === 1 && upd.rows[0].tenant === tenant && upd.rows[0].qty === before + 1,
      `${note}: bump of item ${id} from ${before} returned ${JSON.stringify(upd.rows)}`);
    const inside = await q(client, 'ledgerByNote', [note]);
    check(inside.rows[0].n === 1, `${note}: inside the transaction, ${inside.rows[0].n} ledger rows, want 1`);
    await q(client, commit ? 'COMMIT' : 'ROLLBACK');
    const after = await q(client, 'ledgerByNote', [note]);
    check(after.rows[0].n === (commit ? 1 : 0), `${note}: after it, ${after.rows[0].n} ledger rows on the same client`);
  } catch (e) {
    // A client that failed mid-transaction is not handed back as healthy.
    release = false;
    client.release(e);
    throw e;
  } finally {
    if (release) client.release();
  }
  const seen = await q(pool, 'ledgerByNote', [note]);
  check(seen.rows[0].n === (commit ? 1 : 0), `${note}: seen from the pool, ${seen.rows[0].n} ledger rows`);
  if (commit) stats.committed++;
  else stats.rolledBack++;
}

// errors provokes errors on one client and checks it keeps working after
// each, including after an error inside a transaction.
async function errors(w, round) {
  const where = `worker ${w} round ${round}`;
  const client = await pool.connect();
  let release = true;
  try {
    await expectError(client, 'insertItem', [1, `${tenant}-item-1`, tenant], '23505', `${where}: duplicate item`);
    await checkItem(client, 1, `${where}: after 23505`);
    await expectError(client, 'divide', [0], '22012', `${where}: division by zero`);
    const ok = await q(client, 'divide', [5]);
    check(ok.rows[0].x === 2, `${where}: 10 / 5 gave ${JSON.stringify(ok.rows[0])}`);
    await checkSchema(client, `${where}: after 22012`);
    await expectError(client, 'selec 1', undefined, '42601', `${where}: simple-protocol syntax error`);
    await expectError(client, 'badSyntax', [1], '42601', `${where}: named syntax error`);
    await checkItem(client, 2, `${where}: after 42601`);

    // An error inside a transaction aborts it until ROLLBACK.
    await q(client, 'BEGIN');
    await expectError(client, 'divide', [0], '22012', `${where}: division by zero in a transaction`);
    await expectError(client, 'schema', [], '25P02', `${where}: statement in an aborted transaction`);
    await q(client, 'ROLLBACK');
    await checkSchema(client, `${where}: after a failed transaction`);
  } catch (e) {
    release = false;
    client.release(e);
    throw e;
  } finally {
    if (release) client.release();
  }
}

async function worker(w) {
  for (let round = 0; round < ROUNDS; round++) {
    await reads(w, round);
    await transaction(w, round, true);
    await transaction(w, round, false);
    if (round % 5 === w % 5) await errors(w, round);
  }
}

async function main() {
  await checkSchema(pool, 'start');
  const start = await q(pool, 'select coalesce(sum(qty), 0)::int as qty, (select count(*)::int from ledger) as ledger from items');
  check(start.rows[0].ledger === 0, `start: ledger has ${start.rows[0].ledger} rows, want an empty one`);

  const results = await Promise.allSettled(Array.from({ length: WORKERS }, (_, w) => worker(w)));
  const failed = results.filter((r) => r.status === 'rejected');
  if (failed.length > 0) {
    for (const f of failed) console.error(`node FAIL: ${f.reason && f.reason.stack ? f.reason.stack : f.reason}`);
    throw new Mismatch(`${failed.length} of ${WORKERS} workers failed`);
  }

  const end = await q(pool, 'select coalesce(sum(qty), 0)::int as qty, (select count(*)::int from ledger) as ledger, ' +
    '(select count(*)::int from ledger where tenant <> $1) as foreign from items', [tenant]);
  const want = { qty: start.rows[0].qty + stats.committed, ledger: stats.committed, foreign: 0 };
  check(JSON.stringify(end.rows[0]) === JSON.stringify(want),
    `end: ${JSON.stringify(end.rows[0])}, want ${JSON.stringify(want)}`);
  await checkSchema(pool, 'end');
  console.log(`node ok: ${stats.queries} queries, ${stats.committed} committed, ${stats.rolledBack} rolled back, ` +
    `${stats.expectedErrors} expected errors`);
}

main()
  .catch((e) => {
    console.error(`node FAIL: ${e instanceof Mismatch ? e.message : (e && e.stack) || e}`);
    process.exitCode = 1;
  })
  .finally(() => pool.end());
