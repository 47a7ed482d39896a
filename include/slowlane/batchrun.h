/*
 * batchrun.h - the batch engine: moves batches through validating ->
 * in_progress -> finalizing -> completed (or failed, cancelled, expired).
 * It validates the input file by streaming it once, expands its lines into
 * jobs in bounded transactions (progress stored with the jobs, so a crash
 * resumes where it stopped and never inserts a line twice), sweeps the
 * queued jobs of a cancelled batch, and writes the output and error files
 * by streaming over the batch's lines. Jobs run through the ordinary
 * scheduler. Memory: one read buffer per batch being worked on.
 *
 * Threads: loop thread only.
 */
#ifndef SLOWLANE_BATCHRUN_H
#define SLOWLANE_BATCHRUN_H

#include <ev.h>
#include <stdint.h>

#include "slowlane/sched.h"
#include "slowlane/store.h"
#include "slowlane/writer.h"

struct batchrun_opts {
	const char *data_dir;
	uint64_t max_requests;  /* lines per batch */
	size_t max_line;        /* bytes per line */
	uint64_t file_ttl_ms;   /* output files expire after this; 0 never */
	/* NULL-terminated; when set, a line naming a model not in it fails the
	 * validation (model_not_found), as a submit is refused. Borrowed. */
	const char *const *models;
};

struct batchrun;

int batchrun_new(struct ev_loop *loop, struct store *st, struct writer *wr, struct sched *sc,
    const struct batchrun_opts *o, struct batchrun **out);
void batchrun_start(struct batchrun *b);
/* A batch was created or cancelled: look at the active ones now. */
void batchrun_kick(struct batchrun *b);
/* Stops taking new steps (steps with the writer still complete). */
void batchrun_stop(struct batchrun *b);
/* batchrun_free(NULL) is a no-op. */
void batchrun_free(struct batchrun *b);

#endif
