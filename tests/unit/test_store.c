/*
 * test_store.c - the store and the queue operations on a real LMDB
 * environment in a temporary directory: every transition leaves the job in
 * exactly the indexes its state implies, fencing drops stale results,
 * recovery puts in-flight jobs back, and a newer format is refused.
 */
#include "config.h"

#include <lmdb.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../tap.h"
#include "slowlane/common.h"
#include "slowlane/idem.h"
#include "slowlane/webhook.h"
#include "slowlane/group.h"
#include "slowlane/event.h"
#include "slowlane/queue.h"
#include "slowlane/util.h"
#include "slowlane/store.h"

static char dir[256];
static struct store *st;

static struct store_txn *
wtxn(void)
{
	struct store_txn *t = NULL;

	if (store_begin(st, false, &t))
		abort();
	return t;
}

static struct job
new_job(const char *id, uint64_t now)
{
	struct job j = { .state = JOB_QUEUED, .created_ms = now, .not_before_ms = now,
		.expires_ms = now + 10000 };
	snprintf(j.id, sizeof j.id, "%s", id);
	snprintf(j.model, sizeof j.model, "m");
	return j;
}

/* Counts entries due by `upto` in ready / expiry, and in inflight. */
static size_t
n_ready(uint64_t upto)
{
	char ids[64][SL_ID_LEN + 1];
	size_t n = 0;
	uint64_t next;
	struct store_txn *t;

	store_begin(st, true, &t);
	store_ready_due(t, upto, 64, ids, NULL, &n, &next);
	store_abort(t);
	return n;
}

static size_t
n_expiry(uint64_t upto)
{
	char ids[64][SL_ID_LEN + 1];
	size_t n = 0;
	uint64_t next;
	struct store_txn *t;

	store_begin(st, true, &t);
	store_expiry_due(t, upto, 64, ids, NULL, &n, &next);
	store_abort(t);
	return n;
}

static size_t
n_inflight(void)
{
	char ids[64][SL_ID_LEN + 1];
	size_t n = 0;
	struct store_txn *t;

	store_begin(st, true, &t);
	store_inflight_list(t, 64, ids, &n);
	store_abort(t);
	return n;
}

struct claimed {
	struct job jobs[16];
	char bodies[16][64];
	size_t n;
};

static int
on_claim(void *arg, const struct job *j, const void *body, size_t len)
{
	struct claimed *c = arg;

	c->jobs[c->n] = *j;
	snprintf(c->bodies[c->n], sizeof c->bodies[0], "%.*s", (int)len, (const char *)body);
	c->n++;
	return 0;
}

/* Straight to LMDB, with no store open (one env per file per process):
 * sets the store in `dir`'s meta "format" to `set` if non-zero; returns
 * the format then. */
static uint32_t
format_rw(uint32_t set)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	unsigned char buf[4];
	MDB_val k = { 6, "format" }, v = { 4, buf };
	uint32_t have = 0;

	sl_put_be32(buf, set);
	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 16);
	mdb_env_open(env, dir, 0, 0600);
	mdb_txn_begin(env, NULL, 0, &txn);
	mdb_dbi_open(txn, "meta", 0, &dbi);
	if (set)
		mdb_put(txn, dbi, &k, &v, 0);
	if (mdb_get(txn, dbi, &k, &v) == 0 && v.mv_size == 4)
		have = sl_get_be32(v.mv_data);
	mdb_txn_commit(txn);
	mdb_env_close(env);
	return have;
}

static struct job
get(const char *id)
{
	struct store_txn *t;
	struct job j;

	memset(&j, 0, sizeof j);
	store_begin(st, true, &t);
	store_job_get(t, id, &j);
	store_abort(t);
	return j;
}

static int
att_cb(void *arg, const struct store_attempt *a)
{
	int *n = arg;

	(*n)++;
	return a->attempt == 0; /* attempts are 1-based */
}

struct scan_acc {
	uint64_t ms[8];
	int n;
};

static int
scan_cb(void *arg, uint64_t ms, const char *id)
{
	struct scan_acc *a = arg;

	if (a->n < 8)
		a->ms[a->n++] = ms;
	return 0;
}

/* Deletes D's ready entry, adds a dangling one and breaks the counts,
 * behind the store's back. */
