// Torture 2: sync before acknowledgement.
// Submits are acknowledged from the journal by default (docs/JOURNAL.md): the
// checker accepts "in a synced journal write" for them, every test with the
// journal has a twin with --no-journal for the LMDB path, and
// SYNCSHIM_NOSYNC=journal (only the journal's syncs dropped) is the journal's
// negative control. kill -9 cannot test fsync (the page
// cache survives a process kill), so this test records the daemon's syscalls
// with an LD_PRELOAD shim (syncshim.so: data.mdb writes and syncs, socket
// sends, one total order) and proves that every id a client was answered with
// (single jobs, groups, a file, a batch) was sent only after the LMDB commit
// holding it was durable: pages written, fdatasync, meta page written O_DSYNC
// (synclog.mjs states the rule); for the file, also its bytes (fsync, rename,
// fsync of the directory). The negative control runs the same load with
// SYNCSHIM_NOSYNC=1, which turns data.mdb's syncs into no-ops and drops
// O_DSYNC (the effect of MDB_NOSYNC): the checker must flag every answer;
// and with SYNCSHIM_NOSYNC=meta (only O_DSYNC dropped: MDB_NOMETASYNC) it
// must flag the answers sent before a later sync covered their meta page.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, request, mapLimit, chatBody, tmpDir, SLOWLANED } from '../func/lib.mjs';
import { figures, pick, shimPath } from './tlib.mjs';
import { readSyncLog, checkSyncLog } from './synclog.mjs';

const SINGLES = pick(300, 3000);
const GROUPS = pick(20, 200);

