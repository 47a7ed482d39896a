// The durability test: 2000 jobs against a slow upstream, kill -9 of the
// daemon while calls are in flight (once while clients are still submitting,
// once while the queue drains), restart on the same data dir each time; every
// acknowledged job must end Success with the echo of its own request, none
// lost, none stuck, none stored twice.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submit, waitAll, healthz, sleep, mapLimit, chatBody,
} from './lib.mjs';

const N = 2000;
const CLIENTS = 64;

function recovered(log) {
  const m = [...log.matchAll(/(\d+) jobs? interrupted in flight/g)];
  return m.length ? Number(m[m.length - 1][1]) : '?';
}

test('2000 jobs survive two kill -9 with calls in flight', { timeout: 200000 }, async (t) => {
  const mock = await startMock({ latency: 300 });
  const d = await startDaemon({ upstream: mock.url, args: ['--concurrency', '64'] });
  const msg = (i) => `crash-${i}`;
  const cid = (i) => `c-${i}`;

  // ---- phase 1: submit, and kill -9 half-way through the submissions
  const acked = new Array(N).fill(null); // id per message index
  let nAcked = 0;
  let resubmits = 0; // jobs whose submit had to be retried
  let lostAttempts = 0; // submits without an answer: each may be stored unacknowledged
  let killing = null;
  const submitOne = async (i) => {
    const deadline = Date.now() + 60000;
    for (let tries = 0; ; tries++) {
      if (killing) await killing;
      try {
        const r = await submit(d.base, '/v1/slow/chat/completions',
          chatBody(msg(i), { metadata: { custom_id: cid(i) } }));
        if (r.status === 200 && r.json && typeof r.json.id === 'string') {
          acked[i] = r.json.id;
          nAcked++;
          if (tries) resubmits++;
          return;
        }
        if (r.status < 500) throw new Error(`submit ${i}: HTTP ${r.status} ${r.text}`);
        lostAttempts++;
      } catch (e) {
        if (e.message.startsWith('submit ')) throw e;
        // the daemon died under us: not acknowledged, try again
        lostAttempts++;
      }
      if (Date.now() > deadline) throw new Error(`submit ${i}: no acknowledgement within 60 s`);
      await sleep(50);
    }
  };

  let kill1 = null;
  const submitting = mapLimit([...Array(N).keys()], CLIENTS, submitOne);
  let submitsDone = false;
  submitting.finally(() => { submitsDone = true; }).catch(() => {});
  // wait for calls in flight and some hundreds acknowledged, then kill
  const monitorDeadline = Date.now() + 60000;
  for (;;) {
    const st = await mock.stats();
    if (st.in_flight > 0 && (nAcked >= 600 || submitsDone)) {
      let release;
      killing = new Promise((r) => { release = r; });
      await d.kill9();
      kill1 = { acked: nAcked, inFlight: st.in_flight, upstreamCalls: st.calls, duringSubmits: !submitsDone };
      await d.restart();
      kill1.recovered = recovered(d.log());
      killing = null;
      release();
      break;
    }
    if (Date.now() > monitorDeadline) throw new Error(`no calls in flight within 60 s (acked ${nAcked})`);
    await sleep(20);
  }
  await submitting;
  assert.equal(nAcked, N, 'every job acknowledged');
  const ids = acked;
  assert.equal(new Set(ids).size, N, '2000 distinct ids');

  // ---- phase 2: kill -9 again while the queue drains
  let kill2 = null;
  const drainDeadline = Date.now() + 60000;
  for (;;) {
    const st = await mock.stats();
    const h = await healthz(d.base);
    if (st.in_flight > 0 && h.jobs.queued > 0) {
      await d.kill9();
      kill2 = { inFlight: st.in_flight, queued: h.jobs.queued, success: h.jobs.success, upstreamCalls: st.calls };
      await d.restart();
      kill2.recovered = recovered(d.log());
      break;
    }
    if (h.jobs.queued === 0 && h.jobs.in_progress === 0) break; // drained already (very fast machine)
    if (Date.now() > drainDeadline) throw new Error('drain did not start within 60 s');
    await sleep(20);
  }

  // ---- every acknowledged job ends Success with its own echo
  const gens = await waitAll(() => d.base, ids, { timeoutMs: 90000, parallel: 8, intervalMs: 300 });
  const wrong = [];
  ids.forEach((id, i) => {
    const g = gens.get(id);
    if (g.id !== id || g.state !== 'Success' ||
        g.response?.choices?.[0]?.message?.content !== msg(i) ||
        g.request?.metadata?.custom_id !== cid(i) ||
        g.request?.messages?.[0]?.content !== msg(i))
      wrong.push(`${i} ${id}: ${g.state} ${g.stateMessage} ` +
        `${JSON.stringify(g.response?.choices?.[0]?.message?.content)} ${g.request?.metadata?.custom_id}`);
  });
  assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} jobs wrong`);

  // nothing stuck; the store holds our jobs (plus at most one per lost ack)
  const h = await healthz(d.base);
  assert.equal(h.jobs.queued, 0);
  assert.equal(h.jobs.in_progress, 0);
  assert.equal(h.jobs.failed, 0);
  assert.ok(h.jobs.success >= N && h.jobs.success <= N + lostAttempts,
    `success count ${h.jobs.success} in [${N}, ${N + lostAttempts}]`);

  // the upstream saw every message; count the repeated calls (at-least-once)
  const st = await mock.stats();
  const missing = [];
  let dupCalls = 0;
  let dupMsgs = 0;
  for (let i = 0; i < N; i++) {
    const c = st.by_echo[msg(i)] || 0;
    if (c < 1) missing.push(msg(i));
    if (c > 1) { dupCalls += c - 1; dupMsgs++; }
  }
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} messages never reached the upstream`);
  assert.equal(st.in_flight, 0);

  const report = [
    `kill 1 (${kill1.duringSubmits ? 'during submits' : 'after submits'}): ${kill1.acked} acked, ` +
      `${kill1.inFlight} calls in flight, ${kill1.upstreamCalls} upstream calls so far, ` +
      `${kill1.recovered} recovered at restart, ${resubmits} submits retried by clients, ` +
      `${h.jobs.success - N} stored without acknowledgement`,
    kill2 ? `kill 2 (during drain): ${kill2.inFlight} in flight, ${kill2.queued} queued, ` +
      `${kill2.success} done, ${kill2.recovered} recovered at restart` : 'kill 2: skipped (drained already)',
    `upstream calls ${st.calls} for ${N} jobs: ${dupCalls} repeated calls over ${dupMsgs} messages (at-least-once)`,
  ];
  for (const line of report) t.diagnostic(line);
});
