// Webhook events are durable: they are written to the outbox in the same
// transaction as the state change, so a kill -9 of the daemon after a
// generation (or a group) has ended but before its delivery was accepted
// neither loses nor invents an event. The receiver refuses (500) everything
// before the crash, one delivery hangs unanswered when the daemon dies, and
// some generations are still running upstream; after the restart on the same
// data directory every generation and the group get exactly one event id, the
// same as before the crash where one was seen, delivered exactly once accepted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  startMock, startDaemon, submit, submitOk, get, waitAll, request, sleep, chatBody,
} from '../func/lib.mjs';
import { startReceiver, isAccepted } from './receiver.mjs';

const HOOK_FLAGS = ['--webhook-allow-http', '--webhook-allow-private', '--webhook-retry-base', '100ms'];
const QUIET_MS = 1500;
const DRAIN_MS = 300;

test('kill -9 between state change and accepted delivery: delivered after restart, same event id, once', { timeout: 55000 }, async () => {
  const mock = await startMock({ latency: 20 });
  const d = await startDaemon({ upstream: mock.url, args: HOOK_FLAGS });
  let accept = false;
  const rcv = await startReceiver({
    respond: (dl) => {
      if (accept) return 200;
      if (dl.body?.data?.request?.metadata?.custom_id === 'hang') return { hang: true };
      return 500;
    },
  });
  const reg = await request('POST', `${d.base}/v1/webhooks`, { body: { url: rcv.url } });
  assert.equal(reg.status, 200, reg.text);
  const wh = reg.json;
  rcv.secret = wh.secret;
  const meta = (custom) => ({ metadata: { custom_id: custom, webhook_id: wh.id } });

  // A: ended before the crash, deliveries refused
  const fast = [];
  for (let i = 0; i < 3; i++)
    fast.push(await submitOk(d.base, '/v1/slow/chat/completions', chatBody(`fast ${i}`, meta(`fast-${i}`))));
  // G: a group naming the webhook, ended before the crash
  const gr = await submit(d.base, '/v1/async/group/chat/completions', {
    requests: [0, 1, 2].map((i) => chatBody(`member ${i}`, { metadata: { custom_id: `m-${i}` } })),
    metadata: { webhook_id: wh.id },
  });
  assert.equal(gr.status, 200, gr.text);
  const groupId = gr.json.groupId;
  // H: ended before the crash, its delivery on the wire, unanswered, at the crash
  const hang = await submitOk(d.base, '/v1/async/chat/completions', chatBody('hang on', meta('hang')));
  // C: still running upstream at the crash
  const slow = [];
  for (let i = 0; i < 3; i++)
    slow.push(await submitOk(d.base, '/v1/slow/chat/completions',
      chatBody(`slow ${i} [mock:delay=5000]`, meta(`slow-${i}`))));

  const groupMembers = async (base) => {
    const r = await request('GET', `${base}/v1/async/group/${groupId}/generations`);
    assert.equal(r.status, 200, r.text);
    return r.json.generations;
  };
  const ended = await waitAll(d.base, [...fast, hang], { timeoutMs: 15000 });
  for (const g of ended.values()) assert.equal(g.state, 'Success', g.stateMessage);

  // wait until each ended one has been tried and refused at least once (the
  // hanging one: received, unanswered)
  const deliveredFor = (pred) => rcv.deliveries.filter(pred);
  const genOf = (x) => x.body?.generation_id;
  for (const id of fast)
    await rcv.waitFor((x) => genOf(x) === id && x.status === 500, { what: `refused deliveries of ${id}`, timeoutMs: 15000 });
  await rcv.waitFor((x) => x.body?.group_id === groupId && x.status === 500, { what: 'refused group deliveries', timeoutMs: 15000 });
  await rcv.waitFor((x) => genOf(x) === hang && x.hung, { what: 'the hanging delivery', timeoutMs: 15000 });
  for (const g of await groupMembers(d.base)) assert.equal(g.state, 'Success');
  for (const id of slow) {
    const g = (await get(d.base, id)).json;
    assert.ok(['Queued', 'In Progress'].includes(g.state), `${id} still running at the crash: ${g.state}`);
  }
  assert.equal(rcv.accepted().length, 0, 'nothing accepted before the crash');

  // the event id of every subject seen before the crash
  const before = new Map();
  for (const x of rcv.deliveries) {
    const subject = x.body?.generation_id || x.body?.group_id;
    assert.ok(subject, `delivery #${x.seq} names its subject`);
    if (before.has(subject)) assert.equal(before.get(subject), x.eventId, `${subject}: one event id across retries`);
    before.set(subject, x.eventId);
  }
  assert.equal(before.size, 5, `fast x3, group, hang seen before the crash: ${rcv.summary()}`);
  const nBefore = rcv.deliveries.length;

  // ---- the crash
  await d.kill9();
  // Requests the dead daemon wrote just before dying may still wait in our
  // sockets: they must meet the refusing receiver (else they would be
  // legitimately accepted, unrecorded, and sent again after the restart).
  await sleep(DRAIN_MS);
  accept = true;
  await d.restart();

  const all = [...fast, hang, ...slow];
  const done = await waitAll(() => d.base, all, { timeoutMs: 20000 });
  for (const [id, g] of done) assert.equal(g.state, 'Success', `${id}: ${g.stateMessage}`);

  // 3 fast + hang + 3 slow generations + 1 group = 8 events
  await rcv.waitAccepted(() => true, { count: 8, timeoutMs: 20000 });
  await sleep(QUIET_MS);

  const events = rcv.byEvent();
  const eventOfSubject = new Map();
  for (const [eid, list] of events) {
    const subjects = new Set(list.map((x) => x.body?.generation_id || x.body?.group_id));
    assert.equal(subjects.size, 1, `event ${eid} is about one subject`);
    const [subject] = subjects;
    assert.ok(!eventOfSubject.has(subject),
      `${subject} has one event id, not ${eventOfSubject.get(subject)} and ${eid}: ${rcv.summary()}`);
    eventOfSubject.set(subject, eid);
    const acc = list.filter(isAccepted);
    assert.equal(acc.length, 1, `event ${eid} (${subject}) accepted exactly once: ${list.map((x) => x.status)}`);
    assert.equal(list[list.length - 1], acc[0], `nothing sent after the accepted delivery of ${eid}`);
    for (const x of list) {
      assert.ok(x.verified, `delivery #${x.seq} verifies: ${x.verifyError}`);
      assert.equal(x.raw, list[0].raw, 'the same body on every attempt, before and after the crash');
    }
  }
  assert.deepEqual([...eventOfSubject.keys()].sort(), [...all, groupId].sort(),
    'one event per generation and one for the group, nothing invented');
  for (const [subject, eid] of before)
    assert.equal(eventOfSubject.get(subject), eid, `${subject}: same webhook-id after the restart`);
  assert.ok(rcv.deliveries.length > nBefore, 'deliveries after the restart');

  // what was accepted is the final state
  for (const id of all) {
    const acc = rcv.accepted((x) => x.body?.generation_id === id);
    assert.equal(acc[0].body.event, 'generation.completed');
    assert.equal(acc[0].body.data.state, 'Success');
    assert.deepEqual(acc[0].body.data, done.get(id));
    assert.ok(acc[0].at > 0);
  }
  const gacc = rcv.accepted((x) => x.body?.group_id === groupId);
  assert.equal(gacc[0].body.event, 'slow-group.completed');
  assert.equal(gacc[0].headers['x-inference-group-id'], groupId);
  assert.deepEqual(gacc[0].body.data.generations, await groupMembers(d.base));
  assert.deepEqual(deliveredFor((x) => x.eventType === 'slow-group.completed' && isAccepted(x)).length, 1);
});

