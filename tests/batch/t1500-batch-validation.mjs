// Batch input validation (API.md section 3): one small input per error code,
// each making the batch `failed` with errors.data entries {code, line
// (1-based, blank lines counted), message, param}; every problem of a file is
// reported; blank lines, CRLF and a missing last newline are fine; the limits
// --batch-max-requests (too_many_tasks) and --batch-max-bytes (413 at upload);
// and the 4xx answers of POST /v1/files and POST /v1/batches.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startDaemon, request, errorOf } from '../func/lib.mjs';
import {
  chatLine, completionLine, jsonl, multipart, upload, uploadOk, createBatch, createBatchOk, waitBatch,
} from './batchlib.mjs';

const KEY = 'k1';
let d;   // default limits, built-in load-test backend
let lim; // --batch-max-requests 5 --batch-max-bytes 4096
let only; // --model mock-model: serves that model only

before(async () => {
  [d, lim, only] = await Promise.all([
    startDaemon({ args: ['--api-key', KEY, '--api-key', 'k2', '--load-test-delay', '1ms'] }),
    startDaemon({ args: ['--api-key', KEY, '--load-test-delay', '1ms', '--batch-max-requests', '5', '--batch-max-bytes', '4096'] }),
    startDaemon({ args: ['--api-key', KEY, '--load-test-delay', '1ms', '--model', 'mock-model'] }),
  ]);
});

const L = (cid, extra) => chatLine(cid, `say ${cid}`, extra);
// A raw line object (for lines missing a field).
const raw = (o) => JSON.stringify(o);
const okBody = { model: 'mock-model', messages: [{ role: 'user', content: 'hi' }] };

// Uploads `text`, creates a batch on it, waits for its end; returns it.
async function runBatch(text, { daemon = d, endpoint = '/v1/chat/completions' } = {}) {
  const f = await uploadOk(daemon.base, text, { key: KEY });
  const b = await createBatchOk(daemon.base, f.id, { key: KEY, endpoint });
  return waitBatch(daemon.base, b.id, { key: KEY, timeoutMs: 20000 });
}

// Asserts a failed batch whose errors.data are exactly `want` ([{code, line, param}]).
function assertFailed(b, want) {
  assert.equal(b.status, 'failed', JSON.stringify(b));
  assert.equal(typeof b.failed_at, 'number');
  assert.equal(b.in_progress_at, null);
  assert.equal(b.output_file_id, null);
  assert.equal(b.error_file_id, null);
  assert.equal(b.errors?.object, 'list', JSON.stringify(b.errors));
  const got = b.errors.data.map((e) => ({ code: e.code, line: e.line, param: e.param ?? null }));
  assert.deepEqual(got, want.map((w) => ({ param: null, ...w })), JSON.stringify(b.errors.data));
  for (const e of b.errors.data) {
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 0);
    assert.ok('param' in e, `param is present (null when none): ${JSON.stringify(e)}`);
  }
}

