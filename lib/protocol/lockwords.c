/* Shared lock words (DESIGN, "Shared lock words"). Between node-mates (no spares), and with
 * CDSM_RMA between any processes, a token can change hands with no message. Two words per
 * lock (transport's cdsm__word_*: a node-mate's in shared memory, or through MPI RMA):
 * - the manager's TAIL word names the queue's last requester (0: the manager itself). A
 *   node-mate of the manager joins the queue by an atomic exchange on it instead of a
 *   request to the manager, and learns the previous tail;
 * - each process's OWN word says whether the token cached here may be taken: FRESH (the
 *   manager's never-used token), BUSY, TAKEN, FREE + the barrier epoch of a release that
 *   left its writes in the open interval, or PUB + c: a release that closed its interval
 *   and published its clock on the board under (lock, c), beside its records and diffs.
 * A token released before the barrier the taker passed last (or never used) carries
 * nothing the taker lacks: that barrier brought every write before it to every rank. A
 * published one carries the records between the taker's clock and the slot's, which the
 * taker reads from its node-mates' boards. Either way the new tail takes the token by
 * compare-and-exchange on the previous tail's OWN word, and holds it; otherwise it asks
 * the previous tail, which grants. A holder re-acquiring its cached token first takes its
 * own word back; finding it TAKEN, it joins the queue like anyone. Every take follows an
 * exchange that made the taker the tail, so the one process that may find a given OWN
 * word free is the next tail, and the queue stays one line. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

enum { LW_FRESH = 0, LW_BUSY = 1, LW_TAKEN = 2, LW_FREE = 3 /* + epoch */ };
#define LW_PUB 0x80000000u /* | c: a published release */
enum { LW_TAIL = 0, LW_OWN = 1 };
/* The most records a take gathers from the boards; an acquirer further behind asks. */
#define LW_MAX_RECORDS 64

static uint32_t releases; /* published releases so far (the slots' keys) */

/* The index of word `which` of lock l (in any rank's words). */
static size_t lw(uint32_t l, int which)
{
    return (size_t)l * CDSM_WORDS_PER_LOCK + (size_t)which;
}

int cdsm__lw_tail_shared(uint32_t l)
{
    return cdsm__words_reach((int)(l % (uint32_t)cdsm__w.n));
}

int cdsm__lw_swap_tail(uint32_t l, int requester)
{
    int mgr = (int)(l % (uint32_t)cdsm__w.n);
    if (!cdsm__words_reach(mgr)) {
        cdsm__lock_t *lk = cdsm__lock_entry(l);
        int prev = lk->tail;
        lk->tail = requester;
        return prev;
    }
    uint32_t v = cdsm__word_swap(mgr, lw(l, LW_TAIL), (uint32_t)requester + 1);
    return v ? (int)v - 1 : mgr;
}

int cdsm__lw_keep_token(uint32_t l)
{
    int me = cdsm__w.rank;
    if (!cdsm__words_reach(me)) return 1;
    uint32_t v = cdsm__word_load(me, lw(l, LW_OWN));
    while (v != LW_TAKEN)
        if (cdsm__word_cas(me, lw(l, LW_OWN), &v, LW_BUSY)) return 1;
    return 0;
}

static void own_word(uint32_t l, uint32_t v)
{
    if (cdsm__words_reach(cdsm__w.rank)) cdsm__word_store(cdsm__w.rank, lw(l, LW_OWN), v);
}

void cdsm__lw_busy(uint32_t l)
{
    own_word(l, LW_BUSY);
}

int cdsm__lw_can_publish(void)
{
    return cdsm__cfg.publish_releases && cdsm__words_reach(cdsm__w.rank) && cdsm__board_on() &&
           cdsm__heap.npages < CDSM_BOARD_FIRST_NONPAGE && releases < LW_PUB - 1;
}

void cdsm__lw_release(uint32_t l, int publish)
{
    if (!publish) {
        own_word(l, LW_FREE + cdsm__bar.epoch);
        return;
    }
    /* The slot: the epoch and our clock, with the interval just closed in it. */
    size_t n = (size_t)cdsm__w.n;
    uint32_t *slot = malloc(cdsm__u32s(n + 1)), c = ++releases;
    cdsm_check(slot != NULL);
    slot[0] = cdsm__bar.epoch;
    memcpy(slot + 1, cdsm__g.vc, cdsm__u32s(n));
    cdsm__board_put(cdsm__board_slot_key(l, c), slot, (uint32_t)cdsm__u32s(n + 1));
    free(slot);
    own_word(l, LW_PUB | c);
}

uint8_t cdsm__lock_state(uint32_t l)
{
    const cdsm__lock_t *lk = cdsm__lock_entry(l);
    int me = cdsm__w.rank;
    if (lk->state == CDSM_LK_TOKEN && cdsm__words_reach(me) && cdsm__word_load(me, lw(l, LW_OWN)) == LW_TAKEN)
        return CDSM_LK_NONE;
    return lk->state;
}

int cdsm__lock_tail(uint32_t l)
{
    if (!cdsm__words_reach(cdsm__w.rank)) return cdsm__lock_entry(l)->tail;
    uint32_t v = cdsm__word_load(cdsm__w.rank, lw(l, LW_TAIL));
    return v ? (int)v - 1 : cdsm__w.rank;
}

