/* PARMACS compatibility layer (include/cdsm/parmacs.h): fork-join SPLASH programs on SPMD
 * ranks by fork emulation (docs/DESIGN.md, section 1, `splash/`).
 *
 * Start (the constructor of MAIN_ENV, before main): address-space randomisation off
 * (re-exec), the program's globals found and handed to the heap (globals.c: they are
 * shared, as in the pthreads build), cdsm_init(), a shared control block (the one
 * collective allocation besides the globals' shadow), a check that every rank has the
 * same address layout. Rank 0 returns and runs main; every other rank stays here, in a
 * loop: barrier, read the command rank 0 wrote before its matching barrier, run it. RUN:
 * call the worker function, a barrier (rank 0's WAIT_FOR_END). EXIT: cdsm_finalize,
 * exit(0). Every synchronisation of the layer (LOCK, UNLOCK, BARRIER...) first pushes the
 * globals that are not DSM pages; every acquire pulls them afterwards. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include "cdsm.h"
#include "cdsm/parmacs.h"
#include "config.h"
#include "heap.h"
#include "lock.h"
#include "pm_int.h"

/* Set across the re-exec that turns randomisation off (not CDSM_*: cdsm_init would reject it). */
#define PM_REEXEC_ENV "LIBCDSM_PARMACS_REEXEC"

enum { PM_OP_RUN = 1, PM_OP_EXIT = 2 };

/* In shared memory (the collective allocation at start). Rank 0 writes seq/op/fn before
 * the barrier that publishes a command. */
#define PM_PLACE_MAX 4096 /* G_MALLOCs of main placed between two CREATEs (past it: none any more) */
typedef struct pm_ctl {
    uint64_t seq;       /* number of the last command */
    uint64_t op;        /* PM_OP_* */
    uint64_t fn;        /* worker function (same address on every rank) */
    uint64_t nplace;    /* RUN: main's G_MALLOCs since the last RUN, (offset, size) each */
    uint64_t place[PM_PLACE_MAX][2];
    uint64_t fp[];      /* per rank: hash of the address layout (start-up check) */
} pm_ctl_t;

/* This process's state: in libcdsm's own data segment, never shared. */
static struct {
    int started, finished, dying;
    int rank, n;
    pm_ctl_t *ctl;
    uint64_t seq;        /* last command sent (rank 0) or run (others) */
    int in_batch;        /* rank 0: from the first CREATE to WAIT_FOR_END; others: in fn */
    long created;        /* rank 0: workers started in this batch */
    int newstyle;        /* rank 0: the batch came from CREATE(fn, P) */
    cdsm_parmacs_fn_t batch_fn;
    /* Lock ids: main's from [main_first, main_end); a worker's from the ids in [work_first,
     * lock_end) that this rank manages (id % n == rank): no shared counter, no message,
     * the same ids when a replay runs the same code. */
    int main_first, main_end, work_first, work_count, lock_end;
    uint64_t main_next, work_next;
    int warned_locks;
    unsigned long roi_begin, roi_end;
} pm;

/* The id each lock variable (its address, and whether main or a worker initialised it)
 * took here: LOCKINIT again on the same variable takes the same id (pm_lock_init_at). */
typedef struct pm_idslot {
    uintptr_t key; /* 0: empty */
    int id;
} pm_idslot_t;
static struct {
    pm_idslot_t *v;
    size_t cap, count;
    uint64_t taken, reused;
} ids;

void cdsm__pm_die(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "cdsm PARMACS[rank %d]: %s\n", pm.started ? pm.rank : -1, msg);
    fflush(stderr);
    if (pm.started && !pm.finished && pm.rank == 0 && !pm.in_batch) {
        /* The other ranks wait for a command: end the job in order (the exit handler stops
         * them), so the launcher forwards this message before anything is killed. */
        exit(1);
    }
    pm.dying = 1;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    if (init) MPI_Finalized(&fin);
    if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 1);
    _exit(1);
}

/* ---- address-space randomisation -------------------------------------------------- */

static int aslr_globally_off(void)
{
    FILE *f = fopen("/proc/sys/kernel/randomize_va_space", "r");
    if (!f) return 0;
    int c = fgetc(f);
    fclose(f);
    return c == '0';
}

