/* The replacement's side of a lock rebuild (lockrebuild.c says what is rebuilt and why).
 *
 * One rebuild runs for every replacement that goes live together: the lowest rank being
 * replayed leads (lockjoint.c); the others wait at their live points and report like
 * survivors, flagged as replacements, with their replayed state and what the grants they
 * have heard of say of each token (DESIGN, "Two ranks lost at once"). With one
 * replacement the rebuild is the one it always was.
 *
 * Caller holds mu throughout; no MPI collective is used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recovery.h"

/* Waits of a recovery step for survivors' answers: looked at each step, given up after
 * the maximum (a survivor answers from its service thread within milliseconds; a
 * replacement still replaying answers at its live point, and is waited for while its
 * replay lasts). */
enum { FT_WAIT_STEP_MS = 200, FT_WAIT_MAX_MS = 60000 };

typedef struct node {
    uint32_t st, seq, nseq, to_seq; /* to_seq: the acquire of its last grant (to `to`) */
    int next, tail, to;
    const uint32_t *vc;
    int virt; /* a replacement, queued for an acquire it has not reached again */
    int given; /* holds the token now, which it did not know it had */
} node_t;

typedef struct report {
    cdsm__reply_t *rep;
    const uint32_t *sent, *recv; /* wn each (unaligned-safe copies below) */
    int repl;                    /* a replacement at its live point */
    uint32_t sync;               /* its synchronisation number */
} report_t;

/* The rebuild under way: which ranks are replacements made live by it. */
static struct rebuild {
    report_t *rp;
    int joint; /* another replacement reported */
} RB;

static int is_repl(int q)
{
    return q == cdsm__w.rank || RB.rp[q].repl;
}

static uint32_t sync_of(int q)
{
    return q == cdsm__w.rank ? cdsm__g.sync_seq : RB.rp[q].sync;
}

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
    for (int q = 0; q < cdsm__w.n; q++) nd[q] = (node_t){CDSM_LKR_NONE, 0, 0, 0, -1, -1, -1, NULL, 0, 0};
}

static node_t *row_of(node_t **rows, uint32_t l)
{
    if (!rows[l] && (rows[l] = malloc((size_t)cdsm__w.n * sizeof **rows))) reset_row(rows[l]);
    return rows[l];
}

