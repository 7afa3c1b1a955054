// Logs in through the gateway with an OIDC token as the password
// (mysql_clear_password over TLS) with node mysql2, and prints what it sees.
//
//   node token_login.js --host H --port P --user TARGET --password "$TOKEN" --ssl-ca CA
// Prints {"current_user": ..., "one": 1}.
'use strict';

const fs = require('node:fs');
const mysql = require('mysql2/promise');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

async function main() {
  const ca = arg('ssl-ca');
  const conn = await mysql.createConnection({
    host: arg('host', '127.0.0.1'),
    port: Number(arg('port', '3306')),
    user: arg('user'),
    password: arg('password'),
    database: arg('database'),
    // The token travels as a clear-text password: only over verified TLS.
    enableCleartextPlugin: true,
    ssl: ca ? { ca: fs.readFileSync(ca), servername: 'localhost' } : { rejectUnauthorized: false },
    connectTimeout: 10000,
  });
  const [rows] = await conn.query('SELECT CURRENT_USER() AS u, 1 AS one');
  await conn.end();
  console.log(JSON.stringify({ current_user: rows[0].u, one: Number(rows[0].one) }));
}

main().catch((e) => {
  console.error(`${e.code || e.name}: ${e.message}`);
  process.exit(1);
});
