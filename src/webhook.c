/*
 * webhook.c - webhook registrations, the URL policy and signing (see
 * webhook.h). Record layout in the `webhooks` table: u8 format(=1),
 * u64 created, then u8 len + tenant, u16 len + url, u8 len + secret,
 * u8 len + events.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "slowlane/common.h"
#include "slowlane/httpc.h"
#include "slowlane/util.h"
#include "slowlane/webhook.h"

#define WEBHOOK_FORMAT 1

int
webhook_rotate_secret(struct webhook *w)
{
	unsigned char raw[32];
	unsigned char b64[48];
	int rc = sl_random_bytes(raw, sizeof raw);

	if (rc)
		return rc;
	EVP_EncodeBlock(b64, raw, sizeof raw);
	snprintf(w->secret, sizeof w->secret, "whsec_%s", (char *)b64);
	return 0;
}

int
webhook_init(struct webhook *w, const char *tenant, const char *url, const char *events,
    uint64_t now_ms)
{
	int rc;

	memset(w, 0, sizeof *w);
	if (strlen(url) > WEBHOOK_URL_MAX || (events && strlen(events) > WEBHOOK_EVENTS_MAX))
		return SL_EINVAL;
	/* An id starting with '-' would read as an option on a command line. */
	do {
		rc = sl_random_id(w->id, WEBHOOK_ID_LEN);
		if (rc)
			return rc;
	} while (w->id[0] == '-');
	snprintf(w->tenant, sizeof w->tenant, "%s", tenant ? tenant : "");
	snprintf(w->url, sizeof w->url, "%s", url);
	snprintf(w->events, sizeof w->events, "%s", events ? events : "");
	w->created_ms = now_ms;
	return webhook_rotate_secret(w);
}

static unsigned char *
put_str(unsigned char *p, const char *s, int lenbytes)
{
	size_t n = strlen(s);

	if (lenbytes == 2)
		*p++ = (unsigned char)(n >> 8);
	*p++ = (unsigned char)n;
	memcpy(p, s, n);
	return p + n;
}

int
webhook_put(struct store_txn *t, const struct webhook *w)
{
	unsigned char buf[16 + sizeof w->tenant + sizeof w->url + sizeof w->secret +
	    sizeof w->events];
	unsigned char *p = buf;

	*p++ = WEBHOOK_FORMAT;
	sl_put_be64(p, w->created_ms);
	p += 8;
	p = put_str(p, w->tenant, 1);
	p = put_str(p, w->url, 2);
	p = put_str(p, w->secret, 1);
	p = put_str(p, w->events, 1);
	return store_table_put(t, STORE_T_WEBHOOKS, w->id, strlen(w->id), buf,
	    (size_t)(p - buf));
}

static const unsigned char *
get_str(const unsigned char *p, const unsigned char *end, char *dst, size_t cap, int lenbytes)
{
	size_t n;

	if (!p || end - p < lenbytes)
		return NULL;
	n = lenbytes == 2 ? ((size_t)p[0] << 8 | p[1]) : p[0];
	p += lenbytes;
	if (n >= cap || (size_t)(end - p) < n)
		return NULL;
	memcpy(dst, p, n);
	dst[n] = '\0';
	return p + n;
}

static int
decode(const char *id, size_t idlen, const void *data, size_t len, struct webhook *out)
{
	const unsigned char *p = data, *end = p + len;

	memset(out, 0, sizeof *out);
	if (len < 9 || p[0] != WEBHOOK_FORMAT || idlen > WEBHOOK_ID_LEN)
		return SL_ECORRUPT;
	memcpy(out->id, id, idlen);
	out->created_ms = sl_get_be64(p + 1);
	p += 9;
	p = get_str(p, end, out->tenant, sizeof out->tenant, 1);
	p = get_str(p, end, out->url, sizeof out->url, 2);
	p = get_str(p, end, out->secret, sizeof out->secret, 1);
	p = get_str(p, end, out->events, sizeof out->events, 1);
	return p == end ? 0 : SL_ECORRUPT;
}

