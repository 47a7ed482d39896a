/*
 * journal.c - the submit journal's file: frames, halves, replay.
 *
 * Why the file is zero-filled once: a sync of an append that grows a file
 * also commits its new size and blocks through the filesystem's journal;
 * overwriting blocks that already exist syncs only the data (0.22 vs 0.39
 * ms per 32 KiB on the reference machine, bench/profile.md).
 *
 * Why halves: a frame's space may be reused only once the store has it.
 * Writing round a ring would leave the oldest live frame anywhere; with two
 * halves, each half's frames are one run of consecutive seqs from its start,
 * so replay needs no index: parse each half until a frame fails its magic,
 * length, CRC or seq, and apply the frames of both runs above `applied` in
 * seq order. Frames of an older pass further into a half have lower seqs,
 * so the run ends before them.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slowlane/journal.h"
#include "slowlane/log.h"
#include "slowlane/util.h"

#define FRAME_MAGIC 0x314a4c53u /* "SLJ1" little-endian */

struct journal {
	int fd;
	uint64_t next_seq;
	int half;                  /* the half being written */
	size_t off;                /* next write offset in it */
	unsigned char *buf;        /* the frames of one append */
	size_t buf_cap;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t half_last[2];     /* guarded by mu: last seq written there, 0 = none */
	uint64_t applied;          /* guarded by mu */
};

