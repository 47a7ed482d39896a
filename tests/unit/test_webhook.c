/* test_webhook.c - Standard Webhooks signing, the URL policy, event
 * filters, and the private-address guard. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "../tap.h"
#include "slowlane/httpc.h"
#include "slowlane/webhook.h"

static bool
allowed(const char *url, bool http, bool priv)
{
	char why[200];

	return webhook_url_allowed(url, http, priv, why, sizeof why);
}

static bool
private4(const char *ip)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };

	inet_pton(AF_INET, ip, &sa.sin_addr);
	return httpc_addr_is_private((struct sockaddr *)&sa);
}

static bool
private6(const char *ip)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6 };

	inet_pton(AF_INET6, ip, &sa.sin6_addr);
	return httpc_addr_is_private((struct sockaddr *)&sa);
}

int
main(void)
{
	char sig[128];
	const char *body = "{\"test\": 2432232314}";
	struct webhook w, w2;

	/* The Standard Webhooks reference vector. */
	ok(webhook_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
	    1614265330, body, strlen(body), sig, sizeof sig) == 0, "signs");
	is_str(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
	    "matches the Standard Webhooks reference signature");
	ok(webhook_sign("nope", "m", 1, "x", 1, sig, sizeof sig) != 0, "bad secret refused");

	ok(webhook_init(&w, "tenant", "https://example.com/hook", "", 1000) == 0, "init");
	ok(strlen(w.id) == WEBHOOK_ID_LEN && strncmp(w.secret, "whsec_", 6) == 0,
	    "9-char id, whsec_ secret (%s)", w.id);
	ok(webhook_sign(w.secret, "evt_1", 5, "{}", 2, sig, sizeof sig) == 0,
	    "a generated secret signs");
	w2 = w;
	webhook_rotate_secret(&w2);
	ok(strcmp(w.secret, w2.secret) != 0, "rotation changes the secret");

	ok(webhook_wants(&w, "generation.completed"), "empty filter wants everything");
	snprintf(w.events, sizeof w.events, "generation.completed,batch.*");
	ok(webhook_wants(&w, "generation.completed"), "listed event wanted");
	ok(webhook_wants(&w, "batch.failed"), "wildcard matches");
	ok(!webhook_wants(&w, "slow-group.completed"), "unlisted event not wanted");
	ok(!webhook_wants(&w, "generation.completed.x"), "no prefix match without *");
	snprintf(w.events, sizeof w.events, "*");
	ok(webhook_wants(&w, "slow-group.completed"), "a bare * wants everything");
	{
		char out[64], bad[64];
		ok(webhook_events_parse(" batch.* , generation.completed", out, sizeof out, bad) == 2 &&
		    strcmp(out, "batch.*,generation.completed") == 0, "a list is normalised");
		ok(webhook_events_parse("batch.done", out, sizeof out, bad) == -2 &&
		    strcmp(bad, "batch.done") == 0, "an unknown name is named");
		ok(webhook_events_parse("generation.completed,batch.*", out, 10, bad) == -1,
		    "a list that does not fit is refused");
		ok(webhook_events_parse("", out, sizeof out, bad) == 0 && out[0] == '\0',
		    "an empty list has no names");
	}

	ok(allowed("https://example.com/hook", false, false), "https public allowed");
	ok(!allowed("http://example.com/hook", false, false), "http refused by default");
	ok(allowed("http://example.com/hook", true, false), "http allowed when asked");
	ok(!allowed("ftp://example.com/", true, true), "other schemes refused");
	ok(!allowed("https://127.0.0.1:8443/x", false, false), "loopback refused");
	ok(!allowed("https://localhost/x", false, false), "localhost refused");
	ok(!allowed("https://10.1.2.3/x", false, false), "RFC 1918 refused");
	ok(!allowed("https://[::1]:9/x", false, false), "IPv6 loopback refused");
	ok(!allowed("https://169.254.169.254/latest", false, false), "metadata address refused");
	ok(allowed("https://127.0.0.1/x", false, true), "private allowed when asked");
	ok(!allowed("https://user:pw@example.com/", false, false), "credentials refused");
	ok(!allowed("https:///nohost", false, false), "empty host refused");

	ok(private4("127.0.0.1") && private4("10.0.0.1") && private4("172.16.5.4") &&
	    private4("192.168.1.1") && private4("169.254.1.1") && private4("100.64.0.1") &&
	    private4("224.0.0.1") && private4("0.0.0.0"), "private IPv4 ranges");
	ok(!private4("8.8.8.8") && !private4("172.32.0.1") && !private4("100.128.0.1"),
	    "public IPv4 addresses");
	ok(private6("::1") && private6("fe80::1") && private6("fd00::1") && private6("ff02::1") &&
	    private6("::ffff:127.0.0.1") && private6("::"), "private IPv6 ranges");
	ok(!private6("2001:4860:4860::8888"), "public IPv6 address");
	return tap_done();
}
