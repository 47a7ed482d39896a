/*
 * ctl_common.h - what the files of slowlanectl share: the parsed command
 * line, the command handlers, opening the store with the operator's words
 * for each failure, job selection (filters, newest first) and formatting.
 *
 * slowlanectl.c owns argv and the command table; ctl_inspect.c the
 * read-only commands on jobs; ctl_change.c those that write jobs;
 * ctl_webhook.c the webhook registrations and deliveries; ctl_batch.c the
 * batches; ctl_common.c the rest.
 * Single-threaded; nothing here is used by the daemon.
 */
#ifndef SLOWLANE_CTL_COMMON_H
#define SLOWLANE_CTL_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "slowlane/job.h"
#include "slowlane/store.h"

/* Exit codes (also in slowlanectl(1)). */
enum {
	CTL_OK = 0,    /* done */
	CTL_FAIL = 1,  /* the operation failed: unknown id, no store, store error */
	CTL_USAGE = 2, /* bad command line */
};

/* Jobs per write transaction in bulk changes: the daemon's writer waits for
 * each of ours, so each must stay short. */
#define CTL_CHUNK 1000

/* The command line, parsed. Fields are set only by the options that the
 * command accepts; `seen` tells which were given (CTL_O_* bits). */
struct ctl {
	const struct ctl_cmd *cmd;
	const char *data_dir;   /* --data-dir, $SLOWLANE_DATA_DIR, ./slowlane-data */
	unsigned seen;          /* CTL_O_* given on the command line */
	bool json;              /* --json */
	bool dry_run;           /* --dry-run: report, change nothing */
	bool force;             /* --force: requeue Success jobs too */
	bool repair;            /* check --repair */
	unsigned state_mask;    /* --state: 1 << JOB_* bits; 0 = any */
	const char *model;      /* --model: exact name; NULL = any */
	const char *key;        /* --key: API key whose tenant to show */
	const char *message;    /* --message: substring of stateMessage */
	const char *events;     /* webhook add --events: comma-separated; NULL = all */
	const char *tenant;     /* webhook add --tenant: a tenant id ("" = no keys) */
	const char *status;     /* batches --status: comma-separated batch statuses */
	const char *name;       /* key add --name: a label; NULL = none */
	uint64_t rps;           /* key add/set --rps: requests/s; 0 = daemon default */
	uint64_t max_queued;    /* key add/set --max-queued: unfinished jobs; 0 = default */
	bool allow_http;        /* webhook add --allow-http */
	bool allow_private;     /* webhook add --allow-private */
	bool failed;            /* webhook deliveries --failed: only given-up ones */
	bool pending;           /* webhook deliveries --pending: the outbox too */
	uint64_t since_ms;      /* --since: a duration back from now */
	uint64_t limit;         /* --limit: rows; 0 = no limit */
	uint64_t ttl_ms;        /* requeue --ttl (default 72h) */
	uint64_t before_ms;     /* purge --finished-before: a duration */
	uint64_t interval_ms;   /* watch --interval (default 1 s) */
	uint64_t count;         /* watch --count: refreshes; 0 = until SIGINT */
	char **args;            /* operands after the command name */
	int nargs;
	uint64_t now_ms;        /* "now" of this run, taken once */
};

/* Option bits, one per flag (slowlanectl.c's option table). */
enum {
	CTL_O_STATE = 1u << 0,
	CTL_O_MODEL = 1u << 1,
	CTL_O_KEY = 1u << 2,
	CTL_O_SINCE = 1u << 3,
	CTL_O_LIMIT = 1u << 4,
	CTL_O_MESSAGE = 1u << 5,
	CTL_O_DRY_RUN = 1u << 6,
	CTL_O_FORCE = 1u << 7,
	CTL_O_TTL = 1u << 8,
	CTL_O_BEFORE = 1u << 9,
	CTL_O_REPAIR = 1u << 10,
	CTL_O_INTERVAL = 1u << 11,
	CTL_O_COUNT = 1u << 12,
	CTL_O_JSON = 1u << 13, /* global */
	CTL_O_DATA_DIR = 1u << 14, /* global */
	CTL_O_HELP = 1u << 15, /* global */
	CTL_O_EVENTS = 1u << 16,
	CTL_O_TENANT = 1u << 17,
	CTL_O_ALLOW_HTTP = 1u << 18,
	CTL_O_ALLOW_PRIVATE = 1u << 19,
	CTL_O_FAILED = 1u << 20,
	CTL_O_PENDING = 1u << 21,
	CTL_O_STATUS = 1u << 22,
	CTL_O_NAME = 1u << 23,
	CTL_O_RPS = 1u << 24,
	CTL_O_MAX_QUEUED = 1u << 25,
};

/* Command handlers: each returns an exit code (CTL_OK, CTL_FAIL, CTL_USAGE)
 * and prints its own messages. */
