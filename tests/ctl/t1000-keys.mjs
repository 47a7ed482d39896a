// slowlanectl's API key commands (key add, ls, revoke, set) against a live
// daemon, with no restart anywhere (no --upstream: the built-in load-test
// model answers).
//
// A daemon started without --api-key is open; `key add` while it runs
// closes it: the next request without a key is 401 and the new key works.
// A second key sees none of the first key's generations, groups, files,
// batches or webhooks (404, and absent from the lists), nor can it change
// them. `key revoke` makes the key's next request 401. Rate limits: `key
// set --rps 5`, and the daemon's --rate-limit 5 for a key without its own,
// turn a burst of 30 requests into some 429s with Retry-After. Queue limits:
// with --max-queued 3 and --paused the 4th submit is 429
// queue_limit_exceeded, and so is a group of 2 after 2 singles until `key
// set --max-queued` raises the limit. `key ls` never shows a key or its full
// hash, and the store's data.mdb holds no key text.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SLOWLANED, startDaemon, submit, submitOk, request, chatBody } from '../func/lib.mjs';

const CTL = path.join(path.dirname(SLOWLANED || '.'), '../tools/slowlanectl');
const CHAT = '/v1/async/chat/completions';
const GROUP = '/v1/async/group/chat/completions';
const uniq = () => Math.random().toString(36).slice(2, 10);
const sha256 = (s) => crypto.createHash('sha256').update(s).digest('hex');
const body = (text) => chatBody(text, { model: 'load-test' });

