// Torture 5: full disk and full map. The store lives on a 4 MiB tmpfs (root
// only; skipped otherwise), or in a 1 MiB LMDB map. Clients submit until the
// daemon refuses: the refusals must be 507 store_full with an OpenAI error
// object and the daemon must stay up; every job acknowledged before must stay
// readable with its own request and end Success without a restart once space
// returns (tmpfs grown in place; map space freed by `slowlanectl purge` on the
// running daemon or by --retention); `slowlanectl check` must pass; and a
// restart, on the same or a bigger map, must find everything.
// (Found by this suite and fixed: a full disk aborted the daemon, jobs stayed
// In Progress while the map was full, --retention could not free a full map,
// slowlanectl purge grew the map under a running daemon.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startDaemon, request, waitAll, poll, healthz, sleep, chatBody, tmpDir } from '../func/lib.mjs';
import { figures, ctl, echoOf, mountTmpfs, IS_ROOT, uniq } from './tlib.mjs';

const PAD = 'p'.repeat(2000);

// Submits until `stopAfter` refusals in a row; returns what happened.
async function fill(d, stopAfter = 10) {
  const acked = new Map();
  const refusals = {};
  let inRow = 0;
  const badShape = [];
  let firstRefusal = null;
  for (let i = 0; i < 20000 && inRow < stopAfter; i++) {
    const text = `${uniq('full')} ${PAD}`;
    let r;
    try {
      r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody(text) });
    } catch (e) {
      // no answer: the daemon died (an unacknowledged submit, not a refusal)
      await sleep(100);
      if (d.proc.exitCode !== null || d.proc.signalCode !== null) return { acked, refusals, badShape, firstRefusal, died: `${d.proc.exitCode ?? d.proc.signalCode}` };
      inRow++;
      continue;
    }
    if (r.status === 200) { acked.set(r.json.id, text); inRow = 0; continue; }
    inRow++;
    firstRefusal ??= Date.now();
    const k = `${r.status} ${r.json?.error?.code}`;
    refusals[k] = (refusals[k] || 0) + 1;
    if (![503, 507].includes(r.status) || typeof r.json?.error?.message !== 'string' || r.json.error.type !== 'server_error')
      badShape.push(`${r.status} ${r.text.slice(0, 200)}`);
  }
  return { acked, refusals, badShape, firstRefusal, died: null };
}

// The most times one job's outcome was retried on a full store, from the log
// (the scheduler retries each once a second).
function mostRetries(d) {
  const n = {};
  for (const m of d.log().matchAll(/storing the outcome of (\S+) again/g)) n[m[1]] = (n[m[1]] || 0) + 1;
  return Math.max(0, ...Object.values(n));
}

// Every acknowledged job readable, with its own request.
async function readable(d, acked) {
  const bad = [];
  for (const [id, text] of acked) {
    const r = await request('GET', `${d.base}/v1/generation/${id}`);
    if (r.status !== 200 || r.json?.request?.messages?.[0]?.content !== text) bad.push(`${id}: ${r.status}`);
    if (r.json?.state === 'Success' && echoOf(r.json) !== text) bad.push(`${id}: wrong answer`);
  }
  return bad;
}

// Polls `ids` until every one is 404 (deleted) or `deadline` (ms since the
// epoch) passes; returns those still there.
async function untilAllGone(d, ids, deadline) {
  let left = ids;
  while (left.length && Date.now() < deadline) {
    const still = [];
    for (const id of left) {
      const r = await request('GET', `${d.base}/v1/generation/${id}`);
      if (r.status !== 404) still.push(id);
    }
    left = still;
    if (left.length) await sleep(500);
  }
  return left;
}

