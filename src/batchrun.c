/*
 * batchrun.c - the batch engine (see batchrun.h).
 *
 * Each batch with work to do is listed in `batch_active`. The engine keeps
 * a `work` for each one it is handling and advances it one slice per idle
 * turn of the loop, with at most one store op in flight per batch:
 *
 *   validate  stream the input file, check every line (batch_check_line),
 *             duplicates (64-bit hashes of custom_ids), one model; then one
 *             op: failed with errors.data, or in_progress with the total.
 *   expand    up to EXPAND_CHUNK lines per op: jobs + batch_lines + the new
 *             file offset, in one transaction. The op checks the stored
 *             offset first, so a retried or replayed slice inserts nothing.
 *   run       nothing: the scheduler runs the jobs; batch_job_ended()
 *             counts them and, after the last, sets phase finalize.
 *   cancel    queued jobs of a cancelled batch end batch_cancelled, a chunk
 *             per op; jobs in flight may finish.
 *   finalize  stream the lines into output and error files, then one op
 *             publishes both (fsync, rename) with their records and the
 *             final status, and queues the batch's webhook event.
 *
 * Files past their expires_at (--file-ttl, or expires_after at upload) are
 * gone for the API at once (files_expired); retain.c deletes their records
 * and bytes, except the input file of a batch that is still active.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slowlane/batch.h"
#include "slowlane/batchrun.h"
#include "slowlane/common.h"
#include "slowlane/event.h"
#include "slowlane/files.h"
#include "slowlane/log.h"
#include "slowlane/queue.h"
#include "slowlane/util.h"

#define TICK_S 1.0
#define EXPAND_CHUNK 256
#define SCAN_CHUNK 512
#define MAX_WORKS 4          /* batches advanced at once (memory bound) */

enum phase { PH_VALIDATE, PH_EXPAND, PH_RUN, PH_CANCEL, PH_FINALIZE, PH_DONE, PH_COUNT };

static const char *const phase_names[PH_COUNT] = {
	[PH_VALIDATE] = "validate", [PH_EXPAND] = "expand", [PH_RUN] = "run",
	[PH_CANCEL] = "cancel", [PH_FINALIZE] = "finalize", [PH_DONE] = "done",
};

struct work;

/* One store op of a work; `kind` says which fields matter. */
struct step_op {
	struct wr_op op;
	struct work *w;
	enum phase kind;
	uint64_t start_offset, new_offset;   /* expand */
	uint32_t new_line;                   /* expand: last line read */
	size_t n;                            /* expand/cancel: items */
	struct job *jobs;                    /* expand */
	char **bodies;
	char **custom_ids;
	char (*ids)[SL_ID_LEN + 1];          /* cancel */
	uint32_t next_line;                  /* cancel: where the next chunk starts */
	bool last;                           /* the phase ends with this op */
	json_t *errors;                      /* validate: failures, or NULL */
	uint64_t total;                      /* validate */
	char model[JOB_MODEL_MAX + 1];       /* validate */
	enum phase result;                   /* the phase the batch is in after */
};

struct work {
	struct batchrun *br;
	struct work *next;
	char id[BATCH_ID_LEN + 1];
	enum phase phase;
	bool busy, done;
	/* from the record */
	char endpoint[32], tenant[JOB_TENANT_LEN + 1], input[FILE_ID_MAX + 1];
	uint64_t expires_ms;
	/* input reading */
	int fd;
	uint64_t offset;
	uint32_t line;
	char *buf;
	size_t bufcap;
	/* validation */
	json_t *errors;
	uint64_t total;
	char model[JOB_MODEL_MAX + 1];
	uint64_t *set;
	size_t set_cap, set_n;
	bool too_many;
	/* cancel and finalize */
	uint32_t next_line;
	int out_fd, err_fd;
	char out_tmp[4096], err_tmp[4096];
	uint64_t out_lines, err_lines;
};

struct batchrun {
	struct ev_loop *loop;
	struct store *st;
	struct writer *wr;
	struct sched *sc;
	struct batchrun_opts o;
	char *data_dir;
	ev_timer tick;
	ev_idle idle;
	struct work *works;
	unsigned n_works;
	bool stopped;
};

static void work_free(struct work *w);

/* ---- helpers ---- */

static enum phase
phase_of(json_t *b)
{
	const char *p = json_string_value(json_object_get(b, "_phase"));

	for (int i = 0; p && i < PH_COUNT; i++)
		if (strcmp(p, phase_names[i]) == 0)
			return (enum phase)i;
	return PH_DONE;
}

