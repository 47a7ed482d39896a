/*
 * writer.c - the writer thread and its group commit.
 *
 * Loop thread --submit--> `queue` (mutex) --> writer thread applies a whole
 * batch in one transaction, commits with a sync --> `done` list (mutex) -->
 * ev_async --> loop thread runs each op's `done`.
 *
 * While one batch syncs, the loop keeps accepting requests into the next, so
 * the batch size grows with load by itself: one sync per batch, not per job.
 *
 * With a journal (docs/JOURNAL.md) a second thread, sl-journal, takes the
 * ops that carry a submit record: it holds their records in the intake
 * overlay, appends them to the journal in one synced write, queues one
 * `stored_op` carrying them to the writer, and only then hands the ops back
 * as done. So an op the loop submits after an acknowledgement is queued
 * behind the insert it may depend on. The writer applies a stored_op like
 * any other op, with the journal seq it reached, in the same transaction
 * (and, once committed, takes them out of the overlay on the writer thread);
 * a stored_op is never dropped from a batch (`must`): on a hard error the
 * other ops of the batch are refused, the retention's deletes go ahead
 * of it, and it is retried until the store takes it (make_room). The
 * journal takes submits only while the map has room for them stored
 * (STORED_SHARE), so that wait stays rare.
 *
 * With a journal the writer thread may lower its own priority (jo.nice,
 * --writer-nice; 0 by default). Its commits then store submits that are
 * already acknowledged, and its CPU (mostly the kernel copying LMDB's
 * pages) taken from the loop, the journal and the clients costs
 * acknowledgements: at nice 19, 29-38 K against 25-34 K submits/s on 2
 * cores (bench/profile.md). Not the default: its claims and finishes are
 * on the drain's path, and a CPU-bound neighbour in the same scheduling
 * group leaves it ~1.5 % of a core, so every commit, claims included,
 * crawls. Priority is per thread on Linux.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "slowlane/common.h"
#include "slowlane/log.h"
#include "slowlane/writer.h"

/*
 * The linger. Journaled submits are acknowledged already, so storing them a
 * few milliseconds later keeps nobody waiting, and a commit costs mostly
 * what does not grow with its size: the root-to-leaf path of each B-tree
 * copied and written, two syncs. So while the queue holds nothing but
 * journaled submits, the writer lets them gather for up to LINGER_MS after
 * the first of them arrived, or until LINGER_BYTES of them are queued,
 * before it begins a transaction. Ops marked lazy (a call's outcome: the
 * scheduler has moved on already) linger the same way. Any other op (a
 * claim, a cancel: someone waits on those) ends the wait at once.
 * LINGER_BYTES is a quarter of a journal half, so the linger never holds
 * back the frames the journal needs applied before it can move to its
 * other half. And it is at
 * most 1/LINGER_MAP_SHARE of the map, so that on a small map one lingered
 * batch is never a large part of the room the journal counted on.
 */
#define LINGER_MS 10
#define LINGER_BYTES (JOURNAL_HALF / 4)
#define LINGER_MAP_SHARE 40

/*
 * The journal takes a submit only while the map has room, outside the
 * reserve kept for results and deletes (store_map_has_room), for
 * STORED_SHARE times the frames of every submit journaled but not yet
 * stored, this one included (stored, with its indexes and half-full pages,
 * a frame takes up to about twice its size), and for their outcomes.
 * Otherwise the map fills with submits already acknowledged, and they wait
 * (make_room) until the retention or a purge frees it.
 */
#define STORED_SHARE 3

