// Webhooks (API.md section 4): the per-key registration API, the URL policy,
// and deliveries to a local receiver that verifies every signature and
// answers 500 to the first two deliveries of each event: each generation (and
// each group naming a webhook) ends with exactly one accepted delivery per
// event id, retries reuse the event id and the same body, failed generations
// are delivered too, 4xx other than 408/429 is not retried, redirects are not
// followed, unknown webhook ids are refused at submit; a batch's webhook_url
// (a registered endpoint of its key) gets one signed batch.completed event.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submit, submitOk, get, poll, waitAll, request, healthz, sleep,
  chatBody, completionBody, errorOf, ID_RE, ISO_MS_RE,
} from '../func/lib.mjs';
import { startReceiver, verifySignature } from './receiver.mjs';
import { chatLine, jsonl, uploadOk, createBatch, createBatchOk, waitBatch, ctlJson } from '../batch/batchlib.mjs';

const K1 = 'k1-hooks';
const K2 = 'k2-hooks';
const WH_ID_RE = /^[A-Za-z0-9_-]{9}$/;
const EVT_RE = /^evt_[A-Za-z0-9_-]+$/;
const SECRET_RE = /^whsec_[A-Za-z0-9+/]+={0,2}$/;
const HOOK_FLAGS = ['--webhook-allow-http', '--webhook-allow-private', '--webhook-retry-base', '100ms'];

let mock;
let d;

before(async () => {
  mock = await startMock({ latency: 20 });
  d = await startDaemon({
    upstream: mock.url,
    args: ['--api-key', K1, '--api-key', K2, ...HOOK_FLAGS],
  });
});

const hooks = (base, method, p = '', body, key = K1) =>
  request(method, `${base}/v1/webhooks${p}`, { body, key });

async function createHook(url, { key = K1, events, base = d.base } = {}) {
  const r = await hooks(base, 'POST', '', events ? { url, events } : { url }, key);
  assert.equal(r.status, 200, `POST /v1/webhooks ${url}: ${r.text}`);
  return r.json;
}

// A receiver plus a webhook of key K1 pointing at it; the receiver knows the secret.
async function hookedReceiver(opts = {}, { key = K1 } = {}) {
  const rcv = await startReceiver(opts);
  const wh = await createHook(rcv.url, { key });
  rcv.secret = wh.secret;
  return { rcv, wh };
}

function assertNoSecret(o) {
  assert.ok(!('secret' in o), `no secret outside create/rotate: ${JSON.stringify(o)}`);
}

// Waits a little after the last accepted delivery, so late duplicates show.
const QUIET_MS = 1500;

// ---------------------------------------------------------------- registration API

