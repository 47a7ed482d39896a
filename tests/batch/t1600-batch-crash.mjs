// Crash safety of the batch engine: a 10,000-line batch on the built-in
// load-test backend (--concurrency 64), kill -9 of the daemon during
// validation, during expansion into jobs (as many times as it takes to have
// interrupted it part-way), during the run and during finalizing, with a
// restart on the same data dir after each. The batch must complete with
// exactly 10,000 output lines, 10,000 distinct custom_ids each answered with
// its own line's message, and the store must hold exactly 10,000 jobs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, request, tmpDir, sleep } from '../func/lib.mjs';
import { chatLine, parseJsonl, uploadOk, createBatchOk, waitBatch, fileContent, ctlJson } from './batchlib.mjs';

const N = 10000;
const KEY = 'k1';

const cid = (i) => `line-${String(i).padStart(5, '0')}`;
const msg = (i) => `crash test line ${i} of ${N}`;

async function jobsInStore(dataDir) {
  const s = await ctlJson(dataDir, 'stats');
  assert.equal(typeof s.total, 'number', JSON.stringify(s));
  return s.total;
}

// Jobs the daemon knows of, from /healthz (cheap to poll); null if it does not answer.
async function healthJobs(base) {
  try {
    const r = await request('GET', `${base}/healthz`, { timeoutMs: 2000 });
    if (r.status !== 200 || !r.json?.jobs) return null;
    const j = r.json.jobs;
    return j.queued + j.in_progress + j.success + j.failed;
  } catch {
    return null;
  }
}

async function batchNow(d, id) {
  try {
    const r = await request('GET', `${d.base}/v1/batches/${id}`, { key: KEY, timeoutMs: 2000 });
    return r.status === 200 ? r.json : null;
  } catch {
    return null;
  }
}

test('a 10,000-line batch survives kill -9 in validation, expansion, run and finalizing', { timeout: 120000 }, async (t) => {
  const t0 = Date.now();
  const input = path.join(tmpDir('in'), 'input.jsonl');
  const lines = [];
  for (let i = 0; i < N; i++) lines.push(chatLine(cid(i), msg(i)));
  fs.writeFileSync(input, lines.join('\n') + '\n');

  const d = await startDaemon({ args: ['--api-key', KEY, '--concurrency', '64', '--load-test-delay', '20ms'] });
  const f = await uploadOk(d.base, fs.readFileSync(input), { key: KEY, filename: 'input.jsonl' });
  assert.equal(f.bytes, fs.statSync(input).size);

  // ---- 1: kill -9 as soon as the create is answered: the engine is validating
  const b = await createBatchOk(d.base, f.id, { key: KEY });
  await d.kill9();
  const afterValidationKill = await jobsInStore(d.dataDir);
  t.diagnostic(`kill 1 (validation): ${afterValidationKill} jobs in the store`);
  assert.equal(afterValidationKill, 0, 'killed before any line became a job');
  assert.doesNotMatch(d.log(), /lines validated/, 'killed before validation ended');

  // ---- 2: kill -9 while lines are being expanded into jobs, until one kill
  // has left a part of them (0 < jobs < N) in the store.
  let expansionKills = 0;
  let jobs = 0;
  for (let round = 0; round < 4 && jobs < N; round++) {
    await d.restart();
    const before = jobs;
    const deadline = Date.now() + 10000;
    for (;;) {
      const n = await healthJobs(d.base);
      if (n !== null && n > before) break;    // it is expanding: kill now
      assert.ok(Date.now() < deadline, `no expansion progress after restart (jobs ${n})`);
      await sleep(2);
    }
    await d.kill9();
    jobs = await jobsInStore(d.dataDir);
    t.diagnostic(`kill ${2 + round} (expansion): ${jobs} jobs in the store`);
    if (jobs > before && jobs < N) expansionKills++;
  }
  assert.ok(expansionKills >= 1, 'at least one kill -9 interrupted the expansion part-way');
  assert.ok(jobs <= N, `never more jobs than lines: ${jobs}`);

  // ---- 3: kill -9 during the run (some lines done, some not)
  await d.restart();
  let cur;
  for (const deadline = Date.now() + 30000; ;) {
    cur = await batchNow(d, b.id);
    const c = cur?.request_counts;
    if (cur && cur.status === 'in_progress' && c.completed >= N * 0.2 && c.completed < N * 0.8) break;
    assert.ok(!cur || !['finalizing', 'completed'].includes(cur.status), `the run ended before it could be interrupted: ${cur?.status}`);
    assert.ok(Date.now() < deadline, `no run progress: ${JSON.stringify(cur)}`);
    await sleep(20);
  }
  await d.kill9();
  t.diagnostic(`kill (run): at ${JSON.stringify(cur.request_counts)}`);

  // ---- 4: kill -9 while finalizing (writing the output file)
  await d.restart();
  let finalizingKill = false;
  for (const deadline = Date.now() + 30000; ;) {
    cur = await batchNow(d, b.id);
    if (cur?.status === 'finalizing') {
      await d.kill9();
      finalizingKill = true;
      break;
    }
    if (cur?.status === 'completed') break; // missed the window (reported below)
    assert.ok(Date.now() < deadline, `no finalizing: ${JSON.stringify(cur)}`);
    await sleep(10);
  }
  t.diagnostic(`kill (finalizing): ${finalizingKill ? 'done' : 'missed, the batch completed first'}`);
  assert.ok(finalizingKill, 'caught the batch in finalizing');

  // ---- the end: restart once more; completed, every line once
  await d.restart();
  const done = await waitBatch(() => d.base, b.id, { key: KEY, timeoutMs: 40000 });
  assert.equal(done.status, 'completed', JSON.stringify(done));
  assert.deepEqual(done.request_counts, { total: N, completed: N, failed: 0 });
  assert.equal(done.error_file_id, null);

  const text = await fileContent(d.base, done.output_file_id, KEY);
  const out = parseJsonl(text);
  assert.equal(out.length, N, 'exactly one output line per input line');
  const seen = new Set();
  const reqIds = new Set();
  for (const l of out) {
    assert.ok(!seen.has(l.custom_id), `custom_id ${l.custom_id} twice`);
    seen.add(l.custom_id);
    reqIds.add(l.id);
    const i = Number(l.custom_id.slice(5));
    assert.equal(l.custom_id, cid(i));
    assert.equal(l.response?.status_code, 200, JSON.stringify(l));
    assert.equal(l.response.body.choices[0].message.content, msg(i), `answer of ${l.custom_id}`);
  }
  assert.equal(seen.size, N);
  assert.equal(reqIds.size, N, 'distinct batch_req ids');
  const of = await request('GET', `${d.base}/v1/files/${done.output_file_id}`, { key: KEY });
  assert.equal(of.json.bytes, Buffer.byteLength(text));

  assert.equal(await jobsInStore(d.dataDir), N, 'the store holds exactly one job per line');
  await d.term();
  const check = await ctlJson(d.dataDir, 'check');
  assert.equal(check.ok, true, JSON.stringify(check));
  assert.equal(check.jobs, N);
  t.diagnostic(`${N} lines, ${d.starts} daemon starts, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});