/* Re-execute the program with randomisation off unless it already is, so that the
 * executable, its libraries and their data lie at the same addresses on every rank.
 * Only before MPI starts: afterwards the launcher's connection would be in use. */
static void pm_no_aslr(void)
{
    int pers = personality(0xffffffff);
    if (pers != -1 && (pers & ADDR_NO_RANDOMIZE)) {
        unsetenv(PM_REEXEC_ENV);
        return;
    }
    if (aslr_globally_off()) return;
    if (getenv(PM_REEXEC_ENV))
        cdsm__pm_die("address-space randomisation is still on after re-executing with ADDR_NO_RANDOMIZE "
               "(personality %#x); every rank needs the same addresses: run with `setarch -R` or "
               "kernel.randomize_va_space=0",
               (unsigned)pers);
    int init = 0;
    MPI_Initialized(&init);
    if (init)
        cdsm__pm_die("address-space randomisation is on and MPI is already initialised, so the program "
               "cannot re-execute itself: put MAIN_ENV in the file with main (its constructor runs "
               "first), or run with `setarch -R`");
    if (pers == -1 || personality((unsigned long)pers | ADDR_NO_RANDOMIZE) == -1)
        cdsm__pm_die("personality(ADDR_NO_RANDOMIZE) failed: %s; run with `setarch -R` or "
               "kernel.randomize_va_space=0",
               strerror(errno));
    /* The same argv, read back from the kernel (main's may be changed by now). */
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) cdsm__pm_die("cannot read /proc/self/cmdline to re-execute: %s", strerror(errno));
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) cdsm__pm_die("out of memory reading /proc/self/cmdline");
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) cdsm__pm_die("cannot read /proc/self/cmdline: %s", strerror(errno));
        if (r == 0) break;
        len += (size_t)r;
        if (len == cap) buf = realloc(buf, (cap *= 2) + 1);
    }
    close(fd);
    buf[len] = '\0';
    size_t argc = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\0') argc++;
    if (len && buf[len - 1] != '\0') argc++;
    char **argv = calloc(argc + 1, sizeof *argv);
    if (!argv) cdsm__pm_die("out of memory re-executing");
    size_t k = 0;
    for (size_t i = 0; i < len && k < argc; i += strlen(buf + i) + 1) argv[k++] = buf + i;
    setenv(PM_REEXEC_ENV, "1", 1);
    execv("/proc/self/exe", argv);
    cdsm__pm_die("re-executing /proc/self/exe with address-space randomisation off failed: %s",
           strerror(errno));
}

/* ---- commands --------------------------------------------------------------------- */

/* Every synchronisation of the layer first pushes the program's globals that are not DSM
 * pages, and every acquire pulls them afterwards (globals.c); a barrier is both. */
static void pm_barrier(const char *what)
{
    cdsm__pm_globals_push();
    int rc = cdsm_barrier();
    cdsm__pm_globals_pull();
    if (rc) cdsm__pm_die("%s: cdsm_barrier failed: %s (%s)", what, cdsm_last_error(), cdsm_status_name(rc));
}

static void pm_lock_raw(int id, const char *what)
{
    /* The globals beside libc's objects are copied only if the acquire brought records: a
     * cached token brings nothing, and most of BARNES's 2 M acquires are such. */
    int rc = cdsm_lock_acquire(id);
    if (rc) cdsm__pm_die("%s: cdsm_lock_acquire(%d) failed: %s (%s)", what, id, cdsm_last_error(), cdsm_status_name(rc));
    cdsm__pm_globals_sync_if_new();
}

static void pm_unlock_raw(int id, const char *what)
{
    cdsm__pm_globals_push();
    int rc = cdsm_lock_release(id);
    if (rc) cdsm__pm_die("%s: cdsm_lock_release(%d) failed: %s (%s)", what, id, cdsm_last_error(), cdsm_status_name(rc));
}

/* Rank 0: publish a command (the barrier pairs with the waiting ranks' barrier). */
static void pm_send(uint64_t op, cdsm_parmacs_fn_t fn)
{
    pm_ctl_t *c = pm.ctl;
    c->op = op;
    c->fn = (uint64_t)(uintptr_t)fn;
    /* (The workers learn where main's allocations have their directories before they
     * touch them: alloc.c.) */
    c->nplace = op == PM_OP_RUN ? cdsm__alloc_master_take(c->place, PM_PLACE_MAX) : 0;
    c->seq = ++pm.seq;
    pm_barrier(op == PM_OP_RUN ? "CREATE" : "MAIN_END");
}

