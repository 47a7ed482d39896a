// Submit and poll, end to end, on every submit path; the shapes of the
// immediate answer and of the generation object; custom_id correlation; what
// goes upstream; /healthz, /v1/models, and the built-in load-test backend.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import {
  startMock, startDaemon, submit, submitOk, get, poll, waitAll, healthz, request, sleep,
  chatBody, completionBody, errorOf, tmpDir, SLOWLANED, ID_RE, ISO_MS_RE,
} from './lib.mjs';

let mock;
let d;

before(async () => {
  mock = await startMock({ latency: 20 });
  d = await startDaemon({ upstream: mock.url, args: ['--upstream-key', 'upkey-flag'] });
});

const PATHS = [
  ['/v1/slow/chat/completions', 'chat'],
  ['/v1/slow/completions', 'text'],
  ['/v1/async/chat/completions', 'chat'],
  ['/v1/async/completions', 'text'],
];

function checkImmediate(r, body, kind, t0, t1) {
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers.get('content-type') || '', /application\/json/);
  const a = r.json;
  assert.deepEqual(Object.keys(a).sort(), ['choices', 'created', 'id', 'model', 'object']);
  assert.match(a.id, ID_RE);
  assert.deepEqual(a.choices, []);
  assert.equal(typeof a.created, 'number');
  assert.ok(Number.isInteger(a.created), 'created is an integer');
  // milliseconds, not seconds: within a few seconds of the client's clock
  assert.ok(a.created >= t0 - 5000 && a.created <= t1 + 5000,
    `created ${a.created} not within 5 s of [${t0}, ${t1}]`);
  assert.equal(a.model, body.model);
  assert.equal(a.object, kind === 'chat' ? 'chat.completion' : 'text_completion');
}

function checkTimes(g) {
  for (const k of ['createdAt', 'dispatchedAt', 'finishedAt'])
    assert.match(String(g[k]), ISO_MS_RE, `${k} = ${g[k]}`);
  const c = Date.parse(g.createdAt);
  const s = Date.parse(g.dispatchedAt);
  const f = Date.parse(g.finishedAt);
  assert.ok(c <= s && s <= f, `createdAt ${g.createdAt} <= dispatchedAt ${g.dispatchedAt} <= finishedAt ${g.finishedAt}`);
}

test('submit on all four paths, poll to Success, exact shapes', async () => {
  for (const [p, kind] of PATHS) {
    const text = `hello via ${p}`;
    const body = kind === 'chat'
      ? {
        model: 'mock-model',
        messages: [
          { role: 'system', content: 'be brief' },
          { role: 'user', content: 'an earlier question' },
          { role: 'assistant', content: 'an earlier answer' },
          { role: 'user', content: text },
        ],
        temperature: 0.25,
        max_tokens: 32,
        metadata: { custom_id: `path-${p}`, note: 'kept as given' },
      }
      : completionBody(text, { max_tokens: 16, metadata: { custom_id: `path-${p}` } });
    const t0 = Date.now();
    const r = await submit(d.base, p, body);
    const t1 = Date.now();
    checkImmediate(r, body, kind, t0, t1);
    const id = r.json.id;

    const g = await poll(d.base, id, { timeoutMs: 20000 });
    assert.equal(g.state, 'Success', `${p}: ${g.stateMessage}`);
    assert.equal(g.stateMessage, 'Generation successful');
    assert.equal(g.id, id);
    assert.deepEqual(g.request, body, 'request is the body as submitted, metadata included');
    assert.ok(g.response && typeof g.response === 'object', 'response is an object');
    if (kind === 'chat') {
      assert.equal(g.response.object, 'chat.completion');
      assert.equal(g.response.choices[0].message.content, text, 'echo of the last user message');
    } else {
      assert.equal(g.response.object, 'text_completion');
      assert.equal(g.response.choices[0].text, text, 'echo of the prompt');
    }
    checkTimes(g);
    const c = Date.parse(g.createdAt);
    assert.ok(Math.abs(c - r.json.created) <= 1000,
      `createdAt ${g.createdAt} matches created ${r.json.created}`);
  }
  const st = await mock.stats();
  for (const [p] of PATHS)
    assert.equal(st.by_echo[`hello via ${p}`], 1, `mock called once for ${p}`);
});

