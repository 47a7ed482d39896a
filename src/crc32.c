/*
 * crc32.c - sl_crc32: CRC-32 (IEEE 802.3, reflected, as zlib's crc32).
 *
 * Every record the store or the journal writes carries one, so a submit
 * computes it over its body two or three times: with zlib's crc32 (about
 * 0.35 us per KiB here) that was 5 % of the daemon's CPU under load
 * (bench/profile.md). On x86-64 with PCLMULQDQ the bulk is folded with
 * carry-less multiplies instead (Gopal et al., "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ Instruction", Intel, 2009): four
 * 128-bit lanes folded 64 bytes at a time, folded into one, reduced to 64
 * bits, then to 32 by Barrett reduction; about 0.1 us per KiB. The tail
 * under 16 bytes, short inputs and other CPUs use zlib. Both give the same
 * value (tests/unit/test_util.c checks every length up to 2 KiB at every
 * alignment against zlib), so nothing stored changes.
 */
#include "config.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "slowlane/util.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_FOLD 1

/*
 * The constants, for P = 0x104C11DB7 in the bit-reflected domain: each is
 * x^n mod P, bit-reflected and shifted left by one, for the distances the
 * folds span (n = 4*128+32 and 4*128-32 for the 64-byte stride, 128+32 and
 * 128-32 for one lane, 64 for the last fold), then P' and mu = x^64 / P
 * for the Barrett reduction.
 */
#define K1 0x154442bd4ull
#define K2 0x1c6e41596ull
#define K3 0x1751997d0ull
#define K4 0x0ccaa009eull
#define K5 0x163cd6124ull
#define POLY 0x1db710641ull
#define MU 0x1f7011641ull

/* x * x^n folded onto d: the low half times k.lo, the high times k.hi. */
__attribute__((target("pclmul,sse4.1"))) static inline __m128i
fold16(__m128i x, __m128i d, __m128i k)
{
	return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00),
	    _mm_clmulepi64_si128(x, k, 0x11)), d);
}

/* The CRC register `s` (not inverted) after `len` bytes at p; len >= 64,
 * a multiple of 16. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
fold(uint32_t s, const unsigned char *p, size_t len)
{
	const __m128i k12 = _mm_set_epi64x((long long)K2, (long long)K1);
	const __m128i k34 = _mm_set_epi64x((long long)K4, (long long)K3);
	const __m128i k5 = _mm_set_epi64x(0, (long long)K5);
	const __m128i pmu = _mm_set_epi64x((long long)MU, (long long)POLY);
	const __m128i low32 = _mm_set_epi32(0, 0, 0, -1);
	__m128i x0 = _mm_loadu_si128((const void *)p);
	__m128i x1 = _mm_loadu_si128((const void *)(p + 16));
	__m128i x2 = _mm_loadu_si128((const void *)(p + 32));
	__m128i x3 = _mm_loadu_si128((const void *)(p + 48));
	__m128i t;

	x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)s));
	for (p += 64, len -= 64; len >= 64; p += 64, len -= 64) {
		x0 = fold16(x0, _mm_loadu_si128((const void *)p), k12);
		x1 = fold16(x1, _mm_loadu_si128((const void *)(p + 16)), k12);
		x2 = fold16(x2, _mm_loadu_si128((const void *)(p + 32)), k12);
		x3 = fold16(x3, _mm_loadu_si128((const void *)(p + 48)), k12);
	}
	x0 = fold16(x0, x1, k34);
	x0 = fold16(x0, x2, k34);
	x0 = fold16(x0, x3, k34);
	for (; len >= 16; p += 16, len -= 16)
		x0 = fold16(x0, _mm_loadu_si128((const void *)p), k34);
	/* 128 bits to 64: the low half times K4 onto the high half */
	t = _mm_clmulepi64_si128(k34, x0, 0x01);
	x0 = _mm_xor_si128(_mm_srli_si128(x0, 8), t);
	/* 64 to 32 (with 32 zero bits appended, as the CRC's definition has) */
	t = _mm_srli_si128(x0, 4);
	x0 = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x0, low32), k5, 0x00), t);
	/* Barrett: q = low32(x) * mu, then x + low32(q) * P; the CRC is the
	 * second 32-bit word */
	t = x0;
	x0 = _mm_clmulepi64_si128(_mm_and_si128(x0, low32), pmu, 0x10);
	x0 = _mm_clmulepi64_si128(_mm_and_si128(x0, low32), pmu, 0x00);
	x0 = _mm_xor_si128(x0, t);
	return (uint32_t)_mm_extract_epi32(x0, 1);
}

/* 1 if the CPU folds, 0 if not, -1 not yet asked. */
static atomic_int can_fold = -1;

static int
folds(void)
{
	int v = atomic_load_explicit(&can_fold, memory_order_relaxed);

	if (v < 0) {
		__builtin_cpu_init();
		v = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
		atomic_store_explicit(&can_fold, v, memory_order_relaxed);
	}
	return v;
}
#endif

uint32_t
sl_crc32(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

#ifdef HAVE_FOLD
	if (len >= 64 && folds()) {
		size_t n = len & ~(size_t)15;
		/* zlib's value is the register inverted before and after */
		crc = ~fold(~crc, p, n);
		p += n;
		len -= n;
	}
#endif
	/* zlib takes uInt lengths */
	while (len > 0) {
		uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
		crc = (uint32_t)crc32(crc, p, n);
		p += n;
		len -= n;
	}
	return crc;
}
