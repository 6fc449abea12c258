/* The protocol (floor 2, internal): the state every protocol module shares, and the
 * modules' headers. Fault tolerance joins it only through ft_hooks.h. */
#ifndef CDSM_PROTO_H
#define CDSM_PROTO_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "barrier.h"
#include "coherence.h"
#include "conv.h"
#include "ft_hooks.h"
#include "heap.h"
#include "interval.h"
#include "lock.h"
#include "msg.h"
#include "reply.h"
#include "transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The protocol engine's shared state, guarded by mu (application thread and service
 * thread). Each module keeps the rest of its state in its own struct. */
typedef struct cdsm__state {
    int initialized;
    int mpi_owned;         /* we called MPI_Init_thread, so we call MPI_Finalize */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t *vc;          /* my vector clock */
    cdsm__ivlist_t *ivs;   /* interval records per rank */
    uint32_t *dirty;       /* pages written in the open interval, and hot pages */
    size_t ndirty, dirty_cap;
    uint64_t next_req;     /* request ids for replies */
    cdsm__reply_t *replies; /* replies not yet taken by the application thread */
    int final_mgr_gone;    /* rank 0's process ended while this rank finalizes (atomic) */
    int lost_rank;         /* first rank lost for good, or -1 (atomic) */
    uint8_t *scratch;      /* diff encode buffer (cdsm__diff_max(page)) */
    uint32_t *scratch_n;   /* n entries, for per-rank scans under mu */
    uint8_t *snap;         /* one page: a live close's copy of a page being written */
    uint32_t sync_seq;     /* synchronisation operations (acquire, release, barrier) so far */
    int lazy;              /* lazy release: a release with nobody waiting closes no interval */
    int open_release;      /* the open interval holds writes of a release (lazy release) */
    pthread_t app;         /* the application thread (it called cdsm_init) */
    uint64_t job_id;       /* the run, agreed at init (checkpoint files carry it) */
    /* memory held by diffs, twins and records (for GC), and by archived diffs (in
     * log_bytes too, but not collectable) */
    uint64_t log_bytes;
    uint64_t archive_bytes;
} cdsm__state_t;

extern cdsm__state_t cdsm__g;

/* dispatch.c: the transport's deliver event (service thread or a receiving thread). */
void cdsm__dispatch(const cdsm__msg_hdr_t *h, uint8_t *payload);
/* The transport events of the protocol's messages (deliver, requests and their replies,
 * counted lock messages); membership adds the peer events. */
void cdsm__proto_events(cdsm__tp_events_t *ev);

#ifdef __cplusplus
}
#endif
#endif
