/*
 * httpc.c - libcurl multi driven by the libev loop (see httpc.h).
 *
 * Glue: CURLMOPT_SOCKETFUNCTION keeps one ev_io per socket curl asks us to
 * watch; CURLMOPT_TIMERFUNCTION arms one ev_timer. Pitfalls handled (the
 * team's ../shared/NOTES.md): curl's timeout is in milliseconds and must not be divided as
 * an integer; we never call curl from inside its own callbacks; on
 * CURL_POLL_REMOVE the watcher is stopped and unassigned. Connections stay
 * alive in the multi handle's pool between requests. The private-address
 * guard runs at connect time (CURLOPT_OPENSOCKETFUNCTION sees the resolved
 * address), so DNS tricks cannot get past a check made at registration.
 */
#include "config.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "slowlane/common.h"
#include "slowlane/httpc.h"
#include "slowlane/util.h"

#define EASY_POOL_MAX 256

struct httpc {
	struct ev_loop *loop;
	CURLM *multi;
	ev_timer timer; /* curl's single timeout */
	CURL *pool[EASY_POOL_MAX]; /* idle easy handles, shared options set */
	unsigned n_pool;
};

/* One socket curl wants watched. */
struct sock {
	ev_io io;
	struct httpc *c;
	curl_socket_t fd;
};

/* One request in flight. */
struct xfer {
	struct httpc *c;
	struct httpc_req *req;
	CURL *easy;
	struct curl_slist *headers;
	struct sl_buf resp;
	int64_t retry_after_ms;
	unsigned requests; /* times curl was about to send the request */
	bool refused;
	bool no_resend;   /* curl wanted to send the body a second time */
	bool oom;         /* the answer could not be buffered: out of memory */
	char errbuf[CURL_ERROR_SIZE];
};

static void check_done(struct httpc *c);

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct httpc *c = SL_CONTAINER_OF(w, struct httpc, timer);
	int running;

	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(c);
}

static int
multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct httpc *c = userp;

	ev_timer_stop(c->loop, &c->timer);
	if (timeout_ms >= 0) {
		/* 0 means "as soon as possible": still via the loop, never by
		 * calling curl from inside this callback. */
		ev_timer_set(&c->timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(c->loop, &c->timer);
	}
	return 0;
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sock *s = SL_CONTAINER_OF(w, struct sock, io);
	struct httpc *c = s->c;
	int action = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
	    (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	/* socket_cb may free `s` (CURL_POLL_REMOVE) inside this call. */
	curl_multi_socket_action(c->multi, s->fd, action, &running);
	check_done(c);
}

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct httpc *c = userp;
	struct sock *s = socketp;
	int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			ev_io_stop(c->loop, &s->io);
			curl_multi_assign(c->multi, fd, NULL);
			free(s);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof *s);
		if (!s)
			return -1;
		s->c = c;
		s->fd = fd;
		curl_multi_assign(c->multi, fd, s);
	} else {
		ev_io_stop(c->loop, &s->io);
	}
	ev_io_init(&s->io, io_cb, fd, events);
	ev_io_start(c->loop, &s->io);
	return 0;
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct xfer *x = userp;

	/* Returning less than given makes curl fail with CURLE_WRITE_ERROR:
	 * that is how the response cap is enforced. */
	int rc = sl_buf_append(&x->resp, data, size * nmemb);

	if (rc) {
		x->oom = rc == -ENOMEM; /* a retry, not a too-large answer */
		return 0;
	}
	return size * nmemb;
}

/* libcurl resends a request by itself when a reused keep-alive connection
 * turns out closed before any answer, and the upstream (which may have read
 * the first copy) would run the job twice behind our attempt count. The
 * pre-request callback runs each time a request is about to go out on a
 * connection: a second time for one transfer is that resend, and aborting
 * it fails the transfer, which the scheduler retries as a counted attempt,
 * with backoff. (The body stays in CURLOPT_POSTFIELDS, so headers and body
 * leave in one send: a read callback, which could refuse the rewind
 * instead, costs a second send per call and ~15% of the drain rate.) */
static int
prereq_cb(void *userp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	struct xfer *x = userp;

	if (x->requests++ == 0)
		return CURL_PREREQFUNC_OK;
	x->no_resend = true;
	return CURL_PREREQFUNC_ABORT;
}

static size_t
header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	static const char name[] = "retry-after:";
	struct xfer *x = userp;
	size_t n = size * nmemb;
	char val[64], *end;
	size_t vlen;
	double secs;

	if (n <= sizeof name - 1 || strncasecmp(data, name, sizeof name - 1) != 0)
		return n;
	vlen = n - (sizeof name - 1);
	if (vlen >= sizeof val)
		vlen = sizeof val - 1;
	memcpy(val, data + sizeof name - 1, vlen);
	val[vlen] = '\0';
	secs = strtod(val, &end);
	if (end != val && secs >= 0 && secs < 1e9) {
		x->retry_after_ms = (int64_t)(secs * 1000);
	} else {
		/* An HTTP date: curl_getdate understands it. */
		time_t when = curl_getdate(val, NULL), now = time(NULL);
		if (when > 0)
			x->retry_after_ms = when > now ? (int64_t)(when - now) * 1000 : 0;
	}
	return n;
}

