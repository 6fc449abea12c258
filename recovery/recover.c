/* Online recovery: spares, the rank map, takeover, and the replay of a lost rank.
 *
 * A job runs N working ranks and CDSM_SPARES spares (the last processes). Spares wait in
 * cdsm_init. When the service thread of a survivor reads end-of-file on a working
 * process's doorbell (the kernel closes a killed process's sockets at once) or misses its
 * heartbeats, it marks the rank as waiting for a spare. The leader (the lowest rank alive
 * and not itself being replayed) names the lowest live unused spare for each such rank,
 * lowest rank first, and sends the numbered rank map to every live process; the others
 * apply it (or adopt a replacement that speaks first) and send again the requests they
 * still wait on. One leader, so that several deaths at once (a node) seen in different
 * orders still give one map. The spare named in a map becomes the rank: it initialises the
 * rank's state from scratch, asks every survivor for what a replay needs (the barrier
 * log: epoch, release flags and global vector clock of every barrier; each survivor's own
 * interval records, archived ones included), and returns from cdsm_init into the
 * program, which runs again from its start. Each barrier the survivors have passed is
 * replayed from the log without messages (its records incorporated, its vector clock
 * taken); access misses fetch the diffs those vector clocks name from their writers (who
 * keep them: writer-based logging). Requests for the lost rank's own diffs wait until the
 * replay has made them again. At the first barrier the log does not hold, the replacement
 * goes live. Survivors never roll back.
 *
 * Ranks lost together (a node) are replayed at the same time, each by its own spare. A
 * replacement asked for replay data says it is replayed too; the records of such a rank
 * then come from the survivors (every survivor sends the records it holds of every rank;
 * the list reaching furthest is kept), and its diffs from its replacement, which serves
 * each once its replay has made it again: what one replay needs of the other happened
 * before, so neither waits for the other in a cycle. Barrier determinants are held by
 * every rank, so on every node. A lock grant between two ranks lost together is not held
 * elsewhere: such a replay ends with an error naming it.
 *
 * Replay from the start needs every determinant and diff since the start: logging on and
 * no checkpoints (then collected diffs are archived). Each acquire that took a grant from
 * another rank takes the logged grant's vector clock and records instead; one that took
 * none was done with a token the lost process held. Where the log ends (the first barrier
 * it does not hold, or an acquire the lost process never got), the lock queues are
 * rebuilt (lockrebuild.c) and the replacement is live. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recovery.h"
#include "vclock.h"

static pthread_mutex_t map_mu = PTHREAD_MUTEX_INITIALIZER;
static int *replaced;            /* per world rank: it died and a spare took its rank */
static int takeover_rank = -1;   /* spare: the rank it was asked to become */
static int retired;              /* spare: released at the end of the run */
static int orphaned;             /* spare: every working process is gone, no takeover came */
static int proto_ready;          /* protocol state exists: messages may be dispatched */
/* Per logical rank (under map_mu): its process died and no spare is named for it yet
 * (this process's view), and: a spare replays it (until its lock rebuild). */
static uint8_t *pending, *in_recovery;
static double *lost_at;          /* per logical rank: when this process saw its process die */
static char (*lost_why)[96];
static uint32_t map_ver;         /* the last rank map applied (the leader numbers them) */

/* Messages that arrived before the protocol state existed (a spare being set up). */
typedef struct held {
    struct held *next;
    cdsm__msg_hdr_t hdr;
    uint8_t *buf;
} held_t;
static held_t *held;

/* The replay store (replacement only). */
typedef struct bar_rec {
    uint32_t flags;
    uint32_t *vc;
} bar_rec_t;
static bar_rec_t *bars;     /* index epoch - bar0 */
static uint32_t bar0 = 1;   /* first logged epoch (later ones once checkpoints trimmed the logs) */
static uint32_t nbars;      /* last logged epoch (0: none) */
static cdsm__buf_t *recs;   /* per rank: its own records as sent, increasing idx */
static size_t *rec_pos;     /* per rank: offset of the first record not incorporated */
static uint32_t *rec_first; /* per rank: idx of its first record sent (1 unless collected) */
/* Ranks replayed at the same time as this one (lost with it: a node), and per rank the
 * furthest-reaching list of its records a survivor holds: theirs come from those. */
static uint8_t *co_lost;
static cdsm__buf_t *alt;
static uint32_t *alt_first, *alt_last;
/* Grants the lost process took from other ranks (their SENT entries). */
typedef struct grant_rec {
    uint32_t lock, acq_seq, grant_seq;
    int granter;
    uint32_t *vc;
} grant_rec_t;
static grant_rec_t *grants;
static uint32_t ngrants, grants_cap;
static uint32_t granted_last; /* synchronisation number of the lost process's last grant to another rank */
static uint32_t known_ivs;    /* intervals of the lost process the survivors know of (asked at a frontier) */
static uint32_t know_round;
static int replay_saw_gc;
static uint32_t replayed, grants_taken; /* barriers and grants replayed from the log */
static uint32_t released_max; /* the last barrier the manager said it released */
static uint64_t replay_t0;

/* Requests the replacement cannot serve yet (their diffs are not made again yet). */
typedef struct deferred {
    struct deferred *next;
    cdsm__msg_hdr_t hdr;
    uint8_t *payload;
} deferred_t;
static deferred_t *deferred;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Wall-clock seconds: recovery messages carry them so that a script that killed a
 * process can measure detection and recovery times. */
static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the rank map ---------------------------------------------------------------------- */

