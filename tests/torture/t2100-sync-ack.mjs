// Torture 2: sync before acknowledgement. kill -9 cannot test fsync (the page
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
import { spawnSync } from 'node:child_process';
import { startDaemon, request, mapLimit, chatBody, tmpDir, SLOWLANED } from '../func/lib.mjs';
import { figures, pick, TORTURE_DIR } from './tlib.mjs';
import { readSyncLog, checkSyncLog } from './synclog.mjs';

const SINGLES = pick(300, 3000);
const GROUPS = pick(20, 200);

function shimPath() {
  const built = [process.env.SYNCSHIM,
    path.join(path.dirname(SLOWLANED || '.'), '..', 'tests', 'torture', 'syncshim.so')];
  for (const p of built) if (p && fs.existsSync(p)) return p;
  // Not built by make (a direct `node --test` run): build it here.
  const out = path.join(tmpDir('shim'), 'syncshim.so');
  const r = spawnSync(process.env.CC || 'cc', ['-std=gnu11', '-O2', '-shared', '-fPIC', '-o', out,
    path.join(TORTURE_DIR, 'syncshim.c'), '-ldl'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot build syncshim.so: ${r.stderr}`);
  return out;
}

// Runs the load against a daemon under the shim; returns {ids, events}.
async function runUnderShim(env, bin) {
  const logFile = path.join(tmpDir('synclog'), 'sync.log');
  const d = await startDaemon({
    bin,
    env: { LD_PRELOAD: shimPath(), SYNCSHIM_LOG: logFile, ...env },
    args: ['--load-test-delay', '5ms'],
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

test('every submit answer is sent after the sync that makes its job durable', { timeout: 300000 }, async (t) => {
  const { ids, events } = await runUnderShim({});
  const res = checkSyncLog(events, ids);
  figures(t, 'sync-before-ack', { answers_checked: res.checked, violations: res.violations.length, ...res.figures });
  assert.deepEqual(res.violations.slice(0, 5), [], `${res.violations.length} answers sent before their commit was durable`);
  assert.ok(res.figures.syncs > 0 && res.figures.meta_writes_dsync > 0, 'the shim saw the syncs');
  assert.equal(res.figures.suppressed_syncs, 0);
  assert.equal(res.figures.files_checked, 1, 'the uploaded file: fsync, rename, directory fsync before its id');
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
  const { ids, events } = await runUnderShim({}, bin);
  const res = checkSyncLog(events, ids);
  figures(t, 'sync-before-ack-negative-control-nosync-build', { answers_checked: res.checked, violations: res.violations.length, ...res.figures });
  assert.equal(res.figures.suppressed_syncs, 0, 'the shim suppressed nothing: LMDB itself skipped the syncs');
  assert.equal(res.figures.syncs, 0, 'no sync of data.mdb at all');
  assert.equal(res.violations.length, ids.length, 'every answer is flagged without a sync');
});

test('negative control: with the meta page not synced (MDB_NOMETASYNC) the checker fails', { timeout: 300000 }, async (t) => {
  const { ids, events } = await runUnderShim({ SYNCSHIM_NOSYNC: 'meta' });
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
    args: ['--paused'],
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