static void
break_index(const char *path)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi ready, meta, tc;
	unsigned char k[29], tk[JOB_TENANT_LEN] = { 0 }, tn[8];
	MDB_val tkey = { sizeof tk, tk }, tval = { sizeof tn, tn };
	MDB_val key = { sizeof k, k }, v = { 0, "" };
	MDB_val ck = { 6, "counts" }, cv = { 32, "\0\0\0\0\0\0\0\x07\0\0\0\0\0\0\0\0"
	    "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0" };

	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 16);
	mdb_env_open(env, path, 0, 0600);
	mdb_txn_begin(env, NULL, 0, &txn);
	mdb_dbi_open(txn, "ready", 0, &ready);
	mdb_dbi_open(txn, "meta", 0, &meta);
	sl_put_be64(k, 30000);
	memcpy(k + 8, "DDDDDDDDDDDDDDDDDDDDD", 21);
	mdb_del(txn, ready, &key, NULL);
	sl_put_be64(k, 1);
	memcpy(k + 8, "EEEEEEEEEEEEEEEEEEEEE", 21);
	mdb_put(txn, ready, &key, &v, 0);
	mdb_put(txn, meta, &ck, &cv, 0);
	/* the key "" (every job here) said to have 99 unfinished jobs */
	mdb_dbi_open(txn, "tenant_counts", 0, &tc);
	sl_put_be64(tn, 99);
	mdb_put(txn, tc, &tkey, &tval, 0);
	mdb_txn_commit(txn);
	mdb_env_close(env);
}

/* After big deletes of the newest jobs (a purge) the file must still hold
 * every page its meta page counts, or the next open calls the store
 * truncated (seen once in CI: purge, then "lacks databases"; store.c's
 * fill_file() and check_size()). This pattern did not make LMDB leave the
 * tail unwritten here; it asserts the invariant the fix keeps. */
static void
tail_pages_freed(void)
{
	struct store_opts so = { .map_size = 64 << 20, .create = true }, ro = { .read_only = true };
	char d2[300], path[320], body[900], id[SL_ID_LEN + 1];
	struct store *s2 = NULL, *r2 = NULL;
	struct store_txn *t = NULL;
	struct stat sb;
	MDB_env *env;
	MDB_envinfo ei;
	MDB_stat ms;
	int bad = 0;

	snprintf(d2, sizeof d2, "%s-tail", dir);
	memset(body, 'x', sizeof body - 1);
	body[sizeof body - 1] = '\0';
	ok(store_open(d2, &so, &s2) == 0, "tail store opens");
	store_begin(s2, false, &t);
	for (int i = 0; i < 200; i++) {
		struct job j;
		snprintf(id, sizeof id, "K%020d", i);
		j = new_job(id, 1000 + i);
		bad |= queue_insert(t, &j, body, strlen(body));
	}
	bad |= store_commit(t);
	/* then the newest 2,000 deleted in one transaction, as a purge does */
	for (int round = 0; round < 2; round++) {
		store_begin(s2, false, &t);
		for (int i = 0; i < 3000; i++) {
			struct job j;
			snprintf(id, sizeof id, "Z%d%019d", round, i);
			j = new_job(id, 5000 + i);
			bad |= queue_insert(t, &j, body, strlen(body));
		}
		bad |= store_commit(t);
		store_begin(s2, false, &t);
		for (int i = 2999; i >= 0; i--) {
			struct job j;
			snprintf(id, sizeof id, "Z%d%019d", round, i);
			j = new_job(id, 5000 + i);
			bad |= store_job_delete(t, &j);
		}
		bad |= store_commit(t);
	}
	ok(!bad, "3,000 new jobs deleted in one transaction, twice");
	store_close(s2);

	snprintf(path, sizeof path, "%s/data.mdb", d2);
	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 64);
	mdb_env_set_mapsize(env, 64 << 20);
	if (mdb_env_open(env, d2, MDB_RDONLY, 0600) == 0 && mdb_env_info(env, &ei) == 0 &&
	    mdb_env_stat(env, &ms) == 0 && stat(path, &sb) == 0)
		ok((uint64_t)sb.st_size >= (uint64_t)(ei.me_last_pgno + 1) * ms.ms_psize,
		    "the file holds every page its meta page counts (%lld >= %llu)",
		    (long long)sb.st_size, (unsigned long long)(ei.me_last_pgno + 1) * ms.ms_psize);
	else
		ok(0, "reading the tail store with lmdb");
	mdb_env_close(env);
	ok(store_open(d2, &ro, &r2) == 0, "it opens again, read-only, as healthy");
	store_close(r2);
}

/* Opens a new 16 MiB store in a directory of its own (a test apart from
 * main's store); fresh_store_close() closes and removes it. */
