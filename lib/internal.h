/* Internal state of libcdsm: one instance per process (never installed). */
#ifndef CDSM_INTERNAL_H
#define CDSM_INTERNAL_H

#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cdsm.h"
#include "config.h"
#include "diff.h"
#include "log.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- byte buffers for messages ---------------------------------------------------- */

typedef struct cdsm__buf {
    uint8_t *p;
    size_t len, cap;
} cdsm__buf_t;

void cdsm__buf_reserve(cdsm__buf_t *b, size_t extra);
void cdsm__buf_put(cdsm__buf_t *b, const void *src, size_t n);
void cdsm__buf_put_u32(cdsm__buf_t *b, uint32_t v);
void cdsm__buf_free(cdsm__buf_t *b);

/* A cursor over a received payload; every read is bounds-checked. */
typedef struct cdsm__rd {
    const uint8_t *p;
    size_t len, pos;
    int bad; /* set when a read ran past the end */
} cdsm__rd_t;

const void *cdsm__rd_take(cdsm__rd_t *r, size_t n);
uint32_t cdsm__rd_u32(cdsm__rd_t *r);
uint64_t cdsm__rd_u64(cdsm__rd_t *r);

/* ---- intervals and write notices -------------------------------------------------- */

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

/* ---- pages ------------------------------------------------------------------------ */

enum { CDSM_PG_INVALID = 0, CDSM_PG_RO = 1, CDSM_PG_RW = 2 };
#define CDSM_IV_OPEN UINT32_MAX
/* Hot-page pressure: a page cooled under pressure that is written again becomes hot and
 * immune to pressure (it really is rewritten every few intervals). */
enum { CDSM_STICKY_NONE = 0, CDSM_STICKY_IMMUNE = 1, CDSM_STICKY_COOLED = 2 };

typedef struct cdsm__page {
    uint8_t state;
    uint8_t dirty;     /* listed in the dirty set (the open interval's writes, and hot pages) */
    uint8_t hot;       /* 0: cold; else kept writable, 1 + intervals it has not changed */
    uint8_t spec;      /* made writable ahead of a write (fault-around), not known written */
    int16_t holder;    /* after GC: rank that holds the base copy of an invalid page, or -1 */
    uint8_t sticky;    /* CDSM_STICKY_*: how the hot-page pressure rule treats this page */
    uint8_t ckflags;   /* bit 0: changed since the last checkpoint; bit 1: ever changed */
    uint32_t twin_iv;  /* interval the twin belongs to (CDSM_IV_OPEN: the open one) */
    uint32_t dirty_pos; /* index in the dirty set while dirty */
    uint32_t last_wr;  /* our interval count when the page was last write-faulted (+1; 0: never) */
    void *twin;
    cdsm__notice_t *notices; /* since the last GC, newest first */
    uint32_t *applied; /* per rank: last interval whose writes this copy holds (lazy) */
} cdsm__page_t;

/* ---- locks ------------------------------------------------------------------------ */

enum { CDSM_LK_NONE = 0, CDSM_LK_TOKEN, CDSM_LK_HELD, CDSM_LK_WAITING };

typedef struct cdsm__lock {
    uint8_t state;
    int32_t tail;      /* manager only: last requester (token goes there next) */
    int32_t next;      /* successor waiting for our release, or -1 */
    uint32_t *next_vc; /* successor's vector clock (n entries) */
    uint32_t next_seq; /* successor's synchronisation number (causal logging) */
    uint32_t req_seq;  /* WAITING: the synchronisation number of our acquire */
    int32_t last_to;   /* the last rank we granted this lock to, or -1 (recovery) */
    uint32_t last_to_seq; /* and its acquire's synchronisation number */
} cdsm__lock_t;

/* ---- messages --------------------------------------------------------------------- */

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
    CDSM_MSG_TYPES
};

typedef struct cdsm__msg_hdr {
    uint16_t type;
    uint16_t src;
    uint32_t len; /* payload bytes after the header */
    uint64_t tag; /* request id, lock id or barrier epoch */
} cdsm__msg_hdr_t;
CDSM__STATIC_ASSERT(sizeof(cdsm__msg_hdr_t) == 16, "message header is a wire format");

