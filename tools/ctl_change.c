/*
 * ctl_change.c - slowlanectl's commands that write: requeue, cancel, purge,
 * check --repair, and backup (which writes only its copy).
 *
 * Changes go straight into the store in write transactions of at most
 * CTL_CHUNK jobs: LMDB's write lock serialises each with the daemon's writer
 * thread, which therefore waits at most one short transaction. A running
 * daemon acts on them within its one-second tick: it dispatches from the
 * ready index (a requeued job runs), drops calls whose job is no longer on
 * their attempt (a cancelled call is abandoned), and fences every result by
 * attempt id (so a late answer cannot resurrect a cancelled job).
 *
 * Operations on listed ids are all or nothing at validation: if any id is
 * unknown or not in a state the operation applies to, nothing is changed.
 * The jobs are looked at again in the write transaction; one that changed
 * in between (the daemon finished it) is reported and left alone.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "slowlane/common.h"
#include "slowlane/queue.h"
#include "slowlane/util.h"

#include "ctl_common.h"

#define CANCEL_MESSAGE "cancelled by operator"

/* A growable list of job ids. */
struct idvec {
	char (*v)[SL_ID_LEN + 1];
	size_t n, cap;
};

static int
idvec_push(struct idvec *iv, const char *id)
{
	if (iv->n == iv->cap) {
		size_t cap = iv->cap ? 2 * iv->cap : 256;
		void *p = realloc(iv->v, cap * sizeof *iv->v);
		if (!p)
			return -ENOMEM;
		iv->v = p;
		iv->cap = cap;
	}
	memcpy(iv->v[iv->n++], id, SL_ID_LEN + 1);
	return 0;
}

static int
cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Sorts and drops repeats (an id given twice is changed once). */
static void
idvec_unique(struct idvec *iv)
{
	size_t w = 0;

	if (iv->n > 1)
		qsort(iv->v, iv->n, sizeof *iv->v, cmp_id);
	for (size_t r = 0; r < iv->n; r++)
		if (w == 0 || strcmp(iv->v[w - 1], iv->v[r]) != 0)
			memmove(iv->v[w++], iv->v[r], sizeof *iv->v);
	iv->n = w;
}

/* ---- one operation, many jobs ---- */

/* An operation on one job: `eligible` says whether it applies (and why not,
 * into why[128]); `apply` does it inside a write transaction. */
struct change {
	const char *verb;      /* "requeue" */
	const char *done;      /* "requeued" */
	bool (*eligible)(const struct ctl *c, const struct job *j, char *why);
	int (*apply)(const struct ctl *c, struct store_txn *t, const char *id);
};

struct outcome {
	uint64_t changed;                /* applied (or, dry run, would be) */
	uint64_t raced;                  /* changed by someone else meanwhile */
	uint64_t by_state[JOB_STATE_COUNT]; /* states of the selected jobs */
};

/* Applies ch to every id, CTL_CHUNK ids per write transaction. Returns 0 or
 * a store error (the chunk in hand is rolled back; earlier ones stay). */
static int
apply_all(const struct ctl *c, struct store *st, const struct change *ch,
    const struct idvec *iv, struct outcome *res)
{
	for (size_t i = 0; i < iv->n; i += CTL_CHUNK) {
		struct store_txn *t = NULL;
		size_t end = i + CTL_CHUNK < iv->n ? i + CTL_CHUNK : iv->n;
		uint64_t changed = 0;
		int rc = store_begin(st, false, &t);

		for (size_t k = i; rc == 0 && k < end; k++) {
			struct job j;
			char why[128];
			rc = store_job_get(t, iv->v[k], &j);
			if (rc == 0 && ch->eligible(c, &j, why))
				rc = ch->apply(c, t, iv->v[k]);
			else if (rc == 0 || rc == SL_ENOTFOUND)
				rc = SL_ESTALE;
			if (rc == SL_ESTALE) {
				ctl_err("%s changed meanwhile; left alone", iv->v[k]);
				res->raced++;
				rc = 0;
			} else if (rc == 0) {
				changed++;
			}
		}
		if (rc == 0)
			rc = store_commit(t);
		else
			store_abort(t);
		if (rc)
			return rc;
		res->changed += changed;
	}
	return 0;
}

