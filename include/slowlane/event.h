/*
 * event.h - webhook events and the outbox. An event is written into the
 * store's `outbox` in the same write transaction as the state change that
 * causes it, so a crash can neither lose nor invent one; deliver.c sends it,
 * retries it under the same event id (receivers dedupe on it), and moves it
 * to `deliveries` when it is delivered or given up.
 *
 * The producers run inside write transactions (queue.c calls
 * event_job_ended() whenever a job ends); readers may run anywhere.
 */
#ifndef SLOWLANE_EVENT_H
#define SLOWLANE_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/job.h"
#include "slowlane/store.h"
#include "slowlane/webhook.h"

#define EVENT_ID_LEN 28 /* "evt_" + 24 random characters */
#define EVENT_TYPE_MAX 39
#define EVENT_SUBJECT_MAX 63
#define EVENT_ERROR_MAX 255

enum event_outcome { EVENT_PENDING = 0, EVENT_DELIVERED = 1, EVENT_FAILED = 2 };

struct event {
	char id[EVENT_ID_LEN + 1];
	uint64_t due_ms;       /* outbox: next attempt */
	uint64_t created_ms;
	uint64_t finished_ms;  /* deliveries: when it ended */
	uint32_t attempts;     /* deliveries tried */
	uint16_t last_status;  /* last HTTP status, 0 = none */
	uint8_t outcome;       /* enum event_outcome */
	char type[EVENT_TYPE_MAX + 1];        /* "generation.completed", ... */
	char webhook[JOB_WEBHOOK_MAX + 1];    /* registered endpoint, or "" */
	char subject[EVENT_SUBJECT_MAX + 1];  /* generation, group or batch id */
	char url[WEBHOOK_URL_MAX + 1];        /* target when no webhook */
	char last_error[EVENT_ERROR_MAX + 1];
	const char *payload;   /* the exact body sent every time */
	size_t payload_len;
};

/* A fresh event id "evt_<24 random>" into out[EVENT_ID_LEN + 1]. */
int event_new_id(char *out);
/* Queues an event for delivery now (payload copied). `webhook` or `url`
 * names the target; `id` is the event id (NULL: a fresh one). Returns 0 or
 * a store error. */
int event_enqueue(struct store_txn *t, const char *id, const char *type, const char *webhook,
    const char *subject, const char *url, const char *payload, size_t len, uint64_t now_ms);

/* A job just ended (Success or Failed), in this transaction: queues its
 * generation.completed event if it names a webhook that wants it, and
 * counts it off its group, queueing slow-group.completed when it was the
 * last. */
int event_job_ended(struct store_txn *t, const struct job *j, uint64_t now_ms);
/* An ended job was put back in the queue: its group waits for it again. */
int event_job_reopened(struct store_txn *t, const struct job *j);

/* Calls cb for up to `max` outbox events due by `now_ms`, in due order.
 * e->payload is valid during the call only. */
int event_due(struct store_txn *t, uint64_t now_ms, size_t max,
    int (*cb)(void *arg, const struct event *e), void *arg, uint64_t *next_due_ms);

/* Moves outbox event (due_ms, id) to a new due time after a failed try.
 * Returns 0, or SL_ENOTFOUND if it is no longer there. */
int event_retry(struct store_txn *t, uint64_t due_ms, const char *id, uint64_t new_due_ms,
    uint16_t status, const char *error);
/* Ends outbox event (due_ms, id): removed from the outbox, kept in
 * `deliveries` as delivered or failed. */
int event_finish(struct store_txn *t, uint64_t due_ms, const char *id, bool delivered,
    uint16_t status, const char *error, uint64_t now_ms);

/* Calls cb for each finished delivery (`deliveries` table), in id order,
 * and (with pending) for each event still in the outbox. */
int event_list(struct store_txn *t, bool pending,
    int (*cb)(void *arg, const struct event *e), void *arg);

#endif
