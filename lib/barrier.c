/* Barriers through a manager (rank 0): arrivals carry the records the manager may lack,
 * the manager merges them and sends each rank what it lacks. The same round trip carries
 * the garbage-collection decision, counters for cdsm_stats_reduce() and the checker's
 * agreement value. Garbage collection itself runs at the barrier in two phases. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "recovery.h"
#include "vclock.h"

#define MANAGER 0

static uint32_t mgr_epoch;  /* manager: epoch of the barrier being collected */
static int mgr_kind = -1;   /* manager: kind of that barrier */
static int mgr_has_stats;
static int mgr_has_log;         /* manager: arrivals carry checkpoint positions */
static cdsm__ckpt_pos_t *mgr_pos; /* manager: last committed checkpoint of each rank */
static int gc_warned; /* the archiving note is logged once */
static uint32_t mgr_bits;        /* manager: CDSM_BAR_IN_RESUME / _WANT_CKPT of any arrival */
static uint32_t mgr_manifest;    /* manager: epoch of the last restart manifest committed (0: none) */
static uint8_t *mgr_arrived;     /* manager: which ranks arrived at the barrier being collected */
static uint8_t *mgr_gone;        /* manager: ranks lost during finalize (FINAL barriers skip them) */
static int mgr_died;             /* manager: a rank died during finalize (releases say so) */
static int mgr_finals;           /* manager: FINAL barriers released */
static cdsm__buf_t *mgr_last;    /* manager: each rank's release of the last barrier */
static uint32_t mgr_last_epoch;  /* manager: epoch of the last barrier released */

/* The head of a barrier arrival, up to the arriving rank's vector clock. */
typedef struct arrival {
    uint32_t kind, bits, has_check, has_log, has_stats, nrec;
    uint64_t check, mem;
    const void *cpos;
    const uint64_t *stats;
    const uint32_t *vc;
} arrival_t;

