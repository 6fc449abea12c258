/* Replies waiting for the application thread, and the loss of a rank for good
 * (internal, protocol). */
#ifndef CDSM_REPLY_H
#define CDSM_REPLY_H

#include <stdint.h>

#include "msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cdsm__reply {
    struct cdsm__reply *next;
    cdsm__msg_hdr_t hdr;
    uint8_t *payload;
} cdsm__reply_t;

/* Wait (releasing mu) for a reply of the given type and tag; caller holds mu. Returns
 * NULL when a rank was lost for good (no reply may ever come). */
cdsm__reply_t *cdsm__wait_reply(int type, uint64_t tag);
/* The same, giving up after about timeout_ms (0: never) with *timed_out set. */
cdsm__reply_t *cdsm__wait_reply_for(int type, uint64_t tag, uint64_t timeout_ms, int *timed_out);
void cdsm__reply_free(cdsm__reply_t *r);
/* Queue a received reply for the waiting application thread (caller holds mu). */
void cdsm__reply_queue(const cdsm__msg_hdr_t *h, uint8_t *buf);

/* A rank is lost for good (no spare takes its place): remember the first one, log it
 * once and wake every waiting thread. Any thread, without mu. */
void cdsm__peer_lost(int rank, const char *why);
/* The first rank lost for good, or -1. */
int cdsm__lost(void);

#ifdef __cplusplus
}
#endif
#endif
