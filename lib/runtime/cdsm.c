/* Library life cycle: configuration, MPI, heap, protocol state, service thread. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inject.h"
#include "placement.h"
#include "pool.h"
#include "proto.h"
#include "recovery.h"

cdsm__state_t cdsm__g = {.lost_rank = -1};

int cdsm__stats_print_total(FILE *f, const cdsm_stats_t *total);

int cdsm_rank(void)
{
    return cdsm__g.initialized ? cdsm__w.rank : -1;
}

int cdsm_nranks(void)
{
    return cdsm__g.initialized ? cdsm__w.n : -1;
}

size_t cdsm_page_size(void)
{
    return cdsm__g.initialized ? cdsm__heap.page_size : 0;
}

int cdsm_nlocks(void)
{
    return cdsm__g.initialized ? (int)cdsm__lk.nlocks : 0;
}

static int init_mpi(int *argc, char ***argv)
{
    cdsm__state_t *g = &cdsm__g;
    int flag = 0, provided = 0;
    MPI_Initialized(&flag);
    if (!flag) {
        /* No rendezvous: with it, UCX's CMA transport reads a large message from the
         * sender's memory when the receiver gets to it, and a sender killed meanwhile makes
         * UCX abort the receiver (process_vm_readv: No such process), turning one loss into
         * two. Eager messages are copied out by the sender. A value already set wins. */
        setenv("UCX_RNDV_THRESH", "inf", 0);
        /* MPI's hwloc reads every PCI device's configuration at start-up, trapped by the
         * hypervisor on a virtual machine (12-15 ms per process here); its placement and
         * ours need cores only (CDSM_MPI_IO_TOPOLOGY). Put back once MPI is up. */
        int hide_io = !cdsm__cfg.mpi_io_topology && !getenv("HWLOC_COMPONENTS");
        if (hide_io) setenv("HWLOC_COMPONENTS", "-linuxio", 1);
        int mrc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
        if (hide_io) unsetenv("HWLOC_COMPONENTS");
        if (mrc != MPI_SUCCESS) return cdsm__error(CDSM_ERR_MPI, "MPI_Init_thread failed");
        g->mpi_owned = 1;
    } else {
        MPI_Query_thread(&provided);
    }
    if (provided < MPI_THREAD_MULTIPLE)
        return cdsm__error(CDSM_ERR_MPI_THREAD,
                           "MPI provides thread level %d; cdsm needs MPI_THREAD_MULTIPLE (%d) for its "
                           "service thread: call MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...) or let "
                           "cdsm_init() initialise MPI",
                           provided, MPI_THREAD_MULTIPLE);
    /* Our own communicator: the program's traffic on MPI_COMM_WORLD is never matched by ours. */
    if (MPI_Comm_dup(MPI_COMM_WORLD, &cdsm__w.comm) != MPI_SUCCESS)
        return cdsm__error(CDSM_ERR_MPI, "MPI_Comm_dup failed");
    /* A send to a process on a lost node fails (UCX over TCP: "Endpoint timeout") instead
     * of vanishing: the transport decides, MPI must not abort the job. */
    MPI_Comm_set_errhandler(cdsm__w.comm, MPI_ERRORS_RETURN);
    int wrank, wn;
    MPI_Comm_rank(cdsm__w.comm, &wrank);
    MPI_Comm_size(cdsm__w.comm, &wn);
    if (wn > 32767) return cdsm__error(CDSM_ERR_INVALID_ARG, "%d processes: at most 32767 are supported", wn);
    if (cdsm__cfg.spares >= (uint64_t)wn)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_SPARES=%llu leaves no working rank in a job of %d processes",
                           (unsigned long long)cdsm__cfg.spares, wn);
    /* The last CDSM_SPARES processes are spares; the program sees the others. */
    return cdsm__map_init(wrank, wn, wn - (int)cdsm__cfg.spares);
}

/* One id for the run, chosen by rank 0 (checkpoint files carry it and their folder is
 * named after it): the Slurm job and step when there is one, else time and process id. */
static uint64_t job_id_here(void)
{
    uint64_t id = 0;
    if (cdsm__w.rank == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        id = ((uint64_t)ts.tv_sec << 32) ^ ((uint64_t)ts.tv_nsec << 8) ^ (uint64_t)getpid();
        const char *job = getenv("SLURM_JOB_ID"), *step = getenv("SLURM_STEP_ID");
        if (job && *job) id = (strtoull(job, NULL, 10) << 24) ^ (step ? strtoull(step, NULL, 10) << 8 : 0) ^ (id & 0xff);
        if (!id) id = 1;
    }
    return id;
}

