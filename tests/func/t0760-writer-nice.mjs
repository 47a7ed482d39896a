// With the journal on, --writer-nice N runs the store writer thread N nice
// levels below the other threads (at most to 19): its commits store submits
// that are already acknowledged, so the loop and the journal, which
// acknowledge, may get the CPU first (src/writer.c, bench/profile.md). The
// default keeps it level: the writer also commits the drain's claims.
// Without the journal every submit waits for the writer's commit, so it
// stays level whatever is asked. Read from the kernel:
// /proc/PID/task/TID/stat, field 19 is the nice value of one thread.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { startDaemon, submitOk, poll, chatBody, SLOWLANED } from './lib.mjs';

const CHAT = '/v1/slow/chat/completions';

// { threadName: nice } of every thread of pid.
function niceByThread(pid) {
  const out = {};
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // "tid (comm) state ...": comm may hold spaces; fields count from ')'.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    out[comm] = Number(fields[16]); // field 19 overall: the 17th after comm
  }
  return out;
}

async function threadsOf(args) {
  const d = await startDaemon({ args: ['--load-test-delay', '1ms', ...args] });
  try {
    // Submits still go all the way through with the writer niced.
    const id = await submitOk(d.base, CHAT, chatBody('nice'));
    const gen = await poll(d.base, id);
    assert.equal(gen.state, 'Success', JSON.stringify(gen));
    return niceByThread(d.proc.pid);
  } finally {
    await d.term();
  }
}

// The suite may itself run niced, and the daemon inherits that.
const base = () => os.getPriority();

test('by default every thread runs level, the writer included', async () => {
  const t = await threadsOf([]);
  assert.equal(t.slowlaned, base(), JSON.stringify(t));
  assert.equal(t['sl-writer'], t.slowlaned, JSON.stringify(t));
  assert.equal(t['sl-journal'], t.slowlaned, JSON.stringify(t));
});

test('--writer-nice 19: the writer at nice 19, the loop and the journal level, submits still answered', async () => {
  const t = await threadsOf(['--writer-nice', '19']);
  assert.equal(t['sl-writer'], 19, JSON.stringify(t));
  assert.equal(t['sl-journal'], t.slowlaned, JSON.stringify(t));
  assert.equal(t.slowlaned, base(), JSON.stringify(t));
});

test('--writer-nice N puts the writer N levels below the loop, and 0 leaves it level', async () => {
  const t7 = await threadsOf(['--writer-nice', '7']);
  assert.equal(t7['sl-writer'], Math.min(t7.slowlaned + 7, 19), JSON.stringify(t7));
  assert.ok(t7['sl-writer'] > t7.slowlaned || t7.slowlaned === 19, JSON.stringify(t7));
  const t0 = await threadsOf(['--writer-nice', '0']);
  assert.equal(t0['sl-writer'], t0.slowlaned, JSON.stringify(t0));
});

test('without the journal the writer is on the acknowledgement path and stays level', async () => {
  const t = await threadsOf(['--no-journal', '--writer-nice', '19']);
  assert.equal(t['sl-writer'], t.slowlaned, JSON.stringify(t));
  assert.equal(t['sl-journal'], undefined, 'no journal thread');
});

test('--writer-nice outside 0-19 is refused with the range', () => {
  for (const v of ['20', '-1', 'x']) {
    const r = spawnSync(SLOWLANED, ['--writer-nice', v], { encoding: 'utf8', timeout: 10000 });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--writer-nice: a whole number from 0 to 19/);
  }
});
