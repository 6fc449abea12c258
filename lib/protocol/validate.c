/* Access misses and serving them: an invalid page is brought up to date with the diffs it
 * lacks from their writers (or a whole copy when many are needed), applied in
 * happened-before order; a stream of misses (sequential or strided) has the following
 * pages of the stream fetched in the same round trip. And the service thread's side:
 * diffs and whole copies for other ranks. All of it runs under cdsm__g.mu. */
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "proto.h"
#include "vclock.h"

/* ---- access miss ------------------------------------------------------------------ */

/* A diff available to apply during one validation. */
typedef struct avail {
    cdsm__interval_t *iv;
    const uint8_t *data;
    uint32_t len;
} avail_t;

typedef struct vstate {
    uint32_t pg;
    avail_t *av;
    size_t nav, capav;
    cdsm__reply_t **replies;
    size_t nrep, caprep;
    void **blobs;            /* diffs copied from node-mates' boards (av points into them) */
    size_t nblob, capblob;
    cdsm__interval_t **need; /* missing()'s answer; need[0..nreq): to ask the writers for */
    size_t capneed, nreq;
    /* requests sent by v_start, answered in v_finish */
    int page_req;            /* a whole copy was asked for (id page_id) */
    uint64_t page_id;
} vstate_t;

/* The diff requests of one round: one per writer, for every page of the round. */
typedef struct round {
    uint64_t first; /* ids first.. first + nsent - 1 */
    int nsent;
} round_t;

static void av_add(vstate_t *v, cdsm__interval_t *iv, const uint8_t *data, uint32_t len)
{
    if (v->nav == v->capav) {
        v->capav = v->capav ? v->capav * 2 : 16;
        v->av = realloc(v->av, v->capav * sizeof *v->av);
        cdsm_check(v->av != NULL);
    }
    v->av[v->nav++] = (avail_t){iv, data, len};
}

static const avail_t *av_find(const vstate_t *v, const cdsm__interval_t *iv)
{
    for (size_t i = 0; i < v->nav; i++)
        if (v->av[i].iv == iv) return &v->av[i];
    return NULL;
}

static void keep_reply(vstate_t *v, cdsm__reply_t *r)
{
    if (v->nrep == v->caprep) {
        v->caprep = v->caprep ? v->caprep * 2 : 8;
        v->replies = realloc(v->replies, v->caprep * sizeof *v->replies);
        cdsm_check(v->replies != NULL);
    }
    v->replies[v->nrep++] = r;
}

/* The diffs of need[0..nreq) of pages v[0..nv) that other processes published
 * (transport's board): copied from a node-mate's memory, or read one-sided from another
 * host's (CDSM_RMA: one batch for every page of the set, three round trips), no message.
 * held: also for pages a holder keeps in hand (a choice's start leaves those out). Only
 * outside a replay (which has no board: runs with spares). */
static void board_take(vstate_t *v, uint32_t nv, int held)
{
    size_t n = 0, cap = 0;
    for (uint32_t p = 0; p < nv; p++) cap += v[p].nreq;
    if (!cap || !cdsm__board_on()) return; /* (ours is read where we read others': one setting) */
    int *rank = malloc(cap * sizeof *rank);
    uint64_t *key = malloc(cap * sizeof *key);
    void **blob = malloc(cap * sizeof *blob);
    uint32_t *len = malloc(cap * sizeof *len), *page = malloc(cap * sizeof *page);
    cdsm__interval_t **iv = malloc(cap * sizeof *iv);
    cdsm_check(rank && key && blob && len && page && iv);
    for (uint32_t p = 0; p < nv; p++) {
        if (!held && cdsm__pg(v[p].pg)->holder >= 0) continue;
        for (size_t j = 0; j < v[p].nreq; j++) {
            cdsm__interval_t *x = v[p].need[j];
            if (x->rank == cdsm__w.rank || av_find(&v[p], x)) continue;
            iv[n] = x, page[n] = p, rank[n] = x->rank;
            key[n++] = cdsm__board_key(v[p].pg, x->idx);
        }
    }
    if (n && cdsm__board_get_many(n, rank, key, blob, len))
        for (size_t i = 0; i < n; i++) {
            vstate_t *w = &v[page[i]];
            if (!blob[i]) continue;
            if (w->nblob == w->capblob) {
                w->capblob = w->capblob ? w->capblob * 2 : 8;
                w->blobs = realloc(w->blobs, w->capblob * sizeof *w->blobs);
                cdsm_check(w->blobs != NULL);
            }
            w->blobs[w->nblob++] = blob[i];
            av_add(w, iv[i], blob[i], len[i]);
        }
    free(rank), free(key), free(blob), free(len), free(page), free(iv);
}

