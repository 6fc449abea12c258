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
    cdsm__node_wake();
}

/* ---- replies to the application thread ------------------------------------------------- */

cdsm__reply_t *cdsm__wait_reply(int type, uint64_t tag)
{
    return cdsm__wait_reply_for(type, tag, 0, NULL);
}

/* The queued reply of (type, tag), taken out of the queue, or NULL. Caller holds mu. */
static cdsm__reply_t *take_reply(int type, uint64_t tag)
{
    for (cdsm__reply_t **pp = &cdsm__g.replies; *pp; pp = &(*pp)->next) {
        cdsm__reply_t *r = *pp;
        if (r->hdr.type == type && r->hdr.tag == tag) {
            *pp = r->next;
            cdsm__tp_resend_done(type, tag);
            return r;
        }
    }
    return NULL;
}

/* Let the transport work without mu: receive, send again what went to a process that
 * was replaced, complete our sends. Caller holds mu. */
static void unlocked_progress(void)
{
    pthread_mutex_unlock(&cdsm__g.mu);
    cdsm__tp_progress();
    pthread_mutex_lock(&cdsm__g.mu);
}

static void unlocked_resend(void)
{
    pthread_mutex_unlock(&cdsm__g.mu);
    cdsm__tp_resend_moved();
    cdsm__tp_flush_sends(); /* (this thread goes on receiving) */
    pthread_mutex_lock(&cdsm__g.mu);
}

/* Finalizing, and rank 0 is gone: a release it sent before is received after one more
 * drain (its sends complete before it closes); without one, it died first. Returns 1 to
 * look at the replies again, 0 when no release will come. */
static int drain_once(int *drained)
{
    if (!*drained) {
        *drained = 1;
        unlocked_progress();
        return 1;
    }
    __atomic_store_n(&cdsm__w.recovered, 1, __ATOMIC_RELEASE);
    cdsm__log(CDSM_LOG_WARN, "rank 0 lost during finalize (all work was done): finishing without it");
    cdsm__tp_resend_clear();
    return 0;
}

/* Sleep on cv for at most 100 ms, then progress MPI: a send counted complete may still
 * wait in MPI for its connection to the peer to be set up, which needs this process to
 * progress (seen: a spare's first request to a rank, never delivered while both slept).
 * Returns 1 once timeout_ms (0: never) has passed since t0. Caller holds mu. */
static int nap(uint64_t t0, uint64_t timeout_ms)
{
    cdsm__tp_idle(); /* what we sent ourselves is the service thread's now */
    struct timespec dl = cdsm__deadline_ms(100);
    if (pthread_cond_timedwait(&cdsm__g.cv, &cdsm__g.mu, &dl) != ETIMEDOUT) return 0;
    unlocked_progress();
    return timeout_ms && (cdsm__mono_ns() - t0) / 1000000u >= timeout_ms;
}

/* How long a waiter that woke nobody spins before it yields its core between polls. */
#define NOYIELD_NS 2000u

/* The wait itself; *spinning: this thread receives itself (cleared when that time is up,
 * and the receiving flag with it). Caller holds mu. */
static cdsm__reply_t *wait_loop(int type, uint64_t tag, uint64_t timeout_ms, int *timed_out, int *spinning)
{
    cdsm__state_t *g = &cdsm__g;
    uint32_t gen = __atomic_load_n(&cdsm__w.remap_gen, __ATOMIC_ACQUIRE);
    unlocked_resend();
    uint64_t t0 = cdsm__mono_ns(), spin_ns = cdsm__cfg.spin_us * 1000u, late_ns = cdsm__cfg.late_bell_us * 1000u;
    int drained = 0, woke = cdsm__tp_woke();
    for (;;) {
        cdsm__reply_t *r = take_reply(type, tag);
        if (r) {
            if (cdsm__tp_late_pending()) cdsm__tp_ring_late(1);
            return r;
        }
        /* Our request's receiver has not taken it by itself: wake it now (and always
         * before sleeping: nobody else would). */
        if (cdsm__tp_late_pending() && (!*spinning || cdsm__mono_ns() - t0 >= late_ns)) cdsm__tp_ring_late(0);
        if (cdsm__lost() >= 0) {
            cdsm__tp_resend_clear();
            return NULL;
        }
        if (type == CDSM_MSG_BAR_RELEASE && __atomic_load_n(&g->final_mgr_gone, __ATOMIC_ACQUIRE)) {
            if (drain_once(&drained)) continue;
            return NULL;
        }
        uint32_t now_gen = __atomic_load_n(&cdsm__w.remap_gen, __ATOMIC_ACQUIRE);
        if (gen != now_gen) { /* a rank moved to a spare: what we asked of it may be lost */
            gen = now_gen;
            unlocked_resend();
            continue;
        }
        if (!*spinning) {
            if (cdsm__tp_sending()) { /* sent while spinning: complete it before sleeping */
                pthread_mutex_unlock(&g->mu);
                cdsm__tp_flush_sends();
                pthread_mutex_lock(&g->mu);
            } else if (nap(t0, timeout_ms)) {
                if (timed_out) *timed_out = 1;
                return NULL;
            }
            continue;
        }
        /* Receive ourselves for a while: the reply usually comes within a round trip. */
        pthread_mutex_unlock(&g->mu);
        /* A thread we woke may need this core to answer (the scheduler tends to wake it
         * next to its waker): yield to it. Otherwise the answer is being made on a running
         * thread and comes within a round trip, which a yield (a system call) would
         * lengthen: spin without yielding for NOYIELD_NS. */
        uint64_t waited = cdsm__mono_ns() - t0;
        woke |= cdsm__tp_woke();
        if (!cdsm__tp_progress() && (woke || waited >= NOYIELD_NS)) sched_yield();
        if (waited >= spin_ns) {
            *spinning = 0;
            cdsm__tp_receiving(0); /* (receives once more: a sender may have seen us receiving) */
        }
        pthread_mutex_lock(&g->mu);
    }
}

cdsm__reply_t *cdsm__wait_reply_for(int type, uint64_t tag, uint64_t timeout_ms, int *timed_out)
{
    if (timed_out) *timed_out = 0;
    /* A rank may have moved to a spare between our request and this wait (the loop sees
     * only later moves): send again what went to a dead process; and complete our own
     * sends before sleeping: the peer may need them to progress. While this thread
     * receives itself, node-mates need not ring its doorbell. */
    int spinning = cdsm__cfg.spin_us > 0;
    if (spinning) cdsm__tp_receiving(1);
    cdsm__reply_t *r = wait_loop(type, tag, timeout_ms, timed_out, &spinning);
    if (spinning) {
        pthread_mutex_unlock(&cdsm__g.mu);
        cdsm__tp_receiving(0);
        pthread_mutex_lock(&cdsm__g.mu);
    }
    return r;
}

void cdsm__reply_free(cdsm__reply_t *r)
{
    if (!r) return;
    free(r->payload - sizeof(cdsm__msg_hdr_t));
    free(r);
}
