/*
 * retain.c - the sweeps that delete what is past its keep (see retain.h).
 *
 * Each sweep has at most one op with the writer. Ended jobs go a chunk per
 * op, the next op sent as soon as a full chunk commits, so a backlog after
 * a long stop clears at the writer's pace; a chunk too big for a full map
 * (in LMDB a delete needs free pages) is cut to a quarter and tried again.
 * The Idempotency-Key walk takes one step per tick, its cursor carried
 * between steps. Files are looked at once a minute; a file's record goes
 * in the op and its bytes after the commit, so a crash between the two
 * leaves an orphan file on disk, never a record without its bytes.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slowlane/batch.h"
#include "slowlane/common.h"
#include "slowlane/files.h"
#include "slowlane/idem.h"
#include "slowlane/log.h"
#include "slowlane/queue.h"
#include "slowlane/retain.h"
#include "slowlane/util.h"

#define TICK_S 1.0
#define PURGE_CHUNK 256      /* ended jobs deleted per op, at most */
/* Idempotency-Key records visited per tick: a walk of a million takes
 * about an hour, and a step costs the writer ~0.1 ms. */
#define IDEM_SWEEP_STEP 256
#define FILE_SWEEP_TICKS 60  /* expired files deleted once a minute */
#define FILE_SWEEP_MAX 64    /* files deleted per op */

struct retain {
	struct ev_loop *loop;
	struct store *st;
	struct writer *wr;
	struct retain_opts o;
	char *data_dir;
	ev_timer tick;
	unsigned ticks;
	bool stopped;
	/* Ended jobs: the next op deletes purge_chunk of them (PURGE_CHUNK,
	 * fewer after the map was too full for a chunk, back up after each
	 * success). */
	bool purging;
	size_t purge_chunk;
	/* Idempotency-Key records: where the walk goes on (nlen 0: the start). */
	bool idem_sweeping;
	unsigned char idem_next[IDEM_RECORD_KEY_MAX];
	size_t idem_nlen;
	/* Files. */
	bool file_sweeping;
};

/* ---- ended jobs (--retention) ---- */

struct purge_op {
	struct wr_op op;
	struct retain *r;
	uint64_t before_ms;
	size_t chunk, n;
};

static int
purge_apply(struct store_txn *t, struct wr_op *op)
{
	struct purge_op *p = SL_CONTAINER_OF(op, struct purge_op, op);

	return queue_purge(t, p->before_ms, p->chunk, &p->n);
}

static void purge_jobs(struct retain *r);

static void
purge_done(struct wr_op *op)
{
	struct purge_op *p = SL_CONTAINER_OF(op, struct purge_op, op);
	struct retain *r = p->r;
	bool more = (op->rc == 0 && p->n == p->chunk) || (op->rc == SL_EFULL && p->chunk > 1);

	r->purging = false;
	if (op->rc == SL_EFULL && p->chunk > 1)
		r->purge_chunk = p->chunk / 4 ? p->chunk / 4 : 1; /* and again at once */
	else if (op->rc == 0 && r->purge_chunk < PURGE_CHUNK)
		r->purge_chunk *= 2;
	if (op->rc)
		log_error("retain: retention purge of up to %zu jobs failed: %s%s", p->chunk,
		    sl_strerror(op->rc), more ? "; trying fewer" : "");
	else if (p->n)
		log_info("retain: retention deleted %zu ended job%s", p->n, p->n == 1 ? "" : "s");
	free(p);
	if (more)
		purge_jobs(r);
}

static int
first_finished(void *arg, uint64_t ms, const char *id)
{
	*(uint64_t *)arg = ms;
	return 1;
}

/* Deletes ended jobs older than --retention, a chunk per op. */
static void
purge_jobs(struct retain *r)
{
	struct store_txn *t = NULL;
	uint64_t now = sl_wall_ms(), oldest = UINT64_MAX;
	struct purge_op *p;

	if (!r->o.retention_ms || r->purging || r->stopped || now < r->o.retention_ms)
		return;
	if (store_begin(r->st, true, &t) == 0) {
		store_scan_time(t, STORE_FINISHED, 0, false, first_finished, &oldest);
		store_abort(t);
	}
	if (oldest >= now - r->o.retention_ms)
		return;
	p = calloc(1, sizeof *p);
	if (!p)
		return;
	p->r = r;
	p->before_ms = now - r->o.retention_ms;
	p->chunk = r->purge_chunk;
	p->op.apply = purge_apply;
	p->op.done = purge_done;
	p->op.frees = true;
	r->purging = true;
	writer_submit(r->wr, &p->op);
}

/* ---- Idempotency-Key records (--idempotency-keep) ---- */

struct idem_sweep_op {
	struct wr_op op;
	struct retain *r;
	unsigned char from[IDEM_RECORD_KEY_MAX], next[IDEM_RECORD_KEY_MAX];
	size_t flen, nlen, deleted;
};

static int
idem_sweep_apply(struct store_txn *t, struct wr_op *op)
{
	struct idem_sweep_op *o = SL_CONTAINER_OF(op, struct idem_sweep_op, op);

	return idem_sweep(t, sl_wall_ms(), o->r->o.idem_keep_ms, o->from, o->flen,
	    IDEM_SWEEP_STEP, o->next, &o->nlen, &o->deleted);
}

