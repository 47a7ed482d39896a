// Helpers shared by the Files and Batch API tests (tests/batch/t1*.mjs), on
// top of the functional-test harness tests/func/lib.mjs: JSONL input lines,
// multipart uploads with plain fetch, batch creation and polling, and the
// official openai SDK loaded from tests/compat (where `npm ci` installs it).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request, sleep } from '../func/lib.mjs';

export const FINAL_BATCH = ['completed', 'failed', 'cancelled', 'expired'];
export const BATCH_ID_RE = /^batch_[A-Za-z0-9_-]+$/;
export const FILE_ID_RE = /^file-[A-Za-z0-9_-]+$/;

// ---------------------------------------------------------------- the SDK

const SDK_URL = new URL('../compat/node_modules/openai/index.mjs', import.meta.url);

// Resolves to the openai module namespace, or fails the calling test with
// the install hint.
export async function loadSdk() {
  try {
    return await import(SDK_URL.href);
  } catch (e) {
    assert.fail(`the openai SDK is not installed in tests/compat: run npm ci in tests/compat ` +
      `(${e.message})`);
  }
}

// ---------------------------------------------------------------- input lines

export function chatLine(customId, content, { model = 'mock-model', url = '/v1/chat/completions', body = {}, ...rest } = {}) {
  return JSON.stringify({
    custom_id: customId,
    method: 'POST',
    url,
    body: { model, messages: [{ role: 'user', content }], ...body },
    ...rest,
  });
}

export function completionLine(customId, prompt, { model = 'mock-model', url = '/v1/completions' } = {}) {
  return JSON.stringify({ custom_id: customId, method: 'POST', url, body: { model, prompt, max_tokens: 16 } });
}

// Lines (strings) -> JSONL text with a trailing newline.
export const jsonl = (lines) => lines.join('\n') + '\n';

export function parseJsonl(text) {
  return text.split('\n').filter((l) => l.trim() !== '').map((l, i) => {
    try {
      return JSON.parse(l);
    } catch (e) {
      throw new Error(`line ${i + 1} of a JSONL file is not JSON (${e.message}): ${l.slice(0, 200)}`);
    }
  });
}

// ---------------------------------------------------------------- plain HTTP

