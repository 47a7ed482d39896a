/*
 * upstream.c - calls an OpenAI-compatible server with libcurl's multi
 * interface driven by the libev loop. The only module that includes curl.h.
 *
 * Glue: CURLMOPT_SOCKETFUNCTION keeps one ev_io per socket curl asks us to
 * watch; CURLMOPT_TIMERFUNCTION arms one ev_timer. Pitfalls handled (see
 * NOTES.md): curl's timeout is in milliseconds and must not be divided as
 * an integer; we never call curl from inside its own callbacks; on
 * CURL_POLL_REMOVE the watcher is stopped and unassigned. Connections stay
 * alive in the multi handle's pool between calls (keep-alive reuse).
 */
#include "config.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <time.h>

#include "slowlane/backend.h"
#include "slowlane/common.h"
#include "slowlane/log.h"
#include "slowlane/util.h"

struct upstream {
	struct backend base;
	struct ev_loop *loop;
	CURLM *multi;
	ev_timer timer;        /* curl's single timeout */
	struct curl_slist *headers;
	struct upstream_opts o;
	char *base_url;
};

/* One socket curl wants watched. */
struct sock {
	ev_io io;
	struct upstream *up;
	curl_socket_t fd;
};

/* One call in flight. */
struct xfer {
	struct upstream *up;
	struct be_call *call;
	CURL *easy;
	struct sl_buf resp;
	int64_t retry_after_ms;
	char errbuf[CURL_ERROR_SIZE];
};

static void check_done(struct upstream *up);

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct upstream *up = SL_CONTAINER_OF(w, struct upstream, timer);
	int running;

	curl_multi_socket_action(up->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(up);
}

static int
multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct upstream *up = userp;

	ev_timer_stop(up->loop, &up->timer);
	if (timeout_ms >= 0) {
		/* 0 means "as soon as possible": still via the loop, never by
		 * calling curl from inside this callback. */
		ev_timer_set(&up->timer, (double)timeout_ms / 1000.0, 0.);
		ev_timer_start(up->loop, &up->timer);
	}
	return 0;
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct sock *s = SL_CONTAINER_OF(w, struct sock, io);
	struct upstream *up = s->up;
	int action = (revents & EV_READ ? CURL_CSELECT_IN : 0) |
	    (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
	int running;

	curl_multi_socket_action(up->multi, s->fd, action, &running);
	check_done(up);
}

static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct upstream *up = userp;
	struct sock *s = socketp;
	int events = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);

	if (what == CURL_POLL_REMOVE) {
		if (s) {
			ev_io_stop(up->loop, &s->io);
			curl_multi_assign(up->multi, fd, NULL);
			free(s);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof *s);
		if (!s)
			return -1;
		s->up = up;
		s->fd = fd;
		curl_multi_assign(up->multi, fd, s);
	} else {
		ev_io_stop(up->loop, &s->io);
	}
	ev_io_init(&s->io, io_cb, fd, events);
	ev_io_start(up->loop, &s->io);
	return 0;
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct xfer *x = userp;

	/* Returning less than given makes curl fail with CURLE_WRITE_ERROR:
	 * that is how the response cap is enforced. */
	if (sl_buf_append(&x->resp, data, size * nmemb))
		return 0;
	return size * nmemb;
}

static size_t
header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct xfer *x = userp;
	size_t n = size * nmemb;
	static const char name[] = "retry-after:";

	if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
		char val[64];
		size_t vlen = n - (sizeof name - 1);
		char *end;
		if (vlen >= sizeof val)
			vlen = sizeof val - 1;
		memcpy(val, data + sizeof name - 1, vlen);
		val[vlen] = '\0';
		double secs = strtod(val, &end);
		if (end != val && secs >= 0) {
			x->retry_after_ms = (int64_t)(secs * 1000);
		} else {
			/* An HTTP date: curl_getdate understands it. */
			time_t when = curl_getdate(val, NULL);
			time_t now = time(NULL);
			if (when > 0)
				x->retry_after_ms = when > now ? (int64_t)(when - now) * 1000 : 0;
		}
	}
	return n;
}

