/*
 * files.c - file records and their bytes on disk (see files.h).
 *
 * file_index key: tenant (16 bytes, NUL-padded) | created_ms (be64) | id,
 * so a key's files sort by creation and listings walk one key's range.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "slowlane/common.h"
#include "slowlane/files.h"
#include "slowlane/util.h"

#define INDEX_KEY_MAX (JOB_TENANT_LEN + 8 + FILE_ID_MAX)

int
files_new_id(char out[FILE_ID_MAX + 1])
{
	memcpy(out, "file-", 5);
	return sl_random_id(out + 5, 24);
}

void
files_path(const char *data_dir, const char *id, char *out, size_t cap)
{
	snprintf(out, cap, "%s/files/%s", data_dir, id);
}

int
files_init_dir(const char *data_dir)
{
	char path[4096];

	snprintf(path, sizeof path, "%s/files", data_dir);
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int
files_publish(const char *data_dir, int fd, const char *tmp_path, const char *id)
{
	char final[4096], dir[4096];
	struct stat sb;
	int dfd, rc = 0;

	files_path(data_dir, id, final, sizeof final);
	if (stat(tmp_path, &sb) != 0 && stat(final, &sb) == 0)
		return 0; /* published by an earlier run of this op */
	if (fd >= 0 && fsync(fd) != 0)
		return -errno;
	if (rename(tmp_path, final) != 0)
		return -errno;
	snprintf(dir, sizeof dir, "%s/files", data_dir);
	dfd = open(dir, O_RDONLY | O_DIRECTORY);
	if (dfd < 0)
		return -errno;
	if (fsync(dfd) != 0)
		rc = -errno;
	close(dfd);
	return rc;
}

static size_t
index_key(unsigned char *k, const char *tenant, uint64_t created_ms, const char *id)
{
	size_t n = strlen(id);

	memset(k, 0, JOB_TENANT_LEN);
	memcpy(k, tenant, strnlen(tenant, JOB_TENANT_LEN));
	sl_put_be64(k + JOB_TENANT_LEN, created_ms);
	memcpy(k + JOB_TENANT_LEN + 8, id, n);
	return JOB_TENANT_LEN + 8 + n;
}

json_t *
files_json(const struct sl_file *f)
{
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:n}", "id", f->id,
	    "object", "file", "bytes", (json_int_t)f->bytes, "created_at",
	    (json_int_t)(f->created_ms / 1000), "filename", f->filename, "purpose", f->purpose,
	    "status", "processed", "status_details");

	if (o && f->expires_s)
		json_object_set_new(o, "expires_at", json_integer((json_int_t)f->expires_s));
	return o;
}

/* Writes record `o` (a new reference, taken; NULL: out of memory) of file
 * `id`. */
static int
put_record(struct store_txn *t, const char *id, json_t *o)
{
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	int rc;

	json_decref(o);
	if (!s)
		return -ENOMEM;
	rc = store_table_put(t, STORE_T_FILES, id, strlen(id), s, strlen(s));
	free(s);
	return rc;
}

int
files_put(struct store_txn *t, const struct sl_file *f)
{
	unsigned char k[INDEX_KEY_MAX];
	json_t *o = files_json(f);
	int rc;

	if (o) {
		json_object_set_new(o, "_tenant", json_string(f->tenant));
		json_object_set_new(o, "_lines", json_integer((json_int_t)f->lines));
		json_object_set_new(o, "_created_ms", json_integer((json_int_t)f->created_ms));
	}
	rc = put_record(t, f->id, o);
	if (rc)
		return rc;
	return store_table_put(t, STORE_T_FILE_INDEX, k,
	    index_key(k, f->tenant, f->created_ms, f->id), "", 0);
}

static int
decode(const char *id, const void *data, size_t len, struct sl_file *f)
{
	json_t *o = json_loadb(data, len, 0, NULL);

	memset(f, 0, sizeof *f);
	if (!json_is_object(o)) {
		json_decref(o);
		return SL_ECORRUPT;
	}
	snprintf(f->id, sizeof f->id, "%s", id);
	snprintf(f->tenant, sizeof f->tenant, "%s",
	    json_string_value(json_object_get(o, "_tenant")) ?: "");
	snprintf(f->filename, sizeof f->filename, "%s",
	    json_string_value(json_object_get(o, "filename")) ?: "");
	snprintf(f->purpose, sizeof f->purpose, "%s",
	    json_string_value(json_object_get(o, "purpose")) ?: "");
	f->bytes = (uint64_t)json_integer_value(json_object_get(o, "bytes"));
	f->created_ms = (uint64_t)json_integer_value(json_object_get(o, "_created_ms"));
	f->expires_s = (uint64_t)json_integer_value(json_object_get(o, "expires_at"));
	f->lines = (uint64_t)json_integer_value(json_object_get(o, "_lines"));
	f->deleted = json_is_true(json_object_get(o, "_deleted"));
	json_decref(o);
	return 0;
}

