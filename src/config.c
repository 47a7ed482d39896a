/*
 * config.c - the option table and its three sources (see config.h).
 * Adding an option is one row in `options` plus a field in struct config.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/common.h"
#include "slowlane/config.h"
#include "slowlane/idem.h"
#include "slowlane/log.h"
#include "slowlane/util.h"

enum opt_type {
	T_STR,    /* char * */
	T_LIST,   /* char ** + count, repeatable */
	T_UINT,   /* uint64_t */
	T_DUR,    /* uint64_t milliseconds: "30s", "72h", "250ms" */
	T_BYTES,  /* uint64_t bytes: "10MiB", "200M", "4096" */
	T_LISTEN, /* HOST:PORT */
	T_LEVEL,  /* log level */
	T_FLAG,   /* int set to 1, takes no value */
	T_HELP, T_VERSION, T_CONFIG,
};

struct option_row {
	const char *name;   /* long option, without "--" */
	enum opt_type type;
	size_t off;         /* field in struct config */
	size_t count_off;   /* T_LIST: its count field */
	uint64_t min, max;  /* T_UINT, T_DUR, T_BYTES bounds */
	const char *arg;    /* argument name for --help, NULL if none */
	const char *help;
};

#define F(field) offsetof(struct config, field)
#define MS(x) ((uint64_t)(x) * 1000)
#define DAY MS(86400)

