/* Growable byte buffers for outgoing messages and bounds-checked readers for incoming. */
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

void cdsm__buf_reserve(cdsm__buf_t *b, size_t extra)
{
    if (b->len + extra <= b->cap) return;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + extra) nc *= 2;
    uint8_t *np = realloc(b->p, nc);
    /* Out of memory while building a protocol message cannot be unwound safely. */
    cdsm_check(np != NULL);
    b->p = np;
    b->cap = nc;
}

void cdsm__buf_put(cdsm__buf_t *b, const void *src, size_t n)
{
    cdsm__buf_reserve(b, n);
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}

void cdsm__buf_put_u32(cdsm__buf_t *b, uint32_t v)
{
    cdsm__buf_put(b, &v, sizeof v);
}

void cdsm__buf_free(cdsm__buf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

const void *cdsm__rd_take(cdsm__rd_t *r, size_t n)
{
    if (r->bad || r->len - r->pos < n) {
        r->bad = 1;
        return NULL;
    }
    const void *p = r->p + r->pos;
    r->pos += n;
    return p;
}

uint32_t cdsm__rd_u32(cdsm__rd_t *r)
{
    uint32_t v = 0;
    const void *p = cdsm__rd_take(r, sizeof v);
    if (p) memcpy(&v, p, sizeof v);
    return v;
}

uint64_t cdsm__rd_u64(cdsm__rd_t *r)
{
    uint64_t v = 0;
    const void *p = cdsm__rd_take(r, sizeof v);
    if (p) memcpy(&v, p, sizeof v);
    return v;
}
