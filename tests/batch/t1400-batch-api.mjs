// The Files and Batch API (API.md section 3) through the official `openai`
// npm SDK, used unchanged but for its base URL: files.create of a JSONL,
// batches.create, batches.retrieve until completed, files.content of the
// output and error files matched by custom_id (the mock upstream echoes
// each line's user message), request_counts and usage; upstream HTTP errors
// in the error file; an all-failed batch; a /v1/completions batch;
// batches.list auto-pagination over 45 batches; batches.cancel of a slow
// batch (partial output) and right after create; files list, retrieve,
// content and delete, owned by their key; Idempotency-Key on both creates,
// including retries that arrive together (plain HTTP).
// Needs `npm ci` in tests/compat.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startMock, startDaemon, request, errorOf, tmpDir, sleep } from '../func/lib.mjs';
import {
  loadSdk, chatLine, completionLine, jsonl, parseJsonl, upload, uploadOk, createBatch,
  createBatchOk, waitBatch, burst, multipart, BATCH_ID_RE, FILE_ID_RE,
} from './batchlib.mjs';

let sdk;
let mock;
let d;          // --concurrency 8
const KEY = 'k1';

before(async () => {
  sdk = await loadSdk();
  mock = await startMock({ latency: 5 });
  d = await startDaemon({
    upstream: mock.url,
    args: ['--api-key', KEY, '--api-key', 'k2', '--api-key', 'klist', '--api-key', 'kfiles',
      '--api-key', 'kidem', '--api-key', 'kidem2', '--api-key', 'kidem3', '--api-key', 'kdel', '--concurrency', '8', '--max-attempts', '2', '--retry-base', '100ms'],
  });
});

// A second daemon with --concurrency 2, for the cancel tests.
let slowD = null;
async function slowDaemon() {
  if (!slowD) slowD = await startDaemon({ upstream: mock.url, args: ['--api-key', KEY, '--concurrency', '2'] });
  return slowD;
}

const client = (base = d.base, apiKey = KEY) =>
  new sdk.default({ baseURL: `${base}/v1`, apiKey, maxRetries: 0, timeout: 20000 });

// Polls batches.retrieve (the SDK) until the status is one of `until`.
async function sdkWait(c, id, until = ['completed', 'failed', 'cancelled', 'expired'], timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const b = await c.batches.retrieve(id);
    if (until.includes(b.status)) return b;
    if (Date.now() > deadline)
      assert.fail(`batch ${id} still ${b.status} ${JSON.stringify(b.request_counts)} after ${timeoutMs} ms`);
    await sleep(150);
  }
}

async function sdkContent(c, id) {
  const res = await c.files.content(id);
  assert.equal(res.status, 200);
  return res.text();
}

function assertTimes(b, stamps) {
  let prev = b.created_at;
  for (const s of stamps) {
    assert.equal(typeof b[s], 'number', `${s} is set: ${JSON.stringify(b)}`);
    assert.ok(b[s] >= prev, `${s} ${b[s]} >= ${prev}`);
    prev = b[s];
  }
}

function assertOutputLine(l, expectContent, kind = 'chat') {
  assert.match(l.id, /^batch_req_/);
  assert.equal(l.error, null);
  assert.equal(l.response.status_code, 200);
  assert.match(l.response.request_id, /^req_/);
  if (kind === 'chat') {
    assert.equal(l.response.body.object, 'chat.completion');
    assert.equal(l.response.body.choices[0].message.content, expectContent, `answer of ${l.custom_id}`);
  } else {
    assert.equal(l.response.body.object, 'text_completion');
    assert.equal(l.response.body.choices[0].text, expectContent, `answer of ${l.custom_id}`);
  }
}

function sumUsage(lines) {
  const u = { input_tokens: 0, output_tokens: 0, total_tokens: 0, cached_tokens: 0, reasoning_tokens: 0 };
  for (const l of lines) {
    u.cached_tokens += l.response.body.usage.prompt_tokens_details.cached_tokens;
    u.reasoning_tokens += l.response.body.usage.completion_tokens_details.reasoning_tokens;
    u.input_tokens += l.response.body.usage.prompt_tokens;
    u.output_tokens += l.response.body.usage.completion_tokens;
    u.total_tokens += l.response.body.usage.prompt_tokens + l.response.body.usage.completion_tokens;
  }
  return u;
}