test('registration API: create, list, get, rotate-secret, delete; secrets only on create and rotate', async () => {
  const t0 = Math.floor(Date.now() / 1000);
  const a = await createHook('https://hooks.example.com/a', { events: ['generation.completed'] });
  assert.deepEqual(Object.keys(a).sort(), ['created_at', 'events', 'id', 'object', 'secret', 'url']);
  assert.match(a.id, WH_ID_RE);
  assert.equal(a.object, 'webhook');
  assert.equal(a.url, 'https://hooks.example.com/a');
  assert.deepEqual(a.events, ['generation.completed']);
  assert.ok(Number.isInteger(a.created_at) && Math.abs(a.created_at - t0) <= 5,
    `created_at ${a.created_at} is unix seconds of now (${t0})`);
  assert.match(a.secret, SECRET_RE);
  assert.ok(Buffer.from(a.secret.slice(6), 'base64').length >= 24, 'secret has at least 24 random bytes');

  const b = await createHook('https://hooks.example.com/b');
  assert.ok(Array.isArray(b.events) && b.events.length >= 2, `default events ${JSON.stringify(b.events)}`);
  for (const e of ['generation.completed', 'slow-group.completed'])
    assert.ok(b.events.includes(e), `default events include ${e}`);
  assert.notEqual(a.id, b.id);
  assert.notEqual(a.secret, b.secret);

  const c2 = await createHook('https://hooks.example.com/k2', { key: K2 });

  // list: own webhooks only, no secrets
  const l1 = await hooks(d.base, 'GET');
  assert.equal(l1.status, 200, l1.text);
  assert.equal(l1.json.object, 'list');
  assert.ok(Array.isArray(l1.json.data));
  const ids1 = l1.json.data.map((w) => w.id);
  assert.ok(ids1.includes(a.id) && ids1.includes(b.id), 'k1 lists its webhooks');
  assert.ok(!ids1.includes(c2.id), "k1 does not list k2's");
  l1.json.data.forEach(assertNoSecret);
  const la = l1.json.data.find((w) => w.id === a.id);
  const { secret: _s, ...aNoSecret } = a;
  assert.deepEqual(la, aNoSecret);
  const l2 = await hooks(d.base, 'GET', '', undefined, K2);
  assert.deepEqual(l2.json.data.map((w) => w.id), [c2.id], 'k2 lists only its own');

  // get
  const g = await hooks(d.base, 'GET', `/${a.id}`);
  assert.equal(g.status, 200, g.text);
  assert.deepEqual(g.json, aNoSecret);
  const g2 = await hooks(d.base, 'GET', `/${a.id}`, undefined, K2);
  assert.equal(g2.status, 404, `k2 GET k1's webhook: ${g2.text}`);
  errorOf(g2);
  assert.equal((await hooks(d.base, 'GET', '/AAAAAAAAA')).status, 404);
  assert.equal((await hooks(d.base, 'GET', '/nope')).status, 404);

  // rotate-secret
  const r2 = await hooks(d.base, 'POST', `/${a.id}/rotate-secret`, undefined, K2);
  assert.equal(r2.status, 404, `k2 rotates k1's webhook: ${r2.text}`);
  const r = await hooks(d.base, 'POST', `/${a.id}/rotate-secret`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.id, a.id);
  assert.equal(r.json.object, 'webhook');
  assert.equal(r.json.url, a.url);
  assert.match(r.json.secret, SECRET_RE);
  assert.notEqual(r.json.secret, a.secret, 'a new secret');
  assertNoSecret((await hooks(d.base, 'GET', `/${a.id}`)).json);
  assert.equal((await hooks(d.base, 'POST', '/AAAAAAAAA/rotate-secret')).status, 404);

  // delete
  const x2 = await hooks(d.base, 'DELETE', `/${a.id}`, undefined, K2);
  assert.equal(x2.status, 404, `k2 deletes k1's webhook: ${x2.text}`);
  assert.equal((await hooks(d.base, 'GET', `/${a.id}`)).status, 200, "still there after k2's attempt");
  const x = await hooks(d.base, 'DELETE', `/${a.id}`);
  assert.equal(x.status, 200, x.text);
  assert.deepEqual(x.json, { id: a.id, object: 'webhook', deleted: true });
  assert.equal((await hooks(d.base, 'GET', `/${a.id}`)).status, 404);
  assert.equal((await hooks(d.base, 'DELETE', `/${a.id}`)).status, 404, 'deleting twice');
  const l3 = await hooks(d.base, 'GET');
  assert.ok(!l3.json.data.some((w) => w.id === a.id), 'gone from the list');
  assert.ok(l3.json.data.some((w) => w.id === b.id), 'the other one stays');

  // a deleted webhook cannot be named any more
  const s = await submit(d.base, '/v1/slow/chat/completions',
    chatBody('to a deleted hook', { metadata: { webhook_id: a.id } }), K1);
  assert.equal(s.status, 400, s.text);
  assert.equal(errorOf(s).code, 'webhook_not_found');
  // the other ways to name events (found: "*" taken but never matching, ""
  // and "a,b" refused): each is taken and means what it says
  for (const events of ['*', '', 'batch.completed,batch.failed', ['*']]) {
    const w = await hooks(d.base, 'POST', '', { url: 'https://hooks.example.com/forms', events });
    assert.equal(w.status, 200, `${JSON.stringify(events)}: ${w.text}`);
    const s2 = await submit(d.base, '/v1/slow/chat/completions',
      chatBody('events forms', { metadata: { webhook_id: w.json.id } }), K1);
    const takes = events !== 'batch.completed,batch.failed';
    assert.equal(s2.status, takes ? 200 : 400, `${JSON.stringify(events)}: ${s2.text}`);
  }
  // a webhook that never takes what a submit would send it is refused
  // (found: accepted, and nothing was ever delivered)
  const only = await hooks(d.base, 'POST', '', { url: 'https://hooks.example.com/only-batches', events: ['batch.*'] });
  assert.equal(only.status, 200, only.text);
  const ns = await submit(d.base, '/v1/slow/chat/completions',
    chatBody('to a batch-only hook', { metadata: { webhook_id: only.json.id } }), K1);
  assert.equal(ns.status, 400, ns.text);
  assert.equal(errorOf(ns).code, 'webhook_not_subscribed');
  const gs = await submit(d.base, '/v1/async/group/chat/completions',
    { requests: [chatBody('g')], metadata: { webhook_id: only.json.id } }, K1);
  assert.equal(gs.status, 400, gs.text);
  assert.equal(errorOf(gs).code, 'webhook_not_subscribed');

  // bad bodies, no key
  for (const body of [{}, { url: 5 }, 'not json', { url: 'https://hooks.example.com/e', events: 7 },
    { url: 'https://hooks.example.com/e', events: 'bogus' }, { url: 'https://hooks.example.com/e', events: ['generation.completed', 'x.*'] }]) {
    const e = await hooks(d.base, 'POST', '', body);
    assert.equal(e.status, 400, `${JSON.stringify(body)}: ${e.text}`);
    assert.equal(errorOf(e).type, 'invalid_request_error');
  }
  for (const [m, p] of [['GET', ''], ['POST', ''], ['GET', `/${b.id}`], ['DELETE', `/${b.id}`]]) {
    const u = await request(m, `${d.base}/v1/webhooks${p}`,
      { body: m === 'POST' ? { url: 'https://hooks.example.com/x' } : undefined });
    assert.equal(u.status, 401, `${m} /v1/webhooks${p} without a key: ${u.text}`);
  }
});

