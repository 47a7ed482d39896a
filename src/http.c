/*
 * http.c - libmicrohttpd inside the libev loop (see http.h).
 *
 * Integration (the team's ../shared/NOTES.md, MHD's suspend_resume_epoll example): MHD runs with
 * MHD_USE_EPOLL and no thread; an ev_io watches its epoll fd and an
 * ev_timer follows MHD_get_timeout(). A handler that does not answer at
 * once leaves its connection suspended; http_reply() queues the request on
 * `resume`, and the ev_prepare watcher resumes those connections and runs
 * MHD before the loop blocks again.
 *
 * Header deadline: MHD's connection timeout is an idle timeout, reset by
 * every byte, so a client trickling its header a byte at a time would hold
 * a connection slot for ever (slowloris). Every connection is therefore on
 * the `waiting` list, oldest first, from the moment it opens (and again
 * after each answered request) until a request's header is complete; one
 * timer, armed for the oldest, shuts down those that took longer than the
 * connection timeout, and MHD then closes them as it would any dead peer.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "slowlane/common.h"
#include "slowlane/http.h"
#include "slowlane/log.h"
#include "slowlane/util.h"

#define MAX_EXTRA_HEADERS 4
#define RUN_MAX_MS 250
#define DISCARD_MAX ((uint64_t)64 << 20) /* over-limit bytes read before a 413 */

/* One TCP connection (MHD's socket context). */
struct http_conn {
	struct http_conn *prev, *next; /* on srv->waiting while `waiting` */
	ev_tstamp since;   /* began waiting for a header (loop time) */
	MHD_socket fd;
	bool waiting;
};

struct http_server {
	struct ev_loop *loop;
	struct MHD_Daemon *mhd;
	ev_io io;          /* MHD's epoll fd */
	ev_timer timer;    /* MHD's timeout */
	ev_prepare prep;   /* resumes answered requests */
	ev_timer header_timer; /* the oldest waiting connection's deadline */
	struct http_conn *wait_head, *wait_tail; /* oldest first */
	bool stopping;     /* http_stop runs: arm no timer */
	const struct http_route *routes;
	size_t n_routes;
	void *ctx;
	struct http_opts o;
	uint16_t port;
	struct http_req *resume; /* answered while suspended */
	unsigned suspended;
};

enum req_phase {
	REQ_READING,   /* collecting the body */
	REQ_SUSPENDED, /* handler answers later */
	REQ_ANSWERED,  /* response ready to queue */
	REQ_QUEUED,    /* handed to MHD */
};

struct http_req {
	struct http_server *srv;
	struct MHD_Connection *conn;
	const char *method, *path; /* MHD's, valid for the request */
	struct sl_buf body;
	bool too_big;
	const char *bad_request;   /* malformed at the HTTP level: why */
	enum req_phase phase;
	const char *captures[HTTP_MAX_CAPTURES];
	char *path_copy;           /* captures point into this */
	const struct http_route *route; /* matched at the first call, or NULL */
	char allow[64];            /* methods allowed on this path, for 405 */
	struct MHD_PostProcessor *pp; /* streamed (part) routes */
	size_t received;           /* streamed bytes so far */
	bool stop_parts;           /* the part callback asked to stop */
	void *data;
	void (*cleanup)(void *data);
	/* the answer */
	int status;
	const char *content_type;
	char *resp;
	size_t resp_len;
	int resp_fd;               /* >= 0: answer with this file instead */
	uint64_t resp_fd_size;
	char *hdr[MAX_EXTRA_HEADERS][2];
	unsigned n_hdr;
	struct http_req *next_resume;
};

static void http_run(struct http_server *srv);

/* ---- request accessors ---- */

void http_req_set_data(struct http_req *r, void *data) { r->data = data; }
void *http_req_data(const struct http_req *r) { return r->data; }
void http_req_set_cleanup(struct http_req *r, void (*fn)(void *)) { r->cleanup = fn; }

const char *
http_req_capture(const struct http_req *r, unsigned i)
{
	return i < HTTP_MAX_CAPTURES ? r->captures[i] : NULL;
}