test('SDK: files.create + batches.create of 20 chat lines, retrieve until completed, output matched by custom_id', async () => {
  const c = client();
  const contents = new Map();
  const lines = [];
  for (let i = 0; i < 20; i++) {
    const cid = `req-${i}`;
    const text = `hello number ${i} — “unicode” ✓ ${'word '.repeat(i % 5)}`.trim();
    contents.set(cid, text);
    lines.push(chatLine(cid, text, { body: { max_tokens: 32 } }));
  }
  const p = path.join(tmpDir('in'), 'batch-input.jsonl');
  fs.writeFileSync(p, jsonl(lines));

  const f = await c.files.create({ file: fs.createReadStream(p), purpose: 'batch' });
  assert.match(f.id, FILE_ID_RE);
  assert.equal(f.object, 'file');
  assert.equal(f.purpose, 'batch');
  assert.equal(f.filename, 'batch-input.jsonl');
  assert.equal(f.bytes, fs.statSync(p).size);
  assert.equal(f.status, 'processed');

  const created = await c.batches.create({
    input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h',
    metadata: { suite: 't1400', run: 'sdk' },
  });
  assert.match(created.id, BATCH_ID_RE);
  assert.equal(created.object, 'batch');
  assert.equal(created.status, 'validating');
  assert.equal(created.input_file_id, f.id);
  assert.equal(created.endpoint, '/v1/chat/completions');
  assert.equal(created.completion_window, '24h');
  assert.deepEqual(created.metadata, { suite: 't1400', run: 'sdk' });
  assert.equal(created.expires_at, created.created_at + 24 * 3600);
  assert.deepEqual(created.request_counts, { total: 0, completed: 0, failed: 0 });
  assert.equal(created.errors, null);
  assert.equal(created.output_file_id, null);

  const b = await sdkWait(c, created.id);
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.deepEqual(b.request_counts, { total: 20, completed: 20, failed: 0 });
  assert.equal(b.model, 'mock-model');
  assert.equal(b.errors, null);
  assert.equal(b.error_file_id, null);
  assert.match(b.output_file_id, FILE_ID_RE);
  assert.deepEqual(b.metadata, { suite: 't1400', run: 'sdk' });
  assertTimes(b, ['in_progress_at', 'finalizing_at', 'completed_at']);
  for (const s of ['failed_at', 'expired_at', 'cancelling_at', 'cancelled_at'])
    assert.equal(b[s], null, s);

  const text = await sdkContent(c, b.output_file_id);
  const out = parseJsonl(text);
  assert.equal(out.length, 20);
  assert.deepEqual(new Set(out.map((l) => l.custom_id)), new Set(contents.keys()));
  for (const l of out) assertOutputLine(l, contents.get(l.custom_id));
  assert.equal(new Set(out.map((l) => l.id)).size, 20, 'batch_req ids are distinct');

  const u = sumUsage(out);
  assert.ok(u.total_tokens > 0);
  assert.equal(b.usage.input_tokens, u.input_tokens);
  assert.equal(b.usage.output_tokens, u.output_tokens);
  assert.equal(b.usage.total_tokens, u.total_tokens);
  // The upstream's details are summed too (the mock reports some of each).
  assert.ok(u.cached_tokens > 0 && u.reasoning_tokens > 0, JSON.stringify(u));
  assert.deepEqual(b.usage.input_tokens_details, { cached_tokens: u.cached_tokens });
  assert.deepEqual(b.usage.output_tokens_details, { reasoning_tokens: u.reasoning_tokens });

  const of = await c.files.retrieve(b.output_file_id);
  assert.equal(of.purpose, 'batch_output');
  assert.equal(of.bytes, Buffer.byteLength(text));
  assert.equal(of.status, 'processed');
  assert.match(of.filename, /\.jsonl$/);
  const outputs = [];
  for await (const x of c.files.list({ purpose: 'batch_output' })) outputs.push(x.id);
  assert.ok(outputs.includes(b.output_file_id), 'the output file is listed for its owner');
  // the Python SDK asks for the content with Accept: application/binary
  const raw = await request('GET', `${d.base}/v1/files/${b.output_file_id}/content`,
    { key: KEY, headers: { accept: 'application/binary' } });
  assert.equal(raw.status, 200);
  assert.equal(raw.text, text);
});

