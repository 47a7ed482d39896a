/*
 * api_files.c - the OpenAI Files API (API.md section 3): upload, list, get,
 * content, delete.
 *
 * An upload is streamed: libmicrohttpd's post processor hands us the
 * multipart body a chunk at a time (api_p_file_upload), which goes straight
 * to a temporary file, hashed for Idempotency-Key and checked to be JSONL
 * as it passes. At the end the writer thread fsyncs and renames it into
 * place and commits the file record in the same op: a file object is never
 * visible before its bytes are durable, and the body is never in memory.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api_impl.h"
#include "slowlane/batch.h"
#include "slowlane/common.h"
#include "slowlane/files.h"
#include "slowlane/idem.h"
#include "slowlane/log.h"
#include "slowlane/util.h"

#define FIELD_MAX 256

struct upload {
	struct wr_op op;
	struct api *a;
	struct http_req *req;
	char tmp[4096];
	int fd;
	bool have_file, write_failed;
	bool second_file;     /* a second `file` part came */
	struct files_jsonl scan; /* are the bytes JSONL? */
	struct sl_sha256 *hash;
	char purpose[FIELD_MAX], anchor[FIELD_MAX], seconds[FIELD_MAX];
	char idem[IDEM_KEY_MAX + 1], digest[IDEM_DIGEST_LEN + 1];
	char *answer;         /* idempotent replay, or NULL */
	bool answer_same;     /* ... for the same request */
	struct sl_file f;
};

static void
upload_free(void *p)
{
	struct upload *u = p;

	if (!u)
		return;
	if (u->fd >= 0)
		close(u->fd);
	if (u->tmp[0])
		unlink(u->tmp);
	if (u->hash) {
		char d[65];
		sl_sha256_final(u->hash, d);
	}
	free(u->answer);
	free(u);
}

static void
append_field(char *dst, const char *data, size_t len)
{
	size_t have = strlen(dst);

	if (have + len >= FIELD_MAX)
		len = FIELD_MAX - 1 - have;
	memcpy(dst + have, data, len);
	dst[have + len] = '\0';
}

static struct upload *
upload_of(struct http_req *r, struct api *a)
{
	struct upload *u = http_req_data(r);

	if (u)
		return u;
	u = calloc(1, sizeof *u);
	if (!u)
		return NULL;
	u->fd = -1;
	u->a = a;
	u->req = r;
	files_jsonl_init(&u->scan);
	http_req_set_data(r, u);
	http_req_set_cleanup(r, upload_free);
	return u;
}

