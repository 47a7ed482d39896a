/*
 * syncshim.c - an LD_PRELOAD shim that records, in one totally ordered log,
 * what the daemon writes to its LMDB data file, when it syncs that file, and
 * what it sends on sockets. tests/torture/t2100-sync-ack.mjs reads the log and
 * proves that every id a client is answered with left the process only after
 * the commit holding it was durable (pages written, fdatasync, meta page
 * written through the O_DSYNC descriptor).
 *
 * Ordering: file writes and syncs are logged after the real call returned,
 * socket sends before the real call starts, all under one mutex that also
 * assigns the sequence number. So "sync logged before send" means the sync
 * had completed before the send began, whatever the threads did.
 *
 * Environment:
 *   SYNCSHIM_LOG=FILE   where to append the log (nothing is logged without it)
 *   SYNCSHIM_NOSYNC=1   the negative control: fsync/fdatasync/msync/
 *                       sync_file_range on data.mdb return 0 without syncing,
 *                       and O_DSYNC/O_SYNC are stripped when data.mdb is
 *                       opened: what MDB_NOSYNC does to LMDB's commit.
 *                       Syncs of uploaded files, of the files directory and
 *                       of the journal are suppressed too.
 *   SYNCSHIM_NOSYNC=journal  only the journal's syncs are suppressed.
 *   SYNCSHIM_NOSYNC=meta  only O_DSYNC is dropped (MDB_NOMETASYNC): the
 *                       meta page is synced by the next commit, not this one.
 *   SYNCSHIM_SYNC_DELAY_US=N  every real sync of data.mdb takes N µs longer
 *                       (a slow disk), so that concurrent submits pile up
 *                       behind a commit: the group commit test.
 *   SYNCSHIM_JOURNAL_SYNC_DELAY_US=N  the same for the journal's syncs.
 *
 * Record: 'SYN1' | u8 kind | u8 dsync | u16 pad | i32 fd | u64 seq |
 *         i64 offset (-1 if none) | u32 len | payload[len]
 * kinds: 'O' open of data.mdb (payload: path), 'W' write to data.mdb
 * (payload: bytes), 'S' sync of data.mdb, 'N' a sync suppressed by NOSYNC,
 * 'X' socket send (payload: first 64 KiB), 'C' close of data.mdb,
 * 'J' write to <data-dir>/journal (payload: bytes), 'K' sync of it,
 * 'f' fsync/fdatasync of a file or directory under <data-dir>/files
 * (payload: its path), 'R' rename into <data-dir>/files (payload:
 * "old\0new").
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD		65536
#define SEND_CAP	65536
#define WRITE_CAP	(1u << 22)

enum { FD_NONE, FD_DATA, FD_FILES, FD_JOURNAL };

static unsigned char fd_kind[MAX_FD];
static unsigned char fd_dsync[MAX_FD];
static char *fd_path[MAX_FD];	/* FD_FILES only */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t seq;
static int log_fd = -2;		/* -2: not opened yet, -1: logging off */
static int nosync = -1;

#define REAL(name) static __typeof__(name) *real_##name; \
	if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static int nometa = -1;
static int nojournal = -1;
static long sync_delay_us = -1;

static void
slow_disk(void)
{
	if (sync_delay_us < 0) {
		const char *e = getenv("SYNCSHIM_SYNC_DELAY_US");
		sync_delay_us = e ? atol(e) : 0;
	}
	if (sync_delay_us > 0)
		usleep((useconds_t)sync_delay_us);
}

/* SYNCSHIM_JOURNAL_SYNC_DELAY_US: the same for the journal's syncs. */
static void
slow_journal(void)
{
	static long us = -1;

	if (us < 0) {
		const char *e = getenv("SYNCSHIM_JOURNAL_SYNC_DELAY_US");
		us = e ? atol(e) : 0;
	}
	if (us > 0)
		usleep((useconds_t)us);
}

static void
read_mode(void)
{
	const char *e = getenv("SYNCSHIM_NOSYNC");

	nometa = e && strcmp(e, "meta") == 0;
	nojournal = e && strcmp(e, "journal") == 0;
	nosync = e && *e && strcmp(e, "0") != 0 && !nometa && !nojournal;
}

/* SYNCSHIM_NOSYNC=journal: only the journal's syncs suppressed. */
static int
want_nojournal(void)
{
	if (nosync < 0)
		read_mode();
	return nojournal;
}

