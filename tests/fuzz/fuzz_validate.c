/* fuzz_validate.c - request validation and the upstream body rewrite on
 * arbitrary bytes: no crash, no leak, and a body it accepts re-serializes. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "slowlane/validate.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	struct validate_info info;
	struct sl_error err;

	for (int kind = JOB_CHAT; kind <= JOB_COMPLETION; kind++) {
		if (validate_request((enum job_kind)kind, (const char *)data, len, &info, &err) == 0) {
			size_t n = 0;
			char *up = validate_upstream_body((const char *)data, len, &n);
			if (!up || n != strlen(up))
				abort();
			free(up);
		} else if (err.status != 400 || !err.message[0]) {
			abort();
		}
	}
	return 0;
}