static void
idem_sweep_done(struct wr_op *op)
{
	struct idem_sweep_op *o = SL_CONTAINER_OF(op, struct idem_sweep_op, op);
	struct retain *r = o->r;

	r->idem_sweeping = false;
	if (op->rc) {
		log_error("retain: deleting old Idempotency-Key records failed: %s",
		    sl_strerror(op->rc));
	} else {
		memcpy(r->idem_next, o->next, o->nlen); /* nlen 0: from the start */
		r->idem_nlen = o->nlen;
		if (o->deleted)
			log_info("retain: deleted %zu Idempotency-Key record%s older than the keep",
			    o->deleted, o->deleted == 1 ? "" : "s");
	}
	free(o);
}

/* One step of the walk over the Idempotency-Key records. */
static void
purge_idem(struct retain *r)
{
	struct idem_sweep_op *o;

	if (r->idem_sweeping || r->stopped || !r->o.idem_keep_ms)
		return;
	o = calloc(1, sizeof *o);
	if (!o)
		return;
	o->r = r;
	memcpy(o->from, r->idem_next, r->idem_nlen);
	o->flen = r->idem_nlen;
	o->op.apply = idem_sweep_apply;
	o->op.done = idem_sweep_done;
	o->op.frees = true;
	o->op.lazy = true; /* nobody waits for it: it joins the next commit */
	r->idem_sweeping = true;
	writer_submit(r->wr, &o->op);
}

/* ---- expired files ---- */

struct file_sweep_op {
	struct wr_op op;
	struct retain *r;
	size_t n;
	struct sl_file f[FILE_SWEEP_MAX];
	bool deleted[FILE_SWEEP_MAX]; /* this op removed the record */
};

static int
file_sweep_apply(struct store_txn *t, struct wr_op *op)
{
	struct file_sweep_op *s = SL_CONTAINER_OF(op, struct file_sweep_op, op);

	for (size_t i = 0; i < s->n; i++) {
		struct sl_file now; /* the record as this transaction sees it */
		int rc;

		s->deleted[i] = false; /* outputs reset: the op may be applied again */
		if (s->f[i].deleted) {
			/* A tombstone past its day: the bytes went with the file. */
			rc = files_delete(t, &s->f[i]);
			if (rc && rc != SL_ENOTFOUND)
				return rc;
			continue;
		}
		if (batch_input_in_use(t, s->f[i].id, NULL) != 0)
			continue;
		rc = files_get(t, s->f[i].id, &now);
		if (rc == SL_ENOTFOUND)
			continue; /* deleted through the API meanwhile */
		if (!rc)
			rc = files_retire(t, &now, sl_wall_ms());
		if (rc)
			return rc;
		s->deleted[i] = true;
	}
	return 0;
}

static void
file_sweep_done(struct wr_op *op)
{
	struct file_sweep_op *s = SL_CONTAINER_OF(op, struct file_sweep_op, op);
	char path[4096];
	size_t n = 0;

	s->r->file_sweeping = false;
	for (size_t i = 0; !op->rc && i < s->n; i++) {
		if (!s->deleted[i])
			continue;
		/* The record is gone: the bytes can go. */
		files_path(s->r->data_dir, s->f[i].id, path, sizeof path);
		unlink(path);
		n++;
	}
	if (op->rc)
		log_warn("retain: deleting expired files failed: %s", sl_strerror(op->rc));
	else if (n)
		log_info("retain: deleted %zu expired file%s", n, n == 1 ? "" : "s");
	free(s);
}

static void
purge_files(struct retain *r)
{
	struct store_txn *t = NULL;
	struct file_sweep_op *s;
	int rc;

	if (r->file_sweeping || r->stopped || !(s = calloc(1, sizeof *s)))
		return;
	rc = store_begin(r->st, true, &t);
	if (rc == 0)
		rc = files_expired_scan(t, sl_wall_ms(), s->f, FILE_SWEEP_MAX, &s->n);
	store_abort(t);
	if (rc || s->n == 0) {
		free(s);
		return;
	}
	s->r = r;
	s->op.apply = file_sweep_apply;
	s->op.done = file_sweep_done;
	r->file_sweeping = true;
	writer_submit(r->wr, &s->op);
}

/* ---- lifecycle ---- */

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct retain *r = SL_CONTAINER_OF(w, struct retain, tick);

	purge_jobs(r);
	purge_idem(r);
	if (r->ticks++ % FILE_SWEEP_TICKS == 0)
		purge_files(r);
}

int
retain_new(struct ev_loop *loop, struct store *st, struct writer *wr,
    const struct retain_opts *o, struct retain **out)
{
	struct retain *r = calloc(1, sizeof *r);

	if (!r || !(r->data_dir = strdup(o->data_dir))) {
		free(r);
		return -ENOMEM;
	}
	r->loop = loop;
	r->st = st;
	r->wr = wr;
	r->o = *o;
	r->o.data_dir = r->data_dir;
	r->purge_chunk = PURGE_CHUNK;
	ev_timer_init(&r->tick, tick_cb, TICK_S, TICK_S);
	*out = r;
	return 0;
}

void
retain_start(struct retain *r)
{
	ev_timer_start(r->loop, &r->tick);
}

void
retain_stop(struct retain *r)
{
	if (!r)
		return;
	r->stopped = true;
	ev_timer_stop(r->loop, &r->tick);
}

void
retain_free(struct retain *r)
{
	if (!r)
		return;
	ev_timer_stop(r->loop, &r->tick);
	free(r->data_dir);
	free(r);
}
