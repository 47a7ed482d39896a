/*
 * ctl_inspect.c - slowlanectl's read-only commands: stats, ls, show,
 * export, watch. Each works in read-only transactions, which see one
 * consistent snapshot and never wait for (or hold up) the daemon's writer.
 * Nothing here walks every stored job unless a filter asks for it: stats
 * reads the per-state counts, the heads of the indexes and the unfinished
 * jobs only.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "slowlane/common.h"
#include "slowlane/generation.h"
#include "slowlane/util.h"

#include "ctl_common.h"

#define LS_DEFAULT_LIMIT 50
#define RENDER_LIMIT ((size_t)256 << 20) /* a generation: body + response caps */

/* ---- stats ---- */

struct stats {
	uint64_t now_ms;
	struct store_counts counts;
	uint64_t total;
	struct job oldest;          /* head of the ready index */
	bool have_oldest;
	uint64_t last_minute, last_hour;
	json_t *models;             /* model -> [queued, in progress] */
	struct store_info info;
	uint64_t file_bytes;
};

static int
stats_oldest(void *arg, uint64_t ms, const char *id)
{
	struct stats *s = arg;

	(void)ms;
	memcpy(s->oldest.id, id, SL_ID_LEN + 1);
	s->have_oldest = true;
	return 1;
}

static int
stats_finished(void *arg, uint64_t ms, const char *id)
{
	struct stats *s = arg;

	(void)id;
	s->last_hour++;
	if (ms + 60000 > s->now_ms)
		s->last_minute++;
	return 0;
}

struct model_walk {
	struct store_txn *t;
	json_t *models;
};

static int
stats_model(void *arg, uint64_t ms, const char *id)
{
	struct model_walk *w = arg;
	json_t *pair, *n;
	struct job j;

	(void)ms;
	if (store_job_get(w->t, id, &j) != 0 || job_is_final(j.state))
		return 0;
	pair = json_object_get(w->models, j.model);
	if (!pair) {
		pair = json_pack("[ii]", 0, 0);
		if (!pair || json_object_set_new(w->models, j.model, pair) != 0)
			return -ENOMEM;
	}
	n = json_array_get(pair, j.state == JOB_QUEUED ? 0 : 1);
	json_integer_set(n, json_integer_value(n) + 1);
	return 0;
}

static int
stats_read(struct ctl *c, struct store *st, struct stats *s)
{
	struct store_txn *t = NULL;
	struct model_walk w;
	char path[4096];
	struct stat sb;
	int rc;

	s->now_ms = c->now_ms;
	s->models = json_object();
	if (!s->models)
		return -ENOMEM;
	rc = store_begin(st, true, &t);
	if (rc)
		return rc;
	rc = store_counts_get(t, &s->counts);
	if (!rc)
		rc = store_get_info(st, t, &s->info);
	if (rc)
		goto out;
	for (int i = 0; i < JOB_STATE_COUNT; i++)
		s->total += s->counts.by_state[i];
	/* The head of `ready` is the job due first; its age since submit is
	 * how long the queue makes work wait. */
	rc = store_scan_time(t, STORE_READY, 0, false, stats_oldest, s);
	if (rc == 1) {
		char id[SL_ID_LEN + 1];
		memcpy(id, s->oldest.id, sizeof id);
		s->have_oldest = store_job_get(t, id, &s->oldest) == 0;
		rc = 0;
	}
	if (rc)
		goto out;
	rc = store_scan_time(t, STORE_FINISHED, s->now_ms > 3600000 ? s->now_ms - 3600000 : 0,
	    false, stats_finished, s);
	if (rc)
		goto out;
	w.t = t;
	w.models = s->models;
	rc = store_scan_time(t, STORE_EXPIRY, 0, false, stats_model, &w);
out:
	store_abort(t);
	snprintf(path, sizeof path, "%s/data.mdb", c->data_dir);
	if (stat(path, &sb) == 0)
		s->file_bytes = (uint64_t)sb.st_size;
	return rc;
}

