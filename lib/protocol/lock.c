/* Locks: a distributed queue in the style of TreadMarks. The manager of lock l is rank
 * l mod n; it remembers the last requester (the tail) and forwards each request there.
 * The token stays with the last releaser, so re-acquiring a lock nobody else asked for
 * needs no message. A grant carries every interval record the acquirer lacks.
 *
 * Recovery (ft/lockrebuild.c): while a replacement replays or rebuilds the queues,
 * requests and forwards wait here (nothing links a queue); afterwards a request or forward
 * the rebuild already placed in a queue is recognised by its (requester, acquire number)
 * and dropped. A grant names the acquire it answers, so a grant that a replay already
 * took from the log is never taken twice. */
#include <stdlib.h>
#include <string.h>

#include "inject.h"
#include "proto.h"
#include "vclock.h"

/* Requests and forwards that wait for the end of a replay or a rebuild. */
typedef struct lk_wait {
    struct lk_wait *next;
    uint16_t type;
    uint32_t lock, req, seq;
    uint32_t vc[];
} lk_wait_t;
static lk_wait_t *waiting, **waiting_end = &waiting;

cdsm__locks_t cdsm__lk;
/* After a rebuild: per lock and rank, the highest acquire number placed in a queue. */
static uint32_t **seen; /* per lock, made at its first placement: per requester, the last seq */

int cdsm__locks_init(void)
{
    cdsm__lk.nlocks = (uint32_t)cdsm__cfg.locks;
    /* (Zero pages until used: calloc of this size maps fresh memory.) */
    cdsm__lk.locks = calloc(cdsm__lk.nlocks, sizeof *cdsm__lk.locks);
    if (!cdsm__lk.locks) return cdsm__error(CDSM_ERR_NOMEM, "lock table of %u locks", cdsm__lk.nlocks);
    cdsm__lk.any_vc = 0;
    /* Lazy release only where no replay must make the same intervals (DESIGN, "Lazy
     * release"): where an interval ends would then depend on timing. */
    cdsm__g.lazy = cdsm__cfg.lazy_release && !cdsm__cfg.spares;
    cdsm__g.open_release = 0;
    cdsm__g.app = pthread_self();
    return CDSM_OK;
}

void cdsm__lock_fresh(cdsm__lock_t *lk, uint32_t l)
{
    int mgr = (int)(l % (uint32_t)cdsm__w.n);
    *lk = (cdsm__lock_t){.state = mgr == cdsm__w.rank ? CDSM_LK_TOKEN : CDSM_LK_NONE, .ready = 1, .tail = mgr,
                         .next = -1, .last_to = -1};
}

void cdsm__locks_fini(void)
{
    if (cdsm__lk.locks && cdsm__lk.any_vc) /* (an entry never used is zero: no clock) */
        for (uint32_t l = 0; l < cdsm__lk.nlocks; l++) free(cdsm__lk.locks[l].next_vc);
    free(cdsm__lk.locks);
    cdsm__lk.locks = NULL;
    while (waiting) {
        lk_wait_t *w = waiting;
        waiting = w->next;
        free(w);
    }
    waiting_end = &waiting;
    for (uint32_t l = 0; seen && l < cdsm__lk.nlocks; l++) free(seen[l]);
    free(seen);
    seen = NULL;
}

/* Send the token of lock l to rank `to`, with the records it lacks (it has `to_vc`). The
 * grant is a determinant of the acquirer's acquire number to_seq: logged here (SENT) and by
 * the acquirer (RECV); it carries this rank's synchronisation number. */
static int send_grant(uint32_t l, int to, const uint32_t *to_vc, uint32_t to_seq)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__ft.grant_sent(to, l, to_seq, g->sync_seq, g->vc);
    cdsm__lock_t *lk = cdsm__lock_entry(l);
    lk->last_to = to;
    lk->last_to_seq = to_seq;
    return cdsm__lock_grant_msg(l, to, to_seq, g->sync_seq, g->vc, to_vc);
}

