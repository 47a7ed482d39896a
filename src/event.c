/*
 * event.c - webhook events: produced inside the transactions that change
 * jobs, kept in the outbox until delivered (see event.h).
 *
 * Outbox key: due_ms (be64) | event id. Record (both tables): u8 format(=1)
 * u8 outcome u64 created u64 finished u32 attempts u16 last_status,
 * u8 len + type, u8 len + webhook, u8 len + subject, u16 len + url,
 * u16 len + last_error, then the payload to the end.
 */
#include "config.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/event.h"
#include "slowlane/generation.h"
#include "slowlane/group.h"
#include "slowlane/log.h"
#include "slowlane/util.h"

#define EVENT_FORMAT 1
#define OUTBOX_KEY_LEN (8 + EVENT_ID_LEN)

static void
outbox_key(unsigned char *k, uint64_t due_ms, const char *id)
{
	sl_put_be64(k, due_ms);
	memcpy(k + 8, id, EVENT_ID_LEN);
}

static unsigned char *
put_str(unsigned char *p, const char *s, size_t max, int lenbytes)
{
	size_t n = strnlen(s, max);

	if (lenbytes == 2)
		*p++ = (unsigned char)(n >> 8);
	*p++ = (unsigned char)n;
	memcpy(p, s, n);
	return p + n;
}

static const unsigned char *
get_str(const unsigned char *p, const unsigned char *end, char *dst, size_t max, int lenbytes)
{
	size_t n;

	if (!p || end - p < lenbytes)
		return NULL;
	n = lenbytes == 2 ? ((size_t)p[0] << 8 | p[1]) : p[0];
	p += lenbytes;
	if (n > max || (size_t)(end - p) < n)
		return NULL;
	memcpy(dst, p, n);
	dst[n] = '\0';
	return p + n;
}

/* Writes `e` under `key` in table `tb`. */
static int
put_event(struct store_txn *t, enum store_table tb, const void *key, size_t klen,
    const struct event *e)
{
	size_t cap = 64 + sizeof e->type + sizeof e->webhook + sizeof e->subject +
	    sizeof e->url + sizeof e->last_error + e->payload_len;
	unsigned char *buf = malloc(cap), *p = buf;
	int rc;

	if (!buf)
		return -12; /* -ENOMEM */
	*p++ = EVENT_FORMAT;
	*p++ = e->outcome;
	sl_put_be64(p, e->created_ms);
	sl_put_be64(p + 8, e->finished_ms);
	sl_put_be32(p + 16, e->attempts);
	p[20] = (unsigned char)(e->last_status >> 8);
	p[21] = (unsigned char)e->last_status;
	p += 22;
	p = put_str(p, e->type, EVENT_TYPE_MAX, 1);
	p = put_str(p, e->webhook, JOB_WEBHOOK_MAX, 1);
	p = put_str(p, e->subject, EVENT_SUBJECT_MAX, 1);
	p = put_str(p, e->url, WEBHOOK_URL_MAX, 2);
	p = put_str(p, e->last_error, EVENT_ERROR_MAX, 2);
	memcpy(p, e->payload, e->payload_len);
	p += e->payload_len;
	rc = store_table_put(t, tb, key, klen, buf, (size_t)(p - buf));
	free(buf);
	return rc;
}

/* Decodes a record; e->payload points into `data`. */
static int
decode_event(const void *data, size_t len, struct event *e)
{
	const unsigned char *p = data, *end = p + len;

	if (len < 23 || p[0] != EVENT_FORMAT)
		return SL_ECORRUPT;
	e->outcome = p[1];
	e->created_ms = sl_get_be64(p + 2);
	e->finished_ms = sl_get_be64(p + 10);
	e->attempts = sl_get_be32(p + 18);
	e->last_status = (uint16_t)(p[22] << 8 | p[23]);
	p += 24;
	p = get_str(p, end, e->type, EVENT_TYPE_MAX, 1);
	p = get_str(p, end, e->webhook, JOB_WEBHOOK_MAX, 1);
	p = get_str(p, end, e->subject, EVENT_SUBJECT_MAX, 1);
	p = get_str(p, end, e->url, WEBHOOK_URL_MAX, 2);
	p = get_str(p, end, e->last_error, EVENT_ERROR_MAX, 2);
	if (!p)
		return SL_ECORRUPT;
	e->payload = (const char *)p;
	e->payload_len = (size_t)(end - p);
	return 0;
}

int
event_new_id(char *out)
{
	memcpy(out, "evt_", 4);
	return sl_random_id(out + 4, EVENT_ID_LEN - 4);
}

