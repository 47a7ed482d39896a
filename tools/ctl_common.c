/*
 * ctl_common.c - what slowlanectl's commands share: opening the store with a
 * clear message for each way it can fail, selecting jobs newest first
 * through the store's time indexes, and formatting table cells.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slowlane/api.h"
#include "slowlane/common.h"
#include "slowlane/intake.h"
#include "slowlane/journal.h"
#include "slowlane/log.h"
#include "slowlane/util.h"

#include "ctl_common.h"

/*
 * A running daemon acknowledges a submit once its journal has it, and stores
 * it in LMDB a little later (docs/JOURNAL.md: up to its linger, ~10 ms,
 * plus a commit). An operator who has just been answered must find the job
 * all the same: wait, up to CATCH_UP_MS, until the store's applied seq has
 * reached the last frame the journal holds now.
 */
#define CATCH_UP_MS 3000

static void
catch_up(const struct ctl *c, struct store *st)
{
	uint64_t target, applied = 0, t0 = sl_wall_ms();

	if (journal_probe(c->data_dir) != -EBUSY || journal_last_seq(c->data_dir, &target) != 0)
		return; /* no journal, or one no daemon is writing */
	for (;;) {
		struct store_txn *t;
		if (store_begin(st, true, &t) != 0)
			return;
		if (store_meta_get_u64(t, "journal_seq", &applied) != 0)
			applied = 0;
		store_abort(t);
		if (applied >= target)
			return;
		if (sl_wall_ms() - t0 >= CATCH_UP_MS)
			break;
		usleep(2000);
	}
	ctl_err("warning: the daemon has not stored its latest submits yet (journal at %llu, "
	    "store at %llu): the newest jobs may be missing", (unsigned long long)target,
	    (unsigned long long)applied);
}

/*
 * Stores what the journal holds and the store lacks, as slowlaned does when
 * it starts: after a crash, acknowledged submits may be only there, and an
 * operator inspecting or backing up the store must see them. Skipped while a
 * daemon holds the journal (it stores them itself: catch_up waits). A
 * read-only open is closed and the store opened for writing meanwhile
 * (LMDB forbids two opens of one store in a process); if that fails the
 * command goes on without.
 */
static void
recover_journal(const struct ctl *c, bool write, struct store **st)
{
	struct store_opts rw = { .create = false };
	struct store *w = *st;
	char path[4096];
	uint64_t stored = 0, ignored = 0;
	int rc = 0, dir;

	/* No journal, or a daemon runs (it holds the data directory, and the
	 * journal unless --no-journal): nothing to do, and no need to take the
	 * store's write lock to find that out. */
	dir = sl_try_lock(c->data_dir, O_RDONLY | O_DIRECTORY);
	if (dir < 0) {
		catch_up(c, *st);
		return;
	}
	close(dir);
	if (journal_probe(c->data_dir) != 0)
		return;
	snprintf(path, sizeof path, "%s/journal", c->data_dir);
	if (!write) {
		store_close(*st);
		*st = NULL;
		rc = store_open(c->data_dir, &rw, &w);
		if (rc)
			w = NULL;
	}
	if (w)
		rc = intake_recover(w, c->data_dir, NULL, &stored, &ignored);
	if (rc == 0 && stored)
		ctl_err("stored %llu acknowledged submit%s from %s (slowlaned stopped before "
		    "storing them)", (unsigned long long)stored, stored == 1 ? "" : "s", path);
	else if (rc && rc != -EBUSY)
		ctl_err("warning: submits in %s could not be stored (%s); slowlaned stores them "
		    "when it starts", path, sl_strerror(rc));
	if (!write) {
		struct store_opts ro = { .read_only = true, .create = false };
		store_close(w);
		if (store_open(c->data_dir, &ro, st) != 0)
			*st = NULL;
	}
}

int
ctl_open(const struct ctl *c, bool write, struct store **out)
{
	struct store_opts o = { .read_only = !write, .create = false };
	int rc;

	/* Our message says it all for the expected failures; the store's own
	 * log line is kept for the unexpected ones (it names LMDB's error). */
	*out = NULL;
	log_set_level((enum log_level)(LOG_ERROR + 1));
	rc = store_open(c->data_dir, &o, out);
	log_set_level(LOG_WARN);
	if (rc == SL_ESTORE)
		rc = store_open(c->data_dir, &o, out);
	if (rc == 0) {
		store_reader_check(*out); /* slots left by a killed slowlanectl */
		log_set_level((enum log_level)(LOG_ERROR + 1));
		recover_journal(c, write, out);
		log_set_level(LOG_WARN);
		if (*out)
			return CTL_OK;
		rc = SL_ESTORE;
	}
	*out = NULL;
	switch (rc) {
	case SL_ENOTFOUND:
		ctl_err("no store in %s (is --data-dir right?)", c->data_dir);
		break;
	case SL_EVERSION:
		ctl_err("the store in %s has a newer format than %d, the one this slowlanectl "
		    "reads: it was written by a newer slowlane; use its slowlanectl",
		    c->data_dir, STORE_FORMAT);
		break;
	case SL_ECORRUPT:
		ctl_err("the store in %s lacks databases or its format record: damaged, or "
		    "written by an older slowlaned (starting the daemon on it adds what is "
		    "missing)", c->data_dir);
		break;
	default:
		ctl_err("cannot open the store in %s: %s", c->data_dir, sl_strerror(rc));
		break;
	}
	return CTL_FAIL;
}