/* Interval record on the wire: header, then vc[n], then pages[npages]. */
typedef struct cdsm__wire_iv {
    uint16_t rank;
    uint16_t pad;
    uint32_t idx;
    uint32_t npages;
} cdsm__wire_iv_t;
CDSM__STATIC_ASSERT(sizeof(cdsm__wire_iv_t) == 12, "interval record header is a wire format");

/* A reply waiting for the application thread. */
typedef struct cdsm__reply {
    struct cdsm__reply *next;
    cdsm__msg_hdr_t hdr;
    uint8_t *payload;
} cdsm__reply_t;

/* Barrier flags in a release. */
enum { CDSM_BAR_GC = 1, CDSM_BAR_MISMATCH = 2, CDSM_BAR_DETLOST = 4, CDSM_BAR_DIED = 8 };
/* Barrier kinds in an arrival. */
enum { CDSM_BAR_PLAIN = 0, CDSM_BAR_GC_DONE = 1, CDSM_BAR_FINAL = 2, CDSM_BAR_AUDIT = 3, CDSM_BAR_RESUME = 4 };
/* Bits above the kind in an arrival's kind word: the rank is in resume mode; its
 * checkpoint policy wants a checkpoint at this resume point. */
enum { CDSM_BAR_KIND_MASK = 0xff, CDSM_BAR_IN_RESUME = 0x100, CDSM_BAR_WANT_CKPT = 0x200 };

#define CDSM_NSTATS (sizeof(cdsm_stats_t) / sizeof(uint64_t))

/* ---- the process-wide state ------------------------------------------------------- */

typedef struct cdsm__state {
    int initialized;
    int rank, n;       /* logical rank (the program's) and number of working ranks */
    int wrank, wn;     /* this process and all processes in the communicator (spares too) */
    int *phys;         /* logical rank -> world rank (n entries) */
    int *logical;      /* world rank -> logical rank, or -1 for a spare (wn entries) */
    uint8_t *wdead;    /* world ranks found dead */
    int replaying;     /* this process is a replacement replaying a lost rank */
    int replaying_start; /* this process took over a rank in cdsm_init: replay begins */
    int resume_mode;   /* the program called cdsm_resume(): checkpoints only at resume points */
    int fast_forward;  /* replacement before cdsm_resume() restores a checkpoint: the
                        * program's allocation barriers are passed without effect */
    int recovered;     /* a process died in this run (MPI_Finalize would wait for it) (atomic) */
    uint32_t remap_gen; /* bumped when a logical rank moves to a spare (atomic) */
    int mpi_owned; /* we called MPI_Init_thread, so we call MPI_Finalize */
    MPI_Comm comm;

    /* heap */
    char *base;   /* application view: protected per page */
    char *sys;    /* library view of the same memory: always read-write */
    int memfd;
    size_t heap_size, page_size, os_page;
    uint32_t npages;
    cdsm__page_t *pages;

    /* protocol state, guarded by mu (application thread and service thread) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t *vc;          /* my vector clock */
    uint32_t *vc_bar;      /* global vector clock after the last barrier */
    cdsm__ivlist_t *ivs;   /* interval records per rank */
    uint32_t *dirty;       /* pages written in the open interval, and hot pages */
    size_t ndirty, dirty_cap;
    cdsm__lock_t *locks;
    uint32_t nlocks;
    uint64_t next_req;     /* request ids for replies */
    cdsm__reply_t *replies; /* replies not yet taken by the application thread */
    int finalizing;
    int final_mgr_gone;    /* rank 0's process ended while this rank finalizes (atomic) */
    int lost_rank;         /* first rank found dead (doorbell closed), or -1 (atomic) */
    uint8_t *scratch;      /* diff encode buffer (cdsm__diff_max(page)) */
    uint32_t *scratch_n;   /* n entries, for per-rank scans under mu */
    uint32_t sync_seq;     /* synchronisation operations (acquire, release, barrier) so far */
    int lk_frozen;         /* a lock rebuild is under way: requests and forwards wait */
    uint32_t *lk_sent, *lk_recv; /* lock messages sent to / received from each process (atomic, wn) */
    uint64_t job_id;       /* the run, agreed at init (checkpoint files carry it) */

    /* barrier: this rank's side */
    uint32_t bar_epoch;
    /* barrier: manager's side (rank 0, service thread) */
    int bar_arrived;
    uint32_t *bar_vcs;     /* arrival vc of each rank (n*n) */
    uint64_t bar_mem_max;
    uint64_t bar_stats[CDSM_NSTATS];
    uint64_t bar_check;
    int bar_check_set, bar_mismatch;
    cdsm__buf_t *bar_recs; /* per rank: serialized records, ordered by idx */
    uint32_t *bar_maxidx;  /* per rank: highest idx collected */

    /* memory held by diffs, twins and records (for GC), and by archived diffs (in
     * log_bytes too, but not collectable) */
    uint64_t log_bytes;
    uint64_t archive_bytes;

    /* counters (updated under mu, or atomically by the service thread) */
    cdsm_stats_t st;
} cdsm__state_t;