// Runs the load against a daemon under the shim; returns {ids, events}.
async function runUnderShim(env, bin, args = []) {
  const logFile = path.join(tmpDir('synclog'), 'sync.log');
  const d = await startDaemon({
    bin,
    env: { LD_PRELOAD: shimPath(), SYNCSHIM_LOG: logFile, ...env },
    args: ['--load-test-delay', '5ms', ...args],
  });
  const ids = [];
  await mapLimit([...Array(SINGLES).keys()], 24, async (i) => {
    const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody(`sync-${i}`) });
    assert.equal(r.status, 200, r.text);
    ids.push(r.json.id);
  });
  await mapLimit([...Array(GROUPS).keys()], 8, async (i) => {
    const r = await request('POST', `${d.base}/v1/async/group/chat/completions`,
      { body: { requests: [0, 1, 2].map((k) => chatBody(`sync-g${i}-${k}`)) } });
    assert.equal(r.status, 200, r.text);
    ids.push(r.json.groupId);
  });
  const line = JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/chat/completions', body: chatBody('sync-batch') });
  const fd = new FormData();
  fd.append('purpose', 'batch');
  fd.append('file', new Blob([line + '\n']), 'in.jsonl');
  const fr = await fetch(`${d.base}/v1/files`, { method: 'POST', body: fd });
  const file = await fr.json();
  assert.equal(fr.status, 200, JSON.stringify(file));
  ids.push(file.id);
  const b = await request('POST', `${d.base}/v1/batches`, { body:
    { input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' } });
  assert.equal(b.status, 200, b.text);
  ids.push(b.json.id);
  assert.equal(await d.term(), 0);
  return { ids, events: readSyncLog(logFile) };
}

for (const journal of [true, false]) {
  test(`every submit answer is sent after the sync that makes its job durable (${journal ? 'journal' : '--no-journal'})`, { timeout: 300000 }, async (t) => {
    const { ids, events } = await runUnderShim({}, undefined, journal ? [] : ['--no-journal']);
    const res = checkSyncLog(events, ids);
    figures(t, `sync-before-ack${journal ? '' : '-no-journal'}`, { answers_checked: res.checked, violations: res.violations.length, ...res.figures });
    assert.deepEqual(res.violations.slice(0, 5), [], `${res.violations.length} answers sent before their commit was durable`);
    assert.ok(res.figures.syncs > 0 && res.figures.meta_writes_dsync > 0, 'the shim saw the syncs');
    assert.equal(res.figures.suppressed_syncs, 0);
    assert.equal(res.figures.files_checked, 1, 'the uploaded file: fsync, rename, directory fsync before its id');
    if (journal)
      assert.equal(res.figures.journaled_checked, SINGLES + GROUPS, 'every single and group submit was acknowledged from the synced journal');
    else
      assert.equal(res.figures.journal_writes, 0, 'no journal is written with --no-journal');
  });
}

test('negative control: with the journal\'s syncs suppressed the checker fails', { timeout: 300000 }, async (t) => {
  const { ids, events } = await runUnderShim({ SYNCSHIM_NOSYNC: 'journal' });
  const res = checkSyncLog(events, ids);
  figures(t, 'sync-before-ack-negative-control-journal', { answers_checked: res.checked, violations: res.violations.length, ...res.figures });
  assert.ok(res.figures.suppressed_syncs > 0 && res.figures.syncs > 0, 'journal syncs suppressed, store syncs not');
  assert.equal(res.violations.length, SINGLES + GROUPS, 'every journaled answer is flagged, the file and batch are not');
});

test('negative control: with syncs suppressed (MDB_NOSYNC) the checker fails', { timeout: 300000 }, async (t) => {
  const { ids, events } = await runUnderShim({ SYNCSHIM_NOSYNC: '1' });
  const res = checkSyncLog(events, ids);
  figures(t, 'sync-before-ack-negative-control', { answers_checked: res.checked, violations: res.violations.length, ...res.figures });
  assert.ok(res.figures.suppressed_syncs > 0, 'the shim suppressed the syncs');
  assert.equal(res.figures.syncs, 0);
  assert.equal(res.violations.length, ids.length, 'every answer is flagged without a sync');
});

test('negative control: a build with MDB_NOSYNC forced on fails the checker', { timeout: 300000 }, async (t) => {
  const bin = path.join(path.dirname(SLOWLANED), '..', 'tests', 'torture', 'slowlaned-nosync');
  assert.ok(fs.existsSync(bin), `${bin} is built by make check`);
  const { ids, events } = await runUnderShim({}, bin, ['--no-journal']);
  const res = checkSyncLog(events, ids);
  figures(t, 'sync-before-ack-negative-control-nosync-build', { answers_checked: res.checked, violations: res.violations.length, ...res.figures });
  assert.equal(res.figures.suppressed_syncs, 0, 'the shim suppressed nothing: LMDB itself skipped the syncs');
  assert.equal(res.figures.syncs, 0, 'no sync of data.mdb at all');
  assert.equal(res.violations.length, ids.length, 'every answer is flagged without a sync');
});

test('negative control: with the meta page not synced (MDB_NOMETASYNC) the checker fails', { timeout: 300000 }, async (t) => {
  const { ids, events } = await runUnderShim({ SYNCSHIM_NOSYNC: 'meta' }, undefined, ['--no-journal']);
  const res = checkSyncLog(events, ids);
  figures(t, 'sync-before-ack-negative-control-nometasync', { answers_checked: res.checked, violations: res.violations.length, ...res.figures });
  assert.equal(res.figures.meta_writes_dsync, 0);
  assert.ok(res.figures.syncs > 0, 'data syncs still happen');
  // an answer sent before the NEXT commit's fdatasync is unprotected; most are
  assert.ok(res.violations.length > 0, 'the checker flags answers sent before their meta page is durable');
});

test('group commit: behind a slow sync, 600 submits from 64 clients share far fewer commits', { timeout: 120000 }, async () => {
  // Each sync of data.mdb takes 20 ms longer (a slow disk): the submits that
  // arrive while one commit syncs must all ride on the next one. Dispatch is
  // paused, so the only commits are the submits' own.
  const d = await startDaemon({
    env: { LD_PRELOAD: shimPath(), SYNCSHIM_SYNC_DELAY_US: '20000' },
    args: ['--paused', '--no-journal'],
  });
  const N = 600;
  await mapLimit([...Array(N).keys()], 64, async (i) => {
    const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody(`gc-${i}`) });
    assert.equal(r.status, 200, r.text);
  });
  assert.equal(await d.term(), 0);
  const m = d.log().match(/stopped: (\d+) commits, (\d+) store operations/);
  assert.ok(m, 'the daemon logs its commit count at exit');
  const [commits, ops] = [Number(m[1]), Number(m[2])];
  assert.ok(ops >= N, `${ops} store operations for ${N} submits`);
  assert.ok(commits <= ops / 4, `${commits} commits for ${ops} operations: submits are not sharing syncs`);
});

test('group commit in the journal: 600 submits share far fewer journal appends, and the store commits behind them', { timeout: 120000 }, async () => {
  // Each journal sync takes 20 ms longer, each store sync 60 ms: submits
  // arriving during one append ride on the next, and the store commits what
  // several appends acknowledged at once.
  const d = await startDaemon({
    env: { LD_PRELOAD: shimPath(), SYNCSHIM_JOURNAL_SYNC_DELAY_US: '20000', SYNCSHIM_SYNC_DELAY_US: '60000' },
    args: ['--paused'],
  });
  const N = 600;
  await mapLimit([...Array(N).keys()], 64, async (i) => {
    const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody(`gj-${i}`) });
    assert.equal(r.status, 200, r.text);
  });
  assert.equal(await d.term(), 0);
  const m = d.log().match(/stopped: (\d+) commits, (\d+) store operations, (\d+) submits journaled in (\d+) appends/);
  assert.ok(m, 'the daemon logs its journal figures at exit');
  const [commits, journaled, appends] = [Number(m[1]), Number(m[3]), Number(m[4])];
  assert.equal(journaled, N, 'every submit was acknowledged from the journal');
  assert.ok(appends <= N / 4, `${appends} journal appends for ${N} submits: submits are not sharing syncs`);
  assert.ok(commits < appends, `${commits} store commits for ${appends} appends: the store commits behind the journal in bigger batches`);
});