int ctl_stats(struct ctl *c);
int ctl_ls(struct ctl *c);
int ctl_show(struct ctl *c);
int ctl_export(struct ctl *c);
int ctl_watch(struct ctl *c);
int ctl_requeue(struct ctl *c);
int ctl_cancel(struct ctl *c);
int ctl_purge(struct ctl *c);
int ctl_backup(struct ctl *c);
int ctl_check(struct ctl *c);
int ctl_webhook_add(struct ctl *c);
int ctl_webhook_ls(struct ctl *c);
int ctl_webhook_rm(struct ctl *c);
int ctl_webhook_rotate(struct ctl *c);
int ctl_webhook_deliveries(struct ctl *c);
int ctl_batches(struct ctl *c);
int ctl_batch_show(struct ctl *c);
int ctl_batch_cancel(struct ctl *c);
int ctl_key_add(struct ctl *c);
int ctl_key_ls(struct ctl *c);
int ctl_key_revoke(struct ctl *c);
int ctl_key_set(struct ctl *c);

/* ---- messages ---- */

/* "slowlanectl: <fmt>\n" on stderr. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* ctl_err, then "Try 'slowlanectl CMD --help'."; returns CTL_USAGE. */
int ctl_usage_err(const struct ctl *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- the store ---- */

/* Opens the store in c->data_dir, read-only unless `write`; never creates
 * anything. On failure prints what went wrong in the operator's words ("no
 * store in DIR (is --data-dir right?)", newer format, permissions) and
 * returns CTL_FAIL; *out is then NULL. */
int ctl_open(const struct ctl *c, bool write, struct store **out);
/* Prints "<what>: <error>" for a store error; returns CTL_FAIL. */
int ctl_store_err(const char *what, int rc);

/* ---- selecting jobs ---- */

struct ctl_filter {
	unsigned state_mask;         /* 1 << state; 0 = any */
	const char *model;           /* exact; NULL = any */
	bool by_tenant;
	char tenant[JOB_TENANT_LEN + 1];
	uint64_t created_from_ms;    /* created at or after; 0 = any */
	uint64_t limit;              /* calls at most; 0 = no limit */
};

/* Fills `f` from c's --state, --model, --key, --since, --limit. */
void ctl_filter_from(const struct ctl *c, struct ctl_filter *f);
/* True if `j` passes every filter but the limit. */
bool ctl_filter_match(const struct ctl_filter *f, const struct job *j);

/* Called per selected job, inside transaction `t`; non-zero stops the walk
 * and is returned by ctl_select. */
typedef int (*ctl_job_fn)(void *arg, struct store_txn *t, const struct job *j);
/* Calls fn for each job passing `f`, newest first, up to f->limit. When only
 * unfinished states are asked for it walks the expiry index (O(unfinished)),
 * otherwise the created index from the newest down to created_from_ms.
 * Records that fail their check are skipped (the store logs them).
 * Returns 0, fn's non-zero value, or a store error. */
int ctl_select(struct store_txn *t, const struct ctl_filter *f, ctl_job_fn fn, void *arg);

/* ---- formatting ---- */

struct json_t; /* jansson's */
/* Prints `v` compact, keys sorted, on one line of stdout, and drops it (a
 * NULL `v` is an allocation that failed). Returns 0 or -ENOMEM. */
int ctl_print_json(struct json_t *v);
/* ISO 8601 with milliseconds as a new JSON string; null for 0. */
struct json_t *ctl_json_time(uint64_t ms);
/* `s` as a new JSON string; null if it is not valid UTF-8. */
struct json_t *ctl_json_str(const char *s);

/* "2026-11-22T02:21:36Z" (no milliseconds), or "-" for 0, into out[32]. */
const char *ctl_fmt_time(uint64_t ms, char out[32]);
/* "850ms", "42s", "3m12s", "5h02m", "3d04h" into out[32]. */
const char *ctl_fmt_age(uint64_t ms, char out[32]);
/* "[#######.............]" of `width` cells for part/whole (part past
 * whole fills it) into out[width + 3]. */
const char *ctl_fmt_bar(uint64_t part, uint64_t whole, int width, char *out);
/* "1.5 MiB" into out[32]. */
const char *ctl_fmt_bytes(uint64_t n, char out[32]);
/* Copies `s` into out[cap] for a table cell: control characters become
 * spaces, and past `width` bytes it is cut at a UTF-8 boundary and ends in
 * "...". */
const char *ctl_cell(const char *s, size_t width, char *out, size_t cap);
/* Parses a --state word ("queued", "In Progress", "in-progress", ...;
 * case-insensitive). Returns the state or -1. */
int ctl_state_parse(const char *s);
/* The request's metadata.custom_id as a new string (free() it), or NULL if
 * it has none or is not a string. */
char *ctl_custom_id(struct store_txn *t, const char *id);

#endif
