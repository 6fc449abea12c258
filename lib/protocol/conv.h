/* Conversions under home ownership (internal, protocol): when a page left its home's
 * exclusive ownership, and the base copy a replay of any reader starts from. */
#ifndef CDSM_CONV_H
#define CDSM_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The home converted pg now (it serves a copy, or a replay reaches the point where the
 * lost process did): records this synchronisation number and the base; returns the number. */
uint32_t cdsm__conv_served(uint32_t pg);
/* A reader learned that `home` converted pg at synchronisation seq. */
void cdsm__conv_learned(uint32_t pg, int home, uint32_t seq);
/* Replacement: conversions of its pages it must make again, (pg, seq) pairs (k of them). */
void cdsm__conv_due_add(const uint32_t *pairs, size_t k);
/* The home's conversion of pg: its synchronisation number (0 and NULLs when none), and
 * its base copy with the copy's applied vector. */
uint32_t cdsm__conv_base(uint32_t pg, const void **bytes, const uint32_t **applied);
/* REPLAY_REQ: the conversions of `home`'s pages this rank knows: u32 count, (pg, seq)... */
void cdsm__conv_put_for(cdsm__buf_t *b, int home);
/* The replacement of this rank: conversions the survivors reported (as put above), to be
 * made again when the synchronisation number reaches them. */
int cdsm__conv_take_due(cdsm__rd_t *rd);
/* The replacement of a rank lost with its readers (a node): the first interval of each of
 * its pages that its records, as the survivors hold them, list (u32 count, (pg, idx)...);
 * cdsm__conv_upto(next) converts those listed in intervals up to next that no reader
 * reported, at the start of the segment that the barrier which logged next ends. */
int cdsm__conv_take_listed(cdsm__rd_t *rd);
void cdsm__conv_upto(uint32_t next);
/* After each synchronisation operation (and after a checkpoint restore): make the due
 * conversions whose number is reached. */
void cdsm__conv_sync(void);
/* Checkpoint region CDSM_CONV_REGION: the table (bytes, writer, reader). */
size_t cdsm__conv_state_bytes(void);
void cdsm__conv_state_put(uint8_t *dst);
int cdsm__conv_state_take(const uint8_t *p, size_t n);
size_t cdsm__conv_count(void);
void cdsm__conv_fini(void);

#define CDSM_CONV_REGION "cdsm-conversions"

#ifdef __cplusplus
}
#endif
#endif