static bool
fresh_store(const char *name)
{
	struct store_opts so = { .map_size = 16 << 20, .create = true };

	snprintf(dir, sizeof dir, "%s/slowlane-test-%s-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", name);
	if (mkdtemp(dir) && store_open(dir, &so, &st) == 0)
		return true;
	ok(0, "a store for the %s test", name);
	return false;
}

static void
fresh_store_close(void)
{
	store_close(st);
	st = NULL;
	tap_rmrf(dir);
}

/* Damage behind the store's back, straight to LMDB (no store open): P's
 * record deleted (its index entries left), Q's record made to fail its
 * checksum, R's body deleted, U's ready entry moved to another time, an
 * inflight entry for a job that does not exist, and keys of the wrong
 * length in ready and inflight. */
static void
damage(const char *path)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi jobs, bodies, infl, ready;
	MDB_val k = { SL_ID_LEN, "PPPPPPPPPPPPPPPPPPPPP" }, v, e = { 0, "" };
	MDB_val z = { SL_ID_LEN, "ZZZZZZZZZZZZZZZZZZZZZ" }, zv = { 16, "0123456789abcdef" };
	unsigned char copy[512], tk[8 + SL_ID_LEN];
	MDB_val tkey = { sizeof tk, tk };

	mdb_env_create(&env);
	mdb_env_set_maxdbs(env, 32);
	mdb_env_open(env, path, 0, 0600);
	mdb_txn_begin(env, NULL, 0, &txn);
	mdb_dbi_open(txn, "jobs", 0, &jobs);
	mdb_dbi_open(txn, "bodies", 0, &bodies);
	mdb_dbi_open(txn, "inflight", 0, &infl);
	mdb_dbi_open(txn, "ready", 0, &ready);
	mdb_del(txn, jobs, &k, NULL);
	k.mv_data = "QQQQQQQQQQQQQQQQQQQQQ";
	if (mdb_get(txn, jobs, &k, &v) == 0 && v.mv_size <= sizeof copy) {
		memcpy(copy, v.mv_data, v.mv_size);
		copy[v.mv_size / 2] ^= 0x5a;
		v.mv_data = copy;
		mdb_put(txn, jobs, &k, &v, 0);
	}
	k.mv_data = "RRRRRRRRRRRRRRRRRRRRR";
	mdb_del(txn, bodies, &k, NULL);
	sl_put_be64(tk, 1000);
	memcpy(tk + 8, "UUUUUUUUUUUUUUUUUUUUU", SL_ID_LEN);
	mdb_del(txn, ready, &tkey, NULL);
	sl_put_be64(tk, 500);
	mdb_put(txn, ready, &tkey, &e, 0);
	mdb_put(txn, infl, &z, &zv, 0);
	/* keys of no index's length, sorting first */
	{
		MDB_val bad = { 5, "\0\0\0\0\1" };
		mdb_put(txn, ready, &bad, &e, 0);
		mdb_put(txn, infl, &bad, &zv, 0);
	}
	mdb_txn_commit(txn);
	mdb_env_close(env);
}

struct outbox_seen {
	int n, generation_r, group;
	bool r_request_null, group_has_r;
};

static int
outbox_cb(void *arg, const struct event *e)
{
	struct outbox_seen *o = arg;
	const char *p = e->payload;

	o->n++;
	if (strstr(p, "\"event\":\"generation.completed\"") &&
	    strstr(p, "\"generation_id\":\"RRRRRRRRRRRRRRRRRRRRR\"")) {
		o->generation_r++;
		o->r_request_null = strstr(p, "\"request\":null") && strstr(p, "\"state\":\"Failed\"");
	}
	if (strstr(p, "\"event\":\"slow-group.completed\"")) {
		o->group++;
		o->group_has_r = strstr(p, "RRRRRRRRRRRRRRRRRRRRR") != NULL;
	}
	return 0;
}

static struct outbox_seen
outbox_now(void)
{
	struct outbox_seen o = { 0 };
	struct store_txn *t;
	uint64_t next;

	store_begin(st, true, &t);
	event_due(t, UINT64_MAX, 100, outbox_cb, &o, &next);
	store_abort(t);
	return o;
}

/* A damaged store does not stall the queue (queue.h): entries that no
 * record implies are dropped by the claim, the recovery and the expiry; an
 * entry at the wrong time is moved; a job whose body is gone ends Failed,
 * saying so, and its webhook event and group still go out. */
