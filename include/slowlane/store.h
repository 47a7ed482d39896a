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
 *   history   id | attempt (be32)      -> started, ended, status, message
 *   groups    group id                 -> group record (group.h)
 *   webhooks  webhook id               -> registration (webhook.h)
 *   outbox    due_ms | event id        -> webhook delivery waiting to be sent
 *   deliveries event id                -> how a finished delivery ended
 *   files, file_index, batches, batch_index, batch_lines, batch_active,
 *   idempotency, keys: the Files and Batch API, API keys (enum store_table)
 *   tenant_counts tenant (16, NUL-padded) -> be64 unfinished jobs (--max-queued)
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

/* Bumped on incompatible schema changes. A writable open upgrades an older
 * store in place (2: job records may carry stock-message codes, job.c). */
#define STORE_FORMAT 2

struct store;
struct store_txn;

struct store_opts {
	uint64_t map_size; /* bytes; 0 = default (16 GiB, sparse) */
	bool read_only;    /* transactions are read-only (inspection); a store that
	                    * lacks a database an older build did not have is
	                    * reopened for writing once to create it */
	bool create;       /* create the directory and store if missing */
};

struct store_counts {
	uint64_t by_state[JOB_STATE_COUNT]; /* jobs currently in each state */
};

/* Opens the store in directory `dir`, creating it if opts->create.
 * Returns 0; SL_ENOTFOUND if the directory or store is missing (and not
 * opts->create);
 * SL_EVERSION if the store was written by a newer format; SL_ECORRUPT if
 * data.mdb is empty, shorter than its last page or has a bad format record;
 * SL_ESTORE or -errno otherwise (logged). On success *out is owned by the
 * caller. */
int store_open(const char *dir, const struct store_opts *opts, struct store **out);
/* Closes the store; no transaction may be open. store_close(NULL) is a no-op. */
void store_close(struct store *st);

/* Begins a transaction. Read-only ones never wait for the writer.
 * Returns 0, SL_ESTORE (logged) or -ENOMEM. */
int store_begin(struct store *st, bool read_only, struct store_txn **out);
/* Commits and frees `t` (synced to disk for a top-level write transaction).
 * Returns 0, SL_EFULL, -ENOMEM, or SL_ESTORE / -EIO (the transaction is
 * lost). After a big delete it may make one more small synced commit of
 * its own (meta "freed_ms", so that freed pages become reusable). */
int store_commit(struct store_txn *t);
/* Discards and frees `t`. store_abort(NULL) is a no-op. */
void store_abort(struct store_txn *t);
/* Moves read transaction `t` to the newest commit (pointers read through
 * it before are invalid). Returns 0 or SL_ESTORE. */
int store_refresh(struct store_txn *t);

/* Named 8-byte values kept in `meta` (e.g. "journal_seq", docs/JOURNAL.md).
 * get: 0, SL_ENOTFOUND, SL_ECORRUPT. */
int store_meta_get_u64(struct store_txn *t, const char *name, uint64_t *out);
int store_meta_put_u64(struct store_txn *t, const char *name, uint64_t val);

/* ---- jobs ---- */

/* Reads job `id`. Returns 0, SL_ENOTFOUND, or SL_ECORRUPT. */
int store_job_get(struct store_txn *t, const char *id, struct job *out);
/* Writes `nw` and moves its index entries from what `old` implied to what
 * `nw` implies (old == NULL for a new job). The caller passes the record as
 * it was read in this transaction, and keeps the per-state counts and the
 * key's unfinished count (`tenant_counts`) in step. Returns 0, SL_EFULL,
 * SL_ECORRUPT (a count record damaged), -EIO or SL_ESTORE. */
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
 * into ids[][SL_ID_LEN + 1], and (when `ms` is not NULL) each entry's due
 * time into ms[]; *n gets the count. *next_due_ms gets the due time of the
 * first entry not returned (UINT64_MAX if none). */
int store_ready_due(struct store_txn *t, uint64_t upto_ms, size_t max,
    char (*ids)[SL_ID_LEN + 1], uint64_t *ms, size_t *n, uint64_t *next_due_ms);