/* Notices of pg whose writes this copy lacks. */
static size_t missing(uint32_t pg, cdsm__interval_t ***out, size_t *cap)
{
    cdsm__page_t *p = cdsm__pg(pg);
    uint32_t *ap = cdsm__page_applied(pg);
    size_t k = 0;
    for (cdsm__notice_t *nt = p->notices; nt; nt = nt->next) {
        if (nt->iv->idx <= ap[nt->iv->rank]) continue;
        if (k == *cap) {
            *cap = *cap ? *cap * 2 : 16;
            *out = realloc(*out, *cap * sizeof **out);
            cdsm_check(*out != NULL);
        }
        (*out)[k++] = nt->iv;
    }
    return k;
}

static int cmp_hb(const void *a, const void *b)
{
    const cdsm__interval_t *x = *(cdsm__interval_t *const *)a, *y = *(cdsm__interval_t *const *)b;
    if (x->vcsum != y->vcsum) return x->vcsum < y->vcsum ? -1 : 1;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* DIFF_REQ: u32 npages, then for each page: u32 page, u32 count, count x u32 index of
 * the writer's intervals. This rank's request to writer q for the pages v[0..nv): the
 * writes of q in each one's need[0..nreq) not at hand yet. Returns how many pages it
 * names (0: nothing to send). */
static uint32_t put_diff_req(cdsm__buf_t *b, const vstate_t *v, uint32_t nv, int q)
{
    uint32_t np = 0;
    cdsm__buf_put_u32(b, 0); /* npages, patched below */
    for (uint32_t i = 0; i < nv; i++) {
        size_t at = b->len;
        uint32_t count = 0;
        cdsm__buf_put_u32(b, v[i].pg);
        cdsm__buf_put_u32(b, 0);
        for (size_t j = 0; j < v[i].nreq; j++)
            if (v[i].need[j]->rank == q && !av_find(&v[i], v[i].need[j])) {
                cdsm__buf_put_u32(b, v[i].need[j]->idx);
                count++;
            }
        if (!count) {
            b->len = at;
            continue;
        }
        memcpy(b->p + at + 4, &count, sizeof count);
        np++;
    }
    memcpy(b->p, &np, sizeof np);
    return np;
}

/* Ask each writer for the diffs pages v[0..nv) lack: one request per writer. */
static int request_diffs(vstate_t *v, uint32_t nv, round_t *rn)
{
    cdsm__state_t *g = &cdsm__g;
    *rn = (round_t){g->next_req, 0};
    for (int q = 0; q < cdsm__w.n; q++) {
        if (q == cdsm__w.rank) continue;
        cdsm__buf_t b = {0};
        int rc = CDSM_OK;
        if (put_diff_req(&b, v, nv, q)) {
            /* (late: the writer may take it at its own next fault) */
            rc = cdsm__tp_send_late(q, CDSM_MSG_DIFF_REQ, g->next_req++, b.p, b.len, NULL, 0);
            rn->nsent += !rc;
        }
        cdsm__buf_free(&b);
        if (rc) return rc;
    }
    return CDSM_OK;
}

int cdsm__diff_req_newest(const uint8_t *p, size_t len, uint32_t *newest)
{
    cdsm__rd_t rd = {p, len, 0, 0};
    uint32_t np = cdsm__rd_u32(&rd);
    *newest = 0;
    for (uint32_t i = 0; i < np && !rd.bad; i++) {
        cdsm__rd_u32(&rd);
        uint32_t count = cdsm__rd_u32(&rd);
        for (uint32_t j = 0; j < count && !rd.bad; j++) {
            uint32_t idx = cdsm__rd_u32(&rd);
            if (idx > *newest) *newest = idx;
        }
    }
    return rd.bad || rd.pos != rd.len ? -1 : 0;
}

/* DIFF_REP: u32 npages, then for each page asked: u32 page, u32 count, and count times:
 * u32 interval index, u32 length, the diff. Its diffs become available to the pages of
 * v[0..nv) they belong to (they point into r, which the caller keeps). */
static int take_diffs(vstate_t *v, uint32_t nv, cdsm__reply_t *r)
{
    cdsm__rd_t rd = {r->payload, r->hdr.len, 0, 0};
    uint32_t np = cdsm__rd_u32(&rd);
    for (uint32_t i = 0; i < np && !rd.bad; i++) {
        uint32_t pg = cdsm__rd_u32(&rd), count = cdsm__rd_u32(&rd), k = 0;
        while (k < nv && v[k].pg != pg) k++;
        if (k == nv) return CDSM_ERR_PROTOCOL;
        for (uint32_t j = 0; j < count; j++) {
            uint32_t idx = cdsm__rd_u32(&rd), len = cdsm__rd_u32(&rd);
            const uint8_t *data = cdsm__rd_take(&rd, len);
            cdsm__interval_t *iv = cdsm__iv_get(r->hdr.src, idx);
            if (rd.bad || !iv) return CDSM_ERR_PROTOCOL;
            av_add(&v[k], iv, data, len);
        }
    }
    return rd.bad || rd.pos != rd.len ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

/* Wait for the replies of a round of diff requests for v[0..nv); v[0] keeps them. */
static int collect_diffs(vstate_t *v, uint32_t nv, const round_t *rn)
{
    for (int i = 0; i < rn->nsent; i++) {
        cdsm__reply_t *r = cdsm__wait_reply(CDSM_MSG_DIFF_REP, rn->first + (uint64_t)i);
        if (!r) return CDSM_ERR_PEER_LOST;
        keep_reply(&v[0], r);
        int rc = take_diffs(v, nv, r);
        if (rc) return rc;
    }
    return CDSM_OK;
}

/* Install a whole copy: bytes and the vector of writes it holds. */
static int take_page(vstate_t *v, cdsm__reply_t *r)
{
    cdsm__rd_t rd = {r->payload, r->hdr.len, 0, 0};
    uint32_t pg = cdsm__rd_u32(&rd);
    const uint32_t *ap = cdsm__rd_take(&rd, cdsm__u32s((size_t)cdsm__w.n));
    const void *bytes = cdsm__rd_take(&rd, cdsm__heap.page_size);
    if (rd.bad || pg != v->pg || rd.pos != rd.len) return CDSM_ERR_PROTOCOL;
    cdsm__page_install(pg, bytes, ap);
    return CDSM_OK;
}

void cdsm__page_install(uint32_t pg, const void *bytes, const uint32_t *applied)
{
    if (cdsm__pg(pg)->patch) cdsm__patch_drop(pg);
    memcpy(cdsm__sys_page(pg), bytes, cdsm__heap.page_size);
    memcpy(cdsm__page_applied(pg), applied, cdsm__u32s((size_t)cdsm__w.n));
    cdsm__pg(pg)->holder = -1;
    cdsm__refill_notices(pg);
    CDSM_STAT_ADD(pages_fetched, 1);
}

/* Wait for the whole copy v_start asked for, keep it and install it. */
static int collect_page(vstate_t *v)
{
    cdsm__reply_t *r = cdsm__wait_reply(CDSM_MSG_PAGE_REP, v->page_id);
    if (!r) return CDSM_ERR_PEER_LOST;
    keep_reply(v, r);
    v->page_req = 0;
    return take_page(v, r);
}

/* Choose where a whole copy comes from, or -1 for diffs only. */
static int whole_source(const vstate_t *v, size_t k, cdsm__interval_t **latest)
{
    cdsm__interval_t **need = v->need;
    *latest = NULL;
    if (cdsm__pg(v->pg)->holder >= 0) return cdsm__pg(v->pg)->holder;
    size_t remote = 0;
    for (size_t i = 0; i < k; i++)
        if (need[i]->rank != cdsm__w.rank && !av_find(v, need[i])) { /* (published: at hand) */
            remote++;
            if (!*latest || cmp_hb(&need[i], latest) > 0) *latest = need[i];
        }
    /* A replay takes diffs only: another rank's copy holds writes after the logged
     * vector clock, including the lost rank's own, which the replay makes again. */
    if (!cdsm__cfg.whole_page_notices || remote < cdsm__cfg.whole_page_notices || cdsm__mode.replaying) {
        *latest = NULL;
        return -1;
    }
    return (*latest)->rank;
}

/* Choose what brings page v->pg up to date: a whole copy (asked for here) and the diffs
 * concurrent with it, or diffs only (need[0..nreq), asked for by the round's
 * request_diffs); v_finish() takes the rest. */
static int v_start(vstate_t *v)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__interval_t *latest = NULL;
    size_t k = v->nreq; /* (missing()'s, with the board's diffs at hand: validate_set) */
    int src = whole_source(v, k, &latest);
    if (src < 0) return CDSM_OK;
    /* A whole copy from the writer of the latest notice holds every write that happened
     * before it: ask the others only for what is concurrent with it. */
    v->page_id = g->next_req++;
    /* (late: the holder may take it at its own next fault) */
    int rc = cdsm__tp_send_late(src, CDSM_MSG_PAGE_REQ, v->page_id, &v->pg, 4, NULL, 0);
    v->page_req = rc == CDSM_OK; /* (only a request that went out is waited for) */
    size_t kk = 0;
    for (size_t i = 0; i < k; i++)
        if (v->need[i]->rank != src && v->need[i]->rank != cdsm__w.rank &&
            !(latest && cdsm__vc_leq(v->need[i]->vc, latest->vc, cdsm__w.n)))
            v->need[kk++] = v->need[i];
    v->nreq = kk;
    return rc;
}

/* Take the whole copy v_start asked for, fetch what is still missing (the round's diffs
 * are at hand already), apply the diffs in happened-before order and make the page
 * readable. */
static int v_finish(vstate_t *v)
{
    uint32_t pg = v->pg;
    int rc, whole = v->page_req; /* (collect_page clears it) */
    if (v->page_req && (rc = collect_page(v))) return rc;
    /* Fetch until every missing write is at hand: at most one more round after a whole
     * copy (whose vector may lack writes our old copy had). */
    size_t k;
    for (;;) {
        k = v->nreq = missing(pg, &v->need, &v->capneed);
        board_take(v, 1, 1);
        for (size_t i = 0; i < k; i++)
            if (v->need[i]->rank == cdsm__w.rank && !av_find(v, v->need[i])) {
                int j = cdsm__iv_find_page(v->need[i], pg);
                cdsm_check(j >= 0);
                cdsm__diffrec_t *d = cdsm__own_diff(v->need[i], j);
                av_add(v, v->need[i], d->data, d->len);
            }
        round_t rn;
        if ((rc = request_diffs(v, 1, &rn))) return rc;
        if (!rn.nsent) break;
        if ((rc = collect_diffs(v, 1, &rn))) return rc;
    }
    k = missing(pg, &v->need, &v->capneed);
    qsort(v->need, k, sizeof *v->need, cmp_hb);
    uint32_t *ap = cdsm__page_applied(pg);
    /* A hot page kept with its twin through a barrier's notices takes the diffs in both
     * and stays writable (cdsm__patch_begin); not over a whole copy, which the twin lacks. */
    int keep = cdsm__pg(pg)->patch && !whole;
    for (size_t i = 0; i < k; i++) {
        const avail_t *a = av_find(v, v->need[i]);
        cdsm_check(a != NULL);
        if (keep ? cdsm__patch_apply(pg, a->data, a->len)
                 : cdsm__diff_apply(cdsm__sys_page(pg), cdsm__heap.page_size, a->data, a->len))
            return cdsm__error(CDSM_ERR_PROTOCOL, "malformed diff of rank %u interval %u for page %u",
                               v->need[i]->rank, v->need[i]->idx, pg);
        if (v->need[i]->idx > ap[v->need[i]->rank]) ap[v->need[i]->rank] = v->need[i]->idx;
        CDSM_STAT_ADD(diffs_applied, 1);
    }
    cdsm__pg(pg)->holder = -1;
    cdsm__prune_notices(pg);
    cdsm__page_protect(pg, 1, keep ? CDSM_PG_RW : CDSM_PG_RO);
    return CDSM_OK;
}

/* ---- readahead ------------------------------------------------------------------------ */

/* Streams of access misses, a few at once (a transpose reads one array in rows while its
 * first writes walk the other in columns: one stream would start over at every miss of
 * the other). Each has the stride between its last two misses (sequential: 1; a column
 * walk over rows of a few pages: a few), and a window, which doubles while misses land
 * where the stream goes next. A stream can also go in runs: `run` consecutive pages every
 * `stride` pages (a column of blocks of a few pages each, as blocked LU reads the other
 * rank's blocks: two sequential misses, then a jump). The window then counts runs. A miss
 * that continues no stream re-strides the stream whose last miss is nearest (within a
 * stride's reach), else starts a new one in the least recently used slot. */
#define RA_STREAMS 4
typedef struct ra_stream {
    uint32_t next, window, run;
    int32_t stride;
    uint32_t start; /* the stream's first miss */
    uint32_t miss;  /* the last miss */
    uint64_t used;  /* when it last took a miss (LRU) */
} ra_stream_t;

static struct {
    ra_stream_t s[RA_STREAMS];
    uint64_t clock;
} ra_st;

/* Strides farther apart than this are no stream (a miss anywhere else). */
#define RA_MAX_STRIDE 64
/* Runs may lie farther apart: a row of blocks of a matrix of order 8192 is 16 MiB. */
#define RA_MAX_RUN_STRIDE 4096

static void ra_clear(ra_stream_t *s)
{
    *s = (ra_stream_t){UINT32_MAX, 1, 1, 0, UINT32_MAX, UINT32_MAX, 0};
}

/* Position k of the stream from pg (k = 0: pg itself). */
static int64_t ra_pos(uint32_t pg, const cdsm__ra_t *ra, uint32_t k)
{
    return (int64_t)pg + (int64_t)(k / ra->run) * ra->stride + (int64_t)(k % ra->run);
}

/* A miss on pg right after a sequential stream of at least two misses, a run's length
 * or more ahead of the stream's start: the stream goes in runs of that many pages (when
 * two runs fit in the window of cap pages). Returns the run's length, 0 if not. */
static uint32_t ra_runs_from(const ra_stream_t *s, uint32_t pg, uint32_t cap)
{
    /* (While the stream is sequential, its last miss is the run's last page.) */
    if (s->stride != 1 || s->run != 1 || s->start == UINT32_MAX || s->miss <= s->start) return 0;
    uint32_t len = s->miss - s->start + 1;
    int64_t d = (int64_t)pg - (int64_t)s->start;
    return d <= (int64_t)len || d > RA_MAX_RUN_STRIDE || 2 * len > cap ? 0 : len;
}

/* A miss on pg continues the stream: it lands where the stream goes next, or up to a
 * window further along it (the pages between were valid already: taken ahead by an
 * earlier miss, or refetched after a barrier). */
static int ra_continues(const ra_stream_t *s, uint32_t pg)
{
    if (!s->stride || s->next == UINT32_MAX) return 0;
    if (pg == s->next) return 1;
    if (s->run != 1) return 0;
    int64_t ahead = ((int64_t)pg - (int64_t)s->next) / s->stride;
    return ahead > 0 && ahead < (int64_t)s->window && (int64_t)s->next + ahead * s->stride == (int64_t)pg;
}

/* The distance from s's last miss to pg when the miss can extend s (a stride's reach, or
 * the start of its next run: *run, its length, else 0); else -1. */
static int64_t ra_reach(const ra_stream_t *s, uint32_t pg, uint32_t cap, uint32_t *run)
{
    *run = 0;
    if (!s->used || s->miss == UINT32_MAX) return -1; /* (an empty slot) */
    int64_t d = (int64_t)pg - (int64_t)s->miss;
    if (!d) return -1;
    *run = ra_runs_from(s, pg, cap);
    return (d >= -RA_MAX_STRIDE && d <= RA_MAX_STRIDE) || *run ? (d < 0 ? -d : d) : -1;
}

/* The stream a miss on pg belongs to: one it continues (*how 1); else the one whose last
 * miss is nearest, turned into runs of *run pages (2) or re-strided from its last miss
 * (0); else a fresh slot, the least recently used (-1). */
static ra_stream_t *ra_pick(uint32_t pg, uint32_t cap, int *how, uint32_t *run)
{
    ra_stream_t *near = NULL, *lru = &ra_st.s[0];
    int64_t best = -1;
    for (int i = 0; i < RA_STREAMS; i++) {
        ra_stream_t *s = &ra_st.s[i];
        if (ra_continues(s, pg)) return *how = 1, s;
        if (s->used < lru->used) lru = s;
        uint32_t len;
        int64_t r = ra_reach(s, pg, cap, &len);
        if (r >= 0 && (best < 0 || r < best)) best = r, near = s, *run = len;
    }
    if (near) return *how = *run ? 2 : 0, near;
    ra_clear(lru);
    return *how = -1, lru;
}

cdsm__ra_t cdsm__ra_begin(uint32_t pg)
{
    uint32_t cap = (uint32_t)cdsm__cfg.prefetch < CDSM_RA_MAX ? (uint32_t)cdsm__cfg.prefetch : CDSM_RA_MAX;
    int how;
    uint32_t len = 0;
    ra_stream_t *s = ra_pick(pg, cap, &how, &len);
    if (how == 1) {
        s->window *= 2;
    } else if (how == 2) {
        s->run = len;
        s->stride = (int32_t)((int64_t)pg - (int64_t)s->start);
        s->start = pg;
        s->window = 2;
    } else {
        /* A new stride is taken from the last miss, not from the end of what it took
         * ahead: pages valid already in between (refetched after a barrier) must not make
         * a column walk of stride 3 look like strides of 6, -3, 9, -6. */
        int64_t d = s->miss == UINT32_MAX ? 0 : (int64_t)pg - (int64_t)s->miss;
        s->stride = d && d >= -RA_MAX_STRIDE && d <= RA_MAX_STRIDE ? (int32_t)d : 0;
        s->window = s->stride ? 2 : 1;
        s->run = 1;
        s->start = s->stride ? s->miss : pg; /* (a stream starts at its first miss) */
    }
    s->miss = pg;
    s->used = ++ra_st.clock;
    if (s->window * s->run > cap) s->window = cap / s->run ? cap / s->run : 1;
    return (cdsm__ra_t){.stride = s->stride, .window = s->window * s->run, .run = s->run, .covered = 1,
                        .slot = (uint32_t)(s - ra_st.s)};
}

void cdsm__ra_reset(void)
{
    for (int i = 0; i < RA_STREAMS; i++) ra_clear(&ra_st.s[i]);
}

void cdsm__ra_end(uint32_t pg, const cdsm__ra_t *ra)
{
    ra_st.s[ra->slot].next = (uint32_t)ra_pos(pg, ra, ra->covered);
}

void cdsm__ra_walk(uint32_t pg, cdsm__ra_t *ra, int (*take)(uint32_t q, void *arg), void *arg)
{
    uint32_t k;
    for (k = 1; ra && k < ra->window; k++) {
        int64_t q = ra_pos(pg, ra, k);
        if (take(q < 0 || q >= cdsm__heap.npages ? UINT32_MAX : (uint32_t)q, arg) < 0) break;
    }
    if (ra) ra->covered = k;
}

/* A page of the stream worth validating in the same round trip: invalid, and others'
 * writes missing (as for the miss itself, they come as diffs or with a whole copy). A page
 * whose base copy a GC or the directory placed elsewhere is not taken while replaying (a
 * replay takes diffs only, as of the logged clocks; the miss itself asks at its moment).
 * Returns 1 to take it, 0 to skip it (already valid), -1 to end the stream here. */
static int prefetchable(uint32_t pg, vstate_t *scratch)
{
    if (pg == UINT32_MAX) return -1;
    const cdsm__page_t *p = cdsm__pg(pg);
    if (p->state != CDSM_PG_INVALID) return 0;
    if (p->claim) return -1;
    if (p->holder >= 0) return cdsm__mode.replaying ? -1 : 1;
    return missing(pg, &scratch->need, &scratch->capneed) > 0 ? 1 : -1;
}

typedef struct gathering {
    vstate_t *v, probe;
    uint32_t nv;
} gathering_t;

static int gather_one(uint32_t q, void *arg)
{
    gathering_t *g = arg;
    int take = prefetchable(q, &g->probe);
    if (take > 0) {
        g->v[g->nv] = g->probe; /* (its scratch goes with it) */
        memset(&g->probe, 0, sizeof g->probe);
        g->v[g->nv++].pg = q;
    }
    return take;
}

/* The pages of pg's stream to validate with it: v[1..), their count with pg's. */
static uint32_t gather(uint32_t pg, cdsm__ra_t *ra, vstate_t *v)
{
    gathering_t g = {v, {0}, 1};
    cdsm__ra_walk(pg, ra, gather_one, &g);
    free(g.probe.need);
    return g.nv;
}

/* Bring pages v[0..nv) up to date: every request travels before anyone waits, one per
 * writer for all the pages, so a batch costs one round trip and each writer one wake-up. */
static int validate_set(vstate_t *v, uint32_t nv)
{
    int rc = CDSM_OK;
    round_t rn = {0, 0};
    /* Every page's missing writes first, then the board's diffs for all of them at once
     * (pages a holder keeps in hand take none), then each page's choice. */
    for (uint32_t i = 0; i < nv; i++) v[i].nreq = missing(v[i].pg, &v[i].need, &v[i].capneed);
    board_take(v, nv, 0);
    for (uint32_t i = 0; i < nv && !rc; i++) rc = v_start(&v[i]);
    if (!rc) rc = request_diffs(v, nv, &rn);
    /* After a failure, still take the replies already asked for, then give up. */
    int r = collect_diffs(v, nv, &rn);
    if (!rc) rc = r;
    for (uint32_t i = 0; i < nv; i++) {
        r = rc ? (v[i].page_req ? collect_page(&v[i]) : CDSM_OK) : v_finish(&v[i]);
        if (!rc) rc = r;
    }
    for (uint32_t i = 0; i < nv; i++) {
        for (size_t j = 0; j < v[i].nrep; j++) cdsm__reply_free(v[i].replies[j]);
        free(v[i].replies);
        for (size_t j = 0; j < v[i].nblob; j++) free(v[i].blobs[j]);
        free(v[i].blobs);
        free(v[i].av);
        free(v[i].need);
    }
    return rc;
}

/* An access miss on pg: bring it up to date, and with it the following pages of the
 * stream of misses it continues (ra: NULL for none; up to CDSM_PREFETCH positions). A miss
 * (ra given) marks the pages as this rank's working set. */
int cdsm__validate(uint32_t pg, cdsm__ra_t *ra)
{
    vstate_t v[CDSM_RA_MAX];
    memset(v, 0, sizeof v);
    v[0].pg = pg;
    uint32_t nv = gather(pg, ra, v);
    CDSM_STAT_ADD(prefetched, nv - 1);
    for (uint32_t i = 0; ra && i < nv; i++) cdsm__pg(v[i].pg)->ws = CDSM_WS_CREDIT;
    return validate_set(v, nv);
}

/* ---- refetching the working set after a barrier ------------------------------------------ */

/* Pages a barrier's notices invalidated while they had working-set credit: an iterative
 * program reads them again in its next phase (a stencil's boundary rows, the blocks a
 * transpose or a scatter goes back to), so they are fetched together right after the
 * barrier instead of one miss at a time. */
static struct {
    uint32_t *pg;
    size_t n, cap;
    int collecting;
} rf;

void cdsm__refetch_collect(int on)
{
    rf.collecting = on && cdsm__cfg.refetch;
}

void cdsm__refetch_note(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    /* (a hot page kept with its twin is written in every phase: fetched whatever its credit) */
    if (!rf.collecting || (!p->ws && !p->patch)) return;
    if (p->ws) p->ws--;
    if (rf.n == rf.cap) {
        rf.cap = rf.cap ? rf.cap * 2 : 256;
        rf.pg = realloc(rf.pg, rf.cap * sizeof *rf.pg);
        cdsm_check(rf.pg != NULL);
    }
    rf.pg[rf.n++] = pg;
}

int cdsm__refetch_run(void)
{
    int rc = CDSM_OK;
    if (cdsm__mode.replaying) rf.n = 0; /* (a replay validates at its own misses only) */
    qsort(rf.pg, rf.n, sizeof *rf.pg, cdsm__cmp_u32);
    for (size_t i = 0; i < rf.n && !rc;) {
        vstate_t v[CDSM_RA_MAX], probe = {0};
        uint32_t nv = 0;
        memset(v, 0, sizeof v);
        for (; i < rf.n && nv < CDSM_RA_MAX; i++) {
            if (prefetchable(rf.pg[i], &probe) <= 0) continue;
            v[nv] = probe;
            memset(&probe, 0, sizeof probe);
            v[nv++].pg = rf.pg[i];
        }
        free(probe.need);
        CDSM_STAT_ADD(prefetched, nv);
        if (nv) rc = validate_set(v, nv);
    }
    rf.n = 0;
    return rc;
}

void cdsm__refetch_fini(void)
{
    free(rf.pg);
    memset(&rf, 0, sizeof rf);
}

/* ---- serving other ranks (service thread) ------------------------------------------ */

/* One page's part of a DIFF_REQ answered into b. Returns -1 if it names a diff this
 * rank never made. */
static int serve_page_diffs(cdsm__rd_t *r, cdsm__buf_t *b, uint32_t *pg)
{
    *pg = cdsm__rd_u32(r);
    uint32_t count = cdsm__rd_u32(r);
    if (r->bad || *pg >= cdsm__heap.npages) return -1;
    cdsm__buf_put_u32(b, *pg);
    cdsm__buf_put_u32(b, count);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t idx = cdsm__rd_u32(r);
        cdsm__interval_t *iv = r->bad ? NULL : cdsm__iv_get(cdsm__w.rank, idx);
        if (!r->bad && !iv) iv = (cdsm__interval_t *)cdsm__ft.archived(idx); /* a replay asks */
        int j = iv ? cdsm__iv_find_page(iv, *pg) : -1;
        if (j < 0) return -1;
        cdsm__diffrec_t *d = cdsm__own_diff_out(iv, j);
        cdsm__buf_put_u32(b, idx);
        cdsm__buf_put_u32(b, d->len);
        cdsm__buf_put(b, d->data, d->len);
        CDSM_STAT_ADD(diffs_served, 1);
    }
    return 0;
}

