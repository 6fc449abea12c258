/**
 * @file cdsm.h
 * @brief cdsm: a page-based, lazy-release-consistent distributed shared memory over MPI.
 *
 * Programming model: SPMD. Every MPI rank calls cdsm_init(), allocates shared memory
 * (collectively with cdsm_alloc(), or privately with cdsm_malloc()), and synchronises
 * with cdsm_lock_acquire()/cdsm_lock_release() and cdsm_barrier(). Data races on shared
 * memory are not allowed: a rank sees another rank's writes only after synchronising
 * with it (lazy release consistency). One application thread per rank uses the shared
 * heap; the library runs one service thread of its own per rank.
 *
 * Every function returns a cdsm status (0 on success, a negative ::cdsm_status on
 * error) unless documented otherwise. The reason for an error is logged once, where it
 * is detected, and can also be read back with cdsm_last_error().
 *
 * Shared memory must never be passed to MPI calls (send/receive buffers): MPI's
 * transports cannot see the library's page protection.
 */
#ifndef CDSM_H
#define CDSM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cdsm/status.h"
#include "cdsm/stats.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Library version as major*10000 + minor*100 + patch. */
#define CDSM_VERSION 100

/**
 * @brief Initialise the DSM: configuration, MPI, shared heap, service thread.
 *
 * Collective over MPI_COMM_WORLD. Reads the configuration (CDSM_* environment variables
 * and the optional file named by CDSM_CONFIG_FILE) before touching MPI, so a bad value
 * is reported without any MPI side effect. If the program has not initialised MPI,
 * cdsm_init() calls MPI_Init_thread(MPI_THREAD_MULTIPLE) and cdsm_finalize() will call
 * MPI_Finalize(). If the program initialised MPI itself, it must have asked for
 * MPI_THREAD_MULTIPLE. The library communicates on its own duplicate of
 * MPI_COMM_WORLD and never disturbs the program's use of it.
 *
 * Spares (CDSM_SPARES=k): the last k processes of the job do not return from
 * cdsm_init() while the run goes well. When a working rank's process dies, one of them
 * returns as that rank (cdsm_rank()), and the program runs again from its start while
 * the library replays the lost rank's synchronisations from the survivors' logs (the
 * program must be piecewise deterministic and race-free). A spare never needed ends
 * inside cdsm_init() with exit status 0 when the run ends (the documented exit of this
 * call); a spare that cannot take over ends with CDSM_EXIT_PEER_LOST.
 *
 * Not thread-safe; call once per process, from the thread that will use shared memory.
 *
 * @param argc  pointer to main's argc, or NULL
 * @param argv  pointer to main's argv, or NULL
 * @return CDSM_OK; CDSM_ERR_CONFIG (bad or unknown CDSM_* value, named in the message);
 *         CDSM_ERR_STATE (already initialised); CDSM_ERR_MPI_THREAD (MPI initialised
 *         without MPI_THREAD_MULTIPLE); CDSM_ERR_MPI; CDSM_ERR_HEAP_MAP (the shared heap
 *         could not be mapped at the same address on every rank); CDSM_ERR_NET (the
 *         doorbell sockets could not be set up); CDSM_ERR_NOMEM.
 */
int cdsm_init(int *argc, char ***argv);

/**
 * @brief Finish: a final barrier, stop the service thread, release the heap.
 *
 * Collective. Prints the statistics if CDSM_STATS >= 1. Calls MPI_Finalize() only if
 * cdsm_init() initialised MPI. Shared memory must not be used afterwards.
 * @return CDSM_OK; CDSM_ERR_STATE (not initialised); CDSM_ERR_MPI.
 */
int cdsm_finalize(void);

/** @brief This process's rank (0..cdsm_nranks()-1), or -1 before cdsm_init(). Thread-safe. */
int cdsm_rank(void);

/** @brief Number of ranks running the program, or -1 before cdsm_init(). Thread-safe. */
int cdsm_nranks(void);

/** @brief The DSM page size in bytes (a multiple of the OS page), or 0 before init. */
size_t cdsm_page_size(void);

/** @brief Number of lock ids available (valid ids are 0..cdsm_nlocks()-1), or 0 before init. */
int cdsm_nlocks(void);

/**
 * @brief Collective allocation from the common arena: the same address on every rank.
 *
 * Every rank must call cdsm_alloc() with the same sizes in the same order (as with MPI
 * collectives); no messages are exchanged. The memory is zero-filled at first use and
 * 64-byte aligned (page-aligned when @p size is at least one page). With CDSM_CHECK=1 the
 * sizes are compared across ranks and a mismatch is an error.
 *
 * @param size  bytes, > 0
 * @param out   receives the address
 * @return CDSM_OK; CDSM_ERR_INVALID_ARG (size 0 or out NULL); CDSM_ERR_NO_SPACE (the
 *         common arena is exhausted); CDSM_ERR_STATE; CDSM_ERR_MISMATCH (CDSM_CHECK=1 and
 *         ranks asked for different sizes).
 */