static int parse_arrival(cdsm__rd_t *r, arrival_t *a)
{
    uint32_t raw = cdsm__rd_u32(r);
    a->kind = raw & CDSM_BAR_KIND_MASK;
    a->bits = raw & ~(uint32_t)CDSM_BAR_KIND_MASK;
    a->has_check = cdsm__rd_u32(r);
    a->check = cdsm__rd_u64(r);
    a->mem = cdsm__rd_u64(r);
    a->has_log = cdsm__rd_u32(r);
    a->cpos = a->has_log ? cdsm__rd_take(r, sizeof(cdsm__ckpt_pos_t)) : NULL;
    a->has_stats = cdsm__rd_u32(r);
    a->stats = a->has_stats ? cdsm__rd_take(r, sizeof cdsm__g.bar_stats) : NULL;
    a->nrec = cdsm__rd_u32(r);
    a->vc = cdsm__rd_take(r, (size_t)cdsm__g.n * 4);
    return r->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

int cdsm__barrier_init(void)
{
    cdsm__state_t *g = &cdsm__g;
    int n = g->n;
    g->vc_bar = calloc((size_t)n, 4);
    if (!g->vc_bar) return cdsm__error(CDSM_ERR_NOMEM, "barrier state");
    if (g->rank != MANAGER) return CDSM_OK;
    g->bar_vcs = calloc((size_t)n * (size_t)n, 4);
    g->bar_recs = calloc((size_t)n, sizeof *g->bar_recs);
    g->bar_maxidx = calloc((size_t)n, 4);
    mgr_pos = calloc((size_t)n, sizeof *mgr_pos);
    mgr_arrived = calloc((size_t)n, 1);
    mgr_gone = calloc((size_t)n, 1);
    mgr_last = calloc((size_t)n, sizeof *mgr_last);
    if (!g->bar_vcs || !g->bar_recs || !g->bar_maxidx || !mgr_pos || !mgr_arrived || !mgr_last || !mgr_gone)
        return cdsm__error(CDSM_ERR_NOMEM, "barrier manager state");
    return CDSM_OK;
}

void cdsm__barrier_fini(void)
{
    cdsm__state_t *g = &cdsm__g;
    if (g->bar_recs)
        for (int q = 0; q < g->n; q++) cdsm__buf_free(&g->bar_recs[q]);
    free(g->bar_recs);
    free(g->bar_vcs);
    free(g->bar_maxidx);
    free(g->vc_bar);
    free(mgr_pos);
    mgr_pos = NULL;
    if (mgr_last)
        for (int q = 0; q < g->n; q++) cdsm__buf_free(&mgr_last[q]);
    free(mgr_last);
    free(mgr_arrived);
    free(mgr_gone);
    mgr_died = mgr_finals = 0;
    mgr_last = NULL;
    mgr_arrived = NULL;
    mgr_gone = NULL;
    mgr_last_epoch = 0;
    gc_warned = 0;
    g->bar_recs = NULL;
    g->bar_vcs = g->bar_maxidx = g->vc_bar = NULL;
}

static size_t rec_size(const uint8_t *p)
{
    cdsm__wire_iv_t w;
    memcpy(&w, p, sizeof w);
    return sizeof w + (size_t)cdsm__g.n * 4 + (size_t)w.npages * 4;
}

/* Manager: every rank arrived; send each one what it lacks and reset. */
static void release_all(void)
{
    cdsm__state_t *g = &cdsm__g;
    int n = g->n;
    uint32_t flags = 0;
    /* A program in resume mode is collected only at its resume points, where every rank
     * commits a checkpoint it can be restarted from (and any rank may ask for one). */
    int gc_here = (mgr_kind == CDSM_BAR_PLAIN && !(mgr_bits & CDSM_BAR_IN_RESUME)) || mgr_kind == CDSM_BAR_RESUME;
    int want = mgr_kind == CDSM_BAR_RESUME && (mgr_bits & CDSM_BAR_WANT_CKPT);
    if (gc_here && (g->bar_mem_max > cdsm__cfg.gc_bound || want)) {
        /* Recovery stays possible: with checkpoints every rank commits one at this
         * barrier first; without, each rank archives its own diffs (cdsm__gc). */
        flags |= CDSM_BAR_GC;
        if (cdsm__archive_needed() && !gc_warned++)
            cdsm__log(CDSM_LOG_INFO,
                      "collecting diffs and records (a rank holds %llu bytes, CDSM_GC_BOUND=%llu); with "
                      "logging on and no checkpoints (CDSM_CKPT_DIR empty) each rank keeps its own diffs "
                      "for the whole run (counter archive_bytes)",
                      (unsigned long long)g->bar_mem_max, (unsigned long long)cdsm__cfg.gc_bound);
    }
    uint32_t bad[3] = {0, 0, 0}, det_bad[4] = {0, 0, 0, 0};
    if (mgr_kind == CDSM_BAR_AUDIT) {
        cdsm__audit_finish(&bad[0], &bad[1], &bad[2]);
        if (mgr_has_log && cdsm__det_audit_finish(det_bad)) flags |= CDSM_BAR_DETLOST;
    }
    if (g->bar_mismatch) flags |= CDSM_BAR_MISMATCH;
    if (mgr_died) flags |= CDSM_BAR_DIED;
    for (int r = 0; r < n; r++) {
        const uint32_t *have = &g->bar_vcs[(size_t)r * n];
        cdsm__buf_t b = {0};
        uint32_t nrec = 0;
        cdsm__buf_put_u32(&b, flags);
        cdsm__buf_put_u32(&b, mgr_manifest);
        cdsm__buf_put(&b, bad, sizeof bad);
        cdsm__buf_put(&b, det_bad, sizeof det_bad);
        cdsm__buf_put_u32(&b, (uint32_t)mgr_has_log);
        if (mgr_has_log) cdsm__buf_put(&b, mgr_pos, (size_t)n * sizeof *mgr_pos);
        cdsm__buf_put_u32(&b, (uint32_t)mgr_has_stats);
        if (mgr_has_stats) cdsm__buf_put(&b, g->bar_stats, sizeof g->bar_stats);
        cdsm__buf_put_u32(&b, 0); /* nrec, patched */
        size_t nrec_at = b.len - 4;
        cdsm__buf_put(&b, g->bar_maxidx, (size_t)n * 4); /* the global vector clock */
        for (int q = 0; q < n; q++) {
            const uint8_t *p = g->bar_recs[q].p, *end = p + g->bar_recs[q].len;
            while (p < end) {
                cdsm__wire_iv_t w;
                memcpy(&w, p, sizeof w);
                size_t sz = rec_size(p);
                if (w.idx > have[q]) {
                    cdsm__buf_put(&b, p, sz);
                    nrec++;
                }
                p += sz;
            }
        }
        memcpy(b.p + nrec_at, &nrec, 4);
        cdsm__tp_send(r, CDSM_MSG_BAR_RELEASE, mgr_epoch, b.p, b.len, NULL, 0);
        /* Kept until the next release: a rank replaced after it was sent asks again. */
        cdsm__buf_free(&mgr_last[r]);
        mgr_last[r] = b;
    }
    mgr_last_epoch = mgr_epoch;
    if (mgr_kind == CDSM_BAR_FINAL) mgr_finals++;
    memset(mgr_arrived, 0, (size_t)g->n);
    for (int q = 0; q < n; q++) g->bar_recs[q].len = 0;
    g->bar_arrived = 0;
    g->bar_mem_max = 0;
    g->bar_check_set = g->bar_mismatch = 0;
    memset(g->bar_stats, 0, sizeof g->bar_stats);
    mgr_has_stats = 0;
    mgr_has_log = 0;
    mgr_bits = 0;
    mgr_kind = -1;
}

/* Manager: every rank arrived (at a FINAL barrier, ranks lost during finalize need not). */
static int collected(void)
{
    cdsm__state_t *g = &cdsm__g;
    if (!g->bar_arrived) return 0;
    int k = 0;
    for (int q = 0; q < g->n; q++) k += mgr_arrived[q] || (mgr_gone[q] && mgr_kind == CDSM_BAR_FINAL);
    return k == g->n;
}

void cdsm__bar_gone(int r)
{
    cdsm__state_t *g = &cdsm__g;
    if (g->rank != MANAGER || !mgr_gone) return;
    /* A rank that closes after arriving at the barrier being collected, or after the
     * last one was released, just finished. */
    if (mgr_finals >= 2 || (g->bar_arrived && mgr_kind == CDSM_BAR_FINAL && mgr_arrived[r])) return;
    mgr_gone[r] = 1;
    mgr_died = 1;
    __atomic_store_n(&g->recovered, 1, __ATOMIC_RELEASE);
    cdsm__log(CDSM_LOG_WARN, "rank %d lost during finalize (all its work was done): finishing without it", r);
    if (collected()) release_all();
}

void cdsm__bar_lost(int r)
{
    cdsm__state_t *g = &cdsm__g;
    if (g->rank != MANAGER || !mgr_arrived || !g->resume_mode || !g->bar_arrived || mgr_kind != CDSM_BAR_GC_DONE ||
        !mgr_arrived[r])
        return;
    /* Released on the lost process's arrival, this barrier would let the others drop the
     * diffs a replacement restored from an earlier checkpoint needs (resume mode keeps no
     * archive): it waits for the replacement's arrival instead. */
    mgr_arrived[r] = 0;
    g->bar_arrived--;
    cdsm__log(CDSM_LOG_INFO, "barrier %u (end of a collection): the arrival of lost rank %d no longer counts", mgr_epoch,
              r);
}

void cdsm__bar_manifest(uint32_t epoch)
{
    if (cdsm__g.rank == MANAGER) mgr_manifest = epoch;
}

uint32_t cdsm__bar_released(void)
{
    return cdsm__g.rank == MANAGER ? mgr_last_epoch : 0;
}

void cdsm__bar_on_arrive(const cdsm__msg_hdr_t *h, cdsm__rd_t *r)
{
    cdsm__state_t *g = &cdsm__g;
    int n = g->n;
    /* A replacement manager keeps arrivals until its replay has passed their barrier: a
     * survivor may wait for the release of a barrier the lost manager released to others
     * only (cdsm__barrier_replayed). */
    if (cdsm__replay_defer(h, r)) return;
    arrival_t a;
    if (parse_arrival(r, &a) || g->rank != MANAGER) goto bad;
    uint32_t kind = a.kind, has_log = a.has_log, nrec = a.nrec;
    if (h->tag == mgr_last_epoch && mgr_last_epoch) {
        /* A replacement arrives again at a barrier released while its process died. */
        cdsm__tp_send(h->src, CDSM_MSG_BAR_RELEASE, h->tag, mgr_last[h->src].p, mgr_last[h->src].len, NULL, 0);
        return;
    }
    if (g->bar_arrived == 0) {
        mgr_epoch = (uint32_t)h->tag;
        mgr_kind = (int)kind;
    }
    if (h->tag != mgr_epoch || (int)kind != mgr_kind) {
        cdsm__log(CDSM_LOG_ERROR,
                  "rank %u entered barrier %llu (kind %u) while others are in barrier %u (kind %d): "
                  "ranks called different collective operations",
                  h->src, (unsigned long long)h->tag, kind, mgr_epoch, mgr_kind);
        cdsm_check(!"mismatched collective calls");
    }
    memcpy(&g->bar_vcs[(size_t)h->src * n], a.vc, (size_t)n * 4);
    mgr_bits |= a.bits;
    if (a.mem > g->bar_mem_max) g->bar_mem_max = a.mem;
    if (a.cpos) {
        mgr_has_log = 1;
        memcpy(&mgr_pos[h->src], a.cpos, sizeof *mgr_pos);
    }
    if (a.stats) {
        mgr_has_stats = 1;
        for (size_t i = 0; i < CDSM_NSTATS; i++) {
            uint64_t v;
            memcpy(&v, &a.stats[i], 8);
            g->bar_stats[i] += v;
        }
    }
    if (a.has_check) {
        if (g->bar_check_set && g->bar_check != a.check) g->bar_mismatch = 1;
        g->bar_check = a.check;
        g->bar_check_set = 1;
    }
    for (uint32_t k = 0; k < nrec; k++) {
        const uint8_t *p = r->p + r->pos;
        const cdsm__wire_iv_t *w = cdsm__rd_take(r, sizeof *w);
        if (!w || w->rank >= n || !cdsm__rd_take(r, (size_t)n * 4 + (size_t)w->npages * 4)) goto bad;
        if (w->idx <= g->bar_maxidx[w->rank]) continue; /* another rank brought it already */
        if (w->idx != g->bar_maxidx[w->rank] + 1) goto bad;
        cdsm__buf_put(&g->bar_recs[w->rank], p, (size_t)(r->p + r->pos - p));
        g->bar_maxidx[w->rank] = w->idx;
    }
    uint32_t nhash = cdsm__rd_u32(r);
    if (r->bad || (kind == CDSM_BAR_AUDIT && cdsm__audit_collect(h->src, r, nhash))) goto bad;
    if (kind == CDSM_BAR_AUDIT && has_log && cdsm__det_audit_collect(h->src, r)) goto bad;
    if (!mgr_arrived[h->src]) { /* a replacement may arrive again where its process had */
        mgr_arrived[h->src] = 1;
        ++g->bar_arrived;
    }
    if (collected()) release_all();
    return;
bad:
    cdsm__log(CDSM_LOG_ERROR, "malformed barrier arrival from rank %u", h->src);
    cdsm_check(!"malformed barrier arrival");
}

int cdsm__barrier_full(int kind, uint64_t check, const cdsm_stats_t *stats, cdsm_stats_t *sum,
                       int *flags_out)
{
    cdsm__state_t *g = &cdsm__g;
    int n = g->n, rc;
    if (!g->initialized) return cdsm__error(CDSM_ERR_STATE, "barrier before cdsm_init");
    pthread_mutex_lock(&g->mu);
    if (g->fast_forward) {
        /* A replacement that will restore a checkpoint in cdsm_resume(): the program's
         * allocation barriers before it change nothing the checkpoint does not replace. */
        g->bar_epoch++;
        g->sync_seq++;
        if (flags_out) *flags_out = 0;
        pthread_mutex_unlock(&g->mu);
        return CDSM_OK;
    }
    cdsm__close_interval();
    uint32_t epoch = ++g->bar_epoch;
    g->sync_seq++;
    if (g->replaying) {
        uint32_t rflags = 0;
        if (cdsm__replay_barrier(epoch, &rflags)) {
            /* Logged: the survivors passed it; take its outcome without messages. */
            cdsm__det_log(CDSM_DET_BARRIER, (uint32_t)g->rank, epoch, g->sync_seq, rflags, g->vc);
            cdsm__barrier_replayed(epoch, rflags);
            CDSM_STAT_ADD(barriers, 1);
            cdsm__replay_serve_deferred();
            pthread_mutex_unlock(&g->mu);
            rc = cdsm__tp_flush();
            /* A collection the survivors have not finished (its second barrier is not
             * logged) waits for this rank's part: without archived diffs (resume mode)
             * nothing of it may be skipped. Otherwise only its second barrier is replayed
             * (the diffs it dropped are archived). */
            if (!rc && (rflags & CDSM_BAR_GC) && g->resume_mode && !cdsm__replay_logged(epoch + 1))
                rc = cdsm__gc();
            else if (!rc && (rflags & CDSM_BAR_GC))
                rc = cdsm__barrier_full(CDSM_BAR_GC_DONE, 0, NULL, NULL, NULL);
            if (!rc && (kind == CDSM_BAR_PLAIN || kind == CDSM_BAR_RESUME) && cdsm__cfg.check)
                rc = cdsm__barrier_full(CDSM_BAR_AUDIT, 0, NULL, NULL, NULL);
            if (flags_out) *flags_out = (int)rflags;
            return rc;
        }
        /* The first barrier the log does not hold: live again. */
        if ((rc = cdsm__replay_finish())) {
            pthread_mutex_unlock(&g->mu);
            return rc;
        }
    }
    cdsm__buf_t b = {0};
    uint32_t manifest = 0;
    uint64_t mem = g->log_bytes - g->archive_bytes; /* what a collection can free */
    int has_check = flags_out != NULL && kind == CDSM_BAR_PLAIN && check != 0;
    int has_log = cdsm__det_enabled();
    uint32_t kword = (uint32_t)kind | (g->resume_mode ? CDSM_BAR_IN_RESUME : 0u);
    if (kind == CDSM_BAR_RESUME && cdsm__ckpt_due()) kword |= CDSM_BAR_WANT_CKPT;
    cdsm__buf_put_u32(&b, kword);
    cdsm__buf_put_u32(&b, (uint32_t)has_check);
    cdsm__buf_put(&b, &check, 8);
    cdsm__buf_put(&b, &mem, 8);
    cdsm__buf_put_u32(&b, (uint32_t)has_log);
    if (has_log) {
        /* Piggyback: this rank's last committed checkpoint, so that the others can drop
         * the determinants its replay can no longer need. */
        cdsm__ckpt_pos_t cp = cdsm__ckpt_committed();
        cdsm__buf_put(&b, &cp, sizeof cp);
        CDSM_STAT_ADD(piggyback_bytes, 4 + sizeof cp);
    }
    cdsm__buf_put_u32(&b, stats != NULL);
    if (stats) cdsm__buf_put(&b, stats, sizeof *stats);
    cdsm__buf_put_u32(&b, 0);
    size_t nrec_at = b.len - 4;
    cdsm__buf_put(&b, g->vc, (size_t)n * 4);
    /* Everything up to the previous barrier is known to the manager already. */
    uint32_t nrec = cdsm__iv_serialize_newer(&b, g->vc_bar);
    memcpy(b.p + nrec_at, &nrec, 4);
    uint32_t nhash = 0;
    cdsm__buf_put_u32(&b, 0);
    size_t nhash_at = b.len - 4;
    if (kind == CDSM_BAR_AUDIT) cdsm__audit_hashes(&b, &nhash);
    memcpy(b.p + nhash_at, &nhash, 4);
    if (kind == CDSM_BAR_AUDIT && has_log) cdsm__det_audit_put(&b);
    rc = cdsm__tp_send(MANAGER, CDSM_MSG_BAR_ARRIVE, epoch, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
    if (rc) goto out;
    cdsm__reply_t *rep = cdsm__wait_reply(CDSM_MSG_BAR_RELEASE, epoch);
    if (!rep) {
        rc = cdsm__error(CDSM_ERR_PEER_LOST, "barrier %u: rank %d was lost", epoch, cdsm__lost());
        goto out;
    }
    cdsm__rd_t rd = {rep->payload, rep->hdr.len, 0, 0};
    uint32_t flags = cdsm__rd_u32(&rd);
    manifest = cdsm__rd_u32(&rd); /* outputs before it can no longer be redone */
    uint32_t bad_pg = cdsm__rd_u32(&rd), bad_a = cdsm__rd_u32(&rd);
    uint32_t bad_b = cdsm__rd_u32(&rd), det_bad[4];
    for (int i = 0; i < 4; i++) det_bad[i] = cdsm__rd_u32(&rd);
    uint32_t rel_log = cdsm__rd_u32(&rd);
    const void *rel_pos = rel_log ? cdsm__rd_take(&rd, (size_t)n * sizeof(cdsm__ckpt_pos_t)) : NULL;
    if (rel_log) CDSM_STAT_ADD(piggyback_bytes, 4 + (size_t)n * sizeof(cdsm__ckpt_pos_t));
    uint32_t has_stats = cdsm__rd_u32(&rd);
    const void *ssum = has_stats ? cdsm__rd_take(&rd, sizeof(cdsm_stats_t)) : NULL;
    nrec = cdsm__rd_u32(&rd);
    const uint32_t *gvc = cdsm__rd_take(&rd, (size_t)n * 4);
    rc = gvc ? cdsm__iv_incorporate(&rd, nrec) : CDSM_ERR_PROTOCOL;
    if (!rc && rd.bad) rc = CDSM_ERR_PROTOCOL;
    if (rc) {
        cdsm__error(rc, "barrier %u: malformed release", epoch);
        cdsm__reply_free(rep);
        goto out;
    }
    cdsm__vc_merge(g->vc, gvc, n);
    memcpy(g->vc_bar, g->vc, (size_t)n * 4);
    if (flags & CDSM_BAR_DIED) __atomic_store_n(&g->recovered, 1, __ATOMIC_RELEASE);
    if (rel_pos && has_log) {
        cdsm__det_trim(rel_pos);
        /* Every rank logs every barrier's global vector clock. */
        cdsm__det_log(CDSM_DET_BARRIER, (uint32_t)g->rank, epoch, g->sync_seq, flags, g->vc);
    }
    if (sum && ssum) memcpy(sum, ssum, sizeof *sum);
    if (flags_out) *flags_out = (int)flags;
    cdsm__reply_free(rep);
    CDSM_STAT_ADD(barriers, 1);
    if (kind == CDSM_BAR_AUDIT && (flags & CDSM_BAR_MISMATCH))
        rc = cdsm__error(CDSM_ERR_PROTOCOL,
                         "consistency check: after barrier %u page %u differs between rank %u and rank %u",
                         epoch, bad_pg, bad_a, bad_b);
    if (!rc && (flags & CDSM_BAR_DETLOST))
        rc = cdsm__error(CDSM_ERR_PROTOCOL,
                         "logging audit: after barrier %u the determinant of rank %u's synchronisation %u "
                         "(granter %d, lock or epoch %u) is not held where a replay needs it",
                         epoch, det_bad[0], det_bad[2], det_bad[1] == UINT32_MAX ? -1 : (int)det_bad[1],
                         det_bad[3]);
    if (!rc && (flags & CDSM_BAR_GC)) {
        pthread_mutex_unlock(&g->mu);
        rc = cdsm__gc();
        pthread_mutex_lock(&g->mu);
    } else if (!rc && kind == CDSM_BAR_PLAIN && !g->resume_mode) {
        rc = cdsm__ckpt_policy();
    }
    if (!rc && (kind == CDSM_BAR_PLAIN || kind == CDSM_BAR_RESUME) && cdsm__cfg.check) {
        /* The checker: local invariants, then all valid copies compared across ranks. */
        rc = cdsm__audit_local();
        pthread_mutex_unlock(&g->mu);
        if (!rc) rc = cdsm__barrier_full(CDSM_BAR_AUDIT, 0, NULL, NULL, NULL);
        pthread_mutex_lock(&g->mu);
    }
out:
    pthread_mutex_unlock(&g->mu);
    if (!rc) rc = cdsm__tp_flush();
    if (!rc && manifest) cdsm__output_release(manifest);
    return rc;
}

int cdsm_barrier(void)
{
    return cdsm__barrier_full(CDSM_BAR_PLAIN, 0, NULL, NULL, NULL);
}

int cdsm_resume_point(void)
{
    if (!cdsm__g.initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_resume_point before cdsm_init");
    if (!cdsm__g.resume_mode)
        return cdsm__error(CDSM_ERR_STATE, "cdsm_resume_point without cdsm_resume: the program must first say it can "
                                           "resume (after its allocations and cdsm_protect calls)");
    return cdsm__barrier_full(CDSM_BAR_RESUME, 0, NULL, NULL, NULL);
}

/* Replacement manager, its replay past a logged barrier: release one survivor that
 * arrived there and never got the release (the logged flags, the global vector clock
 * gvc, the records its arrival's clock lacks). Caller holds mu. */
struct replayed {
    uint32_t flags;
    const uint32_t *gvc;
};

static void release_replayed(const cdsm__msg_hdr_t *h, cdsm__rd_t *r, void *arg)
{
    const struct replayed *rp = arg;
    int n = cdsm__g.n;
    uint32_t epoch = (uint32_t)h->tag;
    arrival_t a;
    if (parse_arrival(r, &a)) {
        cdsm__log(CDSM_LOG_ERROR, "malformed barrier arrival from rank %u", h->src);
        return;
    }
    uint32_t zero[7] = {0}, nrec;
    cdsm__buf_t b = {0};
    cdsm__buf_put_u32(&b, rp->flags);
    cdsm__buf_put_u32(&b, mgr_manifest);
    cdsm__buf_put(&b, zero, sizeof zero); /* no audit outcome */
    cdsm__buf_put_u32(&b, 0);            /* no checkpoint positions */
    cdsm__buf_put_u32(&b, 0);            /* no counters */
    size_t nrec_at = b.len;
    cdsm__buf_put_u32(&b, 0);
    cdsm__buf_put(&b, rp->gvc, (size_t)n * 4);
    nrec = cdsm__iv_serialize_between(&b, a.vc, rp->gvc);
    memcpy(b.p + nrec_at, &nrec, 4);
    cdsm__tp_send(h->src, CDSM_MSG_BAR_RELEASE, epoch, b.p, b.len, NULL, 0);
    cdsm__buf_free(&mgr_last[h->src]);
    mgr_last[h->src] = b;
    mgr_last_epoch = epoch;
    cdsm__log(CDSM_LOG_INFO, "barrier %u: released rank %u, whose release was lost with the manager", epoch, h->src);
}

void cdsm__barrier_replayed(uint32_t epoch, uint32_t flags)
{
    struct replayed rp = {flags, cdsm__g.vc};
    if (cdsm__g.rank == MANAGER) cdsm__replay_take(CDSM_MSG_BAR_ARRIVE, epoch, release_replayed, &rp);
}

void cdsm__barrier_adopt(const uint32_t *vc)
{
    cdsm__state_t *g = &cdsm__g;
    if (g->rank != MANAGER) return;
    memcpy(g->bar_maxidx, vc, (size_t)g->n * 4);
    mgr_last_epoch = 0; /* its releases were lost with the process */
}

/* ---- garbage collection -------------------------------------------------------------- */

/* The writer of the latest notice keeps the page: every rank names the same one, since at
 * a barrier all ranks hold the same notices. */
static const cdsm__interval_t *latest_notice(const cdsm__page_t *p)
{
    const cdsm__interval_t *best = NULL;
    for (const cdsm__notice_t *nt = p->notices; nt; nt = nt->next)
        if (!best || nt->iv->vcsum > best->vcsum ||
            (nt->iv->vcsum == best->vcsum && nt->iv->rank > best->rank))
            best = nt->iv;
    return best;
}

static int page_current(uint32_t pg)
{
    const cdsm__page_t *p = &cdsm__g.pages[pg];
    if (p->holder >= 0) return 0;
    for (const cdsm__notice_t *nt = p->notices; nt; nt = nt->next)
        if (!p->applied || p->applied[nt->iv->rank] < nt->iv->idx) return 0;
    return 1;
}

/* Called right after a barrier release that asked for it; takes mu itself. */
int cdsm__gc(void)
{
    cdsm__state_t *g = &cdsm__g;
    int rc = CDSM_OK;
    int ckpt = cdsm__ckpt_enabled();
    pthread_mutex_lock(&g->mu);
    /* Phase 1: each page's keeper brings its copy up to date while diffs still exist. With
     * checkpoints, every rank does so for every stale copy, and commits a full checkpoint
     * before anyone drops a diff: no replay may start before this barrier afterwards, and
     * the checkpoint must not depend on another rank's copy. */
    for (uint32_t pg = 0; pg < g->npages && !rc; pg++) {
        cdsm__page_t *p = &g->pages[pg];
        if (!p->notices) continue;
        if ((ckpt || latest_notice(p)->rank == g->rank) && !page_current(pg)) {
            if (p->state != CDSM_PG_INVALID) cdsm__invalidate(pg);
            rc = cdsm__validate(pg);
        }
    }
    if (!rc && ckpt) rc = cdsm__ckpt_take(1, 1);
    pthread_mutex_unlock(&g->mu);
    if (rc) return rc;
    /* Phase 2 starts only when every keeper is done (and every checkpoint committed: in
     * resume mode that makes a restart manifest). */
    if ((rc = cdsm__barrier_full(CDSM_BAR_GC_DONE, 0, NULL, NULL, NULL))) return rc;
    if (ckpt && g->resume_mode) cdsm__ckpt_manifest();
    pthread_mutex_lock(&g->mu);
    if (cdsm__archive_needed()) {
        /* Before twins go: a replay from the start needs every diff this rank made. */
        cdsm__ivlist_t *own = &g->ivs[g->rank];
        for (uint32_t k = 0; k < own->count; k++) {
            cdsm__archive_keep(own->v[k]);
            own->v[k] = NULL;
        }
        /* With spares, the others' records too (small: no diffs): a rank lost with its
         * node cannot send its own to the replay of the other. */
        if (cdsm__cfg.spares)
            for (int q = 0; q < g->n; q++)
                for (uint32_t k = 0; q != g->rank && k < g->ivs[q].count; k++) cdsm__archive_other(g->ivs[q].v[k]);
    }
    for (uint32_t pg = 0; pg < g->npages; pg++) {
        cdsm__page_t *p = &g->pages[pg];
        if (!p->notices) continue;
        if (!page_current(pg)) {
            cdsm_check(p->state == CDSM_PG_INVALID);
            p->holder = (int16_t)latest_notice(p)->rank;
            memset(p->applied, 0, (size_t)g->n * 4);
        }
        if (p->twin && !p->hot) { /* a hot page's twin is its open interval's */
            cdsm__log_bytes_add(-(int64_t)g->page_size);
            free(p->twin);
            p->twin = NULL;
        }
        for (cdsm__notice_t *nt = p->notices, *nx; nt; nt = nx) {
            nx = nt->next;
            free(nt);
            cdsm__log_bytes_add(-(int64_t)sizeof *nt);
        }
        p->notices = NULL;
    }
    for (int q = 0; q < g->n; q++) {
        cdsm__ivlist_t *l = &g->ivs[q];
        for (uint32_t k = 0; k < l->count; k++) cdsm__iv_free(l->v[k]);
        cdsm_check(l->base + l->count == g->vc_bar[q]);
        l->base += l->count;
        l->count = 0;
    }
    CDSM_STAT_ADD(gc_runs, 1);
    pthread_mutex_unlock(&g->mu);
    return CDSM_OK;
}
