/*
 * intake.c - the submit record and the overlay of submits journaled but not
 * yet committed (intake.h).
 *
 * Record: 'I' | format | flags (1: group) | n |
 *         [group id (21) | be16 len | group record] |
 *         n x (job id (21) | be16 len | job record | be32 len | body)
 * The job and group records are job.h's and group.h's own encodings, so a
 * replay stores exactly what a direct submit would have.
 *
 * The overlay is a chained hash from id to a reference-counted copy of the
 * record: a poll on a reader thread may still be rendering a record when
 * the loop thread forgets it.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/generation.h"
#include "slowlane/intake.h"
#include "slowlane/journal.h"
#include "slowlane/queue.h"

#define INTAKE_FORMAT 1
#define BUCKETS 8192 /* a journal half holds ~8 K submits of 1 KiB */

/* A decoded record: pointers into its bytes. */
struct view {
	size_t n;
	const char *group_id;                 /* NULL for a single submit */
	const unsigned char *group_rec;
	size_t group_len;
	struct {
		const char *id;                   /* SL_ID_LEN bytes, no NUL */
		const unsigned char *rec;
		size_t rec_len;
		const char *body;
		size_t body_len;
	} m[GROUP_MAX];
};

static int
decode(const void *data, size_t len, struct view *v)
{
	const unsigned char *p = data, *end = p + len;

	memset(v, 0, sizeof *v);
	if (len < 4 || p[0] != 'I' || p[1] != INTAKE_FORMAT || p[3] == 0 || p[3] > GROUP_MAX)
		return SL_ECORRUPT;
	v->n = p[3];
	if (p[2] & 1) {
		if (end - p < 4 + SL_ID_LEN + 2)
			return SL_ECORRUPT;
		v->group_id = (const char *)p + 4;
		v->group_len = (size_t)p[4 + SL_ID_LEN] << 8 | p[5 + SL_ID_LEN];
		v->group_rec = p + 6 + SL_ID_LEN;
		p = v->group_rec + v->group_len;
		if (p > end)
			return SL_ECORRUPT;
	} else {
		p += 4;
	}
	for (size_t i = 0; i < v->n; i++) {
		if (end - p < SL_ID_LEN + 2)
			return SL_ECORRUPT;
		v->m[i].id = (const char *)p;
		v->m[i].rec_len = (size_t)p[SL_ID_LEN] << 8 | p[SL_ID_LEN + 1];
		v->m[i].rec = p + SL_ID_LEN + 2;
		p = v->m[i].rec + v->m[i].rec_len;
		if (end - p < 4)
			return SL_ECORRUPT;
		v->m[i].body_len = sl_get_be32(p);
		v->m[i].body = (const char *)p + 4;
		p += 4;
		if ((size_t)(end - p) < v->m[i].body_len)
			return SL_ECORRUPT;
		p += v->m[i].body_len;
	}
	return p == end ? 0 : SL_ECORRUPT;
}

static int
member_job(const struct view *v, size_t i, struct job *j)
{
	char id[SL_ID_LEN + 1];

	memcpy(id, v->m[i].id, SL_ID_LEN);
	id[SL_ID_LEN] = '\0';
	return job_decode(id, v->m[i].rec, v->m[i].rec_len, j);
}

