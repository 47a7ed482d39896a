/*
 * job.h - the job record: its fields, its states, the transitions between
 * them, and its on-disk encoding. Pure: no I/O, "now" is always an argument.
 *
 * A job moves Queued -> In Progress -> Success | Failed, and In Progress ->
 * Queued again for a retry, a crash or a release; expiry and cancel take
 * Queued or In Progress to Failed; an operator's requeue takes Success or
 * Failed back to Queued. Every move is one function below. Each state implies exactly which
 * store indexes hold the job (job_in_ready() and friends); store.c keeps the
 * indexes in step with that one rule.
 */
#ifndef SLOWLANE_JOB_H
#define SLOWLANE_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "slowlane/util.h"

enum job_state {
	JOB_QUEUED = 0,
	JOB_IN_PROGRESS = 1,
	JOB_SUCCESS = 2,
	JOB_FAILED = 3,
};
#define JOB_STATE_COUNT 4

enum job_kind {
	JOB_CHAT = 0,       /* /chat/completions */
	JOB_COMPLETION = 1, /* /completions */
};

enum {
	JOB_F_METADATA = 1, /* request body has "metadata": strip before sending */
};

#define JOB_MODEL_MAX 255   /* longer model names are refused at submit */
#define JOB_MESSAGE_MAX 511 /* state messages are truncated to this */
#define JOB_TENANT_LEN 16   /* hex of the first 8 bytes of SHA-256(key) */
#define JOB_WEBHOOK_MAX 32  /* webhook ids are shorter */
#define JOB_BATCH_MAX 40    /* "batch_" + 24 */

/* Why a job ended Failed, for batch error files and operators. */
enum job_end {
	JOB_END_NONE = 0,
	JOB_END_HTTP,        /* the upstream answered with an error status */
	JOB_END_EXPIRED,     /* its time to live (or batch window) ran out */
	JOB_END_CANCELLED,   /* cancelled by an operator or a batch cancel */
	JOB_END_TIMEOUT,     /* the last attempt timed out */
	JOB_END_CONNECT,     /* the last attempt could not reach the upstream */
	JOB_END_BAD_REPLY,   /* the upstream's answer was not usable */
	JOB_END_DAMAGED,     /* its stored request could not be read (queue.c) */
};

struct job {
	char id[SL_ID_LEN + 1];
	uint8_t state;  /* enum job_state */
	uint8_t kind;   /* enum job_kind */
	uint8_t flags;  /* JOB_F_* */
	uint16_t http_status;   /* last upstream HTTP status; 0 = none yet */
	uint32_t attempts;      /* upstream calls started so far */
	uint64_t attempt_id;    /* fences results: only the current attempt's
	                           answer may change the job; 0 = none */
	uint64_t created_ms;    /* Unix ms of the durable submit */
	uint64_t dispatched_ms; /* last claim; 0 = never */
	uint64_t finished_ms;   /* Success/Failed time; 0 = unfinished */
	uint64_t expires_ms;    /* ends Failed if unfinished by then */
	uint64_t not_before_ms; /* Queued: due time (retry backoff) */
	uint64_t lease_ms;      /* In Progress: attempt deadline */
	char tenant[JOB_TENANT_LEN + 1]; /* "" = no API keys configured */
	char model[JOB_MODEL_MAX + 1];
	char message[JOB_MESSAGE_MAX + 1]; /* stateMessage */
	char group[SL_ID_LEN + 1];         /* group it belongs to, or "" */
	char webhook[JOB_WEBHOOK_MAX + 1]; /* metadata.webhook_id, or "" */
	char batch[JOB_BATCH_MAX + 1];     /* batch it belongs to, or "" */
	uint32_t line;                     /* its 1-based line in the batch */
	uint8_t end;                       /* enum job_end */
};

/* "Queued", "In Progress", "Success", "Failed"; "?" for a bad value. */
const char *job_state_name(int state);
/* True for Success and Failed: the job will not change again by itself. */
bool job_is_final(int state);

/* Which indexes a job in this state belongs to (the one rule of the schema). */
static inline bool job_in_ready(const struct job *j) { return j->state == JOB_QUEUED; }
static inline bool job_in_inflight(const struct job *j) { return j->state == JOB_IN_PROGRESS; }
static inline bool job_in_expiry(const struct job *j) { return !job_is_final(j->state); }

/* Sets the message (formatted, truncated to fit); the state is left alone. */
void job_set_message(struct job *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Transitions. Each checks the current state and returns SL_ESTALE (job
 * unchanged) if the transition is not allowed from it. */

/* Queued -> In Progress: new attempt `attempt_id`, lease until `lease_ms`. */
int job_claim(struct job *j, uint64_t now_ms, uint64_t attempt_id, uint64_t lease_ms);
/* In Progress (attempt `attempt_id`) -> Queued, due at `not_before_ms`. */
int job_retry(struct job *j, uint64_t attempt_id, uint64_t not_before_ms);
/* In Progress (any attempt) -> Queued, due at `not_before_ms`: crash
 * recovery and shutdown give the job back without counting a failure. */
int job_release(struct job *j, uint64_t not_before_ms);
/* In Progress (attempt `attempt_id`) -> Success or Failed. */
int job_finish(struct job *j, uint64_t attempt_id, bool success, uint64_t now_ms);
/* Queued or In Progress -> Failed, whatever the attempt (expiry, cancel). */
int job_end(struct job *j, uint64_t now_ms);
/* Success or Failed -> Queued as new (an operator's requeue): attempts,
 * outcome and times cleared, due at now, expiring at `expires_ms`. */
int job_requeue(struct job *j, uint64_t now_ms, uint64_t expires_ms);

/* ---- encoding ---- */

#define JOB_FORMAT 2 /* first byte of every encoded record (1 is still read) */
#define JOB_ENCODED_MAX 1024

/* Encodes into out[JOB_ENCODED_MAX] with a trailing CRC-32; returns the
 * length. */
size_t job_encode(const struct job *j, unsigned char *out);
/* Decodes a record (id is not in the record: the caller passes the key).
 * Returns 0, or SL_ECORRUPT (bad CRC, truncated, unknown format). */
int job_decode(const char *id, const void *data, size_t len, struct job *out);

#endif
