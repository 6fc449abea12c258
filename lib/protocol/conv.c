/* Conversions under home ownership (runs with spares; DESIGN, "Ownership with spares").
 * A page is owned by its home (its directory rank) and written there with no trace until
 * another rank reads it. The serve converts it: from then on the home tracks it, and the
 * page is listed in the home's open interval k whether or not it changes there
 * (cdsm__page_convert), so a replay makes the same intervals. Two replays must then come
 * out as the original:
 *  - a reader's: its first fetch of the page gets the *base*, the copy the conversion
 *    served (its applied vector lacks k), then the diffs from k on, k's included. A copy
 *    served later holds no more that the reader may read before it synchronises with
 *    those writers (race-free), so the base serves every reader's replay;
 *  - the home's: its replacement converts the page at the start of the same
 *    synchronisation segment (the readers report the number: each copy carries it), so
 *    it lists the page in k too; its base lacks the home's writes of that segment before
 *    the serve, and its diff of k carries them.
 * This module keeps, per page: the conversion's synchronisation number and home, and at
 * the home the base. All of it runs under cdsm__g.mu. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

typedef struct conv {
    uint32_t pg, seq, idx; /* idx: the home's interval the conversion is listed in */
    int home;
    uint8_t *base;         /* the home's base copy */
    uint32_t *applied;     /* the base's applied vector */
} conv_t;

static struct {
    conv_t *v;
    size_t n, cap;
    uint32_t *slot; /* open addressing: index + 1 into v, 0 empty */
    size_t nslot;
    uint32_t *due;  /* replacement: (pg, seq) pairs sorted by seq, made from due_at on */
    size_t ndue, due_at;
    uint32_t *listed; /* replacement of a rank lost with its readers: (pg, idx) pairs */
    size_t nlisted;
} cv;

static size_t hash(uint32_t pg)
{
    return (size_t)((pg * 2654435761u) & (uint32_t)(cv.nslot - 1));
}

static conv_t *find(uint32_t pg)
{
    if (!cv.nslot) return NULL;
    for (size_t h = hash(pg);; h = (h + 1) & (cv.nslot - 1)) {
        if (!cv.slot[h]) return NULL;
        if (cv.v[cv.slot[h] - 1].pg == pg) return &cv.v[cv.slot[h] - 1];
    }
}

static void rehash(size_t nslot)
{
    free(cv.slot);
    cv.nslot = nslot;
    cv.slot = calloc(nslot, sizeof *cv.slot);
    cdsm_check(cv.slot != NULL);
    for (size_t i = 0; i < cv.n; i++) {
        size_t h = hash(cv.v[i].pg);
        while (cv.slot[h]) h = (h + 1) & (cv.nslot - 1);
        cv.slot[h] = (uint32_t)(i + 1);
    }
}

static conv_t *get(uint32_t pg)
{
    conv_t *c = find(pg);
    if (c) return c;
    if (cv.n == cv.cap) {
        cv.cap = cv.cap ? cv.cap * 2 : 256;
        cv.v = realloc(cv.v, cv.cap * sizeof *cv.v);
        cdsm_check(cv.v != NULL);
    }
    cv.v[cv.n++] = (conv_t){pg, 0, 0, -1, NULL, NULL};
    if (cv.n * 2 > cv.nslot) rehash(cv.nslot ? cv.nslot * 2 : 512);
    else {
        size_t h = hash(pg);
        while (cv.slot[h]) h = (h + 1) & (cv.nslot - 1);
        cv.slot[h] = (uint32_t)cv.n;
    }
    return &cv.v[cv.n - 1];
}

static void drop_base(conv_t *c)
{
    if (c->base) CDSM_STAT_ADD(conv_base_bytes, -(int64_t)cdsm__heap.page_size);
    free(c->base);
    free(c->applied);
    c->base = NULL;
    c->applied = NULL;
    c->idx = 0;
}

/* The base: the page as served (or as the replay converts it), with its applied vector.
 * Its home's writes in the conversion's interval come with that interval's diff, which
 * every reader applies, since the page is listed there (and the base's vector lacks it). */
uint32_t cdsm__conv_served(uint32_t pg)
{
    conv_t *c = get(pg);
    size_t ps = cdsm__heap.page_size;
    drop_base(c); /* (converted again right after a restore: the same base comes) */
    c->home = cdsm__w.rank;
    c->seq = cdsm__g.sync_seq;
    c->base = malloc(ps);
    c->applied = malloc(cdsm__u32s((size_t)cdsm__w.n));
    cdsm_check(c->base && c->applied);
    memcpy(c->base, cdsm__sys_page(pg), ps);
    memcpy(c->applied, cdsm__page_applied(pg), cdsm__u32s((size_t)cdsm__w.n));
    c->idx = cdsm__g.vc[cdsm__w.rank] + 1;
    CDSM_STAT_ADD(conv_base_bytes, ps);
    cdsm__ft.converted(pg, cdsm__w.rank, c->seq);
    return c->seq;
}

