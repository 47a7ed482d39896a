// The Group API (API.md section 2) as the sample client
// async-with-group/async_polling_example.py uses it: submit 50 chat requests
// with custom_ids in one group, poll the group until no member is Queued or
// In Progress, correlate by request.metadata.custom_id. Completions groups and
// the /v1/slow/group prefix; the 400s (51 requests, an empty list, one invalid
// member) store nothing; a key only sees its own groups.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submit, get, request, healthz, sleep, chatBody, completionBody,
  errorOf, ID_RE, ISO_MS_RE, TIME_SCALE,
} from '../func/lib.mjs';

const K1 = 'k1-group-test-key';
const K2 = 'k2-group-test-key';
const STATES = ['Queued', 'In Progress', 'Success', 'Failed'];

let mock;
let d;

before(async () => {
  mock = await startMock({ latency: 30, jitter: 20 });
  d = await startDaemon({ upstream: mock.url, args: ['--api-key', K1, '--api-key', K2] });
});

const cid = (i) => `req-${String(i).padStart(3, '0')}`;

function getGroup(base, prefix, groupId, key = K1) {
  return request('GET', `${base}${prefix}/group/${encodeURIComponent(groupId)}/generations`, { key });
}

// Polls a group like the sample client: until no member is Queued or In
// Progress. Checks the shape of every answer on the way. Returns the last one.
async function pollGroup(base, prefix, groupId, size, { key = K1, timeoutMs = 30000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  const seenCounts = [];
  for (;;) {
    const r = await getGroup(base, prefix, groupId, key);
    assert.equal(r.status, 200, `GET group ${groupId}: ${r.text.slice(0, 300)}`);
    const g = r.json;
    assert.equal(g.groupId, groupId);
    assert.ok(Array.isArray(g.generations), 'generations is an array');
    assert.equal(g.generations.length, size, 'every member is listed');
    if (g.groupSize !== undefined) assert.equal(g.groupSize, size);
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const gen of g.generations) {
      assert.ok(STATES.includes(gen.state), `state ${JSON.stringify(gen.state)}`);
      counts[gen.state]++;
    }
    seenCounts.push(counts);
    if (counts.Queued + counts['In Progress'] === 0) return { group: g, seenCounts };
    if (Date.now() > deadline)
      throw new Error(`group ${groupId} not finished after ${timeoutMs} ms: ${JSON.stringify(counts)}`);
    await sleep(100);
  }
}

function checkTimes(gen) {
  for (const k of ['createdAt', 'dispatchedAt', 'finishedAt'])
    assert.match(String(gen[k]), ISO_MS_RE, `${gen.id} ${k} = ${gen[k]}`);
  const c = Date.parse(gen.createdAt);
  const s = Date.parse(gen.dispatchedAt);
  const f = Date.parse(gen.finishedAt);
  assert.ok(c <= s && s <= f, `${gen.id}: createdAt <= dispatchedAt <= finishedAt`);
}

async function jobTotals() {
  const h = await healthz(d.base);
  assert.equal(h.status, 'ok');
  const j = h.jobs;
  for (const k of ['queued', 'in_progress', 'success', 'failed'])
    assert.equal(typeof j[k], 'number', `healthz jobs.${k}`);
  return j;
}

// Waits until nothing is queued or running, then returns the totals.
async function settledTotals(timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = await jobTotals();
    if (j.queued === 0 && j.in_progress === 0) return j;
    if (Date.now() > deadline) throw new Error(`jobs still pending: ${JSON.stringify(j)}`);
    await sleep(100);
  }
}

// Checks that a rejected submit stored nothing: job totals unchanged, and the
// mock never saw any of the group's messages.
async function assertNothingStored(before, texts) {
  await sleep(400);
  const after = await jobTotals();
  assert.deepEqual(after, before, 'healthz job totals unchanged');
  const st = await mock.stats();
  for (const t of texts)
    assert.equal(st.by_echo[t], undefined, `upstream never saw ${JSON.stringify(t)}`);
}

