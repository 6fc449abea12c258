/* Rebuilding the lock queues when a replacement goes live.
 *
 * A lost process takes with it the queue state it held: the tails of the locks it managed,
 * the forwards that named its successors, its cached tokens, and grants sent to it that it
 * never read. Its replay tells which locks it holds at the point where it goes live; the
 * rest is rebuilt from the survivors:
 *
 * 1. The replacement asks every survivor to freeze (no request or forward links a queue any
 *    more; tokens may still move along links already made) and to report, per lock, its
 *    state (none, token, held, waiting with its acquire number and vector clock, or granted
 *    with the grant unread), its successor, its last grant to the lost rank, and (manager)
 *    the tail, with forwards it holds back and how many lock messages it has sent to and
 *    received from each process. It asks again until the counts match pairwise: then no
 *    lock message is in flight between live processes and the reports form a consistent cut.
 * 2. Per lock: the token is where a survivor reports it; if nowhere, with the replacement
 *    (the lost process kept it, or its grant never left it). A grant to the lost process
 *    that it never read is sent again (from the granter's log entry). The queue is the
 *    holder followed by the successor links; waiters whose link was lost (a forward to the
 *    dead process, a request it took but never forwarded) are appended: they wait at the
 *    same time, so any order is a valid lock order. The manager learns the new tail.
 * 3. The replacement sends the queues to every survivor: each links its successor, marks
 *    every queued (requester, acquire number) as placed so that any copy of a request or
 *    forward arriving later is dropped, and goes on.
 *
 * Several replacements go live together: the lowest rank being replayed does the above
 * for all (lockjoint.c); the others report as survivors do, flagged, at their live points,
 * and take their own part from the rebuilt queues. This file is the survivors' side (and
 * such a replacement's); lockqueue.c the rebuilding replacement's.
 *
 * Caller holds mu throughout; no MPI collective is used. */
#include <stdlib.h>
#include <string.h>

#include "inject.h"
#include "recovery.h"

uint32_t cdsm__lk_report_state(const cdsm__lock_t *lk, uint32_t l)
{
    if (lk->state == CDSM_LK_WAITING && cdsm__lock_unread_grant(l, lk->req_seq)) return CDSM_LKR_GRANTED;
    return lk->state;
}

struct put_fwd {
    cdsm__buf_t *b;
    uint32_t count;
};

static void put_fwd(int type, uint32_t l, int req, uint32_t seq, void *arg)
{
    struct put_fwd *pf = arg;
    if (type != CDSM_MSG_LOCK_FWD) return;
    cdsm__buf_put_u32(pf->b, l);
    cdsm__buf_put_u32(pf->b, (uint32_t)req);
    cdsm__buf_put_u32(pf->b, seq);
    pf->count++;
}

/* ---- survivors ------------------------------------------------------------------------ */

/* The report's part of one lock (LK_STATE entry): its state, successor, last grant,
 * tail; for a replacement (repl) its state as its replay left it, and its lost process's
 * last grant as the grants it has heard of say (lockjoint.c). */
static void put_lock(cdsm__buf_t *b, uint32_t l, const cdsm__lock_t *lk, int repl)
{
    int n = cdsm__w.n, mgr = (int)(l % (uint32_t)n) == cdsm__w.rank;
    uint32_t st = cdsm__lk_report_state(lk, l), to_seq = lk->last_to_seq;
    int to = repl ? cdsm__lk_know_last_to(l, &to_seq) : lk->last_to;
    cdsm__buf_put_u32(b, l);
    cdsm__buf_put_u32(b, st);
    cdsm__buf_put_u32(b, lk->req_seq);
    cdsm__buf_put_u32(b, (uint32_t)lk->next);
    cdsm__buf_put_u32(b, lk->next_seq);
    cdsm__buf_put_u32(b, (uint32_t)to);
    cdsm__buf_put_u32(b, to >= 0 ? to_seq : 0);
    cdsm__buf_put_u32(b, (uint32_t)(mgr ? lk->tail : -1));
    if (st == CDSM_LKR_WAITING || st == CDSM_LKR_GRANTED) cdsm__buf_put(b, cdsm__g.vc, cdsm__u32s((size_t)n));
}

/* Whether lock l's part must be reported: anything but the idle default, or a grant to
 * (or a request of) a rank being replayed. */