/* Looks at each listed id in one read transaction. Returns CTL_OK if all
 * exist and are eligible (their states counted into res), CTL_FAIL after a
 * message per bad id otherwise. */
static int
validate_ids(const struct ctl *c, struct store *st, const struct change *ch,
    const struct idvec *iv, struct outcome *res)
{
	struct store_txn *t = NULL;
	size_t bad = 0;
	int rc = store_begin(st, true, &t);

	if (rc)
		return ctl_store_err("reading the store", rc);
	for (size_t i = 0; i < iv->n; i++) {
		struct job j;
		char why[128];
		rc = store_job_get(t, iv->v[i], &j);
		if (rc == SL_ENOTFOUND) {
			ctl_err("no job %s in %s", iv->v[i], c->data_dir);
			bad++;
		} else if (rc) {
			ctl_err("job %s: %s", iv->v[i], sl_strerror(rc));
			bad++;
		} else if (!ch->eligible(c, &j, why)) {
			ctl_err("job %s %s", iv->v[i], why);
			bad++;
		} else {
			res->by_state[j.state]++;
		}
	}
	store_abort(t);
	if (bad)
		ctl_err("nothing was changed (%zu of %zu job%s cannot be %s)", bad, iv->n,
		    iv->n == 1 ? "" : "s", ch->done);
	return bad ? CTL_FAIL : CTL_OK;
}

/* Collects the ids given on the command line. An id of the wrong shape is
 * reported like an unknown one. */
static int
ids_from_args(const struct ctl *c, struct idvec *iv)
{
	int bad = 0;

	for (int i = 0; i < c->nargs; i++) {
		if (!sl_id_valid(c->args[i], SL_ID_LEN)) {
			ctl_err("no job %s in %s (job ids are %d characters of "
			    "[A-Za-z0-9_-])", c->args[i], c->data_dir, SL_ID_LEN);
			bad = 1;
		} else if (idvec_push(iv, c->args[i]) != 0) {
			return ctl_store_err("reading ids", -ENOMEM);
		}
	}
	if (bad) {
		ctl_err("nothing was changed");
		return CTL_FAIL;
	}
	idvec_unique(iv);
	return CTL_OK;
}

static void
report(const struct ctl *c, const struct change *ch, const struct idvec *iv,
    const struct outcome *res)
{
	int shown = 0;

	if (c->json) {
		json_t *o = json_object(), *ids = json_array(), *states = json_object();
		for (size_t i = 0; i < iv->n; i++)
			json_array_append_new(ids, json_string(iv->v[i]));
		for (int s = 0; s < JOB_STATE_COUNT; s++)
			if (res->by_state[s])
				json_object_set_new(states, job_state_name(s),
				    json_integer((json_int_t)res->by_state[s]));
		json_object_set_new(o, "operation", json_string(ch->verb));
		json_object_set_new(o, "dryRun", json_boolean(c->dry_run));
		json_object_set_new(o, "matched", json_integer((json_int_t)iv->n));
		json_object_set_new(o, ch->done, json_integer((json_int_t)res->changed));
		json_object_set_new(o, "changedMeanwhile", json_integer((json_int_t)res->raced));
		json_object_set_new(o, "byState", states);
		json_object_set_new(o, "ids", ids);
		ctl_print_json(o);
		return;
	}
	printf("%s%s %llu job%s", c->dry_run ? "would " : "", c->dry_run ? ch->verb : ch->done,
	    (unsigned long long)res->changed, res->changed == 1 ? "" : "s");
	for (int s = 0; s < JOB_STATE_COUNT; s++) {
		if (res->by_state[s])
			printf("%s%s %llu", shown++ ? ", " : " (", job_state_name(s),
			    (unsigned long long)res->by_state[s]);
	}
	if (shown)
		putchar(')');
	if (res->raced)
		printf("; %llu changed meanwhile and left alone", (unsigned long long)res->raced);
	puts(c->dry_run ? "; dry run: nothing changed" : "");
}

