/*
 * lmdb_ceiling.c - the raw LMDB synced-commit ceiling: how many 1 KiB
 * records per second one writer can make durable when it commits them in
 * transactions of K records (bench/run measures K = 1, 16, 64, 256). This is
 * what slowlane's group commit would reach if HTTP, validation, the job
 * record and the four index entries cost nothing.
 *
 * The one bench program that includes lmdb.h itself (slowlane's own code
 * reaches LMDB only through store.c): it measures LMDB, not the store.
 *
 *   lmdb_ceiling --dir DIR --txn K [--duration S] [--record BYTES] [--schema]
 *       [--journal] [--append]
 *
 * Default sync flags (a commit returns after fdatasync), keys are a big-endian
 * counter (appends, like slowlane's time-ordered ids), one unnamed database.
 *
 * --schema writes what one slowlane submit writes instead of one record: a
 * ~100-byte job record and the body under a 21-byte key in two databases,
 * three empty time-keyed index entries (ready, expiry, created) and a
 * read-modify-write of a per-state counter, i.e. six B-trees per record.
 * The gap between the two modes is what the schema costs a commit; the gap
 * between --schema and the daemon is what everything else costs.
 *
 * --journal measures the ceiling of slowlane's journal (docs/JOURNAL.md):
 * records are made durable by appending K of them (with a 24-byte frame
 * header each) to a pre-zeroed journal file in DIR and syncing it, one
 * contiguous write per sync; a second thread applies everything journaled
 * since its last commit to LMDB in one synced transaction, so LMDB commits
 * grow with the backlog (at most 4096 records behind). "records" and "rate"
 * count journaled (acknowledgeable) records; "commits" and the latencies are
 * the journal's syncs; "store_commits" the LMDB ones.
 *
 * --append puts every record, and in --schema every entry but the counter,
 * with MDB_APPEND, as slowlane's store does when a key sorts last: a full
 * page is then left full and the new key starts the next one, where an
 * ordinary insert splits the page in half (so pages of a tree written in
 * key order stay half full).
 *
 * Prints one JSON line: {"txn":K,"records":N,"commits":C,"seconds":S,
 * "rate":R,"commit_p50_ms":..,"commit_p99_ms":..}.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"

#define JOURNAL_BYTES ((size_t)16 << 20) /* pre-zeroed, written round and round */
#define JOURNAL_BEHIND 4096              /* records journaled but not in LMDB */
#define FRAME_HEADER 24

static unsigned put_flags; /* MDB_APPEND with --append */

static void
usage(void)
{
	fprintf(stderr, "usage: lmdb_ceiling --dir DIR --txn K [--duration S] [--record BYTES] "
	    "[--schema] [--journal] [--append]\n");
	exit(2);
}

static void
die(const char *what, int rc)
{
	fprintf(stderr, "lmdb_ceiling: %s: %s\n", what, mdb_strerror(rc));
	exit(1);
}

/* One slowlane submit's writes (see --schema), for record number k[8]. */
static void
put_schema(MDB_txn *txn, const MDB_dbi *db, const unsigned char *k, unsigned char *val,
    size_t record)
{
	unsigned char id[21], tk[29], rec[100];
	uint64_t counts[4] = { 0 };
	MDB_val mk = { sizeof id, id }, mv, ck = { 6, "counts" };
	int rc;

	memcpy(id, k, 8); /* time-ordered prefix, then a fixed tail */
	memset(id + 8, 'x', sizeof id - 8);
	memcpy(tk, k, 8);
	memcpy(tk + 8, id, sizeof id);
	memset(rec, 'r', sizeof rec);
	mv = (MDB_val){ sizeof rec, rec };
	if ((rc = mdb_put(txn, db[0], &mk, &mv, put_flags)) != 0)
		die("put job", rc);
	mv = (MDB_val){ record, val };
	if ((rc = mdb_put(txn, db[1], &mk, &mv, put_flags)) != 0)
		die("put body", rc);
	for (int i = 2; i <= 4; i++) {
		MDB_val ik = { sizeof tk, tk }, iv = { 0, "" };
		if ((rc = mdb_put(txn, db[i], &ik, &iv, put_flags)) != 0)
			die("put index", rc);
	}
	if (mdb_get(txn, db[5], &ck, &mv) == 0 && mv.mv_size == sizeof counts)
		memcpy(counts, mv.mv_data, sizeof counts);
	counts[0]++;
	mv = (MDB_val){ sizeof counts, counts };
	if ((rc = mdb_put(txn, db[5], &ck, &mv, 0)) != 0)
		die("put counts", rc);
}

