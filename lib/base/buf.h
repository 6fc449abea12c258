/* Growable byte buffers for outgoing messages and bounds-checked readers for incoming
 * ones (internal, every floor). */
#ifndef CDSM_BUF_H
#define CDSM_BUF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define CDSM__STATIC_ASSERT(c, m) static_assert(c, m)
extern "C" {
#else
#define CDSM__STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

typedef struct cdsm__buf {
    uint8_t *p;
    size_t len, cap;
} cdsm__buf_t;

void cdsm__buf_reserve(cdsm__buf_t *b, size_t extra);
void cdsm__buf_put(cdsm__buf_t *b, const void *src, size_t n);
void cdsm__buf_put_u32(cdsm__buf_t *b, uint32_t v);
void cdsm__buf_free(cdsm__buf_t *b);

/* A cursor over a received payload; every read is bounds-checked. */
typedef struct cdsm__rd {
    const uint8_t *p;
    size_t len, pos;
    int bad; /* set when a read ran past the end */
} cdsm__rd_t;

const void *cdsm__rd_take(cdsm__rd_t *r, size_t n);
uint32_t cdsm__rd_u32(cdsm__rd_t *r);
uint64_t cdsm__rd_u64(cdsm__rd_t *r);

/* Bytes of a vector of n 32-bit entries (vector clocks, per-rank counts) on the wire. */
static inline size_t cdsm__u32s(size_t n)
{
    return n * sizeof(uint32_t);
}

#ifdef __cplusplus
}
#endif
#endif
