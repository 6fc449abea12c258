/* The page protocol of lazy release consistency, homeless, multiple writers:
 *  - write detection: a page is read-only until written in an interval; the first write
 *    faults, a twin (copy) is made and the page becomes writable;
 *  - at the end of the interval the written pages become read-only again and get a write
 *    notice; their diffs are made lazily: when another rank asks, when the page is written
 *    again in a later interval, or before the page is invalidated;
 *  - an access miss on an invalid page fetches the diffs it lacks from their writers (or a
 *    whole copy when many are needed) and applies them in happened-before order.
 * All of it runs under cdsm__g.mu. Page contents change only on the application thread. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "diff.h"
#include "pool.h"
#include "proto.h"
#include "vclock.h"

uint32_t *cdsm__page_applied(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    if (!p->applied) {
        p->applied = calloc((size_t)cdsm__w.n, sizeof(uint32_t));
        cdsm_check(p->applied != NULL);
        cdsm__log_bytes_add((int64_t)cdsm__u32s((size_t)cdsm__w.n));
    }
    return p->applied;
}

void cdsm__twin_free(struct cdsm__page *p)
{
    if (!p->twin) return;
    cdsm__pool_free(p->twin, cdsm__heap.page_size);
    p->twin = NULL;
    cdsm__log_bytes_add(-(int64_t)cdsm__heap.page_size);
}

/* A diff record of the len bytes encoded in the scratch buffer, counted. */
static cdsm__diffrec_t *diffrec_from_scratch(size_t len)
{
    cdsm__diffrec_t *d = cdsm__pool_alloc(sizeof *d + len);
    cdsm_check(d != NULL);
    d->len = (uint32_t)len;
    memcpy(d->data, cdsm__g.scratch, len);
    CDSM_STAT_ADD(diffs_created, 1);
    CDSM_STAT_ADD(diff_bytes_created, len);
    cdsm__log_bytes_add((int64_t)(sizeof *d + len));
    return d;
}

/* The diff of a page listed only because its interval converted it: empty. */
static cdsm__diffrec_t *empty_diff(void)
{
    return diffrec_from_scratch(0);
}

/* The diff of own interval iv on its j-th page, made now from page and twin if needed. */
cdsm__diffrec_t *cdsm__own_diff(cdsm__interval_t *iv, int j)
{
    if (iv->diffs[j]) return iv->diffs[j];
    uint32_t pg = iv->pages[j];
    cdsm__page_t *p = cdsm__pg(pg);
    /* Lazy diffing: the twin of this closed interval is still there, and the page has not
     * been written since (it is read-only until the next write fault makes this diff). */
    cdsm_check(p->twin && p->twin_iv == iv->idx);
    size_t len = cdsm__diff_encode(cdsm__sys_page(pg), p->twin, cdsm__heap.page_size, cdsm__g.scratch);
    iv->diffs[j] = diffrec_from_scratch(len);
    return iv->diffs[j];
}

cdsm__diffrec_t *cdsm__own_diff_out(cdsm__interval_t *iv, int j)
{
    cdsm__page_t *p = cdsm__pg(iv->pages[j]);
    cdsm__diffrec_t *d = cdsm__own_diff(iv, j);
    if (p->twin && p->twin_iv == iv->idx) cdsm__twin_free(p); /* its diff now exists */
    return d;
}

/* Make the diff of the closed interval the twin belongs to. */
static void diff_pending_twin(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    cdsm_check(p->twin_iv != CDSM_IV_OPEN);
    cdsm__interval_t *iv = cdsm__iv_get(cdsm__w.rank, p->twin_iv);
    cdsm_check(iv != NULL);
    int j = cdsm__iv_find_page(iv, pg);
    cdsm_check(j >= 0);
    cdsm__own_diff(iv, j);
}

int cdsm__cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The dirty set: pages written in the open interval, and hot pages. Each page knows its
 * position so it can leave the set in O(1) when it is invalidated. */