const cases = [
  {
    code: 'invalid_json_line',
    lines: [L('a'), '', '{"custom_id": "b", oops}', L('c')],
    want: [{ code: 'invalid_json_line', line: 3 }],
  },
  {
    code: 'invalid_json_line (two objects on one line)',
    lines: [L('a'), '{"custom_id":"b"}{"method":"POST"}'],
    want: [{ code: 'invalid_json_line', line: 2 }],
  },
  {
    code: 'duplicate_custom_id',
    lines: [L('a'), L('b'), '', L('a')],
    want: [{ code: 'duplicate_custom_id', line: 4, param: 'custom_id' }],
  },
  {
    code: 'url_mismatch',
    lines: [L('a'), completionLine('b', 'complete me')],
    want: [{ code: 'url_mismatch', line: 2, param: 'url' }],
  },
  {
    code: 'url_mismatch (completions batch)',
    endpoint: '/v1/completions',
    lines: [completionLine('a', 'x'), completionLine('b', 'y'), L('c')],
    want: [{ code: 'url_mismatch', line: 3, param: 'url' }],
  },
  {
    code: 'model_mismatch',
    lines: [L('a', { model: 'model-one' }), L('b', { model: 'model-one' }), L('c', { model: 'model-two' })],
    want: [{ code: 'model_mismatch', line: 3, param: 'body.model' }],
  },
  {
    code: 'missing_custom_id',
    lines: [L('a'), raw({ method: 'POST', url: '/v1/chat/completions', body: okBody })],
    want: [{ code: 'missing_custom_id', line: 2, param: 'custom_id' }],
  },
  {
    code: 'missing_custom_id (not a string)',
    lines: [raw({ custom_id: 7, method: 'POST', url: '/v1/chat/completions', body: okBody })],
    want: [{ code: 'missing_custom_id', line: 1, param: 'custom_id' }],
  },
  {
    code: 'missing_method',
    lines: [raw({ custom_id: 'a', url: '/v1/chat/completions', body: okBody })],
    want: [{ code: 'missing_method', line: 1, param: 'method' }],
  },
  {
    code: 'invalid_method',
    lines: [L('a'), L('b'), raw({ custom_id: 'c', method: 'GET', url: '/v1/chat/completions', body: okBody })],
    want: [{ code: 'invalid_method', line: 3, param: 'method' }],
  },
  {
    code: 'missing_url',
    lines: [L('a'), raw({ custom_id: 'b', method: 'POST', body: okBody })],
    want: [{ code: 'missing_url', line: 2, param: 'url' }],
  },
  {
    code: 'invalid_url',
    lines: [raw({ custom_id: 'a', method: 'POST', url: '/v1/embeddings', body: { model: 'mock-model', input: 'x' } })],
    want: [{ code: 'invalid_url', line: 1, param: 'url' }],
  },
  {
    code: 'missing_body',
    lines: [L('a'), '   ', raw({ custom_id: 'b', method: 'POST', url: '/v1/chat/completions' })],
    want: [{ code: 'missing_body', line: 3, param: 'body' }],
  },
  {
    code: 'stream_unsupported',
    lines: [L('a'), L('b', { body: { stream: true } })],
    want: [{ code: 'stream_unsupported', line: 2, param: 'body.stream' }],
  },
  {
    code: 'invalid_request (empty messages)',
    lines: [L('a'), raw({ custom_id: 'b', method: 'POST', url: '/v1/chat/completions', body: { model: 'mock-model', messages: [] } })],
    want: [{ code: 'invalid_request', line: 2, param: 'body' }],
  },
  {
    code: 'invalid_request (no model)',
    lines: [raw({ custom_id: 'a', method: 'POST', url: '/v1/chat/completions', body: { messages: [{ role: 'user', content: 'x' }] } })],
    want: [{ code: 'invalid_request', line: 1, param: 'body' }],
  },
];

for (const c of cases) {
  test(`${c.code}: failed with the right 1-based line and param`, async () => {
    const b = await runBatch(jsonl(c.lines), { endpoint: c.endpoint });
    assertFailed(b, c.want);
  });
}

test('every problem of a file is reported, each with its line (blank lines counted)', async () => {
  const lines = [
    L('a'),                                                             // 1
    '',                                                                 // 2
    '{"custom_id": oops}',                                              // 3 invalid_json_line
    L('a'),                                                             // 4 duplicate_custom_id
    raw({ custom_id: 'c', method: 'PUT', url: '/v1/chat/completions', body: okBody }), // 5 invalid_method
    '\t',                                                               // 6
    '',                                                                 // 7
    L('d', { body: { stream: true } }),                                 // 8 stream_unsupported
    L('e'),                                                             // 9
    raw({ custom_id: 'f', method: 'POST', url: '/v1/completions', body: { model: 'mock-model', prompt: 'p' } }), // 10 url_mismatch
    raw({ custom_id: 'g', method: 'POST', url: '/v1/chat/completions' }), // 11 missing_body
  ];
  const b = await runBatch(jsonl(lines));
  assertFailed(b, [
    { code: 'invalid_json_line', line: 3 },
    { code: 'duplicate_custom_id', line: 4, param: 'custom_id' },
    { code: 'invalid_method', line: 5, param: 'method' },
    { code: 'stream_unsupported', line: 8, param: 'body.stream' },
    { code: 'url_mismatch', line: 10, param: 'url' },
    { code: 'missing_body', line: 11, param: 'body' },
  ]);
});

