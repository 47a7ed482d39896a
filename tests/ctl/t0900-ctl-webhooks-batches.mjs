// slowlanectl's webhook and batch commands against a stopped and a live
// daemon (no --upstream: the built-in load-test model answers).
//
// webhook add on a stopped store prints an id and a whsec_ secret; the URL
// policy refuses http and loopback targets unless allowed; a daemon started
// later delivers generation.completed for a request naming the webhook,
// signed (Standard Webhooks) with exactly that secret, and `webhook
// deliveries` lists it delivered; a receiver answering 500 shows up under
// --pending; `webhook rm` makes later submits naming the webhook fail 400
// and its queued event end failed; rotate-secret signs the next delivery
// with the new secret only. `batches` and `batch show` list a batch made
// over HTTP; `batch cancel` ends a slow batch cancelled within seconds.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { SLOWLANED, startDaemon, submit, submitOk, poll, request, sleep, chatBody } from '../func/lib.mjs';

const CTL = path.join(path.dirname(SLOWLANED || '.'), '../tools/slowlanectl');
const CHAT = '/v1/slow/chat/completions';
const HOOK_FLAGS = ['--webhook-allow-http', '--webhook-allow-private', '--webhook-retry-base', '100ms'];
const uniq = () => Math.random().toString(36).slice(2, 10);

// Runs slowlanectl; never throws on a non-zero exit.
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

async function ctlJson(args, opts) {
  const r = await ctl([...args, '--json'], opts);
  assert.equal(r.code, 0, `slowlanectl ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

// Retries fn() until it returns something truthy; returns that.
async function until(what, fn, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(100);
  }
}

// A webhook receiver on 127.0.0.1: records every delivery (headers, raw
// body) and answers `status`.
const receivers = [];
async function startReceiver(status = 200) {
  const got = [];
  const srv = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      got.push({ headers: req.headers, raw: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(status === 200 ? 'ok' : 'no');
    });
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  receivers.push(srv);
  return {
    url: `http://127.0.0.1:${srv.address().port}/hook`,
    got,
    waitFor: (n, ms = 10000) => until(`${n} deliveries`, () => got.length >= n, ms),
  };
}
after(() => Promise.all(receivers.map((s) => new Promise((r) => {
  s.closeAllConnections();
  s.close(r);
}))));

// Standard Webhooks: v1,base64(HMAC-SHA256(base64decode(secret after
// whsec_), `${webhook-id}.${webhook-timestamp}.${body}`)).
function signedWith(secret, dl) {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const mac = crypto.createHmac('sha256', key)
    .update(`${dl.headers['webhook-id']}.${dl.headers['webhook-timestamp']}.${dl.raw}`)
    .digest('base64');
  return (dl.headers['webhook-signature'] || '').split(' ').includes(`v1,${mac}`);
}

