/*
 * test_journal.c - the journal file on a real directory: frames come back
 * in seq order above the applied seq, a torn frame ends the replay, writing
 * moves between halves only once the other half is applied, and frames of
 * an older pass are never replayed.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../tap.h"
#include "slowlane/journal.h"

static char dir[256];

/* What a replay saw: seqs and the first byte of each record. */
struct seen {
	uint64_t seq[4096];
	unsigned char first[4096];
	size_t len[4096];
	size_t n;
	int fail_at; /* return -EIO at this call (1-based), 0 = never */
};

static int
collect(void *arg, uint64_t seq, const void *rec, size_t len)
{
	struct seen *s = arg;

	if (s->fail_at && (int)s->n + 1 == s->fail_at)
		return -EIO;
	if (s->n < 4096) {
		s->seq[s->n] = seq;
		s->first[s->n] = len ? *(const unsigned char *)rec : 0;
		s->len[s->n] = len;
	}
	s->n++;
	return 0;
}

static bool
in_order(const struct seen *s, uint64_t from)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->seq[i] != from + i)
			return false;
	return true;
}

/* Reopens with `applied` and returns what was replayed. */
static struct seen *
reopen(uint64_t applied, uint64_t *last)
{
	struct seen *s = calloc(1, sizeof *s);
	struct journal *j;

	if (journal_open(dir, applied, collect, s, last, &j) != 0)
		abort();
	journal_close(j);
	return s;
}

/* Appends `n` records of `len` bytes filled with byte `c`. */
static int
append(struct journal *j, size_t n, size_t len, int c, uint64_t *first)
{
	struct iovec v[64];
	unsigned char *buf = malloc(len ? len : 1);
	int rc;

	memset(buf, c, len);
	for (size_t i = 0; i < n; i++)
		v[i] = (struct iovec){ buf, len };
	rc = journal_append(j, v, n, first);
	free(buf);
	return rc;
}

struct later {
	struct journal *j;
	uint64_t seq;
	int *flag;
};

static void *
apply_later(void *arg)
{
	struct later *l = arg;

	usleep(100000);
	*l->flag = 1;
	journal_applied(l->j, l->seq);
	return NULL;
}