int
intake_encode(const struct job *jobs, size_t n, const char *const *bodies,
    const size_t *lens, const struct group *g, unsigned char **out, size_t *len)
{
	unsigned char grec[GROUP_ENCODED_MAX], jrec[JOB_ENCODED_MAX], *buf, *p;
	size_t size = 4, glen = 0;

	if (n == 0 || n > GROUP_MAX)
		return SL_EINVAL;
	if (g) {
		glen = group_encode(g, grec);
		size += SL_ID_LEN + 2 + glen;
	}
	for (size_t i = 0; i < n; i++)
		size += SL_ID_LEN + 2 + JOB_ENCODED_MAX + 4 + lens[i]; /* at most */
	buf = p = malloc(size);
	if (!buf)
		return -ENOMEM;
	*p++ = 'I';
	*p++ = INTAKE_FORMAT;
	*p++ = g ? 1 : 0;
	*p++ = (unsigned char)n;
	if (g) {
		memcpy(p, g->id, SL_ID_LEN);
		p[SL_ID_LEN] = (unsigned char)(glen >> 8);
		p[SL_ID_LEN + 1] = (unsigned char)glen;
		memcpy(p + SL_ID_LEN + 2, grec, glen);
		p += SL_ID_LEN + 2 + glen;
	}
	for (size_t i = 0; i < n; i++) {
		size_t jlen = job_encode(&jobs[i], jrec);

		memcpy(p, jobs[i].id, SL_ID_LEN);
		p[SL_ID_LEN] = (unsigned char)(jlen >> 8);
		p[SL_ID_LEN + 1] = (unsigned char)jlen;
		memcpy(p + SL_ID_LEN + 2, jrec, jlen);
		p += SL_ID_LEN + 2 + jlen;
		sl_put_be32(p, (uint32_t)lens[i]);
		memcpy(p + 4, bodies[i], lens[i]);
		p += 4 + lens[i];
	}
	*out = buf;
	*len = (size_t)(p - buf);
	return 0;
}

int
intake_apply(struct store_txn *t, const void *rec, size_t len)
{
	struct view *v = malloc(sizeof *v);
	int rc;

	if (!v)
		return -ENOMEM;
	rc = decode(rec, len, v);
	for (size_t i = 0; rc == 0 && i < v->n; i++) {
		struct job j;
		rc = member_job(v, i, &j);
		if (rc == 0)
			rc = queue_insert_acked(t, &j, v->m[i].body, v->m[i].body_len);
	}
	if (rc == 0 && v->group_id) {
		struct group g;
		char id[SL_ID_LEN + 1];
		memcpy(id, v->group_id, SL_ID_LEN);
		id[SL_ID_LEN] = '\0';
		rc = group_decode(id, v->group_rec, v->group_len, &g);
		if (rc == 0)
			rc = group_put(t, &g);
	}
	free(v);
	return rc;
}

/* ---- crash recovery ---- */

struct replay {
	struct store_txn *t;
	bool apply;   /* false: frames of another store, counted only */
	uint64_t n;
};

static int
replay_one(void *arg, uint64_t seq, const void *rec, size_t len)
{
	struct replay *r = arg;

	(void)seq;
	r->n++;
	return r->apply ? intake_apply(r->t, rec, len) : 0;
}

int
intake_recover(struct store *st, const char *dir, struct journal **out, uint64_t *stored,
    uint64_t *ignored)
{
	struct replay r = { .apply = true };
	struct journal *jn = NULL;
	uint64_t applied = 0, last = 0;
	bool had_seq = true;
	int rc;

	*stored = *ignored = 0;
	if (out)
		*out = NULL;
	rc = store_begin(st, false, &r.t);
	if (rc)
		goto out;
	rc = store_meta_get_u64(r.t, "journal_seq", &applied);
	if (rc == SL_ENOTFOUND) {
		r.apply = had_seq = false;
		rc = 0;
	}
	if (rc == 0) {
		rc = journal_open(dir, applied, replay_one, &r, &last, &jn);
		if (rc == -ENOSPC)
			rc = 0; /* replayed, but no room for a journal: jn stays NULL */
	}
	if (rc)
		goto out;
	if (!out) {
		/* Let go of it now: whoever opens it next does so inside a write
		 * transaction, so after our commit. */
		journal_close(jn);
		jn = NULL;
	}
	if (had_seq && r.n == 0 && last == applied)
		goto done; /* nothing to store: no write (a read-only slowlanectl) */
	rc = store_meta_put_u64(r.t, "journal_seq", last);
	if (rc)
		goto out;
	rc = store_commit(r.t);
	r.t = NULL;
	if (rc)
		goto out;
done:
	*(r.apply ? stored : ignored) = r.n;
	if (out) {
		*out = jn;
		jn = NULL;
	}
out:
	store_abort(r.t);
	journal_close(jn);
	return rc;
}

/* ---- the overlay ---- */