int cdsm_alloc(size_t size, void **out);

/**
 * @brief Non-collective allocation from this rank's own arena.
 *
 * The address is valid on every rank (a pointer stored in shared memory can be followed
 * anywhere after synchronisation). Only the allocating rank may free it.
 * @return CDSM_OK; CDSM_ERR_INVALID_ARG; CDSM_ERR_NO_SPACE; CDSM_ERR_STATE.
 */
int cdsm_malloc(size_t size, void **out);

/**
 * @brief Free memory from cdsm_alloc() (collective: every rank frees it, in the same
 * order) or from cdsm_malloc() (only the rank that allocated it). NULL is ignored.
 * @return CDSM_OK; CDSM_ERR_INVALID_ARG (not the start of a live allocation, or another
 *         rank's private allocation); CDSM_ERR_STATE.
 */
int cdsm_free(void *ptr);

/**
 * @brief Acquire lock @p id (blocking). Brings in the write notices of every interval
 *        that happened before the release this acquire follows.
 *
 * Locks are not recursive. Not thread-safe (the application thread only).
 * @return CDSM_OK; CDSM_ERR_INVALID_ARG (id out of range, or already held);
 *         CDSM_ERR_STATE; CDSM_ERR_MPI; CDSM_ERR_NET.
 */
int cdsm_lock_acquire(int id);

/**
 * @brief Release lock @p id, held by this rank.
 * @return CDSM_OK; CDSM_ERR_INVALID_ARG (id out of range or not held); CDSM_ERR_STATE;
 *         CDSM_ERR_MPI.
 */
int cdsm_lock_release(int id);

/**
 * @brief Global barrier over all ranks: afterwards every rank sees every write made
 *        before any rank entered it. May run garbage collection of diffs and notices.
 *
 * Collective. Not thread-safe (the application thread only).
 * @return CDSM_OK; CDSM_ERR_STATE; CDSM_ERR_MPI; CDSM_ERR_NET.
 */
int cdsm_barrier(void);

/**
 * Exit status of a process whose access miss needed a rank that was lost (its process
 * exited or was killed) when no spare can take its place: a load instruction cannot
 * return an error, so the process ends with a message naming the lost rank. API calls
 * in the same situation return CDSM_ERR_PEER_LOST instead (cdsm_finalize() too, without
 * calling MPI_Finalize, which would wait forever for the dead process).
 */
#define CDSM_EXIT_PEER_LOST 75

/**
 * Exit status of a working process that fenced itself: for three quarters of
 * CDSM_HEARTBEAT_TIMEOUT it heard no heartbeat from at least half of the other live
 * processes (its node's link was cut, or it was frozen), so the others, the majority,
 * are about to declare it lost and replay its rank on a spare. It ends at once, from its
 * service thread, so that it can never again write shared state the others see (no split
 * brain). A tie (exactly half) is won by the side that hears the lowest live process.
 */
#define CDSM_EXIT_FENCED 76

/**
 * @brief Register a private region of the program (not in the shared heap) to be saved
 *        in every checkpoint of this rank, under @p name.
 *
 * Checkpoints are taken at barriers (CDSM_CKPT_DIR and the CDSM_CKPT_* policy, see
 * docs/CONFIG.md). A program that wants to resume from one registers, with the shared
 * heap that checkpoints hold anyway, every private variable it needs to continue after
 * a barrier: its registered regions must describe, at each cdsm_barrier(), where it goes
 * on from there (e.g. the next iteration number, updated before the barrier). The bytes
 * are copied at the checkpoint; the region must stay valid until cdsm_unprotect() or
 * cdsm_finalize(). Not thread-safe (the application thread only).
 * @param name  1..255 bytes, no '/', not starting with '.'; unique among registered regions
 * @return CDSM_OK; CDSM_ERR_STATE (not initialised); CDSM_ERR_INVALID_ARG (bad or
 *         duplicate name, NULL pointer, size 0, region inside the shared heap); CDSM_ERR_NOMEM.
 */
int cdsm_protect(const char *name, void *ptr, size_t size);

/**
 * @brief Declare that this program can resume from a checkpoint, and resume if this process
 *        is the replacement of a lost rank that has one.
 *
 * Call it once on every rank, after the shared allocations (cdsm_alloc()) and the
 * cdsm_protect() registrations of the state the program needs to go on, and before any
 * other synchronisation or access to shared memory. From then on, checkpoints and garbage
 * collection happen only at cdsm_resume_point() calls; a checkpoint there also makes every
 * page of the rank current, so that it depends on no diff held elsewhere, and the logs
 * older than every rank's last checkpoint are dropped (with spares too: the replacement
 * starts at the checkpoint, not at the program's start).
 *
 * In the replacement of a lost rank whose last checkpoint is usable, the shared heap, the
 * library's state and the registered regions are restored as they were at that
 * cdsm_resume_point(), *resumed is set to 1, and the program must go on from the point its
 * registered regions describe (skipping its initialisation); the rest of the lost rank's
 * work is replayed from the survivors' logs as usual. Everywhere else *resumed is 0 and
 * the program starts normally.
 *
 * Not thread-safe (the application thread only).
 * @return CDSM_OK; CDSM_ERR_STATE (not initialised, called twice); CDSM_ERR_INVALID_ARG
 *         (resumed NULL; a region registered under a different size than the checkpoint's,
 *         or missing); CDSM_ERR_PROTOCOL (shared memory written before it in a replacement);
 *         CDSM_ERR_PEER_LOST.
 */
