/* Diffs that travel with a lock grant (DESIGN, "Diffs with the grant"). The granter's last
 * intervals hold what it wrote under the lock; the acquirer is about to read it, and
 * without them its first access would invalidate-miss and ask the granter again, a second
 * wake-up of the same process. So a grant carries the granter's own diffs of the records
 * it sends, newest interval first, up to CDSM_GRANT_DIFFS bytes, and the acquirer applies
 * them at once to each page they bring fully up to date. A page that also lacks other
 * writes is left invalid: its miss fetches everything as usual. Without spares only (a
 * replay takes its grants from the log, without this part).
 *
 * Wire (after the grant's records): u32 count, then count times: u32 interval index,
 * u32 page, u32 length, the diff. Both sides are here: cdsm__gd_begin/add/end encode
 * (for cdsm__grant_put_diffs, and lockwords.c's take of a published release from the
 * boards), cdsm__grant_take_diffs decodes and applies. */
#include <stdlib.h>
#include <string.h>

#include "diff.h"
#include "proto.h"

int cdsm__grant_diffs_on(void)
{
    return cdsm__cfg.grant_diffs && !cdsm__cfg.spares;
}

/* One own diff for the grant, made now if it was lazy; NULL if neither it nor its twin
 * exists. */
static cdsm__diffrec_t *grant_diff(cdsm__interval_t *iv, int j)
{
    cdsm__page_t *p = cdsm__pg(iv->pages[j]);
    if (!iv->diffs[j] && !(p->twin && p->twin_iv == iv->idx)) return NULL;
    return cdsm__own_diff_out(iv, j);
}

void cdsm__gd_begin(cdsm__buf_t *b, cdsm__gd_enc_t *e)
{
    e->at = b->len;
    e->budget = (size_t)cdsm__cfg.grant_diffs;
    e->count = 0;
    cdsm__buf_put_u32(b, 0); /* count, patched by cdsm__gd_end */
}

int cdsm__gd_add(cdsm__buf_t *b, cdsm__gd_enc_t *e, uint32_t idx, uint32_t pg, const void *data, uint32_t len)
{
    if ((size_t)len + 12 > e->budget) return 0;
    cdsm__buf_put_u32(b, idx);
    cdsm__buf_put_u32(b, pg);
    cdsm__buf_put_u32(b, len);
    cdsm__buf_put(b, data, len);
    e->budget -= (size_t)len + 12;
    e->count++;
    return 1;
}

void cdsm__gd_end(cdsm__buf_t *b, const cdsm__gd_enc_t *e)
{
    memcpy(b->p + e->at, &e->count, sizeof e->count);
}

void cdsm__grant_put_diffs(cdsm__buf_t *b, const uint32_t *to_vc, const uint32_t *vc)
{
    int me = cdsm__w.rank;
    cdsm__gd_enc_t e;
    cdsm__gd_begin(b, &e);
    /* The last few intervals only: an acquirer far behind gets the rest at its misses. */
    for (uint32_t idx = vc[me]; idx > to_vc[me] && idx + CDSM_GRANT_INTERVALS > vc[me] && e.budget; idx--) {
        cdsm__interval_t *iv = cdsm__iv_get(me, idx);
        if (!iv || !iv->diffs) break; /* collected: the acquirer asks if it needs them */
        for (uint32_t j = 0; j < iv->npages && e.budget; j++) {
            cdsm__diffrec_t *d = grant_diff(iv, (int)j);
            if (d && cdsm__gd_add(b, &e, idx, iv->pages[j], d->data, d->len)) CDSM_STAT_ADD(grant_diffs_sent, 1);
        }
    }
    cdsm__gd_end(b, &e);
}

/* One diff of the grant, as read. */
typedef struct gdiff {
    uint32_t idx, pg, len;
    const uint8_t *data;
} gdiff_t;

static int cmp_gdiff(const void *a, const void *b)
{
    const gdiff_t *x = a, *y = b;
    if (x->pg != y->pg) return x->pg < y->pg ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Whether the diffs d[0..n) of one page (from src, ascending) are all it lacks. */
static int completes(uint32_t pg, int src, const gdiff_t *d, size_t n)
{
    if (!cdsm__pg_made(pg)) return 0; /* never used here: no copy to bring up to date */
    cdsm__page_t *p = cdsm__pg(pg);
    if (p->state != CDSM_PG_INVALID || p->claim != CDSM_CLAIM_NONE || p->holder >= 0 || (p->twin && !p->patch))
        return 0;
    const uint32_t *ap = cdsm__page_applied(pg);
    for (cdsm__notice_t *nt = p->notices; nt; nt = nt->next) {
        if (nt->iv->idx <= ap[nt->iv->rank]) continue;
        if (nt->iv->rank != src) return 0;
        size_t i = 0;
        while (i < n && d[i].idx != nt->iv->idx) i++;
        if (i == n) return 0;
    }
    return 1;
}

/* Apply one page's diffs (in interval order: one writer's intervals are ordered) and
 * make it readable. */
static int apply_page(int src, const gdiff_t *d, size_t n)
{
    uint32_t pg = d[0].pg, *ap = cdsm__page_applied(pg);
    cdsm__page_t *p = cdsm__pg(pg);
    for (size_t i = 0; i < n; i++) {
        if (d[i].idx <= ap[src]) continue;
        if (p->patch ? cdsm__patch_apply(pg, d[i].data, d[i].len)
                     : cdsm__diff_apply(cdsm__sys_page(pg), cdsm__heap.page_size, d[i].data, d[i].len))
            return cdsm__error(CDSM_ERR_PROTOCOL, "malformed diff of rank %d interval %u for page %u in a grant",
                               src, d[i].idx, pg);
        ap[src] = d[i].idx;
        CDSM_STAT_ADD(diffs_applied, 1);
        CDSM_STAT_ADD(grant_diffs_applied, 1);
    }
    cdsm__prune_notices(pg);
    /* (a hot page kept for its diffs goes on writable and hot: cdsm__patch_end) */
    cdsm__page_protect(pg, 1, p->patch ? CDSM_PG_RW : CDSM_PG_RO);
    return CDSM_OK;
}

int cdsm__grant_take_diffs(cdsm__rd_t *r, int src)
{
    if (r->pos == r->len) return CDSM_OK; /* a grant without the part */
    uint32_t count = cdsm__rd_u32(r);
    if (r->bad || count > (r->len - r->pos) / 12) return CDSM_ERR_PROTOCOL;
    gdiff_t *d = malloc((count + 1) * sizeof *d);
    cdsm_check(d != NULL);
    for (uint32_t i = 0; i < count && !r->bad; i++) {
        d[i].idx = cdsm__rd_u32(r);
        d[i].pg = cdsm__rd_u32(r);
        d[i].len = cdsm__rd_u32(r);
        d[i].data = cdsm__rd_take(r, d[i].len);
        if (!r->bad && d[i].pg >= cdsm__heap.npages) r->bad = 1;
    }
    int rc = r->bad || r->pos != r->len ? CDSM_ERR_PROTOCOL : CDSM_OK;
    qsort(d, count, sizeof *d, cmp_gdiff);
    for (uint32_t i = 0; i < count && !rc;) {
        uint32_t j = i + 1;
        while (j < count && d[j].pg == d[i].pg) j++;
        if (completes(d[i].pg, src, d + i, j - i)) rc = apply_page(src, d + i, j - i);
        i = j;
    }
    free(d);
    return rc;
}
