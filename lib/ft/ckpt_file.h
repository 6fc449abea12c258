/* Checkpoint files: one HDF5 file per rank and checkpoint (internal, never installed).
 *
 * This is only the file layer: what a checkpoint holds, how it is written so that a crash
 * never leaves a half-written file under a committed name, and how it is read back with
 * every byte verified. The layout is documented in docs/CHECKPOINT_FORMAT.md.
 *
 * A committed checkpoint is <dir>/rank<R>.ckpt<SEQ>.h5 (decimal, no padding). It is written
 * as <dir>/.rank<R>.ckpt<SEQ>.h5.tmp<PID> and becomes committed only by fsync + rename() +
 * fsync of the folder; a temporary file is never read as a checkpoint. */
#ifndef CDSM_CKPT_FILE_H
#define CDSM_CKPT_FILE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CDSM_CKPT_MAGIC "CDSM-CKPT"
#define CDSM_CKPT_FORMAT_VERSION 1u
/* Longest name of a private region (an HDF5 link name under /private). */
#define CDSM_CKPT_NAME_MAX 255
/* cdsm__ckpt_read(): accept any rank / any job id. Job ids are never 0. */
#define CDSM_CKPT_ANY_RANK (-1)
#define CDSM_CKPT_ANY_JOB 0u

/* A named private region of the program (registered with cdsm_protect). */
typedef struct cdsm__ckpt_region {
    char *name;    /* 1..CDSM_CKPT_NAME_MAX bytes, no '/', not starting with '.' */
    uint8_t *data; /* size bytes */
    uint64_t size;
} cdsm__ckpt_region_t;

/* The content of one checkpoint. The writer reads it (the caller owns every array); the
 * reader fills it with arrays of its own, released by cdsm__ckpt_free(). */
typedef struct cdsm__ckpt {
    uint32_t format_version; /* set by the reader; the writer always writes the current one */
    uint64_t job_id;         /* identifies the run (never 0) */
    uint32_t rank, nranks;
    uint64_t seq;            /* this checkpoint's number, from 1 */
    uint64_t base_seq;       /* 0: full; else incremental on top of checkpoint base_seq < seq */
    uint64_t epoch;          /* barrier epoch at which it was taken */
    uint32_t page_size;
    int64_t created;         /* Unix seconds; 0 in the writer's input: now */

    uint32_t *vc;            /* vector clock [nranks] */
    uint32_t nintervals;
    uint32_t *intervals;     /* interval counters [nintervals] (meaning set by the DSM layer) */

    /* Pages: in a full checkpoint every valid page; in an incremental one the pages whose
     * bytes or state changed since base_seq. page_index strictly increasing. */
    uint32_t npages;
    uint32_t *page_index;    /* [npages] page numbers in the shared heap */
    uint8_t *page_state;     /* [npages] CDSM_PG_* */
    uint8_t *page_data;      /* [npages * page_size] */
    uint32_t *applied;       /* [npages * nranks]: per page, the intervals applied of each rank */

    uint32_t nlocks;
    uint8_t *lock_state;     /* [nlocks] one state byte per lock */
    uint32_t ntails;
    uint32_t *lock_tails;    /* [ntails * 2] (lock, rank): the locks this rank manages whose
                              * queue ends at another rank (a whole-job restart's tails) */
    uint32_t nlog;
    uint64_t *log_pos;       /* [nlog] log positions */
    uint32_t nregions;
    cdsm__ckpt_region_t *regions; /* [nregions], names unique */
} cdsm__ckpt_t;

/* Whether s is a valid private region name (see cdsm__ckpt_region_t). */
int cdsm__ckpt_region_name_ok(const char *s);

/* CRC-32C (Castagnoli) of n bytes, chained: crc32c(crc32c(0, a), b) == crc32c(0, a||b).
 * Uses the SSE4.2 instruction where the CPU has it. The _sw variant is the table version. */
uint32_t cdsm__ckpt_crc32c(uint32_t crc, const void *buf, size_t n);
uint32_t cdsm__ckpt_crc32c_sw(uint32_t crc, const void *buf, size_t n);

