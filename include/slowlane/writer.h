/*
 * writer.h - the writer thread: group commit for the whole daemon.
 *
 * The loop thread hands it operations (struct wr_op, embedded in the
 * caller's own struct). The writer takes every operation queued so far,
 * applies them all inside one write transaction,
 * commits once with a sync, and hands the batch back to the loop thread,
 * where each op's `done` runs. So many submits share one fsync, a sync never
 * stalls the loop, and nothing is acknowledged before it is durable: an op
 * the journal lane takes is done once its journal append has synced, any
 * other once the commit holding it has returned.
 */
#ifndef SLOWLANE_WRITER_H
#define SLOWLANE_WRITER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "slowlane/intake.h"
#include "slowlane/journal.h"
#include "slowlane/store.h"

struct wr_op;

struct wr_op {
	/* Runs on the writer thread inside the batch's write transaction.
	 * Returns 0, or a "soft" error (SL_ENOTFOUND, SL_ESTALE, SL_EINVAL)
	 * only before it has written anything; any other error
	 * takes the op out of the batch, which is then applied again without
	 * it. So apply may run more than once: reset outputs at its start.
	 * Must not touch loop-thread state. */
	int (*apply)(struct store_txn *t, struct wr_op *op);
	/* Runs on the loop thread after the batch's commit returned; op->rc
	 * is apply's result, or the commit's error if the commit failed. The
	 * writer does not touch `op` after calling it: done may free it. */
	void (*done)(struct wr_op *op);
	int rc;
	/* Optional: the op as a self-contained submit record (intake.h), set
	 * by the op's owner. With a journal the writer may then journal it
	 * instead: `done` runs (rc 0) once the journal has synced the record,
	 * and the record is applied to the store in a later commit, without
	 * `apply`. The owner frees rec in done. */
	const void *rec;
	size_t rec_len;
	/* Optional: runs on the writer thread as soon as the commit that
	 * applied the op has returned 0, before `done`. Must be quick. */
	void (*committed)(struct wr_op *op);
	/* Set by an owner whose op only deletes what is in the store already
	 * (the retention): while journaled submits wait for room in a full
	 * map, such an op may go ahead of them, since it cannot depend on
	 * them and it is what makes the room. */
	bool frees;
	/* Set by an owner that waits for nothing from this op's commit (a
	 * call's outcome: its slot is free already): the writer may hold it
	 * back for a few milliseconds, so that more ops share its commit,
	 * as it does journaled submits (the linger, writer.c). */
	bool lazy;
	/* Optional, with `lazy`: a key the op's writes sort by (a job id).
	 * The writer applies a run of consecutive lazy ops with keys in key
	 * order (their owners wait for none of them, so their order is free),
	 * so that ascending keys are appended to the trees' right edges, and
	 * pages are left full, instead of split in half by out-of-order
	 * inserts. Ops with equal keys keep their order. */
	const char *order;
	struct wr_op *next; /* writer's own link */
	bool must;          /* writer's own: never dropped from a batch */
};

struct writer_stats {
	uint64_t commits;   /* synced transactions */
	uint64_t ops;       /* operations applied */
	uint64_t journaled; /* ops acknowledged from the journal */
	uint64_t appends;   /* synced journal appends */
};

/* The journal lane (docs/JOURNAL.md); all NULL = every op commits directly. */
struct writer_journal {
	struct journal *journal; /* opened and replayed by the caller */
	struct intake *intake;   /* where journaled submits are held until stored */
	/* Loop thread, after a commit stored journaled submits (wake the
	 * scheduler: their jobs can be claimed now). */
	void (*stored)(void *arg);
	void *arg;
	/* While this lane is on, the writer thread runs `nice` nice levels
	 * below the other threads (at most to 19): its commits are then off
	 * the acknowledgement path, so it gives the CPU to the loop and the
	 * journal first. 0 leaves it level. */
	int nice;
};

struct writer;

/* Starts the writer thread on `st`, reporting to `loop`, and with `jo`
 * (may be NULL) the journal thread. Returns 0 or -errno. */
int writer_start(struct writer **out, struct store *st, struct ev_loop *loop,
    const struct writer_journal *jo);
/* True if ops with a record may be journaled (worth encoding one). */
bool writer_journaling(const struct writer *w);
/* Queues an op (loop thread only). It will be applied in a later commit. */
void writer_submit(struct writer *w, struct wr_op *op);
/* Number of ops submitted whose `done` has not yet run (loop thread). */
unsigned writer_pending(const struct writer *w);
/* Reads counters (approximate; any thread). */
void writer_get_stats(const struct writer *w, struct writer_stats *out);
/* Whether `rc` is one of the soft errors of wr_op.apply (the batch commits
 * with the op's writes, if any). An apply that may fail after writing
 * turns them into a hard error (SL_ESTORE). */
bool writer_is_soft(int rc);
/* Applies what is queued, runs the last `done`s, stops the thread and frees
 * the writer (loop thread; the loop need not be running). */
void writer_stop(struct writer *w);

#endif
