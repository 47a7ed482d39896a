/*
 * api.h - the HTTP API of section 1 and 5 of API.md: submit, poll, models,
 * health. Handlers validate (validate.h), write through the writer, and
 * answer only once the job is durable: its journal append synced, or the
 * commit that holds it returned (writer.h).
 *
 * Threads: loop thread only.
 */
#ifndef SLOWLANE_API_H
#define SLOWLANE_API_H

struct intake;

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/http.h"
#include "slowlane/reader.h"
#include "slowlane/sched.h"
#include "slowlane/store.h"
#include "slowlane/writer.h"

struct api_opts {
	uint64_t job_ttl_ms;       /* unfinished jobs end Failed after this */
	const char *const *keys;   /* API keys (NULL-terminated); none = open */
	const char *const *models; /* listed by /v1/models (NULL-terminated) */
	bool restrict_models;      /* refuse models not in `models` (404) */
	const char *backend_name;  /* "load-test" or the upstream URL */
	bool webhook_allow_http;   /* accept http:// webhook URLs */
	bool webhook_allow_private; /* accept loopback/private webhook URLs */
	const char *data_dir;      /* files live in <data_dir>/files */
	uint64_t file_ttl_ms;      /* uploaded and output files expire; 0 never */
	uint64_t batch_max_requests; /* lines per batch input */
	uint64_t batch_max_bytes;  /* bytes per uploaded file */
	uint32_t rate_limit;       /* requests per second per key; 0 = none */
	uint64_t max_queued;       /* unfinished jobs per key; 0 = none */
	struct intake *intake;     /* journaled submits not yet stored, or NULL */
};

struct api;

/* Creates the API. Keys are hashed at once; `o` need not outlive it.
 * Returns 0 or -ENOMEM. */
int api_new(struct store *st, struct writer *wr, struct reader *rd, struct sched *sc,
    const struct api_opts *o, struct api **out);
/* Tells the API where the batch engine is (to wake it on create/cancel). */
struct batchrun;
void api_set_batchrun(struct api *a, struct batchrun *br);
/* Tells the API where the webhook deliveries are (for /metrics). */
struct deliver;
void api_set_deliver(struct api *a, struct deliver *dl);
/* The route table (static). */
const struct http_route *api_routes(size_t *n);
/* Submits answered, for the log at shutdown. */
uint64_t api_submitted(const struct api *a);
/* api_free(NULL) is a no-op. */
void api_free(struct api *a);

/* The tenant id of an API key: hex of the first 8 bytes of its SHA-256. */
void api_key_tenant(const char *key, char out[JOB_TENANT_LEN + 1]);

#endif
