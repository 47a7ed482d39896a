// Torture 7: the submit journal (docs/JOURNAL.md). Submits are acknowledged
// after one synced journal append and stored behind it. The shim makes every
// store sync 150 ms slower, so that acknowledged submits wait in the journal
// long enough for a poll to hit them, and for a kill -9 to catch them.
// Checked: polls see journaled jobs and groups; after a kill -9, startup
// stores every acknowledged submit the store lacked, exactly once, bodies
// intact; --no-journal still replays a journal left behind; and a journal
// left beside a store that never had one (data.mdb removed by hand) is not
// applied to it. slowlanectl after a crash stores what only the journal
// holds, as startup would; and a second daemon on a journal in use is
// refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, request, mapLimit, chatBody, get, healthz } from '../func/lib.mjs';
import { figures, shimPath, ctl, exportAll, runDaemonExpectExit } from './tlib.mjs';

const SLOW_STORE = { LD_PRELOAD: shimPath(), SYNCSHIM_SYNC_DELAY_US: '150000' };
const NO_SHIM = { LD_PRELOAD: '', SYNCSHIM_SYNC_DELAY_US: '0' };

async function submitMany(base, n, tag) {
  const ids = [];
  await mapLimit([...Array(n).keys()], 32, async (i) => {
    const r = await request('POST', `${base}/v1/async/chat/completions`, { body: chatBody(`${tag}-${i}`) });
    assert.equal(r.status, 200, r.text);
    ids.push({ id: r.json.id, content: `${tag}-${i}` });
  });
  return ids;
}

function replayedCount(log) {
  const all = [...log.matchAll(/journal: (\d+) acknowledged submits? stored/g)];
  return all.length ? Number(all[all.length - 1][1]) : 0;
}

test('a poll right after the answer sees the journaled job and group, before the store has them', async () => {
  const d = await startDaemon({ env: SLOW_STORE, args: ['--paused'] });
  const body = chatBody('seen-early');
  const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body });
  assert.equal(r.status, 200, r.text);
  const g = await get(d.base, r.json.id);
  assert.equal(g.status, 200, g.text);
  assert.equal(g.json.state, 'Queued');
  assert.deepEqual(g.json.request, body, 'the request comes back as submitted');
  const gr = await request('POST', `${d.base}/v1/async/group/chat/completions`,
    { body: { requests: [chatBody('g-a'), chatBody('g-b')] } });
  assert.equal(gr.status, 200, gr.text);
  const gg = await request('GET', `${d.base}/v1/async/group/${gr.json.groupId}/generations`);
  assert.equal(gg.status, 200, gg.text);
  assert.equal(gg.json.groupSize, 2);
  assert.deepEqual(gg.json.generations.map((x) => x.request.messages[0].content), ['g-a', 'g-b']);
  const member = await get(d.base, gg.json.generations[1].id);
  assert.equal(member.status, 200, 'a member of a journaled group is found by its own id');
  const wrong = await request('GET', `${d.base}/v1/async/group/${r.json.id}/generations`);
  assert.equal(wrong.status, 404, 'a job id is not a group id, even in the journal');
  assert.equal(await d.term(), 0);
  assert.match(d.log(), /submits journaled in \d+ appends/);
});

test('kill -9 with acknowledged submits still in the journal: startup stores each exactly once', { timeout: 120000 }, async (t) => {
  const d = await startDaemon({ env: SLOW_STORE, args: ['--paused'] });
  const [ids, groups] = await Promise.all([submitMany(d.base, 400, 'k9'), (async () => {
    const out = [];
    await mapLimit([...Array(20).keys()], 4, async (i) => {
      const r = await request('POST', `${d.base}/v1/async/group/chat/completions`,
        { body: { requests: [chatBody(`k9g${i}-a`), chatBody(`k9g${i}-b`)] } });
      assert.equal(r.status, 200, r.text);
      out.push({ id: r.json.groupId, i });
    });
    return out;
  })()]);
  await d.kill9();
  await d.restart({ env: NO_SHIM });
  const replayed = replayedCount(d.log());
  figures(t, 'journal-replay', { acknowledged: ids.length + groups.length, replayed });
  assert.ok(replayed > 0, 'some acknowledged submits were only in the journal at the kill');
  const h = await healthz(d.base);
  assert.equal(h.jobs.queued, ids.length + 2 * groups.length,
    'every acknowledged submit is stored once: no more, no fewer');
  for (const { id, i } of groups) {
    const g = await request('GET', `${d.base}/v1/async/group/${id}/generations`);
    assert.equal(g.status, 200, `group ${id}: ${g.text}`);
    assert.deepEqual(g.json.generations.map((x) => x.request.messages[0].content), [`k9g${i}-a`, `k9g${i}-b`]);
  }
  await mapLimit(ids, 16, async ({ id, content }) => {
    const g = await get(d.base, id);
    assert.equal(g.status, 200, `${id}: ${g.text}`);
    assert.equal(g.json.request.messages[0].content, content);
  });
  // A second restart replays nothing: the store has recorded the journal seq.
  await d.restart({ env: NO_SHIM });
  assert.equal(replayedCount(d.log().split('start #3').pop()), 0, 'nothing is stored twice');
  assert.equal((await healthz(d.base)).jobs.queued, ids.length + 2 * groups.length);
  assert.equal(await d.term(), 0);
});

