// A real OpenID Provider on loopback for Junction's tests: panva/oidc-provider
// (https://github.com/panva/node-oidc-provider, OpenID Certified), configured here and
// nothing else. It listens on 127.0.0.1 on a free port and prints one JSON line,
// {"issuer": "http://127.0.0.1:<port>"}, once it accepts connections.
//
// Configuration, and why:
// - dynamic client registration (RFC 7591) is on, so a test registers its client with
//   the redirect URI it only knows once its own stack runs;
// - PKCE is required for every client, refresh tokens are issued for `offline_access`
//   (which OpenID Connect only honours with `prompt=consent`) and rotated on every use,
//   and RFC 7009 revocation is on;
// - login and consent are not HTML forms: GET /interaction/<uid> finishes them at once
//   for the account `TEST_ACCOUNT` (default `user-1`), as a user clicking "allow" would;
// - GET /test/counters reports what happened (token grants, refresh tokens consumed,
//   revocations, metadata and key fetches) so tests can assert the provider's side.
// - every token the token endpoint issues, and every PKCE verifier it is sent, is
//   printed as one more JSON line, {"issued": {"kind": "access_token", "value": "..."}},
//   so tests can look for it in what Junction's functions logged.
// The process exits when its standard input closes (the test that started it ended).

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const account = process.env.TEST_ACCOUNT || 'user-1';
const accessTokenTtl = Number(process.env.ACCESS_TOKEN_TTL || 600);

const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const counters = {
  discovery: 0,
  jwks: 0,
  authorizations: 0,
  code_grants: 0,
  refresh_grants: 0,
  refresh_tokens_consumed: 0,
  revocations: 0,
  grants_revoked: 0,
  errors: [],
};

const provider = new Provider(issuer, {
  jwks: { keys: [{ ...signingKey, kid: 'test-rs256', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'email'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  ttl: {
    AccessToken: accessTokenTtl,
    AuthorizationCode: 60,
    IdToken: 600,
    RefreshToken: 86_400,
    Grant: 86_400,
    Interaction: 600,
    Session: 86_400,
  },
  rotateRefreshToken: true,
  findAccount: async (_ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: `${sub}@example.com`, email_verified: true }),
  }),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
});

provider.on('authorization.success', () => { counters.authorizations += 1; });
provider.on('grant.success', (ctx) => {
  const grantType = ctx.oidc.params?.grant_type;
  if (grantType === 'authorization_code') counters.code_grants += 1;
  if (grantType === 'refresh_token') counters.refresh_grants += 1;
});
provider.on('refresh_token.consumed', () => { counters.refresh_tokens_consumed += 1; });
provider.on('grant.revoked', () => { counters.grants_revoked += 1; });
for (const event of ['grant.error', 'revocation.error', 'authorization.error', 'server_error']) {
  provider.on(event, (_ctx, err) => { counters.errors.push(`${event}: ${err?.message}`); });
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/.well-known/openid-configuration') counters.discovery += 1;
  if (ctx.path === '/jwks') counters.jwks += 1;
  if (ctx.path === '/token/revocation' && ctx.method === 'POST') counters.revocations += 1;
  if (ctx.method === 'GET' && ctx.path === '/test/counters') {
    ctx.body = counters;
    return;
  }
  if (ctx.method === 'GET' && ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { prompt, params } = details;
    let result;
    if (prompt.name === 'login') {
      result = { login: { accountId: account } };
    } else {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
      if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
      result = { consent: { grantId: await grant.save() } };
    }
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
    ctx.respond = false;
    return;
  }
  await next();
});

provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route !== 'token' || !ctx.body || typeof ctx.body !== 'object') return;
  const seen = { ...ctx.body, code_verifier: ctx.oidc.params?.code_verifier };
  for (const kind of ['access_token', 'refresh_token', 'id_token', 'code_verifier']) {
    const value = seen[kind];
    if (typeof value === 'string') process.stdout.write(`${JSON.stringify({ issued: { kind, value } })}\n`);
  }
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
