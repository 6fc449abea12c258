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
    return sizeof *iv + cdsm__u32s((size_t)cdsm__w.n) + (size_t)iv->npages * (sizeof(uint32_t) + (iv->diffs ? sizeof(void *) : 0)) +
           cdsm__u32s(iv->nempty);
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
    free(iv->empty);
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

int cdsm__iv_set_empty(cdsm__interval_t *iv, const uint32_t *empty, uint32_t nempty)
{
    if (!nempty) return 0;
    iv->empty = malloc(cdsm__u32s(nempty));
    cdsm_check(iv->empty != NULL);
    memcpy(iv->empty, empty, cdsm__u32s(nempty));
    iv->nempty = nempty;
    cdsm__log_bytes_add((int64_t)cdsm__u32s(nempty));
    for (uint32_t e = 0; e < nempty; e++) /* (a sorted subset of the pages) */
        if ((e && iv->empty[e] <= iv->empty[e - 1]) || cdsm__iv_find_page(iv, iv->empty[e]) < 0) return -1;
    return 0;
}

/* The index of pg in the sorted v[0..n), or -1. */
static int find_sorted(const uint32_t *v, uint32_t n, uint32_t pg)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (v[mid] < pg) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && v[lo] == pg ? (int)lo : -1;
}

int cdsm__iv_is_empty(const cdsm__interval_t *iv, uint32_t pg)
{
    return find_sorted(iv->empty, iv->nempty, pg) >= 0;
}

int cdsm__iv_find_page(const cdsm__interval_t *iv, uint32_t pg)
{
    return find_sorted(iv->pages, iv->npages, pg);
}

void cdsm__iv_serialize(cdsm__buf_t *b, const cdsm__interval_t *iv)
{
    cdsm__wire_iv_t w = {iv->rank, iv->nempty ? CDSM_IV_EMPTY : 0, iv->idx, iv->npages};
    cdsm__buf_put(b, &w, sizeof w);
    cdsm__buf_put(b, iv->vc, cdsm__u32s((size_t)cdsm__w.n));
    cdsm__buf_put(b, iv->pages, cdsm__u32s(iv->npages));
    if (!iv->nempty) return;
    cdsm__buf_put_u32(b, iv->nempty);
    cdsm__buf_put(b, iv->empty, cdsm__u32s(iv->nempty));
}

size_t cdsm__iv_wire_size(const uint8_t *p)
{
    cdsm__wire_iv_t w;
    memcpy(&w, p, sizeof w);
    size_t sz = sizeof w + cdsm__u32s((size_t)cdsm__w.n) + cdsm__u32s(w.npages);
    uint32_t ne = 0;
    if (w.flags & CDSM_IV_EMPTY) memcpy(&ne, p + sz, 4);
    return sz + (w.flags & CDSM_IV_EMPTY ? 4 + cdsm__u32s(ne) : 0);
}

const cdsm__wire_iv_t *cdsm__iv_take(cdsm__rd_t *r, const uint32_t **vc, const uint32_t **pages,
                                     const uint32_t **empty, uint32_t *nempty)
{
    const cdsm__wire_iv_t *w = cdsm__rd_take(r, sizeof *w);
    *vc = w ? cdsm__rd_take(r, cdsm__u32s((size_t)cdsm__w.n)) : NULL;
    *pages = *vc ? cdsm__rd_take(r, cdsm__u32s(w->npages)) : NULL;
    *empty = NULL;
    *nempty = 0;
    if (!*pages || w->rank >= cdsm__w.n || (w->flags & ~CDSM_IV_EMPTY)) return NULL;
    if (!(w->flags & CDSM_IV_EMPTY)) return w;
    *nempty = cdsm__rd_u32(r);
    *empty = r->bad || !*nempty || *nempty > w->npages ? NULL : cdsm__rd_take(r, cdsm__u32s(*nempty));
    return *empty ? w : NULL;
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

/* Post a notice for page pg of interval iv; invalidate our copy if it lacks the write.
 * empty: the interval only converted the page (its diff is empty), so a copy that holds
 * the writer's earlier intervals holds this one too; not while replaying: the base may
 * come from the home's replacement, converted at the start of the segment, whose diff
 * of the interval holds the writes the original's copy already had. */
static void post_notice(uint32_t pg, cdsm__interval_t *iv, int empty)
{
    cdsm__page_t *p = cdsm__pg(pg);
    cdsm__notice_add(pg, iv);
    uint32_t *ap = cdsm__page_applied(pg);
    if (ap[iv->rank] >= iv->idx) return; /* a fetched whole page already holds it */
    if (empty && !cdsm__mode.replaying && ap[iv->rank] + 1 == iv->idx && p->state != CDSM_PG_INVALID) {
        ap[iv->rank] = iv->idx;
        return;
    }
    if (p->state != CDSM_PG_INVALID && p->holder < 0) {
        cdsm__invalidate(pg);
        cdsm__refetch_note(pg);
    }
}

int cdsm__iv_names_written(cdsm__rd_t r, uint32_t nrec, uint32_t recent)
{
    for (uint32_t k = 0; k < nrec; k++) {
        const uint32_t *vc, *pages, *empty;
        uint32_t nempty;
        const cdsm__wire_iv_t *w = cdsm__iv_take(&r, &vc, &pages, &empty, &nempty);
        if (!w) return 1; /* (malformed: incorporating it says so) */
        for (uint32_t j = 0; j < w->npages; j++)
            if (pages[j] < cdsm__heap.npages && cdsm__pg_made(pages[j]) &&
                (!cdsm__dirty_yield(pages[j]) || (recent && cdsm__pg(pages[j])->last_wr == recent)))
                return 1;
    }
    return 0;
}

static uint64_t incorporated;

uint64_t cdsm__iv_incorporated(void)
{
    return __atomic_load_n(&incorporated, __ATOMIC_RELAXED);
}

int cdsm__iv_incorporate(cdsm__rd_t *r, uint32_t nrec)
{
    cdsm__state_t *g = &cdsm__g;
    for (uint32_t k = 0; k < nrec; k++) {
        const uint32_t *vc, *pages, *empty;
        uint32_t nempty;
        const cdsm__wire_iv_t *w = cdsm__iv_take(r, &vc, &pages, &empty, &nempty);
        if (!w) return CDSM_ERR_PROTOCOL;
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
        if (cdsm__iv_set_empty(iv, empty, nempty)) {
            cdsm__iv_free(iv);
            return CDSM_ERR_PROTOCOL;
        }
        cdsm__iv_append(iv);
        __atomic_add_fetch(&incorporated, 1, __ATOMIC_RELAXED);
        for (uint32_t j = 0, e = 0; j < w->npages; j++) {
            int is_empty = e < nempty && iv->empty[e] == pages[j];
            e += (uint32_t)is_empty;
            post_notice(pages[j], iv, is_empty);
        }
        CDSM_STAT_ADD(notices_received, w->npages);
    }
    return r->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}
