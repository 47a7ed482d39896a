/*
 * store.h - the LMDB store: job records, request bodies, results, and the
 * ordered indexes that make LMDB the queue. The only module that includes
 * lmdb.h; everything else sees these functions.
 *
 * Named databases (keys big-endian so they sort numerically):
 *   meta      name                     -> format version, per-state counts
 *   jobs      id (21 bytes)            -> job record (job.h encoding + CRC)
 *   bodies    id                       -> request JSON as submitted + CRC
 *   results   id                       -> response JSON + CRC
 *   ready     not_before_ms | id       -> ""   (Queued jobs, due order)
 *   inflight  id                       -> attempt_id | lease_ms (In Progress)
 *   expiry    expires_ms | id          -> ""   (unfinished jobs)
 *   created   created_ms | id          -> ""   (every job: listings, stats)
 *   finished  finished_ms | id         -> ""   (ended jobs: retention, stats)
 *
 * Threads: a write transaction belongs to the thread that began it (the
 * daemon's writer thread, or slowlanectl). Read transactions may be used by
 * any one thread at a time. Pointers returned by *_get functions are valid
 * only until the transaction ends or its next write: copy what you keep.
 */
#ifndef SLOWLANE_STORE_H
#define SLOWLANE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/job.h"

#define STORE_FORMAT 1 /* bumped on incompatible schema changes */

struct store;
struct store_txn;

struct store_opts {
	uint64_t map_size; /* bytes; 0 = default (16 GiB, sparse) */
	bool read_only;    /* open without write access (inspection) */
};

struct store_counts {
	uint64_t by_state[JOB_STATE_COUNT]; /* jobs currently in each state */
};

/* Opens (creating if needed, unless read-only) the store in directory `dir`.
 * Returns 0; SL_ENOTFOUND if the directory is missing and read-only;
 * SL_EVERSION if the store was written by a newer format; SL_ESTORE or
 * -errno otherwise (logged). On success *out is owned by the caller. */
int store_open(const char *dir, const struct store_opts *opts, struct store **out);
/* Closes the store; no transaction may be open. store_close(NULL) is a no-op. */
void store_close(struct store *st);

/* Begins a transaction. Read-only ones never wait for the writer.
 * Returns 0, SL_ESTORE (logged) or -ENOMEM. */
int store_begin(struct store *st, bool read_only, struct store_txn **out);
/* Commits and frees `t` (synced to disk for a top-level write transaction).
 * Returns 0, SL_EFULL, or SL_ESTORE / -EIO (the transaction is lost). */
int store_commit(struct store_txn *t);
/* Discards and frees `t`. store_abort(NULL) is a no-op. */
void store_abort(struct store_txn *t);

/* ---- jobs ---- */

/* Reads job `id`. Returns 0, SL_ENOTFOUND, or SL_ECORRUPT. */
int store_job_get(struct store_txn *t, const char *id, struct job *out);
/* Writes `nw` and moves its index entries from what `old` implied to what
 * `nw` implies (old == NULL for a new job). The caller passes the record as
 * it was read in this transaction. Returns 0, SL_EFULL or SL_ESTORE. */
int store_job_put(struct store_txn *t, const struct job *old, const struct job *nw);
/* Deletes a job, its body, result and index entries. */
int store_job_delete(struct store_txn *t, const struct job *j);

/* Request body and response JSON, stored with a CRC. get: 0, SL_ENOTFOUND,
 * SL_ECORRUPT; *data stays valid until the transaction ends. */
int store_body_put(struct store_txn *t, const char *id, const void *data, size_t len);
int store_body_get(struct store_txn *t, const char *id, const void **data, size_t *len);
int store_result_put(struct store_txn *t, const char *id, const void *data, size_t len);
int store_result_get(struct store_txn *t, const char *id, const void **data, size_t *len);

/* ---- index scans (each returns ids in key order) ---- */

/* Up to `max` Queued job ids due at or before `upto_ms`, in due order,
 * into ids[][SL_ID_LEN + 1]; *n gets the count. *next_due_ms gets the due
 * time of the first entry not returned (UINT64_MAX if none). */
int store_ready_due(struct store_txn *t, uint64_t upto_ms, size_t max,
    char (*ids)[SL_ID_LEN + 1], size_t *n, uint64_t *next_due_ms);
/* Same for unfinished jobs whose expiry is at or before `upto_ms`. */
int store_expiry_due(struct store_txn *t, uint64_t upto_ms, size_t max,
    char (*ids)[SL_ID_LEN + 1], size_t *n, uint64_t *next_due_ms);
/* Up to `max` In Progress job ids (any order). */
int store_inflight_list(struct store_txn *t, size_t max,
    char (*ids)[SL_ID_LEN + 1], size_t *n);

/* Per-state counts as of this transaction. */
int store_counts_get(struct store_txn *t, struct store_counts *out);

/* Clears reader slots left by crashed processes; returns how many. */
int store_reader_check(struct store *st);

#endif
