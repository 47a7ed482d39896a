// Batch expiry (API.md section 3): at expires_at (created_at + 24 h) the
// finished lines stay in the output file, every unfinished line gets a
// `batch_expired` error line, and the batch ends `expired`.
//
// The 24 h window has no test flag, so the daemon is moved past it instead:
// a batch runs its first lines, the daemon is stopped, and restarted on the
// same data dir with its wall clock 25 h ahead (tests/batch/clockshift.c, an
// LD_PRELOAD shim compiled here with `cc`; monotonic clocks untouched). The
// expiry itself is the daemon's own. Skipped if the shim cannot be built.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMock, startDaemon, tmpDir, sleep } from '../func/lib.mjs';
import { chatLine, jsonl, parseJsonl, uploadOk, createBatchOk, getBatch, waitBatch, fileContent } from './batchlib.mjs';

const KEY = 'k1';
const SHIFT_S = 25 * 3600;

let shim = null;
let shimError = null;

before(() => {
  const src = fileURLToPath(new URL('./clockshift.c', import.meta.url));
  const out = path.join(tmpDir('shim'), 'clockshift.so');
  try {
    execFileSync(process.env.CC || 'cc', ['-shared', '-fPIC', '-O2', '-o', out, src, '-ldl'], { stdio: 'pipe' });
    // the shim works: `date +%s` under it is SHIFT_S ahead
    const shifted = Number(execFileSync('date', ['+%s'], {
      env: { ...process.env, LD_PRELOAD: out, SLOWLANE_TEST_CLOCK_OFFSET: String(SHIFT_S) },
    }).toString());
    const now = Math.floor(Date.now() / 1000);
    if (Math.abs(shifted - now - SHIFT_S) > 60) throw new Error(`date under the shim: ${shifted}, now ${now}`);
    shim = out;
  } catch (e) {
    shimError = `${e.message}${e.stderr ? `: ${e.stderr}` : ''}`;
  }
});

test('past expires_at: finished lines kept, the rest batch_expired, status expired', async (t) => {
  if (!shim) {
    t.skip(`cannot build the clock shim with cc: ${shimError}`);
    return;
  }
  const mock = await startMock({ latency: 0 });
  const d = await startDaemon({
    upstream: mock.url,
    args: ['--api-key', KEY, '--concurrency', '16'],
  });
  const quick = ['e-0', 'e-1', 'e-2'];
  const slow = ['e-3', 'e-4', 'e-5', 'e-6', 'e-7', 'e-8'];
  const lines = [
    ...quick.map((c) => chatLine(c, `quick ${c}`)),
    ...slow.map((c) => chatLine(c, `[mock:delay=60000] slow ${c}`)),
  ];
  const f = await uploadOk(d.base, jsonl(lines), { key: KEY });
  const created = await createBatchOk(d.base, f.id, { key: KEY });
  assert.equal(created.expires_at, created.created_at + 24 * 3600);

  // the quick lines finish; the slow ones are in flight (their order is not the file's)
  let b;
  for (const deadline = Date.now() + 20000; ;) {
    b = await getBatch(d.base, created.id, KEY);
    if (b.request_counts.completed === quick.length) break;
    assert.ok(Date.now() < deadline, `quick lines not done: ${JSON.stringify(b)}`);
    await sleep(50);
  }
  assert.equal(b.status, 'in_progress');
  await d.kill9();

  // 25 h later
  await d.restart({ env: { LD_PRELOAD: shim, SLOWLANE_TEST_CLOCK_OFFSET: String(SHIFT_S) } });
  const done = await waitBatch(d.base, created.id, { key: KEY, timeoutMs: 20000 });
  assert.equal(done.status, 'expired', JSON.stringify(done));
  assert.equal(typeof done.expired_at, 'number');
  assert.ok(done.expired_at >= done.expires_at, `expired_at ${done.expired_at} >= expires_at ${done.expires_at}`);
  assert.equal(done.completed_at, null);
  assert.deepEqual(done.request_counts, { total: 9, completed: quick.length, failed: slow.length });

  const out = parseJsonl(await fileContent(d.base, done.output_file_id, KEY));
  assert.deepEqual(out.map((l) => l.custom_id).sort(), quick);
  for (const l of out) {
    assert.equal(l.response.status_code, 200);
    assert.equal(l.response.body.choices[0].message.content, `quick ${l.custom_id}`);
  }
  const errs = parseJsonl(await fileContent(d.base, done.error_file_id, KEY));
  assert.deepEqual(errs.map((l) => l.custom_id).sort(), slow);
  for (const l of errs) {
    assert.equal(l.response, null, JSON.stringify(l));
    assert.equal(l.error?.code, 'batch_expired', JSON.stringify(l));
    assert.match(l.error.message, /expire/i);
  }
  await d.term();
});
