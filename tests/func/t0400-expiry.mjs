// Expiry (--job-ttl): a job not finished in time ends Failed saying it
// expired, whether it was queued, in flight (the call is abandoned and its
// slot freed) or waiting for a retry.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submitOk, get, poll, waitAll, healthz, sleep, chatBody, ISO_MS_RE,
} from './lib.mjs';

let mock;
let d;
const CHAT = '/v1/slow/chat/completions';

before(async () => {
  mock = await startMock({ latency: 0 });
  // retry-base 10s: a failed call waits at least 5 s (jitter 0.5..1) for its retry
  d = await startDaemon({
    upstream: mock.url,
    args: ['--job-ttl', '2s', '--concurrency', '1', '--retry-base', '10s'],
  });
});

function checkExpired(g, what) {
  assert.equal(g.state, 'Failed', `${what}: ${g.state} ${g.stateMessage}`);
  assert.match(g.stateMessage, /expired/i, what);
  assert.match(String(g.finishedAt), ISO_MS_RE, `${what}: finishedAt`);
  const lived = Date.parse(g.finishedAt) - Date.parse(g.createdAt);
  assert.ok(lived >= 1900, `${what}: expired after ${lived} ms, not before its 2 s ttl`);
  assert.ok(lived <= 6000, `${what}: expired after ${lived} ms, later than ~6 s`);
}

test('a hung in-flight job and the jobs queued behind it all expire', async () => {
  const t0 = Date.now();
  const hung = await submitOk(d.base, CHAT, chatBody('hang forever [mock:hang]'));
  // it holds the only slot
  const inflight = await poll(d.base, hung, { until: ['In Progress', 'Success', 'Failed'], timeoutMs: 5000 });
  assert.equal(inflight.state, 'In Progress');
  // queued behind it; were one dispatched in the instant the slot frees, the
  // mock holds it long past its ttl
  const queued = [];
  for (let i = 0; i < 3; i++)
    queued.push(await submitOk(d.base, CHAT, chatBody(`behind the hung one ${i} [mock:delay=20000]`)));
  for (const id of queued) {
    const r = await get(d.base, id);
    assert.equal(r.json.state, 'Queued', 'waits for the slot');
  }

  const gens = await waitAll(d.base, [hung, ...queued], { timeoutMs: 8000, intervalMs: 50 });
  const elapsed = Date.now() - t0;
  assert.ok(elapsed <= 7000, `all expired within ~6 s (took ${elapsed} ms)`);
  checkExpired(gens.get(hung), 'in-flight job');
  assert.equal(gens.get(hung).response, null);
  queued.forEach((id, i) => checkExpired(gens.get(id), `queued job ${i}`));
  const h = await healthz(d.base);
  assert.equal(h.jobs.failed, 4);
  assert.equal(h.jobs.in_progress, 0);
  assert.equal(h.jobs.queued, 0);
});

test('the slot of the abandoned call is free: a new job succeeds', async () => {
  const id = await submitOk(d.base, CHAT, chatBody('after expiry'));
  const g = await poll(d.base, id, { timeoutMs: 10000 });
  assert.equal(g.state, 'Success', g.stateMessage);
  assert.equal(g.response.choices[0].message.content, 'after expiry');
  // the hung call was abandoned: the mock sees its connection go
  const deadline = Date.now() + 10000;
  let st;
  while (Date.now() < deadline) {
    st = await mock.stats();
    if (st.in_flight === 0) break;
    await sleep(100);
  }
  assert.equal(st.in_flight, 0, 'the hung upstream call was closed');
});

test('a job waiting for its retry expires too', async () => {
  const text = 'fails then waits [mock:status=503]';
  const id = await submitOk(d.base, CHAT, chatBody(text));
  const g = await poll(d.base, id, { timeoutMs: 10000 });
  checkExpired(g, 'job waiting for retry');
  assert.equal((await mock.stats()).by_echo[text], 1, 'one call, the retry never came');
});