static const char *
status_of(json_t *b)
{
	const char *s = json_string_value(json_object_get(b, "status"));

	return s ? s : "";
}

static uint64_t
fnv1a(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h ? h : 1; /* 0 marks an empty slot */
}

/* Adds to the custom_id set; returns false if it was already there. */
static bool
set_add(struct work *w, const char *custom_id)
{
	uint64_t h = fnv1a(custom_id);
	size_t i;

	if (w->set_n * 2 >= w->set_cap) {
		size_t ncap = w->set_cap ? w->set_cap * 2 : 1024;
		uint64_t *ns = calloc(ncap, sizeof *ns);
		if (!ns)
			return true; /* no memory: skip the duplicate check */
		for (size_t k = 0; k < w->set_cap; k++) {
			if (!w->set[k])
				continue;
			for (i = w->set[k] & (ncap - 1); ns[i]; i = (i + 1) & (ncap - 1))
				;
			ns[i] = w->set[k];
		}
		free(w->set);
		w->set = ns;
		w->set_cap = ncap;
	}
	for (i = h & (w->set_cap - 1); w->set[i]; i = (i + 1) & (w->set_cap - 1))
		if (w->set[i] == h)
			return false;
	w->set[i] = h;
	w->set_n++;
	return true;
}

static void
add_error(struct work *w, const char *code, uint32_t line, const char *msg, const char *param)
{
	if (json_array_size(w->errors) >= BATCH_ERRORS_MAX)
		return;
	/* line 0: the file as a whole (null, as OpenAI's error objects allow). */
	json_array_append_new(w->errors, json_pack("{s:s, s:o, s:s, s:s?}", "code", code,
	    "line", line ? json_integer(line) : json_null(), "message", msg, "param", param));
}

/* Reads the next complete lines after w->offset into w->buf; returns the
 * bytes read (0 at end), or -1. *eof is set when the file ended. */
static ssize_t
read_slice(struct work *w, bool *eof)
{
	ssize_t n = pread(w->fd, w->buf, w->bufcap, (off_t)w->offset);

	*eof = n >= 0 && (size_t)n < w->bufcap;
	return n;
}

/* Calls fn for each line of buf[0..n) and returns the bytes consumed
 * (complete lines only, unless at_eof). Stops when fn returns non-zero. */
static size_t
each_line(struct work *w, size_t n, bool at_eof,
    int (*fn)(struct work *w, const char *line, size_t len, void *arg), void *arg)
{
	size_t pos = 0;

	while (pos < n) {
		char *nl = memchr(w->buf + pos, '\n', n - pos);
		size_t len = nl ? (size_t)(nl - (w->buf + pos)) : n - pos;
		if (!nl && !at_eof)
			break; /* partial line: the next slice re-reads it */
		w->line++;
		if (fn(w, w->buf + pos, len, arg)) {
			w->line--;
			break;
		}
		pos += len + (nl ? 1 : 0);
	}
	return pos;
}

static bool
blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

/* ---- ops ---- */

static void step_done(struct wr_op *op);

static void
step_free(struct step_op *s)
{
	for (size_t i = 0; i < s->n; i++) {
		if (s->bodies)
			free(s->bodies[i]);
		if (s->custom_ids)
			free(s->custom_ids[i]);
	}
	free(s->bodies);
	free(s->custom_ids);
	free(s->jobs);
	free(s->ids);
	json_decref(s->errors);
	free(s);
}

static struct step_op *
step_new(struct work *w, enum phase kind, int (*apply)(struct store_txn *, struct wr_op *))
{
	struct step_op *s = calloc(1, sizeof *s);

	if (!s)
		return NULL;
	s->w = w;
	s->kind = kind;
	s->op.apply = apply;
	s->op.done = step_done;
	return s;
}

static void
submit(struct work *w, struct step_op *s)
{
	w->busy = true;
	writer_submit(w->br->wr, &s->op);
}

/* Queues the batch.<status> event if the batch has a webhook_url: to the
 * registration found at create (signed with its secret), or, for a batch
 * of an older store without one, to the bare URL. */
static int
batch_event(struct store_txn *t, json_t *b, const char *status, uint64_t now_ms)
{
	const char *url = json_string_value(json_object_get(b, "_webhook_url"));
	const char *hook = json_string_value(json_object_get(b, "_webhook_id"));
	const char *id = json_string_value(json_object_get(b, "id"));
	char evt[EVENT_ID_LEN + 1], type[40], *s;
	json_t *o;
	int rc;

	if (!url || !*url)
		return 0;
	rc = event_new_id(evt);
	if (rc)
		return rc;
	snprintf(type, sizeof type, "batch.%s", status);
	o = json_pack("{s:s, s:s, s:s, s:I, s:{s:s}}", "id", evt, "object", "event", "type",
	    type, "created_at", (json_int_t)(now_ms / 1000), "data", "id", id);
	s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		return -ENOMEM;
	rc = event_enqueue(t, evt, type, hook && *hook ? hook : NULL, id, url, s, strlen(s),
	    now_ms);
	free(s);
	return rc;
}

