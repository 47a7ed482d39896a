/*
 * util.h - small pure helpers: clocks, ids, durations, timestamps, checksums,
 * big-endian keys, and a capped growable buffer.
 *
 * All functions are thread-safe unless noted.
 */
#ifndef SLOWLANE_UTIL_H
#define SLOWLANE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- clocks ---- */

/* Wall-clock milliseconds since the Unix epoch. Goes through sl_clock_hook
 * when set, so tests can move time. */
uint64_t sl_wall_ms(void);
/* Replaced by tests to simulate the passage of time; NULL = real clock. */
extern uint64_t (*sl_clock_hook)(void);
/* Milliseconds of CLOCK_MONOTONIC: for intervals; never moved by tests. */
uint64_t sl_mono_ms(void);

/* ---- ids ---- */

#define SL_ID_LEN 21 /* like the seed's "N2mZQjrvh-k_m8nMMN7Jn" */

/* Writes `len` random URL-safe characters ([A-Za-z0-9_-], 6 bits each, from
 * getrandom(2)) and a NUL to `out` (which holds len + 1 bytes).
 * Returns 0, or -errno if the kernel's generator failed. */
int sl_random_id(char *out, size_t len);
/* A job id: 7 characters encoding `now_ms` (42 bits, in an alphabet that
 * sorts like the numbers), 3 counting the ids this process made in that
 * millisecond, then 11 random characters (66 bits), all URL-safe, into
 * out[SL_ID_LEN + 1]. Time-ordered like ULID/UUIDv7, and strictly
 * increasing within a process while its clock goes forward, so new jobs
 * append to the end of the store's B-trees instead of dirtying a random
 * page each (see docs/ARCHITECTURE.md); if `now_ms` is behind the last id's
 * (a clock set back), the 3 are random too. 66 random bits keep ids
 * unguessable. Thread-safe. Returns 0 or -errno. */
int sl_job_id(uint64_t now_ms, char out[SL_ID_LEN + 1]);
/* Fills `buf` with `len` random bytes from getrandom(2), read in bulk per
 * thread (each byte used once). Thread-safe. Returns 0 or -errno. */
int sl_random_bytes(void *buf, size_t len);
/* True if `s` has exactly `len` characters, all URL-safe id characters. */
bool sl_id_valid(const char *s, size_t len);

/* ---- durations and timestamps ---- */

/* Parses "250ms", "30s", "15m", "72h", "7d", or a bare number of seconds,
 * into milliseconds. Returns 0, or SL_EINVAL (nothing written) on a
 * malformed, negative or overflowing value. */
int sl_parse_duration_ms(const char *s, uint64_t *out_ms);

/* Formats `ms` (Unix ms) as "2025-06-04T18:22:40.101Z" into `out` (at least
 * 25 bytes). Returns `out`. */
char *sl_fmt_iso8601(uint64_t ms, char *out, size_t cap);

/* ---- checksums and hashes ---- */

/* CRC-32 (IEEE, as zlib's crc32) of `len` bytes, continuing from `crc`
 * (start with 0). In crc32.c: carry-less multiplies where the CPU has
 * them, zlib otherwise; the same value either way. */
uint32_t sl_crc32(uint32_t crc, const void *data, size_t len);
/* Writes `s` (a NUL-terminated UTF-8 string) JSON-escaped, without the
 * quotes, into out[cap] (always terminated; truncated if too long, never
 * inside an escape). Returns the length written. */
size_t sl_json_escape(char *out, size_t cap, const char *s);
/* Writes the lowercase hex SHA-256 of data (64 chars + NUL) into out[65]. */
void sl_sha256_hex(const void *data, size_t len, char out[65]);
/* Incremental SHA-256 (for streamed uploads). new: NULL on failure. */
struct sl_sha256;
struct sl_sha256 *sl_sha256_new(void);
void sl_sha256_update(struct sl_sha256 *h, const void *data, size_t len);
/* Writes the hex digest into out[65] and frees `h`. */
void sl_sha256_final(struct sl_sha256 *h, char out[65]);
/* Constant-time comparison of two equal-length byte strings. */
bool sl_ct_equal(const void *a, const void *b, size_t len);

/* Opens `path` with open(2) flags `oflags` (O_CLOEXEC added; mode 0600 if
 * it creates it) and takes an exclusive flock on it without waiting. Returns the descriptor, which holds
 * the lock until closed; -EBUSY if another descriptor holds it; or -errno. */
int sl_try_lock(const char *path, int oflags);

/* ---- big-endian integers, for LMDB keys that sort numerically ---- */

static inline void
sl_put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static inline uint64_t
sl_get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static inline void
sl_put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static inline uint32_t
sl_get_be32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	    ((uint32_t)p[2] << 8) | p[3];
}

/* ---- a growable byte buffer with a hard cap ---- */

struct sl_buf {
	char *data;   /* NUL-terminated when len > 0; owned */
	size_t len;   /* bytes used, excluding the NUL */
	size_t cap;   /* bytes allocated */
	size_t limit; /* hard cap on len; appends past it fail */
};

/* Initialises an empty buffer that may grow to `limit` bytes. */
void sl_buf_init(struct sl_buf *b, size_t limit);
/* Appends; returns 0, SL_ETOOBIG past the limit (buffer unchanged), or
 * -ENOMEM. */
int sl_buf_append(struct sl_buf *b, const void *data, size_t len);
/* Appends a formatted string; same returns as sl_buf_append. */
int sl_buf_printf(struct sl_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Hands the data to the caller (free() it) and empties the buffer. May return
 * NULL for an empty buffer. */
char *sl_buf_detach(struct sl_buf *b, size_t *len);
/* Frees the data; the buffer is empty and reusable afterwards. */
void sl_buf_release(struct sl_buf *b);

#endif
