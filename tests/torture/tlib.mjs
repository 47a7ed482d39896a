// Helpers shared by the torture suite (tests/torture/). Builds on the
// functional harness (tests/func/lib.mjs: daemon, mock, HTTP helpers) and adds
// what only torture needs: the profile (short under `make check`, long under
// `make torture`), figures (printed as TAP diagnostics and appended as JSON
// lines to $SLOWLANE_TORTURE_REPORT), raw sockets, RSS, slowlanectl, mounts.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { MOCK_UPSTREAM, SLOWLANED, sleep, tmpDir } from '../func/lib.mjs';

// SLOWLANE_TORTURE=long selects the long profile (make torture).
export const LONG = process.env.SLOWLANE_TORTURE === 'long';
export const PROFILE = LONG ? 'long' : 'short';
export const pick = (short, long) => (LONG ? long : short);

export const SLOWLANECTL = process.env.SLOWLANECTL ||
  (MOCK_UPSTREAM ? path.join(path.dirname(MOCK_UPSTREAM), 'slowlanectl') : '');
export const TORTURE_DIR = path.dirname(new URL(import.meta.url).pathname);
export const IS_ROOT = typeof process.getuid === 'function' && process.getuid() === 0;

// Prints figures (one diagnostic line) and records them for RELIABILITY.md.
export function figures(t, part, obj) {
  const line = Object.entries(obj).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ');
  t.diagnostic(`${part}: ${line}`);
  const file = process.env.SLOWLANE_TORTURE_REPORT;
  if (file)
    fs.appendFileSync(file, JSON.stringify({ part, profile: PROFILE, at: new Date().toISOString(), ...obj }) + '\n');
}

// Runs slowlanectl; returns {status, stdout, stderr}.
export function ctl(dataDir, args, { timeoutMs = 60000 } = {}) {
  const r = spawnSync(SLOWLANECTL, ['--data-dir', dataDir, ...args],
    { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 1 << 28 });
  return { status: r.status, signal: r.signal, stdout: r.stdout || '', stderr: r.stderr || '', error: r.error };
}

// Every generation in a (running or stopped) store, through slowlanectl export.
export function exportAll(dataDir) {
  const r = ctl(dataDir, ['export', '--limit', '0'], { timeoutMs: 120000 });
  if (r.status !== 0) throw new Error(`slowlanectl export: ${r.status} ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

// Starts the daemon binary directly (no harness waiting), for tests that
// expect it to refuse to start. Returns {code, signal, out} after it exits or
// timeoutMs (then it is SIGKILLed and code is null).
export async function runDaemonExpectExit(args, { timeoutMs = 10000, env } = {}) {
  const { spawn } = await import('node:child_process');
  const p = spawn(SLOWLANED, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  p.stdout.on('data', (b) => { out += b; });
  p.stderr.on('data', (b) => { out += b; });
  const timer = setTimeout(() => { try { p.kill('SIGKILL'); } catch { /* gone */ } }, timeoutMs);
  const [code, signal] = await new Promise((r) => p.once('exit', (c, s) => r([c, s])));
  clearTimeout(timer);
  return { code, signal, out, timedOut: signal === 'SIGKILL' };
}

// Resident set size of a process in KiB (VmRSS), or null.
export function rssKiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch { return null; }
}

export function openFds(pid) {
  try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch { return null; }
}

// One raw exchange: connects, writes `chunks` (strings/Buffers, optionally
// spaced by gapMs), then reads until the peer closes or timeoutMs passes.
// Returns {status (first final status code or null), text, closed, error, interim (a 1xx came first)}.
export function rawHttp(port, chunks, { timeoutMs = 5000, gapMs = 0, halfClose = false, stopAtResponse = true } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const bufs = [];
    let done = false;
    let error = null;
    const finish = (closed) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const text = Buffer.concat(bufs).toString('latin1');
      const all = [...text.matchAll(/(?:^|\r\n\r\n)HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
      const final = all.find((c) => c >= 200);
      resolve({ status: final ?? all[0] ?? null, interim: all.length > 0 && all[0] < 200, text, closed, error });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    // A complete final answer ends the exchange (keep-alive would otherwise
    // hold the connection until timeoutMs); 1xx answers do not.
    const complete = () => {
      const text = Buffer.concat(bufs).toString('latin1');
      let start = 0;
      for (;;) {
        const he = text.indexOf('\r\n\r\n', start);
        if (he < 0) return false;
        const head = text.slice(start, he);
        if (/^HTTP\/1\.[01] 1\d\d/.test(head)) { start = he + 4; continue; }
        const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        if (cl) return text.length - (he + 4) >= Number(cl[1]);
        if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) return text.endsWith('\r\n0\r\n\r\n') || text.slice(he + 4).startsWith('0\r\n\r\n');
        return false;
      }
    };
    s.on('data', (b) => { bufs.push(b); if (!stopAtResponse || !complete()) return; finish(false); });
    s.on('end', () => finish(true));
    s.on('close', () => finish(true));
    s.on('error', (e) => { error = e.code || e.message; finish(true); });
    s.on('connect', async () => {
      for (const c of [].concat(chunks)) {
        if (done) return;
        s.write(c);
        if (gapMs) await sleep(gapMs);
      }
      if (halfClose && !done) s.end();
    });
  });
}

// The JSON body of a raw HTTP answer (after the blank line), or null.
export function rawJson(text) {
  const i = text.indexOf('\r\n\r\n');
  if (i < 0) return null;
  let body = text.slice(i + 4);
  if (/transfer-encoding:\s*chunked/i.test(text.slice(0, i))) {
    let out = '';
    for (;;) {
      const nl = body.indexOf('\r\n');
      if (nl < 0) break;
      const n = parseInt(body.slice(0, nl), 16);
      if (!n) break;
      out += body.slice(nl + 2, nl + 2 + n);
      body = body.slice(nl + 2 + n + 2);
    }
    body = out;
  }
  try { return JSON.parse(body); } catch { return null; }
}

// Mounts a tmpfs of `size` on dir (root only). Returns an unmount function.
export function mountTmpfs(dir, size) {
  fs.mkdirSync(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mount tmpfs on ${dir}: ${r.stderr}`);
  let mounted = true;
  const umount = () => {
    if (!mounted) return;
    const u = spawnSync('umount', ['-l', dir], { encoding: 'utf8' });
    if (u.status === 0) mounted = false;
  };
  process.once('exit', umount);
  return umount;
}

// Unique, never-repeated message texts within one test file.
let seq = 0;
export const uniq = (prefix) => `${prefix}-${process.pid}-${++seq}`;

export function echoOf(gen) {
  return gen?.response?.choices?.[0]?.message?.content;
}

// The LD_PRELOAD shim of t2100 and t2600 (syncshim.c): the one make check
// built, else built here (a direct `node --test` run).
export function shimPath() {
  const built = [process.env.SYNCSHIM,
    path.join(path.dirname(SLOWLANED || '.'), '..', 'tests', 'torture', 'syncshim.so')];
  for (const p of built) if (p && fs.existsSync(p)) return p;
  const out = path.join(tmpDir('shim'), 'syncshim.so');
  const r = spawnSync(process.env.CC || 'cc', ['-std=gnu11', '-O2', '-shared', '-fPIC', '-o', out,
    path.join(TORTURE_DIR, 'syncshim.c'), '-ldl'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot build syncshim.so: ${r.stderr}`);
  return out;
}
