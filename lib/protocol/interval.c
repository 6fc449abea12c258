/* Interval records and write notices: storage per rank, wire form, and incorporation of
 * records received at an acquire or a barrier. */
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "proto.h"
#include "vclock.h"

cdsm__interval_t *cdsm__iv_get(int rank, uint32_t idx)
{
    cdsm__ivlist_t *l = &cdsm__g.ivs[rank];
    if (idx <= l->base || idx > l->base + l->count) return NULL;
    return l->v[idx - l->base - 1];
}

size_t cdsm__iv_bytes(const cdsm__interval_t *iv)
{
    return sizeof *iv + cdsm__u32s((size_t)cdsm__w.n) + (size_t)iv->npages * (sizeof(uint32_t) + (iv->diffs ? sizeof(void *) : 0));
}

cdsm__interval_t *cdsm__iv_new(int rank, uint32_t idx, const uint32_t *vc, uint32_t npages,
                               const uint32_t *pages, int own)
{
    int n = cdsm__w.n;
    cdsm__interval_t *iv = calloc(1, sizeof *iv);
    cdsm_check(iv != NULL);
    iv->rank = (uint16_t)rank;
    iv->idx = idx;
    iv->npages = npages;
    iv->vc = malloc(cdsm__u32s((size_t)n));
    iv->pages = malloc(cdsm__u32s(npages) + 1);
    cdsm_check(iv->vc && iv->pages);
    memcpy(iv->vc, vc, cdsm__u32s((size_t)n));
    memcpy(iv->pages, pages, cdsm__u32s((size_t)npages));
    iv->vcsum = cdsm__vc_sum(vc, n);
    if (own) {
        iv->diffs = calloc(npages + 1, sizeof *iv->diffs);
        cdsm_check(iv->diffs != NULL);
    }
    cdsm__log_bytes_add((int64_t)cdsm__iv_bytes(iv));
    return iv;
}

void cdsm__iv_free(cdsm__interval_t *iv)
{
    if (!iv) return;
    int64_t bytes = (int64_t)cdsm__iv_bytes(iv);
    if (iv->diffs) {
        for (uint32_t j = 0; j < iv->npages; j++)
            if (iv->diffs[j]) {
                bytes += (int64_t)(sizeof(cdsm__diffrec_t) + iv->diffs[j]->len);
                cdsm__pool_free(iv->diffs[j], sizeof(cdsm__diffrec_t) + iv->diffs[j]->len);
            }
        free(iv->diffs);
    }
    cdsm__log_bytes_add(-bytes);
    free(iv->vc);
    free(iv->pages);
    free(iv);
}

void cdsm__iv_append(cdsm__interval_t *iv)
{
    cdsm__ivlist_t *l = &cdsm__g.ivs[iv->rank];
    cdsm_check(iv->idx == l->base + l->count + 1);
    if (l->count == l->cap) {
        uint32_t nc = l->cap ? l->cap * 2 : 64;
        cdsm__interval_t **nv = realloc(l->v, nc * sizeof *nv);
        cdsm_check(nv != NULL);
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->count++] = iv;
}

int cdsm__iv_find_page(const cdsm__interval_t *iv, uint32_t pg)
{
    uint32_t lo = 0, hi = iv->npages;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (iv->pages[mid] < pg) lo = mid + 1;
        else hi = mid;
    }
    return lo < iv->npages && iv->pages[lo] == pg ? (int)lo : -1;
}

void cdsm__iv_serialize(cdsm__buf_t *b, const cdsm__interval_t *iv)
{
    cdsm__wire_iv_t w = {iv->rank, 0, iv->idx, iv->npages};
    cdsm__buf_put(b, &w, sizeof w);
    cdsm__buf_put(b, iv->vc, cdsm__u32s((size_t)cdsm__w.n));
    cdsm__buf_put(b, iv->pages, cdsm__u32s(iv->npages));
}

size_t cdsm__iv_wire_size(const uint8_t *p)
{
    cdsm__wire_iv_t w;
    memcpy(&w, p, sizeof w);
    return sizeof w + cdsm__u32s((size_t)cdsm__w.n) + cdsm__u32s(w.npages);
}

uint32_t cdsm__iv_serialize_between(cdsm__buf_t *b, const uint32_t *have, const uint32_t *upto)
{
    uint32_t count = 0;
    for (int q = 0; q < cdsm__w.n; q++) {
        cdsm__ivlist_t *l = &cdsm__g.ivs[q];
        cdsm_check(have[q] >= l->base);
        uint32_t last = l->base + l->count < upto[q] ? l->base + l->count : upto[q];
        for (uint32_t i = have[q] + 1; i <= last; i++) {
            cdsm__iv_serialize(b, l->v[i - l->base - 1]);
            count++;
        }
    }
    return count;
}

uint32_t cdsm__iv_serialize_newer(cdsm__buf_t *b, const uint32_t *have)
{
    uint32_t count = 0;
    for (int q = 0; q < cdsm__w.n; q++) {
        cdsm__ivlist_t *l = &cdsm__g.ivs[q];
        /* Everything up to the last GC is known to every rank. */
        cdsm_check(have[q] >= l->base);
        for (uint32_t i = have[q] + 1; i <= l->base + l->count; i++) {
            cdsm__iv_serialize(b, l->v[i - l->base - 1]);
            count++;
        }
    }
    return count;
}

/* Post a notice for page pg of interval iv; invalidate our copy if it lacks the write. */
static void post_notice(uint32_t pg, cdsm__interval_t *iv)
{
    cdsm__page_t *p = cdsm__pg(pg);
    cdsm__notice_add(pg, iv);
    uint32_t *ap = cdsm__page_applied(pg);
    if (ap[iv->rank] >= iv->idx) return; /* a fetched whole page already holds it */
    if (p->state != CDSM_PG_INVALID && p->holder < 0) {
        cdsm__invalidate(pg);
        cdsm__refetch_note(pg);
    }
}

int cdsm__iv_incorporate(cdsm__rd_t *r, uint32_t nrec)
{
    cdsm__state_t *g = &cdsm__g;
    int n = cdsm__w.n;
    for (uint32_t k = 0; k < nrec; k++) {
        const cdsm__wire_iv_t *w = cdsm__rd_take(r, sizeof *w);
        const uint32_t *vc = cdsm__rd_take(r, cdsm__u32s((size_t)n));
        if (!w || !vc) return CDSM_ERR_PROTOCOL;
        const uint32_t *pages = cdsm__rd_take(r, cdsm__u32s((size_t)w->npages));
        if (!pages || w->rank >= n) return CDSM_ERR_PROTOCOL;
        cdsm__ivlist_t *l = &g->ivs[w->rank];
        if (w->idx <= l->base + l->count) continue; /* already known */
        if (w->idx != l->base + l->count + 1) {
            cdsm__log(CDSM_LOG_ERROR, "interval record %u of rank %u arrived before %u",
                      w->idx, w->rank, l->base + l->count + 1);
            return CDSM_ERR_PROTOCOL;
        }
        for (uint32_t j = 0; j < w->npages; j++)
            if (pages[j] >= cdsm__heap.npages || (j && pages[j] <= pages[j - 1])) return CDSM_ERR_PROTOCOL;
        cdsm__interval_t *iv = cdsm__iv_new(w->rank, w->idx, vc, w->npages, pages, 0);
        cdsm__iv_append(iv);
        for (uint32_t j = 0; j < w->npages; j++) post_notice(pages[j], iv);
        CDSM_STAT_ADD(notices_received, w->npages);
    }
    return r->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}