struct writer {
	struct store *st;
	struct ev_loop *loop;
	ev_async wake;          /* writer -> loop: batches are done */
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct wr_op *queue, **queue_tail; /* guarded by mu */
	unsigned queued_direct;            /* guarded by mu: queued ops that end a linger */
	size_t queued_bytes;               /* guarded by mu: journal bytes in queue */
	size_t linger_bytes;               /* the linger ends at this many */
	struct timespec linger_until;      /* guarded by mu: CLOCK_MONOTONIC */
	struct wr_op *done, **done_tail;   /* guarded by mu */
	int stopping;                      /* guarded by mu */
	struct wr_op *failed;              /* writer thread: ops taken out */
	bool gave_up;                      /* writer thread: submits left to the journal */
	atomic_uint pending;               /* submitted, done not yet run */
	atomic_uint_fast64_t commits, ops, journaled, appends;
	atomic_size_t unstored, unstored_n; /* journaled, not yet stored: bytes, submits */
	/* the journal lane (jo.journal NULL: none) */
	struct writer_journal jo;
	pthread_t jthread;
	pthread_cond_t jcv;
	struct wr_op *jqueue, **jqueue_tail; /* guarded by mu */
	bool jstopping;                      /* guarded by mu */
};

/* Journaled submits on their way into the store: one per journal append. */
struct stored_op {
	struct wr_op op;
	struct writer *w;
	uint64_t last_seq;
	size_t bytes; /* their frames' size in the journal */
	size_t n;
	struct intake_ref *held[];
};

/* Takes a whole list: a queue or the done list (mu held). */
static struct wr_op *
take_all(struct wr_op **head, struct wr_op ***tail)
{
	struct wr_op *list = *head;

	*head = NULL;
	*tail = head;
	return list;
}

/* Appends `list` to the list whose tail is *tail, moving the tail (mu
 * held). Returns the number of ops appended. */
static unsigned
append_all(struct wr_op ***tail, struct wr_op *list)
{
	unsigned n = 0;

	**tail = list;
	for (; **tail; n++)
		*tail = &(**tail)->next;
	return n;
}

/* True while the writer should let journaled submits gather (mu held; the
 * queue is not empty). */
static bool
lingering(const struct writer *w)
{
	struct timespec now;

	if (w->queued_direct || w->queued_bytes >= w->linger_bytes || w->stopping)
		return false;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec < w->linger_until.tv_sec ||
	    (now.tv_sec == w->linger_until.tv_sec && now.tv_nsec < w->linger_until.tv_nsec);
}

/* Errors an op reports before writing anything: they leave the transaction
 * usable. Any other error may have half-written it. */
bool
writer_is_soft(int rc)
{
	return rc == SL_ENOTFOUND || rc == SL_ESTALE || rc == SL_EINVAL;
}

static int apply_batch(struct writer *w, struct wr_op **batchp);
static void finish_batch(struct writer *w, struct wr_op *batch, int rc);

/*
 * Journaled submits in *batchp (`must` ops) could not be stored, with `rc`:
 * the map or the disk is full. Nothing may be lost, and nothing may stall
 * behind them either. So every other op of the batch is refused with rc
 * (its owner copes with a full store: a finish parks its outcome, a submit
 * answers 507), the queued ops that only delete (`frees`: the retention,
 * which makes the room) are applied at once in their own commit, and the
 * caller retries the must ops alone; after a pause if nothing was freed.
 * `tries` counts the attempts, for the log. Returns false, giving up, if
 * the writer is stopping: the submits stay in the journal, and the next
 * start stores them (docs/JOURNAL.md); so do all journaled after them
 * (gave_up, stored_apply), or journal_seq would pass them.
 */