// Runs slowlanectl; never throws on a non-zero exit.
function ctl(args, dataDir) {
  const env = { ...process.env };
  delete env.SLOWLANE_DATA_DIR;
  return new Promise((resolve, reject) => {
    const p = spawn(CTL, ['--data-dir', dataDir, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b) => { stdout += b; });
    p.stderr.on('data', (b) => { stderr += b; });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function ctlJson(args, dataDir) {
  const r = await ctl([...args, '--json'], dataDir);
  assert.equal(r.code, 0, `slowlanectl ${args.join(' ')}: exit ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

// `key add` with --json; checks the answer's shape and returns it.
const allKeys = []; // every key text made, for the store grep
async function addKey(dataDir, more = []) {
  const k = await ctlJson(['key', 'add', ...more], dataDir);
  assert.match(k.key, /^sk-sl-[A-Za-z0-9_-]{40}$/, JSON.stringify(k));
  assert.equal(k.id, sha256(k.key).slice(0, 16), 'the id is the first 16 hex of the hash');
  assert.equal(k.tenant, k.id);
  allKeys.push({ key: k.key, dataDir });
  return k;
}

const models = (base, key) => request('GET', `${base}/v1/models`, { key });

// n requests at once; returns the answers.
const burst = (n, fn) => Promise.all(Array.from({ length: n }, () => fn()));

// 30 requests at once with `key` limited to `rps`: the bucket (full at rps
// tokens, refilled at rps per second) lets rps through plus what refilled
// while the burst ran, however slow the build (sanitizers, valgrind).
async function rateBurst(base, key, rps) {
  const t0 = Date.now();
  const got = await burst(30, () => models(base, key));
  const secs = (Date.now() - t0) / 1000;
  const ok = got.filter((r) => r.status === 200).length;
  const limited = got.filter((r) => r.status === 429);
  assert.equal(ok + limited.length, 30, got.map((r) => r.status).join(' '));
  assert.ok(ok >= 1, 'the bucket lets some through');
  assert.ok(ok <= rps + Math.ceil(rps * secs) + 1, `${ok} of 30 passed in ${secs} s at ${rps}/s`);
  assert.ok(limited.length >= 1, 'some are limited');
  return { got, limited };
}

async function uploadFile(base, key, lines) {
  const form = new FormData();
  form.append('purpose', 'batch');
  form.append('file', new Blob([lines.map((l) => JSON.stringify(l)).join('\n') + '\n']),
    'input.jsonl');
  const res = await fetch(`${base}/v1/files`, {
    method: 'POST', body: form, headers: { authorization: `Bearer ${key}` },
  });
  const j = await res.json();
  assert.equal(res.status, 200, JSON.stringify(j));
  return j.id;
}

const batchLines = (n, tag) => Array.from({ length: n }, (_, i) => ({
  custom_id: `${tag}-${i}`, method: 'POST', url: '/v1/chat/completions',
  body: { model: 'load-test', messages: [{ role: 'user', content: `${tag} line ${i}` }] },
}));

let d;      // the open daemon, keys added while it runs
let A, B;   // keys of d

before(async () => {
  assert.ok(fs.existsSync(CTL), `${CTL} does not exist: run 'make' first`);
  d = await startDaemon();
});

test('key add on an open daemon: the next request needs a key, and the new key works', async () => {
  assert.equal((await models(d.base)).status, 200, 'open: no key needed');
  const early = await submitOk(d.base, CHAT, body(`open ${uniq()}`));
  let ls = await ctlJson(['key', 'ls'], d.dataDir);
  assert.deepEqual(ls, []);

  const r = await ctl(['key', 'add', '--name', 'alice'], d.dataDir);
  assert.equal(r.code, 0, r.stderr);
  const key = /^key +(sk-sl-\S+)$/m.exec(r.stdout)?.[1];
  const id = /^id +([0-9a-f]{16})$/m.exec(r.stdout)?.[1];
  assert.ok(key && id, r.stdout);
  assert.equal(r.stdout.split(key).length, 2, 'the key is printed once');
  assert.match(r.stdout, /cannot be shown again/);
  assert.match(r.stdout, /first key/);
  A = { key, id, tenant: id };
  allKeys.push({ key, dataDir: d.dataDir });

  let x = await models(d.base);
  assert.equal(x.status, 401, `no key after key add: ${x.text}`);
  assert.equal(x.json.error.code, 'missing_api_key');
  x = await models(d.base, 'sk-sl-not-a-key');
  assert.equal(x.status, 401);
  assert.equal(x.json.error.code, 'invalid_api_key');
  assert.equal((await models(d.base, A.key)).status, 200, 'the new key works at once');
  const gen = await submitOk(d.base, CHAT, body(`alice ${uniq()}`), A.key);
  assert.equal((await request('GET', `${d.base}/v1/generation/${gen}`, { key: A.key })).status, 200);
  x = await request('GET', `${d.base}/v1/generation/${early}`, { key: A.key });
  assert.equal(x.status, 404, 'a job made while open belongs to no key');

  B = await addKey(d.dataDir, ['--name', 'bob']);
  assert.equal(B.name, 'bob');
  assert.equal(B.rps, 0);
  assert.equal(B.maxQueued, 0);
  assert.equal(B.revoked, false);
  const third = await ctl(['key', 'add'], d.dataDir);
  assert.equal(third.code, 0, third.stderr);
  assert.ok(!third.stdout.includes('first key'), third.stdout);
  allKeys.push({ key: /^key +(\S+)$/m.exec(third.stdout)[1], dataDir: d.dataDir });
  ls = await ctlJson(['key', 'ls'], d.dataDir);
  assert.equal(ls.length, 3);
});

test('a second key sees none of the first key\'s generations, groups, files, batches, webhooks', async () => {
  const base = d.base;
  const as = (key) => (method, p, b) => request(method, base + p, { key, body: b });
  const a = as(A.key);
  const b = as(B.key);

  const gen = await submitOk(base, CHAT, body(`iso ${uniq()}`), A.key);
  let r = await submit(base, GROUP, { requests: [body('g1'), body('g2')] }, A.key);
  assert.equal(r.status, 200, r.text);
  const group = r.json.groupId;
  const file = await uploadFile(base, A.key, batchLines(2, uniq()));
  r = await a('POST', '/v1/batches', { input_file_id: file, endpoint: '/v1/chat/completions', completion_window: '24h' });
  assert.equal(r.status, 200, r.text);
  const batch = r.json.id;
  r = await a('POST', '/v1/webhooks', { url: 'https://hooks.example.com/slowlane' });
  assert.equal(r.status, 200, r.text);
  const hook = r.json.id;

  const own = [
    `/v1/generation/${gen}`, `/v1/async/group/${group}/generations`, `/v1/files/${file}`,
    `/v1/files/${file}/content`, `/v1/batches/${batch}`, `/v1/webhooks/${hook}`,
  ];
  for (const p of own) {
    assert.equal((await a('GET', p)).status, 200, `A: GET ${p}`);
    r = await b('GET', p);
    assert.equal(r.status, 404, `B: GET ${p}: ${r.text}`);
  }
  const ids = (res) => (res.json?.data || []).map((x) => x.id);
  for (const [p, id] of [['/v1/files', file], ['/v1/batches', batch], ['/v1/webhooks', hook]]) {
    assert.ok(ids(await a('GET', p)).includes(id), `A lists ${id} in ${p}`);
    r = await b('GET', p);
    assert.equal(r.status, 200, r.text);
    assert.ok(!ids(r).includes(id), `B's ${p} has no ${id}: ${r.text}`);
  }
  // nor can it use or change them
  r = await b('POST', CHAT, { ...body('hook'), metadata: { webhook_id: hook } });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'webhook_not_found');
  r = await b('POST', '/v1/batches', { input_file_id: file, endpoint: '/v1/chat/completions', completion_window: '24h' });
  assert.ok(r.status === 400 || r.status === 404, r.text);
  assert.equal((await b('POST', `/v1/batches/${batch}/cancel`)).status, 404);
  assert.equal((await b('POST', `/v1/webhooks/${hook}/rotate-secret`)).status, 404);
  assert.equal((await b('DELETE', `/v1/webhooks/${hook}`)).status, 404);
  assert.equal((await b('DELETE', `/v1/files/${file}`)).status, 404);
  for (const p of own)
    assert.equal((await a('GET', p)).status, 200, `A still has ${p}`);
});

test('key ls: ids, names, status and limits; never a key or its full hash', async () => {
  const ls = await ctlJson(['key', 'ls'], d.dataDir);
  const row = ls.find((k) => k.id === A.id);
  assert.deepEqual(Object.keys(row).sort(), ['createdAt', 'id', 'maxQueued', 'name', 'revoked', 'rps']);
  assert.deepEqual({ ...row, createdAt: 0 }, { id: A.id, name: 'alice', createdAt: 0, revoked: false, rps: 0, maxQueued: 0 });
  const table = await ctl(['key', 'ls'], d.dataDir);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^ID +NAME +CREATED +STATUS +RPS +MAX_QUEUED$/m);
  assert.match(table.stdout, new RegExp(`^${A.id} +alice +\\S+ +active +default +default$`, 'm'));
  for (const out of [table.stdout, JSON.stringify(ls)]) {
    for (const k of [A, B]) {
      assert.ok(!out.includes(k.key), 'no key text');
      assert.ok(!out.includes(sha256(k.key)), 'no full hash');
    }
  }
});

