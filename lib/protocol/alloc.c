/* Allocation in the shared heap. The first half is the common arena, used by collective
 * cdsm_alloc(): every rank runs the same deterministic allocator with the same calls, so
 * the addresses agree without messages. The second half is split into one arena per
 * rank for cdsm_malloc(). Allocator metadata is private, never in shared memory. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

typedef struct range {
    uint64_t off, len;
} range_t;

/* Free extents and live allocations, each sorted by offset. */
typedef struct arena {
    uint64_t start, end;
    range_t *free, *used;
    size_t nfree, nused, capfree, capused;
} arena_t;

static arena_t common, own;
static uint64_t own_size; /* size of each per-rank arena */
static int master;        /* the common arena is rank 0's (cdsm__alloc_master_start) */
/* Rank 0: its G_MALLOCs placed since the others last learned them (cdsm__alloc_master_take). */
static struct {
    uint64_t (*ent)[2];
    size_t n, cap;
    int full; /* a batch had more: none placed from then on (a page placed after it was touched
               * unplaced would change directory, as one shared with an unlisted allocation) */
} placing;

static int insert_at(range_t **v, size_t *n, size_t *cap, size_t at, range_t r)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        range_t *nv = realloc(*v, nc * sizeof *nv);
        if (!nv) return -1;
        *v = nv;
        *cap = nc;
    }
    memmove(*v + at + 1, *v + at, (*n - at) * sizeof **v);
    (*v)[at] = r;
    (*n)++;
    return 0;
}

static void remove_at(range_t *v, size_t *n, size_t at)
{
    memmove(v + at, v + at + 1, (*n - at - 1) * sizeof *v);
    (*n)--;
}

/* First index whose offset is >= off. */
static size_t lower_bound(const range_t *v, size_t n, uint64_t off)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid].off < off) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static int arena_init(arena_t *a, uint64_t start, uint64_t end)
{
    memset(a, 0, sizeof *a);
    a->start = start;
    a->end = end;
    return insert_at(&a->free, &a->nfree, &a->capfree, 0, (range_t){start, end - start});
}

static void arena_fini(arena_t *a)
{
    free(a->free);
    free(a->used);
    memset(a, 0, sizeof *a);
}

static int arena_alloc(arena_t *a, uint64_t size, uint64_t align, uint64_t *out)
{
    for (size_t i = 0; i < a->nfree; i++) {
        range_t f = a->free[i];
        uint64_t at = (f.off + align - 1) / align * align;
        if (at - f.off > f.len || f.len - (at - f.off) < size) continue;
        range_t before = {f.off, at - f.off}, after = {at + size, f.off + f.len - at - size};
        size_t u = lower_bound(a->used, a->nused, at);
        if (insert_at(&a->used, &a->nused, &a->capused, u, (range_t){at, size})) return CDSM_ERR_NOMEM;
        remove_at(a->free, &a->nfree, i);
        if (after.len && insert_at(&a->free, &a->nfree, &a->capfree, i, after)) return CDSM_ERR_NOMEM;
        if (before.len && insert_at(&a->free, &a->nfree, &a->capfree, i, before)) return CDSM_ERR_NOMEM;
        *out = at;
        return CDSM_OK;
    }
    return CDSM_ERR_NO_SPACE;
}

static int arena_free(arena_t *a, uint64_t off)
{
    size_t u = lower_bound(a->used, a->nused, off);
    if (u == a->nused || a->used[u].off != off) return CDSM_ERR_INVALID_ARG;
    range_t r = a->used[u];
    remove_at(a->used, &a->nused, u);
    size_t i = lower_bound(a->free, a->nfree, r.off);
    /* Coalesce with the neighbours. */
    if (i > 0 && a->free[i - 1].off + a->free[i - 1].len == r.off) {
        r.off = a->free[i - 1].off;
        r.len += a->free[i - 1].len;
        remove_at(a->free, &a->nfree, --i);
    }
    if (i < a->nfree && r.off + r.len == a->free[i].off) {
        r.len += a->free[i].len;
        remove_at(a->free, &a->nfree, i);
    }
    return insert_at(&a->free, &a->nfree, &a->capfree, i, r) ? CDSM_ERR_NOMEM : CDSM_OK;
}

int cdsm__alloc_init(void)
{
    uint64_t half = cdsm__heap.heap_size / 2 / cdsm__heap.page_size * cdsm__heap.page_size;
    own_size = (cdsm__heap.heap_size - half) / (uint64_t)cdsm__w.n / cdsm__heap.page_size * cdsm__heap.page_size;
    uint64_t mine = half + own_size * (uint64_t)cdsm__w.rank;
    if (arena_init(&common, 0, half) || arena_init(&own, mine, mine + own_size)) {
        cdsm__alloc_fini();
        return cdsm__error(CDSM_ERR_NOMEM, "allocator metadata");
    }
    return CDSM_OK;
}

void cdsm__alloc_fini(void)
{
    master = 0;
    free(placing.ent);
    memset(&placing, 0, sizeof placing);
    arena_fini(&common);
    arena_fini(&own);
}

static uint64_t align_for(uint64_t size)
{
    return size >= cdsm__heap.page_size ? cdsm__heap.page_size : 64;
}

