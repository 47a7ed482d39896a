// A test webhook receiver for slowlane's webhook tests.
//
// startReceiver(opts) listens on 127.0.0.1 (port 0), verifies every delivery's
// Standard Webhooks signature, answers it, and records it. opts:
//   failFirst   N: answer `failStatus` to the first N deliveries (default 0)
//   perEvent    true: count failFirst per event id (webhook-id header) instead
//               of over all deliveries (default false)
//   failStatus  status of those failures (default 500)
//   status      status of the other answers (default 200)
//   secret      'whsec_...' to verify with (can be set later: r.secret = s);
//               r.secrets[webhookId] = s overrides it for one webhook, chosen
//               by the X-Inference-Webhook-ID header
//   respond     optional (delivery) => status | {status, headers, body} |
//               {hang: true}: takes precedence over all of the above when it
//               returns a value; hang never answers (status recorded as 0,
//               the connection stays open until the sender gives up or
//               r.close())
//
// Every delivery is recorded (r.deliveries, in arrival order) as
//   {seq, at, method, path, headers (lower-case names), raw (string),
//    rawBuffer, body (parsed JSON or null), eventId, eventType, timestamp,
//    signatures, verified, verifyError, status (what we answered)}
// `status` is set before the answer is written, so a delivery seen by a waiter
// is complete.
//
// The server is closed by r.close() or by a node:test `after` hook of the test
// file, and it never keeps the process alive on its own.

import http from 'node:http';
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import { after } from 'node:test';

// Standard Webhooks verification. Returns null when one of the signatures in
// `sigHeader` is the HMAC of `${id}.${ts}.${raw}` under `secret`, else why not.
export function verifySignature(secret, id, ts, raw, sigHeader) {
  if (typeof secret !== 'string' || !secret.startsWith('whsec_'))
    return `no usable secret (${secret === undefined ? 'none set' : 'not whsec_...'})`;
  if (!id) return 'no webhook-id header';
  if (!ts) return 'no webhook-timestamp header';
  if (!/^\d+$/.test(ts)) return `webhook-timestamp is not unix seconds: ${ts}`;
  if (!sigHeader) return 'no webhook-signature header';
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  if (!key.length) return 'secret decodes to nothing';
  const expected = crypto.createHmac('sha256', key)
    .update(`${id}.${ts}.`).update(Buffer.isBuffer(raw) ? raw : Buffer.from(raw, 'utf8'))
    .digest();
  for (const part of sigHeader.split(' ')) {
    if (!part.startsWith('v1,')) continue;
    const got = Buffer.from(part.slice(3), 'base64');
    if (got.length === expected.length && crypto.timingSafeEqual(got, expected))
      return null;
  }
  return `no v1 signature matches (header: ${sigHeader})`;
}

// Every receiver still open is closed when the test file ends.
const open = new Set();
after(async () => { await Promise.all([...open].map((r) => r.close())); });

export function isAccepted(dl) {
  return dl.status >= 200 && dl.status < 300;
}

