/*
 * journal.h - the submit journal: records made durable by one contiguous
 * synced append, before LMDB has them (docs/JOURNAL.md).
 *
 * <data-dir>/journal is a file of JOURNAL_BYTES, zero-filled once, in two
 * halves. Each append writes its frames after the previous ones in the
 * current half and syncs; when they do not fit, writing moves to the start
 * of the other half once every frame there has been applied. A frame is
 * magic | len | seq | crc | pad | record, 8-byte aligned; seq grows by one
 * per frame for the life of the store (the caller keeps the last applied
 * seq in LMDB, in the transaction that applied it).
 *
 * Threads: journal_append from one thread at a time; journal_applied from
 * any thread. The module knows nothing of what a record means.
 */
#ifndef SLOWLANE_JOURNAL_H
#define SLOWLANE_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define JOURNAL_BYTES ((size_t)16 << 20)
#define JOURNAL_HALF (JOURNAL_BYTES / 2)
#define JOURNAL_FRAME_HEADER 24
/* A record bigger than this is not journaled (its op takes the direct path). */
#define JOURNAL_RECORD_MAX (JOURNAL_HALF / 8)

struct journal;

/* Called for each intact frame not yet applied, in seq order. Non-zero
 * stops the replay; journal_open then returns it. */
typedef int (*journal_replay_fn)(void *arg, uint64_t seq, const void *rec, size_t len);

/* Opens <dir>/journal, creating (and zero-filling) it if missing or short,
 * and calls cb for every intact frame with seq > applied, in seq order.
 * *last gets the highest seq seen (at least `applied`). Before the first
 * append the caller must make what was replayed durable, with `*last`
 * stored as its applied seq: appends start over at half 0.
 * The journal is locked (flock) until journal_close: -EBUSY, before any
 * replay, means another process has it open.
 * Returns 0, cb's non-zero result, or -errno. -ENOSPC means the replay
 * was done but the file could not be made full size (a small disk): make
 * the replay durable all the same, and run without a journal (*out is not
 * set). */
int journal_open(const char *dir, uint64_t applied, journal_replay_fn cb, void *arg,
    uint64_t *last, struct journal **out);

/* Whether <dir>/journal exists and no process holds it (nothing is read or
 * changed): 0; -EBUSY (a daemon has it open); -ENOENT (no journal); or
 * -errno. The answer may be stale at once; journal_open decides. */
int journal_probe(const char *dir);
/* The highest seq of an intact frame in <dir>/journal (0: none), read
 * without the lock, so while a daemon appends: a frame being written reads
 * as torn and ends its run. For readers that must see every acknowledged
 * submit: once the store's applied seq reaches it, they are all stored.
 * Returns 0 or -errno. */
int journal_last_seq(const char *dir, uint64_t *last);
/* Writes recs[0..n) as frames with consecutive seqs in one write and syncs
 * it; *first gets the seq of recs[0]. Waits while the half it must move to
 * still holds frames not applied. Returns 0; -E2BIG if the frames cannot fit
 * in one half (nothing written); -errno from the write or the sync: then
 * nothing may be acknowledged and the process should stop (a failed sync
 * cannot be retried safely). */
int journal_append(struct journal *j, const struct iovec *recs, size_t n, uint64_t *first);

/* Frames up to `seq` are in a synced store commit: their space may be
 * reused. */
void journal_applied(struct journal *j, uint64_t seq);

/* Bytes of frames for records of these lengths (what journal_append checks
 * against JOURNAL_HALF). */
size_t journal_frames_size(const struct iovec *recs, size_t n);

/* Closes the journal. journal_close(NULL) is a no-op. */
void journal_close(struct journal *j);

#endif