static void
damaged_store(void)
{
	static const char *const ids[] = { "PPPPPPPPPPPPPPPPPPPPP", "QQQQQQQQQQQQQQQQQQQQQ",
		"RRRRRRRRRRRRRRRRRRRRR", "SSSSSSSSSSSSSSSSSSSSS", "TTTTTTTTTTTTTTTTTTTTT",
		"UUUUUUUUUUUUUUUUUUUUU" };
	static const char G[] = "GGGGGGGGGGGGGGGGGGGGG";
	struct store_check_result res;
	struct claimed c = { 0 };
	struct outbox_seen ob;
	struct webhook w;
	struct group g = { .kind = JOB_CHAT, .size = 2, .remaining = 2, .created_ms = 1000 };
	struct store_txn *t;
	struct job j, r;
	size_t n = 0, dropped = 0;
	uint64_t next;
	int rc;

	if (!fresh_store("damaged"))
		return;
	/* R names a webhook, and R and S make a group that names it too. */
	webhook_init(&w, "", "https://example.com/h", "", 1);
	memcpy(g.id, G, sizeof G);
	memcpy(g.webhook, w.id, sizeof g.webhook);
	memcpy(g.members[0], ids[2], SL_ID_LEN + 1);
	memcpy(g.members[1], ids[3], SL_ID_LEN + 1);
	t = wtxn();
	webhook_put(t, &w);
	group_put(t, &g);
	for (size_t i = 0; i < SL_ARRAY_LEN(ids); i++) {
		j = new_job(ids[i], 1000);
		if (i == 2)
			memcpy(j.webhook, w.id, sizeof j.webhook);
		if (i == 2 || i == 3)
			memcpy(j.group, G, sizeof G);
		queue_insert(t, &j, "{}", 2);
	}
	store_commit(t);
	store_close(st);
	damage(dir);
	store_open(dir, &(struct store_opts){ .map_size = 16 << 20 }, &st);

	t = wtxn();
	rc = queue_claim(t, 2000, 16, 60000, on_claim, &c, &n, &next);
	store_commit(t);
	ok(rc == 0 && n == 2 && c.n == 2 && strcmp(c.jobs[0].id, ids[3]) == 0 &&
	    strcmp(c.jobs[1].id, ids[4]) == 0,
	    "claim: past a damaged key, a ready entry without a record, one failing its "
	    "checksum and one at the wrong time, the two sound jobs are claimed (rc %d, %zu)",
	    rc, n);
	is_int(n_ready(UINT64_MAX), 1, "the dangling ready entries are gone; U's is moved");
	is_int(n_ready(999), 0, "to the time its record says");
	r = get(ids[2]);
	ok(r.state == JOB_FAILED && r.end == JOB_END_DAMAGED && r.attempts == 0 &&
	    r.dispatched_ms == 0 && strstr(r.message, "could not be read"),
	    "a job whose body is gone ends Failed, no attempt counted, never dispatched (%s: %s)",
	    job_state_name(r.state), r.message);
	ob = outbox_now();
	ok(ob.generation_r == 1 && ob.r_request_null,
	    "its webhook event is queued, with request null (%d events)", ob.n);
	rc = queue_claim(t = wtxn(), 2000, 16, 60000, on_claim, &c, &n, &next);
	store_commit(t);
	ok(rc == 0 && n == 1 && strcmp(c.jobs[2].id, ids[5]) == 0,
	    "the next claim takes U from its moved entry");

	t = wtxn();
	rc = queue_recover(t, 3000, 256, &n, &dropped);
	store_commit(t);
	ok(rc == 0 && n == 3 && dropped == 1,
	    "recovery puts the three jobs back and drops the dangling entry (%zu, %zu)", n,
	    dropped);
	is_int(n_inflight(), 0, "nothing left in inflight");
	ok(get(ids[3]).state == JOB_QUEUED && get(ids[4]).state == JOB_QUEUED &&
	    get(ids[5]).state == JOB_QUEUED, "the sound jobs are Queued again");

	t = wtxn();
	rc = queue_expire(t, 20000, 256, NULL, NULL, &n, &next);
	store_commit(t);
	ok(rc == 0 && n == 3, "expiry ends the three sound jobs, past the damaged ones (%zu)", n);
	is_int(n_expiry(UINT64_MAX), 0, "the dangling expiry entries are gone");
	ob = outbox_now();
	ok(ob.group == 1 && ob.group_has_r,
	    "the group completes, its event listing the damaged member too (%d events)", ob.n);

	store_begin(st, true, &t);
	rc = store_check(t, false, NULL, NULL, &res);
	store_abort(t);
	ok(rc == 0 && res.problems >= 2, "check still reports what was damaged (%llu problems)",
	    (unsigned long long)res.problems);
	fresh_store_close();
}