static int worth_reporting(uint32_t l, const cdsm__lock_t *lk, const uint8_t *replayed, int repl)
{
    int n = cdsm__w.n, mgr = (int)(l % (uint32_t)n);
    if (lk->state != CDSM_LK_NONE || lk->next >= 0) return 1;
    if (mgr == cdsm__w.rank && lk->tail != cdsm__w.rank) return 1;
    if (repl) return cdsm__lk_know_named(l);
    /* (For a lock a lost rank managed, our last request: a copy of it sent again to the
     * replacement after it was answered must be dropped.) */
    return (lk->last_to >= 0 && replayed[lk->last_to]) || (replayed[mgr] && lk->req_seq);
}

void cdsm__lk_on_freeze(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    /* A replacement still replaying answers at its live point (replay.c serves it then). */
    if (cdsm__replay_defer(h, rd)) return;
    int n = cdsm__w.n, repl = cdsm__member_replayed_now(cdsm__w.rank);
    cdsm__inject(cdsm__w.rank, "lk_freeze"); /* (a test's moment: a survivor lost during a rebuild) */
    /* A freeze from a replacement made live since (by another's rebuild, whose end unfroze
     * us) is late: answered, but nothing stays frozen for it. */
    if (cdsm__member_replayed_now(h->src)) cdsm__lock_freeze(1);
    uint8_t replayed[n];
    for (int q = 0; q < n; q++) replayed[q] = (uint8_t)cdsm__member_replayed_now(q);
    cdsm__buf_t b = {0};
    cdsm__buf_put_u32(&b, (uint32_t)cdsm__w.wn);
    for (int w = 0; w < cdsm__w.wn; w++) cdsm__buf_put_u32(&b, __atomic_load_n(&cdsm__w.lk_sent[w], __ATOMIC_ACQUIRE));
    for (int w = 0; w < cdsm__w.wn; w++) cdsm__buf_put_u32(&b, __atomic_load_n(&cdsm__w.lk_recv[w], __ATOMIC_ACQUIRE));
    cdsm__buf_put_u32(&b, (uint32_t)repl);
    cdsm__buf_put_u32(&b, cdsm__g.sync_seq);
    size_t count_at = b.len;
    uint32_t count = 0;
    cdsm__buf_put_u32(&b, 0);
    for (uint32_t l = 0; l < cdsm__lk.nlocks; l++) {
        const cdsm__lock_t *lk = cdsm__lock_get(l);
        if (!worth_reporting(l, lk, replayed, repl)) continue;
        put_lock(&b, l, lk, repl);
        count++;
    }
    memcpy(b.p + count_at, &count, sizeof count);
    size_t nfwd_at = b.len;
    cdsm__buf_put_u32(&b, 0);
    struct put_fwd pf = {&b, 0};
    cdsm__lock_waiting_foreach(put_fwd, &pf);
    memcpy(b.p + nfwd_at, &pf.count, 4);
    cdsm__gcopy_put(h->src, &b); /* (the copies it lacks: where each token's path ends) */
    cdsm__tp_send(h->src, CDSM_MSG_LK_STATE, h->tag, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
}

/* A grant the lost process never read: sent again to its replacement, from our log entry. */
struct regrant {
    uint32_t l, seq;
    int to;
    const uint32_t *to_vc;
    int done;
};

static void regrant_one(const cdsm__det_t *d, void *arg)
{
    struct regrant *rg = arg;
    if (rg->done || d->kind != CDSM_DET_SENT || d->peer != (uint32_t)rg->to || d->id != rg->l || d->acq_seq != rg->seq)
        return;
    rg->done = 1;
    cdsm__lock_grant_msg(rg->l, rg->to, rg->seq, d->grant_seq, d->vc, rg->to_vc);
}

/* A replacement made live by another's rebuild: its own part of lock l as the queue says
 * (rank[0] holds the token; regrant: someone sends it a lost grant again). */
static void take_own_part(uint32_t l, const int *rank, uint32_t k, int regrant)
{
    const cdsm__lock_t *lk = cdsm__lock_get(l);
    int state = lk->state, me = cdsm__w.rank;
    if (k > 0 && rank[0] == me) {
        /* (Waiting with the grant come but unread: it takes the grant next, records and all.) */
        if (cdsm__lk_report_state(lk, l) == CDSM_LKR_WAITING && regrant < 0)
            cdsm__lock_set_state(l, CDSM_LK_HELD); /* the token was here */
        if (state == CDSM_LK_NONE) cdsm__lock_set_state(l, CDSM_LK_TOKEN);
    } else if (state == CDSM_LK_TOKEN) {
        cdsm__lock_set_state(l, CDSM_LK_NONE); /* it moved on */
    }
}

/* One LK_REBUILD entry (own: this rank is a replacement the rebuild makes live). */
static void take_entry(cdsm__rd_t *rd, int own)
{
    int n = cdsm__w.n;
    uint32_t l = cdsm__rd_u32(rd);
    int tail = (int)cdsm__rd_u32(rd), from = (int)cdsm__rd_u32(rd);
    uint32_t k = cdsm__rd_u32(rd);
    if (rd->bad || l >= cdsm__lk.nlocks || k > (uint32_t)n) {
        rd->bad = 1;
        return;
    }
    int rank[k > 0 ? k : 1];
    uint32_t seq[k > 0 ? k : 1];
    const uint32_t *vc[k > 0 ? k : 1];
    for (uint32_t i = 0; i < k; i++) {
        rank[i] = (int)cdsm__rd_u32(rd);
        seq[i] = cdsm__rd_u32(rd);
        vc[i] = cdsm__rd_u32(rd) ? cdsm__rd_take(rd, cdsm__u32s((size_t)n)) : NULL;
        if (rank[i] < 0 || rank[i] >= n) rd->bad = 1;
    }
    uint32_t nplaced = cdsm__rd_u32(rd); /* (requests a replacement manager's lost process took) */
    for (uint32_t i = 0; i < nplaced && !rd->bad; i++) {
        uint32_t q = cdsm__rd_u32(rd), s = cdsm__rd_u32(rd);
        if (q >= (uint32_t)n) rd->bad = 1;
        else if (own && (int)(l % (uint32_t)n) == cdsm__w.rank) cdsm__lock_placed(l, (int)q, s);
    }
    if (rd->bad) return;
    if (own) take_own_part(l, rank, k, from);
    for (uint32_t i = 0; i < k; i++)
        if (vc[i]) cdsm__lock_placed(l, rank[i], seq[i]);
    if ((int)(l % (uint32_t)n) == cdsm__w.rank) cdsm__lock_set_tail(l, tail);
    for (uint32_t i = 0; i + 1 < k; i++)
        if (rank[i] == cdsm__w.rank) cdsm__lock_link(l, rank[i + 1], vc[i + 1], seq[i + 1]);
    if (k > 0 && rank[k - 1] == cdsm__w.rank) cdsm__lock_link(l, -1, NULL, 0);
    if (from == cdsm__w.rank && k > 0 && vc[0]) cdsm__lk_regrant(l, rank[0], seq[0], vc[0]);
}

void cdsm__lk_regrant(uint32_t l, int to, uint32_t seq, const uint32_t *to_vc)
{
    struct regrant rg = {l, seq, to, to_vc, 0};
    cdsm__det_foreach(regrant_one, &rg);
    if (!rg.done) cdsm__log(CDSM_LOG_ERROR, "lock %u: no log entry of the grant to rank %d to send again", l, to);
}

void cdsm__lk_on_rebuild(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    int n = cdsm__w.n, own = 0;
    /* The replacements this rebuild makes live (the sender, and any that waited for it). */
    uint32_t nlive = cdsm__rd_u32(rd);
    int live[n];
    for (uint32_t i = 0; i < nlive && i < (uint32_t)n && !rd->bad; i++) {
        live[i] = (int)cdsm__rd_u32(rd);
        if (live[i] < 0 || live[i] >= n) rd->bad = 1;
        else if (live[i] == cdsm__w.rank) own = 1;
    }
    if (nlive > (uint32_t)n) rd->bad = 1;
    uint32_t nent = cdsm__rd_u32(rd);
    for (uint32_t e = 0; e < nent && !rd->bad; e++) take_entry(rd, own);
    if (rd->bad) cdsm__log(CDSM_LOG_ERROR, "malformed lock rebuild from rank %u", h->src);
    cdsm__lock_freeze(0);
    cdsm__lock_resume();
    for (uint32_t i = 0; i < nlive && !rd->bad; i++) cdsm__recover_done(live[i]); /* live again */
    cdsm__recover_done(h->src);
    if (own) cdsm__lk_joined(h);
}