static const struct option_row options[] = {
	{ "listen", T_LISTEN, F(listen_host), 0, 0, 0, "HOST:PORT",
	  "address to serve HTTP on (default 127.0.0.1:8080; port 0 = any free)" },
	{ "data-dir", T_STR, F(data_dir), 0, 0, 0, "DIR",
	  "where the LMDB store lives (default ./slowlane-data)" },
	{ "upstream", T_STR, F(upstream), 0, 0, 0, "URL",
	  "OpenAI-compatible base URL ending in /v1 (default: built-in load-test)" },
	{ "upstream-key", T_STR, F(upstream_key), 0, 0, 0, "KEY",
	  "Bearer key for the upstream (or SLOWLANE_UPSTREAM_KEY)" },
	{ "api-key", T_LIST, F(api_keys), F(n_api_keys), 0, 0, "KEY",
	  "accept this client key; repeatable (or SLOWLANE_API_KEYS=k1,k2)" },
	{ "rate-limit", T_UINT, F(rate_limit), 0, 0, 1000000, "N",
	  "requests per second per key, 429 past it (default 0: none)" },
	{ "max-queued", T_UINT, F(max_queued), 0, 0, UINT64_MAX / 2, "N",
	  "unfinished jobs per key, 429 past it (default 0: none)" },
	{ "model", T_LIST, F(models), F(n_models), 0, 0, "NAME",
	  "serve only these models, listed by /v1/models; repeatable" },
	{ "concurrency", T_UINT, F(concurrency), 0, 1, 100000, "N",
	  "upstream calls in flight at most (default 64)" },
	{ "readers", T_UINT, F(readers), 0, 0, 64, "N",
	  "threads that read polled jobs off the loop thread; 0 reads on it\n\t  (default 2)" },
	{ "writer-nice", T_UINT, F(writer_nice), 0, 0, 19, "N",
	  "with the journal on, run the store writer thread N nice levels\n\t  below the others, at most to 19: its commits are off the\n\t  acknowledgement path. For a machine of its own (default 0: level)" },
	{ "job-ttl", T_DUR, F(job_ttl_ms), 0, MS(1), 365 * DAY, "DUR",
	  "unfinished jobs end Failed after this (default 72h)" },
	{ "max-attempts", T_UINT, F(max_attempts), 0, 1, 1000, "N",
	  "upstream calls per job before it fails (default 5)" },
	{ "upstream-timeout", T_DUR, F(upstream_timeout_ms), 0, 100, DAY, "DUR",
	  "time limit of one upstream call (default 600s)" },
	{ "retry-base", T_DUR, F(retry_base_ms), 0, 1, DAY, "DUR",
	  "backoff after the first failed attempt, doubling (default 1s)" },
	{ "retry-max", T_DUR, F(retry_max_ms), 0, 1, 7 * DAY, "DUR",
	  "longest backoff between attempts (default 5m)" },
	{ "load-test-delay", T_DUR, F(load_test_delay_ms), 0, 0, MS(3600), "DUR",
	  "answer time of the built-in load-test model (default 50ms)" },
	{ "shutdown-grace", T_DUR, F(shutdown_grace_ms), 0, 0, MS(3600), "DUR",
	  "how long SIGTERM waits for calls in flight (default 30s)" },
	{ "retention", T_DUR, F(retention_ms), 0, 0, 3650 * DAY, "DUR",
	  "delete ended jobs this long after they finished (default 0: keep)" },
	{ "idempotency-keep", T_DUR, F(idem_keep_ms), 0, MS(1), 3650 * DAY, "DUR",
	  "an Idempotency-Key's first answer is kept this long (default 24h)" },
	{ "conn-timeout", T_DUR, F(conn_timeout_ms), 0, MS(1), MS(3600), "DUR",
	  "idle client connections, and those whose request header is not\n\t  complete, are closed after this (default 60s)" },
	{ "max-connections", T_UINT, F(max_connections), 0, 1, 1000000, "N",
	  "simultaneous client connections (default 4096)" },
	{ "max-body", T_BYTES, F(max_body), 0, 1024, (uint64_t)1 << 30, "BYTES",
	  "largest request body accepted (default 10MiB)" },
	{ "max-response", T_BYTES, F(max_response), 0, 1024, (uint64_t)1 << 30, "BYTES",
	  "largest upstream answer kept (default 64MiB)" },
	{ "map-size", T_BYTES, F(map_size), 0, (uint64_t)1 << 20, (uint64_t)1 << 44, "BYTES",
	  "LMDB map size, the store's upper bound (default 16GiB, sparse)" },
	{ "batch-max-requests", T_UINT, F(batch_max_requests), 0, 1, 10000000, "N",
	  "lines in one batch input at most (default 50000)" },
	{ "batch-max-bytes", T_BYTES, F(batch_max_bytes), 0, 1024, (uint64_t)1 << 40, "BYTES",
	  "largest uploaded file (default 200MiB)" },
	{ "file-ttl", T_DUR, F(file_ttl_ms), 0, 0, 3650 * DAY, "DUR",
	  "uploaded and output files expire after this (default 30d; 0 = never)" },
	{ "webhook-allow-http", T_FLAG, F(webhook_allow_http), 0, 0, 0, NULL,
	  "allow http:// webhook URLs (default: https only)" },
	{ "webhook-allow-private", T_FLAG, F(webhook_allow_private), 0, 0, 0, NULL,
	  "allow webhooks to loopback, private and link-local addresses" },
	{ "webhook-timeout", T_DUR, F(webhook_timeout_ms), 0, 100, MS(600), "DUR",
	  "time limit of one webhook delivery (default 30s)" },
	{ "webhook-max-age", T_DUR, F(webhook_max_age_ms), 0, MS(1), 30 * DAY, "DUR",
	  "retry a failing delivery for this long, then give up (default 24h)" },
	{ "webhook-retry-base", T_DUR, F(webhook_retry_base_ms), 0, 1, DAY, "DUR",
	  "first delivery backoff, x4 each retry up to 10h (default 5s)" },
	{ "no-journal", T_FLAG, F(no_journal), 0, 0, 0, NULL,
	  "acknowledge submits after their store commit, not after a journal append" },
	{ "paused", T_FLAG, F(paused), 0, 0, 0, NULL,
	  "start with dispatch paused; SIGUSR1 resumes, SIGUSR2 pauses" },
	{ "port-file", T_STR, F(port_file), 0, 0, 0, "FILE",
	  "write the bound port number here once listening" },
	{ "log-level", T_LEVEL, F(log_level), 0, 0, 0, "LEVEL",
	  "debug, info, warn or error (default info)" },
	{ "config", T_CONFIG, 0, 0, 0, 0, "FILE",
	  "read 'option = value' lines (names as above, without --)" },
	{ "help", T_HELP, 0, 0, 0, 0, NULL, "show this help and exit" },
	{ "version", T_VERSION, 0, 0, 0, 0, NULL, "show the version and exit" },
};

static void
defaults(struct config *c)
{
	memset(c, 0, sizeof *c);
	snprintf(c->listen_host, sizeof c->listen_host, "127.0.0.1");
	c->listen_port = 8080;
	c->data_dir = strdup("./slowlane-data");
	c->concurrency = 64;
	c->readers = 2;
	c->writer_nice = 0;
	c->idem_keep_ms = IDEM_KEEP_MS;
	c->job_ttl_ms = MS(72 * 3600);
	c->max_attempts = 5;
	c->upstream_timeout_ms = MS(600);
	c->retry_base_ms = MS(1);
	c->retry_max_ms = MS(300);
	c->load_test_delay_ms = 50;
	c->shutdown_grace_ms = MS(30);
	c->conn_timeout_ms = MS(60);
	c->max_connections = 4096;
	c->max_body = (uint64_t)10 << 20;
	c->max_response = (uint64_t)64 << 20;
	c->map_size = (uint64_t)16 << 30;
	c->log_level = LOG_INFO;
	c->webhook_timeout_ms = MS(30);
	c->batch_max_requests = 50000;
	c->batch_max_bytes = (uint64_t)200 << 20;
	c->file_ttl_ms = 30 * DAY;
	c->webhook_max_age_ms = MS(24 * 3600);
	c->webhook_retry_base_ms = MS(5);
}