const char *
http_req_header(const struct http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *
http_req_query(const struct http_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool
http_req_too_big(const struct http_req *r)
{
	return r->too_big;
}

const char *
http_req_body(const struct http_req *r, size_t *len)
{
	if (len)
		*len = r->body.len;
	return r->body.data ? r->body.data : "";
}

/* ---- answers ---- */

void
http_add_header(struct http_req *r, const char *name, const char *value)
{
	if (r->n_hdr >= MAX_EXTRA_HEADERS)
		return;
	r->hdr[r->n_hdr][0] = strdup(name);
	r->hdr[r->n_hdr][1] = strdup(value);
	r->n_hdr++;
}

void
http_reply(struct http_req *r, int status, const char *content_type, char *body, size_t len)
{
	struct http_server *srv = r->srv;

	if (r->phase == REQ_ANSWERED || r->phase == REQ_QUEUED) {
		free(body); /* a second answer is a bug; keep the first */
		return;
	}
	r->status = status;
	r->content_type = content_type;
	r->resp = body;
	r->resp_len = len;
	if (r->phase == REQ_SUSPENDED) {
		r->next_resume = srv->resume;
		srv->resume = r;
	}
	r->phase = REQ_ANSWERED;
}

void
http_reply_fd(struct http_req *r, int status, const char *content_type, int fd, uint64_t size)
{
	r->resp_fd = fd;
	r->resp_fd_size = size;
	http_reply(r, status, content_type, NULL, 0);
}

void
http_reply_json(struct http_req *r, int status, json_t *obj)
{
	char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;

	json_decref(obj);
	if (!s) {
		static const char oom[] = "{\"error\":{\"message\":\"out of memory\","
		    "\"type\":\"server_error\",\"param\":null,\"code\":null}}";
		s = strdup(oom);
		status = 500;
	}
	http_reply(r, status, "application/json", s, s ? strlen(s) : 0);
}

void
http_reply_error(struct http_req *r, const struct sl_error *e)
{
	json_t *o = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", e->message,
	    "type", e->type, "param", e->param, "code", e->code);

	http_reply_json(r, e->status, o);
}

static void
queue_answer(struct http_req *r)
{
	struct MHD_Response *resp;

	if (r->resp_fd >= 0) {
		resp = MHD_create_response_from_fd64(r->resp_fd_size, r->resp_fd);
		if (resp)
			r->resp_fd = -1; /* MHD closes it */
	} else {
		resp = MHD_create_response_from_buffer(r->resp_len, r->resp ? r->resp : (char *)"",
		    r->resp ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	}
	if (!resp)
		return;
	r->resp = NULL; /* MHD owns it now */
	if (r->content_type)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
	for (unsigned i = 0; i < r->n_hdr; i++)
		MHD_add_response_header(resp, r->hdr[i][0], r->hdr[i][1]);
	MHD_queue_response(r->conn, (unsigned)r->status, resp);
	MHD_destroy_response(resp);
	r->phase = REQ_QUEUED;
}

static void
simple_error(struct http_req *r, int status, const char *type, const char *code,
    const char *msg)
{
	struct sl_error e;

	sl_error_set(&e, status, type, NULL, code, "%s", msg);
	http_reply_error(r, &e);
}

/* ---- routing ---- */

/* Matches `path` against `pattern`, filling captures into r->path_copy. */
static bool
route_match(struct http_req *r, const char *pattern)
{
	const char *p = pattern, *u = r->path;
	unsigned nc = 0;

	while (*p && *u) {
		if (*p == '*') {
			size_t n = strcspn(u, "/");
			if (n == 0 || nc >= HTTP_MAX_CAPTURES)
				return false;
			r->captures[nc++] = r->path_copy + (u - r->path);
			p++;
			u += n;
			continue;
		}
		if (*p != *u)
			return false;
		p++;
		u++;
	}
	if (*p || *u)
		return false;
	/* Cut each capture at its '/'. */
	for (unsigned i = 0; i < nc; i++) {
		char *c = (char *)r->captures[i];
		c[strcspn(c, "/")] = '\0';
	}
	return true;
}

/* Finds the route of `r` (at its first call, before any body). HEAD takes
 * the GET route (RFC 9110 9.3.2); libmicrohttpd sends no body for it. */
static void
route_find(struct http_req *r)
{
	struct http_server *srv = r->srv;
	bool head = strcmp(r->method, "HEAD") == 0;

	r->path_copy = strdup(r->path);
	if (!r->path_copy)
		return;
	for (size_t i = 0; i < srv->n_routes; i++) {
		const struct http_route *rt = &srv->routes[i];
		memset(r->captures, 0, sizeof r->captures);
		strcpy(r->path_copy, r->path);
		if (!route_match(r, rt->pattern))
			continue;
		if (strcmp(rt->method, r->method) == 0 || (head && strcmp(rt->method, "GET") == 0)) {
			r->route = rt;
			return;
		}
		if (!strstr(r->allow, rt->method) &&
		    strlen(r->allow) + strlen(rt->method) + 3 < sizeof r->allow) {
			if (r->allow[0])
				strcat(r->allow, ", ");
			strcat(r->allow, rt->method);
		}
	}
	memset(r->captures, 0, sizeof r->captures);
}

/* Runs the handler, or answers 404/405. */
static void
dispatch(struct http_req *r)
{
	char msg[200];

	if (r->route) {
		r->route->fn(r, r->srv->ctx);
		return;
	}
	if (!r->path_copy) {
		simple_error(r, 500, "server_error", NULL, "out of memory");
	} else if (r->allow[0]) {
		snprintf(msg, sizeof msg, "Method %s is not allowed on %.80s (allowed: %s).",
		    r->method, r->path, r->allow);
		http_add_header(r, "Allow", r->allow);
		simple_error(r, 405, "invalid_request_error", "method_not_allowed", msg);
	} else {
		snprintf(msg, sizeof msg, "Unknown request URL: %s %.120s.", r->method, r->path);
		simple_error(r, 404, "invalid_request_error", "unknown_url", msg);
	}
}

static enum MHD_Result
post_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
    const char *content_type, const char *transfer_encoding, const char *data, uint64_t off,
    size_t size)
{
	struct http_req *r = cls;

	if (r->stop_parts)
		return MHD_NO;
	/* A part whose Content-Disposition has no name= reaches us with key
	 * NULL (found by tests/fuzz/fuzz_multipart): it names no field of
	 * ours, so it is skipped; the part callbacks never see NULL. */
	if (!key)
		return MHD_YES;
	if (r->route->part(r, r->srv->ctx, key, filename, data, off, size)) {
		r->stop_parts = true;
		return MHD_NO;
	}
	return MHD_YES;
}

/* Feeds a streamed body to the route's part callback. */
static void
stream_body(struct http_req *r, const char *data, size_t len)
{
	struct http_server *srv = r->srv;

	r->received += len;
	if (r->received > srv->o.max_upload) {
		r->too_big = true;
		return;
	}
	if (r->stop_parts)
		return;
	if (!r->pp) {
		r->pp = MHD_create_post_processor(r->conn, 65536, post_iter, r);
		if (!r->pp) { /* not a form body: the handler sees no parts */
			r->stop_parts = true;
			return;
		}
	}
	if (MHD_post_process(r->pp, data, len) != MHD_YES)
		r->stop_parts = true;
}

/* ---- header deadline ---- */

static void
wait_unlink(struct http_server *srv, struct http_conn *hc)
{
	if (!hc->waiting)
		return;
	*(hc->prev ? &hc->prev->next : &srv->wait_head) = hc->next;
	*(hc->next ? &hc->next->prev : &srv->wait_tail) = hc->prev;
	hc->prev = hc->next = NULL;
	hc->waiting = false;
}

/* Arms the timer for the oldest waiting connection unless it runs already:
 * firing early for a connection that left the list meanwhile is harmless. */
static void
wait_arm(struct http_server *srv)
{
	ev_tstamp due;

	if (!srv->wait_head || srv->stopping || ev_is_active(&srv->header_timer))
		return;
	due = srv->wait_head->since + srv->o.conn_timeout_s - ev_now(srv->loop);
	ev_timer_set(&srv->header_timer, due > 0.01 ? due : 0.01, 0.);
	ev_timer_start(srv->loop, &srv->header_timer);
}

static void
wait_append(struct http_server *srv, struct http_conn *hc)
{
	wait_unlink(srv, hc);
	hc->since = ev_now(srv->loop);
	hc->prev = srv->wait_tail;
	*(srv->wait_tail ? &srv->wait_tail->next : &srv->wait_head) = hc;
	srv->wait_tail = hc;
	hc->waiting = true;
	wait_arm(srv);
}

static struct http_conn *
conn_of(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? ci->socket_context : NULL;
}

static void
header_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct http_server *srv = SL_CONTAINER_OF(w, struct http_server, header_timer);
	ev_tstamp limit = ev_now(loop) - srv->o.conn_timeout_s;
	struct http_conn *hc;
	unsigned cut = 0;

	while ((hc = srv->wait_head) && hc->since <= limit) {
		wait_unlink(srv, hc);
		/* MHD reads end-of-file next and closes the connection. */
		shutdown(hc->fd, SHUT_RDWR);
		cut++;
	}
	if (cut)
		log_debug("http: closed %u connection(s) that sent no complete header in %u s",
		    cut, srv->o.conn_timeout_s);
	wait_arm(srv);
	if (cut)
		http_run(srv);
}