/* files_get, tombstones included. */
static int
get_any(struct store_txn *t, const char *id, struct sl_file *out)
{
	const void *data;
	size_t len, n = strlen(id);
	int rc;

	if (n == 0 || n > FILE_ID_MAX)
		return SL_ENOTFOUND;
	rc = store_table_get(t, STORE_T_FILES, id, n, &data, &len);
	if (rc)
		return rc;
	return decode(id, data, len, out);
}

int
files_get(struct store_txn *t, const char *id, struct sl_file *out)
{
	int rc = get_any(t, id, out);

	return rc == 0 && out->deleted ? SL_ENOTFOUND : rc;
}

int
files_get_live(struct store_txn *t, const char *id, const char *tenant, uint64_t now_ms,
    struct sl_file *out)
{
	int rc = files_get(t, id, out);

	if (rc == 0 && (strcmp(out->tenant, tenant) != 0 || files_expired(out, now_ms)))
		rc = SL_ENOTFOUND; /* an expired file is gone; the sweep deletes it */
	return rc;
}

int
files_retire(struct store_txn *t, const struct sl_file *f, uint64_t now_ms)
{
	unsigned char k[INDEX_KEY_MAX];
	int rc = put_record(t, f->id, json_pack("{s:b, s:s, s:I, s:I}", "_deleted", 1,
	    "_tenant", f->tenant, "_created_ms", (json_int_t)f->created_ms, "expires_at",
	    (json_int_t)(now_ms / 1000 + FILE_TOMBSTONE_S)));

	if (rc)
		return rc;
	rc = store_table_del(t, STORE_T_FILE_INDEX, k,
	    index_key(k, f->tenant, f->created_ms, f->id));
	return rc == SL_ENOTFOUND ? 0 : rc;
}

int
files_delete(struct store_txn *t, const struct sl_file *f)
{
	unsigned char k[INDEX_KEY_MAX];
	int rc = store_table_del(t, STORE_T_FILES, f->id, strlen(f->id));

	if (rc)
		return rc;
	rc = store_table_del(t, STORE_T_FILE_INDEX, k,
	    index_key(k, f->tenant, f->created_ms, f->id));
	return rc == SL_ENOTFOUND ? 0 : rc;
}

struct list_ctx {
	struct store_txn *t;
	const char *tenant, *purpose;
	uint64_t now_ms;
	size_t limit, n;
	struct sl_file *out;
	bool has_more;
};

static int
list_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct list_ctx *l = arg;
	char id[FILE_ID_MAX + 1];
	struct sl_file f;

	if (klen <= JOB_TENANT_LEN + 8 || memcmp(key, l->tenant, JOB_TENANT_LEN) != 0)
		return 1; /* left this tenant's range */
	snprintf(id, sizeof id, "%.*s", (int)(klen - JOB_TENANT_LEN - 8),
	    (const char *)key + JOB_TENANT_LEN + 8);
	if (files_get(l->t, id, &f) != 0)
		return 0;
	if ((l->purpose[0] && strcmp(f.purpose, l->purpose) != 0) || files_expired(&f, l->now_ms))
		return 0;
	if (l->n == l->limit) {
		l->has_more = true;
		return 1;
	}
	l->out[l->n++] = f;
	return 0;
}

int
files_list(struct store_txn *t, const char *tenant, const char *after, bool asc,
    const char *purpose, uint64_t now_ms, size_t limit, struct sl_file *out, size_t *n,
    bool *has_more)
{
	unsigned char from[INDEX_KEY_MAX], padded[JOB_TENANT_LEN];
	struct list_ctx l = { .t = t, .tenant = (const char *)padded, .purpose = purpose,
		.now_ms = now_ms, .limit = limit, .out = out };
	size_t flen;
	int rc;

	memset(padded, 0, sizeof padded);
	memcpy(padded, tenant, strnlen(tenant, JOB_TENANT_LEN));
	if (after && *after) {
		struct sl_file a;
		/* A file deleted since the last page still marks its place. */
		rc = get_any(t, after, &a);
		if (rc)
			return rc;
		if (strncmp(a.tenant, tenant, JOB_TENANT_LEN) != 0)
			return SL_ENOTFOUND; /* another key's file: as if there were none */
		flen = index_key(from, tenant, a.created_ms, a.id);
		/* Exclusive: step one past `after` by extending or trimming. */
		if (asc) {
			from[flen++] = 0;
		} else {
			if (from[flen - 1] == 0)
				flen--;
			else
				from[flen - 1]--;
		}
	} else if (asc) {
		flen = index_key(from, tenant, 0, "");
	} else {
		flen = index_key(from, tenant, UINT64_MAX, "");
		memset(from + flen, 0xff, 8);
		flen += 8;
	}
	rc = store_table_scan_dir(t, STORE_T_FILE_INDEX, from, flen, !asc, list_one, &l);
	*n = l.n;
	*has_more = l.has_more;
	return rc < 0 ? rc : 0;
}

