/*
 * jscan.c - strict one-pass JSON validation and in-place walking (see
 * jscan.h). Recursive descent; the depth limit bounds the recursion.
 */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "slowlane/jscan.h"

struct scan {
	const char *start, *end;
	int max_depth;
	const char *err;
	const char *at;
};

static const char *value(struct scan *s, const char *p, int depth, struct jscan_value *out);

static const char *
ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

static const char *
fail(struct scan *s, const char *p, const char *why)
{
	if (!s->err) {
		s->err = why;
		s->at = p;
	}
	return NULL;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads four hex digits at p (before end) into *out. */
static bool
hex4(const char *p, const char *end, unsigned *out)
{
	unsigned v = 0;

	if (end - p < 4)
		return false;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return false;
		v = v << 4 | (unsigned)h;
	}
	*out = v;
	return true;
}

/* Length of a valid UTF-8 sequence at p (1..4), or 0. */
static int
utf8_len(const unsigned char *p, const unsigned char *end)
{
	unsigned char c = p[0];
	int n;
	unsigned cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	if (end - p < n)
		return 0;
	for (int i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/* True if any byte of w is '"', '\\', below 0x20 or above 0x7f: the bytes
 * that end the fast path (SWAR: the classic has-zero-byte test). */
static inline bool
special8(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	uint64_t q = w ^ (ones * '"'), b = w ^ (ones * '\\');

	return ((w | ((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) &
	    highs) != 0;
}

static const char *
string(struct scan *s, const char *p)
{
	p++; /* opening quote */
	while (p < s->end) {
		unsigned char c;
#ifdef __SSE2__
		/* Plain ASCII sixteen bytes at a time (most of a prompt), then
		 * straight to the first byte that is not: as special8, with a
		 * signed compare catching both < 0x20 and >= 0x80. */
		while (s->end - p >= 16) {
			const __m128i v = _mm_loadu_si128((const void *)p);
			int m = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(
			    _mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
			    _mm_cmplt_epi8(v, _mm_set1_epi8(0x20))));
			if (m) {
				p += __builtin_ctz((unsigned)m);
				break;
			}
			p += 16;
		}
#endif
		/* Plain ASCII eight bytes at a time: most of a prompt. */
		while (s->end - p >= 8) {
			uint64_t w;
			memcpy(&w, p, 8);
			if (special8(w))
				break;
			p += 8;
		}
		if (p >= s->end)
			break;
		c = (unsigned char)*p;
		if (c == '"')
			return p + 1;
		if (c == '\\') {
			if (p + 1 >= s->end)
				break;
			switch (p[1]) {
			case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r':
			case 't':
				p += 2;
				continue;
			case 'u': {
				unsigned cp;
				if (!hex4(p + 2, s->end, &cp))
					return fail(s, p, "bad \\u escape");
				/* UTF-16 surrogates must come as a high-low pair. */
				if (cp >= 0xdc00 && cp <= 0xdfff)
					return fail(s, p, "lone surrogate in a \\u escape");
				if (cp >= 0xd800 && cp <= 0xdbff) {
					unsigned lo;
					if (s->end - p < 12 || p[6] != '\\' || p[7] != 'u' ||
					    !hex4(p + 8, s->end, &lo) || lo < 0xdc00 || lo > 0xdfff)
						return fail(s, p, "lone surrogate in a \\u escape");
					p += 6;
				}
				p += 6;
				continue;
			}
			default:
				return fail(s, p, "bad escape in a string");
			}
		}
		if (c < 0x20)
			return fail(s, p, "control character in a string");
		if (c < 0x80) {
			p++;
		} else {
			int n = utf8_len((const unsigned char *)p, (const unsigned char *)s->end);
			if (!n)
				return fail(s, p, "invalid UTF-8 in a string");
			p += n;
		}
	}
	return fail(s, p, "unterminated string");
}

static const char *
number(struct scan *s, const char *p)
{
	const char *q = p;

	if (q < s->end && *q == '-')
		q++;
	if (q < s->end && *q == '0') {
		q++;
	} else if (q < s->end && *q >= '1' && *q <= '9') {
		while (q < s->end && *q >= '0' && *q <= '9')
			q++;
	} else {
		return fail(s, p, "bad number");
	}
	if (q < s->end && *q == '.') {
		q++;
		if (q >= s->end || *q < '0' || *q > '9')
			return fail(s, p, "bad number");
		while (q < s->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < s->end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < s->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= s->end || *q < '0' || *q > '9')
			return fail(s, p, "bad number");
		while (q < s->end && *q >= '0' && *q <= '9')
			q++;
	}
	return q;
}

static const char *
literal(struct scan *s, const char *p, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(s->end - p) < n || memcmp(p, word, n) != 0)
		return fail(s, p, "unexpected character");
	return p + n;
}

static const char *
container(struct scan *s, const char *p, int depth, bool object)
{
	char close = object ? '}' : ']';

	if (depth >= s->max_depth)
		return fail(s, p, "nested too deeply");
	p = ws(p + 1, s->end);
	if (p < s->end && *p == close)
		return p + 1;
	for (;;) {
		struct jscan_value v;
		if (object) {
			if (p >= s->end || *p != '"')
				return fail(s, p, "expected a member name");
			p = string(s, p);
			if (!p)
				return NULL;
			p = ws(p, s->end);
			if (p >= s->end || *p != ':')
				return fail(s, p, "expected ':'");
			p = ws(p + 1, s->end);
		}
		p = value(s, p, depth + 1, &v);
		if (!p)
			return NULL;
		p = ws(p, s->end);
		if (p < s->end && *p == ',') {
			p = ws(p + 1, s->end);
			continue;
		}
		if (p < s->end && *p == close)
			return p + 1;
		return fail(s, p, object ? "expected ',' or '}'" : "expected ',' or ']'");
	}
}

static const char *
value(struct scan *s, const char *p, int depth, struct jscan_value *out)
{
	const char *q;

	if (p >= s->end)
		return fail(s, p, "unexpected end of input");
	out->p = p;
	switch (*p) {
	case '{': out->type = JS_OBJECT; q = container(s, p, depth, true); break;
	case '[': out->type = JS_ARRAY; q = container(s, p, depth, false); break;
	case '"': out->type = JS_STRING; q = string(s, p); break;
	case 't': out->type = JS_TRUE; q = literal(s, p, "true"); break;
	case 'f': out->type = JS_FALSE; q = literal(s, p, "false"); break;
	case 'n': out->type = JS_NULL; q = literal(s, p, "null"); break;
	default:
		out->type = JS_NUMBER;
		q = (*p == '-' || (*p >= '0' && *p <= '9')) ? number(s, p)
		                                           : fail(s, p, "unexpected character");
		break;
	}
	if (q)
		out->len = (size_t)(q - p);
	return q;
}

int
jscan_parse(const char *str, size_t len, int max_depth, struct jscan_value *root, char *err,
    size_t cap)
{
	struct scan s = { .start = str, .end = str + len, .max_depth = max_depth };
	const char *p = value(&s, ws(str, s.end), 0, root);

	if (p && ws(p, s.end) != s.end)
		p = fail(&s, ws(p, s.end), "text after the JSON value");
	if (!p) {
		snprintf(err, cap, "%s at byte %zu", s.err ? s.err : "invalid JSON",
		    (size_t)((s.at ? s.at : s.end) - str));
		return -1;
	}
	return 0;
}

/* The walkers run on validated text, so they reuse the validator to step
 * over each value (it cannot fail there). */
static const char *
step(const char *p, const char *end, struct jscan_value *v)
{
	struct scan s = { .start = p, .end = end, .max_depth = 1 << 20 };

	return value(&s, p, 0, v);
}

long
jscan_string(const struct jscan_value *v, char *out, size_t cap)
{
	const char *p = v->p + 1, *end = v->p + v->len - 1;
	size_t n = 0;

	if (v->type != JS_STRING || cap == 0)
		return -1;
	while (p < end) {
		unsigned cp;
		char buf[4];
		size_t k;

		if (*p != '\\') {
			if (n + 1 >= cap)
				return -1;
			out[n++] = *p++;
			continue;
		}
		switch (p[1]) {
		case 'b': buf[0] = '\b'; k = 1; break;
		case 'f': buf[0] = '\f'; k = 1; break;
		case 'n': buf[0] = '\n'; k = 1; break;
		case 'r': buf[0] = '\r'; k = 1; break;
		case 't': buf[0] = '\t'; k = 1; break;
		case 'u':
			cp = (unsigned)(hexval(p[2]) << 12 | hexval(p[3]) << 8 | hexval(p[4]) << 4 |
			    hexval(p[5]));
			p += 4;
			/* A surrogate pair makes one code point; a lone one is
			 * replaced by U+FFFD. */
			if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 8 && p[2] == '\\' &&
			    p[3] == 'u') {
				unsigned lo = (unsigned)(hexval(p[4]) << 12 | hexval(p[5]) << 8 |
				    hexval(p[6]) << 4 | hexval(p[7]));
				if (lo >= 0xdc00 && lo <= 0xdfff) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					p += 6;
				}
			}
			if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			if (cp == 0)
				return -1;
			if (cp < 0x80) {
				buf[0] = (char)cp;
				k = 1;
			} else if (cp < 0x800) {
				buf[0] = (char)(0xc0 | cp >> 6);
				buf[1] = (char)(0x80 | (cp & 0x3f));
				k = 2;
			} else if (cp < 0x10000) {
				buf[0] = (char)(0xe0 | cp >> 12);
				buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
				buf[2] = (char)(0x80 | (cp & 0x3f));
				k = 3;
			} else {
				buf[0] = (char)(0xf0 | cp >> 18);
				buf[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
				buf[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
				buf[3] = (char)(0x80 | (cp & 0x3f));
				k = 4;
			}
			break;
		default: buf[0] = p[1]; k = 1; break; /* " \ / */
		}
		if (n + k >= cap)
			return -1;
		memcpy(out + n, buf, k);
		n += k;
		p += 2;
	}
	out[n] = '\0';
	return (long)n;
}

int
jscan_members(const struct jscan_value *obj,
    int (*cb)(void *arg, const char *key, const struct jscan_value *v, const char *member),
    void *arg)
{
	const char *p = obj->p + 1, *end = obj->p + obj->len;
	char key[256];
	int rc;

	if (obj->type != JS_OBJECT)
		return 0;
	for (p = ws(p, end); p < end && *p == '"'; p = ws(p, end)) {
		struct jscan_value k, v;
		const char *member = p;
		p = step(p, end, &k);
		if (jscan_string(&k, key, sizeof key) < 0) {
			/* Too long or holding a NUL: no key we look for. */
			key[0] = '\0';
		}
		p = ws(p, end) + 1; /* ':' */
		p = step(ws(p, end), end, &v);
		rc = cb(arg, key, &v, member);
		if (rc)
			return rc;
		p = ws(p, end);
		if (*p == ',')
			p++;
	}
	return 0;
}

int
jscan_elements(const struct jscan_value *arr,
    int (*cb)(void *arg, size_t i, const struct jscan_value *v), void *arg)
{
	const char *p = arr->p + 1, *end = arr->p + arr->len;
	size_t i = 0;
	int rc;

	if (arr->type != JS_ARRAY)
		return 0;
	for (p = ws(p, end); p < end && *p != ']'; p = ws(p, end)) {
		struct jscan_value v;
		p = step(p, end, &v);
		rc = cb(arg, i++, &v);
		if (rc)
			return rc;
		p = ws(p, end);
		if (*p == ',')
			p++;
	}
	return 0;
}

struct get_ctx {
	const char *key;
	struct jscan_value *out;
};

static int
get_one(void *arg, const char *key, const struct jscan_value *v, const char *member)
{
	struct get_ctx *g = arg;

	if (strcmp(key, g->key) != 0)
		return 0;
	*g->out = *v;
	return 1;
}

bool
jscan_get(const struct jscan_value *obj, const char *key, struct jscan_value *out)
{
	struct get_ctx g = { key, out };

	return jscan_members(obj, get_one, &g) == 1;
}