test('key revoke: the key is refused (401) at its next request, without a restart', async () => {
  const C = await addKey(d.dataDir, ['--name', 'carol']);
  assert.equal((await models(d.base, A.key)).status, 200);
  assert.equal((await models(d.base, C.key)).status, 200);

  let r = await ctl(['key', 'revoke', A.id.slice(0, 8)], d.dataDir); // a unique prefix
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`revoked key ${A.id} \\(alice\\)`));
  r = await models(d.base, A.key);
  assert.equal(r.status, 401, r.text);
  assert.equal(r.json.error.code, 'invalid_api_key');
  assert.equal((await models(d.base, B.key)).status, 200, 'other keys unaffected');

  // by the key text itself
  const j = await ctlJson(['key', 'revoke', C.key], d.dataDir);
  assert.deepEqual(j, { operation: 'revoke', id: C.id, name: 'carol', changed: true });
  assert.equal((await models(d.base, C.key)).status, 401);
  assert.deepEqual(await ctlJson(['key', 'revoke', C.id], d.dataDir),
    { operation: 'revoke', id: C.id, name: 'carol', changed: false }, 'again: nothing to do');
  const ls = await ctlJson(['key', 'ls'], d.dataDir);
  assert.equal(ls.find((k) => k.id === A.id).revoked, true);
  assert.equal(ls.find((k) => k.id === B.id).revoked, false);
  assert.match((await ctl(['key', 'ls'], d.dataDir)).stdout, new RegExp(`^${A.id} +alice +\\S+ +revoked `, 'm'));

  // unknown ids exit 1; bad usage 2
  const unknown = (A.id[0] === 'f' ? '0' : 'f').repeat(16);
  r = await ctl(['key', 'revoke', unknown], d.dataDir);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no key/);
  r = await ctl(['key', 'revoke', 'sk-sl-never-issued'], d.dataDir);
  assert.equal(r.code, 1);
  assert.equal((await ctl(['key', 'set', unknown, '--rps', '1'], d.dataDir)).code, 1);
  assert.equal((await ctl(['key', 'revoke', 'ab'], d.dataDir)).code, 2, 'prefix too short');
  assert.equal((await ctl(['key', 'revoke'], d.dataDir)).code, 2);
  assert.equal((await ctl(['key', 'set', B.id], d.dataDir)).code, 2, 'set needs a limit');
  assert.equal((await ctl(['key', 'add', '--rps', 'x'], d.dataDir)).code, 2);
  assert.equal((await ctl(['key', 'add', '--key', 'k'], d.dataDir)).code, 2);
  r = await ctl(['key'], d.dataDir);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /needs a command: add, ls, revoke, set/);
  r = await ctl(['key', 'add', '--help'], d.dataDir);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /--max-queued N/);
});