export async function startReceiver(opts = {}) {
  const {
    failFirst = 0, perEvent = false, failStatus = 500, status = 200,
  } = opts;
  const emitter = new EventEmitter();
  emitter.setMaxListeners(0);
  const deliveries = [];
  const perEventCount = new Map();
  const sockets = new Set();
  let closed = false;

  const r = {
    url: '',
    port: 0,
    secret: opts.secret,
    secrets: {},
    failFirst,
    perEvent,
    failStatus,
    status,
    respond: opts.respond || null,
    deliveries,

    // Deliveries (optionally filtered) / the accepted ones / grouped by event id.
    all(pred = () => true) { return deliveries.filter(pred); },
    accepted(pred = () => true) { return deliveries.filter((d) => isAccepted(d) && pred(d)); },
    byEvent(pred = () => true) {
      const m = new Map();
      for (const d of deliveries) {
        if (!pred(d)) continue;
        if (!m.has(d.eventId)) m.set(d.eventId, []);
        m.get(d.eventId).push(d);
      }
      return m;
    },

    // Resolves with the deliveries matching `pred` once there are at least
    // `count` of them; rejects after timeoutMs with what was seen.
    waitFor(pred = () => true, { count = 1, timeoutMs = 20000, what = 'deliveries' } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const got = deliveries.filter(pred);
          if (got.length >= count) {
            cleanup();
            resolve(got);
            return true;
          }
          return false;
        };
        const onDelivery = () => { check(); };
        const timer = setTimeout(() => {
          cleanup();
          const got = deliveries.filter(pred).length;
          reject(new Error(`receiver: ${got} of ${count} ${what} within ${timeoutMs} ms; ` +
            `${deliveries.length} deliveries in all: ${r.summary()}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          emitter.off('delivery', onDelivery);
        };
        emitter.on('delivery', onDelivery);
        check();
      });
    },
    // Waits until `count` accepted deliveries match `pred`.
    waitAccepted(pred = () => true, opts2 = {}) {
      return r.waitFor((d) => isAccepted(d) && pred(d), { what: 'accepted deliveries', ...opts2 });
    },
    // Waits until one event (by webhook-id) has an accepted delivery.
    waitEvent(eventId, opts2 = {}) {
      return r.waitAccepted((d) => d.eventId === eventId, { what: `accepted deliveries of ${eventId}`, ...opts2 });
    },

    summary(max = 30) {
      const s = deliveries.slice(-max).map((d) =>
        `#${d.seq} ${d.eventType || '?'} ${d.eventId || '?'} -> ${d.status}${d.verified ? '' : ' (unverified)'}`);
      return (deliveries.length > max ? '... ' : '') + (s.join('; ') || '(none)');
    },

    reset() {
      deliveries.length = 0;
      perEventCount.clear();
    },

    async close() {
      if (closed) return;
      closed = true;
      open.delete(r);
      await new Promise((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        if (server.closeAllConnections) server.closeAllConnections();
      });
    },
  };

  function decide(dl) {
    if (r.respond) {
      const v = r.respond(dl);
      if (v !== undefined && v !== null)
        return typeof v === 'number' ? { status: v } : v;
    }
    let n;
    if (r.perEvent) {
      n = perEventCount.get(dl.eventId) || 0;
      perEventCount.set(dl.eventId, n + 1);
    } else {
      n = perEventCount.get('*') || 0;
      perEventCount.set('*', n + 1);
    }
    return { status: n < r.failFirst ? r.failStatus : r.status };
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      const rawBuffer = Buffer.concat(chunks);
      const raw = rawBuffer.toString('utf8');
      let body = null;
      try { body = JSON.parse(raw); } catch { /* not JSON */ }
      const h = req.headers; // node lower-cases the names
      const webhookId = h['x-inference-webhook-id'];
      const secret = (webhookId && r.secrets[webhookId]) || r.secret;
      const verifyError = verifySignature(secret, h['webhook-id'], h['webhook-timestamp'], rawBuffer,
        h['webhook-signature']);
      const dl = {
        seq: deliveries.length + 1,
        at: Date.now(),
        method: req.method,
        path: req.url,
        headers: { ...h },
        raw,
        rawBuffer,
        body,
        eventId: h['webhook-id'] || null,
        eventType: h['x-inference-event'] || (body && body.event) || null,
        timestamp: h['webhook-timestamp'] || null,
        signatures: h['webhook-signature'] || null,
        verified: verifyError === null,
        verifyError,
        status: 0,
      };
      const ans = decide(dl);
      if (ans.hang) {
        dl.status = 0;
        dl.hung = true;
        deliveries.push(dl);
        emitter.emit('delivery', dl);
        return;
      }
      dl.status = ans.status;
      deliveries.push(dl);
      const out = ans.body !== undefined ? ans.body : JSON.stringify({ received: true });
      res.writeHead(ans.status, { 'content-type': 'application/json', ...(ans.headers || {}) });
      res.end(out);
      emitter.emit('delivery', dl);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  server.unref();
  r.port = server.address().port;
  r.url = `http://127.0.0.1:${r.port}/hook`;
  r.origin = `http://127.0.0.1:${r.port}`;
  open.add(r);
  return r;
}