int
webhook_get(struct store_txn *t, const char *id, struct webhook *out)
{
	const void *data;
	size_t len, idlen = strlen(id);
	int rc;

	if (idlen == 0 || idlen > WEBHOOK_ID_LEN)
		return SL_ENOTFOUND;
	rc = store_table_get(t, STORE_T_WEBHOOKS, id, idlen, &data, &len);
	if (rc)
		return rc;
	return decode(id, idlen, data, len, out);
}

int
webhook_delete(struct store_txn *t, const char *id)
{
	size_t idlen = strlen(id);

	if (idlen == 0 || idlen > WEBHOOK_ID_LEN)
		return SL_ENOTFOUND;
	return store_table_del(t, STORE_T_WEBHOOKS, id, idlen);
}

struct list_ctx {
	int (*cb)(void *arg, const struct webhook *w);
	void *arg;
};

static int
list_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct list_ctx *l = arg;
	struct webhook w;

	if (!data || decode(key, klen, data, len, &w) != 0)
		return 0; /* a bad record is reported by check, not here */
	return l->cb(l->arg, &w);
}

int
webhook_list(struct store_txn *t, int (*cb)(void *arg, const struct webhook *w), void *arg)
{
	struct list_ctx l = { cb, arg };

	return store_table_scan(t, STORE_T_WEBHOOKS, NULL, 0, list_one, &l);
}

bool
webhook_wants(const struct webhook *w, const char *event)
{
	const char *p = w->events;

	if (!*p)
		return true;
	while (*p) {
		size_t n = strcspn(p, ",");
		if ((n == strlen(event) && strncmp(p, event, n) == 0) ||
		    (n >= 1 && p[n - 1] == '*' && strncmp(p, event, n - 1) == 0))
			return true;
		p += n;
		while (*p == ',' || *p == ' ')
			p++;
	}
	return false;
}

bool
webhook_event_valid(const char *name)
{
	static const char *const names[] = { "generation.completed", "slow-group.completed",
		"batch.completed", "batch.failed", "batch.expired", "batch.cancelled" };
	size_t n = strlen(name);

	for (size_t i = 0; i < SL_ARRAY_LEN(names); i++)
		if (strcmp(name, names[i]) == 0 ||
		    (n >= 1 && name[n - 1] == '*' && strncmp(name, names[i], n - 1) == 0))
			return true;
	return false;
}

int
webhook_events_parse(const char *s, char *out, size_t cap, char bad[64])
{
	size_t n = 0;
	int names = 0;

	if (cap == 0)
		return -1;
	out[0] = '\0';
	while (*s) {
		size_t len;
		while (*s == ' ' || *s == ',')
			s++;
		len = strcspn(s, ", ");
		if (len == 0)
			break;
		snprintf(bad, 64, "%.*s", (int)len, s);
		if (len >= 64 || !webhook_event_valid(bad))
			return -2;
		if (n + len + 2 > cap)
			return -1;
		n += (size_t)snprintf(out + n, cap - n, "%s%.*s", n ? "," : "", (int)len, s);
		names++;
		s += len;
	}
	return names;
}

