/* The diff archive: a rank's own interval records with their diffs, kept after garbage
 * collection when a replay must start from the beginning (causal logging on, spares, no
 * checkpoints to restore: DESIGN.md, "two ways back"). Garbage collection still clears the protocol's
 * state (notices, other ranks' records, twins), so a long run does not slow down; only
 * the diffs this rank created stay, outside the live protocol, for a replacement to fetch.
 * Their memory is the counter archive_bytes, not part of what triggers collection.
 *
 * Past CDSM_ARCHIVE_MEM the oldest intervals' diffs go to a file (unlinked at once, so it
 * goes with the process however it ends) and are read back, one interval at a time, when
 * a replacement asks for them; their records stay in memory (a replay's log lists them). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"
#include "recovery.h"

static struct archive {
    cdsm__interval_t **arch;
    size_t narch, cap;
    /* Per rank: the other ranks' records this rank collected, as sent on the wire. With
     * spares, two ranks lost together (a node) replay from the start with each other's
     * records from the survivors, and nobody else keeps them once collected. */
    cdsm__buf_t *others;
    uint32_t *others_count;
    uint64_t warn_next; /* archive size of the next warning (0: CDSM_ARCHIVE_WARN) */
    /* The spill file: arch[0..spilled) have their diffs there, at off[i] (len[i] bytes). */
    uint64_t *off;
    uint32_t *len;
    size_t spilled;
    size_t loaded;      /* the spilled interval whose diffs are read back now (SIZE_MAX: none) */
    int fd;             /* -1 until the first spill */
    int spill_off;      /* the file could not be written: everything stays in memory */
    uint64_t file_end, mem; /* bytes in the file; diff bytes in memory */
} A = {.fd = -1, .loaded = SIZE_MAX};

int cdsm__archive_needed(void)
{
    /* Only a replacement replays, and only spares become replacements: without them a
     * loss ends the run, and an archive would grow for the whole run for nobody. With
     * spares, a replacement of an unmodified program replays from the start: checkpoints
     * do not bound the log. A program in resume mode is restored from its checkpoints,
     * taken at every collection (without a checkpoint folder it replays from the start). */
    return cdsm__det_enabled() && cdsm__cfg.spares && (!cdsm__ckpt_enabled() || !cdsm__mode.resume_mode);
}

/* The archive grows for the whole run and nothing bounds it: say so before it costs the
 * node its memory, at CDSM_ARCHIVE_WARN and at each doubling (sizes in KiB: the bound may
 * be small). */
static void warn_growth(uint64_t bytes)
{
    if (!cdsm__cfg.archive_warn) return;
    if (!A.warn_next) A.warn_next = cdsm__cfg.archive_warn;
    if (bytes < A.warn_next) return;
    while (A.warn_next <= bytes) A.warn_next *= 2;
    cdsm__log(CDSM_LOG_WARN,
              "the diff archive holds %llu KiB on this rank and grows for the whole run (%llu KiB of it in its file "
              "on disk: CDSM_ARCHIVE_MEM): with spares and no checkpoint to restore, a replacement replays from the "
              "start and needs every diff; to bound it, call cdsm_resume and set CDSM_CKPT_DIR (next warning at "
              "%llu KiB; CDSM_ARCHIVE_WARN)",
              (unsigned long long)(bytes >> 10), (unsigned long long)(A.file_end >> 10),
              (unsigned long long)(A.warn_next >> 10));
}

/* ---- the spill file ---------------------------------------------------------------------- */

/* Diff memory of the archive in memory: archive_bytes and the bound's count. */
static void count_archived(int64_t delta)
{
    cdsm__g.archive_bytes += (uint64_t)delta;
    cdsm__st.archive_bytes = cdsm__g.archive_bytes;
    A.mem += (uint64_t)delta;
}

/* The same diffs leaving or coming back to memory: in log_bytes too. */
static void count_mem(int64_t delta)
{
    cdsm__log_bytes_add(delta);
    count_archived(delta);
}