int
event_enqueue(struct store_txn *t, const char *id, const char *type, const char *webhook,
    const char *subject, const char *url, const char *payload, size_t len, uint64_t now_ms)
{
	struct event e;
	unsigned char key[OUTBOX_KEY_LEN];
	int rc;

	memset(&e, 0, sizeof e);
	if (id && strlen(id) == EVENT_ID_LEN) {
		memcpy(e.id, id, EVENT_ID_LEN);
	} else {
		rc = event_new_id(e.id);
		if (rc)
			return rc;
	}
	e.created_ms = now_ms;
	snprintf(e.type, sizeof e.type, "%s", type);
	snprintf(e.webhook, sizeof e.webhook, "%s", webhook ? webhook : "");
	snprintf(e.subject, sizeof e.subject, "%s", subject ? subject : "");
	snprintf(e.url, sizeof e.url, "%s", url ? url : "");
	e.payload = payload;
	e.payload_len = len;
	outbox_key(key, now_ms, e.id);
	return put_event(t, STORE_T_OUTBOX, key, sizeof key, &e);
}

/* The registered webhook `id` of `tenant`, if it wants `type`. */
static bool
target_wants(struct store_txn *t, const char *id, const char *tenant, const char *type)
{
	struct webhook w;

	if (!id[0] || webhook_get(t, id, &w) != 0)
		return false;
	return strcmp(w.tenant, tenant) == 0 && webhook_wants(&w, type);
}

/* What one kind of inference.net event puts in its envelope. */
struct envelope {
	const char *type;         /* "generation.completed", ... */
	const char *webhook;      /* target webhook id */
	const char *subject_key;  /* "generation_id" or "group_id" */
	const char *subject;
	/* Appends the value of "data". */
	int (*data)(struct store_txn *t, const void *what, struct sl_buf *b);
	const void *what;
};

static int
generation_data(struct store_txn *t, const void *what, struct sl_buf *b)
{
	return generation_render_event(t, what, b);
}

static int
group_data(struct store_txn *t, const void *what, struct sl_buf *b)
{
	const struct group *g = what;
	int rc = sl_buf_printf(b, "{\"group_size\":%u,\"status\":\"completed\","
	    "\"generations\":", g->size);

	if (!rc)
		rc = generation_render_list(t, (const char (*)[SL_ID_LEN + 1])g->members, g->size,
		    true, b);
	return rc ? rc : sl_buf_append(b, "}", 1);
}

/* Renders {"event","timestamp","webhook_id",<subject>,"data"} and queues it. */
static int
emit(struct store_txn *t, const struct envelope *e, uint64_t now_ms)
{
	struct sl_buf b;
	char ts[32];
	int rc;

	sl_buf_init(&b, (size_t)1 << 30);
	rc = sl_buf_printf(&b, "{\"event\":\"%s\",\"timestamp\":\"%s\",\"webhook_id\":\"%s\","
	    "\"%s\":\"%s\",\"data\":", e->type, sl_fmt_iso8601(now_ms, ts, sizeof ts),
	    e->webhook, e->subject_key, e->subject);
	if (!rc)
		rc = e->data(t, e->what, &b);
	if (!rc)
		rc = sl_buf_append(&b, "}", 1);
	if (!rc)
		rc = event_enqueue(t, NULL, e->type, e->webhook, e->subject, NULL, b.data, b.len,
		    now_ms);
	sl_buf_release(&b);
	return rc;
}

static int
generation_event(struct store_txn *t, const struct job *j, uint64_t now_ms)
{
	struct envelope e = { "generation.completed", j->webhook, "generation_id", j->id,
		generation_data, j };

	return target_wants(t, j->webhook, j->tenant, e.type) ? emit(t, &e, now_ms) : 0;
}

static int
group_event(struct store_txn *t, const struct group *g, uint64_t now_ms)
{
	struct envelope e = { "slow-group.completed", g->webhook, "group_id", g->id, group_data,
		g };

	return target_wants(t, g->webhook, g->tenant, e.type) ? emit(t, &e, now_ms) : 0;
}

int
event_job_ended(struct store_txn *t, const struct job *j, uint64_t now_ms)
{
	struct group g;
	int rc;

	rc = generation_event(t, j, now_ms);
	if (rc || !j->group[0])
		return rc;
	rc = group_get(t, j->group, &g);
	if (rc == SL_ENOTFOUND)
		return 0;
	if (rc)
		return rc;
	if (g.remaining == 0)
		return 0; /* counted already (a requeued member ended again) */
	g.remaining--;
	rc = group_put(t, &g);
	if (rc == 0 && g.remaining == 0)
		rc = group_event(t, &g, now_ms);
	return rc;
}

int
event_job_reopened(struct store_txn *t, const struct job *j)
{
	struct group g;
	int rc;

	if (!j->group[0])
		return 0;
	rc = group_get(t, j->group, &g);
	if (rc)
		return rc == SL_ENOTFOUND ? 0 : rc;
	if (g.remaining < g.size)
		g.remaining++;
	return group_put(t, &g);
}

struct due_ctx {
	uint64_t now_ms;
	size_t max, n;
	uint64_t next;
	int (*cb)(void *arg, const struct event *e);
	void *arg;
};

