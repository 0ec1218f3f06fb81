// A real OpenID Connect provider for modelgate's tests: node `oidc-provider` issuing JWT access tokens (RS256 and
// ES256) to clients with the client-credentials grant, with discovery and a JWKS endpoint, on a port the OS picks.
// It prints one JSON ready line: {"event":"ready","issuer":"http://127.0.0.1:PORT"}.
//
// Test-only endpoints beside the provider (under /test/, never part of a real IdP):
//   POST /test/rotate  — switch to a second provider instance whose JWKS publishes a new key first (signing) and
//                        the old one after it, as an IdP does during key rotation.
//   POST /test/sign    — sign {header, claims} with the current RSA key (to craft expired, wrong-aud ... tokens).
//   GET  /test/forge?kind=...  — attack tokens: none, hs256-pubkey, rogue-kid, jku, x5u, wrong-key-same-kid.
//
// People sign in with the authorization code flow (the gateway's single sign-on): client `console` (secret
// `console-secret-0123456789`; redirects http://127.0.0.1:ANY-PORT/console/callback and /.modelgate/callback, as a
// native app's loopback URIs) and a login form at /interaction/{uid} for the accounts below.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

function keyPair(type, kid) {
  const opts = type === 'rsa' ? { modulusLength: 2048 } : { namedCurve: 'P-256' };
  const { privateKey, publicKey } = crypto.generateKeyPairSync(type === 'rsa' ? 'rsa' : 'ec', opts);
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: type === 'rsa' ? 'RS256' : 'ES256' };
  return { privateKey, publicKey, jwk, kid };
}

const rsa1 = keyPair('rsa', 'rsa-1');
const ec1 = keyPair('ec', 'ec-1');
const rsa2 = keyPair('rsa', 'rsa-2');
const rogue = keyPair('rsa', 'rogue');