int cdsm__map_init(int wrank, int wn, int n)
{
    cdsm__state_t *g = &cdsm__g;
    g->wrank = wrank;
    g->wn = wn;
    g->n = n;
    g->phys = malloc((size_t)n * sizeof *g->phys);
    g->logical = malloc((size_t)wn * sizeof *g->logical);
    g->wdead = calloc((size_t)wn, 1);
    replaced = calloc((size_t)wn, sizeof *replaced);
    pending = calloc((size_t)n, 1);
    in_recovery = calloc((size_t)n, 1);
    lost_at = calloc((size_t)n, sizeof *lost_at);
    lost_why = calloc((size_t)n, sizeof *lost_why);
    map_ver = 0;
    g->lk_sent = calloc((size_t)wn, 4);
    g->lk_recv = calloc((size_t)wn, 4);
    if (!g->phys || !g->logical || !g->wdead || !replaced || !pending || !in_recovery || !lost_at || !lost_why ||
        !g->lk_sent || !g->lk_recv)
        return cdsm__error(CDSM_ERR_NOMEM, "rank map");
    for (int q = 0; q < n; q++) g->phys[q] = q;
    for (int w = 0; w < wn; w++) g->logical[w] = w < n ? w : -1;
    g->rank = wrank < n ? wrank : -1;
    proto_ready = 0;
    return CDSM_OK;
}

void cdsm__map_fini(void)
{
    cdsm__state_t *g = &cdsm__g;
    free(g->phys);
    free(g->logical);
    free(g->wdead);
    free(replaced);
    free(pending);
    free(in_recovery);
    free(lost_at);
    free(lost_why);
    pending = in_recovery = NULL;
    lost_at = NULL;
    lost_why = NULL;
    free(g->lk_sent);
    free(g->lk_recv);
    g->lk_sent = g->lk_recv = NULL;
    g->phys = g->logical = NULL;
    g->wdead = NULL;
    replaced = NULL;
    takeover_rank = -1;
    retired = orphaned = 0;
    proto_ready = 0;
    while (held) {
        held_t *h = held;
        held = h->next;
        free(h->buf);
        free(h);
    }
}

/* A spare can replay a lost rank: from the start, which needs the logs (with spares,
 * checkpoints do not trim them: they serve a restart of the whole job). */
static int replay_possible(void)
{
    return cdsm__cfg.logging != 0;
}

static int pick_spare(void)
{
    cdsm__state_t *g = &cdsm__g;
    for (int w = 0; w < g->wn; w++)
        if (g->logical[w] == -1 && !g->wdead[w]) return w;
    return -1;
}

int cdsm__world_recoverable(int w)
{
    pthread_mutex_lock(&map_mu);
    int ok = 0;
    if (cdsm__g.logical) {
        int r = cdsm__g.logical[w];
        ok = replaced[w] ||
             ((!cdsm__g.wdead[w] || (r >= 0 && pending[r])) && pick_spare() >= 0 && replay_possible());
    }
    pthread_mutex_unlock(&map_mu);
    return ok;
}

/* The process that names spares: the lowest rank whose process is alive and not being
 * replayed. Every process applies the maps it numbers, so all agree on who is who even
 * when several processes die at once (a node) and are seen in different orders. Caller
 * holds map_mu. */
static int leader(void)
{
    cdsm__state_t *g = &cdsm__g;
    for (int q = 0; q < g->n; q++)
        if (!pending[q] && !in_recovery[q] && !g->wdead[g->phys[q]]) return q;
    return -1;
}

/* Rank q now lives in process w (caller holds map_mu): the process it left is dead. */
static void move_rank(int q, int w)
{
    cdsm__state_t *g = &cdsm__g;
    int old = g->phys[q];
    if (old != w) {
        __atomic_store_n(&g->wdead[old], 1, __ATOMIC_RELEASE);
        g->logical[old] = -2;
        replaced[old] = 1;
    }
    g->logical[w] = q;
    g->phys[q] = w;
    pending[q] = 0;
    in_recovery[q] = 1;
}

static void log_move(int q, int w, int named_by)
{
    if (lost_at[q] > 0)
        cdsm__log(CDSM_LOG_ERROR, "rank %d lost (%s) at %.6f: spare process %d takes its place and replays it", q,
                  lost_why[q], lost_at[q], w);
    else
        cdsm__log(CDSM_LOG_ERROR, "rank %d lost (named by rank %d) at %.6f: spare process %d takes its place and replays it",
                  q, named_by, wall_s(), w);
    lost_at[q] = 0;
    CDSM_STAT_ADD(ranks_lost, 1);
}

/* The rank map as the leader sends it: version, n, then per rank its process and whether
 * it is being replayed. Caller holds map_mu. */
static void put_map(cdsm__buf_t *b)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__buf_put_u32(b, map_ver);
    cdsm__buf_put_u32(b, (uint32_t)g->n);
    for (int q = 0; q < g->n; q++) {
        cdsm__buf_put_u32(b, (uint32_t)g->phys[q]);
        cdsm__buf_put_u32(b, in_recovery[q]);
    }
}

/* Leader (caller holds map_mu): name a spare for every rank whose process died, lowest rank
 * first, marking each in moved[]. Returns how many, or -1-q when no spare is left for q
 * (the run then fails: the moves before it are not sent). */
static int name_spares(uint8_t *moved)
{
    cdsm__state_t *g = &cdsm__g;
    int count = 0;
    for (int q = 0; q < g->n; q++) {
        if (!pending[q]) continue;
        int spare = pick_spare();
        if (spare < 0) return -1 - q;
        move_rank(q, spare);
        log_move(q, spare, g->rank);
        moved[q] = 1;
        count++;
    }
    if (count) map_ver++;
    return count;
}

/* After a map change (map_mu released; mu held if have_mu): waiters send again what went
 * to the dead processes, and the barrier manager stops counting their arrivals where it
 * must. */
static void after_moves(const uint8_t *moved, int have_mu)
{
    cdsm__state_t *g = &cdsm__g;
    __atomic_fetch_add(&g->remap_gen, 1, __ATOMIC_ACQ_REL);
    if (!have_mu) pthread_mutex_lock(&g->mu);
    if (g->rank >= 0 && g->ivs) /* (a spare has no protocol state yet) */
        for (int q = 0; q < g->n; q++)
            if (moved[q] && q != g->rank) cdsm__bar_lost(q);
    pthread_cond_broadcast(&g->cv);
    if (!have_mu) pthread_mutex_unlock(&g->mu);
}

