#!/usr/bin/env node
// One real @synckit-js/sdk 0.1.1 client, driven by run.mjs (or by hand).
//
// It connects to a SyncKit server, opens one document, writes its fields one
// by one (each write waits for the server's `ack`), then waits until the
// document holds every expected field from ALL clients and has been quiet for
// a short settle period. It prints exactly one JSON line on stdout:
//   {"ok":true,"name":…,"clientId":…,"documentId":…,"state":{…},"stats":{…}}
// and exits 0; on failure it prints {"ok":false,"error":…,…} plus a diagnostic
// (recent SDK log lines and wire frames) on stderr and exits 1.
//
// Usage:
//   node sdk-client.mjs --url ws://127.0.0.1:8080/ws --doc DOC --name alice \
//     --writes '[["alice_title","hi"],["shared","alice"],["done_alice",true]]' \
//     --expect '{"alice_title":"hi","done_alice":true,"done_bob":true}' \
//     --expect-one-of '{"shared":["alice","bob"]}' [--timeout 15000] [--settle 500]
//
// --writes is an ordered array of [field, value] pairs (a field may repeat).
// --expect maps field -> exact value; --expect-one-of maps field -> candidates.
// INTEROP_VERBOSE=1 streams the SDK's (very chatty) console output to stderr.
//
// SDK 0.1.1 facts this script relies on (read from its dist code):
// - Both entry points import `react` unconditionally, so react is installed.
// - It uses the global `WebSocket` and needs `binaryType = "arraybuffer"`;
//   Node 20 has no global WebSocket, so the `ws` class is installed globally.
// - `sk.document(id)` is synchronous and starts `doc.init()` in the background
//   (WASM doc, register, send `subscribe`, wait <=10 s for `sync_response`).
//   Calling `doc.init()` again concurrently would create a second WASM doc and
//   send a second `subscribe`, so we wait on the sync state instead.
// - `doc.set()` resolves only after the server's `ack {messageId}` (polled
//   every 100 ms, 5 s timeout -> throws "ACK timeout" and parks the op in the
//   offline queue, which is replayed only after a reconnect).
// - Remote values are applied with LWW timestamp max(values(clock)) and writer
//   "server"; ties go to the greater writer id, so our clientId must sort
//   below "server" (it starts with "client-").

import { parseArgs, isDeepStrictEqual } from 'node:util';
import WS from 'ws';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    doc: { type: 'string' },
    name: { type: 'string' },
    writes: { type: 'string', default: '[]' },
    expect: { type: 'string', default: '{}' },
    'expect-one-of': { type: 'string', default: '{}' },
    timeout: { type: 'string', default: '15000' },
    settle: { type: 'string', default: '500' },
    heartbeat: { type: 'string', default: '500' },
  },
});

const startedAt = Date.now();
const name = args.name ?? 'client';
const url = args.url;
const documentId = args.doc;
const timeoutMs = Number(args.timeout);
const settleMs = Number(args.settle);
const heartbeatMs = Number(args.heartbeat);
const realStdoutWrite = process.stdout.write.bind(process.stdout);

function die(msg) {
  realStdoutWrite(JSON.stringify({ ok: false, name, error: msg }) + '\n');
  process.exit(1);
}
if (!url || !documentId) die('usage: --url ws://host:port/ws --doc DOC --name NAME [--writes JSON] [--expect JSON]');

let writes, expect, expectOneOf;
try {
  writes = JSON.parse(args.writes);
  expect = JSON.parse(args.expect);
  expectOneOf = JSON.parse(args['expect-one-of']);
} catch (e) {
  die(`bad JSON argument: ${e.message}`);
}

// ---------------------------------------------------------------------------
// Keep stdout for the single result line: the SDK console.logs every step.
const verbose = process.env.INTEROP_VERBOSE === '1';
const LOG_KEEP = 200;
const sdkLog = [];
function remember(line) {
  sdkLog.push(line);
  if (sdkLog.length > LOG_KEEP) sdkLog.shift();
  if (verbose) process.stderr.write(`[${name}] ${line}\n`);
}
const fmt = (a) => a.map((x) => (typeof x === 'string' ? x : safeJson(x))).join(' ');
function safeJson(x) {
  if (x instanceof Error) return `${x.name}: ${x.message}`;
  try { return JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v)); } catch { return String(x); }
}
const sdkErrors = [];
for (const level of ['log', 'info', 'debug', 'warn', 'error']) {
  console[level] = (...a) => {
    const line = `${level}: ${fmt(a)}`;
    remember(line);
    if (level === 'error') sdkErrors.push(line);
  };
}