test('SDK: upstream 400s (and a 500 past --max-attempts) go to the error file with status_code and body', async () => {
  const c = client();
  const lines = [];
  const ok = new Map();
  const bad = new Map();
  for (let i = 0; i < 12; i++) {
    const cid = `mixed-${i}`;
    if (i % 4 === 1) {
      bad.set(cid, 400);
      lines.push(chatLine(cid, `[mock:status=400] refused ${i}`));
    } else if (i === 6) {
      bad.set(cid, 500);
      lines.push(chatLine(cid, `[mock:status=500] broken ${i}`));
    } else {
      ok.set(cid, `fine ${i}`);
      lines.push(chatLine(cid, `fine ${i}`));
    }
  }
  const f = await c.files.create({ file: await sdk.toFile(Buffer.from(jsonl(lines)), 'mixed.jsonl'), purpose: 'batch' });
  const created = await c.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  const b = await sdkWait(c, created.id);
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.deepEqual(b.request_counts, { total: 12, completed: ok.size, failed: bad.size });
  assert.match(b.output_file_id, FILE_ID_RE);
  assert.match(b.error_file_id, FILE_ID_RE);

  const out = parseJsonl(await sdkContent(c, b.output_file_id));
  assert.deepEqual(out.map((l) => l.custom_id).sort(), [...ok.keys()].sort());
  for (const l of out) assertOutputLine(l, ok.get(l.custom_id));
  const u = sumUsage(out);
  assert.equal(b.usage.input_tokens, u.input_tokens);
  assert.equal(b.usage.output_tokens, u.output_tokens);
  assert.equal(b.usage.total_tokens, u.total_tokens);

  const errs = parseJsonl(await sdkContent(c, b.error_file_id));
  assert.deepEqual(errs.map((l) => l.custom_id).sort(), [...bad.keys()].sort());
  for (const l of errs) {
    const status = bad.get(l.custom_id);
    assert.match(l.id, /^batch_req_/);
    assert.equal(l.error, null, `an HTTP error is in response, not error: ${JSON.stringify(l)}`);
    assert.equal(l.response.status_code, status);
    assert.match(l.response.request_id, /^req_/);
    assert.deepEqual(l.response.body, {
      error: { message: `mock error ${status}`, type: 'mock_error', param: null, code: `mock_${status}` },
    });
  }
  const ef = await c.files.retrieve(b.error_file_id);
  assert.equal(ef.purpose, 'batch_output');
});

test('a batch whose every line fails is completed with output_file_id null and an error file', async () => {
  const c = client();
  const lines = [0, 1, 2].map((i) => chatLine(`allbad-${i}`, `[mock:status=422] no ${i}`));
  const f = await c.files.create({ file: await sdk.toFile(Buffer.from(jsonl(lines)), 'allbad.jsonl'), purpose: 'batch' });
  const created = await c.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  const b = await sdkWait(c, created.id);
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.deepEqual(b.request_counts, { total: 3, completed: 0, failed: 3 });
  assert.equal(b.output_file_id, null);
  assert.match(b.error_file_id, FILE_ID_RE);
  assert.equal(b.usage.total_tokens, 0);
  const errs = parseJsonl(await sdkContent(c, b.error_file_id));
  assert.deepEqual(errs.map((l) => l.custom_id).sort(), ['allbad-0', 'allbad-1', 'allbad-2']);
  for (const l of errs) assert.equal(l.response.status_code, 422);
});

