/* Membership: who is which rank. The rank map (kept in the transport's routing table),
 * the spares, the leader that names them, takeover, and the one entry for "peer down".
 *
 * A job runs N working ranks and CDSM_SPARES spares (the last processes). Spares wait in
 * cdsm_init. When the transport reports a working process down (its doorbell stream
 * ended: the kernel closes a killed process's sockets at once; or silence.c judged it
 * silent), this process marks its rank as waiting for a spare. The leader (the lowest rank
 * alive and not itself being replayed) names the lowest live unused spare for each such
 * rank, lowest rank first, and sends the numbered rank map to every live process; the
 * others apply it (or adopt a replacement that speaks first) and send again the requests
 * they still wait on. One leader, so that several deaths at once (a node) seen in
 * different orders still give one map. The spare named in a map becomes the rank and
 * replays it (replay.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "recovery.h"

/* Messages that arrived before the protocol state existed (a spare being set up). */
typedef struct held {
    struct held *next;
    cdsm__msg_hdr_t hdr;
    uint8_t *buf;
} held_t;

static struct membership {
    pthread_mutex_t map_mu;
    int *replaced;      /* per world rank: it died and a spare took its rank */
    int takeover_rank;  /* spare: the rank it was asked to become */
    int retired;        /* spare: released at the end of the run */
    int orphaned;       /* spare: every working process is gone, no takeover came */
    int proto_ready;    /* protocol state exists: messages may be dispatched */
    /* Per logical rank (under map_mu): its process died and no spare is named for it yet
     * (this process's view), and: a spare replays it (until its lock rebuild). */
    uint8_t *pending, *in_recovery;
    double *lost_at;    /* per logical rank: when this process saw its process die */
    char (*lost_why)[96];
    uint32_t map_ver;   /* the last rank map applied (the leader numbers them) */
    held_t *held;
} mb = {.map_mu = PTHREAD_MUTEX_INITIALIZER, .takeover_rank = -1};

/* ---- the rank map ---------------------------------------------------------------------- */

int cdsm__map_init(int wrank, int wn, int n)
{
    int rc = cdsm__world_init(wrank, wn, n);
    if (rc) return rc;
    mb.replaced = calloc((size_t)wn, sizeof *mb.replaced);
    mb.pending = calloc((size_t)n, 1);
    mb.in_recovery = calloc((size_t)n, 1);
    mb.lost_at = calloc((size_t)n, sizeof *mb.lost_at);
    mb.lost_why = calloc((size_t)n, sizeof *mb.lost_why);
    mb.map_ver = 0;
    mb.proto_ready = 0;
    if (!mb.replaced || !mb.pending || !mb.in_recovery || !mb.lost_at || !mb.lost_why)
        return cdsm__error(CDSM_ERR_NOMEM, "rank map");
    return CDSM_OK;
}

void cdsm__map_fini(void)
{
    cdsm__world_fini();
    free(mb.replaced);
    free(mb.pending);
    free(mb.in_recovery);
    free(mb.lost_at);
    free(mb.lost_why);
    while (mb.held) {
        held_t *h = mb.held;
        mb.held = h->next;
        free(h->buf);
        free(h);
    }
    mb = (struct membership){.map_mu = PTHREAD_MUTEX_INITIALIZER, .takeover_rank = -1};
}

/* A spare can replay a lost rank: from the start, which needs the logs (with spares,
 * checkpoints do not trim them: they serve a restart of the whole job). */
static int replay_possible(void)
{
    return cdsm__cfg.logging != 0;
}

static int pick_spare(void)
{
    for (int w = 0; w < cdsm__w.wn; w++)
        if (cdsm__w.logical[w] == -1 && !cdsm__w.wdead[w]) return w;
    return -1;
}

int cdsm__world_recoverable(int w)
{
    pthread_mutex_lock(&mb.map_mu);
    int ok = 0;
    if (cdsm__w.logical) {
        int r = cdsm__w.logical[w];
        ok = mb.replaced[w] ||
             ((!cdsm__w.wdead[w] || (r >= 0 && mb.pending[r])) && pick_spare() >= 0 && replay_possible());
    }
    pthread_mutex_unlock(&mb.map_mu);
    return ok;
}

/* The transport's question about a failed send to process w: no error where a spare
 * takes its rank, or where the run is finishing (every rank has done its work, and a peer
 * that closed its end has finished: the last barrier completes without it; a sor run once
 * ended with "rank 0 was lost (its doorbell: Broken pipe)" from cdsm_finalize). */
