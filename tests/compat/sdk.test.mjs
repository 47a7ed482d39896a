// Compatibility with the official `openai` npm SDK, used unchanged but for
// its base URL: create() against /v1/slow and /v1/async returns the id of a
// generation that then polls to Success. Needs `npm ci` in tests/compat.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { startMock, startDaemon, poll, ID_RE } from '../func/lib.mjs';

let OpenAI = null;
let loadError = null;
try {
  ({ default: OpenAI } = await import('openai'));
} catch (e) {
  loadError = e;
}

function sdk() {
  if (!OpenAI)
    assert.fail(`the openai SDK is not installed: run npm ci in tests/compat (${loadError?.message})`);
  return OpenAI;
}

let mock;
let d;

before(async () => {
  sdk();
  mock = await startMock({ latency: 10 });
  d = await startDaemon({ upstream: mock.url, args: ['--api-key', 'k1'] });
});

const client = (prefix, apiKey = 'k1') => {
  const C = sdk();
  return new C({ baseURL: d.base + prefix, apiKey, maxRetries: 0, timeout: 20000 });
};

for (const prefix of ['/v1/slow', '/v1/async']) {
  test(`chat.completions.create via ${prefix} returns an id that polls to Success`, async () => {
    const text = `sdk chat via ${prefix}`;
    const res = await client(prefix).chat.completions.create({
      model: 'mock-model',
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: text }],
      metadata: { custom_id: 'sdk-1' },
    });
    assert.match(res.id, ID_RE);
    assert.equal(res.object, 'chat.completion');
    assert.deepEqual(res.choices, []);
    assert.equal(res.model, 'mock-model');

    const g = await poll(d.base, res.id, { key: 'k1', timeoutMs: 20000 });
    assert.equal(g.state, 'Success', g.stateMessage);
    assert.equal(g.response.choices[0].message.content, text);
    assert.equal(g.request.metadata.custom_id, 'sdk-1');
  });

  test(`completions.create via ${prefix} returns an id that polls to Success`, async () => {
    const text = `sdk completion via ${prefix}`;
    const res = await client(prefix).completions.create({ model: 'mock-model', prompt: text, max_tokens: 8 });
    assert.match(res.id, ID_RE);
    assert.equal(res.object, 'text_completion');

    const g = await poll(d.base, res.id, { key: 'k1', timeoutMs: 20000 });
    assert.equal(g.state, 'Success', g.stateMessage);
    assert.equal(g.response.choices[0].text, text);
  });
}

test('a wrong key surfaces as the SDK AuthenticationError', async () => {
  const C = sdk();
  await assert.rejects(
    client('/v1/slow', 'wrong').chat.completions.create({
      model: 'mock-model', messages: [{ role: 'user', content: 'x' }],
    }),
    (e) => e instanceof C.AuthenticationError && e.status === 401,
  );
});

test('a bad request surfaces as the SDK BadRequestError', async () => {
  const C = sdk();
  await assert.rejects(
    client('/v1/slow').chat.completions.create({ model: 'mock-model', messages: [] }),
    (e) => e instanceof C.BadRequestError && e.status === 400 && e.param === 'messages',
  );
});