extern cdsm__state_t cdsm__g;

#define CDSM_STAT_ADD(field, v) __atomic_fetch_add(&cdsm__g.st.field, (uint64_t)(v), __ATOMIC_RELAXED)

static inline uint32_t cdsm__page_of(const void *addr)
{
    return (uint32_t)(((const char *)addr - cdsm__g.base) / cdsm__g.page_size);
}
static inline char *cdsm__sys_page(uint32_t pg)
{
    return cdsm__g.sys + (size_t)pg * cdsm__g.page_size;
}
static inline char *cdsm__app_page(uint32_t pg)
{
    return cdsm__g.base + (size_t)pg * cdsm__g.page_size;
}

/* ---- modules ---------------------------------------------------------------------- */

/* heap.c */
int cdsm__heap_init(void);
void cdsm__heap_fini(void);
int cdsm__page_protect(uint32_t first, uint32_t count, int state);
void cdsm__log_bytes_add(int64_t delta);

/* alloc.c */
int cdsm__alloc_init(void);
void cdsm__alloc_fini(void);
/* Non-collective allocation from the common arena (rank 0 of the PARMACS layer only). */
int cdsm__alloc_master(size_t size, void **out);

/* fault.c */
int cdsm__fault_install(void);
void cdsm__fault_uninstall(void);

/* interval.c */
cdsm__interval_t *cdsm__iv_get(int rank, uint32_t idx);
cdsm__interval_t *cdsm__iv_new(int rank, uint32_t idx, const uint32_t *vc, uint32_t npages,
                               const uint32_t *pages, int own);
void cdsm__iv_append(cdsm__interval_t *iv);
void cdsm__iv_free(cdsm__interval_t *iv);
void cdsm__iv_serialize(cdsm__buf_t *b, const cdsm__interval_t *iv);
/* Records this rank knows with idx > have[q]; returns how many were written. */
uint32_t cdsm__iv_serialize_newer(cdsm__buf_t *b, const uint32_t *have);
/* Those with have[q] < idx <= upto[q] (a grant carries what its vector clock covers). */
uint32_t cdsm__iv_serialize_between(cdsm__buf_t *b, const uint32_t *have, const uint32_t *upto);
/* Parse nrec records, store the ones not yet known, post their notices (invalidating
 * pages) and return 0; CDSM_ERR_PROTOCOL on malformed input. */
int cdsm__iv_incorporate(cdsm__rd_t *r, uint32_t nrec);
size_t cdsm__iv_bytes(const cdsm__interval_t *iv);
int cdsm__iv_find_page(const cdsm__interval_t *iv, uint32_t pg);

