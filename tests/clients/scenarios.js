#!/usr/bin/env node
// Acceptance scenarios of the gateway with node mysql2, through `query` (text
// protocol) and `execute` (prepared statements). Each scenario checks what the
// driver gets and exits non-zero with a message when a check fails; on success it
// prints a JSON object for the Rust test to check further.
//
//   node scenarios.js --scenario roundtrip --host ... --port ... --database db
//
// Scenarios: roundtrip, blob, big_result, change_user, reset, tls.
'use strict';

const crypto = require('crypto');
const mysql = require('mysql2/promise');
const { parseArgs, connectOptions, fail } = require('./args');

function check(cond, message) {
  if (!cond) fail(message);
}

async function connect(args, extra = {}) {
  return mysql.createConnection(
    connectOptions(args, { supportBigNumbers: true, bigNumberStrings: true, dateStrings: true, ...extra }),
  );
}

const scenarios = {
  // Values of every type family through query and execute, read back both ways.
  async roundtrip(args) {
    const conn = await connect(args);
    await conn.query('DROP TABLE IF EXISTS node_rt');
    await conn.query(
      'CREATE TABLE node_rt (id INT PRIMARY KEY, biu BIGINT UNSIGNED, bi BIGINT, dc DECIMAL(30,10), d DOUBLE, ' +
        'dtm DATETIME(6), vc VARCHAR(100), bl BLOB, js JSON, en ENUM("x","y"), nl INT NULL) CHARACTER SET utf8mb4',
    );
    const values = [
      '18446744073709551615',
      '-9223372036854775808',
      '-12345678901234567890.0123456789',
      -1.25e-300,
      '2024-02-29 13:05:09.123456',
      'emoji 😀🎉 漢字',
      Buffer.from([0, 1, 2, 254, 255]),
      '{"k": ["v", 1]}',
      'y',
      null,
    ];
    const insert = 'INSERT INTO node_rt VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
    const [r1] = await conn.query(insert, [1, ...values]);
    check(r1.affectedRows === 1, `query insert affected ${r1.affectedRows}`);
    const [r2] = await conn.execute(insert, [2, ...values]);
    check(r2.affectedRows === 1, `execute insert affected ${r2.affectedRows}`);
    const select = 'SELECT biu, bi, dc, d, dtm, vc, bl, js, en, nl FROM node_rt WHERE id = ?';
    for (const id of [1, 2]) {
      for (const how of ['query', 'execute']) {
        const [rows] = await conn[how](select, [id]);
        check(rows.length === 1, `${how} id ${id}: ${rows.length} rows`);
        const row = rows[0];
        const got = [row.biu, row.bi, row.dc, row.d, row.dtm, row.vc, row.bl, row.js, row.en, row.nl];
        values.forEach((want, i) => {
          let g = got[i];
          if (i === 7) {
            check(JSON.stringify(g) === JSON.stringify({ k: ['v', 1] }) || JSON.stringify(JSON.parse(g)) === JSON.stringify({ k: ['v', 1] }), `${how} json ${g}`);
            return;
          }
          if (Buffer.isBuffer(want)) {
            check(Buffer.isBuffer(g) && g.equals(want), `${how} id ${id} blob ${g && g.toString('hex')}`);
            return;
          }
          if (typeof g === 'number' && typeof want === 'string') g = String(g);
          check(g === want, `${how} id ${id} column ${i}: got ${JSON.stringify(g)}, want ${JSON.stringify(want)}`);
        });
      }
    }
    await conn.end();
    return { rows: 2 };
  },

  // A 20 MiB BLOB through execute (binary protocol, multi-packet both ways).
  async blob(args) {
    const size = 20 * 1024 * 1024;
    const data = Buffer.concat(Array(size / 1024).fill(crypto.randomBytes(1024)));
    const conn = await connect(args);
    await conn.query('DROP TABLE IF EXISTS node_blob');
    await conn.query('CREATE TABLE node_blob (id INT PRIMARY KEY, b LONGBLOB)');
    await conn.execute('INSERT INTO node_blob VALUES (?, ?)', [1, data]);
    const [rows] = await conn.execute('SELECT b, LENGTH(b) AS n, SHA2(b, 256) AS h FROM node_blob WHERE id = ?', [1]);
    check(Number(rows[0].n) === size, `server has ${rows[0].n} bytes`);
    check(rows[0].h === crypto.createHash('sha256').update(data).digest('hex'), 'server-side hash differs');
    check(rows[0].b.equals(data), 'blob read back differs');
    await conn.end();
    return { bytes: size };
  },

  // 200,000 rows through query and execute.
  async big_result(args) {
    const conn = await connect(args, { rowsAsArray: true });
    const out = {};
    for (const how of ['query', 'execute']) {
      const [rows] = await conn[how]("SELECT seq, CONCAT('row-', seq) FROM seq_1_to_200000");
      check(rows.length === 200000, `${how}: ${rows.length} rows`);
      let sum = 0;
      for (const r of rows) sum += Number(r[0]);
      check(sum === (200000 * 200001) / 2, `${how}: sum ${sum}`);
      check(rows[199999][1] === 'row-200000', `${how}: last row ${rows[199999]}`);
      out[how] = rows.length;
    }
    await conn.end();
    return out;
  },

  // COM_CHANGE_USER to another gateway user; a wrong password is refused.
  async change_user(args) {
    const conn = await connect(args);
    const before = conn.connection.threadId;
    await conn.query("SET @marker = 'old'");
    await conn.changeUser({ user: args['new-user'], password: args['new-password'], database: args.database });
    const [rows] = await conn.query('SELECT @marker AS m, 6 AS six');
    check(rows[0].m === null, 'user variables survived the change of user');
    check(Number(rows[0].six) === 6, 'unusable after change user');
    const [ps] = await conn.execute('SELECT ? + 1 AS n', [1]);
    check(Number(ps[0].n) === 2, 'prepared statements unusable after change user');
    let refused = null;
    try {
      await conn.changeUser({ user: args['new-user'], password: 'wrong-password' });
    } catch (e) {
      refused = [e.errno, e.sqlMessage || e.message];
    }
    check(refused && refused[0] === 1045, `wrong password not refused: ${JSON.stringify(refused)}`);
    conn.destroy();
    return { connection_id: before, refused };
  },

  // COM_RESET_CONNECTION.
  async reset(args) {
    const conn = await connect(args);
    await conn.query('SET @v = 42');
    await conn.execute('SELECT ? AS x', [1]);
    await new Promise((resolve, reject) => conn.connection.reset((err) => (err ? reject(err) : resolve())));
    const [rows] = await conn.query('SELECT @v AS v');
    check(rows[0].v === null, 'user variable survived COM_RESET_CONNECTION');
    const [ps] = await conn.execute('SELECT ? + 1 AS n', [41]);
    check(Number(ps[0].n) === 42, 'execute after reset');
    await conn.end();
    return {};
  },

  // TLS, the gateway's certificate verified with its CA.
  async tls(args) {
    const fs = require('fs');
    const ssl = args.ca ? { ca: fs.readFileSync(args.ca), rejectUnauthorized: true } : { rejectUnauthorized: false };
    const conn = await connect(args, { ssl });
    const [rows] = await conn.query("SELECT 'over tls' AS s");
    check(rows[0].s === 'over tls', 'query over TLS');
    const id = conn.connection.threadId;
    await conn.end();
    return { connection_id: id };
  },
};

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const run = scenarios[args.scenario];
  if (!run) fail(`--scenario must be one of ${Object.keys(scenarios).join(', ')}`);
  const result = await run(args);
  process.stdout.write(`${JSON.stringify({ scenario: args.scenario, ...result })}\n`);
}

main().catch((e) => fail(`scenarios.js: ${e.stack || e}`));
