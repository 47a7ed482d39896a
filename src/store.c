/*
 * store.c - LMDB behind the store.h interface.
 *
 * The one rule of the schema lives in store_job_put(): a job is in exactly
 * the indexes its state implies (job_in_ready() and friends), and every
 * change of a record moves its index entries in the same transaction. So
 * no transaction boundary can leave a job half-moved, and startup needs to
 * look only at `inflight`, never at every stored job.
 *
 * LMDB 0.9.24 traps avoided here: no MDB_DUPSORT (ITS#9376), default sync
 * flags (an acknowledged job must survive power loss), values copied or
 * used before the transaction ends, MDB_NOTLS so a read transaction is not
 * tied to the thread's reader slot. MDB_NORDAHEAD: in a store bigger than
 * RAM each poll of an old job faults in one page, and the kernel's readahead
 * made that 128 KiB read per fault, evicting the hot right edges of the
 * trees the writer needs; at 10 M jobs (30 GB, 23 GiB RAM) it took the
 * submit rate beside four pollers from ~13.9 K/s to ~2.8 K/s
 * (bench/profile.md). In RAM it changes nothing.
 */
#include "config.h"

#include <errno.h>
#include <stdatomic.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "slowlane/common.h"
#include "slowlane/log.h"
#include "slowlane/store.h"
#include "store_impl.h"

#define DEFAULT_MAP_SIZE ((uint64_t)16 << 30)

const char *const store_p_db_names[DB_COUNT] = {
	[DB_META] = "meta", [DB_JOBS] = "jobs", [DB_BODIES] = "bodies",
	[DB_RESULTS] = "results", [DB_READY] = "ready",
	[DB_INFLIGHT] = "inflight", [DB_EXPIRY] = "expiry",
	[DB_CREATED] = "created", [DB_FINISHED] = "finished",
	[DB_HISTORY] = "history", [DB_GROUPS] = "groups", [DB_WEBHOOKS] = "webhooks",
	[DB_OUTBOX] = "outbox", [DB_DELIVERIES] = "deliveries",
	[DB_FILES] = "files", [DB_FILE_INDEX] = "file_index", [DB_BATCHES] = "batches",
	[DB_BATCH_INDEX] = "batch_index", [DB_BATCH_LINES] = "batch_lines",
	[DB_BATCH_ACTIVE] = "batch_active", [DB_IDEMPOTENCY] = "idempotency",
	[DB_KEYS] = "keys", [DB_TENANT_COUNTS] = "tenant_counts",
};

static const int table_db[] = {
	[STORE_T_GROUPS] = DB_GROUPS, [STORE_T_WEBHOOKS] = DB_WEBHOOKS,
	[STORE_T_OUTBOX] = DB_OUTBOX, [STORE_T_DELIVERIES] = DB_DELIVERIES,
	[STORE_T_FILES] = DB_FILES, [STORE_T_FILE_INDEX] = DB_FILE_INDEX,
	[STORE_T_BATCHES] = DB_BATCHES, [STORE_T_BATCH_INDEX] = DB_BATCH_INDEX,
	[STORE_T_BATCH_LINES] = DB_BATCH_LINES, [STORE_T_BATCH_ACTIVE] = DB_BATCH_ACTIVE,
	[STORE_T_IDEMPOTENCY] = DB_IDEMPOTENCY, [STORE_T_KEYS] = DB_KEYS,
};

static const int time_db[] = {
	[STORE_READY] = DB_READY, [STORE_EXPIRY] = DB_EXPIRY,
	[STORE_CREATED] = DB_CREATED, [STORE_FINISHED] = DB_FINISHED,
};


/* Maps an LMDB return code to ours, logging the unexpected ones. */
int
store_p_map_rc(int rc, const char *what)
{
	switch (rc) {
	case MDB_SUCCESS: return 0;
	case MDB_NOTFOUND: return SL_ENOTFOUND;
	case MDB_MAP_FULL: return SL_EFULL;
	case ENOSPC: return SL_EFULL;
	case EIO: log_error("store: %s: I/O error", what); return -EIO;
	case MDB_PANIC:
		log_error("store: %s: LMDB reports a fatal error; the store must be reopened",
		    what);
		return -EIO;
	case ENOMEM: return -ENOMEM;
	default:
		log_error("store: %s: %s", what, mdb_strerror(rc));
		return SL_ESTORE;
	}
}

void
store_p_time_key(unsigned char *k, uint64_t ms, const char *id)
{
	sl_put_be64(k, ms);
	memcpy(k + 8, id, SL_ID_LEN);
}

static int
open_dbs(struct store *st, bool read_only)
{
	MDB_txn *txn = NULL;
	MDB_val k = { 6, "format" }, v;
	unsigned char fmt[4];
	int rc;

	rc = mdb_txn_begin(st->env, NULL, read_only ? MDB_RDONLY : 0, &txn);
	if (rc)
		return store_p_map_rc(rc, "begin");
	for (int i = 0; i < DB_COUNT; i++) {
		rc = mdb_dbi_open(txn, store_p_db_names[i], read_only ? 0 : MDB_CREATE, &st->dbi[i]);
		if (rc) {
			/* Read-only on a store from before this database existed:
			 * the caller adds the missing ones and tries again. */
			rc = rc == MDB_NOTFOUND ? SL_ENOTFOUND : store_p_map_rc(rc, "dbi_open");
			goto out;
		}
	}
	rc = mdb_get(txn, st->dbi[DB_META], &k, &v);
	if (rc == MDB_NOTFOUND && !read_only) {
		sl_put_be32(fmt, STORE_FORMAT);
		v.mv_size = sizeof fmt;
		v.mv_data = fmt;
		rc = store_p_map_rc(mdb_put(txn, st->dbi[DB_META], &k, &v, 0), "put format");
	} else if (rc == 0) {
		uint32_t have = v.mv_size == 4 ? sl_get_be32(v.mv_data) : 0;
		if (have > STORE_FORMAT) {
			log_error("store: format %u is newer than this program's %u",
			    have, STORE_FORMAT);
			rc = SL_EVERSION;
		} else if (have == 0) {
			rc = SL_ECORRUPT;
		} else if (have < STORE_FORMAT && !read_only) {
			/* Format 2 only adds a record encoding (job.c's stock
			 * messages) that format 1 programs cannot read: say so
			 * before writing one, so they refuse the store cleanly. */
			sl_put_be32(fmt, STORE_FORMAT);
			v.mv_size = sizeof fmt;
			v.mv_data = fmt;
			rc = store_p_map_rc(mdb_put(txn, st->dbi[DB_META], &k, &v, 0), "put format");
			if (rc == 0)
				log_info("store: format %u upgraded to %u", have, STORE_FORMAT);
		}
	} else {
		rc = store_p_map_rc(rc, "get format");
	}
out:
	if (rc == 0)
		rc = store_p_map_rc(mdb_txn_commit(txn), "commit");
	else
		mdb_txn_abort(txn);
	return rc;
}

