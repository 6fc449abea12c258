/* Dispatch of received messages on the service thread: requests are served at once under
 * the protocol lock; replies are queued for the application thread that waits on them. */
#include <stdlib.h>

#include "internal.h"
#include "recovery.h"

void cdsm__dispatch(const cdsm__msg_hdr_t *h, uint8_t *buf)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__rd_t rd = {buf + sizeof *h, h->len, 0, 0};
    pthread_mutex_lock(&g->mu);
    if (cdsm__hold_early(h, buf)) { /* a spare being set up: dispatched once it is ready */
        pthread_mutex_unlock(&g->mu);
        return;
    }
    switch (h->type) {
    case CDSM_MSG_TAKEOVER: cdsm__on_takeover(h, &rd); break;
    case CDSM_MSG_RETIRE: cdsm__on_retire(h, &rd); break;
    case CDSM_MSG_REPLAY_REQ: cdsm__serve_replay(h, &rd); break;
    case CDSM_MSG_LOCK_REQ: cdsm__lock_on_req(h, &rd); break;
    case CDSM_MSG_LOCK_FWD: cdsm__lock_on_fwd(h, &rd); break;
    case CDSM_MSG_LK_FREEZE: cdsm__lk_on_freeze(h, &rd); break;
    case CDSM_MSG_LK_REBUILD: cdsm__lk_on_rebuild(h, &rd); break;
    case CDSM_MSG_KNOW_REQ: cdsm__serve_know(h, &rd); break;
    case CDSM_MSG_DIFF_REQ: cdsm__serve_diffs(h, &rd); break;
    case CDSM_MSG_PAGE_REQ: cdsm__serve_page(h, &rd); break;
    case CDSM_MSG_BAR_ARRIVE: cdsm__bar_on_arrive(h, &rd); break;
    default: {
        /* A reply: queue it, in arrival order, for the waiting application thread. */
        cdsm__reply_t *r = malloc(sizeof *r), **pp = &g->replies;
        cdsm_check(r != NULL);
        r->next = NULL;
        r->hdr = *h;
        r->payload = buf + sizeof *h;
        while (*pp) pp = &(*pp)->next;
        *pp = r;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        return;
    }
    }
    pthread_mutex_unlock(&g->mu);
    free(buf);
}
