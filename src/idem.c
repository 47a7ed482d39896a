/*
 * idem.c - Idempotency-Key records (see idem.h). Key: tenant (16 bytes,
 * NUL-padded) | the header's value; record: 64 hex chars of the request's
 * SHA-256, a stamp and the be64 wall-clock ms it was stored at, then the
 * answer. STAMP_SCOPED (0x02): the hash covers the endpoint and the body;
 * STAMP (0x01, older builds): the body alone. Records written before any
 * stamp have the answer (a JSON object, so '{') right after the hash.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/idem.h"
#include "slowlane/job.h"
#include "slowlane/util.h"

#define STAMP 0x01        /* hash of the body alone, then the time */
#define STAMP_SCOPED 0x02 /* hash of the endpoint and the body, then the time */
#define HEAD (64 + 1 + 8) /* hash, stamp, ms */

static bool
stamped(const unsigned char *d, size_t len)
{
	return d && len >= HEAD && (d[64] == STAMP || d[64] == STAMP_SCOPED);
}

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
	size_t len, skip;
	int rc = store_table_get(t, STORE_T_IDEMPOTENCY, k, make_key(k, tenant, key), &data,
	    &len);

	if (rc)
		return rc;
	if (len < 64)
		return SL_ECORRUPT;
	/* A record from before the endpoint was hashed holds the body's hash. */
	*same = memcmp(data, len >= HEAD && ((const unsigned char *)data)[64] == STAMP_SCOPED
	    ? hash : hash + 64, 64) == 0;
	skip = stamped(data, len) ? HEAD : 64;
	*answer = malloc(len - skip + 1);
	if (!*answer)
		return -ENOMEM;
	memcpy(*answer, (const char *)data + skip, len - skip);
	(*answer)[len - skip] = '\0';
	return 0;
}

int
idem_store(struct store_txn *t, const char *tenant, const char *key, const char *hash,
    const char *answer)
{
	unsigned char k[JOB_TENANT_LEN + IDEM_KEY_MAX];
	size_t alen = strlen(answer);
	unsigned char *buf = malloc(HEAD + alen);
	int rc;

	if (!buf)
		return -ENOMEM;
	memcpy(buf, hash, 64);
	buf[64] = STAMP_SCOPED;
	sl_put_be64(buf + 65, sl_wall_ms());
	memcpy(buf + HEAD, answer, alen);
	rc = store_table_put(t, STORE_T_IDEMPOTENCY, k, make_key(k, tenant, key), buf,
	    HEAD + alen);
	free(buf);
	return rc;
}

struct sweep_ctx {
	uint64_t before_ms;   /* stored before this: expired */
	size_t budget, seen;
	unsigned char (*doomed)[IDEM_RECORD_KEY_MAX];
	size_t *dlen, n;
	unsigned char *next;
	size_t *nlen;
};

static int
sweep_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct sweep_ctx *c = arg;
	const unsigned char *d = data;

	if (klen >= IDEM_RECORD_KEY_MAX)
		return 0; /* not ours to judge: slowlanectl check */
	if (c->seen++ == c->budget) {
		memcpy(c->next, key, klen); /* the next step starts here */
		*c->nlen = klen;
		return 1;
	}
	if (stamped(d, len) && sl_get_be64(d + 65) < c->before_ms) {
		memcpy(c->doomed[c->n], key, klen);
		c->dlen[c->n++] = klen;
	}
	return 0;
}

int
idem_sweep(struct store_txn *t, uint64_t now_ms, uint64_t keep_ms, const void *from,
    size_t flen, size_t budget, unsigned char next[IDEM_RECORD_KEY_MAX], size_t *nlen,
    size_t *deleted)
{
	struct sweep_ctx c = { .before_ms = now_ms > keep_ms ? now_ms - keep_ms : 0,
		.budget = budget, .next = next, .nlen = nlen };
	int rc;

	*nlen = 0;
	*deleted = 0;
	c.doomed = malloc(budget * sizeof *c.doomed);
	c.dlen = malloc(budget * sizeof *c.dlen);
	rc = c.doomed && c.dlen ? 0 : -ENOMEM;
	if (rc == 0)
		rc = store_table_scan(t, STORE_T_IDEMPOTENCY, from, flen, sweep_one, &c);
	if (rc > 0)
		rc = 0; /* stopped at the budget */
	/* Deleted after the walk: a cursor is not moved under its own feet. */
	for (size_t i = 0; rc == 0 && i < c.n; i++) {
		rc = store_table_del(t, STORE_T_IDEMPOTENCY, c.doomed[i], c.dlen[i]);
		if (rc == SL_ENOTFOUND)
			rc = 0;
	}
	if (rc == 0)
		*deleted = c.n;
	free(c.doomed);
	free(c.dlen);
	return rc;
}
