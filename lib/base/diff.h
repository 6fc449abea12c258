/* Run-length diffs between a page and its twin (internal), exact to the byte.
 *
 * Encoding: a sequence of runs of changed words, each a cdsm__diff_run_t header followed by
 * its words. Only words that differ are included: runs are never merged across unchanged
 * words, because another writer may have changed those words concurrently. For the same
 * reason a run with a word that changed only in part (CDSM_DIFF_MASKED in nwords) carries
 * a 4-bit mask per word (bit b: the word's byte b in memory changed; two a byte, the
 * first word's in the low half) before its words,
 * and applying it writes only those bytes: two workers writing adjacent bytes of one word
 * (VOLREND's 8-bit pixels, adjacent char flags) both keep their writes. Runs whose words
 * changed whole (most: a changed double or int) cost no mask. */
#ifndef CDSM_DIFF_H
#define CDSM_DIFF_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cdsm__diff_run {
    uint32_t offset; /* in 32-bit words from the start of the page */
    uint32_t nwords; /* words in the run, | CDSM_DIFF_MASKED when masks follow */
} cdsm__diff_run_t;
#define CDSM_DIFF_MASKED 0x80000000u
CDSM__STATIC_ASSERT(sizeof(cdsm__diff_run_t) == 8, "diff run header is a wire format");

/* Largest possible encoding of a page of `size` bytes (every other word changed in part). */
size_t cdsm__diff_max(size_t size);

/* Encode the words where page differs from twin into out (capacity >= cdsm__diff_max).
 * size must be a multiple of 4. Returns the encoded length (0: no change). */
size_t cdsm__diff_encode(const void *page, const void *twin, size_t size, uint8_t *out);

/* Apply an encoded diff to page. Returns 0, or -1 if the diff is malformed or runs past
 * the page (nothing is written past the page in any case). */
int cdsm__diff_apply(void *page, size_t size, const uint8_t *diff, size_t len);

/* Number of words a diff changes, or -1 if malformed. */
long cdsm__diff_words(const uint8_t *diff, size_t len);

#ifdef __cplusplus
}
#endif
#endif