static int open_env(const char *dir, const struct store_opts *opts, struct store **out);

/* The length data.mdb must have: its pages up to the last one in use, as
 * the meta page says. Returns 0 or an LMDB error. */
static int
pages_bytes(struct store *st, uint64_t *out)
{
	MDB_envinfo ei;
	MDB_stat ms;
	int rc = mdb_env_info(st->env, &ei);

	if (rc == 0)
		rc = mdb_env_stat(st->env, &ms);
	if (rc == 0)
		*out = (uint64_t)(ei.me_last_pgno + 1) * ms.ms_psize;
	return rc;
}

/* After a commit: a transaction whose highest pages were allocated and
 * freed within it leaves them unwritten, so the file is shorter than the
 * meta page says (bench/profile.md); extend it (sparse: the pages are free
 * and never read) so that check_size() keeps meaning "truncated". (One
 * fstat per commit: ~1 us beside a sync of ~1 ms.) */
static void
fill_file(struct store *st)
{
	struct stat sb;
	uint64_t need;
	int fd;

	if (pages_bytes(st, &need) != 0 || mdb_env_get_fd(st->env, &fd) != 0 ||
	    fstat(fd, &sb) != 0)
		return;
	if ((uint64_t)sb.st_size < need && ftruncate(fd, (off_t)need) != 0)
		log_warn("store: cannot extend data.mdb to %llu bytes: %s",
		    (unsigned long long)need, strerror(errno));
}

/* A data file shorter than its own meta page says is truncated: LMDB would
 * fault reading past its end, so refuse it here with words. (Our commits
 * never leave such a file: fill_file.) */
static int
check_size(struct store *st, const char *dir)
{
	char path[4096];
	struct stat sb;
	uint64_t need;

	snprintf(path, sizeof path, "%s/data.mdb", dir);
	if (stat(path, &sb) != 0 || pages_bytes(st, &need) != 0)
		return 0;
	if ((uint64_t)sb.st_size < need) {
		log_error("store: %s is truncated: %lld bytes, its pages need %llu; restore "
		    "a backup (slowlanectl backup) or inspect it with mdb_stat", path,
		    (long long)sb.st_size, (unsigned long long)need);
		return SL_ECORRUPT;
	}
	return 0;
}

/* Where LMDB mapped data.mdb: the mapping of its inode at offset 0 in
 * /proc/self/maps. LMDB keeps no public handle on it (me_mapaddr is only
 * set with MDB_FIXEDMAP). It never moves: the map size is set before
 * mdb_env_open and never after (MDB_MAP_RESIZED is not handled by a
 * remap), and without MDB_WRITEMAP a commit writes with pwrite, never
 * through the map. */
static void
find_map(struct store *st)
{
	struct stat sb;
	mdb_filehandle_t fd;
	char line[4096];
	FILE *f;

	if (mdb_env_get_fd(st->env, &fd) != 0 || fstat(fd, &sb) != 0)
		return;
	f = fopen("/proc/self/maps", "re");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi, off, ino;
		unsigned maj, mnr;
		if (sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &lo, &hi, &off, &maj, &mnr, &ino) != 6)
			continue;
		if (ino == sb.st_ino && off == 0 && maj == major(sb.st_dev) && mnr == minor(sb.st_dev) &&
		    hi - lo > st->map_len) {
			st->map = (void *)lo;
			st->map_len = hi - lo;
		}
	}
	fclose(f);
}

int
store_open(const char *dir, const struct store_opts *opts, struct store **out)
{
	struct store_opts rw;
	struct store *tmp;
	int rc = open_env(dir, opts, out);

	if (rc != -ENOENT || !opts->read_only)
		return rc == -ENOENT ? SL_ECORRUPT : rc;
	/* A database added by a newer build of this format is missing: create
	 * the empty databases in a short write transaction, then reopen. */
	rw = *opts;
	rw.read_only = false;
	rw.create = false;
	rc = open_env(dir, &rw, &tmp);
	if (rc)
		return rc == -ENOENT ? SL_ECORRUPT : rc;
	store_close(tmp);
	rc = open_env(dir, opts, out);
	return rc == -ENOENT ? SL_ECORRUPT : rc;
}

static int
open_env(const char *dir, const struct store_opts *opts, struct store **out)
{
	struct store *st;
	struct stat sb;
	unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
	int rc;

	if (stat(dir, &sb) != 0) {
		if (errno != ENOENT || !opts->create || opts->read_only)
			return errno == ENOENT ? SL_ENOTFOUND : -errno;
		if (mkdir(dir, 0700) != 0)
			return -errno;
	} else {
		char path[4096];
		snprintf(path, sizeof path, "%s/data.mdb", dir);
		if (stat(path, &sb) != 0) {
			if (!opts->create)
				return SL_ENOTFOUND;
		} else if (sb.st_size == 0) {
			/* LMDB would start an empty store over it: every job gone. */
			log_error("store: %s is empty; if this is meant to be a new store, "
			    "remove the directory; otherwise restore a backup", path);
			return SL_ECORRUPT;
		}
	}
	st = calloc(1, sizeof *st);
	if (!st)
		return -ENOMEM;
	rc = mdb_env_create(&st->env);
	if (rc) {
		rc = store_p_map_rc(rc, "env_create");
		goto out;
	}
	mdb_env_set_maxdbs(st->env, DB_COUNT + 4);
	mdb_env_set_maxreaders(st->env, 256);
	/* 0 keeps the size the store was written with (slowlanectl): a tool
	 * that grew another process's map would leave the daemon answering
	 * MDB_MAP_RESIZED. A new store gets the default. */
	if (opts->map_size || opts->create) {
		rc = mdb_env_set_mapsize(st->env, opts->map_size ? opts->map_size
		                                                 : DEFAULT_MAP_SIZE);
		if (rc) {
			rc = store_p_map_rc(rc, "set_mapsize");
			goto out;
		}
	}
	if (opts->read_only)
		flags |= MDB_RDONLY;
	st->dir = strdup(dir);
	if (!st->dir) {
		rc = -ENOMEM;
		goto out;
	}
#ifdef SL_STORE_FORCE_NOSYNC
	/* Only in tests/torture/slowlaned-nosync, the negative control of
	 * t2100-sync-ack: commits that are never synced must be caught. */
	flags |= MDB_NOSYNC;
#endif
	rc = mdb_env_open(st->env, dir, flags, 0600);
	if (rc) {
		log_error("store: cannot open %s: %s", dir, mdb_strerror(rc));
		rc = rc == ENOENT ? SL_ENOTFOUND : rc > 0 ? -rc : SL_ESTORE;
		goto out;
	}
	rc = check_size(st, dir);
	if (rc == 0)
		rc = open_dbs(st, opts->read_only);
	if (rc == 0) {
		store_measure_free(st);
		find_map(st);
	}
	if (rc == SL_ENOTFOUND)
		rc = -ENOENT; /* missing database (see store_open) */
out:
	if (rc) {
		if (st->env)
			mdb_env_close(st->env);
		free(st->dir);
		free(st);
		return rc;
	}
	*out = st;
	return 0;
}