void cdsm__serve_diffs(const cdsm__msg_hdr_t *h, cdsm__rd_t *r)
{
    if (cdsm__ft.defer(h, r)) return; /* a replacement has not made them again yet */
    cdsm__buf_t b = {0};
    uint32_t np = cdsm__rd_u32(r), pg = UINT32_MAX;
    if (r->bad || !np) goto bad;
    cdsm__buf_put_u32(&b, np);
    for (uint32_t i = 0; i < np; i++)
        if (serve_page_diffs(r, &b, &pg)) goto bad;
    if (r->pos != r->len) goto bad;
    cdsm__tp_send(h->src, CDSM_MSG_DIFF_REP, h->tag, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
    return;
bad:
    cdsm__buf_free(&b);
    cdsm__log(CDSM_LOG_ERROR, "bad diff request from rank %u (page %u)", h->src, pg);
    cdsm_check(!"diff request for a diff this rank never made");
}

void cdsm__serve_page(const cdsm__msg_hdr_t *h, cdsm__rd_t *r)
{
    if (cdsm__ft.defer(h, r)) return; /* a replacement's copy is current once it is live */
    uint32_t pg = cdsm__rd_u32(r);
    if (r->bad || pg >= cdsm__heap.npages) {
        cdsm__log(CDSM_LOG_ERROR, "bad page request from rank %u", h->src);
        cdsm_check(!"bad page request");
    }
    cdsm__buf_t b = {0};
    const void *src;
    cdsm__buf_put_u32(&b, pg);
    cdsm__page_reply(pg, &b, &src);
    cdsm__tp_send(h->src, CDSM_MSG_PAGE_REP, h->tag, b.p, b.len, src, cdsm__heap.page_size);
    cdsm__buf_free(&b);
}

void cdsm__page_reply(uint32_t pg, cdsm__buf_t *b, const void **bytes)
{
    cdsm__page_t *p = cdsm__pg(pg);
    cdsm_check(p->holder < 0); /* only a rank whose copy is current since the last GC is asked */
    if (cdsm__heap.own_mode == CDSM_OWN_HOME) {
        /* The home: the first copy served converts the page (never touched here: zero). */
        if (p->state == CDSM_PG_OWN || p->claim) {
            cdsm__page_convert(pg);
            cdsm__conv_served(pg);
        }
    } else {
        if (p->state == CDSM_PG_OWN) cdsm__page_unown(pg); /* somebody else reads it now */
        if (p->claim == CDSM_CLAIM_UNCLAIMED) p->claim = CDSM_CLAIM_SERVED; /* (named owner, not told yet) */
    }
    /* While the page is being written, the twin is the copy as of the last interval end. */
    *bytes = (p->twin && p->twin_iv == CDSM_IV_OPEN) ? p->twin : cdsm__sys_page(pg);
    cdsm__buf_put(b, cdsm__page_applied(pg), cdsm__u32s((size_t)cdsm__w.n));
    CDSM_STAT_ADD(pages_served, 1);
}