test('blank lines, CRLF line ends and a missing last newline are accepted; blank lines are not requests', async () => {
  const text = ['', L('a'), '  ', L('b'), '', '', L('c')].join('\r\n'); // no final newline
  const b = await runBatch(text);
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.equal(b.errors, null);
  assert.deepEqual(b.request_counts, { total: 3, completed: 3, failed: 0 });
});

test('empty_file: an empty or blank-only batch file is refused at upload (400), so no batch can be empty', async () => {
  for (const text of ['', '\n\n   \n', '\r\n\t\r\n']) {
    const r = await upload(d.base, text, { key: KEY });
    assert.equal(r.status, 400, `${JSON.stringify(text)}: ${r.text}`);
    const e = errorOf(r);
    assert.equal(e.code, 'invalid_file_format');
  }
});

test('too_many_tasks: more lines than --batch-max-requests 5 (at the 6th request, blank lines counted)', async () => {
  const lines = [L('r1'), L('r2'), '', L('r3'), L('r4'), L('r5'), L('r6'), L('r7')];
  const b = await runBatch(jsonl(lines), { daemon: lim });
  assertFailed(b, [{ code: 'too_many_tasks', line: 7 }]);
  // exactly 5 requests is fine
  const ok = await runBatch(jsonl([L('r1'), '', L('r2'), L('r3'), L('r4'), L('r5')]), { daemon: lim });
  assert.equal(ok.status, 'completed', JSON.stringify(ok));
  assert.deepEqual(ok.request_counts, { total: 5, completed: 5, failed: 0 });
});

test('model_not_found: with --model, a batch naming another model fails validation, as a submit is refused', async () => {
  const b = await runBatch(jsonl([L('m1', { model: 'not-served' }), L('m2', { model: 'not-served' })]), { daemon: only });
  assertFailed(b, [{ code: 'model_not_found', line: 1, param: 'body.model' }]);
  assert.match(b.errors.data[0].message, /'not-served' does not exist/);
  const h = await request('GET', `${only.base}/healthz`);
  assert.equal(h.json.jobs.queued + h.json.jobs.success + h.json.jobs.failed, 0, 'nothing was queued');
  const ok = await runBatch(jsonl([L('m1'), L('m2')]), { daemon: only });
  assert.equal(ok.status, 'completed', JSON.stringify(ok));
  assert.deepEqual(ok.request_counts, { total: 2, completed: 2, failed: 0 });
});

test('an input whose bytes are gone (damage behind the daemon\'s back): failed, file_not_found, line null', async () => {
  const f = await uploadOk(d.base, jsonl([L('gone-1')]), { key: KEY });
  fs.unlinkSync(path.join(d.dataDir, 'files', f.id));
  const b0 = await createBatchOk(d.base, f.id, { key: KEY });
  const b = await waitBatch(d.base, b0.id, { key: KEY, timeoutMs: 20000 });
  assertFailed(b, [{ code: 'file_not_found', line: null, param: 'input_file_id' }]);
});

// Sends a multipart upload over a raw socket, ignoring write errors, and
// reads whatever the daemon answers: what it sends, whether or not a client
// that is still writing the body gets to read it.
function rawUpload(base, content, key) {
  const { hostname, port } = new URL(base);
  const { body, contentType } = multipart(content, { filename: 'big.jsonl' });
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), hostname);
    const chunks = [];
    sock.on('error', () => { /* EPIPE/ECONNRESET while writing: read what came */ });
    sock.on('data', (c) => chunks.push(c));
    sock.on('close', () => {
      const text = Buffer.concat(chunks).toString();
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (!m) return reject(new Error(`no HTTP answer: ${JSON.stringify(text.slice(0, 200))}`));
      const json = text.slice(text.indexOf('\r\n\r\n') + 4);
      resolve({ status: Number(m[1]), text: json, json: JSON.parse(json) });
    });
    sock.setTimeout(10000, () => sock.destroy());
    sock.write(`POST /v1/files HTTP/1.1\r\nHost: ${hostname}:${port}\r\nAuthorization: Bearer ${key}\r\n` +
      `Content-Type: ${contentType}\r\nContent-Length: ${body.length}\r\n` +
      'Connection: close\r\n\r\n');
    sock.end(body);
  });
}

