#!/usr/bin/env node
// Interop test: two real @synckit-js/sdk 0.1.1 clients against the synckit server,
// first both on one server, then each on its own server of a two-instance fleet
// sharing one Redis.
//
//   node tests/interop/run.mjs            (from the repo root, after `cargo build`)
//
// Env:
//   SYNCKIT_BIN      server binary (default: <repo>/target/debug/synckit)
//   SYNCKIT_URL      ws://… of an already running server: the single-server part
//                    uses it instead of spawning one (auth must be disabled there)
//   REDIS_URL        Redis for the two-server part (required: it fails without;
//                    a fresh channel prefix keeps it apart from anything else)
//   INTEROP_VERBOSE  1 = stream SDK logs and wire frames of both clients
//   INTEROP_NO_INSTALL 1 = never run `npm ci` when node_modules is missing
//   INTEROP_CLIENT_ID_PREFIX  probe only (default "client"): e.g. "user" makes the
//                    SDK clientIds sort above "server", which diverges unless the
//                    server's broadcast clock max exceeds every client's counter
//
// Steps: pick a free port; spawn `SYNCKIT_BIN serve` with HOST/PORT and
// SYNCKIT_AUTH_REQUIRED=false (memory storage); poll /health/live; run two
// sdk-client.mjs workers in parallel on one fresh document, each writing its own
// fields plus the shared field `shared`; check both saw every field, that no
// server `error`/text frame/reconnect happened, and that both final states are
// deep-equal (LWW convergence of `shared`); stop the server with SIGTERM. Then the
// same with alice on server A and bob on server B (REDIS_URL, own channel prefix),
// starting the writes once both servers subscribe the document's Redis channel.
// The last line printed is `interop: N passed, N failed`; exit 0 iff 0 failed.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const TOTAL_BUDGET_MS = 55_000; // the whole run stays under 60 s
const HEALTH_TIMEOUT_MS = 20_000;
const WORKER_TIMEOUT_MS = 20_000; // internal timeout of each client
const WORKER_KILL_MS = WORKER_TIMEOUT_MS + 5_000; // hard kill if it hangs anyway
const STOP_TIMEOUT_MS = 5_000;

const t0 = Date.now();
const verbose = process.env.INTEROP_VERBOSE === '1';
const children = new Set();
const results = []; // {name, ok, detail}
const servers = []; // {proc, log}

const log = (msg) => console.log(`[interop +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function check(name, ok, detail = '') {
  results.push({ name, ok, detail });
  console.log(`${ok ? 'ok' : 'not ok'} - ${name}${detail ? `\n    ${detail.split('\n').join('\n    ')}` : ''}`);
}

const EXPECTED_CHECKS = 6;
let summarised = false;
function finish(extraFailure) {
  if (summarised) return;
  summarised = true;
  if (extraFailure) console.log(`not ok - ${extraFailure}`);
  const passed = results.filter((r) => r.ok).length;
  // Checks that never ran because of an early failure count as failed.
  const failed = Math.max(results.length - passed, 0) + Math.max(EXPECTED_CHECKS - results.length, 0);
  console.log(`interop: ${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

function killAll(signal = 'SIGKILL') {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) { try { c.kill(signal); } catch { /* gone */ } }
}

const watchdog = setTimeout(() => {
  console.log(`not ok - whole run exceeded ${TOTAL_BUDGET_MS} ms`);
  dumpServerLog();
  killAll();
  finish();
  process.exit(1);
}, TOTAL_BUDGET_MS);
watchdog.unref();
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { killAll(); finish(`interrupted by ${sig}`); process.exit(1); });

function dumpServerLog(lines = 60) {
  for (const { log: file } of servers) {
    if (!existsSync(file)) continue;
    const text = readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    console.log(`--- last ${lines} lines of server log (${file}) ---\n${text}\n--- end of server log ---`);
  }
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function ensureDeps() {
  if (existsSync(path.join(HERE, 'node_modules', '@synckit-js', 'sdk', 'package.json'))) return;
  if (process.env.INTEROP_NO_INSTALL === '1') throw new Error(`missing ${HERE}/node_modules: run \`npm ci\` in tests/interop`);
  log('node_modules missing: running `npm ci` in tests/interop');
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: HERE, stdio: 'inherit', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`npm ci failed (status ${r.status}, ${r.error?.message ?? r.signal ?? ''})`);
}

