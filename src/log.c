/*
 * log.c - leveled logging to stderr, one write(2) per line so lines from the
 * loop and the writer thread never interleave.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "slowlane/log.h"
#include "slowlane/util.h"

static enum log_level min_level = LOG_INFO;
static const char *ident = "slowlane";

static const char *const level_names[] = {
	[LOG_DEBUG] = "debug", [LOG_INFO] = "info",
	[LOG_WARN] = "warn", [LOG_ERROR] = "error",
};

void
log_set_level(enum log_level level)
{
	min_level = level;
}

void
log_set_ident(const char *s)
{
	ident = s;
}

int
log_level_parse(const char *s)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	if (strcmp(s, "warning") == 0)
		return LOG_WARN;
	return -1;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048];
	char ts[32];
	va_list ap;
	int n, m;

	if (level < min_level)
		return;
	sl_fmt_iso8601(sl_wall_ms(), ts, sizeof ts);
	n = snprintf(line, sizeof line, "%s %s[%d] %s ", ts, ident, (int)getpid(),
	    level_names[level]);
	if (n < 0)
		return;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	n += m;
	if ((size_t)n > sizeof line - 2)
		n = (int)(sizeof line - 2);
	line[n++] = '\n';
	/* One write: atomic enough for stderr lines from two threads. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}
