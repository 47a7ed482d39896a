/*
 * job.c - job states, transitions and the record encoding.
 *
 * Record layout (all integers big-endian):
 *   u8 format(=2) u8 state u8 kind u8 flags u16 http_status u32 attempts
 *   u64 attempt_id created dispatched finished expires not_before lease
 *   u8 len + tenant, u8 len + model, u16 len + message, u8 len + group,
 *   u8 len + webhook, u8 len + batch, u32 line, u8 end, u32 crc32(all before)
 *
 * Format 2 (format 1 is still read): a message that is one of the stock
 * messages below is stored as its code, 0x8000 | index, in place of its
 * length, with no text. "Queued" and "Generation successful" are what
 * nearly every record says, and with their texts a finish made the record
 * 15 bytes longer: rewritten in a full leaf, it split the leaf in half, so
 * finished jobs' records took twice the pages of queued ones.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/job.h"

static const char *const state_names[JOB_STATE_COUNT] = {
	[JOB_QUEUED] = "Queued",
	[JOB_IN_PROGRESS] = "In Progress",
	[JOB_SUCCESS] = "Success",
	[JOB_FAILED] = "Failed",
};

/* Index 0 is no code. Append only: the index is on disk. */
static const char *const stock_messages[] = { NULL, "Queued", "Generation successful" };
#define STOCK_CODE 0x8000u

static unsigned
stock_index(const char *msg)
{
	for (unsigned i = 1; i < SL_ARRAY_LEN(stock_messages); i++)
		if (strcmp(msg, stock_messages[i]) == 0)
			return i;
	return 0;
}

const char *
job_state_name(int state)
{
	if (state < 0 || state >= JOB_STATE_COUNT)
		return "?";
	return state_names[state];
}

bool
job_is_final(int state)
{
	return state == JOB_SUCCESS || state == JOB_FAILED;
}

void
job_set_message(struct job *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->message, sizeof j->message, fmt, ap);
	va_end(ap);
}

int
job_claim(struct job *j, uint64_t now_ms, uint64_t attempt_id, uint64_t lease_ms)
{
	if (j->state != JOB_QUEUED)
		return SL_ESTALE;
	j->state = JOB_IN_PROGRESS;
	j->attempts++;
	j->attempt_id = attempt_id;
	j->dispatched_ms = now_ms;
	j->lease_ms = lease_ms;
	return 0;
}

int
job_retry(struct job *j, uint64_t attempt_id, uint64_t not_before_ms)
{
	if (j->state != JOB_IN_PROGRESS || j->attempt_id != attempt_id)
		return SL_ESTALE;
	j->state = JOB_QUEUED;
	j->not_before_ms = not_before_ms;
	j->lease_ms = 0;
	return 0;
}

int
job_release(struct job *j, uint64_t not_before_ms)
{
	if (j->state != JOB_IN_PROGRESS)
		return SL_ESTALE;
	j->state = JOB_QUEUED;
	j->not_before_ms = not_before_ms;
	j->lease_ms = 0;
	j->attempt_id = 0;
	return 0;
}

int
job_requeue(struct job *j, uint64_t now_ms, uint64_t expires_ms)
{
	if (!job_is_final(j->state))
		return SL_ESTALE;
	j->state = JOB_QUEUED;
	j->attempts = 0;
	j->attempt_id = 0;
	j->http_status = 0;
	j->end = JOB_END_NONE;
	j->dispatched_ms = j->finished_ms = j->lease_ms = 0;
	j->not_before_ms = now_ms;
	j->expires_ms = expires_ms;
	return 0;
}

int
job_finish(struct job *j, uint64_t attempt_id, bool success, uint64_t now_ms)
{
	if (j->state != JOB_IN_PROGRESS || j->attempt_id != attempt_id)
		return SL_ESTALE;
	j->state = success ? JOB_SUCCESS : JOB_FAILED;
	j->finished_ms = now_ms;
	j->lease_ms = 0;
	return 0;
}

int
job_end(struct job *j, uint64_t now_ms)
{
	if (job_is_final(j->state))
		return SL_ESTALE;
	j->state = JOB_FAILED;
	j->finished_ms = now_ms;
	j->lease_ms = 0;
	/* A late answer from the abandoned attempt must not match. */
	j->attempt_id = 0;
	return 0;
}

static unsigned char *
put_str(unsigned char *p, const char *s, size_t max, int lenbytes)
{
	size_t n = strnlen(s, max);

	if (lenbytes == 1) {
		*p++ = (unsigned char)n;
	} else {
		*p++ = (unsigned char)(n >> 8);
		*p++ = (unsigned char)n;
	}
	memcpy(p, s, n);
	return p + n;
}