int
ctl_store_err(const char *what, int rc)
{
	ctl_err("%s: %s", what, sl_strerror(rc));
	return CTL_FAIL;
}

/* ---- selecting jobs ---- */

void
ctl_filter_from(const struct ctl *c, struct ctl_filter *f)
{
	memset(f, 0, sizeof *f);
	f->state_mask = c->state_mask;
	f->model = c->model;
	if (c->key) {
		f->by_tenant = true;
		api_key_tenant(c->key, f->tenant);
	}
	if (c->seen & CTL_O_SINCE)
		f->created_from_ms = c->now_ms > c->since_ms ? c->now_ms - c->since_ms : 1;
	f->limit = c->limit;
}

bool
ctl_filter_match(const struct ctl_filter *f, const struct job *j)
{
	if (f->state_mask && !(f->state_mask & (1u << j->state)))
		return false;
	if (f->model && strcmp(f->model, j->model) != 0)
		return false;
	if (f->by_tenant && strcmp(f->tenant, j->tenant) != 0)
		return false;
	return j->created_ms >= f->created_from_ms;
}

struct select_ctx {
	struct store_txn *t;
	const struct ctl_filter *f;
	ctl_job_fn fn;
	void *arg;
	uint64_t n;   /* jobs passed to fn */
	int fn_rc;    /* fn's non-zero value, if it stopped the walk */
	struct pick { /* unfinished walk: matches, sorted before the calls */
		uint64_t created_ms;
		char id[SL_ID_LEN + 1];
	} *picks;
	size_t npicks, cap;
};

#define SELECT_STOP 1 /* a scan callback's "enough" (store errors are < 0) */

/* Created index, newest first: each entry is a candidate. */
static int
select_created(void *arg, uint64_t ms, const char *id)
{
	struct select_ctx *s = arg;
	struct job j;

	if (ms < s->f->created_from_ms)
		return SELECT_STOP;
	if (store_job_get(s->t, id, &j) != 0 || !ctl_filter_match(s->f, &j))
		return 0;
	s->fn_rc = s->fn(s->arg, s->t, &j);
	if (s->fn_rc)
		return SELECT_STOP;
	return ++s->n == s->f->limit ? SELECT_STOP : 0;
}

/* Expiry index (unfinished jobs, in deadline order): collect the matches. */
static int
select_expiry(void *arg, uint64_t ms, const char *id)
{
	struct select_ctx *s = arg;
	struct job j;

	(void)ms;
	if (store_job_get(s->t, id, &j) != 0 || !ctl_filter_match(s->f, &j))
		return 0;
	if (s->npicks == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 256;
		struct pick *p = realloc(s->picks, cap * sizeof *p);
		if (!p)
			return -ENOMEM;
		s->picks = p;
		s->cap = cap;
	}
	s->picks[s->npicks].created_ms = j.created_ms;
	memcpy(s->picks[s->npicks].id, id, SL_ID_LEN + 1);
	s->npicks++;
	return 0;
}

static int
pick_newest_first(const void *a, const void *b)
{
	const struct pick *x = a, *y = b;

	if (x->created_ms != y->created_ms)
		return x->created_ms < y->created_ms ? 1 : -1;
	return -strcmp(x->id, y->id);
}

int
ctl_select(struct store_txn *t, const struct ctl_filter *f, ctl_job_fn fn, void *arg)
{
	const unsigned unfinished = 1u << JOB_QUEUED | 1u << JOB_IN_PROGRESS;
	struct select_ctx s = { .t = t, .f = f, .fn = fn, .arg = arg };
	int rc;

	if (!f->state_mask || (f->state_mask & ~unfinished)) {
		rc = store_scan_time(t, STORE_CREATED, UINT64_MAX, true, select_created, &s);
		if (rc == SELECT_STOP)
			rc = 0;
		return rc ? rc : s.fn_rc;
	}
	/* Only unfinished jobs: O(unfinished), not a walk of every job ever. */
	rc = store_scan_time(t, STORE_EXPIRY, 0, false, select_expiry, &s);
	if (rc == 0)
		if (s.npicks > 1)
			qsort(s.picks, s.npicks, sizeof *s.picks, pick_newest_first);
	for (size_t i = 0; rc == 0 && i < s.npicks; i++) {
		struct job j;
		if (f->limit && s.n == f->limit)
			break;
		if (store_job_get(t, s.picks[i].id, &j) != 0)
			continue;
		rc = fn(arg, t, &j);
		s.n++;
	}
	free(s.picks);
	return rc;
}

