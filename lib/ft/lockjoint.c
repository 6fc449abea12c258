/* Replacements going live together (DESIGN, "Two ranks lost at once").
 *
 * When more than one rank is being replayed (a node lost, or a second loss during a
 * recovery), their lock queues are rebuilt once, for all of them, by the lowest rank
 * being replayed: the others wait at their live points, answer its freeze like
 * survivors, and are made live by its rebuild. Two rebuilds at once would each take the
 * other's replayed state for a survivor's (the "token at 2 ranks" of issue 17).
 *
 * A replacement's replay leaves a released lock with no token (whether its lost process
 * passed the token on is not replayed). Where no survivor holds a lock, the token is at
 * the replacement where the grants it has heard of end: its lost process took a grant
 * of it (or manages it and never granted it) and made no known grant of it since. The
 * copies of determinants (gcopy.c) make those grants the same for every replacement:
 * whatever a survivor knows of, it knows the grants before.
 *
 * Caller holds mu throughout. */
#include <stdlib.h>
#include <string.h>

#include "recovery.h"

/* Per lock: the last grant this rank's lost process made (to whom, for which acquire,
 * when) and the last one it took, as far as the logs and the copies say. */
typedef struct know {
    int32_t to;
    uint32_t to_seq;
    int64_t gseq, aseq; /* -1: none */
} know_t;

static struct joint {
    know_t *k;      /* made at the first question, dropped when the rank is live */
    know_t **of;    /* the leader's: per replacement made live with it (NULL for others) */
    int made_live;  /* another replacement's rebuild made this one live: its own gives way */
} J;

static void note_sent(uint32_t l, int to, uint32_t acq_seq, uint32_t grant_seq)
{
    know_t *k = &J.k[l];
    if ((int64_t)grant_seq < k->gseq) return;
    k->gseq = grant_seq;
    k->to = to;
    k->to_seq = acq_seq;
}

static void note_taken(uint32_t l, uint32_t acq_seq)
{
    if ((int64_t)acq_seq > J.k[l].aseq) J.k[l].aseq = acq_seq;
}

static void from_log(const cdsm__det_t *d, void *arg)
{
    (void)arg;
    if (d->id >= cdsm__lk.nlocks) return;
    if (d->kind == CDSM_DET_SENT) note_sent(d->id, (int)d->peer, d->acq_seq, d->grant_seq);
    if (d->kind == CDSM_DET_RECV) note_taken(d->id, d->acq_seq);
}

static void from_copy(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq, uint32_t grant_seq,
                      const uint32_t *vc, void *arg)
{
    (void)vc, (void)arg;
    uint32_t me = (uint32_t)cdsm__w.rank;
    if (lock >= cdsm__lk.nlocks || granter == acquirer) return;
    if (granter == me) note_sent(lock, (int)acquirer, acq_seq, grant_seq);
    if (acquirer == me) note_taken(lock, acq_seq);
}

static const know_t *know(uint32_t l)
{
    if (!J.k) {
        J.k = malloc(cdsm__lk.nlocks * sizeof *J.k);
        cdsm_check(J.k != NULL);
        for (uint32_t i = 0; i < cdsm__lk.nlocks; i++) {
            int mgr = (int)(i % (uint32_t)cdsm__w.n) == cdsm__w.rank;
            J.k[i] = (know_t){-1, 0, -1, mgr ? 0 : -1}; /* (a manager starts with the token) */
        }
        cdsm__det_foreach(from_log, NULL);
        cdsm__gcopy_foreach(from_copy, NULL);
    }
    return &J.k[l];
}

int cdsm__lk_know_last_to(uint32_t l, uint32_t *to_seq)
{
    const know_t *k = know(l);
    *to_seq = k->to_seq;
    return k->to;
}

int cdsm__lk_know_named(uint32_t l)
{
    const know_t *k = know(l);
    return k->gseq >= 0 || k->aseq >= 0; /* (a lock it manages is named by its first token) */
}

/* The leader's view of every replacement's grants: from the copies alone (its own log's
 * entries are copies too), which the reports brought up to the cut. */
