/*
 * mock-upstream: a standalone OpenAI-compatible inference server for slowlane's functional
 * tests, crash tests and benchmarks. It answers chat and legacy completions by echoing the
 * last user message (or prompt) back, and misbehaves on demand: globally through command-line
 * rates (latency, failures, hangs, garbage bodies) or per request through "[mock:...]"
 * directives embedded in the echoed text, so a test can make exactly one job fail, stall or
 * hang. GET /_mock/stats reports what was received so tests can assert on it.
 *
 * Slow and hung answers never hold a thread: the connection is suspended and one timer
 * thread resumes it when due, so thousands of slow calls can be open at the same time.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#define MAX_BODY	((size_t)16 << 20)
#define MAX_PAD		((long)256 << 20)
#define RECHECK_MS	1000
#define EXIT_GRACE_S	3
#define ID_LEN		24
#define JSON_TYPE	"application/json"
#define GARBAGE_BODY	"this is not json {"

struct options {
	const char *listen;
	const char *port_file;
	long latency_ms;
	long jitter_ms;
	double fail_rate;
	double hang_rate;
	double garbage_rate;
	long fail_status;
	long retry_after;	/* -1: no Retry-After header */
	long threads;
	bool have_seed;
	unsigned long long seed;
};

static struct options opt = {
	.listen = "127.0.0.1:0",
	.fail_status = 500,
	.retry_after = -1,
};

struct listen_addr {
	struct sockaddr_storage ss;
	bool v6;
	unsigned port;
	char host[256];
};

/* A growable byte buffer; p stays NULL until the first byte arrives. */
struct buf {
	char *p;
	size_t len;
	size_t cap;
};

/* Per-request state, MHD's con_cls. */
struct req {
	struct MHD_Connection *conn;
	struct buf body;
	bool too_big;
	bool in_flight;		/* counted in stats.in_flight until the request completes */
	bool hung;		/* never answered */
	bool abort;		/* set at shutdown: drop the connection when resumed */
	unsigned status;
	uint64_t due;		/* when resp may be sent */
	struct MHD_Response *resp;	/* answer waiting for its due time */
};

struct directives {
	long fail;		/* -1: every call with this body misbehaves */
	long status;		/* 0: none */
	long retry_after;	/* -1: none */
	long delay;		/* -1: use --latency and --jitter */
	long big;
	bool hang;
	bool garbage;
};

enum answer { ANSWER_OK, ANSWER_FAIL, ANSWER_HANG, ANSWER_GARBAGE };

/* What the completion handlers pull out of a request body. */
struct call {
	json_t *root;
	json_t *model;
	struct buf echo;
	bool have_echo;
	long prompt_words;
};

static struct {
	pthread_mutex_t lock;
	long long calls;
	long long with_metadata;
	long long in_flight;
	long long max_in_flight;	/* the most in flight at once since the last reset */
	char *last_auth;
	json_t *by_echo;
	json_t *fail_counts;	/* SHA-256 hex of a body -> calls seen, for fail=N */
} stats = { .lock = PTHREAD_MUTEX_INITIALIZER };

struct due {
	uint64_t at;
	struct req *r;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	struct due *heap;
	size_t n;
	size_t cap;
	bool stopping;
} timer = { .lock = PTHREAD_MUTEX_INITIALIZER };

static _Atomic uint64_t rng_state;