/* Rank 0's job id, and the settings that shape the heap, the lock table and the
 * protocol's rounds, which must be the same in every process (a job started with
 * different environments per node): each compares its own with rank 0's and names the
 * first that differs. One broadcast for both (at 64 processes on 2 cores a start-up
 * collective costs half a second). */
static int agree_with_rank0(void)
{
    static const struct {
        const char *name;
        const uint64_t *v;
    } shape[] = {{"CDSM_PAGE_SIZE", &cdsm__cfg.page_size},     {"CDSM_HEAP_SIZE", &cdsm__cfg.heap_size},
                 {"CDSM_HEAP_ADDR", &cdsm__cfg.heap_addr},     {"CDSM_LOCKS", &cdsm__cfg.locks},
                 {"CDSM_BARRIER_FANOUT", &cdsm__cfg.bar_fanout}, {"CDSM_SPARES", &cdsm__cfg.spares},
                 {"CDSM_LOGGING", &cdsm__cfg.logging},         {"CDSM_NODE_HEAP", &cdsm__cfg.node_heap},
                 {"CDSM_OWNERSHIP", &cdsm__cfg.ownership},     {"CDSM_CHECK", &cdsm__cfg.check},
                 {"CDSM_RMA", &cdsm__cfg.rma}};
    enum { N = sizeof shape / sizeof shape[0] };
    uint64_t root[N + 1];
    for (int i = 0; i < N; i++) root[i] = *shape[i].v;
    root[N] = job_id_here();
    MPI_Bcast(root, N + 1, MPI_UINT64_T, 0, cdsm__w.comm);
    cdsm__g.job_id = root[N];
    for (int i = 0; i < N; i++) {
        if (*shape[i].v == root[i]) continue;
        char mine[32], theirs[32]; /* (as they are written: an enumeration by its name) */
        return cdsm__error(CDSM_ERR_CONFIG, "%s is %s in this process and %s in rank 0's: every process of the job "
                           "must run with the same value", shape[i].name,
                           cdsm__config_value_text(shape[i].name, *shape[i].v, mine, sizeof mine),
                           cdsm__config_value_text(shape[i].name, root[i], theirs, sizeof theirs));
    }
    return CDSM_OK;
}

static int init_state(void);
static int mpi_left_behind; /* an MPI_Finalize that never returned: no second cdsm_init */

static int finalize_mpi(int always);

/* Past the program's last barrier: the goodbye (transport). 1 when a process died since
 * (its end looked like a finish): MPI_Finalize would wait for it for ever, so it is
 * skipped. A death earlier in the run is known already (cdsm__w.recovered). */
static int goodbye(void)
{
    uint64_t ms = cdsm__cfg.finalize_timeout_ms ? cdsm__cfg.finalize_timeout_ms : UINT32_MAX;
    int missing = 0, first = -1, died = cdsm__tp_goodbye(ms, &missing, &first);
    if (__atomic_load_n(&cdsm__w.recovered, __ATOMIC_ACQUIRE)) return 1;
    if (died)
        cdsm__log(CDSM_LOG_WARN, "process %d%s ended after the program's last barrier without saying goodbye (it was "
                  "killed, or crashed): MPI_Finalize is skipped, it would wait for %s for ever; the run's work is "
                  "complete", first, died > 1 ? " and others" : "", died > 1 ? "them" : "it");
    else if (missing)
        cdsm__log(CDSM_LOG_WARN, "%d process(es) neither said goodbye nor ended within %llu ms (CDSM_FINALIZE_TIMEOUT)",
                  missing, (unsigned long long)ms);
    return died > 0;
}

/* A spare: asleep until it replaces a lost rank (then it returns, as that rank, to run the
 * program from its start in replay) or until the run ends (then it finishes here: the
 * documented exit of a spare that was never needed, status 0, or of one whose job failed
 * without it, status CDSM_EXIT_PEER_LOST). */
