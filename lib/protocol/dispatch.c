/* Dispatch of received messages: requests are served at once under the protocol lock;
 * replies are queued for the application thread that waits on them; fault tolerance's
 * own requests go to its hook. */
#include <stdlib.h>

#include "proto.h"

void cdsm__dispatch(const cdsm__msg_hdr_t *h, uint8_t *buf)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__rd_t rd = {buf + sizeof *h, h->len, 0, 0};
    pthread_mutex_lock(&g->mu);
    if (cdsm__ft.hold_early(h, buf)) { /* a spare being set up: dispatched once it is ready */
        pthread_mutex_unlock(&g->mu);
        return;
    }
    /* Copies of determinants ride at the end of messages that carry causality: taken
     * before the message has any effect (a reply is parsed later, from its start). */
    if (cdsm__carries_causality(h->type) && cdsm__ft.trailer_take(h->src, &rd)) {
        pthread_mutex_unlock(&g->mu); /* (logged where it was found malformed) */
        free(buf);
        return;
    }
    switch (h->type) {
    case CDSM_MSG_LOCK_REQ: cdsm__lock_on_req(h, &rd); break;
    case CDSM_MSG_LOCK_FWD: cdsm__lock_on_fwd(h, &rd); break;
    case CDSM_MSG_DIFF_REQ: cdsm__serve_diffs(h, &rd); break;
    case CDSM_MSG_PAGE_REQ: cdsm__serve_page(h, &rd); break;
    case CDSM_MSG_BAR_ARRIVE: cdsm__bar_on_arrive(h, &rd); break;
    case CDSM_MSG_DIR_REQ: cdsm__own_on_dir_req(h, &rd); break;
    case CDSM_MSG_TAKEOVER:
    case CDSM_MSG_RETIRE:
    case CDSM_MSG_REPLAY_REQ:
    case CDSM_MSG_LK_FREEZE:
    case CDSM_MSG_LK_REBUILD:
    case CDSM_MSG_KNOW_REQ:
    case CDSM_MSG_REC_REQ: cdsm__ft.on_message(h, &rd); break;
    default: { /* a reply: the buffer now belongs to the queue (without the trailer) */
        cdsm__msg_hdr_t rh = *h;
        rh.len = (uint32_t)rd.len;
        cdsm__reply_queue(&rh, buf);
        pthread_mutex_unlock(&g->mu);
        return;
    }
    }
    pthread_mutex_unlock(&g->mu);
    free(buf);
}

static void deliver(const cdsm__msg_hdr_t *h, uint8_t *buf)
{
    cdsm__dispatch(h, buf);
}

void cdsm__proto_events(cdsm__tp_events_t *ev)
{
    ev->deliver = deliver;
    /* Requests kept for a resend until their reply comes (a spare may take the
     * destination's place meanwhile). */
    ev->reply_of[CDSM_MSG_LOCK_REQ] = CDSM_MSG_LOCK_GRANT;
    ev->reply_of[CDSM_MSG_DIFF_REQ] = CDSM_MSG_DIFF_REP;
    ev->reply_of[CDSM_MSG_PAGE_REQ] = CDSM_MSG_PAGE_REP;
    ev->reply_of[CDSM_MSG_BAR_ARRIVE] = CDSM_MSG_BAR_RELEASE;
    ev->reply_of[CDSM_MSG_DIR_REQ] = CDSM_MSG_DIR_REP;
    /* Lock messages are counted per peer: a lock rebuild compares the counts. */
    for (int t = 1; t < CDSM_MSG_TYPES; t++) ev->counted[t] = (uint8_t)cdsm__is_lock_msg(t);
}
