/*
 * reader.c - the reader pool (see reader.h).
 *
 * Loop thread --submit--> `queue` (mutex) --> one of the reader threads runs
 * the op in its own read transaction --> `done` list (mutex) --> ev_async
 * --> loop thread runs each op's `done`. The same shape as writer.c, with
 * several threads taking one op each instead of one thread taking all.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "slowlane/common.h"
#include "slowlane/reader.h"

struct reader {
	struct store *st;
	struct ev_loop *loop;
	ev_async wake;      /* readers -> loop: ops are done */
	pthread_t *threads; /* NULL: no pool, ops run inline */
	unsigned n_threads; /* started */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rd_op *queue, **queue_tail; /* guarded by mu */
	struct rd_op *done, **done_tail;   /* guarded by mu */
	int stopping;                      /* guarded by mu */
	unsigned pending;                  /* loop thread only */
	unsigned delay_us; /* test hook: SLOWLANE_TEST_READ_DELAY_US */
};

static void
run_one(struct reader *rd, struct rd_op *op)
{
	struct store_txn *t;

	/* A read stalled on disk, made to order for tests/func/t0750: what
	 * the pool is for is that such a stall costs one reader only. */
	if (rd->delay_us)
		usleep(rd->delay_us);
	op->rc = store_begin(rd->st, true, &t);
	if (op->rc == 0) {
		op->run(t, op);
		store_abort(t);
	}
}

static void *
reader_main(void *arg)
{
	struct reader *rd = arg;
	struct rd_op *op;

	pthread_setname_np(pthread_self(), "sl-reader"); /* top -H, perf, gdb */
	for (;;) {
		pthread_mutex_lock(&rd->mu);
		while (!rd->queue && !rd->stopping)
			pthread_cond_wait(&rd->cv, &rd->mu);
		op = rd->queue;
		if (!op) { /* stopping, and nothing left */
			pthread_mutex_unlock(&rd->mu);
			break;
		}
		rd->queue = op->next;
		if (!rd->queue)
			rd->queue_tail = &rd->queue;
		pthread_mutex_unlock(&rd->mu);

		run_one(rd, op);

		op->next = NULL;
		pthread_mutex_lock(&rd->mu);
		*rd->done_tail = op;
		rd->done_tail = &op->next;
		pthread_mutex_unlock(&rd->mu);
		ev_async_send(rd->loop, &rd->wake);
	}
	return NULL;
}

/* Loop thread: runs `done` for every finished op. */
static void
run_done(struct reader *rd)
{
	struct rd_op *list, *next;

	pthread_mutex_lock(&rd->mu);
	list = rd->done;
	rd->done = NULL;
	rd->done_tail = &rd->done;
	pthread_mutex_unlock(&rd->mu);
	for (; list; list = next) {
		next = list->next;
		rd->pending--;
		list->done(list);
	}
}

static void
wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	run_done(SL_CONTAINER_OF(a, struct reader, wake));
}

int
reader_start(struct reader **out, struct store *st, struct ev_loop *loop, unsigned threads)
{
	struct reader *rd = calloc(1, sizeof *rd);
	const char *delay = getenv("SLOWLANE_TEST_READ_DELAY_US");
	int rc = 0;

	if (!rd || (threads && !(rd->threads = calloc(threads, sizeof *rd->threads)))) {
		free(rd);
		return -ENOMEM;
	}
	rd->st = st;
	rd->loop = loop;
	rd->queue_tail = &rd->queue;
	rd->done_tail = &rd->done;
	rd->delay_us = delay ? (unsigned)strtoul(delay, NULL, 10) : 0;
	*out = rd;
	if (threads == 0)
		return 0;
	pthread_mutex_init(&rd->mu, NULL);
	pthread_cond_init(&rd->cv, NULL);
	ev_async_init(&rd->wake, wake_cb);
	ev_async_start(loop, &rd->wake);
	ev_unref(loop); /* the pool alone does not keep the loop alive */
	for (; rd->n_threads < threads; rd->n_threads++) {
		rc = -pthread_create(&rd->threads[rd->n_threads], NULL, reader_main, rd);
		if (rc) {
			reader_stop(rd); /* joins those started */
			*out = NULL;
			break;
		}
	}
	return rc;
}

void
reader_submit(struct reader *rd, struct rd_op *op)
{
	if (!rd->threads) {
		run_one(rd, op);
		op->done(op);
		return;
	}
	op->next = NULL;
	rd->pending++;
	pthread_mutex_lock(&rd->mu);
	*rd->queue_tail = op;
	rd->queue_tail = &op->next;
	pthread_cond_signal(&rd->cv);
	pthread_mutex_unlock(&rd->mu);
}

unsigned
reader_pending(const struct reader *rd)
{
	return rd ? rd->pending : 0;
}

void
reader_stop(struct reader *rd)
{
	if (!rd)
		return;
	if (rd->threads) {
		pthread_mutex_lock(&rd->mu);
		rd->stopping = 1;
		pthread_cond_broadcast(&rd->cv);
		pthread_mutex_unlock(&rd->mu);
		for (unsigned i = 0; i < rd->n_threads; i++)
			pthread_join(rd->threads[i], NULL); /* they empty the queue first */
		run_done(rd);
		ev_ref(rd->loop);
		ev_async_stop(rd->loop, &rd->wake);
		pthread_mutex_destroy(&rd->mu);
		pthread_cond_destroy(&rd->cv);
	}
	free(rd->threads);
	free(rd);
}