static void spare(void)
{
    cdsm__log(CDSM_LOG_INFO, "spare process %d of %d waiting (pid %d)", cdsm__w.wrank, cdsm__w.wn, (int)getpid());
    int r = cdsm__spare_wait();
    if (r == -2) {
        /* The documented exit of a spare whose job failed around it. */
        cdsm__log(CDSM_LOG_ERROR, "spare process %d: every working rank is gone and no takeover came: exiting with "
                  "status %d", cdsm__w.wrank, CDSM_EXIT_PEER_LOST);
        _exit(CDSM_EXIT_PEER_LOST);
    }
    if (r < 0) {
        int died = goodbye();
        cdsm__tp_fini();
        /* Also when the program initialised MPI itself: it never gets control back here,
         * and a process ending without MPI_Finalize makes mpiexec kill the job. Bounded as
         * the ranks' is: a rank that died after the last barrier (its death looks like its
         * finish) makes MPI_Finalize wait for it for ever, and the job waited for the spare. */
        if (!died) finalize_mpi(1);
        exit(0);
    }
    cdsm__w.rank = r;
    int rc = init_state();
    if (rc) {
        cdsm__log(CDSM_LOG_ERROR, "spare process %d cannot take the place of rank %d: exiting with status %d",
                  cdsm__w.wrank, r, CDSM_EXIT_PEER_LOST);
        _exit(CDSM_EXIT_PEER_LOST);
    }
    cdsm__mode.replaying_start = 1;
    cdsm__log(CDSM_LOG_WARN, "spare process %d (pid %d) takes the place of rank %d", cdsm__w.wrank, (int)getpid(), r);
}

static int init_state(void)
{
    cdsm__state_t *g = &cdsm__g;
    int rc;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->vc = calloc((size_t)cdsm__w.n, sizeof(uint32_t));
    g->ivs = calloc((size_t)cdsm__w.n, sizeof *g->ivs);
    if (!g->vc || !g->ivs) return cdsm__error(CDSM_ERR_NOMEM, "vector clock");
    if ((rc = cdsm__heap_init()) || (rc = cdsm__alloc_init()) || (rc = cdsm__locks_init()) ||
        (rc = cdsm__barrier_init()) || (rc = cdsm__det_init()) || (rc = cdsm__ckpt_init()))
        return rc;
    return CDSM_OK;
}

static void fini_state(void)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__ckpt_fini();
    cdsm__output_fini();
    cdsm__protect_fini();
    cdsm__det_fini();
    cdsm__archive_fini();
    cdsm__barrier_fini();
    cdsm__audit_fini();
    cdsm__refetch_fini();
    cdsm__patch_fini();
    cdsm__locks_fini();
    cdsm__alloc_fini();
    cdsm__heap_fini();
    if (g->ivs)
        for (int q = 0; q < cdsm__w.n; q++) {
            for (uint32_t k = 0; k < g->ivs[q].count; k++) cdsm__iv_free(g->ivs[q].v[k]);
            free(g->ivs[q].v);
        }
    while (g->replies) {
        cdsm__reply_t *r = g->replies;
        g->replies = r->next;
        cdsm__reply_free(r);
    }
    free(g->ivs);
    free(g->vc);
    free(g->dirty);
    g->ivs = NULL;
    g->vc = NULL;
    g->dirty = NULL;
    g->ndirty = g->dirty_cap = 0;
    cdsm__pool_fini(); /* every twin and diff is freed by now */
}

