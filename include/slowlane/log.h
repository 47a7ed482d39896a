/*
 * log.h - one line per event that matters, to stderr.
 *
 * Format: "2026-11-22T02:21:36.123Z slowlaned[pid] LEVEL message".
 * Thread-safe: each line is written with one write(2).
 */
#ifndef SLOWLANE_LOG_H
#define SLOWLANE_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Lines below `level` are dropped. Call before starting threads. */
void log_set_level(enum log_level level);
/* Parses "debug", "info", "warn", "error"; returns -1 if unknown. */
int log_level_parse(const char *s);
/* Sets the program name shown in each line (not copied: keep it static). */
void log_set_ident(const char *ident);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