/* Moves a batch whose jobs have all ended to finalize. */
static void
maybe_finalize(json_t *b, uint64_t now_ms)
{
	if (phase_of(b) != PH_RUN ||
	    json_integer_value(json_object_get(b, "_remaining")) > 0)
		return;
	json_object_set_new(b, "_phase", json_string("finalize"));
	if (strcmp(status_of(b), "cancelling") != 0)
		batch_set_status(b, "finalizing", "finalizing_at", now_ms);
}

static int
validated_apply(struct store_txn *t, struct wr_op *op)
{
	struct step_op *s = SL_CONTAINER_OF(op, struct step_op, op);
	uint64_t now = sl_wall_ms();
	json_t *b;
	int rc = batch_get(t, s->w->id, &b);

	if (rc)
		return rc;
	if (phase_of(b) != PH_VALIDATE) {
		json_decref(b);
		return SL_ESTALE;
	}
	if (s->errors) {
		batch_set_status(b, "failed", "failed_at", now);
		json_object_set_new(b, "errors", json_pack("{s:s, s:O}", "object", "list", "data",
		    s->errors));
		json_object_set_new(b, "_phase", json_string("done"));
		rc = batch_set_active(t, s->w->id, false);
		if (!rc)
			rc = batch_event(t, b, "failed", now);
	} else {
		bool cancelling = strcmp(status_of(b), "cancelling") == 0;
		if (!cancelling)
			batch_set_status(b, "in_progress", "in_progress_at", now);
		json_object_set_new(json_object_get(b, "request_counts"), "total",
		    json_integer((json_int_t)s->total));
		json_object_set_new(b, "_remaining", json_integer((json_int_t)s->total));
		json_object_set_new(b, "_offset", json_integer(0));
		json_object_set_new(b, "_line", json_integer(0));
		json_object_set_new(b, "_expanded", json_integer(0));
		json_object_set_new(b, "model", json_string(s->model));
		json_object_set_new(b, "_phase", json_string("expand"));
	}
	s->result = phase_of(b);
	if (!rc)
		rc = batch_put(t, b);
	json_decref(b);
	return rc;
}

static int
expand_apply(struct store_txn *t, struct wr_op *op)
{
	struct step_op *s = SL_CONTAINER_OF(op, struct step_op, op);
	struct work *w = s->w;
	uint64_t now = sl_wall_ms();
	json_int_t expanded;
	bool cancelling;
	json_t *b;
	int rc = batch_get(t, w->id, &b);

	if (rc)
		return rc;
	/* Idempotence: apply only on top of the offset this slice started at. */
	if (phase_of(b) != PH_EXPAND ||
	    (uint64_t)json_integer_value(json_object_get(b, "_offset")) != s->start_offset) {
		s->result = phase_of(b);
		json_decref(b);
		return SL_ESTALE;
	}
	cancelling = strcmp(status_of(b), "cancelling") == 0;
	expanded = json_integer_value(json_object_get(b, "_expanded")) + (json_int_t)s->n;
	json_object_set_new(b, "_offset", json_integer((json_int_t)s->new_offset));
	json_object_set_new(b, "_line", json_integer((json_int_t)s->new_line));
	json_object_set_new(b, "_expanded", json_integer(expanded));
	if (s->last)
		json_object_set_new(b, "_phase", json_string(cancelling ? "cancel" : "run"));
	if (s->last && cancelling)
		json_object_set_new(b, "_cancel_line", json_integer(1));
	/* Written before the jobs: their end hooks update this record. */
	rc = batch_put(t, b);
	json_decref(b);
	for (size_t i = 0; rc == 0 && i < s->n; i++) {
		rc = queue_insert(t, &s->jobs[i], s->bodies[i], strlen(s->bodies[i]));
		if (!rc)
			rc = batch_line_put(t, w->id, s->jobs[i].line, s->jobs[i].id,
			    s->custom_ids[i]);
		if (!rc && cancelling)
			rc = queue_cancel(t, s->jobs[i].id, now,
			    "Cancelled: the batch was cancelled before this request ran");
	}
	if (rc)
		return rc;
	rc = batch_get(t, w->id, &b);
	if (rc)
		return rc;
	maybe_finalize(b, now);
	s->result = phase_of(b);
	rc = batch_put(t, b);
	json_decref(b);
	return rc;
}

