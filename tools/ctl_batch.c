/*
 * ctl_batch.c - slowlanectl's batch commands: batches (every tenant's,
 * newest first), batch show and batch cancel.
 *
 * A batch is one JSON record in the `batches` table: the API's object plus
 * our keys starting with "_" (_tenant, _created_ms, _phase of the batch
 * engine, its resume points). The listing walks `batch_index` (tenant |
 * created_ms | id), which carries the creation time in its key, so the order
 * costs no record reads; only the batches shown are read.
 *
 * Cancel does what POST /v1/batches/{id}/cancel does, in one small write
 * transaction: the status becomes "cancelling", a batch whose lines are
 * running moves to the engine's cancel phase, and it is marked active. The
 * daemon's batch engine looks at active batches every second: it ends the
 * queued lines batch_cancelled, lets in-flight ones finish, writes the
 * output and error files and ends the batch "cancelled".
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/batch.h"
#include "slowlane/common.h"
#include "slowlane/util.h"

#include "ctl_common.h"

#define BATCHES_DEFAULT_LIMIT 50
#define INDEX_KEY_LEN (JOB_TENANT_LEN + 8 + BATCH_ID_LEN) /* batch.c's layout */

static const char *const statuses[] = {
	"validating", "failed", "in_progress", "finalizing", "completed", "expired",
	"cancelling", "cancelled",
};

/* The timestamps of a batch object, in the order they happen. */
static const struct {
	const char *key;   /* unix seconds or null */
	const char *label; /* for batch show */
} stamps[] = {
	{ "created_at", "created" }, { "in_progress_at", "in progress" },
	{ "finalizing_at", "finalizing" }, { "completed_at", "completed" },
	{ "failed_at", "failed" }, { "expired_at", "expired" },
	{ "cancelling_at", "cancelling" }, { "cancelled_at", "cancelled" },
	{ "expires_at", "expires" },
};

/* ---- reading a record ---- */

static const char *
str_of(json_t *b, const char *key)
{
	const char *s = json_string_value(json_object_get(b, key));

	return s ? s : "";
}

static const char *
or_dash(const char *s)
{
	return *s ? s : "-";
}

static uint64_t
count_of(json_t *b, const char *key)
{
	json_int_t n = json_integer_value(json_object_get(json_object_get(b, "request_counts"),
	    key));

	return n > 0 ? (uint64_t)n : 0;
}

static uint64_t
created_ms_of(json_t *b)
{
	json_int_t ms = json_integer_value(json_object_get(b, "_created_ms"));

	return ms > 0 ? (uint64_t)ms :
	    (uint64_t)json_integer_value(json_object_get(b, "created_at")) * 1000;
}

/* "[####......]  40%" for (completed + failed) / total, into out[64]; a
 * batch that has ended is whole (the counts leave out the lines that never
 * ran: cancelled or expired before their call). */
static const char *
progress(json_t *b, char out[64])
{
	const char *st = str_of(b, "status");
	uint64_t total = count_of(b, "total"), done = count_of(b, "completed") +
	    count_of(b, "failed");

	if (!strcmp(st, "completed") || !strcmp(st, "failed") || !strcmp(st, "cancelled") ||
	    !strcmp(st, "expired"))
		done = total;
	char bar[32];

	snprintf(out, 64, "%s %3u%%", ctl_fmt_bar(done, total, 20, bar),
	    total ? (unsigned)(100 * (done > total ? total : done) / total) : 0);
	return out;
}

static int
not_found(const struct ctl *c, const char *id)
{
	ctl_err("no batch %s in %s ('slowlanectl batches' lists them)", id, c->data_dir);
	return CTL_FAIL;
}

/* ---- batches ---- */

/* --status as a mask of 1 << index in statuses[]. Returns CTL_OK or
 * CTL_USAGE. */
static int
status_parse(const struct ctl *c, unsigned *mask)
{
	const char *s = c->status;

	*mask = 0;
	while (s && *s) {
		size_t len = strcspn(s, ",");
		size_t i;
		for (i = 0; i < SL_ARRAY_LEN(statuses); i++)
			if (strlen(statuses[i]) == len && strncmp(statuses[i], s, len) == 0)
				break;
		if (i == SL_ARRAY_LEN(statuses))
			return ctl_usage_err(c, "bad value '%s' for --status (validating, "
			    "in_progress, finalizing, completed, failed, expired, cancelling, "
			    "cancelled)", c->status);
		*mask |= 1u << i;
		s += len + (s[len] == ',');
	}
	if (c->status && !*mask)
		return ctl_usage_err(c, "--status needs a status");
	return CTL_OK;
}

static bool
status_match(unsigned mask, const char *status)
{
	if (!mask)
		return true;
	for (size_t i = 0; i < SL_ARRAY_LEN(statuses); i++)
		if ((mask & (1u << i)) && strcmp(statuses[i], status) == 0)
			return true;
	return false;
}