test('SDK: a /v1/completions batch', async () => {
  const c = client();
  const prompts = new Map([['c-a', 'complete alpha'], ['c-b', 'complete beta'], ['c-c', 'complete gamma']]);
  const lines = [...prompts].map(([cid, p]) => completionLine(cid, p));
  const f = await c.files.create({ file: await sdk.toFile(Buffer.from(jsonl(lines)), 'comp.jsonl'), purpose: 'batch' });
  const created = await c.batches.create({ input_file_id: f.id, endpoint: '/v1/completions', completion_window: '24h' });
  assert.equal(created.endpoint, '/v1/completions');
  const b = await sdkWait(c, created.id);
  assert.equal(b.status, 'completed', JSON.stringify(b));
  assert.deepEqual(b.request_counts, { total: 3, completed: 3, failed: 0 });
  const out = parseJsonl(await sdkContent(c, b.output_file_id));
  assert.equal(out.length, 3);
  for (const l of out) assertOutputLine(l, prompts.get(l.custom_id), 'completion');
});

test('SDK: batches.list auto-pagination walks 45 batches once each, newest first; has_more exact', async () => {
  const key = 'klist';
  const c = client(d.base, key);
  const f = await uploadOk(d.base, jsonl([chatLine('only', 'list me')]), { key });
  const ids = [];
  for (let i = 0; i < 45; i++) {
    const b = await createBatchOk(d.base, f.id, { key, extra: { metadata: { n: String(i) } } });
    ids.push(b.id);
    await sleep(2); // distinct creation milliseconds: "newest first" is then one order
  }
  const newestFirst = [...ids].reverse();

  const seen = [];
  for await (const b of c.batches.list({ limit: 10 })) seen.push(b.id);
  assert.equal(seen.length, 45, 'each batch once');
  assert.equal(new Set(seen).size, 45);
  assert.deepEqual(seen, newestFirst);

  // page by page: 10, 10, 10, 10, 5 with has_more true, true, true, true, false
  const sizes = [];
  const more = [];
  let page = await c.batches.list({ limit: 10 });
  for (;;) {
    sizes.push(page.data.length);
    more.push(page.has_more);
    if (!page.hasNextPage()) break;
    page = await page.getNextPage();
  }
  assert.deepEqual(sizes, [10, 10, 10, 10, 5]);
  assert.deepEqual(more, [true, true, true, true, false]);

  // the raw cursor shape
  let r = await request('GET', `${d.base}/v1/batches?limit=45`, { key });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'list');
  assert.equal(r.json.has_more, false);
  assert.equal(r.json.first_id, newestFirst[0]);
  assert.equal(r.json.last_id, newestFirst[44]);
  r = await request('GET', `${d.base}/v1/batches?limit=44`, { key });
  assert.equal(r.json.has_more, true);
  assert.equal(r.json.data.length, 44);
  r = await request('GET', `${d.base}/v1/batches`, { key });
  assert.equal(r.json.data.length, 20, 'default limit 20');
  assert.equal(r.json.has_more, true);
  r = await request('GET', `${d.base}/v1/batches?after=${newestFirst[39]}&limit=5`, { key });
  assert.deepEqual(r.json.data.map((b) => b.id), newestFirst.slice(40));
  assert.equal(r.json.has_more, false, 'exactly the last 5: no more');
  r = await request('GET', `${d.base}/v1/batches?after=${newestFirst[44]}`, { key });
  assert.deepEqual(r.json.data, []);
  assert.equal(r.json.has_more, false);
  assert.equal(r.json.first_id ?? null, null);
  for (const bad of ['0', '101', 'x'])
    assert.equal((await request('GET', `${d.base}/v1/batches?limit=${bad}`, { key })).status, 400, `limit=${bad}`);

  // another key sees none of them
  const other = [];
  for await (const b of client(d.base, 'kfiles').batches.list({ limit: 100 })) other.push(b.id);
  assert.ok(!other.some((id) => ids.includes(id)));
});