static int
cancel_apply(struct store_txn *t, struct wr_op *op)
{
	struct step_op *s = SL_CONTAINER_OF(op, struct step_op, op);
	uint64_t now = sl_wall_ms();
	json_t *b;
	int rc;

	for (size_t i = 0; i < s->n; i++) {
		struct job j;
		rc = store_job_get(t, s->ids[i], &j);
		if (rc == 0 && j.state == JOB_QUEUED)
			rc = queue_cancel(t, j.id, now,
			    "Cancelled: the batch was cancelled before this request ran");
		if (rc && rc != SL_ENOTFOUND && rc != SL_ESTALE)
			return rc;
	}
	rc = batch_get(t, s->w->id, &b);
	if (rc)
		return rc;
	json_object_set_new(b, "_cancel_line", json_integer((json_int_t)s->next_line));
	if (s->last) {
		json_object_set_new(b, "_phase", json_string("run"));
		maybe_finalize(b, now);
	}
	s->result = phase_of(b);
	rc = batch_put(t, b);
	json_decref(b);
	return rc;
}

static int
publish_output(struct store_txn *t, struct work *w, int fd, const char *tmp, uint64_t lines,
    const char *suffix, json_t *b, const char *field, uint64_t now)
{
	struct sl_file f;
	struct stat_like { uint64_t size; } st;
	off_t end;
	int rc;

	if (lines == 0) {
		json_object_set_new(b, field, json_null());
		unlink(tmp);
		return 0;
	}
	memset(&f, 0, sizeof f);
	/* Deterministic id per batch and kind: a replayed op finds it. */
	snprintf(f.id, sizeof f.id, "file-%.18s%s", w->id + 6, suffix);
	rc = files_publish(w->br->data_dir, fd, tmp, f.id);
	if (rc)
		return SL_ESTORE;
	end = fd >= 0 ? lseek(fd, 0, SEEK_END) : 0;
	st.size = end > 0 ? (uint64_t)end : 0;
	snprintf(f.tenant, sizeof f.tenant, "%s", w->tenant);
	snprintf(f.filename, sizeof f.filename, "%s_%s.jsonl", w->id,
	    strcmp(suffix, "out") == 0 ? "output" : "error");
	snprintf(f.purpose, sizeof f.purpose, "batch_output");
	f.bytes = st.size;
	f.lines = lines;
	f.created_ms = now;
	if (json_integer_value(json_object_get(b, "_output_ttl_s")) > 0)
		f.expires_s = now / 1000 +
		    (uint64_t)json_integer_value(json_object_get(b, "_output_ttl_s"));
	else if (w->br->o.file_ttl_ms)
		f.expires_s = (now + w->br->o.file_ttl_ms) / 1000;
	rc = files_put(t, &f);
	if (!rc)
		json_object_set_new(b, field, json_string(f.id));
	return rc;
}

static int
finish_apply(struct store_txn *t, struct wr_op *op)
{
	struct step_op *s = SL_CONTAINER_OF(op, struct step_op, op);
	struct work *w = s->w;
	uint64_t now = sl_wall_ms();
	const char *final;
	json_t *b;
	int rc = batch_get(t, w->id, &b);

	if (rc)
		return rc;
	if (phase_of(b) != PH_FINALIZE) {
		s->result = phase_of(b);
		json_decref(b);
		return SL_ESTALE;
	}
	rc = publish_output(t, w, w->out_fd, w->out_tmp, w->out_lines, "out", b,
	    "output_file_id", now);
	if (!rc)
		rc = publish_output(t, w, w->err_fd, w->err_tmp, w->err_lines, "err", b,
		    "error_file_id", now);
	if (rc) {
		json_decref(b);
		return rc;
	}
	if (strcmp(status_of(b), "cancelling") == 0) {
		final = "cancelled";
		batch_set_status(b, final, "cancelled_at", now);
	} else if (json_integer_value(json_object_get(b, "_expired")) > 0) {
		final = "expired";
		batch_set_status(b, final, "expired_at", now);
	} else {
		final = "completed";
		batch_set_status(b, final, "completed_at", now);
	}
	json_object_set_new(b, "_phase", json_string("done"));
	s->result = PH_DONE;
	rc = batch_set_active(t, w->id, false);
	if (!rc)
		rc = batch_event(t, b, final, now);
	if (!rc)
		rc = batch_put(t, b);
	json_decref(b);
	return rc;
}