static void pm_worker_loop(void) __attribute__((noreturn));
static void pm_lock_ids(int nl);

/* A worker: main's G_MALLOCs since the last batch, placed as rank 0 placed them. */
static void pm_learn_places(const pm_ctl_t *c)
{
    if (c->nplace > PM_PLACE_MAX)
        cdsm__pm_die("command %llu from rank 0 lists %llu G_MALLOC placements (at most %d)",
                     (unsigned long long)c->seq, (unsigned long long)c->nplace, PM_PLACE_MAX);
    for (uint64_t i = 0; i < c->nplace; i++)
        if (cdsm__alloc_master_learn(c->place[i][0], c->place[i][1])) cdsm__pm_die("%s", cdsm_last_error());
}

static void pm_worker_loop(void)
{
    for (;;) {
        pm_barrier("waiting for CREATE");
        pm_ctl_t *c = pm.ctl;
        if (c->seq != pm.seq + 1)
            cdsm__pm_die("expected command %llu from rank 0 but found %llu: rank 0 entered a barrier "
                   "outside CREATE..WAIT_FOR_END",
                   (unsigned long long)(pm.seq + 1), (unsigned long long)c->seq);
        pm.seq = c->seq;
        if (c->op == PM_OP_EXIT) {
            pm.finished = 1;
            int rc = cdsm_finalize();
            if (rc) fprintf(stderr, "cdsm PARMACS[rank %d]: cdsm_finalize: %s\n", pm.rank, cdsm_last_error());
            exit(rc ? 1 : 0);
        }
        if (c->op != PM_OP_RUN) cdsm__pm_die("unknown command %llu from rank 0", (unsigned long long)c->op);
        pm_learn_places(c);
        cdsm_parmacs_fn_t fn = (cdsm_parmacs_fn_t)(uintptr_t)c->fn;
        pm.in_batch = 1;
        fn();
        pm.in_batch = 0;
        pm_barrier("worker end (WAIT_FOR_END)");
    }
}

/* Rank 0 outside a batch: tell the others to finish, finish. */
static void pm_shutdown(void)
{
    if (pm.n > 1) pm_send(PM_OP_EXIT, NULL);
    pm.finished = 1;
    if (cdsm__cfg.stats >= 1 && pm.roi_end > pm.roi_begin)
        fprintf(stderr, "cdsm PARMACS: region of interest %lu us (rank 0)\n", pm.roi_end - pm.roi_begin);
    if (cdsm__cfg.stats >= 1)
        fprintf(stderr, "cdsm PARMACS: lock ids on rank 0: %llu taken, %llu initialisations of the same variable again\n",
                (unsigned long long)ids.taken, (unsigned long long)ids.reused);
    int rc = cdsm_finalize();
    if (rc) fprintf(stderr, "cdsm PARMACS[rank 0]: cdsm_finalize: %s\n", cdsm_last_error());
}

/* exit() anywhere ends every thread of a pthreads program. Rank 0 in main: the other ranks
 * are waiting, so finish them cleanly and keep the exit status. Anywhere else the workers
 * are running: end the whole job. */
static void pm_on_exit(int status, void *arg)
{
    (void)arg;
    if (!pm.started || pm.finished || pm.dying) return;
    if (pm.rank == 0 && !pm.in_batch) {
        fflush(stdout);
        pm_shutdown();
        return;
    }
    pm.dying = 1;
    fflush(stdout);
    fprintf(stderr, "cdsm PARMACS[rank %d]: exit(%d) while the workers of a CREATE run: ending the whole job\n",
            pm.rank, status);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, status ? status : 1);
}