const GROUPS = { 'team-a': ['vision'], 'team-b': ['nlp'], short: [], long: [] };
// An organisation claim, as Okta's custom claims carry one (namespace owners by claim).
const DEPARTMENTS = { 'team-a': 'ml-vision', 'team-b': 'ml-nlp' };
// People, for the authorization code flow: alice administers, bob is in another team.
const ACCOUNTS = {
  alice: { password: 'alice-password', email: 'alice@example.com', name: 'Alice Admin', groups: ['platform-admins'] },
  bob: { password: 'bob-password', email: 'bob@example.com', name: 'Bob Builder', groups: ['team-x'] },
};
const clients = Object.keys(GROUPS).map((id) => ({
  client_id: id,
  client_secret: `${id}-secret-0123456789`,
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  scope: 'digits:infer models:read vision:infer',
}));
clients.push({
  client_id: 'console',
  client_secret: 'console-secret-0123456789',
  application_type: 'native',
  grant_types: ['authorization_code'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/console/callback', 'http://127.0.0.1/.modelgate/callback'],
  token_endpoint_auth_method: 'client_secret_basic',
});

function makeProvider(issuer, keys) {
  const provider = new Provider(issuer, {
    clients,
    scopes: ['openid', 'email', 'profile', 'groups', 'digits:infer', 'models:read', 'vision:infer'],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
    // The ID token carries the people's claims (the console reads no userinfo).
    conformIdTokenClaims: false,
    findAccount: async (ctx, id) => (ACCOUNTS[id] ? {
      accountId: id,
      claims: async () => ({ sub: id, email: ACCOUNTS[id].email, email_verified: true, name: ACCOUNTS[id].name, groups: ACCOUNTS[id].groups }),
    } : undefined),
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    jwks: { keys: keys.map((k) => k.jwk) },
    features: {
      clientCredentials: { enabled: true },
      devInteractions: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:modelgate',
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => ({
          scope: 'digits:infer models:read vision:infer',
          audience: resource,
          accessTokenTTL: client.clientId === 'short' ? 2 : client.clientId === 'long' ? 7200 : 300,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: resource.endsWith(':es') ? 'ES256' : 'RS256' } },
        }),
      },
    },
    extraTokenClaims: (ctx, token) => ({ groups: GROUPS[token.clientId] || [], department: DEPARTMENTS[token.clientId] || '' }),
  });
  provider.proxy = false;
  return provider;
}

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function signWith(key, header, claims) {
  const input = `${b64(header)}.${b64(claims)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), key.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

let current;
let signing = rsa1;
let issuer;

function defaults() {
  const now = Math.floor(Date.now() / 1000);
  return { iss: issuer, aud: 'urn:modelgate', sub: 'forged', client_id: 'team-a', scope: 'digits:infer', iat: now, exp: now + 300 };
}

function forge(kind) {
  const claims = defaults();
  switch (kind) {
    case 'none':
      return `${b64({ alg: 'none', typ: 'JWT', kid: signing.kid })}.${b64(claims)}.`;
    case 'hs256-pubkey': {
      // The classic key-confusion attack: HMAC keyed with the RSA public key that anyone can fetch.
      const input = `${b64({ alg: 'HS256', typ: 'JWT', kid: signing.kid })}.${b64(claims)}`;
      const pem = signing.publicKey.export({ type: 'spki', format: 'pem' });
      return `${input}.${crypto.createHmac('sha256', pem).update(input).digest('base64url')}`;
    }
    case 'rogue-kid':
      return signWith(rogue, { alg: 'RS256', typ: 'JWT', kid: 'rogue' }, claims);
    case 'jku':
      return signWith(rogue, { alg: 'RS256', typ: 'JWT', kid: 'rogue', jku: 'http://127.0.0.1:9/jwks.json' }, claims);
    case 'x5u':
      return signWith(rogue, { alg: 'RS256', typ: 'JWT', kid: 'rogue', x5u: 'http://127.0.0.1:9/cert.pem' }, claims);
    case 'wrong-key-same-kid':
      return signWith(rogue, { alg: 'RS256', typ: 'JWT', kid: signing.kid }, claims);
    default:
      return null;
  }
}

function readBody(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(data));
  });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/test/rotate' && req.method === 'POST') {
    current = makeProvider(issuer, [rsa2, rsa1, ec1]);
    signing = rsa2;
    res.end(JSON.stringify({ signing: rsa2.kid }));
    return;
  }
  if (url.pathname === '/test/sign' && req.method === 'POST') {
    const { header = {}, claims = {} } = JSON.parse((await readBody(req)) || '{}');
    const token = signWith(signing, { alg: 'RS256', typ: 'JWT', kid: signing.kid, ...header }, { ...defaults(), ...claims });
    res.end(JSON.stringify({ token }));
    return;
  }
  if (url.pathname === '/test/forge') {
    const token = forge(url.searchParams.get('kind'));
    res.statusCode = token ? 200 : 404;
    res.end(JSON.stringify({ token }));
    return;
  }
  if (url.pathname.startsWith('/interaction/')) {
    await interaction(req, res, url);
    return;
  }
  current.callback()(req, res);
});

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The login form of the authorization code flow: a user name and a password, checked against ACCOUNTS.
async function interaction(req, res, url) {
  try {
    const details = await current.interactionDetails(req, res);
    if (details.prompt.name === 'consent') {
      // A first-party app: what it asks is granted without a consent screen.
      const grant = details.grantId ? await current.Grant.find(details.grantId)
        : new current.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      if (details.prompt.details.missingOIDCScope) grant.addOIDCScope(details.prompt.details.missingOIDCScope.join(' '));
      if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
      const grantId = await grant.save();
      await current.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    if (req.method === 'GET') {
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(`<!doctype html><html lang="en"><head><title>Test IdP sign-in</title></head><body><h1>Sign in to the test IdP</h1>
<form method="post" action="/interaction/${escapeHtml(details.uid)}/login">
<label>User name <input name="login" autocomplete="username" autofocus></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button></form></body></html>`);
      return;
    }
    const form = new URLSearchParams(await readBody(req));
    const account = ACCOUNTS[form.get('login')];
    if (!account || account.password !== form.get('password')) {
      res.statusCode = 401;
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end('<!doctype html><p>Wrong user name or password.</p>');
      return;
    }
    await current.interactionFinished(req, res, { login: { accountId: form.get('login') } }, { mergeWithLastSubmission: false });
  } catch (e) {
    res.statusCode = 400;
    res.end(`interaction failed: ${e.message}`);
  }
}

server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  current = makeProvider(issuer, [rsa1, ec1]);
  process.stdout.write(`${JSON.stringify({ event: 'ready', issuer })}\n`);
});

process.on('SIGTERM', () => process.exit(0));