/* Puts records key+1 .. key+n (one record, or one submit's writes). */
static void
put_records(MDB_txn *txn, MDB_dbi dbi, const MDB_dbi *sdb, bool schema, uint64_t key,
    uint64_t n, unsigned char *val, size_t record)
{
	for (uint64_t i = 0; i < n; i++) {
		unsigned char k[8];
		uint64_t x = key + i + 1;
		int rc;

		for (int b = 7; b >= 0; b--, x >>= 8)
			k[b] = (unsigned char)x;
		if (schema) {
			put_schema(txn, sdb, k, val, record);
			continue;
		}
		MDB_val mk = { sizeof k, k }, mv = { record, val };
		if ((rc = mdb_put(txn, dbi, &mk, &mv, put_flags)) != 0)
			die("put", rc);
	}
}

/* --journal: the LMDB side, applying what the journal side made durable. */
struct applier {
	MDB_env *env;
	MDB_dbi dbi;
	const MDB_dbi *sdb;
	bool schema;
	unsigned char *val;
	size_t record;
	atomic_uint_fast64_t journaled, applied;
	atomic_bool stop;
	uint64_t commits;
};

static void *
apply_main(void *arg)
{
	struct applier *a = arg;
	MDB_txn *txn;
	int rc;

	while (!atomic_load(&a->stop)) {
		uint64_t done = atomic_load(&a->applied), n = atomic_load(&a->journaled) - done;

		if (n == 0) {
			usleep(50);
			continue;
		}
		if ((rc = mdb_txn_begin(a->env, NULL, 0, &txn)) != 0)
			die("txn_begin", rc);
		put_records(txn, a->dbi, a->sdb, a->schema, done, n, a->val, a->record);
		if ((rc = mdb_txn_commit(txn)) != 0)
			die("commit", rc);
		a->commits++;
		atomic_store(&a->applied, done + n);
	}
	return NULL;
}

/* Opens DIR/journal, zero-filled to JOURNAL_BYTES (so a sync writes data,
 * not block allocations) and synced. */
