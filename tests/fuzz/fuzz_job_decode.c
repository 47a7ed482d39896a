/* fuzz_job_decode.c - record decoding on arbitrary bytes: a record either
 * fails its check or decodes into one that encodes back to the same bytes. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "slowlane/job.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	unsigned char again[JOB_ENCODED_MAX];
	struct job j;

	if (job_decode("AAAAAAAAAAAAAAAAAAAAA", data, len, &j) != 0)
		return 0;
	if (job_encode(&j, again) != len || memcmp(again, data, len) != 0)
		abort();
	return 0;
}