struct expired_ctx {
	uint64_t now_ms;
	struct sl_file *out;
	size_t cap, n;
};

static int
expired_one(void *arg, const void *key, size_t klen, const void *data, size_t len)
{
	struct expired_ctx *e = arg;
	char id[FILE_ID_MAX + 1];
	struct sl_file f;

	if (klen == 0 || klen > FILE_ID_MAX)
		return 0;
	memcpy(id, key, klen);
	id[klen] = '\0';
	if (decode(id, data, len, &f) != 0 || !files_expired(&f, e->now_ms))
		return 0; /* a damaged record is for `slowlanectl check`, not us */
	e->out[e->n++] = f;
	return e->n == e->cap;
}

int
files_expired_scan(struct store_txn *t, uint64_t now_ms, struct sl_file *out, size_t cap,
    size_t *n)
{
	struct expired_ctx e = { .now_ms = now_ms, .out = out, .cap = cap };
	int rc = cap ? store_table_scan(t, STORE_T_FILES, "", 0, expired_one, &e) : 0;

	*n = e.n;
	return rc > 0 ? 0 : rc; /* > 0: the scan stopped at `cap` */
}

void
files_jsonl_init(struct files_jsonl *s)
{
	memset(s, 0, sizeof *s);
	s->at_line_start = true;
}

/* Takes one byte; false if it cannot continue valid UTF-8. */
static bool
utf8_step(struct files_utf8 *u, unsigned char c)
{
	if (u->need) {
		if (c < u->lo || c > u->hi)
			return false;
		u->need--;
		u->lo = 0x80;
		u->hi = 0xbf;
		return true;
	}
	if (c < 0x80)
		return true;
	u->lo = 0x80;
	u->hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf)
		u->need = 1;
	else if (c >= 0xe0 && c <= 0xef) {
		u->need = 2;
		if (c == 0xe0)
			u->lo = 0xa0; /* no overlong */
		else if (c == 0xed)
			u->hi = 0x9f; /* no surrogate */
	} else if (c >= 0xf0 && c <= 0xf4) {
		u->need = 3;
		if (c == 0xf0)
			u->lo = 0x90;
		else if (c == 0xf4)
			u->hi = 0x8f; /* nothing past U+10FFFF */
	} else {
		return false;
	}
	return true;
}

bool
files_name_ok(const char *s)
{
	struct files_utf8 u = { 0 };

	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f || !utf8_step(&u, (unsigned char)*s))
			return false;
	return u.need == 0;
}

void
files_name_copy(char *dst, size_t cap, const char *src)
{
	size_t n, i;
	unsigned char lead;

	if ((size_t)snprintf(dst, cap, "%s", src) < cap)
		return;
	n = strlen(dst);
	i = n;
	while (i > 0 && ((unsigned char)dst[i - 1] & 0xc0) == 0x80)
		i--;
	if (i == 0 || (unsigned char)dst[i - 1] < 0xc0)
		return; /* cut after a whole character */
	lead = (unsigned char)dst[i - 1];
	if (n - (i - 1) < (size_t)(lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2))
		dst[i - 1] = '\0'; /* the last character was cut: drop it */
}

void
files_jsonl_feed(struct files_jsonl *s, const char *p, size_t n)
{
	for (size_t i = 0; i < n && !s->bad_line; i++) {
		char c = p[i];
		if (((unsigned char)c >= 0x80 || s->u.need) && !utf8_step(&s->u, (unsigned char)c)) {
			s->bad_line = s->lines + 1;
			break;
		}
		if (c == '\n') {
			if (!s->at_line_start && s->last != '}')
				s->bad_line = s->lines + 1;
			else if (!s->at_line_start)
				s->lines++;
			s->at_line_start = true;
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\r')
			continue;
		if (s->at_line_start && c != '{')
			s->bad_line = s->lines + 1;
		s->at_line_start = false;
		s->last = c;
	}
}

bool
files_jsonl_end(struct files_jsonl *s)
{
	if (!s->bad_line && s->u.need)
		s->bad_line = s->lines + 1; /* cut inside a character */
	if (!s->bad_line && !s->at_line_start) {
		if (s->last != '}')
			s->bad_line = s->lines + 1;
		else
			s->lines++; /* a last line without '\n' */
		s->at_line_start = true;
	}
	return !s->bad_line && s->lines > 0;
}