test('full disk (4 MiB tmpfs): nothing acknowledged is harmed, all ends once space returns',
  { skip: !IS_ROOT && 'needs root to mount a tmpfs', timeout: 180000 }, async (t) => {
  const mnt = path.join(tmpDir('tmpfs'), 'mnt');
  let umount;
  try {
    umount = mountTmpfs(mnt, '4m');
  } catch (e) {
    t.skip(`cannot mount a tmpfs here: ${e.message}`);
    return;
  }
  try {
    const d = await startDaemon({ dataDir: path.join(mnt, 'data'), args: ['--load-test-delay', '10ms'] });
    const { acked, refusals, badShape, died, firstRefusal } = await fill(d);
    const df = spawnSync('df', ['-k', mnt], { encoding: 'utf8' }).stdout.trim().split('\n').pop();
    assert.equal(died, null, 'the daemon stays up on a full disk');
    assert.ok(acked.size > 50, `only ${acked.size} jobs fit`);
    assert.ok(refusals['507 store_full'] > 0, `refused with 507: ${JSON.stringify(refusals)}`);
    assert.deepEqual(badShape.slice(0, 3), [], 'refusals are 507 with an error object');
    const bad1 = await readable(d, acked);
    assert.deepEqual(bad1.slice(0, 5), [], 'acknowledged jobs readable while full');
    // an upload on a full disk: refused, nothing half-stored
    const fd = new FormData();
    fd.append('purpose', 'batch');
    fd.append('file', new Blob([`${JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/chat/completions', body: chatBody(PAD.repeat(200)) })}\n`]), 'x.jsonl');
    const up = await fetch(`${d.base}/v1/files`, { method: 'POST', body: fd });
    const upj = await up.json().catch(() => null);
    const hFull = await healthz(d.base);
    // Space returns: grow the tmpfs in place. No restart: new work accepted,
    // every acknowledged job ends.
    // Stay full a while: outcomes the store refused are retried once a
    // second meanwhile, not in a hot loop.
    await sleep(3000);
    const fullS = (Date.now() - firstRefusal) / 1000;
    const g = spawnSync('mount', ['-o', 'remount,size=64m', mnt], { encoding: 'utf8' });
    assert.equal(g.status, 0, g.stderr);
    const t0 = Date.now();
    let after = null;
    while (Date.now() - t0 < 15000 && !after) {
      const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody('after-space-returns') });
      if (r.status === 200) after = r.json.id;
      else await sleep(250);
    }
    const acceptMs = Date.now() - t0;
    const ids = [...acked.keys()];
    const gens = await waitAll(d.base, [...ids, after].filter(Boolean), { timeoutMs: 30000 });
    const endMs = Date.now() - t0;
    const wrong = ids.filter((id) => gens.get(id).state !== 'Success' || echoOf(gens.get(id)) !== acked.get(id));
    // and a restart finds it all
    await d.restart();
    const again = await readable(d, acked);
    const chk = ctl(d.dataDir, ['check']);
    const retries = mostRetries(d);
    figures(t, 'full-disk', { tmpfs: '4m', acknowledged: acked.size, refusals, bad_refusals: badShape.length,
      daemon_died: died || 'no', unreadable_while_full: bad1.length, upload_on_full_disk: `${up.status} ${upj?.error?.code}`,
      jobs_while_full: hFull.jobs, submit_accepted_after_space_returned_ms: after ? acceptMs : null,
      all_ended_without_restart_ms: endMs, lost: ids.filter((id) => !gens.has(id)).length, wrong: wrong.length,
      unreadable_after_restart: again.length, check_exit: chk.status, df_when_full: df,
      full_s: fullS.toFixed(1), most_retries_of_one_outcome: retries });
    assert.ok([503, 507].includes(up.status), `upload on a full disk: ${up.status}`);
    // (Found: a parked outcome was retried in a hot loop, not once a second.)
    assert.ok(retries <= 2 * fullS + 5, `an outcome retried ${retries} times in ${fullS.toFixed(1)} s full`);
    assert.ok(after, 'a submit is accepted once space returns, without a restart');
    assert.deepEqual(wrong.slice(0, 5), [], 'every acknowledged job ends Success with its answer, without a restart');
    assert.deepEqual(again.slice(0, 5), [], 'all there after a restart');
    assert.equal(chk.status, 0, chk.stdout + chk.stderr);
    await d.term();
  } finally {
    umount();
  }
});

// Waits until nothing is Queued or In Progress; returns the counts.
async function settled(d, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const h = await healthz(d.base);
    if (h.jobs.queued + h.jobs.in_progress === 0 || Date.now() > deadline) return h.jobs;
    await sleep(200);
  }
}

test('full map (--map-size 1MiB): 507 store_full, nothing harmed or stuck, purge frees it live',
  { timeout: 120000 }, async (t) => {
  const d = await startDaemon({ args: ['--map-size', '1MiB', '--load-test-delay', '10ms'] });
  const { acked, refusals, badShape, died } = await fill(d);
  assert.equal(died, null);
  const bad1 = await readable(d, acked);
  const t0 = Date.now();
  const hFull = await settled(d, 10000);
  const settleMs = Date.now() - t0;
  const ids = [...acked.keys()];
  const gens = await waitAll(d.base, ids, { timeoutMs: 10000 });
  const wrong = ids.filter((id) => gens.get(id).state !== 'Success' || echoOf(gens.get(id)) !== acked.get(id));
  const chk1 = ctl(d.dataDir, ['check']);
  // slowlanectl purge on the running daemon frees the map; it goes on serving
  const p = ctl(d.dataDir, ['purge', '--finished-before', '0s']);
  await sleep(1500);
  const hAfterPurge = await request('GET', `${d.base}/healthz`);
  const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody('after purge') });
  const g = r.status === 200 ? await poll(d.base, r.json.id, { timeoutMs: 10000 }) : null;
  // restarts on the same map size and on a bigger one
  await d.restart();
  const hSame = await healthz(d.base);
  await d.restart({ args: ['--map-size', '64MiB'] });
  const r2 = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody('bigger map') });
  const chk2 = ctl(d.dataDir, ['check']);
  figures(t, 'full-map', { map_size: '1MiB', acknowledged: acked.size, refusals, bad_refusals: badShape.length,
    unreadable_while_full: bad1.length, all_ended_while_full_ms: settleMs, jobs_while_full: hFull,
    lost: ids.length - gens.size, wrong: wrong.length, purge_exit: p.status,
    healthz_after_live_purge: hAfterPurge.status, submit_after_purge: r.status, check_exit: [chk1.status, chk2.status] });
  assert.ok(acked.size > 20 && refusals['507 store_full'] > 0, JSON.stringify(refusals));
  assert.deepEqual(badShape.slice(0, 3), []);
  assert.deepEqual(bad1.slice(0, 5), []);
  assert.equal(hFull.in_progress + hFull.queued, 0, `nothing stuck while the map is full: ${JSON.stringify(hFull)}`);
  assert.deepEqual(wrong.slice(0, 5), [], 'every acknowledged job ends Success while the map is full');
  assert.equal(chk1.status, 0, chk1.stdout + chk1.stderr);
  assert.equal(p.status, 0, p.stderr);
  assert.equal(hAfterPurge.status, 200, `after a live purge: ${hAfterPurge.text}`);
  assert.equal(r.status, 200, 'a submit is accepted after the purge, without a restart');
  assert.equal(g?.state, 'Success');
  assert.equal(hSame.status, 'ok');
  assert.equal(r2.status, 200);
  assert.equal(chk2.status, 0, chk2.stdout + chk2.stderr);
});

