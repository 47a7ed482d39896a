/*
 * ctl_webhook.c - slowlanectl's webhook commands: add, ls, rm and
 * rotate-secret on the registrations (the `webhooks` table), and deliveries,
 * the events sent or given up (`deliveries`) and, on request, those still
 * waiting in the `outbox`.
 *
 * Each change is one small write transaction. The running daemon reads a
 * registration when it accepts a submit naming it and again for every
 * delivery attempt, so an added webhook can be named at once, a removed one
 * is refused at once (and the events still queued for it are given up), and
 * a new secret signs the next attempt.
 *
 * The URL policy is checked here as the daemon checks it (no http, no
 * loopback or private address unless allowed); the daemon checks again, with
 * its own flags and the resolved address, before every delivery.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/api.h"
#include "slowlane/common.h"
#include "slowlane/event.h"
#include "slowlane/util.h"
#include "slowlane/webhook.h"

#include "ctl_common.h"

#define DELIVERIES_DEFAULT_LIMIT 50

static const char *const outcome_names[] = {
	[EVENT_PENDING] = "pending", [EVENT_DELIVERED] = "delivered", [EVENT_FAILED] = "failed",
};

/* ---- helpers ---- */

/* Checks --events and writes it normalised ("a,b", no spaces) into
 * out[WEBHOOK_EVENTS_MAX + 1]. Returns CTL_OK or CTL_USAGE. */
static int
events_parse(const struct ctl *c, const char *s, char *out)
{
	char bad[64];
	int n = webhook_events_parse(s, out, WEBHOOK_EVENTS_MAX + 1, bad);

	if (n == -2)
		return ctl_usage_err(c, "unknown event '%s' for --events ("
		    WEBHOOK_EVENT_NAMES ", or a prefix such as batch.*)", bad);
	if (n < 0)
		return ctl_usage_err(c, "--events is too long");
	if (n == 0)
		return ctl_usage_err(c, "--events needs at least one event (leave it out for all)");
	return CTL_OK;
}

/* The stored events as a JSON array; [] = every event. */
static json_t *
events_json(const char *events)
{
	json_t *a = json_array();

	while (a && *events) {
		size_t n = strcspn(events, ",");
		json_array_append_new(a, json_stringn(events, n));
		events += n + (events[n] == ',');
	}
	return a;
}

/* The owner: --key's tenant, --tenant, or "" (the daemon without API keys).
 * Returns CTL_OK or CTL_USAGE. */
static int
tenant_from(const struct ctl *c, char out[JOB_TENANT_LEN + 1])
{
	out[0] = '\0';
	if (c->key && c->tenant)
		return ctl_usage_err(c, "give --key or --tenant, not both");
	if (c->key) {
		if (!*c->key)
			return ctl_usage_err(c, "--key is empty");
		api_key_tenant(c->key, out);
		return CTL_OK;
	}
	if (!c->tenant || !*c->tenant)
		return CTL_OK;
	if (strlen(c->tenant) != JOB_TENANT_LEN ||
	    strspn(c->tenant, "0123456789abcdef") != JOB_TENANT_LEN)
		return ctl_usage_err(c, "bad value '%s' for --tenant (a tenant id is %d lower-case "
		    "hex digits, as 'slowlanectl show' prints; or give the key with --key)",
		    c->tenant, JOB_TENANT_LEN);
	memcpy(out, c->tenant, JOB_TENANT_LEN + 1);
	return CTL_OK;
}

static int
not_found(const struct ctl *c, const char *id)
{
	ctl_err("no webhook %s in %s ('slowlanectl webhook ls' lists them)", id, c->data_dir);
	return CTL_FAIL;
}

/* ---- add ---- */

