/*
 * store_check.c - `slowlanectl check`: the store against its one rule.
 *
 * Every job record is read once (store_scan_jobs) and the index entries its
 * state implies are looked up; then each index is walked for entries no
 * record implies; then the per-state counts and the per-key tallies of
 * unfinished jobs (tenant_counts, read by --max-queued) are compared with
 * what the records add up to. With `repair`, what can be rebuilt from the
 * records is: index entries, counts, tallies. A record or body that fails
 * its checksum is reported, never rewritten: the records are the truth the
 * rest is rebuilt from. Memory: one tally per key with unfinished jobs.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/job.h"
#include "slowlane/store.h"
#include "slowlane/util.h"
#include "store_impl.h"

/* Unfinished jobs of one key, as the records say (check). */
struct tenant_tally {
	unsigned char tenant[JOB_TENANT_LEN]; /* NUL-padded, as tenant_counts' keys */
	uint64_t n;
};

struct check_ctx {
	struct store_txn *t;
	bool repair;
	store_problem_fn cb;
	void *arg;
	struct store_check_result *res;
	uint64_t counts[JOB_STATE_COUNT];
	/* Sorted by tenant; as many entries as keys with unfinished jobs, not
	 * as jobs. */
	struct tenant_tally *tally;
	size_t n_tally, cap_tally;
	int rc;
};

/* The tally of `tenant` (padded), added if missing; NULL without memory. */
static struct tenant_tally *
tally_of(struct check_ctx *c, const unsigned char *tenant)
{
	size_t lo = 0, hi = c->n_tally;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int d = memcmp(c->tally[mid].tenant, tenant, JOB_TENANT_LEN);
		if (d == 0)
			return &c->tally[mid];
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (c->n_tally == c->cap_tally) {
		size_t cap = c->cap_tally ? 2 * c->cap_tally : 16;
		struct tenant_tally *p = realloc(c->tally, cap * sizeof *p);
		if (!p)
			return NULL;
		c->tally = p;
		c->cap_tally = cap;
	}
	memmove(&c->tally[lo + 1], &c->tally[lo], (c->n_tally - lo) * sizeof *c->tally);
	c->n_tally++;
	memcpy(c->tally[lo].tenant, tenant, JOB_TENANT_LEN);
	c->tally[lo].n = 0;
	return &c->tally[lo];
}

static void
problem(struct check_ctx *c, const char *id, const char *what, bool repaired)
{
	c->res->problems++;
	if (repaired)
		c->res->repaired++;
	if (c->cb)
		c->cb(c->arg, id, what, repaired);
}

static bool
has_key(struct store_txn *t, int db, const void *key, size_t klen, MDB_val *v)
{
	MDB_val k = { klen, (void *)key }, tmp;

	return mdb_get(t->txn, t->st->dbi[db], &k, v ? v : &tmp) == 0;
}

/* One expected time-index entry of a job. */
static void
expect_time_key(struct check_ctx *c, int db, const struct job *j, bool want, uint64_t ms)
{
	unsigned char k[TIME_KEY_LEN];
	char what[96];
	bool fixed = false;

	if (!want)
		return; /* stray entries are found by the index walk */
	store_p_time_key(k, ms, j->id);
	if (has_key(c->t, db, k, sizeof k, NULL))
		return;
	if (c->repair)
		fixed = store_p_put_key(c->t, db, k, sizeof k, "", 0) == 0;
	snprintf(what, sizeof what, "missing from the %s index (state %s)", store_p_db_names[db],
	    job_state_name(j->state));
	problem(c, j->id, what, fixed);
}

