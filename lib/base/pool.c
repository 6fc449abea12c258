/* Recycled buffers for twins and diffs: size classes, free lists, slabs kept until fini. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

/* Four classes per power of two from 64 B (a class wastes at most a fifth), up to
 * CDSM_POOL_MAX; blocks are carved from slabs of SLAB bytes (or one block, if larger). */
enum { MIN_SHIFT = 6, MAX_SHIFT = 17, SUB = 4, NCLASS = (MAX_SHIFT - MIN_SHIFT) * SUB + 1, SLAB = 1 << 20 };

typedef struct block {
    struct block *next;
} block_t;

typedef struct slab {
    struct slab *next;
    size_t size;
    char *top, *end; /* not yet carved */
} slab_t;

static struct {
    pthread_mutex_t mu;
    block_t *free[NCLASS];
    slab_t *slabs;
    uint64_t bytes;
} P = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The class of n bytes (64 < n <= CDSM_POOL_MAX) and its block size. */
static unsigned class_of(size_t n, size_t *size)
{
    if (n <= ((size_t)1 << MIN_SHIFT)) {
        *size = (size_t)1 << MIN_SHIFT;
        return 0;
    }
    unsigned k = (unsigned)(63 - __builtin_clzll((unsigned long long)(n - 1))); /* 2^k < n <= 2^(k+1) */
    size_t step = ((size_t)1 << k) / SUB, sub = (n - ((size_t)1 << k) + step - 1) / step; /* 1..SUB */
    *size = ((size_t)1 << k) + sub * step;
    return (k - MIN_SHIFT) * SUB + (unsigned)sub;
}

/* Carve a block of size bytes from the current slab, or a new one. Caller holds P.mu. */
static void *carve(size_t size)
{
    slab_t *s = P.slabs;
    if (!s || (size_t)(s->end - s->top) < size) {
        size_t want = sizeof *s + (size > SLAB ? size : SLAB);
        s = malloc(want + 64);
        if (!s) return NULL;
        s->size = want;
        s->top = (char *)(((uintptr_t)(s + 1) + 63) & ~(uintptr_t)63); /* cache-line aligned blocks */
        s->end = (char *)s + want + 64;
        s->next = P.slabs;
        P.slabs = s;
        P.bytes += want;
    }
    void *p = s->top;
    s->top += size;
    return p;
}

void *cdsm__pool_alloc(size_t n)
{
    if (n > CDSM_POOL_MAX) return malloc(n);
    size_t size;
    unsigned c = class_of(n, &size);
    pthread_mutex_lock(&P.mu);
    block_t *b = P.free[c];
    void *p;
    if (b) {
        P.free[c] = b->next;
        p = b;
    } else {
        p = carve(size);
    }
    pthread_mutex_unlock(&P.mu);
    return p;
}

void cdsm__pool_free(void *p, size_t n)
{
    if (!p) return;
    if (n > CDSM_POOL_MAX) {
        free(p);
        return;
    }
    size_t size;
    unsigned c = class_of(n, &size);
    block_t *b = p;
    pthread_mutex_lock(&P.mu);
    b->next = P.free[c];
    P.free[c] = b;
    pthread_mutex_unlock(&P.mu);
}

uint64_t cdsm__pool_bytes(void)
{
    pthread_mutex_lock(&P.mu);
    uint64_t b = P.bytes;
    pthread_mutex_unlock(&P.mu);
    return b;
}

void cdsm__pool_fini(void)
{
    pthread_mutex_lock(&P.mu);
    while (P.slabs) {
        slab_t *s = P.slabs;
        P.slabs = s->next;
        free(s);
    }
    for (unsigned c = 0; c < NCLASS; c++) P.free[c] = NULL;
    P.bytes = 0;
    pthread_mutex_unlock(&P.mu);
}