struct intake_ref {
	unsigned refs;          /* guarded by the overlay's mutex */
	size_t len;
	unsigned char data[];   /* decoded when used: a view is 2.4 KB */
};

struct entry {
	char id[SL_ID_LEN];
	struct intake_ref *ref;
	struct entry *next;
};

/* Jobs held per tenant, for the per-key queue limit (few tenants at once). */
struct tenant_jobs {
	char tenant[JOB_TENANT_LEN + 1];
	uint64_t n;
	struct tenant_jobs *next;
};

struct intake {
	pthread_mutex_t mu;
	size_t records;
	struct tenant_jobs *tenants;
	struct entry *bucket[BUCKETS];
};

static size_t
hash(const char *id)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < SL_ID_LEN; i++)
		h = (h ^ (unsigned char)id[i]) * 16777619u;
	return h % BUCKETS;
}

struct intake *
intake_new(void)
{
	struct intake *in = calloc(1, sizeof *in);

	if (in)
		pthread_mutex_init(&in->mu, NULL);
	return in;
}

void
intake_free(struct intake *in)
{
	if (!in)
		return;
	while (in->tenants) {
		struct tenant_jobs *t = in->tenants;
		in->tenants = t->next;
		free(t);
	}
	pthread_mutex_destroy(&in->mu);
	free(in);
}

/* Adds `delta` jobs to `tenant` (mu held); `spare` is used for a new one. */
static void
count_tenant(struct intake *in, const char *tenant, int64_t delta, struct tenant_jobs **spare)
{
	struct tenant_jobs **pp = &in->tenants, *t;

	while (*pp && strcmp((*pp)->tenant, tenant) != 0)
		pp = &(*pp)->next;
	if (!*pp) {
		if (!spare || !*spare)
			return;
		*pp = *spare;
		*spare = NULL;
		memset(*pp, 0, sizeof **pp);
		snprintf((*pp)->tenant, sizeof (*pp)->tenant, "%s", tenant);
	}
	t = *pp;
	t->n += (uint64_t)delta;
	if (t->n == 0) {
		*pp = t->next;
		free(t);
	}
}

uint64_t
intake_tenant_jobs(struct intake *in, const char *tenant)
{
	uint64_t n = 0;

	pthread_mutex_lock(&in->mu);
	for (struct tenant_jobs *t = in->tenants; t; t = t->next)
		if (strcmp(t->tenant, tenant) == 0)
			n = t->n;
	pthread_mutex_unlock(&in->mu);
	return n;
}

/* Drops one reference (mutex held); frees the record at zero. */
static void
unref(struct intake_ref *r)
{
	if (--r->refs == 0)
		free(r);
}

static void
add(struct intake *in, const char *id, struct intake_ref *r, struct entry *e)
{
	size_t h = hash(id);

	memcpy(e->id, id, SL_ID_LEN);
	e->ref = r;
	e->next = in->bucket[h];
	in->bucket[h] = e;
	r->refs++;
}

static void
del(struct intake *in, const char *id)
{
	for (struct entry **pp = &in->bucket[hash(id)]; *pp; pp = &(*pp)->next) {
		struct entry *e = *pp;
		if (memcmp(e->id, id, SL_ID_LEN) == 0) {
			*pp = e->next;
			unref(e->ref);
			free(e);
			return;
		}
	}
}

int
intake_hold(struct intake *in, const void *rec, size_t len, struct intake_ref **held)
{
	struct intake_ref *r = malloc(sizeof *r + len);
	struct tenant_jobs *spare = malloc(sizeof *spare);
	struct entry *e[GROUP_MAX + 1] = { 0 };
	struct job first;
	struct view v;
	size_t k = 0, need;
	int rc = -ENOMEM;

	if (!r || !spare)
		goto out;
	memcpy(r->data, rec, len);
	r->len = len;
	r->refs = 1; /* the holder's */
	rc = decode(r->data, len, &v);
	if (rc == 0)
		rc = member_job(&v, 0, &first); /* all members share a tenant */
	if (rc)
		goto out;
	need = v.n + (v.group_id ? 1 : 0);
	for (; k < need; k++)
		if (!(e[k] = malloc(sizeof **e))) {
			rc = -ENOMEM;
			goto out;
		}
	pthread_mutex_lock(&in->mu);
	k = 0;
	for (size_t i = 0; i < v.n; i++)
		add(in, v.m[i].id, r, e[k++]);
	if (v.group_id)
		add(in, v.group_id, r, e[k++]);
	count_tenant(in, first.tenant, (int64_t)v.n, &spare);
	in->records++;
	pthread_mutex_unlock(&in->mu);
	free(spare); /* NULL if it was used */
	*held = r;
	return 0;
out:
	while (k)
		free(e[--k]);
	free(r);
	free(spare);
	return rc;
}

