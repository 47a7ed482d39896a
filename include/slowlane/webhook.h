/*
 * webhook.h - webhook endpoints: their registration records, the URL
 * policy, and Standard Webhooks signing (webhook-id, webhook-timestamp,
 * webhook-signature: v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>),
 * which the official OpenAI SDKs' webhooks.unwrap() verifies.
 */
#ifndef SLOWLANE_WEBHOOK_H
#define SLOWLANE_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/job.h"
#include "slowlane/store.h"

#define WEBHOOK_ID_LEN 9      /* like the seed's "AhALzdz8S" */
#define WEBHOOK_URL_MAX 2000
#define WEBHOOK_SECRET_MAX 64 /* "whsec_" + base64 of 32 bytes */
#define WEBHOOK_EVENTS_MAX 255

struct webhook {
	char id[WEBHOOK_ID_LEN + 1];
	char tenant[JOB_TENANT_LEN + 1];
	char url[WEBHOOK_URL_MAX + 1];
	char secret[WEBHOOK_SECRET_MAX + 1];
	char events[WEBHOOK_EVENTS_MAX + 1]; /* comma-separated; "" = all */
	uint64_t created_ms;
};

/* Fills a new registration with a random id and secret. Returns 0,
 * SL_EINVAL (url or events too long), or -errno. */
int webhook_init(struct webhook *w, const char *tenant, const char *url, const char *events,
    uint64_t now_ms);
/* Gives `w` a new random secret. */
int webhook_rotate_secret(struct webhook *w);

/* Store access (`webhooks` table). get/delete: 0 or SL_ENOTFOUND. */
int webhook_put(struct store_txn *t, const struct webhook *w);
int webhook_get(struct store_txn *t, const char *id, struct webhook *out);
int webhook_delete(struct store_txn *t, const char *id);
/* Calls cb for every registration (any tenant), in id order. */
int webhook_list(struct store_txn *t, int (*cb)(void *arg, const struct webhook *w), void *arg);

/* True if `w` subscribes to `event` ("batch.*" matches "batch.completed"). */
bool webhook_wants(const struct webhook *w, const char *event);
/* The events a webhook can take, comma-separated (for messages). */
#define WEBHOOK_EVENT_NAMES "generation.completed, slow-group.completed, batch.completed, " \
	"batch.failed, batch.expired, batch.cancelled"
/* True if `name` is one of WEBHOOK_EVENT_NAMES, or a prefix ending in '*'
 * that matches one of them ("batch.*"). */
bool webhook_event_valid(const char *name);
/* Parses a list of event names separated by commas or spaces into `out`
 * (cap bytes), normalised to "a,b". Returns the number of names, -1 if it
 * does not fit, or -2 for a name that is not webhook_event_valid (copied,
 * cut to 63 bytes, into bad[64]). */
int webhook_events_parse(const char *s, char *out, size_t cap, char bad[64]);

/* Whether deliveries may go to `url`: http(s) only, https unless
 * allow_http, no user:password, no literal private/loopback address unless
 * allow_private (resolved addresses are checked again at connect time).
 * Returns true, or false with the reason in why[cap]. */
bool webhook_url_allowed(const char *url, bool allow_http, bool allow_private, char *why,
    size_t cap);

/* The value of webhook-signature for a delivery: "v1,<base64>" into
 * out[cap] (at least 64 bytes). Returns 0, or SL_EINVAL for a secret that
 * is not "whsec_<base64>". */
int webhook_sign(const char *secret, const char *msg_id, uint64_t timestamp_s,
    const char *body, size_t len, char *out, size_t cap);

#endif