function bigFile() {
  const big = jsonl(Array.from({ length: 40 }, (_, i) => L(`big-${i}`)));
  assert.ok(big.length > 4096 && big.length < 8192);
  return big;
}

test('--batch-max-bytes 4096: the daemon answers a bigger upload 413 file_too_large; a smaller one is taken', async () => {
  const big = bigFile();
  const r = await rawUpload(lim.base, big, KEY);
  assert.equal(r.status, 413, r.text);
  assert.equal(errorOf(r).code, 'file_too_large');
  const small = jsonl([L('s1'), L('s2')]);
  const ok = await upload(lim.base, small, { key: KEY });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.bytes, Buffer.byteLength(small));
  // the refused upload left no file behind
  const list = await request('GET', `${lim.base}/v1/files`, { key: KEY });
  assert.equal(list.json.data[0].id, ok.json.id);
  assert.ok(!list.json.data.some((f) => f.bytes === Buffer.byteLength(big)));
  const leftovers = fs.readdirSync(path.join(lim.dataDir, 'files')).filter((n) => n.startsWith('.upload'));
  assert.deepEqual(leftovers, [], 'no temporary upload left in the files directory');
});

test('--batch-max-bytes 4096: a fetch client (as the openai SDK) gets to read the 413', async () => {
  // big enough (4 MiB) that the client is still writing when the daemon answers
  const big = bigFile().repeat(800);
  let r;
  try {
    r = await upload(lim.base, big, { key: KEY });
  } catch (e) {
    assert.fail(`POST /v1/files of a ${big.length >> 10} KB file with --batch-max-bytes 4096 through fetch(): ` +
      `expected an HTTP 413 answer, got a network error: ${e.message} (${e.cause?.code || e.cause?.message})`);
  }
  assert.equal(r.status, 413, r.text);
  assert.equal(errorOf(r).code, 'file_too_large');
});

// POST /v1/files with a hand-made multipart body: `parts` are [header
// bytes, content] pairs, so a test can send what no form library would.
async function partsUpload(base, parts) {
  const boundary = 'bRaw' + Math.random().toString(16).slice(2);
  const chunks = [];
  for (const [hdr, content] of parts)
    chunks.push(Buffer.from(`--${boundary}\r\n`), Buffer.from(hdr), Buffer.from('\r\n\r\n'), Buffer.from(content), Buffer.from('\r\n'));
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const res = await fetch(`${base}/v1/files`, { method: 'POST', body: Buffer.concat(chunks),
    headers: { authorization: `Bearer ${KEY}`, 'content-type': `multipart/form-data; boundary=${boundary}` } });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, text, json };
}
const PURPOSE_PART = ['Content-Disposition: form-data; name="purpose"', 'batch'];
const filePart = (name, content) => [Buffer.concat([Buffer.from('Content-Disposition: form-data; name="file"; filename="'),
  Buffer.from(name), Buffer.from('"\r\nContent-Type: application/jsonl')]), content];