static void
notify_conn_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	struct http_server *srv = cls;
	struct http_conn *hc = *socket_context;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		hc = calloc(1, sizeof *hc);
		if (!hc || !ci) {
			free(hc); /* no deadline for this one; the idle timeout stays */
			return;
		}
		hc->fd = ci->connect_fd;
		*socket_context = hc;
		wait_append(srv, hc);
	} else if (hc) {
		wait_unlink(srv, hc);
		free(hc);
		*socket_context = NULL;
	}
}

/* ---- MHD callbacks ---- */

static enum MHD_Result
access_cb(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct http_server *srv = cls;
	struct http_req *r = *con_cls;

	if (!r) {
		const char *cl;
		r = calloc(1, sizeof *r);
		if (!r)
			return MHD_NO;
		r->srv = srv;
		r->conn = conn;
		r->resp_fd = -1;
		r->method = method;
		r->path = url;
		sl_buf_init(&r->body, srv->o.max_body);
		*con_cls = r;
		struct http_conn *hc = conn_of(conn);
		if (hc)
			wait_unlink(srv, hc); /* the header is complete */
		route_find(r);
		cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
		    MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && strtoull(cl, NULL, 10) > (r->route && r->route->part ?
		    srv->o.max_upload : srv->o.max_body)) {
			r->too_big = true;
			/* Read and drop a body of sane size before answering:
			 * closing on a client still sending makes it see a reset,
			 * not our 413. A huge one is refused at once. */
			const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
			    MHD_HTTP_HEADER_EXPECT);
			/* A client waiting for 100 Continue has sent nothing yet:
			 * answer now rather than invite the body. */
			if (strtoull(cl, NULL, 10) > DISCARD_MAX || expect)
				goto answer;
		}
		if (strcmp(version, MHD_HTTP_VERSION_1_1) == 0 &&
		    !MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST)) {
			/* RFC 9112 3.2: 400, after the body */
			r->bad_request = "An HTTP/1.1 request needs a Host header.";
		}
		return MHD_YES;
	}
	if (r->phase == REQ_READING && *upload_data_size > 0) {
		r->received += r->too_big && !(r->route && r->route->part) ? *upload_data_size : 0;
		if (r->too_big && r->received > DISCARD_MAX)
			goto answer; /* enough: answer and let MHD close */
		if (r->route && r->route->part)
			stream_body(r, upload_data, *upload_data_size);
		else if (!r->too_big && sl_buf_append(&r->body, upload_data, *upload_data_size))
			r->too_big = true;
		*upload_data_size = 0;
		return MHD_YES;
	}