static void mark_dirty(uint32_t pg)
{
    cdsm__state_t *g = &cdsm__g;
    if (g->ndirty == g->dirty_cap) {
        size_t nc = g->dirty_cap ? g->dirty_cap * 2 : 1024;
        uint32_t *nd = realloc(g->dirty, nc * sizeof *nd);
        cdsm_check(nd != NULL);
        g->dirty = nd;
        g->dirty_cap = nc;
    }
    cdsm__pg(pg)->dirty_pos = (uint32_t)g->ndirty;
    g->dirty[g->ndirty++] = pg;
    cdsm__pg(pg)->dirty = 1;
}

static void unmark_dirty(uint32_t pg)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__page_t *p = cdsm__pg(pg);
    cdsm_check(p->dirty && g->dirty[p->dirty_pos] == pg);
    uint32_t last = g->dirty[--g->ndirty];
    g->dirty[p->dirty_pos] = last;
    cdsm__pg(last)->dirty_pos = p->dirty_pos;
    p->dirty = 0;
}

static void fa_count(int used);

/* Whether page pg still holds its twin's bytes (written, if at all, with the same values). */
static int twin_same(uint32_t pg)
{
    return !memcmp(cdsm__sys_page(pg), cdsm__pg(pg)->twin, cdsm__heap.page_size);
}

int cdsm__dirty_yield(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    if (!p->dirty) return 1;
    if (!p->spec || p->conv || !twin_same(pg)) return 0;
    p->spec = 0;
    fa_count(0);
    unmark_dirty(pg);
    cdsm__twin_free(p);
    cdsm__page_protect(pg, 1, CDSM_PG_RO);
    return 1;
}

/* Hot pages a grant's or a barrier's notices invalidated, kept for their diffs
 * (cdsm__patch_begin). A page written under a lock that moves back and forth (RAYTRACE's
 * job queue) is hot on both sides, and so is a page two ranks write parts of in every
 * phase (radix's keys, LU's blocks of other owners); invalidating it dropped its twin and
 * made the next write fault again: a fault, a twin and a pair of protection changes per
 * hand-off or phase. */
static struct {
    cdsm__buf_t pages; /* (u32 page numbers) */
    int on, barrier;
} patch;

void cdsm__patch_begin(int on, int at_barrier)
{
    patch.on = on;
    patch.barrier = at_barrier;
}

static int patch_keep(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    if (!patch.on || p->claim != CDSM_CLAIM_NONE || p->holder >= 0 || p->conv) return 0;
    cdsm__buf_put_u32(&patch.pages, pg);
    p->patch = 1;
    return 1;
}

int cdsm__patch_apply(uint32_t pg, const void *diff, uint32_t len)
{
    cdsm__page_t *p = cdsm__pg(pg);
    cdsm_check(p->patch && p->twin);
    /* (the twin held the page's bytes, so the diff fits it exactly as it fits the page) */
    if (cdsm__diff_apply(cdsm__sys_page(pg), cdsm__heap.page_size, diff, len) ||
        cdsm__diff_apply(p->twin, cdsm__heap.page_size, diff, len))
        return CDSM_ERR_PROTOCOL;
    return CDSM_OK;
}

void cdsm__patch_drop(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    p->patch = 0;
    p->hot = 0;
    unmark_dirty(pg);
    cdsm__twin_free(p);
}

void cdsm__patch_end(void)
{
    size_t n = patch.pages.len / sizeof(uint32_t);
    for (size_t i = 0; i < n; i++) {
        uint32_t pg;
        memcpy(&pg, patch.pages.p + i * sizeof pg, sizeof pg);
        cdsm__page_t *p = cdsm__pg(pg);
        if (!p->patch) continue;
        if (p->state == CDSM_PG_RW) { /* completed: writable and hot again */
            p->patch = 0;
            if (patch.barrier)
                CDSM_STAT_ADD(refetch_patched, 1);
            else
                CDSM_STAT_ADD(grant_patched, 1);
            continue;
        }
        cdsm__patch_drop(pg); /* (not completed: invalid) */
    }
    patch.pages.len = 0;
    patch.on = 0;
}

void cdsm__patch_fini(void)
{
    cdsm__buf_free(&patch.pages);
    memset(&patch, 0, sizeof patch);
}

