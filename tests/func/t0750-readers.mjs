// Polls are read off the loop thread (src/reader.c). A poll of an old job in
// a store bigger than RAM waits for the disk; read on the loop thread it
// would stall every other client. SLOWLANE_TEST_READ_DELAY_US makes every
// poll's read take that long, as a page fault on a slow disk would: with the
// reader pool, submits and /healthz must stay fast meanwhile and the polls
// must still get their right answers; with --readers 0 (the negative
// control) the same stall must show on /healthz, or this test could not
// tell. Shutdown answers the polls still being read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, submitOk, request, get, poll, healthz, chatBody, TIME_SCALE,
} from './lib.mjs';

const DELAY_MS = 400;
const CHAT = '/v1/slow/chat/completions';

async function timed(fn) {
  const t0 = Date.now();
  const v = await fn();
  return { ms: Date.now() - t0, v };
}

// Starts a daemon whose poll reads each take DELAY_MS, with one finished
// job and one finished group to poll.
async function slowReads(readers) {
  const d = await startDaemon({
    args: ['--readers', String(readers), '--load-test-delay', '1ms'],
    env: { SLOWLANE_TEST_READ_DELAY_US: String(DELAY_MS * 1000) },
  });
  const id = await submitOk(d.base, CHAT, chatBody('read me'));
  const g = await request('POST', `${d.base}/v1/slow/group/chat/completions`,
    { body: { requests: [chatBody('g0'), chatBody('g1')] } });
  assert.equal(g.status, 200, g.text);
  const gen = await poll(d.base, id, { timeoutMs: 30000, intervalMs: DELAY_MS });
  assert.equal(gen.state, 'Success');
  return { d, id, groupId: g.json.groupId };
}

test('a stalled read costs one reader: submits and /healthz stay fast, every poll answered right', async () => {
  const { d, id, groupId } = await slowReads(2);
  // Six slow polls at once (two readers: about three delays in all) ...
  const polls = [];
  for (let i = 0; i < 6; i++) {
    polls.push(timed(() => (i % 3 === 2
      ? request('GET', `${d.base}/v1/slow/group/${groupId}/generations`)
      : get(d.base, id))));
  }
  // ... while other clients keep going.
  const others = [];
  for (let i = 0; i < 8; i++) {
    others.push((await timed(() => healthz(d.base))).ms);
    others.push((await timed(() => submitOk(d.base, CHAT, chatBody(`meanwhile ${i}`)))).ms);
  }
  const done = await Promise.all(polls);
  for (const { v } of done) assert.equal(v.status, 200, v.text);
  for (const [i, { v }] of done.entries()) {
    if (i % 3 === 2) {
      assert.equal(v.json.groupId, groupId);
      assert.equal(v.json.generations.length, 2);
    } else {
      assert.equal(v.json.id, id);
      assert.equal(v.json.response.choices[0].message.content, 'read me');
    }
  }
  const slowest = Math.max(...done.map((p) => p.ms));
  assert.ok(slowest >= 2 * DELAY_MS, `six polls on two readers took ${slowest} ms: the delay did not apply`);
  const worst = Math.max(...others);
  assert.ok(worst < 150 * TIME_SCALE, `a submit or /healthz took ${worst} ms while polls were stalled`);
  // errors are answered from the pool too
  const missing = await get(d.base, 'AAAAAAAAAAAAAAAAAAAAA');
  assert.equal(missing.status, 404);
  assert.equal(missing.json.error.code, 'generation_not_found');
  assert.equal(await d.term(), 0);
});

test('negative control: with --readers 0 the same stall blocks /healthz', async () => {
  const { d, id } = await slowReads(0);
  const p = get(d.base, id);
  await new Promise((r) => setTimeout(r, 50));
  const h = await timed(() => healthz(d.base));
  assert.equal((await p).status, 200);
  assert.ok(h.ms >= DELAY_MS / 2, `/healthz took only ${h.ms} ms behind a poll read on the loop thread`);
  assert.equal(await d.term(), 0);
});

test('SIGTERM while polls are being read: each is answered, exit 0', async () => {
  const { d, id } = await slowReads(1);
  const polls = [get(d.base, id), get(d.base, id), get(d.base, id)];
  await new Promise((r) => setTimeout(r, 100));
  const code = d.term();
  const answers = await Promise.all(polls);
  for (const a of answers) assert.equal(a.status, 200, a.text);
  assert.equal(await code, 0);
});