/* SYNCSHIM_NOSYNC=1: every sync suppressed (MDB_NOSYNC). */
static int
want_nosync(void)
{
	if (nosync < 0)
		read_mode();
	return nosync;
}

/* SYNCSHIM_NOSYNC=meta: only the O_DSYNC of the meta page writes dropped
 * (MDB_NOMETASYNC: the last commit may be lost). */
static int
want_nometa(void)
{
	if (nometa < 0)
		read_mode();
	return nometa;
}

/* Raw syscalls for the log itself: our own writes must not be intercepted. */
static void
raw_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		long w = syscall(SYS_write, fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		c += w;
		n -= (size_t)w;
	}
}

/* Call with mu held. */
static int
log_open(void)
{
	if (log_fd == -2) {
		const char *f = getenv("SYNCSHIM_LOG");
		log_fd = f && *f ? (int)syscall(SYS_open, f, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
		    0600) : -1;
		if (log_fd < 0)
			log_fd = -1;
	}
	return log_fd >= 0;
}

struct rec {
	char magic[4];
	uint8_t kind;
	uint8_t dsync;
	uint16_t pad;
	int32_t fd;
	uint64_t seq;
	int64_t off;
	uint32_t len;
} __attribute__((packed));

/* Logs one event; the payload is an iovec list (total capped at cap). */
static void
log_event(char kind, int fd, int64_t off, const struct iovec *iov, int iovcnt, size_t cap)
{
	struct rec r;
	size_t total = 0;
	int saved = errno;

	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if (total > cap)
		total = cap;
	pthread_mutex_lock(&mu);
	if (!log_open()) {
		pthread_mutex_unlock(&mu);
		errno = saved;
		return;
	}
	memcpy(r.magic, "SYN1", 4);
	r.kind = (uint8_t)kind;
	r.dsync = fd >= 0 && fd < MAX_FD ? fd_dsync[fd] : 0;
	r.pad = 0;
	r.fd = fd;
	r.seq = ++seq;
	r.off = off;
	r.len = (uint32_t)total;
	raw_write_all(log_fd, &r, sizeof r);
	for (int i = 0; i < iovcnt && total > 0; i++) {
		size_t n = iov[i].iov_len < total ? iov[i].iov_len : total;
		raw_write_all(log_fd, iov[i].iov_base, n);
		total -= n;
	}
	pthread_mutex_unlock(&mu);
	errno = saved;
}

static void
log_buf(char kind, int fd, int64_t off, const void *p, size_t n, size_t cap)
{
	struct iovec v = { (void *)p, n };

	log_event(kind, fd, off, &v, 1, cap);
}

static int
is_data(int fd)
{
	return fd >= 0 && fd < MAX_FD && fd_kind[fd] == FD_DATA;
}

/* <data-dir>/journal (docs/JOURNAL.md): its writes and syncs are logged
 * as 'J' and 'K'. */
static int
is_journal(int fd)
{
	return fd >= 0 && fd < MAX_FD && fd_kind[fd] == FD_JOURNAL;
}

static int
journal_path(const char *path)
{
	size_t n = path ? strlen(path) : 0;

	return n >= 8 && strcmp(path + n - 8, "/journal") == 0;
}

static int
is_socket(int fd)
{
	struct stat sb;

	return fd >= 0 && fstat(fd, &sb) == 0 && S_ISSOCK(sb.st_mode);
}

static int
data_path(const char *path)
{
	size_t n = path ? strlen(path) : 0;

	return n >= 8 && strcmp(path + n - 8, "data.mdb") == 0;
}

/* Uploaded files and the directory holding them. */
static int
files_path(const char *path)
{
	size_t n = path ? strlen(path) : 0;

	return path && (strstr(path, "/files/") != NULL ||
	    (n >= 6 && strcmp(path + n - 6, "/files") == 0));
}

static int
is_files(int fd)
{
	return fd >= 0 && fd < MAX_FD && fd_kind[fd] == FD_FILES;
}

static int
adjust_flags(const char *path, int flags)
{
	if (data_path(path) && (want_nosync() || want_nometa()))
		flags &= ~(O_DSYNC | O_SYNC);
	return flags;
}

