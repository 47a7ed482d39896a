/*
 * fuzz_multipart.c - the upload path on arbitrary bodies: the real HTTP
 * layer (http.c and libmicrohttpd's post processor, inside a libev loop)
 * streams a multipart/form-data body, the bytes being the fuzzer's, to a
 * part callback that does what POST /v1/files does with them (bounded field
 * copies, the JSONL scan of files.c). One server for the whole run; each
 * input is one request on a fresh loopback connection.
 *
 * The first byte picks the Content-Type (multipart with the boundary
 * "XyZ", multipart with a boundary the body must guess, urlencoded, or
 * none); the rest is the body. Checked: the server answers every request
 * (no hang: the loop is bounded), the parts never add up to more bytes than
 * were sent, and the scan's figures are consistent.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "slowlane/files.h"
#include "slowlane/http.h"
#include "slowlane/util.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t len);

#define FIELD_CAP 64

struct parts {
	size_t file_bytes, field_bytes, n_parts;
	char purpose[FIELD_CAP];
	struct files_jsonl scan;
};

static struct ev_loop *loop;
static struct http_server *srv;
static struct parts cur;
static size_t sent_body;

static int
on_part(struct http_req *r, void *ctx, const char *field, const char *filename,
    const char *data, uint64_t off, size_t len)
{
	(void)off;
	cur.n_parts++;
	if (!field)
		abort(); /* MHD always names the field */
	if (strcmp(field, "file") == 0) {
		cur.file_bytes += len;
		files_jsonl_feed(&cur.scan, data, len);
	} else {
		size_t have = strlen(cur.purpose), n = len;
		cur.field_bytes += len;
		if (have + n >= sizeof cur.purpose)
			n = sizeof cur.purpose - 1 - have;
		memcpy(cur.purpose + have, data, n);
		cur.purpose[have + n] = '\0';
	}
	if (cur.file_bytes + cur.field_bytes > sent_body)
		abort(); /* more bytes came out than went in */
	return 0;
}

static void
on_upload(struct http_req *r, void *ctx)
{
	char *msg;
	bool ok = files_jsonl_end(&cur.scan);

	if (ok && (cur.scan.lines == 0 || cur.scan.bad_line))
		abort();
	if (!ok && cur.scan.bad_line > cur.scan.lines + 1)
		abort();
	if (cur.scan.lines > cur.file_bytes)
		abort();
	msg = strdup("{}");
	http_reply(r, http_req_too_big(r) ? 413 : 200, "application/json", msg, msg ? 2 : 0);
}

static const struct http_route routes[] = {
	{ .method = "POST", .pattern = "/v1/files", .fn = on_upload, .part = on_part },
};

static void
setup(void)
{
	struct http_opts o = {
		.host = "127.0.0.1", .port = 0, .max_body = 1 << 20, .max_upload = 1 << 20,
		.conn_limit = 64, .conn_timeout_s = 5,
	};

	loop = ev_default_loop(0);
	if (http_start(loop, &o, routes, 1, NULL, &srv) != 0)
		abort();
}

/* Sends `req` on a new connection and runs the loop until the server has
 * answered and closed it. Aborts if that takes more than ~5 s of loop. */
static void
exchange(const char *req, size_t len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(http_port(srv)) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	size_t off = 0;
	bool eof = false;
	char buf[4096];

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
		abort();
	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (int turns = 0; !eof; turns++) {
		if (turns > 50000)
			abort(); /* the server never finished this request */
		while (off < len) {
			ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
			if (n <= 0)
				break;
			off += (size_t)n;
			if (off == len)
				shutdown(fd, SHUT_WR); /* nothing more is coming */
		}
		ev_run(loop, EVRUN_NOWAIT);
		for (;;) {
			ssize_t n = recv(fd, buf, sizeof buf, 0);
			if (n > 0)
				continue;
			if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
				eof = true;
			break;
		}
		if (!eof)
			usleep(turns < 100 ? 0 : 100);
	}
	close(fd);
	ev_run(loop, EVRUN_NOWAIT); /* let MHD see the close */
}

int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t len)
{
	static const char *const types[] = {
		"multipart/form-data; boundary=XyZ",
		"multipart/form-data; boundary=\"a b\"",
		"application/x-www-form-urlencoded",
		NULL,
	};
	const char *type;
	char head[256];
	char *req;
	int hlen;

	if (!srv)
		setup();
	if (len == 0)
		return 0;
	type = types[data[0] % 4];
	data++;
	len--;
	hlen = snprintf(head, sizeof head, "POST /v1/files HTTP/1.1\r\nHost: x\r\n"
	    "Connection: close\r\n%s%s%sContent-Length: %zu\r\n\r\n",
	    type ? "Content-Type: " : "", type ? type : "", type ? "\r\n" : "", len);
	req = malloc((size_t)hlen + len + 1);
	if (!req)
		return 0;
	memcpy(req, head, (size_t)hlen);
	memcpy(req + hlen, data, len);
	memset(&cur, 0, sizeof cur);
	files_jsonl_init(&cur.scan);
	sent_body = len;
	exchange(req, (size_t)hlen + len);
	free(req);
	return 0;
}