// Uploads `lines` as a batch input file and creates a batch over HTTP.
async function createBatch(base, lines) {
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append('file', new Blob([lines.map((l) => JSON.stringify(l)).join('\n') + '\n']),
    'input.jsonl');
  const up = await fetch(`${base}/v1/files`, { method: 'POST', body: form });
  const file = await up.json();
  assert.equal(up.status, 200, JSON.stringify(file));
  const r = await request('POST', `${base}/v1/batches`, {
    body: { input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' },
  });
  assert.equal(r.status, 200, r.text);
  return r.json.id;
}

const batchLines = (n, tag) => Array.from({ length: n }, (_, i) => ({
  custom_id: `${tag}-${i}`, method: 'POST', url: '/v1/chat/completions',
  body: { model: 'load-test', messages: [{ role: 'user', content: `${tag} line ${i}` }] },
}));

const batchOf = async (base, id) => (await request('GET', `${base}/v1/batches/${id}`)).json;

let d;
let rcv;
let hook; // {id, secret}

before(async () => {
  assert.ok(fs.existsSync(CTL), `${CTL} does not exist: run 'make' first`);
  // A store made by a daemon that is then stopped.
  d = await startDaemon({ args: HOOK_FLAGS });
  assert.equal(await d.term(), 0);
  rcv = await startReceiver(200);
});

test('webhook add on a stopped store: URL policy, id and whsec_ secret, ls without secrets', async () => {
  const dir = d.dataDir;
  let r = await ctl(['webhook', 'add', rcv.url], { dataDir: dir });
  assert.equal(r.code, 1, 'http refused by default');
  assert.match(r.stderr, /https/);
  assert.match(r.stderr, /--allow-http/);
  r = await ctl(['webhook', 'add', rcv.url, '--allow-http'], { dataDir: dir });
  assert.equal(r.code, 1, 'loopback refused without --allow-private');
  assert.match(r.stderr, /private/);
  r = await ctl(['webhook', 'add', rcv.url, '--key', 'k', '--tenant', '0123456789abcdef'], { dataDir: dir });
  assert.equal(r.code, 2, '--key and --tenant together');
  r = await ctl(['webhook', 'add', rcv.url, '--events', 'nope.happened'], { dataDir: dir });
  assert.equal(r.code, 2);
  r = await ctl(['webhook'], { dataDir: dir });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /needs a command: add, ls, rm, rotate-secret, deliveries/);
  assert.equal((await ctlJson(['webhook', 'ls'], { dataDir: dir })).length, 0, 'nothing added');

  r = await ctl(['webhook', 'add', rcv.url, '--allow-http', '--allow-private',
    '--events', 'generation.completed'], { dataDir: dir });
  assert.equal(r.code, 0, r.stderr);
  const id = /^id +(\S+)$/m.exec(r.stdout)?.[1];
  const secret = /^secret +(whsec_\S+)$/m.exec(r.stdout)?.[1];
  assert.match(id || '', /^[A-Za-z0-9_-]{9}$/, r.stdout);
  assert.match(secret || '', /^whsec_[A-Za-z0-9+/]+={0,2}$/, r.stdout);
  assert.equal(Buffer.from(secret.slice(6), 'base64').length, 32);
  hook = { id, secret };

  const ls = await ctlJson(['webhook', 'ls'], { dataDir: dir });
  assert.equal(ls.length, 1);
  assert.deepEqual(Object.keys(ls[0]).sort(), ['createdAt', 'events', 'id', 'tenant', 'url']);
  assert.deepEqual(ls[0], { ...ls[0], id, url: rcv.url, events: ['generation.completed'], tenant: '' });
  const table = await ctl(['webhook', 'ls'], { dataDir: dir });
  assert.equal(table.code, 0);
  assert.match(table.stdout, /^ID +TENANT +CREATED +EVENTS +URL/);
  assert.ok(table.stdout.includes(id) && !table.stdout.includes(secret.slice(6)), table.stdout);
});

test('a daemon started later delivers generation.completed signed with the printed secret', async () => {
  await d.restart();
  const id = await submitOk(d.base, CHAT, chatBody(`hello ${uniq()}`, {
    model: 'load-test', metadata: { webhook_id: hook.id },
  }));
  assert.equal((await poll(d.base, id, { timeoutMs: 10000 })).state, 'Success');
  await rcv.waitFor(1);
  const dl = rcv.got[0];
  assert.ok(signedWith(hook.secret, dl), `signature verifies: ${JSON.stringify(dl.headers)}`);
  const body = JSON.parse(dl.raw);
  assert.equal(body.event, 'generation.completed');
  assert.equal(body.generation_id, id);
  assert.equal(dl.headers['x-inference-webhook-id'], hook.id);

  // `deliveries` once the daemon has recorded the 200
  const row = await until('delivery recorded', async () =>
    (await ctlJson(['webhook', 'deliveries'], { dataDir: d.dataDir })).find((x) => x.subject === id));
  assert.equal(row.id, dl.headers['webhook-id']);
  assert.equal(row.type, 'generation.completed');
  assert.equal(row.outcome, 'delivered');
  assert.equal(row.webhook, hook.id);
  assert.equal(row.url, rcv.url);
  assert.equal(row.attempts, 1);
  assert.equal(row.lastStatus, 200);
  assert.ok(row.createdAt && row.finishedAt && row.nextAttemptAt === null, JSON.stringify(row));
  const table = await ctl(['webhook', 'deliveries'], { dataDir: d.dataDir });
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, new RegExp(`^${row.id} +generation\\.completed +delivered +1 +200 +${hook.id} +${id}`, 'm'));
});