size_t
job_encode(const struct job *j, unsigned char *out)
{
	unsigned char *p = out;
	const uint64_t times[] = { j->attempt_id, j->created_ms,
		j->dispatched_ms, j->finished_ms, j->expires_ms, j->not_before_ms,
		j->lease_ms };
	unsigned stock;

	*p++ = JOB_FORMAT;
	*p++ = j->state;
	*p++ = j->kind;
	*p++ = j->flags;
	*p++ = (unsigned char)(j->http_status >> 8);
	*p++ = (unsigned char)j->http_status;
	sl_put_be32(p, j->attempts);
	p += 4;
	for (size_t i = 0; i < SL_ARRAY_LEN(times); i++, p += 8)
		sl_put_be64(p, times[i]);
	p = put_str(p, j->tenant, JOB_TENANT_LEN, 1);
	p = put_str(p, j->model, JOB_MODEL_MAX, 1);
	stock = stock_index(j->message);
	if (stock) {
		*p++ = (unsigned char)((STOCK_CODE | stock) >> 8);
		*p++ = (unsigned char)stock;
	} else {
		p = put_str(p, j->message, JOB_MESSAGE_MAX, 2);
	}
	p = put_str(p, j->group, SL_ID_LEN, 1);
	p = put_str(p, j->webhook, JOB_WEBHOOK_MAX, 1);
	p = put_str(p, j->batch, JOB_BATCH_MAX, 1);
	sl_put_be32(p, j->line);
	p += 4;
	*p++ = j->end;
	sl_put_be32(p, sl_crc32(0, out, (size_t)(p - out)));
	p += 4;
	return (size_t)(p - out);
}

/* Copies a length-prefixed string; returns the new cursor or NULL. */
static const unsigned char *
get_str(const unsigned char *p, const unsigned char *end, char *dst, size_t max,
    int lenbytes)
{
	size_t n;

	if (end - p < lenbytes)
		return NULL;
	n = lenbytes == 1 ? p[0] : ((size_t)p[0] << 8 | p[1]);
	p += lenbytes;
	/* A NUL inside would make a record we never write (put_str stops at
	 * the first): corrupt (found by tests/fuzz/fuzz_job_decode). */
	if (n > max || (size_t)(end - p) < n || memchr(p, '\0', n))
		return NULL;
	memcpy(dst, p, n);
	dst[n] = '\0';
	return p + n;
}

/* The message: a stock code (format 2) or a u16 length and its text. */
static const unsigned char *
get_message(const unsigned char *p, const unsigned char *end, int format, char *dst)
{
	unsigned code;

	if (end - p < 2)
		return NULL;
	code = (unsigned)p[0] << 8 | p[1];
	if (!(code & STOCK_CODE)) {
		p = get_str(p, end, dst, JOB_MESSAGE_MAX, 2);
		/* Format 2 writes stock messages as codes only: one form each. */
		return p && format >= 2 && stock_index(dst) ? NULL : p;
	}
	code &= ~STOCK_CODE;
	if (format < 2 || code == 0 || code >= SL_ARRAY_LEN(stock_messages))
		return NULL;
	strcpy(dst, stock_messages[code]);
	return p + 2;
}

int
job_decode(const char *id, const void *data, size_t len, struct job *out)
{
	const unsigned char *p = data, *end;
	int format;
	uint64_t *times[] = { &out->attempt_id, &out->created_ms,
		&out->dispatched_ms, &out->finished_ms, &out->expires_ms,
		&out->not_before_ms, &out->lease_ms };

	if (len < 4 + 10 + 8 * SL_ARRAY_LEN(times) + 4)
		return SL_ECORRUPT;
	end = p + len - 4;
	if (sl_get_be32(end) != sl_crc32(0, p, len - 4) || p[0] < 1 || p[0] > JOB_FORMAT)
		return SL_ECORRUPT;
	format = p[0];
	memset(out, 0, sizeof *out);
	snprintf(out->id, sizeof out->id, "%s", id);
	out->state = p[1];
	out->kind = p[2];
	out->flags = p[3];
	out->http_status = (uint16_t)(p[4] << 8 | p[5]);
	out->attempts = sl_get_be32(p + 6);
	p += 10;
	for (size_t i = 0; i < SL_ARRAY_LEN(times); i++, p += 8)
		*times[i] = sl_get_be64(p);
	p = get_str(p, end, out->tenant, JOB_TENANT_LEN, 1);
	if (p)
		p = get_str(p, end, out->model, JOB_MODEL_MAX, 1);
	if (p)
		p = get_message(p, end, format, out->message);
	if (p)
		p = get_str(p, end, out->group, SL_ID_LEN, 1);
	if (p)
		p = get_str(p, end, out->webhook, JOB_WEBHOOK_MAX, 1);
	if (p)
		p = get_str(p, end, out->batch, JOB_BATCH_MAX, 1);
	if (p && end - p >= 5) {
		out->line = sl_get_be32(p);
		out->end = p[4];
		p += 5;
	} else {
		p = NULL;
	}
	if (!p || p != end || out->state >= JOB_STATE_COUNT)
		return SL_ECORRUPT;
	return 0;
}
