/*
 * idem.h - Idempotency-Key on creating POSTs: the first answer for a
 * (key, Idempotency-Key) pair is kept in the same transaction as the object
 * it created, and a retry with the same request gets that answer again; a
 * reuse with a different request is refused.
 */
#ifndef SLOWLANE_IDEM_H
#define SLOWLANE_IDEM_H

#include <stdbool.h>

#include "slowlane/store.h"

#define IDEM_KEY_MAX 255

/* Looks up `key` for `tenant`. Returns 0 and a malloc'd copy of the first
 * answer in *answer (and *same = whether `hash` matches the first
 * request's), or SL_ENOTFOUND. */
int idem_lookup(struct store_txn *t, const char *tenant, const char *key, const char *hash,
    char **answer, bool *same);
/* Keeps `answer` for (tenant, key) with the request's `hash`. */
int idem_store(struct store_txn *t, const char *tenant, const char *key, const char *hash,
    const char *answer);

#endif