static int do_alloc(arena_t *a, const char *what, size_t size, void **out)
{
    if (!cdsm__g.initialized) return cdsm__error(CDSM_ERR_STATE, "%s before cdsm_init", what);
    if (!size || !out) return cdsm__error(CDSM_ERR_INVALID_ARG, "%s(%zu): size must be > 0 and out non-NULL", what, size);
    /* Round up so that every allocation can be freed and coalesced exactly. */
    uint64_t sz = (size + 63) / 64 * 64, off;
    if (sz < size) return cdsm__error(CDSM_ERR_INVALID_ARG, "%s(%zu): size overflows", what, size);
    int rc = arena_alloc(a, sz, align_for(sz), &off);
    if (rc == CDSM_ERR_NO_SPACE)
        return cdsm__error(rc, "%s(%zu): arena of %llu bytes has no free extent that large (raise CDSM_HEAP_SIZE)",
                           what, size, (unsigned long long)(a->end - a->start));
    if (rc) return cdsm__error(rc, "%s(%zu): allocator metadata", what, size);
    *out = cdsm__heap.base + off;
    return CDSM_OK;
}

int cdsm_alloc(size_t size, void **out)
{
    if (master)
        return cdsm__error(CDSM_ERR_STATE, "cdsm_alloc(%zu): the common arena belongs to rank 0's G_MALLOC since the "
                           "PARMACS layer started; a PARMACS program allocates with G_MALLOC", size);
    int rc = do_alloc(&common, "cdsm_alloc", size, out);
    if (rc) return rc;
    cdsm__own_place((uint64_t)((char *)*out - cdsm__heap.base), size); /* (every rank alike: collective) */
    if (!cdsm__cfg.check) return rc;
    /* Checker: every rank must have asked for the same size. */
    int flags = 0;
    rc = cdsm__barrier_full(CDSM_BAR_PLAIN, (uint64_t)size, NULL, NULL, &flags);
    if (rc) return rc;
    if (flags & CDSM_BAR_MISMATCH)
        return cdsm__error(CDSM_ERR_MISMATCH, "cdsm_alloc(%zu): ranks asked for different sizes", size);
    return CDSM_OK;
}

int cdsm__alloc_arena_rank(uint64_t off)
{
    if (off >= cdsm__heap.heap_size) return -1; /* the program's shared globals */
    return off < common.end || !own_size ? -1 : (int)((off - common.end) / own_size);
}

int cdsm__alloc_master_start(size_t cap)
{
    master = 1;
    /* (Under home ownership, with spares, the homes stay spread by page number.) */
    if (cdsm__heap.own_mode != CDSM_OWN_FIRST_TOUCH || !cap) return CDSM_OK;
    placing.ent = calloc(cap, sizeof *placing.ent);
    if (!placing.ent) return cdsm__error(CDSM_ERR_NOMEM, "list of %zu G_MALLOC placements", cap);
    placing.cap = cap;
    return CDSM_OK;
}

/* Non-collective allocation from the common arena, for a program phase in which only this
 * rank allocates there (the PARMACS layer: rank 0 running main while the others wait). The
 * other ranks' copies of the common arena do not learn about it, so no other rank may
 * allocate from the common arena afterwards. */
int cdsm__alloc_master(size_t size, void **out)
{
    int rc = do_alloc(&common, "G_MALLOC", size, out);
    if (rc || placing.full || !placing.cap) return rc;
    if (placing.n == placing.cap) {
        placing.full = 1; /* (the next CREATE's list is cut here: the others stop with rank 0) */
        cdsm__log(CDSM_LOG_INFO, "more than %zu G_MALLOCs in main between two CREATEs: later ones keep directories "
                  "by page number (a first miss each)", placing.cap);
        return rc;
    }
    uint64_t off = (uint64_t)((char *)*out - cdsm__heap.base);
    placing.ent[placing.n][0] = off;
    placing.ent[placing.n++][1] = size;
    cdsm__own_place(off, size);
    return CDSM_OK;
}

size_t cdsm__alloc_master_take(uint64_t (*out)[2], size_t max)
{
    /* (Every one listed is placed here already: the others must learn them all.) */
    cdsm_check(placing.n <= max);
    size_t n = placing.n;
    memcpy(out, placing.ent, n * sizeof *out);
    placing.n = 0;
    return n;
}

int cdsm__alloc_master_learn(uint64_t off, uint64_t size)
{
    if (!master || off >= common.end || !size || size > common.end - off)
        return cdsm__error(CDSM_ERR_PROTOCOL, "G_MALLOC placement [%llu, +%llu) from rank 0 is not in the common arena",
                           (unsigned long long)off, (unsigned long long)size);
    cdsm__own_place(off, size);
    return CDSM_OK;
}

int cdsm_malloc(size_t size, void **out)
{
    return do_alloc(&own, "cdsm_malloc", size, out);
}

int cdsm_free(void *ptr)
{
    if (!ptr) return CDSM_OK;
    if (!cdsm__g.initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_free before cdsm_init");
    char *p = ptr;
    if (p < cdsm__heap.base || p >= cdsm__heap.base + cdsm__heap.heap_size)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_free(%p): not in the shared heap", ptr);
    uint64_t off = (uint64_t)(p - cdsm__heap.base);
    arena_t *a = off < common.end ? &common : (off >= own.start && off < own.end ? &own : NULL);
    if (!a)
        return cdsm__error(CDSM_ERR_INVALID_ARG,
                           "cdsm_free(%p): private allocation of rank %llu; only its owner may free it", ptr,
                           (unsigned long long)((off - common.end) / own_size));
    int rc = arena_free(a, off);
    if (rc == CDSM_ERR_INVALID_ARG)
        return cdsm__error(rc, "cdsm_free(%p): not the start of a live allocation", ptr);
    if (rc) return cdsm__error(rc, "cdsm_free(%p): allocator metadata", ptr);
    return CDSM_OK;
}
