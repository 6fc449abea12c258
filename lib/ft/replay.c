/* The replacement's replay of a lost rank.
 *
 * The spare named for a lost rank initialises the rank's state from scratch, asks every
 * survivor for what a replay needs (replay_serve.c) and returns from cdsm_init into the
 * program, which runs again from its start (or from the rank's last checkpoint, restored
 * in cdsm_resume). Each barrier the survivors have passed is replayed from the log
 * without messages (its records incorporated, its vector clock taken); access misses
 * fetch the diffs those vector clocks name from their writers (who keep them:
 * writer-based logging). Requests for the lost rank's own diffs wait until the replay has
 * made them again. At the first barrier the log does not hold, the replacement goes live.
 * Survivors never roll back.
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

#include "proto.h"
#include "recovery.h"
#include "vclock.h"

typedef struct bar_rec {
    uint32_t flags;
    uint32_t *vc;
} bar_rec_t;

/* Grants the lost process took from other ranks (their SENT entries). */
typedef struct grant_rec {
    uint32_t lock, acq_seq, grant_seq;
    int granter;
    uint32_t *vc;
} grant_rec_t;

/* Requests the replacement cannot serve yet (their diffs are not made again yet). */
typedef struct deferred {
    struct deferred *next;
    cdsm__msg_hdr_t hdr;
    uint8_t *payload;
} deferred_t;

/* The replay store (a replacement only, until it is live). */
static struct replay_store {
    bar_rec_t *bars;     /* index epoch - bar0 */
    uint32_t bar0;       /* first logged epoch (later ones once checkpoints trimmed the logs) */
    uint32_t nbars;      /* last logged epoch (0: none) */
    cdsm__buf_t *recs;   /* per rank: its own records as sent, increasing idx */
    size_t *rec_pos;     /* per rank: offset of the first record not incorporated */
    uint32_t *rec_first; /* per rank: idx of its first record sent (1 unless collected) */
    uint32_t *rec_last;  /* per rank lost with this one: idx of the last record held */
    /* Ranks replayed at the same time as this one (lost with it: a node), and per rank the
     * furthest-reaching list of its records a survivor holds: theirs come from those. */
    uint8_t *co_lost;
    cdsm__buf_t *alt;
    uint32_t *alt_first, *alt_last;
    grant_rec_t *grants;
    uint32_t ngrants, grants_cap;
    uint32_t granted_last; /* synchronisation number of the lost process's last grant to another rank */
    uint32_t known_ivs;    /* intervals of the lost process the survivors know of (asked at a frontier) */
    uint32_t know_round;
    int replay_saw_gc;
    uint32_t replayed, grants_taken; /* barriers and grants replayed from the log */
    uint32_t released_max; /* the last barrier the manager said it released */
    uint64_t replay_t0;
    deferred_t *deferred;
} rs = {.bar0 = 1};

/* A grant the lost process took (from `granter`), kept for its replay. */
static void add_grant(uint32_t lock, uint32_t acq_seq, uint32_t grant_seq, int granter, const uint32_t *vc)
{
    if (rs.ngrants == rs.grants_cap) {
        rs.grants_cap = rs.grants_cap ? 2 * rs.grants_cap : 64;
        rs.grants = realloc(rs.grants, rs.grants_cap * sizeof *rs.grants);
        cdsm_check(rs.grants != NULL);
    }
    uint32_t *copy = malloc(cdsm__u32s((size_t)cdsm__w.n));
    cdsm_check(copy != NULL);
    memcpy(copy, vc, cdsm__u32s((size_t)cdsm__w.n));
    rs.grants[rs.ngrants++] = (grant_rec_t){lock, acq_seq, grant_seq, granter, copy};
}

/* The grants in a survivor's answer: those the lost process took (SENT by the survivor:
 * kept for its replay) and those it made (RECV: logged again as its own SENT). */
