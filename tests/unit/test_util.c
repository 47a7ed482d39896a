/* test_util.c - ids, durations, timestamps, CRC, the capped buffer. */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "../tap.h"
#include "slowlane/common.h"
#include "slowlane/util.h"

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int
main(void)
{
	char id[SL_ID_LEN + 1], id2[SL_ID_LEN + 1], ts[32];
	uint64_t ms = 0;
	struct sl_buf b;

	ok(sl_random_id(id, SL_ID_LEN) == 0, "random id generated");
	is_int(strlen(id), SL_ID_LEN, "id has 21 characters");
	ok(sl_id_valid(id, SL_ID_LEN), "id is URL-safe");
	sl_random_id(id2, SL_ID_LEN);
	ok(strcmp(id, id2) != 0, "two ids differ");
	ok(!sl_id_valid("abc", SL_ID_LEN), "short id rejected");
	{
		char a[SL_ID_LEN + 1], b2[SL_ID_LEN + 1], c[SL_ID_LEN + 1];
		sl_job_id(1749061362809ull, a);
		sl_job_id(1749061362810ull, b2);
		sl_job_id(1749061362809ull, c);
		ok(sl_id_valid(a, SL_ID_LEN) && strlen(a) == SL_ID_LEN, "job id is URL-safe");
		ok(strcmp(a, b2) < 0, "job ids sort by time: %s < %s", a, b2);
		ok(memcmp(a, c, 7) == 0 && strcmp(a + 7, c + 7) != 0,
		    "same ms: same prefix, random rest");
		sl_job_id(1ull << 41, a);
		sl_job_id((1ull << 41) - 1, b2);
		ok(strcmp(b2, a) < 0, "ordering holds across digit boundaries");
		{
			char prev[SL_ID_LEN + 1];
			int up = 1;
			sl_job_id((1ull << 41) + 5, prev);
			for (int i = 0; i < 1000; i++) {
				sl_job_id((1ull << 41) + 5, a);
				up &= strcmp(prev, a) < 0 && memcmp(prev, a, 7) == 0;
				memcpy(prev, a, sizeof prev);
			}
			ok(up, "within one millisecond, ids strictly increase (same prefix)");
		}
	}
	{
		/* The per-thread pool hands each byte out once: 4,096 draws of 8
		 * bytes cross 128 refills and must all differ; a request larger
		 * than the pool's share bypasses it and is filled all the same. */
		enum { DRAWS = 4096 };
		uint64_t *v = calloc(DRAWS, sizeof *v);
		unsigned char big[200] = { 0 };
		bool distinct = v != NULL, filled = false;

		for (size_t i = 0; v && i < DRAWS; i++)
			distinct &= sl_random_bytes(&v[i], sizeof v[i]) == 0;
		if (v)
			qsort(v, DRAWS, sizeof *v, cmp_u64);
		for (size_t i = 1; v && i < DRAWS; i++)
			distinct &= v[i] != v[i - 1];
		ok(distinct, "random draws through the pool never repeat");
		ok(sl_random_bytes(big, sizeof big) == 0, "a large draw bypasses the pool");
		for (size_t i = 0; i < sizeof big; i++)
			filled |= big[i] != 0;
		ok(filled, "a large draw is filled");
		free(v);
	}
	ok(!sl_id_valid("N2mZQjrvh-k_m8nMMN7J/", SL_ID_LEN), "'/' rejected");
	ok(sl_id_valid("N2mZQjrvh-k_m8nMMN7Jn", SL_ID_LEN), "seed's id accepted");
	ok(!sl_id_valid("N2mZQjrvh-k_m8nMMN7Jnx", SL_ID_LEN), "long id rejected");

	ok(sl_parse_duration_ms("72h", &ms) == 0 && ms == 72ull * 3600 * 1000, "72h");
	ok(sl_parse_duration_ms("2s", &ms) == 0 && ms == 2000, "2s");
	ok(sl_parse_duration_ms("15m", &ms) == 0 && ms == 900000, "15m");
	ok(sl_parse_duration_ms("250ms", &ms) == 0 && ms == 250, "250ms");
	ok(sl_parse_duration_ms("30", &ms) == 0 && ms == 30000, "bare number is seconds");
	ok(sl_parse_duration_ms("1d", &ms) == 0 && ms == 86400000, "1d");
	ok(sl_parse_duration_ms("", &ms) == SL_EINVAL, "empty rejected");
	ok(sl_parse_duration_ms("-1s", &ms) == SL_EINVAL, "negative rejected");
	ok(sl_parse_duration_ms("5x", &ms) == SL_EINVAL, "unknown unit rejected");
	ok(sl_parse_duration_ms("h", &ms) == SL_EINVAL, "unit without number rejected");
	ok(sl_parse_duration_ms("99999999999999999999s", &ms) == SL_EINVAL, "overflow rejected");

	is_str(sl_fmt_iso8601(1749061362809ull, ts, sizeof ts), "2025-06-04T18:22:42.809Z",
	    "ISO 8601 with milliseconds");
	is_str(sl_fmt_iso8601(0, ts, sizeof ts), "1970-01-01T00:00:00.000Z", "epoch");

	is_int(sl_crc32(0, "123456789", 9), 0xCBF43926u, "CRC-32 check value");
	is_int(sl_crc32(sl_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u, "CRC-32 continues");
	{
		/* The folded CRC (crc32.c) against zlib's: every length to 2 KiB at
		 * every alignment, continuing from a seed, and split anywhere. */
		static unsigned char buf[2048 + 16];
		unsigned long mism = 0, split_mism = 0;
		uint32_t x = 2463534242u;
		for (size_t i = 0; i < sizeof buf; i++) {
			x ^= x << 13, x ^= x >> 17, x ^= x << 5;
			buf[i] = (unsigned char)x;
		}
		for (size_t len = 0; len <= 2048; len++)
			for (size_t off = 0; off < 16; off++) {
				uint32_t seed = (uint32_t)(len * 2654435761u + off);
				if (sl_crc32(seed, buf + off, len) != (uint32_t)crc32(seed, buf + off, (uInt)len))
					mism++;
			}
		for (size_t cut = 0; cut <= 1100; cut += 7)
			if (sl_crc32(sl_crc32(0, buf, cut), buf + cut, 1100 - cut) != (uint32_t)crc32(0, buf, 1100))
				split_mism++;
		is_int(mism, 0, "CRC-32 equals zlib's for every length to 2 KiB at every alignment");
		is_int(split_mism, 0, "CRC-32 split anywhere equals zlib's of the whole");
	}

	sl_buf_init(&b, 10);
	ok(sl_buf_append(&b, "hello", 5) == 0, "append within limit");
	ok(sl_buf_append(&b, "world", 5) == 0, "append up to limit");
	ok(sl_buf_append(&b, "!", 1) == SL_ETOOBIG, "append past limit refused");
	is_str(b.data, "helloworld", "buffer unchanged by refused append");
	sl_buf_release(&b);
	sl_buf_init(&b, 1 << 20);
	for (int i = 0; i < 1000; i++)
		sl_buf_printf(&b, "%d,", i);
	ok(b.len > 3000 && b.data[b.len] == '\0', "printf grows and terminates");
	sl_buf_release(&b);

	{
		unsigned char k[8];
		sl_put_be64(k, 0x0102030405060708ull);
		ok(k[0] == 1 && k[7] == 8, "big-endian layout");
		ok(sl_get_be64(k) == 0x0102030405060708ull, "be64 round trip");
	}
	{
		char e[32];
		sl_json_escape(e, sizeof e, "a\"b\\c\n\x01é");
		is_str(e, "a\\\"b\\\\c\\u000a\\u0001é", "JSON escaping");
		sl_json_escape(e, 6, "abc\"def");
		is_str(e, "abc\\\"", "truncation never splits an escape");
	}
	ok(sl_ct_equal("abc", "abc", 3) && !sl_ct_equal("abc", "abd", 3), "ct_equal");
	/* sl_try_lock: one holder at a time */
	{
		int la = sl_try_lock(".", O_RDONLY | O_DIRECTORY);
		int lb = sl_try_lock(".", O_RDONLY | O_DIRECTORY);
		ok(la >= 0 && lb == -EBUSY, "sl_try_lock: a second descriptor is refused (EBUSY)");
		if (la >= 0)
			close(la);
		lb = sl_try_lock(".", O_RDONLY | O_DIRECTORY);
		ok(lb >= 0, "sl_try_lock: free again once the holder is closed");
		if (lb >= 0)
			close(lb);
		ok(sl_try_lock("/nonexistent-slowlane-path", O_RDONLY) == -ENOENT, "sl_try_lock: ENOENT");
	}
	return tap_done();
}