void cdsm__invalidate(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    if (p->state == CDSM_PG_OWN && cdsm__heap.own_mode == CDSM_OWN_HOME) {
        /* A replacement whose conversion of the page was known only to a reader lost with
         * it (a node, in the conversion's open interval): converted now, as at a serve. */
        cdsm__page_convert(pg);
        cdsm__conv_served(pg);
    }
    cdsm_check(p->state != CDSM_PG_OWN); /* nobody else can write a page nobody else read */
    if (p->hot && patch_keep(pg)) {
        /* (its twin holds the page's bytes, as below: kept for the grant's diffs) */
    } else if (p->hot) {
        /* Its last diff was made when the interval closed (just now: notices come in
         * right after a close), so the twin holds nothing more. */
        p->hot = 0;
        unmark_dirty(pg);
        cdsm__twin_free(p);
    } else {
        cdsm_check(p->state != CDSM_PG_RW); /* intervals are closed before notices come in */
        if (p->twin) {
            /* Our own writes must survive the diffs we are about to apply. */
            diff_pending_twin(pg);
            cdsm__twin_free(p);
        }
    }
    if (p->state != CDSM_PG_INVALID) {
        cdsm__page_protect(pg, 1, CDSM_PG_INVALID);
        CDSM_STAT_ADD(invalidations, 1);
    }
}

void cdsm__notice_add(uint32_t pg, cdsm__interval_t *iv)
{
    cdsm__page_t *p = cdsm__pg(pg);
    cdsm__notice_t *nt = malloc(sizeof *nt);
    cdsm_check(nt != NULL);
    nt->iv = iv;
    nt->next = p->notices;
    p->notices = nt;
    cdsm__log_bytes_add((int64_t)sizeof *nt);
}

/* Keep on a page only the notices that still matter: the ones this copy lacks, and each
 * rank's newest (the GC keeper and whole-page choices need it). Older applied notices
 * are implied by the applied vector and by the interval records, so a page accessed
 * under a lock that moves often does not collect an ever longer list. */
void cdsm__prune_notices(uint32_t pg)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__page_t *p = cdsm__pg(pg);
    uint32_t *newest = g->scratch_n;
    if (!p->applied) return;
    memset(newest, 0, cdsm__u32s((size_t)cdsm__w.n));
    for (const cdsm__notice_t *nt = p->notices; nt; nt = nt->next)
        if (nt->iv->idx > newest[nt->iv->rank]) newest[nt->iv->rank] = nt->iv->idx;
    for (cdsm__notice_t **pp = &p->notices; *pp;) {
        cdsm__notice_t *nt = *pp;
        if (nt->iv->idx < newest[nt->iv->rank] && nt->iv->idx <= p->applied[nt->iv->rank]) {
            *pp = nt->next;
            free(nt);
            cdsm__log_bytes_add(-(int64_t)sizeof *nt);
        } else {
            pp = &nt->next;
        }
    }
}

static int has_notice(const cdsm__page_t *p, const cdsm__interval_t *iv)
{
    for (const cdsm__notice_t *nt = p->notices; nt; nt = nt->next)
        if (nt->iv == iv) return 1;
    return 0;
}

/* A whole copy was installed: its applied vector may lack writes whose notices were
 * pruned as applied to our old copy. Bring those notices back from the records. */
void cdsm__refill_notices(uint32_t pg)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__page_t *p = cdsm__pg(pg);
    uint32_t *newest = g->scratch_n;
    memset(newest, 0, cdsm__u32s((size_t)cdsm__w.n));
    for (const cdsm__notice_t *nt = p->notices; nt; nt = nt->next)
        if (nt->iv->idx > newest[nt->iv->rank]) newest[nt->iv->rank] = nt->iv->idx;
    for (int q = 0; q < cdsm__w.n; q++) {
        uint32_t from = p->applied[q] > g->ivs[q].base ? p->applied[q] : g->ivs[q].base;
        for (uint32_t idx = from + 1; idx < newest[q]; idx++) {
            cdsm__interval_t *iv = cdsm__iv_get(q, idx);
            if (iv && cdsm__iv_find_page(iv, pg) >= 0 && !has_notice(p, iv)) cdsm__notice_add(pg, iv);
        }
    }
}

