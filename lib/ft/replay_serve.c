/* Survivors serve a replacement what its replay needs: the barrier log (epoch, release
 * flags and global vector clock of every barrier), the grants between them and the lost
 * rank (both kinds), every record they hold (their own since the start, archived ones
 * included, and the others' they know), the last barrier released; and, at the replay's
 * frontier, how many of its intervals they know. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "recovery.h"

static void put_barrier(const cdsm__det_t *d, void *arg)
{
    if (d->kind != CDSM_DET_BARRIER) return;
    cdsm__buf_t *b = arg;
    cdsm__buf_put_u32(b, d->id);
    cdsm__buf_put_u32(b, d->grant_seq); /* the release flags */
    cdsm__buf_put(b, d->vc, cdsm__u32s((size_t)cdsm__w.n));
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
        cdsm__buf_put(gp->b, d->vc, cdsm__u32s((size_t)cdsm__w.n));
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

/* (pg, idx) of every page of `home` that one of its records lists, as pairs in *v. */
static void listed_in(const cdsm__interval_t *iv, void *arg)
{
    cdsm__buf_t *v = arg;
    for (uint32_t j = 0; j < iv->npages; j++)
        if (cdsm__own_home(iv->pages[j]) == iv->rank) {
            cdsm__buf_put_u32(v, iv->pages[j]);
            cdsm__buf_put_u32(v, iv->idx);
        }
}

static int cmp_pair(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] > y[1]) - (x[1] < y[1]);
}

/* The pages of `home` its records list, each with the first interval listing it (its
 * conversion, with home ownership): a rank lost together with the readers that knew the
 * conversions' numbers converts there (conv.c). */
static void put_listed(cdsm__buf_t *b, int home)
{
    cdsm__buf_t v = {0};
    const cdsm__buf_t *kept = NULL;
    uint32_t nkept = cdsm__archive_other_records(home, &kept);
    for (size_t pos = 0, k = 0; k < nkept; k++, pos += cdsm__iv_wire_size(kept->p + pos)) {
        cdsm__wire_iv_t w;
        memcpy(&w, kept->p + pos, sizeof w);
        const uint32_t *pages = (const uint32_t *)(const void *)(kept->p + pos + sizeof w + cdsm__u32s((size_t)cdsm__w.n));
        for (uint32_t j = 0; j < w.npages; j++) {
            uint32_t pg;
            memcpy(&pg, &pages[j], 4);
            if (cdsm__own_home(pg) != home) continue;
            cdsm__buf_put_u32(&v, pg);
            cdsm__buf_put_u32(&v, w.idx);
        }
    }
    cdsm__ivlist_t *l = &cdsm__g.ivs[home];
    for (uint32_t k = 0; k < l->count; k++) listed_in(l->v[k], &v);
    size_t n = v.len / 8, m = 0;
    uint32_t *p = (uint32_t *)(void *)v.p;
    if (n) qsort(p, n, 8, cmp_pair);
    for (size_t i = 0; i < n; i++)
        if (!m || p[2 * (m - 1)] != p[2 * i]) {
            p[2 * m] = p[2 * i];
            p[2 * m++ + 1] = p[2 * i + 1];
        }
    cdsm__buf_put_u32(b, (uint32_t)m);
    if (m) cdsm__buf_put(b, p, m * 8);
    cdsm__buf_free(&v);
}

void cdsm__serve_replay(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    cdsm__state_t *g = &cdsm__g;
    (void)rd;
    cdsm__buf_t b = {0};
    if (cdsm__member_replayed_now(cdsm__w.rank)) {
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
    for (int x = 0; x < cdsm__w.n; x++) {
        if (x == (int)h->src) continue;
        cdsm__ivlist_t *l = &g->ivs[x];
        const cdsm__buf_t *kept = NULL;
        uint32_t nkept = x == cdsm__w.rank ? cdsm__archive_count() : cdsm__archive_other_records(x, &kept);
        cdsm__buf_put_u32(&b, nkept + l->count);
        if (x == cdsm__w.rank) cdsm__archive_foreach(put_record, &b);
        else if (nkept) cdsm__buf_put(&b, kept->p, kept->len);
        for (uint32_t k = 0; k < l->count; k++) cdsm__iv_serialize(&b, l->v[k]);
    }
    /* The barrier manager: the last barrier it released (its release may still be on its
     * way to the others, whose logs then end before it). */
    cdsm__buf_put_u32(&b, cdsm__bar_released());
    /* The pages of the lost rank this one saw converted, and when (conv.c). */
    cdsm__conv_put_for(&b, (int)h->src);
    put_listed(&b, (int)h->src);
    /* Every grant this rank has heard of (two spares or more): the replacement's own among
     * them where its other party was lost too, and what its lost process knew. */
    cdsm__gcopy_put_all(&b, (int)h->src);
    cdsm__tp_send(h->src, CDSM_MSG_REPLAY_REP, h->tag, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
}

/* The asker's request for this rank's records first..last (u32 each). */
static int take_rec_req(const uint8_t *p, size_t len, uint32_t *first, uint32_t *last)
{
    cdsm__rd_t rd = {p, len, 0, 0};
    *first = cdsm__rd_u32(&rd);
    *last = cdsm__rd_u32(&rd);
    return rd.bad || !*first || *first > *last ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

int cdsm__rec_req_newest(const uint8_t *p, size_t len, uint32_t *newest)
{
    uint32_t first;
    return take_rec_req(p, len, &first, newest);
}

void cdsm__serve_records(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    uint32_t first, last;
    if (cdsm__replay_defer(h, rd)) return; /* (not made again yet) */
    cdsm__buf_t b = {0};
    cdsm__buf_put_u32(&b, 0);
    uint32_t count = 0;
    if (!take_rec_req(rd->p, rd->len, &first, &last))
        for (uint32_t idx = first; idx <= last; idx++) {
            const cdsm__interval_t *iv = cdsm__iv_get(cdsm__w.rank, idx);
            if (!iv) iv = cdsm__archive_find(idx);
            if (!iv) break;
            cdsm__iv_serialize(&b, iv);
            count++;
        }
    else
        cdsm__log(CDSM_LOG_ERROR, "malformed record request from rank %u", h->src);
    memcpy(b.p, &count, sizeof count);
    cdsm__tp_send(h->src, CDSM_MSG_REC_REP, h->tag, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
}

void cdsm__serve_know(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    cdsm__state_t *g = &cdsm__g;
    (void)rd;
    uint32_t r = h->src, known = g->vc[r];
    if (cdsm__bar_collected((int)r) > known) known = cdsm__bar_collected((int)r);
    /* A grant not read yet carries its granter's knowledge too (the lost process's own
     * grant among them). */
    for (cdsm__reply_t *rep = g->replies; rep; rep = rep->next) {
        const uint32_t *vc = cdsm__lock_grant_vc(rep);
        uint32_t v;
        if (!vc) continue;
        memcpy(&v, &vc[r], sizeof v);
        if (v > known) known = v;
    }
    cdsm__tp_send((int)r, CDSM_MSG_KNOW_REP, h->tag, &known, 4, NULL, 0);
}