/* Applies `ch` to `iv` (unless a dry run) and reports: the common end of
 * requeue and cancel. Exit code 1 if a job changed meanwhile. */
static int
run_change(struct ctl *c, struct store *st, const struct change *ch, struct idvec *iv,
    struct outcome *res)
{
	int rc;

	if (c->dry_run) {
		res->changed = iv->n;
	} else {
		rc = apply_all(c, st, ch, iv, res);
		if (rc) {
			ctl_err("%s: %s (%llu job%s changed before the error)", ch->verb,
			    sl_strerror(rc), (unsigned long long)res->changed,
			    res->changed == 1 ? "" : "s");
			return CTL_FAIL;
		}
	}
	report(c, ch, iv, res);
	return res->raced ? CTL_FAIL : CTL_OK;
}

/* ---- requeue ---- */

static bool
requeue_eligible(const struct ctl *c, const struct job *j, char *why)
{
	if (!job_is_final(j->state)) {
		snprintf(why, 128, "is %s: only ended jobs (Success, Failed) can be requeued",
		    job_state_name(j->state));
		return false;
	}
	if (j->state == JOB_SUCCESS && !c->force) {
		snprintf(why, 128, "is Success: requeueing it needs --force");
		return false;
	}
	return true;
}

static int
requeue_apply(const struct ctl *c, struct store_txn *t, const char *id)
{
	return queue_requeue(t, id, sl_wall_ms(), c->ttl_ms, c->force);
}

static const struct change requeue_change = {
	.verb = "requeue", .done = "requeued",
	.eligible = requeue_eligible, .apply = requeue_apply,
};

/* Bulk selection: ended jobs by state, end time, message and model. */
struct requeue_pick {
	const struct ctl *c;
	struct store_txn *t;
	struct idvec *iv;
	struct outcome *res;
};

static bool
requeue_match(const struct ctl *c, const struct job *j)
{
	return (c->state_mask & (1u << j->state)) && job_is_final(j->state) &&
	    (!c->model || strcmp(c->model, j->model) == 0) &&
	    (!c->message || strstr(j->message, c->message));
}

static int
requeue_collect(void *arg, uint64_t ms, const char *id)
{
	struct requeue_pick *p = arg;
	struct job j;

	if (store_job_get(p->t, id, &j) != 0 || j.finished_ms != ms || !requeue_match(p->c, &j))
		return 0;
	p->res->by_state[j.state]++;
	return idvec_push(p->iv, id);
}

static bool
requeue_bulk_eligible(const struct ctl *c, const struct job *j, char *why)
{
	if (!requeue_match(c, j)) {
		snprintf(why, 128, "no longer matches");
		return false;
	}
	return requeue_eligible(c, j, why);
}

static const struct change requeue_bulk_change = {
	.verb = "requeue", .done = "requeued",
	.eligible = requeue_bulk_eligible, .apply = requeue_apply,
};

