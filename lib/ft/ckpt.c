/* Checkpoints at barriers: the policy, the snapshot, the writer thread, the registry of
 * private regions (cdsm_protect) and the garbage collection of checkpoint files.
 *
 * The program's thread only copies: the pages changed since the previous checkpoint (or
 * every page ever changed, for a full one), their states and applied vectors, the vector
 * clock, counters, lock states and the registered private regions. A writer thread, asleep
 * on a condition variable when idle, turns that copy into an HDF5 file (ckpt_file.c:
 * temporary name, fsync, rename). One checkpoint is in flight at a time: a
 * snapshot due while the previous one is still being written waits for it, and that wait
 * is counted as stall. Files of this run go to <CDSM_CKPT_DIR>/job-<job id>/. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_file.h"
#include "inject.h"
#include "recovery.h"

/* Layout of the checkpoint's interval counters and log positions (docs/CHECKPOINT_FORMAT.md). */
enum { IV_OWN = 0, IV_SYNC = 1, IV_EPOCH = 2, IV_BASES = 3 };
enum { LP_SYNC = 0, LP_EPOCH = 1, LP_DET_LOGGED = 2, LP_RESUME = 3, LP_COUNT = 4 };

static struct {
    int on;
    char dir[CDSM_CFG_PATH_MAX + 64];
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, stop;
    cdsm__ckpt_t *job;         /* snapshot waiting for or being written */
    int busy;                  /* a snapshot is queued or being written */
    int last_failed;           /* the last write failed: the next one is full */
    uint64_t next_seq;         /* sequence number of the next checkpoint */
    uint64_t committed_seq;    /* last committed, 0: none */
    uint64_t chain_first;      /* the full checkpoint the committed chain starts at */
    uint64_t prev_chain_first; /* the chain before it (kept in resume mode, see remove_old_files) */
    uint64_t oldest_file;      /* lowest seq that may still exist on disk */
    cdsm__ckpt_pos_t committed;
    /* policy (program thread) */
    uint64_t barriers_since;
    uint64_t last_ns;
    uint64_t log_at_last;
    uint64_t taken;
} W = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .next_seq = 1, .oldest_file = 1};

/* Replacement: the lost rank's checkpoint that cdsm_resume() restores. */
static cdsm__ckpt_t *restore_ck;
static int restore_held; /* a replacement releases the output its checkpoint holds */
static uint64_t restore_seq, restore_read_ns;
static int restore_is_restart; /* restore_ck comes from CDSM_RESTART (another job's folder) */
static uint32_t restore_released; /* a restart: the stopped rank's release mark */

int cdsm__ckpt_enabled(void)
{
    return W.on;
}

/* ---- the writer thread ------------------------------------------------------------- */

static void snapshot_free(cdsm__ckpt_t *c)
{
    cdsm__ckpt_free(c); /* NULL-safe; frees what the snapshot allocated */
    free(c);
}

/* The queue tails of the locks this rank manages that end elsewhere (at a checkpoint's
 * barrier nothing is in flight: each tail holds the token). A whole-job restart puts them
 * back; without them every queue would end at its manager, which may hold no token. */
static int snapshot_tails(cdsm__ckpt_t *c)
{
    uint32_t n = 0, me = (uint32_t)cdsm__w.rank, nr = (uint32_t)cdsm__w.n;
    for (uint32_t l = me; l < cdsm__lk.nlocks; l += nr) n += cdsm__lock_tail(l) != cdsm__w.rank;
    c->lock_tails = malloc(((size_t)n + 1) * 2 * sizeof *c->lock_tails);
    if (!c->lock_tails) return -1;
    c->ntails = 0;
    for (uint32_t l = me; l < cdsm__lk.nlocks; l += nr) {
        int t = cdsm__lock_tail(l);
        if (t == cdsm__w.rank) continue;
        c->lock_tails[2 * c->ntails] = l;
        c->lock_tails[2 * c->ntails++ + 1] = (uint32_t)t;
    }
    return 0;
}

/* Files older than the committed chain are no longer needed by anyone: a replay starts at
 * the last committed checkpoint, and determinants older than it are dropped by the others
 * once they learn of it. In resume mode the chain before it is kept too: a replacement
 * restores a checkpoint only once the collection it was taken at has ended everywhere, and
 * this rank may die before that. */