int cdsm__send_loss_harmless(int w)
{
    return __atomic_load_n(&cdsm__w.finalizing, __ATOMIC_ACQUIRE) || cdsm__world_recoverable(w);
}

/* The process that names spares: the lowest rank whose process is alive and not being
 * replayed. Every process applies the maps it numbers, so all agree on who is who even
 * when several processes die at once (a node) and are seen in different orders. Caller
 * holds map_mu. */
static int leader(void)
{
    for (int q = 0; q < cdsm__w.n; q++)
        if (!mb.pending[q] && !mb.in_recovery[q] && !cdsm__w.wdead[cdsm__w.phys[q]]) return q;
    return -1;
}

/* Rank q now lives in process w (caller holds map_mu): the process it left is dead. */
static void move_rank(int q, int w)
{
    int old = cdsm__w.phys[q];
    if (old != w) {
        __atomic_store_n(&cdsm__w.wdead[old], 1, __ATOMIC_RELEASE);
        cdsm__w.logical[old] = -2;
        mb.replaced[old] = 1;
    }
    cdsm__w.logical[w] = q;
    cdsm__w.phys[q] = w;
    mb.pending[q] = 0;
    mb.in_recovery[q] = 1;
}

static void log_move(int q, int w, int named_by)
{
    if (mb.lost_at[q] > 0)
        cdsm__log(CDSM_LOG_ERROR, "rank %d lost (%s) at %.6f: spare process %d takes its place and replays it", q,
                  mb.lost_why[q], mb.lost_at[q], w);
    else
        cdsm__log(CDSM_LOG_ERROR, "rank %d lost (named by rank %d) at %.6f: spare process %d takes its place and replays it",
                  q, named_by, cdsm__wall_s(), w);
    mb.lost_at[q] = 0;
    CDSM_STAT_ADD(ranks_lost, 1);
}

/* The rank map as the leader sends it: version, n, then per rank its process and whether
 * it is being replayed. Caller holds map_mu. */
static void put_map(cdsm__buf_t *b)
{
    cdsm__buf_put_u32(b, mb.map_ver);
    cdsm__buf_put_u32(b, (uint32_t)cdsm__w.n);
    for (int q = 0; q < cdsm__w.n; q++) {
        cdsm__buf_put_u32(b, (uint32_t)cdsm__w.phys[q]);
        cdsm__buf_put_u32(b, mb.in_recovery[q]);
    }
}

/* Leader (caller holds map_mu): name a spare for every rank whose process died, lowest rank
 * first, marking each in moved[]. Returns how many, or -1-q when no spare is left for q
 * (the run then fails: the moves before it are not sent). */
static int name_spares(uint8_t *moved)
{
    int count = 0;
    for (int q = 0; q < cdsm__w.n; q++) {
        if (!mb.pending[q]) continue;
        int spare = pick_spare();
        if (spare < 0) return -1 - q;
        move_rank(q, spare);
        log_move(q, spare, cdsm__w.rank);
        moved[q] = 1;
        count++;
    }
    if (count) mb.map_ver++;
    return count;
}

/* After a map change (map_mu released; mu held if have_mu): waiters send again what went
 * to the dead processes, and the barrier manager stops counting their arrivals where it
 * must. */
static void after_moves(const uint8_t *moved, int have_mu)
{
    cdsm__state_t *g = &cdsm__g;
    __atomic_fetch_add(&cdsm__w.remap_gen, 1, __ATOMIC_ACQ_REL);
    if (!have_mu) pthread_mutex_lock(&g->mu);
    if (cdsm__w.rank >= 0 && g->ivs) /* (a spare has no protocol state yet) */
        for (int q = 0; q < cdsm__w.n; q++)
            if (moved[q] && q != cdsm__w.rank) cdsm__bar_lost(q);
    pthread_cond_broadcast(&g->cv);
    if (!have_mu) pthread_mutex_unlock(&g->mu);
}

/* Leader: send the map to every live process (the spares it names take over). */
static void send_map(const cdsm__buf_t *b)
{
    for (int w = 0; w < cdsm__w.wn; w++)
        if (w != cdsm__w.wrank && !__atomic_load_n(&cdsm__w.wdead[w], __ATOMIC_ACQUIRE))
            cdsm__tp_send_world(w, CDSM_MSG_TAKEOVER, 0, b->p, b->len, NULL, 0);
}

/* If this process leads and ranks wait for a spare: name them and send the map. Called
 * with map_mu held; returns with it released. Returns 0, or -1 - q if q cannot be
 * recovered (no spare left). */