void cdsm__parmacs_start(void)
{
    if (pm.started) return;
    pm_no_aslr();
    cdsm__pm_globals_find();
    int rc = cdsm_init(NULL, NULL);
    if (rc) {
        fprintf(stderr, "cdsm PARMACS: cdsm_init failed: %s (%s)\n", cdsm_last_error(), cdsm_status_name(rc));
        _exit(1);
    }
    pm.started = 1;
    pm.rank = cdsm_rank();
    pm.n = cdsm_nranks();
    int nl = cdsm_nlocks();
    if (nl < 4) cdsm__pm_die("CDSM_LOCKS=%d: the PARMACS layer needs at least 4 lock ids", nl);
    pm_lock_ids(nl);
    /* A page of its own (at least), so the program's data never shares its page. */
    size_t need = sizeof(pm_ctl_t) + (size_t)pm.n * sizeof(uint64_t), pg = cdsm_page_size();
    void *ctl;
    rc = cdsm_alloc((need + pg - 1) / pg * pg, &ctl);
    if (rc) cdsm__pm_die("control block: %s", cdsm_last_error());
    pm.ctl = ctl;
    pm.ctl->fp[pm.rank] = cdsm__pm_globals_fingerprint();
    pm_barrier("start");
    if (pm.ctl->fp[pm.rank] != pm.ctl->fp[0])
        cdsm__pm_die("this rank's executable and libraries lie at other addresses than rank 0's (or the "
               "data segment differs): the same program must run on every rank with address-space "
               "randomisation off");
    cdsm__pm_globals_setup(pm.rank, pm.n);
    /* (Every rank, before rank 0 runs main: G_MALLOC's arena is rank 0's from here on.) */
    if (cdsm__alloc_master_start(PM_PLACE_MAX)) cdsm__pm_die("%s", cdsm_last_error());
    if (cdsm__cfg.stats >= 1 && pm.rank == 0) {
        size_t mixed, all = cdsm__pm_globals_bytes(&mixed);
        fprintf(stderr, "cdsm PARMACS: the program's globals are shared: %zu bytes, %zu as DSM pages at %p, %zu "
                "beside libc's objects copied at each lock and barrier\n", all, cdsm__heap.gsize,
                (void *)cdsm__heap.gbase, mixed);
    }
    if (on_exit(pm_on_exit, NULL)) cdsm__pm_die("on_exit failed");
    if (pm.rank != 0) pm_worker_loop();
}

void cdsm__parmacs_main_initenv(void)
{
    cdsm__parmacs_start(); /* normally done by MAIN_ENV's constructor */
}

void cdsm__parmacs_main_end(void)
{
    if (!pm.started) exit(0);
    /* One worker (P = 1): some programs skip WAIT_FOR_END then (VOLREND); nobody is left
     * to wait for. */
    if (pm.rank == 0 && pm.in_batch && pm.n == 1) cdsm__parmacs_wait_for_end(1);
    if (pm.rank != 0 || pm.in_batch) cdsm__pm_die("MAIN_END inside a worker or before WAIT_FOR_END");
    fflush(stdout);
    pm_shutdown();
    exit(0);
}

static void pm_start_batch(cdsm_parmacs_fn_t fn)
{
    if (pm.n > 1) {
        pm_send(PM_OP_RUN, fn);
    }
    pm.in_batch = 1;
    pm.batch_fn = fn;
    pm.created = 0;
}

void cdsm__parmacs_create(cdsm_parmacs_fn_t fn, long nprocs)
{
    cdsm__parmacs_start();
    if (pm.rank != 0) cdsm__pm_die("CREATE inside a worker: nested CREATE is not supported");
    if (nprocs > 0) { /* Splash-3: CREATE(fn, P) */
        if (pm.in_batch) cdsm__pm_die("CREATE(fn, %ld) while a batch of workers runs (no WAIT_FOR_END before)", nprocs);
        if (nprocs != pm.n)
            cdsm__pm_die("CREATE(fn, %ld) but the job has %d ranks (worker i runs on rank i): run with "
                   "mpiexec -n %ld, or pass %d processes to the program",
                   nprocs, pm.n, nprocs, pm.n);
        pm_start_batch(fn);
        pm.created = nprocs - 1;
        pm.newstyle = 1;
        fn();
        return;
    }
    /* SPLASH-2: CREATE(fn), once per worker; the first one starts every other rank. */
    if (!pm.in_batch) {
        pm_start_batch(fn);
        pm.newstyle = 0;
    } else if (pm.newstyle || fn != pm.batch_fn) {
        cdsm__pm_die("CREATE of another function while a batch runs: every CREATE between two "
               "WAIT_FOR_END must start the same function");
    }
    if (++pm.created > pm.n - 1)
        cdsm__pm_die("CREATE number %ld but the job has only %d ranks (worker i runs on rank i, rank 0 "
               "runs main's own call): run with mpiexec -n P where P-1 is the number of CREATEs",
               pm.created, pm.n);
}

