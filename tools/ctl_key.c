/*
 * ctl_key.c - slowlanectl's API key commands: add, ls, revoke and set on the
 * `keys` table (apikey.h).
 *
 * The store holds only a key's SHA-256 (and the tenant id, its first 16 hex
 * digits); `key add` prints the key itself once and it cannot be recovered.
 * Everything else names a key by its id, which is that tenant id, or by a
 * unique prefix of it of at least 4 digits, or by the key text itself
 * (hashed here, never stored).
 *
 * Each change is one small write transaction. The running daemon looks the
 * presented key up in the table on every request, so an added key works at
 * once, a revoked one is refused (401) at its next request, and new limits
 * apply to the next request, all without a restart. The trap: the first key
 * stored closes a gateway that ran open (no --api-key): from then on every
 * request without a valid key is refused, and the jobs made while it was open
 * belong to the tenant "" that no key has.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "slowlane/apikey.h"
#include "slowlane/common.h"
#include "slowlane/util.h"

#include "ctl_common.h"

#define KEY_ID_MIN 4             /* hex digits of a prefix, as git's abbreviations */
#define RPS_MAX 1000000u         /* as slowlaned's --rate-limit */
#define MAX_QUEUED_MAX (UINT64_MAX / 2) /* as slowlaned's --max-queued */

/* ---- helpers ---- */

/* Checks --name, --rps and --max-queued. Returns CTL_OK or CTL_USAGE. */
static int
limits_check(const struct ctl *c)
{
	if (c->name && strlen(c->name) > APIKEY_NAME_MAX)
		return ctl_usage_err(c, "--name is longer than %d bytes", APIKEY_NAME_MAX);
	if ((c->seen & CTL_O_RPS) && c->rps > RPS_MAX)
		return ctl_usage_err(c, "bad value '%llu' for --rps (0 to %u; 0 = slowlaned's "
		    "--rate-limit)", (unsigned long long)c->rps, RPS_MAX);
	if ((c->seen & CTL_O_MAX_QUEUED) && c->max_queued > MAX_QUEUED_MAX)
		return ctl_usage_err(c, "bad value '%llu' for --max-queued (0 = slowlaned's "
		    "--max-queued)", (unsigned long long)c->max_queued);
	return CTL_OK;
}

/* "5" or "default" into out[24]. */
static const char *
limit_text(uint64_t v, char out[24])
{
	if (!v)
		return "default";
	snprintf(out, 24, "%llu", (unsigned long long)v);
	return out;
}

/* True if `s` is 1 to JOB_TENANT_LEN hex digits: an id or a prefix of one,
 * never a key (ours start with "sk-sl-"). */
static bool
is_id(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= JOB_TENANT_LEN && strspn(s, "0123456789abcdefABCDEF") == n;
}

/* Checks the ID operand before the store is opened. Returns CTL_OK or
 * CTL_USAGE. */
static int
id_check(const struct ctl *c, const char *arg)
{
	if (!*arg)
		return ctl_usage_err(c, "the key id is empty");
	if (is_id(arg) && strlen(arg) < KEY_ID_MIN)
		return ctl_usage_err(c, "key id '%s' is too short: give at least %d of its hex "
		    "digits ('slowlanectl key ls' lists them)", arg, KEY_ID_MIN);
	return CTL_OK;
}

struct find_ctx {
	char prefix[JOB_TENANT_LEN + 1]; /* lower case */
	size_t len;
	struct apikey first;             /* the first match */
	char others[3][JOB_TENANT_LEN + 1]; /* more matches, for the message */
	size_t n;                        /* matches */
};

static int
find_one(void *arg, const struct apikey *k)
{
	struct find_ctx *f = arg;

	if (strncmp(k->tenant, f->prefix, f->len) != 0)
		return 0;
	if (f->n == 0)
		f->first = *k;
	else if (f->n <= SL_ARRAY_LEN(f->others))
		memcpy(f->others[f->n - 1], k->tenant, JOB_TENANT_LEN + 1);
	f->n++;
	return 0;
}