static int lead_unlock(int have_mu)
{
    uint8_t moved[cdsm__w.n];
    memset(moved, 0, sizeof moved);
    if (cdsm__w.rank < 0 || leader() != cdsm__w.rank) {
        pthread_mutex_unlock(&mb.map_mu);
        return 0;
    }
    int k = name_spares(moved);
    cdsm__buf_t b = {0};
    if (k > 0) put_map(&b);
    pthread_mutex_unlock(&mb.map_mu);
    if (k > 0) {
        send_map(&b);
        after_moves(moved, have_mu);
    }
    cdsm__buf_free(&b);
    return k < 0 ? k : 0;
}

int cdsm__world_lost(int w, const char *why)
{
    cdsm__state_t *g = &cdsm__g;
    pthread_mutex_lock(&mb.map_mu);
    if (cdsm__w.wdead[w]) {
        int r = cdsm__w.logical[w];
        int ok = mb.replaced[w] || (r >= 0 && mb.pending[r]);
        pthread_mutex_unlock(&mb.map_mu);
        return ok;
    }
    __atomic_store_n(&cdsm__w.wdead[w], 1, __ATOMIC_RELEASE);
    int r = cdsm__w.logical[w];
    /* A spare cannot tell a death from a rank that finished before its RETIRE came: the
     * RETIRE says whether anyone died (the map, that it must take over). */
    if (cdsm__w.rank >= 0) __atomic_store_n(&cdsm__w.recovered, 1, __ATOMIC_RELEASE);
    if (r < 0 || cdsm__w.rank < 0) {
        /* A spare died, or this process is a spare: nothing to take over here. A spare
         * can tell when every working process is gone (a failed job that will never
         * retire it): no rank's process is alive and no map named one. */
        if (r == -1 && cdsm__w.rank >= 0)
            cdsm__log(CDSM_LOG_WARN, "spare process %d lost (%s): one spare fewer", w, why);
        int gone = 0;
        if (cdsm__w.rank < 0 && !g->initialized) {
            if (r >= 0) mb.pending[r] = 1; /* (a spare that becomes a replacement waits for its map) */
            gone = mb.takeover_rank < 0;
            for (int q = 0; q < cdsm__w.n; q++)
                if (!cdsm__w.wdead[cdsm__w.phys[q]] && cdsm__w.phys[q] != cdsm__w.wrank) gone = 0;
        }
        pthread_mutex_unlock(&mb.map_mu);
        if (gone) {
            pthread_mutex_lock(&g->mu);
            mb.orphaned = 1;
            pthread_cond_broadcast(&g->cv);
            pthread_mutex_unlock(&g->mu);
        }
        return 1;
    }
    if (pick_spare() < 0 || !replay_possible()) {
        pthread_mutex_unlock(&mb.map_mu);
        if (cdsm__cfg.spares && replay_possible()) /* (no spares: peer_lost says it all) */
            cdsm__log(CDSM_LOG_ERROR, "rank %d lost and no spare is left (CDSM_SPARES=%llu used up)", r,
                      (unsigned long long)cdsm__cfg.spares);
        else if (cdsm__cfg.spares)
            cdsm__log(CDSM_LOG_ERROR, "rank %d lost, and a spare cannot replay it: causal logging is off (CDSM_LOGGING=0)",
                      r);
        cdsm__peer_lost(r, why);
        return 0;
    }
    mb.pending[r] = 1;
    mb.lost_at[r] = cdsm__wall_s();
    snprintf(mb.lost_why[r], sizeof mb.lost_why[r], "%s", why);
    /* The leader names the spare (the lowest rank alive: the next one if this loss was
     * the leader's); the others wait for its map. */
    int k = lead_unlock(0);
    if (k < 0) {
        int q = -1 - k;
        cdsm__log(CDSM_LOG_ERROR, "rank %d lost and no spare is left (CDSM_SPARES=%llu used up)", q,
                  (unsigned long long)cdsm__cfg.spares);
        cdsm__peer_lost(q, why);
        return 0;
    }
    return 1;
}

