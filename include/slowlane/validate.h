/*
 * validate.h - checks a submitted OpenAI request body before anything is
 * stored. Pure: bytes in, verdict out; no I/O, no globals.
 */
#ifndef SLOWLANE_VALIDATE_H
#define SLOWLANE_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include "slowlane/job.h"

/* An OpenAI-style error: {"error":{"message","type","param","code"}}. */
struct sl_error {
	int status;         /* HTTP status */
	const char *type;   /* e.g. "invalid_request_error" (static) */
	const char *param;  /* offending field, or NULL (static) */
	const char *code;   /* machine-readable code, or NULL (static) */
	char message[320];  /* human-readable */
};

/* Fills `e` (message formatted). Returns -1 so callers can `return
 * sl_error_set(...)`. */
int sl_error_set(struct sl_error *e, int status, const char *type, const char *param,
    const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Facts the validator learned, for building the job. */
struct validate_info {
	char model[JOB_MODEL_MAX + 1];
	char webhook[JOB_WEBHOOK_MAX + 1]; /* metadata.webhook_id, or "" */
	int flags;                         /* JOB_F_METADATA if "metadata" is there */
};

#define VALIDATE_MAX_DEPTH 128

/* Validates `len` bytes as a request for `kind`, in one pass and without
 * allocating (jscan.h). On success returns 0 and fills `info`; otherwise
 * returns -1 and fills `err` (400). Checks: strict JSON (UTF-8, nesting up
 * to VALIDATE_MAX_DEPTH), an object without duplicate top-level keys,
 * "model" a non-empty string of at most JOB_MODEL_MAX bytes, "messages" a
 * non-empty array of objects with a string "role" (chat) or "prompt" a
 * string or array (completions), "stream" not true, "metadata" an object
 * if present (custom_id and webhook_id strings if present). */
int validate_request(enum job_kind kind, const char *body, size_t len,
    struct validate_info *info, struct sl_error *err);

/* The body to send upstream: the submitted text with its top-level
 * "metadata" member cut out, every other byte as it was. Returns a malloc'd
 * string (caller frees) and its length, or NULL if the body is not a valid
 * object or memory is short. */
char *validate_upstream_body(const char *body, size_t len, size_t *out_len);

#endif