static void
step_done(struct wr_op *op)
{
	struct step_op *s = SL_CONTAINER_OF(op, struct step_op, op);
	struct work *w = s->w;
	struct batchrun *br = w->br;

	w->busy = false;
	if (op->rc && op->rc != SL_ESTALE) {
		log_error("batch %s: %s step failed: %s; retrying", w->id, phase_names[s->kind],
		    sl_strerror(op->rc));
		/* Start over from the record: nothing of the step was kept. */
		w->done = true;
	} else if (op->rc == SL_ESTALE && s->kind == PH_EXPAND) {
		w->done = true; /* the record moved on: reload it */
	} else {
		if (s->kind == PH_EXPAND) {
			w->offset = s->new_offset;
			w->line = s->new_line;
			sched_kick(br->sc);
		}
		if (s->kind == PH_CANCEL)
			w->next_line = s->next_line;
		if (s->result != w->phase) {
			if (s->result == PH_FINALIZE || s->result == PH_DONE || s->kind == PH_VALIDATE)
				w->done = true; /* reload for the next phase */
			if (s->kind == PH_FINALIZE || s->result == PH_DONE)
				w->done = true;
			w->phase = s->result;
		}
		if (s->kind == PH_VALIDATE && s->result == PH_EXPAND)
			log_info("batch %s: %llu lines validated", w->id,
			    (unsigned long long)s->total);
		if (s->result == PH_DONE)
			log_info("batch %s: done", w->id);
	}
	step_free(s);
	if (!br->stopped)
		ev_idle_start(br->loop, &br->idle);
}

/* ---- slices ---- */

/* True if `models` (NULL: any) holds `model`. */
static bool
model_served(const char *const *models, const char *model)
{
	if (!models)
		return true;
	for (; *models; models++)
		if (strcmp(*models, model) == 0)
			return true;
	return false;
}

static int
validate_line(struct work *w, const char *line, size_t len, void *arg)
{
	struct batch_line bl;
	const char *code, *param;
	char msg[400];

	if (blank(line, len))
		return 0;
	w->total++;
	if (w->total > w->br->o.max_requests) {
		if (!w->too_many) {
			snprintf(msg, sizeof msg, "The file has more than %llu requests, the limit "
			    "of one batch.", (unsigned long long)w->br->o.max_requests);
			add_error(w, "too_many_tasks", w->line, msg, NULL);
			w->too_many = true;
		}
		return 0;
	}
	if (batch_check_line(line, len, w->endpoint, &bl, &code, &param, msg, sizeof msg)) {
		add_error(w, code, w->line, msg, param);
		return 0;
	}
	if (!set_add(w, bl.custom_id)) {
		snprintf(msg, sizeof msg, "The custom_id '%.100s' appears more than once.",
		    bl.custom_id);
		add_error(w, "duplicate_custom_id", w->line, msg, "custom_id");
	} else if (!w->model[0]) {
		snprintf(w->model, sizeof w->model, "%s", bl.model);
		if (!model_served(w->br->o.models, bl.model)) {
			snprintf(msg, sizeof msg, "The model '%.100s' does not exist.", bl.model);
			add_error(w, "model_not_found", w->line, msg, "body.model");
		}
	} else if (strcmp(w->model, bl.model) != 0) {
		snprintf(msg, sizeof msg, "Every line must name the same model: '%.100s' here, "
		    "'%.100s' before.", bl.model, w->model);
		add_error(w, "model_mismatch", w->line, msg, "body.model");
	}
	return 0;
}

static void
validate_slice(struct work *w)
{
	bool eof;
	ssize_t n = read_slice(w, &eof);
	struct step_op *s;
	size_t used;

	if (n < 0) {
		add_error(w, "file_unreadable", 0, "The input file could not be read.", NULL);
		eof = true;
		n = 0;
	}
	used = each_line(w, (size_t)n, eof, validate_line, NULL);
	w->offset += used;
	if (!eof && used == 0) {
		char msg[120];
		snprintf(msg, sizeof msg, "A line is longer than %zu bytes.", w->br->o.max_line);
		add_error(w, "invalid_json_line", w->line + 1, msg, NULL);
		eof = true;
	}
	if (!eof)
		return; /* the next idle turn reads on */
	if (w->total == 0 && json_array_size(w->errors) == 0)
		add_error(w, "empty_file", 0, "The input file has no requests.", NULL);
	s = step_new(w, PH_VALIDATE, validated_apply);
	if (!s)
		return;
	if (json_array_size(w->errors) > 0)
		s->errors = json_incref(w->errors);
	s->total = w->total;
	snprintf(s->model, sizeof s->model, "%s", w->model);
	submit(w, s);
}

