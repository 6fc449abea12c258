/* The diff archive: a rank's own interval records with their diffs, kept after garbage
 * collection when a replay must start from the beginning (causal logging on, spares, no
 * checkpoints to restore: DESIGN.md, "two ways back"). Garbage collection still clears the protocol's
 * state (notices, other ranks' records, twins), so a long run does not slow down; only
 * the diffs this rank created stay, outside the live protocol, for a replacement to fetch.
 * Their memory is the counter archive_bytes, not part of what triggers collection. */
#include <stdlib.h>

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
} A;

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
              "the diff archive holds %llu KiB on this rank and grows for the whole run: with spares and no "
              "checkpoint to restore, a replacement replays from the start and needs every diff; to bound it, "
              "call cdsm_resume and set CDSM_CKPT_DIR (next warning at %llu KiB; CDSM_ARCHIVE_WARN)",
              (unsigned long long)(bytes >> 10), (unsigned long long)(A.warn_next >> 10));
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
        cdsm_check(v != NULL); /* out of memory: the run could no longer be replayed */
        A.arch = v;
    }
    A.arch[A.narch++] = iv;
    uint64_t bytes = cdsm__iv_bytes(iv);
    for (uint32_t j = 0; j < iv->npages; j++) bytes += sizeof(cdsm__diffrec_t) + iv->diffs[j]->len;
    g->archive_bytes += bytes;
    cdsm__st.archive_bytes = g->archive_bytes;
    warn_growth(g->archive_bytes);
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
    return lo < A.narch && A.arch[lo]->idx == idx ? A.arch[lo] : NULL;
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
    A.arch = NULL;
    A.narch = A.cap = 0;
}