let bad; // {id, rcv, gen}

test('a receiver answering 500: the event is listed by --pending, not as finished', async () => {
  const r500 = await startReceiver(500);
  // added while the daemon runs: it is known to the next submit
  const r = await ctl(['webhook', 'add', r500.url, '--allow-http', '--allow-private', '--json'],
    { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  const { id } = JSON.parse(r.stdout);
  const gen = await submitOk(d.base, CHAT, chatBody(`to 500 ${uniq()}`, {
    model: 'load-test', metadata: { webhook_id: id },
  }));
  await r500.waitFor(2);
  const row = await until('a retried event in the outbox', async () =>
    (await ctlJson(['webhook', 'deliveries', '--pending'], { dataDir: d.dataDir }))
      .find((x) => x.webhook === id && x.attempts >= 1));
  assert.equal(row.outcome, 'pending');
  assert.equal(row.subject, gen);
  assert.equal(row.lastStatus, 500);
  assert.ok(row.nextAttemptAt && row.finishedAt === null, JSON.stringify(row));
  const finished = await ctlJson(['webhook', 'deliveries'], { dataDir: d.dataDir });
  assert.ok(!finished.some((x) => x.webhook === id), 'not finished: not listed without --pending');
  const failed = await ctlJson(['webhook', 'deliveries', '--failed'], { dataDir: d.dataDir });
  assert.ok(failed.every((x) => x.outcome === 'failed'), JSON.stringify(failed));
  const one = await ctlJson(['webhook', 'deliveries', '--pending', '--limit', '1'], { dataDir: d.dataDir });
  assert.equal(one.length, 1);
  const table = await ctl(['webhook', 'deliveries', '--pending'], { dataDir: d.dataDir });
  assert.match(table.stdout, new RegExp(`^${row.id} +generation\\.completed +pending +\\d+ +500 +${id}`, 'm'));
  bad = { id, rcv: r500, gen };
});

test('webhook rm: later submits naming it fail 400; its queued event ends failed', async () => {
  let r = await ctl(['webhook', 'rm', bad.id], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /removed webhook/);
  const s = await submit(d.base, CHAT, chatBody('after rm', {
    model: 'load-test', metadata: { webhook_id: bad.id },
  }));
  assert.equal(s.status, 400, s.text);
  assert.equal(s.json.error.param, 'metadata.webhook_id');
  assert.ok(!(await ctlJson(['webhook', 'ls'], { dataDir: d.dataDir })).some((x) => x.id === bad.id));
  r = await ctl(['webhook', 'rm', bad.id], { dataDir: d.dataDir });
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`no webhook ${bad.id}`));
  const gone = await until('the event given up', async () =>
    (await ctlJson(['webhook', 'deliveries', '--failed'], { dataDir: d.dataDir }))
      .find((x) => x.subject === bad.gen), 15000);
  assert.equal(gone.outcome, 'failed');
  assert.equal(gone.url, null, 'the webhook is gone');
  assert.match(gone.lastError, /deleted/);
});