int cdsm_resume(int *resumed);

/**
 * @brief A barrier (as cdsm_barrier()) that is also a point the program can resume from:
 *        the regions it registered with cdsm_protect() must say, when it is called, where
 *        the program goes on after it (e.g. the next iteration number, updated before the
 *        call). After cdsm_resume(), checkpoints are taken only here, when this rank's
 *        CDSM_CKPT_* policy says one is due (any rank's wish makes a garbage collection at
 *        which every rank commits one) or when a rank's log passes CDSM_GC_BOUND.
 *
 * Collective. Not thread-safe (the application thread only).
 * @return as cdsm_barrier(); CDSM_ERR_STATE also when cdsm_resume() was not called.
 */
int cdsm_resume_point(void);

/**
 * @brief Stop saving the region registered under @p name.
 * @return CDSM_OK; CDSM_ERR_STATE; CDSM_ERR_INVALID_ARG (no region of that name).
 */
int cdsm_unprotect(const char *name);

/**
 * @brief The folder this run writes its checkpoint files to
 *        (<CDSM_CKPT_DIR>/job-<16 hex digits>), or NULL when checkpoints are off or the
 *        library is not initialised. The string stays valid until cdsm_finalize().
 */
const char *cdsm_checkpoint_dir(void);

/**
 * @brief printf to the job's standard output, committed: the text is held until the
 *        interval that produced it can no longer be redone (a restart manifest past it, or
 *        the end of a run that went well) and a replay never makes it appear twice.
 *
 * Each rank's outputs keep their order. A replacement restores a checkpoint at or after the
 * last manifest its lost process released output for (a program that does not resume
 * releases only at the end), so its replay never produces released output again. With
 * CDSM_OUTPUT_TAGS=1 (set by cmd/cdsmrun) each output also goes as one tagged line that
 * the launcher prints exactly once, dropping any repeat; without, the text is written as
 * is. Not thread-safe (the application thread only).
 * @return CDSM_OK; CDSM_ERR_STATE; CDSM_ERR_INVALID_ARG (fmt NULL or bad); CDSM_ERR_NOMEM.
 */
int cdsm_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/**
 * @brief Append @p len bytes to the file at @p path, committed as cdsm_printf() output:
 *        they are written (pwrite at their offset, so that writing them again changes
 *        nothing) only once the interval that produced them can no longer be redone.
 *
 * The file is this rank's own (another rank must use another path); it is created, or
 * emptied, at this rank's first cdsm_fwrite() to it. At most 31 files per rank.
 * Not thread-safe (the application thread only).
 * @return CDSM_OK; CDSM_ERR_STATE; CDSM_ERR_INVALID_ARG (NULL, empty or long path, too many
 *         files); CDSM_ERR_IO (the file cannot be created); CDSM_ERR_NOMEM.
 */
int cdsm_fwrite(const char *path, const void *data, size_t len);

/**
 * @brief Copy this rank's counters into @p out. Thread-safe.
 * @return CDSM_OK; CDSM_ERR_INVALID_ARG (out NULL); CDSM_ERR_STATE.
 */
int cdsm_stats_get(cdsm_stats_t *out);

/**
 * @brief Print this rank's counters, one "name value" line each, to @p f.
 * @return CDSM_OK; CDSM_ERR_INVALID_ARG (f NULL); CDSM_ERR_STATE.
 */
int cdsm_stats_print(FILE *f);

/**
 * @brief Sum @p mine over all ranks into @p total (collective; uses point-to-point
 *        messages of the library, so it is safe to call at any barrier-like point).
 * @return CDSM_OK; CDSM_ERR_INVALID_ARG; CDSM_ERR_STATE; CDSM_ERR_MPI.
 */
int cdsm_stats_reduce(const cdsm_stats_t *mine, cdsm_stats_t *total);

/** @brief Human-readable text of a status code. Never NULL. Thread-safe. */
const char *cdsm_strerror(int status);

/** @brief The status code's symbolic name ("CDSM_ERR_CONFIG"), never NULL. Thread-safe. */
const char *cdsm_status_name(int status);

/**
 * @brief The message of the last error decided in this process (empty if none), e.g.
 *        "CDSM_PAGE_SIZE=5000: not a multiple of the OS page size (4096)".
 */
const char *cdsm_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* CDSM_H */