static void drop_diffs(cdsm__interval_t *iv)
{
    int64_t freed = 0;
    for (uint32_t j = 0; j < iv->npages; j++) {
        if (!iv->diffs[j]) continue;
        freed += (int64_t)(sizeof(cdsm__diffrec_t) + iv->diffs[j]->len);
        cdsm__pool_free(iv->diffs[j], sizeof(cdsm__diffrec_t) + iv->diffs[j]->len);
        iv->diffs[j] = NULL;
    }
    count_mem(-freed);
}

/* The file, made at the first spill: CDSM_CKPT_DIR, else TMPDIR, else /tmp. */
static int spill_open(void)
{
    const char *dir = cdsm__cfg.ckpt_dir[0] ? cdsm__cfg.ckpt_dir : getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    A.fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (A.fd < 0) {
        char path[CDSM_CFG_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/cdsm-archive-XXXXXX", dir);
        A.fd = mkostemp(path, O_CLOEXEC);
        if (A.fd >= 0) unlink(path);
    }
    if (A.fd >= 0) return 0;
    cdsm__log(CDSM_LOG_ERROR, "cannot make the diff archive's file in %s: %s; the archive stays in memory", dir,
              strerror(errno));
    return -1;
}

static int write_all(const void *p, size_t n, uint64_t at)
{
    for (size_t done = 0; done < n;) {
        ssize_t w = pwrite(A.fd, (const char *)p + done, n - done, (off_t)(at + done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        done += (size_t)w;
    }
    return 0;
}

/* Write the oldest interval still in memory to the file and free its diffs. */
static int spill_one(void)
{
    cdsm__interval_t *iv = A.arch[A.spilled];
    cdsm__buf_t b = {0};
    for (uint32_t j = 0; j < iv->npages; j++) {
        cdsm__buf_put_u32(&b, iv->diffs[j]->len);
        cdsm__buf_put(&b, iv->diffs[j]->data, iv->diffs[j]->len);
    }
    int rc = write_all(b.p, b.len, A.file_end);
    if (rc) {
        cdsm__log(CDSM_LOG_ERROR, "cannot write the diff archive's file: %s; the archive stays in memory",
                  strerror(errno ? errno : ENOSPC));
    } else {
        A.off[A.spilled] = A.file_end;
        A.len[A.spilled] = (uint32_t)b.len;
        A.file_end += b.len;
        CDSM_STAT_ADD(archive_disk_bytes, b.len);
        drop_diffs(iv);
        A.spilled++;
    }
    cdsm__buf_free(&b);
    return rc;
}

/* Keep the diffs in memory within CDSM_ARCHIVE_MEM (the newest interval always stays). */
static void spill(void)
{
    if (A.loaded != SIZE_MAX) { /* what was read back goes first */
        drop_diffs(A.arch[A.loaded]);
        A.loaded = SIZE_MAX;
    }
    while (!A.spill_off && A.mem > cdsm__cfg.archive_mem && A.spilled + 1 < A.narch) {
        if ((A.fd < 0 && spill_open()) || spill_one()) A.spill_off = 1;
    }
}

/* Read interval i's diffs back from the file (the one read before is dropped). */
static int load(size_t i)
{
    cdsm__interval_t *iv = A.arch[i];
    if (A.loaded == i) return 0;
    if (A.loaded != SIZE_MAX) drop_diffs(A.arch[A.loaded]);
    A.loaded = SIZE_MAX;
    uint8_t *p = malloc(A.len[i] ? A.len[i] : 1);
    ssize_t r = p ? pread(A.fd, p, A.len[i], (off_t)A.off[i]) : -1;
    cdsm__rd_t rd = {p, A.len[i], 0, 0};
    int64_t bytes = 0;
    for (uint32_t j = 0; r == (ssize_t)A.len[i] && j < iv->npages && !rd.bad; j++) {
        uint32_t n = cdsm__rd_u32(&rd);
        const void *d = cdsm__rd_take(&rd, n);
        if (!d) break;
        iv->diffs[j] = cdsm__pool_alloc(sizeof(cdsm__diffrec_t) + n);
        cdsm_check(iv->diffs[j] != NULL);
        iv->diffs[j]->len = n;
        memcpy(iv->diffs[j]->data, d, n);
        bytes += (int64_t)(sizeof(cdsm__diffrec_t) + n);
    }
    free(p);
    count_mem(bytes);
    CDSM_STAT_ADD(archive_disk_reads, 1);
    A.loaded = i;
    if (r == (ssize_t)A.len[i] && !rd.bad && rd.pos == rd.len) return 0;
    cdsm__log(CDSM_LOG_ERROR, "the diff archive's file: interval %u of this rank cannot be read back (%s)", iv->idx,
              r < 0 ? strerror(errno) : "short or malformed");
    return -1;
}

void cdsm__archive_keep(cdsm__interval_t *iv)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm_check(iv->rank == cdsm__w.rank && iv->diffs);
    /* Lazy diffs still pending are made now, while their twins exist. */
    for (uint32_t j = 0; j < iv->npages; j++) cdsm__own_diff(iv, j);
    if (A.narch == A.cap) {
        A.cap = A.cap ? A.cap * 2 : 1024;
        cdsm__interval_t **v = realloc(A.arch, A.cap * sizeof *v);
        uint64_t *off = realloc(A.off, A.cap * sizeof *off);
        if (off) A.off = off;
        uint32_t *len = realloc(A.len, A.cap * sizeof *len);
        if (len) A.len = len;
        cdsm_check(v && off && len); /* out of memory: the run could no longer be replayed */
        A.arch = v;
    }
    A.arch[A.narch++] = iv;
    g->archive_bytes += cdsm__iv_bytes(iv);
    int64_t diffs = 0;
    for (uint32_t j = 0; j < iv->npages; j++) diffs += (int64_t)(sizeof(cdsm__diffrec_t) + iv->diffs[j]->len);
    count_archived(diffs);
    if (cdsm__cfg.archive_mem) spill();
    warn_growth(g->archive_bytes + A.file_end);
}

const cdsm__interval_t *cdsm__archive_find(uint32_t idx)
{
    /* Kept in increasing idx order. */
    size_t lo = 0, hi = A.narch;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (A.arch[mid]->idx < idx) lo = mid + 1;
        else hi = mid;
    }
    if (lo == A.narch || A.arch[lo]->idx != idx) return NULL;
    if (lo < A.spilled && load(lo)) return NULL;
    return A.arch[lo];
}

uint32_t cdsm__archive_count(void)
{
    return (uint32_t)A.narch;
}

void cdsm__archive_foreach(void (*fn)(const cdsm__interval_t *iv, void *arg), void *arg)
{
    for (size_t i = 0; i < A.narch; i++) fn(A.arch[i], arg);
}

void cdsm__archive_other(const cdsm__interval_t *iv)
{
    cdsm__state_t *g = &cdsm__g;
    if (!A.others) {
        A.others = calloc((size_t)cdsm__w.n, sizeof *A.others);
        A.others_count = calloc((size_t)cdsm__w.n, sizeof *A.others_count);
        cdsm_check(A.others && A.others_count); /* out of memory: a node's loss could no longer be replayed */
    }
    size_t before = A.others[iv->rank].len;
    cdsm__iv_serialize(&A.others[iv->rank], iv);
    A.others_count[iv->rank]++;
    g->archive_bytes += A.others[iv->rank].len - before;
    cdsm__st.archive_bytes = g->archive_bytes;
}

uint32_t cdsm__archive_other_records(int q, const cdsm__buf_t **records)
{
    *records = A.others ? &A.others[q] : NULL;
    return A.others ? A.others_count[q] : 0;
}

void cdsm__archive_fini(void)
{
    if (A.others)
        for (int q = 0; q < cdsm__w.n; q++) cdsm__buf_free(&A.others[q]);
    free(A.others);
    free(A.others_count);
    A.others = NULL;
    A.others_count = NULL;
    for (size_t i = 0; i < A.narch; i++) cdsm__iv_free(A.arch[i]);
    free(A.arch);
    free(A.off);
    free(A.len);
    if (A.fd >= 0) close(A.fd);
    memset(&A, 0, sizeof A);
    A.fd = -1;
    A.loaded = SIZE_MAX;
}
