/*
 * idem.c - Idempotency-Key records (see idem.h). Key: tenant (16 bytes,
 * NUL-padded) | the header's value; record: 64 hex chars of the request's
 * SHA-256, then the answer.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/idem.h"
#include "slowlane/job.h"

static size_t
make_key(unsigned char *k, const char *tenant, const char *key)
{
	size_t n = strnlen(key, IDEM_KEY_MAX);

	memset(k, 0, JOB_TENANT_LEN);
	memcpy(k, tenant, strnlen(tenant, JOB_TENANT_LEN));
	memcpy(k + JOB_TENANT_LEN, key, n);
	return JOB_TENANT_LEN + n;
}

int
idem_lookup(struct store_txn *t, const char *tenant, const char *key, const char *hash,
    char **answer, bool *same)
{
	unsigned char k[JOB_TENANT_LEN + IDEM_KEY_MAX];
	const void *data;
	size_t len;
	int rc = store_table_get(t, STORE_T_IDEMPOTENCY, k, make_key(k, tenant, key), &data,
	    &len);

	if (rc)
		return rc;
	if (len < 64)
		return SL_ECORRUPT;
	*same = memcmp(data, hash, 64) == 0;
	*answer = malloc(len - 64 + 1);
	if (!*answer)
		return -ENOMEM;
	memcpy(*answer, (const char *)data + 64, len - 64);
	(*answer)[len - 64] = '\0';
	return 0;
}

int
idem_store(struct store_txn *t, const char *tenant, const char *key, const char *hash,
    const char *answer)
{
	unsigned char k[JOB_TENANT_LEN + IDEM_KEY_MAX];
	size_t alen = strlen(answer);
	char *buf = malloc(64 + alen);
	int rc;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, hash, 64);
	memcpy(buf + 64, answer, alen);
	rc = store_table_put(t, STORE_T_IDEMPOTENCY, k, make_key(k, tenant, key), buf, 64 + alen);
	free(buf);
	return rc;
}
