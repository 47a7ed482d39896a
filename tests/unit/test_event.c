/* test_event.c - events are written with the state change that causes
 * them; a group completes exactly once; retry and finish move events. */
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

#include "../tap.h"
#include "slowlane/common.h"
#include "slowlane/event.h"
#include "slowlane/group.h"
#include "slowlane/queue.h"
#include "slowlane/store.h"

static struct store *st;

struct seen {
	int n, gen, grp;
	char id[EVENT_ID_LEN + 1];
	uint64_t due;
	char payload[4096];
};

static int
seen_cb(void *arg, const struct event *e)
{
	struct seen *s = arg;

	s->n++;
	s->gen += strcmp(e->type, "generation.completed") == 0;
	s->grp += strcmp(e->type, "slow-group.completed") == 0;
	memcpy(s->id, e->id, sizeof s->id);
	s->due = e->due_ms;
	snprintf(s->payload, sizeof s->payload, "%.*s", (int)e->payload_len, e->payload);
	return 0;
}

static struct seen
outbox(uint64_t now)
{
	struct seen s = { 0 };
	struct store_txn *t;
	uint64_t next;

	store_begin(st, true, &t);
	event_due(t, now, 100, seen_cb, &s, &next);
	store_abort(t);
	return s;
}

static struct job
member(const char *id, const char *group, const char *webhook)
{
	struct job j = { .state = JOB_QUEUED, .created_ms = 1000, .not_before_ms = 1000,
		.expires_ms = 100000 };
	snprintf(j.id, sizeof j.id, "%s", id);
	snprintf(j.group, sizeof j.group, "%s", group);
	snprintf(j.webhook, sizeof j.webhook, "%s", webhook);
	snprintf(j.tenant, sizeof j.tenant, "tenant");
	return j;
}

static int
claim_cb(void *arg, const struct job *j, const void *b, size_t l)
{
	uint64_t *ids = arg;

	ids[j->id[0] - 'A'] = j->attempt_id;
	return 0;
}

int
main(void)
{
	char dir[256];
	struct store_opts so = { .map_size = 64 << 20, .create = true };
	struct store_txn *t;
	struct webhook w;
	struct group g = { .size = 2, .remaining = 2, .created_ms = 1000 };
	uint64_t attempt[4] = { 0 }, next;
	size_t n;
	struct seen s;
	const char *A = "AAAAAAAAAAAAAAAAAAAAA", *B = "BBBBBBBBBBBBBBBBBBBBB",
		   *G = "GGGGGGGGGGGGGGGGGGGGG";
	struct queue_outcome ok_out = { .verdict = QUEUE_SUCCESS, .http_status = 200,
		.message = "Generation successful", .response = "{\"r\":1}", .response_len = 7 };

	snprintf(dir, sizeof dir, "/tmp/slowlane-test-event-XXXXXX");
	if (!mkdtemp(dir) || store_open(dir, &so, &st))
		return 1;
	webhook_init(&w, "tenant", "https://example.com/h", "", 1);
	snprintf(g.id, sizeof g.id, "%s", G);
	snprintf(g.tenant, sizeof g.tenant, "tenant");
	snprintf(g.webhook, sizeof g.webhook, "%s", w.id);
	memcpy(g.members[0], A, SL_ID_LEN + 1);
	memcpy(g.members[1], B, SL_ID_LEN + 1);

	store_begin(st, false, &t);
	webhook_put(t, &w);
	{
		struct job a = member(A, G, w.id), b = member(B, G, "");
		ok(queue_insert(t, &a, "{\"x\":1}", 7) == 0 && queue_insert(t, &b, "{}", 2) == 0 &&
		    group_put(t, &g) == 0, "group and members stored");
	}
	store_commit(t);
	{
		struct group g2;
		store_begin(st, true, &t);
		ok(group_get(t, G, &g2) == 0 && g2.size == 2 && g2.remaining == 2 &&
		    strcmp(g2.members[1], B) == 0 && strcmp(g2.webhook, w.id) == 0,
		    "group record round trip");
		store_abort(t);
	}
	store_begin(st, false, &t);
	queue_claim(t, 2000, 10, 60000, claim_cb, attempt, &n, &next);
	store_commit(t);
	is_int(outbox(UINT64_MAX).n, 0, "no event before anything ends");

	store_begin(st, false, &t);
	ok(queue_complete(t, A, attempt[0], 3000, &ok_out) == 0, "A succeeds");
	store_commit(t);
	s = outbox(UINT64_MAX);
	ok(s.n == 1 && s.gen == 1 && s.grp == 0, "A's generation.completed queued, group waits");
	ok(strstr(s.payload, "\"event\":\"generation.completed\"") &&
	    strstr(s.payload, "\"generation_id\":\"AAAAAAAAAAAAAAAAAAAAA\"") &&
	    strstr(s.payload, "\"state\":\"Success\""), "payload carries the generation");

	store_begin(st, false, &t);
	ok(queue_cancel(t, B, 3500, "cancelled by operator") == 0, "B cancelled");
	store_commit(t);
	s = outbox(UINT64_MAX);
	ok(s.n == 2 && s.grp == 1, "the last member ending queues slow-group.completed");
	ok(strstr(s.payload, "\"group_size\":2") && strstr(s.payload, "\"status\":\"completed\""),
	    "group payload");

	/* requeue a member and end it again: the group completes again once */
	store_begin(st, false, &t);
	ok(queue_requeue(t, B, 4000, 10000, false) == 0, "requeue B");
	store_commit(t);
	store_begin(st, false, &t);
	queue_cancel(t, B, 4500, "again");
	store_commit(t);
	is_int(outbox(UINT64_MAX).grp, 2, "the reopened group completes once more");

	/* retry moves the event to a later due time; finish moves it out */
	s = outbox(UINT64_MAX);
	store_begin(st, false, &t);
	ok(event_retry(t, s.due, s.id, 999999, 500, "receiver answered HTTP 500") == 0, "retry");
	store_commit(t);
	{
		struct seen later = outbox(999999);
		ok(outbox(s.due).n == later.n - 1, "the retried event is due later");
		store_begin(st, false, &t);
		ok(event_finish(t, 999999, s.id, true, 200, "", 5000) == 0, "finish");
		ok(event_retry(t, 999999, s.id, 1, 0, "") == SL_ENOTFOUND, "gone from the outbox");
		store_commit(t);
		is_int(outbox(UINT64_MAX).n, later.n - 1, "outbox shrank by one");
	}
	store_close(st);
	if (tap_rmrf(dir) != 0)
		return 1;
	return tap_done();
}