/* A job given back uncalled (a pause) keeps its place: a claim of one
 * afterwards takes it, not a job queued after it. */
static void
release_keeps_place(void)
{
	struct claimed c = { 0 };
	struct store_txn *t;
	struct job j;
	size_t n = 0;
	uint64_t next;
	int rc;

	if (!fresh_store("release"))
		return;
	t = wtxn();
	j = new_job("AAAAAAAAAAAAAAAAAAAAA", 1000);
	queue_insert(t, &j, "{}", 2);
	store_commit(t);
	t = wtxn();
	queue_claim(t, 2000, 1, 60000, on_claim, &c, &n, &next);
	store_commit(t);
	t = wtxn();
	j = new_job("BBBBBBBBBBBBBBBBBBBBB", 3000); /* queued while A was claimed */
	queue_insert(t, &j, "{}", 2);
	rc = queue_release(t, "AAAAAAAAAAAAAAAAAAAAA", c.jobs[0].attempt_id, 5000, false);
	store_commit(t);
	t = wtxn();
	queue_claim(t, 6000, 1, 60000, on_claim, &c, &n, &next);
	store_commit(t);
	ok(rc == 0 && n == 1 && strcmp(c.jobs[1].id, "AAAAAAAAAAAAAAAAAAAAA") == 0 &&
	    get("AAAAAAAAAAAAAAAAAAAAA").attempts == 1,
	    "released uncalled, A is claimed again before B, queued after it");
	fresh_store_close();
}

/* idem_sweep: steps of `budget` records walk the whole table through the
 * cursor, delete what is older than the keep, and keep records written
 * before the stamp existed. */
static void
idem_records(void)
{
	char d2[300], key[16], *ans = NULL;
	struct store_opts so = { .map_size = 16 << 20, .create = true };
	struct store *s2;
	struct store_txn *t;
	unsigned char next[IDEM_RECORD_KEY_MAX], from[IDEM_RECORD_KEY_MAX];
	/* IDEM_DIGEST_LEN: the endpoint-and-body digest, then the body's alone */
	static const char hash[IDEM_DIGEST_LEN + 1] =
	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	    "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
	char other[IDEM_DIGEST_LEN + 1];
	unsigned char oldk[16 + 3] = { 't', '1' }; /* tenant "t1", NUL-padded */
	size_t flen = 0, nlen, del, total = 0, steps = 0;
	bool same = false;

	snprintf(d2, sizeof d2, "%s-idem", dir);
	mkdir(d2, 0700);
	ok(store_open(d2, &so, &s2) == 0 && store_begin(s2, false, &t) == 0, "idem store opens");
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof key, "key-%d", i);
		idem_store(t, "t1", key, hash, "{\"id\":\"x\"}");
	}
	/* A record as versions before the stamp wrote it: the body's hash,
	 * then the answer; and one stamped before endpoints were hashed. */
	memcpy(oldk + 16, "old", 3);
	{
		char rec[64 + 7];
		unsigned char v1[64 + 1 + 8 + 7], v1k[16 + 2] = { 't', '1', [16] = 'v', '1' };
		memcpy(rec, hash + 64, 64);
		memcpy(rec + 64, "{\"o\":1}", 7);
		store_table_put(t, STORE_T_IDEMPOTENCY, oldk, sizeof oldk, rec, sizeof rec);
		memcpy(v1, hash + 64, 64);
		v1[64] = 0x01;
		sl_put_be64(v1 + 65, sl_wall_ms());
		memcpy(v1 + 73, "{\"v\":1}", 7);
		store_table_put(t, STORE_T_IDEMPOTENCY, v1k, sizeof v1k, v1, sizeof v1);
	}
	ok(store_commit(t) == 0, "12 records stored");
	store_begin(s2, false, &t);
	ok(idem_lookup(t, "t1", "old", hash, &ans, &same) == 0 && same &&
	    strcmp(ans, "{\"o\":1}") == 0, "an unstamped record still answers");
	free(ans);
	ans = NULL;
	ok(idem_lookup(t, "t1", "key-3", hash, &ans, &same) == 0 && same &&
	    strcmp(ans, "{\"id\":\"x\"}") == 0, "a stamped record answers without its stamp");
	free(ans);
	ok(idem_lookup(t, "t1", "v1", hash, &ans, &same) == 0 && same &&
	    strcmp(ans, "{\"v\":1}") == 0, "a record stamped before endpoints were hashed "
	    "matches the body's digest (a retry across the upgrade)");
	free(ans);
	memcpy(other, hash, sizeof other);
	other[0] = 'x'; /* same body, another endpoint */
	ok(idem_lookup(t, "t1", "key-3", other, &ans, &same) == 0 && !same,
	    "a new record compares the endpoint's digest");
	free(ans);
	ok(idem_sweep(t, sl_wall_ms(), 3600 * 1000, NULL, 0, 100, next, &nlen, &del) == 0 &&
	    del == 0 && nlen == 0, "within the keep nothing goes, one step reaches the end");
	do {
		ok(idem_sweep(t, sl_wall_ms() + 5000, 1000, from, flen, 3, next, &nlen, &del) == 0,
		    "step %zu", steps);
		total += del;
		memcpy(from, next, nlen);
		flen = nlen;
	} while (nlen && ++steps < 20);
	is_int(total, 11, "steps of 3 deleted the 11 stamped records past the keep");
	is_int(steps, 3, "in 4 steps, the cursor carried between them");
	ok(idem_lookup(t, "t1", "key-0", hash, &ans, &same) == SL_ENOTFOUND &&
	    idem_lookup(t, "t1", "old", hash, &ans, &same) == 0, "the unstamped one is kept");
	free(ans);
	store_abort(t);
	store_close(s2);
	tap_rmrf(d2);
}