// ---------------------------------------------------------------- URL policy

test('URL policy: without --webhook-allow-http / --webhook-allow-private local targets are refused', async () => {
  const rcv = await startReceiver();
  const strict = await startDaemon({ upstream: mock.url, args: ['--api-key', K1] });
  const r = await hooks(strict.base, 'POST', '', { url: rcv.url });
  assert.equal(r.status, 400, `http://127.0.0.1 without flags: ${r.text}`);
  let e = errorOf(r);
  assert.equal(e.type, 'invalid_request_error');
  assert.equal(e.param, 'url');
  assert.equal(e.code, 'invalid_url');
  assert.match(e.message, /https/i, 'the message says https is required');

  const refusedPrivate = [
    `https://127.0.0.1:${rcv.port}/hook`, 'https://localhost/hook', 'https://LOCALHOST:8443/x',
    'https://10.1.2.3/hook', 'https://192.168.1.1/hook', 'https://172.16.5.4/hook',
    'https://169.254.169.254/latest/meta-data', 'https://[::1]/hook', 'https://[fe80::1]/hook',
    'https://127.0.0.2/hook', 'https://0.0.0.0/hook',
    // the other ways to write an address (found: taken, refused only at delivery)
    'https://127.1/hook', 'https://0x7f000001/hook', 'https://2130706433/hook', 'https://0/hook',
    'https://app.localhost/hook',
  ];
  for (const url of refusedPrivate) {
    const x = await hooks(strict.base, 'POST', '', { url });
    assert.equal(x.status, 400, `${url}: ${x.text}`);
    e = errorOf(x);
    assert.equal(e.code, 'invalid_url', url);
    assert.match(e.message, /loopback|private|link-local/i, `${url}: ${e.message}`);
  }
  for (const url of ['ftp://hooks.example.com/x', 'hooks.example.com/x', 'https://user:pw@hooks.example.com/x', 'https:///x',
    'https://exa mple.com/hook', 'https://hooks.example.com\\@evil/x']) {
    const x = await hooks(strict.base, 'POST', '', { url });
    assert.equal(x.status, 400, `${url}: ${x.text}`);
    assert.equal(errorOf(x).code, 'invalid_url', url);
  }
  // a public https URL is fine
  const ok = await hooks(strict.base, 'POST', '', { url: 'https://hooks.example.com/ok' });
  assert.equal(ok.status, 200, ok.text);
  // nothing refused was stored
  const l = await hooks(strict.base, 'GET');
  assert.deepEqual(l.json.data.map((w) => w.url), ['https://hooks.example.com/ok']);

  // http allowed, private not: 127.0.0.1 is still refused, for its address
  const httpOnly = await startDaemon({ upstream: mock.url, args: ['--api-key', K1, '--webhook-allow-http'] });
  const h = await hooks(httpOnly.base, 'POST', '', { url: rcv.url });
  assert.equal(h.status, 400, `http://127.0.0.1 with --webhook-allow-http only: ${h.text}`);
  e = errorOf(h);
  assert.equal(e.code, 'invalid_url');
  assert.match(e.message, /loopback|private/i, e.message);
  assert.match(e.message, /--webhook-allow-private/, 'the message says how to allow it');
  assert.equal((await hooks(httpOnly.base, 'POST', '', { url: 'http://hooks.example.com/h' })).status, 200);

  // a name that is not a literal address but reaches 127.0.0.1 is refused
  // when connecting: either at registration or by never delivering
  const sneaky = `http://127.1:${rcv.port}/sneaky`;
  const s = await hooks(httpOnly.base, 'POST', '', { url: sneaky });
  if (s.status === 200) {
    const id = await submitOk(httpOnly.base, '/v1/slow/chat/completions',
      chatBody('sneaky', { metadata: { webhook_id: s.json.id } }), K1);
    const g = await poll(httpOnly.base, id, { key: K1 });
    assert.equal(g.state, 'Success');
    await sleep(2500);
    assert.equal(rcv.deliveries.length, 0, `nothing reaches 127.0.0.1 via ${sneaky}: ${rcv.summary()}`);
  } else {
    assert.equal(s.status, 400, s.text);
  }
  assert.equal(rcv.deliveries.length, 0);
  await strict.term();
  await httpOnly.term();
});

// ---------------------------------------------------------------- deliveries