void
config_usage(void)
{
	printf("Usage: slowlaned [OPTION]...\n"
	    "Durable asynchronous inference gateway: accepts OpenAI-style requests on\n"
	    "/v1/slow/... and /v1/async/..., stores them in LMDB, runs them on an\n"
	    "upstream server and keeps every result for GET /v1/generation/{id}.\n\n");
	for (size_t i = 0; i < SL_ARRAY_LEN(options); i++) {
		char left[40];
		snprintf(left, sizeof left, "--%s%s%s", options[i].name,
		    options[i].arg ? " " : "", options[i].arg ? options[i].arg : "");
		printf("  %-28s %s\n", left, options[i].help);
	}
	printf("\nDurations take ms, s, m, h or d (a bare number is seconds); sizes take\n"
	    "K, M, G (powers of 1024, optional 'iB').\n");
}

static int
parse_bytes(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mult = 1;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || errno || *s == '-')
		return SL_EINVAL;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': mult = 1024; end++; break;
	case 'm': case 'M': mult = 1024 * 1024; end++; break;
	case 'g': case 'G': mult = 1024ull * 1024 * 1024; end++; break;
	case 't': case 'T': mult = 1024ull * 1024 * 1024 * 1024; end++; break;
	default: return SL_EINVAL;
	}
	if (*end && strcmp(end, "iB") != 0 && strcmp(end, "B") != 0)
		return SL_EINVAL;
	if (v > UINT64_MAX / mult)
		return SL_EINVAL;
	*out = v * mult;
	return 0;
}

static int
set_listen(struct config *c, const char *v)
{
	const char *colon = strrchr(v, ':');
	char *end;
	unsigned long port;
	size_t hlen;

	if (!colon)
		return SL_EINVAL;
	port = strtoul(colon + 1, &end, 10);
	if (end == colon + 1 || *end || port > 65535)
		return SL_EINVAL;
	hlen = (size_t)(colon - v);
	if (hlen >= 2 && v[0] == '[' && v[hlen - 1] == ']') { /* [::1]:8080 */
		v++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof c->listen_host)
		return SL_EINVAL;
	if (hlen == 9 && strncmp(v, "localhost", 9) == 0)
		v = "127.0.0.1", hlen = 9;
	memcpy(c->listen_host, v, hlen);
	c->listen_host[hlen] = '\0';
	c->listen_port = (uint16_t)port;
	return 0;
}

static int
list_add(char ***list, size_t *n, const char *v)
{
	char **nl = realloc(*list, (*n + 2) * sizeof *nl);

	if (!nl)
		return -ENOMEM;
	*list = nl;
	nl[*n] = strdup(v);
	if (!nl[*n])
		return -ENOMEM;
	nl[++*n] = NULL;
	return 0;
}

/* Applies one option; `from` names the source for error messages. */
static int
apply(struct config *c, const struct option_row *o, const char *v, const char *from)
{
	char *base = (char *)c;
	uint64_t u = 0;
	int rc = 0;

	switch (o->type) {
	case T_STR: {
		char **f = (char **)(base + o->off);
		free(*f);
		*f = strdup(v);
		return *f ? 0 : -ENOMEM;
	}
	case T_LIST:
		return list_add((char ***)(base + o->off), (size_t *)(base + o->count_off), v);
	case T_LISTEN:
		rc = set_listen(c, v);
		if (rc)
			fprintf(stderr, "slowlaned: %s: --listen wants HOST:PORT with a numeric "
			    "host, got '%s'\n", from, v);
		return rc;
	case T_FLAG:
		if (strcmp(v, "1") != 0 && strcmp(v, "true") != 0 && strcmp(v, "yes") != 0) {
			*(int *)(base + o->off) = 0;
			return strcmp(v, "0") == 0 || strcmp(v, "false") == 0 ||
			    strcmp(v, "no") == 0 ? 0 : SL_EINVAL;
		}
		*(int *)(base + o->off) = 1;
		return 0;
	case T_LEVEL:
		c->log_level = log_level_parse(v);
		if (c->log_level < 0) {
			fprintf(stderr, "slowlaned: %s: unknown log level '%s' (debug, info, "
			    "warn, error)\n", from, v);
			return SL_EINVAL;
		}
		return 0;
	case T_UINT: {
		char *end;
		errno = 0;
		u = strtoull(v, &end, 10);
		if (end == v || *end || errno || *v == '-')
			rc = SL_EINVAL;
		break;
	}
	case T_DUR:
		rc = sl_parse_duration_ms(v, &u);
		break;
	case T_BYTES:
		rc = parse_bytes(v, &u);
		break;
	default:
		return 0;
	}
	if ((rc || u < o->min || u > o->max) && o->type == T_UINT) {
		fprintf(stderr, "slowlaned: %s: invalid value '%s' for --%s: a whole number from "
		    "%llu to %llu (%s)\n", from, v, o->name, (unsigned long long)o->min,
		    (unsigned long long)o->max, o->help);
		return SL_EINVAL;
	}
	if (rc || u < o->min || u > o->max) {
		fprintf(stderr, "slowlaned: %s: invalid value '%s' for --%s (%s)\n", from, v,
		    o->name, o->help);
		return SL_EINVAL;
	}
	*(uint64_t *)(base + o->off) = u;
	return 0;
}

