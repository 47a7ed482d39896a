/*
 * main.c - slowlaned: argv, wiring and exit codes only.
 *
 * Start: config -> store (open, recover jobs left In Progress) -> writer
 * thread -> backend (upstream or load-test) -> scheduler -> HTTP -> loop.
 * SIGTERM/SIGINT: stop accepting, let calls in flight finish (bounded by
 * --shutdown-grace), requeue the rest, drain the writer, close the store.
 * Exit codes: 0 clean stop, 1 runtime failure, 2 bad usage.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slowlane/api.h"
#include "slowlane/backend.h"
#include "slowlane/batchrun.h"
#include "slowlane/common.h"
#include "slowlane/config.h"
#include "slowlane/deliver.h"
#include "slowlane/files.h"
#include "slowlane/http.h"
#include "slowlane/intake.h"
#include "slowlane/journal.h"
#include "slowlane/log.h"
#include "slowlane/reader.h"
#include "slowlane/retain.h"
#include "slowlane/sched.h"
#include "slowlane/store.h"
#include "slowlane/util.h"
#include "slowlane/writer.h"

struct daemon {
	struct ev_loop *loop;
	struct config cfg;
	struct store *st;
	struct writer *wr;
	struct reader *rd;
	struct backend *be;
	struct sched *sc;
	struct deliver *dl;
	struct batchrun *br;
	struct retain *rt;
	struct api *api;
	struct http_server *http;
	struct journal *jn;
	struct intake *in;
	int dir_lock;    /* flock on the data directory, held for life; -1: none */
	ev_signal sigterm, sigint, sigusr1, sigusr2;
	ev_timer drain;  /* waits for suspended requests during shutdown */
	bool stopping;
};

static int
write_port_file(const char *path, uint16_t port)
{
	char tmp[4096];
	FILE *fp;

	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	fp = fopen(tmp, "w");
	if (!fp)
		return -errno;
	fprintf(fp, "%u\n", port);
	if (fclose(fp) != 0 || rename(tmp, path) != 0)
		return -errno;
	return 0;
}

static void
drain_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct daemon *d = SL_CONTAINER_OF(w, struct daemon, drain);

	/* Submits already handed to the writer still get their answer. */
	if (writer_pending(d->wr) > 0 || reader_pending(d->rd) > 0 || http_suspended(d->http) > 0)
		return;
	ev_timer_stop(loop, w);
	ev_break(loop, EVBREAK_ALL);
}

static void
sched_stopped(void *arg)
{
	struct daemon *d = arg;

	ev_timer_init(&d->drain, drain_cb, 0., 0.01);
	ev_timer_again(d->loop, &d->drain);
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;

	if (d->stopping) {
		log_warn("second signal: stopping now; jobs in flight are requeued at next start");
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	d->stopping = true;
	log_info("signal %d: shutting down (no new connections)", w->signum);
	http_quiesce(d->http);
	deliver_stop(d->dl);
	batchrun_stop(d->br);
	retain_stop(d->rt);
	sched_shutdown(d->sc, sched_stopped, d);
}

/* SIGUSR1 resumes dispatching, SIGUSR2 pauses it (submits go on). */
static void
pause_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;

	sched_set_paused(d->sc, w->signum == SIGUSR2);
}

static int
start_backend(struct daemon *d)
{
	const struct config *c = &d->cfg;

	if (!c->upstream) {
		log_info("no --upstream given: serving the built-in 'load-test' model "
		    "(echoes the last user message after %llu ms)",
		    (unsigned long long)c->load_test_delay_ms);
		log_info("to use a real server: slowlaned --upstream http://127.0.0.1:8000/v1 "
		    "(vLLM, SGLang, llama.cpp, Ollama at :11434/v1, or https://api.openai.com/v1 "
		    "with SLOWLANE_UPSTREAM_KEY)");
		return loadtest_new(d->loop, c->load_test_delay_ms, &d->be);
	}
	struct upstream_opts uo = {
		.base_url = c->upstream,
		.api_key = c->upstream_key,
		.timeout_ms = c->upstream_timeout_ms,
		.max_connections = (unsigned)c->concurrency,
		.max_response = (size_t)c->max_response,
	};
	log_info("upstream: %s (concurrency %llu)", c->upstream,
	    (unsigned long long)c->concurrency);
	return upstream_new(d->loop, &uo, &d->be);
}