test('sample client flow: 50 chat requests in one group, polled to the end, correlated by custom_id', async () => {
  const before0 = await settledTotals();
  const tag = Math.random().toString(36).slice(2, 8);
  const texts = Array.from({ length: 50 }, (_, i) => `group ${tag} message ${i + 1}`);
  // a few members take longer, so the group is seen unfinished for a while
  const bodies = texts.map((t, i) => chatBody(i % 10 === 3 ? `${t} [mock:delay=600]` : t, {
    max_tokens: 16,
    metadata: { custom_id: cid(i + 1) },
  }));
  const r = await submit(d.base, '/v1/async/group/chat/completions', { requests: bodies }, K1);
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers.get('content-type') || '', /application\/json/);
  assert.deepEqual(Object.keys(r.json).sort(), ['groupId', 'groupSize']);
  assert.match(r.json.groupId, ID_RE);
  assert.equal(r.json.groupSize, 50);
  const groupId = r.json.groupId;

  // all 50 are stored by the time of the answer
  const early = await getGroup(d.base, '/v1/async', groupId);
  assert.equal(early.status, 200, early.text);
  assert.equal(early.json.generations.length, 50);

  const { group, seenCounts } = await pollGroup(d.base, '/v1/async', groupId, 50);
  assert.ok(seenCounts.length >= 2, 'the group was seen unfinished at least once');
  const ids = new Set();
  group.generations.forEach((gen, i) => {
    assert.match(gen.id, ID_RE);
    ids.add(gen.id);
    assert.equal(gen.state, 'Success', `${cid(i + 1)}: ${gen.stateMessage}`);
    assert.equal(typeof gen.stateMessage, 'string');
    assert.equal(gen.request.metadata.custom_id, cid(i + 1), `member ${i} in submission order`);
    assert.deepEqual(gen.request, bodies[i], 'request is the member as submitted');
    assert.equal(gen.response.object, 'chat.completion');
    assert.equal(gen.response.choices[0].message.content, bodies[i].messages[0].content,
      `${cid(i + 1)}: echo of its own message`);
    checkTimes(gen);
  });
  assert.equal(ids.size, 50, 'distinct generation ids');

  // correlate like the sample client: custom_id -> result
  const byCustom = new Map(group.generations.map((g) => [g.request.metadata.custom_id, g]));
  for (let i = 1; i <= 50; i++)
    assert.ok(byCustom.get(cid(i))?.response.choices[0].message.content.startsWith(texts[i - 1]));

  // every member is an ordinary generation too, equal to its group entry
  for (const gen of group.generations.slice(0, 5).concat(group.generations.slice(-2))) {
    const one = await get(d.base, gen.id, K1);
    assert.equal(one.status, 200, one.text);
    assert.deepEqual(one.json, gen);
  }

  // the same group through the /v1/slow prefix
  const slow = await getGroup(d.base, '/v1/slow', groupId);
  assert.equal(slow.status, 200, slow.text);
  assert.deepEqual(slow.json.generations, group.generations);

  const after = await settledTotals();
  assert.equal(after.success - before0.success, 50, 'exactly 50 more successes');
  assert.equal(after.failed, before0.failed);
});

test('completions groups and the chat group under /v1/slow', async () => {
  const cases = [
    ['/v1/async/group/completions', 'text', '/v1/slow'],
    ['/v1/slow/group/completions', 'text', '/v1/async'],
    ['/v1/slow/group/chat/completions', 'chat', '/v1/slow'],
  ];
  for (const [p, kind, getPrefix] of cases) {
    const n = 7;
    const bodies = Array.from({ length: n }, (_, i) => {
      const text = `${p} member ${i}`;
      const meta = { metadata: { custom_id: `${p}-${i}` } };
      return kind === 'chat' ? chatBody(text, meta) : completionBody(text, { max_tokens: 8, ...meta });
    });
    const r = await submit(d.base, p, { requests: bodies }, K1);
    assert.equal(r.status, 200, `${p}: ${r.text}`);
    assert.match(r.json.groupId, ID_RE);
    assert.equal(r.json.groupSize, n);
    const { group } = await pollGroup(d.base, getPrefix, r.json.groupId, n);
    group.generations.forEach((gen, i) => {
      assert.equal(gen.state, 'Success', `${p} #${i}: ${gen.stateMessage}`);
      assert.equal(gen.request.metadata.custom_id, `${p}-${i}`);
      assert.deepEqual(gen.request, bodies[i]);
      if (kind === 'chat') {
        assert.equal(gen.response.object, 'chat.completion');
        assert.equal(gen.response.choices[0].message.content, `${p} member ${i}`);
      } else {
        assert.equal(gen.response.object, 'text_completion');
        assert.equal(gen.response.choices[0].text, `${p} member ${i}`);
      }
      checkTimes(gen);
    });
  }
});

