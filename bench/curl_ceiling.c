/*
 * curl_ceiling.c - a bare libcurl multi client that only posts and reads:
 * C transfers in flight (the daemon's --concurrency), each POSTing the same
 * 1 KiB chat body to URL and reading the answer, again and again. It is
 * the drain ceiling "what libcurl itself costs": the daemon makes the same
 * calls but also claims, stores and schedules each job.
 *
 *   curl_ceiling --url URL [--concurrency C] [--duration S | --count N]
 *                [--bytes B] [--fresh-handles]
 *
 * Driven like the daemon drives curl (curl_multi_socket_action with a
 * socket callback and a timer), on a bare epoll loop instead of libev. Easy
 * handles are reused (connections stay alive in the multi's cache);
 * --fresh-handles makes a new easy handle per request, as slowlane's httpc.c
 * does, to show what that costs. Also serves as bench/run's HTTP load
 * generator when wrk is missing (the CI smoke).
 * Prints one JSON line: {"requests":N,"ok":N2xx,"errors":E,"seconds":S,
 * "rate":R,"p50_ms":..,"p99_ms":..}.
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "benchutil.h"

struct client {
	CURLM *multi;
	int epfd;
	long timeout_ms; /* -1: no timer */
	const char *url, *body;
	size_t body_len;
	struct curl_slist *headers;
	bool fresh, stopping;
	uint64_t requests, ok, errors, max_count, end_us;
	struct bu_lat lat;
};

struct xfer {
	CURL *easy;
	uint64_t start_us;
	size_t got;
};

static size_t
discard(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;

	(void)p;
	x->got += size * n;
	return size * n;
}

static int
socket_cb(CURL *e, curl_socket_t s, int what, void *arg, void *sockp)
{
	struct client *c = arg;
	struct epoll_event ev = { .data.fd = s };

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		epoll_ctl(c->epfd, EPOLL_CTL_DEL, s, NULL);
		if (sockp)
			curl_multi_assign(c->multi, s, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (!sockp) {
		curl_multi_assign(c->multi, s, c); /* marks it as known */
		if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
			epoll_ctl(c->epfd, EPOLL_CTL_MOD, s, &ev);
	} else {
		epoll_ctl(c->epfd, EPOLL_CTL_MOD, s, &ev);
	}
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *arg)
{
	struct client *c = arg;

	(void)m;
	c->timeout_ms = timeout_ms;
	return 0;
}

static CURL *
new_easy(struct client *c, struct xfer *x)
{
	CURL *e = curl_easy_init();

	if (!e)
		return NULL;
	curl_easy_setopt(e, CURLOPT_URL, c->url);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 60000L);
	return e;
}

/* Starts (or restarts) transfer x. */
static int
start(struct client *c, struct xfer *x)
{
	if (!x->easy && !(x->easy = new_easy(c, x)))
		return -1;
	x->got = 0;
	x->start_us = bu_now_us();
	return curl_multi_add_handle(c->multi, x->easy) == CURLM_OK ? 0 : -1;
}

static void
reap(struct client *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left))) {
		struct xfer *x;
		long status = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
		c->requests++;
		if (msg->data.result == CURLE_OK && status >= 200 && status < 300) {
			c->ok++;
			bu_lat_add(&c->lat, bu_now_us() - x->start_us);
		} else {
			c->errors++;
		}
		curl_multi_remove_handle(c->multi, x->easy);
		if (c->fresh) {
			curl_easy_cleanup(x->easy);
			x->easy = NULL;
		}
		if (!c->stopping && c->max_count && c->requests >= c->max_count)
			c->stopping = true;
		if (!c->stopping && start(c, x) != 0)
			c->errors++;
	}
}

static void
usage(void)
{
	fprintf(stderr, "usage: curl_ceiling --url URL [--concurrency C] [--duration S | "
	    "--count N] [--bytes B] [--fresh-handles]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "concurrency", required_argument, NULL, 'c' },
		{ "duration", required_argument, NULL, 't' },
		{ "count", required_argument, NULL, 'n' },
		{ "bytes", required_argument, NULL, 'b' },
		{ "fresh-handles", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 },
	};
	struct client c = { .timeout_ms = -1 };
	struct epoll_event evs[256];
	struct xfer *xs;
	double duration = 10;
	size_t bytes = 1024;
	int conc = 64, opt, running = 0;
	uint64_t t0, now;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'u': c.url = optarg; break;
		case 'c': conc = atoi(optarg); break;
		case 't': duration = strtod(optarg, NULL); break;
		case 'n': c.max_count = strtoull(optarg, NULL, 10); break;
		case 'b': bytes = strtoul(optarg, NULL, 10); break;
		case 'f': c.fresh = true; break;
		default: usage();
		}
	}
	if (!c.url || conc <= 0 || duration <= 0)
		usage();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	c.body = bu_chat_body(bytes);
	c.body_len = c.body ? strlen(c.body) : 0;
	c.headers = curl_slist_append(NULL, "Content-Type: application/json");
	c.headers = curl_slist_append(c.headers, "Expect:"); /* no 100-continue, as httpc.c */
	c.multi = curl_multi_init();
	c.epfd = epoll_create1(EPOLL_CLOEXEC);
	xs = calloc((size_t)conc, sizeof *xs);
	if (!c.body || !c.headers || !c.multi || c.epfd < 0 || !xs)
		return 1;
	curl_multi_setopt(c.multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(c.multi, CURLMOPT_SOCKETDATA, &c);
	curl_multi_setopt(c.multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(c.multi, CURLMOPT_TIMERDATA, &c);
	curl_multi_setopt(c.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
	curl_multi_setopt(c.multi, CURLMOPT_MAXCONNECTS, (long)conc);

	t0 = now = bu_now_us();
	c.end_us = c.max_count ? UINT64_MAX : t0 + (uint64_t)(duration * 1e6);
	for (int i = 0; i < conc; i++)
		if (start(&c, &xs[i]) != 0)
			return 1;
	curl_multi_socket_action(c.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	reap(&c);
	while (running > 0 || !c.stopping) {
		int n = epoll_wait(c.epfd, evs, (int)(sizeof evs / sizeof evs[0]),
		    c.timeout_ms < 0 ? 100 : (int)c.timeout_ms);

		if (n < 0 && errno != EINTR)
			return 1;
		if (n <= 0) {
			curl_multi_socket_action(c.multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
		for (int i = 0; i < n; i++) {
			int mask = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
			    (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
			    (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);

			curl_multi_socket_action(c.multi, evs[i].data.fd, mask, &running);
		}
		reap(&c);
		now = bu_now_us();
		if (now >= c.end_us)
			c.stopping = true;
		if (c.stopping && running == 0)
			break;
	}
	bu_lat_sort(&c.lat);
	double secs = (double)(now - t0) / 1e6;
	printf("{\"requests\":%llu,\"ok\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"rate\":%.0f,"
	    "\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", (unsigned long long)c.requests,
	    (unsigned long long)c.ok, (unsigned long long)c.errors, secs,
	    (double)c.ok / secs, bu_lat_pct(&c.lat, 50), bu_lat_pct(&c.lat, 99));
	for (int i = 0; i < conc; i++) {
		if (!xs[i].easy)
			continue;
		curl_multi_remove_handle(c.multi, xs[i].easy); /* no-op if not added */
		curl_easy_cleanup(xs[i].easy);
	}
	curl_multi_cleanup(c.multi);
	curl_slist_free_all(c.headers);
	curl_global_cleanup();
	close(c.epfd);
	free(xs);
	free(c.lat.v);
	free((char *)c.body);
	return c.ok ? 0 : 1;
}