/* Same for unfinished jobs whose expiry is at or before `upto_ms`. */
int store_expiry_due(struct store_txn *t, uint64_t upto_ms, size_t max,
    char (*ids)[SL_ID_LEN + 1], uint64_t *ms, size_t *n, uint64_t *next_due_ms);
/* Up to `max` In Progress job ids (any order). */
int store_inflight_list(struct store_txn *t, size_t max,
    char (*ids)[SL_ID_LEN + 1], size_t *n);

/* Unfinished (Queued or In Progress) jobs of `tenant`. */
uint64_t store_tenant_unfinished(struct store_txn *t, const char *tenant);

/* Per-state counts as of this transaction. */
int store_counts_get(struct store_txn *t, struct store_counts *out);

/* Counts the free pages inside the map (a read transaction; O(freelist)).
 * The scheduler calls it every second; store_nearly_full uses the count. */
void store_measure_free(struct store *st);
/* The writer has nothing more to commit (no transaction open on this
 * thread): if the map is high, counts the freelist now rather than at the
 * next commit or tick (after a commit the count is refreshed at most every
 * 10 ms, so the last commit before an idle spell, say a retention delete,
 * could leave it stale and new jobs refused), and makes the pages the last
 * commit freed reusable with one small commit if they are what makes
 * the room. Cheap while the map is low, and while the last count shows
 * room (admission recounts a stale count before it refuses). */
void store_settle(struct store *st);
/* True if a new job should be refused (507): if, with room for the
 * outcomes of every job not yet ended and of this one (twice the average
 * result stored so far), the map's reserve would be in use. The reserve is
 * 10% of the map, and at least 64 pages (at most half the map), so that
 * the jobs in flight can still store their results and retention can still
 * delete: in LMDB even a delete needs free pages. */
bool store_nearly_full(struct store_txn *t);
/* The same without a transaction (the writer's journal thread), for `jobs`
 * new jobs taking `bytes` more. */
bool store_map_has_room(struct store *st, uint64_t bytes, uint64_t jobs);

/* True if the filesystem holding the store has (almost) no space left:
 * tells a full disk (recoverable: refuse work) from an I/O error (fatal). */
bool store_disk_full(struct store *st);

/* Clears reader slots left by crashed processes; returns how many. */
int store_reader_check(struct store *st);

/* Lets go of this process's mappings of the store's pages (the pages stay
 * in the page cache; the next read maps them again, a minor fault). Every
 * commit moves the trees' right edges to new pages and the next
 * transaction maps those, so without this the process's RSS climbs with
 * what it wrote, towards the whole file. The scheduler calls it every
 * second. Any thread; readers running meanwhile just fault again. */
void store_release_map(struct store *st);

/* ---- tables of checked records (groups, webhooks, outbox, deliveries) ---- */

enum store_table {
	STORE_T_GROUPS, STORE_T_WEBHOOKS, STORE_T_OUTBOX, STORE_T_DELIVERIES,
	STORE_T_FILES,        /* file id -> file object (JSON) */
	STORE_T_FILE_INDEX,   /* tenant | created_ms | file id -> "" */
	STORE_T_BATCHES,      /* batch id -> batch object (JSON) */
	STORE_T_BATCH_INDEX,  /* tenant | created_ms | batch id -> "" */
	STORE_T_BATCH_LINES,  /* batch id | line (be32) -> job id | custom_id */
	STORE_T_BATCH_ACTIVE, /* batch id -> "" while the batch engine has work */
	STORE_T_IDEMPOTENCY,  /* tenant | Idempotency-Key -> first answer */
	STORE_T_KEYS,         /* hex SHA-256 of an API key -> key record */
};

/* Records with a CRC, under arbitrary keys (at most 511 bytes). get: 0,
 * SL_ENOTFOUND, SL_ECORRUPT; *data valid until the transaction ends.
 * del: 0 or SL_ENOTFOUND. */
int store_table_put(struct store_txn *t, enum store_table tb, const void *key, size_t klen,
    const void *data, size_t len);
int store_table_get(struct store_txn *t, enum store_table tb, const void *key, size_t klen,
    const void **data, size_t *len);
int store_table_del(struct store_txn *t, enum store_table tb, const void *key, size_t klen);
/* Entries in a table, from LMDB's own count (no walk). */
int store_table_count(struct store_txn *t, enum store_table tb, uint64_t *out);
/* Walks a table in key order from the first key >= `from` (all if flen is
 * 0). `data` is NULL for a record that failed its CRC. Return non-zero from
 * cb to stop; the scan then returns it. */
