/* Doorbells only for sleepers (MPI-doorbell provider, processes on one host): each
 * process shares one small page (a memfd passed to its node-mates over the doorbell
 * socket at start-up) saying whether its application thread is receiving messages itself
 * right now, and counting the messages each sender sent it with no doorbell.
 *
 * Why: a doorbell wakes the receiver's service thread even when its application thread is
 * waiting in the library and takes the message first. On two cores that wake-up was most
 * of a barrier's or lock hand-off's cost (barrier 11-14 us with it, 4.1-4.4 us without,
 * measured 2026-12-03, MPI_Barrier 1.4 us).
 *
 * A credit replaces the doorbell byte, so the receiver's count (doorbell bytes read plus
 * credits collected, minus messages received) stays exact: positive only while a message
 * is surely on its way, and then the receiver waits for it as for a rung one (one pass of
 * MPI progress may not show a message put in a moment before). Order (Dekker): a sender
 * puts the message into MPI, adds a credit, then reads the flag; a receiver clears the
 * flag, then collects the credits and receives once more. Either the receiver collects
 * the credit, or the sender sees the flag clear and takes it back and rings. Skipping
 * is off without heartbeats (CDSM_HEARTBEAT_MS=0), whose wake-ups are the last resort. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bell.h"

enum { AWAKE_BYTE = 3 };

typedef struct awake_page {
    uint32_t receiving; /* the application thread receives itself now */
    uint32_t late;      /* late credits were left here since the last collect (a hint) */
    uint32_t credit[];  /* per sender (world rank): messages sent with no doorbell */
} awake_page_t;

static struct awake {
    awake_page_t *self;  /* ours; node-mates map it too */
    awake_page_t **peer; /* per process: its page mapped here, or NULL (always ring) */
    size_t bytes;
} aw;

int cdsm__awake_setup(void)
{
    if (!cdsm__cfg.skip_bells || !cdsm__cfg.heartbeat_ms || cdsm__bell.stream) return CDSM_OK;
    aw.bytes = sizeof(awake_page_t) + (size_t)cdsm__w.wn * sizeof(uint32_t);
    cdsm__shm_seg_t seg = {"cdsm-awake", "receiving flag", aw.bytes, 0, PROT_READ | PROT_WRITE, AWAKE_BYTE, NULL};
    aw.self = cdsm__shmfd_share(&seg, (void ***)&aw.peer);
    if (!aw.self) cdsm__log(CDSM_LOG_INFO, "no shared receiving flag (%s): every message rings its doorbell", strerror(errno));
    return CDSM_OK;
}

void cdsm__awake_receiving(int on)
{
    if (aw.self) __atomic_store_n(&aw.self->receiving, (uint32_t)on, __ATOMIC_SEQ_CST);
}

/* ---- late doorbells ---------------------------------------------------------------------
 * A request whose sender then waits for the answer need not wake the receiver's service
 * thread at once: a receiver that calls into the library often (a lock program's
 * acquires) takes it from MPI itself within microseconds. So the sender leaves a credit
 * and rings only if the credit is still there CDSM_LATE_BELL_US later (or before it
 * sleeps). Per receiver, a late bell that had to be rung turns them off for the next
 * requests, 16 at first, twice as many after each further miss, up to 1024, back to 16
 * once one is taken in time: a receiver busy computing outside the library pays one
 * delay now and then, not one per request. Only the application thread defers. */
enum { LATE_MAX = 8, LATE_BACKOFF = 16, LATE_BACKOFF_MAX = 1024 };

typedef struct late_peer {
    uint16_t left;            /* requests that still ring at once */
    uint16_t next;            /* the backoff after the next miss */
} late_peer_t;

/* Whether this thread's sends ring late: only the application thread ever turns it on,
 * and a send the service thread makes meanwhile rings as usual. */
static __thread int late_on;

static struct late {
    int n;                    /* receivers with late credits (the application thread's) */
    int w[LATE_MAX];
    uint32_t k[LATE_MAX];     /* credits left with each */
    late_peer_t *peer;        /* per process */
} late;

