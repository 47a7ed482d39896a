// OPEN BUGS found by the torture suite and not fixed. Every test here asserts
// the RIGHT behaviour and FAILS against today's daemon; none is in
// TORTURE_TESTS, so `make check` stays green. Run it with
//   make check TESTS=tests/torture/open-bugs.mjs
// The one left is recorded as a known limit (docs/ARCHITECTURE.md, "Known
// limits"); it stays here as the executable statement of what a fix must
// do. The other bugs this suite found (slowloris headers never cut off,
// libcurl resending a POST behind the attempt count, daemon
// deaf after --max-connections, 100-continue before 413, no Host accepted,
// lone surrogates accepted, abort on a full disk, jobs stuck In Progress on a
// full map, retention unable to free a full map, slowlanectl growing a
// running daemon's map, empty data.mdb taken for a new store, check blind to
// checksums, Success served without its answer) are fixed; their tests moved
// into t2200-upstream-faults, t2300-abuse, t2400-full and t2500-corruption.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon } from '../func/lib.mjs';
import { rawHttp } from './tlib.mjs';

test('BUG 6: a NUL byte in a header value is refused with 400 (RFC 9110 sec. 5.5)', { timeout: 30000 }, async () => {
  const d = await startDaemon({});
  const r = await rawHttp(d.port, Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n', 'latin1'));
  assert.equal(r.status, 400, r.text.split('\r\n')[0]);
});