static const struct option_row *
find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < SL_ARRAY_LEN(options); i++)
		if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
			return &options[i];
	return NULL;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static int
load_file(struct config *c, const char *path)
{
	FILE *fp = fopen(path, "r");
	char line[4096], where[600];
	int lineno = 0, rc = 0;

	if (!fp) {
		fprintf(stderr, "slowlaned: cannot read config file %s: %s\n", path,
		    strerror(errno));
		return SL_EINVAL;
	}
	while (!rc && fgets(line, sizeof line, fp)) {
		char *s = trim(line), *eq, *key, *val;
		const struct option_row *o;
		lineno++;
		if (*s == '\0' || *s == '#')
			continue;
		eq = strchr(s, '=');
		snprintf(where, sizeof where, "%s:%d", path, lineno);
		if (!eq) {
			fprintf(stderr, "slowlaned: %s: expected 'option = value'\n", where);
			rc = SL_EINVAL;
			break;
		}
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		o = find_option(key, strlen(key));
		if (!o || o->type >= T_HELP) {
			fprintf(stderr, "slowlaned: %s: unknown option '%s'\n", where, key);
			rc = SL_EINVAL;
			break;
		}
		rc = apply(c, o, val, where);
	}
	fclose(fp);
	return rc;
}

static int
load_env(struct config *c)
{
	const char *k = getenv("SLOWLANE_UPSTREAM_KEY");
	const char *keys = getenv("SLOWLANE_API_KEYS");
	int rc = 0;

	if (k && *k && apply(c, find_option("upstream-key", 12), k, "environment"))
		return SL_EINVAL;
	if (keys && *keys) {
		char *dup = strdup(keys), *save = NULL, *tok;
		if (!dup)
			return -ENOMEM;
		for (tok = strtok_r(dup, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
			tok = trim(tok);
			if (*tok)
				rc = list_add(&c->api_keys, &c->n_api_keys, tok);
		}
		free(dup);
	}
	return rc;
}

int
config_load(struct config *c, int argc, char **argv)
{
	defaults(c);
	/* The config file first, so the command line overrides it. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--config=", 9) == 0 && load_file(c, a + 9))
			return CONFIG_ERROR;
		if (strcmp(a, "--config") == 0 && i + 1 < argc && load_file(c, argv[++i]))
			return CONFIG_ERROR;
	}
	if (load_env(c))
		return CONFIG_ERROR;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq, *val = NULL;
		const struct option_row *o;
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "slowlaned: unexpected argument '%s' (see --help)\n", a);
			return CONFIG_ERROR;
		}
		a += 2;
		eq = strchr(a, '=');
		o = find_option(a, eq ? (size_t)(eq - a) : strlen(a));
		if (!o) {
			fprintf(stderr, "slowlaned: unknown option '%s' (see --help)\n", argv[i]);
			return CONFIG_ERROR;
		}
		if (o->type == T_HELP) {
			config_usage();
			return CONFIG_EXIT;
		}
		if (o->type == T_VERSION) {
			printf("slowlaned %s\n", PACKAGE_VERSION);
			return CONFIG_EXIT;
		}
		if (o->type == T_FLAG && !eq) {
			val = "1";
		} else if (eq) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			fprintf(stderr, "slowlaned: option '--%s' needs a value\n", o->name);
			return CONFIG_ERROR;
		}
		if (o->type == T_CONFIG)
			continue; /* already read */
		if (apply(c, o, val, "command line"))
			return CONFIG_ERROR;
	}
	if (c->retry_max_ms < c->retry_base_ms)
		c->retry_max_ms = c->retry_base_ms;
	return CONFIG_OK;
}

static void
free_list(char **list)
{
	for (size_t i = 0; list && list[i]; i++)
		free(list[i]);
	free(list);
}

void
config_release(struct config *c)
{
	free(c->port_file);
	free(c->data_dir);
	free(c->upstream);
	free(c->upstream_key);
	free_list(c->api_keys);
	free_list(c->models);
	memset(c, 0, sizeof *c);
}