/* splitmix64: one atomic add per draw keeps it lock-free across MHD worker threads. */
static uint64_t rng_next(void)
{
	const uint64_t gamma = 0x9e3779b97f4a7c15ULL;
	uint64_t z = atomic_fetch_add(&rng_state, gamma) + gamma;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double rng_percent(void)
{
	return (double)(rng_next() >> 11) * 0x1.0p-53 * 100.0;
}

static void random_id(char *out, size_t size)
{
	static const char alphabet[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	size_t i;

	for (i = 0; i + 1 < size; i++)
		out[i] = alphabet[rng_next() % (sizeof alphabet - 1)];
	out[size - 1] = '\0';
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int buf_add(struct buf *b, const void *data, size_t n)
{
	size_t cap = b->cap ? b->cap : 256;
	char *p;

	if (!n)
		return 0;
	while (cap - b->len < n + 1)
		cap *= 2;
	if (cap != b->cap) {
		p = realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static const char *buf_str(const struct buf *b)
{
	return b->p ? b->p : "";
}

static long count_words(const char *s, size_t n)
{
	bool in_word = false;
	long words = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		bool space = isspace((unsigned char)s[i]);

		if (!space && !in_word)
			words++;
		in_word = !space;
	}
	return words;
}

/* Parses a whole decimal number within [lo, hi]; n bounds s, which need not be terminated. */
static bool parse_num(const char *s, size_t n, long lo, long hi, long *out)
{
	char tmp[32];
	char *end;
	long v;

	if (!n || n >= sizeof tmp)
		return false;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	errno = 0;
	v = strtol(tmp, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* ---- statistics ---- */

/* Returns the new count. On allocation failure it still reports a first call, which for
 * fail=N errs towards misbehaving, the visible choice. */
static long long counter_bump(json_t *obj, const char *key, size_t klen)
{
	json_t *v = json_object_getn(obj, key, klen);

	if (v) {
		json_integer_set(v, json_integer_value(v) + 1);
		return json_integer_value(v);
	}
	json_object_setn_new_nocheck(obj, key, klen, json_integer(1));
	return 1;
}

static void stats_record(const struct call *c, const char *auth)
{
	char *auth_copy = auth ? strdup(auth) : NULL;
	bool metadata = c->root && json_object_get(c->root, "metadata");

	pthread_mutex_lock(&stats.lock);
	stats.calls++;
	stats.in_flight++;
	if (stats.in_flight > stats.max_in_flight)
		stats.max_in_flight = stats.in_flight;
	if (metadata)
		stats.with_metadata++;
	free(stats.last_auth);
	stats.last_auth = auth_copy;
	if (c->have_echo)
		counter_bump(stats.by_echo, buf_str(&c->echo), c->echo.len);
	pthread_mutex_unlock(&stats.lock);
}

static void stats_reset(void)
{
	pthread_mutex_lock(&stats.lock);
	stats.calls = 0;
	stats.with_metadata = 0;
	stats.max_in_flight = stats.in_flight;
	free(stats.last_auth);
	stats.last_auth = NULL;
	json_object_clear(stats.by_echo);
	json_object_clear(stats.fail_counts);
	pthread_mutex_unlock(&stats.lock);
}

static long long fail_count_bump(const struct buf *body)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	char key[2 * EVP_MAX_MD_SIZE + 1];
	unsigned int mdlen = 0, i;
	long long n;

	if (!EVP_Digest(buf_str(body), body->len, md, &mdlen, EVP_sha256(), NULL))
		return 1;
	for (i = 0; i < mdlen; i++) {
		key[2 * i] = hex[md[i] >> 4];
		key[2 * i + 1] = hex[md[i] & 15];
	}
	key[2 * mdlen] = '\0';
	pthread_mutex_lock(&stats.lock);
	n = counter_bump(stats.fail_counts, key, 2 * mdlen);
	pthread_mutex_unlock(&stats.lock);
	return n;
}

/* ---- timer: resumes suspended connections when their answer is due ---- */

static void heap_swap(size_t a, size_t b)
{
	struct due t = timer.heap[a];

	timer.heap[a] = timer.heap[b];
	timer.heap[b] = t;
}

static void heap_push(uint64_t at, struct req *r)
{
	size_t i = timer.n++;

	timer.heap[i] = (struct due){ .at = at, .r = r };
	while (i && timer.heap[(i - 1) / 2].at > timer.heap[i].at) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static struct req *heap_pop(void)
{
	struct req *r = timer.heap[0].r;
	size_t i = 0;

	timer.heap[0] = timer.heap[--timer.n];
	for (;;) {
		size_t l = 2 * i + 1, m = i;

		if (l < timer.n && timer.heap[l].at < timer.heap[m].at)
			m = l;
		if (l + 1 < timer.n && timer.heap[l + 1].at < timer.heap[m].at)
			m = l + 1;
		if (m == i)
			return r;
		heap_swap(i, m);
		i = m;
	}
}

static int heap_reserve(void)
{
	size_t cap = timer.cap ? 2 * timer.cap : 1024;
	struct due *h;

	if (timer.n < timer.cap)
		return 0;
	h = realloc(timer.heap, cap * sizeof *h);
	if (!h)
		return -1;
	timer.heap = h;
	timer.cap = cap;
	return 0;
}

/*
 * Suspends under the timer lock so the timer can never resume a connection that is not yet
 * suspended, and so nothing is parked once shutdown has begun (it would never be resumed).
 */
static bool schedule(struct req *r, uint64_t at)
{
	bool ok = false;

	pthread_mutex_lock(&timer.lock);
	if (timer.stopping || heap_reserve())
		goto out;
	MHD_suspend_connection(r->conn);
	heap_push(at, r);
	if (timer.heap[0].r == r)
		pthread_cond_signal(&timer.wake);
	ok = true;
out:
	pthread_mutex_unlock(&timer.lock);
	return ok;
}

static void *timer_main(void *arg)
{
	struct req *r;

	(void)arg;
	pthread_mutex_lock(&timer.lock);
	while (!timer.stopping) {
		if (!timer.n) {
			pthread_cond_wait(&timer.wake, &timer.lock);
		} else if (timer.heap[0].at > now_ms()) {
			struct timespec ts = {
				.tv_sec = (time_t)(timer.heap[0].at / 1000),
				.tv_nsec = (long)(timer.heap[0].at % 1000) * 1000000,
			};

			pthread_cond_timedwait(&timer.wake, &timer.lock, &ts);
		} else {
			/* Unlocked resume: MHD may call back into schedule() meanwhile. */
			r = heap_pop();
			pthread_mutex_unlock(&timer.lock);
			MHD_resume_connection(r->conn);
			pthread_mutex_lock(&timer.lock);
		}
	}
	/* MHD_stop_daemon must not see suspended connections, so release them all. */
	while (timer.n) {
		r = heap_pop();
		r->abort = true;
		pthread_mutex_unlock(&timer.lock);
		MHD_resume_connection(r->conn);
		pthread_mutex_lock(&timer.lock);
	}
	pthread_mutex_unlock(&timer.lock);
	return NULL;
}

static int timer_start(void)
{
	pthread_condattr_t attr;
	int err;

	err = pthread_condattr_init(&attr);
	if (err)
		goto out;
	err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (!err)
		err = pthread_cond_init(&timer.wake, &attr);
	pthread_condattr_destroy(&attr);
	if (err)
		goto out;
	err = pthread_create(&timer.thread, NULL, timer_main, NULL);
	if (err)
		pthread_cond_destroy(&timer.wake);
out:
	if (err)
		fprintf(stderr, "mock-upstream: timer thread: %s\n", strerror(err));
	return err ? -1 : 0;
}

static void timer_stop(void)
{
	pthread_mutex_lock(&timer.lock);
	timer.stopping = true;
	pthread_cond_signal(&timer.wake);
	pthread_mutex_unlock(&timer.lock);
	pthread_join(timer.thread, NULL);
	pthread_cond_destroy(&timer.wake);
	free(timer.heap);
}

/* ---- responses ---- */

/* Takes ownership of s, which must come from malloc. */
static struct MHD_Response *text_response(char *s, size_t n, const char *type)
{
	struct MHD_Response *resp;

	resp = MHD_create_response_from_buffer(n, s, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(s);
		return NULL;
	}
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type) == MHD_NO) {
		MHD_destroy_response(resp);
		return NULL;
	}
	return resp;
}

/*
 * Steals body. The pad is spliced in after serialising: 'x' needs no escaping, and this
 * avoids holding a second copy of a possibly huge string.
 */
static struct MHD_Response *json_response(json_t *body, long pad)
{
	static const char key[] = ",\"pad\":\"";
	char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
	char *out = NULL;
	size_t n, total = 0;

	json_decref(body);
	if (!s)
		return NULL;
	n = strlen(s);
	if (pad <= 0 || n < 2)
		return text_response(s, n, JSON_TYPE);
	total = n - 1 + (sizeof key - 1) + (size_t)pad + 2;
	out = malloc(total);
	if (!out)
		goto out;
	memcpy(out, s, n - 1);
	memcpy(out + n - 1, key, sizeof key - 1);
	memset(out + n - 1 + sizeof key - 1, 'x', (size_t)pad);
	memcpy(out + total - 2, "\"}", 2);
out:
	free(s);
	return out ? text_response(out, total, JSON_TYPE) : NULL;
}

static json_t *error_json(const char *msg, const char *type, const char *code)
{
	return json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message", msg, "type", type,
			 "param", "code", code);
}

static enum MHD_Result queue(struct req *r, unsigned status, struct MHD_Response *resp)
{
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	ret = MHD_queue_response(r->conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result reply_error(struct req *r, unsigned status, const char *msg)
{
	return queue(r, status, json_response(error_json(msg, "invalid_request_error", NULL), 0));
}

/* A suspended connection sees no socket events, so peek to learn whether the client left. */
static bool peer_gone(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info;
	char c;
	ssize_t n;

	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (!info)
		return true;
	n = recv(info->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0)
		return false;
	return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/*
 * Called again each time the timer resumes a parked connection. Long waits wake every
 * RECHECK_MS so a client that gave up is dropped (and leaves in_flight) promptly, as it
 * would be by a real upstream, instead of when the answer falls due.
 */
static enum MHD_Result park_or_answer(struct req *r)
{
	uint64_t now = now_ms();
	struct MHD_Response *resp = r->resp;

	if (resp && now >= r->due) {
		r->resp = NULL;
		return queue(r, r->status, resp);
	}
	if (peer_gone(r->conn))
		return MHD_NO;
	if (!schedule(r, r->due - now < RECHECK_MS ? r->due : now + RECHECK_MS))
		return MHD_NO;
	return MHD_YES;
}

/* Answers now, or parks the connection until the answer is due. */
static enum MHD_Result deliver(struct req *r, unsigned status, struct MHD_Response *resp,
			       long delay_ms)
{
	if (!resp)
		return MHD_NO;
	if (delay_ms <= 0)
		return queue(r, status, resp);
	r->resp = resp;
	r->status = status;
	r->due = now_ms() + (uint64_t)delay_ms;
	return park_or_answer(r);
}

static enum MHD_Result hang(struct req *r)
{
	r->hung = true;
	r->due = UINT64_MAX;
	return park_or_answer(r);
}

/* ---- directives ---- */

static bool key_is(const char *k, size_t n, const char *want)
{
	return strlen(want) == n && !memcmp(k, want, n);
}

static void trim(const char **s, const char **e)
{
	while (*s < *e && isspace((unsigned char)**s))
		(*s)++;
	while (*e > *s && isspace((unsigned char)(*e)[-1]))
		(*e)--;
}

/* Malformed values are ignored so a typo degrades to a normal answer rather than a crash. */
static void apply_directive(const char *k, size_t kn, const char *v, size_t vn,
			    struct directives *d)
{
	if (key_is(k, kn, "hang"))
		d->hang = true;
	else if (key_is(k, kn, "invalid-json"))
		d->garbage = true;
	else if (key_is(k, kn, "fail"))
		parse_num(v, vn, 0, LONG_MAX, &d->fail);
	else if (key_is(k, kn, "status"))
		parse_num(v, vn, 100, 599, &d->status);
	else if (key_is(k, kn, "retry-after"))
		parse_num(v, vn, 0, LONG_MAX, &d->retry_after);
	else if (key_is(k, kn, "delay"))
		parse_num(v, vn, 0, LONG_MAX / 2, &d->delay);
	else if (key_is(k, kn, "big"))
		parse_num(v, vn, 0, MAX_PAD, &d->big);
}

static void parse_directive_list(const char *p, const char *end, struct directives *d)
{
	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *te = comma ? comma : end;
		const char *eq = memchr(p, '=', (size_t)(te - p));
		const char *ks = p, *ke = eq ? eq : te, *vs = eq ? eq + 1 : te, *ve = te;

		trim(&ks, &ke);
		trim(&vs, &ve);
		apply_directive(ks, (size_t)(ke - ks), vs, (size_t)(ve - vs), d);
		p = te + 1;
	}
}

static void parse_directives(const char *s, size_t n, struct directives *d)
{
	static const char open[] = "[mock:";
	const char *end = s + n, *p = s, *close;

	*d = (struct directives){ .fail = -1, .retry_after = -1, .delay = -1 };
	while ((p = memmem(p, (size_t)(end - p), open, sizeof open - 1))) {
		p += sizeof open - 1;
		close = memchr(p, ']', (size_t)(end - p));
		if (!close)
			return;
		parse_directive_list(p, close, d);
		p = close + 1;
	}
}

/*
 * Directives that pick an outcome make the request deterministic, so the global random rates
 * do not apply to it; "fail=N" then "succeeds normally" means exactly that.
 */
static enum answer decide(const struct directives *d, const struct buf *body, long *status)
{
	double roll;

	if (d->fail >= 0 || d->status || d->hang || d->garbage) {
		if (d->fail >= 0 && fail_count_bump(body) > d->fail)
			return ANSWER_OK;
		*status = d->status ? d->status : 500;
		return d->hang ? ANSWER_HANG : d->garbage ? ANSWER_GARBAGE : ANSWER_FAIL;
	}
	roll = rng_percent();
	*status = opt.fail_status;
	if (roll < opt.hang_rate)
		return ANSWER_HANG;
	if (roll < opt.hang_rate + opt.fail_rate)
		return ANSWER_FAIL;
	if (roll < opt.hang_rate + opt.fail_rate + opt.garbage_rate)
		return ANSWER_GARBAGE;
	return ANSWER_OK;
}

static long pick_delay(const struct directives *d)
{
	if (d && d->delay >= 0)
		return d->delay;
	if (opt.jitter_ms <= 0)
		return opt.latency_ms;
	return opt.latency_ms + (long)(rng_next() % ((uint64_t)opt.jitter_ms + 1));
}

/* ---- completion endpoints ---- */

/* Content is a string or an array of parts; only "text" parts carry text. */
static int content_text(json_t *content, struct buf *out)
{
	json_t *part;
	size_t i;

	if (json_is_string(content))
		return buf_add(out, json_string_value(content), json_string_length(content));
	json_array_foreach(content, i, part) {
		const char *type = json_string_value(json_object_get(part, "type"));
		json_t *text = json_object_get(part, "text");

		if (type && !strcmp(type, "text") && json_is_string(text) &&
		    buf_add(out, json_string_value(text), json_string_length(text)))
			return -1;
	}
	return 0;
}

static int parse_chat(struct call *c)
{
	json_t *messages = json_object_get(c->root, "messages"), *msg, *last = NULL;
	struct buf tmp = { 0 };
	int err = 0;
	size_t i;

	json_array_foreach(messages, i, msg) {
		const char *role = json_string_value(json_object_get(msg, "role"));

		tmp.len = 0;
		err = content_text(json_object_get(msg, "content"), &tmp);
		if (err)
			goto out;
		c->prompt_words += count_words(buf_str(&tmp), tmp.len);
		if (role && !strcmp(role, "user"))
			last = msg;
	}
	c->have_echo = true;
	if (last)
		err = content_text(json_object_get(last, "content"), &c->echo);
out:
	free(tmp.p);
	return err;
}

static int parse_legacy(struct call *c)
{
	json_t *prompt = json_object_get(c->root, "prompt");

	if (json_is_array(prompt))
		prompt = json_array_get(prompt, 0);
	c->have_echo = true;
	if (!json_is_string(prompt))
		return 0;
	c->prompt_words = count_words(json_string_value(prompt), json_string_length(prompt));
	return buf_add(&c->echo, json_string_value(prompt), json_string_length(prompt));
}

/* Returns the message for a 400 answer, or NULL when the request is usable. */
static const char *parse_call(const struct req *r, bool chat, struct call *c)
{
	json_error_t jerr;

	c->root = json_loadb(buf_str(&r->body), r->body.len, JSON_ALLOW_NUL, &jerr);
	if (!json_is_object(c->root)) {
		json_decref(c->root);
		c->root = NULL;
		return "We could not parse the JSON body of your request.";
	}
	if ((chat ? parse_chat(c) : parse_legacy(c)))
		return "out of memory";
	c->model = json_object_get(c->root, "model");
	if (!json_is_string(c->model))
		return "you must provide a model parameter";
	return NULL;
}

static json_t *success_json(bool chat, const struct call *c)
{
	long p = c->prompt_words > 0 ? c->prompt_words : 1;
	long n = count_words(buf_str(&c->echo), c->echo.len);
	char id[ID_LEN + 1];
	json_t *choice;

	n = n > 0 ? n : 1;
	random_id(id, sizeof id);
	if (chat)
		choice = json_pack("{s:i, s:{s:s, s:s%}, s:s, s:n}", "index", 0, "message",
				   "role", "assistant", "content", buf_str(&c->echo), c->echo.len,
				   "finish_reason", "stop", "logprobs");
	else
		choice = json_pack("{s:i, s:s%, s:s, s:n}", "index", 0,
				   "text", buf_str(&c->echo), c->echo.len,
				   "finish_reason", "stop", "logprobs");
	/* The details as OpenAI reports them, with figures a test can derive
	 * (half the prompt cached, half the completion reasoning). */
	return json_pack("{s:s+, s:s, s:I, s:O, s:[o], s:{s:I, s:I, s:I, s:{s:I}, s:{s:I}}}",
			 "id", chat ? "chatcmpl-" : "cmpl-", id,
			 "object", chat ? "chat.completion" : "text_completion",
			 "created", (json_int_t)time(NULL), "model", c->model, "choices", choice,
			 "usage", "prompt_tokens", (json_int_t)p, "completion_tokens",
			 (json_int_t)n, "total_tokens", (json_int_t)(p + n),
			 "prompt_tokens_details", "cached_tokens", (json_int_t)(p / 2),
			 "completion_tokens_details", "reasoning_tokens", (json_int_t)(n / 2));
}

static struct MHD_Response *failure_response(long status, long retry_after)
{
	struct MHD_Response *resp;
	char msg[32], code[32], ra[32];

	snprintf(msg, sizeof msg, "mock error %ld", status);
	snprintf(code, sizeof code, "mock_%ld", status);
	resp = json_response(error_json(msg, "mock_error", code), 0);
	if (!resp || retry_after < 0)
		return resp;
	snprintf(ra, sizeof ra, "%ld", retry_after);
	if (MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra) == MHD_NO) {
		MHD_destroy_response(resp);
		return NULL;
	}
	return resp;
}

static struct MHD_Response *garbage_response(void)
{
	char *s = strdup(GARBAGE_BODY);

	return s ? text_response(s, strlen(s), JSON_TYPE) : NULL;
}

static enum MHD_Result answer_call(struct req *r, bool chat, const struct call *c)
{
	struct directives d;
	long status = 200, retry_after;

	parse_directives(buf_str(&c->echo), c->echo.len, &d);
	switch (decide(&d, &r->body, &status)) {
	case ANSWER_HANG:
		return hang(r);
	case ANSWER_GARBAGE:
		return deliver(r, 200, garbage_response(), pick_delay(&d));
	case ANSWER_FAIL:
		retry_after = d.retry_after;
		if (retry_after < 0 && status == 429)
			retry_after = opt.retry_after;
		return deliver(r, (unsigned)status, failure_response(status, retry_after),
			       pick_delay(&d));
	case ANSWER_OK:
		break;
	}
	return deliver(r, 200, json_response(success_json(chat, c), d.big), pick_delay(&d));
}

static enum MHD_Result handle_completion(struct req *r, bool chat)
{
	struct call c = { 0 };
	const char *bad = parse_call(r, chat, &c);
	enum MHD_Result ret;

	stats_record(&c, MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
						     MHD_HTTP_HEADER_AUTHORIZATION));
	r->in_flight = true;
	if (bad) {
		json_t *err = error_json(bad, "invalid_request_error", NULL);

		ret = deliver(r, 400, json_response(err, 0), pick_delay(NULL));
		goto out;
	}
	ret = answer_call(r, chat, &c);
out:
	json_decref(c.root);
	free(c.echo.p);
	return ret;
}

/* ---- other endpoints and routing ---- */

static enum MHD_Result handle_models(struct req *r)
{
	json_t *body = json_pack("{s:s, s:[{s:s, s:s, s:i, s:s}]}", "object", "list", "data",
				 "id", "mock", "object", "model", "created", 0,
				 "owned_by", "mock");

	return queue(r, 200, json_response(body, 0));
}

static enum MHD_Result handle_stats(struct req *r)
{
	json_t *body;
	char *s = NULL;

	/* Serialise under the lock: by_echo is shared, and copying 20k keys costs as much. */
	pthread_mutex_lock(&stats.lock);
	body = json_pack("{s:I, s:I, s:s?, s:I, s:I, s:O}", "calls", (json_int_t)stats.calls,
			 "with_metadata", (json_int_t)stats.with_metadata,
			 "last_authorization", stats.last_auth,
			 "in_flight", (json_int_t)stats.in_flight,
			 "max_in_flight", (json_int_t)stats.max_in_flight, "by_echo", stats.by_echo);
	if (body)
		s = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	pthread_mutex_unlock(&stats.lock);
	return s ? queue(r, 200, text_response(s, strlen(s), JSON_TYPE)) : MHD_NO;
}

static enum MHD_Result handle_reset(struct req *r)
{
	stats_reset();
	return queue(r, 200, json_response(json_pack("{s:b}", "ok", 1), 0));
}

static bool path_is(const char *url, const char *a, const char *b)
{
	return !strcmp(url, a) || (b && !strcmp(url, b));
}

static enum MHD_Result route(struct req *r, const char *url, const char *method)
{
	bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
	bool get = !strcmp(method, MHD_HTTP_METHOD_GET);

	if (r->too_big)
		return reply_error(r, 413, "request body exceeds 16 MiB");
	if (path_is(url, "/v1/chat/completions", "/chat/completions"))
		return post ? handle_completion(r, true) : reply_error(r, 405, "use POST");
	if (path_is(url, "/v1/completions", "/completions"))
		return post ? handle_completion(r, false) : reply_error(r, 405, "use POST");
	if (path_is(url, "/v1/models", "/models"))
		return get ? handle_models(r) : reply_error(r, 405, "use GET");
	if (path_is(url, "/_mock/stats", NULL))
		return get ? handle_stats(r) : reply_error(r, 405, "use GET");
	if (path_is(url, "/_mock/reset", NULL))
		return post ? handle_reset(r) : reply_error(r, 405, "use POST");
	return reply_error(r, 404, "unknown path");
}

static enum MHD_Result begin_request(struct MHD_Connection *conn, void **con_cls)
{
	struct req *r = calloc(1, sizeof *r);
	const char *len;

	if (!r)
		return MHD_NO;
	r->conn = conn;
	*con_cls = r;
	len = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	/* Refusing before the upload spares the client sending it; MHD then closes. */
	if (len && strtoull(len, NULL, 10) > MAX_BODY)
		return reply_error(r, 413, "request body exceeds 16 MiB");
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct req *r = *con_cls;

	(void)cls;
	(void)version;
	if (!r)
		return begin_request(conn, con_cls);
	if (*upload_data_size) {
		/* Keep draining an oversized body so the 413 can be sent after it. */
		if (!r->too_big && r->body.len + *upload_data_size > MAX_BODY) {
			r->too_big = true;
			free(r->body.p);
			r->body = (struct buf){ 0 };
		}
		if (!r->too_big && buf_add(&r->body, upload_data, *upload_data_size))
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->abort)
		return MHD_NO;
	if (r->resp || r->hung)
		return park_or_answer(r);
	return route(r, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct req *r = *con_cls;

	(void)cls;
	(void)conn;
	(void)toe;
	if (!r)
		return;
	if (r->in_flight) {
		pthread_mutex_lock(&stats.lock);
		stats.in_flight--;
		pthread_mutex_unlock(&stats.lock);
	}
	if (r->resp)
		MHD_destroy_response(r->resp);
	free(r->body.p);
	free(r);
	*con_cls = NULL;
}

/* ---- startup ---- */

static void usage(FILE *f)
{
	fputs("usage: mock-upstream [--listen HOST:PORT] [--port-file FILE] [--latency MS]\n"
	      "         [--jitter MS] [--fail-rate PCT] [--fail-status CODE] [--retry-after SEC]\n"
	      "         [--hang-rate PCT] [--invalid-json-rate PCT] [--seed N] [--threads N]\n"
	      "         [--help]\n"
	      "OpenAI-compatible mock upstream for slowlane tests; echoes the last user message.\n"
	      "Per-request directives in the message: [mock:fail=N,status=CODE,retry-after=SEC,\n"
	      "delay=MS,hang,invalid-json,big=BYTES]. GET /_mock/stats, POST /_mock/reset.\n", f);
}

static bool parse_rate(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= 0.0 && v <= 100.0))
		return false;
	*out = v;
	return true;
}

static bool parse_arg(int c, const char *arg)
{
	switch (c) {
	case 'l': opt.listen = arg; return true;
	case 'p': opt.port_file = arg; return true;
	case 'L': return parse_num(arg, strlen(arg), 0, INT_MAX, &opt.latency_ms);
	case 'j': return parse_num(arg, strlen(arg), 0, INT_MAX, &opt.jitter_ms);
	case 'f': return parse_rate(arg, &opt.fail_rate);
	case 's': return parse_num(arg, strlen(arg), 100, 599, &opt.fail_status);
	case 'r': return parse_num(arg, strlen(arg), 0, INT_MAX, &opt.retry_after);
	case 'H': return parse_rate(arg, &opt.hang_rate);
	case 'i': return parse_rate(arg, &opt.garbage_rate);
	case 't': return parse_num(arg, strlen(arg), 1, 256, &opt.threads);
	case 'S': {
		char *end;

		errno = 0;
		opt.seed = strtoull(arg, &end, 10);
		opt.have_seed = true;
		return !errno && end != arg && !*end;
	}
	}
	return false;
}

/* Returns -1 to exit with 2, 1 to exit with 0 (--help), 0 to run. */
static int parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "port-file", required_argument, NULL, 'p' },
		{ "latency", required_argument, NULL, 'L' },
		{ "jitter", required_argument, NULL, 'j' },
		{ "fail-rate", required_argument, NULL, 'f' },
		{ "fail-status", required_argument, NULL, 's' },
		{ "retry-after", required_argument, NULL, 'r' },
		{ "hang-rate", required_argument, NULL, 'H' },
		{ "invalid-json-rate", required_argument, NULL, 'i' },
		{ "seed", required_argument, NULL, 'S' },
		{ "threads", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, idx = 0;

	while ((c = getopt_long(argc, argv, "h", longopts, &idx)) != -1) {
		if (c == 'h') {
			usage(stdout);
			return 1;
		}
		if (c == '?' || !parse_arg(c, optarg)) {
			if (c != '?')
				fprintf(stderr, "mock-upstream: bad value '%s' for --%s\n", optarg,
					longopts[idx].name);
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mock-upstream: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return -1;
	}
	return 0;
}

static int resolve_listen(const char *spec, struct listen_addr *la)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	const char *colon = strrchr(spec, ':');
	const char *host = spec, *port = colon ? colon + 1 : spec;
	size_t hlen = colon ? (size_t)(colon - spec) : 0;
	int err;

	if (hlen >= 2 && spec[0] == '[' && spec[hlen - 1] == ']') {
		host++;
		hlen -= 2;
	}
	if (hlen >= sizeof la->host || !*port)
		goto bad;
	memcpy(la->host, host, hlen);
	la->host[hlen] = '\0';
	if (!hlen)
		strcpy(la->host, "127.0.0.1");
	err = getaddrinfo(la->host, port, &hints, &res);
	if (err) {
		fprintf(stderr, "mock-upstream: --listen %s: %s\n", spec, gai_strerror(err));
		return -1;
	}
	memcpy(&la->ss, res->ai_addr, res->ai_addrlen);
	la->v6 = res->ai_family == AF_INET6;
	la->port = ntohs(la->v6 ? ((struct sockaddr_in6 *)res->ai_addr)->sin6_port
				: ((struct sockaddr_in *)res->ai_addr)->sin_port);
	freeaddrinfo(res);
	return 0;
bad:
	fprintf(stderr, "mock-upstream: --listen wants HOST:PORT, got '%s'\n", spec);
	return -1;
}

/* Written via rename so a test polling for the file never reads a partial port. */
static int write_port_file(const char *path, unsigned port)
{
	char tmp[PATH_MAX];
	FILE *f = NULL;
	int ret = -1;

	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
		goto out;
	f = fopen(tmp, "w");
	if (!f)
		goto out;
	if (fprintf(f, "%u\n", port) < 0 || fflush(f))
		goto out;
	ret = fclose(f);
	f = NULL;
	if (!ret)
		ret = rename(tmp, path);
out:
	if (f)
		fclose(f);
	if (ret) {
		fprintf(stderr, "mock-upstream: port file %s: %s\n", path, strerror(errno));
		unlink(tmp);
	}
	return ret;
}

/* Thousands of parked connections need thousands of descriptors. */
static unsigned connection_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 1000;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit want = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };

		if (!setrlimit(RLIMIT_NOFILE, &want))
			rl = want;
	}
	if (rl.rlim_cur > 1000000)
		return 1000000;
	return rl.rlim_cur > 128 ? (unsigned)(rl.rlim_cur - 64) : 64;
}

