// File expiry (--file-ttl, API.md section 3): a file past its expires_at is
// gone for the API at once (404 on retrieve, content and delete; left out of
// listings; refused as a batch input), and the batch engine's sweep (once a
// minute and at start) deletes its record and then its bytes, except the
// input file of a batch that is still running.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startMock, startDaemon, request, sleep } from '../func/lib.mjs';
import { chatLine, jsonl, uploadOk, createBatch, createBatchOk, getBatch, waitBatch, ctlJson, fileExists } from './batchlib.mjs';

const KEY = 'ttl-key';

test('--file-ttl: expired files are 404, unlisted, refused as input, then swept from disk', { timeout: 120000 }, async () => {
  const mock = await startMock({ latency: 0 });
  const d = await startDaemon({ upstream: mock.url, args: ['--api-key', KEY, '--file-ttl', '2s'] });
  try {
    const f = await uploadOk(d.base, jsonl([chatLine('a', 'hello')]), { key: KEY });
    assert.ok(f.expires_at >= f.created_at + 1 && f.expires_at <= f.created_at + 3, JSON.stringify(f));
    // a batch created in time runs; its input file outlives its expiry while the batch is active
    const slow = await uploadOk(d.base, jsonl([chatLine('s', '[mock:delay=6000] slow')]), { key: KEY });
    const running = await createBatchOk(d.base, slow.id, { key: KEY });
    const bytes = path.join(d.dataDir, 'files', f.id);
    assert.ok(fileExists(bytes), 'the upload is on disk');
    assert.equal((await request('GET', `${d.base}/v1/files/${f.id}`, { key: KEY })).status, 200);

    await sleep(3200);
    for (const p of [`/v1/files/${f.id}`, `/v1/files/${f.id}/content`]) {
      const r = await request('GET', d.base + p, { key: KEY });
      assert.equal(r.status, 404, `${p}: ${r.status} ${r.text}`);
      assert.equal(r.json.error.code, 'file_not_found');
    }
    const list = await request('GET', `${d.base}/v1/files`, { key: KEY });
    assert.equal(list.status, 200);
    assert.ok(!list.json.data.some((x) => x.id === f.id || x.id === slow.id), 'expired files are not listed');
    const b = await createBatch(d.base, { input_file_id: f.id, endpoint: '/v1/chat/completions', completion_window: '24h' }, { key: KEY });
    assert.equal(b.status, 400, b.text);
    assert.equal(b.json.error.code, 'file_not_found');

    // a restart sweeps at once: the expired upload's record and bytes go,
    // the running batch's input stays until the batch has ended
    await d.restart();
    const t0 = Date.now();
    while (fileExists(bytes) && Date.now() - t0 < 10000) await sleep(100);
    assert.ok(!fileExists(bytes), 'the expired file\'s bytes are deleted');
    assert.ok(fileExists(path.join(d.dataDir, 'files', slow.id)), 'the input of a running batch is kept');
    assert.match(d.log(), /deleted 1 expired file\b/);
    const done = await waitBatch(d.base, running.id, { key: KEY, timeoutMs: 30000 });
    assert.equal(done.status, 'completed');
    assert.equal(done.request_counts.completed, 1);
    // output files expire too (2 s here); the next restart sweeps the rest
    await sleep(2200);
    await d.restart();
    const t1 = Date.now();
    while (fs.readdirSync(path.join(d.dataDir, 'files')).filter((n) => n.startsWith('file-')).length && Date.now() - t1 < 10000)
      await sleep(100);
    assert.deepEqual(fs.readdirSync(path.join(d.dataDir, 'files')).filter((n) => n.startsWith('file-')), []);
    assert.equal((await getBatch(d.base, running.id, KEY)).status, 'completed', 'the batch record stays');
    await d.term();
    const check = await ctlJson(d.dataDir, 'check');
    assert.equal(check.ok, true, JSON.stringify(check.problems).slice(0, 500));
  } finally {
    await d.kill9().catch(() => {});
    await mock.stop();
  }
});
