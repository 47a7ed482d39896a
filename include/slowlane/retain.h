/*
 * retain.h - what the store forgets, and when: ended jobs older than
 * --retention, Idempotency-Key records older than --idempotency-keep, and
 * files past their expires_at (with their bytes, and the tombstones of
 * deleted files past their day). Each is a sweep on a timer: a read
 * transaction finds a bounded chunk, an op deletes it through the writer,
 * so no sweep holds the writer long or needs memory that grows with the
 * store. Nothing here changes a job that has not ended.
 *
 * Threads: loop thread only.
 */
#ifndef SLOWLANE_RETAIN_H
#define SLOWLANE_RETAIN_H

#include <ev.h>
#include <stdint.h>

#include "slowlane/store.h"
#include "slowlane/writer.h"

struct retain_opts {
	const char *data_dir;    /* where files' bytes live (files.h); copied */
	uint64_t retention_ms;   /* delete ended jobs this old; 0 = keep them */
	uint64_t idem_keep_ms;   /* delete Idempotency-Key records this old; 0 = keep */
};

struct retain;

/* Creates the sweeps. Nothing runs until retain_start(). Returns 0 or
 * -ENOMEM. */
int retain_new(struct ev_loop *loop, struct store *st, struct writer *wr,
    const struct retain_opts *o, struct retain **out);
void retain_start(struct retain *r);
/* Sends no new op (those with the writer still complete; writer_stop()
 * runs their last `done`s, so free only after it). Idempotent. */
void retain_stop(struct retain *r);
/* retain_free(NULL) is a no-op. */
void retain_free(struct retain *r);

#endif