/* Dropping a hung connection whose client left is routine here, not worth a log line. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	(void)cls;
	vsnprintf(line, sizeof line, fmt, ap);
	if (!strstr(line, "Application reported internal error"))
		fprintf(stderr, "mock-upstream: %s", line);
}

static struct MHD_Daemon *start_daemon(struct listen_addr *la)
{
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
			 MHD_USE_ERROR_LOG | (la->v6 ? MHD_USE_IPv6 : 0);
	const union MHD_DaemonInfo *info;
	struct MHD_Daemon *d;
	long threads = opt.threads;

	if (!threads) {
		threads = sysconf(_SC_NPROCESSORS_ONLN);
		threads = threads < 1 ? 1 : threads > 4 ? 4 : threads;
	}
	d = MHD_start_daemon(flags, (uint16_t)la->port, NULL, NULL, on_request, NULL,
			     MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
			     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&la->ss,
			     MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
			     MHD_OPTION_CONNECTION_LIMIT, connection_limit(),
			     MHD_OPTION_CONNECTION_TIMEOUT, 0u,
			     MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,
			     MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
			     MHD_OPTION_END);
	if (!d) {
		fprintf(stderr, "mock-upstream: cannot listen on %s\n", opt.listen);
		return NULL;
	}
	info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
	la->port = info ? info->port : 0;
	return d;
}

static void on_alarm(int sig)
{
	(void)sig;
	_exit(0);
}

/* Shutdown must be prompt even if MHD gets stuck, hence the alarm as a backstop. */
static void shutdown_daemon(struct MHD_Daemon *d)
{
	struct sigaction sa = { .sa_handler = on_alarm };

	sigaction(SIGALRM, &sa, NULL);
	alarm(EXIT_GRACE_S);
	timer_stop();
	MHD_stop_daemon(d);
}