test('full map with --retention: frees itself', { timeout: 60000 }, async (t) => {
  // Timing-free: retention may already be deleting while the map fills (a slow
  // machine), so the test does not compare counts taken at two instants; it
  // asks that a submit is taken again and that every acknowledged job, once
  // ended, is deleted by the daemon itself (404), with no restart or purge.
  const d = await startDaemon({ args: ['--map-size', '1MiB', '--load-test-delay', '10ms', '--retention', '1s'] });
  const { acked, refusals, died } = await fill(d);
  assert.equal(died, null);
  assert.ok(acked.size > 20 && refusals['507 store_full'] > 0, JSON.stringify(refusals));
  const t0 = Date.now();
  let accepted = null;
  while (Date.now() - t0 < 20000 && accepted === null) {
    const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody(uniq('retained')) });
    if (r.status === 200) accepted = Date.now() - t0;
    else await sleep(250);
  }
  const left = await untilAllGone(d, [...acked.keys()], t0 + 30000);
  const deletions = [...d.log().matchAll(/retention deleted (\d+) ended job/g)].reduce((a, m) => a + Number(m[1]), 0);
  figures(t, 'full-map-retention', { acknowledged: acked.size, not_deleted: left.length, logged_deletions: deletions,
    all_deleted_within_ms: Date.now() - t0, submit_accepted_after_ms: accepted });
  assert.ok(accepted !== null, 'a submit is accepted again without a restart');
  assert.deepEqual(left.slice(0, 5), [], 'retention deleted every acknowledged job once it ended');
  assert.ok(deletions >= acked.size, `the log counts the deletions (${deletions} of ${acked.size})`);
});

test('full map, 64 concurrent submitters, --retention: the backlog ends and is deleted, nothing stuck', { timeout: 90000 }, async (t) => {
  // Submits outrun the drain here, so the map fills with jobs not yet ended.
  // (Found by this test and fixed: the journal took submits beyond the map's
  // room, their commit was retried forever with the retention queued behind
  // it; then the map filled with queued jobs whose results could not fit,
  // so none could end and the retention had nothing to delete.) The daemon
  // must refuse early enough that every acknowledged job ends and goes.
  const d = await startDaemon({ args: ['--map-size', '1MiB', '--load-test-delay', '10ms', '--retention', '1s'] });
  const acked = new Set();
  const refusals = {};
  const until = Date.now() + 2000;
  await Promise.all(Array.from({ length: 64 }, async () => {
    while (Date.now() < until) {
      const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody(`${uniq('rush')} ${PAD}`) });
      if (r.status === 200) acked.add(r.json.id);
      else refusals[`${r.status} ${r.json?.error?.code}`] = (refusals[`${r.status} ${r.json?.error?.code}`] || 0) + 1;
    }
  }));
  assert.ok(acked.size > 20 && refusals['507 store_full'] > 0, `${acked.size} acked, ${JSON.stringify(refusals)}`);
  assert.deepEqual(Object.keys(refusals), ['507 store_full'], 'the only refusal is 507 store_full');
  const t0 = Date.now();
  const left = await untilAllGone(d, [...acked], t0 + 40000);
  const deletedMs = Date.now() - t0;
  // A client retries a 507 later: the room must come back by itself, soon.
  let after;
  const t1 = Date.now();
  while ((after = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody(uniq('after')) })).status !== 200 &&
      Date.now() - t1 < 10000)
    await sleep(100);
  figures(t, 'full-map-rush', { acknowledged: acked.size, refusals, not_deleted: left.length,
    all_deleted_within_ms: deletedMs, most_retries_of_one_outcome: mostRetries(d), submit_after: after.status,
    submit_accepted_after_ms: Date.now() - t1 });
  assert.deepEqual(left.slice(0, 5), [], 'every acknowledged job ended and was deleted by the retention');
  assert.equal(after.status, 200, 'a submit is accepted again within 10 s');
  assert.equal((await request('GET', `${d.base}/healthz`)).status, 200, 'the daemon is healthy');
});