int
api_p_file_upload(struct http_req *r, void *ctx, const char *field, const char *filename,
    const char *data, uint64_t off, size_t len)
{
	struct api *a = ctx;
	struct upload *u = upload_of(r, a);

	if (!u)
		return 1;
	if (strcmp(field, "purpose") == 0) {
		append_field(u->purpose, data, len);
	} else if (strcmp(field, "expires_after[anchor]") == 0) {
		append_field(u->anchor, data, len);
	} else if (strcmp(field, "expires_after[seconds]") == 0) {
		append_field(u->seconds, data, len);
	} else if (strcmp(field, "file") == 0) {
		if (u->have_file && off == 0 && u->f.bytes > 0) {
			/* A second `file` part: OpenAI takes exactly one. */
			u->second_file = true;
			return 1;
		}
		if (!u->have_file) {
			char rnd[17];
			u->have_file = true;
			files_name_copy(u->f.filename, sizeof u->f.filename,
			    filename && *filename ? filename : "upload.jsonl");
			sl_random_id(rnd, 16);
			snprintf(u->tmp, sizeof u->tmp, "%s/files/.upload-%s", a->data_dir, rnd);
			u->fd = open(u->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			u->hash = sl_sha256_new();
			if (u->fd < 0 || !u->hash) {
				log_error("files: cannot create %s: %s", u->tmp, strerror(errno));
				u->tmp[0] = '\0';
				u->write_failed = true;
				return 1;
			}
		}
		while (len > 0) {
			ssize_t n = write(u->fd, data, len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				u->write_failed = true;
				return 1;
			}
			sl_sha256_update(u->hash, data, (size_t)n);
			files_jsonl_feed(&u->scan, data, (size_t)n);
			u->f.bytes += (uint64_t)n;
			data += n;
			len -= (size_t)n;
		}
	}
	return 0;
}

static int
upload_apply(struct store_txn *t, struct wr_op *op)
{
	struct upload *u = SL_CONTAINER_OF(op, struct upload, op);
	int rc;

	/* Checked again in the writer's transaction: retries that arrive
	 * together were all new when the handler looked. */
	free(u->answer);
	u->answer = NULL;
	if (u->idem[0] && idem_lookup(t, u->f.tenant, u->idem, u->digest, &u->answer,
	    &u->answer_same) == 0)
		return 0;
	/* The bytes are durable under their final name before the record. */
	rc = files_publish(u->a->data_dir, u->fd, u->tmp, u->f.id);
	if (rc) {
		log_error("files: cannot publish %s: %s", u->f.id, sl_strerror(rc));
		return SL_ESTORE;
	}
	rc = files_put(t, &u->f);
	if (!rc && u->idem[0]) {
		json_t *o = files_json(&u->f);
		char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
		json_decref(o);
		rc = s ? idem_store(t, u->f.tenant, u->idem, u->digest, s) : -ENOMEM;
		free(s);
	}
	return rc;
}

static void
upload_done(struct wr_op *op)
{
	struct upload *u = SL_CONTAINER_OF(op, struct upload, op);

	if (op->rc == 0 && u->answer) {
		api_idem_answer(u->req, u->answer, u->answer_same);
		u->answer = NULL; /* the upload's temporary file goes in upload_free */
	} else if (op->rc) {
		char path[4096];
		files_path(u->a->data_dir, u->f.id, path, sizeof path);
		unlink(path);
		api_reply_store_err(u->req, op->rc);
	} else {
		u->tmp[0] = '\0'; /* renamed: nothing to remove */
		http_reply_json(u->req, 200, files_json(&u->f));
	}
	upload_free(u);
}

void
api_h_file_upload(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	struct upload *u = http_req_data(r);
	char tenant[JOB_TENANT_LEN + 1], msg[200];
	const char *key = http_req_header(r, "Idempotency-Key");
	uint64_t now = sl_wall_ms(), secs = 0;
	bool jsonl;

	if (!api_authenticate(a, r, tenant))
		return;
	if (http_req_too_big(r)) {
		snprintf(msg, sizeof msg, "The file is larger than the limit of %llu bytes.",
		    (unsigned long long)a->o.batch_max_bytes);
		api_reply_err(r, 413, "invalid_request_error", "file", "file_too_large", msg);
		return;
	}
	if (!u || !u->have_file) {
		api_reply_err(r, 400, "invalid_request_error", "file", "missing_required_parameter",
		    "Upload the file as multipart/form-data with a 'file' field and a "
		    "'purpose' field.");
		return;
	}
	if (u->second_file) {
		api_reply_err(r, 400, "invalid_request_error", "file", "invalid_value",
		    "Upload exactly one 'file' part.");
		return;
	}
	if (!files_name_ok(u->f.filename)) {
		api_reply_err(r, 400, "invalid_request_error", "file", "invalid_value",
		    "The file's name must be UTF-8 text without control characters.");
		return;
	}
	if (u->write_failed) {
		api_reply_err(r, 503, "server_error", NULL, "store_unavailable",
		    "The file could not be written; nothing was stored.");
		return;
	}
	if (!u->purpose[0]) {
		api_reply_err(r, 400, "invalid_request_error", "purpose", "missing_required_parameter",
		    "Missing required parameter: 'purpose' (\"batch\").");
		return;
	}
	if (strcmp(u->purpose, "batch") != 0 && strcmp(u->purpose, "user_data") != 0) {
		api_reply_err(r, 400, "invalid_request_error", "purpose", "invalid_value",
		    "'purpose' must be \"batch\" (or \"user_data\").");
		return;
	}
	jsonl = files_jsonl_end(&u->scan);
	u->f.lines = u->scan.lines;
	if (strcmp(u->purpose, "batch") == 0) {
		if (!jsonl) {
			snprintf(msg, sizeof msg, !u->scan.bad_line
			    ? "The file is empty: a batch input is JSONL, one request per line."
			    : "The file is not JSONL: line %llu is not a JSON object in UTF-8.",
			    (unsigned long long)u->scan.bad_line);
			api_reply_err(r, 400, "invalid_request_error", "file", "invalid_file_format",
			    msg);
			return;
		}
	}
	if (u->seconds[0]) {
		char *end;
		secs = strtoull(u->seconds, &end, 10);
		if (*end || strcmp(u->anchor, "created_at") != 0 || secs < 3600 ||
		    secs > 30 * 86400) {
			api_reply_err(r, 400, "invalid_request_error", "expires_after",
			    "invalid_value", "'expires_after' needs anchor \"created_at\" and "
			    "seconds between 3600 and 2592000.");
			return;
		}
	}
	/* The request is the bytes and its fields: a reuse of the key with
	 * another purpose or name is another request. */
	sl_sha256_update(u->hash, "", 1);
	sl_sha256_update(u->hash, u->purpose, strlen(u->purpose) + 1);
	sl_sha256_update(u->hash, u->f.filename, strlen(u->f.filename) + 1);
	sl_sha256_update(u->hash, u->seconds, strlen(u->seconds));
	sl_sha256_final(u->hash, u->digest);
	memcpy(u->digest + 64, u->digest, 64); /* one digest, old records or new */
	u->digest[IDEM_DIGEST_LEN] = '\0';
	u->hash = NULL;
	if (api_idem_replay(a, r, tenant, key, u->digest))
		return;
	if (files_new_id(u->f.id) != 0) {
		api_reply_err(r, 503, "server_error", NULL, NULL, "No randomness for an id.");
		return;
	}
	snprintf(u->f.tenant, sizeof u->f.tenant, "%s", tenant);
	snprintf(u->f.purpose, sizeof u->f.purpose, "%.31s", u->purpose);
	u->f.created_ms = now;
	if (secs)
		u->f.expires_s = now / 1000 + secs;
	else if (a->o.file_ttl_ms)
		u->f.expires_s = (now + a->o.file_ttl_ms) / 1000;
	if (key)
		snprintf(u->idem, sizeof u->idem, "%s", key);
	/* The op owns the upload now. */
	http_req_set_cleanup(r, NULL);
	u->op.apply = upload_apply;
	u->op.done = upload_done;
	writer_submit(a->wr, &u->op);
}

/* ---- read side ---- */

/* Reads file `id` of the caller. Returns false after answering. */
static bool
load_file(struct api *a, struct http_req *r, struct sl_file *f)
{
	char tenant[JOB_TENANT_LEN + 1];
	struct store_txn *t = NULL;
	int rc;

	if (!api_authenticate(a, r, tenant))
		return false;
	rc = store_begin(a->st, true, &t);
	if (rc == 0)
		rc = files_get_live(t, http_req_capture(r, 0), tenant, sl_wall_ms(), f);
	store_abort(t);
	if (rc == SL_ENOTFOUND) {
		api_reply_err(r, 404, "invalid_request_error", "file_id", "file_not_found",
		    "No such file.");
		return false;
	}
	if (rc) {
		api_reply_store_err(r, rc);
		return false;
	}
	return true;
}

void
api_h_file_get(struct http_req *r, void *ctx)
{
	struct sl_file f;

	if (load_file(ctx, r, &f))
		http_reply_json(r, 200, files_json(&f));
}

void
api_h_file_content(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	struct sl_file f;
	char path[4096];
	struct stat sb;
	int fd;

	if (!load_file(a, r, &f))
		return;
	files_path(a->data_dir, f.id, path, sizeof path);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		if (fd >= 0)
			close(fd);
		log_error("files: %s: %s", path, strerror(errno));
		api_reply_err(r, 500, "server_error", NULL, "file_missing",
		    "The file's content is missing from the store.");
		return;
	}
	http_reply_fd(r, 200, "application/octet-stream", fd, (uint64_t)sb.st_size);
}

