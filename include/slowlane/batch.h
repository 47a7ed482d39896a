/*
 * batch.h - OpenAI-compatible batches: the batch record (a JSON object in
 * the `batches` table; keys starting with "_" are ours and never shown),
 * its listing index, the lines it expanded into jobs, the check of one
 * input line, the output and error file lines, and the accounting done in
 * the same transaction as each of its jobs ending.
 */
#ifndef SLOWLANE_BATCH_H
#define SLOWLANE_BATCH_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/job.h"
#include "slowlane/store.h"
#include "slowlane/util.h"

#define BATCH_ID_LEN 30        /* "batch_" + 24 */
#define BATCH_CUSTOM_ID_MAX 512
#define BATCH_ERRORS_MAX 100   /* errors.data entries kept */

/* A fresh id "batch_<24 random>". */
int batch_new_id(char out[BATCH_ID_LEN + 1]);

/* Record. get: 0 with *out a new reference, SL_ENOTFOUND, SL_ECORRUPT. */
int batch_get(struct store_txn *t, const char *id, json_t **out);
int batch_put(struct store_txn *t, json_t *b);
/* Adds the listing entry of a new batch. */
int batch_index_put(struct store_txn *t, json_t *b);
/* The API's batch object: `b` without our "_" keys. New reference. */
json_t *batch_public(json_t *b);
/* Marks the batch as having work for the engine, or not. */
int batch_set_active(struct store_txn *t, const char *id, bool active);
/* Calls cb for each active batch id. */
int batch_active_list(struct store_txn *t, int (*cb)(void *arg, const char *id), void *arg);
/* Whether an active batch reads file `file_id` as its input: 1 with its id
 * in by[] (when by is not NULL), 0 if none, or an error. Such a file is
 * neither swept nor deleted until the batch has ended. */
int batch_input_in_use(struct store_txn *t, const char *file_id, char by[BATCH_ID_LEN + 1]);

/* Lists `tenant`'s batches newest first, strictly after `after`; up to
 * `limit` public objects appended to `data`; *has_more exact. */
int batch_list(struct store_txn *t, const char *tenant, const char *after, size_t limit,
    json_t *data, bool *has_more);

/* Line `line` of batch `id` is job `job_id` with `custom_id`. */
int batch_line_put(struct store_txn *t, const char *id, uint32_t line, const char *job_id,
    const char *custom_id);
/* Calls cb for lines from..(from + max - 1), in order; stops early at the
 * batch's end. */
int batch_lines_scan(struct store_txn *t, const char *id, uint32_t from, size_t max,
    int (*cb)(void *arg, uint32_t line, const char *job_id, const char *custom_id),
    void *arg);

/* One checked input line: nothing to free; `body` points into the line. */
struct batch_line {
	char custom_id[BATCH_CUSTOM_ID_MAX + 1];
	char model[JOB_MODEL_MAX + 1];
	const char *body;      /* the request body's JSON text, inside the line */
	size_t body_len;
	bool has_metadata;     /* the body has a top-level "metadata" */
};

/* Checks one JSONL line against the batch `endpoint`, in one pass without
 * a JSON tree (jscan.h). Returns 0 and fills `out`, or fills
 * `code`/`msg`/`param` (static codes) and returns -1. */
int batch_check_line(const char *line, size_t len, const char *endpoint,
    struct batch_line *out, const char **code, const char **param, char *msg, size_t cap);

/* Appends the output- or error-file line for job `j` (read in `t`) to `b`
 * (with a trailing newline). *is_error tells which file it belongs to. */
int batch_output_line(struct store_txn *t, const struct job *j, const char *custom_id,
    struct sl_buf *b, bool *is_error);

/* A job of a batch ended, in this transaction: counts, usage, and when it
 * was the last one, the batch moves to finalizing for the engine. */
int batch_job_ended(struct store_txn *t, const struct job *j, uint64_t now_ms);

/* Sets `name` to now (Unix seconds) and status to `status` on `b`. */
void batch_set_status(json_t *b, const char *status, const char *stamp, uint64_t now_ms);

#endif
