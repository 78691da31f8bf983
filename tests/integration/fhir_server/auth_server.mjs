// A real OAuth 2.0 / OpenID Connect authorisation server for the SMART App Launch browser tests:
// `oidc-provider` (the certified Node implementation) with SMART launch context added.
//
//   node auth_server.mjs --port 0 --client-id ID --redirect-uri URI [--standalone-patient ID]
//
// Prints one JSON line once listening: {"issuer": "http://127.0.0.1:PORT",
// "authorization_endpoint": ..., "token_endpoint": ...}. Loopback only.
//
// SMART additions (App Launch 2.0, section "launch context"):
//   * `launch` and `aud` are accepted authorisation parameters;
//   * the token response carries `patient` (and `need_patient_banner`) when the authorisation
//     request's `launch` was `patient:<id>`; any other launch value gives a token without patient
//     context, which the app must refuse clearly.
// Sign-in and consent are oidc-provider's own development pages (any login and password; the
// "[ Cancel ]" link refuses the authorisation, which redirects with error=access_denied).
import Provider from 'oidc-provider';

function parseArgs(argv) {
  const opts = { port: 0, clientId: 'foot-drop-timeline', redirectUris: [], standalonePatient: '' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => argv[++i];
    if (arg === '--port') opts.port = Number.parseInt(next(), 10);
    else if (arg === '--client-id') opts.clientId = next();
    else if (arg === '--redirect-uri') opts.redirectUris.push(next());
    else if (arg === '--standalone-patient') opts.standalonePatient = next();
    else {
      process.stderr.write(`auth-server: unknown argument ${arg}\n`);
      process.exit(2);
    }
  }
  if (!opts.redirectUris.length) {
    process.stderr.write('auth-server: --redirect-uri is required\n');
    process.exit(2);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const SMART_SCOPES = ['openid', 'fhirUser', 'profile', 'launch', 'launch/patient', 'patient/*.read', 'patient/*.rs', 'offline_access'];
// authorisation code -> the launch value it was issued for
const launchOfCode = new Map();

function start(port) {
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: opts.clientId,
      token_endpoint_auth_method: 'none',
      redirect_uris: opts.redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    scopes: SMART_SCOPES,
    claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
    extraParams: ['launch', 'aud'],
    pkce: { required: () => false },
    features: { devInteractions: { enabled: true } },
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, fhirUser: `Practitioner/${id}` }),
    }),
    cookies: { keys: ['browser-test-only-cookie-key'] },
    ttl: { AccessToken: 3600, AuthorizationCode: 600, IdToken: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
  });
  provider.proxy = false;
  provider.use(async (ctx, next) => {
    await next();
    // The authorisation endpoint (and its resume after sign-in/consent) redirects with ?code=:
    // remember which launch that code belongs to.
    const location = ctx.response.get('Location');
    if (location && location.includes('code=') && ctx.oidc?.params) {
      const code = new URL(location).searchParams.get('code');
      const scopes = String(ctx.oidc.params.scope ?? '').split(' ');
      let launch = String(ctx.oidc.params.launch ?? '');
      if (!launch && scopes.includes('launch/patient') && opts.standalonePatient) {
        launch = `patient:${opts.standalonePatient}`;
      }
      if (code) launchOfCode.set(code, launch);
    }
    if (ctx.path === '/token' && ctx.status === 200 && ctx.body?.access_token) {
      const launch = launchOfCode.get(ctx.oidc?.params?.code) ?? '';
      if (launch.startsWith('patient:')) {
        ctx.body = { ...ctx.body, patient: launch.slice('patient:'.length), need_patient_banner: true };
      }
    }
  });
  return { provider, issuer };
}

// Listen first on an ephemeral port, then build the provider for that issuer.
import http from 'node:http';

const server = http.createServer();
server.listen(opts.port, '127.0.0.1', () => {
  const { port } = server.address();
  const { provider, issuer } = start(port);
  server.on('request', provider.callback());
  process.stdout.write(JSON.stringify({
    issuer,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
  }) + '\n');
});
