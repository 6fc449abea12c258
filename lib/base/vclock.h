/* Vector clocks: one interval counter per rank (internal). */
#ifndef CDSM_VCLOCK_H
#define CDSM_VCLOCK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CDSM_VC_EQUAL, CDSM_VC_BEFORE, CDSM_VC_AFTER, CDSM_VC_CONCURRENT } cdsm__vc_order_t;

/* Order of a relative to b: BEFORE means a happened before b (a <= b, a != b). */
cdsm__vc_order_t cdsm__vc_compare(const uint32_t *a, const uint32_t *b, int n);

/* dst[i] = max(dst[i], src[i]). */
void cdsm__vc_merge(uint32_t *dst, const uint32_t *src, int n);

/* 1 if a[i] <= b[i] for every i. */
int cdsm__vc_leq(const uint32_t *a, const uint32_t *b, int n);

/* Sum of entries: a linear extension of happened-before (a before b implies sum a < sum b). */
uint64_t cdsm__vc_sum(const uint32_t *a, int n);

#ifdef __cplusplus
}
#endif
#endif