// `extraEnv` adds to a memory-only, single-instance, auth-free environment
// (whatever the caller's environment says); e.g. REDIS_URL for a fleet.
async function startServer(extraEnv = {}) {
  const bin = path.resolve(REPO, process.env.SYNCKIT_BIN ?? path.join('target', 'debug', 'synckit'));
  if (!existsSync(bin)) throw new Error(`server binary not found: ${bin} (build it with \`cargo build\` or set SYNCKIT_BIN)`);
  const port = await freePort();
  const env = { ...process.env, HOST: '127.0.0.1', PORT: String(port), SYNCKIT_AUTH_REQUIRED: 'false', SYNCKIT_ADMIN_LISTEN: 'off' };
  for (const k of ['DATABASE_URL', 'REDIS_URL', 'REDIS_CHANNEL_PREFIX', 'SYNCKIT_SERVER_URL', 'ASPNETCORE_URLS']) delete env[k];
  Object.assign(env, extraEnv);
  env.RUST_LOG ??= 'info';
  const serverLog = path.join(mkdtempSync(path.join(os.tmpdir(), 'synckit-interop-')), 'server.log');
  const fd = openSync(serverLog, 'a');
  log(`starting ${bin} serve on 127.0.0.1:${port} (log: ${serverLog})`);
  const server = spawn(bin, ['serve'], { cwd: REPO, env, stdio: ['ignore', fd, fd] });
  servers.push({ proc: server, log: serverLog });
  children.add(server);
  server.exitPromise = new Promise((r) => server.on('exit', (code, signal) => r({ code, signal })));
  server.on('error', (e) => log(`server spawn error: ${e.message}`));

  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (server.exitCode !== null || server.signalCode !== null) {
      throw new Error(`server exited before becoming healthy (code ${server.exitCode}, signal ${server.signalCode})`);
    }
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health/live`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) { log(`server healthy after ${Date.now() - t0} ms`); return `ws://127.0.0.1:${port}/ws`; }
      last = `HTTP ${res.status}`;
    } catch (e) {
      last = e.cause?.code ?? e.message;
    }
    await sleep(100);
  }
  throw new Error(`GET /health/live did not answer 200 within ${HEALTH_TIMEOUT_MS} ms (last: ${last})`);
}

async function stopServer(server) {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  server.kill('SIGTERM');
  let timer;
  const timeout = new Promise((r) => { timer = setTimeout(() => r(null), STOP_TIMEOUT_MS); });
  const r = await Promise.race([server.exitPromise, timeout]);
  clearTimeout(timer);
  if (!r) {
    log(`server did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM: SIGKILL`);
    server.kill('SIGKILL');
    await server.exitPromise;
  } else if (r.code !== 0) {
    log(`warning: server exited with code ${r.code} signal ${r.signal} after SIGTERM (graceful shutdown should exit 0)`);
  } else {
    log('server stopped cleanly (exit 0)');
  }
}

// Start barrier: every worker reports `ready` once subscribed; `go` is sent to
// all of them together (SDK 0.1.1 never sees writes made before it subscribed),
// after `beforeGo` resolves.
function makeBarrier(count, beforeGo = async () => {}) {
  const waiting = [];
  return (child) => {
    child.on('message', async (m) => {
      if (m?.type !== 'ready') return;
      waiting.push(child);
      if (waiting.length === count) {
        await beforeGo();
        log(`all ${count} clients subscribed: go`);
        for (const c of waiting) if (c.connected) c.send({ type: 'go' });
      }
    });
  };
}

// `PUBSUB NUMSUB channel` over a bare RESP connection (no Redis client package).
function redisNumsub(redisUrl, channel) {
  const u = new URL(redisUrl);
  const args = ['PUBSUB', 'NUMSUB', channel];
  const cmd = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port || 6379), u.hostname, () => sock.write(cmd));
    let buf = '';
    sock.setTimeout(2000, () => { sock.destroy(); reject(new Error('Redis did not answer')); });
    sock.on('error', reject);
    sock.on('data', (d) => {
      buf += d;
      const m = buf.match(/:(\d+)\r\n$/);
      if (m) { sock.end(); resolve(Number(m[1])); }
    });
  });
}

async function waitNumsub(redisUrl, channel, n, ms = 5000) {
  const deadline = Date.now() + ms;
  let got = -1;
  while (Date.now() < deadline) {
    got = await redisNumsub(redisUrl, channel);
    if (got >= n) return;
    await sleep(20);
  }
  throw new Error(`${channel}: ${got} Redis subscribers after ${ms} ms, expected ${n}`);
}

function runWorker(url, documentId, name, writes, expect, expectOneOf, barrier) {
  return new Promise((resolve) => {
    const argv = [path.join(HERE, 'sdk-client.mjs'), '--url', url, '--doc', documentId, '--name', name,
      '--writes', JSON.stringify(writes), '--expect', JSON.stringify(expect),
      '--expect-one-of', JSON.stringify(expectOneOf), '--timeout', String(WORKER_TIMEOUT_MS)];
    const child = spawn(process.execPath, argv, { cwd: HERE, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    children.add(child);
    barrier(child);
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; if (verbose) process.stderr.write(d); });
    const killer = setTimeout(() => child.kill('SIGKILL'), WORKER_KILL_MS);
    child.on('exit', (code, signal) => {
      clearTimeout(killer);
      const line = out.trim().split('\n').filter(Boolean).pop();
      let result = null;
      try { result = JSON.parse(line); } catch { /* not JSON */ }
      resolve({ name, code, signal, result, stdout: out, stderr: err });
    });
  });
}