test('SDK: batches.cancel on a slow batch ends cancelled with partial output', async () => {
  const slow = await slowDaemon();
  const c = client(slow.base);
  const lines = [];
  for (let i = 0; i < 20; i++) lines.push(chatLine(`slow-${i}`, `[mock:delay=1500] slow ${i}`));
  const f = await c.files.create({ file: await sdk.toFile(Buffer.from(jsonl(lines)), 'slow.jsonl'), purpose: 'batch' });
  const created = await c.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' });

  // cancel once some lines have finished and most are still queued
  const deadline = Date.now() + 20000;
  let b;
  for (;;) {
    b = await c.batches.retrieve(created.id);
    if (b.request_counts.completed >= 2) break;
    assert.ok(Date.now() < deadline, `no line finished: ${JSON.stringify(b)}`);
    await sleep(100);
  }
  assert.equal(b.status, 'in_progress');
  assert.ok(b.request_counts.completed < 10, `most lines still queued: ${JSON.stringify(b.request_counts)}`);
  const activeBatches = async () => Number(((await request('GET', slow.base + '/metrics')).text
    .match(/^slowlane_batches_active (\d+)$/m) || [])[1]);
  const activeDuring = await activeBatches();
  assert.ok(activeDuring >= 1, `/metrics counts the batch in progress (${activeDuring})`);
  // The input of a batch that has not ended cannot be deleted (a restart re-reads it).
  await assert.rejects(c.files.delete(f.id), (e) => e.status === 409 && e.code === 'file_in_use' &&
    e.message.includes(created.id));
  assert.equal((await c.files.retrieve(f.id)).id, f.id, 'the file is still there');
  const cancelled = await c.batches.cancel(created.id);
  assert.equal(cancelled.id, created.id);
  assert.ok(['cancelling', 'cancelled'].includes(cancelled.status), cancelled.status);
  assert.equal(typeof cancelled.cancelling_at, 'number');

  b = await sdkWait(c, created.id, ['cancelled', 'completed', 'failed', 'expired'], 20000);
  assert.equal(b.status, 'cancelled', JSON.stringify(b));
  assert.equal(await activeBatches(), activeDuring - 1, 'and no longer once it has ended');
  assert.deepEqual(await c.files.delete(f.id), { id: f.id, object: 'file', deleted: true },
    'once the batch has ended, its input can go');
  assertTimes(b, ['in_progress_at', 'cancelling_at', 'cancelled_at']);
  assert.equal(b.completed_at, null);
  const rc = b.request_counts;
  assert.equal(rc.total, 20);
  // The counts cover what ran, as OpenAI's (an expired batch of theirs
  // reads {total: 10, completed: 1, failed: 0}): the lines cancelled
  // before their call are in the error file but not counted failed.
  assert.ok(rc.completed + rc.failed < 20, `not every line ran: ${JSON.stringify(rc)}`);
  assert.ok(rc.completed >= 2 && rc.completed <= 8, `partial: ${JSON.stringify(rc)}`);

  assert.match(b.output_file_id, FILE_ID_RE);
  assert.match(b.error_file_id, FILE_ID_RE);
  const out = parseJsonl(await sdkContent(c, b.output_file_id));
  const errs = parseJsonl(await sdkContent(c, b.error_file_id));
  assert.equal(out.length, rc.completed);
  assert.equal(errs.length, rc.total - rc.completed, 'every line that did not succeed has an error line');
  assert.ok(rc.failed <= 4, `failed: only the calls in flight at the cancel (${rc.failed})`);
  for (const l of out) assertOutputLine(l, `[mock:delay=1500] slow ${l.custom_id.slice(5)}`);
  for (const l of errs) {
    assert.equal(l.response, null, JSON.stringify(l));
    assert.equal(l.error.code, 'batch_cancelled', JSON.stringify(l));
    assert.equal(typeof l.error.message, 'string');
  }
  const all = [...out, ...errs].map((l) => l.custom_id);
  assert.equal(new Set(all).size, 20);
  assert.deepEqual(new Set(all), new Set(lines.map((l) => JSON.parse(l).custom_id)));
  // usage covers what really ran
  assert.equal(b.usage.total_tokens, sumUsage(out).total_tokens);

  // cancelling an ended batch answers it as it is
  const again = await c.batches.cancel(created.id);
  assert.equal(again.status, 'cancelled');
});

