// Reader and checker of the log written by tests/torture/syncshim.so.
//
// The rule checked, for each id a client was answered with (job, group, file
// or batch id): let P be the first write to data.mdb whose bytes contain the
// id, and R the first socket send whose bytes contain it. Then the LMDB
// commit protocol must have completed between them:
//   P < S  a successful fsync/fdatasync of data.mdb after the pages,
//   S < M  a write of a meta page (offset < 2 pages) after that sync,
//   M durable: written through a descriptor opened O_DSYNC/O_SYNC, or an
//          fsync/fdatasync of data.mdb follows it,
//   and all of this before R.
// For a file id ("file-..."), its bytes too: the upload was fsynced, renamed
// to <data-dir>/files/<id>, and the directory fsynced after the rename, all
// before the answer.
// Or, for a submit acknowledged from the journal (docs/JOURNAL.md): let J be
// the first write to <data-dir>/journal whose bytes contain the id; a sync
// of the journal must follow J and precede R.
// Anything else is a violation: the answer could reach the client while a
// power loss would still lose the job.
import fs from 'node:fs';

const HDR = 32;
const META_END = 8192; // LMDB meta pages 0 and 1 (4 KiB pages here)

export function readSyncLog(file) {
  const d = fs.readFileSync(file);
  const ev = [];
  let i = 0;
  while (i + HDR <= d.length) {
    if (d.toString('latin1', i, i + 4) !== 'SYN1') throw new Error(`sync log: bad record at ${i}`);
    const kind = String.fromCharCode(d[i + 4]);
    const dsync = d[i + 5] === 1;
    const fd = d.readInt32LE(i + 8);
    const seq = Number(d.readBigUInt64LE(i + 12));
    const off = Number(d.readBigInt64LE(i + 20));
    const len = d.readUInt32LE(i + 28);
    ev.push({ kind, dsync, fd, seq, off, len, data: d.subarray(i + HDR, i + HDR + len) });
    i += HDR + len;
  }
  return ev;
}

// First event of `events` whose payload contains each id: Map id -> event.
// Job and group ids are time-ordered and share a prefix: jump from one
// occurrence of that prefix to the next (native indexOf) and look the
// candidate up, instead of one search per id and event. Other ids (file-,
// batch_) are few: searched one by one.
function firstContaining(events, ids) {
  const first = new Map();
  const fixed = ids.filter((id) => /^[A-Za-z0-9_-]{21}$/.test(id) && !id.startsWith('file-') && !id.startsWith('batch_'));
  const others = ids.filter((id) => !fixed.includes(id));
  let prefix = fixed[0] || '';
  for (const id of fixed) while (!id.startsWith(prefix)) prefix = prefix.slice(0, -1);
  const set = new Set(fixed);
  const useJump = prefix.length >= 2;
  for (const e of events) {
    if (useJump) {
      const needle = Buffer.from(prefix, 'latin1');
      for (let at = e.data.indexOf(needle); at >= 0; at = e.data.indexOf(needle, at + 1)) {
        const cand = e.data.toString('latin1', at, at + 21);
        if (set.has(cand) && !first.has(cand)) first.set(cand, e);
      }
    }
    for (const id of useJump ? others : ids)
      if (!first.has(id) && e.data.indexOf(Buffer.from(id, 'latin1')) >= 0) first.set(id, e);
  }
  return first;
}

// First element of a seq-sorted array with lo < seq < hi, or undefined.
function firstBetween(arr, lo, hi) {
  let a = 0;
  let b = arr.length;
  while (a < b) {
    const m = (a + b) >> 1;
    if (arr[m].seq <= lo) a = m + 1; else b = m;
  }
  return a < arr.length && arr[a].seq < hi ? arr[a] : undefined;
}

// ids: array of strings. Returns {checked, violations: [{id, why}], figures}.
export function checkSyncLog(ev, ids) {
  const writes = ev.filter((e) => e.kind === 'W');
  const sends = ev.filter((e) => e.kind === 'X');
  const syncs = ev.filter((e) => e.kind === 'S');
  const isMeta = (e) => e.off >= 0 && e.off < META_END && e.off + e.len <= META_END;
  const metas = writes.filter(isMeta);
  const dataWrites = writes.filter((e) => !isMeta(e));
  const renames = ev.filter((e) => e.kind === 'R');
  const fileSyncs = ev.filter((e) => e.kind === 'f');
  const journalWrites = ev.filter((e) => e.kind === 'J');
  const journalSyncs = ev.filter((e) => e.kind === 'K');
  const firstSend = firstContaining(sends, ids);
  const firstWrite = firstContaining(dataWrites, ids);
  const firstJournal = firstContaining(journalWrites, ids);
  const violations = [];
  let filesChecked = 0;
  let journaled = 0;
  for (const id of ids) {
    const r = firstSend.get(id);
    if (!r) { violations.push({ id, why: 'never sent (answer not seen in any send)' }); continue; }
    const j = firstJournal.get(id);
    if (j && j.seq < r.seq) {
      if (firstBetween(journalSyncs, j.seq, r.seq)) { journaled++; continue; }
      violations.push({ id, why: `journaled #${j.seq}, answer #${r.seq}, no sync of the journal between` });
      continue;
    }
    const p = firstWrite.get(id);
    if (!p || p.seq > r.seq) { violations.push({ id, why: `sent at #${r.seq} before any data.mdb write holding it` }); continue; }
    const s = firstBetween(syncs, p.seq, r.seq);
    if (!s) { violations.push({ id, why: `pages written #${p.seq}, answer #${r.seq}, no fdatasync/fsync of data.mdb between` }); continue; }
    const m = firstBetween(metas, s.seq, r.seq);
    if (!m) { violations.push({ id, why: `synced #${s.seq} but no meta page written before the answer #${r.seq}` }); continue; }
    if (!m.dsync && !firstBetween(syncs, m.seq, r.seq)) { violations.push({ id, why: `meta page #${m.seq} neither O_DSYNC nor synced before the answer #${r.seq}` }); continue; }
    if (id.startsWith('file-')) {
      const ren = renames.find((e) => e.seq < r.seq && e.data.toString('latin1').endsWith(`/files/${id}`));
      if (!ren) { violations.push({ id, why: `file bytes not renamed into files/${id} before the answer #${r.seq}` }); continue; }
      const from = ren.data.toString('latin1').split('\0')[0];
      if (!fileSyncs.some((e) => e.seq < ren.seq && e.data.toString('latin1') === from)) { violations.push({ id, why: `upload ${from} not fsynced before its rename #${ren.seq}` }); continue; }
      if (!fileSyncs.some((e) => e.seq > ren.seq && e.seq < r.seq && /\/files$/.test(e.data.toString('latin1')))) { violations.push({ id, why: `files directory not fsynced between the rename #${ren.seq} and the answer #${r.seq}` }); continue; }
      filesChecked++;
    }
  }
  return {
    checked: ids.length,
    violations,
    figures: {
      events: ev.length,
      data_writes: dataWrites.length,
      meta_writes: metas.length,
      meta_writes_dsync: metas.filter((e) => e.dsync).length,
      syncs: syncs.length,
      suppressed_syncs: ev.filter((e) => e.kind === 'N').length,
      sends: sends.length,
      file_syncs: fileSyncs.length,
      files_checked: filesChecked,
      journal_writes: journalWrites.length,
      journal_syncs: journalSyncs.length,
      journaled_checked: journaled,
    },
  };
}