void
store_close(struct store *st)
{
	if (!st)
		return;
	mdb_env_close(st->env);
	free(st->dir);
	free(st);
}

/*
 * How full the map is. The high-water mark (the pages LMDB ever used) says
 * it while it is low; past that only the freelist tells, which is counted
 * (store_measure_free) every second by the scheduler and, once the mark is
 * high, after the writer's commits too, at most every FREE_MEASURE_MS: a
 * count a second old is no use on a small map, whose commits reuse free
 * pages without moving the mark, so 1 MiB fills in well under a second
 * while the count still says there is room (t2400 found it: the map filled
 * until even a one-job delete no longer fitted). RESERVE_PAGES: the room
 * kept for results and deletes is 10 % of the map but at least this many
 * pages (at most half the map): in LMDB every commit copies the path to
 * each leaf it touches, in every tree, so even a delete needs tens of free
 * pages, and on a 1 MiB map 10 % is only 25.
 */
#define FREE_MEASURE_MS 10
#define RESERVE_PAGES 64
/* Pages above the reserve that make the pending ones not worth an extra
 * commit (measure_free_if_high): room for a few submits and outcomes. */
#define FREE_SLACK_PAGES 16

struct map_use {
	uint64_t pages, hwm, psize;
};

static int
map_use(struct store *st, struct map_use *u)
{
	MDB_envinfo ei;
	MDB_stat ms;

	if (mdb_env_info(st->env, &ei) != 0 || mdb_env_stat(st->env, &ms) != 0)
		return -1;
	u->psize = ms.ms_psize;
	u->pages = ei.me_mapsize / ms.ms_psize;
	u->hwm = ei.me_last_pgno + 1;
	return 0;
}

/*
 * The room the outcomes of `unfinished` jobs will take once they end:
 * OUTCOME_SHARE times the moving average of the results stored (from
 * OUTCOME_GUESS, until this process has stored some). A map filled with
 * jobs whose results cannot fit is stuck: none can end, so the retention
 * has nothing to delete, and the upstream's work is thrown away each time
 * an outcome fails to store. So new jobs are refused while the map lacks
 * room for the results of every job not yet ended.
 */
#define OUTCOME_GUESS 2048
#define OUTCOME_SHARE 2

static uint64_t
outcome_bytes(struct store *st, uint64_t unfinished)
{
	uint64_t avg = atomic_load(&st->outcome_bytes);

	return unfinished * OUTCOME_SHARE * (avg ? avg : OUTCOME_GUESS);
}

/* True if `used` + `need` pages leave the reserve free. */
static bool
fits(const struct map_use *u, uint64_t used, uint64_t need)
{
	uint64_t reserve = u->pages / 10;

	if (reserve < RESERVE_PAGES)
		reserve = RESERVE_PAGES < u->pages / 2 ? RESERVE_PAGES : u->pages / 2;
	return used + need + reserve <= u->pages;
}

/*
 * Counts the freelist: `usable`, the pages the next commit may reuse, and
 * `pending`, those the last commit freed. LMDB allows a cursor on its
 * freelist (dbi 0) in read transactions only; each record is keyed by the
 * txnid that freed its pages, and its value is a page list whose first
 * word is its length. The last commit's pages are still in the snapshot
 * before it, which LMDB keeps (its meta page is the other of the two), so
 * they become reusable only once one more commit is made. (A reader on an
 * older snapshot holds back more; the reserve covers that.)
 */
static void
count_free(struct store *st, uint64_t *usable, uint64_t *pending)
{
	MDB_txn *txn;
	MDB_cursor *cur;
	MDB_val k, v;
	size_t last;

	*usable = *pending = 0;
	if (mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn) != 0)
		return;
	last = mdb_txn_id(txn);
	if (mdb_cursor_open(txn, 0, &cur) == 0) {
		while (mdb_cursor_get(cur, &k, &v, MDB_NEXT) == 0) {
			size_t cnt, id;
			if (v.mv_size < sizeof cnt || k.mv_size != sizeof id)
				continue;
			memcpy(&id, k.mv_data, sizeof id);
			memcpy(&cnt, v.mv_data, sizeof cnt);
			*(id < last ? usable : pending) += cnt;
		}
		mdb_cursor_close(cur);
	}
	mdb_txn_abort(txn);
	atomic_store(&st->free_pages, *usable);
	atomic_store(&st->free_measured_ms, sl_mono_ms());
	atomic_store(&st->free_measured_txn, (uint64_t)last);
}

/* True if a commit was made after the freelist was last counted. */
static bool
count_is_stale(struct store *st)
{
	MDB_envinfo ei;

	return mdb_env_info(st->env, &ei) != 0 ||
	    (uint64_t)ei.me_last_txnid != atomic_load(&st->free_measured_txn);
}

void
store_measure_free(struct store *st)
{
	uint64_t usable, pending;

	count_free(st, &usable, &pending);
}

/*
 * After a commit (no transaction open on this thread): counts the freelist
 * again if the map is high, at most every FREE_MEASURE_MS unless `now`. If
 * the pages the commit freed are what stands between a full map and one
 * with room (a retention purge, say), makes one more small commit (the
 * time, in meta "freed_ms") so that they become reusable: else, with
 * nothing else to commit, the store would stay "full" and every submit be
 * refused though the room is there.
 */
