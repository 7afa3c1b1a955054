#!/usr/bin/env node
// A real OIDC provider (node `oidc-provider`) for the workload-identity tests:
// the client-credentials grant, with JWT access tokens (RFC 9068, via resource
// indicators) signed RS256 by a key generated at start.
//
//   node oidc-issuer.mjs [--port 0] [--audience chaperone]
//
// Listens on 127.0.0.1 only and prints one JSON line when ready:
//   {"issuer": "http://127.0.0.1:PORT", "token_endpoint": ".../token",
//    "clients": {"agent-a": "secret-a", ...}}
// Each client gets an access token for resource `urn:chaperone` with
//   curl -d grant_type=client_credentials -d client_id=agent-a \
//        -d client_secret=secret-a -d resource=urn:chaperone -d scope=db $TOKEN_ENDPOINT
// Claims: iss, sub (= client id), aud, iat, nbf, exp, jti, client_id, scope, and
// the client's `team` and `groups` (for role matching).
//
// People's web login (the authorization code flow with PKCE) for the client
// `chaperone-ui` (secret `ui-secret`, redirect URI `--redirect-uri`): the login
// page logs in whoever `login_hint` names (alice: auditors, bob: approvers,
// carol: admins, dave: no group) and consents at once; ID tokens carry
// `name`, `email` and `groups`.
//
// Stops on SIGTERM/SIGINT or when its stdin closes (so a killed test harness
// leaves nothing behind).

import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const port = Number(arg('port', '0'));
const audience = arg('audience', 'chaperone');
const ttl = Number(arg('ttl', '300'));
const redirectUri = arg('redirect-uri', 'http://127.0.0.1:9/auth/callback');

const PEOPLE = {
  alice: { name: 'Alice Auditor', groups: ['chaperone-auditors'] },
  bob: { name: 'Bob Approver', groups: ['chaperone-approvers', 'staff'] },
  carol: { name: 'Carol Admin', groups: ['chaperone-admins'] },
  dave: { name: 'Dave Nobody', groups: ['staff'] },
};

const CLIENTS = {
  'agent-a': { secret: 'secret-a', team: 'orders', groups: ['db-writers', 'ci'] },
  'agent-b': { secret: 'secret-b', team: 'billing', groups: ['db-readers'] },
};

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' };

let handler = (_req, res) => { res.statusCode = 503; res.end(); };
let provider;
// The login and consent pages: no form, the person is the login_hint.
async function interaction(req, res) {
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'login') {
      const accountId = details.params.login_hint || 'dave';
      await provider.interactionFinished(req, res, { login: { accountId } },
        { mergeWithLastSubmission: false });
    } else {
      const grant = new provider.Grant({
        accountId: details.session.accountId,
        clientId: details.params.client_id,
      });
      grant.addOIDCScope(details.params.scope);
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } },
        { mergeWithLastSubmission: true });
    }
  } catch (e) {
    res.statusCode = 400;
    res.end(String(e));
  }
}
const server = http.createServer((req, res) => (
  req.url.startsWith('/interaction/') ? interaction(req, res) : handler(req, res)));

server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  const issuer = `http://127.0.0.1:${bound}`;
  provider = new Provider(issuer, {
    clients: [
      ...Object.entries(CLIENTS).map(([id, c]) => ({
        client_id: id,
        client_secret: c.secret,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_post',
      })),
      {
        client_id: 'chaperone-ui',
        client_secret: 'ui-secret',
        grant_types: ['authorization_code'],
        redirect_uris: [redirectUri],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    async findAccount(_ctx, id) {
      const p = PEOPLE[id];
      if (!p) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, name: p.name, email: `${id}@example.test`, groups: p.groups };
        },
      };
    },
    claims: { openid: ['sub'], profile: ['name'], email: ['email'], groups: ['groups'] },
    // People's ID tokens carry their profile and groups (the web UI reads them).
    conformIdTokenClaims: false,
    interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
    jwks: { keys: [signingKey] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Workload clients get JWT access tokens for the gateway; the web
        // login only needs its ID token.
        defaultResource: (_ctx, client) => (client.clientId === 'chaperone-ui' ? undefined : 'urn:chaperone'),
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'db',
          audience,
          accessTokenTTL: ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    formats: {
      customizers: {
        // Workload tokens (GitHub, Kubernetes) carry `nbf` and platform claims.
        async jwt(_ctx, token, jwt) {
          jwt.payload.nbf = jwt.payload.iat;
          const c = CLIENTS[token.clientId];
          if (c) {
            jwt.payload.team = c.team;
            jwt.payload.groups = c.groups;
          }
        },
      },
    },
  });
  provider.on('server_error', (_ctx, err) => console.error('oidc-provider error:', err));
  handler = provider.callback();
  console.log(JSON.stringify({
    issuer,
    token_endpoint: `${issuer}/token`,
    clients: Object.fromEntries(Object.entries(CLIENTS).map(([id, c]) => [id, c.secret])),
  }));
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