/* Fault-around pays where the pages it makes writable ahead are then written (a
 * sequential writer: 77-99 % of them in fft, lu and radix at two ranks) and costs a twin,
 * a comparison and two protection changes per page where they are not (scattered writes
 * between lock operations: 0.3-10 % in BARNES, FMM, RADIOSITY, RAYTRACE, whose write
 * faults each made 5-7 such pages). So each rank counts, with decay, how many pages made
 * ahead were written by the interval's end; below a third, a write fault goes around only
 * when the page before it took a write fault in this interval (a sequential writer), or
 * as every FA_PROBE-th, so that writes turning sequential again are noticed. */
#define FA_DECAY 256u
#define FA_PROBE 32u
static struct {
    uint32_t used, unused; /* pages made ahead that were / were not written (decayed) */
    uint32_t faults;       /* write faults while fault-around is off (for the probe) */
} fa;

static void fa_count(int used)
{
    if (used)
        fa.used++;
    else
        fa.unused++, CDSM_STAT_ADD(fault_around_unused, 1);
    if (fa.used + fa.unused > FA_DECAY) fa.used /= 2, fa.unused /= 2;
}

static int fa_pays(uint32_t pg)
{
    if (fa.used * 2 >= fa.unused) return 1;
    /* (last_wr: the interval of its last write fault; a hot page is dirty without one) */
    uint32_t now = cdsm__g.vc[cdsm__w.rank] + 1;
    return (pg > 0 && cdsm__pg(pg - 1)->last_wr == now) || ++fa.faults % FA_PROBE == 0;
}

/* Protect pages in runs of consecutive page numbers: one mprotect per run. Pages in that
 * state already are left alone (a grant from the service thread froze them). */
static void protect_sorted(const uint32_t *pages, size_t n, int state)
{
    size_t i = 0;
    while (i < n) {
        if (cdsm__pg(pages[i])->state == state) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < n && pages[j] == pages[j - 1] + 1 && cdsm__pg(pages[j])->state != state) j++;
        cdsm__page_protect(pages[i], (uint32_t)(j - i), state);
        i = j;
    }
}

/* A page written in the closing interval, with its diff when made eagerly. */
typedef struct written {
    uint32_t pg;
    cdsm__diffrec_t *diff;
    int empty; /* listed only because the interval converted it: its diff is empty */
} written_t;

static int cmp_written(const void *a, const void *b)
{
    return cdsm__cmp_u32(&((const written_t *)a)->pg, &((const written_t *)b)->pg);
}

/* A hot page at interval end: its diff now (the twin is refreshed for the next interval),
 * or NULL if it did not change. */
/* The diff of hot page pg from cur (its bytes now: the page itself, or a live close's copy
 * of it) to its twin, which then takes cur's bytes; NULL if nothing changed. */
static cdsm__diffrec_t *diff_twin(uint32_t pg, const void *cur)
{
    cdsm__page_t *p = cdsm__pg(pg);
    /* Most idle pages compare equal: memcmp is much faster than encoding. */
    if (!memcmp(cur, p->twin, cdsm__heap.page_size)) return NULL;
    size_t len = cdsm__diff_encode(cur, p->twin, cdsm__heap.page_size, cdsm__g.scratch);
    if (!len) return NULL;
    cdsm__diffrec_t *d = diffrec_from_scratch(len);
    memcpy(p->twin, cur, cdsm__heap.page_size);
    return d;
}

/* End the open interval. Cold pages written in it become read-only, their twin kept for
 * a lazy diff. Hot pages stay writable and are diffed now; one that has not changed for
 * CDSM_HOT_IDLE intervals goes back to write detection by protection. Every page that
 * was written gets a notice in the interval's record. */
/* What comparing one unchanged page with its twin costs here (measured once). */
static uint64_t page_compare_ns(void)
{
    size_t ps = cdsm__heap.page_size;
    char *a = calloc(2, ps);
    cdsm_check(a != NULL);
    uint64_t t0 = cdsm__mono_ns();
    int same = 0;
    for (int i = 0; i < 16; i++) same += !memcmp(a, a + ps, ps);
    uint64_t ns = (cdsm__mono_ns() - t0) / 16 + (same != 16);
    free(a);
    return ns ? ns : 1;
}

/* What the end of an interval does with the pages of the dirty set. */
typedef struct closing {
    written_t *wr;   /* pages whose bytes changed, with a hot page's diff */
    uint32_t *prot;  /* pages to write-protect again */
    size_t nw, nprot, nkeep, nidle;
    int pressure;    /* hot pages cost too much: unchanged ones cool now */
} closing_t;

