/* test_jscan.c - the strict JSON scanner: what it accepts, what it refuses,
 * and walking members, elements and strings in place. */
#include "config.h"

#include "../tap.h"
#include "slowlane/jscan.h"

static int
valid(const char *s)
{
	struct jscan_value v;
	char err[128];

	return jscan_parse(s, strlen(s), 16, &v, err, sizeof err) == 0;
}

static int
count_cb(void *arg, const char *key, const struct jscan_value *v, const char *member)
{
	(*(int *)arg)++;
	return 0;
}

static int
elem_cb(void *arg, size_t i, const struct jscan_value *v)
{
	*(size_t *)arg = i + 1;
	return 0;
}

/* A string of `pad` x's, then `tail`, then the closing quote: the special
 * byte lands at every offset of the scanner's 16- and 8-byte strides. */
static int
valid_at(size_t pad, const char *tail)
{
	char buf[128];

	if (pad + strlen(tail) + 3 > sizeof buf)
		return -1;
	buf[0] = '"';
	memset(buf + 1, 'x', pad);
	snprintf(buf + 1 + pad, sizeof buf - 1 - pad, "%s\"", tail);
	return valid(buf);
}

static void
test_strides(void)
{
	const char *good[] = { "\\n", "\\\"", "\xc3\xa9", "\xf0\x9f\x98\x80", "\\u00e9", "" };
	const char *bad[] = { "\x01", "\x1f", "\xc3", "\xff", "\\x", "\"\"" };
	int good_ok = 0, bad_ok = 0, n = 0;

	for (size_t pad = 0; pad < 48; pad++) {
		for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
			good_ok += valid_at(pad, good[i]) == 1;
		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
			bad_ok += valid_at(pad, bad[i]) == 0;
		n++;
	}
	is_int(good_ok, n * (int)(sizeof good / sizeof good[0]),
	    "escapes and UTF-8 after 0-47 plain bytes are accepted");
	is_int(bad_ok, n * (int)(sizeof bad / sizeof bad[0]),
	    "control bytes, bad UTF-8 and bad escapes after 0-47 plain bytes are refused");
}

int
main(void)
{
	const char *good[] = { "{}", "[]", "0", "-0.5e+10", "\"x\"", "true", "null", " {\"a\":[1,2,{}]} ",
		"\"\\ud83d\\ude00\"",
		"{\"k\":\"\\u00e9\\n\\\"\"}", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", "1E5" };
	const char *bad[] = { "", "{", "{\"a\"}", "{\"a\":}", "[1,]", "{\"a\":1,}", "01", "1.",
		"-", ".5", "tru", "nul", "\"abc", "\"\\x\"", "\"\\u12g4\"", "\"a\x01\"",
		"\"\xc3\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf5\x80\x80\x80\"", "{} {}",
		"{'a':1}", "[1 2]", "\xef\xbb\xbf{}", "NaN", "+1", "\"\\ud800\"", "\"\\udc00\"",
		"\"\\ud800\\u0041\"", "\"\\ud800x\"" };
	struct jscan_value root, v;
	char err[128], buf[64];
	int n = 0;
	size_t k = 0;

	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		ok(valid(good[i]), "accepts %s", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ok(!valid(bad[i]), "refuses case %zu", i);
	{
		char deep[64];
		memset(deep, '[', 20);
		memset(deep + 20, ']', 20);
		deep[40] = '\0';
		ok(!valid(deep), "refuses nesting past the limit");
		ok(jscan_parse("[1,", 3, 16, &v, err, sizeof err) != 0 && strstr(err, "byte"),
		    "error names the byte: %s", err);
	}

	const char *doc = "{\"model\":\"m\\u00e9\",\"messages\":[{\"role\":\"user\"},{}],"
	    "\"n\":2,\"metadata\":{\"custom_id\":\"c1\"}}";
	ok(jscan_parse(doc, strlen(doc), 16, &root, err, sizeof err) == 0 && root.type == JS_OBJECT,
	    "parses a request");
	jscan_members(&root, count_cb, &n);
	is_int(n, 4, "walks four members");
	ok(jscan_get(&root, "model", &v) && v.type == JS_STRING, "finds model");
	ok(jscan_string(&v, buf, sizeof buf) == 3 && strcmp(buf, "m\xc3\xa9") == 0,
	    "unescapes \\u00e9 to UTF-8");
	ok(jscan_get(&root, "messages", &v) && v.type == JS_ARRAY, "finds messages");
	jscan_elements(&v, elem_cb, &k);
	is_int(k, 2, "walks two elements");
	ok(!jscan_get(&root, "stream", &v), "a missing member is missing");
	ok(jscan_get(&root, "n", &v) && v.type == JS_NUMBER && v.len == 1, "number span");
	{
		struct jscan_value s = { JS_STRING, "\"\\ud83d\\ude00\"", 14 };
		ok(jscan_string(&s, buf, sizeof buf) == 4 && memcmp(buf, "\xf0\x9f\x98\x80", 4) == 0,
		    "joins a surrogate pair");
		struct jscan_value z = { JS_STRING, "\"a\\u0000b\"", 10 };
		ok(jscan_string(&z, buf, sizeof buf) < 0, "refuses an embedded NUL");
		struct jscan_value l = { JS_STRING, "\"abcdef\"", 8 };
		ok(jscan_string(&l, buf, 4) < 0, "reports a string too long for the buffer");
	}
	test_strides();
	return tap_done();
}