void cdsm__parmacs_wait_for_end(long n)
{
    cdsm__parmacs_start();
    if (pm.rank != 0) cdsm__pm_die("WAIT_FOR_END inside a worker");
    if (!pm.in_batch) {
        if (pm.n == 1) return; /* P = 1: no CREATE at all */
        cdsm__pm_die("WAIT_FOR_END(%ld) without CREATE, but the job has %d ranks", n, pm.n);
    }
    if (pm.created != pm.n - 1)
        cdsm__pm_die("WAIT_FOR_END(%ld): the batch started %ld workers besides main, but the job has %d "
               "ranks (worker i runs on rank i): run with mpiexec -n %ld",
               n, pm.created, pm.n, pm.created + 1);
    if (pm.n > 1) pm_barrier("WAIT_FOR_END");
    pm.in_batch = 0;
    pm.created = 0;
    pm.newstyle = 0;
    pm.batch_fn = NULL;
}

/* ---- memory ----------------------------------------------------------------------- */

void *cdsm__parmacs_malloc(size_t size)
{
    cdsm__parmacs_start();
    void *p = NULL;
    if (!size) size = 1;
    /* main on rank 0 while the others wait: the common arena (nobody else allocates there
     * any more); inside a worker: this rank's arena. Both are valid on every rank. */
    int in_main = pm.rank == 0 && !pm.in_batch;
    int rc = in_main ? cdsm__alloc_master(size, &p) : cdsm_malloc(size, &p);
    /* A program cannot check: G_MALLOC never hands it NULL. */
    if (rc)
        cdsm__pm_die("G_MALLOC of %zu bytes (%.1f MiB) %s failed: %s; the shared heap is CDSM_HEAP_SIZE=%zu bytes: "
               "set CDSM_HEAP_SIZE larger", size, (double)size / 1048576.0, in_main ? "in main" : "in a worker",
               cdsm_last_error(), cdsm__heap.heap_size);
    return p;
}

void cdsm__parmacs_free(void *ptr)
{
    (void)ptr; /* kept: see README (G_FREE) */
}

unsigned long cdsm__parmacs_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long)ts.tv_sec * 1000000ul + (unsigned long)(ts.tv_nsec / 1000);
}

/* ---- locks ------------------------------------------------------------------------ */

/* The upper half of the ids (the lower stays free for programs that also call the cdsm
 * API): main's sixteenth, handed out in order (its locks' managers spread over the ranks),
 * then the workers' ids up to lock_end, each rank taking those it manages. The last id
 * (lock_end), once the layer's own lock for a shared id counter, stays unused. */
static void pm_lock_ids(int nl)
{
    pm.lock_end = nl - 1;
    pm.main_first = nl / 2;
    pm.main_end = pm.main_first + nl / 16; /* (main makes few; workers make a lock per tree cell) */
    int r0 = pm.main_end % pm.n;
    pm.work_first = pm.main_end + (pm.rank - r0 + pm.n) % pm.n;
    pm.work_count = pm.work_first < pm.lock_end ? (pm.lock_end - 1 - pm.work_first) / pm.n + 1 : 0;
    if (pm.main_end <= pm.main_first || pm.work_count < 1)
        cdsm__pm_die("CDSM_LOCKS=%d leaves no lock ids for %d ranks: raise CDSM_LOCKS", nl, pm.n);
}

static void pm_ids_shared(int limit)
{
    if (pm.warned_locks) return;
    pm.warned_locks = 1;
    fprintf(stderr,
            "cdsm PARMACS[rank %d]: more than %d locks initialised %s: lock ids are shared from now on "
            "(correct unless a worker holds two locks with one id; raise CDSM_LOCKS to avoid it)\n",
            pm.rank, limit, pm.in_batch || pm.rank ? "in workers on this rank" : "in main");
}