static void remove_old_files(void)
{
    char path[sizeof W.dir + 64];
    uint64_t keep = __atomic_load_n(&cdsm__mode.resume_mode, __ATOMIC_RELAXED) ? W.prev_chain_first : W.chain_first;
    for (uint64_t s = W.oldest_file; s < keep; s++) {
        if (cdsm__ckpt_path(path, sizeof path, W.dir, (uint32_t)cdsm__w.rank, s)) continue;
        if (unlink(path) == 0) {
            CDSM_STAT_ADD(ckpt_files_removed, 1);
            cdsm__inject(cdsm__w.rank, "ckpt_collect");
        }
        else if (errno != ENOENT)
            cdsm__log(CDSM_LOG_WARN, "checkpoint garbage collection: cannot remove %s: %s", path, strerror(errno));
    }
    if (keep > W.oldest_file) W.oldest_file = keep;
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&W.mu);
    for (;;) {
        while (!W.job && !W.stop) pthread_cond_wait(&W.cv, &W.mu);
        if (!W.job) break;
        cdsm__ckpt_t *c = W.job;
        pthread_mutex_unlock(&W.mu);
        uint64_t t0 = cdsm__mono_ns();
        int rc = cdsm__ckpt_write(W.dir, c);
        uint64_t us = (cdsm__mono_ns() - t0) / 1000;
        char path[sizeof W.dir + 64];
        struct stat sb;
        if (!rc && !cdsm__ckpt_path(path, sizeof path, W.dir, c->rank, c->seq) && !stat(path, &sb))
            CDSM_STAT_ADD(ckpt_bytes, (uint64_t)sb.st_size);
        CDSM_STAT_ADD(ckpt_write_us, us);
        pthread_mutex_lock(&W.mu);
        if (rc) {
            /* Logged by the file layer; the previous checkpoint stays the committed one. */
            W.last_failed = 1;
        } else {
            W.last_failed = 0;
            W.committed_seq = c->seq;
            if (!c->base_seq) {
                W.prev_chain_first = W.chain_first;
                W.chain_first = c->seq;
            }
            /* With spares, only a checkpoint a replacement can start from lets the others
             * drop determinants (an unmodified program is replayed from its start). */
            if (!cdsm__cfg.spares || c->log_pos[LP_RESUME]) {
                W.committed.sync_seq = (uint32_t)c->log_pos[LP_SYNC];
                W.committed.epoch = (uint32_t)c->log_pos[LP_EPOCH];
            }
            CDSM_STAT_ADD(ckpts, 1);
            if (!c->base_seq) CDSM_STAT_ADD(ckpts_full, 1);
            CDSM_STAT_ADD(ckpt_pages, c->npages);
            cdsm__inject(cdsm__w.rank, "ckpt_commit");
            remove_old_files();
        }
        W.job = NULL;
        W.busy = 0;
        pthread_cond_broadcast(&W.cv);
        pthread_mutex_unlock(&W.mu);
        snapshot_free(c);
        pthread_mutex_lock(&W.mu);
    }
    pthread_mutex_unlock(&W.mu);
    return NULL;
}

static int mkdir_p(const char *path)
{
    char tmp[sizeof W.dir];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0777) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0777) && errno != EEXIST ? -1 : 0;
}

static int restart_prepare(void);

int cdsm__ckpt_init(void)
{
    W.on = cdsm__cfg.ckpt_dir[0] != '\0';
    W.last_ns = cdsm__mono_ns();
    if (cdsm__cfg.restart[0]) {
        int rc = restart_prepare();
        if (rc) return rc;
    }
    if (!W.on) return CDSM_OK;
    snprintf(W.dir, sizeof W.dir, "%s/job-%016" PRIx64, cdsm__cfg.ckpt_dir, cdsm__g.job_id);
    if (mkdir_p(W.dir))
        return cdsm__error(CDSM_ERR_IO, "CDSM_CKPT_DIR=%s: cannot create %s: %s", cdsm__cfg.ckpt_dir, W.dir,
                           strerror(errno));
    if (access(W.dir, W_OK | X_OK))
        return cdsm__error(CDSM_ERR_IO, "CDSM_CKPT_DIR=%s: %s is not writable: %s", cdsm__cfg.ckpt_dir, W.dir,
                           strerror(errno));
    /* HDF5 is loaded at the first checkpoint (h5shim.h): fail here, not at a barrier. */
    int rc = cdsm__ckpt_files_ready();
    if (rc) return rc;
    if (pthread_create(&W.th, NULL, writer_main, NULL))
        return cdsm__error(CDSM_ERR_NOMEM, "checkpoint writer thread");
    W.started = 1;
    return CDSM_OK;
}

/* Wait until the writer is idle; returns the microseconds waited. Caller holds W.mu. */
static uint64_t wait_idle(void)
{
    if (!W.busy) return 0;
    uint64_t t0 = cdsm__mono_ns();
    while (W.busy) pthread_cond_wait(&W.cv, &W.mu);
    return (cdsm__mono_ns() - t0) / 1000;
}

void cdsm__ckpt_take_drain(void)
{
    if (!W.started) return;
    pthread_mutex_lock(&W.mu);
    wait_idle();
    pthread_mutex_unlock(&W.mu);
}