static int
check_job(void *arg, const char *id, const struct job *j)
{
	struct check_ctx *c = arg;
	unsigned char infl[16];
	MDB_val v;

	c->res->jobs++;
	if (!j) {
		problem(c, id, "record failed its checksum or decoding", false);
		return 0;
	}
	c->counts[j->state]++;
	if (!job_is_final(j->state)) {
		unsigned char k[JOB_TENANT_LEN] = { 0 };
		struct tenant_tally *tt;

		memcpy(k, j->tenant, strnlen(j->tenant, JOB_TENANT_LEN));
		if ((tt = tally_of(c, k)) == NULL)
			return c->rc = -ENOMEM;
		tt->n++;
	}
	expect_time_key(c, DB_READY, j, job_in_ready(j), j->not_before_ms);
	expect_time_key(c, DB_EXPIRY, j, job_in_expiry(j), j->expires_ms);
	expect_time_key(c, DB_CREATED, j, true, j->created_ms);
	expect_time_key(c, DB_FINISHED, j, job_is_final(j->state), j->finished_ms);
	if (job_in_inflight(j)) {
		sl_put_be64(infl, j->attempt_id);
		sl_put_be64(infl + 8, j->lease_ms);
		if (!has_key(c->t, DB_INFLIGHT, id, SL_ID_LEN, &v) || v.mv_size != 16 ||
		    memcmp(v.mv_data, infl, 8) != 0) {
			bool fixed = c->repair &&
			    store_p_put_key(c->t, DB_INFLIGHT, id, SL_ID_LEN, infl, sizeof infl) == 0;
			problem(c, id, "missing or stale in the inflight index", fixed);
		}
	}
	{
		const void *data;
		size_t len;
		int brc = store_body_get(c->t, id, &data, &len);
		if (brc == SL_ENOTFOUND)
			problem(c, id, "request body missing", false);
		else if (brc)
			problem(c, id, "request body failed its checksum", false);
		brc = store_result_get(c->t, id, &data, &len);
		if (brc == SL_ECORRUPT)
			problem(c, id, "result failed its checksum", false);
		else if (brc == SL_ENOTFOUND && j->state == JOB_SUCCESS)
			problem(c, id, "Success without a stored result", false);
	}
	return 0;
}

/* `tenant_counts` against the tally of the records (--max-queued reads it:
 * a drift there would refuse or let through the wrong submits). */
static int
check_tenant_counts(struct check_ctx *c)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, mrc;

	rc = mdb_cursor_open(c->t->txn, c->t->st->dbi[DB_TENANT_COUNTS], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor");
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
	    mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct tenant_tally *tt;
		uint64_t have = v.mv_size == 8 ? sl_get_be64(v.mv_data) : UINT64_MAX;

		if (k.mv_size != JOB_TENANT_LEN)
			continue;
		if ((tt = tally_of(c, k.mv_data)) == NULL) {
			mdb_cursor_close(cur);
			return -ENOMEM;
		}
		tt->n |= UINT64_C(1) << 63; /* seen in the table */
		if (have != (tt->n & ~(UINT64_C(1) << 63))) {
			unsigned char buf[8];
			MDB_val nv = { sizeof buf, buf };
			bool fixed = false;
			sl_put_be64(buf, tt->n & ~(UINT64_C(1) << 63));
			if (c->repair)
				fixed = mdb_cursor_put(cur, &k, &nv, MDB_CURRENT) == 0;
			problem(c, "-", "a key's count of unfinished jobs (--max-queued) disagrees "
			    "with the records", fixed);
		}
	}
	mdb_cursor_close(cur);
	if (mrc != MDB_NOTFOUND)
		return store_p_map_rc(mrc, "scan tenant counts");
	for (size_t i = 0; i < c->n_tally; i++) {
		unsigned char buf[8];
		bool fixed = false;

		if (c->tally[i].n & (UINT64_C(1) << 63))
			continue;
		sl_put_be64(buf, c->tally[i].n);
		if (c->repair)
			fixed = store_p_put_key(c->t, DB_TENANT_COUNTS, c->tally[i].tenant, JOB_TENANT_LEN,
			    buf, sizeof buf) == 0;
		problem(c, "-", "a key with unfinished jobs has no count (--max-queued)", fixed);
	}
	return 0;
}

