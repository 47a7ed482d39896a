// slowlanectl against a live daemon under load and against a stopped one:
// stats and ls agree with what was submitted; cancel ends a queued job
// Failed without it ever reaching the upstream, and an in-flight one stays
// Failed when its answer arrives; requeue runs a failed job again on the
// live daemon and, written while it is stopped, after its restart; purge
// deletes exactly the ended jobs; backup makes a copy a daemon starts from;
// check finds an index entry removed on purpose and repairs it; bad ids,
// commands and data dirs get the documented exit codes.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  SLOWLANED, startMock, startDaemon, submitOk, get, poll, waitAll, mapLimit, sleep, chatBody,
  tmpDir, TIME_SCALE,
} from '../func/lib.mjs';

const CTL = path.join(path.dirname(SLOWLANED || '.'), '../tools/slowlanectl');
const CHAT = '/v1/slow/chat/completions';
const uniq = () => Math.random().toString(36).slice(2, 10);

// Runs slowlanectl; never throws on a non-zero exit. The caller's
// SLOWLANE_DATA_DIR must not leak in.
function ctl(args, { dataDir } = {}) {
  const env = { ...process.env };
  delete env.SLOWLANE_DATA_DIR;
  const argv = dataDir ? ['--data-dir', dataDir, ...args] : args;
  return new Promise((resolve, reject) => {
    const p = spawn(CTL, argv, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b) => { stdout += b; });
    p.stderr.on('data', (b) => { stderr += b; });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// Runs slowlanectl --json, insists on exit 0, returns the parsed output.
async function ctlJson(args, opts) {
  const r = await ctl([...args, '--json'], opts);
  assert.equal(r.code, 0, `slowlanectl ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

let mock;
let d;
const N = 300;
const submitted = new Map(); // id -> {customId, model}
let cancelledQueued; // {id, text}
let cancelledInflight; // {id, text}
let failedOnce; // {id, text}

before(async () => {
  assert.ok(fs.existsSync(CTL), `${CTL} does not exist: run 'make' first`);
  mock = await startMock({ latency: 300 });
  d = await startDaemon({
    upstream: mock.url,
    args: ['--concurrency', '8', '--max-attempts', '2', '--retry-base', '100ms',
      '--shutdown-grace', '300ms'],
  });
});

async function calls(text) {
  return (await mock.stats()).by_echo[text] || 0;
}

test('under load: stats and ls agree with what was submitted', async () => {
  const models = ['mock-model', 'mock-other'];
  await mapLimit([...Array(N).keys()], 32, async (i) => {
    const customId = `ctl-${i}-${uniq()}`;
    const model = models[i % 7 === 0 ? 1 : 0];
    const id = await submitOk(d.base, CHAT, chatBody(`load ${i}`, {
      model, metadata: { custom_id: customId },
    }));
    submitted.set(id, { customId, model });
  });

  // A snapshot while the queue drains (8 calls of 300 ms at a time).
  const s = await ctlJson(['stats'], { dataDir: d.dataDir });
  const c = s.counts;
  assert.equal(s.total, N);
  assert.equal(c.Queued + c['In Progress'] + c.Success + c.Failed, N);
  assert.ok(c.Queued > 0, `still queued under load: ${JSON.stringify(c)}`);
  // In Progress on disk: the 8 calls, plus the jobs claimed ahead while a
  // claim's round trip is long beside a call (src/sched.c): rare against a
  // 300 ms upstream, but a busy machine slows the writer; at most 4 x 8.
  assert.ok(c['In Progress'] <= 8 + 4 * 8, `at most --concurrency in flight, plus claim-ahead: ${JSON.stringify(c)}`);
  // One read transaction: the per-model view of unfinished jobs adds up.
  const byModel = Object.values(s.unfinishedByModel);
  assert.equal(byModel.reduce((a, m) => a + m.Queued, 0), c.Queued);
  assert.equal(byModel.reduce((a, m) => a + m['In Progress'], 0), c['In Progress']);
  assert.ok(s.oldestQueued && s.oldestQueued.ageMs >= 0, JSON.stringify(s.oldestQueued));
  assert.ok(s.store.usedBytes > 0 && s.store.mapBytes > 0);

  const rows = await ctlJson(['ls', '--limit', '0'], { dataDir: d.dataDir });
  assert.equal(rows.length, N);
  assert.deepEqual(new Set(rows.map((r) => r.id)), new Set(submitted.keys()));
  for (const r of rows) {
    assert.equal(r.custom_id, submitted.get(r.id).customId, r.id);
    assert.equal(r.model, submitted.get(r.id).model, r.id);
  }
  for (let i = 1; i < rows.length; i++)
    assert.ok(rows[i - 1].createdAt >= rows[i].createdAt, 'newest first');

  const other = await ctlJson(['ls', '--model', 'mock-other', '--limit', '0'], { dataDir: d.dataDir });
  assert.equal(other.length, [...submitted.values()].filter((v) => v.model === 'mock-other').length);
  const queued = await ctlJson(['ls', '--state', 'queued', '--limit', '10'], { dataDir: d.dataDir });
  assert.ok(queued.length > 0 && queued.length <= 10);
  assert.ok(queued.every((r) => r.state === 'Queued'));
  const table = await ctl(['ls', '--limit', '3'], { dataDir: d.dataDir });
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^ID +STATE +MODEL +CUSTOM_ID/);

  // cancel while queued, behind a few hundred jobs: never sent upstream
  const text = `cancel me queued ${uniq()}`;
  const id = await submitOk(d.base, CHAT, chatBody(text));
  const r = await ctl(['cancel', id], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /cancelled 1 job/);
  const g = (await get(d.base, id)).json;
  assert.equal(g.state, 'Failed');
  assert.equal(g.stateMessage, 'cancelled by operator');
  cancelledQueued = { id, text };

  const all = await waitAll(d.base, [...submitted.keys()], { timeoutMs: 40000 });
  assert.ok([...all.values()].every((x) => x.state === 'Success'));
  assert.equal(await calls(text), 0, 'the cancelled job never reached the upstream');
  assert.equal((await get(d.base, id)).json.state, 'Failed');
  const s2 = await ctlJson(['stats'], { dataDir: d.dataDir });
  assert.deepEqual(s2.counts, { Queued: 0, 'In Progress': 0, Success: N, Failed: 1 });
  assert.ok(s2.finishedLastMinute >= N + 1 && s2.finishedLastHour >= s2.finishedLastMinute);
});

test('cancel of an in-flight call: stays Failed after its answer would have come', async () => {
  const text = `cancel me in flight ${uniq()} [mock:delay=3000]`;
  const id = await submitOk(d.base, CHAT, chatBody(text));
  await poll(d.base, id, { until: ['In Progress'], timeoutMs: 10000 });
  const r = await ctl(['cancel', id], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  let g = (await get(d.base, id)).json;
  assert.equal(g.state, 'Failed');
  assert.equal(g.stateMessage, 'cancelled by operator');
  // The running daemon drops the call within one second (its tick).
  const t0 = Date.now();
  while (!d.log().includes(`abandoning the call for ${id}`) && Date.now() - t0 < 3000 * TIME_SCALE) await sleep(50);
  const took = Date.now() - t0;
  assert.ok(took < 1300 * TIME_SCALE, `the call was abandoned ${took} ms after the cancel`);
  await sleep(3500); // the mock answers 3 s after the call started
  g = (await get(d.base, id)).json;
  assert.equal(g.state, 'Failed', 'a late answer must not resurrect the job');
  assert.equal(g.stateMessage, 'cancelled by operator');
  assert.equal(g.response, null);
  assert.equal(await calls(text), 1, 'called once, not retried');
  const show = await ctlJson(['show', id], { dataDir: d.dataDir });
  assert.equal(show.state, 'Failed');
  assert.equal(show.attempts.length, 1);
  assert.match(show.attempts[0].message, /cancel/);
  cancelledInflight = { id, text };
});

test('requeue of a Failed job runs it again on the live daemon', async () => {
  const text = `fail once ${uniq()} [mock:fail=1,status=400]`;
  const id = await submitOk(d.base, CHAT, chatBody(text));
  const failed = await poll(d.base, id, { timeoutMs: 10000 });
  assert.equal(failed.state, 'Failed');
  assert.match(failed.stateMessage, /400/);

  // dry run: counts, changes nothing
  const dry = await ctlJson(['requeue', '--state', 'Failed', '--dry-run'], { dataDir: d.dataDir });
  assert.equal(dry.dryRun, true);
  assert.equal(dry.matched, 3); // this one and the two cancelled
  assert.ok(dry.ids.includes(id));
  const dry400 = await ctlJson(['requeue', '--state', 'failed', '--message', '400', '--since', '1m',
    '--dry-run'], { dataDir: d.dataDir });
  assert.deepEqual(dry400.ids, [id]);
  assert.equal((await get(d.base, id)).json.state, 'Failed');
  const st = await ctlJson(['stats'], { dataDir: d.dataDir });
  assert.equal(st.counts.Failed, 3);

  // Success needs --force; an unknown id changes nothing
  const ok = [...submitted.keys()][0];
  let r = await ctl(['requeue', ok], { dataDir: d.dataDir });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--force/);
  r = await ctl(['requeue', id, 'AAAAAAAAAAAAAAAAAAAAA'], { dataDir: d.dataDir });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no job AAAAAAAAAAAAAAAAAAAAA/);
  assert.equal((await get(d.base, id)).json.state, 'Failed', 'nothing changed');

  r = await ctl(['requeue', id], { dataDir: d.dataDir });
  const requeuedAt = Date.now(); // slowlanectl has committed and exited
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /requeued 1 job/);
  const g = await poll(d.base, id, { timeoutMs: 10000 });
  assert.equal(g.state, 'Success', g.stateMessage);
  // The running daemon acts within one second (its tick), plus its claim commit.
  const took = Date.parse(g.dispatchedAt) - requeuedAt;
  assert.ok(took < 1300 * TIME_SCALE, `dispatched again ${took} ms after the requeue (the daemon ticks every 1 s)`);
  assert.equal(await calls(text), 2);
  failedOnce = { id, text };
});

test('against a stopped daemon: stats, ls, show, cancel, requeue, purge; restart runs the requeued', async () => {
  // Some jobs left Queued at the stop: slow calls, released by the short grace.
  const slow = [];
  for (let i = 0; i < 20; i++)
    slow.push(await submitOk(d.base, CHAT, chatBody(`slow ${i} ${uniq()} [mock:delay=3000]`)));
  await sleep(200);
  assert.equal(await d.term(), 0);

  const dir = d.dataDir;
  const s = await ctlJson(['stats'], { dataDir: dir });
  const total = N + 3 + slow.length;
  assert.equal(s.total, total);
  assert.equal(s.counts.Queued, slow.length, JSON.stringify(s.counts));
  assert.equal(s.counts.Success, N + 1);
  assert.equal(s.counts.Failed, 2);
  const rows = await ctlJson(['ls', '--limit', '0'], { dataDir: dir });
  assert.equal(rows.length, total);
  assert.deepEqual((await ctlJson(['ls', '--limit', '5', '--state', 'Queued'], { dataDir: dir }))
    .map((x) => x.id), [...slow].reverse().slice(0, 5));
  const shown = await ctlJson(['show', failedOnce.id], { dataDir: dir });
  assert.equal(shown.id, failedOnce.id);
  assert.equal(shown.state, 'Success');
  assert.equal(shown.request.messages[0].content, failedOnce.text);
  assert.equal(shown.response.choices[0].message.content, failedOnce.text);
  assert.ok(shown.createdAt && shown.dispatchedAt && shown.finishedAt);
  const text = await ctl(['show', failedOnce.id], { dataDir: dir });
  assert.equal(text.code, 0);
  assert.match(text.stdout, /attempt history/);

  // cancel one of the queued; requeue the job cancelled while it was queued
  const victim = slow[slow.length - 1];
  let r = await ctl(['cancel', victim], { dataDir: dir });
  assert.equal(r.code, 0, r.stderr);
  r = await ctl(['cancel', victim], { dataDir: dir });
  assert.equal(r.code, 1, 'already ended');
  assert.match(r.stderr, /already ended/);
  r = await ctl(['requeue', cancelledQueued.id], { dataDir: dir });
  assert.equal(r.code, 0, r.stderr);
  const after = await ctlJson(['stats'], { dataDir: dir });
  assert.equal(after.counts.Queued, slow.length); // -1 cancelled, +1 requeued
  assert.equal(after.counts.Failed, 2); // +1 cancelled, -1 requeued

  // purge: a dry run counts, the real one deletes the ended jobs and only them
  const ended = after.counts.Success + after.counts.Failed;
  const dry = await ctlJson(['purge', '--finished-before', '0s', '--dry-run'], { dataDir: dir });
  assert.equal(dry.purged, ended);
  assert.equal((await ctlJson(['stats'], { dataDir: dir })).total, total);
  const none = await ctlJson(['purge', '--finished-before', '1h'], { dataDir: dir });
  assert.equal(none.purged, 0, 'nothing ended more than an hour ago');
  const purged = await ctlJson(['purge', '--finished-before', '0s'], { dataDir: dir });
  assert.equal(purged.purged, ended);
  assert.ok(purged.freedBytes > 0);
  const left = await ctlJson(['stats'], { dataDir: dir });
  assert.deepEqual(left.counts, { Queued: slow.length, 'In Progress': 0, Success: 0, Failed: 0 });
  assert.equal((await ctlJson(['ls', '--limit', '0'], { dataDir: dir })).length, slow.length);
  r = await ctl(['check'], { dataDir: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);

  await d.restart();
  const g = await poll(d.base, cancelledQueued.id, { timeoutMs: 15000 });
  assert.equal(g.state, 'Success', g.stateMessage);
  assert.equal(await calls(cancelledQueued.text), 1);
  for (const id of [failedOnce.id, victim, [...submitted.keys()][5]])
    assert.equal((await get(d.base, id)).status, 404, `${id} was purged`);
  await waitAll(d.base, slow.slice(0, -1), { timeoutMs: 20000 });
});

test('backup of the live store: a daemon starts from it with every job; check is clean', async () => {
  const src = await ctlJson(['ls', '--limit', '0'], { dataDir: d.dataDir });
  const target = path.join(tmpDir('backup'), 'copy');
  const r = await ctl(['backup', target], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /backed up/);
  const again = await ctl(['backup', target], { dataDir: d.dataDir });
  assert.equal(again.code, 1);
  assert.match(again.stderr, /not empty/);

  const chk = await ctlJson(['check'], { dataDir: target });
  assert.equal(chk.ok, true, JSON.stringify(chk.problems));
  assert.equal(chk.jobs, src.length);
  const copy = await ctlJson(['ls', '--limit', '0'], { dataDir: target });
  assert.deepEqual(new Set(copy.map((x) => x.id)), new Set(src.map((x) => x.id)));

  const d2 = await startDaemon({ upstream: mock.url, dataDir: target });
  for (const x of src)
    assert.equal((await get(d2.base, x.id)).status, 200, x.id);
  assert.equal(await d2.term(), 0);
});

// Copies store `src` into a new directory through mdb_dump/mdb_load, letting
// edit(db, lines, i) drop (return 'drop': this key and its value line) or
// rewrite (return a string) the line at i of database db. Returns the copy.
function rebuildStore(src, edit) {
  const dump = spawnSync('mdb_dump', ['-a', src], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(dump.status, 0, dump.stderr);
  const lines = dump.stdout.split('\n');
  const out = [];
  let db = '';
  for (let i = 0; i < lines.length; i++) {
    const m = /^database=(.*)$/.exec(lines[i]);
    if (m) db = m[1];
    const e = lines[i].startsWith(' ') ? edit(db, lines, i) : undefined;
    if (e === 'drop') {
      i++;
      continue;
    }
    out.push(typeof e === 'string' ? e : lines[i]);
  }
  const dir = path.join(tmpDir('rebuilt'), 'store');
  fs.mkdirSync(dir);
  const load = spawnSync('mdb_load', [dir], { input: out.join('\n') });
  assert.equal(load.status, 0, String(load.stderr));
  return dir;
}

const haveMdbTools = !spawnSync('mdb_dump', ['-V']).error && !spawnSync('mdb_load', ['-V']).error;

test('check finds an index entry removed on purpose; --repair fixes it',
  { skip: !haveMdbTools && 'mdb_dump/mdb_load (lmdb-utils) are not installed' }, async () => {
    const victim = (await ctlJson(['ls', '--limit', '1'], { dataDir: d.dataDir }))[0].id;
    const copy = path.join(tmpDir('copy'), 'copy');
    let r = await ctl(['backup', copy], { dataDir: d.dataDir });
    assert.equal(r.code, 0, r.stderr);
    // the victim's entry in the `created` index, and only that, goes
    const hexId = Buffer.from(victim).toString('hex');
    let removed = 0;
    const broken = rebuildStore(copy, (db, lines, i) => {
      if (db !== 'created' || !lines[i].endsWith(hexId)) return undefined;
      removed++;
      return 'drop';
    });
    assert.equal(removed, 1);

    r = await ctl(['check'], { dataDir: broken });
    assert.equal(r.code, 1, 'a problem remains: exit 1');
    assert.match(r.stdout, new RegExp(`${victim} +missing from the created index`));
    const j = JSON.parse((await ctl(['check', '--json'], { dataDir: broken })).stdout);
    assert.equal(j.ok, false);
    assert.deepEqual(j.problems.map((p) => p.id), [victim]);
    r = await ctl(['check', '--repair'], { dataDir: broken });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /\[repaired\]/);
    r = await ctl(['check'], { dataDir: broken });
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, / 0 problems/);
    assert.equal((await ctlJson(['ls', '--limit', '1'], { dataDir: broken }))[0].id, victim);
  });

test('a store of a newer format: a clear message, exit 1, nothing changed',
  { skip: !haveMdbTools && 'mdb_dump/mdb_load (lmdb-utils) are not installed' }, async () => {
    const copy = path.join(tmpDir('copy'), 'copy');
    assert.equal((await ctl(['backup', copy], { dataDir: d.dataDir })).code, 0);
    const formatKey = ' ' + Buffer.from('format').toString('hex');
    const newer = rebuildStore(copy, (db, lines, i) =>
      (db === 'meta' && lines[i - 1] === formatKey ? ' 00000063' : undefined)); // format 99
    const before = fs.readFileSync(path.join(newer, 'data.mdb'));
    for (const args of [['stats'], ['ls'], ['purge', '--finished-before', '0s'], ['check', '--repair']]) {
      const r = await ctl(args, { dataDir: newer });
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, /newer format/);
    }
    assert.ok(before.equals(fs.readFileSync(path.join(newer, 'data.mdb'))), 'store unchanged');
  });

test('watch without a terminal prints one line per refresh', async () => {
  let r = await ctl(['watch', '--interval', '100ms', '--count', '3'], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 3);
  assert.match(lines[0], /queued=\d+ in_progress=\d+ success=\d+ failed=\d+ total=\d+/);
  r = await ctl(['watch', '--json', '--interval', '100ms', '--count', '2'], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  for (const l of r.stdout.trim().split('\n'))
    assert.equal(typeof JSON.parse(l).total, 'number');
});

test('export writes the generations as JSON lines', async () => {
  const r = await ctl(['export', '--state', 'success', '--limit', '3'], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  const gens = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(gens.length, 3);
  for (const g of gens) {
    assert.equal(g.state, 'Success');
    assert.equal(g.response.choices[0].message.content, g.request.messages[0].content);
  }
});

test('every command answers --help with its usage, exit 0, touching no store', async () => {
  const cmds = ['stats', 'ls', 'show', 'requeue', 'cancel', 'purge', 'export', 'backup', 'check', 'watch',
    'webhook add', 'webhook ls', 'webhook rm', 'webhook rotate-secret', 'webhook deliveries',
    'batches', 'batch show', 'batch cancel', 'key add', 'key ls', 'key revoke', 'key set'];
  const missing = path.join(os.tmpdir(), `slowlanectl-help-${uniq()}`);
  for (const c of cmds) {
    const r = await ctl([...c.split(' '), '--help'], { dataDir: missing });
    assert.equal(r.code, 0, `${c} --help: exit ${r.code} ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^Usage: slowlanectl ${c}\\b`), `${c} --help prints its usage`);
  }
  assert.ok(!fs.existsSync(missing), '--help creates no data dir');
});

test('exit codes: unknown id 1, unknown command 2, missing data dir 1 creating nothing', async () => {
  let r = await ctl(['show', 'AAAAAAAAAAAAAAAAAAAAA'], { dataDir: d.dataDir });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no job AAAAAAAAAAAAAAAAAAAAA/);
  r = await ctl(['cancel', 'nope'], { dataDir: d.dataDir });
  assert.equal(r.code, 1);
  r = await ctl(['frobnicate'], { dataDir: d.dataDir });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown command 'frobnicate'/);
  r = await ctl(['ls', '--bogus'], { dataDir: d.dataDir });
  assert.equal(r.code, 2);
  r = await ctl(['ls', '--since', 'yesterday'], { dataDir: d.dataDir });
  assert.equal(r.code, 2);
  r = await ctl(['purge'], { dataDir: d.dataDir });
  assert.equal(r.code, 2, 'purge needs --finished-before');
  r = await ctl(['ls', '--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /--state/);

  const missing = path.join(tmpDir('missing'), 'no-such-dir');
  for (const args of [['stats'], ['requeue', '--state', 'Failed'], ['purge', '--finished-before', '0s'],
    ['check', '--repair']]) {
    r = await ctl(args, { dataDir: missing });
    assert.equal(r.code, 1, args.join(' '));
    assert.match(r.stderr, /no store in .*no-such-dir \(is --data-dir right\?\)/);
  }
  assert.equal(fs.existsSync(missing), false, 'nothing created');
  const empty = tmpDir('empty');
  r = await ctl(['cancel', 'AAAAAAAAAAAAAAAAAAAAA'], { dataDir: empty });
  assert.equal(r.code, 1);
  assert.deepEqual(fs.readdirSync(empty), [], 'no store created in an empty dir');
});