test('POST /v1/files: bad uploads are 400 with error objects; expires_after is honoured', async () => {
  const good = jsonl([L('a')]);
  const files0 = (await request('GET', `${d.base}/v1/files?limit=100`, { key: KEY })).json.data.length;
  const bad = [
    ['a batch file with a line that is not a JSON object', () => upload(d.base, jsonl([L('a'), 'hello world']), { key: KEY }), 'invalid_file_format'],
    // (found: these three were taken, or 503; a batch on the first failed later)
    ['a line whose bytes are not UTF-8', () => upload(d.base, Buffer.concat([Buffer.from('{"custom_id":"a","x":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]), { key: KEY }), 'invalid_file_format'],
    ['a file name that is not UTF-8', () => partsUpload(d.base, [PURPOSE_PART, filePart(Buffer.from([0xff, 0xfe, 0x2e, 0x6a]), good)]), 'invalid_value'],
    ['a short file name ending inside a character', () => partsUpload(d.base, [PURPOSE_PART, filePart(Buffer.from([0x61, 0xc3]), good)]), 'invalid_value'],
    ['two file parts', () => partsUpload(d.base, [PURPOSE_PART, filePart('a.jsonl', good), filePart('b.jsonl', good)]), 'invalid_value'],
    ['no purpose', () => upload(d.base, good, { key: KEY, purpose: null }), 'missing_required_parameter'],
    ['an unknown purpose', () => upload(d.base, good, { key: KEY, purpose: 'fine-tune-x' })],
    ['no file', () => upload(d.base, null, { key: KEY })],
    ['expires_after seconds under 3600', () => upload(d.base, good, { key: KEY, fields: { 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '60' } })],
    ['expires_after seconds over 30 days', () => upload(d.base, good, { key: KEY, fields: { 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '2592001' } })],
    ['expires_after with another anchor', () => upload(d.base, good, { key: KEY, fields: { 'expires_after[anchor]': 'last_active_at', 'expires_after[seconds]': '3600' } })],
    ['a JSON body', () => request('POST', `${d.base}/v1/files`, { key: KEY, body: { purpose: 'batch', file: good } })],
  ];
  for (const [what, send, code] of bad) {
    const r = await send();
    assert.equal(r.status, 400, `${what}: ${r.status} ${r.text}`);
    const e = errorOf(r);
    assert.equal(typeof e.message, 'string', what);
    if (code) assert.equal(e.code, code, what);
  }
  assert.equal((await request('GET', `${d.base}/v1/files?limit=100`, { key: KEY })).json.data.length, files0,
    'no refused upload stored a file');
  // a file whose name is valid UTF-8 keeps it, however long (cut whole characters)
  const long = 'é'.repeat(400) + '.jsonl';
  const ok = await partsUpload(d.base, [PURPOSE_PART, filePart(long, good)]);
  assert.equal(ok.status, 200, ok.text);
  assert.ok(long.startsWith(ok.json.filename) && ok.json.filename.length > 0, ok.json.filename);
  // user_data files need not be JSONL
  const ud = await upload(d.base, 'hello world\nnot json\n', { key: KEY, purpose: 'user_data' });
  assert.equal(ud.status, 200, ud.text);
  const ex = await uploadOk(d.base, good, { key: KEY, fields: { 'expires_after[anchor]': 'created_at', 'expires_after[seconds]': '7200' } });
  assert.equal(ex.expires_at, ex.created_at + 7200);
  // no key, a wrong key
  assert.equal((await upload(d.base, good)).status, 401);
  assert.equal((await upload(d.base, good, { key: 'nope' })).status, 401);
  assert.equal((await request('GET', `${d.base}/v1/files`)).status, 401);
});

test('POST /v1/batches: wrong window, endpoint, metadata, missing or foreign input file -> 4xx with error objects', async () => {
  const f = await uploadOk(d.base, jsonl([L('a')]), { key: KEY });
  const other = await uploadOk(d.base, jsonl([L('a')]), { key: 'k2' });
  const ud = await uploadOk(d.base, 'notes\n', { key: KEY, purpose: 'user_data' });
  const base = { input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' };
  const meta17 = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));
  const cases = [
    ['completion_window 48h', { ...base, completion_window: '48h' }, [400], 'completion_window'],
    ['no completion_window', { input_file_id: f.id, endpoint: base.endpoint }, [400], 'completion_window'],
    ['endpoint /v1/embeddings', { ...base, endpoint: '/v1/embeddings' }, [400], 'endpoint'],
    ['no endpoint', { input_file_id: f.id, completion_window: '24h' }, [400], 'endpoint'],
    ['no input_file_id', { endpoint: base.endpoint, completion_window: '24h' }, [400], 'input_file_id', 'missing_required_parameter'],
    ['an input_file_id that is not a string', { ...base, input_file_id: 5 }, [400], 'input_file_id', 'invalid_type'],
    ['an unknown input_file_id', { ...base, input_file_id: 'file-doesnotexist000000000' }, [400, 404], 'input_file_id'],
    ["another key's input file", { ...base, input_file_id: other.id }, [400, 404], 'input_file_id'],
    ['a user_data input file', { ...base, input_file_id: ud.id }, [400], 'input_file_id'],
    ['17 metadata pairs', { ...base, metadata: meta17 }, [400], 'metadata'],
    ['a metadata value that is not a string', { ...base, metadata: { n: 1 } }, [400], 'metadata'],
    ['output_expires_after under an hour', { ...base, output_expires_after: { anchor: 'created_at', seconds: 60 } }, [400], 'output_expires_after'],
    ['output_expires_after with another anchor', { ...base, output_expires_after: { anchor: 'last_active_at', seconds: 3600 } }, [400], 'output_expires_after'],
  ];
  for (const [what, body, statuses, param, code] of cases) {
    const r = await createBatch(d.base, body, { key: KEY });
    assert.ok(statuses.includes(r.status), `${what}: ${r.status} ${r.text}`);
    const e = errorOf(r);
    assert.equal(e.param, param, `${what}: ${r.text}`);
    if (code) assert.equal(e.code, code, `${what}: ${r.text}`);
    assert.equal(typeof e.message, 'string');
  }
  const notJson = await createBatch(d.base, '{"input_file_id":', { key: KEY });
  assert.equal(notJson.status, 400, notJson.text);
  errorOf(notJson);
  assert.equal((await createBatch(d.base, base)).status, 401, 'no key');
  // nothing was created by any of them
  const list = await request('GET', `${d.base}/v1/batches?limit=100`, { key: KEY });
  assert.ok(!list.json.data.some((b) => b.input_file_id === f.id || b.input_file_id === ud.id));
});

test("GET and cancel of an unknown or another key's batch -> 404", async () => {
  const f = await uploadOk(d.base, jsonl([L('mine')]), { key: 'k2' });
  const b = await createBatchOk(d.base, f.id, { key: 'k2' });
  for (const id of [b.id, 'batch_doesnotexist0000000000000', 'nope']) {
    let r = await request('GET', `${d.base}/v1/batches/${id}`, { key: KEY });
    assert.equal(r.status, 404, `GET ${id}: ${r.text}`);
    errorOf(r);
    r = await request('POST', `${d.base}/v1/batches/${id}/cancel`, { key: KEY });
    assert.equal(r.status, 404, `cancel ${id}: ${r.text}`);
    errorOf(r);
  }
  const r = await request('GET', `${d.base}/v1/batches?after=${b.id}`, { key: KEY });
  assert.equal(r.status, 400, `after= another key's batch: ${r.text}`);
  // the owner still sees it, not cancelled
  const mine = await waitBatch(d.base, b.id, { key: 'k2' });
  assert.equal(mine.status, 'completed');
});

test('output_expires_after: the output file expires that long after it is made (found: ignored, +30 d)', async () => {
  const f = await uploadOk(d.base, jsonl([L('ox1'), L('ox2')]), { key: KEY });
  const b = await createBatchOk(d.base, f.id, { key: KEY, extra: { output_expires_after: { anchor: 'created_at', seconds: 7200 } } });
  assert.ok(!Object.keys(b).some((k) => k.startsWith('_')), 'nothing internal shown');
  const done = await waitBatch(d.base, b.id, { key: KEY });
  assert.equal(done.status, 'completed', JSON.stringify(done));
  const of = await request('GET', `${d.base}/v1/files/${done.output_file_id}`, { key: KEY });
  assert.equal(of.status, 200, of.text);
  assert.equal(of.json.expires_at, of.json.created_at + 7200);
});
