/*
 * bulkload.c - fills a slowlane store with N jobs through the store API, in
 * large transactions, for the benchmarks (bench/run): the 200,000 Queued jobs
 * of the drain measurement and the 10 K / 1 M / 10 M stores of the scale
 * measurement. It writes exactly what the daemon writes (store_job_put moves
 * the index entries and the per-state counts; queue_insert for Queued jobs),
 * only without HTTP and with one synced commit per --per-txn jobs.
 *
 *   bulkload --data-dir D --jobs N [--state queued|success] [--body-bytes B]
 *            [--per-txn K] [--ids FILE --sample M] [--map-size BYTES]
 *   bulkload --data-dir D --trim-after MS     (deletes jobs created after MS)
 *
 * Jobs get time-ordered ids one millisecond apart, ending a few seconds
 * before now (as a daemon taking ~1000 submits/s would have made them), so
 * the loader appends to the B-trees as the daemon does. Success jobs carry a
 * ~0.5 KiB chat.completion result and one attempt record, as a finished job
 * does. --ids writes M ids spread evenly over the loaded set (for polls).
 * Prints one JSON line: {"jobs":N,"seconds":S,"rate":R,"last_created_ms":MS}.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "slowlane/common.h"
#include "slowlane/job.h"
#include "slowlane/queue.h"
#include "slowlane/store.h"
#include "slowlane/util.h"

#include "benchutil.h"

#define TTL_MS (72ull * 3600 * 1000) /* the daemon's default --job-ttl */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: bulkload --data-dir DIR --jobs N [--state queued|success]\n"
	    "         [--body-bytes B] [--per-txn K] [--ids FILE --sample M] [--map-size BYTES]\n"
	    "       bulkload --data-dir DIR --trim-after MS\n");
	exit(2);
}

/* What a finished job keeps as its result: an echo-sized chat.completion. */
static size_t
make_result(char *out, size_t cap, const char *id, uint64_t created_ms)
{
	int n = snprintf(out, cap,
	    "{\"id\":\"chatcmpl-%s\",\"object\":\"chat.completion\",\"created\":%llu,"
	    "\"model\":\"load-test\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
	    "\"assistant\",\"content\":\"%.*s\"},\"finish_reason\":\"stop\",\"logprobs\":null}],"
	    "\"usage\":{\"prompt_tokens\":113,\"completion_tokens\":42,\"total_tokens\":155}}",
	    id, (unsigned long long)(created_ms / 1000), 300,
	    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the "
	    "lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox jumps "
	    "over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown "
	    "fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The "
	    "quick brown fox jumps.");

	return n < 0 ? 0 : (size_t)n;
}

static int
load_one(struct store_txn *t, uint64_t created_ms, bool success, const char *body,
    size_t body_len, char *id_out)
{
	struct job j;
	char result[1024];
	int rc;

	memset(&j, 0, sizeof j);
	if (sl_job_id(created_ms, j.id))
		return SL_ESTORE;
	memcpy(id_out, j.id, SL_ID_LEN + 1);
	j.state = JOB_QUEUED;
	j.kind = JOB_CHAT;
	j.created_ms = j.not_before_ms = created_ms;
	j.expires_ms = created_ms + TTL_MS;
	snprintf(j.model, sizeof j.model, "load-test");
	snprintf(j.message, sizeof j.message, "Queued");
	if (!success)
		return queue_insert(t, &j, body, body_len);

	/* As queue_claim + queue_complete leave it, without the round trip. */
	struct store_attempt a = { .attempt = 1, .started_ms = created_ms + 1,
		.ended_ms = created_ms + 51, .http_status = 200 };
	size_t rlen = make_result(result, sizeof result, j.id, created_ms);

	j.state = JOB_SUCCESS;
	j.attempts = 1;
	if (sl_random_bytes(&j.attempt_id, sizeof j.attempt_id))
		j.attempt_id = created_ms;
	j.dispatched_ms = created_ms + 1;
	j.finished_ms = created_ms + 51;
	j.not_before_ms = created_ms;
	j.http_status = 200;
	snprintf(j.message, sizeof j.message, "Generation successful");
	snprintf(a.message, sizeof a.message, "Generation successful");
	rc = store_body_put(t, j.id, body, body_len);
	if (!rc)
		rc = store_result_put(t, j.id, result, rlen);
	if (!rc)
		rc = store_attempt_put(t, j.id, &a);
	if (!rc)
		rc = store_job_put(t, NULL, &j);
	return rc;
}

/* ---- trim: delete what a benchmark added after the load ---- */

struct trim_ctx {
	char (*ids)[SL_ID_LEN + 1];
	size_t n, max;
};

static int
trim_collect(void *arg, uint64_t ms, const char *id)
{
	struct trim_ctx *c = arg;

	(void)ms;
	memcpy(c->ids[c->n], id, SL_ID_LEN);
	c->ids[c->n][SL_ID_LEN] = '\0';
	return ++c->n >= c->max ? 1 : 0;
}

static int
trim(struct store *st, uint64_t after_ms, unsigned long long *deleted)
{
	struct trim_ctx c = { .max = 10000 };
	int rc = 0;

	c.ids = malloc(c.max * sizeof *c.ids);
	if (!c.ids)
		return -ENOMEM;
	*deleted = 0;
	for (;;) {
		struct store_txn *t = NULL;

		c.n = 0;
		rc = store_begin(st, false, &t);
		if (rc)
			break;
		rc = store_scan_time(t, STORE_CREATED, after_ms + 1, false, trim_collect, &c);
		if (rc == 1)
			rc = 0;
		for (size_t i = 0; !rc && i < c.n; i++) {
			struct job j;

			rc = store_job_get(t, c.ids[i], &j);
			if (!rc)
				rc = store_job_delete(t, &j);
		}
		if (rc) {
			store_abort(t);
			break;
		}
		rc = store_commit(t);
		if (rc)
			break;
		*deleted += c.n;
		if (c.n < c.max)
			break;
	}
	free(c.ids);
	return rc;
}