test('--no-journal after a crash still stores what the journal holds, then stops using it', { timeout: 120000 }, async () => {
  const d = await startDaemon({ env: SLOW_STORE, args: ['--paused'] });
  const ids = await submitMany(d.base, 200, 'nj');
  await d.kill9();
  await d.restart({ env: NO_SHIM, args: ['--no-journal'] });
  assert.ok(replayedCount(d.log()) > 0, 'the journal was replayed');
  assert.equal((await healthz(d.base)).jobs.queued, ids.length);
  const more = await submitMany(d.base, 50, 'nj2');
  assert.equal(await d.term(), 0);
  assert.match(d.log(), /, 0 submits journaled in 0 appends/, 'with --no-journal nothing is journaled');
  assert.equal(more.length, 50);
});

test('one daemon per data dir; slowlanectl leaves a live journal alone, and after a kill -9 stores what only the journal holds', { timeout: 120000 }, async (t) => {
  const d = await startDaemon({ env: SLOW_STORE, args: ['--paused'] });
  for (const extra of [[], ['--no-journal']]) {
    const second = await runDaemonExpectExit(['--listen', '127.0.0.1:0', '--data-dir', d.dataDir, '--paused', ...extra]);
    assert.notEqual(second.code, 0, `a second daemon on the same data dir is refused (${extra})`);
    assert.match(second.out, /another slowlaned is running on .*one daemon per data directory/);
  }
  const ids = await submitMany(d.base, 100, 'ctl');
  const live = ctl(d.dataDir, ['stats', '--json']);
  assert.equal(live.status, 0, live.stderr);
  assert.doesNotMatch(live.stderr, /stored|warning/, 'with the daemon running slowlanectl leaves the journal alone');
  // Each store sync takes 150 ms here, so acknowledged submits wait in the
  // journal: slowlanectl waits until the daemon has stored what the journal
  // held when it started (tools/ctl_common.c, catch_up), and sees them all.
  assert.equal(JSON.parse(live.stdout).total, ids.length, 'stats on a live daemon counts every acknowledged submit');
  const one = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody('ctl-at-once') });
  assert.equal(one.status, 200, one.text);
  const early = ctl(d.dataDir, ['show', '--json', one.json.id]);
  assert.equal(early.status, 0, `show right after the answer finds the job: ${early.stderr}`);
  assert.ok(early.stdout.includes('ctl-at-once'));
  ids.push({ id: one.json.id, content: 'ctl-at-once' });
  ids.push(...await submitMany(d.base, 200, 'ctl2'));
  await d.kill9();
  const last = ids[ids.length - 1];
  const show = ctl(d.dataDir, ['show', '--json', last.id]);
  assert.equal(show.status, 0, show.stderr);
  const m = /stored (\d+) acknowledged submits? from/.exec(show.stderr);
  assert.ok(m && Number(m[1]) > 0, `a read-only command stored the journal's submits first: ${show.stderr}`);
  assert.ok(show.stdout.includes(last.content), 'show finds a job that was only in the journal');
  const all = exportAll(d.dataDir);
  const seen = new Map(all.map((g) => [g.id, g.request.messages[0].content]));
  assert.equal(all.length, ids.length, 'every acknowledged submit exported once');
  for (const { id, content } of ids) assert.equal(seen.get(id), content, id);
  figures(t, 'journal-ctl', { acknowledged: ids.length, stored_by_slowlanectl: Number(m[1]) });
  await d.restart({ env: NO_SHIM });
  assert.equal(replayedCount(d.log().split('start #2').pop()), 0, 'the daemon finds nothing left to store');
  assert.equal((await healthz(d.base)).jobs.queued, ids.length);
  assert.equal(await d.term(), 0);
});

test('a journal beside a store that never had one is not applied to it', { timeout: 120000 }, async () => {
  const d = await startDaemon({ env: SLOW_STORE, args: ['--paused'] });
  await submitMany(d.base, 100, 'other');
  await d.kill9();
  for (const f of ['data.mdb', 'lock.mdb']) fs.rmSync(path.join(d.dataDir, f), { force: true });
  await d.restart({ env: NO_SHIM });
  assert.match(d.log(), /journal: \d+ frames? of another store ignored/);
  assert.equal((await healthz(d.base)).jobs.queued, 0, 'no job of the old store appears in the new one');
  const after = await submitMany(d.base, 10, 'fresh');
  await d.restart({ env: NO_SHIM });
  assert.equal((await healthz(d.base)).jobs.queued, after.length, 'the new store journals and replays as usual');
  assert.equal(await d.term(), 0);
});

test('--max-queued counts submits still only in the journal', async () => {
  // The store lags 150 ms behind the answers: a limit read from the store
  // alone would let a 4th job in.
  const d = await startDaemon({ env: SLOW_STORE, args: ['--paused', '--max-queued', '3'] });
  for (let i = 0; i < 3; i++) {
    const r = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody(`mq-${i}`) });
    assert.equal(r.status, 200, r.text);
  }
  const over = await request('POST', `${d.base}/v1/async/chat/completions`, { body: chatBody('mq-4') });
  assert.equal(over.status, 429, over.text);
  assert.equal(over.json.error.code, 'queue_limit_exceeded');
  const group = await request('POST', `${d.base}/v1/async/group/chat/completions`,
    { body: { requests: [chatBody('mq-g1')] } });
  assert.equal(group.status, 429, 'a group over the limit too');
  assert.equal(await d.term(), 0);
  assert.equal(replayedCount(d.log()), 0);
});
