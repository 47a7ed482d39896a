/*
 * validate.h - checks a submitted OpenAI request body before anything is
 * stored. Pure: bytes in, verdict out; no I/O, no globals.
 */
#ifndef SLOWLANE_VALIDATE_H
#define SLOWLANE_VALIDATE_H

#include <jansson.h>
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
	json_t *root;      /* the parsed body (caller json_decref()s it) */
	const char *model; /* inside root */
	int flags;         /* JOB_F_METADATA if the body has "metadata" */
};

/* Validates `len` bytes as a request for `kind`. On success returns 0 and
 * fills `info`; otherwise returns -1, fills `err` (400) and leaves nothing
 * to free. Checks: JSON object, "model" a non-empty string of at most
 * JOB_MODEL_MAX bytes, "messages" a non-empty array of objects with a
 * string "role" (chat) or "prompt" a string or array (completions),
 * "stream" not true, "metadata" an object if present (custom_id and
 * webhook_id strings if present). */
int validate_request(enum job_kind kind, const char *body, size_t len,
    struct validate_info *info, struct sl_error *err);

/* The body to send upstream: `root` without "metadata", serialized.
 * Returns a malloc'd string (caller frees) and its length, or NULL on
 * allocation failure. */
char *validate_upstream_body(const char *body, size_t len, size_t *out_len);

#endif
