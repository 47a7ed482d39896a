// Harness of slowlane's functional tests: starts the real daemon (SLOWLANED)
// and the mock upstream (MOCK_UPSTREAM) on ephemeral ports in a scratch
// directory under SLOWLANE_TEST_TMP, and offers small HTTP helpers.
//
// Every process started here is SIGKILLed when the test file ends, whether its
// tests passed or not (node:test `after` hook, plus process 'exit' and signal
// handlers as a last resort). The scratch directory of a test file is removed
// when all its tests passed and kept (with the daemon logs) otherwise.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';

export const SLOWLANED = process.env.SLOWLANED;
export const MOCK_UPSTREAM = process.env.MOCK_UPSTREAM;
const TMP_ROOT = process.env.SLOWLANE_TEST_TMP || path.join(os.tmpdir(), 'slowlane-test');

export const ID_RE = /^[A-Za-z0-9_-]{21}$/;
export const ISO_MS_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
export const FINAL = ['Success', 'Failed'];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function requireBinary(name, value) {
  if (!value)
    throw new Error(`${name} is not set: run the tests with 'make check' or set ${name}=/path/to/binary`);
  if (!fs.existsSync(value))
    throw new Error(`${name}=${value} does not exist: run 'make' first`);
  return value;
}

// Bounds on how long the daemon may take are multiplied by this: 1 normally,
// 3 under ASan+UBSan (scripts/test), 8 under valgrind (tests/valgrind.sh).
export const TIME_SCALE = Number(process.env.SLOWLANE_TEST_TIME_SCALE) || 1;

// ---------------------------------------------------------------- cleanup

const children = new Set();
const daemonLogs = new Set(); // scanned for sanitizer reports at the end
let fileTmp = null;

function killAll() {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
  children.clear();
}

function waitExit(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null)
    return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode });
  return new Promise((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })));
}

// A sanitizer report in any daemon's log fails the test file, even when the
// test itself passed (a daemon that was killed, or that reported and went on).
const SANITIZER_RE = /==\d+==ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |ERROR: (Address|Leak|UndefinedBehavior)Sanitizer/;

after(async () => {
  const procs = [...children];
  killAll();
  await Promise.all(procs.map(waitExit));
  for (const f of daemonLogs) {
    let text = '';
    try { text = fs.readFileSync(f, 'utf8'); } catch { continue; }
    const m = SANITIZER_RE.exec(text);
    if (m)
      throw new Error(`sanitizer report in ${f}:\n${text.slice(Math.max(0, m.index - 200), m.index + 3000)}`);
  }
});

process.on('exit', (code) => {
  killAll();
  if (!fileTmp) return;
  if (code === 0 && !process.exitCode && !process.env.SLOWLANE_KEEP_TMP) {
    try { fs.rmSync(fileTmp, { recursive: true, force: true }); } catch { /* keep it */ }
  } else {
    process.stderr.write(`# logs and data kept in ${fileTmp}\n`);
  }
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { killAll(); process.exit(128 + os.constants.signals[sig]); });
}

function track(proc) {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

// spawn() that resolves once the process runs. A binary being relinked by a
// concurrent `make` is briefly missing or busy: retry that for a few seconds.
async function spawnTracked(bin, args, options) {
  const deadline = Date.now() + 5000;
  for (;;) {
    const proc = spawn(bin, args, { ...options, detached: false });
    const err = await new Promise((resolve) => {
      proc.once('spawn', () => resolve(null));
      proc.once('error', resolve);
    });
    if (!err) return track(proc);
    if (!['ETXTBSY', 'EACCES', 'ENOENT'].includes(err.code) || Date.now() > deadline)
      throw new Error(`cannot run ${bin}: ${err.message}`);
    await sleep(200);
  }
}

// A fresh scratch directory for this test file (one per process), then one
// subdirectory per daemon or mock.
export function tmpDir(prefix = 'd') {
  if (!fileTmp) {
    fs.mkdirSync(TMP_ROOT, { recursive: true });
    const base = path.basename(process.argv[1] || 'test', '.mjs');
    fileTmp = fs.mkdtempSync(path.join(TMP_ROOT, `${base}-`));
  }
  return fs.mkdtempSync(path.join(fileTmp, `${prefix}-`));
}

async function waitPortFile(file, proc, logFile, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`${what} exited (code ${proc.exitCode}, signal ${proc.signalCode}) ` +
        `before listening; log:\n${readTail(logFile)}`);
    try {
      const s = fs.readFileSync(file, 'utf8');
      if (/^\d+\n$/.test(s) && Number(s) > 0)
        return Number(s);
    } catch { /* not there yet */ }
    if (Date.now() > deadline)
      throw new Error(`${what} wrote no port file within ${timeoutMs} ms; log:\n${readTail(logFile)}`);
    await sleep(25);
  }
}

