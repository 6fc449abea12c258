/**
 * @file cdsm/parmacs.h
 * @brief PARMACS compatibility: run unmodified SPLASH-2 / Splash-3 programs on cdsm.
 *
 * SPLASH programs are written with the PARMACS macros (CREATE, LOCK, BARRIER, G_MALLOC...)
 * and turned into C by m4 with a macro file. `cdsm/c.m4.cdsm` is such a file: its macros
 * expand to the CDSM_PARMACS_* C macros below, so a program builds with
 *
 *     m4 c.m4.cdsm prog.C > prog.c
 *     cc prog.c $(pkg-config --cflags --libs cdsm)     # libcdsm as a SHARED library
 *
 * and runs with `mpiexec -n P prog -pP`. The fork-join model is emulated on SPMD ranks:
 *
 * - Only rank 0 runs `main`. The constructor that MAIN_ENV defines turns address-space
 *   randomisation off (re-executing the program once, before MPI starts) so that every rank
 *   has the same addresses, calls cdsm_init(), and keeps every other rank waiting for
 *   commands from rank 0 (they never enter `main`: input, output and argument parsing
 *   happen once).
 * - The program's globals are shared, as in its pthreads build: the executable's writable
 *   data segment (but libc's objects imported into it, such as stdout and environ) is DSM
 *   memory, under the same lazy release consistency as G_MALLOC'd memory.
 * - At CREATE the other ranks call the worker function: worker i of the batch runs on
 *   rank i, rank 0 runs the worker that `main` calls itself. WAIT_FOR_END waits for all
 *   workers (a barrier); `main` goes on alone.
 *   Both CREATE forms work: SPLASH-2's `CREATE(fn)` once per worker (P-1 times, then
 *   `main` calls fn) and Splash-3's `CREATE(fn, P)` (starts P-1 workers and calls fn).
 * - G_MALLOC in `main` allocates from the common arena (rank 0 only: the others are
 *   waiting); inside a worker it is cdsm_malloc() (private arena, valid on every rank).
 * - Locks are lock ids handed out by LOCKINIT with no message, from cdsm_nlocks()/2 to
 *   cdsm_nlocks()-2: main's in order, a worker's among the ids its rank manages; a
 *   variable initialised again takes the id it took before. Low ids stay free for
 *   programs that also call the cdsm API. When more lock variables are initialised than
 *   ids exist, ids are shared (correct, but a worker must not hold two locks that share
 *   an id: raise CDSM_LOCKS).
 * - BARRIER is cdsm_barrier() (every rank; its count must equal the number of ranks).
 * - PAUSE variables and condition variables must lie in shared memory (G_MALLOC'd, or a
 *   global); each has a lock id of its own; waiting polls under that lock with sched_yield().
 * - RELEASE_FENCE, ACQUIRE_FENCE and FULL_FENCE do nothing: under lazy release consistency
 *   a fence makes nothing visible to other ranks; only locks, barriers, PAUSE and condition
 *   variables do. Programs that publish lock-free flags behind fences are not supported.
 *
 * See README.md, "SPLASH programs (PARMACS)", for the limits. Every error of the layer is
 * fatal: it prints one line naming the cause to stderr and ends the whole job.
 */
#ifndef CDSM_PARMACS_H
#define CDSM_PARMACS_H

/* Deliberately no system header but <stddef.h> (which sets no feature macro): c.m4.cdsm
 * includes this file at the top of every translated file, before the program's own
 * #define _GNU_SOURCE. MAIN_ENV and EXTERN_ENV include the usual system headers. */
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A lock: a cdsm lock id, set by LOCKINIT. A plain value, so it may live in shared memory
 *  or in a private global that `main` sets before CREATE. */