int
main(void)
{
	struct store_opts so = { .map_size = 64 << 20, .create = true };
	struct store_txn *t;
	struct claimed c = { 0 };
	struct store_counts counts;
	struct job j;
	size_t n, dropped;
	uint64_t next;
	const char *A = "AAAAAAAAAAAAAAAAAAAAA", *B = "BBBBBBBBBBBBBBBBBBBBB",
		   *C = "CCCCCCCCCCCCCCCCCCCCC";

	snprintf(dir, sizeof dir, "%s/slowlane-test-store-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return 1;
	ok(store_open(dir, &so, &st) == 0, "store opens in %s", dir);

	/* insert three jobs; B is due later */
	t = wtxn();
	j = new_job(A, 1000);
	ok(queue_insert(t, &j, "{\"a\":1}", 7) == 0, "insert A");
	j = new_job(B, 1000);
	j.not_before_ms = 5000;
	ok(queue_insert(t, &j, "{\"b\":2}", 7) == 0, "insert B (due later)");
	j = new_job(C, 1001);
	ok(queue_insert(t, &j, "{\"c\":3}", 7) == 0, "insert C");
	ok(store_commit(t) == 0, "commit");
	is_int(n_ready(2000), 2, "two jobs due at 2000");
	is_int(n_ready(6000), 3, "three due at 6000");
	is_int(n_expiry(UINT64_MAX), 3, "every unfinished job has an expiry entry");

	/* claim */
	t = wtxn();
	ok(queue_claim(t, 2000, 10, 60000, on_claim, &c, &n, &next) == 0 && n == 2,
	    "claim takes the two due jobs");
	is_int(next, 5000, "next due time reported");
	store_commit(t);
	ok(c.n == 2 && strcmp(c.jobs[0].id, A) == 0 && strcmp(c.bodies[0], "{\"a\":1}") == 0,
	    "claimed in due order with bodies");
	ok(c.jobs[0].attempt_id != 0 && c.jobs[0].attempt_id != c.jobs[1].attempt_id,
	    "fresh attempt ids");
	is_int(n_ready(2000), 0, "claimed jobs left the ready index");
	is_int(n_inflight(), 2, "and are in the inflight index");
	is_int(get(A).state, JOB_IN_PROGRESS, "A is In Progress");

	/* complete A with success, C with a stale attempt then retry */
	t = wtxn();
	struct queue_outcome ok_out = { .verdict = QUEUE_SUCCESS, .http_status = 200,
		.message = "Generation successful", .response = "{\"r\":1}", .response_len = 7 };
	ok(queue_complete(t, A, c.jobs[0].attempt_id, 3000, &ok_out) == 0, "A succeeds");
	ok(queue_complete(t, A, c.jobs[0].attempt_id, 3001, &ok_out) == SL_ESTALE,
	    "a second answer for A is fenced");
	ok(queue_complete(t, C, c.jobs[1].attempt_id + 1, 3000, &ok_out) == SL_ESTALE,
	    "an answer from another attempt is fenced");
	struct queue_outcome retry = { .verdict = QUEUE_RETRY, .not_before_ms = 4000,
		.http_status = 503, .message = "Queued for retry" };
	ok(queue_complete(t, C, c.jobs[1].attempt_id, 3000, &retry) == 0, "C retries");
	store_commit(t);
	j = get(A);
	ok(j.state == JOB_SUCCESS && j.finished_ms == 3000 &&
	    strcmp(j.message, "Generation successful") == 0, "A stored as Success");
	{
		const void *p;
		size_t len;
		store_begin(st, true, &t);
		ok(store_result_get(t, A, &p, &len) == 0 && len == 7 && memcmp(p, "{\"r\":1}", 7) == 0,
		    "A's result stored");
		ok(store_result_get(t, C, &p, &len) == SL_ENOTFOUND, "C has no result yet");
		store_abort(t);
	}
	is_int(n_inflight(), 0, "nothing in flight");
	is_int(n_ready(3999), 0, "C not due before its backoff");
	is_int(n_ready(4000), 1, "C due after its backoff");
	is_int(n_expiry(UINT64_MAX), 2, "A left the expiry index");
	j = get(C);
	ok(j.state == JOB_QUEUED && j.http_status == 503 && j.attempts == 1,
	    "C is Queued with its last status");

	/* crash recovery: claim C, then "crash" (recover without finishing) */
	memset(&c, 0, sizeof c);
	t = wtxn();
	queue_claim(t, 4000, 10, 60000, on_claim, &c, &n, &next);
	store_commit(t);
	is_int(n_inflight(), 1, "C in flight before the crash");
	t = wtxn();
	ok(queue_recover(t, 4500, 256, &n, &dropped) == 0 && n == 1 && dropped == 0,
	    "recovery puts one job back");
	store_commit(t);
	is_int(n_inflight(), 0, "inflight empty after recovery");
	is_int(get(C).state, JOB_QUEUED, "C is Queued again");
	t = wtxn();
	ok(queue_complete(t, C, c.jobs[0].attempt_id, 4600, &ok_out) == SL_ESTALE,
	    "the interrupted attempt's answer is fenced");
	store_abort(t);

	/* expiry of queued and in-flight jobs */
	memset(&c, 0, sizeof c);
	t = wtxn();
	queue_claim(t, 6000, 1, 60000, on_claim, &c, &n, &next); /* C in flight */
	store_commit(t);
	{
		int seen = 0;
		t = wtxn();
		ok(queue_expire(t, 11001, 256, NULL, NULL, &n, &next) == 0 && n == 2,
		    "B (queued) and C (in flight) expire");
		store_commit(t);
		(void)seen;
	}
	j = get(B);
	ok(j.state == JOB_FAILED && strstr(j.message, "Expired") != NULL, "B Failed, expired");
	j = get(C);
	ok(j.state == JOB_FAILED && strstr(j.message, "in progress") != NULL,
	    "C Failed, abandoned in progress");
	is_int(n_ready(UINT64_MAX) + n_inflight() + n_expiry(UINT64_MAX), 0,
	    "ended jobs are in no queue index");

	/* requeue and cancel */
	t = wtxn();
	ok(queue_requeue(t, A, 20000, 10000, false) == SL_ESTALE, "Success needs force");
	ok(queue_requeue(t, B, 20000, 10000, false) == 0, "requeue Failed job B");
	store_commit(t);
	j = get(B);
	ok(j.state == JOB_QUEUED && j.attempts == 0 && j.expires_ms == 30000,
	    "B Queued with fresh expiry and attempts");
	is_int(n_ready(20000), 1, "B back in ready");
	t = wtxn();
	ok(queue_cancel(t, B, 21000, "cancelled by operator") == 0, "cancel B");
	ok(queue_cancel(t, B, 21000, "again") == SL_ESTALE, "cancel twice is stale");
	ok(queue_cancel(t, "ZZZZZZZZZZZZZZZZZZZZZ", 21000, "x") == SL_ENOTFOUND,
	    "cancel unknown id");
	store_commit(t);
	is_str(get(B).message, "cancelled by operator", "cancel message kept");

	store_begin(st, true, &t);
	store_counts_get(t, &counts);
	store_abort(t);
	ok(counts.by_state[JOB_SUCCESS] == 1 && counts.by_state[JOB_FAILED] == 2 &&
	    counts.by_state[JOB_QUEUED] == 0 && counts.by_state[JOB_IN_PROGRESS] == 0,
	    "per-state counts follow every transition");

	/* delete */
	t = wtxn();
	j = get(A);
	ok(store_job_delete(t, &j) == 0, "delete A");
	store_commit(t);
	store_begin(st, true, &t);
	ok(store_job_get(t, A, &j) == SL_ENOTFOUND, "A gone");
	store_abort(t);

	/* history of attempts */
	{
		int n_att = 0;
		struct store_attempt first = { 0 };
		store_begin(st, true, &t);
		store_attempt_list(t, C, att_cb, &n_att);
		store_abort(t);
		ok(n_att >= 2, "C's attempts are recorded (%d)", n_att);
		(void)first;
	}

	/* the consistency check: clean, then with a broken index */
	{
		struct store_check_result res;
		t = wtxn();
		j = new_job("DDDDDDDDDDDDDDDDDDDDD", 30000);
		queue_insert(t, &j, "{}", 2);
		store_commit(t);
		store_begin(st, true, &t);
		ok(store_check(t, false, NULL, NULL, &res) == 0 && res.problems == 0 && res.jobs == 3,
		    "check: a consistent store has no problems (%llu jobs)",
		    (unsigned long long)res.jobs);
		store_abort(t);
		store_close(st);
		break_index(dir);
		store_open(dir, &so, &st);
		store_begin(st, true, &t);
		ok(store_check(t, false, NULL, NULL, &res) == 0 && res.problems == 4,
		    "check finds a missing, a dangling entry, bad counts and a key's bad "
		    "unfinished count (%llu)", (unsigned long long)res.problems);
		store_abort(t);
		t = wtxn();
		ok(store_check(t, true, NULL, NULL, &res) == 0 && res.repaired == 4, "repair fixes them");
		store_commit(t);
		store_begin(st, true, &t);
		ok(store_check(t, false, NULL, NULL, &res) == 0 && res.problems == 0,
		    "clean after repair");
		store_abort(t);
		is_int(n_ready(UINT64_MAX), 1, "D is back in ready");
	}

	/* newest-first scan of the created index */
	{
		struct scan_acc acc = { 0 };
		store_begin(st, true, &t);
		store_scan_time(t, STORE_CREATED, UINT64_MAX, true, scan_cb, &acc);
		store_abort(t);
		ok(acc.n == 3 && acc.ms[0] >= acc.ms[1] && acc.ms[1] >= acc.ms[2],
		    "created index scans newest first");
	}

	/* retention purge: ended jobs before the cutoff go, with everything */
	{
		size_t purged = 0;
		uint64_t before = get(C).finished_ms + 1;
		t = wtxn();
		ok(queue_purge(t, before, 256, &purged) == 0 && purged >= 1,
		    "purge deletes ended jobs finished before the cutoff");
		store_commit(t);
		store_begin(st, true, &t);
		ok(store_job_get(t, C, &j) == SL_ENOTFOUND, "C purged");
		ok(store_job_get(t, "DDDDDDDDDDDDDDDDDDDDD", &j) == 0, "unfinished D kept");
		{
			struct store_check_result res;
			ok(store_check(t, false, NULL, NULL, &res) == 0 && res.problems == 0,
			    "store consistent after purge");
			int n_att = 0;
			store_attempt_list(t, C, att_cb, &n_att);
			is_int(n_att, 0, "purge removed C's attempt history");
		}
		store_abort(t);
	}

	/* persistence across reopen, and a newer format refused */
	store_close(st);
	ok(store_open(dir, &so, &st) == 0 && get("DDDDDDDDDDDDDDDDDDDDD").state == JOB_QUEUED,
	    "reopen keeps jobs");
	store_close(st);
	format_rw(9);
	ok(store_open(dir, &so, &st) == SL_EVERSION, "a newer store format is refused");
	/* A format 1 store is upgraded by a writable open; its records read. */
	format_rw(1);
	ok(store_open(dir, &so, &st) == 0 && get("DDDDDDDDDDDDDDDDDDDDD").state == JOB_QUEUED,
	    "a format 1 store opens, its jobs read");
	store_close(st);
	is_int(format_rw(0), STORE_FORMAT, "and is marked format %d", STORE_FORMAT);
	{
		struct store_opts ro = { .read_only = true };
		ok(store_open("/nonexistent/slowlane", &ro, &st) == SL_ENOTFOUND,
		    "a missing store is reported read-only");
	}
	if (tap_rmrf(dir) != 0)
		return 1;
	tail_pages_freed();
	idem_records();
	damaged_store();
	release_keeps_place();
	return tap_done();
}
