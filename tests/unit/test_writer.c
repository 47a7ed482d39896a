/*
 * test_writer.c - the writer thread on a real store and a real libev loop:
 * ops are applied and their `done` runs on the loop; an op marked lazy
 * lingers so that others share its commit, and an op someone waits on ends
 * that wait. Only lower bounds on time are asserted (a loaded machine makes
 * things later, never earlier).
 */
#include "config.h"

#include <ev.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "../tap.h"
#include "slowlane/common.h"
#include "slowlane/store.h"
#include "slowlane/util.h"
#include "slowlane/writer.h"

struct test_op {
	struct wr_op op;
	const char *key;
	uint64_t val;
	int applied, done;
	int applied_at; /* place in the apply order (apply_seq) */
	uint64_t done_ms; /* sl_mono_ms() when done ran */
};

static int outstanding;
static int apply_seq;

static int
test_apply(struct store_txn *t, struct wr_op *op)
{
	struct test_op *o = SL_CONTAINER_OF(op, struct test_op, op);

	o->applied++;
	o->applied_at = ++apply_seq;
	return store_meta_put_u64(t, o->key, o->val);
}

static void
test_done(struct wr_op *op)
{
	struct test_op *o = SL_CONTAINER_OF(op, struct test_op, op);

	o->done++;
	o->done_ms = sl_mono_ms();
	if (--outstanding == 0)
		ev_break(EV_DEFAULT, EVBREAK_ALL);
}

static void
init_op(struct test_op *o, const char *key, uint64_t val, bool lazy)
{
	memset(o, 0, sizeof *o);
	o->op.apply = test_apply;
	o->op.done = test_done;
	o->op.lazy = lazy;
	o->key = key;
	o->val = val;
}

static void
guard_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until every submitted op is done, or 5 s. */
static void
run_until_done(void)
{
	ev_timer guard;

	ev_timer_init(&guard, guard_cb, 5., 0.);
	ev_timer_start(EV_DEFAULT, &guard);
	if (outstanding > 0)
		ev_run(EV_DEFAULT, 0);
	ev_timer_stop(EV_DEFAULT, &guard);
}

static uint64_t
commits(struct writer *w)
{
	struct writer_stats ws;

	writer_get_stats(w, &ws);
	return ws.commits;
}

int
main(void)
{
	char dir[256];
	struct store_opts so = { .map_size = 64u << 20, .create = true };
	struct store *st;
	struct store_txn *t;
	struct writer *w;
	struct test_op a, b, c, d, r[7];
	uint64_t t0, c0, v = 0;

	snprintf(dir, sizeof dir, "%s/slowlane-test-writer-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return 1;
	ok(store_open(dir, &so, &st) == 0, "store opens in %s", dir);
	ok(writer_start(&w, st, EV_DEFAULT, NULL) == 0, "writer starts");

	/* An ordinary op: applied once, committed, done on the loop. */
	init_op(&a, "t_a", 7, false);
	outstanding = 1;
	writer_submit(w, &a.op);
	run_until_done();
	ok(a.applied == 1 && a.done == 1 && a.op.rc == 0, "an op is applied and done once");
	store_begin(st, true, &t);
	ok(store_meta_get_u64(t, "t_a", &v) == 0 && v == 7, "its write is in the store");
	store_abort(t);
	is_int(commits(w), 1, "one commit for it");

	/* Two lazy ops submitted together: they wait, and share one commit. */
	c0 = commits(w);
	init_op(&a, "t_a", 8, true);
	init_op(&b, "t_b", 9, true);
	outstanding = 2;
	t0 = sl_mono_ms();
	writer_submit(w, &a.op);
	writer_submit(w, &b.op);
	run_until_done();
	ok(a.done == 1 && b.done == 1 && a.op.rc == 0 && b.op.rc == 0, "both lazy ops done");
	is_int(commits(w) - c0, 1, "two lazy ops share one commit");
	ok(a.done_ms - t0 >= 5, "a lazy op lingers before its commit (%llu ms)",
	    (unsigned long long)(a.done_ms - t0));

	/* A lazy op, then one someone waits on: it ends the linger, and the
	 * lazy op goes in the same commit. */
	c0 = commits(w);
	init_op(&c, "t_c", 10, true);
	init_op(&d, "t_d", 11, false);
	outstanding = 2;
	writer_submit(w, &c.op);
	writer_submit(w, &d.op);
	run_until_done();
	ok(c.done == 1 && d.done == 1, "lazy then eager: both done");
	is_int(commits(w) - c0, 1, "an eager op takes the lazy one into its commit");
	store_begin(st, true, &t);
	ok(store_meta_get_u64(t, "t_c", &v) == 0 && v == 10, "the lazy op's write is stored");
	store_abort(t);

	/* Lazy ops with order keys are applied in key order within their run,
	 * equal keys in the order submitted; an op without a key ends the
	 * run and keeps its place. */
	{
		static const char *keys[] = { "k3", "k1", "k2", "k2", NULL, "k0", NULL };
		static const int want[] = { 4, 1, 2, 3, 5, 6, 7 };
		int good = 0;

		c0 = commits(w);
		for (int i = 0; i < 7; i++) {
			init_op(&r[i], "t_r", (uint64_t)i, i < 6);
			r[i].op.order = keys[i];
		}
		outstanding = 7;
		apply_seq = 0;
		for (int i = 0; i < 7; i++)
			writer_submit(w, &r[i].op);
		run_until_done();
		is_int(commits(w) - c0, 1, "seven ops in one commit");
		for (int i = 0; i < 7; i++)
			good += r[i].applied_at == want[i];
		is_int(good, 7, "keyed lazy ops applied in key order, stable, around the unkeyed");
		store_begin(st, true, &t);
		ok(store_meta_get_u64(t, "t_r", &v) == 0 && v == 6, "the last applied write wins");
		store_abort(t);
	}

	/* Stopping does not wait out a linger, and loses nothing queued. */
	init_op(&a, "t_stop", 12, true);
	outstanding = 1;
	writer_submit(w, &a.op);
	writer_stop(w);
	ok(a.done == 1 && a.op.rc == 0, "a lazy op queued at stop is applied before the writer ends");
	store_begin(st, true, &t);
	ok(store_meta_get_u64(t, "t_stop", &v) == 0 && v == 12, "and it is stored");
	store_abort(t);

	store_close(st);
	tap_rmrf(dir);
	return tap_done();
}