static void
measure_free_if_high(struct store *st, bool now)
{
	struct map_use u;
	uint64_t usable, pending;
	MDB_txn *txn;
	unsigned char buf[8];
	MDB_val k = { sizeof "freed_ms" - 1, "freed_ms" }, v = { sizeof buf, buf };

	if (map_use(st, &u) != 0 || fits(&u, u.hwm, 0) ||
	    (!now && sl_mono_ms() - atomic_load(&st->free_measured_ms) < FREE_MEASURE_MS))
		return;
	count_free(st, &usable, &pending);
	/* The room must be there for a submit and its outcome (a page or
	 * two, has_room), not just above the reserve: with exactly that and
	 * the rest pending, no commit came to free the rest and every submit
	 * was refused until a restart (t2400, once in CI: 82 jobs, a purge by
	 * slowlanectl, then 507 for good). */
	if (fits(&u, u.hwm - (usable < u.hwm ? usable : u.hwm), FREE_SLACK_PAGES) ||
	    !fits(&u, u.hwm - (usable + pending < u.hwm ? usable + pending : u.hwm), 0))
		return;
	sl_put_be64(buf, sl_wall_ms());
	if (mdb_txn_begin(st->env, NULL, 0, &txn) != 0)
		return;
	if (mdb_put(txn, st->dbi[DB_META], &k, &v, 0) != 0) {
		mdb_txn_abort(txn);
		return;
	}
	if (mdb_txn_commit(txn) != 0) /* it frees txn, even failing */
		return;
	fill_file(st);
	count_free(st, &usable, &pending);
}

static uint64_t
unfinished_of(struct store_txn *t)
{
	struct store_counts c;

	if (store_counts_get(t, &c) != 0)
		return 0;
	return c.by_state[JOB_QUEUED] + c.by_state[JOB_IN_PROGRESS];
}

static bool
has_room(struct store *st, uint64_t bytes)
{
	struct map_use u;
	uint64_t free_pages, need, usable, pending;

	if (map_use(st, &u) != 0)
		return true;
	need = (bytes + u.psize - 1) / u.psize;
	if (fits(&u, u.hwm, need))
		return true; /* the common case: the map was never this full */
	free_pages = atomic_load(&st->free_pages);
	if (fits(&u, u.hwm - (free_pages < u.hwm ? free_pages : u.hwm), need))
		return true;
	/* Before refusing, count again if a commit came after the count: it
	 * may have freed the room (a retention purge). Once the count is
	 * current, refusals cost nothing more until the next commit. */
	if (!count_is_stale(st))
		return false;
	count_free(st, &usable, &pending);
	return fits(&u, u.hwm - (usable < u.hwm ? usable : u.hwm), need);
}

bool
store_nearly_full(struct store_txn *t)
{
	return !has_room(t->st, outcome_bytes(t->st, unfinished_of(t) + 1));
}

bool
store_map_has_room(struct store *st, uint64_t bytes, uint64_t jobs)
{
	struct store_txn *t = NULL;
	uint64_t unfinished = 0;

	if (store_begin(st, true, &t) == 0) {
		unfinished = unfinished_of(t);
		store_abort(t);
	}
	return has_room(st, bytes + outcome_bytes(st, unfinished + jobs));
}

bool
store_disk_full(struct store *st)
{
	struct statvfs vs;

	if (statvfs(st->dir, &vs) != 0)
		return false;
	/* Less than 1 MiB left: a commit's pages may not have fitted. */
	return (uint64_t)vs.f_bavail * vs.f_frsize < ((uint64_t)1 << 20);
}

void
store_release_map(struct store *st)
{
	MDB_envinfo ei;
	MDB_stat ms;
	size_t used;

	/* The map is read-only and shared: every page of it is the page
	 * cache's, so dropping the mapping loses nothing. Up to the last page
	 * in use: past it nothing was mapped in. */
	if (!st->map || mdb_env_info(st->env, &ei) != 0 || mdb_env_stat(st->env, &ms) != 0)
		return;
	used = (size_t)(ei.me_last_pgno + 1) * ms.ms_psize;
	madvise(st->map, used < st->map_len ? used : st->map_len, MADV_DONTNEED);
}

int
store_reader_check(struct store *st)
{
	int dead = 0;

	mdb_reader_check(st->env, &dead);
	return dead;
}

static int
begin(struct store *st, MDB_txn *parent, unsigned flags, struct store_txn **out)
{
	struct store_txn *t = malloc(sizeof *t);
	int rc;

	if (!t)
		return -ENOMEM;
	t->st = st;
	rc = mdb_txn_begin(st->env, parent, flags, &t->txn);
	if (rc) {
		free(t);
		return store_p_map_rc(rc, "txn_begin");
	}
	*out = t;
	return 0;
}

int
store_begin(struct store *st, bool read_only, struct store_txn **out)
{
	return begin(st, NULL, read_only ? MDB_RDONLY : 0, out);
}

int
store_commit(struct store_txn *t)
{
	struct store *st = t->st;
	int rc = mdb_txn_commit(t->txn);

	free(t);
	if (rc == 0) {
		fill_file(st);
		measure_free_if_high(st, false);
	}
	return store_p_map_rc(rc, "commit");
}

void
store_settle(struct store *st)
{
	struct map_use u;
	uint64_t free_pages = atomic_load(&st->free_pages);

	/* Nothing to settle while the last count shows room: a count made
	 * stale by commits since is recounted by has_room() before it
	 * refuses anything. This keeps a map that was once nearly full (the
	 * high-water mark never falls) from paying a freelist count after
	 * every batch. */
	if (map_use(st, &u) == 0 &&
	    fits(&u, u.hwm - (free_pages < u.hwm ? free_pages : u.hwm), FREE_SLACK_PAGES))
		return;
	measure_free_if_high(st, true);
}

void
store_abort(struct store_txn *t)
{
	if (!t)
		return;
	mdb_txn_abort(t->txn);
	free(t);
}

int
store_refresh(struct store_txn *t)
{
	mdb_txn_reset(t->txn);
	return store_p_map_rc(mdb_txn_renew(t->txn), "txn_renew");
}

/* Named 8-byte values in `meta` (big-endian). */
int
store_meta_get_u64(struct store_txn *t, const char *name, uint64_t *out)
{
	MDB_val k = { strlen(name), (void *)name }, v;
	int rc = mdb_get(t->txn, t->st->dbi[DB_META], &k, &v);

	if (rc)
		return store_p_map_rc(rc, "get meta");
	if (v.mv_size != 8)
		return SL_ECORRUPT;
	*out = sl_get_be64(v.mv_data);
	return 0;
}

int
store_meta_put_u64(struct store_txn *t, const char *name, uint64_t val)
{
	unsigned char buf[8];
	MDB_val k = { strlen(name), (void *)name }, v = { sizeof buf, buf };

	sl_put_be64(buf, val);
	return store_p_map_rc(mdb_put(t->txn, t->st->dbi[DB_META], &k, &v, 0), "put meta");
}

