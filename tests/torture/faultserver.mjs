// A tiny OpenAI-style upstream for faults tools/mock-upstream cannot make:
// a connection reset in the middle of the body, a body cut short, a
// connection dropped before any answer, and a slow trickle of bytes. The
// fault is chosen by a "[fault:NAME]" tag in the last user message; "once"
// variants misbehave on the first call of a message only. Every call is
// counted per message (calls.get(message)).
import http from 'node:http';

function reply(msg, model) {
  return JSON.stringify({
    id: `chatcmpl-fault-${Math.random().toString(36).slice(2)}`, object: 'chat.completion',
    created: Math.floor(Date.now() / 1000), model: model || 'mock-model',
    choices: [{ index: 0, message: { role: 'assistant', content: msg }, finish_reason: 'stop', logprobs: null }],
    usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
  });
}

export async function startFaultServer({ port = 0 } = {}) {
  const calls = new Map();
  const sockets = new Set();
  const timers = new Set();
  const later = (ms, fn) => { const t = setTimeout(() => { timers.delete(t); fn(); }, ms); timers.add(t); };
  const srv = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      let j = {};
      try { j = JSON.parse(body); } catch { /* keep {} */ }
      const msg = j.messages ? j.messages[j.messages.length - 1]?.content : j.prompt;
      const n = (calls.get(msg) || 0) + 1;
      calls.set(msg, n);
      const m = /\[fault:([a-z-]+)\]/.exec(String(msg));
      let fault = m ? m[1] : 'none';
      if (fault.endsWith('-once')) fault = n === 1 ? fault.slice(0, -5) : 'none';
      const full = reply(msg, j.model);
      const sock = req.socket;
      switch (fault) {
      case 'reset': // headers and half a body, then RST
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(full.length) });
        res.write(full.slice(0, full.length >> 1));
        later(50, () => sock.resetAndDestroy());
        return;
      case 'short': // Content-Length promises more than is sent, then FIN
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(full.length + 100) });
        res.write(full);
        later(50, () => sock.end());
        return;
      case 'drop': // no answer at all: close after reading the request
        sock.destroy();
        return;
      case 'trickle': { // a byte every 200 ms, forever (until the client gives up)
        res.writeHead(200, { 'content-type': 'application/json' });
        let i = 0;
        const tick = () => {
          if (sock.destroyed) return;
          res.write(full[i % full.length]);
          i++;
          later(200, tick);
        };
        tick();
        return;
      }
      case 'trickle-ok': { // the whole body in 10 pieces over ~1 s
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(full.length) });
        const step = Math.ceil(full.length / 10);
        let i = 0;
        const tick = () => {
          if (sock.destroyed) return;
          res.write(full.slice(i, i + step));
          i += step;
          if (i >= full.length) res.end();
          else later(100, tick);
        };
        tick();
        return;
      }
      default:
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(full.length) });
        res.end(full);
      }
    });
  });
  srv.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', resolve);
  });
  const p = srv.address().port;
  return {
    port: p,
    url: `http://127.0.0.1:${p}/v1`,
    calls,
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise((r) => srv.close(r));
    },
  };
}

// A port nothing listens on (bound, then released).
export async function freePort() {
  const net = await import('node:net');
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}
