// Torture 1: the crash loop. A load generator submits single requests, groups
// and batches continuously and records every id it is answered with; a driver
// kill -9s the daemon at random moments and restarts it on the same store
// (20 kills in the short profile, 200 in the long one). Then everything drains
// and the oracle checks:
//   - every acknowledged id exists (lost = 0) and ends Success with the echo of
//     its own request (wrong = 0); nothing is left Queued/In Progress (stuck = 0);
//   - no job is recorded twice (every message text, unique per submit attempt,
//     is in at most one job of the store), and no job exists that no client
//     submitted;
//   - the mock upstream's call counts show the at-least-once bound: repeated
//     calls <= jobs put back in the queue by recovery at the restarts (the jobs
//     whose call was in flight at a kill), and no call for a job not stored;
//   - a batch created with an Idempotency-Key, retried across kills, exists
//     once and completes with every line's own answer;
//   - `slowlanectl check` finds the stopped store consistent.
// Unacknowledged submits (connection died, 5xx) are retried by the client
// with a NEW message, so each text names one submit attempt.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  startMock, startDaemon, request, healthz, sleep, chatBody, mapLimit,
} from '../func/lib.mjs';
import { pick, figures, ctl, exportAll, echoOf, PROFILE } from './tlib.mjs';

const KILLS = Number(process.env.SLOWLANE_TORTURE_KILLS) || pick(20, 200);
const CLIENTS = 6;
const PACE_MS = pick(40, 60);           // each client's pause between submits
const GAP_MS = pick([300, 2200], [200, 2400]); // time between kills
const BATCH_EVERY = pick(8, 25);        // one batch every N kills (and one at start)
const BATCH_LINES = pick(40, 60);
const DRAIN_MS = pick(120000, 600000);