static void
xfer_free(struct xfer *x)
{
	if (!x)
		return;
	if (x->easy) {
		curl_multi_remove_handle(x->up->multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	sl_buf_release(&x->resp);
	free(x);
}

/* Reports every finished transfer. Runs outside curl's callbacks. */
static void
check_done(struct upstream *up)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(up->multi, &left))) {
		struct xfer *x = NULL;
		struct be_result r = { .retry_after_ms = -1 };
		struct be_call *call;
		long status = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		call = x->call;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
		switch (msg->data.result) {
		case CURLE_OK:
			r.fault = BE_OK;
			break;
		case CURLE_OPERATION_TIMEDOUT:
			r.fault = BE_TIMEOUT;
			break;
		case CURLE_WRITE_ERROR:
			r.fault = BE_TOO_LARGE;
			break;
		default:
			r.fault = BE_CONNECT;
			break;
		}
		r.http_status = (int)status;
		r.body = x->resp.data ? x->resp.data : "";
		r.body_len = x->resp.len;
		r.retry_after_ms = x->retry_after_ms;
		r.detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(msg->data.result);
		if (r.fault != BE_OK)
			log_warn("upstream: %s: %s", call->path, r.detail);
		call->impl = NULL;
		call->done(call, &r);
		xfer_free(x);
	}
}

static int
up_start(struct backend *b, struct be_call *c)
{
	struct upstream *up = (struct upstream *)b;
	struct xfer *x = calloc(1, sizeof *x);
	char url[2048];

	if (!x)
		return -ENOMEM;
	x->up = up;
	x->call = c;
	x->retry_after_ms = -1;
	sl_buf_init(&x->resp, up->o.max_response);
	x->easy = curl_easy_init();
	if (!x->easy) {
		free(x);
		return -ENOMEM;
	}
	snprintf(url, sizeof url, "%s%s", up->base_url, c->path);
	curl_easy_setopt(x->easy, CURLOPT_URL, url);
	curl_easy_setopt(x->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, c->body);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->body_len);
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, up->headers);
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(x->easy, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)up->o.timeout_ms);
	curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(x->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(x->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(x->easy, CURLOPT_ACCEPT_ENCODING, "");
	if (curl_multi_add_handle(up->multi, x->easy) != CURLM_OK) {
		curl_easy_cleanup(x->easy);
		sl_buf_release(&x->resp);
		free(x);
		return -ENOMEM;
	}
	c->impl = x;
	return 0;
}

static void
up_cancel(struct backend *b, struct be_call *c)
{
	xfer_free(c->impl);
	c->impl = NULL;
}

static void
up_free(struct backend *b)
{
	struct upstream *up = (struct upstream *)b;

	if (!up)
		return;
	ev_timer_stop(up->loop, &up->timer);
	curl_multi_cleanup(up->multi);
	curl_slist_free_all(up->headers);
	free(up->base_url);
	free(up);
	curl_global_cleanup();
}

static const struct backend_ops upstream_ops = {
	.start = up_start,
	.cancel = up_cancel,
	.free = up_free,
	.name = "upstream",
};

int
upstream_new(struct ev_loop *loop, const struct upstream_opts *o, struct backend **out)
{
	struct upstream *up;
	char auth[1024];
	size_t n;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return SL_ESTORE;
	up = calloc(1, sizeof *up);
	if (!up)
		return -ENOMEM;
	up->base.ops = &upstream_ops;
	up->loop = loop;
	up->o = *o;
	up->base_url = strdup(o->base_url);
	if (!up->base_url)
		goto fail;
	n = strlen(up->base_url);
	while (n > 0 && up->base_url[n - 1] == '/')
		up->base_url[--n] = '\0';
	up->multi = curl_multi_init();
	if (!up->multi)
		goto fail;
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(up->multi, CURLMOPT_SOCKETDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
	curl_multi_setopt(up->multi, CURLMOPT_TIMERDATA, up);
	curl_multi_setopt(up->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->max_connections);
	curl_multi_setopt(up->multi, CURLMOPT_MAXCONNECTS, (long)o->max_connections);
	ev_timer_init(&up->timer, timer_cb, 0., 0.);
	up->headers = curl_slist_append(NULL, "Content-Type: application/json");
	/* An empty Expect: no 100-continue round trip on large bodies. */
	up->headers = curl_slist_append(up->headers, "Expect:");
	if (o->api_key && *o->api_key) {
		snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->api_key);
		up->headers = curl_slist_append(up->headers, auth);
	}
	if (!up->headers)
		goto fail;
	*out = &up->base;
	return 0;
fail:
	up_free(&up->base);
	return -ENOMEM;
}