test('a generation still running: Queued or In Progress, response and finishedAt null', async () => {
  const text = 'slow one [mock:delay=1500]';
  const id = await submitOk(d.base, '/v1/slow/chat/completions', chatBody(text));
  const r = await get(d.base, id);
  assert.equal(r.status, 200, r.text);
  const g = r.json;
  assert.equal(g.id, id);
  assert.ok(['Queued', 'In Progress'].includes(g.state), `state ${g.state}`);
  assert.equal(typeof g.stateMessage, 'string');
  assert.equal(g.response, null);
  assert.ok(g.finishedAt === null || g.finishedAt === undefined, `finishedAt ${g.finishedAt}`);
  assert.match(g.createdAt, ISO_MS_RE);
  if (g.state === 'Queued')
    assert.ok(g.dispatchedAt === null || g.dispatchedAt === undefined, `dispatchedAt ${g.dispatchedAt}`);
  else
    assert.match(g.dispatchedAt, ISO_MS_RE);

  // it is In Progress for a while: the mock holds the call for 1.5 s
  const p = await poll(d.base, id, { until: ['In Progress', 'Success', 'Failed'], timeoutMs: 10000 });
  assert.equal(p.state, 'In Progress', 'seen In Progress while the upstream call runs');
  assert.equal(p.response, null);
  assert.match(p.dispatchedAt, ISO_MS_RE);

  const f = await poll(d.base, id, { timeoutMs: 20000 });
  assert.equal(f.state, 'Success', f.stateMessage);
  assert.equal(f.response.choices[0].message.content, text);
  checkTimes(f);
  assert.ok(Date.parse(f.finishedAt) - Date.parse(f.dispatchedAt) >= 1400,
    `finishedAt - dispatchedAt >= the mock's 1.5 s delay (${f.dispatchedAt} .. ${f.finishedAt})`);
});

test('metadata.custom_id correlates 20 concurrent requests; metadata is not sent upstream', async () => {
  await mock.reset();
  const n = 20;
  const items = Array.from({ length: n }, (_, i) => ({
    custom: `corr-${i}-${Math.random().toString(36).slice(2, 8)}`,
    text: `correlate me ${i}`,
  }));
  const ids = await Promise.all(items.map((it, i) => submitOk(d.base,
    i % 2 ? '/v1/async/chat/completions' : '/v1/slow/chat/completions',
    chatBody(it.text, { metadata: { custom_id: it.custom } }))));
  assert.equal(new Set(ids).size, n, 'distinct ids');
  const gens = await waitAll(d.base, ids, { timeoutMs: 30000 });
  ids.forEach((id, i) => {
    const g = gens.get(id);
    assert.equal(g.state, 'Success', g.stateMessage);
    assert.equal(g.request.metadata.custom_id, items[i].custom);
    assert.equal(g.response.choices[0].message.content, items[i].text);
  });
  const st = await mock.stats();
  assert.equal(st.calls, n, 'one upstream call each');
  assert.equal(st.with_metadata, 0, 'no upstream call carried metadata');
});

test('unicode, content parts, prompt arrays and a 3 MB answer come back intact', async () => {
  const uni = 'h\u00e9llo \u2713 "quoted" \\ back\nslash \u{1F600} \u4e2d\u6587';
  const big = 'big answer [mock:big=3000000]';
  const ids = await Promise.all([
    submitOk(d.base, '/v1/slow/chat/completions', chatBody(uni, { metadata: { custom_id: uni } })),
    submitOk(d.base, '/v1/slow/chat/completions', chatBody(big)),
    submitOk(d.base, '/v1/slow/chat/completions', {
      model: 'mock-model',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'part A' }, { type: 'text', text: ' part B' }] }],
    }),
    submitOk(d.base, '/v1/async/completions', completionBody(['first prompt', 'second prompt'])),
  ]);
  const gens = await waitAll(d.base, ids, { timeoutMs: 30000 });
  const [u, b, parts, arr] = ids.map((id) => gens.get(id));
  for (const g of [u, b, parts, arr]) assert.equal(g.state, 'Success', g.stateMessage);
  assert.equal(u.response.choices[0].message.content, uni);
  assert.equal(u.request.messages[0].content, uni);
  assert.equal(u.request.metadata.custom_id, uni);
  assert.equal(b.response.choices[0].message.content, big);
  assert.equal(b.response.pad.length, 3000000, 'the whole 3 MB answer is kept');
  assert.equal(parts.response.choices[0].message.content, 'part A part B');
  assert.deepEqual(parts.request.messages[0].content[1], { type: 'text', text: ' part B' });
  assert.deepEqual(arr.request.prompt, ['first prompt', 'second prompt']);
  assert.equal(arr.response.choices[0].text, 'first prompt');
});