/*
 * mdb_put, first tried as an append when `flags` has MDB_APPEND. Most keys
 * written here sort after every key of their tree (new ids, time keys of
 * now). For an ordinary insert into a full page LMDB splits the page in
 * half, so a tree written in key order ends up with half-full pages; for
 * MDB_APPEND it starts a new page and leaves the full one full: fewer pages
 * per commit and a smaller file, with the same keys and values (no format
 * change). A key that does not sort last makes the append return
 * MDB_KEYEXIST before anything is touched (mdb_cursor_put checks it against
 * mdb_cursor_last first), and it is then put the ordinary way.
 */
static int
tree_put(struct store_txn *t, int db, MDB_val *k, MDB_val *v, unsigned flags)
{
	int rc = MDB_KEYEXIST;

	if (flags & MDB_APPEND)
		rc = mdb_put(t->txn, t->st->dbi[db], k, v, flags);
	if (rc == MDB_KEYEXIST)
		rc = mdb_put(t->txn, t->st->dbi[db], k, v, flags & ~(unsigned)MDB_APPEND);
	return rc;
}

/* ---- checked values: payload followed by CRC-32 of the payload ---- */

static int
put_checked_key(struct store_txn *t, int db, const void *key, size_t klen, const void *data,
    size_t len)
{
	MDB_val k = { klen, (void *)key }, v = { len + 4, NULL };
	int rc;

	/* MDB_RESERVE: LMDB hands us the space, saving a copy of the body. */
	rc = tree_put(t, db, &k, &v, MDB_RESERVE | MDB_APPEND);
	if (rc)
		return store_p_map_rc(rc, "put");
	memcpy(v.mv_data, data, len);
	sl_put_be32((unsigned char *)v.mv_data + len, sl_crc32(0, data, len));
	return 0;
}

/* Checks a value's trailing CRC; *len excludes it. */
static int
verify_checked(int db, const MDB_val *v, const void **data, size_t *len)
{
	if (v->mv_size < 4)
		return SL_ECORRUPT;
	*len = v->mv_size - 4;
	*data = v->mv_data;
	if (sl_get_be32((unsigned char *)v->mv_data + *len) != sl_crc32(0, v->mv_data, *len)) {
		log_error("store: a record in %s failed its checksum", store_p_db_names[db]);
		return SL_ECORRUPT;
	}
	return 0;
}

static int
get_checked_key(struct store_txn *t, int db, const void *key, size_t klen, const void **data,
    size_t *len)
{
	MDB_val k = { klen, (void *)key }, v;
	int rc = mdb_get(t->txn, t->st->dbi[db], &k, &v);

	if (rc)
		return store_p_map_rc(rc, "get");
	return verify_checked(db, &v, data, len);
}

static int
put_checked(struct store_txn *t, int db, const char *id, const void *data, size_t len)
{
	return put_checked_key(t, db, id, SL_ID_LEN, data, len);
}

static int
get_checked(struct store_txn *t, int db, const char *id, const void **data, size_t *len)
{
	return get_checked_key(t, db, id, SL_ID_LEN, data, len);
}

int
store_body_put(struct store_txn *t, const char *id, const void *data, size_t len)
{
	return put_checked(t, DB_BODIES, id, data, len);
}

int
store_body_get(struct store_txn *t, const char *id, const void **data, size_t *len)
{
	return get_checked(t, DB_BODIES, id, data, len);
}

int
store_result_put(struct store_txn *t, const char *id, const void *data, size_t len)
{
	uint64_t avg = atomic_load(&t->st->outcome_bytes);

	/* one writer thread per process: a plain load and store will do */
	atomic_store(&t->st->outcome_bytes, avg ? avg - avg / 16 + len / 16 : len);
	return put_checked(t, DB_RESULTS, id, data, len);
}

int
store_result_get(struct store_txn *t, const char *id, const void **data, size_t *len)
{
	return get_checked(t, DB_RESULTS, id, data, len);
}

/* ---- jobs and their indexes ---- */

int
store_job_get(struct store_txn *t, const char *id, struct job *out)
{
	MDB_val k = { SL_ID_LEN, (void *)id }, v;
	int rc;

	if (strlen(id) != SL_ID_LEN)
		return SL_ENOTFOUND;
	rc = mdb_get(t->txn, t->st->dbi[DB_JOBS], &k, &v);
	if (rc)
		return store_p_map_rc(rc, "get job");
	rc = job_decode(id, v.mv_data, v.mv_size, out);
	if (rc)
		log_error("store: job %s failed its checksum or decoding", id);
	return rc;
}

/* Puts one entry, as an append when its key sorts last (tree_put). */
int
store_p_put_key(struct store_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };

	return store_p_map_rc(tree_put(t, db, &k, &v, MDB_APPEND), store_p_db_names[db]);
}

static int
del_key(struct store_txn *t, int db, const void *key, size_t klen)
{
	MDB_val k = { klen, (void *)key };
	int rc = mdb_del(t->txn, t->st->dbi[db], &k, NULL);

	/* A missing entry is what `check --repair` is for; not fatal here. */
	if (rc == MDB_NOTFOUND) {
		log_warn("store: %s index entry was already missing", store_p_db_names[db]);
		return 0;
	}
	return store_p_map_rc(rc, store_p_db_names[db]);
}

/* Moves one time-keyed index entry from (was_in, old_ms) to (is_in, new_ms). */
static int
move_time_key(struct store_txn *t, int db, const char *id, bool was_in, uint64_t old_ms,
    bool is_in, uint64_t new_ms)
{
	unsigned char k[TIME_KEY_LEN];
	int rc = 0;

	if (was_in && is_in && old_ms == new_ms)
		return 0;
	if (was_in) {
		store_p_time_key(k, old_ms, id);
		rc = del_key(t, db, k, sizeof k);
		if (rc)
			return rc;
	}
	if (is_in) {
		store_p_time_key(k, new_ms, id);
		rc = store_p_put_key(t, db, k, sizeof k, "", 0);
	}
	return rc;
}

static int
counts_adjust(struct store_txn *t, int from_state, int to_state)
{
	MDB_val k = { 6, "counts" }, v;
	unsigned char buf[8 * JOB_STATE_COUNT];
	int rc;

	if (from_state == to_state)
		return 0;
	rc = mdb_get(t->txn, t->st->dbi[DB_META], &k, &v);
	if (rc == MDB_NOTFOUND)
		memset(buf, 0, sizeof buf);
	else if (rc)
		return store_p_map_rc(rc, "get counts");
	else if (v.mv_size != sizeof buf)
		return SL_ECORRUPT;
	else
		memcpy(buf, v.mv_data, sizeof buf);
	if (from_state >= 0) {
		uint64_t c = sl_get_be64(buf + 8 * from_state);
		sl_put_be64(buf + 8 * from_state, c ? c - 1 : 0);
	}
	if (to_state >= 0)
		sl_put_be64(buf + 8 * to_state, sl_get_be64(buf + 8 * to_state) + 1);
	v.mv_size = sizeof buf;
	v.mv_data = buf;
	return store_p_map_rc(mdb_put(t->txn, t->st->dbi[DB_META], &k, &v, 0), "put counts");
}

