// Shared by the Node test clients: the command-line convention of tests/clients
// (--host H --port P --user U --password PW [--database DB], then the script's
// own options) and a canonical, type-tagged form of values for JSON output.
'use strict';

function parseArgs(argv, defaults = {}) {
  const args = { host: '127.0.0.1', port: 3306, user: 'root', password: '', database: undefined, ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const key = a.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) {
      args[key] = true;
    } else {
      args[key] = next;
      i++;
    }
  }
  args.port = Number(args.port);
  return args;
}

function connectOptions(args, extra = {}) {
  return {
    host: args.host,
    port: args.port,
    user: args.user,
    password: args.password,
    database: args.database,
    charset: 'utf8mb4_unicode_ci',
    connectTimeout: 10000,
    ...extra,
  };
}

// A value as a tagged string, so that types survive the JSON comparison.
function enc(v) {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return `hex:${v.toString('hex')}`;
  if (typeof v === 'string') return `str:${v}`;
  if (typeof v === 'number') return `num:${String(v)}`;
  if (typeof v === 'bigint') return `bigint:${v.toString()}`;
  if (typeof v === 'boolean') return `bool:${v}`;
  if (v instanceof Date) return `date:${isNaN(v) ? 'invalid' : v.toISOString()}`;
  return `obj:${JSON.stringify(v)}`;
}

// The JavaScript value of a tagged parameter (see differential_queries.json).
function dec(tagged) {
  if (tagged === 'null') return null;
  const i = tagged.indexOf(':');
  const kind = tagged.slice(0, i);
  const text = tagged.slice(i + 1);
  switch (kind) {
    case 'int': {
      const n = Number(text);
      return Number.isSafeInteger(n) ? n : BigInt(text);
    }
    case 'float':
      return Number(text);
    case 'hex':
      return Buffer.from(text, 'hex');
    case 'datetime':
      return text.replace('T', ' ');
    default:
      return text;
  }
}

function fail(message) {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

module.exports = { parseArgs, connectOptions, enc, dec, fail };