void cdsm__ckpt_fini(void)
{
    if (W.started) {
        pthread_mutex_lock(&W.mu);
        wait_idle();
        W.stop = 1;
        pthread_cond_broadcast(&W.cv);
        pthread_mutex_unlock(&W.mu);
        pthread_join(W.th, NULL);
    }
    memset(&W.dir, 0, sizeof W.dir);
    W.on = W.started = W.stop = W.busy = W.last_failed = 0;
    W.next_seq = W.oldest_file = 1;
    W.committed_seq = W.chain_first = W.prev_chain_first = W.barriers_since = W.log_at_last = W.taken = 0;
    if (restore_ck) snapshot_free(restore_ck);
    restore_ck = NULL;
    restore_seq = 0;
    restore_is_restart = 0;
    restore_released = 0;
    W.committed = (cdsm__ckpt_pos_t){0, 0};
}

cdsm__ckpt_pos_t cdsm__ckpt_committed(void)
{
    pthread_mutex_lock(&W.mu);
    cdsm__ckpt_pos_t p = W.committed;
    pthread_mutex_unlock(&W.mu);
    return p;
}

/* ---- the snapshot -------------------------------------------------------------------- */

/* data: in an owned heap, the pages that hold data (an owned page is written without a
 * trace, so every one that holds data counts as changed). Pages are asked in order. */
static int want_page(uint32_t pg, int full, cdsm__runs_t *data)
{
    /* A node heap is one: each rank takes its share, every n-th page. */
    if (cdsm__heap.own_mode == CDSM_OWN_NODE)
        return pg % (uint32_t)cdsm__w.n == (uint32_t)cdsm__w.rank && cdsm__runs_has(data, pg);
    if (!cdsm__pg_made(pg)) return cdsm__heap.own_mode == CDSM_OWN_ALL && cdsm__runs_has(data, pg); /* (never touched) */
    const cdsm__page_t *p = cdsm__pg(pg);
    if (p->state == CDSM_PG_OWN) return cdsm__runs_has(data, pg);
    if (full) return (p->ckflags & 2) != 0;
    return (p->ckflags & 1) || p->state == CDSM_PG_RW; /* hot pages are written without faults */
}

/* The next page at or after pg that a checkpoint may take: a page whose entry was made,
 * or with one rank a page that holds data (written without a fault ever making its
 * entry). Neither visits the untouched rest of a large heap. */
static uint32_t candidate(uint32_t pg, cdsm__runs_t *data)
{
    if (cdsm__heap.own_mode == CDSM_OWN_NODE) return cdsm__runs_next(data, pg); /* (no fault made entries) */
    uint32_t m = cdsm__pg_next_made(pg);
    if (cdsm__heap.own_mode != CDSM_OWN_ALL) return m;
    uint32_t d = cdsm__runs_next(data, pg);
    return d < m ? d : m;
}

/* A region the library keeps in the checkpoint (none when it has no bytes). */
static int library_region(cdsm__ckpt_t *c, const char *name, size_t size, void (*put)(uint8_t *))
{
    if (!size) return 0;
    cdsm__ckpt_region_t *r = &c->regions[c->nregions++];
    r->name = strdup(name);
    r->data = malloc(size);
    r->size = size;
    if (!r->name || !r->data) return -1;
    put(r->data);
    return 0;
}

static int is_library_region(const char *name)
{
    return !strcmp(name, CDSM_OUTPUT_HELD) || !strcmp(name, CDSM_OWN_REGION) || !strcmp(name, CDSM_CONV_REGION) ||
           !strcmp(name, CDSM_NODE_REGION);
}

/* Nothing can fail here: the change marks are cleared as the pages are copied (every
 * marked page is copied: a mark implies "ever changed" as well). */
static void copy_pages(cdsm__ckpt_t *c, int full, cdsm__runs_t *data)
{
    int n = cdsm__w.n;
    uint32_t k = 0;
    data->at = 0;
    for (uint32_t pg = candidate(0, data); pg < cdsm__heap.npages; pg = candidate(pg + 1, data)) {
        if (!want_page(pg, full, data)) continue;
        cdsm__page_t *p = cdsm__pg(pg);
        c->page_index[k] = pg;
        c->page_state[k] = p->state;
        memcpy(c->page_data + (size_t)k * cdsm__heap.page_size, cdsm__sys_page(pg), cdsm__heap.page_size);
        if (p->applied) memcpy(c->applied + (size_t)k * n, p->applied, cdsm__u32s((size_t)n));
        p->ckflags &= (uint8_t)~1u;
        k++;
    }
}

