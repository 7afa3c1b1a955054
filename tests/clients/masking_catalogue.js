#!/usr/bin/env node
// Runs a masking catalogue through node mysql2 `execute` (binary protocol,
// server-side prepared statements) and prints what the client received, as
// JSON: per item, each statement's rows or error message.
//
//   node masking_catalogue.js --host H --port P --user U --password W --database D --catalogue FILE
'use strict';

const fs = require('fs');
const mysql = require('mysql2/promise');
const { parseArgs, connectOptions } = require('./args');

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const items = JSON.parse(fs.readFileSync(args.catalogue, 'utf8'));
  const out = [];
  for (const stmts of items) {
    const conn = await mysql.createConnection(
      connectOptions(args, { supportBigNumbers: true, bigNumberStrings: true, dateStrings: true }),
    );
    const got = [];
    for (const sql of stmts) {
      try {
        const [rows] = await conn.execute(sql);
        got.push(JSON.stringify(rows, (k, v) => (Buffer.isBuffer(v) || (v && v.type === 'Buffer') ? Buffer.from(v.data || v).toString('latin1') : v)));
      } catch (e) {
        got.push('ERROR ' + e.message);
      }
    }
    await conn.end();
    out.push(got);
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
