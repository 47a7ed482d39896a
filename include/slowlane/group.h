/*
 * group.h - a group of up to 50 requests submitted in one call (the Group
 * API of API.md section 2): one id, its members in submission order, and a
 * countdown of members still unfinished, kept in the same transactions as
 * the members' state changes so "the group completed" happens exactly once.
 */
#ifndef SLOWLANE_GROUP_H
#define SLOWLANE_GROUP_H

#include <stddef.h>
#include <stdint.h>

#include "slowlane/job.h"
#include "slowlane/store.h"

#define GROUP_MAX 50

struct group {
	char id[SL_ID_LEN + 1];
	uint8_t kind;                      /* enum job_kind of its members */
	uint64_t created_ms;
	uint16_t size;                     /* members */
	uint16_t remaining;                /* members not yet Success/Failed */
	char tenant[JOB_TENANT_LEN + 1];
	char webhook[JOB_WEBHOOK_MAX + 1]; /* slow-group.completed target, or "" */
	char members[GROUP_MAX][SL_ID_LEN + 1];
};

#define GROUP_ENCODED_MAX (16 + 2 + JOB_TENANT_LEN + JOB_WEBHOOK_MAX + GROUP_MAX * SL_ID_LEN)

/* The record's encoding (the id is the key, not in the record): encode
 * writes at most GROUP_ENCODED_MAX bytes (size <= GROUP_MAX) and returns the
 * length; decode returns 0 or SL_ECORRUPT. */
size_t group_encode(const struct group *g, unsigned char *buf);
int group_decode(const char *id, const void *data, size_t len, struct group *out);

/* Stores / reads a group record. get: 0, SL_ENOTFOUND, SL_ECORRUPT. */
int group_put(struct store_txn *t, const struct group *g);
int group_get(struct store_txn *t, const char *id, struct group *out);

#endif