static cdsm__ckpt_t *snapshot(int full)
{
    cdsm__state_t *g = &cdsm__g;
    int n = cdsm__w.n;
    cdsm__ckpt_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->job_id = g->job_id;
    c->rank = (uint32_t)cdsm__w.rank;
    c->nranks = (uint32_t)n;
    c->seq = W.next_seq;
    c->base_seq = full ? 0 : W.committed_seq;
    c->epoch = cdsm__bar.epoch;
    c->page_size = (uint32_t)cdsm__heap.page_size;
    c->vc = malloc(cdsm__u32s((size_t)n));
    c->nintervals = IV_BASES + (uint32_t)n;
    c->intervals = malloc(cdsm__u32s(c->nintervals));
    c->nlocks = cdsm__lk.nlocks;
    c->lock_state = malloc(cdsm__lk.nlocks);
    c->nlog = LP_COUNT;
    c->log_pos = malloc(LP_COUNT * 8);
    int owned = cdsm__heap.own_mode != CDSM_OWN_OFF;
    cdsm__runs_t data = {0};
    if (owned && cdsm__heap_data_runs(&data)) goto nomem;
    uint32_t np = 0;
    for (uint32_t pg = candidate(0, &data); pg < cdsm__heap.npages; pg = candidate(pg + 1, &data))
        np += want_page(pg, full, &data);
    c->npages = np;
    c->page_index = malloc(cdsm__u32s((size_t)np + 1));
    c->page_state = malloc((size_t)np + 1);
    c->page_data = malloc((size_t)np * cdsm__heap.page_size + 1);
    c->applied = calloc((size_t)np * (size_t)n + 1, 4);
    size_t nregions;
    const cdsm__region_t *regions = cdsm__protect_regions(&nregions);
    c->nregions = (uint32_t)nregions;
    c->regions = calloc(nregions + 4, sizeof *c->regions) /* (+ the library's) */;
    if (!c->vc || !c->intervals || !c->lock_state || !c->log_pos || !c->page_index || !c->page_state ||
        !c->page_data || !c->applied || !c->regions)
        goto nomem;
    memcpy(c->vc, g->vc, cdsm__u32s((size_t)n));
    c->intervals[IV_OWN] = g->vc[cdsm__w.rank];
    c->intervals[IV_SYNC] = g->sync_seq;
    c->intervals[IV_EPOCH] = cdsm__bar.epoch;
    for (int q = 0; q < n; q++) c->intervals[IV_BASES + q] = g->ivs[q].base;
    for (uint32_t l = 0; l < cdsm__lk.nlocks; l++) c->lock_state[l] = cdsm__lock_state(l);
    if (snapshot_tails(c)) goto nomem;
    c->log_pos[LP_SYNC] = g->sync_seq;
    c->log_pos[LP_EPOCH] = cdsm__bar.epoch;
    c->log_pos[LP_DET_LOGGED] = cdsm__st.det_logged;
    c->log_pos[LP_RESUME] = (uint64_t)cdsm__mode.resume_mode; /* taken at a resume point (collections only) */
    for (size_t i = 0; i < nregions; i++) {
        c->regions[i].name = strdup(regions[i].name);
        c->regions[i].data = malloc(regions[i].size + 1);
        c->regions[i].size = regions[i].size;
        if (!c->regions[i].name || !c->regions[i].data) goto nomem;
        memcpy(c->regions[i].data, regions[i].ptr, regions[i].size);
    }
    /* The output held now (a region of its own): a replacement releases what its lost
     * process may have died holding (issue 17). */
    if (library_region(c, CDSM_OUTPUT_HELD, cdsm__output_held_bytes(), cdsm__output_held_put)) goto nomem;
    if (library_region(c, CDSM_OWN_REGION, cdsm__own_state_bytes(), cdsm__own_state_put)) goto nomem;
    if (library_region(c, CDSM_CONV_REGION, cdsm__conv_state_bytes(), cdsm__conv_state_put)) goto nomem;
    if (library_region(c, CDSM_NODE_REGION, cdsm__node_state_bytes(), cdsm__node_state_put)) goto nomem;
    copy_pages(c, full, &data);
    free(data.v);
    return c;
nomem:
    free(data.v);
    snapshot_free(c);
    return NULL;
}