function summariseWorker(w) {
  const r = w.result;
  if (!r) return `no JSON result (exit ${w.code}, signal ${w.signal})\n${w.stdout.slice(-2000)}\n${w.stderr.slice(-4000)}`;
  if (!r.ok) return `${r.error}\n${w.stderr.trim().split('\n').slice(-50).join('\n')}`;
  return null;
}

async function main() {
  ensureDeps();
  let url = process.env.SYNCKIT_URL;
  if (url) log(`SYNCKIT_URL set: using ${url}, not spawning a server`);
  else url = await startServer();
  await scenario('', [url, url]);
  for (const { proc } of servers.splice(0)) await stopServer(proc);

  // Two servers, one Redis: alice on A, bob on B.
  const redisUrl = process.env.REDIS_URL;
  if (!redisUrl) throw new Error('REDIS_URL is not set: the two-server part needs Redis (e.g. REDIS_URL=redis://127.0.0.1:6379)');
  const prefix = `synckit-interop-${Date.now()}-${Math.random().toString(36).slice(2, 8)}:`;
  const fleetEnv = { REDIS_URL: redisUrl, REDIS_CHANNEL_PREFIX: prefix };
  const urls = [await startServer(fleetEnv), await startServer(fleetEnv)];
  await scenario('[two servers] ', urls, (doc) => waitNumsub(redisUrl, `${prefix}delta:${doc}`, 2));
}

// Two SDK clients (alice on urls[0], bob on urls[1]) on one fresh document.
async function scenario(label, urls, beforeGo) {
  const documentId = `interop-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const clients = ['alice', 'bob'];
  // Each client: its own fields (several JSON types), the shared field written
  // twice by everyone (concurrent, LWW decides), and a final done_<name> marker.
  const writesOf = (n) => [
    ['shared', `${n}-1`],
    [`${n}_title`, `hello from ${n} – ünïcødé ✓`],
    [`${n}_count`, n.length * 1000 + 0.5],
    ['shared', `${n}-2`],
    [`${n}_obj`, { tags: [n, 'x'], nested: { ok: true, none: null } }],
    [`${n}_null`, null],
    [`done_${n}`, true],
  ];
  const expect = {};
  for (const n of clients) for (const [f, v] of writesOf(n)) if (f !== 'shared') expect[f] = v;
  // After both clients are done, `shared` holds some client's LAST write.
  const expectOneOf = { shared: clients.map((n) => `${n}-2`) };

  log(`${label}document ${documentId}: ${clients.length} SDK clients writing in parallel`);
  const barrier = makeBarrier(clients.length, beforeGo && (() => beforeGo(documentId)));
  const workers = await Promise.all(clients.map((n, i) => runWorker(urls[i], documentId, n, writesOf(n), expect, expectOneOf, barrier)));

  for (const w of workers) {
    const problem = summariseWorker(w);
    if (problem) { check(`${label}${w.name}: SDK client writes are acked and it receives every field`, false, problem); continue; }
    const s = w.result.stats;
    const issues = [];
    if (s.connections !== 1 || s.closes.length) issues.push(`connection dropped/reconnected: ${s.connections} connections, closes ${JSON.stringify(s.closes)}`);
    if (s.textFrames) issues.push(`${s.textFrames} text frame(s) received: SDK 0.1.1 only reads binary frames`);
    if (s.badFrames) issues.push(`${s.badFrames} undecodable binary frame(s)`);
    if (s.serverErrors.length) issues.push(`server sent error(s): ${JSON.stringify(s.serverErrors)}`);
    if ((s.sent.ping ?? 0) > 1 && (s.received.pong ?? 0) < (s.sent.ping ?? 0) - 1) issues.push(`pings ${s.sent.ping}, pongs ${s.received.pong ?? 0}`);
    if (s.sdkErrors.length) issues.push(`SDK logged errors: ${s.sdkErrors.join(' | ')}`);
    check(`${label}${w.name}: SDK client writes are acked and it receives every field`, issues.length === 0,
      issues.join('\n') || `${Object.keys(w.result.state).length} fields in ${w.result.elapsedMs} ms; frames sent ${JSON.stringify(s.sent)} received ${JSON.stringify(s.received)}`);
  }

  const [a, b] = workers.map((w) => w.result);
  if (a?.ok && b?.ok) {
    const same = isDeepStrictEqual(a.state, b.state);
    check(`${label}both clients converge to the same document (shared field LWW)`, same,
      same ? `shared = ${JSON.stringify(a.state.shared)}` : `alice: ${JSON.stringify(a.state)}\nbob:   ${JSON.stringify(b.state)}`);
  } else {
    check(`${label}both clients converge to the same document (shared field LWW)`, false, 'skipped: a client failed');
  }
}

try {
  await main();
} catch (e) {
  console.log(`not ok - setup: ${e.message}`);
  dumpServerLog();
}
if (results.some((r) => !r.ok)) dumpServerLog();
for (const { proc } of servers) {
  try { await stopServer(proc); } catch (e) { log(`stopping server: ${e.message}`); }
}
killAll();
clearTimeout(watchdog);
finish();
process.exit(process.exitCode);
