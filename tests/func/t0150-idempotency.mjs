// Idempotency-Key on the async creates (API.md section 3: "Honour an
// Idempotency-Key header on every POST that creates something (same key
// and same body: the first answer again)"): single and group submits and
// webhook registrations. A retry gets the first answer and stores nothing
// more, also when the retries race and after a kill -9; the same key with
// another body is 409; keys are per API key.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, request, healthz, poll, chatBody, completionBody, errorOf } from './lib.mjs';

const K1 = 'k1-idem';
const K2 = 'k2-idem';
let d;

before(async () => {
  d = await startDaemon({ args: ['--api-key', K1, '--api-key', K2, '--webhook-allow-http', '--webhook-allow-private'] });
});

const post = (p, body, { key = K1, idem } = {}) => request('POST', `${d.base}${p}`,
  { key, body, headers: idem ? { 'Idempotency-Key': idem } : {} });

async function stored() {
  const j = (await healthz(d.base)).jobs;
  return j.queued + j.in_progress + j.success + j.failed;
}

// Waits for the journal's jobs to be counted (healthz counts stored jobs).
async function settledCount(want) {
  for (let i = 0; i < 100; i++) {
    const n = await stored();
    if (n === want) return n;
    await new Promise((r) => setTimeout(r, 20));
  }
  return stored();
}

test('single submits: a retry with the same key and body gets the first answer and stores nothing more', async () => {
  const n0 = await stored();
  const body = chatBody('idem single');
  const a = await post('/v1/slow/chat/completions', body, { idem: 'single-1' });
  assert.equal(a.status, 200, a.text);
  for (const p of ['/v1/slow/chat/completions', '/v1/async/chat/completions']) {
    const b = await post(p, body, { idem: 'single-1' });
    assert.equal(b.status, 200, b.text);
    assert.deepEqual(b.json, a.json, `${p}: the first answer again`);
  }
  assert.equal(await settledCount(n0 + 1), n0 + 1, 'one job stored');
  // the same key with another body is refused, and stores nothing
  const c = await post('/v1/slow/chat/completions', chatBody('another body'), { idem: 'single-1' });
  assert.equal(c.status, 409, c.text);
  const e = errorOf(c);
  assert.equal(e.code, 'idempotency_key_reused');
  assert.equal(e.param, 'Idempotency-Key');
  // one key names one request: the same key and body sent to another
  // endpoint is another request (found: POST /v1/batches answered with
  // this chat.completion)
  for (const p of ['/v1/slow/completions', '/v1/batches']) {
    const o = await post(p, body, { idem: 'single-1' });
    assert.equal(o.status, 409, `${p}: ${o.text}`);
    assert.equal(errorOf(o).code, 'idempotency_key_reused', p);
  }
  // keys are per API key: K2's 'single-1' is its own
  const k2 = await post('/v1/slow/chat/completions', body, { key: K2, idem: 'single-1' });
  assert.equal(k2.status, 200, k2.text);
  assert.notEqual(k2.json.id, a.json.id);
  // without a key, the same body is another job
  const x = await post('/v1/slow/chat/completions', body);
  const y = await post('/v1/slow/chat/completions', body);
  assert.notEqual(x.json.id, y.json.id);
  assert.equal(await settledCount(n0 + 4), n0 + 4);
  // the job itself runs once and is polled under the first id
  const g = await poll(d.base, a.json.id, { key: K1 });
  assert.equal(g.state, 'Success', JSON.stringify(g));
});

test('completions and groups too; racing retries make one object', async () => {
  const n0 = await stored();
  const comp = completionBody('idem completion');
  const [c1, c2] = await Promise.all([1, 2].map(() => post('/v1/slow/completions', comp, { idem: 'comp-1' })));
  assert.equal(c1.status, 200, c1.text);
  assert.deepEqual(c2.json, c1.json);
  assert.equal(c1.json.object, 'text_completion');

  const group = { requests: [chatBody('g one'), chatBody('g two'), chatBody('g three')] };
  const answers = await Promise.all(Array.from({ length: 6 }, () =>
    post('/v1/async/group/chat/completions', group, { idem: 'group-1' })));
  for (const r of answers) assert.equal(r.status, 200, r.text);
  assert.equal(new Set(answers.map((r) => r.json.groupId)).size, 1, 'one group for six racing retries');
  assert.equal(answers[0].json.groupSize, 3);
  assert.equal(await settledCount(n0 + 1 + 3), n0 + 4, 'one completion and one group of three stored');
  const other = await post('/v1/async/group/chat/completions', { requests: [chatBody('g one')] }, { idem: 'group-1' });
  assert.equal(other.status, 409, other.text);
});

test('webhook registration: a retry gets the same id and secret, one registration', async () => {
  const body = { url: 'http://127.0.0.1:9/idem-hook' };
  const a = await post('/v1/webhooks', body, { idem: 'hook-1' });
  assert.equal(a.status, 200, a.text);
  assert.match(a.json.secret, /^whsec_/);
  const b = await post('/v1/webhooks', body, { idem: 'hook-1' });
  assert.deepEqual(b.json, a.json);
  const list = await request('GET', `${d.base}/v1/webhooks`, { key: K1 });
  assert.equal(list.json.data.filter((w) => w.url === body.url).length, 1);
  const c = await post('/v1/webhooks', { url: 'http://127.0.0.1:9/other' }, { idem: 'hook-1' });
  assert.equal(c.status, 409, c.text);
});

test('the first answer survives a kill -9: a retry after the restart gets it, nothing stored twice', async () => {
  const body = chatBody('idem across a crash');
  const a = await post('/v1/slow/chat/completions', body, { idem: 'crash-1' });
  assert.equal(a.status, 200, a.text);
  const n0 = await stored();
  await d.restart();
  const b = await post('/v1/slow/chat/completions', body, { idem: 'crash-1' });
  assert.equal(b.status, 200, b.text);
  assert.deepEqual(b.json, a.json);
  assert.equal(await stored(), n0, 'nothing more stored');
});

test('--idempotency-keep: past it the record is deleted, and the key names a new request', async () => {
  const d2 = await startDaemon({ args: ['--api-key', K1, '--idempotency-keep', '1s'] });
  try {
    const p = (body) => request('POST', `${d2.base}/v1/slow/chat/completions`,
      { key: K1, body, headers: { 'Idempotency-Key': 'short-lived' } });
    const a = await p(chatBody('kept a second'));
    assert.equal(a.status, 200, a.text);
    const early = await p(chatBody('another body, too early'));
    assert.equal(early.status, 409, 'within the keep the key is taken');
    let later;
    for (let i = 0; i < 50; i++) { // the walk takes a step per 1 s tick
      await new Promise((r) => setTimeout(r, 200));
      later = await p(chatBody('another body, later'));
      if (later.status === 200) break;
    }
    assert.equal(later.status, 200, `the record went: ${later.text}`);
    assert.notEqual(later.json.id, a.json.id);
    assert.match(d2.log(), /deleted 1 Idempotency-Key record/);
  } finally {
    await d2.kill9();
  }
});