test('a group of one; a failed member is Failed while the others succeed', async () => {
  const one = await submit(d.base, '/v1/async/group/chat/completions',
    { requests: [chatBody('alone', { metadata: { custom_id: 'solo' } })] }, K1);
  assert.equal(one.status, 200, one.text);
  assert.equal(one.json.groupSize, 1);
  const { group: g1 } = await pollGroup(d.base, '/v1/async', one.json.groupId, 1);
  assert.equal(g1.generations[0].state, 'Success');

  const bodies = [
    chatBody('fine 0', { metadata: { custom_id: 'mix-0' } }),
    chatBody('refused [mock:status=400]', { metadata: { custom_id: 'mix-1' } }),
    chatBody('fine 2', { metadata: { custom_id: 'mix-2' } }),
  ];
  const r = await submit(d.base, '/v1/async/group/chat/completions', { requests: bodies }, K1);
  assert.equal(r.status, 200, r.text);
  const { group } = await pollGroup(d.base, '/v1/async', r.json.groupId, 3);
  assert.deepEqual(group.generations.map((g) => g.state), ['Success', 'Failed', 'Success']);
  assert.deepEqual(group.generations.map((g) => g.request.metadata.custom_id), ['mix-0', 'mix-1', 'mix-2']);
  assert.match(group.generations[1].stateMessage, /400/, 'stateMessage names the upstream status');
});

test('51 requests: 400 naming requests, nothing stored', async () => {
  const before0 = await settledTotals();
  const tag = Math.random().toString(36).slice(2, 8);
  const texts = Array.from({ length: 51 }, (_, i) => `too many ${tag} ${i}`);
  for (const p of ['/v1/async/group/chat/completions', '/v1/slow/group/chat/completions']) {
    const r = await submit(d.base, p,
      { requests: texts.map((t, i) => chatBody(t, { metadata: { custom_id: cid(i + 1) } })) }, K1);
    assert.equal(r.status, 400, `${p}: ${r.text}`);
    const e = errorOf(r);
    assert.equal(e.type, 'invalid_request_error');
    assert.equal(e.param, 'requests');
    assert.equal(e.code, 'too_many_requests');
    assert.match(e.message, /50/, 'the message names the limit');
  }
  const rc = await submit(d.base, '/v1/async/group/completions',
    { requests: texts.map((t) => completionBody(t)) }, K1);
  assert.equal(rc.status, 400, rc.text);
  assert.equal(errorOf(rc).code, 'too_many_requests');
  await assertNothingStored(before0, texts);
});

test('empty, missing or malformed requests: 400, nothing stored', async () => {
  const before0 = await settledTotals();
  const r = await submit(d.base, '/v1/async/group/chat/completions', { requests: [] }, K1);
  assert.equal(r.status, 400, r.text);
  const e = errorOf(r);
  assert.equal(e.param, 'requests');
  assert.equal(e.code, 'empty_array');

  for (const body of [{}, { requests: 'nope' }, { requests: { model: 'x' } }, [chatBody('x')], 'not json{']) {
    const rb = await submit(d.base, '/v1/async/group/chat/completions', body, K1);
    assert.equal(rb.status, 400, `${JSON.stringify(body)}: ${rb.status} ${rb.text}`);
    errorOf(rb);
  }
  await assertNothingStored(before0, []);
});

