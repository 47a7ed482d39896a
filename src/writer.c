/*
 * writer.c - the writer thread and its group commit.
 *
 * Loop thread --submit--> `queue` (mutex) --> writer thread applies a whole
 * batch in one transaction, commits with a sync --> `done` list (mutex) -->
 * ev_async --> loop thread runs each op's `done`.
 *
 * While one batch syncs, the loop keeps accepting requests into the next, so
 * the batch size grows with load by itself: one sync per batch, not per job.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "slowlane/common.h"
#include "slowlane/log.h"
#include "slowlane/writer.h"

struct writer {
	struct store *st;
	struct ev_loop *loop;
	ev_async wake;          /* writer -> loop: batches are done */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct wr_op *queue, **queue_tail; /* guarded by mu */
	struct wr_op *done, **done_tail;   /* guarded by mu */
	int stopping;                      /* guarded by mu */
	struct wr_op *failed;              /* writer thread: ops taken out */
	unsigned pending;                  /* loop thread only */
	atomic_uint_fast64_t commits, ops;
};

/* Errors an op reports before writing anything: they leave the transaction
 * usable. Any other error may have half-written it. */
static int
is_soft(int rc)
{
	return rc == SL_ENOTFOUND || rc == SL_ESTALE || rc == SL_EINVAL;
}

/*
 * Applies one batch in one transaction and returns the commit's result.
 *
 * No nested transaction per op: in LMDB 0.9 each child allocates a 2 MiB
 * dirty list, which would cost more than the sync we are sharing. Instead an
 * op that fails with a hard error (map full, I/O) is taken out and the batch
 * is applied again from the start without it, so one bad op never costs the
 * others their commit. Apply functions therefore reset their outputs first.
 */
static int
apply_batch(struct writer *w, struct wr_op **batchp)
{
	struct store_txn *t = NULL;
	struct wr_op **pp;
	unsigned n;
	int rc;

again:
	n = 0;
	rc = store_begin(w->st, false, &t);
	if (rc)
		goto out;
	for (pp = batchp; *pp; pp = &(*pp)->next) {
		struct wr_op *op = *pp;
		op->rc = op->apply(t, op);
		n++;
		if (op->rc && !is_soft(op->rc)) {
			/* Unlink the op; it is reported separately. */
			store_abort(t);
			t = NULL;
			*pp = op->next;
			op->next = w->failed;
			w->failed = op;
			goto again;
		}
	}
	rc = store_commit(t);
	t = NULL;
	if (rc == -EIO && store_disk_full(w->st)) {
		/* LMDB reports a short write on a full disk as EIO. The commit
		 * was abandoned before its meta page: the store is as before.
		 * Refuse this batch; work resumes when space returns. */
		log_error("writer: the disk is full; a batch of %u ops was refused", n);
		rc = SL_EFULL;
	} else if (rc == -EIO) {
		/* A failed fsync cannot be retried safely (the kernel may have
		 * dropped the dirty pages): stop rather than guess. */
		log_error("writer: commit failed with an I/O error; exiting");
		abort();
	}
	atomic_fetch_add(&w->commits, 1);
	atomic_fetch_add(&w->ops, n);
out:
	store_abort(t);
	if (rc)
		log_error("writer: batch of %u ops failed: %s", n, sl_strerror(rc));
	return rc;
}

/* Appends the applied batch and the ops taken out of it to the done list. */
static void
finish_batch(struct writer *w, struct wr_op *batch, int rc)
{
	if (rc)
		for (struct wr_op *op = batch; op; op = op->next)
			op->rc = rc;
	pthread_mutex_lock(&w->mu);
	*w->done_tail = batch;
	while (*w->done_tail)
		w->done_tail = &(*w->done_tail)->next;
	*w->done_tail = w->failed;
	w->failed = NULL;
	while (*w->done_tail)
		w->done_tail = &(*w->done_tail)->next;
	pthread_mutex_unlock(&w->mu);
}

static void *
writer_main(void *arg)
{
	struct writer *w = arg;

	pthread_setname_np(pthread_self(), "sl-writer"); /* top -H, perf, gdb */
	for (;;) {
		struct wr_op *batch;
		int rc;

		pthread_mutex_lock(&w->mu);
		while (!w->queue && !w->stopping)
			pthread_cond_wait(&w->cv, &w->mu);
		if (!w->queue && w->stopping) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		batch = w->queue;
		w->queue = NULL;
		w->queue_tail = &w->queue;
		pthread_mutex_unlock(&w->mu);

		rc = apply_batch(w, &batch);
		finish_batch(w, batch, rc);
		ev_async_send(w->loop, &w->wake);
	}
	return NULL;
}

/* Loop thread: runs `done` for every finished op. */
static void
run_done(struct writer *w)
{
	struct wr_op *list, *next;

	pthread_mutex_lock(&w->mu);
	list = w->done;
	w->done = NULL;
	w->done_tail = &w->done;
	pthread_mutex_unlock(&w->mu);
	for (; list; list = next) {
		next = list->next;
		w->pending--;
		list->done(list);
	}
}

static void
wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	run_done(SL_CONTAINER_OF(a, struct writer, wake));
}

int
writer_start(struct writer **out, struct store *st, struct ev_loop *loop)
{
	struct writer *w = calloc(1, sizeof *w);
	int rc;

	if (!w)
		return -ENOMEM;
	w->st = st;
	w->loop = loop;
	w->queue_tail = &w->queue;
	w->done_tail = &w->done;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	ev_async_init(&w->wake, wake_cb);
	ev_async_start(loop, &w->wake);
	ev_unref(loop); /* the writer alone does not keep the loop alive */
	rc = pthread_create(&w->thread, NULL, writer_main, w);
	if (rc) {
		ev_ref(loop);
		ev_async_stop(loop, &w->wake);
		free(w);
		return -rc;
	}
	*out = w;
	return 0;
}

void
writer_submit(struct writer *w, struct wr_op *op)
{
	op->next = NULL;
	w->pending++;
	pthread_mutex_lock(&w->mu);
	*w->queue_tail = op;
	w->queue_tail = &op->next;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

unsigned
writer_pending(const struct writer *w)
{
	return w->pending;
}

void
writer_get_stats(const struct writer *w, struct writer_stats *out)
{
	out->commits = atomic_load(&((struct writer *)w)->commits);
	out->ops = atomic_load(&((struct writer *)w)->ops);
}

void
writer_stop(struct writer *w)
{
	pthread_mutex_lock(&w->mu);
	w->stopping = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	/* done callbacks may submit more ops: drain until quiet. */
	run_done(w);
	while (w->queue) {
		struct wr_op *batch = w->queue;
		w->queue = NULL;
		w->queue_tail = &w->queue;
		finish_batch(w, batch, apply_batch(w, &batch));
		run_done(w);
	}
	ev_ref(w->loop);
	ev_async_stop(w->loop, &w->wake);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}
