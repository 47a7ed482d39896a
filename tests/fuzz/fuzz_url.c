/* fuzz_url.c - the webhook URL policy on arbitrary strings: never crashes,
 * and never allows a URL that does not start with http(s)://. */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "slowlane/webhook.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len);

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	char url[WEBHOOK_URL_MAX + 1], why[200];

	if (len > WEBHOOK_URL_MAX)
		len = WEBHOOK_URL_MAX;
	memcpy(url, data, len);
	url[len] = '\0';
	for (int mode = 0; mode < 4; mode++) {
		bool ok = webhook_url_allowed(url, mode & 1, mode & 2, why, sizeof why);
		if (ok && strncasecmp(url, "https://", 8) != 0 &&
		    !((mode & 1) && strncasecmp(url, "http://", 7) == 0))
			abort();
	}
	return 0;
}
