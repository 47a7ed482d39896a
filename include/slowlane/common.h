/*
 * common.h - error codes and small definitions every slowlane module shares.
 *
 * Convention (STYLE.md): functions return 0 on success or a negative SL_E*
 * code; results travel through out-parameters; sl_strerror() gives words.
 * A negative errno value is also a valid SL_E* code (-ENOMEM, -EIO, ...).
 */
#ifndef SLOWLANE_COMMON_H
#define SLOWLANE_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum {
	SL_OK = 0,
	/* Codes below -1000 are ours; -1..-999 are -errno. */
	SL_ENOTFOUND = -1001, /* no such record */
	SL_EINVAL = -1002,    /* malformed input (caller's fault) */
	SL_EFULL = -1003,     /* store map or disk full: refuse new work */
	SL_ECORRUPT = -1004,  /* a record failed its checksum or decoding */
	SL_ESTALE = -1005,    /* fenced: the attempt or state changed meanwhile */
	SL_EVERSION = -1006,  /* store format newer than this build */
	SL_ESTORE = -1007,    /* other LMDB failure (logged where it happened) */
	SL_ETOOBIG = -1008,   /* a buffer reached its hard cap */
	SL_EBUSY = -1009,     /* shutting down or overloaded */
};

/* Words for an SL_E* or -errno code. Never NULL; static storage. */
const char *sl_strerror(int rc);

#define SL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SL_CONTAINER_OF(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

#endif