/* One page of the dirty set at the interval's end: a notice if its bytes changed, write
 * protection unless it stays hot. */
static void close_page(closing_t *c, uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    cdsm_assert(p->dirty && p->twin && p->twin_iv == CDSM_IV_OPEN);
    int same = (p->spec || !p->hot) && twin_same(pg);
    if (p->spec) { /* made writable ahead of time: written only if it changed */
        p->spec = 0;
        fa_count(!same || p->conv);
        if (same && !p->conv) {
            p->dirty = 0;
            cdsm__twin_free(p);
            c->prot[c->nprot++] = pg;
            return;
        }
    }
    if (!p->hot) {
        p->dirty = 0;
        c->prot[c->nprot++] = pg;
        /* Only pages whose bytes changed get a notice, as for hot and fault-around pages:
         * which pages an interval wrote then depends on the program alone, so a replay
         * makes the same intervals (and the same interval numbers). A page converted in
         * the interval is listed anyway: its replay converts it at the same point. */
        if (same) cdsm__twin_free(p);
        if (same && !p->conv) return;
        c->wr[c->nw++] = same ? (written_t){pg, empty_diff(), 1} : (written_t){pg, NULL, 0};
        p->conv = 0;
        return;
    }
    cdsm__diffrec_t *d = diff_twin(pg, cdsm__sys_page(pg));
    int empty = !d && p->conv;
    if (empty) d = empty_diff(); /* (listed anyway) */
    p->conv = 0;
    if (d) {
        p->hot = 1;
        c->wr[c->nw++] = (written_t){pg, d, empty};
    } else if (c->nidle++, ++p->hot > cdsm__cfg.hot_idle || (c->pressure && p->sticky != CDSM_STICKY_IMMUNE)) {
        p->sticky = p->hot > cdsm__cfg.hot_idle ? CDSM_STICKY_NONE : CDSM_STICKY_COOLED;
        p->hot = 0;
        p->dirty = 0;
        cdsm__twin_free(p);
        c->prot[c->nprot++] = pg;
        return;
    }
    p->dirty_pos = (uint32_t)c->nkeep;
    cdsm__g.dirty[c->nkeep++] = pg;
}

/* A close by the service thread (a grant of a token cached here) runs while the
 * application may be writing the dirty set. A page that stays in the set is diffed from one
 * copy of it, and that copy becomes its twin: a write that lands after the copy differs
 * from the twin, so it goes in the next interval's diff; one that lands before is in this
 * diff and in the twin alike. Page minus twin stays exactly the writes in no diff yet, with
 * no write protection. (Copying the page itself into the twin instead would lose a write
 * made between the comparison and the copy.) */
static cdsm__diffrec_t *diff_live(uint32_t pg)
{
    memcpy(cdsm__g.snap, cdsm__sys_page(pg), cdsm__heap.page_size);
    return diff_twin(pg, cdsm__g.snap);
}

/* Whether a page leaves the dirty set at this close if it is unchanged: fault-around and
 * cold pages, converted ones, hot pages idle too long or cooled by the pressure rule. */
static int leaves_if_same(const cdsm__page_t *p, int pressure)
{
    if (p->conv || p->spec || !p->hot) return 1;
    return (uint64_t)p->hot + 1 > cdsm__cfg.hot_idle || (pressure && p->sticky != CDSM_STICKY_IMMUNE);
}

/* Before a live close: the pages that may leave the dirty set are write-protected before
 * they are compared (a write after that faults and waits for mu), and close as cold pages.
 * The others become hot and stay writable: their next write takes no fault. */
static void live_prepare(int pressure)
{
    cdsm__state_t *g = &cdsm__g;
    uint32_t *v = malloc((g->ndirty + 1) * sizeof *v);
    size_t n = 0;
    cdsm_check(v != NULL);
    for (size_t k = 0; k < g->ndirty; k++) {
        uint32_t pg = g->dirty[k];
        cdsm__page_t *p = cdsm__pg(pg);
        if (!leaves_if_same(p, pressure) || (!p->conv && !twin_same(pg))) {
            if (!p->hot) p->hot = 1;
            continue;
        }
        if (p->hot) p->sticky = (uint64_t)p->hot + 1 > cdsm__cfg.hot_idle ? CDSM_STICKY_NONE : CDSM_STICKY_COOLED;
        p->hot = 0;
        v[n++] = pg;
    }
    qsort(v, n, sizeof *v, cdsm__cmp_u32);
    protect_sorted(v, n, CDSM_PG_RO);
    free(v);
}