test('SDK: batches.cancel right after create (while validating or expanding) cancels every line that did not run', async (t) => {
  const slow = await slowDaemon();
  const c = client(slow.base);
  const N = 600;
  const lines = [];
  for (let i = 0; i < N; i++) lines.push(chatLine(`early-${i}`, `[mock:delay=1000] early ${i}`));
  const f = await c.files.create({ file: await sdk.toFile(Buffer.from(jsonl(lines)), 'early.jsonl'), purpose: 'batch' });
  const created = await c.batches.create({ input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  const cancelled = await c.batches.cancel(created.id);
  assert.ok(['cancelling', 'cancelled'].includes(cancelled.status), cancelled.status);
  t.diagnostic(`cancelled at total ${cancelled.request_counts.total} (0: still validating)`);
  const b = await sdkWait(c, created.id, ['cancelled', 'completed', 'failed', 'expired'], 20000);
  assert.equal(b.status, 'cancelled', JSON.stringify(b));
  const rc = b.request_counts;
  assert.equal(rc.total, N);
  assert.ok(rc.completed + rc.failed <= 4, `at most the lines in flight ran: ${JSON.stringify(rc)}`);
  const errs = parseJsonl(await sdkContent(c, b.error_file_id));
  const out = b.output_file_id ? parseJsonl(await sdkContent(c, b.output_file_id)) : [];
  assert.equal(out.length, rc.completed);
  assert.equal(errs.length, N - rc.completed, 'every line that did not succeed has an error line');
  for (const l of errs) assert.equal(l.error?.code, 'batch_cancelled', JSON.stringify(l));
  assert.equal(new Set([...out, ...errs].map((l) => l.custom_id)).size, N);
});

test('SDK: files.list, retrieve, content and delete; files are owned by their key', async () => {
  const key = 'kfiles';
  const c = client(d.base, key);
  const made = [];
  for (let i = 0; i < 5; i++) {
    const purpose = i % 2 ? 'user_data' : 'batch';
    const body = purpose === 'batch' ? jsonl([chatLine(`f${i}`, `file ${i}`)]) : `plain text ${i}\nnot json\n`;
    const f = await c.files.create({ file: await sdk.toFile(Buffer.from(body), `f${i}.txt`), purpose });
    assert.equal(f.purpose, purpose);
    assert.equal(f.bytes, Buffer.byteLength(body));
    made.push({ ...f, body });
    await sleep(2);
  }
  // default order: newest first
  const listed = [];
  for await (const f of c.files.list({ limit: 2 })) listed.push(f.id);
  assert.deepEqual(listed, made.map((f) => f.id).reverse());
  const batchOnly = [];
  for await (const f of c.files.list({ purpose: 'batch', limit: 1 })) batchOnly.push(f.id);
  assert.deepEqual(batchOnly, made.filter((f) => f.purpose === 'batch').map((f) => f.id).reverse());
  const asc = [];
  for await (const f of c.files.list({ order: 'asc', limit: 2 })) asc.push(f.id);
  assert.deepEqual(asc, made.map((f) => f.id));
  let r = await request('GET', `${d.base}/v1/files?limit=5`, { key });
  assert.equal(r.json.has_more, false);
  assert.equal(r.json.first_id, made[4].id);
  assert.equal(r.json.last_id, made[0].id);
  r = await request('GET', `${d.base}/v1/files?limit=4`, { key });
  assert.equal(r.json.has_more, true);
  r = await request('GET', `${d.base}/v1/files?after=${made[1].id}&order=asc`, { key });
  assert.deepEqual(r.json.data.map((f) => f.id), made.slice(2).map((f) => f.id));
  for (const q of ['limit=0', 'limit=10001', 'order=up'])
    assert.equal((await request('GET', `${d.base}/v1/files?${q}`, { key })).status, 400, q);

  const got = await c.files.retrieve(made[1].id);
  const { body: _body, ...made1 } = made[1];
  assert.deepEqual({ ...got }, made1);
  assert.equal(got.filename, 'f1.txt');
  assert.equal(await sdkContent(c, made[1].id), made[1].body);

  // another key cannot see, read or delete it
  const k1 = client();
  await assert.rejects(k1.files.retrieve(made[1].id), (e) => e.status === 404);
  await assert.rejects(k1.files.content(made[1].id), (e) => e.status === 404);
  await assert.rejects(k1.files.delete(made[1].id), (e) => e.status === 404);
  // nor page after it: that would tell it exists (found: 200, an empty page)
  await assert.rejects(k1.files.list({ after: made[1].id }), (e) => e.status === 400);
  const k1list = [];
  for await (const f of k1.files.list()) k1list.push(f.id);
  assert.ok(!made.some((f) => k1list.includes(f.id)));

  const del = await c.files.delete(made[1].id);
  assert.deepEqual({ ...del }, { id: made[1].id, object: 'file', deleted: true });
  await assert.rejects(c.files.retrieve(made[1].id), (e) => e instanceof sdk.NotFoundError);
  await assert.rejects(c.files.content(made[1].id), (e) => e.status === 404);
  await assert.rejects(c.files.delete(made[1].id), (e) => e.status === 404);
  const after = [];
  for await (const f of c.files.list()) after.push(f.id);
  assert.deepEqual(after, made.filter((_, i) => i !== 1).map((f) => f.id).reverse());
});

test('SDK: deleting every file while auto-paginating files.list (limit 2): no page is lost, nothing left', async () => {
  const c = client(d.base, 'kdel');
  const made = [];
  for (let i = 0; i < 7; i++)
    made.push((await c.files.create({ file: await sdk.toFile(Buffer.from(jsonl([chatLine(`del-${i}`, 'x')])), `del-${i}.jsonl`), purpose: 'batch' })).id);
  const seen = [];
  for await (const f of c.files.list({ limit: 2 })) {
    seen.push(f.id);
    await c.files.delete(f.id); // the page's last id is gone when the SDK asks for the next
  }
  assert.deepEqual([...seen].sort(), [...made].sort(), 'every file listed once, then deleted');
  assert.deepEqual((await c.files.list()).data, [], 'none left');
  // ascending too, and a deleted file as `after` is still a place, not an error
  const more = [];
  for (let i = 0; i < 3; i++)
    more.push((await c.files.create({ file: await sdk.toFile(Buffer.from(jsonl([chatLine(`asc-${i}`, 'x')])), `asc-${i}.jsonl`), purpose: 'batch' })).id);
  const page = await c.files.list({ after: made[0], order: 'asc' });
  assert.deepEqual(page.data.map((f) => f.id), more, 'after a deleted file: the ones made after it');
  await assert.rejects(c.files.retrieve(made[0]), (e) => e.status === 404, 'a deleted file is gone');
  await assert.rejects(c.files.delete(made[0]), (e) => e.status === 404, 'and cannot be deleted twice');
});

test('Idempotency-Key on POST /v1/files: same request -> the first answer, other bytes -> 409', async () => {
  const key = 'kidem';
  const body = jsonl([chatLine('i1', 'idem one')]);
  const h = { 'Idempotency-Key': 'file-key-1' };
  const a = await upload(d.base, body, { key, headers: h });
  assert.equal(a.status, 200, a.text);
  const b = await upload(d.base, body, { key, headers: h });
  assert.equal(b.status, 200, b.text);
  assert.deepEqual(b.json, a.json);
  const other = await upload(d.base, jsonl([chatLine('i2', 'idem two')]), { key, headers: h });
  assert.equal(other.status, 409, other.text);
  assert.equal(errorOf(other).code, 'idempotency_key_reused');
  // keys are per API key
  const k2 = await upload(d.base, body, { key: 'k2', headers: h });
  assert.equal(k2.status, 200, k2.text);
  assert.notEqual(k2.json.id, a.json.id);
  const r = await request('GET', `${d.base}/v1/files?limit=100`, { key });
  assert.deepEqual(r.json.data.map((f) => f.id), [a.json.id], 'one file stored');
});

test('Idempotency-Key on POST /v1/files: the same bytes with another purpose are another request -> 409', async () => {
  const key = 'kidem2';
  const body = jsonl([chatLine('p1', 'purpose matters')]);
  const h = { 'Idempotency-Key': 'file-key-purpose' };
  const a = await upload(d.base, body, { key, headers: h, purpose: 'batch' });
  assert.equal(a.status, 200, a.text);
  const b = await upload(d.base, body, { key, headers: h, purpose: 'user_data' });
  assert.equal(b.status, 409, `POST /v1/files purpose=user_data, same bytes and Idempotency-Key as an ` +
    `earlier purpose=batch upload: expected 409, got ${b.status} ${b.text}`);
});

test('Idempotency-Key on POST /v1/batches: same request -> the same batch, another request -> 409', async () => {
  const key = 'kidem';
  const f = await uploadOk(d.base, jsonl([chatLine('b1', 'idem batch')]), { key });
  const body = { input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { x: '1' } };
  const h = { 'Idempotency-Key': 'batch-key-1' };
  const a = await createBatch(d.base, body, { key, headers: h });
  assert.equal(a.status, 200, a.text);
  const b = await createBatch(d.base, body, { key, headers: h });
  assert.equal(b.status, 200, b.text);
  assert.equal(b.json.id, a.json.id);
  const c = await createBatch(d.base, { ...body, metadata: { x: '2' } }, { key, headers: h });
  assert.equal(c.status, 409, c.text);
  assert.equal(errorOf(c).code, 'idempotency_key_reused');
  const k2file = await uploadOk(d.base, jsonl([chatLine('b1', 'idem batch')]), { key: 'k2' });
  const k2 = await createBatch(d.base, { ...body, input_file_id: k2file.id }, { key: 'k2', headers: h });
  assert.equal(k2.status, 200, k2.text);
  assert.notEqual(k2.json.id, a.json.id);

  const list = await request('GET', `${d.base}/v1/batches?limit=100`, { key });
  assert.deepEqual(list.json.data.map((x) => x.id), [a.json.id], 'one batch stored');
  const done = await waitBatch(d.base, a.json.id, { key });
  assert.equal(done.status, 'completed');
  // replayed after it completed: still the first answer
  const again = await createBatch(d.base, body, { key, headers: h });
  assert.equal(again.status, 200);
  assert.deepEqual(again.json, a.json);
});

test('Idempotency-Key: a create retried while the first is still in flight makes one object', async () => {
  // 10 identical requests arriving together, as an SDK retrying after a
  // timeout (or a proxy replaying) may send them.
  const key = 'kidem3';
  const problems = [];
  const fileBody = jsonl([chatLine('c1', 'concurrent')]);
  const mp = multipart(fileBody);
  const files = await burst(d.base, {
    path: '/v1/files', body: mp.body,
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': mp.contentType, 'Idempotency-Key': 'conc-file' },
  }, 10);
  for (const x of files) assert.equal(x.status, 200, x.text);
  const fileIds = new Set(files.map((x) => x.json.id));
  let r = await request('GET', `${d.base}/v1/files?limit=100`, { key });
  if (fileIds.size !== 1 || r.json.data.length !== 1)
    problems.push(`10 concurrent POST /v1/files with one Idempotency-Key answered ${fileIds.size} ids and stored ${r.json.data.length} files`);

  const body = { input_file_id: files[0].json.id, endpoint: '/v1/chat/completions', completion_window: '24h' };
  const batches = await burst(d.base, {
    path: '/v1/batches', body: Buffer.from(JSON.stringify(body)),
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json', 'Idempotency-Key': 'conc-batch' },
  }, 10);
  for (const x of batches) assert.equal(x.status, 200, x.text);
  const batchIds = new Set(batches.map((x) => x.json.id));
  r = await request('GET', `${d.base}/v1/batches?limit=100`, { key });
  if (batchIds.size !== 1 || r.json.data.length !== 1)
    problems.push(`10 concurrent POST /v1/batches with one Idempotency-Key answered ${batchIds.size} ids and stored ${r.json.data.length} batches`);
  assert.deepEqual(problems, []);
});
