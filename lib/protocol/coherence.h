/* Coherence: twins, diffs, validation on an access miss, the end of an interval
 * (internal, protocol). */
#ifndef CDSM_COHERENCE_H
#define CDSM_COHERENCE_H

#include <stdint.h>

#include "interval.h"
#include "msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An access fault on page pg: is_write 0 (read), 1 (write), 2 (write caught by a
 * userfaultfd write-protect bit). */
void cdsm__fault(uint32_t pg, int is_write);
void cdsm__close_interval(void);
/* Lazy release: close the open interval if it holds a release's writes, before its
 * records leave the process. From a thread other than the application's, the dirty set
 * is write-protected first. Caller holds mu. */
void cdsm__close_released(void);
void cdsm__invalidate(uint32_t pg);
/* While a grant is taken, or a barrier's release and its refetch (begin .. end): a hot
 * page the notices invalidate keeps its twin and its place in the dirty set (p->patch)
 * until its diffs are seen; diffs that complete it go to page and twin alike
 * (cdsm__patch_apply) and it is made writable (CDSM_PG_RW) and stays hot. end() drops, as
 * an invalidation does, the twins of those the diffs did not complete. on: keep them at
 * all; at_barrier: which counter the kept ones go to. */
void cdsm__patch_begin(int on, int at_barrier);
void cdsm__patch_end(void);
/* A kept page whose bytes are replaced whole (a copy installed over it): its twin is stale
 * at once, not at the window's end (the service thread serves the twin meanwhile). */
void cdsm__patch_drop(uint32_t pg);
/* Apply diff (len bytes) to patch page pg and to its twin; 0 or CDSM_ERR_PROTOCOL. */
int cdsm__patch_apply(uint32_t pg, const void *diff, uint32_t len);
void cdsm__patch_fini(void);
/* A page a grant's notice is about to name while the interval is open: 1 if the interval
 * can go on (not in the dirty set, or made writable ahead and not written: it leaves the
 * set, write-protected again), 0 if its writes must be a diff first (close the interval). */
int cdsm__dirty_yield(uint32_t pg);
/* The one place a write notice is put on a page (newest first; counted in log_bytes). */
void cdsm__notice_add(uint32_t pg, cdsm__interval_t *iv);
cdsm__diffrec_t *cdsm__own_diff(cdsm__interval_t *iv, int j);
/* The same diff as it leaves for another rank (a diff reply, a grant): the twin it was made
 * from is freed, since the diff now exists. */
cdsm__diffrec_t *cdsm__own_diff_out(cdsm__interval_t *iv, int j);
/* The key of a diff on the board of published diffs (transport's board.c). */
static inline uint64_t cdsm__board_key(uint32_t pg, uint32_t idx)
{
    return (uint64_t)idx << 32 | pg;
}
/* Keys beside the diffs (page numbers no heap page has): each interval record as it
 * closed, and lock l's clock at a published release (lockwords.c). */
#define CDSM_BOARD_FIRST_NONPAGE 0xFFE00000u
static inline uint64_t cdsm__board_rec_key(uint32_t idx)
{
    return cdsm__board_key(0xFFFFFFFFu, idx);
}
static inline uint64_t cdsm__board_slot_key(uint32_t l, uint32_t c)
{
    return cdsm__board_key(CDSM_BOARD_FIRST_NONPAGE + l, c);
}
/* validate.c: the readahead of one access miss: the positions k in [1, window) of the
 * stream, page pg + (k / run) * stride + k % run (run 1: pg + k * stride), are fetched
 * with it where they need it; `covered` says how far the miss went (the stream's next
 * miss is expected there). cdsm__ra_begin updates the stream with a miss on pg;
 * cdsm__ra_end records how far it went. */
#define CDSM_RA_MAX 64
typedef struct cdsm__ra {
    int32_t stride;
    uint32_t window, run, covered;
    uint32_t slot; /* which of the streams it belongs to */
} cdsm__ra_t;
cdsm__ra_t cdsm__ra_begin(uint32_t pg);
void cdsm__ra_end(uint32_t pg, const cdsm__ra_t *ra);
void cdsm__ra_reset(void); /* at each interval's end: streams do not cross a synchronisation */
/* Walk pg's stream (ra may be NULL: nothing to walk): take(q, arg) on each position q
 * (UINT32_MAX past the heap's ends) returns 1 (taken), 0 (skipped) or -1 (the stream ends
 * before q); sets ra->covered. */