test('--upstream-key reaches the upstream as a Bearer token', async () => {
  await mock.reset();
  const id = await submitOk(d.base, '/v1/slow/chat/completions', chatBody('key check flag'));
  assert.equal((await poll(d.base, id)).state, 'Success');
  assert.equal((await mock.stats()).last_authorization, 'Bearer upkey-flag');
});

test('SLOWLANE_UPSTREAM_KEY in the environment works too', async () => {
  const m2 = await startMock();
  const d2 = await startDaemon({ upstream: m2.url, env: { SLOWLANE_UPSTREAM_KEY: 'upkey-env' } });
  try {
    const id = await submitOk(d2.base, '/v1/slow/completions', completionBody('key check env'));
    assert.equal((await poll(d2.base, id)).state, 'Success');
    assert.equal((await m2.stats()).last_authorization, 'Bearer upkey-env');
  } finally {
    await d2.kill9();
    await m2.stop();
  }
});

test('an unknown id is 404 with an OpenAI error object', async () => {
  for (const id of ['AAAAAAAAAAAAAAAAAAAAA', 'nope', 'x'.repeat(200)]) {
    const r = await get(d.base, id);
    assert.equal(r.status, 404, `${id}: ${r.text}`);
    const e = errorOf(r);
    assert.equal(typeof e.message, 'string');
    assert.ok(e.message.length > 0);
    for (const k of ['type', 'param', 'code']) assert.ok(k in e, `error.${k} present`);
    assert.equal(e.code, 'generation_not_found');
  }
});

test('GET /healthz is 200 with job counts', async () => {
  const r = await request('GET', d.base + '/healthz');
  assert.equal(r.status, 200);
  assert.equal(r.json.status, 'ok');
  for (const k of ['queued', 'in_progress', 'success', 'failed'])
    assert.ok(Number.isInteger(r.json.jobs[k]), `jobs.${k}`);
  const id = await submitOk(d.base, '/v1/async/completions', completionBody('count me'));
  assert.equal((await poll(d.base, id)).state, 'Success');
  const h = await healthz(d.base);
  assert.equal(h.jobs.success, r.json.jobs.success + 1, 'the success count moved by one');
  assert.equal(h.jobs.failed, r.json.jobs.failed);
});

// Parses the Prometheus text format: every sample line is name{labels} value,
// and every metric has its HELP and TYPE before its samples.
function parseMetrics(text) {
  const m = new Map();
  const described = new Set();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const c = line.match(/^# (HELP|TYPE) ([a-z_]+) (.+)$/);
    if (c) {
      if (c[1] === 'TYPE') assert.match(c[3], /^(gauge|counter)$/, line);
      described.add(`${c[1]} ${c[2]}`);
      continue;
    }
    const s = line.match(/^([a-z_]+)(\{[a-z_]+="[a-z_]+"\})? (\d+)$/);
    assert.ok(s, `a sample line: ${line}`);
    assert.ok(described.has(`HELP ${s[1]}`) && described.has(`TYPE ${s[1]}`), `${s[1]} has HELP and TYPE first`);
    m.set(s[1] + (s[2] || ''), Number(s[3]));
  }
  return m;
}