/* The next lock id of this rank: main's in main (rank 0 outside a batch), else a worker's. */
static int pm_lock_id(void)
{
    if (pm.rank == 0 && !pm.in_batch) {
        int range = pm.main_end - pm.main_first;
        if (pm.main_next >= (uint64_t)range) pm_ids_shared(range);
        return pm.main_first + (int)(pm.main_next++ % (uint64_t)range);
    }
    if (pm.work_next >= (uint64_t)pm.work_count) pm_ids_shared(pm.work_count);
    return pm.work_first + (int)(pm.work_next++ % (uint64_t)pm.work_count) * pm.n;
}

static pm_idslot_t *pm_idslot(uintptr_t key)
{
    size_t h = (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & (ids.cap - 1);
    while (ids.v[h].key && ids.v[h].key != key) h = (h + 1) & (ids.cap - 1);
    return &ids.v[h];
}

static void pm_idmap_grow(void)
{
    pm_idslot_t *old = ids.v;
    size_t oldcap = ids.cap;
    ids.cap = oldcap ? oldcap * 2 : 1024;
    ids.v = calloc(ids.cap, sizeof *ids.v);
    if (!ids.v) cdsm__pm_die("no memory for the table of %zu lock variables", ids.count);
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].key) *pm_idslot(old[i].key) = old[i];
    free(old);
}

/* The id of the lock variable at addr. A tree code initialises a lock or condition variable
 * per cell at every step (BARNES: thousands a step), and its cells come from a pool: the
 * same variable initialised again takes the id it took before, so the ids are not used up
 * step after step. As in pthreads, initialising a lock that someone still uses is the
 * program's error, so the old id is free; only one this rank holds right now is not taken
 * again. A replay makes the same calls at the same addresses and gets the same ids. */
static int pm_lock_init_at(void *addr)
{
    cdsm__parmacs_start();
    uintptr_t key = (uintptr_t)addr * 2 + (pm.rank == 0 && !pm.in_batch); /* (main's ids are others) */
    if (ids.count * 2 >= ids.cap) pm_idmap_grow();
    pm_idslot_t *s = pm_idslot(key);
    if (s->key && cdsm__lock_get((uint32_t)s->id)->state != CDSM_LK_HELD) {
        ids.reused++;
        return s->id;
    }
    if (!s->key) ids.count++;
    s->key = key;
    s->id = pm_lock_id();
    ids.taken++;
    return s->id;
}

void cdsm__parmacs_lock_init(cdsm_parmacs_lock_t *l)
{
    *l = pm_lock_init_at(l);
}

void cdsm__parmacs_alock_init(cdsm_parmacs_lock_t *locks, long n)
{
    cdsm__parmacs_start();
    if (n < 0) cdsm__pm_die("ALOCKINIT with a negative count (%ld)", n);
    for (long i = 0; i < n; i++) locks[i] = pm_lock_init_at(&locks[i]);
}

static void pm_check_lock(int id, const char *what)
{
    if (!pm.started) cdsm__pm_die("%s before the layer started (MAIN_ENV missing?)", what);
    if (id < pm.main_first || id >= pm.lock_end)
        cdsm__pm_die("%s on a lock that LOCKINIT/ALOCKINIT did not initialise (value %d; ids are %d..%d)", what, id,
                     pm.main_first, pm.lock_end - 1);
}

void cdsm__parmacs_lock(int id)
{
    pm_check_lock(id, "LOCK");
    pm_lock_raw(id, "LOCK");
}

void cdsm__parmacs_unlock(int id)
{
    pm_check_lock(id, "UNLOCK");
    pm_unlock_raw(id, "UNLOCK");
}

void cdsm__parmacs_barrier(long n)
{
    cdsm__parmacs_start();
    if (n != pm.n)
        cdsm__pm_die("BARRIER(.., %ld) but the job has %d ranks: every rank runs one worker, so the "
               "program's process count must equal the number of ranks",
               n, pm.n);
    if (pm.n > 1 && !pm.in_batch)
        cdsm__pm_die("BARRIER in main outside CREATE..WAIT_FOR_END: the other ranks run no worker");
    pm_barrier("BARRIER");
}

/* ---- pause flags and condition variables ------------------------------------------- */

static void pm_check_shared(const void *p, const char *what)
{
    cdsm__parmacs_start();
    const char *c = p;
    if (pm.n > 1 && !cdsm__heap_contains(c) && !cdsm__pm_globals_has(c))
        cdsm__pm_die("%s: the variable at %p is neither in G_MALLOC'd memory nor a global of the program (a local "
                     "variable is private to its worker)", what, p);
}