int
main(void)
{
	struct journal *j;
	struct seen *s;
	struct stat sb;
	uint64_t last, first;
	char path[300];

	snprintf(dir, sizeof dir, "%s/slowlane-test-journal-XXXXXX",
	    getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return 1;
	snprintf(path, sizeof path, "%s/journal", dir);

	/* a new journal: created full size, nothing to replay */
	s = calloc(1, sizeof *s);
	ok(journal_open(dir, 0, collect, s, &last, &j) == 0, "a new journal opens");
	ok(stat(path, &sb) == 0 && (size_t)sb.st_size == JOURNAL_BYTES,
	    "its file is created %zu bytes long", JOURNAL_BYTES);
	is_int((int)s->n, 0, "nothing is replayed from a new journal");
	is_int((int)last, 0, "its last seq is the applied one");
	free(s);

	/* three records come back, in order, with their bytes */
	ok(append(j, 2, 100, 'a', &first) == 0 && first == 1, "two records get seqs 1-2");
	ok(append(j, 1, 0, 'b', &first) == 0 && first == 3, "an empty record gets seq 3");
	journal_close(j);
	s = reopen(0, &last);
	ok(s->n == 3 && in_order(s, 1) && s->first[0] == 'a' && s->len[1] == 100 &&
	    s->len[2] == 0, "all three are replayed in order with their lengths");
	is_int((int)last, 3, "the last seq is 3");
	free(s);
	s = reopen(2, &last);
	ok(s->n == 1 && s->seq[0] == 3, "with 2 applied, only seq 3 is replayed");
	free(s);
	s = reopen(3, &last);
	ok(s->n == 0 && last == 3, "with all applied, nothing is");
	free(s);

	/* a replay error is returned */
	s = calloc(1, sizeof *s);
	s->fail_at = 2;
	ok(journal_open(dir, 0, collect, s, &last, &j) == -EIO, "a replay error fails the open");
	free(s);

	/* appends after a reopen start over at half 0 with the next seqs */
	s = calloc(1, sizeof *s);
	ok(journal_open(dir, 3, collect, s, &last, &j) == 0 && s->n == 0, "reopened, applied 3");
	free(s);
	ok(append(j, 4, 200, 'c', &first) == 0 && first == 4, "the next seqs follow: 4-7");
	journal_close(j);
	{
		/* tear the last frame: flip a byte of its record */
		int fd = open(path, O_RDWR);
		size_t frame = JOURNAL_FRAME_HEADER + 200;
		unsigned char x;
		if (fd < 0 || pread(fd, &x, 1, (off_t)(3 * frame + JOURNAL_FRAME_HEADER + 7)) != 1)
			return 1;
		x ^= 0xff;
		if (pwrite(fd, &x, 1, (off_t)(3 * frame + JOURNAL_FRAME_HEADER + 7)) != 1)
			return 1;
		close(fd);
	}
	s = reopen(3, &last);
	ok(s->n == 3 && in_order(s, 4) && last == 6,
	    "a torn frame ends the replay: 4-6 come back, 7 does not");
	ok(s->first[0] == 'c', "and the frames written over the old ones are the new ones");
	free(s);

	/* moving between halves */
	s = calloc(1, sizeof *s);
	ok(journal_open(dir, 6, collect, s, &last, &j) == 0, "reopened, applied 6");
	free(s);
	{
		size_t len = 64 * 1024 - JOURNAL_FRAME_HEADER; /* 64 KiB frames */
		size_t per_half = JOURNAL_HALF / (64 * 1024);
		uint64_t f1 = 0, f2 = 0, f3 = 0;
		int rc = 0, flag = 0;
		pthread_t th;

		for (size_t i = 0; i < per_half && rc == 0; i++)
			rc = append(j, 1, len, 'd', i == 0 ? &f1 : &first);
		ok(rc == 0 && f1 == 7 && first == 7 + per_half - 1, "half 0 fills: seqs 7-%llu",
		    (unsigned long long)first);
		ok(append(j, 1, len, 'e', &f2) == 0 && f2 == 7 + per_half,
		    "the next append moves to half 1 (empty since the reopen)");
		for (size_t i = 1; i < per_half && rc == 0; i++)
			rc = append(j, 1, len, 'e', &first);
		ok(rc == 0, "half 1 fills too");
		/* half 0 is not applied: the next append must wait for it */
		struct later l = { j, f2 - 1, &flag };
		pthread_create(&th, NULL, apply_later, &l);
		ok(append(j, 2, 100, 'f', &f3) == 0 && flag == 1,
		    "an append that needs half 0 waits until half 0 is applied");
		pthread_join(th, NULL);
		journal_close(j);

		s = reopen(f2 - 1, &last);
		ok(s->n == per_half + 2 && in_order(s, f2) && s->first[0] == 'e' &&
		    s->first[per_half] == 'f' && last == f3 + 1,
		    "replay takes half 1's run, then half 0's new run, in seq order");
		free(s);
		s = reopen(0, &last);
		ok(s->n == per_half + 2 && in_order(s, f2),
		    "half 0's older frames behind its new run are never replayed");
		free(s);
	}

	/* too big for a half */
	s = calloc(1, sizeof *s);
	ok(journal_open(dir, 0, collect, s, &last, &j) == 0, "reopened");
	free(s);
	{
		struct iovec v = { calloc(1, JOURNAL_HALF), JOURNAL_HALF };
		ok(journal_append(j, &v, 1, &first) == -E2BIG, "a record bigger than a half: E2BIG");
		free(v.iov_base);
	}
	/* one owner at a time */
	{
		struct journal *j2 = NULL;
		uint64_t l2;
		s = calloc(1, sizeof *s);
		ok(journal_open(dir, 0, collect, s, &l2, &j2) == -EBUSY && !j2 && s->n == 0,
		    "a second open while the first holds it: EBUSY, nothing replayed");
		ok(journal_probe(dir) == -EBUSY, "journal_probe: held");
		journal_close(j);
		ok(journal_probe(dir) == 0, "journal_probe: free once closed");
		ok(journal_probe("/nonexistent-slowlane-dir") == -ENOENT, "journal_probe: none");
		ok(journal_open(dir, 0, collect, s, &l2, &j2) == 0 && j2,
		    "once closed, it opens again");
		journal_close(j2);
		free(s);
	}

	/* a short file (a crash during the first fill) is completed */
	if (truncate(path, 4096) != 0)
		return 1;
	s = reopen(0, &last);
	ok(stat(path, &sb) == 0 && (size_t)sb.st_size == JOURNAL_BYTES,
	    "a short journal file is filled back to full size");
	ok(s->n == 2 && s->first[0] == 'f', "the frames in what was left are still replayed");
	free(s);

	if (tap_rmrf(dir) != 0)
		return 1;
	return tap_done();
}