void cdsm__lock_words_restored(void)
{
    int me = cdsm__w.rank;
    for (uint32_t l = 0; l < cdsm__lk.nlocks && cdsm__words_reach(me); l++) {
        const cdsm__lock_t *lk = cdsm__lock_entry(l);
        own_word(l, lk->state == CDSM_LK_TOKEN ? LW_FREE : LW_BUSY);
        if (l % (uint32_t)cdsm__w.n == (uint32_t)me)
            cdsm__word_store(me, lw(l, LW_TAIL), lk->tail == me ? 0 : (uint32_t)lk->tail + 1);
    }
}

/* Append what the boards hold of the records between our clock and `upto` (each rank's
 * in interval order, as a grant's). 0 if one is missing (overwritten, or too many). */
static int gather_records(const uint32_t *upto, cdsm__buf_t *b, uint32_t *nrec)
{
    *nrec = 0;
    for (int q = 0; q < cdsm__w.n; q++) {
        if (q == cdsm__w.rank) continue;
        for (uint32_t i = cdsm__g.vc[q] + 1; i <= upto[q]; i++) {
            void *blob;
            uint32_t len;
            if (++*nrec > LW_MAX_RECORDS || cdsm__board_get(q, cdsm__board_rec_key(i), &blob, &len)) return 0;
            cdsm__buf_put(b, blob, len);
            free(blob);
        }
    }
    return 1;
}

/* The diff part (grant_diffs.c's format) from the holder's board: its diffs of the pages
 * of its newest records in b, those still there. */
static void gather_diffs(int holder, const uint32_t *upto, cdsm__buf_t *b, uint32_t nrec)
{
    size_t np = 0, cap = 0;
    uint32_t(*want)[2] = NULL; /* (interval, page) */
    cdsm__rd_t r = {b->p, b->len, 0, 0};
    for (uint32_t k = 0; k < nrec; k++) {
        const uint32_t *vc, *pages, *empty;
        uint32_t nempty;
        const cdsm__wire_iv_t *w = cdsm__iv_take(&r, &vc, &pages, &empty, &nempty);
        if (!w) break;
        if ((int)w->rank != holder || w->idx + CDSM_GRANT_INTERVALS <= upto[holder]) continue;
        for (uint32_t j = 0; j < w->npages; j++) {
            if (np == cap) {
                cap = cap ? 2 * cap : 64;
                want = realloc(want, cap * sizeof *want);
                cdsm_check(want != NULL);
            }
            want[np][0] = w->idx;
            want[np++][1] = pages[j];
        }
    }
    cdsm__gd_enc_t e;
    cdsm__gd_begin(b, &e);
    for (size_t i = 0; i < np && e.budget; i++) {
        void *blob;
        uint32_t len;
        if (cdsm__board_get(holder, cdsm__board_key(want[i][1], want[i][0]), &blob, &len)) continue;
        cdsm__gd_add(b, &e, want[i][0], want[i][1], blob, len);
        free(blob);
    }
    free(want);
    cdsm__gd_end(b, &e);
}

/* A published release of lock l by `holder` (slot c): its clock in vc; 1 if that release
 * is older than our last barrier (nothing to take), 2 with its records (and diffs) in b,
 * 0 if the boards no longer hold what it needs. */
static int read_published(uint32_t l, int holder, uint32_t c, uint32_t **vcp, cdsm__buf_t *b, uint32_t *nrec)
{
    void *blob;
    uint32_t len;
    size_t n = (size_t)cdsm__w.n;
    if (cdsm__board_get(holder, cdsm__board_slot_key(l, c), &blob, &len)) return 0;
    int ok = len == cdsm__u32s(n + 1);
    uint32_t epoch = 0, *vc = ok ? malloc(cdsm__u32s(n)) : NULL;
    if (ok) {
        cdsm_check(vc != NULL);
        memcpy(&epoch, blob, 4);
        memcpy(vc, (char *)blob + 4, cdsm__u32s(n));
    }
    free(blob);
    if (!ok) return 0;
    *vcp = vc; /* (the caller frees it) */
    *nrec = 0;
    if (epoch < cdsm__bar.epoch) return 1;
    if (!gather_records(vc, b, nrec)) return 0;
    gather_diffs(holder, vc, b, *nrec);
    return 2;
}

int cdsm__lw_take(uint32_t l, int prev, cdsm__lw_taken_t *t)
{
    if (!cdsm__words_reach(prev)) return LW_TOOK_NOT;
    uint32_t v = cdsm__word_load(prev, lw(l, LW_OWN));
    int kind = LW_TOOK_NOT;
    if (v == LW_FRESH && prev == (int)(l % (uint32_t)cdsm__w.n))
        kind = LW_TOOK_FRESH;
    else if (v >= LW_FREE && v < LW_PUB && v - LW_FREE < cdsm__bar.epoch)
        kind = LW_TOOK_OLD;
    else if (v & LW_PUB) {
        int r = read_published(l, prev, v & ~LW_PUB, &t->vc, &t->b, &t->nrec);
        kind = r == 1 ? LW_TOOK_OLD : r == 2 ? LW_TOOK_RECORDS : LW_TOOK_NOT;
    }
    if (kind == LW_TOOK_NOT) return kind;
    if (!cdsm__word_cas(prev, lw(l, LW_OWN), &v, LW_TAKEN)) return LW_TOOK_NOT;
    return kind;
}