static int
opened(const char *path, int flags, int fd)
{
	if (fd >= 0 && fd < MAX_FD) {
		fd_kind[fd] = FD_NONE;
		fd_dsync[fd] = 0;
		if (data_path(path)) {
			fd_kind[fd] = FD_DATA;
			fd_dsync[fd] = (flags & (O_DSYNC | O_SYNC)) != 0;
			log_buf('O', fd, flags, path, strlen(path), 4096);
		} else if (journal_path(path)) {
			fd_kind[fd] = FD_JOURNAL;
		} else if (files_path(path)) {
			fd_kind[fd] = FD_FILES;
			free(fd_path[fd]);
			fd_path[fd] = strdup(path);
		}
	}
	return fd;
}

/* ---- opens */

int
open(const char *path, int flags, ...)
{
	REAL(open);
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	flags = adjust_flags(path, flags);
	return opened(path, flags, real_open(path, flags, mode));
}

int
open64(const char *path, int flags, ...)
{
	REAL(open64);
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	flags = adjust_flags(path, flags);
	return opened(path, flags, real_open64(path, flags, mode));
}

int
openat(int dirfd, const char *path, int flags, ...)
{
	REAL(openat);
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	flags = adjust_flags(path, flags);
	return opened(path, flags, real_openat(dirfd, path, flags, mode));
}

int
openat64(int dirfd, const char *path, int flags, ...)
{
	REAL(openat64);
	mode_t mode = 0;
	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;
		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	flags = adjust_flags(path, flags);
	return opened(path, flags, real_openat64(dirfd, path, flags, mode));
}

int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);

int
__open_2(const char *path, int flags)
{
	REAL(__open_2);
	flags = adjust_flags(path, flags);
	return opened(path, flags, real___open_2(path, flags));
}

int
__open64_2(const char *path, int flags)
{
	REAL(__open64_2);
	flags = adjust_flags(path, flags);
	return opened(path, flags, real___open64_2(path, flags));
}

int
close(int fd)
{
	REAL(close);
	if (is_data(fd))
		log_buf('C', fd, -1, NULL, 0, 0);
	if (fd >= 0 && fd < MAX_FD) {
		fd_kind[fd] = FD_NONE;
		fd_dsync[fd] = 0;
		free(fd_path[fd]);
		fd_path[fd] = NULL;
	}
	return real_close(fd);
}

/* ---- writes */

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite);
	ssize_t w = real_pwrite(fd, buf, n, off);
	if (w > 0 && is_data(fd))
		log_buf('W', fd, off, buf, (size_t)w, WRITE_CAP);
	if (w > 0 && is_journal(fd))
		log_buf('J', fd, off, buf, (size_t)w, WRITE_CAP);
	return w;
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	REAL(pwrite64);
	ssize_t w = real_pwrite64(fd, buf, n, off);
	if (w > 0 && is_data(fd))
		log_buf('W', fd, off, buf, (size_t)w, WRITE_CAP);
	if (w > 0 && is_journal(fd))
		log_buf('J', fd, off, buf, (size_t)w, WRITE_CAP);
	return w;
}

ssize_t
write(int fd, const void *buf, size_t n)
{
	REAL(write);
	if (is_data(fd)) {
		off_t off = lseek(fd, 0, SEEK_CUR);
		ssize_t w = real_write(fd, buf, n);
		if (w > 0)
			log_buf('W', fd, off, buf, (size_t)w, WRITE_CAP);
		return w;
	}
	if (fd > 2 && is_socket(fd))
		log_buf('X', fd, -1, buf, n, SEND_CAP);
	return real_write(fd, buf, n);
}

ssize_t
writev(int fd, const struct iovec *iov, int cnt)
{
	REAL(writev);
	if (is_data(fd)) {
		off_t off = lseek(fd, 0, SEEK_CUR);
		ssize_t w = real_writev(fd, iov, cnt);
		if (w > 0)
			log_event('W', fd, off, iov, cnt, (size_t)w);
		return w;
	}
	if (fd > 2 && is_socket(fd))
		log_event('X', fd, -1, iov, cnt, SEND_CAP);
	return real_writev(fd, iov, cnt);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev);
	ssize_t w = real_pwritev(fd, iov, cnt, off);
	if (w > 0 && is_data(fd))
		log_event('W', fd, off, iov, cnt, (size_t)w);
	return w;
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
	REAL(pwritev64);
	ssize_t w = real_pwritev64(fd, iov, cnt, off);
	if (w > 0 && is_data(fd))
		log_event('W', fd, off, iov, cnt, (size_t)w);
	return w;
}

