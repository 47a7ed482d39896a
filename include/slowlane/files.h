/*
 * files.h - uploaded and generated files (the OpenAI Files API): their
 * records in the store (`files`, and `file_index` for per-key listings)
 * and their bytes on disk under <data-dir>/files/<id>. Records are JSON
 * texts; the bytes are written, fsynced and renamed into place before the
 * record that names them is committed.
 */
#ifndef SLOWLANE_FILES_H
#define SLOWLANE_FILES_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "slowlane/job.h"
#include "slowlane/store.h"

#define FILE_ID_MAX 40 /* "file-" + 24 */
#define FILE_NAME_MAX 255

struct sl_file {
	char id[FILE_ID_MAX + 1];
	char tenant[JOB_TENANT_LEN + 1];
	uint64_t bytes;
	uint64_t created_ms;         /* Unix ms (created_at is its seconds) */
	uint64_t expires_s;          /* 0 = never */
	uint64_t lines;              /* JSONL lines (uploads) */
	char filename[FILE_NAME_MAX + 1];
	char purpose[32];            /* "batch", "batch_output", ... */
	bool deleted;                /* a tombstone (files_retire) */
};

/* How long a deleted file's tombstone stays: a list paging with it as
 * `after` still finds its place (the SDKs' delete-while-listing loop). */
#define FILE_TOMBSTONE_S (24 * 3600)

/* A UTF-8 check fed a byte at a time (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF). */
struct files_utf8 {
	unsigned char need;   /* continuation bytes still due */
	unsigned char lo, hi; /* the range of the next one */
};

/* Whether an upload's bytes, seen in pieces, are JSON-object lines: each
 * non-blank line starts with '{' and ends with '}', and the bytes are
 * UTF-8 (full JSON is checked when a batch validates the file; this
 * catches a wrong file at upload). Pure: no I/O. Start with
 * files_jsonl_init, feed every piece in order, then files_jsonl_end. */
struct files_jsonl {
	uint64_t lines;       /* complete non-blank lines so far */
	uint64_t bad_line;    /* 1-based first line that is not an object; 0 = none */
	bool at_line_start;   /* no non-space byte yet on this line */
	char last;            /* last non-space byte of the current line */
	struct files_utf8 u;
};

/* True if the NUL-terminated `s` is UTF-8 without control characters (a
 * file name as it will be shown back). */
bool files_name_ok(const char *s);
/* Copies file name `src` into dst[cap]; a name too long is cut on a
 * character boundary (a name that is not UTF-8 stays as bad as it was). */
void files_name_copy(char *dst, size_t cap, const char *src);

void files_jsonl_init(struct files_jsonl *s);
void files_jsonl_feed(struct files_jsonl *s, const char *p, size_t n);
/* Accounts for a last line without '\n'. Returns true if every line is an
 * object and there is at least one. */
bool files_jsonl_end(struct files_jsonl *s);

/* A fresh id "file-<24 random>". Returns 0 or -errno. */
int files_new_id(char out[FILE_ID_MAX + 1]);
/* <dir>/files/<id> into out[cap]. */
void files_path(const char *data_dir, const char *id, char *out, size_t cap);
/* Creates <dir>/files if missing. Returns 0 or -errno. */
int files_init_dir(const char *data_dir);
/* fsyncs `fd`, renames tmp to the file's path and fsyncs the directory, so
 * the bytes are durable under their final name. Idempotent: a second call
 * after success finds the file in place and returns 0. */
int files_publish(const char *data_dir, int fd, const char *tmp_path, const char *id);

/* True once `f` has expired at `now_ms` (Unix ms): the API then treats it
 * as gone, and the batch engine's sweep deletes it. */
static inline bool
files_expired(const struct sl_file *f, uint64_t now_ms)
{
	return f->expires_s != 0 && f->expires_s * 1000 <= now_ms;
}

/* Record and index. get: 0, SL_ENOTFOUND, SL_ECORRUPT. get returns expired
 * files too (the caller decides, with files_expired), never tombstones. */
int files_put(struct store_txn *t, const struct sl_file *f);
int files_get(struct store_txn *t, const char *id, struct sl_file *out);
/* files_get as the API sees it: SL_ENOTFOUND also for another tenant's file
 * and for one expired at `now_ms`. */
int files_get_live(struct store_txn *t, const char *id, const char *tenant, uint64_t now_ms,
    struct sl_file *out);
/* Deletes `f`'s listing entry and turns its record into a tombstone that
 * expires FILE_TOMBSTONE_S after `now_ms` (the caller removes the bytes
 * after the commit). */
int files_retire(struct store_txn *t, const struct sl_file *f, uint64_t now_ms);
/* Deletes the record (file or tombstone) and the listing entry. */
int files_delete(struct store_txn *t, const struct sl_file *f);

/* The API's file object (without the tenant). New reference. */
json_t *files_json(const struct sl_file *f);

/* Lists `tenant`'s files, newest first (or oldest with `asc`), strictly
 * after file `after` (NULL = from the start), `purpose` ("" = any), none
 * expired at `now_ms`. Fills at most `limit` into out[] and sets *has_more
 * exactly. */
int files_list(struct store_txn *t, const char *tenant, const char *after, bool asc,
    const char *purpose, uint64_t now_ms, size_t limit, struct sl_file *out, size_t *n,
    bool *has_more);

/* Up to `cap` files (and tombstones, `deleted`) of any tenant expired at `now_ms`, into out[] (*n of
 * them). Walks every file record: O(files), which is O(batches), never
 * O(jobs); the batch engine runs it once a minute. Returns 0 or a store
 * error. */
int files_expired_scan(struct store_txn *t, uint64_t now_ms, struct sl_file *out, size_t cap,
    size_t *n);

#endif