// ---------------------------------------------------------------------------
// Wire tap: the SDK gets the real `ws` class, subclassed only to record frames.
const TYPE_NAMES = {
  0x01: 'auth', 0x02: 'auth_success', 0x03: 'auth_error', 0x10: 'subscribe', 0x11: 'unsubscribe',
  0x12: 'sync_request', 0x13: 'sync_response', 0x20: 'delta', 0x21: 'ack', 0x30: 'ping',
  0x31: 'pong', 0xff: 'error',
};
const stats = {
  connections: 0, closes: [], sent: {}, received: {}, textFrames: 0, badFrames: 0, serverErrors: [],
};
const frames = [];
function decode(data) {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
  if (buf.length < 13) return { bad: `short frame (${buf.length} bytes)` };
  const code = buf.readUInt8(0);
  const ts = Number(buf.readBigInt64BE(1));
  const len = buf.readUInt32BE(9);
  if (buf.length < 13 + len) return { bad: `truncated frame (${buf.length} < ${13 + len})` };
  let payload;
  try { payload = JSON.parse(buf.subarray(13, 13 + len).toString('utf8')); } catch { return { bad: 'payload is not JSON' }; }
  return { code, type: TYPE_NAMES[code] ?? `unknown(0x${code.toString(16)})`, ts, payload };
}
function record(dir, msg) {
  frames.push({ dir, at: Date.now() - startedAt, ...msg });
  if (frames.length > LOG_KEEP) frames.shift();
  if (verbose) process.stderr.write(`[${name}] ${dir} ${safeJson(msg)}\n`);
}

class TappedWebSocket extends WS {
  constructor(...a) {
    super(...a);
    stats.connections += 1;
    this.on('message', (data, isBinary) => {
      if (!isBinary) {
        stats.textFrames += 1;
        record('in', { text: String(data) });
        return;
      }
      const m = decode(data);
      if (m.bad) { stats.badFrames += 1; record('in', m); return; }
      stats.received[m.type] = (stats.received[m.type] ?? 0) + 1;
      if (m.type === 'error' || m.type.startsWith('unknown')) stats.serverErrors.push(m.payload);
      record('in', m);
    });
    this.on('close', (code, reason) => stats.closes.push({ code, reason: String(reason), at: Date.now() - startedAt }));
  }
  send(data, ...rest) {
    const m = decode(data);
    if (!m.bad) stats.sent[m.type] = (stats.sent[m.type] ?? 0) + 1;
    record('out', m);
    return super.send(data, ...rest);
  }
}
globalThis.WebSocket = TappedWebSocket;

// ---------------------------------------------------------------------------
const { SyncKit, MemoryStorage } = await import('@synckit-js/sdk');

// Must sort below "server" (see header). INTEROP_CLIENT_ID_PREFIX exists only to probe that.
const clientId = `${process.env.INTEROP_CLIENT_ID_PREFIX ?? "client"}-${name}-${Math.random().toString(36).slice(2, 10)}`;
let sk;
let finished = false;

function fail(error) {
  if (finished) return;
  finished = true;
  const out = { ok: false, name, clientId, documentId, error, state: safeState(), stats, elapsedMs: Date.now() - startedAt };
  realStdoutWrite(JSON.stringify(out) + '\n');
  process.stderr.write(`\n[${name}] FAILED: ${error}\n[${name}] last wire frames:\n`);
  for (const f of frames.filter((x) => x.type !== 'ping' && x.type !== 'pong').slice(-40)) process.stderr.write(`  ${safeJson(f)}\n`);
  process.stderr.write(`[${name}] last SDK log lines:\n`);
  for (const l of sdkLog.slice(-40)) process.stderr.write(`  ${l}\n`);
  process.exit(1);
}
let doc;
function safeState() {
  try { return doc ? doc.get() : null; } catch { return null; }
}