bool
webhook_url_allowed(const char *url, bool allow_http, bool allow_private, char *why, size_t cap)
{
	const char *host, *end;
	char hostbuf[256];
	struct sockaddr_in6 sa6 = { .sin6_family = AF_INET6 };
	struct sockaddr_in sa4 = { .sin_family = AF_INET };

	if (strncasecmp(url, "https://", 8) == 0) {
		host = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		if (!allow_http) {
			snprintf(why, cap, "webhook URLs must use https (the operator can allow "
			    "http with --webhook-allow-http)");
			return false;
		}
		host = url + 7;
	} else {
		snprintf(why, cap, "webhook URL must start with https://");
		return false;
	}
	end = host + strcspn(host, "/?#");
	if (memchr(host, '@', (size_t)(end - host))) {
		snprintf(why, cap, "webhook URL must not carry a user name or password");
		return false;
	}
	if (end == host || (size_t)(end - host) >= sizeof hostbuf) {
		snprintf(why, cap, "webhook URL has no valid host");
		return false;
	}
	memcpy(hostbuf, host, (size_t)(end - host));
	hostbuf[end - host] = '\0';
	if (hostbuf[0] == '[') { /* [v6]:port */
		char *close = strchr(hostbuf, ']');
		if (!close) {
			snprintf(why, cap, "webhook URL has no valid host");
			return false;
		}
		*close = '\0';
		memmove(hostbuf, hostbuf + 1, strlen(hostbuf));
	} else {
		hostbuf[strcspn(hostbuf, ":")] = '\0';
	}
	/* A name's characters (non-ASCII too: an IDN in UTF-8, which libcurl
	 * delivers to), an address's, a port's. */
	for (const char *p = hostbuf; *p; p++)
		if ((unsigned char)*p < 0x80 && !isalnum((unsigned char)*p) && !strchr("-._:", *p)) {
			snprintf(why, cap, "webhook URL has no valid host");
			return false;
		}
	if (allow_private)
		return true;
	/* inet_aton, not inet_pton: it reads every form a resolver would
	 * (127.1, 0x7f000001, 2130706433), and the check must see what the
	 * connection will reach (the connect-time guard checks it again). */
	if ((inet_aton(hostbuf, &sa4.sin_addr) != 0 &&
	    httpc_addr_is_private((struct sockaddr *)&sa4)) ||
	    (inet_pton(AF_INET6, hostbuf, &sa6.sin6_addr) == 1 &&
	    httpc_addr_is_private((struct sockaddr *)&sa6)) ||
	    strcasecmp(hostbuf, "localhost") == 0 ||
	    (strlen(hostbuf) > 10 && strcasecmp(hostbuf + strlen(hostbuf) - 10, ".localhost") == 0)) {
		snprintf(why, cap, "webhook URL points to a loopback or private address (the "
		    "operator can allow it with --webhook-allow-private)");
		return false;
	}
	return true;
}

int
webhook_sign(const char *secret, const char *msg_id, uint64_t timestamp_s, const char *body,
    size_t len, char *out, size_t cap)
{
	unsigned char key[64], mac[EVP_MAX_MD_SIZE], b64[64];
	unsigned int maclen = 0;
	char prefix[128];
	size_t slen;
	int klen, n;

	if (strncmp(secret, "whsec_", 6) != 0)
		return SL_EINVAL;
	secret += 6;
	slen = strlen(secret);
	if (slen == 0 || slen > 4 * (sizeof key / 3) || slen % 4)
		return SL_EINVAL;
	klen = EVP_DecodeBlock(key, (const unsigned char *)secret, (int)slen);
	if (klen < 0)
		return SL_EINVAL;
	/* EVP_DecodeBlock counts padding as data: take it back off. */
	if (slen >= 1 && secret[slen - 1] == '=')
		klen--;
	if (slen >= 2 && secret[slen - 2] == '=')
		klen--;
	n = snprintf(prefix, sizeof prefix, "%s.%llu.", msg_id, (unsigned long long)timestamp_s);
	if (n < 0 || (size_t)n >= sizeof prefix)
		return SL_EINVAL;
	{
		EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
		EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
		OSSL_PARAM params[] = {
			OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
			OSSL_PARAM_construct_end(),
		};
		size_t outl = 0;
		int ok = ctx && EVP_MAC_init(ctx, key, (size_t)klen, params) &&
		    EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)n) &&
		    EVP_MAC_update(ctx, (const unsigned char *)body, len) &&
		    EVP_MAC_final(ctx, mac, &outl, sizeof mac);
		EVP_MAC_CTX_free(ctx);
		EVP_MAC_free(m);
		if (!ok)
			return SL_EINVAL;
		maclen = (unsigned int)outl;
	}
	EVP_EncodeBlock(b64, mac, (int)maclen);
	if (snprintf(out, cap, "v1,%s", (char *)b64) >= (int)cap)
		return SL_EINVAL;
	return 0;
}