test('rotate-secret: the next delivery is signed with the new secret only', async () => {
  let r = await ctl(['webhook', 'rotate-secret', hook.id], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  const secret = /^secret +(whsec_\S+)$/m.exec(r.stdout)?.[1];
  assert.match(secret || '', /^whsec_/, r.stdout);
  assert.notEqual(secret, hook.secret);
  const seen = rcv.got.length;
  const id = await submitOk(d.base, CHAT, chatBody(`after rotate ${uniq()}`, {
    model: 'load-test', metadata: { webhook_id: hook.id },
  }));
  await rcv.waitFor(seen + 1);
  const dl = rcv.got[seen];
  assert.equal(JSON.parse(dl.raw).generation_id, id);
  assert.ok(signedWith(secret, dl), 'verifies with the new secret');
  assert.ok(!signedWith(hook.secret, dl), 'not with the old one');
  r = await ctl(['webhook', 'rotate-secret', 'NoSuchHk'], { dataDir: d.dataDir });
  assert.equal(r.code, 1);
  hook.secret = secret;
});

test('batches and batch show list a batch created over HTTP', async () => {
  const id = await createBatch(d.base, batchLines(3, `b-${uniq()}`));
  await until('batch completed', async () => (await batchOf(d.base, id)).status === 'completed', 15000);

  const list = await ctlJson(['batches'], { dataDir: d.dataDir });
  const rec = list.find((b) => b.id === id);
  assert.ok(rec, JSON.stringify(list));
  assert.equal(rec.status, 'completed');
  assert.deepEqual(rec.request_counts, { total: 3, completed: 3, failed: 0 });
  assert.equal(rec._phase, 'done');
  assert.equal(rec.endpoint, '/v1/chat/completions');
  let r = await ctl(['batches'], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^ID +STATUS +PROGRESS +COMPLETED +FAILED +TOTAL +CREATED +ENDPOINT/);
  assert.match(r.stdout, new RegExp(`^${id} +completed +\\[#{20}\\] +100% +3 +0 +3 .*/v1/chat/completions`, 'm'));
  assert.equal((await ctlJson(['batches', '--status', 'in_progress,cancelled'], { dataDir: d.dataDir }))
    .filter((b) => b.id === id).length, 0);
  r = await ctl(['batches', '--status', 'done'], { dataDir: d.dataDir });
  assert.equal(r.code, 2);

  r = await ctl(['batch', 'show', id], { dataDir: d.dataDir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^status +completed$/m);
  assert.match(r.stdout, /^phase +done/m);
  assert.match(r.stdout, /^progress +\[#{20}\] +100% +3 completed, 0 failed of 3$/m);
  const pub = JSON.parse(r.stdout.slice(r.stdout.indexOf('object:\n') + 8));
  assert.equal(pub.id, id);
  assert.ok(!Object.keys(pub).some((k) => k.startsWith('_')), 'the public object');
  const whole = await ctlJson(['batch', 'show', id], { dataDir: d.dataDir });
  assert.equal(whole._phase, 'done');
  assert.equal(whole._tenant, '');
  assert.equal(whole.output_file_id, (await batchOf(d.base, id)).output_file_id);

  r = await ctl(['batch', 'cancel', id], { dataDir: d.dataDir });
  assert.equal(r.code, 1, 'a completed batch cannot be cancelled');
  assert.match(r.stderr, /is completed/);
  r = await ctl(['batch', 'show', 'batch_nosuchbatchnosuchbatch00'], { dataDir: d.dataDir });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no batch/);
});

test('batch cancel on a slow batch ends it cancelled within seconds', async () => {
  const slow = await startDaemon({ args: ['--load-test-delay', '2s', '--concurrency', '1'] });
  const id = await createBatch(slow.base, batchLines(10, `slow-${uniq()}`));
  await until('batch running', async () =>
    (await ctlJson(['batch', 'show', id], { dataDir: slow.dataDir }))._phase === 'run', 10000);

  const t0 = Date.now();
  let r = await ctl(['batch', 'cancel', id], { dataDir: slow.dataDir });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /in_progress -> cancelling/);
  const again = await ctlJson(['batch', 'cancel', id], { dataDir: slow.dataDir });
  assert.equal(again.changed, false, 'a second cancel changes nothing');
  assert.match(again.status, /^cancell(ing|ed)$/);

  const b = await until('batch cancelled', async () => {
    const x = await batchOf(slow.base, id);
    return x.status === 'cancelled' && x;
  }, 10000);
  const took = Date.now() - t0;
  assert.ok(took < 6000, `cancelled ${took} ms after the cancel`);
  assert.ok(b.cancelling_at && b.cancelled_at, JSON.stringify(b));
  assert.equal(b.request_counts.total, 10);
  assert.ok(b.request_counts.completed < 10, JSON.stringify(b.request_counts));
  const list = await ctlJson(['batches', '--status', 'cancelled'], { dataDir: slow.dataDir });
  assert.deepEqual(list.map((x) => x.id), [id]);
  r = await ctl(['batch', 'show', id], { dataDir: slow.dataDir });
  assert.match(r.stdout, /^status +cancelled$/m);
  assert.equal(await slow.term(), 0);
});
