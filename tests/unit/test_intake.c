/*
 * test_intake.c - the submit record and the overlay: a record stores exactly
 * its jobs, bodies and group; a damaged one is refused; held records are
 * found by job id and group id, rendered, and gone once forgotten, while a
 * reference taken before the forget stays readable.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tap.h"
#include "slowlane/common.h"
#include "slowlane/intake.h"

static struct job
new_job(const char *id, const char *tenant)
{
	struct job j = { .state = JOB_QUEUED, .created_ms = 1000, .not_before_ms = 1000,
		.expires_ms = 99999 };
	snprintf(j.id, sizeof j.id, "%s", id);
	snprintf(j.model, sizeof j.model, "m");
	snprintf(j.tenant, sizeof j.tenant, "%s", tenant);
	snprintf(j.message, sizeof j.message, "Queued");
	return j;
}

int
main(void)
{
	const char *A = "AAAAAAAAAAAAAAAAAAAAA", *B = "BBBBBBBBBBBBBBBBBBBBB",
		   *C = "CCCCCCCCCCCCCCCCCCCCC", *G = "GGGGGGGGGGGGGGGGGGGGG";
	struct job one = new_job(A, "t1"), two[2] = { new_job(B, "t1"), new_job(C, "t1") };
	const char *body1[] = { "{\"n\":1}" }, *body2[] = { "{\"n\":2}", "{\"n\":3}" };
	size_t len1[] = { 7 }, len2[] = { 7, 7 };
	struct group g = { .kind = JOB_CHAT, .created_ms = 1000, .size = 2, .remaining = 2 };
	unsigned char *r1, *r2;
	size_t l1, l2;
	struct intake *in = intake_new();
	struct intake_ref *h1 = NULL, *h2 = NULL, *ref;
	struct sl_buf b;
	struct group got;
	char dir[256];

	memcpy(g.id, G, SL_ID_LEN + 1);
	snprintf(g.tenant, sizeof g.tenant, "t1");
	memcpy(g.members[0], B, SL_ID_LEN + 1);
	memcpy(g.members[1], C, SL_ID_LEN + 1);
	ok(intake_encode(&one, 1, body1, len1, NULL, &r1, &l1) == 0, "a single submit encodes");
	ok(intake_encode(two, 2, body2, len2, &g, &r2, &l2) == 0, "a group submit encodes");
	ok(intake_encode(&one, 0, body1, len1, NULL, &r1, &l1) == SL_EINVAL, "no job: EINVAL");

	/* the overlay */
	ok(in && intake_hold(in, r1, l1, &h1) == 0 && intake_hold(in, r2, l2, &h2) == 0,
	    "both records are held");
	is_int((int)intake_count(in), 2, "two records held");
	ok(intake_find(in, "ZZZZZZZZZZZZZZZZZZZZZ") == NULL, "an unknown id is not found");
	ref = intake_find(in, A);
	sl_buf_init(&b, 1 << 20);
	ok(ref && intake_render_job(ref, A, "t1", &b) == 0 && strstr(b.data, "\"request\":{\"n\":1}") &&
	    strstr(b.data, "\"state\":\"Queued\""), "job A renders with its request: %s", b.data);
	sl_buf_release(&b);
	sl_buf_init(&b, 1 << 20);
	ok(intake_render_job(ref, A, "t2", &b) == SL_ENOTFOUND, "another tenant's job is not found");
	ok(intake_group(ref, A, "t1", &got) == SL_ENOTFOUND, "a single submit is no group");
	intake_release(in, ref);
	ref = intake_find(in, C);
	ok(ref && intake_render_job(ref, C, "t1", &b) == 0 && strstr(b.data, "{\"n\":3}"),
	    "a group member is found by its own id");
	intake_release(in, ref);
	sl_buf_release(&b);
	ref = intake_find(in, G);
	sl_buf_init(&b, 1 << 20);
	ok(ref && intake_group(ref, G, "t1", &got) == 0 && got.size == 2 &&
	    strcmp(got.members[1], C) == 0, "the group is found by its id, with its members");
	ok(intake_group(ref, B, "t1", &got) == SL_ENOTFOUND, "a member id is not the group's");
	ok(intake_render_members(ref, &b) == 0 && b.data[0] == '[' && strstr(b.data, "{\"n\":2}") &&
	    strstr(b.data, "{\"n\":3}"), "the members render as an array");
	sl_buf_release(&b);
	intake_forget(in, h2);
	ok(intake_find(in, G) == NULL && intake_find(in, B) == NULL, "forgotten: gone by every id");
	sl_buf_init(&b, 1 << 20);
	ok(intake_render_members(ref, &b) == 0 && strstr(b.data, "{\"n\":3}"),
	    "a reference taken before the forget is still readable");
	sl_buf_release(&b);
	intake_release(in, ref);
	intake_forget(in, h1);
	is_int((int)intake_count(in), 0, "nothing held");
	intake_free(in);

	/* applying to a store */
	snprintf(dir, sizeof dir, "%s/slowlane-test-intake-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return 1;
	{
		struct store_opts so = { .map_size = 16 << 20, .create = true };
		struct store *st;
		struct store_txn *t;
		struct job j;
		const void *data;
		size_t len;

		ok(store_open(dir, &so, &st) == 0, "a store opens");
		store_begin(st, false, &t);
		ok(intake_apply(t, r1, l1) == 0 && intake_apply(t, r2, l2) == 0, "both records apply");
		r2[l2 - 1] ^= 1;
		ok(intake_apply(t, r2, l2 - 1) == SL_ECORRUPT, "a truncated record is refused");
		ok(store_commit(t) == 0, "and commit");
		store_begin(st, true, &t);
		ok(store_job_get(t, C, &j) == 0 && j.state == JOB_QUEUED && strcmp(j.tenant, "t1") == 0,
		    "job C is stored, Queued, with its tenant");
		ok(store_body_get(t, B, &data, &len) == 0 && len == 7 && memcmp(data, "{\"n\":2}", 7) == 0,
		    "job B's body is stored as sent");
		ok(group_get(t, G, &got) == 0 && got.size == 2 && strcmp(got.members[0], B) == 0,
		    "the group is stored");
		store_abort(t);
		store_close(st);
	}
	free(r1);
	free(r2);
	if (tap_rmrf(dir) != 0)
		return 1;
	return tap_done();
}