/* Polling: yield the CPU between reads, then sleep a little (ranks may share cores). */
static void pm_poll_wait(unsigned *spins)
{
    if (++*spins < 200) {
        sched_yield();
    } else {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
}

void cdsm__parmacs_pause_init(cdsm_parmacs_pause_t *p)
{
    pm_check_shared(p, "PAUSEINIT");
    p->lock = pm_lock_init_at(&p->lock);
    pm_lock_raw(p->lock, "PAUSEINIT");
    p->flag = 0;
    pm_unlock_raw(p->lock, "PAUSEINIT");
}

static void pm_pause_put(cdsm_parmacs_pause_t *p, int v, const char *what)
{
    pm_check_shared(p, what);
    pm_check_lock(p->lock, what);
    pm_lock_raw(p->lock, what);
    p->flag = v;
    pm_unlock_raw(p->lock, what);
}

void cdsm__parmacs_pause_set(cdsm_parmacs_pause_t *p)
{
    pm_pause_put(p, 1, "SETPAUSE");
}

void cdsm__parmacs_pause_clear(cdsm_parmacs_pause_t *p)
{
    pm_pause_put(p, 0, "CLEARPAUSE");
}

void cdsm__parmacs_pause_wait(cdsm_parmacs_pause_t *p)
{
    pm_check_shared(p, "WAITPAUSE");
    pm_check_lock(p->lock, "WAITPAUSE");
    for (unsigned spins = 0;; pm_poll_wait(&spins)) {
        pm_lock_raw(p->lock, "WAITPAUSE");
        int f = p->flag;
        pm_unlock_raw(p->lock, "WAITPAUSE");
        if (f) return;
    }
}

void cdsm__parmacs_cond_init(cdsm_parmacs_condvar_t *c)
{
    pm_check_shared(c, "CONDVARINIT");
    c->lock = pm_lock_init_at(&c->lock);
    pm_lock_raw(c->lock, "CONDVARINIT");
    c->gen = 0;
    pm_unlock_raw(c->lock, "CONDVARINIT");
}

/* Called with `lock` held, returns with it held. The generation is read while `lock` is
 * held, so a signal sent under `lock` after the caller checked its predicate is not lost. */
void cdsm__parmacs_cond_wait(cdsm_parmacs_condvar_t *c, int lock)
{
    pm_check_shared(c, "CONDVARWAIT");
    pm_check_lock(c->lock, "CONDVARWAIT");
    pm_check_lock(lock, "CONDVARWAIT");
    pm_lock_raw(c->lock, "CONDVARWAIT");
    unsigned gen = c->gen;
    pm_unlock_raw(c->lock, "CONDVARWAIT");
    pm_unlock_raw(lock, "CONDVARWAIT");
    for (unsigned spins = 0;; pm_poll_wait(&spins)) {
        pm_lock_raw(c->lock, "CONDVARWAIT");
        unsigned now = c->gen;
        pm_unlock_raw(c->lock, "CONDVARWAIT");
        if (now != gen) break;
    }
    pm_lock_raw(lock, "CONDVARWAIT");
}

/* SIGNAL and BCAST alike: every waiter wakes (a spurious wake-up for all but one, which
 * pthread_cond_signal allows); waiters re-check their predicate. */
void cdsm__parmacs_cond_signal(cdsm_parmacs_condvar_t *c)
{
    pm_check_shared(c, "CONDVARSIGNAL");
    pm_check_lock(c->lock, "CONDVARSIGNAL");
    pm_lock_raw(c->lock, "CONDVARSIGNAL");
    c->gen++;
    pm_unlock_raw(c->lock, "CONDVARSIGNAL");
}

/* ---- region of interest ------------------------------------------------------------ */

void cdsm__parmacs_roi_begin(void)
{
    pm.roi_begin = cdsm__parmacs_clock();
}

void cdsm__parmacs_roi_end(void)
{
    pm.roi_end = cdsm__parmacs_clock();
}

unsigned long cdsm_parmacs_roi_us(void)
{
    return pm.roi_end > pm.roi_begin ? pm.roi_end - pm.roi_begin : 0;
}