int
ctl_requeue(struct ctl *c)
{
	const unsigned ended = 1u << JOB_SUCCESS | 1u << JOB_FAILED;
	struct outcome res = { 0 };
	struct idvec iv = { 0 };
	struct store *st = NULL;
	int rc;

	if (c->nargs && (c->seen & (CTL_O_STATE | CTL_O_SINCE | CTL_O_MESSAGE | CTL_O_MODEL)))
		return ctl_usage_err(c, "give either job ids or --state (with its filters)");
	if (!c->nargs && !(c->seen & CTL_O_STATE))
		return ctl_usage_err(c, "which jobs? give job ids or --state Failed");
	if (c->state_mask & ~ended)
		return ctl_usage_err(c, "only ended jobs (Success, Failed) can be requeued");
	if ((c->state_mask & (1u << JOB_SUCCESS)) && !c->force)
		return ctl_usage_err(c, "requeueing Success jobs needs --force");
	if (c->ttl_ms == 0)
		return ctl_usage_err(c, "--ttl must be more than 0");
	rc = c->nargs ? ids_from_args(c, &iv) : CTL_OK;
	if (!rc)
		rc = ctl_open(c, !c->dry_run, &st);
	if (rc)
		goto out;
	if (c->nargs) {
		rc = validate_ids(c, st, &requeue_change, &iv, &res);
		if (!rc)
			rc = run_change(c, st, &requeue_change, &iv, &res);
	} else {
		/* --since counts back from now over the end time: the finished
		 * index is ordered by it, so the walk covers only those jobs. */
		struct requeue_pick p = { .c = c, .iv = &iv, .res = &res };
		uint64_t from = c->seen & CTL_O_SINCE ?
		    (c->now_ms > c->since_ms ? c->now_ms - c->since_ms : 0) : 0;
		rc = store_begin(st, true, &p.t);
		if (!rc)
			rc = store_scan_time(p.t, STORE_FINISHED, from, false, requeue_collect, &p);
		store_abort(p.t);
		if (rc)
			rc = ctl_store_err("selecting jobs", rc);
		else
			rc = run_change(c, st, &requeue_bulk_change, &iv, &res);
	}
out:
	free(iv.v);
	store_close(st);
	return rc;
}

/* ---- cancel ---- */

static bool
cancel_eligible(const struct ctl *c, const struct job *j, char *why)
{
	(void)c;
	if (job_is_final(j->state)) {
		snprintf(why, 128, "already ended (%s): only Queued and In Progress jobs can be "
		    "cancelled", job_state_name(j->state));
		return false;
	}
	return true;
}

static int
cancel_apply(const struct ctl *c, struct store_txn *t, const char *id)
{
	(void)c;
	return queue_cancel(t, id, sl_wall_ms(), CANCEL_MESSAGE);
}

static const struct change cancel_change = {
	.verb = "cancel", .done = "cancelled",
	.eligible = cancel_eligible, .apply = cancel_apply,
};

int
ctl_cancel(struct ctl *c)
{
	struct outcome res = { 0 };
	struct idvec iv = { 0 };
	struct store *st = NULL;
	int rc;

	rc = ids_from_args(c, &iv);
	if (!rc)
		rc = ctl_open(c, !c->dry_run, &st);
	if (!rc)
		rc = validate_ids(c, st, &cancel_change, &iv, &res);
	if (!rc)
		rc = run_change(c, st, &cancel_change, &iv, &res);
	free(iv.v);
	store_close(st);
	return rc;
}

/* ---- purge ---- */

struct purge {
	struct store_txn *t;
	uint64_t cutoff_ms;  /* ended at or before */
	size_t max;          /* jobs per pass; 0 = count only */
	struct job *jobs;    /* this pass's jobs to delete */
	size_t n;
	uint64_t matched;    /* jobs seen that qualify */
	uint64_t bytes;      /* their request and response bytes */
	uint64_t dangling;   /* entries whose job is missing or damaged */
};

static uint64_t
payload_bytes(struct store_txn *t, const char *id)
{
	const void *d;
	size_t body = 0, resp = 0;

	if (store_body_get(t, id, &d, &body) != 0)
		body = 0;
	if (store_result_get(t, id, &d, &resp) != 0)
		resp = 0;
	return body + resp;
}

static int
purge_collect(void *arg, uint64_t ms, const char *id)
{
	struct purge *p = arg;
	struct job j;

	if (ms > p->cutoff_ms)
		return 1;
	if (store_job_get(p->t, id, &j) != 0 || !job_is_final(j.state) || j.finished_ms != ms) {
		p->dangling++;
		return 0;
	}
	p->matched++;
	p->bytes += payload_bytes(p->t, id);
	if (!p->max)
		return 0;
	p->jobs[p->n++] = j;
	return p->n == p->max ? 1 : 0;
}