/* Many client connections each hold a descriptor: take what we may. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warn("cannot raise the open-files limit: %s", strerror(errno));
	}
}

/*
 * Stores every journaled submit the store does not have yet (crash
 * recovery, intake_recover) and, unless --no-journal, keeps the journal
 * open (and locked) for the writer.
 */
static int
open_journal(struct daemon *d)
{
	char path[4096];
	uint64_t stored, ignored;
	int rc;

	snprintf(path, sizeof path, "%s/journal", d->cfg.data_dir);
	if (d->cfg.no_journal && access(path, F_OK) != 0)
		return 0;
	/* Holding the data directory, only a slowlanectl replaying the journal
	 * can hold it too, and only for a moment: wait up to 5 s for it. */
	for (int i = 0; i < 50; i++) {
		rc = intake_recover(d->st, d->cfg.data_dir, d->cfg.no_journal ? NULL : &d->jn,
		    &stored, &ignored);
		if (rc != -EBUSY)
			break;
		usleep(100 * 1000);
	}
	if (rc == -EBUSY) {
		log_error("%s is in use by another process (a slowlaned or slowlanectl running "
		    "on %s)", path, d->cfg.data_dir);
		return rc;
	}
	if (rc)
		return rc;
	if (stored)
		log_info("journal: %llu acknowledged submit%s stored", (unsigned long long)stored,
		    stored == 1 ? "" : "s");
	if (ignored)
		log_warn("journal: %llu frame%s of another store ignored", (unsigned long long)ignored,
		    ignored == 1 ? "" : "s");
	if (d->jn && !(d->in = intake_new()))
		return -ENOMEM;
	return 0;
}

/* The writer stored journaled submits: their jobs can be claimed now. */
static void
journal_stored(void *arg)
{
	struct daemon *d = arg;

	if (d->sc)
		sched_kick(d->sc);
}

