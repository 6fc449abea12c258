/* Diff encode/apply: runs of changed words, exact to the byte (diff.h). */
#include "diff.h"

#include <string.h>

size_t cdsm__diff_max(size_t size)
{
    /* Worst case: every other word changed in part (a run of one word with its mask). */
    size_t words = size / 4;
    return ((words + 1) / 2) * (sizeof(cdsm__diff_run_t) + 4 + 1) + sizeof(cdsm__diff_run_t);
}

static size_t mask_bytes(size_t words)
{
    return (words + 1) / 2;
}

/* Which bytes of a word differ, from x = page ^ twin: bit b for the word's byte b in
 * memory. (Each byte folded onto its lowest bit: no loop, no branch.) */
static uint8_t byte_mask(uint32_t x)
{
    uint32_t t = x | x >> 1;
    t |= t >> 2;
    t |= t >> 4;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (uint8_t)((t >> 24 & 1) | (t >> 15 & 2) | (t >> 6 & 4) | (t << 3 & 8));
#else
    return (uint8_t)((t & 1) | (t >> 7 & 2) | (t >> 14 & 4) | (t >> 21 & 8));
#endif
}

/* Nonzero when some byte of x is zero: a changed word that changed only in part (exact
 * whether any byte is zero, in any byte order). */
static uint32_t partial_word(uint32_t x)
{
    return (x - 0x01010101u) & ~x & 0x80808080u;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define DIFF_LE 1
#else
#define DIFF_LE 0
#endif

/* Little-endian: two words at a time. The masks of words j and j+1 of a run are one byte
 * (the first word's in the low half), which is the byte mask of their 8 bytes. Keys and
 * indices rewritten whole (radix, is) change nearly every word of a page with some byte
 * unchanged by chance, so their runs are masked: the word-at-a-time loops took 2.1 us to
 * encode such a page and as long to apply it. */
static uint8_t byte_mask8(uint64_t x)
{
    uint64_t t = x | x >> 1;
    t |= t >> 2;
    t |= t >> 4;
    return (uint8_t)(((t & 0x0101010101010101ull) * 0x0102040810204080ull) >> 56);
}

static uint64_t load8(const uint32_t *w)
{
    uint64_t v;
    memcpy(&v, w, 8);
    return v;
}

/* The run of changed words from i: its end, and whether a word changed in part. */
static size_t run_end(const uint32_t *p, const uint32_t *t, size_t i, size_t n, uint32_t *partial)
{
    uint64_t part = 0;
    for (;;) {
        if (DIFF_LE && i + 2 <= n) {
            uint64_t x = load8(p + i) ^ load8(t + i);
            if ((uint32_t)x && (uint32_t)(x >> 32)) {
                part |= (x - 0x0101010101010101ull) & ~x & 0x8080808080808080ull;
                i += 2;
                continue;
            }
        }
        if (i >= n || p[i] == t[i]) break;
        part |= partial_word(p[i] ^ t[i]);
        i++;
    }
    *partial = part != 0;
    return i;
}

static void put_masks(uint8_t *m, const uint32_t *p, const uint32_t *t, size_t k)
{
    size_t j = 0;
    memset(m, 0, mask_bytes(k));
    if (DIFF_LE)
        for (; j + 2 <= k; j += 2) m[j / 2] = byte_mask8(load8(p + j) ^ load8(t + j));
    for (; j < k; j++) m[j / 2] |= (uint8_t)(byte_mask(p[j] ^ t[j]) << (j & 1) * 4);
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
        uint32_t partial;
        i = run_end(p, t, i, n, &partial);
        size_t k = i - start;
        cdsm__diff_run_t run = {(uint32_t)start, (uint32_t)k | (partial ? CDSM_DIFF_MASKED : 0)};
        memcpy(out + len, &run, sizeof run);
        len += sizeof run;
        if (partial) { /* two masks a byte, the first word's in the low half */
            put_masks(out + len, p + start, t + start, k);
            len += mask_bytes(k);
        }
        memcpy(out + len, p + start, cdsm__u32s(k));
        len += cdsm__u32s(k);
    }
    return len;
}

