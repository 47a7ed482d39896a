/*
 * slowlanectl - the admin tool of slowlane: argv, the option and command
 * tables, help, and exit codes. The commands live in ctl_inspect.c (reading
 * jobs), ctl_change.c (changing jobs), ctl_webhook.c (webhooks and their
 * deliveries) and ctl_batch.c (batches); see slowlanectl(1).
 *
 * The tool opens the daemon's LMDB environment itself. Reads use read-only
 * transactions, which never wait for the daemon's writer. Changes are
 * small write transactions: LMDB's write lock serialises them with the
 * daemon's writer thread, and a running daemon acts on them within its
 * one-second tick (docs/ARCHITECTURE.md).
 *
 * Options may come before or after the command name; "--" ends them. Some
 * commands are two words ("webhook add", "batch show"): the first names a
 * family, the second the command in it.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/log.h"
#include "slowlane/util.h"

#include "ctl_common.h"

#define DEFAULT_DATA_DIR "./slowlane-data" /* as slowlaned's --data-dir */
#define DEFAULT_TTL_MS (72ull * 3600 * 1000) /* as slowlaned's --job-ttl */
#define DEFAULT_INTERVAL_MS 1000ull
#define GLOBAL_OPTS (CTL_O_JSON | CTL_O_DATA_DIR | CTL_O_HELP)

enum opt_kind {
	OPT_FLAG,     /* bool, no value */
	OPT_STRING,   /* const char *, kept as given */
	OPT_DURATION, /* uint64_t ms, sl_parse_duration_ms() */
	OPT_NUMBER,   /* uint64_t, decimal */
	OPT_STATES,   /* unsigned mask of 1 << JOB_*, comma-separated words */
	OPT_SEEN,     /* no value and no field: only its bit in ctl.seen */
};

/* The options. A command accepts those in its `opts` mask plus the global
 * ones; any other is a usage error (exit 2). */
