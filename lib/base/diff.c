/* Diff encode/apply: word granularity, exact runs. */
#include "diff.h"

#include <string.h>

size_t cdsm__diff_max(size_t size)
{
    size_t words = size / 4;
    return ((words + 1) / 2) * (sizeof(cdsm__diff_run_t) + 4) + sizeof(cdsm__diff_run_t);
}

size_t cdsm__diff_encode(const void *page, const void *twin, size_t size, uint8_t *out)
{
    const uint32_t *p = page, *t = twin;
    size_t n = size / 4, i = 0, len = 0;
    while (i < n) {
        /* Skip equal regions 8 bytes at a time where aligned: most of a page is unchanged. */
        while (i + 2 <= n && !(i & 1)) {
            uint64_t a, b;
            memcpy(&a, p + i, 8);
            memcpy(&b, t + i, 8);
            if (a != b) break;
            i += 2;
        }
        while (i < n && p[i] == t[i]) i++;
        if (i >= n) break;
        size_t start = i;
        while (i < n && p[i] != t[i]) i++;
        cdsm__diff_run_t run = {(uint32_t)start, (uint32_t)(i - start)};
        memcpy(out + len, &run, sizeof run);
        len += sizeof run;
        memcpy(out + len, p + start, cdsm__u32s(i - start));
        len += cdsm__u32s(i - start);
    }
    return len;
}

static int walk(void *page, size_t size, const uint8_t *diff, size_t len, long *words)
{
    size_t pos = 0, n = size / 4;
    long total = 0;
    while (pos < len) {
        cdsm__diff_run_t run;
        if (len - pos < sizeof run) return -1;
        memcpy(&run, diff + pos, sizeof run);
        pos += sizeof run;
        if (run.nwords == 0 || run.offset >= n || run.nwords > n - run.offset) return -1;
        if ((len - pos) / 4 < run.nwords) return -1;
        if (page) memcpy((uint32_t *)page + run.offset, diff + pos, cdsm__u32s((size_t)run.nwords));
        pos += cdsm__u32s((size_t)run.nwords);
        total += run.nwords;
    }
    if (words) *words = total;
    return 0;
}

int cdsm__diff_apply(void *page, size_t size, const uint8_t *diff, size_t len)
{
    /* Validate first so a malformed diff leaves the page untouched. */
    if (walk(NULL, size, diff, len, NULL)) return -1;
    return walk(page, size, diff, len, NULL);
}

long cdsm__diff_words(const uint8_t *diff, size_t len)
{
    long w;
    /* Page size is unknown here: validate against the largest page. */
    if (walk(NULL, (size_t)1 << 30, diff, len, &w)) return -1;
    return w;
}