function checkCommonHeaders(dl, wh, type) {
  const h = dl.headers;
  assert.match(h['content-type'] || '', /application\/json/);
  assert.match(dl.eventId, EVT_RE, 'webhook-id is an evt_ id');
  assert.match(dl.timestamp, /^\d+$/);
  assert.ok(Math.abs(Number(dl.timestamp) - dl.at / 1000) <= 30,
    `webhook-timestamp ${dl.timestamp} is unix seconds of the delivery`);
  assert.ok(dl.verified, `signature verifies: ${dl.verifyError}`);
  assert.equal(h['x-inference-event'], type);
  assert.equal(h['x-inference-webhook-id'], wh.id);
  assert.equal(dl.method, 'POST');
  assert.equal(dl.body.event, type);
  assert.equal(dl.body.webhook_id, wh.id);
  assert.match(dl.body.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/, 'body.timestamp is ISO 8601 UTC');
}

// Every event of `events` (Map eventId -> deliveries): the first `fails`
// deliveries failed, then exactly one accepted, nothing after; all with the
// same body; spaced by at least the backoff's lower bound.
function checkRetries(events, fails) {
  for (const [eid, list] of events) {
    const st = list.map((x) => x.status);
    const expect = [...Array(fails).fill(500), 200];
    assert.deepEqual(st, expect, `event ${eid}: answers ${st}, expected ${expect}`);
    for (const x of list) {
      assert.equal(x.eventId, eid, 'retries reuse the webhook-id');
      assert.equal(x.raw, list[0].raw, 'retries send the same body');
      assert.ok(x.verified, `delivery #${x.seq} of ${eid} verifies: ${x.verifyError}`);
    }
    // backoff base 100 ms, x4, jitter [0.5, 1): >= 50 ms, then >= 200 ms
    if (list.length >= 2) assert.ok(list[1].at - list[0].at >= 40, `first retry of ${eid} after ${list[1].at - list[0].at} ms`);
    if (list.length >= 3) assert.ok(list[2].at - list[1].at >= 180, `second retry of ${eid} after ${list[2].at - list[1].at} ms`);
  }
}

test('10 requests naming a webhook: one accepted generation.completed each, after two 500s', async () => {
  const { rcv, wh } = await hookedReceiver({ failFirst: 2, perEvent: true });
  const bodies = [];
  const ids = [];
  const deliveries = async () => {
    const t = (await request('GET', d.base + '/metrics')).text;
    const n = (o) => Number((t.match(new RegExp(`^slowlane_webhook_deliveries_total\\{outcome="${o}"\\} (\\d+)$`, 'm')) || [])[1]);
    return { delivered: n('delivered'), retried: n('retried') };
  };
  const m0 = await deliveries();
  for (let i = 0; i < 10; i++) {
    const meta = { metadata: { custom_id: `hook-${i}`, webhook_id: wh.id } };
    const chat = i % 3 !== 2;
    const body = chat ? chatBody(`hooked ${i}`, meta) : completionBody(`hooked ${i}`, meta);
    const p = chat ? (i % 2 ? '/v1/slow/chat/completions' : '/v1/async/chat/completions') : '/v1/async/completions';
    bodies.push(body);
    ids.push(await submitOk(d.base, p, body, K1));
  }
  const gens = await waitAll(d.base, ids, { key: K1, timeoutMs: 30000 });
  for (const id of ids) assert.equal(gens.get(id).state, 'Success');

  await rcv.waitAccepted(() => true, { count: 10, timeoutMs: 20000 });
  await sleep(QUIET_MS);
  const events = rcv.byEvent();
  assert.equal(events.size, 10, `10 distinct event ids: ${rcv.summary()}`);
  assert.equal(rcv.deliveries.length, 30, `2 failures + 1 success per event: ${rcv.summary()}`);
  checkRetries(events, 2);
  const m1 = await deliveries();
  assert.ok(m1.delivered - m0.delivered >= 10 && m1.retried - m0.retried >= 20,
    `/metrics counts the deliveries: ${JSON.stringify([m0, m1])}`);

  const seenGen = new Set();
  for (const [eid, list] of events) {
    const dl = list[list.length - 1];
    checkCommonHeaders(dl, wh, 'generation.completed');
    const b = dl.body;
    assert.deepEqual(Object.keys(b).sort(), ['data', 'event', 'generation_id', 'timestamp', 'webhook_id']);
    const i = ids.indexOf(b.generation_id);
    assert.ok(i >= 0, `generation_id ${b.generation_id} is one of ours`);
    assert.ok(!seenGen.has(b.generation_id), `one event per generation (${eid})`);
    seenGen.add(b.generation_id);
    assert.equal(dl.headers['x-inference-generation-id'], b.generation_id);
    assert.equal(b.data.id, b.generation_id);
    assert.equal(b.data.state, 'Success');
    assert.deepEqual(b.data.request, bodies[i], 'data.request is the body as submitted');
    assert.equal(b.data.request.metadata.custom_id, `hook-${i}`);
    const echo = b.data.response.choices[0].message?.content ?? b.data.response.choices[0].text;
    assert.equal(echo, `hooked ${i}`);
    assert.match(b.data.finishedAt, ISO_MS_RE);
    // the generation object as GET shows it
    const now = await get(d.base, b.generation_id, K1);
    assert.deepEqual(b.data, now.json, 'data is the generation object');
  }
  assert.equal(seenGen.size, 10);
});

