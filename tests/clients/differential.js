#!/usr/bin/env node
// Runs the queries of differential_queries.json with node mysql2 and prints what
// it returned as canonical JSON: field descriptions, rows (type-tagged values),
// OK results, errors and SHOW WARNINGS after each query.
// proxy/tests/differential.rs runs it directly against MariaDB and through the
// gateway and compares the two outputs.
//
//   node differential.js --mode query|execute --host ... --port ... --database db
'use strict';

const fs = require('fs');
const path = require('path');
const mysql = require('mysql2/promise');
const { parseArgs, connectOptions, enc, dec, fail } = require('./args');

function describeFields(fields) {
  if (!fields) return null;
  return fields.map((f) => [f.name, f.orgName, f.table, f.columnType, f.flags, f.decimals, f.characterSet, f.columnLength]);
}

function oneResult(rows, fields) {
  if (Array.isArray(rows)) {
    return { columns: describeFields(fields), rows: rows.map((r) => r.map(enc)) };
  }
  return { affectedRows: rows.affectedRows, insertId: String(rows.insertId), warningStatus: rows.warningStatus, info: rows.info };
}

async function connect(args) {
  return mysql.createConnection(
    connectOptions(args, {
      multipleStatements: true,
      rowsAsArray: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
      dateStrings: true,
    }),
  );
}

async function runQuery(conn, query, mode) {
  const out = { name: query.name, results: [] };
  const params = query.params ? query.params.map(dec) : undefined;
  let usable = true;
  try {
    let rows;
    let fields;
    if (mode === 'execute') {
      [rows, fields] = await conn.execute(query.sql.replace(/%s/g, '?'), params || []);
    } else {
      [rows, fields] = await conn.query(query.sql.replace(/%s/g, '?'), params);
    }
    if (query.multi) {
      rows.forEach((r, i) => out.results.push(oneResult(r, fields[i])));
    } else {
      out.results.push(oneResult(rows, fields));
    }
  } catch (e) {
    out.error = [e.errno === undefined ? null : e.errno, e.sqlMessage || e.message];
    if (e.fatal) usable = false;
  }
  if (usable) {
    const [warnings] = await conn.query('SHOW WARNINGS');
    out.warnings = warnings.map((r) => r.map(enc));
  }
  return [out, usable];
}

async function main() {
  const args = parseArgs(process.argv.slice(2), { mode: 'query' });
  if (!['query', 'execute'].includes(args.mode)) fail(`--mode must be query or execute, not ${args.mode}`);
  const spec = JSON.parse(fs.readFileSync(path.join(__dirname, 'differential_queries.json'), 'utf8'));
  let conn = await connect(args);
  const results = [];
  for (const query of spec.queries) {
    if (args.mode === 'execute' && query.multi) continue;
    const [out, usable] = await runQuery(conn, query, args.mode);
    results.push(out);
    if (!usable) {
      conn.destroy();
      conn = await connect(args);
    }
  }
  await conn.end();
  process.stdout.write(`${JSON.stringify({ driver: 'mysql2', mode: args.mode, queries: results }, null, 1)}\n`);
}

main().catch((e) => fail(`differential.js: ${e.stack || e}`));
