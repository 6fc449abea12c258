/* The protocol's messages: types, and the wire formats shared by several modules
 * (internal). Each message type has one encoder and one decoder, in the module that
 * owns it. */
#ifndef CDSM_MSG_H
#define CDSM_MSG_H

#include <stdint.h>

#include "transport.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CDSM_MSG_LOCK_REQ = 1, /* acquirer -> manager: lock, requester, vc */
    CDSM_MSG_LOCK_FWD,     /* manager -> last requester: same payload */
    CDSM_MSG_LOCK_GRANT,   /* token holder -> acquirer: lock, vc, interval records */
    CDSM_MSG_DIFF_REQ,     /* faulting rank -> writer: page, intervals */
    CDSM_MSG_DIFF_REP,     /* writer -> faulting rank: diffs */
    CDSM_MSG_PAGE_REQ,     /* faulting rank -> copy holder: page */
    CDSM_MSG_PAGE_REP,     /* holder -> faulting rank: applied vector, page bytes */
    CDSM_MSG_BAR_ARRIVE,   /* rank -> barrier manager: vc, records, stats, check value */
    CDSM_MSG_BAR_RELEASE,  /* manager -> rank: vc, records, flags, stats sum */
    CDSM_MSG_TAKEOVER,     /* leader -> every process: the rank map (a spare named in it takes over) */
    CDSM_MSG_REPLAY_REQ,   /* replacement -> survivor: what replaying rank r needs */
    CDSM_MSG_REPLAY_REP,   /* survivor -> replacement: barrier log, own records, epochs */
    CDSM_MSG_RETIRE,       /* rank 0 -> unused spare at the end: finish */
    CDSM_MSG_LK_FREEZE,    /* replacement -> survivor: stop linking lock queues, report them */
    CDSM_MSG_LK_STATE,     /* survivor -> replacement: lock states and lock message counts */
    CDSM_MSG_LK_REBUILD,   /* replacement -> survivor: the rebuilt queues; link again */
    CDSM_MSG_KNOW_REQ,     /* replacement -> survivor: how many intervals of mine do you know? */
    CDSM_MSG_KNOW_REP,     /* survivor -> replacement: that number (grants not yet read included) */
    CDSM_MSG_DIR_REQ,      /* first toucher -> directory rank: page (claim it, or who owns it?) */
    CDSM_MSG_DIR_REP,      /* directory rank -> first toucher: page, its owner */
    CDSM_MSG_REC_REQ,      /* replacement -> replacement lost with it: your records first..last */
    CDSM_MSG_REC_REP,      /* those records, once its replay has made them again */
    CDSM_MSG_TYPES
};
CDSM__STATIC_ASSERT((int)CDSM_MSG_TYPES <= (int)CDSM_TP_MAX_TYPES, "message types fit the transport's tables");

static inline int cdsm__is_lock_msg(int type)
{
    return type == CDSM_MSG_LOCK_REQ || type == CDSM_MSG_LOCK_FWD || type == CDSM_MSG_LOCK_GRANT;
}

/* Messages after which the receiver may depend on the sender's state (and a lock
 * rebuild's reports, which tell where each token is): they carry copies of determinants
 * when fault tolerance asks for them (ft_hooks.h, trailer_put). */
static inline int cdsm__carries_causality(int type)
{
    return cdsm__is_lock_msg(type) || type == CDSM_MSG_BAR_ARRIVE || type == CDSM_MSG_BAR_RELEASE ||
           type == CDSM_MSG_LK_STATE;
}

/* Interval record on the wire: header, then vc[n], then pages[npages]; with CDSM_IV_EMPTY
 * in flags, then u32 nempty and the pages (of pages[]) whose diffs are empty: listed only
 * because the interval converted them (home ownership), which a copy served at the
 * conversion holds already. */
#define CDSM_IV_EMPTY 1u
typedef struct cdsm__wire_iv {
    uint16_t rank;
    uint16_t flags;
    uint32_t idx;
    uint32_t npages;
} cdsm__wire_iv_t;
CDSM__STATIC_ASSERT(sizeof(cdsm__wire_iv_t) == 12, "interval record header is a wire format");

/* Barrier flags in a release. */
enum { CDSM_BAR_GC = 1, CDSM_BAR_MISMATCH = 2, CDSM_BAR_DETLOST = 4, CDSM_BAR_DIED = 8 };
/* Barrier kinds in an arrival. */
enum { CDSM_BAR_PLAIN = 0, CDSM_BAR_GC_DONE = 1, CDSM_BAR_FINAL = 2, CDSM_BAR_AUDIT = 3, CDSM_BAR_RESUME = 4 };
/* Bits above the kind in an arrival's kind word: the rank is in resume mode; its
 * checkpoint policy wants a checkpoint at this resume point; (a subtree's combined
 * arrival in the barrier tree) the check values of its ranks differ. */
enum { CDSM_BAR_KIND_MASK = 0xff, CDSM_BAR_IN_RESUME = 0x100, CDSM_BAR_WANT_CKPT = 0x200, CDSM_BAR_SUB_MISMATCH = 0x400 };

#ifdef __cplusplus
}
#endif
#endif
