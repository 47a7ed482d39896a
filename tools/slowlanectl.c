/*
 * slowlanectl - the admin tool of slowlane: argv, the option and command
 * tables, help, and exit codes. The commands live in ctl_inspect.c (reads)
 * and ctl_change.c (writes); see slowlanectl(1).
 *
 * The tool opens the daemon's LMDB environment itself. Reads use read-only
 * transactions, which never wait for the daemon's writer. Changes are
 * small write transactions: LMDB's write lock serialises them with the
 * daemon's writer thread, and a running daemon acts on them within its
 * one-second tick (docs/ARCHITECTURE.md).
 *
 * Options may come before or after the command name; "--" ends them.
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
	  .help = "only jobs submitted with this API key" },
	{ .name = "since", .bit = CTL_O_SINCE, .kind = OPT_DURATION,
	  .off = offsetof(struct ctl, since_ms), .arg = "DUR",
	  .help = "only jobs created (ls, export) or ended (requeue) within DUR" },
	{ .name = "limit", .bit = CTL_O_LIMIT, .kind = OPT_NUMBER,
	  .off = offsetof(struct ctl, limit), .arg = "N",
	  .help = "at most N jobs (ls: default 50; 0 = no limit)" },
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
};

static int cmd_help(struct ctl *c);

/* The commands, in the order `slowlanectl --help` lists them. */
struct ctl_cmd {
	const char *name;       /* the word after "slowlanectl" */
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
	{ .name = "help", .run = cmd_help, .max_args = 1,
	  .usage = "[COMMAND]",
	  .summary = "this list, or one command's options" },
};

static const struct ctl_cmd *
cmd_find(const char *name)
{
	for (size_t i = 0; i < SL_ARRAY_LEN(cmds); i++)
		if (strcmp(cmds[i].name, name) == 0)
			return &cmds[i];
	return NULL;
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

	fputs("slowlanectl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (c && c->cmd && c->cmd->run != cmd_help)
		fprintf(stderr, "\nTry 'slowlanectl %s --help'.\n", c->cmd->name);
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
	fputs("Usage: slowlanectl [--data-dir DIR] [--json] COMMAND [OPTION]... [ARG]...\n"
	    "Inspect and repair the job store of slowlaned, whether the daemon runs or not.\n"
	    "\nCommands:\n", f);
	for (size_t i = 0; i < SL_ARRAY_LEN(cmds); i++)
		fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
	fputs("\nGlobal options (before or after the command):\n", f);
	for (size_t i = 0; i < SL_ARRAY_LEN(opts); i++)
		if (opts[i].bit & GLOBAL_OPTS)
			print_opt(f, &opts[i]);
	fputs("  --version                  show the version and exit\n"
	    "\nDurations take ms, s, m, h or d (a bare number is seconds).\n"
	    "Exit status: 0 done, 1 the operation failed, 2 bad usage.\n"
	    "'slowlanectl COMMAND --help' lists a command's options; see slowlanectl(1).\n", f);
}

static void
usage_cmd(FILE *f, const struct ctl_cmd *cmd)
{
	fprintf(f, "Usage: slowlanectl %s%s%s\n%c%s.\n", cmd->name, *cmd->usage ? " " : "",
	    cmd->usage, toupper((unsigned char)cmd->summary[0]), cmd->summary + 1);
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
	cmd = cmd_find(c->args[0]);
	if (!cmd)
		return ctl_usage_err(NULL, "unknown command '%s'", c->args[0]);
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
 * *version is set for --version. */
static int
parse_args(struct ctl *c, int argc, char **argv, bool *version)
{
	const char *cmd_name = NULL;
	bool options = true;
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
			c->cmd = cmd_find(a);
			if (!c->cmd)
				return ctl_usage_err(NULL, "unknown command '%s'", a);
		} else {
			c->args[c->nargs++] = argv[i];
		}
	}
	if (*version || (!c->cmd && (c->seen & CTL_O_HELP)))
		return CTL_OK;
	if (!c->cmd)
		return ctl_usage_err(NULL, "no command given");
	for (unsigned bit = 1; bit && bit <= c->seen; bit <<= 1) {
		if ((c->seen & bit) && !(bit & (c->cmd->opts | GLOBAL_OPTS)))
			return ctl_usage_err(c, "option --%s does not apply to '%s'",
			    opt_by_bit(bit)->name, c->cmd->name);
	}
	if (c->seen & CTL_O_HELP)
		return CTL_OK;
	if (c->nargs < c->cmd->min_args)
		return ctl_usage_err(c, "'%s' needs %s", c->cmd->name, c->cmd->usage);
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
	const char *env = getenv("SLOWLANE_DATA_DIR");
	int rc;

	log_set_ident("slowlanectl");
	log_set_level(LOG_WARN);
	c.data_dir = env && *env ? env : DEFAULT_DATA_DIR;
	c.args = calloc((size_t)argc + 1, sizeof *c.args);
	if (!c.args) {
		ctl_err("out of memory");
		return CTL_FAIL;
	}
	rc = parse_args(&c, argc, argv, &version);
	if (rc)
		goto out;
	if (version) {
		printf("slowlanectl (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
		goto out;
	}
	if (c.seen & CTL_O_HELP) {
		if (c.cmd && c.cmd->run != cmd_help)
			usage_cmd(stdout, c.cmd);
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
