/*
 * generation.h - renders a job as the generation object of API.md section
 * 1: {id, request, response, state, stateMessage, createdAt, dispatchedAt,
 * finishedAt}. The stored request and response are JSON texts (validated at
 * submit; results are upstream JSON or wrapped by the scheduler) and are
 * embedded as they are, without a parse.
 */
#ifndef SLOWLANE_GENERATION_H
#define SLOWLANE_GENERATION_H

#include <stdbool.h>

#include "slowlane/job.h"
#include "slowlane/store.h"
#include "slowlane/util.h"

/* Appends the generation of `j` (read in transaction `t`) to `b`.
 * Returns 0; SL_ENOTFOUND / SL_ECORRUPT if its body is missing or bad;
 * SL_ETOOBIG or -ENOMEM from the buffer. */
int generation_render(struct store_txn *t, const struct job *j, struct sl_buf *b);
/* The same from parts already read: request `req`, response `resp` (NULL
 * for none). Returns 0, SL_ETOOBIG or -ENOMEM. */
int generation_render_parts(const struct job *j, const void *req, size_t req_len,
    const void *resp, size_t resp_len, struct sl_buf *b);

/* The same for a webhook event, which must go out for a job that ended
 * even in a damaged store: a request body or result that is missing or
 * fails its checksum renders as null. Returns 0, SL_ETOOBIG, -ENOMEM or a
 * store error. */
int generation_render_event(struct store_txn *t, const struct job *j, struct sl_buf *b);

/* Appends a JSON array of the generations of jobs ids[0..n), in order,
 * leaving out jobs that no longer exist (purged by retention); `lenient`
 * as generation_render_event (a damaged member record is left out too). */
int generation_render_list(struct store_txn *t, const char (*ids)[SL_ID_LEN + 1], size_t n,
    bool lenient, struct sl_buf *b);

/* Appends `s` as a JSON string (escaped), or null if `s` is NULL or not
 * valid UTF-8. */
int generation_append_string(struct sl_buf *b, const char *s);

#endif