int cdsm__ckpt_take(int full, int sync)
{
    if (!W.on) return CDSM_OK;
    uint64_t t0 = cdsm__mono_ns();
    /* Wait for the previous checkpoint without holding mu: the service thread goes on
     * serving the other ranks meanwhile. Only this thread queues snapshots. */
    pthread_mutex_lock(&W.mu);
    if (W.busy) {
        pthread_mutex_unlock(&cdsm__g.mu);
        wait_idle();
        pthread_mutex_unlock(&W.mu);
        pthread_mutex_lock(&cdsm__g.mu);
        pthread_mutex_lock(&W.mu);
    }
    if (W.last_failed || !W.committed_seq || W.taken % cdsm__cfg.ckpt_full_every == 0) full = 1;
    cdsm__ckpt_t *c = snapshot(full);
    if (!c) {
        pthread_mutex_unlock(&W.mu);
        return cdsm__error(CDSM_ERR_NOMEM, "checkpoint %" PRIu64 ": no memory for the snapshot", W.next_seq);
    }
    W.next_seq++;
    W.taken++;
    W.job = c;
    W.busy = 1;
    pthread_cond_broadcast(&W.cv);
    cdsm__inject(cdsm__w.rank, "ckpt_snapshot");
    int rc = CDSM_OK;
    if (sync) {
        pthread_mutex_unlock(&W.mu);
        pthread_mutex_unlock(&cdsm__g.mu);
        pthread_mutex_lock(&W.mu);
        wait_idle();
        pthread_mutex_unlock(&W.mu);
        pthread_mutex_lock(&cdsm__g.mu);
        pthread_mutex_lock(&W.mu);
        if (W.last_failed)
            rc = cdsm__error(CDSM_ERR_IO, "checkpoint %" PRIu64 " of rank %d could not be written",
                             W.next_seq - 1, cdsm__w.rank);
    }
    pthread_mutex_unlock(&W.mu);
    CDSM_STAT_ADD(ckpt_stall_us, (cdsm__mono_ns() - t0) / 1000);
    W.barriers_since = 0;
    W.last_ns = cdsm__mono_ns();
    W.log_at_last = cdsm__g.log_bytes;
    return rc;
}

int cdsm__ckpt_due(void)
{
    if (!W.on) return 0;
    W.barriers_since++;
    const cdsm__config_t *cf = &cdsm__cfg;
    uint64_t grown = cdsm__g.log_bytes > W.log_at_last ? cdsm__g.log_bytes - W.log_at_last : 0;
    return (cf->ckpt_barriers && W.barriers_since >= cf->ckpt_barriers) ||
           (cf->ckpt_seconds && cdsm__mono_ns() - W.last_ns >= cf->ckpt_seconds * 1000000000ull) ||
           (cf->ckpt_log_size && grown + cdsm__st.det_bytes >= cf->ckpt_log_size);
}

int cdsm__ckpt_policy(void)
{
    return cdsm__ckpt_due() ? cdsm__ckpt_take(0, 0) : CDSM_OK;
}

/* ---- a replacement: the lost rank's checkpoints ----------------------------------------- */

/* The newest committed checkpoint of this rank in dir, from `latest` down, taken at a resume
 * point: of barrier `epoch` exactly (exact), or one whose collection ended (its epoch + 1
 * <= epoch). Every file read is verified (a corrupt or foreign one is an error, named by
 * the file layer, never skipped) and the one found must fit this run's shape (else
 * `bad_shape`). *out is NULL when there is none. */
static int find_resume(const char *dir, uint64_t job, uint64_t latest, uint32_t epoch, int exact, int bad_shape,
                       cdsm__ckpt_t **out, uint64_t *seq)
{
    char path[CDSM_CFG_PATH_MAX + 64];
    *out = NULL;
    for (uint64_t s = latest; s >= 1; s--) {
        if (cdsm__ckpt_path(path, sizeof path, dir, (uint32_t)cdsm__w.rank, s) || access(path, F_OK)) break;
        /* Whether it is a resume point at the right barrier is in its own file: the chain
         * below it is read only for the one restored (a chain that is not restored may
         * have been collected in part). */
        cdsm__ckpt_t head;
        int rc = cdsm__ckpt_read(path, cdsm__w.rank, job, &head);
        if (rc) return rc;
        int resume = head.nlog > LP_RESUME && head.log_pos[LP_RESUME];
        int want = resume && (exact ? head.epoch == epoch : head.epoch + 1 <= epoch);
        uint64_t e = head.epoch;
        cdsm__ckpt_free(&head);
        if (want) {
            cdsm__ckpt_t *c = calloc(1, sizeof *c);
            if (!c) return cdsm__error(CDSM_ERR_NOMEM, "checkpoint %s", path);
            if ((rc = cdsm__ckpt_restore_chain(dir, (uint32_t)cdsm__w.rank, job, s, c))) {
                free(c);
                return rc;
            }
            if (c->nranks != (uint32_t)cdsm__w.n || c->page_size != cdsm__heap.page_size || c->nlocks != cdsm__lk.nlocks ||
                c->nintervals != IV_BASES + (uint32_t)cdsm__w.n) {
                snapshot_free(c);
                return cdsm__error(bad_shape, "%s: made for another configuration (ranks, page size or locks)", path);
            }
            *out = c;
            *seq = s;
            return CDSM_OK;
        }
        if (exact && e < epoch) break; /* older ones come before it */
    }
    return CDSM_OK;
}