/* Leader: send the map to every live process (the spares it names take over). */
static void send_map(const cdsm__buf_t *b)
{
    cdsm__state_t *g = &cdsm__g;
    for (int w = 0; w < g->wn; w++)
        if (w != g->wrank && !__atomic_load_n(&g->wdead[w], __ATOMIC_ACQUIRE))
            cdsm__tp_send_world(w, CDSM_MSG_TAKEOVER, 0, b->p, b->len, NULL, 0);
}

/* If this process leads and ranks wait for a spare: name them and send the map. Called
 * with map_mu held; returns with it released. Returns 0, or -1 - q if q cannot be
 * recovered (no spare left). */
static int lead_unlock(int have_mu)
{
    cdsm__state_t *g = &cdsm__g;
    uint8_t moved[g->n];
    memset(moved, 0, sizeof moved);
    if (g->rank < 0 || leader() != g->rank) {
        pthread_mutex_unlock(&map_mu);
        return 0;
    }
    int k = name_spares(moved);
    cdsm__buf_t b = {0};
    if (k > 0) put_map(&b);
    pthread_mutex_unlock(&map_mu);
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
    pthread_mutex_lock(&map_mu);
    if (g->wdead[w]) {
        int r = g->logical[w];
        int ok = replaced[w] || (r >= 0 && pending[r]);
        pthread_mutex_unlock(&map_mu);
        return ok;
    }
    __atomic_store_n(&g->wdead[w], 1, __ATOMIC_RELEASE);
    int r = g->logical[w];
    /* A spare cannot tell a death from a rank that finished before its RETIRE came: the
     * RETIRE says whether anyone died (the map, that it must take over). */
    if (g->rank >= 0) __atomic_store_n(&g->recovered, 1, __ATOMIC_RELEASE);
    if (r < 0 || g->rank < 0) {
        /* A spare died, or this process is a spare: nothing to take over here. A spare
         * can tell when every working process is gone (a failed job that will never
         * retire it): no rank's process is alive and no map named one. */
        if (r == -1 && g->rank >= 0)
            cdsm__log(CDSM_LOG_WARN, "spare process %d lost (%s): one spare fewer", w, why);
        int gone = 0;
        if (g->rank < 0 && !g->initialized) {
            if (r >= 0) pending[r] = 1; /* (a spare that becomes a replacement waits for its map) */
            gone = takeover_rank < 0;
            for (int q = 0; q < g->n; q++)
                if (!g->wdead[g->phys[q]] && g->phys[q] != g->wrank) gone = 0;
        }
        pthread_mutex_unlock(&map_mu);
        if (gone) {
            pthread_mutex_lock(&g->mu);
            orphaned = 1;
            pthread_cond_broadcast(&g->cv);
            pthread_mutex_unlock(&g->mu);
        }
        return 1;
    }
    if (pick_spare() < 0 || !replay_possible()) {
        pthread_mutex_unlock(&map_mu);
        if (cdsm__cfg.spares && replay_possible()) /* (no spares: peer_lost says it all) */
            cdsm__log(CDSM_LOG_ERROR, "rank %d lost and no spare is left (CDSM_SPARES=%llu used up)", r,
                      (unsigned long long)cdsm__cfg.spares);
        else if (cdsm__cfg.spares)
            cdsm__log(CDSM_LOG_ERROR, "rank %d lost, and a spare cannot replay it: causal logging is off (CDSM_LOGGING=0)",
                      r);
        cdsm__peer_lost(r, why);
        return 0;
    }
    pending[r] = 1;
    lost_at[r] = wall_s();
    snprintf(lost_why[r], sizeof lost_why[r], "%s", why);
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
    pthread_mutex_lock(&map_mu);
    int first = !g->wdead[w];
    __atomic_store_n(&g->wdead[w], 1, __ATOMIC_RELEASE);
    int r = g->logical[w];
    pthread_mutex_unlock(&map_mu);
    /* Ranks close their sockets as they finish: only the barrier manager can tell a rank
     * that died before arriving at the last barrier (its release then says so to all),
     * and only a rank still waiting for that release can tell that the manager died. */
    if (!first || r < 0 || g->rank < 0) return;
    pthread_mutex_lock(&g->mu);
    if (g->rank == 0)
        cdsm__bar_gone(r);
    else if (r == 0) /* the waiting thread decides: its release may be queued already */
        __atomic_store_n(&g->final_mgr_gone, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void cdsm__recover_done(int r)
{
    pthread_mutex_lock(&map_mu);
    if (in_recovery && r >= 0 && r < cdsm__g.n) in_recovery[r] = 0;
    /* A rank that leads again may owe a map (a loss seen while no live rank led). Caller
     * holds mu. */
    lead_unlock(1);
}

int cdsm__recover_adopt(int r, int w)
{
    cdsm__state_t *g = &cdsm__g;
    if (r < 0 || r >= g->n || w < 0 || w >= g->wn) return 0;
    pthread_mutex_lock(&map_mu);
    if (g->rank < 0) {
        /* A spare keeps no map of earlier takeovers (the map brings it): whoever speaks
         * as r is r. */
        g->phys[r] = w;
        g->logical[w] = r;
        pthread_mutex_unlock(&map_mu);
        return 1;
    }
    /* A replacement spoke before the leader's map reached this process: the leader named
     * it, so it is r. */
    int ok = g->logical[w] == r;
    if (g->logical[w] == -1 && !g->wdead[w]) {
        uint8_t moved[g->n];
        memset(moved, 0, sizeof moved);
        if (lost_at[r] > 0 || !g->wdead[g->phys[r]]) log_move(r, w, -1);
        move_rank(r, w);
        moved[r] = 1;
        pthread_mutex_unlock(&map_mu);
        after_moves(moved, 0);
        return 1;
    }
    pthread_mutex_unlock(&map_mu);
    return ok;
}

/* ---- spares ------------------------------------------------------------------------------ */

void cdsm__on_takeover(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    cdsm__state_t *g = &cdsm__g;
    uint32_t ver = cdsm__rd_u32(rd), n = cdsm__rd_u32(rd);
    if (rd->bad || n != (uint32_t)g->n) {
        cdsm__log(CDSM_LOG_ERROR, "malformed rank map from rank %u", h->src);
        return;
    }
    uint32_t phys[n], rec[n];
    for (uint32_t q = 0; q < n; q++) {
        phys[q] = cdsm__rd_u32(rd);
        rec[q] = cdsm__rd_u32(rd);
        if (rd->bad || phys[q] >= (uint32_t)g->wn) {
            cdsm__log(CDSM_LOG_ERROR, "malformed rank map from rank %u", h->src);
            return;
        }
    }
    uint8_t moved[n];
    memset(moved, 0, sizeof moved);
    pthread_mutex_lock(&map_mu);
    if (ver <= map_ver) { /* an older map (a replacement was adopted from its messages first) */
        pthread_mutex_unlock(&map_mu);
        return;
    }
    map_ver = ver;
    for (uint32_t q = 0; q < n; q++) {
        int w = (int)phys[q];
        if (g->phys[q] != w && !g->wdead[w]) {
            if (g->rank >= 0) log_move((int)q, w, (int)h->src);
            move_rank((int)q, w);
            moved[q] = 1;
        } else if (g->rank < 0) { /* a spare knows only what maps told it */
            in_recovery[q] = rec[q] != 0;
        }
    }
    /* A process that held a rank now elsewhere is gone (a spare learns of earlier
     * takeovers only from the map). */
    for (int w = 0; w < g->wn; w++)
        if (g->logical[w] >= 0 && g->phys[g->logical[w]] != w) {
            g->logical[w] = -2;
            replaced[w] = 1;
            __atomic_store_n(&g->wdead[w], 1, __ATOMIC_RELEASE);
        }
    int mine = g->rank < 0 ? g->logical[g->wrank] : -1;
    pthread_mutex_unlock(&map_mu);
    if (mine >= 0 && takeover_rank < 0) {
        takeover_rank = mine;
        __atomic_store_n(&g->recovered, 1, __ATOMIC_RELEASE); /* someone died */
    }
    if (g->rank >= 0) __atomic_store_n(&g->recovered, 1, __ATOMIC_RELEASE);
    after_moves(moved, 1); /* caller holds mu */
}

void cdsm__on_retire(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    uint32_t died = cdsm__rd_u32(rd);
    if (rd->bad) cdsm__log(CDSM_LOG_ERROR, "malformed retire message from rank %u", h->src);
    __atomic_store_n(&cdsm__g.recovered, died ? 1 : 0, __ATOMIC_RELEASE);
    retired = 1;
    __atomic_store_n(&cdsm__g.finalizing, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&cdsm__g.cv); /* caller holds mu */
}

int cdsm__spare_wait(void)
{
    cdsm__state_t *g = &cdsm__g;
    pthread_mutex_lock(&g->mu);
    while (takeover_rank < 0 && !retired && !orphaned) pthread_cond_wait(&g->cv, &g->mu);
    int r = retired ? -1 : takeover_rank >= 0 ? takeover_rank : -2;
    pthread_mutex_unlock(&g->mu);
    return r;
}

void cdsm__retire_spares(void)
{
    cdsm__state_t *g = &cdsm__g;
    uint32_t died = __atomic_load_n(&g->recovered, __ATOMIC_ACQUIRE) != 0;
    for (int w = 0; w < g->wn; w++)
        if (g->logical[w] == -1 && !g->wdead[w]) cdsm__tp_send_world(w, CDSM_MSG_RETIRE, 0, &died, 4, NULL, 0);
}

/* ---- messages before the protocol state exists ----------------------------------------- */

int cdsm__hold_early(const cdsm__msg_hdr_t *h, uint8_t *buf)
{
    /* (A replacement answers another replacement's REPLAY_REQ at once, while both gather:
     * it says it is replayed too, and neither waits for the other.) */
    if (proto_ready || h->type == CDSM_MSG_TAKEOVER || h->type == CDSM_MSG_RETIRE ||
        h->type == CDSM_MSG_REPLAY_REP || (h->type == CDSM_MSG_REPLAY_REQ && cdsm__g.rank >= 0 && cdsm__g.ivs))
        return 0;
    held_t *e = malloc(sizeof *e), **pp = &held;
    cdsm_check(e != NULL);
    e->next = NULL;
    e->hdr = *h;
    e->buf = buf;
    while (*pp) pp = &(*pp)->next;
    *pp = e;
    return 1;
}

void cdsm__proto_ready(void)
{
    proto_ready = 1;
    while (held) { /* caller holds no lock: dispatch takes mu */
        held_t *e = held;
        held = e->next;
        cdsm__dispatch(&e->hdr, e->buf);
        free(e);
    }
}

/* ---- survivors: what a replay needs --------------------------------------------------- */

static void put_barrier(const cdsm__det_t *d, void *arg)
{
    if (d->kind != CDSM_DET_BARRIER) return;
    cdsm__buf_t *b = arg;
    cdsm__buf_put_u32(b, d->id);
    cdsm__buf_put_u32(b, d->grant_seq); /* the release flags */
    cdsm__buf_put(b, d->vc, (size_t)cdsm__g.n * 4);
}

static void count_barrier(const cdsm__det_t *d, void *arg)
{
    if (d->kind == CDSM_DET_BARRIER) (*(uint32_t *)arg)++;
}

/* Grants between this rank and the lost rank r, of one kind: SENT (r took them: its
 * replay needs them) or RECV (r made them: its new log needs them). */
struct grant_put {
    cdsm__buf_t *b;
    uint32_t r, kind, count;
};

static void put_grant(const cdsm__det_t *d, void *arg)
{
    struct grant_put *gp = arg;
    if (d->kind != gp->kind || d->peer != gp->r) return;
    if (gp->b) {
        cdsm__buf_put_u32(gp->b, d->id);
        cdsm__buf_put_u32(gp->b, d->acq_seq);
        cdsm__buf_put_u32(gp->b, d->grant_seq);
        cdsm__buf_put(gp->b, d->vc, (size_t)cdsm__g.n * 4);
    }
    gp->count++;
}

static void put_grants(cdsm__buf_t *b, uint32_t r, uint32_t kind)
{
    struct grant_put gp = {NULL, r, kind, 0};
    cdsm__det_foreach(put_grant, &gp);
    cdsm__buf_put_u32(b, gp.count);
    gp.b = b;
    cdsm__det_foreach(put_grant, &gp);
}

static void put_record(const cdsm__interval_t *iv, void *arg)
{
    cdsm__iv_serialize(arg, iv);
}

/* Whether rank r is being replayed (its replacement is not live yet). */
static int replayed_now(int r)
{
    pthread_mutex_lock(&map_mu);
    int k = in_recovery && in_recovery[r];
    pthread_mutex_unlock(&map_mu);
    return k;
}

void cdsm__serve_replay(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    cdsm__state_t *g = &cdsm__g;
    (void)rd;
    cdsm__buf_t b = {0};
    if (replayed_now(g->rank)) {
        /* Lost together with the asking rank (a node): it holds no log of the run yet, and
         * the others' knowledge of its records serves instead. */
        cdsm__buf_put_u32(&b, 1);
        cdsm__tp_send(h->src, CDSM_MSG_REPLAY_REP, h->tag, b.p, b.len, NULL, 0);
        cdsm__buf_free(&b);
        return;
    }
    cdsm__buf_put_u32(&b, 0);
    uint32_t nbar = 0;
    cdsm__det_foreach(count_barrier, &nbar);
    cdsm__buf_put_u32(&b, nbar);
    cdsm__det_foreach(put_barrier, &b);
    put_grants(&b, h->src, CDSM_DET_SENT);
    put_grants(&b, h->src, CDSM_DET_RECV);
    /* This rank's own records since the start: archived ones, then the live ones; then the
     * records of every other rank it holds (a rank lost at the same time, with the same
     * node, cannot send its own). */
    for (int x = 0; x < g->n; x++) {
        if (x == (int)h->src) continue;
        cdsm__ivlist_t *l = &g->ivs[x];
        const cdsm__buf_t *kept = NULL;
        uint32_t nkept = x == g->rank ? cdsm__archive_count() : cdsm__archive_other_records(x, &kept);
        cdsm__buf_put_u32(&b, nkept + l->count);
        if (x == g->rank) cdsm__archive_foreach(put_record, &b);
        else if (nkept) cdsm__buf_put(&b, kept->p, kept->len);
        for (uint32_t k = 0; k < l->count; k++) cdsm__iv_serialize(&b, l->v[k]);
    }
    /* The barrier manager: the last barrier it released (its release may still be on its
     * way to the others, whose logs then end before it). */
    cdsm__buf_put_u32(&b, cdsm__bar_released());
    cdsm__tp_send(h->src, CDSM_MSG_REPLAY_REP, h->tag, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
}

/* ---- the replacement -------------------------------------------------------------------- */

static size_t wire_size(const uint8_t *p)
{
    cdsm__wire_iv_t w;
    memcpy(&w, p, sizeof w);
    return sizeof w + (size_t)cdsm__g.n * 4 + (size_t)w.npages * 4;
}

/* Parse one survivor's answer into the store. Caller holds mu. */
static int take_replay_rep(int q, cdsm__rd_t *rd)
{
    cdsm__state_t *g = &cdsm__g;
    int n = g->n;
    uint32_t status = cdsm__rd_u32(rd);
    if (rd->bad || status > 1) return CDSM_ERR_PROTOCOL;
    if (status == 1) { /* replayed too: its records come from the others */
        co_lost[q] = 1;
        return CDSM_OK;
    }
    uint32_t nbar = cdsm__rd_u32(rd);
    size_t ent = 8 + (size_t)n * 4;
    const uint8_t *barp = cdsm__rd_take(rd, (size_t)nbar * ent);
    for (int kind = CDSM_DET_SENT; kind <= CDSM_DET_RECV; kind++) {
        uint32_t count = cdsm__rd_u32(rd);
        for (uint32_t i = 0; i < count && !rd->bad; i++) {
            uint32_t lock = cdsm__rd_u32(rd), acq_seq = cdsm__rd_u32(rd), grant_seq = cdsm__rd_u32(rd);
            const uint32_t *vc = cdsm__rd_take(rd, (size_t)n * 4);
            if (rd->bad || lock >= g->nlocks) return CDSM_ERR_PROTOCOL;
            if (kind == CDSM_DET_RECV) { /* a grant the lost process made: its log had it */
                cdsm__det_log(CDSM_DET_SENT, (uint32_t)q, lock, acq_seq, grant_seq, vc);
                if (grant_seq > granted_last) granted_last = grant_seq;
                continue;
            }
            if (ngrants == grants_cap) {
                grants_cap = grants_cap ? 2 * grants_cap : 64;
                grants = realloc(grants, grants_cap * sizeof *grants);
                cdsm_check(grants != NULL);
            }
            uint32_t *copy = malloc((size_t)n * 4);
            cdsm_check(copy != NULL);
            memcpy(copy, vc, (size_t)n * 4);
            grants[ngrants++] = (grant_rec_t){lock, acq_seq, grant_seq, q, copy};
        }
    }
    if (rd->bad) return CDSM_ERR_PROTOCOL;
    uint32_t first = 0;
    if (nbar) memcpy(&first, barp, 4);
    /* Every survivor logs every barrier (from its oldest still needed): keep the log that
     * reaches furthest, and of those the one that starts earliest. */
    if (nbar && (first + nbar - 1 > nbars || (first + nbar - 1 == nbars && first < bar0))) {
        for (uint32_t i = 0; nbars && i <= nbars - bar0; i++) free(bars[i].vc);
        free(bars);
        bars = calloc(nbar, sizeof *bars);
        cdsm_check(bars != NULL);
        for (uint32_t i = 0; i < nbar; i++) {
            uint32_t epoch, flags;
            memcpy(&epoch, barp + i * ent, 4);
            memcpy(&flags, barp + i * ent + 4, 4);
            if (epoch != first + i || !first) return CDSM_ERR_PROTOCOL; /* consecutive epochs */
            bars[i].flags = flags;
            bars[i].vc = malloc((size_t)n * 4);
            cdsm_check(bars[i].vc != NULL);
            memcpy(bars[i].vc, barp + i * ent + 8, (size_t)n * 4);
        }
        bar0 = first;
        nbars = first + nbar - 1;
    }
    for (int x = 0; x < n; x++) {
        if (x == g->rank) continue;
        uint32_t nrec = cdsm__rd_u32(rd);
        if (rd->bad) return CDSM_ERR_PROTOCOL;
        size_t start = rd->pos;
        uint32_t first = 0;
        int gap = 0;
        for (uint32_t k = 0; k < nrec; k++) {
            const cdsm__wire_iv_t *w = cdsm__rd_take(rd, sizeof *w);
            if (w && k == 0) first = w->idx;
            if (!w || w->rank != (uint32_t)x || !cdsm__rd_take(rd, (size_t)n * 4 + (size_t)w->npages * 4))
                return CDSM_ERR_PROTOCOL;
            if (w->idx != first + k) gap = 1;
        }
        if (x == q) { /* its own: complete since its start (or its last collection) */
            if (gap) return CDSM_ERR_PROTOCOL;
            if (nrec) rec_first[q] = first;
            cdsm__buf_put(&recs[q], rd->p + start, rd->pos - start);
            continue;
        }
        /* Another rank's, as this survivor knows them: kept if they reach furthest, in
         * case that rank cannot answer (lost with this one). */
        if (gap || !nrec) continue;
        uint32_t last = first + nrec - 1;
        if (alt[x].len && (last < alt_last[x] || (last == alt_last[x] && first >= alt_first[x]))) continue;
        alt[x].len = 0;
        cdsm__buf_put(&alt[x], rd->p + start, rd->pos - start);
        alt_first[x] = first;
        alt_last[x] = last;
    }
    uint32_t released = cdsm__rd_u32(rd);
    if (rd->bad) return CDSM_ERR_PROTOCOL;
    if (released > released_max) released_max = released;
    return CDSM_OK;
}

int cdsm__replay_begin(void)
{
    cdsm__state_t *g = &cdsm__g;
    int n = g->n, rc = CDSM_OK;
    replay_t0 = now_ns();
    recs = calloc((size_t)n, sizeof *recs);
    rec_pos = calloc((size_t)n, sizeof *rec_pos);
    rec_first = calloc((size_t)n, sizeof *rec_first);
    co_lost = calloc((size_t)n, 1);
    alt = calloc((size_t)n, sizeof *alt);
    alt_first = calloc((size_t)n, 4);
    alt_last = calloc((size_t)n, 4);
    if (!recs || !rec_pos || !rec_first || !co_lost || !alt || !alt_first || !alt_last)
        return cdsm__error(CDSM_ERR_NOMEM, "replay store");
    for (int q = 0; q < n; q++) rec_first[q] = 1;
    pthread_mutex_lock(&g->mu);
    /* Every other rank is asked; one replayed at the same time answers that it is. */
    for (int q = 0; q < n && !rc; q++)
        if (q != g->rank) rc = cdsm__tp_send(q, CDSM_MSG_REPLAY_REQ, (uint64_t)q, NULL, 0, NULL, 0);
    for (int q = 0; q < n && !rc; q++) {
        if (q == g->rank) continue;
        int late = 0;
        cdsm__reply_t *rep;
        /* Asked again after a second without an answer (a request once sat undelivered
         * inside MPI for 30 s; serving it twice is harmless). */
        while (!(rep = cdsm__wait_reply_for(CDSM_MSG_REPLAY_REP, (uint64_t)q, 1000, &late)) && late) {
            cdsm__log(CDSM_LOG_WARN, "replaying rank %d: no replay data from rank %d after 1 s: asking again", g->rank, q);
            if ((rc = cdsm__tp_send(q, CDSM_MSG_REPLAY_REQ, (uint64_t)q, NULL, 0, NULL, 0))) break;
        }
        if (rc) break;
        if (!rep) {
            rc = cdsm__error(CDSM_ERR_PEER_LOST, "replaying rank %d: rank %d was lost too", g->rank, cdsm__lost());
            break;
        }
        cdsm__rd_t rd = {rep->payload, rep->hdr.len, 0, 0};
        rc = take_replay_rep(q, &rd);
        if (rc) cdsm__error(rc, "replaying rank %d: malformed replay data from rank %d", g->rank, q);
        cdsm__reply_free(rep);
    }
    int ncolost = 0;
    for (int x = 0; x < n && !rc; x++) {
        if (!co_lost[x]) continue;
        /* Lost at the same time: its records as the survivors know them (its diffs, its
         * replacement makes again, and serves once made). */
        ncolost++;
        cdsm__buf_free(&recs[x]);
        recs[x] = alt[x]; /* (taken over: not freed below) */
        alt[x] = (cdsm__buf_t){0};
        if (recs[x].len) rec_first[x] = alt_first[x];
        cdsm__log(CDSM_LOG_WARN, "replaying rank %d: rank %d is replayed at the same time; its records %u..%u come from "
                  "the survivors", g->rank, x, recs[x].len ? alt_first[x] : 0, recs[x].len ? alt_last[x] : 0);
    }
    for (int x = 0; x < n; x++) cdsm__buf_free(&alt[x]);
    free(alt);
    free(alt_first);
    free(alt_last);
    alt = NULL;
    alt_first = alt_last = NULL;
    if (!rc && ncolost == n - 1)
        rc = cdsm__error(CDSM_ERR_PEER_LOST, "replaying rank %d: every other rank is being replayed too: no log survived",
                         g->rank);
    uint64_t ck = 0;
    if (!rc) rc = cdsm__ckpt_takeover(nbars > released_max ? nbars : released_max, &ck);
    if (!rc && !ck) {
        /* From the program's start: every barrier and every record must still be held. */
        int q = 0;
        while (q < n && rec_first[q] == 1) q++;
        if (bar0 != 1 || q < n)
            rc = cdsm__error(CDSM_ERR_STATE,
                             "replaying rank %d: no checkpoint of it can be restored (CDSM_CKPT_DIR %s) and the "
                             "logs of its start were collected (the oldest barrier held is %u, rank %d's oldest "
                             "record %u)",
                             g->rank, cdsm__ckpt_enabled() ? "holds none usable" : "is not set", bar0,
                             q < n ? q : 0, q < n ? rec_first[q] : 1);
    }
    if (!rc) {
        g->replaying = 1;
        g->fast_forward = ck != 0; /* until cdsm_resume() restores it */
        /* The barrier manager's view as of the last logged barrier (survivors' arrivals
         * for the next one carry records newer than it). */
        if (nbars) cdsm__barrier_adopt(bars[nbars - bar0].vc);
        cdsm__log(CDSM_LOG_INFO, "rank %d: replaying %u logged barriers and %u lock grants%s", g->rank,
                  nbars ? nbars - bar0 + 1 : 0, ngrants, ck ? " after its last checkpoint" : "");
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* Records of every other rank with idx <= vc[q], not incorporated yet. Caller holds mu. */
static int incorporate_upto(const uint32_t *vc)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__buf_t b = {0};
    uint32_t nrec = 0;
    for (int q = 0; q < g->n; q++) {
        if (q == g->rank) continue;
        while (rec_pos[q] < recs[q].len) {
            const uint8_t *p = recs[q].p + rec_pos[q];
            cdsm__wire_iv_t w;
            memcpy(&w, p, sizeof w);
            if (w.idx > vc[q]) break;
            size_t sz = wire_size(p);
            cdsm__buf_put(&b, p, sz);
            rec_pos[q] += sz;
            nrec++;
        }
    }
    cdsm__rd_t rd = {b.p, b.len, 0, 0};
    int rc = nrec ? cdsm__iv_incorporate(&rd, nrec) : CDSM_OK;
    cdsm__buf_free(&b);
    return rc;
}

int cdsm__replay_logged(uint32_t epoch)
{
    return nbars && epoch >= bar0 && epoch <= nbars;
}

void cdsm__replay_restored(void)
{
    cdsm__state_t *g = &cdsm__g;
    for (int q = 0; q < g->n; q++) {
        if (q == g->rank) continue;
        while (rec_pos[q] < recs[q].len) {
            cdsm__wire_iv_t w;
            memcpy(&w, recs[q].p + rec_pos[q], sizeof w);
            if (w.idx > g->vc[q]) break;
            rec_pos[q] += wire_size(recs[q].p + rec_pos[q]);
        }
    }
}

int cdsm__replay_barrier(uint32_t epoch, uint32_t *flags)
{
    cdsm__state_t *g = &cdsm__g;
    if (!g->replaying || epoch > nbars) return 0;
    cdsm_check(epoch >= bar0); /* earlier ones are replaced by the restored checkpoint */
    const bar_rec_t *br = &bars[epoch - bar0];
    if (br->vc[g->rank] != g->vc[g->rank]) {
        cdsm__log(CDSM_LOG_ERROR,
                  "replay of rank %d diverged at barrier %u: it has made %u intervals, the lost process had "
                  "made %u (the program is not piecewise deterministic, or has a data race)",
                  g->rank, epoch, g->vc[g->rank], br->vc[g->rank]);
        cdsm_check(!"replay diverged");
    }
    int rc = incorporate_upto(br->vc);
    cdsm_check(rc == CDSM_OK);
    cdsm__vc_merge(g->vc, br->vc, g->n);
    memcpy(g->vc_bar, g->vc, (size_t)g->n * 4);
    *flags = br->flags;
    if (br->flags & CDSM_BAR_GC) replay_saw_gc = 1;
    replayed++;
    return 1;
}

void cdsm__serve_know(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    cdsm__state_t *g = &cdsm__g;
    (void)rd;
    uint32_t r = h->src, known = g->vc[r];
    /* A grant not read yet carries its granter's knowledge too (the lost process's own
     * grant among them). */
    for (cdsm__reply_t *rep = g->replies; rep; rep = rep->next) {
        uint32_t v;
        if (rep->hdr.type != CDSM_MSG_LOCK_GRANT || rep->hdr.len < 12 + (size_t)g->n * 4) continue;
        memcpy(&v, rep->payload + 12 + (size_t)r * 4, 4);
        if (v > known) known = v;
    }
    cdsm__tp_send((int)r, CDSM_MSG_KNOW_REP, h->tag, &known, 4, NULL, 0);
}

/* The most intervals of this rank any survivor knows of. Caller holds mu. */
static uint32_t ask_known(void)
{
    cdsm__state_t *g = &cdsm__g;
    uint32_t round = ++know_round, known = 0;
    for (int q = 0; q < g->n; q++)
        if (q != g->rank && cdsm__tp_send(q, CDSM_MSG_KNOW_REQ, round, NULL, 0, NULL, 0)) return 0;
    for (int i = 0; i < g->n - 1; i++) {
        cdsm__reply_t *rep = cdsm__wait_reply(CDSM_MSG_KNOW_REP, round);
        if (!rep) return 0;
        uint32_t v = 0;
        if (rep->hdr.len >= 4) memcpy(&v, rep->payload, 4);
        if (v > known) known = v;
        cdsm__reply_free(rep);
    }
    return known;
}

int cdsm__replay_acquire(uint32_t l, uint32_t seq)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__lock_t *lk = &g->locks[l];
    for (int x = 0; co_lost && x < g->n; x++)
        if (co_lost[x]) {
            /* A grant between two ranks lost together died with both, and the lock queues
             * cannot be rebuilt by two replacements at once: not survived (yet). */
            cdsm__log(CDSM_LOG_ERROR,
                      "replaying rank %d: lock %u acquire %u while rank %d, lost at the same time, is replayed too: a "
                      "lock program cannot survive losing two ranks at once",
                      g->rank, l, seq, x);
            return CDSM_ERR_PEER_LOST;
        }
    /* The lost process got further if its next barrier is logged, or a later grant it
     * took or made (then the survivors may know its intervals from after this point). */
    int later = g->bar_epoch < nbars || granted_last > seq;
    for (uint32_t i = 0; i < ngrants; i++) {
        const grant_rec_t *gr = &grants[i];
        if (gr->acq_seq > seq) later = 1;
        if (gr->lock != l || gr->acq_seq != seq) continue;
        int rc = incorporate_upto(gr->vc);
        cdsm_check(rc == CDSM_OK);
        cdsm__det_log(CDSM_DET_RECV, (uint32_t)gr->granter, l, seq, gr->grant_seq, gr->vc);
        cdsm__vc_merge(g->vc, gr->vc, g->n);
        cdsm__reply_t **unread = cdsm__lock_unread_grant(l, seq); /* the replay took it from the log */
        if (unread) {
            cdsm__reply_t *r = *unread;
            *unread = r->next;
            cdsm__reply_free(r);
        }
        lk->state = CDSM_LK_HELD;
        grants_taken++;
        return CDSM_OK;
    }
    if (!later && known_ivs <= g->vc[g->rank]) {
        /* Nothing logged says the lost process got further; but a survivor may know of
         * intervals it made after this point (a grant it made and nobody has read yet). */
        known_ivs = ask_known();
    }
    if (known_ivs > g->vc[g->rank]) later = 1;
    if (later) { /* taken without a grant: the lost process had the token */
        lk->state = CDSM_LK_HELD;
        CDSM_STAT_ADD(lock_acquires_local, 1);
        return CDSM_OK;
    }
    /* Where the lost process stopped (or was about to ask): live again from here. */
    lk->state = CDSM_LK_WAITING;
    lk->req_seq = seq;
    return cdsm__replay_finish();
}

static int servable(const deferred_t *d)
{
    cdsm__state_t *g = &cdsm__g;
    if (d->hdr.type != CDSM_MSG_DIFF_REQ) return !g->replaying;
    cdsm__rd_t rd = {d->payload, d->hdr.len, 0, 0};
    cdsm__rd_u32(&rd);
    uint32_t count = cdsm__rd_u32(&rd);
    for (uint32_t i = 0; i < count && !rd.bad; i++)
        if (cdsm__rd_u32(&rd) > g->vc[g->rank]) return 0;
    return 1;
}

int cdsm__replay_defer(const cdsm__msg_hdr_t *h, const cdsm__rd_t *r)
{
    cdsm__state_t *g = &cdsm__g;
    if (!g->replaying) return 0;
    deferred_t d = {NULL, *h, (uint8_t *)r->p};
    if (servable(&d)) return 0;
    deferred_t *e = malloc(sizeof *e), **pp = &deferred;
    uint8_t *copy = malloc(h->len + 1);
    cdsm_check(e && copy);
    memcpy(copy, r->p, h->len);
    *e = (deferred_t){NULL, *h, copy};
    while (*pp) pp = &(*pp)->next;
    *pp = e;
    return 1;
}

/* Serve the deferred requests that can be served now. Caller holds mu. */
void cdsm__replay_serve_deferred(void)
{
    for (deferred_t **pp = &deferred; *pp;) {
        deferred_t *d = *pp;
        if (!servable(d)) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        cdsm__rd_t rd = {d->payload, d->hdr.len, 0, 0};
        if (d->hdr.type == CDSM_MSG_PAGE_REQ)
            cdsm__serve_page(&d->hdr, &rd);
        else if (d->hdr.type == CDSM_MSG_BAR_ARRIVE)
            cdsm__bar_on_arrive(&d->hdr, &rd); /* live: collected as usual */
        else
            cdsm__serve_diffs(&d->hdr, &rd);
        free(d->payload);
        free(d);
    }
}

void cdsm__replay_take(int type, uint64_t tag, void (*fn)(const cdsm__msg_hdr_t *h, cdsm__rd_t *r, void *arg),
                       void *arg)
{
    for (deferred_t **pp = &deferred; *pp;) {
        deferred_t *d = *pp;
        if (d->hdr.type != type || d->hdr.tag != tag) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        cdsm__rd_t rd = {d->payload, d->hdr.len, 0, 0};
        fn(&d->hdr, &rd, arg);
        free(d->payload);
        free(d);
    }
}

int cdsm__replay_finish(void)
{
    cdsm__state_t *g = &cdsm__g;
    g->lk_frozen = 1; /* lock requests keep waiting until the queues are rebuilt */
    g->replaying = 0;
    /* After a collection some survivors fetch whole pages from this rank as their
     * keeper: make every copy current first. */
    if (replay_saw_gc)
        for (uint32_t pg = 0; pg < g->npages; pg++)
            if (g->pages[pg].notices && g->pages[pg].state == CDSM_PG_INVALID) cdsm__validate(pg);
    cdsm__replay_serve_deferred();
    if (deferred)
        cdsm__log(CDSM_LOG_ERROR, "rank %d went live with requests for diffs it has not made again", g->rank);
    int rc = cdsm__lock_rebuild();
    if (rc) return rc;
    cdsm__recover_done(g->rank);
    cdsm__log(CDSM_LOG_WARN,
              "rank %d: replay of %u barriers and %u lock grants done in %.3f s at %.6f (synchronisation %u); the "
              "rank is live again",
              g->rank, replayed, grants_taken, (double)(now_ns() - replay_t0) / 1e9, wall_s(), g->sync_seq);
    CDSM_STAT_ADD(replays, 1);
    CDSM_STAT_ADD(replay_us, (now_ns() - replay_t0) / 1000);
    CDSM_STAT_ADD(replayed_barriers, replayed);
    for (uint32_t i = 0; nbars && i <= nbars - bar0; i++) free(bars[i].vc);
    free(bars);
    bars = NULL;
    nbars = 0;
    bar0 = 1;
    if (recs)
        for (int q = 0; q < g->n; q++) cdsm__buf_free(&recs[q]);
    free(recs);
    free(rec_pos);
    free(rec_first);
    free(co_lost);
    co_lost = NULL;
    recs = NULL;
    rec_pos = NULL;
    rec_first = NULL;
    for (uint32_t i = 0; i < ngrants; i++) free(grants[i].vc);
    free(grants);
    grants = NULL;
    ngrants = grants_cap = granted_last = known_ivs = replayed = grants_taken = released_max = 0;
    return CDSM_OK;
}
