/*
 * apikey.c - API key records (see apikey.h). Records are small JSON texts.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/apikey.h"
#include "slowlane/common.h"
#include "slowlane/util.h"

void
apikey_hash(const char *key, char hash[65], char tenant[JOB_TENANT_LEN + 1])
{
	sl_sha256_hex(key, strlen(key), hash);
	memcpy(tenant, hash, JOB_TENANT_LEN);
	tenant[JOB_TENANT_LEN] = '\0';
}

int
apikey_new(const char *name, uint64_t now_ms, char key[APIKEY_LEN + 1], struct apikey *out)
{
	int rc;

	memset(out, 0, sizeof *out);
	memcpy(key, "sk-sl-", 6);
	rc = sl_random_id(key + 6, APIKEY_LEN - 6);
	if (rc)
		return rc;
	apikey_hash(key, out->hash, out->tenant);
	snprintf(out->name, sizeof out->name, "%s", name ? name : "");
	out->created_ms = now_ms;
	return 0;
}

int
apikey_put(struct store_txn *t, const struct apikey *k)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:b, s:I, s:I}", "tenant", k->tenant, "name",
	    k->name, "created_ms", (json_int_t)k->created_ms, "revoked", k->revoked, "rps",
	    (json_int_t)k->rps, "max_queued", (json_int_t)k->max_queued);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	int rc;

	json_decref(o);
	if (!s)
		return -ENOMEM;
	rc = store_table_put(t, STORE_T_KEYS, k->hash, 64, s, strlen(s));
	free(s);
	return rc;
}

static int
decode(const char *hash, const void *data, size_t len, struct apikey *out)
{
	json_t *o = json_loadb(data, len, 0, NULL);

	memset(out, 0, sizeof *out);
	if (!json_is_object(o)) {
		json_decref(o);
		return SL_ECORRUPT;
	}
	memcpy(out->hash, hash, 64);
	snprintf(out->tenant, sizeof out->tenant, "%s",
	    json_string_value(json_object_get(o, "tenant")) ?: "");
	snprintf(out->name, sizeof out->name, "%s",
	    json_string_value(json_object_get(o, "name")) ?: "");
	out->created_ms = (uint64_t)json_integer_value(json_object_get(o, "created_ms"));
	out->revoked = json_is_true(json_object_get(o, "revoked"));
	out->rps = (uint32_t)json_integer_value(json_object_get(o, "rps"));
	out->max_queued = (uint64_t)json_integer_value(json_object_get(o, "max_queued"));
	json_decref(o);
	return 0;
}

int
apikey_get(struct store_txn *t, const char *hash, struct apikey *out)
{
	const void *data;
	size_t len;
	int rc;

	if (strlen(hash) != 64)
		return SL_ENOTFOUND;
	rc = store_table_get(t, STORE_T_KEYS, hash, 64, &data, &len);
	return rc ? rc : decode(hash, data, len, out);
}

struct list_ctx {
	int (*cb)(void *arg, const struct apikey *k);
	void *arg;
};

static int
list_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct list_ctx *l = arg;
	char hash[65];
	struct apikey k;

	if (klen != 64 || !data)
		return 0;
	memcpy(hash, key, 64);
	hash[64] = '\0';
	if (decode(hash, data, len, &k) != 0)
		return 0;
	return l->cb(l->arg, &k);
}

int
apikey_list(struct store_txn *t, int (*cb)(void *arg, const struct apikey *k), void *arg)
{
	struct list_ctx l = { cb, arg };

	return store_table_scan(t, STORE_T_KEYS, NULL, 0, list_one, &l);
}

static int
stop_at_first(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	*(bool *)arg = true;
	return 1;
}

bool
apikey_any(struct store_txn *t)
{
	bool any = false;

	/* Fail closed: if the table cannot be read, act as if keys exist. */
	if (store_table_scan(t, STORE_T_KEYS, NULL, 0, stop_at_first, &any) < 0)
		return true;
	return any;
}
