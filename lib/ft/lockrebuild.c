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
 * Caller holds mu throughout; no MPI collective is used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "inject.h"
#include "recovery.h"

/* Waits of a recovery step for survivors' answers: looked at each step, given up after
 * the maximum (a survivor answers from its service thread within milliseconds). */
enum { FT_WAIT_STEP_MS = 200, FT_WAIT_MAX_MS = 60000 };

enum { ST_NONE = CDSM_LK_NONE, ST_TOKEN = CDSM_LK_TOKEN, ST_HELD = CDSM_LK_HELD, ST_WAITING = CDSM_LK_WAITING,
       ST_GRANTED = 4 };

static uint32_t report_state(const cdsm__lock_t *lk, uint32_t l)
{
    if (lk->state == CDSM_LK_WAITING && cdsm__lock_unread_grant(l, lk->req_seq)) return ST_GRANTED;
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

void cdsm__lk_on_freeze(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    cdsm__state_t *g = &cdsm__g;
    (void)rd;
    int r = h->src, n = cdsm__w.n;
    cdsm__inject(cdsm__w.rank, "lk_freeze"); /* (a test's moment: a survivor lost during a rebuild) */
    cdsm__lock_freeze(1);
    cdsm__buf_t b = {0};
    cdsm__buf_put_u32(&b, (uint32_t)cdsm__w.wn);
    for (int w = 0; w < cdsm__w.wn; w++) cdsm__buf_put_u32(&b, __atomic_load_n(&cdsm__w.lk_sent[w], __ATOMIC_ACQUIRE));
    for (int w = 0; w < cdsm__w.wn; w++) cdsm__buf_put_u32(&b, __atomic_load_n(&cdsm__w.lk_recv[w], __ATOMIC_ACQUIRE));
    size_t count_at = b.len;
    uint32_t count = 0;
    cdsm__buf_put_u32(&b, 0);
    for (uint32_t l = 0; l < cdsm__lk.nlocks; l++) {
        const cdsm__lock_t *lk = cdsm__lock_get(l);
        int mgr = (int)(l % (uint32_t)n) == cdsm__w.rank;
        int to_r = lk->last_to == r;
        /* (For a lock the lost rank managed, our last request: a copy of it sent again to
         * the replacement after it was answered must be dropped.) */
        int asked_r = (int)(l % (uint32_t)n) == r && lk->req_seq;
        if (lk->state == CDSM_LK_NONE && lk->next < 0 && !to_r && !asked_r && !(mgr && lk->tail != cdsm__w.rank)) continue;
        uint32_t st = report_state(lk, l);
        cdsm__buf_put_u32(&b, l);
        cdsm__buf_put_u32(&b, st);
        cdsm__buf_put_u32(&b, lk->req_seq);
        cdsm__buf_put_u32(&b, (uint32_t)lk->next);
        cdsm__buf_put_u32(&b, lk->next_seq);
        cdsm__buf_put_u32(&b, to_r ? lk->last_to_seq : 0);
        cdsm__buf_put_u32(&b, (uint32_t)(mgr ? lk->tail : -1));
        if (st == ST_WAITING || st == ST_GRANTED) cdsm__buf_put(&b, g->vc, cdsm__u32s((size_t)n));
        count++;
    }
    memcpy(b.p + count_at, &count, sizeof count);
    size_t nfwd_at = b.len;
    cdsm__buf_put_u32(&b, 0);
    struct put_fwd pf = {&b, 0};
    cdsm__lock_waiting_foreach(put_fwd, &pf);
    memcpy(b.p + nfwd_at, &pf.count, 4);
    cdsm__tp_send(r, CDSM_MSG_LK_STATE, h->tag, b.p, b.len, NULL, 0);
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

void cdsm__lk_on_rebuild(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    int n = cdsm__w.n;
    uint32_t nent = cdsm__rd_u32(rd);
    for (uint32_t e = 0; e < nent && !rd->bad; e++) {
        uint32_t l = cdsm__rd_u32(rd);
        int tail = (int)cdsm__rd_u32(rd), from = (int)cdsm__rd_u32(rd);
        uint32_t k = cdsm__rd_u32(rd);
        if (rd->bad || l >= cdsm__lk.nlocks || k > (uint32_t)n) break;
        int rank[k > 0 ? k : 1];
        uint32_t seq[k > 0 ? k : 1];
        const uint32_t *vc[k > 0 ? k : 1];
        for (uint32_t i = 0; i < k; i++) {
            rank[i] = (int)cdsm__rd_u32(rd);
            seq[i] = cdsm__rd_u32(rd);
            vc[i] = cdsm__rd_u32(rd) ? cdsm__rd_take(rd, cdsm__u32s((size_t)n)) : NULL;
            if (rank[i] < 0 || rank[i] >= n) rd->bad = 1;
        }
        if (rd->bad) break;
        for (uint32_t i = 0; i < k; i++)
            if (vc[i]) cdsm__lock_placed(l, rank[i], seq[i]);
        if ((int)(l % (uint32_t)n) == cdsm__w.rank) cdsm__lock_set_tail(l, tail);
        for (uint32_t i = 0; i + 1 < k; i++)
            if (rank[i] == cdsm__w.rank) cdsm__lock_link(l, rank[i + 1], vc[i + 1], seq[i + 1]);
        if (k > 0 && rank[k - 1] == cdsm__w.rank) cdsm__lock_link(l, -1, NULL, 0);
        if (from == cdsm__w.rank && k > 0 && vc[0]) {
            struct regrant rg = {l, seq[0], rank[0], vc[0], 0};
            cdsm__det_foreach(regrant_one, &rg);
            if (!rg.done)
                cdsm__log(CDSM_LOG_ERROR, "lock %u: no log entry of the grant to rank %d to send again", l, rank[0]);
        }
    }
    if (rd->bad) cdsm__log(CDSM_LOG_ERROR, "malformed lock rebuild from rank %u", h->src);
    cdsm__lock_freeze(0);
    cdsm__lock_resume();
    cdsm__recover_done(h->src); /* the replacement is live */
}

/* ---- the replacement ------------------------------------------------------------------ */

typedef struct node {
    uint32_t st, seq, nseq, to_r_seq;
    int next, tail;
    const uint32_t *vc;
    int virt; /* the replacement, queued for an acquire it has not reached again */
} node_t;

typedef struct report {
    cdsm__reply_t *rep;
    const uint32_t *sent, *recv; /* wn each (unaligned-safe copies below) */
} report_t;

static uint32_t u32_at(const uint32_t *p, int i)
{
    uint32_t v;
    memcpy(&v, (const uint8_t *)p + cdsm__u32s((size_t)i), sizeof v);
    return v;
}

/* The counts of lock messages match pairwise between live processes. */
static int quiet(const report_t *rp)
{
    for (int p = 0; p < cdsm__w.n; p++)
        for (int q = 0; q < cdsm__w.n; q++) {
            if (p == q) continue;
            int wp = cdsm__w.phys[p], wq = cdsm__w.phys[q];
            uint32_t sent = p == cdsm__w.rank ? __atomic_load_n(&cdsm__w.lk_sent[wq], __ATOMIC_ACQUIRE) : u32_at(rp[p].sent, wq);
            uint32_t recv = q == cdsm__w.rank ? __atomic_load_n(&cdsm__w.lk_recv[wp], __ATOMIC_ACQUIRE) : u32_at(rp[q].recv, wp);
            if (sent != recv) return 0;
        }
    return 1;
}

/* The reports as one row of n nodes per lock, made for the locks some report names:
 * lock ids are many (CDSM_LOCKS), the locks in use few. */
static void reset_row(node_t *nd)
{
    for (int q = 0; q < cdsm__w.n; q++) nd[q] = (node_t){ST_NONE, 0, 0, 0, -1, -1, NULL, 0};
}

static node_t *row_of(node_t **rows, uint32_t l)
{
    if (!rows[l] && (rows[l] = malloc((size_t)cdsm__w.n * sizeof **rows))) reset_row(rows[l]);
    return rows[l];
}

/* Fill rows[l][q] from survivor q's report. */
static int take_report(int q, cdsm__rd_t *rd, report_t *rp, node_t **rows)
{
    int n = cdsm__w.n;
    uint32_t wn = cdsm__rd_u32(rd);
    if (wn != (uint32_t)cdsm__w.wn) return CDSM_ERR_PROTOCOL;
    rp->sent = cdsm__rd_take(rd, cdsm__u32s((size_t)wn));
    rp->recv = cdsm__rd_take(rd, cdsm__u32s((size_t)wn));
    uint32_t count = cdsm__rd_u32(rd);
    for (uint32_t e = 0; e < count && !rd->bad; e++) {
        uint32_t l = cdsm__rd_u32(rd);
        if (l >= cdsm__lk.nlocks) return CDSM_ERR_PROTOCOL;
        if (!row_of(rows, l)) return CDSM_ERR_NOMEM;
        node_t *nd = &rows[l][q];
        nd->st = cdsm__rd_u32(rd);
        nd->seq = cdsm__rd_u32(rd);
        nd->next = (int)cdsm__rd_u32(rd);
        nd->nseq = cdsm__rd_u32(rd);
        nd->to_r_seq = cdsm__rd_u32(rd);
        nd->tail = (int)cdsm__rd_u32(rd);
        if (nd->st == ST_WAITING || nd->st == ST_GRANTED) nd->vc = cdsm__rd_take(rd, cdsm__u32s((size_t)n));
        if (nd->st > ST_GRANTED || nd->next >= n || nd->tail >= n) return CDSM_ERR_PROTOCOL;
    }
    uint32_t nfwd = cdsm__rd_u32(rd);
    for (uint32_t e = 0; e < nfwd && !rd->bad; e++) {
        uint32_t l = cdsm__rd_u32(rd), req = cdsm__rd_u32(rd), seq = cdsm__rd_u32(rd);
        if (l >= cdsm__lk.nlocks || req >= (uint32_t)n) return CDSM_ERR_PROTOCOL;
        if (!row_of(rows, l)) return CDSM_ERR_NOMEM;
        node_t *nd = &rows[l][q];
        if (nd->next < 0) { /* a forward held back is a link made before the freeze */
            nd->next = (int)req;
            nd->nseq = seq;
        }
    }
    return rd->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

struct own_fwd {
    node_t **rows;
    int nomem;
};

/* A forward this process holds back: its successor link (st, seq and vc: own_node). */
static void own_fwd(int type, uint32_t l, int req, uint32_t seq, void *arg)
{
    struct own_fwd *of = arg;
    if (type != CDSM_MSG_LOCK_FWD) return;
    if (!row_of(of->rows, l)) {
        of->nomem = 1;
        return;
    }
    node_t *nd = &of->rows[l][cdsm__w.rank];
    if (nd->next < 0) {
        nd->next = req;
        nd->nseq = seq;
    }
}

/* This process's own part of lock l's row: its replayed state. */
static void own_node(uint32_t l, node_t *nd)
{
    const cdsm__lock_t *lk = cdsm__lock_get(l);
    nd += cdsm__w.rank;
    /* A cached token is not known from the replay: only held and waiting are. */
    nd->st = lk->state == CDSM_LK_HELD ? ST_HELD : lk->state == CDSM_LK_WAITING ? report_state(lk, l) : ST_NONE;
    nd->seq = lk->req_seq;
    nd->vc = cdsm__g.vc;
}

static int waits(const node_t *nd)
{
    return nd->st == ST_WAITING || nd->st == ST_GRANTED;
}

/* The queue of one lock: chain[0] holds the token. Returns its length, or -1 (and logs)
 * if the reports contradict each other. *regrant: the survivor to send a lost grant again. */
static int rebuild_one(uint32_t l, node_t *nd, int *chain, int *regrant)
{
    cdsm__state_t *g = &cdsm__g;
    int n = cdsm__w.n, me = cdsm__w.rank, holder = -1, holders = 0;
    *regrant = -1;
    /* A link to this rank for an acquire beyond where its replay stands: its lost process
     * asked for it (having passed this point with tokens it held); the replacement will
     * ask again there, and the request stays queued meanwhile. */
    if (nd[me].st == ST_NONE)
        for (int x = 0; x < n; x++)
            if (x != me && nd[x].next == me && nd[x].nseq > g->sync_seq) {
                nd[me].st = ST_WAITING;
                nd[me].seq = nd[x].nseq;
                nd[me].virt = 1;
            }
    for (int q = 0; q < n; q++) {
        if (q != me && nd[me].st == ST_WAITING && !nd[me].virt && nd[q].to_r_seq && nd[q].to_r_seq == nd[me].seq)
            *regrant = q;
        if (nd[q].st == ST_TOKEN || nd[q].st == ST_HELD || nd[q].st == ST_GRANTED) {
            holder = q;
            holders++;
        }
    }
    if (*regrant >= 0) {
        holder = me;
        holders++;
    }
    if (holders > 1) {
        cdsm__log(CDSM_LOG_ERROR, "lock %u: the reports put its token at %d ranks", l, holders);
        return -1;
    }
    if (holder < 0) { /* with the lost process, or its grant never left it */
        holder = me;
        if (nd[me].st == ST_NONE) nd[me].st = ST_TOKEN;
        if (nd[me].virt) { /* it holds the token and asked again later: a contradiction */
            cdsm__log(CDSM_LOG_ERROR, "lock %u: nobody holds its token, yet rank %d's lost process asked for it", l, me);
            return -1;
        }
    }
    int k = 0;
    uint8_t in[n];
    memset(in, 0, sizeof in);
    for (int x = holder; x >= 0 && !in[x];) {
        chain[k++] = x;
        in[x] = 1;
        int y = nd[x].next;
        x = y >= 0 && waits(&nd[y]) && nd[y].seq == nd[x].nseq ? y : -1;
    }
    /* Waiters whose link was lost: each with the waiters linked after it. */
    for (int pass = 0; pass < n; pass++)
        for (int y = 0; y < n; y++) {
            if (in[y] || !waits(&nd[y])) continue;
            int linked = 0;
            for (int x = 0; x < n; x++)
                if (!in[x] && x != y && nd[x].next == y && nd[x].nseq == nd[y].seq && waits(&nd[x])) linked = 1;
            if (linked && pass == 0) continue; /* placed with the head of its part */
            for (int x = y; x >= 0 && !in[x];) {
                chain[k++] = x;
                in[x] = 1;
                int z = nd[x].next;
                x = z >= 0 && waits(&nd[z]) && nd[z].seq == nd[x].nseq ? z : -1;
            }
        }
    return k;
}

int cdsm__ft_wait_each(int req_type, int type, uint64_t tag, int *sent_to, const char *what, cdsm__reply_t **out)
{
    uint64_t t0 = cdsm__mono_ns();
    for (;;) {
        int late = 0;
        cdsm__reply_t *r = cdsm__wait_reply_for(type, tag, FT_WAIT_STEP_MS, &late);
        if (r) {
            sent_to[r->hdr.src] = -1;
            *out = r;
            return CDSM_OK;
        }
        if (!late) return cdsm__error(CDSM_ERR_PEER_LOST, "%s: rank %d was lost", what, cdsm__lost());
        /* Asked of a process that has been replaced since: it died before it answered.
         * Ask its replacement (it answers once it has taken the rank over). */
        for (int q = 0; q < cdsm__w.n; q++)
            if (sent_to[q] >= 0 && cdsm__w.phys[q] != sent_to[q]) {
                cdsm__log(CDSM_LOG_INFO, "%s: rank %d was lost before it answered; asking its replacement", what, q);
                sent_to[q] = cdsm__w.phys[q];
                int rc = cdsm__tp_send(q, req_type, tag, NULL, 0, NULL, 0);
                if (rc) return rc;
            }
        if ((cdsm__mono_ns() - t0) / 1000000u >= FT_WAIT_MAX_MS)
            for (int q = 0; q < cdsm__w.n; q++)
                if (sent_to[q] >= 0)
                    return cdsm__error(CDSM_ERR_PEER_LOST, "%s: no answer from rank %d in %d s", what, q,
                                       FT_WAIT_MAX_MS / 1000);
    }
}

/* Freeze the survivors and gather their reports until two rounds in a row agree on the
 * lock message counts (a consistent cut), into rows (one per lock named). Caller holds mu. */
static int gather_reports(node_t **rows, report_t *rp)
{
    int n = cdsm__w.n, me = cdsm__w.rank, rc = CDSM_OK;
    /* Round 1 freezes everybody; a later round whose counts match is a consistent cut. */
    int *sent_to = malloc((size_t)n * sizeof *sent_to);
    if (!sent_to) return cdsm__error(CDSM_ERR_NOMEM, "rebuilding the lock queues");
    for (uint32_t round = 1;; round++) {
        for (int q = 0; q < n && !rc; q++) {
            sent_to[q] = q == me ? -1 : cdsm__w.phys[q];
            if (q != me) rc = cdsm__tp_send(q, CDSM_MSG_LK_FREEZE, round, NULL, 0, NULL, 0);
        }
        for (int i = 0; i < n - 1 && !rc; i++) {
            cdsm__reply_t *rep = NULL;
            if ((rc = cdsm__ft_wait_each(CDSM_MSG_LK_FREEZE, CDSM_MSG_LK_STATE, round, sent_to, "rebuilding the lock queues", &rep))) break;
            cdsm__reply_free(rp[rep->hdr.src].rep);
            rp[rep->hdr.src].rep = rep;
        }
        if (rc) break;
        for (uint32_t l = 0; l < cdsm__lk.nlocks; l++)
            if (rows[l]) reset_row(rows[l]);
        for (int q = 0; q < n && !rc; q++) {
            if (q == me) continue;
            cdsm__rd_t rd = {rp[q].rep->payload, rp[q].rep->hdr.len, 0, 0};
            if ((rc = take_report(q, &rd, &rp[q], rows)) == CDSM_ERR_NOMEM)
                rc = cdsm__error(rc, "rebuilding the lock queues: the report of rank %d", q);
            else if (rc)
                rc = cdsm__error(CDSM_ERR_PROTOCOL, "rebuilding the lock queues: malformed report from rank %d", q);
        }
        if (rc || (round >= 2 && quiet(rp))) break;
        if (round >= 5000) {
            rc = cdsm__error(CDSM_ERR_PROTOCOL,
                             "rebuilding the lock queues: lock messages still in flight after %u rounds", round);
            break;
        }
        if (round >= 2) { /* a message between two survivors is on its way: let it land */
            pthread_mutex_unlock(&cdsm__g.mu);
            nanosleep(&(struct timespec){0, 1000000}, NULL);
            pthread_mutex_lock(&cdsm__g.mu);
        }
    }
    free(sent_to);
    return rc;
}

/* The rebuilt queue of lock l on the wire (LK_REBUILD entry), and in the log. */
static void put_queue(cdsm__buf_t *b, uint32_t l, const node_t *nd, const int *chain, int k, int tail, int regrant,
                      int mtail)
{
    int n = cdsm__w.n, mgr = (int)(l % (uint32_t)n);
    cdsm__buf_put_u32(b, l);
    cdsm__buf_put_u32(b, (uint32_t)tail);
    cdsm__buf_put_u32(b, (uint32_t)regrant);
    cdsm__buf_put_u32(b, (uint32_t)k);
    for (int i = 0; i < k; i++) {
        const node_t *x = &nd[chain[i]];
        int w = waits(x) && x->vc;
        cdsm__buf_put_u32(b, (uint32_t)chain[i]);
        cdsm__buf_put_u32(b, x->seq);
        cdsm__buf_put_u32(b, (uint32_t)w);
        if (w) cdsm__buf_put(b, x->vc, cdsm__u32s((size_t)n));
    }
    char line[256];
    int len = snprintf(line, sizeof line, "lock %u: queue", l);
    for (int i = 0; i < k && len < (int)sizeof line - 24; i++)
        len += snprintf(line + len, sizeof line - (size_t)len, " %d%s(%u)", chain[i],
                        i == 0 ? (regrant >= 0 ? "*regrant" : "*") : nd[chain[i]].virt ? "~" : "", nd[chain[i]].seq);
    cdsm__log(CDSM_LOG_INFO, "%s, tail %d (manager %d had %d)", line, tail, mgr, mtail);
}

/* Rebuild lock l's queue from the reports (nd: n nodes): take this rank's own part, and
 * put an entry for the survivors in b when their view must change. Returns 1 if an entry
 * was put, 0 if not, -1 if the reports contradict each other. */
static int rebuild_lock(uint32_t l, node_t *nd, int *chain, cdsm__buf_t *b)
{
    int n = cdsm__w.n, me = cdsm__w.rank, regrant, k = rebuild_one(l, nd, chain, &regrant);
    if (k < 0) return -1;
    int mgr = (int)(l % (uint32_t)n), tail = chain[k - 1];
    if (mgr == me) /* requests its lost process took (the queue below places the open ones) */
        for (int q = 0; q < n; q++)
            if (q != me && nd[q].seq) cdsm__lock_placed(l, q, nd[q].seq);
    /* The replacement's own part. */
    int state = cdsm__lock_get(l)->state;
    if (chain[0] == me) {
        if (nd[me].st == ST_TOKEN) state = CDSM_LK_TOKEN;
        else if (nd[me].st == ST_WAITING && regrant < 0) state = CDSM_LK_HELD; /* the token was here */
    } else if (state == CDSM_LK_TOKEN) {
        state = CDSM_LK_NONE; /* the initial token of a lock it manages moved on */
    }
    cdsm__lock_set_state(l, state);
    if (mgr == me) cdsm__lock_set_tail(l, tail);
    int mtail = nd[mgr].tail >= 0 ? nd[mgr].tail : mgr; /* a manager reports a tail other than itself */
    int stale = nd[tail].next >= 0; /* the last one's successor link leads nowhere: cut it */
    if (tail == me && stale) cdsm__lock_link(l, -1, NULL, 0);
    if (k < 2 && regrant < 0 && !stale && (mgr == me || mtail == tail)) return 0;
    put_queue(b, l, nd, chain, k, tail, regrant, mtail);
    for (int i = 0; i < k; i++)
        if (waits(&nd[chain[i]])) cdsm__lock_placed(l, chain[i], nd[chain[i]].seq);
    for (int i = 0; i + 1 < k; i++)
        if (chain[i] == me) cdsm__lock_link(l, chain[i + 1], nd[chain[i + 1]].vc, nd[chain[i + 1]].seq);
    return 1;
}

int cdsm__lock_rebuild(void)
{
    int n = cdsm__w.n, me = cdsm__w.rank, rc = CDSM_OK;
    node_t **rows = calloc(cdsm__lk.nlocks, sizeof *rows), *idle = malloc((size_t)n * sizeof *idle);
    report_t *rp = calloc((size_t)n, sizeof *rp);
    int *chain = malloc((size_t)n * sizeof *chain);
    cdsm__buf_t b = {0};
    uint32_t nent = 0;
    struct own_fwd of = {rows, 0};
    if (!rows || !idle || !rp || !chain) {
        rc = cdsm__error(CDSM_ERR_NOMEM, "lock rebuild");
        goto out;
    }
    if ((rc = gather_reports(rows, rp))) goto out;
    cdsm__lock_waiting_foreach(own_fwd, &of);
    if (of.nomem) {
        rc = cdsm__error(CDSM_ERR_NOMEM, "lock rebuild: the forwards held back");
        goto out;
    }
    cdsm__buf_put_u32(&b, 0); /* entries, patched */
    for (uint32_t l = 0; l < cdsm__lk.nlocks && !rc; l++) {
        /* A lock no report names: every survivor's part is the idle default. */
        node_t *nd = rows[l] ? rows[l] : idle;
        if (!rows[l]) reset_row(idle);
        own_node(l, nd);
        int put = rebuild_lock(l, nd, chain, &b);
        if (put < 0)
            rc = cdsm__error(CDSM_ERR_PROTOCOL,
                             "rebuilding the queue of lock %u: the survivors' reports contradict each other", l);
        else
            nent += (uint32_t)put;
    }
    memcpy(b.p, &nent, sizeof nent);
    for (int q = 0; q < n && !rc; q++)
        if (q != me) rc = cdsm__tp_send(q, CDSM_MSG_LK_REBUILD, 0, b.p, b.len, NULL, 0);
    if (!rc) cdsm__log(CDSM_LOG_INFO, "rank %d: lock queues rebuilt (%u queues changed)", me, nent);
out:
    cdsm__buf_free(&b);
    for (int q = 0; rp && q < n; q++) cdsm__reply_free(rp[q].rep);
    free(rp);
    for (uint32_t l = 0; rows && l < cdsm__lk.nlocks; l++) free(rows[l]);
    free(rows);
    free(idle);
    free(chain);
    cdsm__lock_freeze(0);
    cdsm__lock_resume();
    return rc;
}