ssize_t
pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int flags)
{
	REAL(pwritev2);
	ssize_t w = real_pwritev2(fd, iov, cnt, off, flags);
	if (w > 0 && is_data(fd))
		log_event('W', fd, off, iov, cnt, (size_t)w);
	return w;
}

/* ---- syncs */

int
fsync(int fd)
{
	REAL(fsync);
	if (((is_data(fd) || is_files(fd) || is_journal(fd)) && want_nosync()) ||
	    (is_journal(fd) && want_nojournal())) {
		log_buf('N', fd, -1, NULL, 0, 0);
		return 0;
	}
	int rc = real_fsync(fd);
	if (rc == 0 && is_data(fd)) {
		slow_disk();
		log_buf('S', fd, -1, NULL, 0, 0);
	} else if (rc == 0 && is_journal(fd)) {
		slow_journal();
		log_buf('K', fd, -1, NULL, 0, 0);
	}
	else if (rc == 0 && is_files(fd) && fd_path[fd])
		log_buf('f', fd, -1, fd_path[fd], strlen(fd_path[fd]), 4096);
	return rc;
}

int
fdatasync(int fd)
{
	REAL(fdatasync);
	if (((is_data(fd) || is_files(fd) || is_journal(fd)) && want_nosync()) ||
	    (is_journal(fd) && want_nojournal())) {
		log_buf('N', fd, -1, NULL, 0, 0);
		return 0;
	}
	int rc = real_fdatasync(fd);
	if (rc == 0 && is_data(fd)) {
		slow_disk();
		log_buf('S', fd, -1, NULL, 0, 0);
	} else if (rc == 0 && is_journal(fd)) {
		slow_journal();
		log_buf('K', fd, -1, NULL, 0, 0);
	}
	else if (rc == 0 && is_files(fd) && fd_path[fd])
		log_buf('f', fd, -1, fd_path[fd], strlen(fd_path[fd]), 4096);
	return rc;
}

int
sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags)
{
	REAL(sync_file_range);
	if (is_data(fd) && want_nosync()) {
		log_buf('N', fd, off, NULL, 0, 0);
		return 0;
	}
	/* Not a durability barrier (no metadata, no disk cache flush): logged
	 * as a write-out hint, never as a sync. */
	return real_sync_file_range(fd, off, n, flags);
}

/* The daemon does not map data.mdb writable (no MDB_WRITEMAP); an msync is
 * recorded with fd -1 and the checker does not count it as a sync. */
int
msync(void *addr, size_t len, int flags)
{
	REAL(msync);
	if (want_nosync()) {
		log_buf('N', -1, -1, NULL, 0, 0);
		return 0;
	}
	int rc = real_msync(addr, len, flags);
	if (rc == 0)
		log_buf('M', -1, -1, NULL, 0, 0);
	return rc;
}

/* ---- renames into <data-dir>/files */

static void
log_rename(const char *from, const char *to)
{
	struct iovec v[3] = { { (void *)from, strlen(from) }, { "", 1 }, { (void *)to, strlen(to) } };

	if (files_path(to))
		log_event('R', -1, -1, v, 3, 8192);
}

int
rename(const char *from, const char *to)
{
	REAL(rename);
	int rc = real_rename(from, to);
	if (rc == 0)
		log_rename(from, to);
	return rc;
}

int
renameat(int fd1, const char *from, int fd2, const char *to)
{
	REAL(renameat);
	int rc = real_renameat(fd1, from, fd2, to);
	if (rc == 0)
		log_rename(from, to);
	return rc;
}

/* ---- socket sends */

ssize_t
send(int fd, const void *buf, size_t n, int flags)
{
	REAL(send);
	log_buf('X', fd, -1, buf, n, SEND_CAP);
	return real_send(fd, buf, n, flags);
}

ssize_t
sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *a, socklen_t al)
{
	REAL(sendto);
	log_buf('X', fd, -1, buf, n, SEND_CAP);
	return real_sendto(fd, buf, n, flags, a, al);
}

ssize_t
sendmsg(int fd, const struct msghdr *m, int flags)
{
	REAL(sendmsg);
	log_event('X', fd, -1, m->msg_iov, (int)m->msg_iovlen, SEND_CAP);
	return real_sendmsg(fd, m, flags);
}

ssize_t
sendfile(int out, int in, off_t *off, size_t n)
{
	REAL(sendfile);
	/* Payload unknown here; logged so the checker can flag it. */
	log_buf('F', out, off ? *off : -1, NULL, 0, 0);
	return real_sendfile(out, in, off, n);
}