test(`crash loop: ${KILLS} kill -9 under mixed load (${PROFILE} profile)`,
  { timeout: DRAIN_MS + KILLS * 6000 + 120000 }, async (t) => {
  const t0 = Date.now();
  const mock = await startMock({ latency: 120, jitter: 200 });
  const d = await startDaemon({
    upstream: mock.url,
    args: ['--concurrency', '48', '--retry-base', '200ms', '--log-level', 'info'],
  });
  const base = () => d.base;

  const singles = new Map();   // job id -> message
  const groups = new Map();    // group id -> [messages]
  const batches = [];          // {id, lines: Map custom_id -> message}
  const unacked = new Set();   // messages of submits without an answer
  const c = { attempts: 0, acked: 0, noAnswer: 0, http5xx: 0, groupAcked: 0, batchRetries: 0 };
  const errors = [];
  let stop = false;

  // One submit attempt. Returns the JSON answer, or null when unacknowledged.
  const post = async (p, body, headers = {}) => {
    c.attempts++;
    try {
      const r = await request('POST', base() + p, { body, headers, timeoutMs: 15000 });
      if (r.status === 200 && r.json) { c.acked++; return r.json; }
      if (r.status >= 500) { c.http5xx++; return null; }
      errors.push(`POST ${p}: ${r.status} ${r.text.slice(0, 200)}`);
      return null;
    } catch {
      c.noAnswer++;
      return null;
    }
  };

  let n = 0;
  const client = async (ci) => {
    while (!stop) {
      if (Math.random() < 0.8) {
        const msg = `s${ci}-${++n}`;
        const j = await post(n % 2 ? '/v1/async/chat/completions' : '/v1/slow/chat/completions',
          chatBody(msg, { metadata: { custom_id: msg } }));
        if (j && typeof j.id === 'string') singles.set(j.id, msg);
        else unacked.add(msg);
      } else {
        const size = 2 + Math.floor(Math.random() * 5);
        const msgs = Array.from({ length: size }, (_, k) => `g${ci}-${++n}-${k}`);
        const j = await post('/v1/async/group/chat/completions',
          { requests: msgs.map((m) => chatBody(m, { metadata: { custom_id: m } })) });
        if (j && typeof j.groupId === 'string') { groups.set(j.groupId, msgs); c.groupAcked++; }
        else msgs.forEach((m) => unacked.add(m));
      }
      await sleep(PACE_MS * (0.5 + Math.random()));
    }
  };

  // A batch: upload and create, each with an Idempotency-Key and retried
  // with the same bytes until acknowledged (what a careful client does).
  let nb = 0;
  const makeBatch = async () => {
    const k = ++nb;
    const lines = new Map();
    let jsonl = '';
    for (let i = 0; i < BATCH_LINES; i++) {
      const cid = `b${k}-${i}`;
      const msg = `batch${k}-line${i}`;
      lines.set(cid, msg);
      jsonl += JSON.stringify({ custom_id: cid, method: 'POST', url: '/v1/chat/completions',
        body: chatBody(msg) }) + '\n';
    }
    const boundary = `----torture${k}`;
    const form = `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="b${k}.jsonl"\r\n` +
      `Content-Type: application/jsonl\r\n\r\n${jsonl}\r\n--${boundary}--\r\n`;
    const retry = async (what, fn) => {
      for (let tries = 0; ; tries++) {
        const j = await fn();
        if (j && j.id) return j;
        c.batchRetries++;
        if (tries > 400) throw new Error(`${what}: never acknowledged`);
        await sleep(100);
      }
    };
    const file = await retry('upload', () => post('/v1/files', form, {
      'content-type': `multipart/form-data; boundary=${boundary}`,
      'idempotency-key': `torture-file-${process.pid}-${k}`,
    }));
    const batch = await retry('batch', () => post('/v1/batches', {
      input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h',
    }, { 'idempotency-key': `torture-batch-${process.pid}-${k}` }));
    batches.push({ id: batch.id, lines });
  };

  const clients = Array.from({ length: CLIENTS }, (_, i) => client(i));
  const batchJobs = [makeBatch()];

  // ---- the kill driver
  let recovered = 0;
  let inflightAtKills = 0;
  let maxRestartMs = 0;
  const recoveredPerKill = [];
  // The last fifth of the kills hit the drain: no new submits, queue emptying.
  const loadKills = Math.ceil(KILLS * 0.8);
  let clientsDone = null;
  for (let k = 1; k <= KILLS; k++) {
    if (k === loadKills + 1) {
      stop = true;
      clientsDone = Promise.all([...clients, ...batchJobs]);
    }
    await sleep(GAP_MS[0] + Math.random() * (GAP_MS[1] - GAP_MS[0]));
    if (k % BATCH_EVERY === 0 && !stop) batchJobs.push(makeBatch());
    const logSize = fs.statSync(d.logFile).size;
    await d.kill9();
    const st = await mock.stats();
    inflightAtKills += st.in_flight;
    const r0 = Date.now();
    await d.restart();
    maxRestartMs = Math.max(maxRestartMs, Date.now() - r0);
    const fd = fs.openSync(d.logFile, 'r');
    const buf = Buffer.alloc(fs.statSync(d.logFile).size - logSize);
    fs.readSync(fd, buf, 0, buf.length, logSize);
    fs.closeSync(fd);
    const m = /(\d+) jobs? interrupted in flight/.exec(buf.toString());
    assert.ok(m, `restart ${k}: no recovery line in the log`);
    recovered += Number(m[1]);
    recoveredPerKill.push(Number(m[1]));
  }
  stop = true;
  await (clientsDone || Promise.all([...clients, ...batchJobs]));
  const loadEndMs = Date.now() - t0;
  assert.deepEqual(errors.slice(0, 5), [], 'no submit answered with a 4xx');

  // ---- drain: poll every acknowledged object until it ends (or the deadline)
  const deadline = Date.now() + DRAIN_MS;
  const finalGen = new Map(); // single id -> generation
  const lost = [];
  const getJson = async (p) => {
    for (;;) {
      try {
        const r = await request('GET', base() + p, { timeoutMs: 15000 });
        return r;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(200);
      }
    }
  };
  let pending = [...singles.keys()];
  while (pending.length && Date.now() < deadline) {
    const still = [];
    await mapLimit(pending, 16, async (id) => {
      const r = await getJson(`/v1/generation/${id}`);
      if (r.status === 200 && ['Success', 'Failed'].includes(r.json?.state)) finalGen.set(id, r.json);
      else if (r.status === 404) lost.push(id);
      else still.push(id);
    });
    pending = still;
    if (pending.length) await sleep(500);
  }
  const stuckSingles = pending;

  const groupGens = new Map(); // group id -> generations
  const lostGroups = [];
  let stuckGroups = [...groups.keys()];
  while (stuckGroups.length && Date.now() < deadline) {
    const still = [];
    await mapLimit(stuckGroups, 8, async (gid) => {
      const r = await getJson(`/v1/async/group/${gid}/generations`);
      if (r.status === 404) { lostGroups.push(gid); return; }
      const gens = r.json?.generations || [];
      if (r.status === 200 && gens.length && gens.every((g) => ['Success', 'Failed'].includes(g.state)))
        groupGens.set(gid, gens);
      else still.push(gid);
    });
    stuckGroups = still;
    if (stuckGroups.length) await sleep(500);
  }

  const batchObjs = new Map();
  let stuckBatches = batches.map((b) => b.id);
  while (stuckBatches.length && Date.now() < deadline) {
    const still = [];
    for (const id of stuckBatches) {
      const r = await getJson(`/v1/batches/${id}`);
      if (r.status === 200 && ['completed', 'failed', 'expired', 'cancelled'].includes(r.json?.status))
        batchObjs.set(id, r.json);
      else still.push(id);
    }
    stuckBatches = still;
    if (stuckBatches.length) await sleep(500);
  }

  // ---- the oracle
  const wrong = [];
  for (const [id, msg] of singles) {
    const g = finalGen.get(id);
    if (!g) continue;
    if (g.id !== id || g.state !== 'Success' || echoOf(g) !== msg || g.request?.messages?.[0]?.content !== msg)
      wrong.push(`single ${id} (${msg}): ${g.state} ${g.stateMessage} echo=${JSON.stringify(echoOf(g))}`);
  }
  let groupMembers = 0;
  for (const [gid, msgs] of groups) {
    groupMembers += msgs.length;
    const gens = groupGens.get(gid);
    if (!gens) continue;
    const seen = gens.map((g) => g.request?.messages?.[0]?.content).sort();
    if (JSON.stringify(seen) !== JSON.stringify([...msgs].sort()))
      wrong.push(`group ${gid}: members ${JSON.stringify(seen)} != ${JSON.stringify(msgs)}`);
    for (const g of gens) {
      if (g.state !== 'Success' || echoOf(g) !== g.request?.messages?.[0]?.content)
        wrong.push(`group ${gid} member ${g.id}: ${g.state} ${g.stateMessage} echo=${JSON.stringify(echoOf(g))}`);
    }
  }
  let batchLines = 0;
  for (const b of batches) {
    batchLines += b.lines.size;
    const o = batchObjs.get(b.id);
    if (!o) continue;
    if (o.status !== 'completed' || o.request_counts?.completed !== b.lines.size || o.request_counts?.failed !== 0) {
      wrong.push(`batch ${b.id}: ${o.status} ${JSON.stringify(o.request_counts)}`);
      continue;
    }
    const r = await getJson(`/v1/files/${o.output_file_id}/content`);
    const out = r.text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const seen = new Map();
    for (const l of out) seen.set(l.custom_id, (seen.get(l.custom_id) || 0) + 1);
    for (const [cid, msg] of b.lines) {
      const l = out.find((x) => x.custom_id === cid);
      if (seen.get(cid) !== 1 || l?.response?.status_code !== 200 ||
          l.response.body?.choices?.[0]?.message?.content !== msg)
        wrong.push(`batch ${b.id} line ${cid}: x${seen.get(cid) || 0} ${JSON.stringify(l?.response?.body?.choices?.[0]?.message?.content)}`);
    }
    if (out.length !== b.lines.size) wrong.push(`batch ${b.id}: ${out.length} output lines for ${b.lines.size}`);
  }

  // The store as a whole: healthz counts, then a clean stop, check and export.
  const h = await healthz(d.base);
  const code = await d.term(60000);
  assert.equal(code, 0, 'SIGTERM exits 0');
  const chk = ctl(d.dataDir, ['check']);
  const all = exportAll(d.dataDir);
  const byMsg = new Map();
  for (const g of all) {
    const m = g.request?.messages?.[0]?.content;
    byMsg.set(m, (byMsg.get(m) || 0) + 1);
  }
  const ackedMsgs = new Set([...singles.values(), ...[...groups.values()].flat(),
    ...batches.flatMap((b) => [...b.lines.values()])]);
  const recordedTwice = [...byMsg].filter(([, k]) => k > 1).map(([m, k]) => `${m} x${k}`);
  const phantoms = [...byMsg.keys()].filter((m) => !ackedMsgs.has(m) && !unacked.has(m));
  const storedUnacked = [...unacked].filter((m) => byMsg.has(m)).length;

  // The upstream: every acknowledged job called; repeats within the bound.
  const st = await mock.stats();
  let dupCalls = 0;
  let dupJobs = 0;
  let maxCalls = 0;
  const neverCalled = [];
  for (const m of ackedMsgs) {
    const k = st.by_echo[m] || 0;
    if (k === 0) neverCalled.push(m);
    if (k > 1) { dupCalls += k - 1; dupJobs++; }
    maxCalls = Math.max(maxCalls, k);
  }
  for (const m of unacked) {
    const k = st.by_echo[m] || 0;
    if (byMsg.has(m) && k > 1) { dupCalls += k - 1; dupJobs++; }
  }
  const callsForUnstored = Object.keys(st.by_echo).filter((m) => !byMsg.has(m));

  const acknowledged = singles.size + groupMembers + batchLines;
  const f = {
    kills: KILLS,
    acknowledged,
    singles: singles.size,
    groups: groups.size,
    group_members: groupMembers,
    batches: batches.length,
    batch_lines: batchLines,
    lost: lost.length + lostGroups.length + (batches.length - batchObjs.size - stuckBatches.length),
    stuck: stuckSingles.length + stuckGroups.length + stuckBatches.length,
    wrong: wrong.length,
    recorded_twice: recordedTwice.length,
    phantom_jobs: phantoms.length,
    submit_attempts: c.attempts,
    unacknowledged_attempts: unacked.size,
    stored_without_ack: storedUnacked,
    upstream_calls: st.calls,
    duplicated_upstream_calls: dupCalls,
    jobs_called_more_than_once: dupJobs,
    max_calls_one_job: maxCalls,
    recovered_in_flight_at_restarts: recovered,
    mock_in_flight_at_kills: inflightAtKills,
    max_restart_ms: maxRestartMs,
    load_s: Math.round(loadEndMs / 1000),
    total_s: Math.round((Date.now() - t0) / 1000),
    check_exit: chk.status,
  };
  figures(t, 'crash-loop', f);

  assert.deepEqual(lost.slice(0, 5), [], `${lost.length} acknowledged jobs lost`);
  assert.deepEqual(lostGroups.slice(0, 5), [], `${lostGroups.length} acknowledged groups lost`);
  assert.equal(batchObjs.size, batches.length, 'every batch ended');
  assert.deepEqual(stuckSingles.slice(0, 5), [], `${stuckSingles.length} jobs stuck`);
  assert.deepEqual(stuckGroups.slice(0, 5), [], `${stuckGroups.length} groups stuck`);
  assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} wrong answers`);
  assert.deepEqual(recordedTwice.slice(0, 5), [], 'no job recorded twice');
  assert.deepEqual(phantoms.slice(0, 5), [], 'no job nobody submitted');
  assert.deepEqual(neverCalled.slice(0, 5), [], 'every acknowledged job reached the upstream');
  assert.deepEqual(callsForUnstored.slice(0, 5), [], 'no upstream call for a job not in the store');
  assert.ok(dupCalls <= recovered,
    `repeated upstream calls ${dupCalls} <= jobs recovered in flight ${recovered} (at-least-once bound)`);
  assert.ok(maxCalls <= 1 + KILLS, 'no job called more often than once per life of the daemon');
  assert.equal(h.jobs.queued, 0);
  assert.equal(h.jobs.in_progress, 0);
  assert.equal(h.jobs.failed, 0);
  assert.equal(h.jobs.success, all.length, 'healthz counts agree with the store');
  assert.equal(all.length, acknowledged + storedUnacked, 'the store holds exactly the acknowledged jobs plus stored unacknowledged ones');
  assert.equal(chk.status, 0, `slowlanectl check: ${chk.stdout} ${chk.stderr}`);
});