/* One report's entry for lock l into nd (rank q's node). */
static int take_node(cdsm__rd_t *rd, node_t *nd)
{
    int n = cdsm__w.n;
    nd->st = cdsm__rd_u32(rd);
    nd->seq = cdsm__rd_u32(rd);
    nd->next = (int)cdsm__rd_u32(rd);
    nd->nseq = cdsm__rd_u32(rd);
    nd->to = (int)cdsm__rd_u32(rd);
    nd->to_seq = cdsm__rd_u32(rd);
    nd->tail = (int)cdsm__rd_u32(rd);
    if (nd->st == CDSM_LKR_WAITING || nd->st == CDSM_LKR_GRANTED) nd->vc = cdsm__rd_take(rd, cdsm__u32s((size_t)n));
    if (nd->st > CDSM_LKR_GRANTED || nd->next >= n || nd->tail >= n || nd->to >= n) return CDSM_ERR_PROTOCOL;
    return rd->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

/* Fill rows[l][q] from rank q's report. */
static int take_report(int q, cdsm__rd_t *rd, report_t *rp, node_t **rows)
{
    int n = cdsm__w.n;
    uint32_t wn = cdsm__rd_u32(rd);
    if (wn != (uint32_t)cdsm__w.wn) return CDSM_ERR_PROTOCOL;
    rp->sent = cdsm__rd_take(rd, cdsm__u32s((size_t)wn));
    rp->recv = cdsm__rd_take(rd, cdsm__u32s((size_t)wn));
    rp->repl = cdsm__rd_u32(rd) != 0;
    rp->sync = cdsm__rd_u32(rd);
    uint32_t count = cdsm__rd_u32(rd);
    for (uint32_t e = 0; e < count && !rd->bad; e++) {
        uint32_t l = cdsm__rd_u32(rd);
        if (l >= cdsm__lk.nlocks) return CDSM_ERR_PROTOCOL;
        if (!row_of(rows, l)) return CDSM_ERR_NOMEM;
        if (take_node(rd, &rows[l][q])) return CDSM_ERR_PROTOCOL;
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

/* This process's own part of lock l's row: its replayed state. Alone, a cached token is
 * not known from the replay (only held and waiting are) and the token is here if nowhere
 * else; together with other replacements, the grants it heard of say where it is. */
static void own_node(uint32_t l, node_t *nd)
{
    const cdsm__lock_t *lk = cdsm__lock_get(l);
    nd += cdsm__w.rank;
    nd->st = cdsm__lk_report_state(lk, l);
    if (!RB.joint && nd->st == CDSM_LKR_TOKEN) nd->st = CDSM_LKR_NONE;
    nd->seq = lk->req_seq;
    nd->vc = cdsm__g.vc;
    if (RB.joint) nd->to = cdsm__lk_know_last_to(l, &nd->to_seq);
}

static int waits(const node_t *nd)
{
    return nd->st == CDSM_LKR_WAITING || nd->st == CDSM_LKR_GRANTED;
}

/* A link to replacement x for an acquire beyond where its replay stands: its lost process
 * asked for it (having passed that point with tokens it held); the replacement will ask
 * again there, and the request stays queued meanwhile. */
static void mark_virtual(node_t *nd, int x)
{
    if (nd[x].st != CDSM_LKR_NONE) return;
    for (int y = 0; y < cdsm__w.n; y++)
        if (y != x && nd[y].next == x && nd[y].nseq > sync_of(x)) {
            nd[x].st = CDSM_LKR_WAITING;
            nd[x].seq = nd[y].nseq;
            nd[x].virt = 1;
        }
}

/* Where lock l's token is (-1: the reports contradict each other, logged). *regrant: the
 * rank to send a grant the holder never read again. */
static int find_holder(uint32_t l, node_t *nd, int *regrant)
{
    int n = cdsm__w.n, me = cdsm__w.rank, holder = -1, holders = 0;
    *regrant = -1;
    for (int x = 0; x < n; x++) {
        if (!is_repl(x)) continue;
        mark_virtual(nd, x);
        for (int q = 0; q < n; q++)
            if (q != x && nd[x].st == CDSM_LKR_WAITING && !nd[x].virt && nd[q].to == x && nd[q].to_seq == nd[x].seq) {
                *regrant = q;
                holder = x;
                holders++;
            }
    }
    for (int q = 0; q < n; q++) /* (a replacement's cached token is no evidence by itself) */
        if ((nd[q].st == CDSM_LKR_TOKEN && !is_repl(q)) || nd[q].st == CDSM_LKR_HELD || nd[q].st == CDSM_LKR_GRANTED) {
            holder = q;
            holders++;
        }
    if (!holders && RB.joint) /* at the replacement where the grants heard of end */
        for (int x = 0; x < n; x++)
            if (is_repl(x) && cdsm__lk_know_hold_of(x, l)) {
                holder = x;
                holders++;
            }
    if (holders > 1) {
        char line[160];
        int len = 0;
        for (int q = 0; q < n && len < (int)sizeof line - 32; q++)
            len += snprintf(line + len, sizeof line - (size_t)len, " %d:%u%s%s", q, nd[q].st, is_repl(q) ? "r" : "",
                            is_repl(q) && cdsm__lk_know_hold_of(q, l) ? "h" : "");
        cdsm__log(CDSM_LOG_ERROR, "lock %u: the reports put its token at %d ranks (rank:state%s)", l, holders, line);
        return -1;
    }
    if (holder < 0) { /* with the lost process, or its grant never left it */
        holder = me;
        if (RB.joint) /* (the grants heard of always end somewhere: a contradiction) */
            cdsm__log(CDSM_LOG_WARN, "lock %u: no report says where its token is; rank %d takes it", l, me);
        if (nd[me].virt) { /* it holds the token and asked again later: a contradiction */
            cdsm__log(CDSM_LOG_ERROR, "lock %u: nobody holds its token, yet rank %d's lost process asked for it", l, me);
            return -1;
        }
    }
    if (nd[holder].st == CDSM_LKR_NONE) {
        nd[holder].st = CDSM_LKR_TOKEN;
        nd[holder].given = 1;
    }
    return holder;
}

/* The queue of one lock: chain[0] holds the token. Returns its length, or -1 (and logs)
 * if the reports contradict each other. *regrant: the rank to send a lost grant again. */
static int rebuild_one(uint32_t l, node_t *nd, int *chain, int *regrant)
{
    int n = cdsm__w.n, holder = find_holder(l, nd, regrant);
    if (holder < 0) return -1;
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
    uint64_t t0 = cdsm__mono_ns(), said_ms = FT_WAIT_MAX_MS;
    for (;;) {
        int late = 0;
        cdsm__reply_t *r = cdsm__wait_reply_for(type, tag, FT_WAIT_STEP_MS, &late);
        if (r) {
            sent_to[r->hdr.src] = -1;
            *out = r;
            return CDSM_OK;
        }
        if (!late) return cdsm__error(CDSM_ERR_PEER_LOST, "%s: rank %d was lost", what, cdsm__lost());
        /* A lower rank being replayed leads this rebuild (lockjoint.c): give way. */
        if (type == CDSM_MSG_LK_STATE && (cdsm__lk_lower_replayed() || cdsm__lk_made_live())) return CDSM__LK_GIVE_WAY;
        /* Asked of a process that has been replaced since: it died before it answered.
         * Ask its replacement (it answers once it has taken the rank over). */
        for (int q = 0; q < cdsm__w.n; q++)
            if (sent_to[q] >= 0 && cdsm__w.phys[q] != sent_to[q]) {
                cdsm__log(CDSM_LOG_INFO, "%s: rank %d was lost before it answered; asking its replacement", what, q);
                sent_to[q] = cdsm__w.phys[q];
                int rc = cdsm__tp_send(q, req_type, tag, NULL, 0, NULL, 0);
                if (rc) return rc;
            }
        /* A replacement still replaying is waited for while it replays (said each minute). */
        uint64_t waited_ms = (cdsm__mono_ns() - t0) / 1000000u;
        if (waited_ms >= FT_WAIT_MAX_MS)
            for (int q = 0; q < cdsm__w.n; q++) {
                if (sent_to[q] < 0) continue;
                if (!cdsm__member_replayed_now(q))
                    return cdsm__error(CDSM_ERR_PEER_LOST, "%s: no answer from rank %d in %d s", what, q,
                                       FT_WAIT_MAX_MS / 1000);
                if (cdsm__cfg.replay_wait_s && waited_ms >= cdsm__cfg.replay_wait_s * 1000u)
                    return cdsm__error(CDSM_ERR_PEER_LOST, "%s: rank %d is still being replayed after %llu s "
                                       "(CDSM_REPLAY_WAIT)", what, q, (unsigned long long)(waited_ms / 1000));
                if (waited_ms >= said_ms)
                    cdsm__log(CDSM_LOG_WARN, "%s: rank %d is still being replayed after %llu s", what, q,
                              (unsigned long long)(waited_ms / 1000));
            }
        if (waited_ms >= said_ms) said_ms = waited_ms + FT_WAIT_MAX_MS;
    }
}

/* Freeze the others and gather their reports until two rounds in a row agree on the lock
 * message counts (a consistent cut), into rows (one per lock named). CDSM__LK_GIVE_WAY: a
 * lower rank being replayed leads instead. Caller holds mu. */
static int gather_reports(node_t **rows, report_t *rp)
{
    static uint32_t rounds; /* (numbered across rebuilds: a late answer is never taken for a new one) */
    int n = cdsm__w.n, me = cdsm__w.rank, rc = CDSM_OK;
    int *sent_to = malloc((size_t)n * sizeof *sent_to);
    if (!sent_to) return cdsm__error(CDSM_ERR_NOMEM, "rebuilding the lock queues");
    /* Round 1 freezes everybody; a later round whose counts match is a consistent cut. */
    for (uint32_t round = 1;; round++) {
        uint32_t tag = ++rounds;
        for (int q = 0; q < n && !rc; q++) {
            sent_to[q] = q == me ? -1 : cdsm__w.phys[q];
            if (q != me) rc = cdsm__tp_send(q, CDSM_MSG_LK_FREEZE, tag, NULL, 0, NULL, 0);
        }
        for (int i = 0; i < n - 1 && !rc; i++) {
            cdsm__reply_t *rep = NULL;
            if ((rc = cdsm__ft_wait_each(CDSM_MSG_LK_FREEZE, CDSM_MSG_LK_STATE, tag, sent_to, "rebuilding the lock queues", &rep))) break;
            cdsm__reply_free(rp[rep->hdr.src].rep);
            rp[rep->hdr.src].rep = rep;
        }
        if (rc) break;
        /* Another replacement leads, or made this one live already: give way between rounds
         * (no freeze of ours is then on its way to anyone: every one was answered). */
        if (cdsm__lk_lower_replayed() || cdsm__lk_made_live()) {
            rc = CDSM__LK_GIVE_WAY;
            break;
        }
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
    /* For a manager made live with this rank: the requests of every rank it took. */
    uint32_t nplaced = 0;
    size_t at = b->len;
    cdsm__buf_put_u32(b, 0);
    for (int q = 0; mgr != cdsm__w.rank && is_repl(mgr) && q < n; q++)
        if (q != mgr && nd[q].seq) {
            cdsm__buf_put_u32(b, (uint32_t)q);
            cdsm__buf_put_u32(b, nd[q].seq);
            nplaced++;
        }
    memcpy(b->p + at, &nplaced, sizeof nplaced);
    char line[256];
    int len = snprintf(line, sizeof line, "lock %u: queue", l);
    for (int i = 0; i < k && len < (int)sizeof line - 24; i++)
        len += snprintf(line + len, sizeof line - (size_t)len, " %d%s(%u)", chain[i],
                        i == 0 ? (regrant >= 0 ? "*regrant" : "*") : nd[chain[i]].virt ? "~" : "", nd[chain[i]].seq);
    cdsm__log(CDSM_LOG_INFO, "%s, tail %d (manager %d had %d)", line, tail, mgr, mtail);
}

/* Whether another replacement made live with this rank must change its part of lock l:
 * its state, its links, or (manager) the tail and the requests it took. */
static int other_changes(const node_t *nd, const int *chain, int k, int tail, int regrant, int mgr)
{
    for (int x = 0; x < cdsm__w.n; x++) {
        if (x == cdsm__w.rank || !is_repl(x)) continue;
        if (chain[0] == x && ((nd[x].st == CDSM_LKR_WAITING && regrant < 0) || nd[x].given)) return 1;
        if (chain[0] != x && nd[x].st == CDSM_LKR_TOKEN) return 1;
        for (int i = 0; i < k; i++)
            if (chain[i] == x && (i > 0 || k > 1)) return 1;
        if (mgr == x && nd[x].tail != tail) return 1;
    }
    for (int q = 0; is_repl(mgr) && mgr != cdsm__w.rank && q < cdsm__w.n; q++)
        if (q != mgr && nd[q].seq) return 1; /* (requests to place: put_queue) */
    return 0;
}

/* Rebuild lock l's queue from the reports (nd: n nodes): take this rank's own part, and
 * put an entry for the others in b when their view must change. Returns 1 if an entry
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
        if (nd[me].st == CDSM_LKR_TOKEN && state != CDSM_LK_HELD) state = CDSM_LK_TOKEN;
        else if (nd[me].st == CDSM_LKR_WAITING && regrant < 0) state = CDSM_LK_HELD; /* the token was here */
    } else if (state == CDSM_LK_TOKEN) {
        state = CDSM_LK_NONE; /* the initial token of a lock it manages moved on */
    }
    cdsm__lock_set_state(l, state);
    if (mgr == me) cdsm__lock_set_tail(l, tail);
    int mtail = nd[mgr].tail >= 0 ? nd[mgr].tail : mgr; /* a manager reports a tail other than itself */
    int stale = nd[tail].next >= 0; /* the last one's successor link leads nowhere: cut it */
    if (tail == me && stale) cdsm__lock_link(l, -1, NULL, 0);
    if (k < 2 && regrant < 0 && !stale && (mgr == me || mtail == tail) &&
        !(RB.joint && other_changes(nd, chain, k, tail, regrant, mgr)))
        return 0;
    put_queue(b, l, nd, chain, k, tail, regrant, mtail);
    for (int i = 0; i < k; i++)
        if (waits(&nd[chain[i]])) cdsm__lock_placed(l, chain[i], nd[chain[i]].seq);
    for (int i = 0; i + 1 < k; i++)
        if (chain[i] == me) cdsm__lock_link(l, chain[i + 1], nd[chain[i + 1]].vc, nd[chain[i + 1]].seq);
    if (regrant == me) cdsm__lk_regrant(l, chain[0], nd[chain[0]].seq, nd[chain[0]].vc);
    return 1;
}

/* The rebuilt queues of every lock after the reports (b: the LK_REBUILD payload, whose
 * head names the replacements made live). */
static int rebuild_all(node_t **rows, node_t *idle, int *chain, cdsm__buf_t *b, uint32_t *nent)
{
    int n = cdsm__w.n, rc = CDSM_OK;
    uint32_t nlive = 0;
    cdsm__buf_put_u32(b, 0);
    for (int q = 0; q < n; q++)
        if (is_repl(q)) {
            cdsm__buf_put_u32(b, (uint32_t)q);
            nlive++;
        }
    memcpy(b->p, &nlive, sizeof nlive);
    size_t nent_at = b->len;
    cdsm__buf_put_u32(b, 0);
    for (uint32_t l = 0; l < cdsm__lk.nlocks && !rc; l++) {
        /* A lock no report names: every other rank's part is the idle default. */
        node_t *nd = rows[l] ? rows[l] : idle;
        if (!rows[l]) reset_row(idle);
        own_node(l, nd);
        int put = rebuild_lock(l, nd, chain, b);
        if (put < 0)
            rc = cdsm__error(CDSM_ERR_PROTOCOL,
                             "rebuilding the queue of lock %u: the survivors' reports contradict each other", l);
        else
            *nent += (uint32_t)put;
    }
    memcpy(b->p + nent_at, nent, sizeof *nent);
    return rc;
}

/* Lead the rebuild: gather, rebuild, send. CDSM__LK_GIVE_WAY: a lower rank leads instead. */
static int lead(void)
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
    RB.rp = rp;
    if ((rc = gather_reports(rows, rp))) goto out;
    RB.joint = 0;
    for (int q = 0; q < n; q++) RB.joint |= q != me && rp[q].repl;
    if (RB.joint) { /* (the reports brought every copy the others hold: one view for all) */
        uint8_t repl[n];
        for (int q = 0; q < n; q++) repl[q] = (uint8_t)is_repl(q);
        cdsm__lk_know_all(repl);
    }
    cdsm__lock_waiting_foreach(own_fwd, &of);
    if (of.nomem) {
        rc = cdsm__error(CDSM_ERR_NOMEM, "lock rebuild: the forwards held back");
        goto out;
    }
    if ((rc = rebuild_all(rows, idle, chain, &b, &nent))) goto out;
    for (int q = 0; q < n && !rc; q++)
        if (q != me) rc = cdsm__tp_send(q, CDSM_MSG_LK_REBUILD, 0, b.p, b.len, NULL, 0);
    for (int q = 0; q < n && !rc; q++)
        if (q != me && rp[q].repl) cdsm__recover_done(q);
    if (!rc)
        cdsm__log(CDSM_LOG_INFO, "rank %d: lock queues rebuilt (%u queues changed)%s", me, nent,
                  RB.joint ? ", with the other replacements" : "");
out:
    cdsm__buf_free(&b);
    for (int q = 0; rp && q < n; q++) cdsm__reply_free(rp[q].rep);
    free(rp);
    RB.rp = NULL;
    RB.joint = 0;
    for (uint32_t l = 0; rows && l < cdsm__lk.nlocks; l++) free(rows[l]);
    free(rows);
    free(idle);
    free(chain);
    return rc;
}

int cdsm__lock_rebuild(void)
{
    int rc;
    for (;;) {
        if (!cdsm__lk_lower_replayed()) {
            if ((rc = lead()) != CDSM__LK_GIVE_WAY) break;
            cdsm__log(CDSM_LOG_INFO, "rank %d: a lower rank being replayed rebuilds the lock queues", cdsm__w.rank);
        }
        if ((rc = cdsm__lk_follow()) != CDSM__LK_GIVE_WAY) break;
    }
    cdsm__lk_know_free();
    cdsm__lock_freeze(0);
    cdsm__lock_resume();
    return rc;
}