typedef int cdsm_parmacs_lock_t;
/** A barrier: carries nothing (every BARRIER is a cdsm_barrier() over all ranks). */
typedef struct cdsm_parmacs_barrier {
    int unused;
} cdsm_parmacs_barrier_t;
/** A pause flag (must be in shared memory): set/cleared/read under its own lock. */
typedef struct cdsm_parmacs_pause {
    int lock;
    int flag;
} cdsm_parmacs_pause_t;
/** A condition variable (must be in shared memory): a generation counter under its own lock. */
typedef struct cdsm_parmacs_condvar {
    int lock;
    unsigned gen;
} cdsm_parmacs_condvar_t;
/** A worker function as CREATE receives it. */
typedef void (*cdsm_parmacs_fn_t)(void);

/* The functions behind the macros (in libcdsm; call them only through the macros). */
/** @brief Start the layer (MAIN_ENV constructor): ASLR off, cdsm_init, hold ranks > 0. Fatal on error (message, job ends). */
void cdsm__parmacs_start(void);
/** @brief MAIN_INITENV: start the layer if the MAIN_ENV constructor did not. */
void cdsm__parmacs_main_initenv(void);
/** @brief MAIN_END (rank 0): stop the other ranks, cdsm_finalize(), exit(0). */
void cdsm__parmacs_main_end(void) __attribute__((noreturn));
/** @brief CREATE: nprocs > 0 is Splash-3's form (start all, run fn here), 0 SPLASH-2's (one worker per call). Rank 0 only; fatal if the counts do not match the ranks. */
void cdsm__parmacs_create(cdsm_parmacs_fn_t fn, long nprocs);
/** @brief WAIT_FOR_END: the barrier that ends a batch of workers (rank 0). */
void cdsm__parmacs_wait_for_end(long n);
/** @brief G_MALLOC/NU_MALLOC: common arena in main, the rank's own arena in a worker; valid on every rank. Fatal when the heap is exhausted. */
void *cdsm__parmacs_malloc(size_t size);
/** @brief G_FREE/NU_FREE: memory is kept (no-op). */
void cdsm__parmacs_free(void *ptr);
/** @brief CLOCK: wall-clock microseconds. Thread-safe. */
unsigned long cdsm__parmacs_clock(void);
/** @brief LOCKINIT: a lock id into *l, with no message: the id this rank gave the same variable before (unless it holds it now), else its next one (main's range in main, else the ids this rank manages). */
void cdsm__parmacs_lock_init(cdsm_parmacs_lock_t *l);
/** @brief ALOCKINIT: n lock ids into locks[], each as LOCKINIT. */
void cdsm__parmacs_alock_init(cdsm_parmacs_lock_t *locks, long n);
/** @brief LOCK/ALOCK: cdsm_lock_acquire(id); fatal on error. */
void cdsm__parmacs_lock(int id);
/** @brief UNLOCK/AULOCK: cdsm_lock_release(id); fatal on error. */
void cdsm__parmacs_unlock(int id);
/** @brief BARRIER(b, n): cdsm_barrier(); n must equal the number of ranks. */
void cdsm__parmacs_barrier(long n);
/** @brief PAUSEINIT: a cleared flag with a lock id of its own (p in shared memory or a global). */
void cdsm__parmacs_pause_init(cdsm_parmacs_pause_t *p);
/** @brief SETPAUSE: set the flag under its lock. */
void cdsm__parmacs_pause_set(cdsm_parmacs_pause_t *p);
/** @brief CLEARPAUSE: clear the flag under its lock. */
void cdsm__parmacs_pause_clear(cdsm_parmacs_pause_t *p);
/** @brief WAITPAUSE: poll the flag under its lock (yielding, then short sleeps) until set. */
void cdsm__parmacs_pause_wait(cdsm_parmacs_pause_t *p);
/** @brief CONDVARINIT: generation 0 with a lock id of its own (c in shared memory or a global). */
void cdsm__parmacs_cond_init(cdsm_parmacs_condvar_t *c);
/** @brief CONDVARWAIT: release lock, wait for a new generation, re-acquire lock. */
void cdsm__parmacs_cond_wait(cdsm_parmacs_condvar_t *c, int lock);
/** @brief CONDVARSIGNAL/CONDVARBCAST: start a new generation (wakes every waiter). */
void cdsm__parmacs_cond_signal(cdsm_parmacs_condvar_t *c);
/** @brief SPLASH3_ROI_BEGIN: record the time on this rank. */
void cdsm__parmacs_roi_begin(void);
/** @brief SPLASH3_ROI_END: record the time on this rank. */
void cdsm__parmacs_roi_end(void);