/* One pass: a write transaction deleting up to CTL_CHUNK qualifying jobs
 * (collected first: the walk must not run over entries it deletes). */
static int
purge_pass(struct store *st, struct purge *p)
{
	int rc;

	p->n = 0;
	p->dangling = 0;
	rc = store_begin(st, false, &p->t);
	if (rc)
		return rc;
	rc = store_scan_time(p->t, STORE_FINISHED, 0, false, purge_collect, p);
	if (rc == 1)
		rc = 0;
	for (size_t i = 0; rc == 0 && i < p->n; i++)
		rc = store_job_delete(p->t, &p->jobs[i]);
	if (rc == 0)
		return store_commit(p->t);
	store_abort(p->t);
	return rc;
}

int
ctl_purge(struct ctl *c)
{
	struct purge p = { 0 };
	uint64_t purged = 0, bytes = 0;
	struct store *st = NULL;
	char b[32], when[32];
	int rc;

	if (!(c->seen & CTL_O_BEFORE))
		return ctl_usage_err(c, "purge needs --finished-before DUR (0s = every ended job)");
	p.cutoff_ms = c->now_ms > c->before_ms ? c->now_ms - c->before_ms : 0;
	rc = ctl_open(c, !c->dry_run, &st);
	if (rc)
		return rc;
	if (c->dry_run) {
		rc = store_begin(st, true, &p.t);
		if (!rc)
			rc = store_scan_time(p.t, STORE_FINISHED, 0, false, purge_collect, &p);
		store_abort(p.t);
		if (rc == 1)
			rc = 0;
		purged = p.matched;
		bytes = p.bytes;
	} else {
		p.max = CTL_CHUNK;
		p.jobs = malloc(CTL_CHUNK * sizeof *p.jobs);
		rc = p.jobs ? 0 : -ENOMEM;
		/* Pass after pass until one finds nothing left to delete. */
		while (rc == 0) {
			p.matched = p.bytes = 0;
			rc = purge_pass(st, &p);
			if (rc || p.n == 0)
				break;
			purged += p.n;
			bytes += p.bytes;
		}
		free(p.jobs);
	}
	store_close(st);
	if (rc) {
		ctl_err("purge: %s (%llu jobs deleted before the error)", sl_strerror(rc),
		    (unsigned long long)purged);
		return CTL_FAIL;
	}
	if (p.dangling)
		ctl_err("%llu finished-index entr%s without a matching ended job left alone: "
		    "run 'slowlanectl check --repair'", (unsigned long long)p.dangling,
		    p.dangling == 1 ? "y" : "ies");
	if (c->json) {
		ctl_print_json(json_pack("{s:s, s:b, s:I, s:I, s:o}", "operation", "purge",
		    "dryRun", c->dry_run, "purged", (json_int_t)purged, "freedBytes",
		    (json_int_t)bytes, "finishedBefore", ctl_json_time(p.cutoff_ms)));
	} else {
		printf("%s %llu job%s that ended before %s (%s of requests and responses)%s\n",
		    c->dry_run ? "would purge" : "purged", (unsigned long long)purged,
		    purged == 1 ? "" : "s", ctl_fmt_time(p.cutoff_ms, when),
		    ctl_fmt_bytes(bytes, b), c->dry_run ? "; dry run: nothing changed" : "");
	}
	return CTL_OK;
}

/* ---- backup ---- */

/* CTL_OK if `path` is missing or an empty directory. */
static int
backup_target_ok(const char *path)
{
	struct stat sb;
	struct dirent *e;
	DIR *d;
	int rc = CTL_OK;

	if (stat(path, &sb) != 0) {
		if (errno == ENOENT)
			return CTL_OK;
		ctl_err("backup target %s: %s", path, strerror(errno));
		return CTL_FAIL;
	}
	if (!S_ISDIR(sb.st_mode)) {
		ctl_err("backup target %s exists and is not a directory; nothing written", path);
		return CTL_FAIL;
	}
	d = opendir(path);
	if (!d) {
		ctl_err("backup target %s: %s", path, strerror(errno));
		return CTL_FAIL;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			ctl_err("backup target %s exists and is not empty; nothing written "
			    "(give a new or empty directory)", path);
			rc = CTL_FAIL;
			break;
		}
	}
	closedir(d);
	return rc;
}