bool
httpc_addr_is_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
		return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 ||
		    (a >> 20) == (172 << 4 | 1) || (a >> 16) == (192 << 8 | 168) ||
		    (a >> 16) == (169 << 8 | 254) || (a >> 22) == (100 << 2 | 1) ||
		    (a >> 28) == 0xe || (a >> 28) == 0xf;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		const unsigned char *b = a->s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a)) {
			struct sockaddr_in v4 = { .sin_family = AF_INET };
			memcpy(&v4.sin_addr, b + 12, 4);
			return httpc_addr_is_private((struct sockaddr *)&v4);
		}
		return IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LOOPBACK(a) ||
		    IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_SITELOCAL(a) ||
		    IN6_IS_ADDR_MULTICAST(a) || (b[0] & 0xfe) == 0xfc;
	}
	return true;
}

static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct xfer *x = clientp;

	if (x->req->refuse_private && httpc_addr_is_private(&addr->addr)) {
		x->refused = true;
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

static void
xfer_free(struct xfer *x)
{
	if (!x)
		return;
	if (x->easy) {
		curl_multi_remove_handle(x->c->multi, x->easy);
		/* Reused: an easy handle is a few kilobytes of allocations.
		 * Not reset: httpc_start sets every option that differs per
		 * request (easy_per_request), and a reset cost ~4 % of the
		 * loop's time in a drain. */
		if (x->c->n_pool < EASY_POOL_MAX) {
			/* No pointer into memory freed below stays set. */
			curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
			curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, NULL);
			curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, NULL);
			x->c->pool[x->c->n_pool++] = x->easy;
		} else {
			curl_easy_cleanup(x->easy);
		}
	}
	curl_slist_free_all(x->headers);
	sl_buf_release(&x->resp);
	free(x);
}

static enum httpc_fault
fault_of(const struct xfer *x, CURLcode code)
{
	if (x->refused)
		return HTTPC_REFUSED;
	switch (code) {
	case CURLE_OK: return HTTPC_OK;
	case CURLE_OPERATION_TIMEDOUT: return HTTPC_TIMEOUT;
	case CURLE_WRITE_ERROR: return x->oom ? HTTPC_CONNECT : HTTPC_TOO_LARGE;
	default: return HTTPC_CONNECT;
	}
}

/* Reports every finished transfer. Runs outside curl's callbacks. */
static void
check_done(struct httpc *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left))) {
		struct httpc_result res = { .retry_after_ms = -1 };
		struct xfer *x = NULL;
		struct httpc_req *req;
		long status = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		req = x->req;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
		res.fault = fault_of(x, msg->data.result);
		res.status = (int)status;
		res.body = x->resp.data ? x->resp.data : "";
		res.body_len = x->resp.len;
		res.retry_after_ms = x->retry_after_ms;
		res.detail = x->refused ? "target address is not allowed (private or loopback)"
		    : x->no_resend ? "connection closed before any answer (the request may "
		      "have been received; not resent within this attempt)"
		    : x->oom ? "out of memory while reading the answer"
		    : x->errbuf[0] ? x->errbuf : curl_easy_strerror(msg->data.result);
		req->impl = NULL;
		req->done(req, &res);
		xfer_free(x);
	}
}

/* A new easy handle with the options every request shares. */
static CURL *
easy_new(void)
{
	CURL *e = curl_easy_init();

	if (!e)
		return NULL;
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	return e;
}

/* Every option that differs between requests, so that a pooled handle
 * needs no curl_easy_reset: what one request set, the next overwrites.
 * (An option set for some requests only would have to be reset here.) */
static void
easy_per_request(CURL *e, struct xfer *x, const struct httpc_req *r)
{
	curl_easy_setopt(e, CURLOPT_URL, r->url);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
	    (long)(r->timeout_ms < 10000 ? r->timeout_ms : 10000));
}

int
httpc_start(struct httpc *c, struct httpc_req *r)
{
	struct xfer *x = calloc(1, sizeof *x);

	if (!x)
		return -ENOMEM;
	x->c = c;
	x->req = r;
	x->retry_after_ms = -1;
	sl_buf_init(&x->resp, r->max_response);
	x->headers = curl_slist_append(NULL, "Expect:"); /* no 100-continue */
	for (size_t i = 0; x->headers && r->headers && r->headers[i]; i++)
		x->headers = curl_slist_append(x->headers, r->headers[i]);
	x->easy = c->n_pool ? c->pool[--c->n_pool] : easy_new();
	if (!x->easy || !x->headers)
		goto fail;
	easy_per_request(x->easy, x, r);
	if (curl_multi_add_handle(c->multi, x->easy) != CURLM_OK)
		goto fail;
	r->impl = x;
	return 0;
fail:
	if (x->easy)
		curl_easy_cleanup(x->easy);
	x->easy = NULL;
	xfer_free(x);
	return -ENOMEM;
}

void
httpc_cancel(struct httpc *c, struct httpc_req *r)
{
	xfer_free(r->impl);
	r->impl = NULL;
}

int
httpc_new(struct ev_loop *loop, unsigned max_connections, struct httpc **out)
{
	struct httpc *c;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -ENOMEM;
	c = calloc(1, sizeof *c);
	if (!c) {
		curl_global_cleanup();
		return -ENOMEM;
	}
	c->loop = loop;
	c->multi = curl_multi_init();
	if (!c->multi) {
		free(c);
		curl_global_cleanup();
		return -ENOMEM;
	}
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_connections);
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)max_connections);
	ev_timer_init(&c->timer, timer_cb, 0., 0.);
	*out = c;
	return 0;
}

void
httpc_free(struct httpc *c)
{
	if (!c)
		return;
	ev_timer_stop(c->loop, &c->timer);
	while (c->n_pool)
		curl_easy_cleanup(c->pool[--c->n_pool]);
	curl_multi_cleanup(c->multi);
	free(c);
	curl_global_cleanup();
}