/* Per-tenant count of unfinished jobs (for --max-queued). */
static int
tenant_adjust(struct store_txn *t, const char *tenant, int delta)
{
	unsigned char k[JOB_TENANT_LEN], buf[8];
	MDB_val key = { sizeof k, k }, v;
	uint64_t n = 0;
	int rc;

	if (delta == 0)
		return 0;
	memset(k, 0, sizeof k);
	memcpy(k, tenant, strnlen(tenant, JOB_TENANT_LEN));
	rc = mdb_get(t->txn, t->st->dbi[DB_TENANT_COUNTS], &key, &v);
	if (rc == 0 && v.mv_size == 8)
		n = sl_get_be64(v.mv_data);
	else if (rc && rc != MDB_NOTFOUND)
		return store_p_map_rc(rc, "get tenant count");
	n = delta < 0 ? (n ? n - 1 : 0) : n + (uint64_t)delta;
	sl_put_be64(buf, n);
	v.mv_size = sizeof buf;
	v.mv_data = buf;
	return store_p_map_rc(mdb_put(t->txn, t->st->dbi[DB_TENANT_COUNTS], &key, &v, 0), "tenant count");
}

uint64_t
store_tenant_unfinished(struct store_txn *t, const char *tenant)
{
	unsigned char k[JOB_TENANT_LEN];
	MDB_val key = { sizeof k, k }, v;

	memset(k, 0, sizeof k);
	memcpy(k, tenant, strnlen(tenant, JOB_TENANT_LEN));
	if (mdb_get(t->txn, t->st->dbi[DB_TENANT_COUNTS], &key, &v) != 0 || v.mv_size != 8)
		return 0;
	return sl_get_be64(v.mv_data);
}

int
store_counts_get(struct store_txn *t, struct store_counts *out)
{
	MDB_val k = { 6, "counts" }, v;
	int rc = mdb_get(t->txn, t->st->dbi[DB_META], &k, &v);

	memset(out, 0, sizeof *out);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc)
		return store_p_map_rc(rc, "get counts");
	if (v.mv_size != 8 * JOB_STATE_COUNT)
		return SL_ECORRUPT;
	for (int i = 0; i < JOB_STATE_COUNT; i++)
		out->by_state[i] = sl_get_be64((unsigned char *)v.mv_data + 8 * i);
	return 0;
}

int
store_job_put(struct store_txn *t, const struct job *old, const struct job *nw)
{
	unsigned char rec[JOB_ENCODED_MAX], infl[16];
	static const struct job none; /* in no index */
	const struct job *o = old ? old : &none;
	bool o_live = old != NULL;
	MDB_val k, v;
	size_t n;
	int rc;

	n = job_encode(nw, rec);
	k.mv_size = SL_ID_LEN;
	k.mv_data = (void *)nw->id;
	v.mv_size = n;
	v.mv_data = rec;
	/* A new job's id sorts last; an update rewrites a key in place. */
	rc = store_p_map_rc(tree_put(t, DB_JOBS, &k, &v, old ? 0 : MDB_APPEND), "jobs");
	if (rc)
		return rc;
	rc = move_time_key(t, DB_READY, nw->id, o_live && job_in_ready(o), o->not_before_ms,
	    job_in_ready(nw), nw->not_before_ms);
	if (!rc)
		rc = move_time_key(t, DB_EXPIRY, nw->id, o_live && job_in_expiry(o),
		    o->expires_ms, job_in_expiry(nw), nw->expires_ms);
	if (!rc)
		rc = move_time_key(t, DB_CREATED, nw->id, o_live, o->created_ms, true,
		    nw->created_ms);
	if (!rc)
		rc = move_time_key(t, DB_FINISHED, nw->id, o_live && job_is_final(o->state),
		    o->finished_ms, job_is_final(nw->state), nw->finished_ms);
	if (rc)
		return rc;
	if (job_in_inflight(nw)) {
		sl_put_be64(infl, nw->attempt_id);
		sl_put_be64(infl + 8, nw->lease_ms);
		rc = store_p_put_key(t, DB_INFLIGHT, nw->id, SL_ID_LEN, infl, sizeof infl);
	} else if (o_live && job_in_inflight(o)) {
		rc = del_key(t, DB_INFLIGHT, nw->id, SL_ID_LEN);
	}
	if (rc)
		return rc;
	rc = tenant_adjust(t, nw->tenant, (o_live && !job_is_final(o->state) ? -1 : 0) +
	    (!job_is_final(nw->state) ? 1 : 0));
	if (rc)
		return rc;
	return counts_adjust(t, o_live ? o->state : -1, nw->state);
}