test('GET /metrics: the Prometheus text format, and its figures follow the work', async () => {
  const r0 = await request('GET', d.base + '/metrics');
  assert.equal(r0.status, 200, r0.text);
  assert.match(r0.headers.get('content-type') || '', /^text\/plain; version=0\.0\.4/);
  const m0 = parseMetrics(r0.text);
  for (const k of ['slowlane_jobs{state="queued"}', 'slowlane_jobs{state="success"}',
    'slowlane_jobs_submitted_total', 'slowlane_calls_started_total', 'slowlane_calls_ended_total{outcome="success"}',
    'slowlane_store_commits_total', 'slowlane_store_used_bytes', 'slowlane_store_map_bytes',
    'slowlane_calls_in_flight'])
    assert.ok(m0.has(k), `${k} is there`);
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push(await submitOk(d.base, '/v1/slow/chat/completions', chatBody(`metric ${i}`)));
  for (const id of ids) assert.equal((await poll(d.base, id)).state, 'Success');
  const m1 = parseMetrics((await request('GET', d.base + '/metrics')).text);
  assert.equal(m1.get('slowlane_jobs_submitted_total') - m0.get('slowlane_jobs_submitted_total'), 3, 'three submits counted');
  assert.equal(m1.get('slowlane_jobs{state="success"}') - m0.get('slowlane_jobs{state="success"}'), 3,
    'three more jobs in Success');
  assert.ok(m1.get('slowlane_calls_ended_total{outcome="success"}') - m0.get('slowlane_calls_ended_total{outcome="success"}') >= 3,
    'their calls counted');
  assert.ok(m1.get('slowlane_store_commits_total') > m0.get('slowlane_store_commits_total'), 'commits counted');
  assert.ok(m1.get('slowlane_store_used_bytes') <= m1.get('slowlane_store_map_bytes'), 'used within the map');
  assert.equal(m1.get('slowlane_webhook_outbox'), 0, 'no webhook events here');
  assert.equal(m1.get('slowlane_batches_active'), 0, 'no batches here');
  const h = await healthz(d.base);
  assert.equal(m1.get('slowlane_jobs{state="success"}'), h.jobs.success, '/metrics and /healthz agree');
});

test('--model restricts and lists the models; another model is 404 model_not_found', async () => {
  const m2 = await startMock();
  const d2 = await startDaemon({ upstream: m2.url, args: ['--model', 'model-a', '--model', 'model-b'] });
  try {
    const r = await request('GET', d2.base + '/v1/models');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'list');
    assert.deepEqual(r.json.data.map((m) => m.id).sort(), ['model-a', 'model-b']);
    for (const m of r.json.data) assert.equal(m.object, 'model');

    const ok = await submitOk(d2.base, '/v1/slow/chat/completions', { ...chatBody('for model b'), model: 'model-b' });
    const g = await poll(d2.base, ok);
    assert.equal(g.state, 'Success', g.stateMessage);
    assert.equal(g.response.choices[0].message.content, 'for model b');

    const before = (await healthz(d2.base)).jobs;
    for (const p of ['/v1/slow/chat/completions', '/v1/async/completions']) {
      const body = p.endsWith('chat/completions') ? chatBody('x') : completionBody('x');
      const bad = await submit(d2.base, p, { ...body, model: 'model-c' });
      assert.equal(bad.status, 404, bad.text);
      assert.equal(errorOf(bad).code, 'model_not_found');
    }
    assert.deepEqual((await healthz(d2.base)).jobs, before, 'nothing stored');
    assert.equal((await m2.stats()).calls, 1);
  } finally {
    await d2.kill9();
    await m2.stop();
  }
});

test('--concurrency caps the upstream calls in flight', async () => {
  const m2 = await startMock({ latency: 400 });
  const d2 = await startDaemon({ upstream: m2.url, args: ['--concurrency', '3'] });
  try {
    const ids = await Promise.all(Array.from({ length: 12 }, (_, i) =>
      submitOk(d2.base, '/v1/slow/chat/completions', chatBody(`capped ${i}`))));
    let max = 0;
    let done = false;
    const sampler = (async () => {
      while (!done) {
        max = Math.max(max, (await m2.stats()).in_flight);
        await sleep(20);
      }
    })();
    const gens = await waitAll(d2.base, ids, { timeoutMs: 30000 });
    done = true;
    await sampler;
    ids.forEach((id, i) => assert.equal(gens.get(id).response.choices[0].message.content, `capped ${i}`));
    assert.ok(max <= 3, `at most 3 calls in flight, saw ${max}`);
    assert.equal(max, 3, 'the 3 slots were used');
    assert.equal((await m2.stats()).calls, 12);
  } finally {
    await d2.kill9();
    await m2.stop();
  }
});

