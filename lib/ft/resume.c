/* cdsm_resume(): the second way back (DESIGN.md, "two ways back").
 *
 * A program that registers its private state (cdsm_protect) and calls cdsm_resume() after
 * its allocations is in resume mode: checkpoints and collections happen only at its
 * cdsm_resume_point() calls, every checkpoint is taken at a collection where every copy
 * was made current (so it depends on no diff held in another process, not even the lost
 * one's), and the logs older than every rank's last checkpoint are dropped.
 *
 * Its replacement finds the lost rank's newest usable checkpoint when it takes over
 * (cdsm__replay_begin -> cdsm__ckpt_takeover), passes the program's allocation barriers
 * without effect (fast_forward), and here restores the heap, clocks, counters, locks and
 * private regions, then replays the collection's second barrier from the log. The
 * program goes on from its registered state; the rest is the usual replay. */
#include "recovery.h"

int cdsm_resume(int *resumed)
{
    cdsm__state_t *g = &cdsm__g;
    if (!g->initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_resume before cdsm_init");
    if (!resumed) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_resume(NULL)");
    *resumed = 0;
    pthread_mutex_lock(&g->mu);
    if (cdsm__mode.resume_mode) {
        pthread_mutex_unlock(&g->mu);
        return cdsm__error(CDSM_ERR_STATE, "cdsm_resume called twice");
    }
    __atomic_store_n(&cdsm__mode.resume_mode, 1, __ATOMIC_RELAXED);
    if (!cdsm__mode.fast_forward) {
        pthread_mutex_unlock(&g->mu);
        return CDSM_OK;
    }
    int rc = cdsm__ckpt_restore();
    cdsm__mode.fast_forward = 0;
    if (!rc && cdsm__mode.replaying) {
        cdsm__replay_restored();
        cdsm__replay_serve_deferred();
    }
    pthread_mutex_unlock(&g->mu);
    /* The checkpoint was taken inside a collection: its second barrier follows (logged,
     * since only a checkpoint whose collection ended is restored; in a whole-job restart
     * every rank passes it live). */
    if (!rc) rc = cdsm__barrier_full(CDSM_BAR_GC_DONE, 0, NULL, NULL, NULL);
    if (!rc) *resumed = 1;
    return rc;
}