/* Reads the key that `arg` names (an id, a unique prefix of one, or the key
 * text) into *out, in transaction `t`. Returns CTL_OK or CTL_FAIL (message
 * printed: unknown, ambiguous, store error). */
static int
key_find(const struct ctl *c, struct store_txn *t, const char *arg, struct apikey *out)
{
	struct find_ctx f = { .len = strlen(arg) };
	char hash[65], tenant[JOB_TENANT_LEN + 1];
	int rc;

	if (!is_id(arg)) {
		/* The key text: the same hash as the daemon's lookup. */
		apikey_hash(arg, hash, tenant);
		rc = apikey_get(t, hash, out);
		if (rc == SL_ENOTFOUND) {
			ctl_err("that key is not in the store in %s (keys given to slowlaned with "
			    "--api-key or SLOWLANE_API_KEYS are not: remove those from its "
			    "configuration and restart it)", c->data_dir);
			return CTL_FAIL;
		}
		return rc ? ctl_store_err("reading the key", rc) : CTL_OK;
	}
	for (size_t i = 0; i <= f.len; i++)
		f.prefix[i] = (char)tolower((unsigned char)arg[i]);
	rc = apikey_list(t, find_one, &f);
	if (rc)
		return ctl_store_err("listing keys", rc);
	if (f.n == 0) {
		ctl_err("no key %s in %s ('slowlanectl key ls' lists them)", f.prefix, c->data_dir);
		return CTL_FAIL;
	}
	if (f.n > 1) {
		ctl_err("key id '%s' is ambiguous: %s, %s%s%s%s; give more digits", f.prefix,
		    f.first.tenant, f.others[0], f.n > 2 ? ", " : "", f.n > 2 ? f.others[1] : "",
		    f.n > 3 ? ", ..." : "");
		return CTL_FAIL;
	}
	*out = f.first;
	return CTL_OK;
}

static json_t *
key_json(const struct apikey *k)
{
	return json_pack("{s:s, s:o, s:o, s:b, s:I, s:I}", "id", k->tenant, "name",
	    ctl_json_str(k->name), "createdAt", ctl_json_time(k->created_ms), "revoked",
	    k->revoked, "rps", (json_int_t)k->rps, "maxQueued", (json_int_t)k->max_queued);
}

/* ---- add ---- */

/* Sets *clash if a stored key has the tenant in arg (first 16 hex digits
 * equal: two keys would share one tenant's data). */
struct clash_ctx {
	const char *tenant;
	bool clash;
};

static int
clash_one(void *arg, const struct apikey *k)
{
	struct clash_ctx *x = arg;

	x->clash |= strcmp(k->tenant, x->tenant) == 0;
	return 0;
}