struct expand_ctx {
	struct step_op *s;
	uint64_t now;
};

static int
expand_line(struct work *w, const char *line, size_t len, void *arg)
{
	struct expand_ctx *c = arg;
	struct step_op *s = c->s;
	struct batch_line bl;
	const char *code, *param;
	char msg[200];
	struct job *j;

	if (s->n >= EXPAND_CHUNK)
		return 1;
	if (blank(line, len))
		return 0;
	if (batch_check_line(line, len, w->endpoint, &bl, &code, &param, msg, sizeof msg))
		return 0; /* validated before: cannot happen unless the file changed */
	j = &s->jobs[s->n];
	memset(j, 0, sizeof *j);
	sl_job_id(c->now, j->id);
	j->state = JOB_QUEUED;
	j->kind = strstr(w->endpoint, "chat") ? JOB_CHAT : JOB_COMPLETION;
	j->created_ms = j->not_before_ms = c->now;
	j->expires_ms = w->expires_ms;
	j->line = w->line;
	snprintf(j->tenant, sizeof j->tenant, "%s", w->tenant);
	snprintf(j->model, sizeof j->model, "%s", bl.model);
	snprintf(j->batch, sizeof j->batch, "%s", w->id);
	snprintf(j->message, sizeof j->message, "Queued");
	if (bl.has_metadata)
		j->flags |= JOB_F_METADATA;
	/* The body as the user wrote it, byte for byte. */
	s->bodies[s->n] = strndup(bl.body, bl.body_len);
	s->custom_ids[s->n] = strdup(bl.custom_id);
	if (!s->bodies[s->n] || !s->custom_ids[s->n]) {
		free(s->bodies[s->n]);
		free(s->custom_ids[s->n]);
		return 1;
	}
	s->n++;
	return 0;
}

static void
expand_slice(struct work *w)
{
	struct expand_ctx c = { .now = sl_wall_ms() };
	struct step_op *s = step_new(w, PH_EXPAND, expand_apply);
	uint32_t line0 = w->line;
	ssize_t n;
	size_t used;
	bool eof;

	if (!s)
		return;
	s->jobs = calloc(EXPAND_CHUNK, sizeof *s->jobs);
	s->bodies = calloc(EXPAND_CHUNK, sizeof *s->bodies);
	s->custom_ids = calloc(EXPAND_CHUNK, sizeof *s->custom_ids);
	n = s->jobs && s->bodies && s->custom_ids ? read_slice(w, &eof) : -1;
	if (n < 0) {
		log_error("batch %s: cannot read its input file", w->id);
		step_free(s);
		w->done = true;
		return;
	}
	c.s = s;
	used = each_line(w, (size_t)n, eof, expand_line, &c);
	s->start_offset = w->offset;
	s->new_offset = w->offset + used;
	s->new_line = w->line;
	s->last = eof && used == (size_t)n;
	/* The line counter advances only when the op commits. */
	w->line = line0;
	submit(w, s);
}

struct scan_ctx {
	struct store_txn *t;
	struct work *w;
	struct step_op *s;
	size_t seen;
	uint32_t last_line;
	struct sl_buf out, err;
	int rc;
};

static int
cancel_one(void *arg, uint32_t line, const char *job_id, const char *custom_id)
{
	struct scan_ctx *c = arg;

	memcpy(c->s->ids[c->s->n++], job_id, SL_ID_LEN + 1);
	c->last_line = line;
	return 0;
}

static void
cancel_slice(struct work *w)
{
	struct scan_ctx c = { .w = w };
	struct step_op *s = step_new(w, PH_CANCEL, cancel_apply);

	if (!s || !(s->ids = calloc(SCAN_CHUNK, sizeof *s->ids)) ||
	    store_begin(w->br->st, true, &c.t) != 0) {
		if (s)
			step_free(s);
		return;
	}
	c.s = s;
	batch_lines_scan(c.t, w->id, w->next_line, SCAN_CHUNK, cancel_one, &c);
	store_abort(c.t);
	s->last = s->n < SCAN_CHUNK;
	s->next_line = s->n ? c.last_line + 1 : w->next_line;
	submit(w, s);
}