static const struct ctl_opt {
	const char *name;   /* long name without "--" */
	unsigned bit;       /* CTL_O_*: recorded in ctl.seen */
	enum opt_kind kind; /* how the value is parsed */
	size_t off;         /* the field of struct ctl it sets */
	const char *arg;    /* the value's name in help; NULL for a flag */
	const char *help;   /* one line for --help */
} opts[] = {
	{ .name = "data-dir", .bit = CTL_O_DATA_DIR, .kind = OPT_STRING,
	  .off = offsetof(struct ctl, data_dir), .arg = "DIR",
	  .help = "the daemon's store (default $SLOWLANE_DATA_DIR or ./slowlane-data)" },
	{ .name = "json", .bit = CTL_O_JSON, .kind = OPT_FLAG,
	  .off = offsetof(struct ctl, json),
	  .help = "machine-readable output (see slowlanectl(1))" },
	{ .name = "help", .bit = CTL_O_HELP, .kind = OPT_SEEN,
	  .help = "show this help and exit" },
	{ .name = "state", .bit = CTL_O_STATE, .kind = OPT_STATES,
	  .off = offsetof(struct ctl, state_mask), .arg = "S[,S...]",
	  .help = "Queued, In Progress (or in-progress), Success, Failed; any case" },
	{ .name = "model", .bit = CTL_O_MODEL, .kind = OPT_STRING,
	  .off = offsetof(struct ctl, model), .arg = "M",
	  .help = "only jobs for this model (exact name)" },
	{ .name = "key", .bit = CTL_O_KEY, .kind = OPT_STRING,
	  .off = offsetof(struct ctl, key), .arg = "K",
	  .help = "an API key: only its jobs (ls, export), or its webhook (webhook add)" },
	{ .name = "since", .bit = CTL_O_SINCE, .kind = OPT_DURATION,
	  .off = offsetof(struct ctl, since_ms), .arg = "DUR",
	  .help = "only jobs created (ls, export) or ended (requeue) within DUR" },
	{ .name = "limit", .bit = CTL_O_LIMIT, .kind = OPT_NUMBER,
	  .off = offsetof(struct ctl, limit), .arg = "N",
	  .help = "at most N rows (ls, batches, deliveries: default 50; 0 = no limit)" },
	{ .name = "message", .bit = CTL_O_MESSAGE, .kind = OPT_STRING,
	  .off = offsetof(struct ctl, message), .arg = "TEXT",
	  .help = "only jobs whose stateMessage contains TEXT" },
	{ .name = "dry-run", .bit = CTL_O_DRY_RUN, .kind = OPT_FLAG,
	  .off = offsetof(struct ctl, dry_run),
	  .help = "report what would change, change nothing" },
	{ .name = "force", .bit = CTL_O_FORCE, .kind = OPT_FLAG,
	  .off = offsetof(struct ctl, force),
	  .help = "also requeue Success jobs" },
	{ .name = "ttl", .bit = CTL_O_TTL, .kind = OPT_DURATION,
	  .off = offsetof(struct ctl, ttl_ms), .arg = "DUR",
	  .help = "a requeued job ends Failed if unfinished after DUR (default 72h)" },
	{ .name = "finished-before", .bit = CTL_O_BEFORE, .kind = OPT_DURATION,
	  .off = offsetof(struct ctl, before_ms), .arg = "DUR",
	  .help = "jobs that ended more than DUR ago (0s = every ended job)" },
	{ .name = "repair", .bit = CTL_O_REPAIR, .kind = OPT_FLAG,
	  .off = offsetof(struct ctl, repair),
	  .help = "fix what the check finds (one write transaction)" },
	{ .name = "interval", .bit = CTL_O_INTERVAL, .kind = OPT_DURATION,
	  .off = offsetof(struct ctl, interval_ms), .arg = "DUR",
	  .help = "time between refreshes (default 1s)" },
	{ .name = "count", .bit = CTL_O_COUNT, .kind = OPT_NUMBER,
	  .off = offsetof(struct ctl, count), .arg = "N",
	  .help = "stop after N refreshes (default: until interrupted)" },
	{ .name = "events", .bit = CTL_O_EVENTS, .kind = OPT_STRING,
	  .off = offsetof(struct ctl, events), .arg = "E[,E...]",
	  .help = "generation.completed, slow-group.completed, batch.* (default: all)" },
	{ .name = "tenant", .bit = CTL_O_TENANT, .kind = OPT_STRING,
	  .off = offsetof(struct ctl, tenant), .arg = "T",
	  .help = "the owner's tenant id (16 hex digits; '' = no API keys, the default)" },
	{ .name = "allow-http", .bit = CTL_O_ALLOW_HTTP, .kind = OPT_FLAG,
	  .off = offsetof(struct ctl, allow_http),
	  .help = "accept an http:// URL (slowlaned needs --webhook-allow-http)" },
	{ .name = "allow-private", .bit = CTL_O_ALLOW_PRIVATE, .kind = OPT_FLAG,
	  .off = offsetof(struct ctl, allow_private),
	  .help = "accept a loopback or private address (--webhook-allow-private)" },
	{ .name = "failed", .bit = CTL_O_FAILED, .kind = OPT_FLAG,
	  .off = offsetof(struct ctl, failed),
	  .help = "only deliveries given up on" },
	{ .name = "pending", .bit = CTL_O_PENDING, .kind = OPT_FLAG,
	  .off = offsetof(struct ctl, pending),
	  .help = "also events still in the outbox, with their next attempt" },
	{ .name = "status", .bit = CTL_O_STATUS, .kind = OPT_STRING,
	  .off = offsetof(struct ctl, status), .arg = "S[,S...]",
	  .help = "validating, in_progress, finalizing, completed, failed, expired, "
	      "cancelling, cancelled" },
	{ .name = "name", .bit = CTL_O_NAME, .kind = OPT_STRING,
	  .off = offsetof(struct ctl, name), .arg = "N",
	  .help = "a label for the key, shown by 'key ls' (at most 63 bytes)" },
	{ .name = "rps", .bit = CTL_O_RPS, .kind = OPT_NUMBER,
	  .off = offsetof(struct ctl, rps), .arg = "N",
	  .help = "the key's requests per second (0 = slowlaned's --rate-limit)" },
	{ .name = "max-queued", .bit = CTL_O_MAX_QUEUED, .kind = OPT_NUMBER,
	  .off = offsetof(struct ctl, max_queued), .arg = "N",
	  .help = "the key's unfinished jobs at most (0 = slowlaned's --max-queued)" },
};