/* Deletes every history entry of `id` (keys id | attempt). */
static int
history_delete(struct store_txn *t, const char *id)
{
	MDB_cursor *cur;
	MDB_val k = { SL_ID_LEN, (void *)id }, v;
	int rc;

	rc = mdb_cursor_open(t->txn, t->st->dbi[DB_HISTORY], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor_open");
	/* Re-seek after each delete: where a cursor stands after mdb_cursor_del
	 * is a corner of LMDB better not relied on. */
	for (;;) {
		k.mv_size = SL_ID_LEN;
		k.mv_data = (void *)id;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc || k.mv_size != SL_ID_LEN + 4 || memcmp(k.mv_data, id, SL_ID_LEN) != 0)
			break;
		rc = mdb_cursor_del(cur, 0);
		if (rc)
			break;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND || rc == EINVAL ? 0 : store_p_map_rc(rc, "history delete");
}

int
store_job_delete(struct store_txn *t, const struct job *j)
{
	MDB_val k = { SL_ID_LEN, (void *)j->id };
	int rc;

	rc = move_time_key(t, DB_READY, j->id, job_in_ready(j), j->not_before_ms, false, 0);
	if (!rc)
		rc = move_time_key(t, DB_EXPIRY, j->id, job_in_expiry(j), j->expires_ms, false, 0);
	if (!rc)
		rc = move_time_key(t, DB_CREATED, j->id, true, j->created_ms, false, 0);
	if (!rc)
		rc = move_time_key(t, DB_FINISHED, j->id, job_is_final(j->state),
		    j->finished_ms, false, 0);
	if (!rc && job_in_inflight(j))
		rc = del_key(t, DB_INFLIGHT, j->id, SL_ID_LEN);
	if (rc)
		return rc;
	for (int db = DB_JOBS; db <= DB_RESULTS; db++) {
		rc = mdb_del(t->txn, t->st->dbi[db], &k, NULL);
		if (rc && rc != MDB_NOTFOUND)
			return store_p_map_rc(rc, "delete");
	}
	rc = history_delete(t, j->id);
	if (!rc && !job_is_final(j->state))
		rc = tenant_adjust(t, j->tenant, -1);
	if (rc)
		return rc;
	return counts_adjust(t, j->state, -1);
}

/* Walks a time-keyed index from the start, collecting ids due by upto_ms. */
/* A key of the wrong length in an index (a damaged page: we never write
 * one) is skipped by the scans, so it cannot stall the queue or the start;
 * `slowlanectl check --repair` deletes it. Said once per index. */
static void
skip_bad_key(int db)
{
	static _Atomic bool said[DB_COUNT];

	if (!atomic_exchange(&said[db], true))
		log_error("store: the %s index holds a damaged key; skipped (run slowlanectl "
		    "check --repair)", store_p_db_names[db]);
}

static int
time_index_due(struct store_txn *t, int db, uint64_t upto_ms, size_t max,
    char (*ids)[SL_ID_LEN + 1], uint64_t *ms, size_t *n, uint64_t *next_due_ms)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	*n = 0;
	*next_due_ms = UINT64_MAX;
	rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor_open");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t due;
		if (k.mv_size != TIME_KEY_LEN) {
			skip_bad_key(db);
			continue;
		}
		due = sl_get_be64(k.mv_data);
		if (due > upto_ms || *n >= max) {
			*next_due_ms = due;
			break;
		}
		memcpy(ids[*n], (char *)k.mv_data + 8, SL_ID_LEN);
		ids[*n][SL_ID_LEN] = '\0';
		if (ms)
			ms[*n] = due;
		(*n)++;
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	return rc > 0 ? store_p_map_rc(rc, "cursor_get") : rc;
}

int
store_ready_due(struct store_txn *t, uint64_t upto_ms, size_t max,
    char (*ids)[SL_ID_LEN + 1], uint64_t *ms, size_t *n, uint64_t *next_due_ms)
{
	return time_index_due(t, DB_READY, upto_ms, max, ids, ms, n, next_due_ms);
}

int
store_expiry_due(struct store_txn *t, uint64_t upto_ms, size_t max,
    char (*ids)[SL_ID_LEN + 1], uint64_t *ms, size_t *n, uint64_t *next_due_ms)
{
	return time_index_due(t, DB_EXPIRY, upto_ms, max, ids, ms, n, next_due_ms);
}

int
store_inflight_list(struct store_txn *t, size_t max, char (*ids)[SL_ID_LEN + 1], size_t *n)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc;

	*n = 0;
	rc = mdb_cursor_open(t->txn, t->st->dbi[DB_INFLIGHT], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor_open");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && *n < max;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size != SL_ID_LEN) {
			skip_bad_key(DB_INFLIGHT);
			continue;
		}
		memcpy(ids[*n], k.mv_data, SL_ID_LEN);
		ids[*n][SL_ID_LEN] = '\0';
		(*n)++;
	}
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		rc = 0;
	return rc > 0 ? store_p_map_rc(rc, "cursor_get") : rc;
}

/* ---- inspection and repair ---- */

int
store_index_drop(struct store_txn *t, enum store_index ix, uint64_t ms, const char *id)
{
	unsigned char k[TIME_KEY_LEN];

	store_p_time_key(k, ms, id);
	return del_key(t, time_db[ix], k, sizeof k);
}

int
store_index_put(struct store_txn *t, enum store_index ix, uint64_t ms, const char *id)
{
	unsigned char k[TIME_KEY_LEN];

	store_p_time_key(k, ms, id);
	return store_p_put_key(t, time_db[ix], k, sizeof k, "", 0);
}

int
store_inflight_drop(struct store_txn *t, const char *id)
{
	return del_key(t, DB_INFLIGHT, id, SL_ID_LEN);
}

