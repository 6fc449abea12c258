/* Vector clock operations. */
#include "vclock.h"

cdsm__vc_order_t cdsm__vc_compare(const uint32_t *a, const uint32_t *b, int n)
{
    int less = 0, greater = 0;
    for (int i = 0; i < n; i++) {
        if (a[i] < b[i]) less = 1;
        else if (a[i] > b[i]) greater = 1;
    }
    if (less && greater) return CDSM_VC_CONCURRENT;
    if (less) return CDSM_VC_BEFORE;
    if (greater) return CDSM_VC_AFTER;
    return CDSM_VC_EQUAL;
}

void cdsm__vc_merge(uint32_t *dst, const uint32_t *src, int n)
{
    for (int i = 0; i < n; i++)
        if (src[i] > dst[i]) dst[i] = src[i];
}

int cdsm__vc_leq(const uint32_t *a, const uint32_t *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i] > b[i]) return 0;
    return 1;
}

uint64_t cdsm__vc_sum(const uint32_t *a, int n)
{
    uint64_t s = 0;
    for (int i = 0; i < n; i++) s += a[i];
    return s;
}