/* A page that stays writable through a live close: listed if it changed, kept hot. */
static void close_page_live(closing_t *c, uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    if (p->spec) {
        p->spec = 0;
        fa_count(1);
    }
    cdsm__diffrec_t *d = diff_live(pg);
    CDSM_STAT_ADD(live_closed, 1);
    if (d) {
        p->hot = 1;
        c->wr[c->nw++] = (written_t){pg, d, 0};
    } else {
        c->nidle++;
        if (p->hot < UINT8_MAX) p->hot++; /* (it leaves at a later close) */
    }
    p->dirty_pos = (uint32_t)c->nkeep;
    cdsm__g.dirty[c->nkeep++] = pg;
}

/* Node-mates take records from the board too: an acquire of a token released here in
 * this phase reads them without asking (lockwords.c). */
static void publish_record(const cdsm__interval_t *iv)
{
    cdsm__buf_t b = {0};
    cdsm__iv_serialize(&b, iv);
    cdsm__board_put(cdsm__board_rec_key(iv->idx), b.p, (uint32_t)b.len);
    cdsm__buf_free(&b);
}

/* The interval's record: its pages (sorted), its diffs where made, notices on each page. */
static void record_interval(written_t *wr, size_t nw)
{
    cdsm__state_t *g = &cdsm__g;
    qsort(wr, nw, sizeof *wr, cmp_written);
    uint32_t *pages = malloc(nw * sizeof *pages);
    cdsm_check(pages != NULL);
    uint32_t ne = 0;
    for (size_t k = 0; k < nw; k++) pages[k] = wr[k].pg;
    uint32_t idx = ++g->vc[cdsm__w.rank];
    cdsm__interval_t *iv = cdsm__iv_new(cdsm__w.rank, idx, g->vc, (uint32_t)nw, pages, 1);
    for (size_t k = 0; k < nw; k++)
        if (wr[k].empty) pages[ne++] = wr[k].pg; /* (sorted: a subset of the sorted pages) */
    cdsm_check(cdsm__iv_set_empty(iv, pages, ne) == 0);
    cdsm__iv_append(iv);
    int publish = cdsm__board_on();
    if (cdsm__lw_can_publish()) publish_record(iv); /* (the board is on) */
    for (size_t k = 0; k < nw; k++) {
        iv->diffs[k] = wr[k].diff;
        if (!wr[k].diff) cdsm__pg(wr[k].pg)->twin_iv = idx; /* diffed when first needed */
        cdsm__page_applied(wr[k].pg)[cdsm__w.rank] = idx;
        cdsm__notice_add(wr[k].pg, iv);
        cdsm__prune_notices(wr[k].pg);
        /* Node-mates read published diffs without asking: made now, not lazily. */
        if (publish) {
            cdsm__diffrec_t *d = cdsm__own_diff_out(iv, (int)k);
            cdsm__board_put(cdsm__board_key(wr[k].pg, idx), d->data, d->len);
        }
    }
    free(pages);
    CDSM_STAT_ADD(intervals, 1);
}

/* Pages converted in the open interval (home ownership): each is listed in it. */
static struct {
    uint32_t *v;
    size_t n, cap;
} conv_open;

void cdsm__page_convert(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    if (p->conv) return;
    /* Read-only from now on: the served copy is exactly the bytes written so far, and the
     * owner's next write faults and is tracked as any other (the application thread may
     * be writing the page as this runs: a write after the mprotect waits for mu). A page
     * never touched here is zero. */
    if (p->state == CDSM_PG_OWN || p->claim) {
        cdsm__page_protect(pg, 1, CDSM_PG_RO);
        /* It holds every write of ours so far, which the copy served says. */
        cdsm__page_applied(pg)[cdsm__w.rank] = cdsm__g.vc[cdsm__w.rank];
    }
    p->claim = CDSM_CLAIM_NONE;
    if (conv_open.n == conv_open.cap) {
        conv_open.cap = conv_open.cap ? conv_open.cap * 2 : 64;
        conv_open.v = realloc(conv_open.v, conv_open.cap * sizeof *conv_open.v);
        cdsm_check(conv_open.v != NULL);
    }
    conv_open.v[conv_open.n++] = pg;
    p->conv = 1;
    p->last_wr = cdsm__g.vc[cdsm__w.rank] + 1; /* (it becomes hot sooner) */
    CDSM_STAT_ADD(pages_unowned, 1);
}