/* Whole-job restart (cdsm_init, CDSM_RESTART): read the manifest of the earlier job and
 * this rank's checkpoint of its barrier; cdsm_resume() restores it on every rank. */
static int restart_prepare(void)
{
    const char *dir = cdsm__cfg.restart;
    cdsm__manifest_t m;
    uint64_t t0 = cdsm__mono_ns(), latest = 0, s = 0;
    cdsm__ckpt_t *c;
    int rc = cdsm__manifest_read(dir, &m);
    if (rc) return rc;
    if (m.nranks != (uint32_t)cdsm__w.n)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_RESTART=%s: its manifest is of a job of %u ranks, this one has %d", dir,
                           m.nranks, cdsm__w.n);
    if ((rc = cdsm__ckpt_latest(dir, (uint32_t)cdsm__w.rank, &latest)) ||
        (rc = find_resume(dir, m.job, latest, m.epoch, 1, CDSM_ERR_CONFIG, &c, &s)))
        return rc;
    if (!c)
        return cdsm__error(CDSM_ERR_CORRUPT,
                           "CDSM_RESTART=%s: rank %d has no checkpoint of barrier %u, which the manifest names", dir,
                           cdsm__w.rank, m.epoch);
    /* What the stopped job emitted of the output its checkpoint holds (issue 17). */
    if ((rc = cdsm__output_mark_read(dir, m.job, cdsm__w.rank, &restore_released))) {
        snapshot_free(c);
        return rc;
    }
    restore_ck = c;
    restore_seq = s;
    restore_read_ns = cdsm__mono_ns() - t0;
    restore_is_restart = 1;
    cdsm__mode.fast_forward = 1; /* until cdsm_resume() */
    return CDSM_OK;
}

void cdsm__ckpt_manifest(void)
{
    cdsm__state_t *g = &cdsm__g;
    if (!W.on || cdsm__w.rank != 0) return;
    /* Called after the barrier that ends a resume point's collection: every rank has
     * committed its checkpoint of the barrier before it. */
    cdsm__manifest_t m = {g->job_id, (uint32_t)cdsm__w.n, cdsm__bar.epoch - 1};
    if (cdsm__manifest_write(W.dir, &m) == CDSM_OK) {
        CDSM_STAT_ADD(manifests, 1);
        cdsm__bar_manifest(m.epoch);
    }
}

int cdsm__ckpt_takeover(uint32_t last_epoch, uint64_t *seq_out)
{
    cdsm__state_t *g = &cdsm__g;
    *seq_out = 0;
    /* In a restarted job, a rank with no checkpoint of its own yet starts where the whole
     * job restarted (its collection ended in this job: its second barrier is logged). */
    if (restore_ck && restore_is_restart && restore_ck->epoch + 1 <= last_epoch) *seq_out = restore_seq;
    if (!W.on) return CDSM_OK;
    uint64_t latest = 0, t0 = cdsm__mono_ns(), s = 0;
    cdsm__ckpt_t *c;
    /* The lost process's files stay: this process goes on numbering after them, and the
     * temporary file of a write it was killed in is removed. */
    int rc = cdsm__ckpt_latest(W.dir, (uint32_t)cdsm__w.rank, &latest);
    if (!rc) rc = cdsm__ckpt_remove_temps(W.dir, (uint32_t)cdsm__w.rank, NULL);
    if (rc) return rc;
    W.next_seq = latest + 1;
    W.oldest_file = 1;
    /* A resume point whose collection every rank finished (its second barrier is logged):
     * nobody can still ask the lost process for a diff from before it. */
    if ((rc = find_resume(W.dir, g->job_id, latest, last_epoch, 0, CDSM_ERR_CORRUPT, &c, &s)) || !c) return rc;
    /* Output before barrier E is released at the manifest of E, which a rank learns from
     * the release of barrier E + 2 and emits just before it arrives at E + 3: a lost process
     * that never arrived there died holding it, and the replay will not produce it again, so
     * the replacement releases the output the checkpoint holds (issue 17). */
    restore_held = c->epoch + 3 > last_epoch;
    if (restore_ck) snapshot_free(restore_ck);
    restore_is_restart = 0;
    restore_ck = c;
    restore_seq = s;
    restore_read_ns = cdsm__mono_ns() - t0;
    *seq_out = s;
    return CDSM_OK;
}

/* The checkpoint's private regions and the program's registrations must match one to
 * one; then copy them. Nothing is changed when they do not. */