static int
due_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct due_ctx *d = arg;
	struct event e;
	uint64_t due;

	if (klen != OUTBOX_KEY_LEN)
		return 0;
	due = sl_get_be64(key);
	if (due > d->now_ms || d->n >= d->max) {
		d->next = due;
		return 1;
	}
	memset(&e, 0, sizeof e);
	memcpy(e.id, (const char *)key + 8, EVENT_ID_LEN);
	e.due_ms = due;
	if (!data || decode_event(data, len, &e) != 0) {
		log_error("event: outbox record %s is corrupt; skipped", e.id);
		return 0;
	}
	d->n++;
	return d->cb(d->arg, &e);
}

int
event_due(struct store_txn *t, uint64_t now_ms, size_t max,
    int (*cb)(void *arg, const struct event *e), void *arg, uint64_t *next_due_ms)
{
	struct due_ctx d = { .now_ms = now_ms, .max = max, .next = UINT64_MAX, .cb = cb,
		.arg = arg };
	int rc = store_table_scan(t, STORE_T_OUTBOX, NULL, 0, due_one, &d);

	if (next_due_ms)
		*next_due_ms = d.next;
	return rc < 0 ? rc : 0;
}

/* Reads outbox event (due_ms, id) into e (payload into the txn). */
static int
load(struct store_txn *t, uint64_t due_ms, const char *id, struct event *e)
{
	unsigned char key[OUTBOX_KEY_LEN];
	const void *data;
	size_t len;
	int rc;

	outbox_key(key, due_ms, id);
	rc = store_table_get(t, STORE_T_OUTBOX, key, sizeof key, &data, &len);
	if (rc)
		return rc;
	memset(e, 0, sizeof *e);
	snprintf(e->id, sizeof e->id, "%s", id);
	e->due_ms = due_ms;
	return decode_event(data, len, e);
}

/* The record must be re-put before its old key is deleted: its payload
 * points into LMDB memory that a delete may reuse. */
static int
move_event(struct store_txn *t, struct event *e, enum store_table tb, const void *nkey,
    size_t nklen, uint64_t old_due)
{
	unsigned char okey[OUTBOX_KEY_LEN];
	char *copy = malloc(e->payload_len + 1);
	int rc;

	if (!copy)
		return -12;
	memcpy(copy, e->payload, e->payload_len);
	e->payload = copy;
	outbox_key(okey, old_due, e->id);
	rc = store_table_del(t, STORE_T_OUTBOX, okey, sizeof okey);
	if (!rc)
		rc = put_event(t, tb, nkey, nklen, e);
	free(copy);
	return rc;
}

int
event_retry(struct store_txn *t, uint64_t due_ms, const char *id, uint64_t new_due_ms,
    uint16_t status, const char *error)
{
	unsigned char nkey[OUTBOX_KEY_LEN];
	struct event e;
	int rc = load(t, due_ms, id, &e);

	if (rc)
		return rc;
	e.attempts++;
	e.last_status = status;
	snprintf(e.last_error, sizeof e.last_error, "%s", error ? error : "");
	outbox_key(nkey, new_due_ms, id);
	return move_event(t, &e, STORE_T_OUTBOX, nkey, sizeof nkey, due_ms);
}

int
event_finish(struct store_txn *t, uint64_t due_ms, const char *id, bool delivered,
    uint16_t status, const char *error, uint64_t now_ms)
{
	struct event e;
	int rc = load(t, due_ms, id, &e);

	if (rc)
		return rc;
	e.attempts++;
	e.last_status = status;
	e.outcome = delivered ? EVENT_DELIVERED : EVENT_FAILED;
	e.finished_ms = now_ms;
	snprintf(e.last_error, sizeof e.last_error, "%s", error ? error : "");
	return move_event(t, &e, STORE_T_DELIVERIES, id, EVENT_ID_LEN, due_ms);
}

struct list_ctx {
	bool outbox;
	int (*cb)(void *arg, const struct event *e);
	void *arg;
};

static int
list_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct list_ctx *l = arg;
	struct event e;
	size_t off = l->outbox ? 8 : 0;

	if (!data || klen != off + EVENT_ID_LEN)
		return 0;
	memset(&e, 0, sizeof e);
	memcpy(e.id, (const char *)key + off, EVENT_ID_LEN);
	if (l->outbox)
		e.due_ms = sl_get_be64(key);
	if (decode_event(data, len, &e) != 0)
		return 0;
	return l->cb(l->arg, &e);
}

int
event_list(struct store_txn *t, bool pending, int (*cb)(void *arg, const struct event *e),
    void *arg)
{
	struct list_ctx l = { .outbox = false, .cb = cb, .arg = arg };
	int rc = store_table_scan(t, STORE_T_DELIVERIES, NULL, 0, list_one, &l);

	if (rc || !pending)
		return rc;
	l.outbox = true;
	return store_table_scan(t, STORE_T_OUTBOX, NULL, 0, list_one, &l);
}