test('key set --rps 5: a burst of 30 requests gets some 429 with Retry-After; --rps 0 lifts it', async () => {
  const j = await ctlJson(['key', 'set', B.id, '--rps', '5'], d.dataDir);
  assert.equal(j.rps, 5);
  assert.equal(j.changed, true);
  const { got, limited } = await rateBurst(d.base, B.key, 5);
  for (const r of limited) {
    assert.equal(r.headers.get('retry-after'), '1');
    assert.equal(r.json.error.code, 'rate_limit_exceeded');
  }
  await ctlJson(['key', 'set', B.id, '--rps', '0'], d.dataDir);
  const after = await burst(30, () => models(d.base, B.key));
  assert.deepEqual(after.map((r) => r.status), Array(30).fill(200), 'back to the daemon default: none');
});

test('--rate-limit 5 and --max-queued 3 with --paused: 429 past the rate, the 4th job, a group over the limit', async () => {
  const p = await startDaemon({ args: ['--paused', '--rate-limit', '5', '--max-queued', '3'] });
  const C = await addKey(p.dataDir, ['--name', 'rate']);
  const { limited } = await rateBurst(p.base, C.key, 5);
  assert.ok(limited.every((r) => r.headers.get('retry-after') === '1' &&
    r.json.error.code === 'rate_limit_exceeded'));

  const D = await addKey(p.dataDir, ['--name', 'queue']);
  for (let i = 0; i < 3; i++)
    await submitOk(p.base, CHAT, body(`q${i}`), D.key);
  let r = await submit(p.base, CHAT, body('q3'), D.key);
  assert.equal(r.status, 429, r.text);
  assert.equal(r.json.error.code, 'queue_limit_exceeded');
  assert.ok(r.headers.get('retry-after'), 'Retry-After');
  // a request that can never succeed is told so, not told to retry later
  // (found: a bad body over the limit was 429)
  await new Promise((res) => setTimeout(res, 1100)); // clear of --rate-limit 5
  r = await submit(p.base, CHAT, { model: 'load-test' }, D.key);
  assert.equal(r.status, 400, r.text);
  r = await submit(p.base, GROUP, { requests: [{ model: 'load-test' }] }, D.key);
  assert.equal(r.status, 400, r.text);

  const E = await addKey(p.dataDir, ['--name', 'group']);
  await submitOk(p.base, CHAT, body('e0'), E.key);
  await submitOk(p.base, CHAT, body('e1'), E.key);
  const group = { requests: [body('g0'), body('g1')] };
  r = await submit(p.base, GROUP, group, E.key);
  assert.equal(r.status, 429, r.text);
  assert.equal(r.json.error.code, 'queue_limit_exceeded');
  assert.ok(r.headers.get('retry-after'), 'Retry-After');
  // the key's own limit, set while the daemon runs, replaces the default
  assert.equal((await ctlJson(['key', 'set', E.id, '--max-queued', '4'], p.dataDir)).maxQueued, 4);
  r = await submit(p.base, GROUP, group, E.key);
  assert.equal(r.status, 200, r.text);
  r = await submit(p.base, CHAT, body('e4'), E.key);
  assert.equal(r.status, 429, r.text);
  assert.equal(r.json.error.code, 'queue_limit_exceeded');
  assert.equal((await p.term()), 0);
});

test('the store holds no key text, only hashes', async () => {
  const byDir = new Map();
  for (const { key, dataDir } of allKeys) {
    if (!byDir.has(dataDir))
      byDir.set(dataDir, fs.readFileSync(path.join(dataDir, 'data.mdb')));
    const bytes = byDir.get(dataDir);
    assert.equal(bytes.indexOf(key), -1, 'key text in data.mdb');
    assert.equal(bytes.indexOf(key.slice(6)), -1, 'key text without its prefix in data.mdb');
    assert.notEqual(bytes.indexOf(sha256(key)), -1, 'its hash is there: the right file');
  }
  assert.equal(allKeys.length, 7);
});