static int take_grants(int q, cdsm__rd_t *rd)
{
    int n = cdsm__w.n;
    for (int kind = CDSM_DET_SENT; kind <= CDSM_DET_RECV; kind++) {
        uint32_t count = cdsm__rd_u32(rd);
        for (uint32_t i = 0; i < count && !rd->bad; i++) {
            uint32_t lock = cdsm__rd_u32(rd), acq_seq = cdsm__rd_u32(rd), grant_seq = cdsm__rd_u32(rd);
            const uint32_t *vc = cdsm__rd_take(rd, cdsm__u32s((size_t)n));
            if (rd->bad || lock >= cdsm__lk.nlocks) return CDSM_ERR_PROTOCOL;
            if (kind == CDSM_DET_RECV) { /* a grant the lost process made: its log had it */
                if (!cdsm__gcopy_on()) /* (else its copy logs it: gcopy.c) */
                    cdsm__det_log(CDSM_DET_SENT, (uint32_t)q, lock, acq_seq, grant_seq, vc);
                if (grant_seq > rs.granted_last) rs.granted_last = grant_seq;
                continue;
            }
            add_grant(lock, acq_seq, grant_seq, q, vc);
        }
    }
    return rd->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

/* A survivor's barrier log (nbar entries at barp: epoch, flags, vc). Every survivor logs
 * every barrier (from its oldest still needed): keep the log that reaches furthest, and of
 * those the one that starts earliest. */
static int take_bars(const uint8_t *barp, uint32_t nbar)
{
    int n = cdsm__w.n;
    size_t ent = 8 + cdsm__u32s((size_t)n);
    uint32_t first = 0;
    if (nbar) memcpy(&first, barp, sizeof first);
    if (!nbar || (first + nbar - 1 <= rs.nbars && (first + nbar - 1 != rs.nbars || first >= rs.bar0))) return CDSM_OK;
    for (uint32_t i = 0; rs.nbars && i <= rs.nbars - rs.bar0; i++) free(rs.bars[i].vc);
    free(rs.bars);
    rs.bars = calloc(nbar, sizeof *rs.bars);
    cdsm_check(rs.bars != NULL);
    for (uint32_t i = 0; i < nbar; i++) {
        uint32_t epoch, flags;
        memcpy(&epoch, barp + i * ent, sizeof epoch);
        memcpy(&flags, barp + i * ent + 4, sizeof flags);
        if (epoch != first + i || !first) return CDSM_ERR_PROTOCOL; /* consecutive epochs */
        rs.bars[i].flags = flags;
        rs.bars[i].vc = malloc(cdsm__u32s((size_t)n));
        cdsm_check(rs.bars[i].vc != NULL);
        memcpy(rs.bars[i].vc, barp + i * ent + 8, cdsm__u32s((size_t)n));
    }
    rs.bar0 = first;
    rs.nbars = first + nbar - 1;
    return CDSM_OK;
}

/* The records of rank x in survivor q's answer: q's own (complete since its start or its
 * last collection), or another rank's as q knows them (kept if they reach furthest, in
 * case that rank cannot answer: lost with this one). */
static int take_records(int q, int x, cdsm__rd_t *rd)
{
    uint32_t nrec = cdsm__rd_u32(rd);
    if (rd->bad) return CDSM_ERR_PROTOCOL;
    size_t start = rd->pos;
    uint32_t first = 0;
    int gap = 0;
    for (uint32_t k = 0; k < nrec; k++) {
        const uint32_t *vc, *pages, *empty;
        uint32_t nempty;
        const cdsm__wire_iv_t *w = cdsm__iv_take(rd, &vc, &pages, &empty, &nempty);
        if (w && k == 0) first = w->idx;
        if (!w || w->rank != (uint32_t)x) return CDSM_ERR_PROTOCOL;
        if (w->idx != first + k) gap = 1;
    }
    if (x == q) {
        if (gap) return CDSM_ERR_PROTOCOL;
        if (nrec) rs.rec_first[q] = first;
        cdsm__buf_put(&rs.recs[q], rd->p + start, rd->pos - start);
        return CDSM_OK;
    }
    if (gap || !nrec) return CDSM_OK;
    uint32_t last = first + nrec - 1;
    if (rs.alt[x].len && (last < rs.alt_last[x] || (last == rs.alt_last[x] && first >= rs.alt_first[x])))
        return CDSM_OK;
    rs.alt[x].len = 0;
    cdsm__buf_put(&rs.alt[x], rd->p + start, rd->pos - start);
    rs.alt_first[x] = first;
    rs.alt_last[x] = last;
    return CDSM_OK;
}

/* Parse one survivor's answer into the store. Caller holds mu. */
static int take_replay_rep(int q, cdsm__rd_t *rd)
{
    int n = cdsm__w.n;
    uint32_t status = cdsm__rd_u32(rd);
    if (rd->bad || status > 1) return CDSM_ERR_PROTOCOL;
    if (status == 1) { /* replayed too: its records come from the others */
        rs.co_lost[q] = 1;
        return CDSM_OK;
    }
    uint32_t nbar = cdsm__rd_u32(rd);
    const uint8_t *barp = cdsm__rd_take(rd, (size_t)nbar * (8 + cdsm__u32s((size_t)n)));
    if (take_grants(q, rd) || take_bars(barp, nbar)) return CDSM_ERR_PROTOCOL;
    for (int x = 0; x < n; x++)
        if (x != cdsm__w.rank && take_records(q, x, rd)) return CDSM_ERR_PROTOCOL;
    uint32_t released = cdsm__rd_u32(rd);
    if (rd->bad || cdsm__conv_take_due(rd) || cdsm__conv_take_listed(rd) || cdsm__gcopy_take_all(rd, q))
        return CDSM_ERR_PROTOCOL;
    if (released > rs.released_max) rs.released_max = released;
    return CDSM_OK;
}

static int store_alloc(int n)
{
    rs.recs = calloc((size_t)n, sizeof *rs.recs);
    rs.rec_pos = calloc((size_t)n, sizeof *rs.rec_pos);
    rs.rec_first = calloc((size_t)n, sizeof *rs.rec_first);
    rs.co_lost = calloc((size_t)n, 1);
    rs.rec_last = calloc((size_t)n, sizeof *rs.rec_last);
    rs.alt = calloc((size_t)n, sizeof *rs.alt);
    rs.alt_first = calloc((size_t)n, sizeof(uint32_t));
    rs.alt_last = calloc((size_t)n, sizeof(uint32_t));
    if (!rs.recs || !rs.rec_pos || !rs.rec_first || !rs.rec_last || !rs.co_lost || !rs.alt || !rs.alt_first ||
        !rs.alt_last)
        return cdsm__error(CDSM_ERR_NOMEM, "replay store");
    for (int q = 0; q < n; q++) rs.rec_first[q] = 1;
    return CDSM_OK;
}

/* Ask every other rank for what the replay needs and take its answer (one replayed at the
 * same time answers that it is). Caller holds mu. */
static int gather(void)
{
    int n = cdsm__w.n, me = cdsm__w.rank, rc = CDSM_OK;
    for (int q = 0; q < n && !rc; q++)
        if (q != me) rc = cdsm__tp_send(q, CDSM_MSG_REPLAY_REQ, (uint64_t)q, NULL, 0, NULL, 0);
    for (int q = 0; q < n && !rc; q++) {
        if (q == me) continue;
        int late = 0;
        cdsm__reply_t *rep;
        /* Asked again after a second without an answer (a request once sat undelivered
         * inside MPI for 30 s; serving it twice is harmless). */
        while (!(rep = cdsm__wait_reply_for(CDSM_MSG_REPLAY_REP, (uint64_t)q, 1000, &late)) && late) {
            cdsm__log(CDSM_LOG_WARN, "replaying rank %d: no replay data from rank %d after 1 s: asking again", me, q);
            if ((rc = cdsm__tp_send(q, CDSM_MSG_REPLAY_REQ, (uint64_t)q, NULL, 0, NULL, 0))) return rc;
        }
        if (!rep) return cdsm__error(CDSM_ERR_PEER_LOST, "replaying rank %d: rank %d was lost too", me, cdsm__lost());
        cdsm__rd_t rd = {rep->payload, rep->hdr.len, 0, 0};
        rc = take_replay_rep(q, &rd);
        if (rc) cdsm__error(rc, "replaying rank %d: malformed replay data from rank %d", me, q);
        cdsm__reply_free(rep);
    }
    return rc;
}

/* Ranks lost at the same time: their records as the survivors know them (their diffs,
 * their replacements make again, and serve once made). Drops the other lists. */
static int adopt_co_lost(int rc)
{
    int n = cdsm__w.n, ncolost = 0;
    for (int x = 0; x < n && !rc; x++) {
        if (!rs.co_lost[x]) continue;
        ncolost++;
        cdsm__buf_free(&rs.recs[x]);
        rs.recs[x] = rs.alt[x]; /* (taken over: not freed below) */
        rs.alt[x] = (cdsm__buf_t){0};
        if (rs.recs[x].len) rs.rec_first[x] = rs.alt_first[x];
        rs.rec_last[x] = rs.recs[x].len ? rs.alt_last[x] : 0;
        cdsm__log(CDSM_LOG_WARN, "replaying rank %d: rank %d is replayed at the same time; its records %u..%u come from "
                  "the survivors", cdsm__w.rank, x, rs.recs[x].len ? rs.alt_first[x] : 0, rs.recs[x].len ? rs.alt_last[x] : 0);
    }
    for (int x = 0; x < n; x++) cdsm__buf_free(&rs.alt[x]);
    free(rs.alt);
    free(rs.alt_first);
    free(rs.alt_last);
    rs.alt = NULL;
    rs.alt_first = rs.alt_last = NULL;
    if (!rc && ncolost == n - 1)
        rc = cdsm__error(CDSM_ERR_PEER_LOST, "replaying rank %d: every other rank is being replayed too: no log survived",
                         cdsm__w.rank);
    return rc;
}

/* Grants of the lost rank as the survivors heard of them (gcopy.c): the taken ones its
 * other party was lost with join the replay's grants; the made ones were logged. */
static void adopt_copy(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq, uint32_t grant_seq,
                       const uint32_t *vc, void *arg)
{
    int *added = arg, me = cdsm__w.rank;
    if (granter == (uint32_t)me && acquirer != (uint32_t)me) { /* (logged as it came: gcopy.c) */
        if (grant_seq > rs.granted_last) rs.granted_last = grant_seq;
        return;
    }
    if (acquirer != (uint32_t)me || granter == (uint32_t)me || lock >= cdsm__lk.nlocks) return;
    for (uint32_t i = 0; i < rs.ngrants; i++)
        if (rs.grants[i].acq_seq == acq_seq) return;
    add_grant(lock, acq_seq, grant_seq, (int)granter, vc);
    (*added)++;
}

static void due_pair(uint32_t pg, uint32_t seq, void *arg)
{
    cdsm__buf_put_u32(arg, pg);
    cdsm__buf_put_u32(arg, seq);
}

/* Without a checkpoint to restore, the replay starts from the program's start: every
 * barrier and every record must still be held. */
static int from_start_possible(void)
{
    int n = cdsm__w.n, q = 0;
    while (q < n && rs.rec_first[q] == 1) q++;
    if (rs.bar0 == 1 && q == n) return CDSM_OK;
    return cdsm__error(CDSM_ERR_STATE,
                       "replaying rank %d: no checkpoint of it can be restored (CDSM_CKPT_DIR %s) and the logs of its "
                       "start were collected (the oldest barrier held is %u, rank %d's oldest record %u)",
                       cdsm__w.rank, cdsm__ckpt_enabled() ? "holds none usable" : "is not set", rs.bar0, q < n ? q : 0,
                       q < n ? rs.rec_first[q] : 1);
}

static void convert_listed(uint32_t epoch);

int cdsm__replay_begin(void)
{
    cdsm__state_t *g = &cdsm__g;
    rs.replay_t0 = cdsm__mono_ns();
    int rc = store_alloc(cdsm__w.n);
    if (rc) return rc;
    pthread_mutex_lock(&g->mu);
    rc = adopt_co_lost(gather());
    int copied = 0;
    if (!rc) cdsm__gcopy_foreach(adopt_copy, &copied);
    if (copied)
        cdsm__log(CDSM_LOG_INFO, "rank %d: %d grants from ranks lost with it, as the survivors heard of them",
                  cdsm__w.rank, copied);
    /* Its conversions as the survivors heard of them (the reader may be lost with it). */
    cdsm__buf_t due = {0};
    cdsm__gcopy_conversions(cdsm__w.rank, due_pair, &due);
    if (due.len) cdsm__conv_due_add((const uint32_t *)(const void *)due.p, due.len / 8);
    cdsm__buf_free(&due);
    uint64_t ck = 0;
    if (!rc) rc = cdsm__ckpt_takeover(rs.nbars > rs.released_max ? rs.nbars : rs.released_max, &ck);
    if (!rc && !ck) rc = from_start_possible();
    if (!rc) {
        cdsm__mode.replaying = 1;
        cdsm__mode.fast_forward = ck != 0; /* until cdsm_resume() restores it */
        /* The barrier manager's view as of the last logged barrier (survivors' arrivals
         * for the next one carry records newer than it). */
        if (rs.nbars) cdsm__barrier_adopt(rs.bars[rs.nbars - rs.bar0].vc);
        cdsm__conv_sync(); /* (pages the lost process converted before its first synchronisation) */
        if (!cdsm__mode.fast_forward) convert_listed(0);
        cdsm__log(CDSM_LOG_INFO, "rank %d: replaying %u logged barriers and %u lock grants%s", cdsm__w.rank,
                  rs.nbars ? rs.nbars - rs.bar0 + 1 : 0, rs.ngrants, ck ? " after its last checkpoint" : "");
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* Rank x's records after the list held, up to idx upto, from its replacement (x was lost
 * with this rank, and its grant brought them to this rank's lost process only): asked
 * again of its next replacement if it dies first. Caller holds mu. */
static int fetch_records(int x, uint32_t upto)
{
    uint32_t req[2] = {rs.rec_last[x] + 1, upto};
    uint64_t tag = (uint64_t)x << 32 | upto;
    int rc = cdsm__tp_send(x, CDSM_MSG_REC_REQ, tag, req, sizeof req, NULL, 0), late = 1;
    cdsm__reply_t *rep = NULL;
    while (!rc && !(rep = cdsm__wait_reply_for(CDSM_MSG_REC_REP, tag, 1000, &late)) && late)
        rc = cdsm__tp_send(x, CDSM_MSG_REC_REQ, tag, req, sizeof req, NULL, 0); /* (a second answer is dropped) */
    if (rc || !rep)
        return rc ? rc : cdsm__error(CDSM_ERR_PEER_LOST, "replaying rank %d: rank %d was lost", cdsm__w.rank, cdsm__lost());
    cdsm__rd_t rd = {rep->payload, rep->hdr.len, 0, 0};
    uint32_t n = cdsm__rd_u32(&rd), want = req[0];
    size_t start = rd.pos;
    for (uint32_t k = 0; k < n && !rd.bad; k++) {
        const uint32_t *vc, *pages, *empty;
        uint32_t nempty;
        const cdsm__wire_iv_t *w = cdsm__iv_take(&rd, &vc, &pages, &empty, &nempty);
        if (!w || w->rank != (uint32_t)x || w->idx != want++) rd.bad = 1;
    }
    if (!rd.bad && want == upto + 1) {
        cdsm__buf_put(&rs.recs[x], rd.p + start, rd.pos - start);
        rs.rec_last[x] = upto;
    } else {
        rc = cdsm__error(CDSM_ERR_PROTOCOL, "replaying rank %d: rank %d sent records %u..%u for %u..%u", cdsm__w.rank,
                         x, req[0], want - 1, req[0], upto);
    }
    cdsm__reply_free(rep);
    return rc;
}

/* Records of every other rank with idx <= vc[q], not incorporated yet. Caller holds mu. */
static int incorporate_upto(const uint32_t *vc)
{
    cdsm__buf_t b = {0};
    uint32_t nrec = 0;
    for (int q = 0; q < cdsm__w.n; q++) {
        if (q == cdsm__w.rank) continue;
        if (rs.co_lost[q] && vc[q] > rs.rec_last[q] && vc[q] > cdsm__g.vc[q]) {
            int rc = fetch_records(q, vc[q]);
            if (rc) return rc;
        }
        while (rs.rec_pos[q] < rs.recs[q].len) {
            const uint8_t *p = rs.recs[q].p + rs.rec_pos[q];
            cdsm__wire_iv_t w;
            memcpy(&w, p, sizeof w);
            if (w.idx > vc[q]) break;
            size_t sz = cdsm__iv_wire_size(p);
            cdsm__buf_put(&b, p, sz);
            rs.rec_pos[q] += sz;
            nrec++;
        }
    }
    cdsm__rd_t rd = {b.p, b.len, 0, 0};
    int rc = nrec ? cdsm__iv_incorporate(&rd, nrec) : CDSM_OK;
    cdsm__buf_free(&b);
    return rc;
}

/* Conversions no survivor saw served (their readers were lost too): at the start of the
 * segment whose barrier logged the interval that lists them. epoch: the barrier passed. */
static void convert_listed(uint32_t epoch)
{
    uint32_t next = UINT32_MAX;
    if (rs.nbars && epoch + 1 >= rs.bar0 && epoch + 1 <= rs.nbars) next = rs.bars[epoch + 1 - rs.bar0].vc[cdsm__w.rank];
    cdsm__conv_upto(next);
}

int cdsm__replay_logged(uint32_t epoch)
{
    return rs.nbars && epoch >= rs.bar0 && epoch <= rs.nbars;
}

void cdsm__replay_restored(void)
{
    cdsm__state_t *g = &cdsm__g;
    convert_listed(cdsm__bar.epoch);
    for (int q = 0; q < cdsm__w.n; q++) {
        if (q == cdsm__w.rank) continue;
        while (rs.rec_pos[q] < rs.recs[q].len) {
            cdsm__wire_iv_t w;
            memcpy(&w, rs.recs[q].p + rs.rec_pos[q], sizeof w);
            if (w.idx > g->vc[q]) break;
            rs.rec_pos[q] += cdsm__iv_wire_size(rs.recs[q].p + rs.rec_pos[q]);
        }
    }
}

int cdsm__replay_barrier(uint32_t epoch, uint32_t *flags)
{
    cdsm__state_t *g = &cdsm__g;
    if (!cdsm__mode.replaying || epoch > rs.nbars) return 0;
    cdsm_check(epoch >= rs.bar0); /* earlier ones are replaced by the restored checkpoint */
    const bar_rec_t *br = &rs.bars[epoch - rs.bar0];
    if (br->vc[cdsm__w.rank] != g->vc[cdsm__w.rank]) {
        cdsm__log(CDSM_LOG_ERROR,
                  "replay of rank %d diverged at barrier %u: it has made %u intervals, the lost process had "
                  "made %u (the program is not piecewise deterministic, or has a data race)",
                  cdsm__w.rank, epoch, g->vc[cdsm__w.rank], br->vc[cdsm__w.rank]);
        cdsm_check(!"replay diverged");
    }
    int rc = incorporate_upto(br->vc);
    cdsm_check(rc == CDSM_OK);
    cdsm__vc_merge(g->vc, br->vc, cdsm__w.n);
    memcpy(cdsm__bar.vc_bar, g->vc, cdsm__u32s((size_t)cdsm__w.n));
    *flags = br->flags;
    if (br->flags & CDSM_BAR_GC) rs.replay_saw_gc = 1;
    rs.replayed++;
    convert_listed(epoch);
    return 1;
}

/* The most intervals of this rank any survivor knows of (0 when a survivor cannot say:
 * the error is logged). Caller holds mu. */
static uint32_t ask_known(void)
{
    uint32_t round = ++rs.know_round, known = 0;
    int n = cdsm__w.n, *sent_to = malloc((size_t)n * sizeof *sent_to);
    if (!sent_to) return 0;
    for (int q = 0; q < n; q++) {
        sent_to[q] = q == cdsm__w.rank ? -1 : cdsm__w.phys[q];
        if (q != cdsm__w.rank && cdsm__tp_send(q, CDSM_MSG_KNOW_REQ, round, NULL, 0, NULL, 0)) goto out;
    }
    for (int i = 0; i < n - 1; i++) {
        cdsm__reply_t *rep = NULL;
        if (cdsm__ft_wait_each(CDSM_MSG_KNOW_REQ, CDSM_MSG_KNOW_REP, round, sent_to, "asking the survivors how far they know this rank",
                               &rep))
            goto out;
        uint32_t v = 0;
        if (rep->hdr.len >= 4) memcpy(&v, rep->payload, sizeof v);
        if (v > known) known = v;
        cdsm__reply_free(rep);
    }
out:
    free(sent_to);
    return known;
}

int cdsm__replay_acquire(uint32_t l, uint32_t seq)
{
    cdsm__state_t *g = &cdsm__g;
    /* The lost process got further if its next barrier is logged, or a later grant it
     * took or made (then the survivors may know its intervals from after this point). */
    int later = cdsm__bar.epoch < rs.nbars || rs.granted_last > seq;
    for (uint32_t i = 0; i < rs.ngrants; i++) {
        const grant_rec_t *gr = &rs.grants[i];
        if (gr->acq_seq > seq) later = 1;
        if (gr->lock != l || gr->acq_seq != seq) continue;
        int rc = incorporate_upto(gr->vc);
        cdsm_check(rc == CDSM_OK);
        cdsm__det_log(CDSM_DET_RECV, (uint32_t)gr->granter, l, seq, gr->grant_seq, gr->vc);
        cdsm__vc_merge(g->vc, gr->vc, cdsm__w.n);
        cdsm__reply_t **unread = cdsm__lock_unread_grant(l, seq); /* the replay took it from the log */
        if (unread) {
            cdsm__reply_t *r = *unread;
            *unread = r->next;
            cdsm__reply_free(r);
        }
        cdsm__lock_set_state(l, CDSM_LK_HELD);
        rs.grants_taken++;
        return CDSM_OK;
    }
    if (!later && rs.known_ivs <= g->vc[cdsm__w.rank]) {
        /* Nothing logged says the lost process got further; but a survivor may know of
         * intervals it made after this point (a grant it made and nobody has read yet). */
        rs.known_ivs = ask_known();
    }
    if (rs.known_ivs > g->vc[cdsm__w.rank]) later = 1;
    if (later) { /* taken without a grant: the lost process had the token */
        cdsm__lock_set_state(l, CDSM_LK_HELD);
        CDSM_STAT_ADD(lock_acquires_local, 1);
        return CDSM_OK;
    }
    /* Where the lost process stopped (or was about to ask): live again from here. */
    cdsm__lock_set_waiting(l, seq);
    return cdsm__replay_finish();
}

static int servable(const deferred_t *d)
{
    cdsm__state_t *g = &cdsm__g;
    uint32_t upto;
    if (d->hdr.type == CDSM_MSG_REC_REQ)
        return cdsm__rec_req_newest(d->payload, d->hdr.len, &upto) || upto <= g->vc[cdsm__w.rank];
    if (d->hdr.type == CDSM_MSG_DIR_REQ) return !cdsm__mode.replaying || cdsm__own_dir_req_ready(d->payload, d->hdr.len);
    if (d->hdr.type != CDSM_MSG_DIFF_REQ) return !cdsm__mode.replaying;
    uint32_t newest;
    /* (A malformed one is served at once: serving it reports it.) */
    return cdsm__diff_req_newest(d->payload, d->hdr.len, &newest) || newest <= g->vc[cdsm__w.rank];
}

int cdsm__replay_defer(const cdsm__msg_hdr_t *h, const cdsm__rd_t *r)
{
    if (!cdsm__mode.replaying) return 0;
    deferred_t d = {NULL, *h, (uint8_t *)r->p};
    if (servable(&d)) return 0;
    deferred_t *e = malloc(sizeof *e), **pp = &rs.deferred;
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
    static int serving; /* (a served request may convert a page: see cdsm__replay_converted) */
    if (serving) return;
    serving = 1;
    for (deferred_t **pp = &rs.deferred; *pp;) {
        deferred_t *d = *pp;
        if (!servable(d)) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
        cdsm__rd_t rd = {d->payload, d->hdr.len, 0, 0};
        if (d->hdr.type == CDSM_MSG_PAGE_REQ)
            cdsm__serve_page(&d->hdr, &rd);
        else if (d->hdr.type == CDSM_MSG_DIR_REQ)
            cdsm__own_on_dir_req(&d->hdr, &rd);
        else if (d->hdr.type == CDSM_MSG_BAR_ARRIVE)
            cdsm__bar_on_arrive(&d->hdr, &rd); /* live: collected as usual */
        else if (d->hdr.type == CDSM_MSG_REC_REQ)
            cdsm__serve_records(&d->hdr, &rd);
        else if (d->hdr.type == CDSM_MSG_LK_FREEZE)
            cdsm__lk_on_freeze(&d->hdr, &rd); /* at the live point: report, and wait for the rebuild */
        else
            cdsm__serve_diffs(&d->hdr, &rd);
        free(d->payload);
        free(d);
    }
    serving = 0;
}

void cdsm__replay_converted(uint32_t pg, int home, uint32_t seq)
{
    cdsm__gcopy_converted(pg, home, seq);
    /* A replaying home that made a base answers the first fetches that waited for it now:
     * the asker may be another replay this one is about to wait for. */
    if (home == cdsm__w.rank && cdsm__mode.replaying) cdsm__replay_serve_deferred();
}

void cdsm__replay_take(int type, uint64_t tag, void (*fn)(const cdsm__msg_hdr_t *h, cdsm__rd_t *r, void *arg),
                       void *arg)
{
    for (deferred_t **pp = &rs.deferred; *pp;) {
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
    cdsm__lock_freeze(1); /* lock requests keep waiting until the queues are rebuilt */
    cdsm__mode.replaying = 0;
    /* After a collection some survivors fetch whole pages from this rank as their
     * keeper: make every copy current first. */
    if (rs.replay_saw_gc)
        CDSM_PG_FOR_MADE(pg)
            if (cdsm__pg(pg)->notices && cdsm__pg(pg)->state == CDSM_PG_INVALID)
                cdsm__pg(pg)->claim ? cdsm__own_miss(pg, NULL) : cdsm__validate(pg, NULL); /* (never touched: whole) */
    cdsm__replay_serve_deferred();
    if (rs.deferred)
        cdsm__log(CDSM_LOG_ERROR, "rank %d went live with requests for diffs it has not made again", cdsm__w.rank);
    int rc = cdsm__lock_rebuild();
    if (rc) return rc;
    cdsm__recover_done(cdsm__w.rank);
    cdsm__log(CDSM_LOG_WARN,
              "rank %d: replay of %u barriers and %u lock grants done in %.3f s at %.6f (synchronisation %u); the "
              "rank is live again",
              cdsm__w.rank, rs.replayed, rs.grants_taken, (double)(cdsm__mono_ns() - rs.replay_t0) / 1e9, cdsm__wall_s(), g->sync_seq);
    CDSM_STAT_ADD(replays, 1);
    CDSM_STAT_ADD(replay_us, (cdsm__mono_ns() - rs.replay_t0) / 1000);
    CDSM_STAT_ADD(replayed_barriers, rs.replayed);
    for (uint32_t i = 0; rs.nbars && i <= rs.nbars - rs.bar0; i++) free(rs.bars[i].vc);
    free(rs.bars);
    rs.bars = NULL;
    rs.nbars = 0;
    rs.bar0 = 1;
    if (rs.recs)
        for (int q = 0; q < cdsm__w.n; q++) cdsm__buf_free(&rs.recs[q]);
    free(rs.recs);
    free(rs.rec_pos);
    free(rs.rec_first);
    free(rs.rec_last);
    rs.rec_last = NULL;
    free(rs.co_lost);
    rs.co_lost = NULL;
    rs.recs = NULL;
    rs.rec_pos = NULL;
    rs.rec_first = NULL;
    for (uint32_t i = 0; i < rs.ngrants; i++) free(rs.grants[i].vc);
    free(rs.grants);
    rs.grants = NULL;
    rs.ngrants = rs.grants_cap = rs.granted_last = rs.known_ivs = rs.replayed = rs.grants_taken = rs.released_max = 0;
    return CDSM_OK;
}

/* The protocol's hook for a barrier a replacement enters (caller holds mu): replayed from
 * the log when the survivors passed it (1: mu released, status in *rc), else live from
 * here (0). */
int cdsm__replay_barrier_hook(int kind, uint32_t epoch, int *flags_out, int *rc)
{
    uint32_t rflags = 0;
    if (!cdsm__replay_barrier(epoch, &rflags)) {
        *rc = cdsm__replay_finish(); /* the first barrier the log does not hold: live again */
        return 0;
    }
    /* Logged: the survivors passed it; take its outcome without messages. */
    cdsm__det_log(CDSM_DET_BARRIER, (uint32_t)cdsm__w.rank, epoch, cdsm__g.sync_seq, rflags, cdsm__g.vc);
    /* As the manager: release the survivors whose arrival there waited. */
    if (cdsm__w.rank == 0) cdsm__replay_take(CDSM_MSG_BAR_ARRIVE, epoch, cdsm__bar_release_replayed, &rflags);
    CDSM_STAT_ADD(barriers, 1);
    cdsm__replay_serve_deferred();
    pthread_mutex_unlock(&cdsm__g.mu);
    int r = cdsm__tp_flush();
    /* A collection the survivors have not finished (its second barrier is not logged)
     * waits for this rank's part: without archived diffs (resume mode) nothing of it may
     * be skipped. Otherwise only its second barrier is replayed (the diffs it dropped are
     * archived). */
    if (!r && (rflags & CDSM_BAR_GC) && cdsm__mode.resume_mode && !cdsm__replay_logged(epoch + 1))
        r = cdsm__gc();
    else if (!r && (rflags & CDSM_BAR_GC))
        r = cdsm__barrier_full(CDSM_BAR_GC_DONE, 0, NULL, NULL, NULL);
    if (!r && (kind == CDSM_BAR_PLAIN || kind == CDSM_BAR_RESUME) && cdsm__cfg.check)
        r = cdsm__barrier_full(CDSM_BAR_AUDIT, 0, NULL, NULL, NULL);
    if (flags_out) *flags_out = (int)rflags;
    *rc = r;
    return 1;
}