/* The interval's converted pages that were not written in it are listed too, with an
 * empty diff; written ones are listed by close_page whether or not they changed. */
static void close_converted(closing_t *c)
{
    for (size_t i = 0; i < conv_open.n; i++) {
        cdsm__page_t *p = cdsm__pg(conv_open.v[i]);
        if (!p->conv || p->dirty) continue;
        c->wr[c->nw++] = (written_t){conv_open.v[i], empty_diff(), 1};
        p->conv = 0;
    }
    conv_open.n = 0;
}

/* End the open interval; live: the service thread ends it while the program runs
 * (live_prepare, close_page_live). */
static void close_interval(int live)
{
    cdsm__state_t *g = &cdsm__g;
    /* Hot pages cost a comparison at every interval end. When the last end spent more than
     * a quarter of the interval before it on that, intervals are short (locks in a loop)
     * and unchanged hot pages go back to write protection now, not after CDSM_HOT_IDLE. */
    static uint64_t last_end, last_waste, cmp_ns;
    uint64_t start = cdsm__mono_ns();
    closing_t c = {.pressure = last_end && last_waste * 4 > start - last_end};
    cdsm__ra_reset(); /* the program's next phase: misses after this start a new stream */
    g->open_release = 0;
    if (!g->ndirty && !conv_open.n) {
        last_end = start;
        last_waste = 0;
        return;
    }
    if (!cmp_ns) cmp_ns = page_compare_ns();
    c.wr = malloc((g->ndirty + conv_open.n + 1) * sizeof *c.wr);
    c.prot = malloc((g->ndirty + 1) * sizeof *c.prot);
    cdsm_check(c.wr && c.prot);
    if (live) live_prepare(c.pressure);
    close_converted(&c);
    for (size_t k = 0; k < g->ndirty; k++) {
        uint32_t pg = g->dirty[k];
        if (live && cdsm__pg(pg)->hot)
            close_page_live(&c, pg);
        else
            close_page(&c, pg);
    }
    g->ndirty = c.nkeep;
    if (c.nw) record_interval(c.wr, c.nw);
    qsort(c.prot, c.nprot, sizeof *c.prot, cdsm__cmp_u32);
    protect_sorted(c.prot, c.nprot, CDSM_PG_RO);
    free(c.prot);
    free(c.wr);
    last_end = cdsm__mono_ns();
    last_waste = c.nidle * cmp_ns;
}

void cdsm__close_interval(void)
{
    close_interval(0);
}

void cdsm__close_released(void)
{
    cdsm__state_t *g = &cdsm__g;
    if (!g->open_release) return;
    if (g->ndirty) CDSM_STAT_ADD(lazy_closes, 1);
    close_interval(!pthread_equal(pthread_self(), g->app));
}

/* Fault-around: after a write fault on the page before `first`, twin the following valid
 * pages nobody has twinned yet and let the caller unprotect them with it in one mprotect,
 * so a sequential writer (transposes, scatters, initialisation) takes one fault per
 * CDSM_FAULT_AROUND pages. Pages that turn out unchanged get no notice (close compares).
 * Returns how many pages were added. */
static uint32_t fault_around(uint32_t first)
{
    uint32_t k = 0;
    if (cdsm__cfg.fault_around > 1 && !fa_pays(first - 1)) return 0;
    while (k + 1 < cdsm__cfg.fault_around && first + k < cdsm__heap.npages) {
        uint32_t pg = first + k;
        cdsm__page_t *p = cdsm__pg(pg);
        if (p->state != CDSM_PG_RO || p->dirty || p->twin || p->holder >= 0) break;
        p->twin = cdsm__pool_alloc(cdsm__heap.page_size);
        cdsm_check(p->twin != NULL);
        cdsm__log_bytes_add((int64_t)cdsm__heap.page_size);
        memcpy(p->twin, cdsm__sys_page(pg), cdsm__heap.page_size);
        p->twin_iv = CDSM_IV_OPEN;
        p->spec = 1;
        mark_dirty(pg);
        k++;
    }
    CDSM_STAT_ADD(fault_around, k);
    return k;
}