struct del_op {
	struct wr_op op;
	struct api *a;
	struct http_req *req;
	struct sl_file f;
	char by[BATCH_ID_LEN + 1]; /* out: the active batch reading it */
};

static int
del_apply(struct store_txn *t, struct wr_op *op)
{
	struct del_op *d = SL_CONTAINER_OF(op, struct del_op, op);
	int rc;

	/* A running batch reads its input until it ends (a restart
	 * re-reads it): its bytes stay until then. */
	d->by[0] = '\0';
	rc = batch_input_in_use(t, d->f.id, d->by);
	if (rc)
		return rc < 0 ? rc : 0;
	return files_retire(t, &d->f, sl_wall_ms());
}

static void
del_done(struct wr_op *op)
{
	struct del_op *d = SL_CONTAINER_OF(op, struct del_op, op);
	char path[4096];

	if (op->rc && op->rc != SL_ENOTFOUND) {
		api_reply_store_err(d->req, op->rc);
	} else if (d->by[0]) {
		char msg[200];

		snprintf(msg, sizeof msg, "The file is the input of batch %s, which has not "
		    "ended: cancel the batch or wait for its end, then delete the file.", d->by);
		api_reply_err(d->req, 409, "invalid_request_error", "file_id", "file_in_use", msg);
	} else {
		/* The record is gone: the bytes can go (a crash here leaves an
		 * orphan file, never a record without bytes). */
		files_path(d->a->data_dir, d->f.id, path, sizeof path);
		unlink(path);
		http_reply_json(d->req, 200, json_pack("{s:s, s:s, s:b}", "id", d->f.id,
		    "object", "file", "deleted", 1));
	}
	free(d);
}