int
ctl_key_add(struct ctl *c)
{
	char key[APIKEY_LEN + 1], when[32], n1[24], n2[24];
	struct store_txn *t = NULL;
	struct store *st = NULL;
	struct apikey k;
	bool first = false;
	int rc = limits_check(c);

	if (rc)
		return rc;
	rc = ctl_open(c, true, &st);
	if (rc)
		return rc;
	rc = store_begin(st, false, &t);
	if (rc == 0)
		first = !apikey_any(t);
	/* 240 random bits: a clash is as good as impossible, but a tenant
	 * shared by two keys would share their data, so look. */
	for (int tries = 0; rc == 0; tries++) {
		struct clash_ctx x;
		rc = apikey_new(c->name, c->now_ms, key, &k);
		if (rc)
			break;
		x.tenant = k.tenant;
		x.clash = false;
		rc = apikey_list(t, clash_one, &x);
		if (rc == 0 && !x.clash) {
			k.rps = (uint32_t)c->rps;
			k.max_queued = c->max_queued;
			rc = apikey_put(t, &k);
			break;
		}
		if (rc == 0 && tries == 8)
			rc = -EEXIST;
	}
	if (rc == 0)
		rc = store_commit(t);
	else
		store_abort(t);
	store_close(st);
	if (rc)
		return ctl_store_err("adding the key", rc);
	if (c->json) {
		ctl_print_json(json_pack("{s:s, s:s, s:s, s:o, s:o, s:b, s:I, s:I}", "id", k.tenant,
		    "key", key, "tenant", k.tenant, "name", ctl_json_str(k.name), "createdAt",
		    ctl_json_time(k.created_ms), "revoked", false, "rps", (json_int_t)k.rps,
		    "maxQueued", (json_int_t)k.max_queued));
	} else {
		printf("id          %s\n", k.tenant);
		printf("key         %s\n", key);
		printf("name        %s\n", *k.name ? k.name : "-");
		printf("rps         %s\n", limit_text(k.rps, n1));
		printf("max queued  %s\n", limit_text(k.max_queued, n2));
		printf("created     %s\n", ctl_fmt_time(k.created_ms, when));
		printf("Keep the key: it cannot be shown again (the store holds only its SHA-256).\n"
		    "Clients send 'Authorization: Bearer %.6s...'; the id is also its tenant, and "
		    "'slowlanectl key revoke %s' revokes it.\n", key, k.tenant);
		if (first)
			printf("This is the store's first key: from now on slowlaned refuses "
			    "requests without a valid key (401), and jobs made without a key are "
			    "no longer visible over the API.\n");
	}
	return CTL_OK;
}

/* ---- ls ---- */

struct ls_rows {
	struct apikey *v;
	size_t n, cap;
};

static int
ls_collect(void *arg, const struct apikey *k)
{
	struct ls_rows *r = arg;

	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 32;
		struct apikey *v = realloc(r->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n] = *k;
	/* The full hash is not shown; drop it here so it cannot be. */
	memset(r->v[r->n].hash, 0, sizeof r->v[r->n].hash);
	r->n++;
	return 0;
}

/* Newest first; ties by id, so the order is stable. */
static int
ls_newest_first(const void *a, const void *b)
{
	const struct apikey *x = a, *y = b;

	if (x->created_ms != y->created_ms)
		return x->created_ms < y->created_ms ? 1 : -1;
	return strcmp(x->tenant, y->tenant);
}

int
ctl_key_ls(struct ctl *c)
{
	struct ls_rows r = { 0 };
	struct store_txn *t = NULL;
	struct store *st;
	int rc = ctl_open(c, false, &st);

	if (rc)
		return rc;
	rc = store_begin(st, true, &t);
	if (!rc)
		rc = apikey_list(t, ls_collect, &r);
	store_abort(t);
	store_close(st);
	if (rc) {
		free(r.v);
		return ctl_store_err("listing keys", rc);
	}
	if (r.n > 1)
		qsort(r.v, r.n, sizeof *r.v, ls_newest_first);
	if (c->json) {
		fputs(r.n ? "[\n" : "[]\n", stdout);
		for (size_t i = 0; i < r.n; i++) {
			json_t *row = key_json(&r.v[i]);
			if (!row || json_dumpf(row, stdout, JSON_COMPACT) != 0)
				rc = -ENOMEM;
			json_decref(row);
			fputs(i + 1 < r.n ? ",\n" : "\n]\n", stdout);
		}
	} else {
		printf("%-16s  %-24s  %-20s  %-7s  %7s  %10s\n", "ID", "NAME", "CREATED", "STATUS",
		    "RPS", "MAX_QUEUED");
		for (size_t i = 0; i < r.n; i++) {
			const struct apikey *k = &r.v[i];
			char name[32], when[32], n1[24], n2[24];
			printf("%-16s  %-24s  %-20s  %-7s  %7s  %10s\n", k->tenant,
			    ctl_cell(k->name, 24, name, sizeof name),
			    ctl_fmt_time(k->created_ms, when), k->revoked ? "revoked" : "active",
			    limit_text(k->rps, n1), limit_text(k->max_queued, n2));
		}
	}
	free(r.v);
	return rc ? ctl_store_err("keys", rc) : CTL_OK;
}