/* "<dir>/rank<R>.ckpt<SEQ>.h5" into buf; CDSM_ERR_INVALID_ARG if it does not fit. */
int cdsm__ckpt_path(char *buf, size_t size, const char *dir, uint32_t rank, uint64_t seq);

/* Write c as <dir>/rank<c->rank>.ckpt<c->seq>.h5: temporary file, fsync, rename, fsync of
 * dir. On error nothing is left under the committed name (the temporary file is removed)
 * and a committed file of the same name, if any, is untouched. */
int cdsm__ckpt_write(const char *dir, const cdsm__ckpt_t *c);

/* Whether checkpoint files can be written and read: HDF5 is loaded at the first use, not
 * at start-up (h5shim.h). CDSM_OK, or CDSM_ERR_IO (logged) naming the library and why. */
int cdsm__ckpt_files_ready(void);

/* Read and verify the checkpoint at path into *out (zeroed first; on error it holds
 * nothing to free). expect_rank (or CDSM_CKPT_ANY_RANK) and expect_job (or
 * CDSM_CKPT_ANY_JOB) must match the file. Errors, each naming the file:
 * CDSM_ERR_IO (missing / unreadable), CDSM_ERR_CORRUPT (truncated, checksum mismatch,
 * wrong magic, unknown format version, foreign rank or job, uncommitted temporary file,
 * inconsistent shapes), CDSM_ERR_NOMEM. */
int cdsm__ckpt_read(const char *path, int expect_rank, uint64_t expect_job, cdsm__ckpt_t *out);

void cdsm__ckpt_free(cdsm__ckpt_t *c);

/* fsync a file (dir 0) or a folder (dir 1); -1 with errno on failure. */
int cdsm__fsync_path(const char *path, int dir);

/* The whole-job restart manifest, <job folder>/manifest (manifest.c): written by
 * rank 0 once every rank has committed its checkpoint of one resume point (the end of
 * that collection proves it), by temporary file, fsync, rename and fsync of the folder. */
typedef struct cdsm__manifest {
    uint64_t job;    /* the job whose checkpoints it names */
    uint32_t nranks;
    uint32_t epoch;  /* every rank's checkpoint taken at this barrier */
} cdsm__manifest_t;
int cdsm__manifest_write(const char *dir, const cdsm__manifest_t *m);
/* Read and verify <dir>/manifest. Errors name the file: CDSM_ERR_IO (none: the job never
 * committed a checkpoint on every rank at one resume point, or dir is not a job folder),
 * CDSM_ERR_CORRUPT (malformed, checksum). */
int cdsm__manifest_read(const char *dir, cdsm__manifest_t *m);
/* A rank's output release mark, <job folder>/rank<R>.released (manifest.c): every output
 * it produced before barrier upto has been emitted. Written by temporary file and rename
 * (no fsync). Read: *upto = 0 when there is none; CDSM_ERR_CORRUPT names a damaged file
 * or one of another job or rank. */
int cdsm__output_mark_write(const char *dir, uint64_t job, int rank, uint32_t upto);
int cdsm__output_mark_read(const char *dir, uint64_t job, int rank, uint32_t *upto);

/* The highest SEQ of a committed file rank<rank>.ckpt<SEQ>.h5 in dir, by name only
 * (temporary files and other names are ignored); *seq = 0 when there is none. */
int cdsm__ckpt_latest(const char *dir, uint32_t rank, uint64_t *seq);

/* Remove rank's temporary files left in dir by a killed writer (call only when no writer
 * of that rank runs). *removed (may be NULL) counts them. */
int cdsm__ckpt_remove_temps(const char *dir, uint32_t rank, unsigned *removed);

/* Restore checkpoint seq of rank: read it and follow base_seq back to a full checkpoint,
 * verifying every file of the chain (same job, rank, nranks and page size; base_seq
 * strictly decreasing). *out is the state of checkpoint seq as a full checkpoint: its
 * header and non-page state, base_seq = 0, and the union of the chain's pages where the
 * newest record of each page wins. */
int cdsm__ckpt_restore_chain(const char *dir, uint32_t rank, uint64_t job, uint64_t seq,
                             cdsm__ckpt_t *out);

#ifdef __cplusplus
}
#endif
#endif