// POST /v1/files as multipart/form-data. content: string or Buffer.
// fields: extra form fields (e.g. {'expires_after[anchor]': 'created_at'}).
export async function upload(base, content, { key, purpose = 'batch', filename = 'input.jsonl', fields = {}, headers = {}, timeoutMs = 30000 } = {}) {
  const form = new FormData();
  if (purpose !== null) form.append('purpose', purpose);
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  if (content !== null)
    form.append('file', new Blob([content], { type: 'application/jsonl' }), filename);
  const h = { ...headers };
  if (key) h.authorization = `Bearer ${key}`;
  const res = await fetch(`${base}/v1/files`, { method: 'POST', body: form, headers: h, signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

export async function uploadOk(base, content, opts = {}) {
  const r = await upload(base, content, opts);
  assert.equal(r.status, 200, `POST /v1/files: ${r.status} ${r.text}`);
  assert.match(r.json.id, FILE_ID_RE);
  return r.json;
}

export function createBatch(base, body, { key, headers = {} } = {}) {
  return request('POST', `${base}/v1/batches`, { body, key, headers });
}

export async function createBatchOk(base, fileId, { key, endpoint = '/v1/chat/completions', extra = {}, headers } = {}) {
  const r = await createBatch(base, { input_file_id: fileId, endpoint, completion_window: '24h', ...extra }, { key, headers });
  assert.equal(r.status, 200, `POST /v1/batches: ${r.status} ${r.text}`);
  assert.match(r.json.id, BATCH_ID_RE);
  return r.json;
}

export async function getBatch(base, id, key) {
  const r = await request('GET', `${base}/v1/batches/${id}`, { key });
  assert.equal(r.status, 200, `GET /v1/batches/${id}: ${r.status} ${r.text}`);
  return r.json;
}

// Polls GET /v1/batches/{id} until its status is in `until`. base may be a
// function (a restarted daemon listens on a new port); network errors and
// 5xx count as "try again".
export async function waitBatch(base, id, { key, until = FINAL_BATCH, timeoutMs = 30000, intervalMs = 100 } = {}) {
  const baseOf = typeof base === 'function' ? base : () => base;
  const deadline = Date.now() + timeoutMs;
  let last = '(nothing yet)';
  for (;;) {
    try {
      const r = await request('GET', `${baseOf()}/v1/batches/${id}`, { key });
      if (r.status === 200 && r.json) {
        if (until.includes(r.json.status)) return r.json;
        last = `${r.json.status} ${JSON.stringify(r.json.request_counts)}`;
      } else {
        last = `HTTP ${r.status} ${r.text.slice(0, 200)}`;
        if (r.status < 500) throw new Error(`GET /v1/batches/${id}: ${last}`);
      }
    } catch (e) {
      if (e.message.startsWith('GET /v1/batches')) throw e;
      last = `network error: ${e.cause?.code || e.message}`;
    }
    if (Date.now() > deadline)
      throw new Error(`batch ${id} not in [${until}] after ${timeoutMs} ms; last: ${last}`);
    await sleep(intervalMs);
  }
}

export async function fileContent(base, id, key) {
  const r = await request('GET', `${base}/v1/files/${id}/content`, { key, timeoutMs: 60000 });
  assert.equal(r.status, 200, `GET /v1/files/${id}/content: ${r.status} ${r.text.slice(0, 300)}`);
  return r.text;
}

// ---------------------------------------------------------------- slowlanectl

export const SLOWLANECTL = process.env.SLOWLANECTL ||
  (process.env.SLOWLANED ? path.join(path.dirname(process.env.SLOWLANED), '..', 'tools', 'slowlanectl') :
    fileURLToPath(new URL('../../tools/slowlanectl', import.meta.url)));

// Runs `slowlanectl --data-dir DIR --json ARGS...`; resolves to the parsed output.
export function ctlJson(dataDir, ...args) {
  return new Promise((resolve, reject) => {
    execFile(SLOWLANECTL, ['--data-dir', dataDir, '--json', ...args], { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`slowlanectl ${args.join(' ')}: ${err.message}\n${stderr}`));
      try {
        resolve(JSON.parse(stdout));
      } catch (e) {
        reject(new Error(`slowlanectl ${args.join(' ')}: not JSON (${e.message}): ${stdout.slice(0, 300)}`));
      }
    });
  });
}

export function fileExists(p) {
  try { fs.accessSync(p); return true; } catch { return false; }
}

// ---------------------------------------------------------------- bursts

// Sends `n` copies of one HTTP request on `n` connections so that the daemon
// gets them complete at the same moment: every byte but the last is written
// first, then the last byte of each in one go. Resolves to [{status, json,
// text}]. body: Buffer; headers: object (Content-Length is added).
export async function burst(base, { method = 'POST', path: p, headers = {}, body }, n) {
  const { hostname, port } = new URL(base);
  const head = `${method} ${p} HTTP/1.1\r\nHost: ${hostname}:${port}\r\nConnection: close\r\n` +
    Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('') +
    `Content-Length: ${body.length}\r\n\r\n`;
  const bytes = Buffer.concat([Buffer.from(head), body]);
  const socks = [];
  const answers = [];
  for (let i = 0; i < n; i++) {
    const sock = net.connect(Number(port), hostname);
    await new Promise((resolve, reject) => { sock.once('connect', resolve); sock.once('error', reject); });
    const chunks = [];
    sock.on('data', (c) => chunks.push(c));
    answers.push(new Promise((resolve, reject) => {
      sock.on('error', reject);
      sock.on('close', () => {
        const text = Buffer.concat(chunks).toString();
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
        if (!m) return reject(new Error(`no HTTP answer: ${JSON.stringify(text.slice(0, 200))}`));
        const bodyText = text.slice(text.indexOf('\r\n\r\n') + 4);
        let json = null;
        try { json = JSON.parse(bodyText); } catch { /* chunked or not JSON */ }
        resolve({ status: Number(m[1]), text: bodyText, json });
      });
    }));
    await new Promise((resolve) => sock.write(bytes.subarray(0, bytes.length - 1), resolve));
    socks.push(sock);
  }
  await sleep(100); // let the daemon read all of that
  for (const sock of socks) sock.write(bytes.subarray(bytes.length - 1));
  return Promise.all(answers);
}

// A multipart/form-data body with a `purpose` field and a `file`.
export function multipart(content, { purpose = 'batch', filename = 'input.jsonl' } = {}) {
  const boundary = 'b0undary' + Math.random().toString(16).slice(2);
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n${purpose}\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\n` +
      'Content-Type: application/jsonl\r\n\r\n'),
    Buffer.from(content), Buffer.from(`\r\n--${boundary}--\r\n`)]);
  return { body, contentType: `multipart/form-data; boundary=${boundary}` };
}
