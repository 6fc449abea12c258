/* Barriers through a manager (rank 0): arrivals carry the records the manager may lack,
 * the manager merges them and sends each rank what it lacks. The same round trip carries
 * the garbage-collection decision, counters for cdsm_stats_reduce(), the checker's
 * agreement value and, when logging is on, every rank's last committed checkpoint
 * (through the fault-tolerance hooks). Garbage collection itself is in gc.c.
 *
 * Above CDSM_BARRIER_FANOUT + 1 ranks (and without spares) the round trip runs through a
 * tree: each rank with children collects their arrivals and its own exactly as the
 * manager does, sends its parent one combined arrival (its subtree's records, the
 * element-wise minimum of their clocks, the sums), and passes the release on to each
 * child with the records that child's subtree lacks. Rank 0, the root, decides as
 * before; it exchanges only with its own children. */
#include <stdlib.h>
#include <string.h>

#include "inject.h"
#include "proto.h"
#include "vclock.h"

#define MANAGER 0

cdsm__barrier_t cdsm__bar;

/* The manager's collection state (rank 0, service thread). */
static struct manager {
    uint32_t epoch;        /* epoch of the barrier being collected */
    int kind;              /* kind of that barrier (-1: none) */
    int has_stats;
    int has_log;           /* arrivals carry checkpoint positions */
    cdsm__ckpt_pos_t *pos; /* last committed checkpoint of each rank */
    int gc_warned;         /* the archiving note is logged once */
    uint32_t bits;         /* CDSM_BAR_IN_RESUME / _WANT_CKPT of any arrival */
    uint32_t manifest;     /* epoch of the last restart manifest committed (0: none) */
    uint8_t *arrived;      /* which slots (ranks; in the tree: self, children) arrived */
    uint8_t *pos_have;     /* which ranks' checkpoint positions were collected */
    size_t rows;           /* slots of vcs and arrived */
    uint8_t *gone;         /* ranks lost during finalize (FINAL barriers skip them) */
    int died;              /* a rank died during finalize (releases say so) */
    int finals;            /* FINAL barriers released */
    cdsm__buf_t *last;     /* each rank's release of the last barrier */
    uint32_t last_epoch;   /* epoch of the last barrier released */
} mgr = {.kind = -1};

/* ---- the tree ----------------------------------------------------------------------------- */

/* The tree's shape is the job's: every rank computes the same from CDSM_BARRIER_FANOUT,
 * the rank count and CDSM_SPARES (a replacement's recovery is built around the central
 * manager). The final barrier (it must finish without a rank lost during finalize) and
 * the checker's rounds (their audit parts are per rank) stay central. An inner rank's
 * view of what its subtree's next arrivals start after is the clock of the last release
 * it passed on: a central round never follows a tree barrier with intervals in between
 * (the checker's comes right after the barrier it checks, the final one is last). */
static int tree_possible(void)
{
    return cdsm__cfg.bar_fanout && !cdsm__cfg.spares && (uint64_t)cdsm__w.n > cdsm__cfg.bar_fanout + 1;
}

static int tree_on(int kind)
{
    return tree_possible() && kind != CDSM_BAR_FINAL && kind != CDSM_BAR_AUDIT;
}

/* Rank r's children are k*r+1 .. k*r+k (those below n); its parent (r-1)/k. */
static int tree_children(int r)
{
    int k = (int)cdsm__cfg.bar_fanout, first = k * r + 1;
    if (first >= cdsm__w.n) return 0;
    return first + k <= cdsm__w.n ? k : cdsm__w.n - first;
}

static int tree_parent(void)
{
    return (cdsm__w.rank - 1) / (int)cdsm__cfg.bar_fanout;
}

/* Slots of a collection: central, one per rank; in the tree, this rank (0) and its
 * children (1..k). */
static int slots(int tree)
{
    return tree ? 1 + tree_children(cdsm__w.rank) : cdsm__w.n;
}

static int slot_rank(int tree, int s)
{
    if (!tree) return s;
    return s == 0 ? cdsm__w.rank : (int)cdsm__cfg.bar_fanout * cdsm__w.rank + s;
}

/* The slot of src, or -1 when src is no child of this rank. */
static int slot_of(int tree, int src)
{
    if (!tree) return src;
    if (src == cdsm__w.rank) return 0;
    int s = src - (int)cdsm__cfg.bar_fanout * cdsm__w.rank;
    return s >= 1 && s <= tree_children(cdsm__w.rank) ? s : -1;
}

/* ---- the messages: one encoder and one decoder each ----------------------------------- */

/* An arrival, as parsed (pointers into the payload). The records and the audit's part
 * follow it in the payload. */
typedef struct arrival {
    uint32_t kind, bits, has_check, npos, has_stats, nrec;
    uint64_t check, mem;
    const uint8_t *pos; /* npos pairs: rank (u32), its last committed checkpoint */
    const uint64_t *stats;
    const uint32_t *vc;
} arrival_t;

/* The checkpoint positions: npos pairs of a rank and its position (ranks[i], pos[i]). */
typedef struct pos_list {
    uint32_t npos;
    const uint32_t *ranks;
    const cdsm__ckpt_pos_t *pos;
} pos_list_t;