/* coherence.c: twins, diffs, validation, interval close */
void cdsm__fault(uint32_t pg, int is_write);
void cdsm__close_interval(void);
void cdsm__invalidate(uint32_t pg);
cdsm__diffrec_t *cdsm__own_diff(cdsm__interval_t *iv, int j);
int cdsm__validate(uint32_t pg);
void cdsm__serve_diffs(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
void cdsm__serve_page(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
uint32_t *cdsm__page_applied(uint32_t pg);

/* lock.c */
int cdsm__locks_init(void);
void cdsm__locks_fini(void);
void cdsm__lock_on_req(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
void cdsm__lock_on_fwd(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
/* Build and send a grant of lock l to `to` for its acquire to_seq (vc: the granter's). */
int cdsm__lock_grant_msg(uint32_t l, int to, uint32_t to_seq, uint32_t grant_seq, const uint32_t *vc,
                         const uint32_t *to_vc);
/* The link to the unread grant of lock l for our acquire seq in the reply queue, or NULL.
 * Caller holds mu. */
cdsm__reply_t **cdsm__lock_unread_grant(uint32_t l, uint32_t seq);
/* Recovery: a rebuild placed (requester, seq) in lock l's queue; later copies are dropped. */
void cdsm__lock_placed(uint32_t l, int requester, uint32_t seq);
/* Recovery: requester (acquire seq, vector clock vc) comes after us in lock l's queue. */
void cdsm__lock_link(uint32_t l, int requester, const uint32_t *vc, uint32_t seq);
/* Requests and forwards kept while a replay or rebuild runs: visit; do them now. */
void cdsm__lock_waiting_foreach(void (*fn)(int type, uint32_t l, int req, uint32_t seq, void *arg), void *arg);
void cdsm__lock_resume(void);
/* Replacement, at acquire seq of lock l: take it as the lost process did (0, state HELD),
 * or go live here (0, state HELD if the token is here, else WAITING for its grant). */
int cdsm__replay_acquire(uint32_t l, uint32_t seq);
static inline int cdsm__is_lock_msg(int type)
{
    return type == CDSM_MSG_LOCK_REQ || type == CDSM_MSG_LOCK_FWD || type == CDSM_MSG_LOCK_GRANT;
}

/* barrier.c (and gc) */
int cdsm__barrier_init(void);
void cdsm__barrier_fini(void);
int cdsm__barrier_full(int kind, uint64_t check, const cdsm_stats_t *stats, cdsm_stats_t *sum,
                       int *flags_out);
void cdsm__bar_on_arrive(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
int cdsm__gc(void);
/* A replacement of the barrier manager takes the manager's view as of the last logged
 * barrier (its global vector clock). Caller holds mu. */
void cdsm__barrier_adopt(const uint32_t *vc);
/* A replacement's replay passed logged barrier `epoch`: as the manager, release the ranks
 * whose arrival there waited (their release was lost). Caller holds mu. */
void cdsm__barrier_replayed(uint32_t epoch, uint32_t flags);
/* A replacement still replaying: take out the kept messages of this type and tag and hand
 * each to fn (its payload is freed afterwards). Caller holds mu. */
void cdsm__replay_take(int type, uint64_t tag, void (*fn)(const cdsm__msg_hdr_t *h, cdsm__rd_t *r, void *arg),
                       void *arg);

/* check.c: the consistency checker (CDSM_CHECK=1) */
int cdsm__audit_local(void);
void cdsm__audit_hashes(cdsm__buf_t *b, uint32_t *count);
int cdsm__audit_collect(int src, cdsm__rd_t *r, uint32_t count);
int cdsm__audit_finish(uint32_t *pg, uint32_t *a, uint32_t *b);
void cdsm__audit_fini(void);

/* transport.c: MPI messages with doorbell sockets, and the service thread */
int cdsm__tp_init(void);
void cdsm__tp_fini(void);
/* Send header+payload (two parts, either may be empty) to dst. Never blocks on the
 * receiver: the application thread completes its sends in cdsm__tp_flush(). */
int cdsm__tp_send(int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2,
                  size_t l2);
/* The same to a world rank (spares, before they have a logical rank). */
int cdsm__tp_send_world(int wdst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2,
                        size_t l2);
/* Receive and dispatch whatever has arrived, without blocking (skipped when another
 * thread is receiving). Call without holding mu. Returns >0 if doorbells were read. */
int cdsm__tp_progress(void);
/* Complete this thread's outstanding sends; call without holding mu. */
int cdsm__tp_flush(void);
/* Wait (releasing mu) for a reply of the given type and tag; caller holds mu. Returns
 * NULL when a rank was lost (no reply may ever come: recovery is not there yet). */
cdsm__reply_t *cdsm__wait_reply(int type, uint64_t tag);
/* The same, giving up after about timeout_ms (0: never) with *timed_out set. */
cdsm__reply_t *cdsm__wait_reply_for(int type, uint64_t tag, uint64_t timeout_ms, int *timed_out);
void cdsm__reply_free(cdsm__reply_t *r);

/* A peer was found dead (its doorbell connection closed outside finalize): remember the
 * first one, log it once and wake every waiting thread. Any thread. */
void cdsm__peer_lost(int rank, const char *why);
/* The first lost rank, or -1. */
/* The CLOCK_REALTIME instant ms milliseconds from now: a pthread_cond_timedwait deadline. */
static inline struct timespec cdsm__deadline_ms(uint64_t ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)(ms / 1000);
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return dl;
}

static inline int cdsm__lost(void)
{
    return __atomic_load_n(&cdsm__g.lost_rank, __ATOMIC_ACQUIRE);
}

/* recovery/recover.c: hooks of the transport and the dispatcher into online recovery */
/* The process of world rank w died (its doorbell stream ended). Returns 1 if a spare takes
 * its rank's place (or it held no rank), 0 if the run has lost the rank for good. Service
 * thread or a receiving thread, never with mu held. */
int cdsm__world_lost(int w, const char *why);
/* Process w ended while this rank finalizes (every rank had finished its work): the last
 * barrier goes on without it. Same threads as cdsm__world_lost. */
void cdsm__final_lost(int w);
/* Barrier manager (caller holds mu): rank r is gone during finalize; its arrival at a
 * FINAL barrier is no longer waited for. */
void cdsm__bar_gone(int r);
/* Barrier manager (caller holds mu): rank r's process died and a spare takes its place; in
 * resume mode its arrival at the end of a collection no longer counts. */
void cdsm__bar_lost(int r);
/* Barrier manager: the epoch of the last barrier it released (0 elsewhere). */
uint32_t cdsm__bar_released(void);
/* Barrier manager: a restart manifest of barrier epoch was committed; later releases say so. */
void cdsm__bar_manifest(uint32_t epoch);
/* Process w sent a message as logical rank r: 1 if it is (or has just become) r. */
int cdsm__recover_adopt(int r, int w);
/* Process w died or is dying and its rank is (or will be) replayed by a spare. Any thread. */
int cdsm__world_recoverable(int w);
/* Messages reaching a spare before its protocol state exists are kept for later (1). */
int cdsm__hold_early(const cdsm__msg_hdr_t *h, uint8_t *buf);
void cdsm__on_takeover(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);
void cdsm__on_retire(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);
void cdsm__serve_replay(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);
/* A replacement still replaying keeps requests it cannot serve yet (1): diff requests
 * until it has made their diffs again, page requests and barrier arrivals until it is
 * live. Caller holds mu. */
int cdsm__replay_defer(const cdsm__msg_hdr_t *h, const cdsm__rd_t *r);

/* placement.c: bind this process's threads by the topology (CDSM_BIND, start-up, collective) */
int cdsm__place(pthread_t service);
/* What placement did, for the run's header. */
const char *cdsm__placement(void);
/* transport.c: the service thread */
pthread_t cdsm__tp_service_thread(void);

/* service.c: dispatch of one received message (service thread) */
void cdsm__dispatch(const cdsm__msg_hdr_t *h, uint8_t *payload);

#ifdef __cplusplus
}
#endif
#endif