static json_t *
stats_json(const struct ctl *c, const struct stats *s)
{
	json_t *o = json_object(), *counts = json_object(), *store, *models, *oldest = json_null();
	double pct = s->info.map_size ? 100.0 * (double)s->info.used_bytes /
	    (double)s->info.map_size : 0;
	const char *key;
	json_t *pair;

	for (int i = 0; i < JOB_STATE_COUNT; i++)
		json_object_set_new(counts, job_state_name(i), json_integer(
		    (json_int_t)s->counts.by_state[i]));
	if (s->have_oldest)
		oldest = json_pack("{s:s, s:o, s:I}", "id", s->oldest.id,
		    "createdAt", ctl_json_time(s->oldest.created_ms),
		    "ageMs", (json_int_t)(s->now_ms > s->oldest.created_ms ?
		    s->now_ms - s->oldest.created_ms : 0));
	store = json_pack("{s:I, s:I, s:I, s:f, s:I, s:I, s:I}",
	    "fileBytes", (json_int_t)s->file_bytes, "usedBytes", (json_int_t)s->info.used_bytes,
	    "mapBytes", (json_int_t)s->info.map_size, "mapUsedPercent", pct,
	    "records", (json_int_t)s->info.jobs, "readers", (json_int_t)s->info.readers,
	    "maxReaders", (json_int_t)s->info.max_readers);
	models = json_object();
	json_object_foreach(s->models, key, pair)
		json_object_set_new(models, key, json_pack("{s:O, s:O}",
		    "Queued", json_array_get(pair, 0), "In Progress", json_array_get(pair, 1)));
	json_object_set_new(o, "dataDir", ctl_json_str(c->data_dir));
	json_object_set_new(o, "at", ctl_json_time(s->now_ms));
	json_object_set_new(o, "counts", counts);
	json_object_set_new(o, "total", json_integer((json_int_t)s->total));
	json_object_set_new(o, "oldestQueued", oldest);
	json_object_set_new(o, "finishedLastMinute", json_integer((json_int_t)s->last_minute));
	json_object_set_new(o, "finishedLastHour", json_integer((json_int_t)s->last_hour));
	json_object_set_new(o, "store", store);
	json_object_set_new(o, "unfinishedByModel", models);
	return o;
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void
stats_print(const struct ctl *c, const struct stats *s)
{
	char a[32], b[32], d[32], cell[64];
	size_t n = json_object_size(s->models), i = 0;
	const char **names = calloc(n + 1, sizeof *names);
	const char *key;
	json_t *pair;

	printf("store           %s: %s used of a %s map (%.2f%%), data file %s, "
	    "%u of %u readers\n", c->data_dir, ctl_fmt_bytes(s->info.used_bytes, a),
	    ctl_fmt_bytes(s->info.map_size, b), s->info.map_size ? 100.0 *
	    (double)s->info.used_bytes / (double)s->info.map_size : 0.0,
	    ctl_fmt_bytes(s->file_bytes, d), s->info.readers, s->info.max_readers);
	printf("jobs            %llu\n", (unsigned long long)s->total);
	for (int st = 0; st < JOB_STATE_COUNT; st++)
		printf("  %-13s %llu\n", job_state_name(st),
		    (unsigned long long)s->counts.by_state[st]);
	if (s->have_oldest)
		printf("oldest queued   %s (%s, created %s)\n",
		    ctl_fmt_age(s->now_ms > s->oldest.created_ms ?
		    s->now_ms - s->oldest.created_ms : 0, a), s->oldest.id,
		    ctl_fmt_time(s->oldest.created_ms, b));
	else
		printf("oldest queued   -\n");
	printf("finished        %llu in the last minute, %llu in the last hour\n",
	    (unsigned long long)s->last_minute, (unsigned long long)s->last_hour);
	printf("unfinished jobs by model:\n");
	if (!names || n == 0) {
		printf("  (none)\n");
		free(names);
		return;
	}
	printf("  %-32s %10s %12s\n", "MODEL", "QUEUED", "IN PROGRESS");
	json_object_foreach(s->models, key, pair)
		names[i++] = key;
	if (n > 1)
		qsort(names, n, sizeof *names, cmp_str);
	for (i = 0; i < n; i++) {
		pair = json_object_get(s->models, names[i]);
		printf("  %-32s %10lld %12lld\n", ctl_cell(names[i], 32, cell, sizeof cell),
		    (long long)json_integer_value(json_array_get(pair, 0)),
		    (long long)json_integer_value(json_array_get(pair, 1)));
	}
	free(names);
}

int
ctl_stats(struct ctl *c)
{
	struct store *st;
	struct stats s = { 0 };
	int rc = ctl_open(c, false, &st);

	if (rc)
		return rc;
	rc = stats_read(c, st, &s);
	if (rc) {
		rc = ctl_store_err("reading the store", rc);
	} else if (c->json) {
		if (ctl_print_json(stats_json(c, &s)))
			rc = ctl_store_err("stats", -ENOMEM);
	} else {
		stats_print(c, &s);
	}
	json_decref(s.models);
	store_close(st);
	return rc;
}

/* ---- ls ---- */

struct ls_ctx {
	const struct ctl *c;
	uint64_t rows;
};

static json_t *
ls_row_json(const struct job *j, const char *custom_id)
{
	return json_pack("{s:s, s:s, s:o, s:o, s:I, s:I, s:o, s:o, s:o, s:o}",
	    "id", j->id, "state", job_state_name(j->state), "model", ctl_json_str(j->model),
	    "custom_id", custom_id ? ctl_json_str(custom_id) : json_null(),
	    "attempts", (json_int_t)j->attempts, "httpStatus", (json_int_t)j->http_status,
	    "createdAt", ctl_json_time(j->created_ms),
	    "dispatchedAt", ctl_json_time(j->dispatched_ms),
	    "finishedAt", ctl_json_time(j->finished_ms),
	    "stateMessage", ctl_json_str(j->message));
}

static int
ls_row(void *arg, struct store_txn *t, const struct job *j)
{
	struct ls_ctx *x = arg;
	char *custom_id = ctl_custom_id(t, j->id);
	char model[64], cid[64], msg[64], created[32], finished[32];
	int rc = 0;

	if (x->c->json) {
		/* A JSON array, one element per line, streamed as the walk goes. */
		json_t *row = ls_row_json(j, custom_id);
		fputs(x->rows ? ",\n" : "[\n", stdout);
		if (!row || json_dumpf(row, stdout, JSON_COMPACT) != 0)
			rc = -ENOMEM;
		json_decref(row);
	} else {
		printf("%-21s  %-11s  %-20s  %-20s  %3u  %-20s  %-20s  %s\n", j->id,
		    job_state_name(j->state), ctl_cell(j->model, 20, model, sizeof model),
		    ctl_cell(custom_id, 20, cid, sizeof cid), j->attempts,
		    ctl_fmt_time(j->created_ms, created), ctl_fmt_time(j->finished_ms, finished),
		    ctl_cell(j->message, 48, msg, sizeof msg));
	}
	free(custom_id);
	x->rows++;
	return rc;
}

int
ctl_ls(struct ctl *c)
{
	struct ctl_filter f;
	struct ls_ctx x = { .c = c };
	struct store_txn *t = NULL;
	struct store *st;
	int rc;

	if (!(c->seen & CTL_O_LIMIT))
		c->limit = LS_DEFAULT_LIMIT;
	ctl_filter_from(c, &f);
	rc = ctl_open(c, false, &st);
	if (rc)
		return rc;
	if (!c->json)
		printf("%-21s  %-11s  %-20s  %-20s  %3s  %-20s  %-20s  %s\n", "ID", "STATE",
		    "MODEL", "CUSTOM_ID", "ATT", "CREATED", "FINISHED", "MESSAGE");
	rc = store_begin(st, true, &t);
	if (!rc)
		rc = ctl_select(t, &f, ls_row, &x);
	store_abort(t);
	if (c->json)
		fputs(x.rows ? "\n]\n" : "[]\n", stdout);
	else if (f.limit && x.rows == f.limit)
		printf("(the first %llu: --limit N shows more, --limit 0 all)\n",
		    (unsigned long long)x.rows);
	store_close(st);
	return rc ? ctl_store_err("listing jobs", rc) : CTL_OK;
}

/* ---- show ---- */

static int
show_attempt_json(void *arg, const struct store_attempt *a)
{
	json_t *row = json_pack("{s:I, s:o, s:o, s:o, s:o}", "attempt", (json_int_t)a->attempt,
	    "startedAt", ctl_json_time(a->started_ms), "endedAt", ctl_json_time(a->ended_ms),
	    "httpStatus", a->http_status ? json_integer(a->http_status) : json_null(),
	    "message", ctl_json_str(a->message));

	return json_array_append_new(arg, row) ? -ENOMEM : 0;
}

static int
show_attempt_text(void *arg, const struct store_attempt *a)
{
	char st[32], took[32], http[8], msg[96];

	(void)arg;
	snprintf(http, sizeof http, "%u", a->http_status);
	printf("  %3u  %-20s  %8s  %4s  %s\n", a->attempt, ctl_fmt_time(a->started_ms, st),
	    a->ended_ms >= a->started_ms && a->ended_ms ?
	    ctl_fmt_age(a->ended_ms - a->started_ms, took) : "-",
	    a->http_status ? http : "-", ctl_cell(a->message, 90, msg, sizeof msg));
	return 0;
}

/* Pretty-prints a stored JSON text, or prints it as it is if it does not
 * parse. */
static void
print_pretty(const char *label, const void *data, size_t len)
{
	json_t *v = data ? json_loadb(data, len, JSON_DECODE_ANY, NULL) : NULL;

	printf("%s:\n", label);
	if (!data)
		puts("  (none)");
	else if (!v || json_dumpf(v, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY) != 0)
		printf("%.*s", (int)len, (const char *)data);
	putchar('\n');
	json_decref(v);
}

static int
show_text(struct store_txn *t, const struct job *j)
{
	static const char *const kinds[] = { "chat/completions", "completions" };
	char a[32], cell[600], *custom_id = ctl_custom_id(t, j->id);
	const void *req = NULL, *resp = NULL;
	size_t req_len = 0, resp_len = 0;
	int rc;

	printf("id              %s\n", j->id);
	printf("state           %s\n", job_state_name(j->state));
	printf("message         %s\n", ctl_cell(j->message, JOB_MESSAGE_MAX, cell, sizeof cell));
	printf("model           %s\n", j->model);
	printf("custom_id       %s\n", custom_id ? custom_id : "-");
	printf("endpoint        %s\n", j->kind < SL_ARRAY_LEN(kinds) ? kinds[j->kind] : "?");
	printf("tenant          %s\n", *j->tenant ? j->tenant : "- (no API keys)");
	if (*j->group)
		printf("group           %s\n", j->group);
	if (*j->webhook)
		printf("webhook         %s\n", j->webhook);
	if (*j->batch)
		printf("batch           %s (line %u)\n", j->batch, j->line);
	printf("attempts        %u\n", j->attempts);
	if (j->http_status)
		printf("http status     %u (last answer)\n", j->http_status);
	printf("created         %s\n", j->created_ms ? sl_fmt_iso8601(j->created_ms, a, 32) : "-");
	printf("dispatched      %s\n", j->dispatched_ms ?
	    sl_fmt_iso8601(j->dispatched_ms, a, 32) : "-");
	printf("finished        %s\n", j->finished_ms ?
	    sl_fmt_iso8601(j->finished_ms, a, 32) : "-");
	if (!job_is_final(j->state))
		printf("expires         %s\n", sl_fmt_iso8601(j->expires_ms, a, 32));
	if (j->state == JOB_QUEUED)
		printf("due             %s\n", sl_fmt_iso8601(j->not_before_ms, a, 32));
	if (j->state == JOB_IN_PROGRESS)
		printf("lease until     %s\n", sl_fmt_iso8601(j->lease_ms, a, 32));
	free(custom_id);
	printf("\nattempt history:\n  %3s  %-20s  %8s  %4s  %s\n", "#", "STARTED", "TOOK", "HTTP",
	    "MESSAGE");
	rc = store_attempt_list(t, j->id, show_attempt_text, NULL);
	if (rc)
		return rc;
	putchar('\n');
	rc = store_body_get(t, j->id, &req, &req_len);
	if (rc == SL_ENOTFOUND)
		req = NULL;
	else if (rc)
		return rc;
	print_pretty("request", req, req_len);
	rc = store_result_get(t, j->id, &resp, &resp_len);
	if (rc == SL_ENOTFOUND)
		resp = NULL;
	else if (rc)
		return rc;
	print_pretty("response", resp, resp_len);
	return 0;
}

/* The API's generation object, plus "attempts": spliced before its final
 * brace, so the stored request and response stay byte for byte. */
static int
show_json(struct store_txn *t, const struct job *j)
{
	struct sl_buf b;
	json_t *attempts = json_array();
	char *enc = NULL;
	int rc;

	sl_buf_init(&b, RENDER_LIMIT);
	rc = attempts ? generation_render(t, j, &b) : -ENOMEM;
	if (!rc)
		rc = store_attempt_list(t, j->id, show_attempt_json, attempts);
	if (!rc) {
		enc = json_dumps(attempts, JSON_COMPACT);
		rc = enc ? 0 : -ENOMEM;
	}
	if (!rc) {
		b.len--; /* the generation's closing brace */
		rc = sl_buf_printf(&b, ",\"attempts\":%s}\n", enc);
	}
	if (!rc)
		fwrite(b.data, 1, b.len, stdout);
	free(enc);
	json_decref(attempts);
	sl_buf_release(&b);
	return rc;
}

int
ctl_show(struct ctl *c)
{
	const char *id = c->args[0];
	struct store_txn *t = NULL;
	struct store *st;
	struct job j;
	int rc;

	rc = ctl_open(c, false, &st);
	if (rc)
		return rc;
	rc = store_begin(st, true, &t);
	if (!rc)
		rc = store_job_get(t, id, &j);
	if (rc == SL_ENOTFOUND) {
		ctl_err("no job %s in %s", id, c->data_dir);
		rc = CTL_FAIL;
		goto out;
	}
	if (!rc)
		rc = c->json ? show_json(t, &j) : show_text(t, &j);
	if (rc)
		rc = ctl_store_err(id, rc);
out:
	store_abort(t);
	store_close(st);
	return rc;
}

/* ---- export ---- */

static int
export_one(void *arg, struct store_txn *t, const struct job *j)
{
	struct sl_buf *b = arg;
	int rc;

	b->len = 0; /* reuse the allocation */
	rc = generation_render(t, j, b);
	if (rc == SL_ENOTFOUND || rc == SL_ECORRUPT) {
		ctl_err("skipping %s: its request body is %s", j->id,
		    rc == SL_ENOTFOUND ? "missing" : "damaged");
		return 0;
	}
	if (rc)
		return rc;
	if (sl_buf_append(b, "\n", 1) != 0)
		return -ENOMEM;
	return fwrite(b->data, 1, b->len, stdout) == b->len ? 0 : -errno;
}

int
ctl_export(struct ctl *c)
{
	struct ctl_filter f;
	struct store_txn *t = NULL;
	struct store *st;
	struct sl_buf b;
	int rc;

	ctl_filter_from(c, &f);
	rc = ctl_open(c, false, &st);
	if (rc)
		return rc;
	sl_buf_init(&b, RENDER_LIMIT);
	rc = store_begin(st, true, &t);
	if (!rc)
		rc = ctl_select(t, &f, export_one, &b);
	store_abort(t);
	sl_buf_release(&b);
	store_close(st);
	return rc ? ctl_store_err("exporting", rc) : CTL_OK;
}

/* ---- watch ---- */

static volatile sig_atomic_t watch_stop;

static void
watch_on_signal(int sig)
{
	(void)sig;
	watch_stop = 1;
}

static void
watch_draw(const struct ctl *c, bool tty, const struct store_counts *n, uint64_t now_ms,
    double rate)
{
	uint64_t total = 0, done = n->by_state[JOB_SUCCESS] + n->by_state[JOB_FAILED];
	double pct;
	char ts[32], b[64], every[32];

	for (int i = 0; i < JOB_STATE_COUNT; i++)
		total += n->by_state[i];
	pct = total ? 100.0 * (double)done / (double)total : 0;
	if (c->json) {
		json_t *o = json_pack("{s:o, s:I, s:I, s:I, s:I, s:I, s:f}",
		    "at", ctl_json_time(now_ms), "Queued", (json_int_t)n->by_state[JOB_QUEUED],
		    "In Progress", (json_int_t)n->by_state[JOB_IN_PROGRESS],
		    "Success", (json_int_t)n->by_state[JOB_SUCCESS],
		    "Failed", (json_int_t)n->by_state[JOB_FAILED], "total", (json_int_t)total,
		    "finishedPerSecond", rate);
		ctl_print_json(o);
	} else if (!tty) {
		printf("%s queued=%llu in_progress=%llu success=%llu failed=%llu total=%llu "
		    "finished=%.1f%% rate=%.1f/s\n", ctl_fmt_time(now_ms, ts),
		    (unsigned long long)n->by_state[JOB_QUEUED],
		    (unsigned long long)n->by_state[JOB_IN_PROGRESS],
		    (unsigned long long)n->by_state[JOB_SUCCESS],
		    (unsigned long long)n->by_state[JOB_FAILED], (unsigned long long)total,
		    pct, rate);
	} else {
		/* Home, clear to the end of the screen, redraw. */
		printf("\033[H\033[J\033[1mslowlane\033[0m  %s  %s  (every %s; Ctrl-C quits)\n\n",
		    c->data_dir, ctl_fmt_time(now_ms, ts), ctl_fmt_age(c->interval_ms, every));
		for (int i = 0; i < JOB_STATE_COUNT; i++)
			printf("  %-12s %10llu  %s\n", job_state_name(i),
			    (unsigned long long)n->by_state[i],
			    ctl_fmt_bar(n->by_state[i], total, 40, b));
		printf("  %-12s %10llu\n\n", "total", (unsigned long long)total);
		printf("  finished     %s %5.1f%%  (%llu of %llu)\n",
		    ctl_fmt_bar(done, total, 40, b), pct,
		    (unsigned long long)done, (unsigned long long)total);
		printf("  throughput   %.1f jobs/s finished\n", rate);
	}
	fflush(stdout);
}

/* Sleeps `ms` unless a signal asks to stop. */
static void
watch_sleep(uint64_t ms)
{
	struct timespec ts = {
		.tv_sec = (time_t)(ms / 1000),
		.tv_nsec = (long)(ms % 1000) * 1000000,
	};

	while (!watch_stop && nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

int
ctl_watch(struct ctl *c)
{
	struct sigaction sa = { .sa_handler = watch_on_signal }; /* no SA_RESTART */
	bool tty = !c->json && isatty(STDOUT_FILENO);
	uint64_t prev_done = 0, prev_ms = 0;
	struct store *st;
	int rc;

	if (c->interval_ms < 100)
		return ctl_usage_err(c, "--interval must be at least 100ms");
	rc = ctl_open(c, false, &st);
	if (rc)
		return rc;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (tty)
		fputs("\033[?25l", stdout); /* hide the cursor while redrawing */
	for (uint64_t i = 0; !watch_stop; i++) {
		struct store_txn *t = NULL;
		struct store_counts n;
		uint64_t now = sl_wall_ms(), done;
		double rate = 0;

		rc = store_begin(st, true, &t);
		if (!rc)
			rc = store_counts_get(t, &n);
		store_abort(t);
		if (rc)
			break;
		done = n.by_state[JOB_SUCCESS] + n.by_state[JOB_FAILED];
		/* Requeue and purge make `done` shrink: no negative rates. */
		if (i > 0 && now > prev_ms && done > prev_done)
			rate = (double)(done - prev_done) * 1000.0 / (double)(now - prev_ms);
		watch_draw(c, tty, &n, now, rate);
		prev_done = done;
		prev_ms = now;
		if (c->count && i + 1 >= c->count)
			break;
		watch_sleep(c->interval_ms);
	}
	if (tty)
		fputs("\033[?25h", stdout);
	store_close(st);
	return rc ? ctl_store_err("reading counts", rc) : CTL_OK;
}