void cdsm__conv_learned(uint32_t pg, int home, uint32_t seq)
{
    conv_t *c = get(pg);
    c->home = home;
    c->seq = seq;
    cdsm__ft.converted(pg, home, seq);
}

uint32_t cdsm__conv_base(uint32_t pg, const void **bytes, const uint32_t **applied)
{
    conv_t *c = find(pg);
    *bytes = c && c->home == cdsm__w.rank ? c->base : NULL;
    *applied = *bytes ? c->applied : NULL;
    return c ? c->seq : 0;
}

size_t cdsm__conv_count(void)
{
    return cv.n;
}

void cdsm__conv_put_for(cdsm__buf_t *b, int home)
{
    uint32_t k = 0;
    for (size_t i = 0; i < cv.n; i++) k += cv.v[i].home == home;
    cdsm__buf_put_u32(b, k);
    for (size_t i = 0; i < cv.n; i++)
        if (cv.v[i].home == home) {
            cdsm__buf_put_u32(b, cv.v[i].pg);
            cdsm__buf_put_u32(b, cv.v[i].seq);
        }
}

static int cmp_due(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[1] != y[1] ? (x[1] < y[1] ? -1 : 1) : (x[0] > y[0]) - (x[0] < y[0]);
}

/* Append k (pg, x) pairs to *v (n of them). */
static void append_pairs(uint32_t **v, size_t *n, const uint32_t *pairs, size_t k)
{
    uint32_t *nv = realloc(*v, (*n + k) * 8 + 8);
    cdsm_check(nv != NULL);
    memcpy(&nv[2 * *n], pairs, k * 8);
    *v = nv;
    *n += k;
}

/* Append a report's (pg, x) pairs (u32 count, then the pairs) to *v; pages checked. */
static int take_pairs(cdsm__rd_t *rd, uint32_t **v, size_t *n)
{
    uint32_t k = cdsm__rd_u32(rd);
    const uint32_t *pairs = rd->bad ? NULL : cdsm__rd_take(rd, (size_t)k * 8);
    if (!pairs) return CDSM_ERR_PROTOCOL;
    for (uint32_t i = 0; i < k; i++)
        if (pairs[2 * i] >= cdsm__heap.npages) return CDSM_ERR_PROTOCOL;
    append_pairs(v, n, pairs, k);
    return CDSM_OK;
}

/* The pairs from index `from` of cv.due are new: known, and in order with the others. */
static void due_added(size_t from)
{
    for (size_t i = from; i < cv.ndue; i++) /* (known: not taken from the listed ones) */
        cdsm__conv_learned(cv.due[2 * i], cdsm__w.rank, cv.due[2 * i + 1]);
    qsort(cv.due, cv.ndue, 8, cmp_due);
    cv.due_at = 0;
}

int cdsm__conv_take_due(cdsm__rd_t *rd)
{
    size_t from = cv.ndue;
    if (take_pairs(rd, &cv.due, &cv.ndue)) return CDSM_ERR_PROTOCOL;
    due_added(from);
    return CDSM_OK;
}

void cdsm__conv_due_add(const uint32_t *pairs, size_t k)
{
    size_t from = cv.ndue;
    append_pairs(&cv.due, &cv.ndue, pairs, k);
    due_added(from);
}

int cdsm__conv_take_listed(cdsm__rd_t *rd)
{
    return take_pairs(rd, &cv.listed, &cv.nlisted);
}

void cdsm__conv_upto(uint32_t next)
{
    size_t keep = 0;
    for (size_t i = 0; i < cv.nlisted; i++) {
        uint32_t pg = cv.listed[2 * i], idx = cv.listed[2 * i + 1];
        const cdsm__page_t *p = cdsm__pg(pg);
        if (idx > next) {
            cv.listed[2 * keep] = pg;
            cv.listed[2 * keep++ + 1] = idx;
        } else if (!find(pg) && (p->state == CDSM_PG_OWN || p->claim)) {
            cdsm__page_convert(pg);
            cdsm__conv_served(pg);
        }
    }
    cv.nlisted = keep;
}