void
api_h_file_delete(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	struct del_op *d = calloc(1, sizeof *d);

	if (!d) {
		api_reply_err(r, 503, "server_error", NULL, NULL, "Out of memory.");
		return;
	}
	if (!load_file(a, r, &d->f)) {
		free(d);
		return;
	}
	d->a = a;
	d->req = r;
	d->op.apply = del_apply;
	d->op.done = del_done;
	writer_submit(a->wr, &d->op);
}

void
api_h_file_list(struct http_req *r, void *ctx)
{
	struct api *a = ctx;
	char tenant[JOB_TENANT_LEN + 1];
	const char *after = http_req_query(r, "after"), *order = http_req_query(r, "order");
	const char *purpose = http_req_query(r, "purpose"), *lim = http_req_query(r, "limit");
	struct store_txn *t = NULL;
	struct sl_file *out;
	size_t limit = 10000, n = 0;
	bool more = false;
	json_t *data;
	int rc;

	if (!api_authenticate(a, r, tenant))
		return;
	if (!api_query_limit(r, lim, 10000, &limit))
		return;
	if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0) {
		api_reply_err(r, 400, "invalid_request_error", "order", "invalid_value",
		    "'order' must be \"asc\" or \"desc\".");
		return;
	}
	out = calloc(limit, sizeof *out);
	if (!out) {
		api_reply_err(r, 503, "server_error", NULL, NULL, "Out of memory.");
		return;
	}
	rc = store_begin(a->st, true, &t);
	if (rc == 0)
		rc = files_list(t, tenant, after, order && strcmp(order, "asc") == 0,
		    purpose ? purpose : "", sl_wall_ms(), limit, out, &n, &more);
	store_abort(t);
	if (rc == SL_ENOTFOUND) {
		api_reply_err(r, 400, "invalid_request_error", "after", "invalid_value",
		    "'after' names no file of yours.");
	} else if (rc) {
		api_reply_store_err(r, rc);
	} else {
		data = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(data, files_json(&out[i]));
		http_reply_json(r, 200, json_pack("{s:s, s:o, s:s?, s:s?, s:b}", "object", "list",
		    "data", data, "first_id", n ? out[0].id : NULL, "last_id",
		    n ? out[n - 1].id : NULL, "has_more", more));
	}
	free(out);
}