/* ---- revoke, set ---- */

/* In one write transaction: finds the key c->args[0] names, applies revoke
 * or c's limits, and stores it. *k holds the key as it is now, *changed
 * whether anything differs. Returns CTL_OK or CTL_FAIL (message printed). */
static int
change_one(struct ctl *c, bool revoke, struct apikey *k, bool *changed)
{
	struct store_txn *t = NULL;
	struct store *st;
	int rc = ctl_open(c, true, &st);

	*changed = false;
	if (rc)
		return rc;
	rc = store_begin(st, false, &t);
	if (rc) {
		store_close(st);
		return ctl_store_err("opening a write transaction", rc);
	}
	rc = key_find(c, t, c->args[0], k);
	if (rc) {
		store_abort(t);
		store_close(st);
		return rc;
	}
	if (revoke) {
		*changed = !k->revoked;
		k->revoked = true;
	}
	if ((c->seen & CTL_O_RPS) && k->rps != (uint32_t)c->rps) {
		k->rps = (uint32_t)c->rps;
		*changed = true;
	}
	if ((c->seen & CTL_O_MAX_QUEUED) && k->max_queued != c->max_queued) {
		k->max_queued = c->max_queued;
		*changed = true;
	}
	rc = *changed ? apikey_put(t, k) : 0;
	if (rc == 0 && *changed)
		rc = store_commit(t);
	else
		store_abort(t);
	store_close(st);
	return rc ? ctl_store_err(k->tenant, rc) : CTL_OK;
}

int
ctl_key_revoke(struct ctl *c)
{
	struct apikey k;
	bool changed;
	int rc = id_check(c, c->args[0]);

	if (!rc)
		rc = change_one(c, true, &k, &changed);
	if (rc)
		return rc;
	if (c->json)
		ctl_print_json(json_pack("{s:s, s:s, s:o, s:b}", "operation", "revoke", "id",
		    k.tenant, "name", ctl_json_str(k.name), "changed", changed));
	else if (!changed)
		printf("key %s%s%s%s was already revoked\n", k.tenant, *k.name ? " (" : "", k.name,
		    *k.name ? ")" : "");
	else
		printf("revoked key %s%s%s%s: slowlaned refuses it (401) from its next request; "
		    "its jobs, files, batches and webhooks are kept\n", k.tenant,
		    *k.name ? " (" : "", k.name, *k.name ? ")" : "");
	return CTL_OK;
}

int
ctl_key_set(struct ctl *c)
{
	char n1[24], n2[24];
	struct apikey k;
	bool changed;
	int rc = id_check(c, c->args[0]);

	if (!rc && !(c->seen & (CTL_O_RPS | CTL_O_MAX_QUEUED)))
		rc = ctl_usage_err(c, "'key set' needs --rps N or --max-queued N (0 = the daemon's "
		    "default)");
	if (!rc)
		rc = limits_check(c);
	if (!rc)
		rc = change_one(c, false, &k, &changed);
	if (rc)
		return rc;
	if (c->json) {
		ctl_print_json(json_pack("{s:s, s:s, s:o, s:b, s:I, s:I, s:b}", "operation", "set",
		    "id", k.tenant, "name", ctl_json_str(k.name), "revoked", k.revoked, "rps",
		    (json_int_t)k.rps, "maxQueued", (json_int_t)k.max_queued, "changed", changed));
		return CTL_OK;
	}
	printf("key %s%s%s%s: rps %s, max queued %s%s%s\n", k.tenant, *k.name ? " (" : "",
	    k.name, *k.name ? ")" : "", limit_text(k.rps, n1), limit_text(k.max_queued, n2),
	    changed ? "" : " (unchanged)", k.revoked ? "; the key is revoked" : "");
	return CTL_OK;
}