test('a group naming a webhook: exactly one accepted slow-group.completed with every member', async () => {
  const { rcv, wh } = await hookedReceiver({ failFirst: 2, perEvent: true });
  const bodies = Array.from({ length: 5 }, (_, i) =>
    chatBody(`group hook ${i}${i === 2 ? ' [mock:delay=500]' : ''}`, { metadata: { custom_id: `gh-${i}` } }));
  const r = await submit(d.base, '/v1/async/group/chat/completions',
    { requests: bodies, metadata: { webhook_id: wh.id } }, K1);
  assert.equal(r.status, 200, r.text);
  const groupId = r.json.groupId;

  const [dl] = await rcv.waitAccepted((x) => x.eventType === 'slow-group.completed', { timeoutMs: 20000 });
  await sleep(QUIET_MS);
  const events = rcv.byEvent();
  assert.equal(events.size, 1, `only the group event (members name no webhook): ${rcv.summary()}`);
  checkRetries(events, 2);
  checkCommonHeaders(dl, wh, 'slow-group.completed');
  assert.equal(dl.headers['x-inference-group-id'], groupId);
  const b = dl.body;
  assert.equal(b.group_id, groupId);
  assert.equal(b.data.group_size, 5);
  assert.equal(b.data.status, 'completed');
  assert.equal(b.data.generations.length, 5);
  b.data.generations.forEach((g, i) => {
    assert.equal(g.state, 'Success', g.stateMessage);
    assert.equal(g.request.metadata.custom_id, `gh-${i}`, 'members in submission order');
    assert.equal(g.response.choices[0].message.content, bodies[i].messages[0].content);
    assert.match(g.finishedAt, ISO_MS_RE);
  });
  const now = await request('GET', `${d.base}/v1/async/group/${groupId}/generations`, { key: K1 });
  assert.deepEqual(b.data.generations, now.json.generations, 'the generations as the group GET shows them');
});

test('a group and its members naming the webhook: one event per member plus one for the group', async () => {
  const { rcv, wh } = await hookedReceiver({ failFirst: 1, perEvent: true });
  const bodies = Array.from({ length: 3 }, (_, i) =>
    completionBody(`both ${i}`, { metadata: { custom_id: `both-${i}`, webhook_id: wh.id } }));
  const r = await submit(d.base, '/v1/slow/group/completions',
    { requests: bodies, metadata: { webhook_id: wh.id } }, K1);
  assert.equal(r.status, 200, r.text);
  await rcv.waitAccepted(() => true, { count: 4, timeoutMs: 20000 });
  await sleep(QUIET_MS);
  const events = rcv.byEvent();
  assert.equal(events.size, 4, rcv.summary());
  checkRetries(events, 1);
  const acc = rcv.accepted();
  assert.equal(acc.filter((x) => x.eventType === 'generation.completed').length, 3);
  const grp = acc.filter((x) => x.eventType === 'slow-group.completed');
  assert.equal(grp.length, 1);
  assert.equal(grp[0].body.group_id, r.json.groupId);
  assert.ok(grp[0].body.data.generations.every((g) => g.state === 'Success'));
  const memberIds = grp[0].body.data.generations.map((g) => g.id).sort();
  assert.deepEqual(acc.filter((x) => x.eventType === 'generation.completed')
    .map((x) => x.body.generation_id).sort(), memberIds);
});

test('a failed generation is delivered too, with state Failed', async () => {
  const { rcv, wh } = await hookedReceiver();
  const body = chatBody('refuse me [mock:status=400]', { metadata: { custom_id: 'will-fail', webhook_id: wh.id } });
  const id = await submitOk(d.base, '/v1/slow/chat/completions', body, K1);
  const g = await poll(d.base, id, { key: K1 });
  assert.equal(g.state, 'Failed');
  const [dl] = await rcv.waitAccepted((x) => x.body?.generation_id === id);
  await sleep(QUIET_MS);
  assert.equal(rcv.deliveries.length, 1, rcv.summary());
  checkCommonHeaders(dl, wh, 'generation.completed');
  assert.equal(dl.body.data.id, id);
  assert.equal(dl.body.data.state, 'Failed');
  assert.equal(dl.body.data.stateMessage, g.stateMessage);
  assert.equal(dl.body.data.request.metadata.custom_id, 'will-fail');
  assert.deepEqual(dl.body.data, (await get(d.base, id, K1)).json);
});