void cdsm__conv_sync(void)
{
    if (cv.due_at == cv.ndue || cdsm__mode.fast_forward) return;
    uint32_t now = cdsm__g.sync_seq;
    /* (Reported by several readers: each once.) */
    for (; cv.due_at < cv.ndue && cv.due[2 * cv.due_at + 1] <= now; cv.due_at++) {
        uint32_t pg = cv.due[2 * cv.due_at], seq = cv.due[2 * cv.due_at + 1];
        if (cv.due_at && cv.due[2 * cv.due_at - 2] == pg && cv.due[2 * cv.due_at - 1] == seq) continue;
        /* Made before the checkpoint this replacement restored: its pages hold it. */
        if (seq < now && cdsm__pg(pg)->state != CDSM_PG_OWN && !cdsm__pg(pg)->claim) continue;
        cdsm__page_convert(pg);
        cdsm__conv_served(pg);
    }
    if (cv.due_at == cv.ndue) {
        free(cv.due);
        cv.due = NULL;
        cv.ndue = cv.due_at = 0;
    }
}

/* ---- the checkpoint region -------------------------------------------------------------
 * u32 count, then per entry: u32 pg, u32 seq, u32 idx, i32 home, u32 has_base; with a
 * base: applied[n] (u32) and the page's bytes (host order, as every dataset of the file). */
static size_t entry_bytes(const conv_t *c)
{
    return 20 + (c->base ? cdsm__u32s((size_t)cdsm__w.n) + cdsm__heap.page_size : 0);
}

size_t cdsm__conv_state_bytes(void)
{
    size_t b = 4;
    for (size_t i = 0; i < cv.n; i++) b += entry_bytes(&cv.v[i]);
    return cv.n ? b : 0;
}

void cdsm__conv_state_put(uint8_t *dst)
{
    uint32_t k = (uint32_t)cv.n;
    memcpy(dst, &k, 4);
    dst += 4;
    for (size_t i = 0; i < cv.n; i++) {
        const conv_t *c = &cv.v[i];
        uint32_t h[5] = {c->pg, c->seq, c->idx, (uint32_t)c->home, c->base != NULL};
        memcpy(dst, h, 20);
        dst += 20;
        if (!c->base) continue;
        memcpy(dst, c->applied, cdsm__u32s((size_t)cdsm__w.n));
        dst += cdsm__u32s((size_t)cdsm__w.n);
        memcpy(dst, c->base, cdsm__heap.page_size);
        dst += cdsm__heap.page_size;
    }
}

static int take_entry(cdsm__rd_t *rd)
{
    const uint32_t *h = cdsm__rd_take(rd, 20);
    if (!h || h[0] >= cdsm__heap.npages || (int32_t)h[3] < 0 || (int32_t)h[3] >= cdsm__w.n || h[4] > 1) return -1;
    conv_t *c = get(h[0]);
    drop_base(c);
    c->seq = h[1];
    c->home = (int)h[3];
    if (!h[4]) return 0;
    const void *ap = cdsm__rd_take(rd, cdsm__u32s((size_t)cdsm__w.n));
    const void *bytes = cdsm__rd_take(rd, cdsm__heap.page_size);
    if (!ap || !bytes || c->home != cdsm__w.rank) return -1;
    c->base = malloc(cdsm__heap.page_size);
    c->applied = malloc(cdsm__u32s((size_t)cdsm__w.n));
    cdsm_check(c->base && c->applied);
    memcpy(c->base, bytes, cdsm__heap.page_size);
    memcpy(c->applied, ap, cdsm__u32s((size_t)cdsm__w.n));
    c->idx = h[2];
    CDSM_STAT_ADD(conv_base_bytes, cdsm__heap.page_size);
    return 0;
}

int cdsm__conv_state_take(const uint8_t *p, size_t n)
{
    cdsm__rd_t rd = {p, n, 0, 0};
    uint32_t k = cdsm__rd_u32(&rd);
    for (uint32_t i = 0; i < k && !rd.bad; i++)
        if (take_entry(&rd)) rd.bad = 1;
    if (rd.bad || rd.pos != rd.len)
        return cdsm__error(CDSM_ERR_CORRUPT, "checkpoint region %s: %zu bytes do not hold this heap's conversions",
                           CDSM_CONV_REGION, n);
    return CDSM_OK;
}

void cdsm__conv_fini(void)
{
    for (size_t i = 0; i < cv.n; i++) drop_base(&cv.v[i]);
    free(cv.v);
    free(cv.slot);
    free(cv.due);
    free(cv.listed);
    memset(&cv, 0, sizeof cv);
}
