/* Replies to the application thread: the service thread queues them, the waiting thread
 * takes its own (receiving itself for a while first); and the loss of a rank for good,
 * which wakes every waiter. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "proto.h"

int cdsm__lost(void)
{
    return __atomic_load_n(&cdsm__g.lost_rank, __ATOMIC_ACQUIRE);
}

void cdsm__reply_queue(const cdsm__msg_hdr_t *h, uint8_t *buf)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__reply_t *r = malloc(sizeof *r), **pp = &g->replies;
    cdsm_check(r != NULL);
    r->next = NULL;
    r->hdr = *h;
    r->payload = buf + sizeof *h;
    while (*pp) pp = &(*pp)->next; /* in arrival order */
    *pp = r;
    pthread_cond_broadcast(&g->cv);
}

void cdsm__peer_lost(int rank, const char *why)
{
    cdsm__state_t *g = &cdsm__g;
    int none = -1;
    if (!__atomic_compare_exchange_n(&g->lost_rank, &none, rank, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return; /* the first loss was reported already */
    cdsm__log(CDSM_LOG_ERROR,
              "rank %d lost (%s): the process exited or was killed; no spare rank takes its place, so "
              "every operation that waits for another rank now fails with CDSM_ERR_PEER_LOST",
              rank, why);
    pthread_mutex_lock(&g->mu);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* ---- replies to the application thread ------------------------------------------------- */

cdsm__reply_t *cdsm__wait_reply(int type, uint64_t tag)
{
    return cdsm__wait_reply_for(type, tag, 0, NULL);
}

cdsm__reply_t *cdsm__wait_reply_for(int type, uint64_t tag, uint64_t timeout_ms, int *timed_out)
{
    cdsm__state_t *g = &cdsm__g;
    if (timed_out) *timed_out = 0;
    /* Complete our own sends before sleeping: the peer may need them to progress. */
    pthread_mutex_unlock(&g->mu);
    /* A rank may have moved to a spare between our request and this wait (the loop
     * below sees only later moves): send again what went to a dead process. */
    uint32_t gen = __atomic_load_n(&cdsm__w.remap_gen, __ATOMIC_ACQUIRE);
    cdsm__tp_resend_moved();
    cdsm__tp_flush();
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t spin_ns = cdsm__cfg.spin_us * 1000u;
    pthread_mutex_lock(&g->mu);
    int drained = 0;
    for (int spinning = spin_ns > 0;;) {
        for (cdsm__reply_t **pp = &g->replies; *pp; pp = &(*pp)->next) {
            cdsm__reply_t *r = *pp;
            if (r->hdr.type == type && r->hdr.tag == tag) {
                *pp = r->next;
                cdsm__tp_resend_done(type, tag);
                return r;
            }
        }
        if (cdsm__lost() >= 0) {
            cdsm__tp_resend_clear();
            return NULL;
        }
        if (type == CDSM_MSG_BAR_RELEASE && __atomic_load_n(&g->final_mgr_gone, __ATOMIC_ACQUIRE)) {
            /* Finalizing, and rank 0 is gone: a release it sent before is received after
             * one more drain (its sends complete before it closes); without one, it died
             * first. */
            if (!drained) {
                drained = 1;
                pthread_mutex_unlock(&g->mu);
                cdsm__tp_progress();
                pthread_mutex_lock(&g->mu);
                continue; /* look at the replies again */
            }
            __atomic_store_n(&cdsm__w.recovered, 1, __ATOMIC_RELEASE);
            cdsm__log(CDSM_LOG_WARN, "rank 0 lost during finalize (all work was done): finishing without it");
            cdsm__tp_resend_clear();
            return NULL;
        }
        if (gen != __atomic_load_n(&cdsm__w.remap_gen, __ATOMIC_ACQUIRE)) {
            /* A rank moved to a spare: what we asked of it may be lost. */
            gen = __atomic_load_n(&cdsm__w.remap_gen, __ATOMIC_ACQUIRE);
            pthread_mutex_unlock(&g->mu);
            cdsm__tp_resend_moved();
            cdsm__tp_flush();
            pthread_mutex_lock(&g->mu);
            continue;
        }
        if (!spinning) {
            if (cdsm__tp_sending()) { /* sent while spinning: complete it before sleeping */
                pthread_mutex_unlock(&g->mu);
                cdsm__tp_flush();
                pthread_mutex_lock(&g->mu);
                continue;
            }
            /* Asleep, but MPI is progressed every 100 ms: a send counted complete may still
             * wait in MPI for its connection to the peer to be set up, which needs this
             * process to progress (seen: a spare's first request to a rank, never
             * delivered while both slept). */
            struct timespec dl = cdsm__deadline_ms(100);
            if (pthread_cond_timedwait(&g->cv, &g->mu, &dl) == ETIMEDOUT) {
                pthread_mutex_unlock(&g->mu);
                cdsm__tp_progress();
                pthread_mutex_lock(&g->mu);
                clock_gettime(CLOCK_MONOTONIC, &t);
                if (timeout_ms && (uint64_t)(t.tv_sec - t0.tv_sec) * 1000u + (uint64_t)(t.tv_nsec - t0.tv_nsec) / 1000000 >=
                                      timeout_ms) {
                    if (timed_out) *timed_out = 1;
                    return NULL;
                }
            }
            continue;
        }
        /* Receive ourselves for a while: the reply usually comes within a round trip. */
        pthread_mutex_unlock(&g->mu);
        if (!cdsm__tp_progress()) sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &t);
        spinning = (uint64_t)(t.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)(t.tv_nsec - t0.tv_nsec) < spin_ns;
        pthread_mutex_lock(&g->mu);
    }
}

void cdsm__reply_free(cdsm__reply_t *r)
{
    if (!r) return;
    free(r->payload - sizeof(cdsm__msg_hdr_t));
    free(r);
}
