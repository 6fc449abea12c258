/* Recycled buffers for twins and diffs (internal, every floor).
 *
 * A run makes and drops thousands of page-sized buffers per barrier. Through malloc, glibc
 * gives the memory back to the kernel when a collection frees it (heap top trimmed, large
 * blocks unmapped) and takes it again at the next interval, and the kernel zeroes every
 * page it hands back: measured, more than half of a one-rank SOR run. The pool keeps freed
 * blocks on free lists by size class and reuses them; its slabs go back only at
 * cdsm__pool_fini. Blocks are freed with the size they were asked with. Thread-safe. */
#ifndef CDSM_POOL_H
#define CDSM_POOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* n bytes (NULL when memory is exhausted); blocks above CDSM_POOL_MAX come from malloc. */
void *cdsm__pool_alloc(size_t n);
/* Give back a block of n bytes (the n it was allocated with); NULL is ignored. */
void cdsm__pool_free(void *p, size_t n);
/* Bytes held in slabs (in use and free), for the counters. */
uint64_t cdsm__pool_bytes(void);
/* Return every slab (no block may be in use). */
void cdsm__pool_fini(void);

enum { CDSM_POOL_MAX = 1 << 17 };

#ifdef __cplusplus
}
#endif
#endif