test('one invalid member: 400 naming its index, nothing of the group stored', async () => {
  const before0 = await settledTotals();
  const tag = Math.random().toString(36).slice(2, 8);
  const texts = Array.from({ length: 12 }, (_, i) => `invalid-group ${tag} ${i}`);
  const good = (i) => chatBody(texts[i], { metadata: { custom_id: cid(i + 1) } });

  // [replacement for member 7, expected param]
  const bad = [
    [{ model: 'mock-model', metadata: { custom_id: 'req-008' } }, 'requests[7].messages'],
    [{ model: 'mock-model', messages: 'hello' }, 'requests[7].messages'],
    [chatBody(texts[7], { stream: true }), 'requests[7].stream'],
  ];
  for (const [member, param] of bad) {
    const requests = texts.map((_, i) => (i === 7 ? member : good(i)));
    const r = await submit(d.base, '/v1/async/group/chat/completions', { requests }, K1);
    assert.equal(r.status, 400, `${JSON.stringify(member)}: ${r.text}`);
    const e = errorOf(r);
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, /^Invalid request at index 7 of 'requests': /, e.message);
    assert.equal(e.param, param);
  }

  // the first bad member is the one named
  const two = texts.map((_, i) => (i === 3 || i === 7 ? { model: 'mock-model' } : good(i)));
  const r2 = await submit(d.base, '/v1/async/group/chat/completions', { requests: two }, K1);
  assert.equal(r2.status, 400, r2.text);
  assert.match(errorOf(r2).message, /^Invalid request at index 3 of 'requests'/);

  // last member of a full group of 50
  const fifty = Array.from({ length: 50 }, (_, i) => (i === 49
    ? { model: 'mock-model', messages: [] } : chatBody(`${texts[0]} full ${i}`)));
  const r3 = await submit(d.base, '/v1/slow/group/chat/completions', { requests: fifty }, K1);
  assert.equal(r3.status, 400, r3.text);
  assert.match(errorOf(r3).message, /^Invalid request at index 49 of 'requests'/);
  assert.match(String(errorOf(r3).param), /^requests\[49\]/);

  // a completions group checks members as completions
  const comp = texts.map((t, i) => (i === 7 ? chatBody(t) : completionBody(t)));
  const r4 = await submit(d.base, '/v1/async/group/completions', { requests: comp }, K1);
  assert.equal(r4.status, 400, r4.text);
  assert.match(errorOf(r4).message, /^Invalid request at index 7 of 'requests'/);
  assert.match(String(errorOf(r4).param), /^requests\[7\]/);

  await assertNothingStored(before0, texts.concat(fifty.slice(0, 49).map((b) => b.messages[0].content)));
});

test('groups belong to their key: another key and no key are refused', async () => {
  const r = await submit(d.base, '/v1/async/group/chat/completions',
    { requests: [chatBody('k1 only a'), chatBody('k1 only b')] }, K1);
  assert.equal(r.status, 200, r.text);
  const groupId = r.json.groupId;
  const { group } = await pollGroup(d.base, '/v1/async', groupId, 2);

  for (const prefix of ['/v1/async', '/v1/slow']) {
    const other = await getGroup(d.base, prefix, groupId, K2);
    assert.equal(other.status, 404, `k2 GET ${prefix} group of k1: ${other.text}`);
    errorOf(other);
    assert.ok(!other.text.includes('k1 only'), 'nothing of the group leaks');
  }
  for (const gen of group.generations) {
    const one = await get(d.base, gen.id, K2);
    assert.equal(one.status, 404, `k2 GET member ${gen.id}`);
  }
  const none = await getGroup(d.base, '/v1/async', groupId, null);
  assert.equal(none.status, 401, none.text);
  assert.equal(errorOf(none).type, 'authentication_error');
  const wrong = await getGroup(d.base, '/v1/async', groupId, 'not-a-key');
  assert.equal(wrong.status, 401, wrong.text);

  const sub = await submit(d.base, '/v1/async/group/chat/completions', { requests: [chatBody('no key')] });
  assert.equal(sub.status, 401, sub.text);

  // k2 has its own groups, invisible to k1
  const r2 = await submit(d.base, '/v1/slow/group/completions', { requests: [completionBody('k2 own')] }, K2);
  assert.equal(r2.status, 200, r2.text);
  const { group: g2 } = await pollGroup(d.base, '/v1/slow', r2.json.groupId, 1, { key: K2 });
  assert.equal(g2.generations[0].response.choices[0].text, 'k2 own');
  assert.equal((await getGroup(d.base, '/v1/slow', r2.json.groupId, K1)).status, 404);

  // unknown ids
  for (const id of ['AAAAAAAAAAAAAAAAAAAAA', 'nope', groupId.slice(0, 20) + (groupId[20] === 'A' ? 'B' : 'A')]) {
    const u = await getGroup(d.base, '/v1/async', id, K1);
    assert.equal(u.status, 404, `unknown group ${id}: ${u.text}`);
    errorOf(u);
  }
  // a generation id is not a group id
  const asGroup = await getGroup(d.base, '/v1/async', group.generations[0].id, K1);
  assert.equal(asGroup.status, 404, asGroup.text);
});