static int cmd_help(struct ctl *c);

/* The commands, in the order `slowlanectl --help` lists them. */
struct ctl_cmd {
	const char *name;       /* the word after "slowlanectl" */
	const char *sub;        /* the word after that for a family ("webhook add"),
	                         * else NULL */
	int (*run)(struct ctl *c); /* returns the exit code */
	unsigned opts;          /* CTL_O_* accepted besides the global ones */
	int min_args, max_args; /* operands; max_args -1 = any number */
	const char *usage;      /* synopsis after the name */
	const char *summary;    /* one line for the command list */
};

static const struct ctl_cmd cmds[] = {
	{ .name = "stats", .run = ctl_stats, .max_args = 0,
	  .usage = "",
	  .summary = "counts per state, oldest queued, recent throughput, store usage" },
	{ .name = "ls", .run = ctl_ls, .max_args = 0,
	  .opts = CTL_O_STATE | CTL_O_MODEL | CTL_O_KEY | CTL_O_SINCE | CTL_O_LIMIT,
	  .usage = "[--state S] [--model M] [--key K] [--since DUR] [--limit N]",
	  .summary = "list jobs, newest first" },
	{ .name = "show", .run = ctl_show, .min_args = 1, .max_args = 1,
	  .usage = "ID",
	  .summary = "one job: request, response, timestamps, every attempt" },
	{ .name = "requeue", .run = ctl_requeue, .max_args = -1,
	  .opts = CTL_O_STATE | CTL_O_MODEL | CTL_O_SINCE | CTL_O_MESSAGE | CTL_O_DRY_RUN |
	      CTL_O_FORCE | CTL_O_TTL,
	  .usage = "ID... | --state S [--since DUR] [--message TEXT] [--model M]\n"
	      "                           [--dry-run] [--force] [--ttl DUR]",
	  .summary = "put ended jobs back to Queued (Success needs --force)" },
	{ .name = "cancel", .run = ctl_cancel, .min_args = 1, .max_args = -1,
	  .opts = CTL_O_DRY_RUN,
	  .usage = "[--dry-run] ID...",
	  .summary = "end queued or in-flight jobs as Failed (\"cancelled by operator\")" },
	{ .name = "purge", .run = ctl_purge, .max_args = 0,
	  .opts = CTL_O_BEFORE | CTL_O_DRY_RUN,
	  .usage = "--finished-before DUR [--dry-run]",
	  .summary = "delete jobs that ended more than DUR ago" },
	{ .name = "export", .run = ctl_export, .max_args = 0,
	  .opts = CTL_O_STATE | CTL_O_MODEL | CTL_O_KEY | CTL_O_SINCE | CTL_O_LIMIT,
	  .usage = "[--state S] [--model M] [--key K] [--since DUR] [--limit N]",
	  .summary = "the selected generations as JSON lines, newest first" },
	{ .name = "backup", .run = ctl_backup, .min_args = 1, .max_args = 1,
	  .usage = "PATH",
	  .summary = "a consistent, compacted copy of the store (safe while it runs)" },
	{ .name = "check", .run = ctl_check, .max_args = 0,
	  .opts = CTL_O_REPAIR,
	  .usage = "[--repair]",
	  .summary = "verify that every index agrees with the job records" },
	{ .name = "watch", .run = ctl_watch, .max_args = 0,
	  .opts = CTL_O_INTERVAL | CTL_O_COUNT,
	  .usage = "[--interval DUR] [--count N]",
	  .summary = "a live view of the queue until interrupted" },
	{ .name = "webhook", .sub = "add", .run = ctl_webhook_add, .min_args = 1, .max_args = 1,
	  .opts = CTL_O_EVENTS | CTL_O_KEY | CTL_O_TENANT | CTL_O_ALLOW_HTTP |
	      CTL_O_ALLOW_PRIVATE,
	  .usage = "URL [--events E[,E...]] [--key K | --tenant T] [--allow-http]\n"
	      "                               [--allow-private]",
	  .summary = "register a webhook; prints its id and signing secret" },
	{ .name = "webhook", .sub = "ls", .run = ctl_webhook_ls, .max_args = 0,
	  .usage = "",
	  .summary = "the registered webhooks (never their secrets)" },
	{ .name = "webhook", .sub = "rm", .run = ctl_webhook_rm, .min_args = 1, .max_args = 1,
	  .usage = "ID",
	  .summary = "delete a webhook: submits naming it are refused from then on" },
	{ .name = "webhook", .sub = "rotate-secret", .run = ctl_webhook_rotate, .min_args = 1,
	  .max_args = 1,
	  .usage = "ID",
	  .summary = "give a webhook a new signing secret and print it" },
	{ .name = "webhook", .sub = "deliveries", .run = ctl_webhook_deliveries, .max_args = 0,
	  .opts = CTL_O_FAILED | CTL_O_PENDING | CTL_O_LIMIT,
	  .usage = "[--failed] [--pending] [--limit N]",
	  .summary = "webhook events delivered or given up, newest first" },
	{ .name = "batches", .run = ctl_batches, .max_args = 0,
	  .opts = CTL_O_STATUS | CTL_O_LIMIT,
	  .usage = "[--status S] [--limit N]",
	  .summary = "batches of every tenant, newest first, with their progress" },
	{ .name = "batch", .sub = "show", .run = ctl_batch_show, .min_args = 1, .max_args = 1,
	  .usage = "ID",
	  .summary = "one batch: status, phase, progress, files, timestamps" },
	{ .name = "batch", .sub = "cancel", .run = ctl_batch_cancel, .min_args = 1,
	  .max_args = 1,
	  .usage = "ID",
	  .summary = "cancel a validating or in-progress batch, as its API does" },
	{ .name = "key", .sub = "add", .run = ctl_key_add, .max_args = 0,
	  .opts = CTL_O_NAME | CTL_O_RPS | CTL_O_MAX_QUEUED,
	  .usage = "[--name N] [--rps N] [--max-queued N]",
	  .summary = "make an API key (a new tenant); prints the key, once" },
	{ .name = "key", .sub = "ls", .run = ctl_key_ls, .max_args = 0,
	  .usage = "",
	  .summary = "the API keys: id (tenant), name, status, limits; never the keys" },
	{ .name = "key", .sub = "revoke", .run = ctl_key_revoke, .min_args = 1, .max_args = 1,
	  .usage = "ID | KEY",
	  .summary = "refuse a key (401) from its next request on" },
	{ .name = "key", .sub = "set", .run = ctl_key_set, .min_args = 1, .max_args = 1,
	  .opts = CTL_O_RPS | CTL_O_MAX_QUEUED,
	  .usage = "ID | KEY [--rps N] [--max-queued N]",
	  .summary = "change a key's limits from its next request on" },
	{ .name = "help", .run = cmd_help, .max_args = 2,
	  .usage = "[COMMAND [SUBCOMMAND]]",
	  .summary = "this list, or one command's options" },
};

