/*
 * upstream.c - the backend that calls an OpenAI-compatible server over
 * HTTP (httpc.h): POST <base_url><path> with the job's body, keep-alive
 * connections pooled, at most `max_connections` per upstream.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/backend.h"
#include "slowlane/common.h"
#include "slowlane/httpc.h"
#include "slowlane/log.h"

struct upstream {
	struct backend base;
	struct httpc *http;
	struct upstream_opts o;
	char *base_url;
	char auth[1100];
	const char *headers[3];
};

/* One call in flight: the httpc request and its URL. */
struct up_call {
	struct httpc_req req;
	struct be_call *call;
	char url[2048];
};

static const enum be_fault fault_map[] = {
	[HTTPC_OK] = BE_OK, [HTTPC_CONNECT] = BE_CONNECT, [HTTPC_TIMEOUT] = BE_TIMEOUT,
	[HTTPC_TOO_LARGE] = BE_TOO_LARGE, [HTTPC_REFUSED] = BE_CONNECT,
};

static void
req_done(struct httpc_req *r, const struct httpc_result *res)
{
	struct up_call *uc = SL_CONTAINER_OF(r, struct up_call, req);
	struct be_call *call = uc->call;
	struct be_result br = {
		.fault = fault_map[res->fault], .http_status = res->status, .body = res->body,
		.body_len = res->body_len, .retry_after_ms = res->retry_after_ms,
		.detail = res->detail,
	};

	if (res->fault != HTTPC_OK)
		log_warn("upstream: %s: %s", call->path, res->detail);
	call->impl = NULL;
	free(uc);
	call->done(call, &br);
}

static int
up_start(struct backend *b, struct be_call *c)
{
	struct upstream *up = (struct upstream *)b;
	struct up_call *uc = calloc(1, sizeof *uc);
	int rc;

	if (!uc)
		return -ENOMEM;
	uc->call = c;
	snprintf(uc->url, sizeof uc->url, "%s%s", up->base_url, c->path);
	uc->req.url = uc->url;
	uc->req.body = c->body;
	uc->req.body_len = c->body_len;
	uc->req.headers = up->headers;
	uc->req.timeout_ms = up->o.timeout_ms;
	uc->req.max_response = up->o.max_response;
	uc->req.done = req_done;
	rc = httpc_start(up->http, &uc->req);
	if (rc) {
		free(uc);
		return rc;
	}
	c->impl = uc;
	return 0;
}

static void
up_cancel(struct backend *b, struct be_call *c)
{
	struct upstream *up = (struct upstream *)b;
	struct up_call *uc = c->impl;

	if (!uc)
		return;
	httpc_cancel(up->http, &uc->req);
	free(uc);
	c->impl = NULL;
}

static void
up_free(struct backend *b)
{
	struct upstream *up = (struct upstream *)b;

	if (!up)
		return;
	httpc_free(up->http);
	free(up->base_url);
	free(up);
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
	struct upstream *up = calloc(1, sizeof *up);
	size_t n, h = 0;
	int rc;

	if (!up)
		return -ENOMEM;
	up->base.ops = &upstream_ops;
	up->o = *o;
	up->base_url = strdup(o->base_url);
	if (!up->base_url) {
		free(up);
		return -ENOMEM;
	}
	n = strlen(up->base_url);
	while (n > 0 && up->base_url[n - 1] == '/')
		up->base_url[--n] = '\0';
	up->headers[h++] = "Content-Type: application/json";
	if (o->api_key && *o->api_key) {
		snprintf(up->auth, sizeof up->auth, "Authorization: Bearer %s", o->api_key);
		up->headers[h++] = up->auth;
	}
	up->headers[h] = NULL;
	rc = httpc_new(loop, o->max_connections, &up->http);
	if (rc) {
		free(up->base_url);
		free(up);
		return rc;
	}
	*out = &up->base;
	return 0;
}