void
intake_forget(struct intake *in, struct intake_ref *held)
{
	struct job first;
	struct view v;

	if (!held)
		return;
	decode(held->data, held->len, &v); /* it decoded when held */
	member_job(&v, 0, &first);
	pthread_mutex_lock(&in->mu);
	for (size_t i = 0; i < v.n; i++)
		del(in, v.m[i].id);
	if (v.group_id)
		del(in, v.group_id);
	count_tenant(in, first.tenant, -(int64_t)v.n, NULL);
	in->records--;
	unref(held);
	pthread_mutex_unlock(&in->mu);
}

const void *
intake_ref_data(const struct intake_ref *r, size_t *len)
{
	*len = r->len;
	return r->data;
}

size_t
intake_count(struct intake *in)
{
	size_t n;

	pthread_mutex_lock(&in->mu);
	n = in->records;
	pthread_mutex_unlock(&in->mu);
	return n;
}

struct intake_ref *
intake_find(struct intake *in, const char *id)
{
	struct intake_ref *r = NULL;

	pthread_mutex_lock(&in->mu);
	for (struct entry *e = in->bucket[hash(id)]; e; e = e->next)
		if (memcmp(e->id, id, SL_ID_LEN) == 0) {
			r = e->ref;
			r->refs++;
			break;
		}
	pthread_mutex_unlock(&in->mu);
	return r;
}

void
intake_release(struct intake *in, struct intake_ref *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&in->mu);
	unref(r);
	pthread_mutex_unlock(&in->mu);
}

int
intake_render_job(const struct intake_ref *r, const char *id, const char *tenant,
    struct sl_buf *b)
{
	struct view v;

	decode(r->data, r->len, &v);
	for (size_t i = 0; i < v.n; i++) {
		struct job j;
		if (memcmp(v.m[i].id, id, SL_ID_LEN) != 0)
			continue;
		if (member_job(&v, i, &j) != 0 || strcmp(j.tenant, tenant) != 0)
			return SL_ENOTFOUND;
		return generation_render_parts(&j, v.m[i].body, v.m[i].body_len, NULL, 0, b);
	}
	return SL_ENOTFOUND;
}

int
intake_group(const struct intake_ref *r, const char *gid, const char *tenant, struct group *g)
{
	char id[SL_ID_LEN + 1];
	struct view v;

	decode(r->data, r->len, &v);
	if (!v.group_id || memcmp(v.group_id, gid, SL_ID_LEN) != 0)
		return SL_ENOTFOUND;
	memcpy(id, v.group_id, SL_ID_LEN);
	id[SL_ID_LEN] = '\0';
	if (group_decode(id, v.group_rec, v.group_len, g) != 0 ||
	    strcmp(g->tenant, tenant) != 0)
		return SL_ENOTFOUND;
	return 0;
}

int
intake_render_members(const struct intake_ref *r, struct sl_buf *b)
{
	int rc = sl_buf_append(b, "[", 1);
	struct view v;

	decode(r->data, r->len, &v);
	for (size_t i = 0; rc == 0 && i < v.n; i++) {
		struct job j;
		if (i > 0)
			rc = sl_buf_append(b, ",", 1);
		if (rc == 0)
			rc = member_job(&v, i, &j);
		if (rc == 0)
			rc = generation_render_parts(&j, v.m[i].body, v.m[i].body_len, NULL, 0, b);
	}
	return rc ? rc : sl_buf_append(b, "]", 1);
}
