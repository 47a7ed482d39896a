// The official openai npm SDK verifies slowlane's webhook deliveries: the
// receiver captures real generation.completed and slow-group.completed
// deliveries, and `client.webhooks.unwrap(body, headers, secret)` (openai v5:
// async, secret as an argument or from `new OpenAI({webhookSecret})`, 300 s
// timestamp tolerance) accepts them and returns the parsed body; a tampered
// body, id or timestamp, or the wrong secret, makes it throw. Needs `npm ci`
// in tests/compat.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { startDaemon, submit, submitOk, poll, request, chatBody } from '../func/lib.mjs';
import { startReceiver } from './receiver.mjs';

const SDK_URL = new URL('../compat/node_modules/openai/index.mjs', import.meta.url);

let OpenAI = null;
let InvalidWebhookSignatureError = null;
let loadError = null;
try {
  const m = await import(SDK_URL.href);
  OpenAI = m.default;
  InvalidWebhookSignatureError = m.InvalidWebhookSignatureError;
} catch (e) {
  loadError = e;
}

function sdkVersion() {
  try {
    return JSON.parse(fs.readFileSync(new URL('../compat/node_modules/openai/package.json', import.meta.url))).version;
  } catch {
    return '?';
  }
}

let d;
let rcv;
let wh;
let chatDl;
let groupDl;

before(async () => {
  if (!OpenAI)
    assert.fail(`the openai SDK is not installed in tests/compat: run 'npm ci' in tests/compat ` +
      `(${loadError?.message})`);
  assert.equal(typeof new OpenAI({ apiKey: 'unused' }).webhooks?.unwrap, 'function',
    `openai ${sdkVersion()} has client.webhooks.unwrap()`);
  d = await startDaemon({ args: ['--webhook-allow-http', '--webhook-allow-private', '--webhook-retry-base', '100ms'] });
  rcv = await startReceiver();
  const r = await request('POST', `${d.base}/v1/webhooks`, { body: { url: rcv.url } });
  assert.equal(r.status, 200, r.text);
  wh = r.json;
  rcv.secret = wh.secret;

  // the built-in load-test backend answers; capture one delivery of each kind
  const id = await submitOk(d.base, '/v1/slow/chat/completions',
    chatBody('unwrap me — with “unicode” ✓', { metadata: { custom_id: 'sdk-1', webhook_id: wh.id } }));
  const g = await poll(d.base, id);
  assert.equal(g.state, 'Success', g.stateMessage);
  [chatDl] = await rcv.waitAccepted((x) => x.body?.generation_id === id);
  const gr = await submit(d.base, '/v1/async/group/chat/completions', {
    requests: [chatBody('group a'), chatBody('group b')],
    metadata: { webhook_id: wh.id },
  });
  assert.equal(gr.status, 200, gr.text);
  [groupDl] = await rcv.waitAccepted((x) => x.body?.group_id === gr.json.groupId);
  assert.ok(chatDl.verified && groupDl.verified, 'the test receiver verifies them too');
});

const client = (opts = {}) => new OpenAI({ apiKey: 'unused', ...opts });

test('webhooks.unwrap(body, headers, secret) accepts real deliveries and returns the event', async () => {
  for (const dl of [chatDl, groupDl]) {
    const ev = await client().webhooks.unwrap(dl.raw, dl.headers, wh.secret);
    assert.deepEqual(ev, JSON.parse(dl.raw));
    assert.equal(ev.event, dl.headers['x-inference-event']);
    // a fetch-style Headers object works as well
    const ev2 = await client().webhooks.unwrap(dl.raw, new Headers(dl.headers), wh.secret);
    assert.deepEqual(ev2, ev);
  }
  const ev = await client().webhooks.unwrap(chatDl.raw, chatDl.headers, wh.secret);
  assert.equal(ev.event, 'generation.completed');
  assert.equal(ev.data.state, 'Success');
  assert.equal(ev.data.request.metadata.custom_id, 'sdk-1');
  assert.equal(ev.data.response.choices[0].message.content, 'unwrap me — with “unicode” ✓');
  const gev = await client().webhooks.unwrap(groupDl.raw, groupDl.headers, wh.secret);
  assert.equal(gev.event, 'slow-group.completed');
  assert.equal(gev.data.generations.length, 2);
});

test('the secret can come from new OpenAI({webhookSecret})', async () => {
  const c = client({ webhookSecret: wh.secret });
  const ev = await c.webhooks.unwrap(chatDl.raw, chatDl.headers);
  assert.equal(ev.generation_id, chatDl.body.generation_id);
  await c.webhooks.verifySignature(groupDl.raw, groupDl.headers);
});

test('a tampered body, id or timestamp, or another secret, makes unwrap throw', async () => {
  const c = client();
  const isSigError = (e) => (InvalidWebhookSignatureError ? e instanceof InvalidWebhookSignatureError : true) &&
    /signature|timestamp/i.test(e.message);

  const tampered = chatDl.raw.replace('"Success"', '"Failed"');
  assert.notEqual(tampered, chatDl.raw, 'the tampering changed something');
  await assert.rejects(c.webhooks.unwrap(tampered, chatDl.headers, wh.secret), isSigError, 'tampered body');
  await assert.rejects(c.webhooks.unwrap(chatDl.raw + ' ', chatDl.headers, wh.secret), isSigError, 'one byte more');
  await assert.rejects(c.webhooks.unwrap(groupDl.raw, chatDl.headers, wh.secret), isSigError,
    "another delivery's body");

  const otherId = { ...chatDl.headers, 'webhook-id': chatDl.headers['webhook-id'].replace(/.$/, (ch) => (ch === 'A' ? 'B' : 'A')) };
  await assert.rejects(c.webhooks.unwrap(chatDl.raw, otherId, wh.secret), isSigError, 'tampered webhook-id');
  const otherTs = { ...chatDl.headers, 'webhook-timestamp': String(Number(chatDl.headers['webhook-timestamp']) - 1) };
  await assert.rejects(c.webhooks.unwrap(chatDl.raw, otherTs, wh.secret), isSigError, 'tampered timestamp');

  const rot = await request('POST', `${d.base}/v1/webhooks/${wh.id}/rotate-secret`);
  assert.equal(rot.status, 200, rot.text);
  await assert.rejects(c.webhooks.unwrap(chatDl.raw, chatDl.headers, rot.json.secret), isSigError, 'another secret');

  const { 'webhook-signature': _sig, ...noSig } = chatDl.headers;
  await assert.rejects(c.webhooks.unwrap(chatDl.raw, noSig, wh.secret), /webhook-signature/, 'no signature header');
});
