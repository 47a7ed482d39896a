// Clean shutdown: SIGTERM/SIGINT stop the daemon with exit status 0; calls
// in flight get --shutdown-grace to finish, the rest go back to the queue and
// run after a restart.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submitOk, get, poll, waitAll, healthz, sleep, chatBody, TIME_SCALE,
} from './lib.mjs';

let mock;
const CHAT = '/v1/slow/chat/completions';

before(async () => {
  mock = await startMock({ latency: 3000 });
});

async function waitInFlight(n, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = await mock.stats();
    if (st.in_flight >= n) return st;
    if (Date.now() > deadline) throw new Error(`mock: ${st.in_flight} calls in flight, wanted ${n}`);
    await sleep(25);
  }
}

test('SIGTERM with calls in flight: exit 0 after the grace, the jobs run again after restart', async () => {
  const d = await startDaemon({
    upstream: mock.url,
    args: ['--shutdown-grace', '500ms', '--concurrency', '2'],
  });
  const texts = Array.from({ length: 5 }, (_, i) => `interrupted ${i}`);
  const ids = [];
  for (const t of texts) ids.push(await submitOk(d.base, CHAT, chatBody(t, { metadata: { custom_id: t } })));
  await waitInFlight(2);
  const inProgress = (await healthz(d.base)).jobs.in_progress;
  assert.equal(inProgress, 2, 'two calls in flight (--concurrency 2), three queued');

  const code = await d.term(15000);
  assert.equal(d.exitSignal, null, 'exited by itself, not killed');
  assert.equal(code, 0, `exit status 0; log:\n${d.log().slice(-2000)}`);
  assert.ok(d.exitMs < 4000 * TIME_SCALE, `exited within ${4 * TIME_SCALE} s of SIGTERM (took ${d.exitMs} ms; grace 500 ms, calls need 3 s)`);
  const st = await mock.stats();
  for (const t of texts) assert.ok((st.by_echo[t] || 0) <= 1, `${t} called at most once before the stop`);

  await d.restart();
  // nothing was lost or failed by the stop
  for (const id of ids) {
    const r = await get(d.base, id);
    assert.equal(r.status, 200);
    assert.ok(['Queued', 'In Progress'].includes(r.json.state), `${id}: ${r.json.state} ${r.json.stateMessage}`);
    assert.equal(r.json.response, null);
  }
  const gens = await waitAll(d.base, ids, { timeoutMs: 30000 });
  ids.forEach((id, i) => {
    const g = gens.get(id);
    assert.equal(g.state, 'Success', g.stateMessage);
    assert.equal(g.response.choices[0].message.content, texts[i]);
    assert.equal(g.request.metadata.custom_id, texts[i]);
  });
  const after = await mock.stats();
  assert.equal(after.by_echo[texts[0]], 2, 'an interrupted call is made again');
  assert.equal(after.by_echo[texts[1]], 2, 'an interrupted call is made again');
  for (const t of texts.slice(2)) assert.equal(after.by_echo[t], 1, `${t} was queued: one call`);
  assert.equal(await d.term(15000), 0);
});

test('SIGTERM with a long grace lets a short call finish before exit', async () => {
  const d = await startDaemon({ upstream: mock.url, args: ['--shutdown-grace', '15s'] });
  const text = 'finish me first [mock:delay=1000]';
  const id = await submitOk(d.base, CHAT, chatBody(text));
  await poll(d.base, id, { until: ['In Progress', 'Success', 'Failed'], timeoutMs: 10000 });
  await waitInFlight(1);
  const code = await d.term(20000);
  assert.equal(code, 0, `exit status 0; log:\n${d.log().slice(-2000)}`);
  assert.ok(d.exitMs < 10000 * TIME_SCALE, `exited once the call ended (took ${d.exitMs} ms)`);
  assert.equal((await mock.stats()).by_echo[text], 1);

  await d.restart();
  const r = await get(d.base, id);
  assert.equal(r.status, 200);
  assert.equal(r.json.state, 'Success', `finished before the exit: ${r.json.stateMessage}`);
  assert.equal(r.json.response.choices[0].message.content, text);
  await sleep(300);
  assert.equal((await mock.stats()).by_echo[text], 1, 'not run again after the restart');
  assert.equal(await d.term(15000), 0);
});

test('SIGINT also shuts down cleanly and the data survives', async () => {
  const d = await startDaemon({ args: ['--load-test-delay', '10ms'] });
  const id = await submitOk(d.base, CHAT, chatBody('before SIGINT'));
  assert.equal((await poll(d.base, id)).state, 'Success');
  assert.equal(await d.term(15000, 'SIGINT'), 0);
  await d.restart();
  const r = await get(d.base, id);
  assert.equal(r.json.state, 'Success');
  assert.equal(r.json.response.choices[0].message.content, 'before SIGINT');
});
