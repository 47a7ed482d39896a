/*
 * api_impl.h - what the api_*.c files share (not a public interface): the
 * api struct, authentication, error replies and the handlers the route
 * table in api.c points to.
 */
#ifndef SLOWLANE_API_IMPL_H
#define SLOWLANE_API_IMPL_H

#include <stdbool.h>

#include "slowlane/api.h"
#include "slowlane/http.h"
#include "slowlane/idem.h"
#include "slowlane/job.h"

struct api_key {
	char hash[65];                   /* hex SHA-256 of the key */
	char tenant[JOB_TENANT_LEN + 1];
};

/* A token bucket per tenant for --rate-limit (memory grows with the number
 * of keys, never with jobs). */
struct api_bucket {
	char tenant[JOB_TENANT_LEN + 1];
	double tokens;
	uint64_t last_ms;
	bool used;
};

struct api {
	struct store *st;
	struct writer *wr;
	struct reader *rd;               /* polls are read there */
	struct sched *sc;
	struct api_opts o;               /* keys and models pointers not kept */
	struct api_key *keys;
	size_t n_keys;
	char **models;
	size_t n_models;
	uint64_t submitted;
	char *data_dir;
	struct api_bucket *buckets;      /* open addressing, n_buckets slots */
	size_t n_buckets, used_buckets;
	uint64_t caller_max_queued;      /* of the caller last authenticated */
	struct batchrun *br;             /* the batch engine, once set */
	struct deliver *dl;              /* webhook deliveries, once set */
};

/* Answers an OpenAI-style error. */
void api_reply_err(struct http_req *r, int status, const char *type, const char *param,
    const char *code, const char *msg);
/* Answers the error for a failed store operation (rc an SL_E code). */
void api_reply_store_err(struct http_req *r, int rc);
/* Finds the caller's tenant ("" when no keys are configured or stored)
 * and applies its rate limit. Returns false after answering 401 or 429.
 * Sets a->caller_max_queued (0 = no limit). */
bool api_authenticate(struct api *a, struct http_req *r, char tenant[JOB_TENANT_LEN + 1]);

/* api_async.c: submit and poll, single and group. */
/* Answers the first answer again if (tenant, Idempotency-Key `key`) was
 * seen before: the same request (`digest`, hex SHA-256) gets it, another
 * gets 409. Returns true if it answered; false (nothing sent) otherwise. */
/* Answers `answer`, a first answer kept for an Idempotency-Key: 200 with it
 * when the request is the same (`same`; http takes `answer`), else 409
 * idempotency_key_reused (and frees it). */
void api_idem_answer(struct http_req *r, char *answer, bool same);
/* What an Idempotency-Key record holds of the request: the SHA-256 (hex)
 * of its endpoint and its body, so that one key names one request, and
 * the same key and body sent to another endpoint is another request (409).
 * `endpoint` names what the request does, so aliases share it
 * (/v1/slow/chat/completions and /v1/async/chat/completions). */
void api_idem_digest(const char *endpoint, const void *body, size_t len,
    char out[IDEM_DIGEST_LEN + 1]);
bool api_idem_replay(struct api *a, struct http_req *r, const char *tenant, const char *key,
    const char *digest);
/* Parses a `limit` query value (NULL keeps *out) in 1..max. Returns false
 * after answering 400. */
bool api_query_limit(struct http_req *r, const char *value, size_t max, size_t *out);
/* True (after answering 429) if `tenant` may not add `n` more jobs. */
bool api_over_queue_limit(struct api *a, struct http_req *r, const char *tenant, size_t n);

void api_h_chat(struct http_req *r, void *ctx);
void api_h_completion(struct http_req *r, void *ctx);
void api_h_group_chat(struct http_req *r, void *ctx);
void api_h_group_completion(struct http_req *r, void *ctx);
void api_h_generation(struct http_req *r, void *ctx);
void api_h_group_generations(struct http_req *r, void *ctx);

/* api_files.c: the Files API. */
void api_h_file_upload(struct http_req *r, void *ctx);
int api_p_file_upload(struct http_req *r, void *ctx, const char *field, const char *filename,
    const char *data, uint64_t off, size_t len);
void api_h_file_list(struct http_req *r, void *ctx);
void api_h_file_get(struct http_req *r, void *ctx);
void api_h_file_content(struct http_req *r, void *ctx);
void api_h_file_delete(struct http_req *r, void *ctx);

/* api_batches.c: the Batch API. */
void api_h_batch_create(struct http_req *r, void *ctx);
void api_h_batch_list(struct http_req *r, void *ctx);
void api_h_batch_get(struct http_req *r, void *ctx);
void api_h_batch_cancel(struct http_req *r, void *ctx);

/* api_webhooks.c: webhook registration by keys. */
void api_h_webhook_create(struct http_req *r, void *ctx);
void api_h_webhook_list(struct http_req *r, void *ctx);
void api_h_webhook_get(struct http_req *r, void *ctx);
void api_h_webhook_delete(struct http_req *r, void *ctx);
void api_h_webhook_rotate(struct http_req *r, void *ctx);

#endif