const watchdog = setTimeout(() => {
  fail(`timeout after ${timeoutMs} ms: ${describeMissing(safeState() ?? {}).join('; ') || 'waiting to settle'}` +
    ' (note: SDK 0.1.1 ignores sync_response.state, so it never sees writes broadcast before its subscribe)');
}, timeoutMs);
watchdog.unref();

function describeMissing(state) {
  const problems = [];
  for (const [f, v] of Object.entries(expect)) {
    if (!(f in state)) problems.push(`missing ${f}`);
    else if (!isDeepStrictEqual(state[f], v)) problems.push(`${f}=${safeJson(state[f])}, want ${safeJson(v)}`);
  }
  for (const [f, cands] of Object.entries(expectOneOf)) {
    if (!(f in state)) problems.push(`missing ${f}`);
    else if (!cands.some((c) => isDeepStrictEqual(state[f], c))) problems.push(`${f}=${safeJson(state[f])}, want one of ${safeJson(cands)}`);
  }
  return problems;
}

function waitFor(pred, what, ms) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const tick = () => {
      let v;
      try { v = pred(); } catch (e) { reject(e); return; }
      if (v) resolve(v);
      else if (Date.now() - t0 > ms) reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      else setTimeout(tick, 20);
    };
    tick();
  });
}

try {
  sk = new SyncKit({
    serverUrl: url,
    storage: new MemoryStorage(),
    clientId,
    network: {
      // Small heartbeat so the test also proves ping -> pong works; the SDK
      // reconnects if a pong does not arrive within the timeout.
      heartbeat: { interval: heartbeatMs, timeout: 5000 },
      reconnect: { initialDelay: 200, maxDelay: 1000 },
    },
  });
  await sk.init(); // loads WASM, opens the socket (resolves on open; no auth is sent)
  await waitFor(() => sk.getNetworkStatus()?.connectionState === 'connected', 'WebSocket to open', 5000);

  doc = sk.document(documentId);
  // Wait for the subscribe round trip (sync_response with our documentId).
  await waitFor(() => {
    const s = sk.getSyncState(documentId);
    if (s?.state === 'error') throw new Error(`subscribe failed: ${s.error} (no sync_response for documentId "${documentId}" within 10 s?)`);
    return s?.state === 'synced';
  }, 'sync_response to our subscribe', Math.max(1000, timeoutMs - 1000));

  const subscribedMs = Date.now() - startedAt;

  // Start barrier (run.mjs): SDK 0.1.1 ignores sync_response.state, so a client
  // only ever sees writes broadcast AFTER its subscribe was processed. Tell the
  // driver we are subscribed and wait until every client is, before writing.
  if (process.send && process.connected) {
    const go = new Promise((resolve) => process.on('message', (m) => { if (m?.type === 'go') resolve(); }));
    process.send({ type: 'ready', name });
    await go;
  }
  const goMs = Date.now() - startedAt;

  let lastChange = Date.now();
  let changes = 0;
  doc.subscribe(() => { lastChange = Date.now(); changes += 1; });

  for (const [field, value] of writes) {
    try {
      await doc.set(field, value); // resolves after the server's ack
    } catch (e) {
      throw new Error(`doc.set(${safeJson(field)}) failed: ${e.message}` +
        (/ACK timeout/.test(e.message) ? ' (server sent no ack {messageId} within 5 s)' : ''));
    }
  }
  const writesDoneMs = Date.now() - startedAt;

  // Every expected field present with the right value, and no change for settleMs.
  await waitFor(() => describeMissing(doc.get()).length === 0 && Date.now() - lastChange >= settleMs,
    'all expected fields and a quiet document', timeoutMs);

  const state = doc.get();
  const sync = sk.getSyncState(documentId);
  finished = true;
  realStdoutWrite(JSON.stringify({
    ok: true, name, clientId, documentId, state,
    stats: { ...stats, changes, subscribedMs, goMs, writesDoneMs, pendingOperations: sync?.pendingOperations, syncState: sync?.state,
      queue: sk.getNetworkStatus(), sdkErrors },
    elapsedMs: Date.now() - startedAt,
  }) + '\n');
  try { sk.dispose(); } catch { /* sends unsubscribe, then closes */ }
  setTimeout(() => process.exit(0), 100);
} catch (e) {
  fail(e?.message ?? String(e));
}