int cdsm__lock_grant_msg(uint32_t l, int to, uint32_t to_seq, uint32_t grant_seq, const uint32_t *vc,
                         const uint32_t *to_vc)
{
    cdsm__buf_t b = {0};
    cdsm__buf_put_u32(&b, 0);
    cdsm__buf_put_u32(&b, grant_seq);
    cdsm__buf_put_u32(&b, to_seq);
    cdsm__buf_put(&b, vc, cdsm__u32s((size_t)cdsm__w.n));
    CDSM_STAT_ADD(piggyback_bytes, 8);
    uint32_t nrec = cdsm__iv_serialize_between(&b, to_vc, vc);
    memcpy(b.p, &nrec, sizeof nrec);
    if (cdsm__grant_diffs_on()) cdsm__grant_put_diffs(&b, to_vc, vc);
    cdsm__ft.trailer_put(to, &b);
    int rc = cdsm__tp_send(to, CDSM_MSG_LOCK_GRANT, l, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
    return rc;
}

/* A request or forward a rebuild has already placed in a queue (never before one). */
static int placed(uint32_t l, int requester, uint32_t seq)
{
    return seen && seen[l] && seq <= seen[l][requester];
}

/* A grant, as parsed; the records it carries follow in the payload. */
typedef struct grant {
    uint32_t nrec, grant_seq, to_seq; /* records, the granter's number, the acquire's */
    const uint32_t *vc;               /* the granter's vector clock */
} grant_t;

/* The one decoder of a grant. */
static int take_grant(cdsm__rd_t *r, grant_t *gr)
{
    gr->nrec = cdsm__rd_u32(r);
    gr->grant_seq = cdsm__rd_u32(r);
    gr->to_seq = cdsm__rd_u32(r);
    gr->vc = cdsm__rd_take(r, cdsm__u32s((size_t)cdsm__w.n));
    return gr->vc ? CDSM_OK : CDSM_ERR_PROTOCOL;
}

const uint32_t *cdsm__lock_grant_vc(const cdsm__reply_t *r)
{
    cdsm__rd_t rd = {r->payload, r->hdr.len, 0, 0};
    grant_t gr;
    return r->hdr.type == CDSM_MSG_LOCK_GRANT && !take_grant(&rd, &gr) ? gr.vc : NULL;
}

cdsm__reply_t **cdsm__lock_unread_grant(uint32_t l, uint32_t seq)
{
    for (cdsm__reply_t **pp = &cdsm__g.replies; *pp; pp = &(*pp)->next) {
        const cdsm__reply_t *r = *pp;
        if (r->hdr.type != CDSM_MSG_LOCK_GRANT || r->hdr.tag != l) continue;
        cdsm__rd_t rd = {r->payload, r->hdr.len, 0, 0};
        grant_t gr;
        take_grant(&rd, &gr); /* (the acquire's number is read even from a grant cut short) */
        if (r->hdr.len >= 3 * sizeof(uint32_t) && gr.to_seq == seq) return pp;
    }
    return NULL;
}

void cdsm__lock_placed(uint32_t l, int requester, uint32_t seq)
{
    /* Rows only for the locks a rebuild placed: ids are many (CDSM_LOCKS), used ones few. */
    if (!seen) {
        seen = calloc(cdsm__lk.nlocks, sizeof *seen);
        cdsm_check(seen != NULL);
    }
    if (!seen[l]) {
        seen[l] = calloc((size_t)cdsm__w.n, sizeof **seen);
        cdsm_check(seen[l] != NULL);
    }
    uint32_t *s = &seen[l][requester];
    if (seq > *s) *s = seq;
}

/* The one encoder of a lock request and its forward (decoder: parse_req): the requester,
 * its acquire's synchronisation number (piggybacked for logging) and its vector clock. */
/* late: the application thread's own request, which it waits for next (late doorbell). */
static int send_req(int type, int to, uint32_t l, int requester, uint32_t seq, const uint32_t *vc, int late)
{
    cdsm__buf_t b = {0};
    cdsm__buf_put_u32(&b, (uint32_t)requester);
    cdsm__buf_put_u32(&b, seq);
    cdsm__buf_put(&b, vc, cdsm__u32s((size_t)cdsm__w.n));
    CDSM_STAT_ADD(piggyback_bytes, 4);
    cdsm__ft.trailer_put(to, &b);
    int rc = (late ? cdsm__tp_send_late : cdsm__tp_send)(to, type, l, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
    return rc;
}

static void set_next(cdsm__lock_t *lk, int requester, const uint32_t *vc, uint32_t seq)
{
    size_t bytes = cdsm__u32s((size_t)cdsm__w.n);
    if (!lk->next_vc) {
        lk->next_vc = malloc(bytes);
        cdsm_check(lk->next_vc != NULL);
        cdsm__lk.any_vc = 1;
    }
    lk->next = requester;
    lk->next_seq = seq;
    memcpy(lk->next_vc, vc, bytes);
}

/* Where the token went after a release of ours: to another process (left) or back to us.
 * A lock whose token keeps leaving is published at its release (cdsm_lock_release). */
static struct {
    uint32_t n, back, probe; /* published releases, those that came back to us (decayed) */
} pub;

static void hand_note(cdsm__lock_t *lk, int left)
{
    if (left && lk->hand < 3) lk->hand++;
    /* A published release that nobody took cost an interval for nothing. */
    if (!left && lk->hand) lk->hand = lk->published ? 0 : lk->hand - 1;
    if (!left && lk->published) pub.back++;
}

/* Publish this release? The lock's token keeps leaving, and published releases pay here:
 * fewer than half came back untaken (else only every 16th, to notice a change). */
static int pub_pays(const cdsm__lock_t *lk)
{
    if (lk->hand < 2 || !cdsm__lw_can_publish()) return 0;
    if (pub.back * 2 > pub.n && ++pub.probe % 16) return 0;
    if (++pub.n > 256) {
        pub.n /= 2;
        pub.back /= 2;
    }
    return 1;
}

/* The token holder (or the rank about to hold it) learns who comes next. */
static void on_forward(uint32_t l, int requester, const uint32_t *vc, uint32_t seq)
{
    cdsm__lock_t *lk = cdsm__lock_entry(l);
    if (lk->state == CDSM_LK_TOKEN) {
        lk->state = CDSM_LK_NONE;
        cdsm__lw_busy(l); /* (only the requester could have taken it: it asked instead) */
        hand_note(lk, 1);
        cdsm__close_released(); /* the writes of its last release go with the token */
        send_grant(l, requester, vc, seq);
        return;
    }
    if ((lk->state != CDSM_LK_HELD && lk->state != CDSM_LK_WAITING) || lk->next >= 0)
        cdsm__log(CDSM_LOG_ERROR, "lock %u: forward of rank %d (acquire %u) in state %d with successor %d (acquire %u)",
                  l, requester, seq, lk->state, lk->next, lk->next_seq);
    cdsm_check(lk->state == CDSM_LK_HELD || lk->state == CDSM_LK_WAITING);
    cdsm_check(lk->next < 0);
    set_next(lk, requester, vc, seq);
}

void cdsm__lock_link(uint32_t l, int requester, const uint32_t *vc, uint32_t seq)
{
    cdsm__lock_t *lk = cdsm__lock_entry(l);
    if (requester < 0) { /* the end of the queue */
        lk->next = -1;
        return;
    }
    if (lk->next == requester && lk->next_seq == seq) return;
    if (lk->last_to == requester && lk->last_to_seq == seq) return; /* granted since the report */
    lk->next = -1;
    if (lk->state == CDSM_LK_NONE) {
        /* A replacement queued for an acquire its lost process asked for and it has not
         * reached again: it passes the token on after that acquire. */
        set_next(lk, requester, vc, seq);
        return;
    }
    on_forward(l, requester, vc, seq);
}

/* Manager: the requester becomes the tail; the previous tail hands the token on. */
static void manager_step(uint32_t l, int requester, const uint32_t *vc, uint32_t seq)
{
    int t = cdsm__lw_swap_tail(l, requester);
    if (t == cdsm__w.rank) {
        on_forward(l, requester, vc, seq);
        return;
    }
    send_req(CDSM_MSG_LOCK_FWD, t, l, requester, seq, vc, 0);
}

static int parse_req(const cdsm__msg_hdr_t *h, cdsm__rd_t *r, int *req, uint32_t *seq, const uint32_t **vc)
{
    *req = (int)cdsm__rd_u32(r);
    *seq = cdsm__rd_u32(r);
    *vc = cdsm__rd_take(r, cdsm__u32s((size_t)cdsm__w.n));
    if (r->bad || h->tag >= cdsm__lk.nlocks || *req < 0 || *req >= cdsm__w.n) {
        cdsm__log(CDSM_LOG_ERROR, "malformed lock message from rank %u", h->src);
        return CDSM_ERR_PROTOCOL;
    }
    return CDSM_OK;
}

/* A request (REQ: manager step) or forward: dropped if a rebuild placed it already, kept
 * while nothing may link a queue, else done. Caller holds mu. */
static void lock_step(int type, uint32_t l, int req, const uint32_t *vc, uint32_t seq)
{
    if (placed(l, req, seq)) return;
    if (cdsm__lk.frozen || cdsm__mode.replaying) {
        lk_wait_t *w = malloc(sizeof *w + cdsm__u32s((size_t)cdsm__w.n));
        cdsm_check(w != NULL);
        *w = (lk_wait_t){NULL, (uint16_t)type, l, (uint32_t)req, seq};
        memcpy(w->vc, vc, cdsm__u32s((size_t)cdsm__w.n));
        *waiting_end = w;
        waiting_end = &w->next;
        return;
    }
    if (type == CDSM_MSG_LOCK_REQ) {
        /* Where a rank can be replaced, remember each request taken: the replacement may
         * ask again for an acquire its lost process had asked for. */
        if (cdsm__cfg.spares) cdsm__lock_placed(l, req, seq);
        manager_step(l, req, vc, seq);
    } else {
        on_forward(l, req, vc, seq);
    }
}

void cdsm__lock_on_req(const cdsm__msg_hdr_t *h, cdsm__rd_t *r)
{
    int req;
    uint32_t seq;
    const uint32_t *vc;
    if (parse_req(h, r, &req, &seq, &vc)) return;
    cdsm_check(h->tag % (uint64_t)cdsm__w.n == (uint64_t)cdsm__w.rank);
    lock_step(CDSM_MSG_LOCK_REQ, (uint32_t)h->tag, req, vc, seq);
}

void cdsm__lock_on_fwd(const cdsm__msg_hdr_t *h, cdsm__rd_t *r)
{
    int req;
    uint32_t seq;
    const uint32_t *vc;
    if (parse_req(h, r, &req, &seq, &vc)) return;
    lock_step(CDSM_MSG_LOCK_FWD, (uint32_t)h->tag, req, vc, seq);
}

void cdsm__lock_waiting_foreach(void (*fn)(int type, uint32_t l, int req, uint32_t seq, void *arg), void *arg)
{
    for (lk_wait_t *w = waiting; w; w = w->next) fn(w->type, w->lock, (int)w->req, w->seq, arg);
}

void cdsm__lock_resume(void)
{
    lk_wait_t *w = waiting;
    waiting = NULL;
    waiting_end = &waiting;
    while (w) {
        lk_wait_t *nx = w->next;
        lock_step(w->type, w->lock, (int)w->req, w->vc, w->seq);
        free(w);
        w = nx;
    }
}

const cdsm__lock_t *cdsm__lock_get(uint32_t l)
{
    return cdsm__lock_entry(l);
}

void cdsm__lock_set_state(uint32_t l, int state)
{
    cdsm__lock_entry(l)->state = (uint8_t)state;
}

void cdsm__lock_set_waiting(uint32_t l, uint32_t seq)
{
    cdsm__lock_t *lk = cdsm__lock_entry(l);
    lk->state = CDSM_LK_WAITING;
    lk->req_seq = seq;
}

void cdsm__lock_set_tail(uint32_t l, int tail)
{
    cdsm__lock_entry(l)->tail = tail;
}

void cdsm__lock_freeze(int on)
{
    cdsm__lk.frozen = on;
}

static int check_id(const char *what, int id)
{
    if (!cdsm__g.initialized) return cdsm__error(CDSM_ERR_STATE, "%s(%d) before cdsm_init", what, id);
    if (id < 0 || (uint32_t)id >= cdsm__lk.nlocks)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "%s(%d): lock id out of range [0, %u) (CDSM_LOCKS)",
                           what, id, cdsm__lk.nlocks);
    return CDSM_OK;
}

/* Ask for lock id's token: its manager forwards the request to the last requester (or
 * this rank does, managing it). The request's receiver is woken only if it has not taken
 * the request itself by the time we stop waiting actively: a lock program's ranks call in
 * here often (CDSM_LATE_BELL_US). With shared lock words we join the queue ourselves,
 * and take the previous tail's token where we can (t->kind, LW_TOOK_*: then held, with
 * what t holds still to take: took_token). */
static int request_token(int id, uint32_t seq, cdsm__lw_taken_t *t)
{
    int mgr = id % cdsm__w.n;
    if (cdsm__lw_tail_shared((uint32_t)id)) {
        cdsm__lw_busy((uint32_t)id); /* (before we can be found as the tail) */
        int prev = cdsm__lw_swap_tail((uint32_t)id, cdsm__w.rank);
        if (prev == cdsm__w.rank)
            return cdsm__error(CDSM_ERR_PROTOCOL, "cdsm_lock_acquire(%d): the lock's queue ends at this rank, which "
                                                  "holds no token", id);
        t->prev = prev;
        if ((t->kind = cdsm__lw_take((uint32_t)id, prev, t))) return CDSM_OK;
        return send_req(CDSM_MSG_LOCK_FWD, prev, (uint32_t)id, cdsm__w.rank, seq, cdsm__g.vc, 1);
    }
    if (mgr != cdsm__w.rank) return send_req(CDSM_MSG_LOCK_REQ, mgr, (uint32_t)id, cdsm__w.rank, seq, cdsm__g.vc, 1);
    cdsm__tp_late(1); /* (the forward to the last requester, if lock_step sends one) */
    lock_step(CDSM_MSG_LOCK_REQ, (uint32_t)id, cdsm__w.rank, cdsm__g.vc, seq);
    cdsm__tp_late(0);
    return CDSM_OK;
}

/* Take what a grant brings, or a take of a published release from the boards: nrec
 * records at rd, then the diff part, all from src, whose clock is vc. Caller holds mu;
 * the protection batch opened here is closed by the caller. eager: the interval was
 * closed before the request. */
static int take_records(cdsm__lock_t *lk, cdsm__rd_t *rd, uint32_t nrec, int src, const uint32_t *vc, int eager)
{
    cdsm__state_t *g = &cdsm__g;
    /* Writes before the acquire may stay in the open interval, stamped after the
     * records when it closes (race-free programs cannot tell: no byte is written on both
     * sides, as for a lazy release); but a page the records name must have its writes in
     * a diff before their notices invalidate it. */
    if (g->lazy) {
        /* (nothing to match: an empty dirty set, and no close before the request) */
        lk->eager = (g->ndirty || eager) && cdsm__iv_names_written(*rd, nrec, eager ? g->vc[cdsm__w.rank] : 0);
        if (lk->eager && !eager) cdsm__close_interval();
    }
    /* From here to the return nothing waits and the program runs no shared access: each
     * page's protection is set once, when the caller ends the batch (a page invalidated
     * by the notices and made valid by the diffs keeps its protection). */
    cdsm__protect_batch(1);
    cdsm__patch_begin(cdsm__grant_diffs_on(), 0);
    int rc = cdsm__iv_incorporate(rd, nrec);
    if (!rc) rc = cdsm__grant_take_diffs(rd, src);
    cdsm__patch_end();
    if (rc) return rc;
    cdsm__vc_merge(g->vc, vc, cdsm__w.n);
    lk->state = CDSM_LK_HELD;
    return CDSM_OK;
}

/* Wait for the grant of our acquire `seq` of lock `id` and take it (caller holds mu; the
 * protection batch it opens is closed by the caller). */
static int await_grant(int id, cdsm__lock_t *lk, uint32_t seq, int eager)
{
    for (;;) {
        cdsm__reply_t *rep = cdsm__wait_reply(CDSM_MSG_LOCK_GRANT, (uint64_t)id);
        if (!rep) return cdsm__error(CDSM_ERR_PEER_LOST, "cdsm_lock_acquire(%d): rank %d was lost", id, cdsm__lost());
        cdsm__rd_t rd = {rep->payload, rep->hdr.len, 0, 0};
        grant_t gr;
        int rc = take_grant(&rd, &gr);
        if (!rc && gr.to_seq != seq) { /* a grant a replay took from the log already */
            cdsm__reply_free(rep);
            continue;
        }
        if (!rc) {
            cdsm__ft.grant_taken(rep->hdr.src, (uint32_t)id, seq, gr.grant_seq, gr.vc);
            rc = take_records(lk, &rd, gr.nrec, (int)rep->hdr.src, gr.vc, eager);
        }
        if (rc) cdsm__error(rc, "cdsm_lock_acquire(%d): malformed grant from rank %u", id, rep->hdr.src);
        cdsm__reply_free(rep);
        return rc;
    }
}

/* A token taken from a node-mate's word (request_token): held now, with what it brings. */
static int took_token(int id, cdsm__lock_t *lk, cdsm__lw_taken_t *t, int eager)
{
    if (t->kind == LW_TOOK_FRESH) CDSM_STAT_ADD(lock_claims, 1);
    if (t->kind == LW_TOOK_OLD) CDSM_STAT_ADD(lock_takes, 1);
    if (t->kind != LW_TOOK_RECORDS) {
        lk->state = CDSM_LK_HELD;
        return CDSM_OK;
    }
    CDSM_STAT_ADD(lock_takes_published, 1);
    cdsm__rd_t rd = {t->b.p, t->b.len, 0, 0};
    int rc = take_records(lk, &rd, t->nrec, t->prev, t->vc, eager);
    if (rc) cdsm__error(rc, "cdsm_lock_acquire(%d): malformed records on rank %d's board", id, t->prev);
    return rc;
}

int cdsm_lock_acquire(int id)
{
    cdsm__state_t *g = &cdsm__g;
    int rc = check_id("cdsm_lock_acquire", id);
    if (rc) return rc;
    if (cdsm__mode.fast_forward)
        return cdsm__error(CDSM_ERR_STATE, "cdsm_lock_acquire(%d) before cdsm_resume in a program that resumes from "
                                           "checkpoints (only allocations and cdsm_protect may come before it)", id);
    if (cdsm__node.on) return cdsm__node_lock_acquire(id);
    /* Serve requests that have arrived first: a forwarded request for this lock takes the
     * cached token away, so a rank re-acquiring in a loop cannot starve the others while
     * its service thread waits to be scheduled. */
    cdsm__tp_progress();
    pthread_mutex_lock(&g->mu);
    cdsm__lock_t *lk = cdsm__lock_entry(id);
    if (lk->state == CDSM_LK_HELD) {
        pthread_mutex_unlock(&g->mu);
        return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_lock_acquire(%d): already held by this rank", id);
    }
    /* (a node-mate may have taken the token cached here: then we ask like anyone) */
    if (lk->state == CDSM_LK_TOKEN && !cdsm__mode.replaying) {
        int kept = cdsm__lw_keep_token((uint32_t)id);
        hand_note(lk, !kept);
        if (!kept) lk->state = CDSM_LK_NONE;
    }
    /* With lazy release the interval goes on: a cached token (or a taken one)
     * brings nothing new, and a grant ends it only if it names a page written in it;
     * for a lock whose grants do (a queue both sides write), it ends before the request,
     * which keeps the close out of the critical section. */
    int eager = !g->lazy || (lk->state != CDSM_LK_TOKEN && lk->eager);
    if (eager) cdsm__close_interval();
    uint32_t seq = ++g->sync_seq;
    cdsm__conv_sync();
    CDSM_STAT_ADD(lock_acquires, 1);
    if (cdsm__mode.replaying) {
        cdsm__ft.replay_synced(); /* (an interval may have closed) */
        /* The lost process passed this acquire (from the log, or by itself), or this is
         * where it stopped: then the rank is live again and the rebuilt queue decides. */
        rc = cdsm__ft.replay_acquire((uint32_t)id, seq);
        if (rc || lk->state == CDSM_LK_HELD) goto out;
        cdsm_check(lk->state == CDSM_LK_WAITING);
        goto wait;
    }
    if (lk->state == CDSM_LK_TOKEN) {
        lk->state = CDSM_LK_HELD;
        CDSM_STAT_ADD(lock_acquires_local, 1);
        pthread_mutex_unlock(&g->mu);
        return CDSM_OK;
    }
    lk->state = CDSM_LK_WAITING;
    lk->req_seq = seq;
    cdsm__lw_taken_t t = {0};
    if (!(rc = request_token(id, seq, &t)) && t.kind) rc = took_token(id, lk, &t, eager);
    cdsm__buf_free(&t.b);
    free(t.vc);
    if (rc || t.kind) goto out;
wait:
    rc = await_grant(id, lk, seq, eager);
out:
    cdsm__protect_batch(0);
    pthread_mutex_unlock(&g->mu);
    if (!rc) cdsm__inject(cdsm__w.rank, "lock_held"); /* (a test's moment: a holder that dies) */
    return rc;
}

int cdsm_lock_release(int id)
{
    cdsm__state_t *g = &cdsm__g;
    int rc = check_id("cdsm_lock_release", id);
    if (rc) return rc;
    if (cdsm__node.on) return cdsm__node_lock_release(id);
    pthread_mutex_lock(&g->mu);
    cdsm__lock_t *lk = cdsm__lock_entry(id);
    if (lk->state != CDSM_LK_HELD) {
        pthread_mutex_unlock(&g->mu);
        return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_lock_release(%d): not held by this rank", id);
    }
    /* Lazy release: with nobody waiting the writes stay in the open interval, closed when
     * they must leave (cdsm__close_released at a grant; a remote acquire; a barrier). A
     * lock whose token keeps going to other processes after our releases is published
     * instead: the release closes the interval, and a node-mate takes the token with its
     * records from shared memory without waking us. */
    int publish = lk->next < 0 && !cdsm__mode.replaying && pub_pays(lk);
    lk->published = (uint8_t)publish;
    if (g->lazy && lk->next < 0 && !publish) {
        g->open_release = 1;
        CDSM_STAT_ADD(lazy_releases, 1);
    } else {
        cdsm__close_interval();
    }
    g->sync_seq++;
    cdsm__conv_sync();
    if (cdsm__mode.replaying) {
        cdsm__ft.replay_synced(); /* (an interval may have closed) */
        /* Whether the lost process passed the token on is known to the rebuild. */
        lk->state = CDSM_LK_NONE;
    } else if (lk->next >= 0) {
        int to = lk->next;
        lk->next = -1;
        lk->state = CDSM_LK_NONE;
        hand_note(lk, 1);
        rc = send_grant((uint32_t)id, to, lk->next_vc, lk->next_seq);
    } else {
        lk->state = CDSM_LK_TOKEN;
        /* A node-mate may take it once it has passed a barrier after this release, or
         * now if it was published. */
        cdsm__lw_release((uint32_t)id, publish);
    }
    pthread_mutex_unlock(&g->mu);
    if (!rc) rc = cdsm__tp_flush();
    return rc;
}
