/*
 * util.c - clocks, random ids, duration parsing, ISO 8601 formatting, CRC-32,
 * SHA-256 and the capped buffer. Pure helpers: no state but the clock hook.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "slowlane/common.h"
#include "slowlane/util.h"

uint64_t (*sl_clock_hook)(void);

uint64_t
sl_wall_ms(void)
{
	struct timespec ts;

	if (sl_clock_hook)
		return sl_clock_hook();
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t
sl_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char id_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

static int
fill_random(unsigned char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* getrandom(2) output, read 256 bytes at a time per thread: one syscall per
 * ~20 ids instead of one each (a submit took one for its id, a dispatch two).
 * Each byte is handed out once and wiped; slowlaned never forks, so no two
 * processes can share a pool. */
#define RANDOM_POOL 256
static _Thread_local unsigned char random_pool[RANDOM_POOL];
static _Thread_local size_t random_left;

int
sl_random_bytes(void *buf, size_t len)
{
	unsigned char *p = buf;

	if (len > RANDOM_POOL / 4)
		return fill_random(p, len);
	if (random_left < len) {
		int rc = fill_random(random_pool, RANDOM_POOL);
		if (rc)
			return rc;
		random_left = RANDOM_POOL;
	}
	random_left -= len;
	memcpy(p, random_pool + random_left, len);
	memset(random_pool + random_left, 0, len);
	return 0;
}

int
sl_random_id(char *out, size_t len)
{
	unsigned char raw[64];
	int rc;

	if (len > sizeof raw)
		return SL_EINVAL;
	rc = sl_random_bytes(raw, len);
	if (rc)
		return rc;
	/* 64 symbols: the low 6 bits of each byte are uniform. */
	for (size_t i = 0; i < len; i++)
		out[i] = id_alphabet[raw[i] & 63];
	out[len] = '\0';
	return 0;
}

/* The id alphabet in ASCII order, so encoded times sort as numbers. */
static const char sorted_alphabet[64] =
    "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/* The last id's millisecond and sequence, (ms << ID_SEQ_BITS) | seq,
 * process-wide. 18 bits: the 3 characters after the 7 of time. */
#define ID_SEQ_BITS 18
#define ID_SEQ_MAX ((1u << ID_SEQ_BITS) - 1)
static _Atomic uint64_t last_id_ms_seq;

int
sl_job_id(uint64_t now_ms, char out[SL_ID_LEN + 1])
{
	uint64_t old = atomic_load(&last_id_ms_seq), v;
	int rc = sl_random_id(out, SL_ID_LEN), digits = 7;

	if (rc)
		return rc;
	/* Within one millisecond, characters 7-9 count up, so the ids of a
	 * busy millisecond are appended in order too (LMDB then packs their
	 * pages full). A clock that went back keeps them random. */
	do {
		uint64_t ms = old >> ID_SEQ_BITS;
		if (ms > now_ms || (ms == now_ms && (old & ID_SEQ_MAX) == ID_SEQ_MAX)) {
			v = 0;
			break;
		}
		v = ms == now_ms ? old + 1 : now_ms << ID_SEQ_BITS;
	} while (!atomic_compare_exchange_weak(&last_id_ms_seq, &old, v));
	if (v) {
		now_ms = v;
		digits = 10;
	}
	for (int i = digits - 1; i >= 0; i--) {
		out[i] = sorted_alphabet[now_ms & 63];
		now_ms >>= 6;
	}
	return 0;
}

bool
sl_id_valid(const char *s, size_t len)
{
	size_t i;

	for (i = 0; s[i] && i < len; i++)
		if (!memchr(id_alphabet, s[i], sizeof id_alphabet))
			return false;
	return i == len && s[i] == '\0';
}

