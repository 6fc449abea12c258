/* Barriers through a manager (rank 0) or a tree rooted there, and garbage collection at barriers (internal,
 * protocol). */
#ifndef CDSM_BARRIER_H
#define CDSM_BARRIER_H

#include <stdint.h>

#include "msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* This rank's side, and the manager's collection state (rank 0). */
typedef struct cdsm__barrier {
    uint32_t epoch;     /* barriers entered so far */
    uint32_t manifest_due; /* a restart manifest learned: its output goes out at the next arrival */
    uint32_t *vc_bar;   /* global vector clock after the last barrier */
    /* manager */
    int arrived;
    uint32_t *vcs;      /* arrival vc of each rank (n*n) */
    uint64_t mem_max;
    uint64_t stats[CDSM_NSTATS];
    uint64_t check;
    int check_set, mismatch;
    cdsm__buf_t *recs;  /* per rank: serialized records, ordered by idx */
    uint32_t *maxidx;   /* per rank: highest idx collected */
} cdsm__barrier_t;

extern cdsm__barrier_t cdsm__bar;

int cdsm__barrier_init(void);
void cdsm__barrier_fini(void);
int cdsm__barrier_full(int kind, uint64_t check, const cdsm_stats_t *stats, cdsm_stats_t *sum, int *flags_out);
void cdsm__bar_on_arrive(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
/* Called right after a barrier release that asked for it; takes mu itself. */
int cdsm__gc(void);
/* A replacement of the barrier manager, or every collecting rank of a whole job restarting,
 * takes the manager's view as of the last logged barrier or the checkpoint (its global
 * vector clock). Caller holds mu. */
void cdsm__barrier_adopt(const uint32_t *vc);
/* Replacement manager, its replay past logged barrier epoch: release one survivor whose
 * arrival there waited (its release was lost with the manager). arg: the logged flags
 * (a uint32_t). Caller holds mu. */
void cdsm__bar_release_replayed(const cdsm__msg_hdr_t *h, cdsm__rd_t *r, void *arg);
/* Barrier manager (caller holds mu): rank r is gone during finalize; its arrival at a
 * FINAL barrier is no longer waited for. */
void cdsm__bar_gone(int r);
/* Barrier manager (caller holds mu): rank r's process died and a spare takes its place; in
 * resume mode its arrival at the end of a collection no longer counts. */
void cdsm__bar_lost(int r);
/* Barrier manager: the epoch of the last barrier it released (0 elsewhere). */
uint32_t cdsm__bar_released(void);
/* The manager: the newest record of rank r it holds, a barrier being collected included
 * (a lost process's arrival brought it; its replay must make it again). 0 elsewhere. */
uint32_t cdsm__bar_collected(int r);
/* Barrier manager: a restart manifest of barrier epoch was committed; later releases say so. */
void cdsm__bar_manifest(uint32_t epoch);

#ifdef __cplusplus
}
#endif
#endif
