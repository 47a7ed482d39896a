/*
 * benchutil.h - what the small benchmark clients share: a monotonic clock,
 * a latency log with percentiles, and the 1 KiB chat request body every
 * benchmark sends. Header-only (static functions) so each client stays one
 * file plus this.
 */
#ifndef SLOWLANE_BENCHUTIL_H
#define SLOWLANE_BENCHUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t
bu_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Every latency of a run, in microseconds (10 s at 200k/s is 8 MB). */
struct bu_lat {
	uint32_t *v;
	size_t n, cap;
};

static inline void
bu_lat_add(struct bu_lat *l, uint64_t us)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 65536;
		uint32_t *v = realloc(l->v, cap * sizeof *v);

		if (!v)
			return; /* percentiles from what we have */
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static inline int
bu_cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts the log; then bu_lat_pct() answers in milliseconds. */
static inline void
bu_lat_sort(struct bu_lat *l)
{
	if (l->n)
		qsort(l->v, l->n, sizeof *l->v, bu_cmp_u32);
}

static inline double
bu_lat_pct(const struct bu_lat *l, double pct)
{
	size_t i;

	if (l->n == 0)
		return 0;
	i = (size_t)(pct / 100.0 * (double)(l->n - 1) + 0.5);
	return l->v[i < l->n ? i : l->n - 1] / 1000.0;
}

/* A chat completion request of exactly `bytes` bytes (the padding is the
 * user message), as bench/lua/submit.lua and bench/bulkload send. */
static inline char *
bu_chat_body(size_t bytes)
{
	static const char head[] = "{\"model\":\"load-test\",\"messages\":[{\"role\":\"user\","
	    "\"content\":\"";
	static const char tail[] = "\"}]}";
	size_t fixed = sizeof head - 1 + sizeof tail - 1;
	char *b;

	if (bytes < fixed + 1)
		bytes = fixed + 1;
	b = malloc(bytes + 1);
	if (!b)
		return NULL;
	memcpy(b, head, sizeof head - 1);
	for (size_t i = sizeof head - 1; i < bytes - (sizeof tail - 1); i++)
		b[i] = "abcdefgh "[i % 9];
	memcpy(b + bytes - (sizeof tail - 1), tail, sizeof tail - 1);
	b[bytes] = '\0';
	return b;
}

#endif
