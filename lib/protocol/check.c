/* The consistency checker (CDSM_CHECK=1): after every barrier each rank audits its own
 * protocol state, then one more barrier round sends a hash of every valid page it holds
 * to the manager, which compares them: right after a barrier, every valid copy of a page
 * must be byte-identical on every rank (lazy release consistency promises each rank all
 * writes made before the barrier, and nobody has written since). Expensive by design. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static uint64_t *mgr_hash; /* manager: hash reported for each page in this round */
static int32_t *mgr_from;  /* manager: rank that reported it first (valid in round mgr_round) */
static uint32_t *mgr_seen; /* manager: the round a page was last reported in (calloc: zero pages
                            * until reported, and no clearing between rounds of a large heap) */
static uint32_t mgr_round = 1;
static uint32_t mgr_bad_pg, mgr_bad_a, mgr_bad_b;

static uint64_t page_hash(const void *p, size_t len)
{
    /* FNV-1a over 64-bit words: cheap, and any differing word changes it. */
    const uint64_t *w = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len / 8; i++) h = (h ^ w[i]) * 1099511628211ull;
    return h;
}

#define AUDIT_FAIL(...)                                                         \
    do {                                                                        \
        return cdsm__error(CDSM_ERR_PROTOCOL, "consistency check: " __VA_ARGS__); \
    } while (0)

/* Invariants of this rank's page table, dirty set, notices and records. Caller holds mu. */
int cdsm__audit_local(void)
{
    cdsm__state_t *g = &cdsm__g;
    size_t ndirty = 0;
    for (int q = 0; q < cdsm__w.n; q++)
        if (g->vc[q] != g->ivs[q].base + g->ivs[q].count)
            AUDIT_FAIL("vector clock entry %d is %u but %u records of rank %d are known", q, g->vc[q],
                       g->ivs[q].base + g->ivs[q].count, q);
    for (size_t k = 0; k < g->ndirty; k++)
        if (!cdsm__pg(g->dirty[k])->dirty || cdsm__pg(g->dirty[k])->dirty_pos != k)
            AUDIT_FAIL("dirty set entry %zu (page %u) is not marked dirty at that position", k, g->dirty[k]);
    CDSM_PG_FOR_MADE(pg) {
        const cdsm__page_t *p = cdsm__pg(pg);
        ndirty += p->dirty;
        if (p->hot && (!p->dirty || p->state != CDSM_PG_RW || !p->twin))
            AUDIT_FAIL("page %u is hot but not writable, dirty and twinned", pg);
        if (p->state == CDSM_PG_RW && (!p->dirty || !p->twin || p->twin_iv != CDSM_IV_OPEN))
            AUDIT_FAIL("page %u is writable without an open twin", pg);
        if (p->state == CDSM_PG_OWN && (p->twin || p->dirty || p->notices))
            AUDIT_FAIL("owned page %u is tracked (twin, dirty or notices)", pg);
        if (p->state == CDSM_PG_INVALID && p->twin) AUDIT_FAIL("invalid page %u still has a twin", pg);
        if (p->twin && !p->dirty) {
            const cdsm__interval_t *iv = cdsm__iv_get(cdsm__w.rank, p->twin_iv);
            if (!iv || cdsm__iv_find_page(iv, pg) < 0)
                AUDIT_FAIL("page %u keeps a twin of interval %u that did not write it", pg, p->twin_iv);
        }
        for (const cdsm__notice_t *nt = p->notices; nt; nt = nt->next) {
            if (cdsm__iv_get(nt->iv->rank, nt->iv->idx) != nt->iv)
                AUDIT_FAIL("page %u has a notice of rank %u interval %u whose record is gone", pg,
                           nt->iv->rank, nt->iv->idx);
            if (p->state != CDSM_PG_INVALID && p->holder < 0 && p->applied[nt->iv->rank] < nt->iv->idx)
                AUDIT_FAIL("valid page %u lacks the write of rank %u interval %u", pg, nt->iv->rank, nt->iv->idx);
        }
        if (p->holder >= 0 && p->state != CDSM_PG_INVALID)
            AUDIT_FAIL("page %u is valid but marked as held by rank %d", pg, p->holder);
    }
    if (ndirty != g->ndirty) AUDIT_FAIL("%zu pages marked dirty, dirty set holds %zu", ndirty, g->ndirty);
    return CDSM_OK;
}

/* (page, hash) of every valid copy this rank holds of a page that was ever written. */
void cdsm__audit_hashes(cdsm__buf_t *b, uint32_t *count)
{
    *count = 0;
    CDSM_PG_FOR_MADE(pg) {
        const cdsm__page_t *p = cdsm__pg(pg);
        if (!p->applied || p->state == CDSM_PG_INVALID || p->holder >= 0) continue;
        uint64_t h = page_hash(cdsm__sys_page(pg), cdsm__heap.page_size);
        cdsm__buf_put_u32(b, pg);
        cdsm__buf_put(b, &h, 8);
        (*count)++;
    }
}

/* Manager: compare one rank's hashes with those reported before. 0, or -1 if malformed. */
int cdsm__audit_collect(int src, cdsm__rd_t *r, uint32_t count)
{
    if (!mgr_hash) {
        mgr_hash = calloc(cdsm__heap.npages, sizeof *mgr_hash);
        mgr_from = calloc(cdsm__heap.npages, sizeof *mgr_from);
        mgr_seen = calloc(cdsm__heap.npages, sizeof *mgr_seen);
        cdsm_check(mgr_hash && mgr_from && mgr_seen);
    }
    for (uint32_t i = 0; i < count; i++) {
        uint32_t pg = cdsm__rd_u32(r);
        uint64_t h = cdsm__rd_u64(r);
        if (r->bad || pg >= cdsm__heap.npages) return -1;
        if (mgr_seen[pg] != mgr_round) {
            mgr_seen[pg] = mgr_round;
            mgr_from[pg] = src;
            mgr_hash[pg] = h;
        } else if (mgr_hash[pg] != h && !cdsm__bar.mismatch) {
            cdsm__bar.mismatch = 1;
            mgr_bad_pg = pg;
            mgr_bad_a = (uint32_t)mgr_from[pg];
            mgr_bad_b = (uint32_t)src;
        }
    }
    return 0;
}

/* Manager: end of an audit round. Returns 1 and describes the first difference, if any. */
int cdsm__audit_finish(uint32_t *pg, uint32_t *a, uint32_t *b)
{
    mgr_round++;
    *pg = mgr_bad_pg;
    *a = mgr_bad_a;
    *b = mgr_bad_b;
    return cdsm__bar.mismatch;
}

void cdsm__audit_fini(void)
{
    free(mgr_hash);
    free(mgr_from);
    free(mgr_seen);
    mgr_hash = NULL;
    mgr_from = NULL;
    mgr_seen = NULL;
}