static int restore_regions(const cdsm__ckpt_t *c)
{
    uint32_t held = 0;
    for (uint32_t i = 0; i < c->nregions; i++) {
        if (is_library_region(c->regions[i].name)) { /* the library's, not registered */
            held++;
            continue;
        }
        const cdsm__region_t *r = cdsm__protect_find(c->regions[i].name);
        if (!r)
            return cdsm__error(CDSM_ERR_INVALID_ARG,
                               "cdsm_resume: checkpoint %" PRIu64 " holds private region \"%s\", which the program "
                               "did not register (cdsm_protect) before cdsm_resume",
                               restore_seq, c->regions[i].name);
        if (r->size != c->regions[i].size)
            return cdsm__error(CDSM_ERR_INVALID_ARG,
                               "cdsm_resume: private region \"%s\" is registered with %zu bytes, checkpoint %" PRIu64
                               " holds %" PRIu64,
                               r->name, r->size, restore_seq, c->regions[i].size);
    }
    size_t nregions;
    cdsm__protect_regions(&nregions);
    if (c->nregions - held != nregions)
        return cdsm__error(CDSM_ERR_INVALID_ARG,
                           "cdsm_resume: %zu private regions are registered, checkpoint %" PRIu64 " holds %u",
                           nregions, restore_seq, c->nregions - held);
    for (uint32_t i = 0; i < c->nregions; i++) {
        if (!strcmp(c->regions[i].name, CDSM_OUTPUT_HELD)) {
            if (!restore_is_restart && !restore_held) continue;
            int rc = cdsm__output_held_take(c->regions[i].data, c->regions[i].size,
                                            restore_is_restart ? restore_released : 0,
                                            restore_is_restart ? "the stopped job had not emitted"
                                                               : "its lost process may have died holding");
            if (rc) return rc;
            continue;
        }
        if (!strcmp(c->regions[i].name, CDSM_NODE_REGION)) {
            int rc = cdsm__node_state_take(c->regions[i].data, c->regions[i].size);
            if (rc) return rc;
            continue;
        }
        if (!strcmp(c->regions[i].name, CDSM_OWN_REGION) || !strcmp(c->regions[i].name, CDSM_CONV_REGION)) {
            int rc = !strcmp(c->regions[i].name, CDSM_OWN_REGION)
                         ? cdsm__own_state_take(c->regions[i].data, c->regions[i].size)
                         : cdsm__conv_state_take(c->regions[i].data, c->regions[i].size);
            if (rc) return rc;
            continue;
        }
        memcpy(cdsm__protect_find(c->regions[i].name)->ptr, c->regions[i].data, c->regions[i].size);
    }
    return CDSM_OK;
}

/* A restored page: invalid stays invalid, owned stays owned (one rank owns them all),
 * anything else is a clean tracked copy; it was touched, so it is claimed. Pages the
 * checkpoint does not hold stay as at the start (unclaimed, under first touch: owned
 * ones held no data, and the directory names their owner again). */
static void restore_state(uint32_t pg, uint8_t saved)
{
    int st = saved == CDSM_PG_INVALID ? CDSM_PG_INVALID
             : saved == CDSM_PG_OWN || cdsm__heap.own_mode == CDSM_OWN_ALL || cdsm__node.on ? CDSM_PG_OWN
                                                                         : CDSM_PG_RO;
    cdsm__pg(pg)->claim = CDSM_CLAIM_NONE;
    cdsm__page_protect(pg, 1, st);
}

/* The checkpoint's pages are owned (first touch or home) exactly when it holds the
 * ownership directory; a run that decided otherwise (CDSM_OWNERSHIP) would hold stale zero
 * copies of pages only their owners wrote, or give owned pages to the first asker (the
 * directory region itself tells first touch from home). */
static int same_ownership(const cdsm__ckpt_t *c)
{
    int has = 0, first_touch = cdsm__heap.own_mode == CDSM_OWN_FIRST_TOUCH || cdsm__heap.own_mode == CDSM_OWN_HOME;
    int node = 0;
    for (uint32_t i = 0; i < c->nregions; i++) {
        has |= !strcmp(c->regions[i].name, CDSM_OWN_REGION);
        node |= !strcmp(c->regions[i].name, CDSM_NODE_REGION);
    }
    if (node != cdsm__node.on)
        return cdsm__error(CDSM_ERR_STATE,
                           "cdsm_resume: checkpoint %" PRIu64 " of rank %d was written %s a node heap, and this run "
                           "%s one: restart it with the settings and placement it was written with (CDSM_NODE_HEAP, "
                           "every rank on one host)",
                           restore_seq, cdsm__w.rank, node ? "with" : "without", cdsm__node.on ? "has" : "has not");
    if (has == first_touch) return CDSM_OK;
    return cdsm__error(CDSM_ERR_STATE,
                       "cdsm_resume: checkpoint %" PRIu64 " of rank %d was written %s, and this run %s: restart it "
                       "with the settings it was written with (CDSM_SPARES, CDSM_OWNERSHIP)",
                       restore_seq, cdsm__w.rank,
                       has ? "with pages owned (by first touch, or by their home with spares)" : "with every page tracked",
                       first_touch ? "owns pages" : "tracks every page (CDSM_OWNERSHIP=0)");
}