int
store_scan_time(struct store_txn *t, enum store_index ix, uint64_t from_ms, bool reverse,
    store_time_fn cb, void *arg)
{
	unsigned char start[TIME_KEY_LEN];
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, stop = 0;

	rc = mdb_cursor_open(t->txn, t->st->dbi[time_db[ix]], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor_open");
	sl_put_be64(start, from_ms);
	memset(start + 8, reverse ? 0xff : 0, SL_ID_LEN);
	k.mv_size = sizeof start;
	k.mv_data = start;
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	if (reverse) {
		/* SET_RANGE finds the first key >= start: step back to <= it. */
		if (rc == MDB_NOTFOUND)
			rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
		else if (rc == 0 && memcmp(k.mv_data, start, sizeof start) > 0)
			rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
	}
	while (rc == 0) {
		char id[SL_ID_LEN + 1];
		if (k.mv_size != TIME_KEY_LEN) {
			skip_bad_key(time_db[ix]);
			rc = mdb_cursor_get(cur, &k, &v, reverse ? MDB_PREV : MDB_NEXT);
			continue;
		}
		memcpy(id, (char *)k.mv_data + 8, SL_ID_LEN);
		id[SL_ID_LEN] = '\0';
		stop = cb(arg, sl_get_be64(k.mv_data), id);
		if (stop)
			break;
		rc = mdb_cursor_get(cur, &k, &v, reverse ? MDB_PREV : MDB_NEXT);
	}
	mdb_cursor_close(cur);
	if (stop)
		return stop;
	if (rc == MDB_NOTFOUND)
		return 0;
	return rc > 0 ? store_p_map_rc(rc, "cursor_get") : rc;
}

int
store_scan_jobs(struct store_txn *t, store_job_fn cb, void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, stop = 0;

	rc = mdb_cursor_open(t->txn, t->st->dbi[DB_JOBS], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor_open");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		char id[SL_ID_LEN + 1];
		struct job j;
		snprintf(id, sizeof id, "%.*s", (int)(k.mv_size < SL_ID_LEN ? k.mv_size : SL_ID_LEN),
		    (const char *)k.mv_data);
		if (k.mv_size != SL_ID_LEN || job_decode(id, v.mv_data, v.mv_size, &j) != 0)
			stop = cb(arg, id, NULL);
		else
			stop = cb(arg, id, &j);
		if (stop)
			break;
	}
	mdb_cursor_close(cur);
	if (stop)
		return stop;
	return rc == MDB_NOTFOUND ? 0 : store_p_map_rc(rc, "cursor_get");
}

int
store_get_info(struct store *st, struct store_txn *t, struct store_info *out)
{
	MDB_envinfo ei;
	MDB_stat ms;
	int rc;

	memset(out, 0, sizeof *out);
	rc = mdb_env_info(st->env, &ei);
	if (rc == 0)
		rc = mdb_env_stat(st->env, &ms);
	if (rc)
		return store_p_map_rc(rc, "env_info");
	out->map_size = ei.me_mapsize;
	out->page_size = ms.ms_psize;
	out->used_bytes = (uint64_t)(ei.me_last_pgno + 1) * ms.ms_psize;
	out->max_readers = ei.me_maxreaders;
	out->readers = ei.me_numreaders;
	rc = mdb_stat(t->txn, st->dbi[DB_JOBS], &ms);
	if (rc)
		return store_p_map_rc(rc, "stat");
	out->jobs = ms.ms_entries;
	return 0;
}

int
store_backup(struct store *st, const char *path)
{
	int rc;

	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return -errno;
	rc = mdb_env_copy2(st->env, path, MDB_CP_COMPACT);
	if (rc == EEXIST)
		log_error("store: backup target %s already holds a store", path);
	return rc ? store_p_map_rc(rc, "backup") : 0;
}

int
store_result_delete(struct store_txn *t, const char *id)
{
	MDB_val k = { SL_ID_LEN, (void *)id };
	int rc = mdb_del(t->txn, t->st->dbi[DB_RESULTS], &k, NULL);

	return rc == MDB_NOTFOUND ? 0 : store_p_map_rc(rc, "delete result");
}

int
store_attempt_put(struct store_txn *t, const char *id, const struct store_attempt *a)
{
	unsigned char key[SL_ID_LEN + 4], val[18 + JOB_MESSAGE_MAX];
	size_t mlen = strnlen(a->message, JOB_MESSAGE_MAX);

	memcpy(key, id, SL_ID_LEN);
	sl_put_be32(key + SL_ID_LEN, a->attempt);
	sl_put_be64(val, a->started_ms);
	sl_put_be64(val + 8, a->ended_ms);
	val[16] = (unsigned char)(a->http_status >> 8);
	val[17] = (unsigned char)a->http_status;
	memcpy(val + 18, a->message, mlen);
	return store_p_put_key(t, DB_HISTORY, key, sizeof key, val, 18 + mlen);
}

int
store_attempt_list(struct store_txn *t, const char *id,
    int (*cb)(void *arg, const struct store_attempt *a), void *arg)
{
	unsigned char key[SL_ID_LEN + 4];
	MDB_cursor *cur;
	MDB_val k = { sizeof key, key }, v;
	int rc, stop = 0;

	memcpy(key, id, SL_ID_LEN);
	memset(key + SL_ID_LEN, 0, 4);
	rc = mdb_cursor_open(t->txn, t->st->dbi[DB_HISTORY], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor_open");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
	    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		struct store_attempt a;
		size_t mlen;
		if (k.mv_size != sizeof key || memcmp(k.mv_data, id, SL_ID_LEN) != 0)
			break;
		if (v.mv_size < 18)
			continue;
		memset(&a, 0, sizeof a);
		a.attempt = sl_get_be32((unsigned char *)k.mv_data + SL_ID_LEN);
		a.started_ms = sl_get_be64(v.mv_data);
		a.ended_ms = sl_get_be64((unsigned char *)v.mv_data + 8);
		a.http_status = (uint16_t)(((unsigned char *)v.mv_data)[16] << 8 |
		    ((unsigned char *)v.mv_data)[17]);
		mlen = v.mv_size - 18 < JOB_MESSAGE_MAX ? v.mv_size - 18 : JOB_MESSAGE_MAX;
		memcpy(a.message, (char *)v.mv_data + 18, mlen);
		stop = cb(arg, &a);
		if (stop)
			break;
	}
	mdb_cursor_close(cur);
	if (stop)
		return stop;
	return rc == MDB_NOTFOUND || rc == 0 ? 0 : store_p_map_rc(rc, "cursor_get");
}

/* ---- tables of checked records ---- */

int
store_table_put(struct store_txn *t, enum store_table tb, const void *key, size_t klen,
    const void *data, size_t len)
{
	return put_checked_key(t, table_db[tb], key, klen, data, len);
}

int
store_table_get(struct store_txn *t, enum store_table tb, const void *key, size_t klen,
    const void **data, size_t *len)
{
	return get_checked_key(t, table_db[tb], key, klen, data, len);
}

int
store_table_del(struct store_txn *t, enum store_table tb, const void *key, size_t klen)
{
	MDB_val k = { klen, (void *)key };

	return store_p_map_rc(mdb_del(t->txn, t->st->dbi[table_db[tb]], &k, NULL), "del");
}

int
store_table_count(struct store_txn *t, enum store_table tb, uint64_t *out)
{
	MDB_stat ms;
	int rc = mdb_stat(t->txn, t->st->dbi[table_db[tb]], &ms);

	*out = rc ? 0 : ms.ms_entries;
	return store_p_map_rc(rc, "stat");
}

int
store_table_scan(struct store_txn *t, enum store_table tb, const void *from, size_t flen,
    store_table_fn cb, void *arg)
{
	return store_table_scan_dir(t, tb, from, flen, false, cb, arg);
}

int
store_table_scan_dir(struct store_txn *t, enum store_table tb, const void *from, size_t flen,
    bool reverse, store_table_fn cb, void *arg)
{
	int db = table_db[tb];
	MDB_cursor *cur;
	MDB_val k = { flen, (void *)from }, v;
	int rc, stop = 0;

	rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
	if (rc)
		return store_p_map_rc(rc, "cursor_open");
	if (!reverse) {
		rc = flen ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE)
		          : mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	} else if (!flen) {
		rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	} else {
		/* The last key <= from. */
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
		if (rc == MDB_NOTFOUND)
			rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
		else if (rc == 0 && (k.mv_size != flen || memcmp(k.mv_data, from, flen) != 0))
			rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
	}
	for (; rc == 0; rc = mdb_cursor_get(cur, &k, &v, reverse ? MDB_PREV : MDB_NEXT)) {
		const void *data = NULL;
		size_t len = 0;
		int vrc = verify_checked(db, &v, &data, &len);
		stop = cb(arg, k.mv_data, k.mv_size, vrc ? NULL : data, len);
		if (stop)
			break;
	}
	mdb_cursor_close(cur);
	if (stop)
		return stop;
	return rc == MDB_NOTFOUND ? 0 : store_p_map_rc(rc, "cursor_get");
}