function readTail(file, bytes = 4000) {
  try {
    const s = fs.readFileSync(file, 'utf8');
    return s.length > bytes ? '...' + s.slice(-bytes) : s;
  } catch {
    return '(no log)';
  }
}

// ---------------------------------------------------------------- HTTP

// One HTTP exchange. body: object (sent as JSON), string/Buffer (sent raw) or
// undefined. Returns {status, headers, text, json} (json null unless the
// answer parses). Network errors propagate.
export async function request(method, url, { body, key, headers = {}, timeoutMs = 20000 } = {}) {
  const h = { ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  let payload;
  if (body !== undefined) {
    payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type'))
      h['content-type'] = 'application/json';
  }
  let res, text;
  try {
    res = await fetch(url, { method, headers: h, body: payload, signal: AbortSignal.timeout(timeoutMs) });
    text = await res.text();
  } catch (e) {
    // undici says only "fetch failed"; the cause (ECONNREFUSED, "other
    // side closed", ...) is what a failing test needs to show.
    const c = e.cause;
    if (c) e.message = `${e.message} (${method} ${url}: ${c.code || c.name || ''} ${c.message || ''})`;
    throw e;
  }
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

export function submit(base, p, body, key) {
  return request('POST', base + p, { body, key });
}

export function get(base, id, key) {
  return request('GET', `${base}/v1/generation/${encodeURIComponent(id)}`, { key });
}

export async function healthz(base) {
  const r = await request('GET', base + '/healthz');
  if (r.status !== 200) throw new Error(`GET /healthz: ${r.status} ${r.text}`);
  return r.json;
}

export function chatBody(content, extra = {}) {
  return { model: 'mock-model', messages: [{ role: 'user', content }], ...extra };
}

export function completionBody(prompt, extra = {}) {
  return { model: 'mock-model', prompt, ...extra };
}

// Submits and insists on a 200 with an id; returns the id.
export async function submitOk(base, p, body, key) {
  const r = await submit(base, p, body, key);
  if (r.status !== 200 || !r.json || typeof r.json.id !== 'string')
    throw new Error(`POST ${p} answered ${r.status}: ${r.text}`);
  return r.json.id;
}

// Polls one generation until its state is in `until`. 404, 5xx and network
// errors count as "try again" (as clients are told to). Returns the object.
export async function poll(base, id, { until = FINAL, timeoutMs = 30000, key, intervalMs = 75 } = {}) {
  const baseOf = typeof base === 'function' ? base : () => base;
  const deadline = Date.now() + timeoutMs;
  let last = '(nothing yet)';
  for (;;) {
    try {
      const r = await get(baseOf(), id, key);
      if (r.status === 200 && r.json) {
        if (until.includes(r.json.state)) return r.json;
        last = `${r.json.state}: ${r.json.stateMessage}`;
      } else {
        last = `HTTP ${r.status} ${r.text.slice(0, 200)}`;
        if (r.status !== 404 && r.status < 500)
          throw new Error(`GET /v1/generation/${id}: ${last}`);
      }
    } catch (e) {
      if (e.message.startsWith('GET /v1/generation')) throw e;
      last = `network error: ${e.cause?.code || e.message}`;
    }
    if (Date.now() > deadline)
      throw new Error(`generation ${id} not in [${until}] after ${timeoutMs} ms; last: ${last}`);
    await sleep(intervalMs);
  }
}

// Polls many ids (at most `parallel` GETs at a time) until every one is in a
// state of `until`. base may be a function (the daemon may move to another
// port when restarted). Returns Map id -> generation object.
export async function waitAll(base, ids, { until = FINAL, timeoutMs = 60000, key, parallel = 16, intervalMs = 100 } = {}) {
  const baseOf = typeof base === 'function' ? base : () => base;
  const done = new Map();
  let pending = [...new Set(ids)];
  const deadline = Date.now() + timeoutMs;
  const lastSeen = new Map();
  while (pending.length) {
    const still = [];
    let i = 0;
    const worker = async () => {
      while (i < pending.length) {
        const id = pending[i++];
        try {
          const r = await get(baseOf(), id, key);
          if (r.status === 200 && r.json && until.includes(r.json.state)) {
            done.set(id, r.json);
            continue;
          }
          lastSeen.set(id, r.status === 200 && r.json ? r.json.state : `HTTP ${r.status}`);
        } catch (e) {
          lastSeen.set(id, `network error: ${e.cause?.code || e.message}`);
        }
        still.push(id);
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, pending.length) }, worker));
    pending = still;
    if (!pending.length) break;
    if (Date.now() > deadline) {
      const sample = pending.slice(0, 5).map((id) => `${id}=${lastSeen.get(id)}`).join(', ');
      throw new Error(`${pending.length} of ${ids.length} generations not in [${until}] after ` +
        `${timeoutMs} ms (e.g. ${sample})`);
    }
    await sleep(intervalMs);
  }
  return done;
}

