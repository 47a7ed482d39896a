// Upstream failures: retryable ones (connection errors, timeouts, 408, 409,
// 429, 5xx) are retried with backoff honouring Retry-After up to
// --max-attempts, other 4xx fail at once keeping the upstream's error body,
// and a reply that is not JSON is a failure, not a crash.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submitOk, get, poll, healthz, sleep, chatBody, completionBody,
} from './lib.mjs';

let mock;
let d;
const CHAT = '/v1/slow/chat/completions';
const uniq = () => Math.random().toString(36).slice(2, 10);

before(async () => {
  mock = await startMock({ latency: 0 });
  d = await startDaemon({
    upstream: mock.url,
    args: ['--retry-base', '100ms', '--max-attempts', '3', '--upstream-timeout', '1s'],
  });
});

async function calls(text) {
  return (await mock.stats()).by_echo[text] || 0;
}

async function run(text, timeoutMs = 20000) {
  const t0 = Date.now();
  const id = await submitOk(d.base, CHAT, chatBody(text));
  const g = await poll(d.base, id, { timeoutMs });
  return { id, g, elapsed: Date.now() - t0 };
}

test('503 twice then success: Success after exactly 3 calls', async () => {
  const text = `retry then ok ${uniq()} [mock:fail=2,status=503]`;
  const { g } = await run(text);
  assert.equal(g.state, 'Success', g.stateMessage);
  assert.equal(g.stateMessage, 'Generation successful');
  assert.equal(g.response.choices[0].message.content, text);
  assert.equal(await calls(text), 3);
});

test('429 with Retry-After: 1 is honoured before the retry', async () => {
  const text = `rate limited ${uniq()} [mock:fail=1,status=429,retry-after=1]`;
  const t0 = Date.now();
  const id = await submitOk(d.base, CHAT, chatBody(text));
  // while it waits for its retry it says so
  let seen = null;
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    const r = await get(d.base, id);
    if (r.json && r.json.state !== 'In Progress' && /retry/i.test(r.json.stateMessage || '')) { seen = r.json; break; }
    if (r.json && ['Success', 'Failed'].includes(r.json.state)) break;
    await sleep(50);
  }
  assert.ok(seen, 'saw the job waiting for its retry');
  assert.equal(seen.state, 'Queued');
  assert.match(seen.stateMessage, /429/);
  assert.equal(seen.response, null);

  const g = await poll(d.base, id, { timeoutMs: 15000 });
  const elapsed = Date.now() - t0;
  assert.equal(g.state, 'Success', g.stateMessage);
  assert.ok(elapsed >= 950, `finished ${elapsed} ms after submit, expected >= 1 s (Retry-After)`);
  assert.ok(Date.parse(g.finishedAt) - Date.parse(g.createdAt) >= 950,
    `createdAt ${g.createdAt} .. finishedAt ${g.finishedAt} spans Retry-After`);
  assert.equal(await calls(text), 2);
});

test('500 every time: Failed after 3 attempts, naming the status', async () => {
  const text = `always 500 ${uniq()} [mock:status=500]`;
  const { g } = await run(text);
  assert.equal(g.state, 'Failed');
  assert.match(g.stateMessage, /3 attempts/);
  assert.match(g.stateMessage, /500/);
  assert.match(g.finishedAt, /Z$/);
  assert.equal(await calls(text), 3);
});

test('400 fails at once and keeps the upstream error body', async () => {
  const text = `bad request ${uniq()} [mock:status=400]`;
  const { g } = await run(text);
  assert.equal(g.state, 'Failed');
  assert.match(g.stateMessage, /400/);
  assert.doesNotMatch(g.stateMessage, /attempts/);
  assert.ok(g.response && g.response.error, `response holds the upstream error: ${JSON.stringify(g.response)}`);
  assert.equal(g.response.error.message, 'mock error 400');
  assert.equal(g.response.error.code, 'mock_400');
  await sleep(400); // a retry would come after 100 ms
  assert.equal(await calls(text), 1);
});

test('retryable statuses 408, 409, 502, 504 are retried', async () => {
  const texts = [408, 409, 502, 504].map((s) => `once ${s} ${uniq()} [mock:fail=1,status=${s}]`);
  const res = await Promise.all(texts.map((t) => run(t)));
  for (let i = 0; i < texts.length; i++) {
    assert.equal(res[i].g.state, 'Success', `${texts[i]}: ${res[i].g.stateMessage}`);
    assert.equal(await calls(texts[i]), 2, texts[i]);
  }
});

test('other 4xx (401, 403, 404, 422) are not retried', async () => {
  const texts = [401, 403, 404, 422].map((s) => `final ${s} ${uniq()} [mock:status=${s}]`);
  const res = await Promise.all(texts.map((t) => run(t)));
  await sleep(400);
  for (let i = 0; i < texts.length; i++) {
    const { g } = res[i];
    const s = texts[i].split(' ')[1];
    assert.equal(g.state, 'Failed', texts[i]);
    assert.match(g.stateMessage, new RegExp(s));
    assert.equal(g.response.error.message, `mock error ${s}`);
    assert.equal(await calls(texts[i]), 1, texts[i]);
  }
});

test('an answer that is not JSON: Failed after 3 calls, daemon healthy', async () => {
  const text = `garbage ${uniq()} [mock:invalid-json]`;
  const { g } = await run(text);
  assert.equal(g.state, 'Failed');
  assert.match(g.stateMessage, /JSON/);
  // what came back is kept as an OpenAI error object, its code a string
  // (found: the number 200)
  assert.equal(g.response.error.type, 'upstream_error');
  assert.equal(g.response.error.code, 'upstream_http_200');
  assert.equal(typeof g.response.error.message, 'string');
  assert.equal(await calls(text), 3);
  assert.equal((await healthz(d.base)).status, 'ok');
  // and it keeps serving
  const ok = await run(`after garbage ${uniq()}`);
  assert.equal(ok.g.state, 'Success');
});

test('a hanging upstream times out (--upstream-timeout 1s)', async () => {
  const text = `hang ${uniq()} [mock:hang]`;
  const { g, elapsed } = await run(text, 30000);
  assert.equal(g.state, 'Failed');
  assert.match(g.stateMessage, /timed out/);
  assert.ok(elapsed >= 2900, `3 attempts of 1 s each take >= 3 s, took ${elapsed} ms`);
  assert.equal(await calls(text), 3);
});

test('an upstream that refuses connections: Failed with a connection error', async () => {
  const gone = await startMock();
  const url = gone.url;
  await gone.stop();
  const d2 = await startDaemon({ upstream: url, args: ['--retry-base', '100ms', '--max-attempts', '3'] });
  try {
    const id = await submitOk(d2.base, '/v1/slow/completions', completionBody('nobody home'));
    const g = await poll(d2.base, id, { timeoutMs: 20000 });
    assert.equal(g.state, 'Failed');
    assert.match(g.stateMessage, /connection/);
    assert.match(g.stateMessage, /3 attempts/);
    assert.equal((await healthz(d2.base)).jobs.failed, 1);
  } finally {
    await d2.kill9();
  }
});