int
sl_parse_duration_ms(const char *s, uint64_t *out_ms)
{
	uint64_t v = 0, mult;
	const char *p = s;

	if (!s || !*s)
		return SL_EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > UINT64_MAX / 10)
			return SL_EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (p == s)
		return SL_EINVAL;
	if (strcmp(p, "ms") == 0)
		mult = 1;
	else if (*p == '\0' || strcmp(p, "s") == 0)
		mult = 1000;
	else if (strcmp(p, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(p, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(p, "d") == 0)
		mult = 24 * 3600 * 1000;
	else
		return SL_EINVAL;
	if (v > UINT64_MAX / mult)
		return SL_EINVAL;
	*out_ms = v * mult;
	return 0;
}

char *
sl_fmt_iso8601(uint64_t ms, char *out, size_t cap)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&secs, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    (unsigned)(ms % 1000));
	return out;
}

size_t
sl_json_escape(char *out, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[7];
		size_t k;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			k = 2;
		} else if (c < 0x20) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			k = 6;
		} else {
			esc[0] = (char)c;
			k = 1;
		}
		if (n + k >= cap)
			break;
		memcpy(out + n, esc, k);
		n += k;
	}
	if (cap)
		out[n < cap ? n : cap - 1] = '\0';
	return n;
}

void
sl_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;

	EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	out[64] = '\0';
}

struct sl_sha256 *
sl_sha256_new(void)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(c);
		c = NULL;
	}
	return (struct sl_sha256 *)c;
}

void
sl_sha256_update(struct sl_sha256 *h, const void *data, size_t len)
{
	EVP_DigestUpdate((EVP_MD_CTX *)h, data, len);
}

void
sl_sha256_final(struct sl_sha256 *h, char out[65])
{
	unsigned char md[32];
	unsigned int n = 0;

	EVP_DigestFinal_ex((EVP_MD_CTX *)h, md, &n);
	EVP_MD_CTX_free((EVP_MD_CTX *)h);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	out[64] = '\0';
}

bool
sl_ct_equal(const void *a, const void *b, size_t len)
{
	const volatile unsigned char *x = a, *y = b;
	unsigned char d = 0;

	for (size_t i = 0; i < len; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

void
sl_buf_init(struct sl_buf *b, size_t limit)
{
	b->data = NULL;
	b->len = b->cap = 0;
	b->limit = limit;
}

int
sl_buf_append(struct sl_buf *b, const void *data, size_t len)
{
	if (len > b->limit - b->len)
		return SL_ETOOBIG;
	if (b->len + len + 1 > b->cap) {
		size_t ncap = b->cap ? b->cap : 256;
		char *p;
		while (ncap < b->len + len + 1)
			ncap *= 2;
		p = realloc(b->data, ncap);
		if (!p)
			return -ENOMEM;
		b->data = p;
		b->cap = ncap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int
sl_buf_printf(struct sl_buf *b, const char *fmt, ...)
{
	char small[256];
	va_list ap;
	int n, rc;
	char *big;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof small, fmt, ap);
	va_end(ap);
	if (n < 0)
		return SL_EINVAL;
	if ((size_t)n < sizeof small)
		return sl_buf_append(b, small, (size_t)n);
	big = malloc((size_t)n + 1);
	if (!big)
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	rc = sl_buf_append(b, big, (size_t)n);
	free(big);
	return rc;
}

char *
sl_buf_detach(struct sl_buf *b, size_t *len)
{
	char *p = b->data;

	if (len)
		*len = b->len;
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

void
sl_buf_release(struct sl_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

const char *
sl_strerror(int rc)
{
	switch (rc) {
	case SL_OK: return "success";
	case SL_ENOTFOUND: return "not found";
	case SL_EINVAL: return "invalid input";
	case SL_EFULL: return "store is full";
	case SL_ECORRUPT: return "corrupt data (a checksum or structure check failed)";
	case SL_ESTALE: return "stale attempt (fenced)";
	case SL_EVERSION: return "store format is newer than this program";
	case SL_ESTORE: return "store error";
	case SL_ETOOBIG: return "too large";
	case SL_EBUSY: return "busy or shutting down";
	default:
		if (rc < 0 && rc > -1000)
			return strerror(-rc);
		return "unknown error";
	}
}

int
sl_try_lock(const char *path, int oflags)
{
	int fd = open(path, oflags | O_CLOEXEC, 0600);

	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return rc;
	}
	return fd;
}