test('a member that is not an object: 400 whose param and message name its index', async () => {
  const before0 = await settledTotals();
  const texts = Array.from({ length: 9 }, (_, i) => `non-object ${Math.random()} ${i}`);
  for (const member of ['just a string', 42, null, [chatBody('x')]]) {
    const requests = texts.map((t, i) => (i === 7 ? member : chatBody(t)));
    const r = await submit(d.base, '/v1/async/group/chat/completions', { requests }, K1);
    assert.equal(r.status, 400, `${JSON.stringify(member)}: ${r.text}`);
    const e = errorOf(r);
    assert.equal(e.type, 'invalid_request_error');
    assert.match(e.message, /index 7\b|requests\[7\]/, e.message);
    // like every other bad member (requests[7].messages), the param names the element
    assert.equal(e.param, 'requests[7]', `param of a non-object member at index 7 (${JSON.stringify(member)})`);
  }
  await assertNothingStored(before0, texts);
});

test('groups expire like single requests: members unfinished after --job-ttl end Failed (expired)', async () => {
  const slow = await startMock({ latency: 0 });
  const d2 = await startDaemon({ upstream: slow.url, args: ['--api-key', K1, '--job-ttl', '2s', '--concurrency', '2'] });
  try {
    // two members hang upstream past the ttl, the others wait behind them in the queue
    const requests = [0, 1, 2, 3].map((i) => chatBody(`expiring ${i} [mock:delay=60000]`, { metadata: { custom_id: cid(i) } }));
    const r = await submit(d2.base, '/v1/async/group/chat/completions', { requests }, K1);
    assert.equal(r.status, 200, r.text);
    const t0 = Date.now();
    const { group } = await pollGroup(d2.base, '/v1/async', r.json.groupId, 4, { timeoutMs: 15000 });
    const took = Date.now() - t0;
    for (const gen of group.generations) {
      assert.equal(gen.state, 'Failed', `${gen.request.metadata.custom_id}: ${gen.state}`);
      assert.match(gen.stateMessage, /expired/i);
      assert.equal(gen.response, null);
    }
    assert.ok(took < 6000 * TIME_SCALE, `the group ended ${took} ms after submit (ttl 2 s)`);
    assert.deepEqual(group.generations.map((g) => g.request.metadata.custom_id), [0, 1, 2, 3].map(cid));
  } finally {
    await d2.kill9();
    await slow.stop();
  }
});


test('a member is stored and answered byte for byte as submitted (0.7 stays 0.7)', async () => {
  const members = [
    '{"model": "mock-model", "temperature": 0.7, "top_p":1e-1,\n "messages": [{"role": "user", "content": "as sent \\u00e9"}], "metadata": {"custom_id": "raw-0"}}',
    '{"model":"mock-model","messages":[{"role":"user","content":"second"}],"max_tokens":16}',
  ];
  const r = await request('POST', `${d.base}/v1/async/group/chat/completions`,
    { key: K1, body: `{"requests": [${members.join(', ')}]}` });
  assert.equal(r.status, 200, r.text);
  const { group: g } = await pollGroup(d.base, '/v1/async', r.json.groupId, 2);
  assert.deepEqual(g.generations.map((x) => x.state), ['Success', 'Success']);
  const raw = (await getGroup(d.base, '/v1/async', r.json.groupId)).text;
  for (const m of members)
    assert.ok(raw.includes(`"request":${m}`), `member kept as sent: ${m}\nin ${raw.slice(0, 600)}`);
  const one = await request('GET', `${d.base}/v1/generation/${g.generations[0].id}`, { key: K1 });
  assert.ok(one.text.includes(`"request":${members[0]}`), one.text.slice(0, 400));
});

test('with --model, a member naming another model: 400 model_not_found naming the member, nothing stored', async () => {
  const d2 = await startDaemon({ upstream: mock.url, args: ['--api-key', K1, '--model', 'mock-model'] });
  try {
    const requests = [chatBody('served'), { ...chatBody('not served'), model: 'other-model' }];
    const r = await submit(d2.base, '/v1/async/group/chat/completions', { requests }, K1);
    assert.equal(r.status, 400, r.text);
    const e = errorOf(r);
    assert.equal(e.code, 'model_not_found');
    assert.equal(e.param, 'requests[1].model');
    assert.match(e.message, /^Invalid request at index 1 of 'requests': The model 'other-model' does not exist/);
    // A single submit of that model is the 404 of OpenAI's API.
    const s = await submit(d2.base, '/v1/async/chat/completions', requests[1], K1);
    assert.equal(s.status, 404, s.text);
    const h = await healthz(d2.base);
    assert.equal(h.jobs.queued + h.jobs.in_progress + h.jobs.success + h.jobs.failed, 0, 'nothing stored');
  } finally {
    await d2.kill9();
  }
});