static int
output_one(void *arg, uint32_t line, const char *job_id, const char *custom_id)
{
	struct scan_ctx *c = arg;
	struct job j;
	bool is_error = true;
	int rc;

	c->seen++;
	c->last_line = line;
	rc = store_job_get(c->t, job_id, &j);
	if (rc)
		return 0; /* purged: nothing to report */
	rc = batch_output_line(c->t, &j, custom_id, &c->err, &is_error);
	if (rc == 0 && !is_error) {
		/* It belongs to the output file: move it over. */
		size_t start = c->err.len;
		while (start > 0 && c->err.data[start - 1] != '\n')
			start--;
		if (start > 0 || c->err.len > 0) {
			size_t from = start;
			/* find the start of the line just appended */
			from = c->err.len - 1;
			while (from > 0 && c->err.data[from - 1] != '\n')
				from--;
			rc = sl_buf_append(&c->out, c->err.data + from, c->err.len - from);
			c->err.len = from;
			if (c->err.data)
				c->err.data[from] = '\0';
		}
		c->w->out_lines++;
	} else if (rc == 0) {
		c->w->err_lines++;
	}
	if (rc)
		c->rc = rc;
	return rc ? 1 : 0;
}

static bool
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		p += k;
		n -= (size_t)k;
	}
	return true;
}

