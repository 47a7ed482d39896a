// The daemon's memory must not grow with the jobs it stores. Its own heap
// does not; but LMDB reads through a shared map of data.mdb, every commit
// moves the trees' right edges to new pages and the next transaction maps
// those, so the process's RSS used to climb with what it wrote, towards the
// whole file (bench/RESULTS.md: 1.4 GB at 10 M jobs). The scheduler's tick
// now lets go of the map every second (store_release_map): the pages stay
// in the page cache, only this process's mappings go. Read from the
// kernel: the Rss of the data.mdb mapping in /proc/PID/smaps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startDaemon, submitOk, get, mapLimit, chatBody, sleep } from './lib.mjs';

const CHAT = '/v1/slow/chat/completions';
const JOBS = 4000;

// kB of data.mdb this process has mapped in (the mapping's Rss line).
function mappedKb(pid) {
  const smaps = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n');
  let kb = 0, inStore = false;
  for (const line of smaps) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line))
      inStore = line.endsWith('/data.mdb');
    else if (inStore && line.startsWith('Rss:'))
      kb += Number(line.split(/\s+/)[1]);
  }
  return kb;
}

test('after a burst of submits the daemon maps in a sliver of data.mdb, not what it wrote; reads still answer right', async () => {
  const d = await startDaemon({ args: ['--paused'] });
  try {
    const pad = 'x'.repeat(1500);
    const ids = await mapLimit([...Array(JOBS).keys()], 32,
      (i) => submitOk(d.base, CHAT, chatBody(`job ${i} ${pad}`)));
    const fileKb = fs.statSync(path.join(d.dataDir, 'data.mdb')).size / 1024;
    assert.ok(fileKb > 8 * 1024, `the store holds ${fileKb} kB`);
    // Two ticks of the scheduler (1 s each) with nothing else to do.
    let kb = Infinity;
    for (let i = 0; i < 40 && kb > fileKb / 20; i++) {
      await sleep(250);
      kb = mappedKb(d.proc.pid);
    }
    assert.ok(kb <= fileKb / 20, `data.mdb mapped in: ${kb} kB of ${fileKb} kB`);
    // The pages come back when read: every sampled job reads right.
    for (const i of [0, 1, JOBS / 2, JOBS - 1]) {
      const r = await get(d.base, ids[i]);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.state, 'Queued');
      assert.equal(r.json.request.messages[0].content, `job ${i} ${pad}`);
    }
  } finally {
    await d.term();
  }
});