int
ctl_webhook_add(struct ctl *c)
{
	const char *url = c->args[0];
	char tenant[JOB_TENANT_LEN + 1], events[WEBHOOK_EVENTS_MAX + 1] = "", why[200];
	char when[32];
	struct store_txn *t = NULL;
	struct store *st = NULL;
	struct webhook w, old;
	int rc;

	rc = tenant_from(c, tenant);
	if (!rc && c->events)
		rc = events_parse(c, c->events, events);
	if (rc)
		return rc;
	if (strlen(url) > WEBHOOK_URL_MAX) {
		ctl_err("the URL is longer than %d bytes; nothing was added", WEBHOOK_URL_MAX);
		return CTL_FAIL;
	}
	if (!webhook_url_allowed(url, c->allow_http, c->allow_private, why, sizeof why)) {
		/* The policy's words name the daemon's flags; ours mirror them. */
		ctl_err("%s; nothing was added", why);
		ctl_err("slowlanectl accepts such URLs with --allow-http / --allow-private, and "
		    "slowlaned delivers to them only with --webhook-allow-http / "
		    "--webhook-allow-private");
		return CTL_FAIL;
	}
	rc = ctl_open(c, true, &st);
	if (rc)
		return rc;
	rc = store_begin(st, false, &t);
	/* A random id of 9 characters: a clash is unlikely, never overwritten. */
	for (int tries = 0; rc == 0; tries++) {
		rc = webhook_init(&w, tenant, url, events, sl_wall_ms());
		if (rc)
			break;
		rc = webhook_get(t, w.id, &old);
		if (rc == SL_ENOTFOUND) {
			rc = webhook_put(t, &w);
			break;
		}
		if (rc == 0 && tries == 8)
			rc = -EEXIST;
	}
	if (rc == 0)
		rc = store_commit(t);
	else
		store_abort(t);
	store_close(st);
	if (rc)
		return ctl_store_err("adding the webhook", rc);
	if (c->json) {
		ctl_print_json(json_pack("{s:s, s:s, s:s, s:o, s:s, s:o}", "id", w.id, "secret",
		    w.secret, "url", w.url, "events", events_json(w.events), "tenant", w.tenant,
		    "createdAt", ctl_json_time(w.created_ms)));
		return CTL_OK;
	}
	printf("id       %s\n", w.id);
	printf("secret   %s\n", w.secret);
	printf("url      %s\n", w.url);
	printf("events   %s\n", *w.events ? w.events : "all");
	printf("tenant   %s\n", *w.tenant ? w.tenant : "- (no API keys)");
	printf("created  %s\n", ctl_fmt_time(w.created_ms, when));
	printf("Keep the secret: it is not shown again ('webhook rotate-secret %s' makes a new "
	    "one).\nRequests name this webhook with \"metadata\": {\"webhook_id\": \"%s\"}.\n",
	    w.id, w.id);
	return CTL_OK;
}

/* ---- ls ---- */

struct ls_ctx {
	const struct ctl *c;
	uint64_t rows;
};

static int
ls_one(void *arg, const struct webhook *w)
{
	struct ls_ctx *x = arg;
	char when[32], ev[48], url[80];
	int rc = 0;

	if (x->c->json) {
		json_t *row = json_pack("{s:s, s:o, s:o, s:s, s:o}", "id", w->id, "url",
		    ctl_json_str(w->url), "events", events_json(w->events), "tenant", w->tenant,
		    "createdAt", ctl_json_time(w->created_ms));
		fputs(x->rows ? ",\n" : "[\n", stdout);
		if (!row || json_dumpf(row, stdout, JSON_COMPACT) != 0)
			rc = -ENOMEM;
		json_decref(row);
	} else {
		printf("%-9s  %-16s  %-20s  %-40s  %s\n", w->id, *w->tenant ? w->tenant : "-",
		    ctl_fmt_time(w->created_ms, when), *w->events ? ctl_cell(w->events, 40, ev,
		    sizeof ev) : "all", ctl_cell(w->url, 72, url, sizeof url));
	}
	x->rows++;
	return rc;
}