answer:
	if (r->phase == REQ_READING) {
		if (r->too_big && !(r->route && r->route->part)) {
			char msg[128];
			snprintf(msg, sizeof msg, "Request body is larger than the limit of "
			    "%zu bytes.", srv->o.max_body);
			sl_buf_release(&r->body);
			simple_error(r, 413, "invalid_request_error", "request_too_large", msg);
		} else if (r->bad_request) {
			simple_error(r, 400, "invalid_request_error", "bad_request",
			    r->bad_request);
		} else {
			dispatch(r);
		}
		if (r->phase == REQ_READING) {
			/* The handler will answer after a commit. */
			r->phase = REQ_SUSPENDED;
			srv->suspended++;
			MHD_suspend_connection(conn);
			return MHD_YES;
		}
	}
	if (r->phase == REQ_ANSWERED)
		queue_answer(r);
	return MHD_YES;
}

static void
completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct http_server *srv = cls;
	struct http_req *r = *con_cls;
	struct http_conn *hc;

	/* Kept alive: the next request's header is due within the timeout. */
	if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && (hc = conn_of(conn)))
		wait_append(srv, hc);
	if (!r)
		return;
	if (r->cleanup)
		r->cleanup(r->data);
	sl_buf_release(&r->body);
	if (r->pp)
		MHD_destroy_post_processor(r->pp);
	free(r->resp);
	if (r->resp_fd >= 0)
		close(r->resp_fd);
	free(r->path_copy);
	for (unsigned i = 0; i < r->n_hdr; i++) {
		free(r->hdr[i][0]);
		free(r->hdr[i][1]);
	}
	free(r);
	*con_cls = NULL;
}

