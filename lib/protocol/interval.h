/* Intervals, write notices and their records (internal, protocol). */
#ifndef CDSM_INTERVAL_H
#define CDSM_INTERVAL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cdsm__diffrec {
    uint32_t len; /* encoded bytes (0: the interval wrote the page but changed nothing) */
    uint8_t data[];
} cdsm__diffrec_t;

/* One interval of one rank that wrote at least one page. Kept until garbage collection. */
typedef struct cdsm__interval {
    uint32_t idx;    /* the rank's interval number, from 1 */
    uint16_t rank;
    uint32_t npages;
    uint64_t vcsum;  /* sum of vc: orders diffs consistently with happened-before */
    uint32_t *vc;    /* vector timestamp when the interval closed (n entries) */
    uint32_t *pages; /* sorted page numbers written in the interval */
    cdsm__diffrec_t **diffs; /* own intervals only: diff per page, NULL until made (lazy) */
    uint32_t nempty;  /* of pages, those listed only because the interval converted them */
    uint32_t *empty;  /* (home ownership): their diffs are empty, sorted; NULL if none */
} cdsm__interval_t;

/* The interval records of one rank: v[k] has idx == base + 1 + k. */
typedef struct cdsm__ivlist {
    cdsm__interval_t **v;
    uint32_t base, count, cap;
} cdsm__ivlist_t;

/* A write notice on a page: the page was written in interval iv. */
typedef struct cdsm__notice {
    struct cdsm__notice *next;
    cdsm__interval_t *iv;
} cdsm__notice_t;

cdsm__interval_t *cdsm__iv_get(int rank, uint32_t idx);
cdsm__interval_t *cdsm__iv_new(int rank, uint32_t idx, const uint32_t *vc, uint32_t npages,
                               const uint32_t *pages, int own);
void cdsm__iv_append(cdsm__interval_t *iv);
void cdsm__iv_free(cdsm__interval_t *iv);
/* The one encoder of an interval record (cdsm__wire_iv_t, vc, pages; with flag
 * CDSM_IV_EMPTY in the header's pad, u32 nempty and the empty-diff pages). */
void cdsm__iv_serialize(cdsm__buf_t *b, const cdsm__interval_t *iv);
/* Bytes of the encoded record that starts at p (taken with cdsm__iv_take before). */
size_t cdsm__iv_wire_size(const uint8_t *p);
/* The one decoder of a record's fields: the header, or NULL when malformed (the record
 * is consumed); vc, pages and the empty-diff pages point into the reader's bytes. */
struct cdsm__wire_iv;
const struct cdsm__wire_iv *cdsm__iv_take(cdsm__rd_t *r, const uint32_t **vc, const uint32_t **pages,
                                          const uint32_t **empty, uint32_t *nempty);
/* Records this rank knows with idx > have[q]; returns how many were written. */
uint32_t cdsm__iv_serialize_newer(cdsm__buf_t *b, const uint32_t *have);
/* Those with have[q] < idx <= upto[q] (a grant carries what its vector clock covers). */
uint32_t cdsm__iv_serialize_between(cdsm__buf_t *b, const uint32_t *have, const uint32_t *upto);
/* The one decoder: parse nrec records, store the ones not yet known, post their notices
 * (invalidating pages) and return 0; CDSM_ERR_PROTOCOL on malformed input. */
int cdsm__iv_incorporate(cdsm__rd_t *r, uint32_t nrec);
/* Whether any of the next nrec records in r (not consumed: r is a copy) names a page of
 * the dirty set that cannot leave it (cdsm__dirty_yield), or one write-faulted in our
 * interval `recent` (0: none). */
int cdsm__iv_names_written(cdsm__rd_t r, uint32_t nrec, uint32_t recent);
/* How many records this rank has incorporated so far: if it has not changed, no other
 * rank's write has reached this rank's copies (the PARMACS layer's globals copy skips its
 * pull then). */
uint64_t cdsm__iv_incorporated(void);
size_t cdsm__iv_bytes(const cdsm__interval_t *iv);
int cdsm__iv_find_page(const cdsm__interval_t *iv, uint32_t pg);
/* The interval's empty-diff conversions (a sorted subset of its pages; -1 if not). */
int cdsm__iv_set_empty(cdsm__interval_t *iv, const uint32_t *empty, uint32_t nempty);
int cdsm__iv_is_empty(const cdsm__interval_t *iv, uint32_t pg); /* pg is one of them */

#ifdef __cplusplus
}
#endif
#endif