/* The command `name` (sub NULL) or `name sub` of a family. */
static const struct ctl_cmd *
cmd_find(const char *name, const char *sub)
{
	for (size_t i = 0; i < SL_ARRAY_LEN(cmds); i++) {
		if (strcmp(cmds[i].name, name) != 0 || !sub != !cmds[i].sub)
			continue;
		if (!sub || strcmp(cmds[i].sub, sub) == 0)
			return &cmds[i];
	}
	return NULL;
}

/* True if `name` is a family: its commands take a second word. */
static bool
cmd_is_family(const char *name)
{
	for (size_t i = 0; i < SL_ARRAY_LEN(cmds); i++)
		if (cmds[i].sub && strcmp(cmds[i].name, name) == 0)
			return true;
	return false;
}

/* "ls" or "webhook add" into out[48]. */
static const char *
cmd_title(const struct ctl_cmd *cmd, char out[48])
{
	snprintf(out, 48, "%s%s%s", cmd->name, cmd->sub ? " " : "", cmd->sub ? cmd->sub : "");
	return out;
}

/* "add, ls, rm" for a family into out[cap]. */
static const char *
family_subs(const char *family, char *out, size_t cap)
{
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; i < SL_ARRAY_LEN(cmds); i++)
		if (cmds[i].sub && strcmp(cmds[i].name, family) == 0 && n < cap)
			n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? ", " : "", cmds[i].sub);
	return out;
}