/* Whether a job record implies index entry (db, ms). */
static bool
implied(struct store_txn *t, int db, uint64_t ms, const char *id, bool *corrupt)
{
	struct job j;
	int rc = store_job_get(t, id, &j);

	*corrupt = rc == SL_ECORRUPT;
	if (rc)
		return false;
	switch (db) {
	case DB_READY: return job_in_ready(&j) && j.not_before_ms == ms;
	case DB_EXPIRY: return job_in_expiry(&j) && j.expires_ms == ms;
	case DB_CREATED: return j.created_ms == ms;
	case DB_FINISHED: return job_is_final(j.state) && j.finished_ms == ms;
	case DB_INFLIGHT: return job_in_inflight(&j);
	}
	return false;
}

/* Walks one index, removing (with repair) entries no record implies. */
static int
check_index(struct check_ctx *c, int db)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	rc = mdb_cursor_open(c->t->txn, c->t->st->dbi[db], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor_open");
	rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (rc == 0) {
		bool time_keyed = db != DB_INFLIGHT, corrupt = false, ok;
		char id[SL_ID_LEN + 1], what[96];
		size_t want = time_keyed ? TIME_KEY_LEN : SL_ID_LEN;
		bool fixed = false;

		if (k.mv_size != want) {
			snprintf(id, sizeof id, "?");
			ok = false;
		} else {
			memcpy(id, (char *)k.mv_data + (time_keyed ? 8 : 0), SL_ID_LEN);
			id[SL_ID_LEN] = '\0';
			ok = implied(c->t, db, time_keyed ? sl_get_be64(k.mv_data) : 0, id, &corrupt);
		}
		if (!ok && !corrupt) {
			unsigned char saved[TIME_KEY_LEN];
			size_t slen = k.mv_size < sizeof saved ? k.mv_size : sizeof saved;
			memcpy(saved, k.mv_data, slen);
			if (c->repair)
				fixed = mdb_cursor_del(cur, 0) == 0;
			snprintf(what, sizeof what, "dangling entry in the %s index", store_p_db_names[db]);
			problem(c, id, what, fixed);
			if (fixed) {
				/* Re-seek: the next key is the first one >= the deleted. */
				k.mv_size = slen;
				k.mv_data = saved;
				rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
				continue;
			}
		}
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND || rc == EINVAL ? 0 : store_p_map_rc(rc, "cursor_get");
}

int
store_check(struct store_txn *t, bool repair, store_problem_fn cb, void *arg,
    struct store_check_result *out)
{
	struct check_ctx c = { .t = t, .repair = repair, .cb = cb, .arg = arg, .res = out };
	static const int indexes[] = { DB_READY, DB_INFLIGHT, DB_EXPIRY, DB_CREATED,
		DB_FINISHED };
	struct store_counts have;
	int rc;

	memset(out, 0, sizeof *out);
	rc = store_scan_jobs(t, check_job, &c);
	for (size_t i = 0; rc == 0 && i < SL_ARRAY_LEN(indexes); i++)
		rc = check_index(&c, indexes[i]);
	if (rc)
		goto out;
	rc = store_counts_get(t, &have);
	if (rc && rc != SL_ECORRUPT)
		goto out;
	if (rc || memcmp(have.by_state, c.counts, sizeof c.counts) != 0) {
		bool fixed = false;
		if (repair) {
			unsigned char buf[8 * JOB_STATE_COUNT];
			MDB_val k = { 6, "counts" }, v = { sizeof buf, buf };
			for (int i = 0; i < JOB_STATE_COUNT; i++)
				sl_put_be64(buf + 8 * i, c.counts[i]);
			fixed = mdb_put(t->txn, t->st->dbi[DB_META], &k, &v, 0) == 0;
		}
		problem(&c, "-", "per-state counts disagree with the records", fixed);
	}
	rc = check_tenant_counts(&c);
out:
	free(c.tally);
	return rc;
}