static size_t
pad8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static void
put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void
put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t
get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
get64(const unsigned char *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* The CRC covers seq, len and the record. */
static uint32_t
frame_crc(const unsigned char *hdr, const void *rec, size_t len)
{
	uint32_t crc = sl_crc32(0, hdr + 4, 4);   /* len */
	crc = sl_crc32(crc, hdr + 8, 8);          /* seq */
	return sl_crc32(crc, rec, len);
}

size_t
journal_frames_size(const struct iovec *recs, size_t n)
{
	size_t size = 0;

	for (size_t i = 0; i < n; i++)
		size += JOURNAL_FRAME_HEADER + pad8(recs[i].iov_len);
	return size;
}

/* ---- replay ---- */

struct frame {
	uint64_t seq;
	const unsigned char *rec;
	size_t len;
};

/* Parses one half's run of frames into out[] (at most cap; out may be NULL
 * to count them only). *last_seq gets the run's last seq (0: none). Returns
 * the count. */
static size_t
parse_half(const unsigned char *h, struct frame *out, size_t cap, uint64_t *last_seq)
{
	size_t off = 0, n = 0;
	uint64_t prev = 0;

	while (n < cap && off + JOURNAL_FRAME_HEADER <= JOURNAL_HALF) {
		const unsigned char *hdr = h + off;
		uint32_t len = get32(hdr + 4);
		uint64_t seq = get64(hdr + 8);

		if (get32(hdr) != FRAME_MAGIC || len > JOURNAL_HALF - off - JOURNAL_FRAME_HEADER)
			break;
		if (seq == 0 || (n > 0 && seq != prev + 1))
			break;
		if (frame_crc(hdr, hdr + JOURNAL_FRAME_HEADER, len) != get32(hdr + 16))
			break;
		if (out)
			out[n] = (struct frame){ seq, hdr + JOURNAL_FRAME_HEADER, len };
		n++;
		prev = seq;
		off += JOURNAL_FRAME_HEADER + pad8(len);
	}
	*last_seq = prev;
	return n;
}

/* Calls cb for the frames above `applied` of the two runs, in seq order. */
static int
replay(const unsigned char *file, uint64_t applied, journal_replay_fn cb, void *arg,
    uint64_t *last)
{
	size_t cap = JOURNAL_HALF / JOURNAL_FRAME_HEADER, n[2];
	struct frame *f[2] = { calloc(cap, sizeof **f), calloc(cap, sizeof **f) };
	size_t i[2] = { 0, 0 };
	uint64_t expect = applied + 1;
	int rc = 0;

	*last = applied;
	if (!f[0] || !f[1]) {
		rc = -ENOMEM;
		goto out;
	}
	for (int h = 0; h < 2; h++) {
		uint64_t ignored;
		n[h] = parse_half(file + (size_t)h * JOURNAL_HALF, f[h], cap, &ignored);
		while (i[h] < n[h] && f[h][i[h]].seq <= applied)
			i[h]++;
	}
	while (rc == 0 && (i[0] < n[0] || i[1] < n[1])) {
		int h = i[1] >= n[1] ? 0 : i[0] >= n[0] ? 1 : f[0][i[0]].seq < f[1][i[1]].seq ? 0 : 1;
		const struct frame *fr = &f[h][i[h]++];

		if (fr->seq != expect)
			log_warn("journal: frame %llu follows %llu: frames in between are missing",
			    (unsigned long long)fr->seq, (unsigned long long)expect - 1);
		rc = cb(arg, fr->seq, fr->rec, fr->len);
		expect = fr->seq + 1;
		*last = fr->seq;
	}
out:
	free(f[0]);
	free(f[1]);
	return rc;
}

/* ---- open, append, close ---- */

/* Makes the file JOURNAL_BYTES long with zeros where it was short, synced
 * (and its directory entry, if it was created). */
static int
fill(int fd, const char *dir, off_t size)
{
	size_t chunk = (size_t)1 << 20;
	char *zero = calloc(1, chunk);
	int rc = 0, dfd;

	if (!zero)
		return -ENOMEM;
	for (size_t off = (size_t)size; off < JOURNAL_BYTES;) {
		size_t n = JOURNAL_BYTES - off < chunk ? JOURNAL_BYTES - off : chunk;
		ssize_t w = pwrite(fd, zero, n, (off_t)off);
		if (w <= 0) {
			rc = w < 0 ? -errno : -EIO;
			goto out;
		}
		off += (size_t)w;
	}
	if (fsync(fd) != 0) {
		rc = -errno;
		goto out;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		if (fsync(dfd) != 0)
			rc = -errno;
		close(dfd);
	}
out:
	free(zero);
	return rc;
}

/* Reads the whole journal into a new zeroed buffer of JOURNAL_BYTES. A
 * short file (created by a crash before its fill finished) is read as far
 * as it goes; the rest reads as zeros, which end a run. */
static int
read_file(int fd, unsigned char **out)
{
	unsigned char *file = calloc(1, JOURNAL_BYTES);

	if (!file)
		return -ENOMEM;
	for (size_t got = 0; got < JOURNAL_BYTES;) {
		ssize_t r = pread(fd, file + got, JOURNAL_BYTES - got, (off_t)got);
		if (r < 0) {
			int rc = -errno;
			free(file);
			return rc;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	*out = file;
	return 0;
}

int
journal_last_seq(const char *dir, uint64_t *last)
{
	char path[4096];
	unsigned char *file = NULL;
	uint64_t l[2];
	int fd, rc;

	snprintf(path, sizeof path, "%s/journal", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = read_file(fd, &file);
	close(fd);
	if (rc)
		return rc;
	for (int h = 0; h < 2; h++)
		parse_half(file + (size_t)h * JOURNAL_HALF, NULL, SIZE_MAX, &l[h]);
	*last = l[0] > l[1] ? l[0] : l[1];
	free(file);
	return 0;
}

int
journal_open(const char *dir, uint64_t applied, journal_replay_fn cb, void *arg,
    uint64_t *last, struct journal **out)
{
	char path[4096];
	struct journal *j = calloc(1, sizeof *j);
	unsigned char *file = NULL;
	off_t size;
	int rc = 0;

	if (!j)
		return -ENOMEM;
	j->fd = -1;
	snprintf(path, sizeof path, "%s/journal", dir);
	/* One owner at a time: a second daemon on this directory, or a
	 * slowlanectl replaying it, must not append beside the first. The
	 * lock goes with the descriptor (journal_close, or a crash). */
	j->fd = sl_try_lock(path, O_RDWR | O_CREAT);
	if (j->fd < 0) {
		rc = j->fd;
		if (rc != -EBUSY)
			log_error("journal: %s: %s", path, strerror(-rc));
		goto out;
	}
	size = lseek(j->fd, 0, SEEK_END);
	if (size < 0) {
		rc = -errno;
		goto out;
	}
	rc = read_file(j->fd, &file);
	if (rc == 0)
		rc = replay(file, applied, cb, arg, last);
	if (rc)
		goto out;
	if (size < (off_t)JOURNAL_BYTES && (rc = fill(j->fd, dir, size)) != 0) {
		log_warn("journal: cannot make %s %zu MiB (%s): submits commit directly", path,
		    JOURNAL_BYTES >> 20, strerror(-rc));
		rc = rc == -ENOSPC || rc == -EDQUOT ? -ENOSPC : rc;
		/* Give the space back: the store needs it more. */
		if (ftruncate(j->fd, size) != 0)
			log_warn("journal: truncating %s: %s", path, strerror(errno));
		goto out;
	}
	j->next_seq = *last + 1;
	j->applied = *last;
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
out:
	free(file);
	if (rc) {
		if (j->fd >= 0)
			close(j->fd);
		free(j);
		return rc;
	}
	*out = j;
	return 0;
}

int
journal_probe(const char *dir)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof path, "%s/journal", dir);
	fd = sl_try_lock(path, O_RDONLY);
	if (fd < 0)
		return fd;
	close(fd); /* and with it the lock */
	return 0;
}

/* Makes room for `size` bytes in the current half or moves to the other. */
static void
make_room(struct journal *j, size_t size)
{
	int other = 1 - j->half;

	if (j->off + size <= JOURNAL_HALF)
		return;
	pthread_mutex_lock(&j->mu);
	while (j->half_last[other] > j->applied)
		pthread_cond_wait(&j->cv, &j->mu);
	j->half_last[other] = 0;
	pthread_mutex_unlock(&j->mu);
	j->half = other;
	j->off = 0;
}

int
journal_append(struct journal *j, const struct iovec *recs, size_t n, uint64_t *first)
{
	size_t size = journal_frames_size(recs, n), pos = 0;
	unsigned char *p;

	if (size > JOURNAL_HALF)
		return -E2BIG;
	if (size > j->buf_cap) {
		size_t cap = size > 65536 ? size : 65536;
		unsigned char *b = realloc(j->buf, cap);
		if (!b)
			return -ENOMEM;
		j->buf = b;
		j->buf_cap = cap;
	}
	make_room(j, size);
	for (size_t i = 0; i < n; i++) {
		size_t len = recs[i].iov_len;

		p = j->buf + pos;
		put32(p, FRAME_MAGIC);
		put32(p + 4, (uint32_t)len);
		put64(p + 8, j->next_seq + i);
		put32(p + 20, 0);
		memcpy(p + JOURNAL_FRAME_HEADER, recs[i].iov_base, len);
		memset(p + JOURNAL_FRAME_HEADER + len, 0, pad8(len) - len);
		put32(p + 16, frame_crc(p, p + JOURNAL_FRAME_HEADER, len));
		pos += JOURNAL_FRAME_HEADER + pad8(len);
	}
	for (size_t done = 0; done < size;) {
		ssize_t w = pwrite(j->fd, j->buf + done, size - done,
		    (off_t)((size_t)j->half * JOURNAL_HALF + j->off + done));
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		done += (size_t)w;
	}
	if (fdatasync(j->fd) != 0)
		return -errno;
	*first = j->next_seq;
	j->next_seq += n;
	j->off += size;
	pthread_mutex_lock(&j->mu);
	j->half_last[j->half] = j->next_seq - 1;
	pthread_mutex_unlock(&j->mu);
	return 0;
}

void
journal_applied(struct journal *j, uint64_t seq)
{
	pthread_mutex_lock(&j->mu);
	if (seq > j->applied) {
		j->applied = seq;
		pthread_cond_broadcast(&j->cv);
	}
	pthread_mutex_unlock(&j->mu);
}

void
journal_close(struct journal *j)
{
	if (!j)
		return;
	close(j->fd);
	pthread_mutex_destroy(&j->mu);
	pthread_cond_destroy(&j->cv);
	free(j->buf);
	free(j);
}