static void
finalize_slice(struct work *w)
{
	struct scan_ctx c = { .w = w };
	struct step_op *s;

	if (w->out_fd < 0) {
		snprintf(w->out_tmp, sizeof w->out_tmp, "%s/files/.%s-out", w->br->data_dir, w->id);
		snprintf(w->err_tmp, sizeof w->err_tmp, "%s/files/.%s-err", w->br->data_dir, w->id);
		w->out_fd = open(w->out_tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		w->err_fd = open(w->err_tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		w->next_line = 1;
		w->out_lines = w->err_lines = 0;
		if (w->out_fd < 0 || w->err_fd < 0) {
			log_error("batch %s: cannot create output files: %s", w->id, strerror(errno));
			w->done = true;
			return;
		}
	}
	if (store_begin(w->br->st, true, &c.t) != 0)
		return;
	sl_buf_init(&c.out, (size_t)1 << 31);
	sl_buf_init(&c.err, (size_t)1 << 31);
	batch_lines_scan(c.t, w->id, w->next_line, SCAN_CHUNK, output_one, &c);
	store_abort(c.t);
	if (c.rc || !write_all(w->out_fd, c.out.data ? c.out.data : "", c.out.len) ||
	    !write_all(w->err_fd, c.err.data ? c.err.data : "", c.err.len)) {
		log_error("batch %s: writing output failed; starting over", w->id);
		sl_buf_release(&c.out);
		sl_buf_release(&c.err);
		w->done = true;
		return;
	}
	sl_buf_release(&c.out);
	sl_buf_release(&c.err);
	if (c.seen == SCAN_CHUNK) {
		w->next_line = c.last_line + 1;
		return; /* more lines: the next idle turn */
	}
	s = step_new(w, PH_FINALIZE, finish_apply);
	if (s)
		submit(w, s);
}

/* ---- works ---- */

static void
work_free(struct work *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->out_fd >= 0)
		close(w->out_fd);
	if (w->err_fd >= 0)
		close(w->err_fd);
	json_decref(w->errors);
	free(w->set);
	free(w->buf);
	free(w);
}

/* Builds a work for batch `id` from its record. NULL if nothing to do. */
static struct work *
work_load(struct batchrun *br, const char *id)
{
	struct store_txn *t = NULL;
	struct work *w = NULL;
	json_t *b = NULL;
	char path[4096];

	if (store_begin(br->st, true, &t) != 0)
		return NULL;
	if (batch_get(t, id, &b) != 0)
		goto out;
	w = calloc(1, sizeof *w);
	if (!w)
		goto out;
	w->br = br;
	w->fd = w->out_fd = w->err_fd = -1;
	snprintf(w->id, sizeof w->id, "%s", id);
	w->phase = phase_of(b);
	snprintf(w->endpoint, sizeof w->endpoint, "%s",
	    json_string_value(json_object_get(b, "endpoint")) ?: "");
	snprintf(w->tenant, sizeof w->tenant, "%s",
	    json_string_value(json_object_get(b, "_tenant")) ?: "");
	snprintf(w->input, sizeof w->input, "%s",
	    json_string_value(json_object_get(b, "input_file_id")) ?: "");
	w->expires_ms = (uint64_t)json_integer_value(json_object_get(b, "expires_at")) * 1000;
	w->offset = (uint64_t)json_integer_value(json_object_get(b, "_offset"));
	w->line = (uint32_t)json_integer_value(json_object_get(b, "_line"));
	w->next_line = (uint32_t)json_integer_value(json_object_get(b, "_cancel_line"));
	if (w->next_line == 0)
		w->next_line = 1;
	w->errors = json_array();
	if (w->phase == PH_VALIDATE) {
		w->offset = 0; /* validation starts over: it wrote nothing */
		w->line = 0;
	}
	if (w->phase == PH_VALIDATE || w->phase == PH_EXPAND) {
		files_path(br->data_dir, w->input, path, sizeof path);
		w->fd = open(path, O_RDONLY | O_CLOEXEC);
		w->bufcap = br->o.max_line + 1;
		w->buf = malloc(w->bufcap);
		if (w->fd < 0 && w->phase == PH_VALIDATE) {
			add_error(w, "file_not_found", 0, "The input file is gone.", "input_file_id");
		} else if (w->fd < 0 || !w->buf) {
			log_error("batch %s: cannot open its input %s", id, path);
			work_free(w);
			w = NULL;
		}
	}
out:
	json_decref(b);
	store_abort(t);
	return w;
}

static void
step(struct work *w)
{
	switch (w->phase) {
	case PH_VALIDATE:
		if (w->fd < 0) { /* input gone: fail at once */
			struct step_op *s = step_new(w, PH_VALIDATE, validated_apply);
			if (s) {
				s->errors = json_incref(w->errors);
				submit(w, s);
			}
			return;
		}
		validate_slice(w);
		break;
	case PH_EXPAND: expand_slice(w); break;
	case PH_CANCEL: cancel_slice(w); break;
	case PH_FINALIZE: finalize_slice(w); break;
	default: w->done = true; break; /* run or done: nothing to do here */
	}
}

static void
idle_cb(struct ev_loop *loop, ev_idle *ev, int revents)
{
	struct batchrun *br = SL_CONTAINER_OF(ev, struct batchrun, idle);
	bool any = false;

	for (struct work **pp = &br->works; *pp;) {
		struct work *w = *pp;
		if (!w->busy && !w->done && !br->stopped)
			step(w);
		if (w->done && !w->busy) {
			*pp = w->next;
			br->n_works--;
			work_free(w);
			continue;
		}
		any |= !w->busy;
		pp = &w->next;
	}
	if (!any || br->stopped)
		ev_idle_stop(loop, ev);
}

static bool
has_work(struct batchrun *br, const char *id)
{
	for (struct work *w = br->works; w; w = w->next)
		if (strcmp(w->id, id) == 0)
			return true;
	return false;
}

static int
active_one(void *arg, const char *id)
{
	struct batchrun *br = arg;
	struct work *w;

	if (br->n_works >= MAX_WORKS)
		return 1;
	if (has_work(br, id))
		return 0;
	w = work_load(br, id);
	if (!w)
		return 0;
	if (w->phase == PH_RUN || w->phase == PH_DONE) {
		work_free(w);
		return 0;
	}
	w->next = br->works;
	br->works = w;
	br->n_works++;
	return 0;
}

void
batchrun_kick(struct batchrun *br)
{
	struct store_txn *t = NULL;

	if (br->stopped || store_begin(br->st, true, &t) != 0)
		return;
	batch_active_list(t, active_one, br);
	store_abort(t);
	if (br->works)
		ev_idle_start(br->loop, &br->idle);
}

static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct batchrun *br = SL_CONTAINER_OF(w, struct batchrun, tick);

	batchrun_kick(br);
}

int
batchrun_new(struct ev_loop *loop, struct store *st, struct writer *wr, struct sched *sc,
    const struct batchrun_opts *o, struct batchrun **out)
{
	struct batchrun *br = calloc(1, sizeof *br);

	if (!br)
		return -ENOMEM;
	br->loop = loop;
	br->st = st;
	br->wr = wr;
	br->sc = sc;
	br->o = *o;
	br->data_dir = strdup(o->data_dir);
	if (!br->data_dir) {
		free(br);
		return -ENOMEM;
	}
	ev_timer_init(&br->tick, tick_cb, TICK_S, TICK_S);
	ev_idle_init(&br->idle, idle_cb);
	*out = br;
	return 0;
}

void
batchrun_start(struct batchrun *br)
{
	ev_timer_start(br->loop, &br->tick);
	batchrun_kick(br);
}

void
batchrun_stop(struct batchrun *br)
{
	br->stopped = true;
	ev_timer_stop(br->loop, &br->tick);
	ev_idle_stop(br->loop, &br->idle);
}

void
batchrun_free(struct batchrun *br)
{
	if (!br)
		return;
	while (br->works) {
		struct work *w = br->works;
		br->works = w->next;
		work_free(w);
	}
	free(br->data_dir);
	free(br);
}
