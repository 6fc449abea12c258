/* Garbage collection at a barrier, in two phases: each page's keeper (the writer of its
 * latest notice) brings its copy up to date while diffs still exist; after a second
 * barrier every rank drops diffs, twins and notices, and an invalid copy later fetches
 * the whole page from its keeper. Fault tolerance keeps what a replay needs first
 * (archived diffs, or a full checkpoint on every rank). */
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "proto.h"

/* The writer of the latest notice keeps the page: every rank names the same one, since at
 * a barrier all ranks hold the same notices. A notice that only lists a conversion (its
 * diff is empty) names no writer: its home may lack others' writes, and such a notice can
 * be made during a collection (a serve while keepers fetch their copies). */
const cdsm__interval_t *cdsm__latest_notice(uint32_t pg)
{
    const cdsm__interval_t *best = NULL;
    int best_empty = 1;
    for (const cdsm__notice_t *nt = cdsm__pg(pg)->notices; nt; nt = nt->next) {
        int empty = cdsm__iv_is_empty(nt->iv, pg);
        if (!best || (best_empty && !empty) ||
            (empty == best_empty && (nt->iv->vcsum > best->vcsum ||
                                     (nt->iv->vcsum == best->vcsum && nt->iv->rank > best->rank)))) {
            best = nt->iv;
            best_empty = empty;
        }
    }
    return best;
}

static int page_current(uint32_t pg)
{
    const cdsm__page_t *p = cdsm__pg(pg);
    if (p->holder >= 0) return 0;
    for (const cdsm__notice_t *nt = p->notices; nt; nt = nt->next) /* (a conversion's listing changed nothing) */
        if ((!p->applied || p->applied[nt->iv->rank] < nt->iv->idx) && !cdsm__iv_is_empty(nt->iv, pg)) return 0;
    return 1;
}

int cdsm__gc(void)
{
    cdsm__state_t *g = &cdsm__g;
    int rc = CDSM_OK;
    int ckpt = cdsm__ft.ckpt_enabled();
    pthread_mutex_lock(&g->mu);
    /* Phase 1: each page's keeper brings its copy up to date while diffs still exist. With
     * checkpoints, every rank does so for every stale copy, and commits a full checkpoint
     * before anyone drops a diff: no replay may start before this barrier afterwards, and
     * the checkpoint must not depend on another rank's copy. */
    CDSM_PG_FOR_MADE(pg) {
        if (rc) break;
        cdsm__page_t *p = cdsm__pg(pg);
        if (!p->notices) continue;
        if ((ckpt || cdsm__latest_notice(pg)->rank == cdsm__w.rank) && !page_current(pg)) {
            if (p->state != CDSM_PG_INVALID) cdsm__invalidate(pg);
            /* (never touched here: a whole copy from a writer first) */
            rc = p->claim ? cdsm__own_miss(pg, NULL) : cdsm__validate(pg, NULL);
        }
    }
    if (!rc && ckpt) rc = cdsm__ft.ckpt_commit();
    pthread_mutex_unlock(&g->mu);
    if (rc) return rc;
    /* Phase 2 starts only when every keeper is done (and every checkpoint committed: in
     * resume mode that makes a restart manifest). */
    if ((rc = cdsm__barrier_full(CDSM_BAR_GC_DONE, 0, NULL, NULL, NULL))) return rc;
    if (ckpt && cdsm__mode.resume_mode) cdsm__ft.ckpt_manifest();
    pthread_mutex_lock(&g->mu);
    if (cdsm__ft.archive_needed()) {
        /* Before twins go: a replay from the start needs every diff this rank made. */
        cdsm__ivlist_t *own = &g->ivs[cdsm__w.rank];
        for (uint32_t k = 0; k < own->count; k++) {
            cdsm__ft.archive_own(own->v[k]);
            own->v[k] = NULL;
        }
        /* With spares, the others' records too (small: no diffs): a rank lost with its
         * node cannot send its own to the replay of the other. */
        if (cdsm__cfg.spares)
            for (int q = 0; q < cdsm__w.n; q++)
                for (uint32_t k = 0; q != cdsm__w.rank && k < g->ivs[q].count; k++) cdsm__ft.archive_other(g->ivs[q].v[k]);
    }
    CDSM_PG_FOR_MADE(pg) {
        cdsm__page_t *p = cdsm__pg(pg);
        if (!p->notices) continue;
        if (!page_current(pg)) {
            cdsm_check(p->state == CDSM_PG_INVALID);
            p->holder = (int16_t)cdsm__latest_notice(pg)->rank;
            memset(p->applied, 0, cdsm__u32s((size_t)cdsm__w.n));
        }
        if (p->twin && !p->hot) { /* a hot page's twin is its open interval's */
            cdsm__log_bytes_add(-(int64_t)cdsm__heap.page_size);
            cdsm__pool_free(p->twin, cdsm__heap.page_size);
            p->twin = NULL;
        }
        for (cdsm__notice_t *nt = p->notices, *nx; nt; nt = nx) {
            nx = nt->next;
            free(nt);
            cdsm__log_bytes_add(-(int64_t)sizeof *nt);
        }
        p->notices = NULL;
    }
    for (int q = 0; q < cdsm__w.n; q++) {
        cdsm__ivlist_t *l = &g->ivs[q];
        for (uint32_t k = 0; k < l->count; k++) cdsm__iv_free(l->v[k]);
        cdsm_check(l->base + l->count == cdsm__bar.vc_bar[q]);
        l->base += l->count;
        l->count = 0;
    }
    CDSM_STAT_ADD(gc_runs, 1);
    pthread_mutex_unlock(&g->mu);
    return CDSM_OK;
}