/** @brief Microseconds between the last SPLASH3_ROI_BEGIN and SPLASH3_ROI_END on this rank
 *  (0 if the region was not recorded). Rank 0 prints it at MAIN_END when CDSM_STATS >= 1. */
unsigned long cdsm_parmacs_roi_us(void);

/* ---- the C behind each PARMACS macro (c.m4.cdsm maps the PARMACS names to these) ---- */

/** MAIN_ENV: a constructor that starts the layer before `main` runs (see above). */
#define CDSM_PARMACS_MAIN_ENV                                                                 \
    static void __attribute__((constructor)) cdsm__parmacs_ctor(void) { cdsm__parmacs_start(); }
#define CDSM_PARMACS_MAIN_INITENV() cdsm__parmacs_main_initenv()
#define CDSM_PARMACS_MAIN_END() cdsm__parmacs_main_end()
/** Splash-3: start nprocs-1 workers and run fn on rank 0 too. */
#define CDSM_PARMACS_CREATE(fn, nprocs) cdsm__parmacs_create((cdsm_parmacs_fn_t)(fn), (long)(nprocs))
/** SPLASH-2: one worker per call; `main` then calls fn itself. */
#define CDSM_PARMACS_CREATE1(fn) cdsm__parmacs_create((cdsm_parmacs_fn_t)(fn), 0L)
#define CDSM_PARMACS_WAIT_FOR_END(n) cdsm__parmacs_wait_for_end((long)(n))
#define CDSM_PARMACS_G_MALLOC(size) cdsm__parmacs_malloc((size_t)(size))
#define CDSM_PARMACS_G_FREE(ptr) cdsm__parmacs_free(ptr)
#define CDSM_PARMACS_CLOCK(t) ((t) = cdsm__parmacs_clock())
#define CDSM_PARMACS_LOCKINIT(l) cdsm__parmacs_lock_init(&(l))
#define CDSM_PARMACS_LOCK(l) cdsm__parmacs_lock(l)
#define CDSM_PARMACS_UNLOCK(l) cdsm__parmacs_unlock(l)
#define CDSM_PARMACS_ALOCKINIT(a, n) cdsm__parmacs_alock_init((a), (long)(n))
#define CDSM_PARMACS_BARINIT(b) ((void)&(b))
#define CDSM_PARMACS_BARRIER(b, n) ((void)&(b), cdsm__parmacs_barrier((long)(n)))
#define CDSM_PARMACS_PAUSEINIT(p) cdsm__parmacs_pause_init(&(p))
#define CDSM_PARMACS_SETPAUSE(p) cdsm__parmacs_pause_set(&(p))
#define CDSM_PARMACS_CLEARPAUSE(p) cdsm__parmacs_pause_clear(&(p))
#define CDSM_PARMACS_WAITPAUSE(p) cdsm__parmacs_pause_wait(&(p))
#define CDSM_PARMACS_CONDVARINIT(c) cdsm__parmacs_cond_init(&(c))
#define CDSM_PARMACS_CONDVARWAIT(c, l) cdsm__parmacs_cond_wait(&(c), (l))
#define CDSM_PARMACS_CONDVARSIGNAL(c) cdsm__parmacs_cond_signal(&(c))
#define CDSM_PARMACS_CONDVARBCAST(c) cdsm__parmacs_cond_signal(&(c))
/** Fences: no visibility under lazy release consistency (see above). */
#define CDSM_PARMACS_FENCE() ((void)0)
#define CDSM_PARMACS_ROI_BEGIN() cdsm__parmacs_roi_begin()
#define CDSM_PARMACS_ROI_END() cdsm__parmacs_roi_end()

#ifdef __cplusplus
}
#endif

#endif /* CDSM_PARMACS_H */
