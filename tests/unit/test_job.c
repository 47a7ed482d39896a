/* test_job.c - job transitions, their fencing, and the record encoding. */
#include "config.h"

#include "../tap.h"
#include "slowlane/common.h"
#include "slowlane/job.h"

static struct job
queued(void)
{
	struct job j = { .state = JOB_QUEUED, .created_ms = 1000, .not_before_ms = 1000,
		.expires_ms = 9000 };
	snprintf(j.id, sizeof j.id, "AAAAAAAAAAAAAAAAAAAAA");
	return j;
}

int
main(void)
{
	struct job j = queued(), d;
	unsigned char buf[JOB_ENCODED_MAX];
	size_t n;

	is_str(job_state_name(JOB_QUEUED), "Queued", "state name Queued");
	is_str(job_state_name(JOB_IN_PROGRESS), "In Progress", "state name with a space");
	is_str(job_state_name(JOB_SUCCESS), "Success", "state name Success");
	is_str(job_state_name(JOB_FAILED), "Failed", "state name Failed");
	is_str(job_state_name(7), "?", "bad state");

	ok(job_in_ready(&j) && !job_in_inflight(&j) && job_in_expiry(&j), "queued: ready+expiry");
	ok(job_claim(&j, 2000, 42, 5000) == 0, "claim a queued job");
	ok(j.state == JOB_IN_PROGRESS && j.attempts == 1 && j.attempt_id == 42 &&
	    j.dispatched_ms == 2000 && j.lease_ms == 5000, "claim sets attempt fields");
	ok(!job_in_ready(&j) && job_in_inflight(&j) && job_in_expiry(&j),
	    "in progress: inflight+expiry");
	ok(job_claim(&j, 2000, 43, 5000) == SL_ESTALE, "cannot claim twice");
	ok(job_finish(&j, 41, true, 3000) == SL_ESTALE, "wrong attempt is fenced");
	ok(job_retry(&j, 41, 4000) == SL_ESTALE, "wrong attempt cannot retry");
	ok(job_retry(&j, 42, 4000) == 0 && j.state == JOB_QUEUED && j.not_before_ms == 4000,
	    "retry puts it back with a due time");
	ok(job_claim(&j, 4000, 44, 9000) == 0 && j.attempts == 2, "second attempt counted");
	ok(job_finish(&j, 44, true, 5000) == 0 && j.state == JOB_SUCCESS &&
	    j.finished_ms == 5000, "finish succeeds with the right attempt");
	ok(!job_in_ready(&j) && !job_in_inflight(&j) && !job_in_expiry(&j),
	    "final: in no queue index");
	ok(job_end(&j, 6000) == SL_ESTALE, "a final job cannot be ended again");
	ok(job_finish(&j, 44, false, 7000) == SL_ESTALE, "a final job cannot be finished again");
	ok(job_requeue(&j, 8000, 9000) == 0 && j.state == JOB_QUEUED && j.attempts == 0 &&
	    j.finished_ms == 0 && j.not_before_ms == 8000 && j.expires_ms == 9000 &&
	    job_in_ready(&j), "an operator's requeue makes a final job new again");
	ok(job_requeue(&j, 8000, 9000) == SL_ESTALE, "only a final job can be requeued");

	j = queued();
	job_claim(&j, 2000, 50, 5000);
	ok(job_end(&j, 2500) == 0 && j.state == JOB_FAILED && j.attempt_id == 0,
	    "expiry ends an in-flight job and clears its attempt");
	ok(job_finish(&j, 50, true, 2600) == SL_ESTALE, "late answer after expiry is fenced");

	j = queued();
	job_claim(&j, 2000, 60, 5000);
	ok(job_release(&j, 1000) == 0 && j.state == JOB_QUEUED && j.attempt_id == 0,
	    "release (recovery) requeues");
	ok(job_finish(&j, 60, true, 2600) == SL_ESTALE, "answer of a released attempt is fenced");

	j = queued();
	j.kind = JOB_COMPLETION;
	j.flags = JOB_F_METADATA;
	j.http_status = 503;
	snprintf(j.tenant, sizeof j.tenant, "0123456789abcdef");
	snprintf(j.model, sizeof j.model, "google/gemma-3-27b-instruct/bf-16");
	job_set_message(&j, "Queued for retry %d", 2);
	n = job_encode(&j, buf);
	ok(n > 0 && n < JOB_ENCODED_MAX, "encodes (%zu bytes)", n);
	ok(job_decode(j.id, buf, n, &d) == 0, "decodes");
	ok(memcmp(&j, &d, sizeof j) == 0 || (strcmp(d.model, j.model) == 0 &&
	    strcmp(d.message, j.message) == 0 && d.expires_ms == j.expires_ms &&
	    d.http_status == 503 && d.kind == JOB_COMPLETION && d.flags == JOB_F_METADATA &&
	    strcmp(d.tenant, j.tenant) == 0), "round trip keeps every field");
	buf[10] ^= 1;
	ok(job_decode(j.id, buf, n, &d) == SL_ECORRUPT, "a flipped bit is detected");
	buf[10] ^= 1;
	ok(job_decode(j.id, buf, n - 1, &d) == SL_ECORRUPT, "a truncated record is detected");
	ok(job_decode(j.id, buf, 3, &d) == SL_ECORRUPT, "a tiny record is detected");

	memset(j.model, 'm', JOB_MODEL_MAX);
	j.model[JOB_MODEL_MAX] = '\0';
	memset(j.message, 'x', JOB_MESSAGE_MAX);
	j.message[JOB_MESSAGE_MAX] = '\0';
	n = job_encode(&j, buf);
	ok(n <= JOB_ENCODED_MAX && job_decode(j.id, buf, n, &d) == 0 &&
	    strlen(d.model) == JOB_MODEL_MAX && strlen(d.message) == JOB_MESSAGE_MAX,
	    "longest fields fit the record");

	/* Stock messages: a finish leaves the record as long as it was. */
	{
		size_t nq, ns;

		j = queued();
		job_set_message(&j, "Queued");
		nq = job_encode(&j, buf);
		ok(job_decode(j.id, buf, nq, &d) == 0 && strcmp(d.message, "Queued") == 0,
		    "a stock message round-trips");
		job_claim(&j, 2000, 70, 5000);
		job_finish(&j, 70, true, 2600);
		job_set_message(&j, "Generation successful");
		ns = job_encode(&j, buf);
		is_int(ns, nq, "Queued and finished records are the same length");
		ok(job_decode(j.id, buf, ns, &d) == 0 &&
		    strcmp(d.message, "Generation successful") == 0, "and say what they said");
		/* The same code in a format 1 record is corrupt. */
		buf[0] = 1;
		sl_put_be32(buf + ns - 4, sl_crc32(0, buf, ns - 4));
		ok(job_decode(j.id, buf, ns, &d) == SL_ECORRUPT, "format 1 has no stock codes");
		/* A format 1 record (text message) still reads. */
		job_set_message(&j, "Queued for retry 2");
		n = job_encode(&j, buf);
		buf[0] = 1;
		sl_put_be32(buf + n - 4, sl_crc32(0, buf, n - 4));
		ok(job_decode(j.id, buf, n, &d) == 0 && strcmp(d.message, "Queued for retry 2") == 0,
		    "a format 1 record decodes");
	}
	return tap_done();
}