void cdsm__ra_walk(uint32_t pg, cdsm__ra_t *ra, int (*take)(uint32_t q, void *arg), void *arg);
/* Bring invalid page pg up to date (ra: its readahead, or NULL). Caller holds mu. */
int cdsm__validate(uint32_t pg, cdsm__ra_t *ra);
/* The working set's refetch: between collect(1) and collect(0) (a barrier's notices),
 * note() takes each invalidated page that has working-set credit; run() validates them
 * in batches (after the barrier); fini() frees the list. Caller holds mu. */
void cdsm__refetch_collect(int on);
void cdsm__refetch_note(uint32_t pg);
int cdsm__refetch_run(void);
void cdsm__refetch_fini(void);
void cdsm__serve_diffs(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
/* The newest of this rank's intervals a DIFF_REQ's payload asks for (the fault-tolerance
 * floor serves a replacement's requests once it has made them again). -1: malformed. */
int cdsm__diff_req_newest(const uint8_t *p, size_t len, uint32_t *newest);
void cdsm__serve_page(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
uint32_t *cdsm__page_applied(uint32_t pg);
/* coherence.c, for validate.c: free a page's twin; keep only the notices that still
 * matter; bring back notices a whole copy's applied vector lacks. */
struct cdsm__page;
void cdsm__twin_free(struct cdsm__page *p);
void cdsm__prune_notices(uint32_t pg);
void cdsm__refill_notices(uint32_t pg);
int cdsm__cmp_u32(const void *a, const void *b); /* qsort order of uint32_t */

/* owner.c: ownership (the mode, first touch and its directory) */
int cdsm__own_home(uint32_t pg); /* the page's directory rank (its home, with spares); -1 without ownership */
int cdsm__own_init(void);
void cdsm__own_fini(void);
/* An access miss on an unclaimed page (caller holds mu): claim it, or fetch it whole from
 * its owner. */
int cdsm__own_miss(uint32_t pg, cdsm__ra_t *ra);
void cdsm__own_on_dir_req(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);
/* Whether a replacement still replaying can answer this DIR_REQ: a replay's first fetch
 * of pages whose bases this replay has made again (two ranks replayed at once). */
int cdsm__own_dir_req_ready(const uint8_t *p, size_t len);
/* An owned page another rank reads: tracked from now on (caller holds mu). */
void cdsm__page_unown(uint32_t pg);
/* coherence.c, home ownership (conv.c): the same, and the page is listed in the open
 * interval whether or not it changes, with the bytes as of now as its twin. */
void cdsm__page_convert(uint32_t pg);
/* A collective allocation at heap offset off: its pages not placed yet get directory
 * ranks in contiguous blocks, one per rank, as programs partition their arrays. */
void cdsm__own_place(uint64_t off, size_t size);
/* The ownership state a checkpoint keeps (directory entries, placement): its size in
 * bytes (0: first-touch ownership is off), its bytes, and taking it back at a restore
 * (CDSM_ERR_CORRUPT when malformed). */
size_t cdsm__own_state_bytes(void);
void cdsm__own_state_put(uint8_t *dst);
int cdsm__own_state_take(const uint8_t *p, size_t n);
/* serve_page's reply body: the applied vector, then the page bytes at *bytes. */
void cdsm__page_reply(uint32_t pg, cdsm__buf_t *b, const void **bytes);
/* Install a whole copy: bytes and the vector of writes it holds. */
void cdsm__page_install(uint32_t pg, const void *bytes, const uint32_t *applied);

/* check.c: the consistency checker (CDSM_CHECK=1) */
int cdsm__audit_local(void);
void cdsm__audit_hashes(cdsm__buf_t *b, uint32_t *count);
int cdsm__audit_collect(int src, cdsm__rd_t *r, uint32_t count);
int cdsm__audit_finish(uint32_t *pg, uint32_t *a, uint32_t *b);
void cdsm__audit_fini(void);

#ifdef __cplusplus
}
#endif
#endif