test('a receiver answering 400 gets one delivery only; 408 and 429 are retried', async () => {
  const { rcv, wh } = await hookedReceiver({ status: 400 });
  const id = await submitOk(d.base, '/v1/slow/chat/completions',
    chatBody('to a refusing receiver', { metadata: { webhook_id: wh.id } }), K1);
  await poll(d.base, id, { key: K1 });
  await rcv.waitFor((x) => x.body?.generation_id === id);
  await sleep(2000);
  assert.equal(rcv.deliveries.length, 1, `not retried after 400: ${rcv.summary()}`);
  assert.equal(rcv.deliveries[0].status, 400);
  assert.ok(rcv.deliveries[0].verified);

  for (const code of [408, 429]) {
    const { rcv: r2, wh: wh2 } = await hookedReceiver({ failFirst: 1, failStatus: code, perEvent: true });
    const id2 = await submitOk(d.base, '/v1/async/chat/completions',
      chatBody(`answered ${code} first`, { metadata: { webhook_id: wh2.id } }), K1);
    await r2.waitAccepted((x) => x.body?.generation_id === id2);
    await sleep(500);
    assert.deepEqual(r2.deliveries.map((x) => x.status), [code, 200], `${code} is retried: ${r2.summary()}`);
    assert.equal(r2.deliveries[0].eventId, r2.deliveries[1].eventId);
  }
});

test('redirects are not followed', async () => {
  const target = await startReceiver();
  let n = 0;
  const { rcv, wh } = await hookedReceiver({
    respond: () => (n++ === 0 ? { status: 307, headers: { location: `${target.url}?from=redirect` } } : null),
  });
  target.secret = wh.secret;
  const id = await submitOk(d.base, '/v1/slow/chat/completions',
    chatBody('redirected', { metadata: { webhook_id: wh.id } }), K1);
  await rcv.waitAccepted((x) => x.body?.generation_id === id);
  await sleep(500);
  assert.equal(target.deliveries.length, 0, `the redirect target got nothing: ${target.summary()}`);
  assert.equal(rcv.deliveries[0].status, 307);
  assert.equal(rcv.accepted().length, 1, rcv.summary());
});

test('after rotate-secret deliveries are signed with the new secret', async () => {
  const { rcv, wh } = await hookedReceiver();
  const rot = await hooks(d.base, 'POST', `/${wh.id}/rotate-secret`);
  assert.equal(rot.status, 200, rot.text);
  rcv.secret = rot.json.secret;
  const id = await submitOk(d.base, '/v1/slow/chat/completions',
    chatBody('after rotation', { metadata: { webhook_id: wh.id } }), K1);
  const [dl] = await rcv.waitAccepted((x) => x.body?.generation_id === id);
  assert.ok(dl.verified, `verifies with the new secret: ${dl.verifyError}`);
  assert.notEqual(verifySignature(wh.secret, dl.eventId, dl.timestamp, dl.rawBuffer, dl.signatures), null,
    'does not verify with the old secret');
});

test('submits naming an unknown or foreign webhook_id: 400 webhook_not_found, nothing stored', async () => {
  const foreign = await createHook('https://hooks.example.com/k2-only', { key: K2 });
  const mine = await createHook('https://hooks.example.com/k1-mine');
  await sleep(300);
  const before0 = (await healthz(d.base)).jobs;
  const cases = [
    ['/v1/slow/chat/completions', chatBody('x', { metadata: { webhook_id: 'AAAAAAAAA' } })],
    ['/v1/async/completions', completionBody('x', { metadata: { webhook_id: 'nope' } })],
    ['/v1/slow/chat/completions', chatBody('x', { metadata: { webhook_id: foreign.id } })],
    ['/v1/async/group/chat/completions', { requests: [chatBody('x')], metadata: { webhook_id: 'AAAAAAAAA' } }],
    ['/v1/async/group/chat/completions', { requests: [chatBody('x')], metadata: { webhook_id: foreign.id } }],
    ['/v1/async/group/chat/completions', {
      requests: [chatBody('a', { metadata: { webhook_id: mine.id } }), chatBody('b', { metadata: { webhook_id: 'AAAAAAAAA' } })],
    }],
  ];
  for (const [p, body] of cases) {
    const r = await submit(d.base, p, body, K1);
    assert.equal(r.status, 400, `${p} ${JSON.stringify(body)}: ${r.text}`);
    const e = errorOf(r);
    assert.equal(e.type, 'invalid_request_error');
    assert.equal(e.code, 'webhook_not_found', r.text);
    assert.match(String(e.param), /webhook_id/);
  }
  await sleep(300);
  const after = (await healthz(d.base)).jobs;
  assert.equal(after.queued + after.in_progress + after.success + after.failed,
    before0.queued + before0.in_progress + before0.success + before0.failed, 'no job stored');
});

