// Claim-ahead (sched.c): against an upstream that answers at once the
// scheduler keeps jobs claimed (In Progress on disk) beyond --concurrency,
// so a freed slot starts its next call without waiting for a claim commit.
// The upstream still never sees more than --concurrency calls at once; an
// upstream that takes seconds gets nothing claimed ahead; pausing or
// stopping gives the jobs claimed ahead back to the queue, uncalled.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submitOk, healthz, sleep, chatBody, mapLimit, TIME_SCALE, request,
} from './lib.mjs';
import { ctl } from '../torture/tlib.mjs';

const CHAT = '/v1/slow/chat/completions';
const mocks = [];
after(async () => { for (const m of mocks) await m.stop(); });

async function mock(opts) {
  const m = await startMock(opts);
  mocks.push(m);
  return m;
}

async function submitMany(base, n, tag) {
  const ids = [];
  await mapLimit(Array.from({ length: n }, (_, i) => i), 32, async (i) => {
    ids.push(await submitOk(base, CHAT, chatBody(`${tag} ${i}`)));
  });
  return ids;
}

// Samples /healthz every few ms until `done(jobs)` or the deadline; returns
// the last jobs object, the most In Progress and the most calls in flight
// it reported.
async function watch(base, done, timeoutMs) {
  const deadline = Date.now() + timeoutMs * TIME_SCALE;
  let maxInProgress = 0, maxCalls = 0;
  for (;;) {
    const h = await healthz(base);
    const j = h.jobs;
    maxInProgress = Math.max(maxInProgress, j.in_progress);
    maxCalls = Math.max(maxCalls, h.calls_in_flight);
    if (done(j)) return { jobs: j, maxInProgress, maxCalls };
    if (Date.now() > deadline) throw new Error(`not done in time: ${JSON.stringify(j)}`);
    await sleep(5);
  }
}

function assertEachCalledOnce(st, tag, n) {
  for (let i = 0; i < n; i++)
    assert.equal(st.by_echo[`${tag} ${i}`], 1, `${tag} ${i} called exactly once`);
}

// A paused daemon (--concurrency 4) with n jobs tagged `tag` stored, its
// mock answering in `latency` ms and just reset; dispatch then resumed.
async function drain(latency, n, tag) {
  const m = await mock({ latency });
  const d = await startDaemon({ upstream: m.url, args: ['--paused', '--concurrency', '4'] });
  await submitMany(d.base, n, tag);
  await m.reset();
  d.proc.kill('SIGUSR1');
  return { m, d };
}

test('a fast upstream: jobs are claimed ahead, calls never exceed --concurrency', async () => {
  const N = 2000;
  const { m, d } = await drain(1, N, 'fast');
  const { jobs, maxInProgress, maxCalls } = await watch(d.base, (j) => j.success === N, 60000);
  const st = await m.stats();
  assert.deepEqual(jobs, { queued: 0, in_progress: 0, success: N, failed: 0 });
  assert.ok(st.max_in_flight <= 4, `the upstream saw ${st.max_in_flight} calls at once (--concurrency 4)`);
  assert.ok(maxCalls >= 1 && maxCalls <= 4, `/healthz calls_in_flight stays within --concurrency (${maxCalls})`);
  assert.equal((await healthz(d.base)).calls_in_flight, 0);
  // Without claim-ahead In Progress never exceeds --concurrency (a claim
  // only takes the slots free when it is sent).
  assert.ok(maxInProgress > 4, `jobs were claimed ahead (most In Progress seen: ${maxInProgress})`);
  assert.ok(maxInProgress <= 4 + 4 * 4, `claim-ahead is capped at 4 x --concurrency (${maxInProgress})`);
  assert.equal(st.calls, N);
  assertEachCalledOnce(st, 'fast', N);
  await d.term();
});

test('a slow upstream: nothing is claimed ahead', async () => {
  const m = await mock({ latency: 400 });
  const d = await startDaemon({ upstream: m.url, args: ['--concurrency', '2'] });
  const ids = await submitMany(d.base, 12, 'slow');
  // a job being called says so (found: "In Progress" with stateMessage "Queued")
  let g;
  for (const deadline = Date.now() + 10000 * TIME_SCALE; Date.now() < deadline; await sleep(20)) {
    g = (await request('GET', `${d.base}/v1/generation/${ids[0]}`)).json;
    if (g.state !== 'Queued') break;
  }
  assert.equal(g.state, 'In Progress', 'seen while its 400 ms call runs');
  assert.equal(g.stateMessage, 'In progress');
  const { jobs, maxInProgress } = await watch(d.base, (j) => j.success === 12, 30000);
  assert.equal(jobs.success, 12);
  assert.ok(maxInProgress <= 2, `In Progress is what is being called (most seen: ${maxInProgress})`);
  await d.term();
});

test('pause and SIGTERM give the jobs claimed ahead back, uncalled', async () => {
  const N = 3000;
  const { m, d } = await drain(2, N, 'pause');
  await watch(d.base, (j) => j.success >= 200 && j.in_progress > 4, 30000);
  d.proc.kill('SIGUSR2');
  // The calls running end; nothing new starts and nothing stays claimed.
  const { jobs } = await watch(d.base, (j) => j.in_progress === 0, 10000);
  assert.ok(jobs.queued > 0, `jobs left to run: ${JSON.stringify(jobs)}`);
  assert.equal(jobs.queued + jobs.success, N);
  const st = await m.stats();
  assert.equal(st.calls, jobs.success, 'every call made is a job finished: none for the jobs given back');
  assert.equal(st.in_flight, 0);

  // Resume, then stop in the middle of the drain: exit 0, and after a
  // restart every job ends Success, each called once.
  d.proc.kill('SIGUSR1');
  await watch(d.base, (j) => j.success >= jobs.success + 200 && j.in_progress > 4, 30000);
  assert.equal(await d.term(), 0, `exit status 0; log:\n${d.log().slice(-2000)}`);
  await d.restart();
  d.proc.kill('SIGUSR1'); // it starts --paused, as before
  const end = await watch(d.base, (j) => j.success === N, 60000);
  assert.deepEqual(end.jobs, { queued: 0, in_progress: 0, success: N, failed: 0 });
  const st2 = await m.stats();
  assert.equal(st2.calls, N);
  assertEachCalledOnce(st2, 'pause', N);
  await d.term();
  // A job given back uncalled was not attempted: each job, called once,
  // counts one attempt (found: every pause and stop counted one more for
  // the jobs claimed ahead, using up --max-attempts with no call made).
  const ls = ctl(d.dataDir, ['--json', 'ls', '--limit', '0']);
  assert.equal(ls.status, 0, ls.stderr);
  const rows = JSON.parse(ls.stdout);
  assert.equal(rows.length, N);
  const more = rows.filter((r) => r.attempts !== 1).map((r) => `${r.id}: ${r.attempts}`);
  assert.deepEqual(more.slice(0, 5), [], `${more.length} jobs count more than their one call`);
});
