/*
 * intake.h - submits on their way into the store (docs/JOURNAL.md).
 *
 * The record: one submit (a single job, or a group and its members) as one
 * self-contained byte string, what the journal holds for it. intake_apply
 * stores it; it is what the writer runs after the journal has synced it,
 * and what startup runs for every frame the store does not have.
 *
 * The overlay: the records journaled (acknowledged) whose store commit has
 * not returned yet, findable by job id and group id so that a poll in
 * between sees them. Held before the acknowledgement, forgotten after the
 * commit; a poll that misses here and then in a read snapshot begun after
 * the miss cannot miss an acknowledged job.
 *
 * Threads: the overlay's functions may be called from any thread.
 */
#ifndef SLOWLANE_INTAKE_H
#define SLOWLANE_INTAKE_H

#include <stddef.h>

#include "slowlane/group.h"
#include "slowlane/job.h"
#include "slowlane/store.h"
#include "slowlane/util.h"

/* Encodes jobs[0..n) with their bodies, and the group `g` (NULL for a
 * single submit), into a new buffer *out (free() it) of *len bytes.
 * Returns 0, SL_EINVAL (n is 0 or over GROUP_MAX) or -ENOMEM. */
int intake_encode(const struct job *jobs, size_t n, const char *const *bodies,
    const size_t *lens, const struct group *g, unsigned char **out, size_t *len);

/* Stores the submit in `rec` (queue_insert_acked, then group_put).
 * Returns 0, SL_ECORRUPT (not a record), SL_EFULL or SL_ESTORE. */
int intake_apply(struct store_txn *t, const void *rec, size_t len);

/*
 * Crash recovery (docs/JOURNAL.md): opens <dir>/journal (creating it if
 * missing) and stores, in one synced transaction on st, every frame the
 * store does not have, with the last seq as meta.journal_seq. A store
 * without journal_seq has never had a journal, so frames found then belong
 * to another store (a data.mdb removed by hand) and are not applied.
 * *stored gets the frames applied, *ignored those of another store. With
 * `out`, *out gets the journal, open and locked for appending (NULL if the
 * disk has no room for it); without, it is closed.
 * Returns 0; -EBUSY: another process holds the journal (a daemon running
 * on dir), nothing was done; or an error of the journal or the store.
 */
struct journal;
int intake_recover(struct store *st, const char *dir, struct journal **out, uint64_t *stored,
    uint64_t *ignored);

struct intake;
struct intake_ref;

/* Returns a new, empty overlay, or NULL (out of memory). */
struct intake *intake_new(void);
/* Frees the overlay; nothing may be held. intake_free(NULL) is a no-op. */
void intake_free(struct intake *in);

/* Makes the jobs (and group) of `rec` findable, from a copy; *held gets
 * the handle to forget it by. Returns 0, SL_ECORRUPT or -ENOMEM. */
int intake_hold(struct intake *in, const void *rec, size_t len, struct intake_ref **held);
/* Undoes intake_hold. intake_forget(in, NULL) is a no-op. */
void intake_forget(struct intake *in, struct intake_ref *held);
/* The bytes of a held record. */
const void *intake_ref_data(const struct intake_ref *r, size_t *len);
/* Number of records held. */
size_t intake_count(struct intake *in);
/* Jobs of `tenant` held (for the per-key queue limit: the store does not
 * count them yet). */
uint64_t intake_tenant_jobs(struct intake *in, const char *tenant);

/* The held record holding job or group `id`, referenced (intake_release
 * it), or NULL. */
struct intake_ref *intake_find(struct intake *in, const char *id);
void intake_release(struct intake *in, struct intake_ref *r);
/* Appends the generation of job `id` of `r` to `b` if it belongs to
 * `tenant`. Returns 0, SL_ENOTFOUND, SL_ETOOBIG or -ENOMEM. */
int intake_render_job(const struct intake_ref *r, const char *id, const char *tenant,
    struct sl_buf *b);
/* Group `gid` of `r` if `r` is its submit and it belongs to `tenant`: 0 or
 * SL_ENOTFOUND. */
int intake_group(const struct intake_ref *r, const char *gid, const char *tenant,
    struct group *g);
/* Appends the JSON array of the generations of the jobs of `r`. */
int intake_render_members(const struct intake_ref *r, struct sl_buf *b);

#endif