/* A family given without (or with an unknown) second word; returns
 * CTL_USAGE. */
static int
family_err(const char *family, const char *sub)
{
	char subs[128];

	family_subs(family, subs, sizeof subs);
	if (sub)
		ctl_err("unknown command '%s %s' (%s takes %s)", family, sub, family, subs);
	else
		ctl_err("'%s' needs a command: %s", family, subs);
	fprintf(stderr, "Try 'slowlanectl %s --help'.\n", family);
	return CTL_USAGE;
}

static const struct ctl_opt *
opt_find(const char *name, size_t len)
{
	for (size_t i = 0; i < SL_ARRAY_LEN(opts); i++)
		if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
			return &opts[i];
	return NULL;
}

static const struct ctl_opt *
opt_by_bit(unsigned bit)
{
	for (size_t i = 0; i < SL_ARRAY_LEN(opts); i++)
		if (opts[i].bit == bit)
			return &opts[i];
	return NULL;
}

void
ctl_err(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("slowlanectl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int
ctl_usage_err(const struct ctl *c, const char *fmt, ...)
{
	va_list ap;
	char title[48];

	fputs("slowlanectl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (c && c->cmd && c->cmd->run != cmd_help)
		fprintf(stderr, "\nTry 'slowlanectl %s --help'.\n", cmd_title(c->cmd, title));
	else
		fputs("\nTry 'slowlanectl --help'.\n", stderr);
	return CTL_USAGE;
}

/* ---- help ---- */

static void
print_opt(FILE *f, const struct ctl_opt *o)
{
	char left[40];

	snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
	fprintf(f, "  %-26s %s\n", left, o->help);
}

static void
usage_all(FILE *f)
{
	char title[48];

	fputs("Usage: slowlanectl [--data-dir DIR] [--json] COMMAND [OPTION]... [ARG]...\n"
	    "Inspect and repair the store of slowlaned (jobs, webhooks, batches), whether the\n"
	    "daemon runs or not.\n"
	    "\nCommands:\n", f);
	for (size_t i = 0; i < SL_ARRAY_LEN(cmds); i++)
		fprintf(f, "  %-22s %s\n", cmd_title(&cmds[i], title), cmds[i].summary);
	fputs("\nGlobal options (before or after the command):\n", f);
	for (size_t i = 0; i < SL_ARRAY_LEN(opts); i++)
		if (opts[i].bit & GLOBAL_OPTS)
			print_opt(f, &opts[i]);
	fputs("  --version                  show the version and exit\n"
	    "\nDurations take ms, s, m, h or d (a bare number is seconds).\n"
	    "Exit status: 0 done, 1 the operation failed, 2 bad usage.\n"
	    "'slowlanectl COMMAND --help' lists a command's options; see slowlanectl(1).\n", f);
}

/* `slowlanectl webhook --help`: the commands of one family. */
static void
usage_family(FILE *f, const char *family)
{
	char title[48];

	fprintf(f, "Usage: slowlanectl %s COMMAND [OPTION]... [ARG]...\n\nCommands:\n", family);
	for (size_t i = 0; i < SL_ARRAY_LEN(cmds); i++)
		if (cmds[i].sub && strcmp(cmds[i].name, family) == 0)
			fprintf(f, "  %-22s %s\n", cmd_title(&cmds[i], title), cmds[i].summary);
	fprintf(f, "\n'slowlanectl %s COMMAND --help' lists a command's options; see "
	    "slowlanectl(1).\n", family);
}

static void
usage_cmd(FILE *f, const struct ctl_cmd *cmd)
{
	char title[48];

	fprintf(f, "Usage: slowlanectl %s%s%s\n%c%s.\n", cmd_title(cmd, title),
	    *cmd->usage ? " " : "", cmd->usage, toupper((unsigned char)cmd->summary[0]),
	    cmd->summary + 1);
	if (cmd->opts) {
		fputs("\nOptions:\n", f);
		for (size_t i = 0; i < SL_ARRAY_LEN(opts); i++)
			if (opts[i].bit & cmd->opts)
				print_opt(f, &opts[i]);
	}
	fputs("\nGlobal options:\n", f);
	for (size_t i = 0; i < SL_ARRAY_LEN(opts); i++)
		if (opts[i].bit & GLOBAL_OPTS)
			print_opt(f, &opts[i]);
}

static int
cmd_help(struct ctl *c)
{
	const struct ctl_cmd *cmd;

	if (c->nargs == 0) {
		usage_all(stdout);
		return CTL_OK;
	}
	if (cmd_is_family(c->args[0])) {
		if (c->nargs == 1) {
			usage_family(stdout, c->args[0]);
			return CTL_OK;
		}
		cmd = cmd_find(c->args[0], c->args[1]);
		if (!cmd)
			return family_err(c->args[0], c->args[1]);
	} else {
		cmd = cmd_find(c->args[0], NULL);
		if (!cmd)
			return ctl_usage_err(NULL, "unknown command '%s'", c->args[0]);
		if (c->nargs > 1)
			return ctl_usage_err(NULL, "'%s' has no command '%s'", c->args[0],
			    c->args[1]);
	}
	usage_cmd(stdout, cmd);
	return CTL_OK;
}

/* ---- parsing ---- */

static int
parse_states(const char *s, unsigned *mask)
{
	char word[64];

	*mask = 0;
	while (*s) {
		size_t n = strcspn(s, ",");
		int st;
		if (n >= sizeof word)
			return -1;
		memcpy(word, s, n);
		word[n] = '\0';
		st = ctl_state_parse(word);
		if (st < 0)
			return -1;
		*mask |= 1u << st;
		s += n + (s[n] == ',');
	}
	return *mask ? 0 : -1;
}

static int
parse_number(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -1;
	*out = v;
	return 0;
}

/* Stores `val` into the field of `o`; returns CTL_OK or CTL_USAGE. */
static int
set_opt(struct ctl *c, const struct ctl_opt *o, const char *val)
{
	char *field = (char *)c + o->off;
	int bad = 0;

	switch (o->kind) {
	case OPT_FLAG:
		*(bool *)(void *)field = true;
		break;
	case OPT_SEEN:
		break;
	case OPT_STRING:
		*(const char **)(void *)field = val;
		break;
	case OPT_DURATION:
		bad = sl_parse_duration_ms(val, (uint64_t *)(void *)field) != 0;
		break;
	case OPT_NUMBER:
		bad = parse_number(val, (uint64_t *)(void *)field) != 0;
		break;
	case OPT_STATES:
		bad = parse_states(val, (unsigned *)(void *)field) != 0;
		break;
	}
	if (bad) {
		const char *what = o->kind == OPT_DURATION ? " (try 250ms, 30s, 15m, 72h, 7d)" :
		    o->kind == OPT_STATES ? " (Queued, In Progress, Success or Failed)" : "";
		return ctl_usage_err(c, "bad value '%s' for --%s%s", val, o->name, what);
	}
	c->seen |= o->bit;
	return CTL_OK;
}

/* Fills `c` from argv. Returns CTL_OK or CTL_USAGE (message printed);
 * *version is set for --version, *family to a family named without its
 * second word (only possible with --help). */
static int
parse_args(struct ctl *c, int argc, char **argv, bool *version, const char **family)
{
	const char *cmd_name = NULL;
	bool options = true;
	char title[48];
	int rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (options && strcmp(a, "--") == 0) {
			options = false;
		} else if (options && strcmp(a, "--version") == 0) {
			*version = true;
		} else if (options && (strcmp(a, "-h") == 0)) {
			c->seen |= CTL_O_HELP;
		} else if (options && a[0] == '-' && a[1] == '-') {
			const char *eq = strchr(a + 2, '=');
			size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
			const struct ctl_opt *o = opt_find(a + 2, len);
			const char *val = NULL;
			if (!o)
				return ctl_usage_err(c, "unknown option '%.*s'", (int)len + 2, a);
			if (!o->arg && eq)
				return ctl_usage_err(c, "option --%s takes no value", o->name);
			if (o->arg) {
				if (eq)
					val = eq + 1;
				else if (i + 1 < argc)
					val = argv[++i];
				else
					return ctl_usage_err(c, "option --%s needs a value (%s)",
					    o->name, o->arg);
			}
			rc = set_opt(c, o, val);
			if (rc)
				return rc;
		} else if (options && a[0] == '-' && a[1] != '\0') {
			return ctl_usage_err(c, "unknown option '%s'", a);
		} else if (!cmd_name) {
			cmd_name = a;
			if (cmd_is_family(a)) {
				*family = a; /* the next word says which of its commands */
				continue;
			}
			c->cmd = cmd_find(a, NULL);
			if (!c->cmd)
				return ctl_usage_err(NULL, "unknown command '%s'", a);
		} else if (*family && !c->cmd) {
			c->cmd = cmd_find(*family, a);
			if (!c->cmd)
				return family_err(*family, a);
		} else {
			c->args[c->nargs++] = argv[i];
		}
	}
	if (*version || (!c->cmd && (c->seen & CTL_O_HELP)))
		return CTL_OK;
	if (!c->cmd && *family)
		return family_err(*family, NULL);
	if (!c->cmd)
		return ctl_usage_err(NULL, "no command given");
	for (unsigned bit = 1; bit && bit <= c->seen; bit <<= 1) {
		if ((c->seen & bit) && !(bit & (c->cmd->opts | GLOBAL_OPTS)))
			return ctl_usage_err(c, "option --%s does not apply to '%s'",
			    opt_by_bit(bit)->name, cmd_title(c->cmd, title));
	}
	if (c->seen & CTL_O_HELP)
		return CTL_OK;
	if (c->nargs < c->cmd->min_args)
		return ctl_usage_err(c, "'%s' needs %s", cmd_title(c->cmd, title),
		    c->cmd->usage);
	if (c->cmd->max_args >= 0 && c->nargs > c->cmd->max_args)
		return ctl_usage_err(c, "unexpected argument '%s'", c->args[c->cmd->max_args]);
	return CTL_OK;
}

int
main(int argc, char **argv)
{
	struct ctl c = {
		.ttl_ms = DEFAULT_TTL_MS,
		.interval_ms = DEFAULT_INTERVAL_MS,
	};
	bool version = false;
	const char *env = getenv("SLOWLANE_DATA_DIR"), *family = NULL;
	int rc;

	log_set_ident("slowlanectl");
	log_set_level(LOG_WARN);
	c.data_dir = env && *env ? env : DEFAULT_DATA_DIR;
	c.args = calloc((size_t)argc + 1, sizeof *c.args);
	if (!c.args) {
		ctl_err("out of memory");
		return CTL_FAIL;
	}
	rc = parse_args(&c, argc, argv, &version, &family);
	if (rc)
		goto out;
	if (version) {
		printf("slowlanectl (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
		goto out;
	}
	if (c.seen & CTL_O_HELP) {
		if (c.cmd && c.cmd->run != cmd_help)
			usage_cmd(stdout, c.cmd);
		else if (family)
			usage_family(stdout, family);
		else
			usage_all(stdout);
		goto out;
	}
	if (!*c.data_dir) {
		rc = ctl_usage_err(&c, "--data-dir is empty");
		goto out;
	}
	c.now_ms = sl_wall_ms();
	rc = c.cmd->run(&c);
	if (fflush(stdout) != 0 && rc == CTL_OK) {
		ctl_err("writing the output: %s", strerror(errno));
		rc = CTL_FAIL;
	}
out:
	free(c.args);
	return rc;
}