test('a batch with webhook_url: one signed batch.completed event (OpenAI event shape), after a 500', async () => {
  const { rcv, wh } = await hookedReceiver({ failFirst: 1 });
  const f = await uploadOk(d.base, jsonl([chatLine('b-1', 'batch hook one'), chatLine('b-2', 'batch hook two')]), { key: K1 });
  const t0 = Math.floor(Date.now() / 1000);
  const b = await createBatchOk(d.base, f.id, { key: K1, extra: { webhook_url: rcv.url } });
  assert.ok(!Object.keys(b).some((k) => k.startsWith('_')), `no private fields: ${Object.keys(b)}`);
  const done = await waitBatch(d.base, b.id, { key: K1 });
  assert.equal(done.status, 'completed');
  const [dl] = await rcv.waitAccepted((x) => x.body?.data?.id === b.id, { timeoutMs: 20000 });
  assert.ok(dl.verified, `signed with the registration's secret: ${dl.verifyError}`);
  assert.equal(dl.headers['x-inference-event'], 'batch.completed');
  assert.equal(dl.headers['x-inference-webhook-id'], wh.id);
  assert.equal(dl.headers['x-inference-batch-id'], b.id);
  assert.deepEqual(Object.keys(dl.body).sort(), ['created_at', 'data', 'id', 'object', 'type']);
  assert.equal(dl.body.object, 'event');
  assert.equal(dl.body.type, 'batch.completed');
  assert.equal(dl.body.id, dl.eventId, 'the event id is the webhook-id');
  assert.match(dl.body.id, EVT_RE);
  assert.ok(Number.isInteger(dl.body.created_at) && dl.body.created_at >= t0 - 5, `created_at ${dl.body.created_at}`);
  assert.deepEqual(dl.body.data, { id: b.id });
  await sleep(QUIET_MS);
  const mine = rcv.all((x) => x.body?.data?.id === b.id);
  assert.deepEqual(mine.map((x) => x.status), [500, 200], 'one retry after the 500, then nothing more');
  assert.ok(mine.every((x) => x.eventId === dl.eventId), 'the retry reuses the event id');
});

test('a batch webhook_url its key has not registered is registered for it (batch.* events, its own secret); a second batch reuses it', async () => {
  const rcv = await startReceiver();
  const url = `${rcv.url}/auto`;
  const foreign = await createHook(url, { key: K2 }); // the same URL, another key's
  const f = await uploadOk(d.base, jsonl([chatLine('a-1', 'auto hook')]), { key: K1 });
  const b = await createBatchOk(d.base, f.id, { key: K1, extra: { webhook_url: url } });
  const mine = () => hooks(d.base, 'GET', '', undefined, K1)
    .then((r) => r.json.data.filter((w) => w.url === url));
  const regs = await mine();
  assert.equal(regs.length, 1, `one registration of the URL for K1: ${JSON.stringify(regs)}`);
  const [wh] = regs;
  assert.notEqual(wh.id, foreign.id, "not the other key's registration");
  assert.match(wh.id, WH_ID_RE);
  assert.deepEqual(wh.events, ['batch.*']);
  assertNoSecret(wh);
  // Its secret is read by rotating it; the delivery is signed with it.
  const rot = await hooks(d.base, 'POST', `/${wh.id}/rotate-secret`, undefined, K1);
  assert.equal(rot.status, 200, rot.text);
  assert.match(rot.json.secret, SECRET_RE);
  rcv.secret = rot.json.secret;
  assert.equal((await waitBatch(d.base, b.id, { key: K1 })).status, 'completed');
  const [dl] = await rcv.waitAccepted((x) => x.body?.data?.id === b.id, { timeoutMs: 20000 });
  assert.ok(dl.verified, `signed with the new registration's secret: ${dl.verifyError}`);
  assert.equal(dl.headers['x-inference-webhook-id'], wh.id);
  assert.equal(dl.body.type, 'batch.completed');
  // A second batch with the same URL registers nothing more.
  const f2 = await uploadOk(d.base, jsonl([chatLine('a-2', 'auto hook again')]), { key: K1 });
  const b2 = await createBatchOk(d.base, f2.id, { key: K1, extra: { webhook_url: url } });
  assert.deepEqual((await mine()).map((w) => w.id), [wh.id]);
  await waitBatch(d.base, b2.id, { key: K1 });
  const [dl2] = await rcv.waitAccepted((x) => x.body?.data?.id === b2.id, { timeoutMs: 20000 });
  assert.ok(dl2.verified, dl2.verifyError);
  // The URL registered again (a second secret): a batch's events go to the
  // newest registration, whose secret the client holds (found: to whichever
  // came first in id order).
  await sleep(5);
  const again = await createHook(url, { key: K1 });
  rcv.secret = again.secret;
  const f3 = await uploadOk(d.base, jsonl([chatLine('a-3', 'newest registration')]), { key: K1 });
  const b3 = await createBatchOk(d.base, f3.id, { key: K1, extra: { webhook_url: url } });
  await waitBatch(d.base, b3.id, { key: K1 });
  const [dl3] = await rcv.waitAccepted((x) => x.body?.data?.id === b3.id, { timeoutMs: 20000 });
  assert.equal(dl3.headers['x-inference-webhook-id'], again.id);
  assert.ok(dl3.verified, `signed with the newest registration's secret: ${dl3.verifyError}`);
});

