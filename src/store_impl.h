/*
 * store_impl.h - what store.c and store_check.c share (not a public
 * interface: everything else goes through store.h): the named databases,
 * the store and transaction structs, and the few helpers the check needs.
 */
#ifndef SLOWLANE_STORE_IMPL_H
#define SLOWLANE_STORE_IMPL_H

#include <lmdb.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/common.h"
#include "slowlane/store.h"

enum dbi_index {
	DB_META, DB_JOBS, DB_BODIES, DB_RESULTS, DB_READY, DB_INFLIGHT,
	DB_EXPIRY, DB_CREATED, DB_FINISHED, DB_HISTORY,
	DB_GROUPS, DB_WEBHOOKS, DB_OUTBOX, DB_DELIVERIES,
	DB_FILES, DB_FILE_INDEX, DB_BATCHES, DB_BATCH_INDEX, DB_BATCH_LINES, DB_BATCH_ACTIVE,
	DB_IDEMPOTENCY, DB_KEYS, DB_TENANT_COUNTS, DB_COUNT
};

struct store {
	MDB_env *env;
	MDB_dbi dbi[DB_COUNT];
	char *dir;
	_Atomic uint64_t free_pages; /* freelist size, as last measured */
	_Atomic uint64_t free_measured_ms; /* when, sl_mono_ms() */
	_Atomic uint64_t free_measured_txn; /* the last commit it saw */
	_Atomic uint64_t outcome_bytes; /* a result's size, a moving average */
	void *map;                   /* LMDB's map of data.mdb (find_map), or NULL */
	size_t map_len;
};

struct store_txn {
	struct store *st;
	MDB_txn *txn;
};

#define TIME_KEY_LEN (8 + SL_ID_LEN) /* be64 time | id */

/* The databases' names, by enum dbi_index (as LMDB knows them). */
extern const char *const store_p_db_names[DB_COUNT];

/* Maps an LMDB return code to ours (SL_*), logging the unexpected ones
 * with `what`. */
int store_p_map_rc(int rc, const char *what);

/* Writes the TIME_KEY_LEN-byte key of a time index: be64 ms, then id. */
void store_p_time_key(unsigned char *k, uint64_t ms, const char *id);

/* Puts one entry of `db`, as an append when its key sorts last (the
 * page-filling path of store.c's tree_put). Returns 0 or an SL_* error. */
int store_p_put_key(struct store_txn *t, int db, const void *key, size_t klen,
    const void *val, size_t vlen);

#endif