/*
 * LMDB may end a transaction with its last page numbers free and never
 * written (pages freed in the transaction that allocated them): the file is
 * then shorter than me_last_pgno says, which LMDB itself never minds, but
 * store.c's check_size() (commit ee8a253) refuses such a store as
 * "truncated". A big delete (our --trim-after, or a retention purge) leaves
 * exactly that. Extending the file over those free pages (sparse zeros,
 * never read) makes the store acceptable to the daemon again; see
 * bench/profile.md.
 */
static int
cover_last_page(struct store *st, const char *dir)
{
	struct store_info info;
	struct store_txn *t = NULL;
	char path[4096];
	struct stat sb;
	int rc = store_begin(st, true, &t);

	if (rc)
		return rc;
	rc = store_get_info(st, t, &info);
	store_abort(t);
	if (rc)
		return rc;
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if (stat(path, &sb) != 0)
		return -errno;
	if ((uint64_t)sb.st_size < info.used_bytes && truncate(path, (off_t)info.used_bytes) != 0)
		return -errno;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data-dir", required_argument, NULL, 'd' },
		{ "jobs", required_argument, NULL, 'n' },
		{ "state", required_argument, NULL, 's' },
		{ "body-bytes", required_argument, NULL, 'b' },
		{ "per-txn", required_argument, NULL, 'k' },
		{ "ids", required_argument, NULL, 'i' },
		{ "sample", required_argument, NULL, 'm' },
		{ "map-size", required_argument, NULL, 'M' },
		{ "trim-after", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL, *ids_path = NULL;
	unsigned long long jobs = 0, per_txn = 10000, sample = 0, map_size = 0, trim_ms = 0;
	size_t body_bytes = 1024, body_len;
	bool success = false, do_trim = false;
	struct store *st = NULL;
	FILE *ids_out = NULL;
	char *body;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'n': jobs = strtoull(optarg, NULL, 10); break;
		case 's':
			if (strcmp(optarg, "success") == 0)
				success = true;
			else if (strcmp(optarg, "queued") != 0)
				usage();
			break;
		case 'b': body_bytes = strtoull(optarg, NULL, 10); break;
		case 'k': per_txn = strtoull(optarg, NULL, 10); break;
		case 'i': ids_path = optarg; break;
		case 'm': sample = strtoull(optarg, NULL, 10); break;
		case 'M': map_size = strtoull(optarg, NULL, 10); break;
		case 't': do_trim = true; trim_ms = strtoull(optarg, NULL, 10); break;
		default: usage();
		}
	}
	if (!dir || (!do_trim && jobs == 0) || per_txn == 0)
		usage();
	rc = store_open(dir, &(struct store_opts){ .map_size = map_size, .create = true }, &st);
	if (rc) {
		fprintf(stderr, "bulkload: cannot open store in %s: %s\n", dir, sl_strerror(rc));
		return 1;
	}
	if (do_trim) {
		unsigned long long deleted = 0;
		double t0 = (bu_now_us() / 1e6);

		rc = trim(st, trim_ms, &deleted);
		if (!rc)
			rc = cover_last_page(st, dir);
		store_close(st);
		if (rc) {
			fprintf(stderr, "bulkload: trim: %s\n", sl_strerror(rc));
			return 1;
		}
		printf("{\"deleted\":%llu,\"seconds\":%.3f}\n", deleted, (bu_now_us() / 1e6) - t0);
		return 0;
	}
	body = bu_chat_body(body_bytes);
	body_len = body ? strlen(body) : 0;
	if (!body)
		return 1;
	if (ids_path && !(ids_out = fopen(ids_path, "w"))) {
		perror(ids_path);
		return 1;
	}
	if (sample == 0 || sample > jobs)
		sample = jobs < 10000 ? jobs : 10000;

	/* One job per millisecond, the last one 2 s ago. */
	uint64_t first_ms = sl_wall_ms() - jobs - 2000;
	unsigned long long stride = jobs / sample, done = 0;
	double t0 = (bu_now_us() / 1e6);
	char id[SL_ID_LEN + 1];

	while (done < jobs) {
		struct store_txn *t = NULL;
		unsigned long long end = done + per_txn < jobs ? done + per_txn : jobs;

		rc = store_begin(st, false, &t);
		for (unsigned long long i = done; !rc && i < end; i++) {
			rc = load_one(t, first_ms + i, success, body, body_len, id);
			if (!rc && ids_out && i % stride == 0)
				fprintf(ids_out, "%s\n", id);
		}
		if (rc) {
			store_abort(t);
			break;
		}
		rc = store_commit(t);
		if (rc)
			break;
		done = end;
	}
	if (ids_out && fclose(ids_out) != 0)
		rc = rc ? rc : -errno;
	if (!rc)
		rc = cover_last_page(st, dir);
	store_close(st);
	free(body);
	if (rc) {
		fprintf(stderr, "bulkload: after %llu jobs: %s\n", done, sl_strerror(rc));
		return 1;
	}
	double secs = (bu_now_us() / 1e6) - t0;
	printf("{\"jobs\":%llu,\"seconds\":%.3f,\"rate\":%.0f,\"last_created_ms\":%llu}\n",
	    jobs, secs, (double)jobs / secs, (unsigned long long)(first_ms + jobs - 1));
	return 0;
}