int cdsm__ckpt_restore(void)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__ckpt_t *c = restore_ck;
    int n = cdsm__w.n, rc;
    uint64_t t0 = cdsm__mono_ns();
    cdsm_check(c != NULL);
    if (g->ndirty)
        return cdsm__error(CDSM_ERR_PROTOCOL,
                           "cdsm_resume: the replacement of rank %d wrote shared page %u before cdsm_resume (a "
                           "program that resumes may only allocate and register regions before it)",
                           cdsm__w.rank, g->dirty[0]);
    for (uint32_t k = 0; k < c->npages; k++)
        if (c->page_index[k] >= cdsm__heap.npages)
            return cdsm__error(CDSM_ERR_CORRUPT, "checkpoint %" PRIu64 " of rank %d: page %u is beyond the heap",
                               restore_seq, cdsm__w.rank, c->page_index[k]);
    if ((rc = same_ownership(c)) || (rc = restore_regions(c))) return rc;
    for (uint32_t k = 0; k < c->npages; k++) {
        uint32_t pg = c->page_index[k];
        memcpy(cdsm__sys_page(pg), c->page_data + (size_t)k * cdsm__heap.page_size, cdsm__heap.page_size);
        memcpy(cdsm__page_applied(pg), c->applied + (size_t)k * n, cdsm__u32s((size_t)n));
        restore_state(pg, c->page_state[k]);
    }
    /* Taken at a collection where every copy was made current: the records up to its
     * clock are applied everywhere, so each rank's list starts after them. */
    memcpy(g->vc, c->vc, cdsm__u32s((size_t)n));
    memcpy(cdsm__bar.vc_bar, c->vc, cdsm__u32s((size_t)n));
    for (int q = 0; q < n; q++) {
        cdsm_check(g->ivs[q].count == 0);
        g->ivs[q].base = c->vc[q];
    }
    g->sync_seq = c->intervals[IV_SYNC];
    cdsm__conv_sync(); /* (what the lost process converted after the checkpoint's barrier) */
    cdsm__bar.epoch = c->intervals[IV_EPOCH];
    for (uint32_t l = 0; l < cdsm__lk.nlocks; l++) cdsm__lock_set_state(l, c->lock_state[l]);
    /* A whole job restarting: each queue ends where it ended (a replacement's queues are
     * rebuilt from what the survivors report instead). */
    for (uint32_t i = 0; restore_is_restart && i < c->ntails; i++)
        if (c->lock_tails[2 * i] % (uint32_t)n == (uint32_t)cdsm__w.rank)
            cdsm__lock_set_tail(c->lock_tails[2 * i], (int)c->lock_tails[2 * i + 1]);
    cdsm__lock_words_restored();
    /* A whole job restarting: the barrier manager's view starts at the checkpoint (a
     * replacement took a later one from the log already). */
    if (restore_is_restart) cdsm__barrier_adopt(c->vc);
    pthread_mutex_lock(&W.mu);
    if (!restore_is_restart) { /* the lost process's files are this job's */
        W.committed_seq = W.chain_first = W.prev_chain_first = restore_seq;
        W.committed.sync_seq = (uint32_t)c->log_pos[LP_SYNC];
        W.committed.epoch = (uint32_t)c->log_pos[LP_EPOCH];
    }
    W.taken = 1;
    W.barriers_since = 0;
    W.last_ns = cdsm__mono_ns();
    pthread_mutex_unlock(&W.mu);
    uint64_t ns = cdsm__mono_ns() - t0 + restore_read_ns;
    CDSM_STAT_ADD(ckpt_restores, 1);
    CDSM_STAT_ADD(ckpt_restore_us, ns / 1000);
    cdsm__log(CDSM_LOG_WARN,
              "rank %d: restored checkpoint %" PRIu64 "%s%s (barrier %" PRIu64 ", synchronisation %u, %u pages, %u "
              "private regions) in %.3f s",
              cdsm__w.rank, restore_seq, restore_is_restart ? " of " : "", restore_is_restart ? cdsm__cfg.restart : "",
              c->epoch, g->sync_seq, c->npages, c->nregions, (double)ns / 1e9);
    snapshot_free(c);
    restore_ck = NULL;
    restore_is_restart = 0;
    restore_held = 0;
    return CDSM_OK;
}

const char *cdsm_checkpoint_dir(void)
{
    return cdsm__g.initialized && W.on ? W.dir : NULL;
}