static int
run(struct daemon *d)
{
	struct config *c = &d->cfg;
	struct store_opts so = { .map_size = c->map_size, .create = true };
	const char *const loadtest_models[] = { "load-test", NULL };
	size_t recovered = 0, n_routes;
	const struct http_route *routes;
	int rc;

	raise_fd_limit();
	rc = store_open(c->data_dir, &so, &d->st);
	if (rc) {
		log_error("cannot open the store in %s: %s", c->data_dir, sl_strerror(rc));
		return 1;
	}
	/* One daemon per data directory, journal or not: two would both
	 * schedule the same queue. An flock on the directory itself (never on
	 * lock.mdb: a second descriptor of LMDB's lock file would drop its
	 * POSIX locks on close), held until the process ends. slowlanectl
	 * probes it for a moment: retry for 1 s before concluding that another
	 * daemon holds it. */
	for (int i = 0; i < 10; i++) {
		d->dir_lock = sl_try_lock(c->data_dir, O_RDONLY | O_DIRECTORY);
		if (d->dir_lock != -EBUSY)
			break;
		usleep(100 * 1000);
	}
	if (d->dir_lock < 0) {
		if (d->dir_lock == -EBUSY)
			log_error("another slowlaned is running on %s: one daemon per data "
			    "directory", c->data_dir);
		else
			log_error("cannot lock %s: %s", c->data_dir, sl_strerror(d->dir_lock));
		return 1;
	}
	store_reader_check(d->st);
	rc = files_init_dir(c->data_dir);
	if (rc) {
		log_error("cannot create %s/files: %s", c->data_dir, sl_strerror(rc));
		return 1;
	}
	rc = open_journal(d);
	if (rc) {
		log_error("cannot replay the journal in %s: %s", c->data_dir, sl_strerror(rc));
		return 1;
	}
	rc = sched_recover(d->st, sl_wall_ms(), &recovered);
	if (rc) {
		log_error("crash recovery failed: %s", sl_strerror(rc));
		return 1;
	}
	log_info("store %s open; %zu job%s interrupted in flight put back in the queue",
	    c->data_dir, recovered, recovered == 1 ? "" : "s");

	d->loop = ev_default_loop(EVFLAG_AUTO);
	struct writer_journal wj = { .journal = d->jn, .intake = d->in,
		.stored = journal_stored, .arg = d, .nice = (int)c->writer_nice };
	rc = writer_start(&d->wr, d->st, d->loop, &wj);
	if (rc == 0)
		rc = reader_start(&d->rd, d->st, d->loop, (unsigned)c->readers);
	if (rc == 0)
		rc = start_backend(d);
	if (rc) {
		log_error("startup failed: %s", sl_strerror(rc));
		return 1;
	}
	struct sched_opts so2 = {
		.concurrency = (unsigned)c->concurrency,
		.upstream_timeout_ms = c->upstream_timeout_ms,
		.shutdown_grace_ms = c->shutdown_grace_ms,
		.policy = { .max_attempts = (uint32_t)c->max_attempts,
			.backoff_base_ms = c->retry_base_ms, .backoff_max_ms = c->retry_max_ms },
	};
	struct api_opts ao = {
		.job_ttl_ms = c->job_ttl_ms,
		.keys = (const char *const *)c->api_keys,
		.models = c->n_models ? (const char *const *)c->models
		                      : (c->upstream ? NULL : loadtest_models),
		.restrict_models = c->n_models > 0,
		.webhook_allow_http = c->webhook_allow_http,
		.webhook_allow_private = c->webhook_allow_private,
		.backend_name = c->upstream ? c->upstream : "load-test",
		.data_dir = c->data_dir,
		.file_ttl_ms = c->file_ttl_ms,
		.batch_max_requests = c->batch_max_requests,
		.batch_max_bytes = c->batch_max_bytes,
		.rate_limit = (uint32_t)c->rate_limit,
		.max_queued = c->max_queued,
		.intake = d->in,
	};
	struct deliver_opts dopts = {
		.allow_http = c->webhook_allow_http,
		.allow_private = c->webhook_allow_private,
		.timeout_ms = c->webhook_timeout_ms,
		.max_age_ms = c->webhook_max_age_ms,
		.retry_base_ms = c->webhook_retry_base_ms,
		.concurrency = 16,
	};
	rc = sched_new(d->loop, d->st, d->wr, d->be, &so2, &d->sc);
	if (rc == 0)
		rc = deliver_new(d->loop, d->st, d->wr, &dopts, &d->dl);
	if (rc == 0)
		rc = api_new(d->st, d->wr, d->rd, d->sc, &ao, &d->api);
	struct batchrun_opts bo = {
		.data_dir = c->data_dir,
		.max_requests = c->batch_max_requests,
		.max_line = (size_t)c->max_body,
		.file_ttl_ms = c->file_ttl_ms,
		.models = c->n_models ? (const char *const *)c->models : NULL,
	};
	if (rc == 0)
		rc = batchrun_new(d->loop, d->st, d->wr, d->sc, &bo, &d->br);
	if (rc == 0)
		api_set_batchrun(d->api, d->br);
	if (rc == 0)
		api_set_deliver(d->api, d->dl);
	struct retain_opts ro = {
		.data_dir = c->data_dir,
		.retention_ms = c->retention_ms,
		.idem_keep_ms = c->idem_keep_ms,
	};
	if (rc == 0)
		rc = retain_new(d->loop, d->st, d->wr, &ro, &d->rt);
	if (rc) {
		log_error("startup failed: %s", sl_strerror(rc));
		return 1;
	}
	routes = api_routes(&n_routes);
	struct http_opts ho = {
		.host = c->listen_host,
		.port = c->listen_port,
		.max_body = (size_t)c->max_body,
		.max_upload = (size_t)c->batch_max_bytes,
		.conn_limit = (unsigned)c->max_connections,
		.conn_timeout_s = (unsigned)((c->conn_timeout_ms + 999) / 1000),
	};
	rc = http_start(d->loop, &ho, routes, n_routes, d->api, &d->http);
	if (rc) {
		log_error("cannot listen on %s:%u: %s", c->listen_host, c->listen_port,
		    rc == -EINVAL ? "not a numeric address" : "address in use or not available");
		return 1;
	}
	if (c->port_file && write_port_file(c->port_file, http_port(d->http)) != 0)
		log_warn("cannot write port file %s", c->port_file);
	log_info("listening on http://%s:%u (%s keys, job ttl %llus, concurrency %llu)",
	    c->listen_host, http_port(d->http), c->n_api_keys ? "with" : "no",
	    (unsigned long long)(c->job_ttl_ms / 1000), (unsigned long long)c->concurrency);

	ev_signal_init(&d->sigterm, signal_cb, SIGTERM);
	ev_signal_init(&d->sigint, signal_cb, SIGINT);
	d->sigterm.data = d->sigint.data = d;
	ev_signal_start(d->loop, &d->sigterm);
	ev_signal_start(d->loop, &d->sigint);
	ev_signal_init(&d->sigusr1, pause_cb, SIGUSR1);
	ev_signal_init(&d->sigusr2, pause_cb, SIGUSR2);
	d->sigusr1.data = d->sigusr2.data = d;
	ev_signal_start(d->loop, &d->sigusr1);
	ev_signal_start(d->loop, &d->sigusr2);
	if (c->paused)
		sched_set_paused(d->sc, true);
	sched_start(d->sc);
	deliver_start(d->dl);
	batchrun_start(d->br);
	retain_start(d->rt);
	ev_run(d->loop, 0);
	return 0;
}