static void of_copy(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq, uint32_t grant_seq,
                    const uint32_t *vc, void *arg)
{
    (void)vc, (void)arg;
    if (lock >= cdsm__lk.nlocks || granter == acquirer) return;
    uint32_t n = (uint32_t)cdsm__w.n;
    know_t *g = granter < n ? J.of[granter] : NULL, *a = acquirer < n ? J.of[acquirer] : NULL;
    if (g && (int64_t)grant_seq >= g[lock].gseq) {
        g[lock].gseq = grant_seq;
        g[lock].to = (int)acquirer;
        g[lock].to_seq = acq_seq;
    }
    if (a && (int64_t)acq_seq > a[lock].aseq) a[lock].aseq = acq_seq;
}

void cdsm__lk_know_all(const uint8_t *repl)
{
    int n = cdsm__w.n;
    J.of = calloc((size_t)n, sizeof *J.of);
    cdsm_check(J.of != NULL);
    for (int x = 0; x < n; x++) {
        if (!repl[x]) continue;
        J.of[x] = malloc(cdsm__lk.nlocks * sizeof **J.of);
        cdsm_check(J.of[x] != NULL);
        for (uint32_t i = 0; i < cdsm__lk.nlocks; i++)
            J.of[x][i] = (know_t){-1, 0, -1, (int)(i % (uint32_t)n) == x ? 0 : -1};
    }
    cdsm__gcopy_foreach(of_copy, NULL);
}

int cdsm__lk_know_hold_of(int x, uint32_t l)
{
    const know_t *k = J.of && J.of[x] ? &J.of[x][l] : NULL;
    return k && k->aseq >= 0 && k->gseq < k->aseq;
}

void cdsm__lk_know_free(void)
{
    free(J.k);
    J.k = NULL;
    for (int x = 0; J.of && x < cdsm__w.n; x++) free(J.of[x]);
    free(J.of);
    J.of = NULL;
}

int cdsm__lk_lower_replayed(void)
{
    for (int q = 0; q < cdsm__w.rank; q++)
        if (cdsm__member_replayed_now(q)) return 1;
    return 0;
}

int cdsm__lk_made_live(void)
{
    return J.made_live;
}

void cdsm__lk_joined(const cdsm__msg_hdr_t *h)
{
    J.made_live = 1;
    /* A note to the waiting thread, as a reply (it waits like any other). */
    cdsm__msg_hdr_t note = *h;
    note.len = 0;
    uint8_t *buf = malloc(sizeof note);
    cdsm_check(buf != NULL);
    memcpy(buf, &note, sizeof note);
    cdsm__reply_queue(&note, buf);
}

int cdsm__lk_follow(void)
{
    cdsm__log(CDSM_LOG_INFO, "rank %d: at its live point; a lower rank being replayed rebuilds the lock queues",
              cdsm__w.rank);
    uint64_t t0 = cdsm__mono_ns(), said_s = 60;
    for (;;) {
        int late = 0;
        cdsm__reply_t *r = cdsm__wait_reply_for(CDSM_MSG_LK_REBUILD, 0, 200, &late);
        if (r) {
            cdsm__reply_free(r);
            J.made_live = 0;
            return CDSM_OK;
        }
        if (!late) return cdsm__error(CDSM_ERR_PEER_LOST, "rank %d waiting for the lock rebuild: rank %d was lost",
                                      cdsm__w.rank, cdsm__lost());
        if (!cdsm__lk_lower_replayed()) return CDSM__LK_GIVE_WAY; /* nobody lower is replayed: lead */
        uint64_t waited_s = (cdsm__mono_ns() - t0) / 1000000000u;
        if (cdsm__cfg.replay_wait_s && waited_s >= cdsm__cfg.replay_wait_s)
            return cdsm__error(CDSM_ERR_PEER_LOST,
                               "rank %d: no lock rebuild after %llu s at its live point while a lower rank is being "
                               "replayed (CDSM_REPLAY_WAIT)",
                               cdsm__w.rank, (unsigned long long)waited_s);
        if (waited_s >= said_s) { /* (a lower replay still runs: it is alive, or it would be replaced) */
            cdsm__log(CDSM_LOG_WARN, "rank %d: waiting %llu s at its live point for a lower rank's replay",
                      cdsm__w.rank, (unsigned long long)waited_s);
            said_s = waited_s + 60;
        }
    }
}