static void put_arrival(cdsm__buf_t *b, uint32_t kword, int has_check, uint64_t check, uint64_t mem,
                        const pos_list_t *pl, const void *stats, const uint32_t *vc, size_t *nrec_at)
{
    cdsm__buf_put_u32(b, kword);
    cdsm__buf_put_u32(b, (uint32_t)has_check);
    cdsm__buf_put(b, &check, 8);
    cdsm__buf_put(b, &mem, 8);
    cdsm__buf_put_u32(b, pl->npos);
    for (uint32_t i = 0; i < pl->npos; i++) {
        cdsm__buf_put_u32(b, pl->ranks[i]);
        cdsm__buf_put(b, &pl->pos[i], sizeof pl->pos[i]);
    }
    cdsm__buf_put_u32(b, stats != NULL);
    if (stats) cdsm__buf_put(b, stats, sizeof(cdsm_stats_t));
    cdsm__buf_put_u32(b, 0); /* nrec, patched once the records are written */
    *nrec_at = b->len - 4;
    cdsm__buf_put(b, vc, cdsm__u32s((size_t)cdsm__w.n));
}

static int take_arrival(cdsm__rd_t *r, arrival_t *a)
{
    uint32_t raw = cdsm__rd_u32(r);
    a->kind = raw & CDSM_BAR_KIND_MASK;
    a->bits = raw & ~(uint32_t)CDSM_BAR_KIND_MASK;
    a->has_check = cdsm__rd_u32(r);
    a->check = cdsm__rd_u64(r);
    a->mem = cdsm__rd_u64(r);
    a->npos = cdsm__rd_u32(r);
    a->pos = a->npos <= (uint32_t)cdsm__w.n ? cdsm__rd_take(r, a->npos * (4 + sizeof(cdsm__ckpt_pos_t))) : NULL;
    if (!a->pos && a->npos) return CDSM_ERR_PROTOCOL;
    a->has_stats = cdsm__rd_u32(r);
    a->stats = a->has_stats ? cdsm__rd_take(r, sizeof cdsm__bar.stats) : NULL;
    a->nrec = cdsm__rd_u32(r);
    a->vc = cdsm__rd_take(r, cdsm__u32s((size_t)cdsm__w.n));
    return r->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

/* A release, as parsed; the records follow it in the payload. */
typedef struct release {
    uint32_t flags, manifest;
    uint32_t bad[3];     /* the checker's outcome: page, rank a, rank b */
    uint32_t det_bad[4]; /* the logging audit's outcome */
    const void *pos;     /* every rank's checkpoint position, or NULL */
    const void *stats;   /* the counters' sum, or NULL */
    uint32_t nrec;
    const uint32_t *gvc; /* the global vector clock */
} release_t;

/* The release's head up to the records; *nrec_at: where to patch their count. */
static void put_release(cdsm__buf_t *b, const release_t *rl, size_t *nrec_at)
{
    int n = cdsm__w.n;
    cdsm__buf_put_u32(b, rl->flags);
    cdsm__buf_put_u32(b, rl->manifest);
    cdsm__buf_put(b, rl->bad, sizeof rl->bad);
    cdsm__buf_put(b, rl->det_bad, sizeof rl->det_bad);
    cdsm__buf_put_u32(b, rl->pos != NULL);
    if (rl->pos) cdsm__buf_put(b, rl->pos, (size_t)n * sizeof(cdsm__ckpt_pos_t));
    cdsm__buf_put_u32(b, rl->stats != NULL);
    if (rl->stats) cdsm__buf_put(b, rl->stats, sizeof cdsm__bar.stats);
    cdsm__buf_put_u32(b, 0);
    *nrec_at = b->len - 4;
    cdsm__buf_put(b, rl->gvc, cdsm__u32s((size_t)n));
}

static int take_release(cdsm__rd_t *r, release_t *rl)
{
    int n = cdsm__w.n;
    rl->flags = cdsm__rd_u32(r);
    rl->manifest = cdsm__rd_u32(r);
    for (int i = 0; i < 3; i++) rl->bad[i] = cdsm__rd_u32(r);
    for (int i = 0; i < 4; i++) rl->det_bad[i] = cdsm__rd_u32(r);
    rl->pos = cdsm__rd_u32(r) ? cdsm__rd_take(r, (size_t)n * sizeof(cdsm__ckpt_pos_t)) : NULL;
    rl->stats = cdsm__rd_u32(r) ? cdsm__rd_take(r, sizeof(cdsm_stats_t)) : NULL;
    rl->nrec = cdsm__rd_u32(r);
    rl->gvc = cdsm__rd_take(r, cdsm__u32s((size_t)n));
    return r->bad || !rl->gvc ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

/* ---- set-up ---------------------------------------------------------------------------- */

int cdsm__barrier_init(void)
{
    cdsm__barrier_t *b = &cdsm__bar;
    size_t n = (size_t)cdsm__w.n;
    b->vc_bar = calloc(n, sizeof *b->vc_bar);
    if (!b->vc_bar) return cdsm__error(CDSM_ERR_NOMEM, "barrier state");
    int inner = tree_possible() && tree_children(cdsm__w.rank);
    if (cdsm__w.rank != MANAGER && !inner) return CDSM_OK;
    /* The manager keeps a row per rank; an inner node of the tree per slot. */
    size_t rows = cdsm__w.rank == MANAGER ? n : (size_t)slots(1);
    b->vcs = calloc(rows * n, sizeof *b->vcs);
    b->recs = calloc(n, sizeof *b->recs);
    b->maxidx = calloc(n, sizeof *b->maxidx);
    mgr.pos = calloc(n, sizeof *mgr.pos);
    mgr.pos_have = calloc(n, 1);
    mgr.arrived = calloc(rows, 1);
    mgr.rows = rows;
    mgr.gone = calloc(n, 1);
    mgr.last = calloc(n, sizeof *mgr.last);
    if (!b->vcs || !b->recs || !b->maxidx || !mgr.pos || !mgr.pos_have || !mgr.arrived || !mgr.last || !mgr.gone)
        return cdsm__error(CDSM_ERR_NOMEM, "barrier manager state");
    return CDSM_OK;
}

void cdsm__barrier_fini(void)
{
    cdsm__barrier_t *b = &cdsm__bar;
    for (int q = 0; b->recs && q < cdsm__w.n; q++) cdsm__buf_free(&b->recs[q]);
    for (int q = 0; mgr.last && q < cdsm__w.n; q++) cdsm__buf_free(&mgr.last[q]);
    free(b->recs);
    free(b->vcs);
    free(b->maxidx);
    free(b->vc_bar);
    free(mgr.pos);
    free(mgr.last);
    free(mgr.arrived);
    free(mgr.pos_have);
    free(mgr.gone);
    memset(b, 0, sizeof *b);
    memset(&mgr, 0, sizeof mgr);
    mgr.kind = -1;
}

/* ---- the manager -------------------------------------------------------------------------- */

/* Whether this barrier collects garbage, and the flags every release carries. */
static uint32_t release_flags(void)
{
    uint32_t flags = 0;
    /* A program in resume mode is collected only at its resume points, where every rank
     * commits a checkpoint it can be restarted from (and any rank may ask for one). */
    int gc_here = (mgr.kind == CDSM_BAR_PLAIN && !(mgr.bits & CDSM_BAR_IN_RESUME)) || mgr.kind == CDSM_BAR_RESUME;
    int want = mgr.kind == CDSM_BAR_RESUME && (mgr.bits & CDSM_BAR_WANT_CKPT);
    if (gc_here && (cdsm__bar.mem_max > cdsm__cfg.gc_bound || want)) {
        /* Recovery stays possible: with checkpoints every rank commits one at this
         * barrier first; without, each rank archives its own diffs (cdsm__gc). */
        flags |= CDSM_BAR_GC;
        if (cdsm__ft.archive_needed() && !mgr.gc_warned++)
            cdsm__log(CDSM_LOG_INFO,
                      "collecting diffs and records (a rank holds %llu bytes, CDSM_GC_BOUND=%llu); with "
                      "logging on and no checkpoints (CDSM_CKPT_DIR empty) each rank keeps its own diffs "
                      "for the whole run (counter archive_bytes)",
                      (unsigned long long)cdsm__bar.mem_max, (unsigned long long)cdsm__cfg.gc_bound);
    }
    if (cdsm__bar.mismatch) flags |= CDSM_BAR_MISMATCH;
    if (mgr.died) flags |= CDSM_BAR_DIED;
    return flags;
}

/* The collected records rank `have` lacks (its arrival's vector clock; NULL: all). */
static uint32_t put_lacking(cdsm__buf_t *b, const uint32_t *have)
{
    uint32_t nrec = 0;
    for (int q = 0; q < cdsm__w.n; q++) {
        const uint8_t *p = cdsm__bar.recs[q].p, *end = p + cdsm__bar.recs[q].len;
        while (p < end) {
            cdsm__wire_iv_t w;
            memcpy(&w, p, sizeof w);
            size_t sz = cdsm__iv_wire_size(p);
            if (!have || w.idx > have[q]) {
                cdsm__buf_put(b, p, sz);
                nrec++;
            }
            p += sz;
        }
    }
    return nrec;
}

/* Send rank r its release and keep it until the next one: a rank replaced after it was
 * sent asks again. */
static void send_release(int r, uint32_t epoch, cdsm__buf_t *b)
{
    cdsm__ft.trailer_put(r, b);
    cdsm__tp_send(r, CDSM_MSG_BAR_RELEASE, epoch, b->p, b->len, NULL, 0);
    cdsm__buf_free(&mgr.last[r]);
    mgr.last[r] = *b;
    mgr.last_epoch = epoch;
}

/* Forget the barrier just released. */
static void reset_collection(void)
{
    cdsm__barrier_t *b = &cdsm__bar;
    memset(mgr.arrived, 0, mgr.rows);
    memset(mgr.pos_have, 0, (size_t)cdsm__w.n);
    for (int q = 0; q < cdsm__w.n; q++) b->recs[q].len = 0;
    b->arrived = 0;
    b->mem_max = 0;
    b->check_set = b->mismatch = 0;
    memset(b->stats, 0, sizeof b->stats);
    mgr.has_stats = mgr.has_log = 0;
    mgr.bits = 0;
    mgr.kind = -1;
}

/* Manager: every rank arrived; send each one what it lacks and reset. */
static void release_all(void)
{
    int n = cdsm__w.n;
    release_t rl = {.flags = release_flags(), .manifest = mgr.manifest, .gvc = cdsm__bar.maxidx};
    if (mgr.kind == CDSM_BAR_AUDIT) {
        cdsm__audit_finish(&rl.bad[0], &rl.bad[1], &rl.bad[2]);
        if (mgr.has_log && cdsm__ft.audit_finish(rl.det_bad)) rl.flags |= CDSM_BAR_DETLOST;
    }
    rl.pos = mgr.has_log ? mgr.pos : NULL;
    rl.stats = mgr.has_stats ? cdsm__bar.stats : NULL;
    int tree = tree_on(mgr.kind);
    for (int s = 0; s < slots(tree); s++) { /* (in the tree, a child's row is its subtree's minimum) */
        cdsm__buf_t b = {0};
        size_t nrec_at;
        put_release(&b, &rl, &nrec_at);
        uint32_t nrec = put_lacking(&b, &cdsm__bar.vcs[(size_t)s * (size_t)n]);
        memcpy(b.p + nrec_at, &nrec, sizeof nrec);
        send_release(slot_rank(tree, s), mgr.epoch, &b);
    }
    if (mgr.kind == CDSM_BAR_FINAL) mgr.finals++;
    reset_collection();
}

/* Manager: every rank arrived (at a FINAL barrier, ranks lost during finalize need not);
 * in the tree, this rank and its children. */
static int collected(void)
{
    if (!cdsm__bar.arrived) return 0;
    if (tree_on(mgr.kind)) return cdsm__bar.arrived == slots(1);
    int k = 0;
    for (int q = 0; q < cdsm__w.n; q++) k += mgr.arrived[q] || (mgr.gone[q] && mgr.kind == CDSM_BAR_FINAL);
    return k == cdsm__w.n;
}

void cdsm__bar_gone(int r)
{
    if (cdsm__w.rank != MANAGER || !mgr.gone) return;
    /* A rank that closes after arriving at the barrier being collected, or after the
     * last one was released, just finished. */
    if (mgr.finals >= 2 || (cdsm__bar.arrived && mgr.kind == CDSM_BAR_FINAL && mgr.arrived[r])) return;
    mgr.gone[r] = 1;
    mgr.died = 1;
    __atomic_store_n(&cdsm__w.recovered, 1, __ATOMIC_RELEASE);
    cdsm__log(CDSM_LOG_WARN, "rank %d lost during finalize (all its work was done): finishing without it", r);
    if (collected()) release_all();
}

void cdsm__bar_lost(int r)
{
    if (cdsm__w.rank != MANAGER || !mgr.arrived || !cdsm__mode.resume_mode || !cdsm__bar.arrived ||
        mgr.kind != CDSM_BAR_GC_DONE || !mgr.arrived[r])
        return;
    /* Released on the lost process's arrival, this barrier would let the others drop the
     * diffs a replacement restored from an earlier checkpoint needs (resume mode keeps no
     * archive): it waits for the replacement's arrival instead. */
    mgr.arrived[r] = 0;
    cdsm__bar.arrived--;
    cdsm__log(CDSM_LOG_INFO, "barrier %u (end of a collection): the arrival of lost rank %d no longer counts", mgr.epoch,
              r);
}

void cdsm__bar_manifest(uint32_t epoch)
{
    if (cdsm__w.rank == MANAGER) mgr.manifest = epoch;
}

uint32_t cdsm__bar_collected(int r)
{
    return cdsm__w.rank == MANAGER && cdsm__bar.maxidx ? cdsm__bar.maxidx[r] : 0;
}

uint32_t cdsm__bar_released(void)
{
    return cdsm__w.rank == MANAGER ? mgr.last_epoch : 0;
}

/* Merge an arrival's head into the collection (slot: its row). */
static int collect_head(int slot, const arrival_t *a)
{
    cdsm__barrier_t *b = &cdsm__bar;
    memcpy(&b->vcs[(size_t)slot * (size_t)cdsm__w.n], a->vc, cdsm__u32s((size_t)cdsm__w.n));
    mgr.bits |= a->bits;
    if (a->bits & CDSM_BAR_SUB_MISMATCH) b->mismatch = 1;
    if (a->mem > b->mem_max) b->mem_max = a->mem;
    for (uint32_t i = 0; i < a->npos; i++) {
        uint32_t q;
        const uint8_t *e = a->pos + i * (4 + sizeof(cdsm__ckpt_pos_t));
        memcpy(&q, e, 4);
        if (q >= (uint32_t)cdsm__w.n) return CDSM_ERR_PROTOCOL;
        memcpy(&mgr.pos[q], e + 4, sizeof *mgr.pos);
        mgr.pos_have[q] = 1;
        mgr.has_log = 1;
    }
    if (a->stats) {
        mgr.has_stats = 1;
        for (size_t i = 0; i < CDSM_NSTATS; i++) {
            uint64_t v;
            memcpy(&v, &a->stats[i], 8);
            b->stats[i] += v;
        }
    }
    if (a->has_check) {
        if (b->check_set && b->check != a->check) b->mismatch = 1;
        if (!b->check_set || slot == 0) b->check = a->check; /* (a subtree passes on its root's) */
        b->check_set = 1;
    }
    return CDSM_OK;
}

/* Keep the arrival's records the manager lacks, in order. */
static int collect_records(cdsm__rd_t *r, uint32_t nrec)
{
    cdsm__barrier_t *b = &cdsm__bar;
    for (uint32_t k = 0; k < nrec; k++) {
        const uint8_t *p = r->p + r->pos;
        const uint32_t *vc, *pages, *empty;
        uint32_t nempty;
        const cdsm__wire_iv_t *w = cdsm__iv_take(r, &vc, &pages, &empty, &nempty);
        if (!w) return CDSM_ERR_PROTOCOL;
        if (w->idx <= b->maxidx[w->rank]) continue; /* another rank brought it already */
        if (w->idx != b->maxidx[w->rank] + 1) return CDSM_ERR_PROTOCOL;
        cdsm__buf_put(&b->recs[w->rank], p, (size_t)(r->p + r->pos - p));
        b->maxidx[w->rank] = w->idx;
    }
    return CDSM_OK;
}

/* An inner node of the tree: the element-wise minimum of its rows (its own clock and its
 * children's subtrees'): what its subtree lacks starts where its least informed rank
 * stands. */
static void rows_min(uint32_t *out)
{
    const uint32_t *v = cdsm__bar.vcs;
    size_t n = (size_t)cdsm__w.n;
    memcpy(out, v, cdsm__u32s(n));
    for (size_t s = 1; s < mgr.rows; s++)
        for (size_t q = 0; q < n; q++)
            if (v[s * n + q] < out[q]) out[q] = v[s * n + q];
}

/* An inner node of the tree: its subtree arrived; send the parent one arrival for all of
 * it. The rows of the collection stay until the release (they filter it for each child). */
static void send_up(void)
{
    cdsm__barrier_t *b = &cdsm__bar;
    int n = cdsm__w.n;
    uint32_t *minvc = malloc(cdsm__u32s((size_t)n) + (size_t)n * 4), *ranks = minvc + n;
    cdsm__ckpt_pos_t *pos = malloc((size_t)n * sizeof *pos);
    cdsm_check(minvc && pos); /* a few KiB: the barrier cannot go on without them */
    rows_min(minvc);
    pos_list_t pl = {0, ranks, pos};
    for (int q = 0; q < n; q++)
        if (mgr.pos_have[q]) {
            ranks[pl.npos] = (uint32_t)q;
            pos[pl.npos++] = mgr.pos[q];
        }
    uint32_t kword = (uint32_t)mgr.kind | mgr.bits | (b->mismatch ? CDSM_BAR_SUB_MISMATCH : 0u);
    cdsm__buf_t m = {0};
    size_t nrec_at;
    put_arrival(&m, kword, b->check_set, b->check, b->mem_max, &pl, mgr.has_stats ? b->stats : NULL, minvc, &nrec_at);
    uint32_t nrec = put_lacking(&m, NULL);
    memcpy(m.p + nrec_at, &nrec, sizeof nrec);
    cdsm__buf_put_u32(&m, 0); /* no audit part: the checker's rounds are central */
    cdsm__ft.trailer_put(tree_parent(), &m);
    cdsm__tp_send(tree_parent(), CDSM_MSG_BAR_ARRIVE, mgr.epoch, m.p, m.len, NULL, 0);
    cdsm__buf_free(&m);
    free(minvc);
    free(pos);
    reset_collection();
}

void cdsm__bar_on_arrive(const cdsm__msg_hdr_t *h, cdsm__rd_t *r)
{
    /* A replacement manager keeps arrivals until its replay has passed their barrier: a
     * survivor may wait for the release of a barrier the lost manager released to others
     * only (cdsm__bar_release_replayed). */
    if (cdsm__ft.defer(h, r)) return;
    arrival_t a;
    if (take_arrival(r, &a) || !mgr.arrived) goto bad;
    int tree = tree_on((int)a.kind), slot = slot_of(tree, (int)h->src);
    if (slot < 0 || (!tree && cdsm__w.rank != MANAGER)) goto bad;
    if (h->tag == mgr.last_epoch && mgr.last_epoch) {
        /* A replacement arrives again at a barrier released while its process died. */
        cdsm__tp_send(h->src, CDSM_MSG_BAR_RELEASE, h->tag, mgr.last[h->src].p, mgr.last[h->src].len, NULL, 0);
        return;
    }
    if (cdsm__bar.arrived == 0) {
        mgr.epoch = (uint32_t)h->tag;
        mgr.kind = (int)a.kind;
    }
    if (h->tag != mgr.epoch || (int)a.kind != mgr.kind) {
        cdsm__log(CDSM_LOG_ERROR,
                  "rank %u entered barrier %llu (kind %u) while others are in barrier %u (kind %d): "
                  "ranks called different collective operations",
                  h->src, (unsigned long long)h->tag, a.kind, mgr.epoch, mgr.kind);
        cdsm_check(!"mismatched collective calls");
    }
    if (collect_head(slot, &a) || collect_records(r, a.nrec)) goto bad;
    uint32_t nhash = cdsm__rd_u32(r);
    if (r->bad || (a.kind == CDSM_BAR_AUDIT && cdsm__audit_collect(h->src, r, nhash))) goto bad;
    /* (A replacement arriving again where its process had: the logs were collected once.) */
    if (a.kind == CDSM_BAR_AUDIT && a.npos && !mgr.arrived[slot] && cdsm__ft.audit_collect(h->src, r)) goto bad;
    if (!mgr.arrived[slot]) { /* a replacement may arrive again where its process had */
        mgr.arrived[slot] = 1;
        ++cdsm__bar.arrived;
    }
    if (!collected()) return;
    if (tree && cdsm__w.rank != MANAGER)
        send_up();
    else
        release_all();
    return;
bad:
    cdsm__log(CDSM_LOG_ERROR, "malformed barrier arrival from rank %u", h->src);
    cdsm_check(!"malformed barrier arrival");
}

/* ---- this rank's side ----------------------------------------------------------------------- */

/* Build and send this rank's arrival at barrier `epoch`. Caller holds mu. */
static int arrive(int kind, uint32_t epoch, uint64_t check, const cdsm_stats_t *stats, int has_check)
{
    cdsm__buf_t b = {0};
    uint64_t mem = cdsm__g.log_bytes - cdsm__g.archive_bytes; /* what a collection can free */
    int has_log = cdsm__ft.logging();
    uint32_t kword = (uint32_t)kind | (cdsm__mode.resume_mode ? CDSM_BAR_IN_RESUME : 0u);
    if (kind == CDSM_BAR_RESUME && cdsm__ft.want_ckpt()) kword |= CDSM_BAR_WANT_CKPT;
    /* Piggyback: this rank's last committed checkpoint, so that the others can drop the
     * determinants its replay can no longer need. */
    cdsm__ckpt_pos_t cp = has_log ? cdsm__ft.ckpt_committed() : (cdsm__ckpt_pos_t){0, 0};
    if (has_log) CDSM_STAT_ADD(piggyback_bytes, 8 + sizeof cp);
    uint32_t me = (uint32_t)cdsm__w.rank;
    pos_list_t pl = {has_log ? 1u : 0u, &me, &cp};
    size_t nrec_at;
    put_arrival(&b, kword, has_check, check, mem, &pl, stats, cdsm__g.vc, &nrec_at);
    /* Everything up to the previous barrier is known to the manager already. */
    uint32_t nrec = cdsm__iv_serialize_newer(&b, cdsm__bar.vc_bar);
    memcpy(b.p + nrec_at, &nrec, sizeof nrec);
    uint32_t nhash = 0;
    cdsm__buf_put_u32(&b, 0);
    size_t nhash_at = b.len - 4;
    if (kind == CDSM_BAR_AUDIT) cdsm__audit_hashes(&b, &nhash);
    memcpy(b.p + nhash_at, &nhash, sizeof nhash);
    if (kind == CDSM_BAR_AUDIT && has_log) cdsm__ft.audit_put(&b);
    /* In the tree a rank with children collects its own arrival with theirs. */
    int to = MANAGER;
    if (tree_on(kind) && cdsm__w.rank != MANAGER)
        to = tree_children(cdsm__w.rank) ? cdsm__w.rank : tree_parent();
    cdsm__ft.trailer_put(to, &b);
    int rc = cdsm__tp_send(to, CDSM_MSG_BAR_ARRIVE, epoch, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
    return rc;
}

/* An inner node of the tree, its release come: pass it on to each child with the records
 * that child's subtree lacks (its row of the collection), and put in *own the records
 * this rank lacks (*nown of them). rd stands at the release's records. Caller holds mu. */
static int forward_release(uint32_t epoch, const release_t *rl, cdsm__rd_t *rd, cdsm__buf_t *own, uint32_t *nown)
{
    cdsm__barrier_t *b = &cdsm__bar;
    int n = cdsm__w.n;
    /* The release brings, for each writer, its records after the subtree's minimum up to
     * the release's clock, in order: collected as arrivals are, they leave maxidx at that
     * clock, where the subtree's next arrivals start. */
    for (int q = 0; q < n; q++) b->recs[q].len = 0;
    rows_min(b->maxidx);
    if (collect_records(rd, rl->nrec)) return CDSM_ERR_PROTOCOL;
    cdsm_assert(!memcmp(b->maxidx, rl->gvc, cdsm__u32s((size_t)n)));
    for (size_t s = 1; s < mgr.rows; s++) {
        cdsm__buf_t m = {0};
        size_t nrec_at;
        put_release(&m, rl, &nrec_at);
        uint32_t nrec = put_lacking(&m, &b->vcs[s * (size_t)n]);
        memcpy(m.p + nrec_at, &nrec, sizeof nrec);
        cdsm__ft.trailer_put(slot_rank(1, (int)s), &m);
        cdsm__tp_send(slot_rank(1, (int)s), CDSM_MSG_BAR_RELEASE, epoch, m.p, m.len, NULL, 0);
        cdsm__buf_free(&m);
        CDSM_STAT_ADD(bar_forwarded, 1);
    }
    *nown = put_lacking(own, b->vcs);
    for (int q = 0; q < n; q++) b->recs[q].len = 0;
    return CDSM_OK;
}

/* Take the release of barrier `epoch`: its records, clock, flags, positions and sums.
 * Caller holds mu. */
static int take_release_msg(int kind, uint32_t epoch, cdsm_stats_t *sum, uint32_t *flags, uint32_t *manifest)
{
    int n = cdsm__w.n, rc;
    cdsm__reply_t *rep = cdsm__wait_reply(CDSM_MSG_BAR_RELEASE, epoch);
    if (!rep) return cdsm__error(CDSM_ERR_PEER_LOST, "barrier %u: rank %d was lost", epoch, cdsm__lost());
    cdsm__rd_t rd = {rep->payload, rep->hdr.len, 0, 0}, *recs = &rd;
    release_t rl;
    rc = take_release(&rd, &rl);
    cdsm__buf_t own = {0};
    cdsm__rd_t ord = {0};
    uint32_t nrec = rl.nrec;
    if (!rc && tree_on(kind) && cdsm__w.rank != MANAGER && tree_children(cdsm__w.rank)) {
        rc = forward_release(epoch, &rl, &rd, &own, &nrec);
        ord = (cdsm__rd_t){own.p, own.len, 0, 0};
        recs = &ord;
    }
    cdsm__refetch_collect(1);
    if (!rc) rc = cdsm__iv_incorporate(recs, nrec);
    cdsm__refetch_collect(0);
    if (!rc && (rd.bad || ord.bad)) rc = CDSM_ERR_PROTOCOL;
    cdsm__buf_free(&own);
    if (rc) {
        cdsm__reply_free(rep);
        return cdsm__error(rc, "barrier %u: malformed release", epoch);
    }
    if (rl.pos) CDSM_STAT_ADD(piggyback_bytes, 4 + (size_t)n * sizeof(cdsm__ckpt_pos_t));
    cdsm__vc_merge(cdsm__g.vc, rl.gvc, n);
    memcpy(cdsm__bar.vc_bar, cdsm__g.vc, cdsm__u32s((size_t)n));
    if (rl.flags & CDSM_BAR_DIED) __atomic_store_n(&cdsm__w.recovered, 1, __ATOMIC_RELEASE);
    if (rl.pos && cdsm__ft.logging()) cdsm__ft.released(epoch, rl.flags, rl.pos);
    if (sum && rl.stats) memcpy(sum, rl.stats, sizeof *sum);
    *flags = rl.flags;
    *manifest = rl.manifest; /* outputs before it can no longer be redone */
    cdsm__reply_free(rep);
    CDSM_STAT_ADD(barriers, 1);
    if (kind == CDSM_BAR_AUDIT && (rl.flags & CDSM_BAR_MISMATCH))
        return cdsm__error(CDSM_ERR_PROTOCOL,
                           "consistency check: after barrier %u page %u differs between rank %u and rank %u", epoch,
                           rl.bad[0], rl.bad[1], rl.bad[2]);
    if (rl.flags & CDSM_BAR_DETLOST)
        return cdsm__error(CDSM_ERR_PROTOCOL,
                           "logging audit: after barrier %u the determinant of rank %u's synchronisation %u "
                           "(granter %d, lock or epoch %u) is not held where a replay needs it",
                           epoch, rl.det_bad[0], rl.det_bad[2], rl.det_bad[1] == UINT32_MAX ? -1 : (int)rl.det_bad[1],
                           rl.det_bad[3]);
    return CDSM_OK;
}

/* After the release: collect garbage, take a checkpoint, run the checker's round. Caller
 * holds mu (released while the others are waited for). */
static int after_release(int kind, uint32_t flags)
{
    cdsm__state_t *g = &cdsm__g;
    int rc = CDSM_OK;
    if (flags & CDSM_BAR_GC) {
        cdsm__patch_end(); /* (a collection sees only pages in their usual states) */
        pthread_mutex_unlock(&g->mu);
        rc = cdsm__gc();
        pthread_mutex_lock(&g->mu);
    } else if (kind == CDSM_BAR_PLAIN && !cdsm__mode.resume_mode) {
        if (cdsm__ft.want_ckpt()) cdsm__patch_end(); /* (and so does a checkpoint) */
        rc = cdsm__ft.after_barrier();
    }
    /* Only at the program's barriers, after a GC they started (it may have named holders),
     * never inside one: a GC's own barrier comes before the writers drop their diffs. */
    if (!rc && (kind == CDSM_BAR_PLAIN || kind == CDSM_BAR_RESUME)) rc = cdsm__refetch_run();
    cdsm__patch_end(); /* (before the checker: its audit sees usual states only) */
    if (!rc && (kind == CDSM_BAR_PLAIN || kind == CDSM_BAR_RESUME) && cdsm__cfg.check) {
        /* The checker: local invariants, then all valid copies compared across ranks. */
        rc = cdsm__audit_local();
        pthread_mutex_unlock(&g->mu);
        if (!rc) rc = cdsm__barrier_full(CDSM_BAR_AUDIT, 0, NULL, NULL, NULL);
        pthread_mutex_lock(&g->mu);
    }
    return rc;
}

int cdsm__barrier_full(int kind, uint64_t check, const cdsm_stats_t *stats, cdsm_stats_t *sum, int *flags_out)
{
    cdsm__state_t *g = &cdsm__g;
    int rc = CDSM_OK;
    if (!g->initialized) return cdsm__error(CDSM_ERR_STATE, "barrier before cdsm_init");
    /* Output before the last manifest learned goes out now, just before this arrival: the
     * others can then tell that a lost process released it exactly when it arrived here. */
    uint32_t due = cdsm__bar.manifest_due;
    cdsm__bar.manifest_due = 0;
    if (due) cdsm__ft.release_output(due);
    if (cdsm__node.on) __atomic_thread_fence(__ATOMIC_SEQ_CST);
    pthread_mutex_lock(&g->mu);
    if (cdsm__mode.fast_forward) {
        /* A replacement that will restore a checkpoint in cdsm_resume(): the program's
         * allocation barriers before it change nothing the checkpoint does not replace. */
        cdsm__bar.epoch++;
        g->sync_seq++;
        if (flags_out) *flags_out = 0;
        pthread_mutex_unlock(&g->mu);
        return CDSM_OK;
    }
    cdsm__close_interval();
    uint32_t epoch = ++cdsm__bar.epoch, flags = 0, manifest = 0;
    g->sync_seq++;
    cdsm__conv_sync();
    /* A replacement takes a barrier the survivors passed from the log, without messages. */
    if (cdsm__mode.replaying && cdsm__ft.replay_barrier(kind, epoch, flags_out, &rc)) return rc;
    if (rc) goto out;
    int has_check = flags_out != NULL && kind == CDSM_BAR_PLAIN && check != 0;
    if ((rc = arrive(kind, epoch, check, stats, has_check))) goto out;
    /* Until this returns the program runs nothing: a page the release's notices invalidate
     * and the refetch makes valid again keeps its protection (no mprotect at all). */
    cdsm__protect_batch(1);
    /* Hot pages the release's notices invalidate keep their twins for the refetch: not
     * with spares (a replay makes the same intervals, nothing more is changed there). */
    cdsm__patch_begin(kind == CDSM_BAR_PLAIN && !cdsm__cfg.spares && !cdsm__mode.resume_mode, 1);
    rc = take_release_msg(kind, epoch, sum, &flags, &manifest);
    if (flags_out) *flags_out = (int)flags;
    if (!rc) rc = after_release(kind, flags);
    cdsm__patch_end();
    cdsm__protect_batch(0);
out:
    pthread_mutex_unlock(&g->mu);
    if (!rc) rc = cdsm__tp_flush();
    if (!rc && manifest) cdsm__bar.manifest_due = manifest; /* out at the next arrival */
    /* A node heap's writes are plain stores: the messages order them, and so does this. */
    if (cdsm__node.on) __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return rc;
}

int cdsm_barrier(void)
{
    cdsm__inject(cdsm__w.rank, "barrier"); /* (a test's deterministic moment: the N-th barrier) */
    return cdsm__barrier_full(CDSM_BAR_PLAIN, 0, NULL, NULL, NULL);
}

int cdsm_resume_point(void)
{
    if (!cdsm__g.initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_resume_point before cdsm_init");
    if (!cdsm__mode.resume_mode)
        return cdsm__error(CDSM_ERR_STATE, "cdsm_resume_point without cdsm_resume: the program must first say it can "
                                           "resume (after its allocations and cdsm_protect calls)");
    return cdsm__barrier_full(CDSM_BAR_RESUME, 0, NULL, NULL, NULL);
}

/* ---- a replacement of the manager ------------------------------------------------------- */

void cdsm__bar_release_replayed(const cdsm__msg_hdr_t *h, cdsm__rd_t *r, void *arg)
{
    uint32_t epoch = (uint32_t)h->tag;
    arrival_t a;
    if (take_arrival(r, &a)) {
        cdsm__log(CDSM_LOG_ERROR, "malformed barrier arrival from rank %u", h->src);
        return;
    }
    /* The logged flags and global vector clock; no audit outcome, positions or sums. */
    release_t rl = {.flags = *(const uint32_t *)arg, .manifest = mgr.manifest, .gvc = cdsm__g.vc};
    cdsm__buf_t b = {0};
    size_t nrec_at;
    put_release(&b, &rl, &nrec_at);
    uint32_t nrec = cdsm__iv_serialize_between(&b, a.vc, rl.gvc);
    memcpy(b.p + nrec_at, &nrec, sizeof nrec);
    send_release(h->src, epoch, &b);
    cdsm__log(CDSM_LOG_INFO, "barrier %u: released rank %u, whose release was lost with the manager", epoch, h->src);
}

void cdsm__barrier_adopt(const uint32_t *vc)
{
    if (!cdsm__bar.maxidx) return; /* (the manager, and inner nodes of the tree) */
    memcpy(cdsm__bar.maxidx, vc, cdsm__u32s((size_t)cdsm__w.n));
    mgr.last_epoch = 0; /* its releases were lost with the process */
}