int
ctl_webhook_ls(struct ctl *c)
{
	struct ls_ctx x = { .c = c };
	struct store_txn *t = NULL;
	struct store *st;
	int rc = ctl_open(c, false, &st);

	if (rc)
		return rc;
	if (!c->json)
		printf("%-9s  %-16s  %-20s  %-40s  %s\n", "ID", "TENANT", "CREATED", "EVENTS",
		    "URL");
	rc = store_begin(st, true, &t);
	if (!rc)
		rc = webhook_list(t, ls_one, &x);
	store_abort(t);
	store_close(st);
	if (c->json)
		fputs(x.rows ? "\n]\n" : "[]\n", stdout);
	return rc ? ctl_store_err("listing webhooks", rc) : CTL_OK;
}

/* ---- rm, rotate-secret ---- */

/* In one write transaction: reads webhook `id` into *w, then deletes it,
 * or with `rotate` gives it a new secret (*w then holds it). Returns CTL_OK
 * or CTL_FAIL (message printed). */
static int
change_one(struct ctl *c, const char *id, bool rotate, struct webhook *w)
{
	struct store_txn *t = NULL;
	struct store *st;
	int rc = ctl_open(c, true, &st);

	if (rc)
		return rc;
	rc = store_begin(st, false, &t);
	if (!rc)
		rc = webhook_get(t, id, w);
	if (!rc && rotate) {
		rc = webhook_rotate_secret(w);
		if (!rc)
			rc = webhook_put(t, w);
	} else if (!rc) {
		rc = webhook_delete(t, id);
	}
	if (!rc)
		rc = store_commit(t);
	else
		store_abort(t);
	store_close(st);
	if (rc == SL_ENOTFOUND)
		return not_found(c, id);
	return rc ? ctl_store_err(id, rc) : CTL_OK;
}

int
ctl_webhook_rm(struct ctl *c)
{
	struct webhook w;
	char cell[80];
	int rc = change_one(c, c->args[0], false, &w);

	if (rc)
		return rc;
	if (c->json)
		ctl_print_json(json_pack("{s:s, s:s, s:o}", "operation", "rm", "id", w.id,
		    "url", ctl_json_str(w.url)));
	else
		printf("removed webhook %s (%s): submits naming it are refused; events still "
		    "queued for it end failed\n", w.id, ctl_cell(w.url, 72, cell, sizeof cell));
	return CTL_OK;
}

int
ctl_webhook_rotate(struct ctl *c)
{
	struct webhook w;
	int rc = change_one(c, c->args[0], true, &w);

	if (rc)
		return rc;
	if (c->json) {
		ctl_print_json(json_pack("{s:s, s:s, s:s}", "operation", "rotate-secret", "id",
		    w.id, "secret", w.secret));
		return CTL_OK;
	}
	printf("id       %s\n", w.id);
	printf("secret   %s\n", w.secret);
	printf("The old secret no longer verifies: every attempt from now on, retries of "
	    "earlier events too, is signed with this one.\n");
	return CTL_OK;
}

/* ---- deliveries ---- */

/* One listed event, without its payload (valid only during the walk). */
struct dl_rows {
	const struct ctl *c;
	struct store_txn *t;
	struct event *v;
	size_t n, cap;
};

static int
dl_collect(void *arg, const struct event *e)
{
	struct dl_rows *r = arg;

	if (r->c->failed && e->outcome == EVENT_DELIVERED)
		return 0;
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 64;
		struct event *v = realloc(r->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n] = *e;
	r->v[r->n].payload = NULL;
	r->v[r->n].payload_len = 0;
	/* The target: a registered webhook's URL as it is now (or "" once it
	 * was removed), else the URL the event carries (batch webhook_url). */
	if (e->webhook[0]) {
		struct webhook w;
		r->v[r->n].url[0] = '\0';
		if (webhook_get(r->t, e->webhook, &w) == 0)
			memcpy(r->v[r->n].url, w.url, sizeof w.url);
	}
	r->n++;
	return 0;
}

/* Newest event first; ties by id, so the order is stable. */
static int
dl_newest_first(const void *a, const void *b)
{
	const struct event *x = a, *y = b;

	if (x->created_ms != y->created_ms)
		return x->created_ms < y->created_ms ? 1 : -1;
	return strcmp(y->id, x->id);
}