test('kill -9 while 40 generations are ending: after restart one event each, none lost, none invented', { timeout: 55000 }, async () => {
  const mock = await startMock({ latency: 10 });
  const d = await startDaemon({ upstream: mock.url, args: HOOK_FLAGS });
  let accept = false;
  const rcv = await startReceiver({ respond: () => (accept ? 200 : 503) });
  const reg = await request('POST', `${d.base}/v1/webhooks`, { body: { url: rcv.url, events: ['generation.completed'] } });
  assert.equal(reg.status, 200, reg.text);
  rcv.secret = reg.json.secret;

  // endings spread over ~3 s; the kill lands in the middle of them
  const N = 40;
  const ids = [];
  for (let i = 0; i < N; i++)
    ids.push(await submitOk(d.base, '/v1/async/chat/completions',
      chatBody(`spread ${i} [mock:delay=${75 * i}]`, { metadata: { custom_id: `s-${i}`, webhook_id: reg.json.id } })));
  await rcv.waitFor(() => true, { count: 5, timeoutMs: 15000, what: 'refused deliveries' });
  await d.kill9();
  const tKill = Date.now();
  await sleep(DRAIN_MS); // see above
  const before = new Map();
  for (const x of rcv.deliveries) before.set(x.body.generation_id, x.eventId);
  assert.ok(before.size >= 1 && before.size < N, `some but not all events seen before the crash (${before.size})`);
  accept = true;
  await d.restart();

  const done = await waitAll(() => d.base, ids, { timeoutMs: 20000 });
  for (const [id, g] of done) assert.equal(g.state, 'Success', `${id}: ${g.stateMessage}`);
  await rcv.waitAccepted(() => true, { count: N, timeoutMs: 25000 });
  await sleep(QUIET_MS);

  const eventOf = new Map();
  for (const [eid, list] of rcv.byEvent()) {
    const gid = list[0].body.generation_id;
    assert.ok(list.every((x) => x.body.generation_id === gid && x.verified && x.raw === list[0].raw));
    assert.ok(!eventOf.has(gid), `${gid}: two event ids ${eventOf.get(gid)} and ${eid}`);
    eventOf.set(gid, eid);
    assert.equal(list.filter(isAccepted).length, 1, `${eid} accepted once: ${list.map((x) => `#${x.seq} ${x.status} at +${x.at - tKill} ms (ts ${x.timestamp})`)}`);
  }
  assert.deepEqual([...eventOf.keys()].sort(), [...ids].sort(), 'one event per generation');
  for (const [gid, eid] of before) assert.equal(eventOf.get(gid), eid, `${gid}: same event id after restart`);
  for (const id of ids) {
    const [acc] = rcv.accepted((x) => x.body.generation_id === id);
    assert.deepEqual(acc.body.data, done.get(id));
  }
});