static void
teardown(struct daemon *d)
{
	struct writer_stats ws = { 0 };
	uint64_t submitted;

	retain_stop(d->rt); /* sends nothing more to the writer's last dones */
	if (d->wr) {
		writer_get_stats(d->wr, &ws);
		writer_stop(d->wr); /* applies what is queued: requeues included */
	}
	reader_stop(d->rd); /* answers the polls still being read */
	http_stop(d->http);
	if (d->dl && !d->stopping)
		deliver_stop(d->dl);
	deliver_free(d->dl);
	if (d->br && !d->stopping)
		batchrun_stop(d->br);
	batchrun_free(d->br);
	retain_free(d->rt);
	sched_free(d->sc);
	submitted = d->api ? api_submitted(d->api) : 0;
	api_free(d->api);
	if (d->be)
		d->be->ops->free(d->be);
	store_close(d->st);
	journal_close(d->jn);
	if (d->dir_lock >= 0)
		close(d->dir_lock);
	intake_free(d->in);
	if (d->loop)
		log_info("stopped: %llu commits, %llu store operations, %llu submits journaled "
		    "in %llu appends; %llu submits answered", (unsigned long long)ws.commits,
		    (unsigned long long)ws.ops, (unsigned long long)ws.journaled,
		    (unsigned long long)ws.appends, (unsigned long long)submitted);
	config_release(&d->cfg);
}

int
main(int argc, char **argv)
{
	struct daemon d;
	int rc;

	memset(&d, 0, sizeof d);
	d.dir_lock = -1;
	log_set_ident("slowlaned");
	rc = config_load(&d.cfg, argc, argv);
	if (rc != CONFIG_OK) {
		config_release(&d.cfg);
		return rc == CONFIG_EXIT ? 0 : 2;
	}
	log_set_level((enum log_level)d.cfg.log_level);
	signal(SIGPIPE, SIG_IGN);
	log_info("slowlaned %s starting (pid %d)", PACKAGE_VERSION, (int)getpid());
	rc = run(&d);
	teardown(&d);
	return rc;
}