static int
journal_create(const char *dir)
{
	char path[4096], *zero = calloc(1, (size_t)1 << 20);
	int fd;

	snprintf(path, sizeof path, "%s/journal", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || !zero) {
		perror(path);
		exit(1);
	}
	for (size_t off = 0; off < JOURNAL_BYTES; off += (size_t)1 << 20)
		if (pwrite(fd, zero, (size_t)1 << 20, (off_t)off) != (ssize_t)1 << 20) {
			perror(path);
			exit(1);
		}
	fsync(fd);
	free(zero);
	return fd;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "txn", required_argument, NULL, 'k' },
		{ "duration", required_argument, NULL, 't' },
		{ "record", required_argument, NULL, 'r' },
		{ "schema", no_argument, NULL, 's' },
		{ "journal", no_argument, NULL, 'j' },
		{ "append", no_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL;
	unsigned long per_txn = 0, record = 1024;
	double duration = 10;
	struct bu_lat lat = { 0 };
	MDB_env *env;
	MDB_dbi dbi, sdb[6]; /* jobs, bodies, ready, expiry, created, meta */
	static const char *names[6] = { "jobs", "bodies", "ready", "expiry", "created", "meta" };
	bool schema = false, journal = false;
	struct applier ap = { 0 };
	pthread_t apply_thread;
	MDB_txn *txn;
	unsigned char *val;
	uint64_t key = 0, commits = 0, t0, end, now;
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': dir = optarg; break;
		case 'k': per_txn = strtoul(optarg, NULL, 10); break;
		case 't': duration = strtod(optarg, NULL); break;
		case 'r': record = strtoul(optarg, NULL, 10); break;
		case 's': schema = true; break;
		case 'j': journal = true; break;
		case 'a': put_flags = MDB_APPEND; break;
		default: usage();
		}
	}
	if (!dir || per_txn == 0 || duration <= 0 || record == 0)
		usage();
	val = malloc(record);
	if (!val)
		return 1;
	memset(val, 'x', record);
	if ((rc = mdb_env_create(&env)) != 0)
		die("env_create", rc);
	if ((rc = mdb_env_set_mapsize(env, 64ull << 30)) != 0)
		die("set_mapsize", rc);
	if ((rc = mdb_env_set_maxdbs(env, 8)) != 0)
		die("set_maxdbs", rc);
	if ((rc = mdb_env_open(env, dir, 0, 0600)) != 0) /* default: synced commits */
		die(dir, rc);
	if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, NULL, 0, &dbi)) != 0)
		die("dbi_open", rc);
	for (int i = 0; schema && i < 6; i++)
		if ((rc = mdb_dbi_open(txn, names[i], MDB_CREATE, &sdb[i])) != 0)
			die("dbi_open", rc);
	if ((rc = mdb_txn_commit(txn)) != 0)
		die("commit", rc);

	if (journal) {
		ap = (struct applier){ .env = env, .dbi = dbi, .sdb = sdb, .schema = schema,
			.val = val, .record = record };
		if (pthread_create(&apply_thread, NULL, apply_main, &ap) != 0)
			die("pthread_create", ENOMEM);
	}
	int jfd = journal ? journal_create(dir) : -1;
	size_t chunk = per_txn * (FRAME_HEADER + record), joff = 0;
	unsigned char *frames = journal ? malloc(chunk) : NULL;

	if (journal && (!frames || chunk > JOURNAL_BYTES))
		die("journal", ENOMEM);
	if (frames)
		memset(frames, 'j', chunk);
	t0 = now = bu_now_us();
	end = t0 + (uint64_t)(duration * 1e6);
	while (now < end) {
		uint64_t c0 = now;

		if (journal) {
			while (atomic_load(&ap.journaled) - atomic_load(&ap.applied) >= JOURNAL_BEHIND)
				usleep(20);
			if (joff + chunk > JOURNAL_BYTES)
				joff = 0;
			if (pwrite(jfd, frames, chunk, (off_t)joff) != (ssize_t)chunk ||
			    fdatasync(jfd) != 0)
				die("journal write", EIO);
			joff += chunk;
			key += per_txn;
			atomic_fetch_add(&ap.journaled, per_txn);
		} else {
			if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
				die("txn_begin", rc);
			put_records(txn, dbi, sdb, schema, key, per_txn, val, record);
			key += per_txn;
			if ((rc = mdb_txn_commit(txn)) != 0)
				die("commit", rc);
		}
		commits++;
		now = bu_now_us();
		bu_lat_add(&lat, now - c0);
	}
	if (journal) {
		atomic_store(&ap.stop, true);
		pthread_join(apply_thread, NULL);
		close(jfd);
		free(frames);
	}
	mdb_env_close(env);
	bu_lat_sort(&lat);
	double secs = (double)(now - t0) / 1e6;
	printf("{\"schema\":%s,\"journal\":%s,\"append\":%s,\"txn\":%lu,\"records\":%llu,\"commits\":%llu,"
	    "\"store_commits\":%llu,\"seconds\":%.3f,\"rate\":%.0f,\"commit_p50_ms\":%.3f,"
	    "\"commit_p99_ms\":%.3f}\n", schema ? "true" : "false", journal ? "true" : "false",
	    put_flags ? "true" : "false", per_txn, (unsigned long long)key, (unsigned long long)commits,
	    (unsigned long long)(journal ? ap.commits : commits), secs, (double)key / secs,
	    bu_lat_pct(&lat, 50), bu_lat_pct(&lat, 99));
	free(lat.v);
	free(val);
	return 0;
}
