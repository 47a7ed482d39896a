/*
 * group.c - group records in the store's `groups` table.
 *
 * Layout (big-endian): u8 format(=1) u8 kind u64 created u16 size
 * u16 remaining, u8 len + tenant, u8 len + webhook, size x 21-byte ids.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/group.h"

#define GROUP_FORMAT 1

size_t
group_encode(const struct group *g, unsigned char *buf)
{
	unsigned char *p = buf;
	size_t n;

	*p++ = GROUP_FORMAT;
	*p++ = g->kind;
	sl_put_be64(p, g->created_ms);
	p += 8;
	*p++ = (unsigned char)(g->size >> 8);
	*p++ = (unsigned char)g->size;
	*p++ = (unsigned char)(g->remaining >> 8);
	*p++ = (unsigned char)g->remaining;
	n = strnlen(g->tenant, JOB_TENANT_LEN);
	*p++ = (unsigned char)n;
	memcpy(p, g->tenant, n);
	p += n;
	n = strnlen(g->webhook, JOB_WEBHOOK_MAX);
	*p++ = (unsigned char)n;
	memcpy(p, g->webhook, n);
	p += n;
	for (unsigned i = 0; i < g->size; i++, p += SL_ID_LEN)
		memcpy(p, g->members[i], SL_ID_LEN);
	return (size_t)(p - buf);
}

int
group_put(struct store_txn *t, const struct group *g)
{
	unsigned char buf[GROUP_ENCODED_MAX];

	if (g->size > GROUP_MAX)
		return SL_EINVAL;
	return store_table_put(t, STORE_T_GROUPS, g->id, SL_ID_LEN, buf, group_encode(g, buf));
}

int
group_get(struct store_txn *t, const char *id, struct group *out)
{
	const void *data;
	size_t len;
	int rc;

	if (strlen(id) != SL_ID_LEN)
		return SL_ENOTFOUND;
	rc = store_table_get(t, STORE_T_GROUPS, id, SL_ID_LEN, &data, &len);
	return rc ? rc : group_decode(id, data, len, out);
}

int
group_decode(const char *id, const void *data, size_t len, struct group *out)
{
	const unsigned char *p, *end;
	size_t n;

	p = data;
	end = p + len;
	memset(out, 0, sizeof *out);
	if (len < 15 || p[0] != GROUP_FORMAT)
		return SL_ECORRUPT;
	snprintf(out->id, sizeof out->id, "%s", id);
	out->kind = p[1];
	out->created_ms = sl_get_be64(p + 2);
	out->size = (uint16_t)(p[10] << 8 | p[11]);
	out->remaining = (uint16_t)(p[12] << 8 | p[13]);
	p += 14;
	n = *p++;
	if (n > JOB_TENANT_LEN || (size_t)(end - p) < n + 1)
		return SL_ECORRUPT;
	memcpy(out->tenant, p, n);
	p += n;
	n = *p++;
	if (n > JOB_WEBHOOK_MAX || (size_t)(end - p) < n)
		return SL_ECORRUPT;
	memcpy(out->webhook, p, n);
	p += n;
	if (out->size > GROUP_MAX || (size_t)(end - p) != (size_t)out->size * SL_ID_LEN)
		return SL_ECORRUPT;
	for (unsigned i = 0; i < out->size; i++, p += SL_ID_LEN)
		memcpy(out->members[i], p, SL_ID_LEN);
	return 0;
}