static bool
make_room(struct writer *w, struct wr_op **batchp, int rc, unsigned tries)
{
	struct wr_op *frees = NULL, **ftail = &frees, **pp;
	bool stopping;

	for (pp = batchp; *pp;) {
		struct wr_op *op = *pp;
		if (op->must) {
			pp = &op->next;
			continue;
		}
		*pp = op->next;
		op->rc = rc;
		op->next = w->failed;
		w->failed = op;
	}
	pthread_mutex_lock(&w->mu);
	stopping = w->stopping;
	for (pp = &w->queue; !stopping && *pp;) {
		struct wr_op *op = *pp;
		if (!op->frees) {
			pp = &op->next;
			continue;
		}
		*pp = op->next;
		if (!*pp)
			w->queue_tail = pp;
		if (!(op->lazy && w->linger_bytes) && w->queued_direct)
			w->queued_direct--; /* a lingering op was not counted */
		op->next = NULL;
		*ftail = op;
		ftail = &op->next;
	}
	append_all(&w->done_tail, w->failed);
	w->failed = NULL;
	pthread_mutex_unlock(&w->mu);
	if (tries == 1 || tries % 100 == 0 || stopping)
		log_error("writer: journaled submits could not be stored (%s); %s (attempt %u)",
		    sl_strerror(rc), stopping ? "they stay in the journal for the next start" :
		    "retrying", tries);
	if (frees)
		finish_batch(w, frees, apply_batch(w, &frees));
	ev_async_send(w->loop, &w->wake);
	if (stopping) {
		w->gave_up = true;
		return false;
	}
	if (!frees)
		usleep(100 * 1000);
	return true;
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
	unsigned n, tries = 0;
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
		if (op->rc && !writer_is_soft(op->rc) && op->must) {
			/* Acknowledged work: wait for the store to take it. */
			store_abort(t);
			t = NULL;
			rc = op->rc;
			if (make_room(w, batchp, rc, ++tries))
				goto again;
			goto out;
		}
		if (op->rc && !writer_is_soft(op->rc)) {
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
	for (struct wr_op *op = *batchp; rc && op; op = op->next)
		if (op->must) {
			if (make_room(w, batchp, rc, ++tries))
				goto again;
			goto out;
		}
	if (n) { /* a batch whose every op was refused wrote nothing */
		atomic_fetch_add(&w->commits, 1);
		atomic_fetch_add(&w->ops, n);
	}
	for (struct wr_op *op = *batchp; rc == 0 && op; op = op->next)
		if (op->committed && op->rc == 0)
			op->committed(op);
out:
	store_abort(t);
	if (rc)
		log_error("writer: batch of %u ops failed: %s", n, sl_strerror(rc));
	return rc;
}

/* Merge sort of a list of ops by `order`, stable. */
static struct wr_op *
sort_by_order(struct wr_op *list, size_t n)
{
	struct wr_op *a = list, *b, *out = NULL, **tail = &out;
	size_t half = n / 2;

	if (n < 2)
		return list;
	for (size_t i = 1; i < half; i++)
		list = list->next;
	b = list->next;
	list->next = NULL;
	a = sort_by_order(a, half);
	b = sort_by_order(b, n - half);
	while (a && b) {
		struct wr_op **from = strcmp(b->order, a->order) < 0 ? &b : &a;
		*tail = *from;
		tail = &(*from)->next;
		*from = (*from)->next;
	}
	*tail = a ? a : b;
	return out;
}

/* Puts each run of consecutive lazy ops with an `order` key in key order
 * (writer.h). */
static void
order_lazy_runs(struct wr_op **pp)
{
	while (*pp) {
		struct wr_op **end = pp, *rest;
		size_t n = 0;

		while (*end && (*end)->lazy && (*end)->order) {
			end = &(*end)->next;
			n++;
		}
		if (n < 2) {
			pp = n ? end : &(*pp)->next;
			continue;
		}
		rest = *end;
		*end = NULL;
		*pp = sort_by_order(*pp, n);
		while (*pp)
			pp = &(*pp)->next;
		*pp = rest;
	}
}

/* Appends the applied batch and the ops taken out of it to the done list. */
static void
finish_batch(struct writer *w, struct wr_op *batch, int rc)
{
	if (rc)
		for (struct wr_op *op = batch; op; op = op->next)
			op->rc = rc;
	pthread_mutex_lock(&w->mu);
	append_all(&w->done_tail, batch);
	append_all(&w->done_tail, w->failed);
	w->failed = NULL;
	pthread_mutex_unlock(&w->mu);
}

/* This thread (Linux: per thread) `by` nice levels below where it is, at
 * most to 19. Lowering one's priority needs no privilege. */
static void
lower_priority(int by)
{
	id_t tid = (id_t)gettid();
	int cur, to;

	errno = 0;
	cur = getpriority(PRIO_PROCESS, tid);
	if (cur == -1 && errno)
		cur = 0;
	to = cur + by > 19 ? 19 : cur + by;
	if (to > cur && setpriority(PRIO_PROCESS, tid, to) != 0)
		log_warn("writer: cannot lower its priority to nice %d: %s", to, sl_strerror(-errno));
}

static void *
writer_main(void *arg)
{
	struct writer *w = arg;

	pthread_setname_np(pthread_self(), "sl-writer"); /* top -H, perf, gdb */
	if (w->jo.journal && w->jo.nice > 0)
		lower_priority(w->jo.nice);
	for (;;) {
		struct wr_op *batch;
		bool idle;
		int rc;

		pthread_mutex_lock(&w->mu);
		while (!w->queue && !w->stopping)
			pthread_cond_wait(&w->cv, &w->mu);
		if (!w->queue && w->stopping) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		while (lingering(w))
			pthread_cond_timedwait(&w->cv, &w->mu, &w->linger_until);
		batch = take_all(&w->queue, &w->queue_tail);
		w->queued_direct = 0;
		w->queued_bytes = 0;
		pthread_mutex_unlock(&w->mu);

		order_lazy_runs(&batch);
		rc = apply_batch(w, &batch);
		finish_batch(w, batch, rc);
		ev_async_send(w->loop, &w->wake);
		pthread_mutex_lock(&w->mu);
		idle = !w->queue;
		pthread_mutex_unlock(&w->mu);
		if (idle)
			store_settle(w->st);
	}
	return NULL;
}

/* ---- the journal lane ---- */

static int
stored_apply(struct store_txn *t, struct wr_op *op)
{
	struct stored_op *so = SL_CONTAINER_OF(op, struct stored_op, op);
	int rc = 0;

	/* Submits journaled after some that make_room left to the journal must
	 * stay there too: storing them would move journal_seq past the earlier
	 * ones, and the next start replays only what lies past journal_seq. */
	if (so->w->gave_up)
		return SL_EFULL;
	for (size_t i = 0; rc == 0 && i < so->n; i++) {
		size_t len;
		const void *rec = intake_ref_data(so->held[i], &len);
		rc = intake_apply(t, rec, len);
	}
	if (rc == 0)
		rc = store_meta_put_u64(t, "journal_seq", so->last_seq);
	/* A soft error would let the batch commit without these: never. */
	return writer_is_soft(rc) ? SL_ESTORE : rc;
}

/* Writer thread, the moment the commit returned: the submits are in the
 * store, so they leave the overlay (at once, so that the per-key count of
 * the store plus the overlay is right as soon as possible) and their
 * journal space may be reused. */
static void
stored_committed(struct wr_op *op)
{
	struct stored_op *so = SL_CONTAINER_OF(op, struct stored_op, op);
	struct writer *w = so->w;

	for (size_t i = 0; i < so->n; i++)
		intake_forget(w->jo.intake, so->held[i]);
	atomic_fetch_sub(&w->unstored, so->bytes);
	atomic_fetch_sub(&w->unstored_n, so->n);
	journal_applied(w->jo.journal, so->last_seq);
}

/* Loop thread, after the commit: their jobs can be claimed. */
static void
stored_done(struct wr_op *op)
{
	struct stored_op *so = SL_CONTAINER_OF(op, struct stored_op, op);
	struct writer *w = so->w;

	if (w->jo.stored)
		w->jo.stored(w->jo.arg);
	free(so);
}

/* Moves `list` to the writer's queue (mu held); it ends any linger. */
static void
queue_direct_locked(struct writer *w, struct wr_op *list)
{
	w->queued_direct += append_all(&w->queue_tail, list);
	pthread_cond_signal(&w->cv);
}

/* Appends `op`, which may linger, to the queue (mu held). Into an empty
 * queue it starts the linger and returns true. */
static bool
queue_lingering_locked(struct writer *w, struct wr_op *op)
{
	bool first = w->queue == NULL;

	if (first) {
		clock_gettime(CLOCK_MONOTONIC, &w->linger_until);
		w->linger_until.tv_nsec += LINGER_MS * 1000000L;
		if (w->linger_until.tv_nsec >= 1000000000L) {
			w->linger_until.tv_sec++;
			w->linger_until.tv_nsec -= 1000000000L;
		}
	}
	op->next = NULL;
	append_all(&w->queue_tail, op);
	return first;
}

/* Queues a stored_op (mu held). The first one into an empty queue starts
 * the linger; the writer is woken only then, or once enough have gathered:
 * a lingering writer wakes at its deadline by itself. */
static void
queue_stored_locked(struct writer *w, struct stored_op *so)
{
	bool first = queue_lingering_locked(w, &so->op);

	w->queued_bytes += so->bytes;
	if (first || w->queued_bytes >= w->linger_bytes)
		pthread_cond_signal(&w->cv);
}

/*
 * Journals `batch`: holds each record in the overlay (an op whose record
 * cannot be held goes the direct way instead), writes them all in one
 * synced append, then queues their stored_op and hands the ops back, in
 * that order and under one lock.
 */
static void
journal_batch(struct writer *w, struct wr_op *batch)
{
	struct stored_op *so;
	struct wr_op *held = NULL, **held_tail = &held, *direct = NULL, **direct_tail = &direct;
	struct iovec *iov;
	size_t n = 0, size = 0, journaled;
	uint64_t first;
	int rc;

	for (struct wr_op *op = batch; op; op = op->next) {
		struct iovec v = { (void *)op->rec, op->rec_len };
		size += journal_frames_size(&v, 1);
		n++;
	}
	so = malloc(sizeof *so + n * sizeof so->held[0]);
	iov = malloc(n * sizeof *iov);
	if (!so || !iov || store_disk_full(w->st) || !store_map_has_room(w->st,
	    STORED_SHARE * (atomic_load(&w->unstored) + size), atomic_load(&w->unstored_n) + n)) {
		/* Refusals stay synchronous: the direct path answers 507. */
		free(so);
		free(iov);
		pthread_mutex_lock(&w->mu);
		queue_direct_locked(w, batch);
		pthread_mutex_unlock(&w->mu);
		return;
	}
	so->n = 0;
	size = 0;
	for (struct wr_op *op = batch, *next; op; op = next) {
		struct iovec v = { (void *)op->rec, op->rec_len };
		next = op->next;
		op->next = NULL;
		if (size + journal_frames_size(&v, 1) <= JOURNAL_HALF &&
		    intake_hold(w->jo.intake, op->rec, op->rec_len, &so->held[so->n]) == 0) {
			size += journal_frames_size(&v, 1);
			iov[so->n++] = v;
			*held_tail = op;
			held_tail = &op->next;
		} else {
			*direct_tail = op;
			direct_tail = &op->next;
		}
	}
	if (so->n) {
		rc = journal_append(w->jo.journal, iov, so->n, &first);
		if (rc) {
			/* As for a failed fsync in the store: nothing is known. */
			log_error("journal: append failed: %s; exiting", sl_strerror(rc));
			abort();
		}
		so->last_seq = first + so->n - 1;
		so->bytes = size;
		atomic_fetch_add(&w->unstored, size);
		atomic_fetch_add(&w->unstored_n, so->n);
		so->w = w;
		so->op = (struct wr_op){ .apply = stored_apply, .done = stored_done,
			.committed = stored_committed, .must = true };
		atomic_fetch_add(&w->journaled, so->n);
		atomic_fetch_add(&w->appends, 1);
	}
	free(iov);
	journaled = so->n; /* once queued, so may be stored and freed at once */
	pthread_mutex_lock(&w->mu);
	if (journaled) {
		atomic_fetch_add(&w->pending, 1); /* the stored_op: run_done finishes it */
		queue_stored_locked(w, so);
	}
	if (direct)
		queue_direct_locked(w, direct);
	for (struct wr_op *op = held; op; op = op->next)
		op->rc = 0;
	append_all(&w->done_tail, held);
	pthread_mutex_unlock(&w->mu);
	if (!journaled)
		free(so);
	if (held)
		ev_async_send(w->loop, &w->wake);
}

static void *
journal_main(void *arg)
{
	struct writer *w = arg;

	pthread_setname_np(pthread_self(), "sl-journal");
	for (;;) {
		struct wr_op *batch;

		pthread_mutex_lock(&w->mu);
		while (!w->jqueue && !w->jstopping)
			pthread_cond_wait(&w->jcv, &w->mu);
		if (!w->jqueue) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		batch = take_all(&w->jqueue, &w->jqueue_tail);
		pthread_mutex_unlock(&w->mu);
		journal_batch(w, batch);
	}
	return NULL;
}

/* Loop thread: runs `done` for every finished op. */
static void
run_done(struct writer *w)
{
	struct wr_op *list, *next;

	pthread_mutex_lock(&w->mu);
	list = take_all(&w->done, &w->done_tail);
	pthread_mutex_unlock(&w->mu);
	for (; list; list = next) {
		next = list->next;
		atomic_fetch_sub(&w->pending, 1);
		list->done(list);
	}
}

static void
wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	run_done(SL_CONTAINER_OF(a, struct writer, wake));
}

