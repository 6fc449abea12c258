/* Locks: a distributed queue per lock, the token at the last releaser (internal, protocol). */
#ifndef CDSM_LOCK_H
#define CDSM_LOCK_H

#include <stdint.h>

#include "buf.h"
#include "reply.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CDSM_LK_NONE = 0, CDSM_LK_TOKEN, CDSM_LK_HELD, CDSM_LK_WAITING };

typedef struct cdsm__lock {
    uint8_t state;
    uint8_t eager;     /* its last grant named a page we had just written: close before asking */
    uint8_t hand;      /* 0..3: after our releases the token went to another process (up) or
                        * came back to us (down; to 0 after a published release): from 2 a
                        * release is published (lockwords.c) */
    uint8_t published; /* our last release was published */
    uint8_t ready;     /* set to its initial state (cdsm__lock_entry) */
    int32_t tail;      /* manager only: last requester (token goes there next) */
    int32_t next;      /* successor waiting for our release, or -1 */
    uint32_t *next_vc; /* successor's vector clock (n entries) */
    uint32_t next_seq; /* successor's synchronisation number (causal logging) */
    uint32_t req_seq;  /* WAITING: the synchronisation number of our acquire */
    int32_t last_to;   /* the last rank we granted this lock to, or -1 (recovery) */
    uint32_t last_to_seq; /* and its acquire's synchronisation number */
} cdsm__lock_t;

typedef struct cdsm__locks {
    cdsm__lock_t *locks; /* zero until an entry is first used (cdsm__lock_entry) */
    uint32_t nlocks;
    int any_vc;          /* some entry holds a successor's clock (freed at the end) */
    int frozen; /* a lock rebuild is under way: requests and forwards wait */
} cdsm__locks_t;

extern cdsm__locks_t cdsm__lk;

int cdsm__locks_init(void);
void cdsm__locks_fini(void);

/* Entry l of the lock table, set to its initial state at its first use: writing all of
 * CDSM_LOCKS (65536) entries at start-up cost every process 2.6 MB of page faults, and
 * a program uses a few of them (DESIGN, "Start-up"). Caller holds mu. */
