/*
 * apikey.h - API keys kept in the store (`keys` table), added and revoked
 * by `slowlanectl key` while the daemon runs. Only the key's SHA-256 is
 * stored; the key itself is shown once, when it is made. Each key is a
 * tenant: the first 16 hex digits of its hash.
 */
#ifndef SLOWLANE_APIKEY_H
#define SLOWLANE_APIKEY_H

#include <stdbool.h>
#include <stdint.h>

#include "slowlane/job.h"
#include "slowlane/store.h"

#define APIKEY_LEN 46     /* "sk-sl-" + 40 random characters */
#define APIKEY_NAME_MAX 63

struct apikey {
	char hash[65];                     /* hex SHA-256 of the key */
	char tenant[JOB_TENANT_LEN + 1];
	char name[APIKEY_NAME_MAX + 1];
	uint64_t created_ms;
	bool revoked;
	uint32_t rps;                      /* requests per second; 0 = default */
	uint64_t max_queued;               /* unfinished jobs; 0 = default */
};

/* Makes a new random key into key[APIKEY_LEN + 1] and its record. */
int apikey_new(const char *name, uint64_t now_ms, char key[APIKEY_LEN + 1], struct apikey *out);
/* Fills hash and tenant of `out` for the key text `key`. */
void apikey_hash(const char *key, char hash[65], char tenant[JOB_TENANT_LEN + 1]);

/* put: 0, -ENOMEM or a store error (SL_EFULL, SL_ESTORE). */
int apikey_put(struct store_txn *t, const struct apikey *k);
/* get: 0, SL_ENOTFOUND, SL_ECORRUPT. */
int apikey_get(struct store_txn *t, const char *hash, struct apikey *out);
/* Calls cb for every key in hash order. */
int apikey_list(struct store_txn *t, int (*cb)(void *arg, const struct apikey *k), void *arg);
/* True if the store holds any key (revoked ones included), or if the
 * table cannot be read (fail closed). */
bool apikey_any(struct store_txn *t);

#endif