void cdsm__final_lost(int w)
{
    cdsm__state_t *g = &cdsm__g;
    pthread_mutex_lock(&mb.map_mu);
    int first = !cdsm__w.wdead[w];
    __atomic_store_n(&cdsm__w.wdead[w], 1, __ATOMIC_RELEASE);
    int r = cdsm__w.logical[w];
    pthread_mutex_unlock(&mb.map_mu);
    /* Ranks close their sockets as they finish: only the barrier manager can tell a rank
     * that died before arriving at the last barrier (its release then says so to all),
     * and only a rank still waiting for that release can tell that the manager died. */
    if (!first || r < 0 || cdsm__w.rank < 0) return;
    pthread_mutex_lock(&g->mu);
    if (cdsm__w.rank == 0)
        cdsm__bar_gone(r);
    else if (r == 0) /* the waiting thread decides: its release may be queued already */
        __atomic_store_n(&g->final_mgr_gone, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void cdsm__recover_done(int r)
{
    pthread_mutex_lock(&mb.map_mu);
    if (mb.in_recovery && r >= 0 && r < cdsm__w.n) mb.in_recovery[r] = 0;
    /* A rank that leads again may owe a map (a loss seen while no live rank led). Caller
     * holds mu. */
    lead_unlock(1);
}

int cdsm__recover_adopt(int r, int w)
{
    if (r < 0 || r >= cdsm__w.n || w < 0 || w >= cdsm__w.wn) return 0;
    pthread_mutex_lock(&mb.map_mu);
    if (cdsm__w.rank < 0) {
        /* A spare keeps no map of earlier takeovers (the map brings it): whoever speaks
         * as r is r. */
        cdsm__w.phys[r] = w;
        cdsm__w.logical[w] = r;
        pthread_mutex_unlock(&mb.map_mu);
        return 1;
    }
    /* A replacement spoke before the leader's map reached this process: the leader named
     * it, so it is r. */
    int ok = cdsm__w.logical[w] == r;
    if (cdsm__w.logical[w] == -1 && !cdsm__w.wdead[w]) {
        uint8_t moved[cdsm__w.n];
        memset(moved, 0, sizeof moved);
        if (mb.lost_at[r] > 0 || !cdsm__w.wdead[cdsm__w.phys[r]]) log_move(r, w, -1);
        move_rank(r, w);
        moved[r] = 1;
        pthread_mutex_unlock(&mb.map_mu);
        after_moves(moved, 0);
        return 1;
    }
    pthread_mutex_unlock(&mb.map_mu);
    return ok;
}

/* ---- spares ------------------------------------------------------------------------------ */

void cdsm__on_takeover(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    uint32_t ver = cdsm__rd_u32(rd), n = cdsm__rd_u32(rd);
    if (rd->bad || n != (uint32_t)cdsm__w.n) {
        cdsm__log(CDSM_LOG_ERROR, "malformed rank map from rank %u", h->src);
        return;
    }
    uint32_t phys[n], rec[n];
    for (uint32_t q = 0; q < n; q++) {
        phys[q] = cdsm__rd_u32(rd);
        rec[q] = cdsm__rd_u32(rd);
        if (rd->bad || phys[q] >= (uint32_t)cdsm__w.wn) {
            cdsm__log(CDSM_LOG_ERROR, "malformed rank map from rank %u", h->src);
            return;
        }
    }
    uint8_t moved[n];
    memset(moved, 0, sizeof moved);
    pthread_mutex_lock(&mb.map_mu);
    if (ver <= mb.map_ver) { /* an older map (a replacement was adopted from its messages first) */
        pthread_mutex_unlock(&mb.map_mu);
        return;
    }
    mb.map_ver = ver;
    for (uint32_t q = 0; q < n; q++) {
        int w = (int)phys[q];
        if (cdsm__w.phys[q] != w && !cdsm__w.wdead[w]) {
            if (cdsm__w.rank >= 0) log_move((int)q, w, (int)h->src);
            move_rank((int)q, w);
            moved[q] = 1;
        } else if (cdsm__w.rank < 0) { /* a spare knows only what maps told it */
            mb.in_recovery[q] = rec[q] != 0;
        }
    }
    /* A process that held a rank now elsewhere is gone (a spare learns of earlier
     * takeovers only from the map). */
    for (int w = 0; w < cdsm__w.wn; w++)
        if (cdsm__w.logical[w] >= 0 && cdsm__w.phys[cdsm__w.logical[w]] != w) {
            cdsm__w.logical[w] = -2;
            mb.replaced[w] = 1;
            __atomic_store_n(&cdsm__w.wdead[w], 1, __ATOMIC_RELEASE);
        }
    int mine = cdsm__w.rank < 0 ? cdsm__w.logical[cdsm__w.wrank] : -1;
    pthread_mutex_unlock(&mb.map_mu);
    if (mine >= 0 && mb.takeover_rank < 0) {
        mb.takeover_rank = mine;
        __atomic_store_n(&cdsm__w.recovered, 1, __ATOMIC_RELEASE); /* someone died */
    }
    if (cdsm__w.rank >= 0) __atomic_store_n(&cdsm__w.recovered, 1, __ATOMIC_RELEASE);
    after_moves(moved, 1); /* caller holds mu */
}

void cdsm__on_retire(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    uint32_t died = cdsm__rd_u32(rd);
    if (rd->bad) cdsm__log(CDSM_LOG_ERROR, "malformed retire message from rank %u", h->src);
    /* Every rank sends one: the first replaces what the spare guessed from closed
     * connections (a finish looks like a death), the others can only add a death. */
    if (!mb.retired || died) __atomic_store_n(&cdsm__w.recovered, died ? 1 : 0, __ATOMIC_RELEASE);
    mb.retired = 1;
    __atomic_store_n(&cdsm__w.finalizing, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&cdsm__g.cv); /* caller holds mu */
}

int cdsm__spare_wait(void)
{
    cdsm__state_t *g = &cdsm__g;
    pthread_mutex_lock(&g->mu);
    while (mb.takeover_rank < 0 && !mb.retired && !mb.orphaned) pthread_cond_wait(&g->cv, &g->mu);
    int r = mb.retired ? -1 : mb.takeover_rank >= 0 ? mb.takeover_rank : -2;
    pthread_mutex_unlock(&g->mu);
    return r;
}

void cdsm__retire_spares(void)
{
    uint32_t died = __atomic_load_n(&cdsm__w.recovered, __ATOMIC_ACQUIRE) != 0;
    for (int w = 0; w < cdsm__w.wn; w++)
        if (cdsm__w.logical[w] == -1 && !cdsm__w.wdead[w]) cdsm__tp_send_world(w, CDSM_MSG_RETIRE, 0, &died, 4, NULL, 0);
}

/* ---- messages before the protocol state exists ----------------------------------------- */

/* This thread is dispatching the held messages (cdsm__proto_ready): they are not held
 * again. */
static __thread int draining;

int cdsm__hold_early(const cdsm__msg_hdr_t *h, uint8_t *buf)
{
    /* (A replacement answers another replacement's REPLAY_REQ at once, while both gather:
     * it says it is replayed too, and neither waits for the other.) */
    if (draining || __atomic_load_n(&mb.proto_ready, __ATOMIC_ACQUIRE) || h->type == CDSM_MSG_TAKEOVER ||
        h->type == CDSM_MSG_RETIRE || h->type == CDSM_MSG_REPLAY_REP ||
        (h->type == CDSM_MSG_REPLAY_REQ && cdsm__w.rank >= 0 && cdsm__g.ivs))
        return 0;
    held_t *e = malloc(sizeof *e), **pp = &mb.held;
    cdsm_check(e != NULL);
    e->next = NULL;
    e->hdr = *h;
    e->buf = buf;
    /* The check and the append are one step against cdsm__proto_ready's drain: a message
     * appended just after the drain had looked was held for good (every rank then waited
     * at the program's first barrier for an arrival rank 0 held: two CI rounds hung so). */
    pthread_mutex_lock(&mb.map_mu);
    int ready = mb.proto_ready;
    if (!ready) {
        while (*pp) pp = &(*pp)->next;
        *pp = e;
    }
    pthread_mutex_unlock(&mb.map_mu);
    if (ready) free(e);
    return !ready;
}

void cdsm__proto_ready(void)
{
    /* Held messages go first, in order; the flag is set only once none is left, so a
     * message arriving meanwhile is held and dispatched after them. */
    for (;;) {
        pthread_mutex_lock(&mb.map_mu);
        held_t *list = mb.held;
        mb.held = NULL;
        if (!list) __atomic_store_n(&mb.proto_ready, 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&mb.map_mu);
        if (!list) return;
        draining = 1;
        while (list) { /* caller holds no lock: dispatch takes mu */
            held_t *e = list;
            list = e->next;
            cdsm__dispatch(&e->hdr, e->buf);
            free(e);
        }
        draining = 0;
    }
}

/* Whether rank r is being replayed (its replacement is not live yet). */
int cdsm__member_replayed_now(int r)
{
    pthread_mutex_lock(&mb.map_mu);
    int k = mb.in_recovery && mb.in_recovery[r];
    pthread_mutex_unlock(&mb.map_mu);
    return k;
}

/* The transport's one "peer down" entry: process w's stream ended or it fell silent.
 * During finalize every rank has done its work, so only the last barrier misses it. */
int cdsm__member_peer_down(int w, const char *why)
{
    if (__atomic_load_n(&cdsm__w.finalizing, __ATOMIC_ACQUIRE)) {
        cdsm__final_lost(w);
        return 1;
    }
    return cdsm__world_lost(w, why);
}