void cdsm__lock_fresh(cdsm__lock_t *lk, uint32_t l);
static inline cdsm__lock_t *cdsm__lock_entry(uint32_t l)
{
    cdsm__lock_t *lk = &cdsm__lk.locks[l];
    if (__builtin_expect(!lk->ready, 0)) cdsm__lock_fresh(lk, l);
    return lk;
}
void cdsm__lock_on_req(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
void cdsm__lock_on_fwd(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
/* grant_diffs.c: the granter's own diffs that go with a grant (to_vc: the acquirer's
 * clock, vc: the granter's), and the acquirer's side, which applies those that bring a
 * page fully up to date (src: the granter). Caller holds mu. */
int cdsm__grant_diffs_on(void);
/* The diff part's one encoder (a grant's, and a published release's take from the
 * boards): open it, add diffs while CDSM_GRANT_DIFFS bytes allow (1: added), close it.
 * It covers the granter's CDSM_GRANT_INTERVALS newest intervals. */
#define CDSM_GRANT_INTERVALS 8
typedef struct cdsm__gd_enc {
    size_t at, budget;
    uint32_t count;
} cdsm__gd_enc_t;
void cdsm__gd_begin(cdsm__buf_t *b, cdsm__gd_enc_t *e);
int cdsm__gd_add(cdsm__buf_t *b, cdsm__gd_enc_t *e, uint32_t idx, uint32_t pg, const void *data, uint32_t len);
void cdsm__gd_end(cdsm__buf_t *b, const cdsm__gd_enc_t *e);
void cdsm__grant_put_diffs(cdsm__buf_t *b, const uint32_t *to_vc, const uint32_t *vc);
int cdsm__grant_take_diffs(cdsm__rd_t *r, int src);
/* Build and send a grant of lock l to `to` for its acquire to_seq (vc: the granter's). */
int cdsm__lock_grant_msg(uint32_t l, int to, uint32_t to_seq, uint32_t grant_seq, const uint32_t *vc,
                         const uint32_t *to_vc);
/* The link to the unread grant of lock l for our acquire seq in the reply queue, or NULL.
 * Caller holds mu. */
cdsm__reply_t **cdsm__lock_unread_grant(uint32_t l, uint32_t seq);
/* Recovery: a rebuild placed (requester, seq) in lock l's queue; later copies are dropped. */
void cdsm__lock_placed(uint32_t l, int requester, uint32_t seq);
/* The granter's vector clock in a grant not read yet, or NULL (not a well-formed grant). */
const uint32_t *cdsm__lock_grant_vc(const cdsm__reply_t *r);
/* Recovery: requester (acquire seq, vector clock vc) comes after us in lock l's queue. */
void cdsm__lock_link(uint32_t l, int requester, const uint32_t *vc, uint32_t seq);
/* Requests and forwards kept while a replay or rebuild runs: visit; do them now. */
void cdsm__lock_waiting_foreach(void (*fn)(int type, uint32_t l, int req, uint32_t seq, void *arg), void *arg);
void cdsm__lock_resume(void);
/* Fault tolerance reads lock l, and sets what a replay, a rebuild or a restored checkpoint
 * decided: its state, its queue's tail (manager), a rebuild under way (requests and
 * forwards wait). Caller holds mu. */
const cdsm__lock_t *cdsm__lock_get(uint32_t l);
/* lockwords.c: shared lock words (node-mates, no spares; DESIGN, "Shared lock words").
 * Caller holds mu. Whether lock l's queue tail is in shared memory here; make `requester`
 * the tail, returning the previous one (in the manager's lock table where not shared);
 * take our cached token's word back (0: a node-mate took it); our word says the token is
 * in use or leaving; a release with nobody waiting caches it (takeable after the next
 * barrier) or, with `publish` (after closing the interval: cdsm__lw_can_publish),
 * publishes our clock for a take now. */
int cdsm__lw_tail_shared(uint32_t l);
int cdsm__lw_swap_tail(uint32_t l, int requester);
int cdsm__lw_keep_token(uint32_t l);
void cdsm__lw_busy(uint32_t l);
int cdsm__lw_can_publish(void);
void cdsm__lw_release(uint32_t l, int publish);
/* After becoming the tail behind `prev`: whether we took its token, and how. With
 * RECORDS, t holds the records (t->nrec) and diff part to take as a grant's, and t->vc
 * (n entries, malloc'd; the caller frees t->b and t->vc) the holder's clock at its
 * release. */
enum { LW_TOOK_NOT = 0, LW_TOOK_FRESH = 1, LW_TOOK_OLD = 2, LW_TOOK_RECORDS = 3 };
typedef struct cdsm__lw_taken {
    int kind, prev; /* LW_TOOK_*, and from whom (the caller's) */
    cdsm__buf_t b;
    uint32_t nrec;
    uint32_t *vc;
} cdsm__lw_taken_t;
int cdsm__lw_take(uint32_t l, int prev, cdsm__lw_taken_t *t);
/* Lock l's state here, a cached token a node-mate took counted as gone (checkpoints). */
uint8_t cdsm__lock_state(uint32_t l);
/* The tail of the queue of lock l, which this rank manages (checkpoints). After lock
 * states and tails were restored from a checkpoint: our shared lock words follow them. */
int cdsm__lock_tail(uint32_t l);
void cdsm__lock_words_restored(void);
void cdsm__lock_set_state(uint32_t l, int state);
void cdsm__lock_set_waiting(uint32_t l, uint32_t seq);
void cdsm__lock_set_tail(uint32_t l, int tail);
void cdsm__lock_freeze(int on);

#ifdef __cplusplus
}
#endif
#endif