static const char *
outcome_name(const struct event *e)
{
	return e->outcome < SL_ARRAY_LEN(outcome_names) ? outcome_names[e->outcome] : "?";
}

static json_t *
dl_json(const struct event *e)
{
	bool pending = e->outcome == EVENT_PENDING;

	return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:I, s:o, s:o, s:o, s:o, s:o}",
	    "id", e->id, "type", e->type, "outcome", outcome_name(e),
	    "webhook", e->webhook[0] ? json_string(e->webhook) : json_null(),
	    "subject", ctl_json_str(e->subject),
	    "url", e->url[0] ? ctl_json_str(e->url) : json_null(),
	    "attempts", (json_int_t)e->attempts,
	    "lastStatus", e->last_status ? json_integer(e->last_status) : json_null(),
	    "lastError", e->last_error[0] ? ctl_json_str(e->last_error) : json_null(),
	    "createdAt", ctl_json_time(e->created_ms),
	    "finishedAt", pending ? json_null() : ctl_json_time(e->finished_ms),
	    "nextAttemptAt", pending ? ctl_json_time(e->due_ms) : json_null());
}

static void
dl_text(const struct event *e)
{
	char target[32], subject[32], when[32], err[64], http[8];

	snprintf(http, sizeof http, "%u", e->last_status);
	printf("%-28s  %-20s  %-9s  %3u  %4s  %-24s  %-30s  %-20s  %s\n", e->id, e->type,
	    outcome_name(e), e->attempts, e->last_status ? http : "-",
	    ctl_cell(e->webhook[0] ? e->webhook : e->url, 24, target, sizeof target),
	    ctl_cell(e->subject, 30, subject, sizeof subject),
	    ctl_fmt_time(e->outcome == EVENT_PENDING ? e->due_ms : e->finished_ms, when),
	    ctl_cell(e->last_error, 60, err, sizeof err));
}

int
ctl_webhook_deliveries(struct ctl *c)
{
	struct dl_rows r = { .c = c };
	struct store *st;
	size_t shown;
	int rc;

	if (!(c->seen & CTL_O_LIMIT))
		c->limit = DELIVERIES_DEFAULT_LIMIT;
	rc = ctl_open(c, false, &st);
	if (rc)
		return rc;
	rc = store_begin(st, true, &r.t);
	if (!rc)
		rc = event_list(r.t, c->pending, dl_collect, &r);
	store_abort(r.t);
	store_close(st);
	if (rc) {
		free(r.v);
		return ctl_store_err("listing deliveries", rc);
	}
	if (r.n > 1)
		qsort(r.v, r.n, sizeof *r.v, dl_newest_first);
	shown = c->limit && c->limit < r.n ? (size_t)c->limit : r.n;
	if (c->json) {
		fputs(shown ? "[\n" : "[]\n", stdout);
		for (size_t i = 0; i < shown; i++) {
			json_t *row = dl_json(&r.v[i]);
			if (!row || json_dumpf(row, stdout, JSON_COMPACT) != 0)
				rc = -ENOMEM;
			json_decref(row);
			fputs(i + 1 < shown ? ",\n" : "\n]\n", stdout);
		}
	} else {
		printf("%-28s  %-20s  %-9s  %3s  %4s  %-24s  %-30s  %-20s  %s\n", "EVENT", "TYPE",
		    "OUTCOME", "ATT", "HTTP", "WEBHOOK/URL", "SUBJECT", "FINISHED/NEXT TRY",
		    "LAST ERROR");
		for (size_t i = 0; i < shown; i++)
			dl_text(&r.v[i]);
		if (shown < r.n)
			printf("(the newest %zu of %zu: --limit N shows more, --limit 0 all)\n",
			    shown, r.n);
	}
	free(r.v);
	return rc ? ctl_store_err("deliveries", rc) : CTL_OK;
}