test('a batch webhook_url that is not an allowed URL: 400, nothing created or registered', async () => {
  const f = await uploadOk(d.base, jsonl([chatLine('x', 'x')]), { key: K1 });
  const before = (await hooks(d.base, 'GET', '', undefined, K1)).json.data.length;
  for (const url of ['ftp://127.0.0.1/x', 'not a url', 42]) {
    const r = await createBatch(d.base, { input_file_id: f.id, endpoint: '/v1/chat/completions',
      completion_window: '24h', webhook_url: url }, { key: K1 });
    assert.equal(r.status, 400, r.text);
    const e = errorOf(r);
    assert.equal(e.param, 'webhook_url');
    assert.equal(e.code, 'invalid_url', r.text);
  }
  const list = await request('GET', `${d.base}/v1/batches`, { key: K1 });
  assert.ok(!list.json.data.some((x) => x.input_file_id === f.id), 'no batch was created');
  assert.equal((await hooks(d.base, 'GET', '', undefined, K1)).json.data.length, before, 'no webhook registered');
});

test('delivery edges: a hung receiver times out and is retried; one always failing is given up at --webhook-max-age; big answers are fine', { timeout: 120000 }, async () => {
  const d2 = await startDaemon({
    args: [...HOOK_FLAGS, '--webhook-timeout', '1s', '--webhook-max-age', '3s'],
  });
  try {
    // 1. the first delivery hangs: cut at 1 s, retried, then accepted
    let n = 0;
    const hung = await startReceiver({ respond: () => (n++ === 0 ? { hang: true } : null) });
    const wh1 = await createHook(hung.url, { base: d2.base });
    hung.secret = wh1.secret;
    const id1 = await submitOk(d2.base, '/v1/slow/chat/completions', chatBody('hang first', { metadata: { webhook_id: wh1.id } }));
    const [ok1] = await hung.waitAccepted((x) => x.body?.generation_id === id1, { timeoutMs: 20000 });
    const all1 = hung.all((x) => x.eventId === ok1.eventId);
    assert.ok(all1.length >= 2 && all1[0].hung, `the first delivery hung, then a retry was accepted: ${hung.summary()}`);
    assert.ok(ok1.at - all1[0].at >= 1000, 'retried after the 1 s timeout');

    // 2. a receiver that answers 500 for ever: given up after --webhook-max-age, recorded failed
    const down = await startReceiver({ failFirst: 1e9 });
    const wh2 = await createHook(down.url, { base: d2.base });
    down.secret = wh2.secret;
    const id2 = await submitOk(d2.base, '/v1/slow/chat/completions', chatBody('never accepted', { metadata: { webhook_id: wh2.id } }));
    await down.waitFor((x) => x.body?.generation_id === id2, { count: 2, timeoutMs: 20000 });
    const t0 = Date.now();
    let rec;
    while (Date.now() - t0 < 20000) {
      rec = (await ctlJson(d2.dataDir, 'webhook', 'deliveries')).find((x) => x.subject === id2);
      if (rec && rec.outcome !== 'pending') break;
      await sleep(250);
    }
    assert.equal(rec?.outcome, 'failed', `given up and recorded failed: ${JSON.stringify(rec)}`);
    assert.equal(rec.lastStatus, 500);
    const tries = down.all((x) => x.body?.generation_id === id2).length;
    await sleep(1500);
    assert.equal(down.all((x) => x.body?.generation_id === id2).length, tries, 'no delivery after giving up');

    // 3. a receiver answering 2 MB: accepted (the daemon reads a small part of it)
    const big = await startReceiver({ respond: () => ({ status: 200, body: 'x'.repeat(2 << 20) }) });
    const wh3 = await createHook(big.url, { base: d2.base });
    big.secret = wh3.secret;
    const id3 = await submitOk(d2.base, '/v1/slow/chat/completions', chatBody('big answer', { metadata: { webhook_id: wh3.id } }));
    await big.waitAccepted((x) => x.body?.generation_id === id3, { timeoutMs: 20000 });
    await sleep(QUIET_MS);
    assert.equal(big.all((x) => x.body?.generation_id === id3).length, 1, 'one delivery: a big answer is a success');
    const r3 = (await ctlJson(d2.dataDir, 'webhook', 'deliveries')).find((x) => x.subject === id3);
    assert.equal(r3?.outcome, 'delivered', JSON.stringify(r3));
  } finally {
    await d2.kill9();
  }
});