// Runs fn(item, index) over items with at most `limit` running at once.
export async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

// Checks the OpenAI error shape; returns the error object.
export function errorOf(r) {
  if (!r.json || typeof r.json !== 'object' || !r.json.error || typeof r.json.error !== 'object')
    throw new Error(`expected an OpenAI error object, got HTTP ${r.status}: ${r.text.slice(0, 300)}`);
  return r.json.error;
}

// ---------------------------------------------------------------- mock upstream

// opts: {latency, jitter, failRate, failStatus, retryAfter, hangRate,
// invalidJsonRate, seed, args: [...]}
export async function startMock(opts = {}) {
  const bin = requireBinary('MOCK_UPSTREAM', MOCK_UPSTREAM);
  const dir = tmpDir('mock');
  const portFile = path.join(dir, 'port');
  const logFile = path.join(dir, 'mock.log');
  const args = ['--listen', '127.0.0.1:0', '--port-file', portFile];
  const flag = (name, v) => { if (v !== undefined && v !== null) args.push(name, String(v)); };
  flag('--latency', opts.latency);
  flag('--jitter', opts.jitter);
  flag('--fail-rate', opts.failRate);
  flag('--fail-status', opts.failStatus);
  flag('--retry-after', opts.retryAfter);
  flag('--hang-rate', opts.hangRate);
  flag('--invalid-json-rate', opts.invalidJsonRate);
  flag('--seed', opts.seed);
  args.push(...(opts.args || []));
  const fd = fs.openSync(logFile, 'a');
  let proc;
  try {
    proc = await spawnTracked(bin, args, { stdio: ['ignore', fd, fd] });
  } finally {
    fs.closeSync(fd);
  }
  const port = await waitPortFile(portFile, proc, logFile, 'mock-upstream', 10000);
  const origin = `http://127.0.0.1:${port}`;
  return {
    port,
    origin,
    url: `${origin}/v1`,
    proc,
    logFile,
    async stats() {
      const r = await request('GET', origin + '/_mock/stats');
      if (r.status !== 200 || !r.json) throw new Error(`mock stats: ${r.status} ${r.text}`);
      return r.json;
    },
    async reset() {
      const r = await request('POST', origin + '/_mock/reset');
      if (r.status >= 300) throw new Error(`mock reset: ${r.status} ${r.text}`);
    },
    async stop() {
      try { proc.kill('SIGKILL'); } catch { /* gone */ }
      await waitExit(proc);
    },
    log: () => readTail(logFile, 1 << 20),
  };
}