static void
arm_timer(struct http_server *srv)
{
	MHD_UNSIGNED_LONG_LONG ms;

	ev_timer_stop(srv->loop, &srv->timer);
	/* Never longer than RUN_MAX_MS: at --max-connections MHD takes its
	 * listening socket out of its epoll set and puts it back only inside
	 * MHD_run, so with nothing else to wake us it would stay deaf. */
	if (MHD_get_timeout(srv->mhd, &ms) != MHD_YES || ms > RUN_MAX_MS)
		ms = RUN_MAX_MS;
	ev_timer_set(&srv->timer, (double)ms / 1000.0, 0.);
	ev_timer_start(srv->loop, &srv->timer);
}

static void
http_run(struct http_server *srv)
{
	MHD_run(srv->mhd);
	arm_timer(srv);
}

static void
io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	http_run(SL_CONTAINER_OF(w, struct http_server, io));
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	http_run(SL_CONTAINER_OF(w, struct http_server, timer));
}

static void
prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct http_server *srv = SL_CONTAINER_OF(w, struct http_server, prep);
	struct http_req *r;

	if (!srv->resume)
		return;
	while ((r = srv->resume)) {
		srv->resume = r->next_resume;
		srv->suspended--;
		MHD_resume_connection(r->conn);
	}
	http_run(srv);
}

int
http_start(struct ev_loop *loop, const struct http_opts *o, const struct http_route *routes,
    size_t n_routes, void *ctx, struct http_server **out)
{
	struct http_server *srv;
	struct sockaddr_storage ss;
	socklen_t slen;
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO;

	memset(&ss, 0, sizeof ss);
	if (inet_pton(AF_INET, o->host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(o->port);
		slen = sizeof *sin;
	} else if (inet_pton(AF_INET6, o->host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(o->port);
		slen = sizeof *sin6;
		flags |= MHD_USE_IPv6;
	} else {
		return -EINVAL;
	}
	(void)slen;
	srv = calloc(1, sizeof *srv);
	if (!srv)
		return -ENOMEM;
	srv->loop = loop;
	srv->routes = routes;
	srv->n_routes = n_routes;
	srv->ctx = ctx;
	srv->o = *o;
	srv->mhd = MHD_start_daemon(flags, o->port, NULL, NULL, access_cb, srv,
	    MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_NOTIFY_COMPLETED, completed_cb, srv,
	    MHD_OPTION_NOTIFY_CONNECTION, notify_conn_cb, srv,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->conn_timeout_s,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->conn_limit,
	    MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
	    /* MHD zeroes each connection's pool per request: keep it to what
	     * headers need (bodies go to our own buffer). Larger headers: 431. */
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384,
	    MHD_OPTION_END);
	if (!srv->mhd) {
		free(srv);
		return -EADDRINUSE;
	}
	info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
	srv->port = info ? info->port : o->port;
	info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info) {
		MHD_stop_daemon(srv->mhd);
		free(srv);
		return SL_ESTORE;
	}
	ev_io_init(&srv->io, io_cb, info->epoll_fd, EV_READ);
	ev_io_start(loop, &srv->io);
	ev_timer_init(&srv->timer, timer_cb, 0., 0.);
	ev_prepare_init(&srv->prep, prepare_cb);
	ev_timer_init(&srv->header_timer, header_timer_cb, 0., 0.);
	ev_prepare_start(loop, &srv->prep);
	arm_timer(srv);
	*out = srv;
	return 0;
}

uint16_t
http_port(const struct http_server *srv)
{
	return srv->port;
}

unsigned
http_suspended(const struct http_server *srv)
{
	return srv->suspended;
}

void
http_quiesce(struct http_server *srv)
{
	MHD_socket fd = MHD_quiesce_daemon(srv->mhd);

	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	http_run(srv);
}

void
http_stop(struct http_server *srv)
{
	if (!srv)
		return;
	/* Answers still waiting to be resumed go out first. */
	prepare_cb(srv->loop, &srv->prep, 0);
	ev_io_stop(srv->loop, &srv->io);
	ev_timer_stop(srv->loop, &srv->timer);
	srv->stopping = true;
	ev_timer_stop(srv->loop, &srv->header_timer);
	ev_prepare_stop(srv->loop, &srv->prep);
	MHD_stop_daemon(srv->mhd); /* closes every connection: frees their http_conn */
	free(srv);
}
