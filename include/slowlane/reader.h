/*
 * reader.h - the reader pool: read transactions off the loop thread.
 *
 * A poll of an old job in a store bigger than RAM takes page faults on
 * disk. Run on the loop thread, that read would stall every connection and
 * the scheduler with it (bench/RESULTS.md, section 3). The loop therefore
 * hands the reads of the polling endpoints to a few reader threads: each
 * op runs inside its own read-only transaction there, and its `done` runs
 * back on the loop thread, where it answers. A stall then costs one reader,
 * not the daemon. (LMDB readers never block the writer or each other; the
 * store is opened MDB_NOTLS, so a read transaction may live on any thread.)
 */
#ifndef SLOWLANE_READER_H
#define SLOWLANE_READER_H

#include <ev.h>

#include "slowlane/store.h"

struct rd_op {
	/* Runs on a reader thread inside a read-only transaction, which is
	 * ended after it returns: copy out what `done` needs. Must not touch
	 * loop-thread state. Not called if the transaction could not begin. */
	void (*run)(struct store_txn *t, struct rd_op *op);
	/* Runs on the loop thread after `run`. `rc` is 0, or the error of
	 * beginning the transaction (then `run` did not run). The pool does
	 * not touch `op` after calling it: done may free it. */
	void (*done)(struct rd_op *op);
	int rc;
	struct rd_op *next; /* the pool's own link */
};

struct reader;

/* Starts `threads` reader threads on `st` reporting to `loop`; with 0
 * threads every op runs at once on the caller's thread, as before there
 * was a pool. Returns 0 or -errno. */
int reader_start(struct reader **out, struct store *st, struct ev_loop *loop,
    unsigned threads);
/* Queues an op (loop thread only); its `done` runs in a later loop
 * iteration (with 0 threads: before this returns). */
void reader_submit(struct reader *rd, struct rd_op *op);
/* Ops submitted whose `done` has not yet run (loop thread). */
unsigned reader_pending(const struct reader *rd);
/* Runs what is queued, runs every `done`, stops the threads and frees the
 * pool (loop thread; the loop need not be running). NULL is a no-op. */
void reader_stop(struct reader *rd);

#endif
