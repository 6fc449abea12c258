/* par.h: one application source, three builds.
 *
 *   PAR_SEQ       one process, one worker: the sequential baseline
 *   PAR_PTHREADS  one process, P threads sharing memory: the shared-memory baseline
 *   PAR_CDSM      P MPI ranks on the cdsm DSM
 *
 * The model is SPMD: main() calls par_init(), parses its options, then par_run(worker)
 * runs `worker` on every participant (each sees its own par_rank()); shared data comes
 * from par_alloc() (collective: every participant calls it with the same sizes in the same
 * order and gets the same address); synchronisation is par_barrier() and par_lock()/
 * par_unlock(). Programs must be data-race free: under cdsm, writes become visible to
 * another participant only through a barrier or a lock it acquires after the writer
 * released it (lazy release consistency). Output is printed by par_rank() == 0.
 *
 * The number of participants: the MPI rank count (PAR_CDSM), the -p option parsed by
 * par_init() (PAR_PTHREADS, default 2), or 1 (PAR_SEQ).
 */
#ifndef APPS_PAR_H
#define APPS_PAR_H

#include <stddef.h>
#include <stdio.h>

#if !defined(PAR_SEQ) && !defined(PAR_PTHREADS) && !defined(PAR_CDSM)
#error "build with -DPAR_SEQ, -DPAR_PTHREADS or -DPAR_CDSM"
#endif

/* Number of lock ids par_lock() accepts. */
#define PAR_NLOCKS 1024

/* Start the runtime (cdsm_init for PAR_CDSM; for PAR_PTHREADS consumes "-p N" from argv).
 * Returns 0, or non-zero after printing why. Call once, before option parsing. */
int par_init(int *argc, char ***argv);

/* Run worker() on every participant and return when all have finished. Call once. */
void par_run(void (*worker)(void));

/* This participant's id (0..par_nprocs()-1) and the number of participants. */
int par_rank(void);
int par_nprocs(void);

/* Collective allocation of shared memory, zero-filled; exits the job on failure. */
void *par_alloc(size_t size);

/* Synchronisation. Lock ids are 0..PAR_NLOCKS-1. */
void par_barrier(void);
void par_lock(int id);
void par_unlock(int id);

/* Wall-clock seconds. */
double par_time(void);

/* The build's name ("seq", "pthreads", "cdsm"). */
const char *par_build(void);

/* Print the DSM counters summed over ranks (collective under PAR_CDSM; no-op elsewhere).
 * Every participant must call it; rank 0 prints. */
void par_print_stats(FILE *f);

/* Finish (cdsm_finalize). Returns the status to exit with: `status` if the job ended
 * cleanly, non-zero otherwise. */
int par_finish(int status);

/* Abort the whole job with a message (all ranks). */
void par_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