int
writer_start(struct writer **out, struct store *st, struct ev_loop *loop,
    const struct writer_journal *jo)
{
	struct writer *w = calloc(1, sizeof *w);
	pthread_condattr_t ca;
	struct store_txn *t;
	struct store_info si;
	int rc;

	if (!w)
		return -ENOMEM;
	w->st = st;
	/* linger_bytes stays 0 (no linger) if the map size is unknown */
	if (store_begin(st, true, &t) == 0) {
		if (store_get_info(st, t, &si) == 0)
			w->linger_bytes = si.map_size / LINGER_MAP_SHARE < LINGER_BYTES
			    ? (size_t)(si.map_size / LINGER_MAP_SHARE) : LINGER_BYTES;
		store_abort(t);
	}
	w->loop = loop;
	w->queue_tail = &w->queue;
	w->done_tail = &w->done;
	w->jqueue_tail = &w->jqueue;
	if (jo && jo->journal && jo->intake)
		w->jo = *jo;
	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the linger's deadline */
	pthread_cond_init(&w->cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&w->jcv, NULL);
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
	if (w->jo.journal && pthread_create(&w->jthread, NULL, journal_main, w) != 0) {
		log_warn("writer: no journal thread; every submit commits directly");
		w->jo.journal = NULL;
	}
	*out = w;
	return 0;
}