struct entry {
	uint64_t created_ms;
	char id[BATCH_ID_LEN + 1];
};

struct entries {
	struct entry *v;
	size_t n, cap;
};

static int
index_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct entries *e = arg;
	const unsigned char *k = key;

	(void)data;
	(void)len;
	if (klen != INDEX_KEY_LEN)
		return 0;
	if (e->n == e->cap) {
		size_t cap = e->cap ? 2 * e->cap : 256;
		struct entry *v = realloc(e->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		e->v = v;
		e->cap = cap;
	}
	e->v[e->n].created_ms = sl_get_be64(k + JOB_TENANT_LEN);
	memcpy(e->v[e->n].id, k + JOB_TENANT_LEN + 8, BATCH_ID_LEN);
	e->v[e->n].id[BATCH_ID_LEN] = '\0';
	e->n++;
	return 0;
}

static int
entry_newest_first(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	if (x->created_ms != y->created_ms)
		return x->created_ms < y->created_ms ? 1 : -1;
	return strcmp(y->id, x->id);
}

static void
batches_row(json_t *b)
{
	char prog[64], when[32];
	const char *tenant = str_of(b, "_tenant");

	printf("%-30s  %-11s  %s  %9llu  %6llu  %6llu  %-20s  %-20s  %s\n", str_of(b, "id"),
	    str_of(b, "status"), progress(b, prog), (unsigned long long)count_of(b, "completed"),
	    (unsigned long long)count_of(b, "failed"), (unsigned long long)count_of(b, "total"),
	    ctl_fmt_time(created_ms_of(b), when), str_of(b, "endpoint"), *tenant ? tenant : "-");
}

int
ctl_batches(struct ctl *c)
{
	struct entries e = { 0 };
	struct store_txn *t = NULL;
	struct store *st;
	uint64_t rows = 0;
	bool more = false;
	unsigned mask;
	int rc;

	rc = status_parse(c, &mask);
	if (rc)
		return rc;
	if (!(c->seen & CTL_O_LIMIT))
		c->limit = BATCHES_DEFAULT_LIMIT;
	rc = ctl_open(c, false, &st);
	if (rc)
		return rc;
	if (!c->json)
		printf("%-30s  %-11s  %-27s  %9s  %6s  %6s  %-20s  %-20s  %s\n", "ID", "STATUS",
		    "PROGRESS", "COMPLETED", "FAILED", "TOTAL", "CREATED", "ENDPOINT", "TENANT");
	rc = store_begin(st, true, &t);
	if (!rc)
		rc = store_table_scan(t, STORE_T_BATCH_INDEX, NULL, 0, index_one, &e);
	if (!rc)
		if (e.n > 1)
			qsort(e.v, e.n, sizeof *e.v, entry_newest_first);
	for (size_t i = 0; rc == 0 && i < e.n; i++) {
		json_t *b;
		if (c->limit && rows == c->limit) {
			more = true;
			break;
		}
		if (batch_get(t, e.v[i].id, &b) != 0)
			continue; /* an index entry without its record: skip it */
		if (status_match(mask, str_of(b, "status"))) {
			if (c->json) {
				fputs(rows ? ",\n" : "[\n", stdout);
				if (json_dumpf(b, stdout, JSON_COMPACT | JSON_SORT_KEYS) != 0)
					rc = -ENOMEM;
			} else {
				batches_row(b);
			}
			rows++;
		}
		json_decref(b);
	}
	store_abort(t);
	store_close(st);
	free(e.v);
	if (c->json)
		fputs(rows ? "\n]\n" : "[]\n", stdout);
	else if (more)
		printf("(the newest %llu: --limit N shows more, --limit 0 all)\n",
		    (unsigned long long)rows);
	return rc ? ctl_store_err("listing batches", rc) : CTL_OK;
}

/* ---- batch show ---- */