/* A mask's bytes as a word (bit b: memory byte b), to blend with no branch. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define B(m, b) (((m) >> (b) & 1u) ? 0xffu << (24 - 8 * (b)) : 0u)
#else
#define B(m, b) (((m) >> (b) & 1u) ? 0xffu << (8 * (b)) : 0u)
#endif
#define E(m) (B(m, 0) | B(m, 1) | B(m, 2) | B(m, 3))
static const uint32_t expand[16] = {E(0), E(1), E(2),  E(3),  E(4),  E(5),  E(6),  E(7),
                                    E(8), E(9), E(10), E(11), E(12), E(13), E(14), E(15)};

static uint8_t mask_at(const uint8_t *masks, size_t j)
{
    return (uint8_t)(masks[j / 2] >> (j & 1) * 4 & 0xf);
}

/* A mask byte (two words' masks) as 8 bytes to blend, for the little-endian path. */
#define M8(m) ((uint64_t)E((m)&15) | (uint64_t)E((m) >> 4) << 32)
#define M8x4(b) M8(b), M8((b) + 1), M8((b) + 2), M8((b) + 3)
#define M8x16(b) M8x4(b), M8x4((b) + 4), M8x4((b) + 8), M8x4((b) + 12)
#define M8x64(b) M8x16(b), M8x16((b) + 16), M8x16((b) + 32), M8x16((b) + 48)
static const uint64_t expand8[256] = {M8x64(0), M8x64(64), M8x64(128), M8x64(192)};

/* Write the bytes of k words that their masks name. */
static void put_masked(uint8_t *dst, const uint8_t *src, const uint8_t *masks, size_t k)
{
    size_t j = 0;
    if (DIFF_LE)
        for (; j + 2 <= k; j += 2) {
            uint64_t d, v, m = expand8[masks[j / 2]];
            memcpy(&d, dst + 4 * j, 8);
            memcpy(&v, src + 4 * j, 8);
            d = (d & ~m) | (v & m);
            memcpy(dst + 4 * j, &d, 8);
        }
    for (; j < k; j++) {
        uint32_t d, v, m = expand[mask_at(masks, j)];
        memcpy(&d, dst + 4 * j, 4);
        memcpy(&v, src + 4 * j, 4);
        d = (d & ~m) | (v & m);
        memcpy(dst + 4 * j, &d, 4);
    }
}

/* Every word of a masked run names a byte (a word in a run changed). */
static int masks_valid(const uint8_t *mask, size_t k)
{
    size_t j = 0;
    for (; j + 2 <= k; j += 2)
        if (!(mask[j / 2] & 0x0f) || !(mask[j / 2] & 0xf0)) return 0;
    return j == k || ((mask[j / 2] & 0x0f) && !(mask[j / 2] >> 4));
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
        int masked = (run.nwords & CDSM_DIFF_MASKED) != 0;
        size_t k = run.nwords & ~CDSM_DIFF_MASKED;
        if (k == 0 || run.offset >= n || k > n - run.offset) return -1;
        size_t mb = masked ? mask_bytes(k) : 0;
        if (len - pos < mb || (len - pos - mb) / 4 < k) return -1;
        const uint8_t *mask = masked ? diff + pos : NULL, *data = diff + pos + mb;
        if (mask && !masks_valid(mask, k)) return -1;
        uint8_t *dst = page ? (uint8_t *)page + (size_t)run.offset * 4 : NULL;
        if (dst && !mask) memcpy(dst, data, cdsm__u32s(k));
        if (dst && mask) put_masked(dst, data, mask, k);
        pos += mb + cdsm__u32s(k);
        total += (long)k;
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
