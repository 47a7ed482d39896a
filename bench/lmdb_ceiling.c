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
 *   lmdb_ceiling --dir DIR --txn K [--duration S] [--record BYTES]
 *
 * Default sync flags (a commit returns after fdatasync), keys are a big-endian
 * counter (appends, like slowlane's time-ordered ids), one unnamed database.
 * Prints one JSON line: {"txn":K,"records":N,"commits":C,"seconds":S,
 * "rate":R,"commit_p50_ms":..,"commit_p99_ms":..}.
 */
#include "config.h"

#include <getopt.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"

static void
usage(void)
{
	fprintf(stderr, "usage: lmdb_ceiling --dir DIR --txn K [--duration S] [--record BYTES]\n");
	exit(2);
}

static void
die(const char *what, int rc)
{
	fprintf(stderr, "lmdb_ceiling: %s: %s\n", what, mdb_strerror(rc));
	exit(1);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "txn", required_argument, NULL, 'k' },
		{ "duration", required_argument, NULL, 't' },
		{ "record", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *dir = NULL;
	unsigned long per_txn = 0, record = 1024;
	double duration = 10;
	struct bu_lat lat = { 0 };
	MDB_env *env;
	MDB_dbi dbi;
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
	if ((rc = mdb_env_open(env, dir, 0, 0600)) != 0) /* default: synced commits */
		die(dir, rc);
	if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, NULL, 0, &dbi)) != 0 || (rc = mdb_txn_commit(txn)) != 0)
		die("dbi_open", rc);

	t0 = now = bu_now_us();
	end = t0 + (uint64_t)(duration * 1e6);
	while (now < end) {
		uint64_t c0 = now;

		if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
			die("txn_begin", rc);
		for (unsigned long i = 0; i < per_txn; i++) {
			unsigned char k[8];
			uint64_t x = ++key;

			for (int b = 7; b >= 0; b--, x >>= 8)
				k[b] = (unsigned char)x;
			MDB_val mk = { sizeof k, k }, mv = { record, val };
			if ((rc = mdb_put(txn, dbi, &mk, &mv, 0)) != 0)
				die("put", rc);
		}
		if ((rc = mdb_txn_commit(txn)) != 0)
			die("commit", rc);
		commits++;
		now = bu_now_us();
		bu_lat_add(&lat, now - c0);
	}
	mdb_env_close(env);
	bu_lat_sort(&lat);
	double secs = (double)(now - t0) / 1e6;
	printf("{\"txn\":%lu,\"records\":%llu,\"commits\":%llu,\"seconds\":%.3f,\"rate\":%.0f,"
	    "\"commit_p50_ms\":%.3f,\"commit_p99_ms\":%.3f}\n", per_txn,
	    (unsigned long long)key, (unsigned long long)commits, secs, (double)key / secs,
	    bu_lat_pct(&lat, 50), bu_lat_pct(&lat, 99));
	free(lat.v);
	free(val);
	return 0;
}
