/*
 * clockshift.c - an LD_PRELOAD shim for tests/batch/t1700-batch-expiry.mjs:
 * moves the wall clock (CLOCK_REALTIME, time(), gettimeofday()) of the
 * process it is loaded into by SLOWLANE_TEST_CLOCK_OFFSET seconds, so that a
 * restarted daemon lives past a batch's 24 h window. Monotonic clocks are
 * left alone. The test compiles it with `cc -shared -fPIC`; it is not part
 * of the daemon.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long long
offset_s(void)
{
	static long long off = -1;

	if (off < 0) {
		const char *e = getenv("SLOWLANE_TEST_CLOCK_OFFSET");
		off = e ? atoll(e) : 0;
		if (off < 0)
			off = 0;
	}
	return off;
}

static int (*real_clock_gettime)(clockid_t, struct timespec *);

int
clock_gettime(clockid_t id, struct timespec *ts)
{
	int rc;

	if (!real_clock_gettime)
		real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT,
		    "clock_gettime");
	rc = real_clock_gettime(id, ts);
	if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		ts->tv_sec += (time_t)offset_s();
	return rc;
}

time_t
time(time_t *out)
{
	struct timespec ts;
	time_t t;

	clock_gettime(CLOCK_REALTIME, &ts);
	t = ts.tv_sec;
	if (out)
		*out = t;
	return t;
}

int
gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	struct timespec ts;

	(void)tz;
	clock_gettime(CLOCK_REALTIME, &ts);
	tv->tv_sec = ts.tv_sec;
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}