typedef int (*store_table_fn)(void *arg, const void *key, size_t klen, const void *data,
    size_t len);
int store_table_scan(struct store_txn *t, enum store_table tb, const void *from, size_t flen,
    store_table_fn cb, void *arg);
/* The same, newest (largest key) first when `reverse`: from the last key
 * <= `from` (from the end if flen is 0). */
int store_table_scan_dir(struct store_txn *t, enum store_table tb, const void *from,
    size_t flen, bool reverse, store_table_fn cb, void *arg);

/* ---- inspection and repair (slowlanectl) ---- */

enum store_index {
	STORE_READY, STORE_EXPIRY, STORE_CREATED, STORE_FINISHED, /* time-keyed */
};

/* Called per index entry; return non-zero to stop the scan (that value is
 * then returned by the scan). */
typedef int (*store_time_fn)(void *arg, uint64_t ms, const char *id);
/* Walks a time-keyed index from `from_ms` upward (or, with `reverse`, from
 * `from_ms` downward; UINT64_MAX = from the newest). */
int store_scan_time(struct store_txn *t, enum store_index ix, uint64_t from_ms, bool reverse,
    store_time_fn cb, void *arg);

/* Called per job in id order (= creation order: ids are time-ordered).
 * `j` is NULL and rc SL_ECORRUPT for a record that failed its check. */
typedef int (*store_job_fn)(void *arg, const char *id, const struct job *j);
int store_scan_jobs(struct store_txn *t, store_job_fn cb, void *arg);

/* Deletes the entry (ms, id) of time index `ix`, or the inflight entry of
 * `id`, and nothing else: for an entry that its record does not imply (a
 * damaged store; see queue.h). A missing entry is not an error. Returns 0
 * or a store error. */
int store_index_drop(struct store_txn *t, enum store_index ix, uint64_t ms, const char *id);
int store_inflight_drop(struct store_txn *t, const char *id);
/* Puts the entry (ms, id) of time index `ix` back, for a record that
 * implies it. Returns 0 or a store error. */
int store_index_put(struct store_txn *t, enum store_index ix, uint64_t ms, const char *id);

struct store_info {
	uint64_t map_size;   /* bytes reserved */
	uint64_t used_bytes; /* bytes in use (last page) */
	uint64_t page_size;
	uint64_t jobs;       /* records in `jobs` */
	unsigned max_readers, readers;
};
int store_get_info(struct store *st, struct store_txn *t, struct store_info *out);

/* Writes a consistent, compacted copy of the store into directory `path`
 * (created if missing; must not hold a store). Safe while the daemon runs. */
int store_backup(struct store *st, const char *path);

int store_result_delete(struct store_txn *t, const char *id);

/* One attempt of a job, kept for `slowlanectl show`. */
struct store_attempt {
	uint32_t attempt;     /* 1-based */
	uint64_t started_ms, ended_ms;
	uint16_t http_status; /* 0 = no HTTP answer */
	char message[JOB_MESSAGE_MAX + 1];
};
int store_attempt_put(struct store_txn *t, const char *id, const struct store_attempt *a);
/* Calls cb for each recorded attempt of `id`, in order. */
int store_attempt_list(struct store_txn *t, const char *id,
    int (*cb)(void *arg, const struct store_attempt *a), void *arg);

/* Problems found by store_check, one call each. */
typedef void (*store_problem_fn)(void *arg, const char *id, const char *what, bool repaired);

struct store_check_result {
	uint64_t jobs;      /* records examined */
	uint64_t problems;  /* disagreements found */
	uint64_t repaired;  /* fixed (with repair) */
};
/* Verifies that every index agrees with the job records (each job in
 * exactly the indexes its state implies, no dangling entries, the
 * per-state counts and each key's unfinished count right) and, with
 * `repair` (write transaction), fixes what it can: missing entries added,
 * dangling ones removed, counts rewritten. Corrupt records are reported,
 * not changed. Memory: one tally per key with unfinished jobs. */
int store_check(struct store_txn *t, bool repair, store_problem_fn cb, void *arg,
    struct store_check_result *out);

#endif