/* ---- formatting ---- */

int
ctl_print_json(json_t *v)
{
	int rc = v && json_dumpf(v, stdout, JSON_COMPACT | JSON_SORT_KEYS) == 0 ? 0 : -ENOMEM;

	putchar('\n');
	json_decref(v);
	return rc;
}

json_t *
ctl_json_time(uint64_t ms)
{
	char ts[32];

	return ms ? json_string(sl_fmt_iso8601(ms, ts, sizeof ts)) : json_null();
}

json_t *
ctl_json_str(const char *s)
{
	json_t *v = json_string(s);

	return v ? v : json_null();
}

const char *
ctl_fmt_time(uint64_t ms, char out[32])
{
	char *dot;

	if (!ms)
		return strcpy(out, "-");
	sl_fmt_iso8601(ms, out, 32);
	dot = strchr(out, '.');
	if (dot)
		memcpy(dot, "Z", 2);
	return out;
}

const char *
ctl_fmt_age(uint64_t ms, char out[32])
{
	uint64_t s = ms / 1000;

	if (ms < 1000)
		snprintf(out, 32, "%llums", (unsigned long long)ms);
	else if (s < 60)
		snprintf(out, 32, "%llu.%llus", (unsigned long long)s,
		    (unsigned long long)(ms % 1000 / 100));
	else if (s < 3600)
		snprintf(out, 32, "%llum%02llus", (unsigned long long)(s / 60),
		    (unsigned long long)(s % 60));
	else if (s < 86400)
		snprintf(out, 32, "%lluh%02llum", (unsigned long long)(s / 3600),
		    (unsigned long long)(s % 3600 / 60));
	else
		snprintf(out, 32, "%llud%02lluh", (unsigned long long)(s / 86400),
		    (unsigned long long)(s % 86400 / 3600));
	return out;
}

const char *
ctl_fmt_bar(uint64_t part, uint64_t whole, int width, char *out)
{
	int fill = whole ? (int)((double)part / (double)whole * width + 0.5) : 0;

	if (fill > width)
		fill = width;
	out[0] = '[';
	for (int i = 0; i < width; i++)
		out[1 + i] = i < fill ? '#' : '.';
	out[width + 1] = ']';
	out[width + 2] = '\0';
	return out;
}

const char *
ctl_fmt_bytes(uint64_t n, char out[32])
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	size_t u = 0;

	while (v >= 1024 && u + 1 < SL_ARRAY_LEN(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, 32, "%llu B", (unsigned long long)n);
	else
		snprintf(out, 32, "%.1f %s", v, units[u]);
	return out;
}

const char *
ctl_cell(const char *s, size_t width, char *out, size_t cap)
{
	size_t n = 0, len = s ? strlen(s) : 0;
	bool cut = len > width;

	if (!s || !*s)
		return "-";
	if (width + 4 > cap)
		width = cap - 4;
	if (cut) {
		len = width - 3;
		/* Never end inside a UTF-8 sequence: back up to a lead byte. */
		while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
			len--;
	}
	for (size_t i = 0; i < len; i++)
		out[n++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? ' ' : s[i];
	if (cut) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

int
ctl_state_parse(const char *s)
{
	static const char *const words[JOB_STATE_COUNT] = {
		[JOB_QUEUED] = "queued", [JOB_IN_PROGRESS] = "inprogress",
		[JOB_SUCCESS] = "success", [JOB_FAILED] = "failed",
	};
	char norm[32];
	size_t n = 0;

	/* "In Progress", "in-progress", "IN_PROGRESS", "inprogress" alike. */
	for (; *s; s++) {
		if (*s == ' ' || *s == '-' || *s == '_')
			continue;
		if (n + 1 >= sizeof norm)
			return -1;
		norm[n++] = (char)tolower((unsigned char)*s);
	}
	norm[n] = '\0';
	for (int i = 0; i < JOB_STATE_COUNT; i++)
		if (strcmp(norm, words[i]) == 0)
			return i;
	return -1;
}

char *
ctl_custom_id(struct store_txn *t, const char *id)
{
	const void *body;
	size_t len;
	json_t *root, *v;
	char *out = NULL;

	if (store_body_get(t, id, &body, &len) != 0)
		return NULL;
	root = json_loadb(body, len, 0, NULL);
	v = json_object_get(json_object_get(root, "metadata"), "custom_id");
	if (json_is_string(v))
		out = strdup(json_string_value(v));
	json_decref(root);
	return out;
}