int cdsm_init(int *argc, char ***argv)
{
    cdsm__state_t *g = &cdsm__g;
    if (g->initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_init called twice");
    if (mpi_left_behind)
        return cdsm__error(CDSM_ERR_STATE, "cdsm_init after a cdsm_finalize whose MPI_Finalize never returned: MPI "
                                           "cannot start again in this process");
    /* Configuration first: a bad value is reported before MPI is touched. */
    int rc = cdsm__config_load(&cdsm__cfg);
    if (rc) return rc;
    cdsm__log_level = (int)cdsm__cfg.log_level;
    if ((rc = cdsm__inject_init())) return rc;
    cdsm__ft_init(); /* the hooks and events, before anything can call them */
    if ((rc = init_mpi(argc, argv))) goto fail_mpi;
    rc = agree_with_rank0();
    if (cdsm__w.rank >= 0) cdsm__inject_arm(cdsm__w.rank);
    if (!rc && cdsm__w.rank >= 0) rc = init_state(); /* a spare's state is made when it takes over */
    /* Start-up is the one place for collectives: all ranks fail together or none. */
    int all = rc;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, cdsm__w.comm);
    if (all) {
        if (!rc) rc = cdsm__error(all, "another rank failed to initialise");
        goto fail_state;
    }
    if (cdsm__w.rank >= 0) cdsm__node_offer();
    if ((rc = cdsm__tp_init())) goto fail_state;
    if ((rc = cdsm__node_attach())) goto fail_tp;
    if ((rc = cdsm__place(cdsm__tp_service_thread()))) goto fail_tp;
    if (cdsm__w.rank < 0) spare(); /* returns only as the replacement of a lost rank */
    if ((rc = cdsm__fault_install())) goto fail_tp;
    if ((rc = cdsm__heap_globals_map())) goto fail_fault;
    g->initialized = 1;
    if ((rc = cdsm__output_init())) goto fail_fault;
    cdsm__log(CDSM_LOG_INFO, "initialised: rank %d of %d, pid %d, job %016llx, %zu MiB heap at %p, %s; %s; %s transport",
              cdsm__w.rank, cdsm__w.n, (int)getpid(), (unsigned long long)g->job_id, cdsm__heap.heap_size >> 20,
              (void *)cdsm__heap.base, cdsm__heap_detection(), cdsm__placement(), cdsm__tp_name());
    if (cdsm__mode.replaying_start && (rc = cdsm__replay_begin())) {
        /* The documented fatal path of a replacement that cannot replay. */
        cdsm__log(CDSM_LOG_ERROR, "the replacement of rank %d cannot replay it: exiting with status %d", cdsm__w.rank,
                  CDSM_EXIT_PEER_LOST);
        _exit(CDSM_EXIT_PEER_LOST);
    }
    cdsm__proto_ready();
    return CDSM_OK;
fail_fault:
    cdsm__fault_uninstall();
fail_tp:
    cdsm__tp_fini();
fail_state:
    fini_state();
    MPI_Comm_free(&cdsm__w.comm);
fail_mpi:
    if (g->mpi_owned) MPI_Finalize();
    cdsm__map_fini();
    g->mpi_owned = 0;
    cdsm__w.rank = cdsm__w.n = -1;
    return rc;
}

/* The end of MPI, on a thread of its own: every rank has passed the last barrier, so the
 * run's work and output are complete, and if MPI_Finalize hangs (UCX endpoint close over
 * TCP does, sometimes, between nodes) cdsm_finalize still returns to the program. */
static pthread_mutex_t fin_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fin_cv = PTHREAD_COND_INITIALIZER;
static int fin_done, fin_failed;

static void *finalizer(void *arg)
{
    MPI_Comm comm = *(MPI_Comm *)arg;
    MPI_Comm_free(&comm);
    int failed = MPI_Finalize() != MPI_SUCCESS;
    pthread_mutex_lock(&fin_mu);
    fin_failed = failed;
    fin_done = 1;
    pthread_cond_signal(&fin_cv);
    pthread_mutex_unlock(&fin_mu);
    return NULL;
}

/* Registered once MPI_Finalize was left behind: the process ends with the program's status
 * without the exit-time destructors of MPI's libraries, which could wait on it. */
static void exit_past_mpi(int status, void *arg)
{
    (void)arg;
    fflush(NULL);
    _exit(status);
}

/* Free the communicator and finalize MPI (if the library initialised it, or always: a
 * spare), bounded by CDSM_FINALIZE_TIMEOUT: past it, MPI is left to a thread that may
 * never return. */
static int finalize_mpi(int always)
{
    int fin = cdsm__g.mpi_owned || always;
    uint64_t ms = cdsm__cfg.finalize_timeout_ms;
    static MPI_Comm comm;
    comm = cdsm__w.comm;
    pthread_t t;
    fin_done = fin_failed = 0;
    if (!fin || !ms || pthread_create(&t, NULL, finalizer, &comm)) {
        MPI_Comm_free(&comm);
        return fin && MPI_Finalize() != MPI_SUCCESS ? cdsm__error(CDSM_ERR_MPI, "MPI_Finalize failed") : CDSM_OK;
    }
    struct timespec dl = cdsm__deadline_ms(ms);
    pthread_mutex_lock(&fin_mu);
    int rc = 0;
    while (!fin_done && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&fin_cv, &fin_mu, &dl);
    int done = fin_done, failed = fin_failed;
    pthread_mutex_unlock(&fin_mu);
    if (done) {
        pthread_join(t, NULL);
        return failed ? cdsm__error(CDSM_ERR_MPI, "MPI_Finalize failed") : CDSM_OK;
    }
    pthread_detach(t);
    mpi_left_behind = 1;
    on_exit(exit_past_mpi, NULL);
    cdsm__log(CDSM_LOG_WARN,
              "%s %d: MPI_Finalize did not return within %llu ms (CDSM_FINALIZE_TIMEOUT; a known hang of UCX endpoint "
              "close over TCP, or a process that died after the last barrier): every rank had finished, so cdsm_finalize "
              "returns and leaves it behind; the process ends at exit with the program's status, without MPI's "
              "exit-time cleanup",
              cdsm__w.rank >= 0 ? "rank" : "spare process", cdsm__w.rank >= 0 ? cdsm__w.rank : cdsm__w.wrank,
              (unsigned long long)ms);
    return CDSM_OK;
}