void cdsm__awake_late(int on)
{
    late_on = on && cdsm__cfg.late_bell_us > 0 && aw.peer;
    if (late_on && !late.peer) late_on = (late.peer = calloc((size_t)cdsm__w.wn, sizeof *late.peer)) != NULL;
}

int cdsm__awake_late_pending(void)
{
    return late.n;
}

/* Leave a late credit with w, if it can wait. */
static int late_credit(int w, awake_page_t *pg)
{
    if (late.peer[w].left > 0) {
        late.peer[w].left--;
        return 0;
    }
    int i = 0;
    while (i < late.n && late.w[i] != w) i++;
    if (i == LATE_MAX) return 0;
    if (i == late.n) {
        late.w[late.n] = w;
        late.k[late.n++] = 0;
    }
    late.k[i]++;
    __atomic_fetch_add(&pg->credit[cdsm__w.wrank], 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&pg->late, 1, __ATOMIC_RELEASE);
    CDSM_STAT_ADD(bells_late, 1);
    return 1;
}

/* Take back up to k of our credits with pg that it has not collected; how many. */
static uint32_t take_back(awake_page_t *pg, uint32_t k)
{
    uint32_t *c = &pg->credit[cdsm__w.wrank], v = __atomic_load_n(c, __ATOMIC_ACQUIRE), t = 0;
    do {
        t = v < k ? v : k;
    } while (t && !__atomic_compare_exchange_n(c, &v, v - t, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    return t;
}

int cdsm__awake_ring_late(int answered, int (*ring)(int w))
{
    int rc = 0;
    for (int i = 0; i < late.n; i++) {
        int w = late.w[i];
        uint32_t t = take_back(aw.peer[w], late.k[i]);
        late_peer_t *lp = &late.peer[w];
        if (t && !answered) { /* it did not come by: ring at once for a while */
            lp->left = lp->next ? lp->next : LATE_BACKOFF;
            lp->next = lp->left < LATE_BACKOFF_MAX ? (uint16_t)(lp->left * 2) : LATE_BACKOFF_MAX;
            CDSM_STAT_ADD(bells_late_rung, t);
        } else if (!t) {
            lp->next = LATE_BACKOFF;
        }
        while (t--) rc |= ring(w);
    }
    late.n = 0;
    return rc;
}

int cdsm__awake_skip(int w)
{
    awake_page_t *pg = aw.peer ? aw.peer[w] : NULL;
    if (!pg) return 0;
    if (late_on && late_credit(w, pg)) return 1;
    /* Announce first, then look (the message is in MPI already): either the receiver's
     * last pass counts this credit, or we see its flag clear and take the credit back. */
    __atomic_fetch_add(&pg->credit[cdsm__w.wrank], 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pg->receiving, __ATOMIC_SEQ_CST)) {
        CDSM_STAT_ADD(doorbells_skipped, 1);
        return 1;
    }
    return take_back(pg, 1) == 0; /* taken back: ring; none left: the receiver counted it */
}

void cdsm__awake_collect(int64_t *rx_count)
{
    if (!aw.self) return;
    /* The hint first: a late credit left after the collect below sets it again. */
    if (__atomic_load_n(&aw.self->late, __ATOMIC_RELAXED)) __atomic_store_n(&aw.self->late, 0, __ATOMIC_SEQ_CST);
    for (int p = 0; p < cdsm__w.wn; p++)
        if (aw.peer[p] && __atomic_load_n(&aw.self->credit[p], __ATOMIC_RELAXED))
            rx_count[p] += __atomic_exchange_n(&aw.self->credit[p], 0, __ATOMIC_ACQ_REL);
}

int cdsm__awake_late_left(void)
{
    return aw.self && __atomic_load_n(&aw.self->late, __ATOMIC_ACQUIRE);
}

void cdsm__awake_fini(void)
{
    free(late.peer);
    memset(&late, 0, sizeof late);
    cdsm__shmfd_unmap(aw.self, (void **)aw.peer, aw.bytes);
    memset(&aw, 0, sizeof aw);
}
