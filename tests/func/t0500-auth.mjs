// Client authentication (--api-key, SLOWLANE_API_KEYS) and key isolation.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submit, submitOk, get, poll, healthz, request, chatBody,
  completionBody, errorOf,
} from './lib.mjs';

let mock;
let d;
const CHAT = '/v1/slow/chat/completions';

before(async () => {
  mock = await startMock({ latency: 0 });
  d = await startDaemon({ upstream: mock.url, args: ['--api-key', 'k1', '--api-key', 'k2'] });
});

function is401(r, what) {
  assert.equal(r.status, 401, `${what}: ${r.status} ${r.text}`);
  const e = errorOf(r);
  assert.equal(e.type, 'authentication_error', what);
  assert.ok(typeof e.message === 'string' && e.message.length > 0, what);
  for (const k of ['param', 'code']) assert.ok(k in e, `${what}: error.${k} present`);
}

test('no key, a wrong key, or a malformed header is 401 and stores nothing', async () => {
  const before = (await healthz(d.base)).jobs;
  is401(await submit(d.base, CHAT, chatBody('no key')), 'no Authorization');
  is401(await submit(d.base, CHAT, chatBody('bad key'), 'k3'), 'wrong key');
  is401(await submit(d.base, '/v1/async/completions', completionBody('bad key'), 'k1x'), 'key with a suffix');
  is401(await request('POST', d.base + CHAT, { body: chatBody('basic'), headers: { authorization: 'Basic azE6' } }),
    'Basic scheme');
  is401(await request('POST', d.base + CHAT, { body: chatBody('bare'), headers: { authorization: 'k1' } }),
    'key without Bearer');
  assert.deepEqual((await healthz(d.base)).jobs, before);
  assert.equal((await mock.stats()).calls, 0);
});

test('each key sees only its own generations', async () => {
  const id = await submitOk(d.base, CHAT, chatBody('owned by k1'), 'k1');
  const g = await poll(d.base, id, { key: 'k1' });
  assert.equal(g.state, 'Success', g.stateMessage);
  assert.equal(g.response.choices[0].message.content, 'owned by k1');

  const other = await get(d.base, id, 'k2');
  assert.equal(other.status, 404, `k2 on k1's id: ${other.text}`);
  assert.equal(errorOf(other).code, 'generation_not_found');
  assert.ok(!other.text.includes('owned by k1'), 'nothing of it leaks');
  is401(await get(d.base, id), 'GET without a key');
  is401(await get(d.base, id, 'nope'), 'GET with a wrong key');

  const id2 = await submitOk(d.base, '/v1/async/completions', completionBody('owned by k2'), 'k2');
  assert.equal((await poll(d.base, id2, { key: 'k2' })).response.choices[0].text, 'owned by k2');
  assert.equal((await get(d.base, id2, 'k1')).status, 404, "k1 on k2's id");
  assert.equal((await get(d.base, id, 'k1')).status, 200, 'k1 still sees its own');
});

test('GET /v1/models needs a key', async () => {
  is401(await request('GET', d.base + '/v1/models'), 'models without a key');
  is401(await request('GET', d.base + '/v1/models', { key: 'bad' }), 'models with a wrong key');
  const r = await request('GET', d.base + '/v1/models', { key: 'k2' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.object, 'list');
});

test('SLOWLANE_API_KEYS=k3,k4 works the same way', async () => {
  const d2 = await startDaemon({ upstream: mock.url, env: { SLOWLANE_API_KEYS: 'k3,k4' } });
  try {
    is401(await submit(d2.base, CHAT, chatBody('env no key')), 'env: no key');
    is401(await submit(d2.base, CHAT, chatBody('env bad key'), 'k1'), 'env: a key of the other daemon');
    const id = await submitOk(d2.base, CHAT, chatBody('env k3'), 'k3');
    const g = await poll(d2.base, id, { key: 'k3' });
    assert.equal(g.state, 'Success');
    assert.equal(g.response.choices[0].message.content, 'env k3');
    assert.equal((await get(d2.base, id, 'k4')).status, 404, "k4 on k3's id");
    const id4 = await submitOk(d2.base, CHAT, chatBody('env k4'), 'k4');
    assert.equal((await poll(d2.base, id4, { key: 'k4' })).state, 'Success');
  } finally {
    await d2.kill9();
  }
});