int cdsm_finalize(void)
{
    cdsm__state_t *g = &cdsm__g;
    if (!g->initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_finalize without cdsm_init");
    cdsm_stats_t mine, total;
    /* A checkpoint still being written is finished first (its counters belong here). */
    pthread_mutex_lock(&g->mu);
    cdsm__ckpt_take_drain();
    pthread_mutex_unlock(&g->mu);
    cdsm_stats_get(&mine);
    /* First barrier: everyone is done with shared memory (and the counters are summed).
     * After a lost rank it fails, and MPI_Finalize is not called: it would wait forever
     * for the dead process. */
    int rc = cdsm__barrier_full(CDSM_BAR_FINAL, 0, cdsm__cfg.stats >= 2 ? &mine : NULL, &total, NULL);
    if (rc) return rc;
    cdsm__output_release(UINT32_MAX); /* the run's work is done: no output can be redone */
    cdsm__node_unshare_globals(); /* (before the second barrier: no rank writes them yet) */
    __atomic_store_n(&cdsm__w.finalizing, 1, __ATOMIC_RELEASE);
    /* Second: everyone knows the others are finishing, so closed doorbells are expected.
     * A rank lost now had done all its work: the barrier completes without it. */
    if ((rc = cdsm__barrier_full(CDSM_BAR_FINAL, 0, NULL, NULL, NULL)) &&
        !__atomic_load_n(&cdsm__w.recovered, __ATOMIC_ACQUIRE))
        return rc;
    rc = CDSM_OK;
    cdsm__inject(cdsm__w.rank, "finished"); /* (a test's moment: a death that looks like a finish) */
    /* srun ends with the highest task status: a killed task's 137 although its rank was
     * replayed and the job's work is done. This line is what a batch script can check. */
    if (cdsm__w.rank == 0 && __atomic_load_n(&cdsm__w.recovered, __ATOMIC_ACQUIRE)) {
        int dead = 0;
        for (int p = 0; p < cdsm__w.wn; p++) dead += __atomic_load_n(&cdsm__w.wdead[p], __ATOMIC_ACQUIRE) != 0;
        cdsm__log(CDSM_LOG_WARN,
                  "job complete: every rank finished after %d process loss(es), replaced by spares (a launcher may "
                  "still report the lost task's status, such as srun's 137)",
                  dead);
    }
    /* Every rank retires the spares (each keeps the first word and any death it tells): a
     * rank that dies now must not leave them waiting for ever, nor orphaned (status 75). */
    cdsm__retire_spares();
    cdsm__log(CDSM_LOG_INFO, "process %d (rank %d) finished: every rank passed the last barrier", cdsm__w.wrank,
              cdsm__w.rank);
    if (cdsm__cfg.stats >= 1) cdsm_stats_print(stderr);
    if (cdsm__cfg.stats >= 2 && cdsm__w.rank == 0) cdsm__stats_print_total(stderr, &total);
    int died = goodbye();
    cdsm__fault_uninstall();
    cdsm__tp_fini();
    g->initialized = 0;
    fini_state();
    if (__atomic_load_n(&cdsm__w.recovered, __ATOMIC_ACQUIRE)) {
        /* A process died in this run: MPI_Finalize (and freeing the communicator) would
         * wait for it forever. The run's answer is still good: its rank was replayed. */
        cdsm__log(CDSM_LOG_INFO, "a process died during the run: MPI_Finalize is skipped (it would wait for it)");
    } else if (!died) {
        rc = finalize_mpi(0);
    }
    cdsm__map_fini();
    g->mpi_owned = 0;
    cdsm__w.finalizing = 0;
    g->final_mgr_gone = 0;
    cdsm__w.rank = cdsm__w.n = -1;
    memset(&cdsm__st, 0, sizeof cdsm__st);
    cdsm__bar.epoch = 0;
    g->sync_seq = 0;
    cdsm__mode.replaying = cdsm__mode.replaying_start = 0;
    cdsm__w.recovered = 0;
    cdsm__w.remap_gen = 0;
    g->lost_rank = -1;
    g->job_id = 0;
    g->log_bytes = 0;
    g->archive_bytes = 0;
    return rc;
}