static int run(struct listen_addr *la)
{
	struct MHD_Daemon *d = NULL;
	sigset_t sigs;
	int sig, ret = 1;

	/* Block before any thread starts so only sigwait() below ever sees these. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	if (pthread_sigmask(SIG_BLOCK, &sigs, NULL) || timer_start())
		return 1;
	d = start_daemon(la);
	if (!d)
		goto out;
	if (opt.port_file && write_port_file(opt.port_file, la->port))
		goto out;
	fprintf(stderr, "mock-upstream listening on %s%s%s:%u\n", la->v6 ? "[" : "", la->host,
		la->v6 ? "]" : "", la->port);
	if (!sigwait(&sigs, &sig))
		ret = 0;
out:
	if (d)
		shutdown_daemon(d);
	else
		timer_stop();
	return ret;
}

int main(int argc, char **argv)
{
	struct listen_addr la = { 0 };
	int ret;

	ret = parse_args(argc, argv);
	if (ret)
		return ret > 0 ? 0 : 2;
	if (resolve_listen(opt.listen, &la))
		return 2;
	atomic_store(&rng_state, opt.have_seed ? (uint64_t)opt.seed
					       : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32));
	signal(SIGPIPE, SIG_IGN);
	stats.by_echo = json_object();
	stats.fail_counts = json_object();
	ret = stats.by_echo && stats.fail_counts ? run(&la) : 1;
	json_decref(stats.by_echo);
	json_decref(stats.fail_counts);
	free(stats.last_auth);
	return ret;
}