// ---------------------------------------------------------------- daemon

// opts: {upstream (URL), args: [...], env: {...}, dataDir, waitHealthy (default true),
//        bin (another build of the daemon)}
export async function startDaemon(opts = {}) {
  const bin = opts.bin || requireBinary('SLOWLANED', SLOWLANED);
  const dir = tmpDir('daemon');
  const dataDir = opts.dataDir || path.join(dir, 'data');
  const portFile = path.join(dir, 'port');
  const logFile = path.join(dir, 'slowlaned.log');
  daemonLogs.add(logFile);
  const d = {
    dataDir,
    logFile,
    dir,
    port: 0,
    base: '',
    proc: null,
    starts: 0,
    log: () => readTail(logFile, 1 << 20),
    async kill9() {
      const p = d.proc;
      try { p.kill('SIGKILL'); } catch { /* gone */ }
      return waitExit(p);
    },
    // SIGTERM (or sig); resolves with the exit code (null if it died of a
    // signal), and SIGKILLs it if it has not exited after timeoutMs.
    async term(timeoutMs = 20000, sig = 'SIGTERM') {
      const p = d.proc;
      timeoutMs *= TIME_SCALE;
      const t0 = Date.now();
      p.kill(sig);
      const timer = setTimeout(() => { try { p.kill('SIGKILL'); } catch { /* gone */ } }, timeoutMs);
      const { code, signal } = await waitExit(p);
      clearTimeout(timer);
      d.exitMs = Date.now() - t0;
      d.exitSignal = signal;
      return code;
    },
    async restart(more = {}) {
      if (d.proc && d.proc.exitCode === null && d.proc.signalCode === null)
        await d.kill9();
      return launch(more);
    },
  };

  async function launch(more = {}) {
    try { fs.unlinkSync(portFile); } catch { /* none */ }
    const args = ['--listen', '127.0.0.1:0', '--port-file', portFile, '--data-dir', dataDir];
    if (opts.upstream) args.push('--upstream', opts.upstream);
    args.push(...(opts.args || []), ...(more.args || []));
    // The daemon's secrets come from the test only, never from the caller's shell.
    const env = { ...process.env };
    delete env.SLOWLANE_UPSTREAM_KEY;
    delete env.SLOWLANE_API_KEYS;
    Object.assign(env, opts.env || {}, more.env || {});
    const fd = fs.openSync(logFile, 'a');
    fs.writeSync(fd, `---- harness: start #${++d.starts}: ${bin} ${args.join(' ')}\n`);
    // SLOWLANE_TEST_WRAPPER (e.g. "valgrind --log-file=..."): the daemon runs
    // under it (make check-valgrind).
    const wrap = (process.env.SLOWLANE_TEST_WRAPPER || '').split(' ').filter(Boolean);
    let proc;
    try {
      proc = await spawnTracked(wrap.length ? wrap[0] : bin,
        wrap.length ? [...wrap.slice(1), bin, ...args] : args, { stdio: ['ignore', fd, fd], env });
    } finally {
      fs.closeSync(fd);
    }
    d.proc = proc;
    d.port = await waitPortFile(portFile, proc, logFile, 'slowlaned', 20000);
    d.base = `http://127.0.0.1:${d.port}`;
    if (opts.waitHealthy !== false) {
      const deadline = Date.now() + 20000;
      for (;;) {
        try {
          const r = await request('GET', d.base + '/healthz', { timeoutMs: 5000 });
          if (r.status === 200) break;
        } catch { /* not yet */ }
        if (proc.exitCode !== null || proc.signalCode !== null)
          throw new Error(`slowlaned exited before /healthz answered; log:\n${readTail(logFile)}`);
        if (Date.now() > deadline)
          throw new Error(`slowlaned: /healthz not 200 within 20 s; log:\n${readTail(logFile)}`);
        await sleep(50);
      }
    }
    return d;
  }

  return launch();
}