/* A page written again within this many of our intervals becomes hot. */
#define HOT_RECENT 3u

static void write_fault(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    /* Written in one of our last HOT_RECENT intervals too (whether or not its bytes
     * changed then): keep it writable from now on (hot), which saves a fault and two
     * mprotects per interval in iterative codes (blocked LU rewrites its blocks every
     * second or third interval; SOR rewrites pages whose values do not move yet). */
    uint32_t now = cdsm__g.vc[cdsm__w.rank] + 1;
    if (p->last_wr && p->last_wr + HOT_RECENT >= now && cdsm__cfg.hot_idle) p->hot = 1;
    p->last_wr = now;
    if (p->twin) {
        /* Written in an earlier interval whose diff nobody asked for yet: make it now,
         * then the same buffer becomes the twin of the open interval. */
        diff_pending_twin(pg);
    } else {
        p->twin = cdsm__pool_alloc(cdsm__heap.page_size);
        cdsm_check(p->twin != NULL);
        cdsm__log_bytes_add((int64_t)cdsm__heap.page_size);
        if (p->sticky == CDSM_STICKY_COOLED && cdsm__cfg.hot_idle) {
            /* Cooled under pressure, yet written again: it belongs to the hot set. */
            p->hot = 1;
            p->sticky = CDSM_STICKY_IMMUNE;
        }
    }
    memcpy(p->twin, cdsm__sys_page(pg), cdsm__heap.page_size);
    p->twin_iv = CDSM_IV_OPEN;
    CDSM_STAT_ADD(twins, 1);
    CDSM_STAT_ADD(write_faults, 1);
    mark_dirty(pg);
    cdsm__page_protect(pg, 1 + fault_around(pg + 1), CDSM_PG_RW);
}

void cdsm__fault(uint32_t pg, int is_write)
{
    cdsm__state_t *g = &cdsm__g;
    /* Requests node-mates left with late doorbells are served here first: a program that
     * faults often answers them with no wake-up of its service thread. */
    cdsm__tp_poll();
    pthread_mutex_lock(&g->mu);
    /* The program waits in this handler: the pages a miss validates (its readahead window)
     * get their protection in runs, at the end. */
    cdsm__protect_batch(1);
    if (cdsm__pg(pg)->state == CDSM_PG_INVALID) {
        CDSM_STAT_ADD(read_faults, 1);
        cdsm__ra_t ra = cdsm__ra_begin(pg);
        int rc = cdsm__pg(pg)->claim ? cdsm__own_miss(pg, &ra) : cdsm__validate(pg, &ra);
        cdsm__ra_end(pg, &ra);
        cdsm__pg(pg)->ws = CDSM_WS_CREDIT; /* (a first touch too: it may be read again) */
        /* A miss that cannot be served leaves the program without the data it reads:
         * there is no way to return an error from a load instruction. */
        if (rc && cdsm__lost() >= 0) {
            /* The documented fatal path: the data is gone with the lost rank. */
            cdsm__log(CDSM_LOG_ERROR, "access miss on page %u needs rank %d, which was lost: exiting with status %d",
                      pg, cdsm__lost(), CDSM_EXIT_PEER_LOST);
            _exit(CDSM_EXIT_PEER_LOST);
        }
        if (rc) {
            cdsm__log(CDSM_LOG_ERROR, "access miss on page %u could not be served: %s", pg,
                      cdsm_strerror(rc));
            cdsm_check(!"access miss failed");
        }
    }
    if (is_write == 2) CDSM_STAT_ADD(write_faults_wp, 1);
    if (is_write && cdsm__pg(pg)->state == CDSM_PG_RO)
        write_fault(pg);
    else if (is_write)
        cdsm__page_rearm(pg);
    cdsm__protect_batch(0);
    pthread_mutex_unlock(&g->mu);
}