test('without --upstream the built-in load-test backend echoes the last user message', async () => {
  const d3 = await startDaemon({ args: ['--load-test-delay', '10ms'] });
  try {
    const body = {
      model: 'load-test',
      messages: [
        { role: 'system', content: 'sys' },
        { role: 'user', content: 'first' },
        { role: 'assistant', content: 'reply' },
        { role: 'user', content: 'echo this back' },
      ],
      metadata: { custom_id: 'lt-1' },
    };
    const t0 = Date.now();
    const r = await submit(d3.base, '/v1/slow/chat/completions', body);
    checkImmediate(r, body, 'chat', t0, Date.now());
    const g = await poll(d3.base, r.json.id, { timeoutMs: 15000 });
    assert.equal(g.state, 'Success', g.stateMessage);
    assert.equal(g.response.choices[0].message.content, 'echo this back');
    assert.deepEqual(g.request, body);
    checkTimes(g);
    const m = await request('GET', d3.base + '/v1/models');
    assert.equal(m.status, 200);
    assert.ok(m.json.data.length >= 1, 'load-test mode lists a model');

    // many at once complete quickly with a 10 ms answer time
    const ids = await Promise.all(Array.from({ length: 30 }, (_, i) =>
      submitOk(d3.base, '/v1/async/chat/completions', chatBody(`lt ${i}`))));
    const gens = await waitAll(d3.base, ids, { timeoutMs: 20000 });
    ids.forEach((id, i) => assert.equal(gens.get(id).response.choices[0].message.content, `lt ${i}`));
    assert.match(d3.log(), /to use a real server: slowlaned --upstream http:\/\/127\.0\.0\.1:8000\/v1/,
      'the start-up line says how to point slowlaned at a real server');
  } finally {
    await d3.kill9();
  }
});

test('--help and --version exit 0; --config sets options; a bad option or config line exits 2 naming it', async () => {
  const help = spawnSync(SLOWLANED, ['--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0, help.stderr);
  for (const flag of ['--listen', '--data-dir', '--upstream', '--api-key', '--concurrency', '--job-ttl', '--config'])
    assert.ok(help.stdout.includes(flag), `--help lists ${flag}`);
  const ver = spawnSync(SLOWLANED, ['--version'], { encoding: 'utf8' });
  assert.equal(ver.status, 0);
  assert.match(ver.stdout, /^slowlaned \d+\.\d+\.\d+/);
  const bad = spawnSync(SLOWLANED, ['--no-such-flag'], { encoding: 'utf8' });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /no-such-flag/);

  const dir = tmpDir('config');
  const cfg = path.join(dir, 'slowlaned.conf');
  fs.writeFileSync(cfg, '# a comment\nmodel = cfg-only-model\nmax-body = 2KiB\n');
  const d5 = await startDaemon({ args: ['--config', cfg] });
  try {
    const m = await request('GET', d5.base + '/v1/models');
    assert.deepEqual(m.json.data.map((x) => x.id), ['cfg-only-model'], 'model from the config file');
    const big = await submit(d5.base, '/v1/slow/chat/completions', chatBody('x'.repeat(4000), { model: 'cfg-only-model' }));
    assert.equal(big.status, 413, 'max-body from the config file');
  } finally {
    await d5.kill9();
  }
  fs.writeFileSync(cfg, 'concurrency = lots\n');
  const r = spawnSync(SLOWLANED, ['--config', cfg, '--data-dir', path.join(dir, 'data')], { encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /concurrency/);
});

test('--upstream is a base URL: /v1/slow/chat/completions goes to <upstream>/chat/completions, /completions to <upstream>/completions', async () => {
  const seen = [];
  const srv = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, body });
      const chat = req.url.endsWith('/chat/completions');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(chat
        ? { id: 'c1', object: 'chat.completion', created: 1, model: body.model,
          choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }] }
        : { id: 't1', object: 'text_completion', created: 1, model: body.model,
          choices: [{ index: 0, text: 'ok', finish_reason: 'stop' }] }));
    });
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${srv.address().port}/custom/prefix/v1`;
  const d6 = await startDaemon({ upstream: base, args: ['--upstream-key', 'up-secret'] });
  try {
    const a = await submitOk(d6.base, '/v1/slow/chat/completions', chatBody('to chat', { metadata: { custom_id: 'm1' } }));
    const b = await submitOk(d6.base, '/v1/async/completions', completionBody('to text'));
    const gens = await waitAll(d6.base, [a, b], { timeoutMs: 15000 });
    assert.equal(gens.get(a).state, 'Success', gens.get(a).stateMessage);
    assert.equal(gens.get(b).state, 'Success', gens.get(b).stateMessage);
    assert.deepEqual(seen.map((x) => `${x.method} ${x.url}`).sort(),
      ['POST /custom/prefix/v1/chat/completions', 'POST /custom/prefix/v1/completions']);
    for (const x of seen) {
      assert.equal(x.auth, 'Bearer up-secret');
      assert.ok(!('metadata' in x.body), 'metadata is not sent upstream');
    }
  } finally {
    await d6.kill9();
    srv.close();
  }
});