int
ctl_backup(struct ctl *c)
{
	const char *path = c->args[0];
	struct store_txn *t = NULL;
	struct store_info info;
	struct store *st;
	char file[4096], b[32];
	struct stat sb;
	int rc;

	rc = backup_target_ok(path);
	if (rc)
		return rc;
	rc = ctl_open(c, false, &st);
	if (rc)
		return rc;
	rc = store_begin(st, true, &t);
	if (!rc)
		rc = store_get_info(st, t, &info);
	store_abort(t);
	if (!rc)
		rc = store_backup(st, path);
	store_close(st);
	if (rc) {
		ctl_err("backup to %s failed: %s", path, sl_strerror(rc));
		return CTL_FAIL;
	}
	snprintf(file, sizeof file, "%s/data.mdb", path);
	if (stat(file, &sb) != 0)
		sb.st_size = 0;
	if (c->json) {
		ctl_print_json(json_pack("{s:s, s:o, s:I, s:I}", "operation", "backup",
		    "path", ctl_json_str(path), "jobs", (json_int_t)info.jobs,
		    "bytes", (json_int_t)sb.st_size));
	} else {
		printf("backed up %s to %s: about %llu jobs, %s (compacted)\n", c->data_dir, path,
		    (unsigned long long)info.jobs, ctl_fmt_bytes((uint64_t)sb.st_size, b));
	}
	return CTL_OK;
}

/* ---- check ---- */

struct check_out {
	const struct ctl *c;
	json_t *problems;
};

static void
check_problem(void *arg, const char *id, const char *what, bool repaired)
{
	struct check_out *o = arg;

	if (o->c->json)
		json_array_append_new(o->problems, json_pack("{s:s, s:s, s:b}", "id", id,
		    "problem", what, "repaired", repaired));
	else
		printf("%-21s  %s%s\n", id, what, repaired ? "  [repaired]" :
		    o->c->repair ? "  [NOT repaired]" : "");
}

int
ctl_check(struct ctl *c)
{
	struct check_out o = { .c = c, .problems = json_array() };
	struct store_check_result res;
	struct store_txn *t = NULL;
	struct store *st;
	uint64_t remaining;
	int rc;

	rc = ctl_open(c, c->repair, &st);
	if (rc)
		goto out;
	rc = store_begin(st, !c->repair, &t);
	if (!rc)
		rc = store_check(t, c->repair, check_problem, &o, &res);
	if (!rc && c->repair)
		rc = store_commit(t);
	else
		store_abort(t);
	store_close(st);
	if (rc) {
		rc = ctl_store_err("check", rc);
		goto out;
	}
	remaining = res.problems - res.repaired;
	if (c->json) {
		ctl_print_json(json_pack("{s:I, s:I, s:I, s:I, s:b, s:O}", "jobs",
		    (json_int_t)res.jobs, "problemCount", (json_int_t)res.problems,
		    "repaired", (json_int_t)res.repaired, "remaining", (json_int_t)remaining,
		    "ok", remaining == 0, "problems", o.problems));
	} else {
		printf("checked %llu jobs: %llu problem%s, %llu repaired%s\n",
		    (unsigned long long)res.jobs, (unsigned long long)res.problems,
		    res.problems == 1 ? "" : "s", (unsigned long long)res.repaired,
		    remaining && !c->repair ? " ('check --repair' fixes index entries and "
		    "counts)" : "");
	}
	rc = remaining ? CTL_FAIL : CTL_OK;
out:
	json_decref(o.problems);
	return rc;
}
