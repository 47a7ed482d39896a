/* fuzz_batch_line.c - the JSONL batch line check on arbitrary bytes. */
#include "config.h"

#include <stdlib.h>

#include "slowlane/batch.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	static const char *const endpoints[] = { "/v1/chat/completions", "/v1/completions" };
	struct batch_line bl;
	const char *code, *param;
	char msg[400];

	for (int i = 0; i < 2; i++) {
		if (batch_check_line((const char *)data, len, endpoints[i], &bl, &code, &param, msg,
		    sizeof msg) == 0) {
			if (!bl.custom_id[0] || !bl.model[0] || !bl.body || bl.body_len < 2)
				abort();
		} else if (!code || !msg[0]) {
			abort();
		}
	}
	return 0;
}
