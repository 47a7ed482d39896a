/*
 * idem.h - Idempotency-Key on creating POSTs: the first answer for a
 * (key, Idempotency-Key) pair is kept in the same transaction as the object
 * it created, and a retry with the same request gets that answer again; a
 * reuse with a different request is refused. Records are kept IDEM_KEEP_MS
 * (a day, as Stripe and OpenAI keep theirs), then idem_sweep deletes them.
 */
#ifndef SLOWLANE_IDEM_H
#define SLOWLANE_IDEM_H

#include <stdbool.h>

#include "slowlane/store.h"

#define IDEM_KEY_MAX 255
#define IDEM_KEEP_MS (24ull * 3600 * 1000)
/* A record's key: tenant (16 bytes) | the header's value. */
#define IDEM_RECORD_KEY_MAX (16 + IDEM_KEY_MAX + 1)
/* What a request is compared by: 64 hex chars of its digest (its endpoint
 * and body), then 64 of the digest records stamped before endpoints were
 * part of it hold (the body alone), so a retry across that upgrade still
 * gets its first answer. */
#define IDEM_DIGEST_LEN 128

/* Looks up `key` for `tenant`. Returns 0 and a malloc'd copy of the first
 * answer in *answer (and *same = whether `hash`, IDEM_DIGEST_LEN chars,
 * matches the first request's), or SL_ENOTFOUND. */
int idem_lookup(struct store_txn *t, const char *tenant, const char *key, const char *hash,
    char **answer, bool *same);
/* Keeps `answer` for (tenant, key) with the request's `hash` (its first 64
 * chars), stamped with the wall clock. */
int idem_store(struct store_txn *t, const char *tenant, const char *key, const char *hash,
    const char *answer);

/* One step of the expiry walk: visits at most `budget` records from key
 * `from` (flen bytes; 0: the first) and deletes those stored more than
 * `keep_ms` before `now_ms` (records of versions before the stamp are
 * kept). Fills next[*nlen] with where the next step starts (*nlen = 0: the
 * walk reached the end) and *deleted. Returns 0 or a store error. */
int idem_sweep(struct store_txn *t, uint64_t now_ms, uint64_t keep_ms, const void *from,
    size_t flen, size_t budget, unsigned char next[IDEM_RECORD_KEY_MAX], size_t *nlen,
    size_t *deleted);

#endif