bool
writer_journaling(const struct writer *w)
{
	return w->jo.journal != NULL;
}

void
writer_submit(struct writer *w, struct wr_op *op)
{
	op->next = NULL;
	atomic_fetch_add(&w->pending, 1);
	pthread_mutex_lock(&w->mu);
	if (w->jo.journal && op->rec && op->rec_len <= JOURNAL_RECORD_MAX && !w->jstopping) {
		append_all(&w->jqueue_tail, op);
		pthread_cond_signal(&w->jcv);
	} else if (op->lazy && w->linger_bytes) {
		if (queue_lingering_locked(w, op))
			pthread_cond_signal(&w->cv);
	} else {
		queue_direct_locked(w, op);
	}
	pthread_mutex_unlock(&w->mu);
}

unsigned
writer_pending(const struct writer *w)
{
	return atomic_load(&((struct writer *)w)->pending);
}

void
writer_get_stats(const struct writer *w, struct writer_stats *out)
{
	out->commits = atomic_load(&((struct writer *)w)->commits);
	out->ops = atomic_load(&((struct writer *)w)->ops);
	out->journaled = atomic_load(&((struct writer *)w)->journaled);
	out->appends = atomic_load(&((struct writer *)w)->appends);
}

void
writer_stop(struct writer *w)
{
	/* The journal thread first: what it takes is journaled and queued to
	 * the writer; from now on every op goes the direct way. */
	pthread_mutex_lock(&w->mu);
	w->jstopping = true;
	pthread_cond_signal(&w->jcv);
	pthread_mutex_unlock(&w->mu);
	if (w->jo.journal)
		pthread_join(w->jthread, NULL);
	pthread_mutex_lock(&w->mu);
	w->stopping = 1;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	/* done callbacks may submit more ops: drain until quiet. */
	run_done(w);
	while (w->queue) {
		struct wr_op *batch = take_all(&w->queue, &w->queue_tail);
		finish_batch(w, batch, apply_batch(w, &batch));
		run_done(w);
	}
	ev_ref(w->loop);
	ev_async_stop(w->loop, &w->wake);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	pthread_cond_destroy(&w->jcv);
	free(w);
}