static void
show_text(json_t *b)
{
	json_t *pub = batch_public(b), *errs = json_object_get(json_object_get(b, "errors"),
	    "data"), *usage = json_object_get(b, "usage"), *v;
	const char *tenant = str_of(b, "_tenant"), *hook = str_of(b, "_webhook_url");
	char prog[64], when[32], cell[600];
	size_t i;

	printf("id              %s\n", str_of(b, "id"));
	printf("status          %s\n", str_of(b, "status"));
	printf("phase           %s (the batch engine's step)\n",
	    *str_of(b, "_phase") ? str_of(b, "_phase") : "-");
	printf("tenant          %s\n", *tenant ? tenant : "- (no API keys)");
	printf("endpoint        %s\n", str_of(b, "endpoint"));
	printf("progress        %s  %llu completed, %llu failed of %llu\n", progress(b, prog),
	    (unsigned long long)count_of(b, "completed"), (unsigned long long)count_of(b, "failed"),
	    (unsigned long long)count_of(b, "total"));
	printf("input file      %s\n", or_dash(str_of(b, "input_file_id")));
	printf("output file     %s\n", or_dash(str_of(b, "output_file_id")));
	printf("error file      %s\n", or_dash(str_of(b, "error_file_id")));
	printf("webhook url     %s\n", *hook ? ctl_cell(hook, 120, cell, sizeof cell) : "-");
	for (i = 0; i < SL_ARRAY_LEN(stamps); i++) {
		json_int_t s = json_integer_value(json_object_get(b, stamps[i].key));
		if (s > 0)
			printf("%-15s %s\n", stamps[i].label,
			    ctl_fmt_time((uint64_t)s * 1000, when));
	}
	if (json_is_object(usage))
		printf("usage           %lld input, %lld output, %lld total tokens\n",
		    (long long)json_integer_value(json_object_get(usage, "input_tokens")),
		    (long long)json_integer_value(json_object_get(usage, "output_tokens")),
		    (long long)json_integer_value(json_object_get(usage, "total_tokens")));
	if (json_array_size(errs)) {
		printf("\nerrors:\n  %6s  %-24s  %s\n", "LINE", "CODE", "MESSAGE");
		json_array_foreach(errs, i, v) {
			json_t *line = json_object_get(v, "line");
			char n[24];
			snprintf(n, sizeof n, "%lld", (long long)json_integer_value(line));
			printf("  %6s  %-24s  %s\n", json_is_integer(line) ? n : "-",
			    str_of(v, "code"),
			    ctl_cell(str_of(v, "message"), 200, cell, sizeof cell));
		}
	}
	printf("\nobject:\n");
	if (!pub || json_dumpf(pub, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0)
		printf("  (out of memory)");
	putchar('\n');
	json_decref(pub);
}

int
ctl_batch_show(struct ctl *c)
{
	const char *id = c->args[0];
	struct store_txn *t = NULL;
	struct store *st;
	json_t *b = NULL;
	int rc = ctl_open(c, false, &st);

	if (rc)
		return rc;
	rc = store_begin(st, true, &t);
	if (!rc)
		rc = batch_get(t, id, &b);
	store_abort(t);
	store_close(st);
	if (rc == SL_ENOTFOUND)
		return not_found(c, id);
	if (rc) {
		json_decref(b);
		return ctl_store_err(id, rc);
	}
	if (c->json) {
		/* The whole record: the API's object and our "_" keys. */
		if (ctl_print_json(b) != 0)
			return ctl_store_err(id, -ENOMEM);
		return CTL_OK;
	}
	show_text(b);
	json_decref(b);
	return CTL_OK;
}

/* ---- batch cancel ---- */

int
ctl_batch_cancel(struct ctl *c)
{
	const char *id = c->args[0];
	struct store_txn *t = NULL;
	char was[24] = "";
	struct store *st;
	bool changed = false;
	json_t *b = NULL;
	int rc = ctl_open(c, true, &st);

	if (rc)
		return rc;
	rc = store_begin(st, false, &t);
	if (!rc)
		rc = batch_get(t, id, &b);
	if (!rc) {
		/* As cancel_apply in src/api_batches.c, for any tenant. */
		snprintf(was, sizeof was, "%s", str_of(b, "status"));
		if (strcmp(was, "validating") == 0 || strcmp(was, "in_progress") == 0) {
			batch_set_status(b, "cancelling", "cancelling_at", sl_wall_ms());
			if (strcmp(str_of(b, "_phase"), "run") == 0) {
				json_object_set_new(b, "_phase", json_string("cancel"));
				json_object_set_new(b, "_cancel_line", json_integer(1));
			}
			rc = batch_set_active(t, id, true);
			if (!rc)
				rc = batch_put(t, b);
			changed = true;
		}
	}
	if (!rc && changed)
		rc = store_commit(t);
	else
		store_abort(t);
	store_close(st);
	if (rc == SL_ENOTFOUND) {
		json_decref(b);
		return not_found(c, id);
	}
	if (rc) {
		json_decref(b);
		return ctl_store_err(id, rc);
	}
	/* Cancelling a cancelled batch is done already; an ended one cannot be. */
	if (!changed && strcmp(was, "cancelling") != 0 && strcmp(was, "cancelled") != 0) {
		ctl_err("batch %s is %s: only validating and in_progress batches can be cancelled",
		    id, was);
		json_decref(b);
		return CTL_FAIL;
	}
	if (c->json) {
		ctl_print_json(json_pack("{s:s, s:s, s:s, s:s, s:b}", "operation", "cancel",
		    "id", id, "previousStatus", was, "status", str_of(b, "status"),
		    "changed", changed));
	} else if (changed) {
		printf("batch %s: %s -> cancelling (%llu of %llu lines ran); a running daemon "
		    "cancels its queued lines within a second, lines in flight may finish\n", id,
		    was, (unsigned long long)(count_of(b, "completed") + count_of(b, "failed")),
		    (unsigned long long)count_of(b, "total"));
	} else {
		printf("batch %s is %s already; nothing changed\n", id, was);
	}
	json_decref(b);
	return CTL_OK;
}
