/* fuzz_job_decode.c - record decoding on arbitrary bytes: a record either
 * fails its check or decodes into one that encodes back to the same bytes
 * (an older format's record: into one that encodes to a record that decodes
 * to the same job).
 *
 * The first byte picks the mode: odd, the rest is a record body and the
 * harness appends its right CRC-32, so the fuzzer reaches the field decoder
 * behind the checksum (random bytes almost never pass it); even, the rest is
 * taken as it is, checksum included. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "slowlane/job.h"
#include "slowlane/util.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	unsigned char rec[JOB_ENCODED_MAX + 8], again[JOB_ENCODED_MAX];
	struct job j;
	size_t n;

	if (len == 0)
		return 0;
	n = len - 1;
	if (n > JOB_ENCODED_MAX)
		return 0;
	memcpy(rec, data + 1, n);
	if (data[0] & 1) {
		sl_put_be32(rec + n, sl_crc32(0, rec, n));
		n += 4;
	}
	if (job_decode("AAAAAAAAAAAAAAAAAAAAA", rec, n, &j) != 0)
		return 0;
	if (rec[0] != JOB_FORMAT) {
		struct job k;
		size_t m = job_encode(&j, again);
		if (job_decode(j.id, again, m, &k) != 0 || memcmp(&j, &k, sizeof j) != 0)
			abort(); /* an old record that does not carry over */
		return 0;
	}
	if (job_encode(&j, again) != n || memcmp(again, rec, n) != 0)
		abort(); /* a record accepted in a form we would not write */
	return 0;
}
