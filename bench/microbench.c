/* cdsm microbenchmark: the latency of the protocol's basic operations next to the MPI
 * operations they are built from, measured in the same run on exactly 2 ranks.
 *
 *   1. MPI ping-pong round trip (8 B, 4 KiB) and MPI_Barrier, on a duplicate of
 *      MPI_COMM_WORLD made here (cdsm's service thread is idle meanwhile);
 *   2. local write fault on a valid read-only page (fresh page; page written in an earlier
 *      interval), and a write to an already writable page for reference;
 *   3. remote access miss served by one diff;
 *   4. remote access miss served by a whole page (the page has >= CDSM_WHOLE_PAGE_NOTICES
 *      missing diffs; checked with the pages_fetched counter);
 *   5. uncontended lock acquire whose token is at the other rank (one request/grant round
 *      trip), the release, and a re-acquire of a cached token;
 *   6. contended lock: both ranks increment one shared counter under one lock;
 *   7. cdsm_barrier().
 *
 * Each operation is timed one at a time on rank 0; the table gives median, min and 90th
 * percentile in microseconds, a reference built from the MPI numbers of the same run, the
 * ratio, and whether the performance goal (ratio <= 3) is met. Rank 0 prints; -o FILE
 * also writes the rows as CSV.
 *
 * Ranks synchronise only with cdsm_barrier() (around shared-memory phases: under lazy
 * release consistency the other rank's writes become visible only there) and with MPI on
 * the benchmark's own communicator (around MPI phases). Shared memory is never passed to
 * MPI. Exit status: 0 ok, 1 a correctness check failed, 2 usage or set-up error. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cdsm.h>

#define LOCK_CONTENDED 0  /* manager rank 0 */
#define LOCK_CLOSER 1     /* manager rank 1: rank 1 holds its token from the start */
#define LOCK_FIRST_FREE 3 /* odd ids from here: one fresh lock per uncontended acquire */

static int me;
static MPI_Comm bc; /* the benchmark's own communicator */
static int failures;

/* ---- helpers ------------------------------------------------------------------------ */

#define CHECK(call)                                                                           \
    do {                                                                                      \
        int rc_ = (call);                                                                     \
        if (rc_) {                                                                            \
            fprintf(stderr, "microbench[%d]: %s: %s (%s)\n", me, #call, cdsm_status_name(rc_), \
                    cdsm_last_error());                                                       \
            MPI_Abort(MPI_COMM_WORLD, 2);                                                     \
        }                                                                                     \
    } while (0)

static inline uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

#define COMPILER_FENCE() __asm__ __volatile__("" ::: "memory")

static double us(uint64_t a, uint64_t b)
{
    return (double)(b - a) / 1000.0;
}

static double *samples(int n)
{
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) {
        fprintf(stderr, "microbench[%d]: out of memory\n", me);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct summary {
    double med, min, p90;
    int n;
} summary_t;

/* Sorts v. Median of an even count is the mean of the middle two; p90 is the smallest
 * sample with at least 90% of the samples at or below it. */
static summary_t summarize(double *v, int n)
{
    summary_t s = {NAN, NAN, NAN, n};
    if (n <= 0) return s;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    s.min = v[0];
    s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    int k = (int)ceil(0.9 * n) - 1;
    s.p90 = v[k < 0 ? 0 : k];
    return s;
}

static cdsm_stats_t stats_now(void)
{
    cdsm_stats_t s;
    CHECK(cdsm_stats_get(&s));
    return s;
}

#define DELTA(a, b, f) ((b).f - (a).f)

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "microbench[%d]: CHECK FAILED: ", me);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}

/* ---- result rows -------------------------------------------------------------------- */

typedef struct row {
    char op[48];
    char path[48];
    summary_t s;
    char ref_name[48]; /* empty: no reference */
    double ref;
    int goal;          /* 1: the ratio is a goal (<= GOAL_FACTOR) */
} row_t;

#define GOAL_FACTOR 3.0
#define MAX_ROWS 32
static row_t rows[MAX_ROWS];
static int nrows;

static row_t *add_row(const char *op, const char *path, summary_t s)
{
    if (nrows == MAX_ROWS) abort();
    row_t *r = &rows[nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->op, sizeof r->op, "%s", op);
    snprintf(r->path, sizeof r->path, "%s", path);
    r->s = s;
    r->ref = NAN;
    return r;
}

static void set_ref(row_t *r, const char *name, double ref, int goal)
{
    snprintf(r->ref_name, sizeof r->ref_name, "%s", name);
    r->ref = ref;
    r->goal = goal;
}

static const char *goal_text(const row_t *r, int csv)
{
    if (!r->goal) return csv ? "" : "-";
    double ratio = r->s.med / r->ref;
    if (!isfinite(ratio)) return csv ? "n/a" : "n/a";
    return ratio <= GOAL_FACTOR ? (csv ? "met" : "goal met") : (csv ? "missed" : "goal missed");
}

static void print_table(FILE *f)
{
    fprintf(f, "\n%-30s %-22s %6s %10s %10s %10s  %-26s %9s %7s  %s\n", "operation", "path", "n",
            "median_us", "min_us", "p90_us", "reference", "ref_us", "ratio", "goal (ratio<=3)");
    for (int i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        fprintf(f, "%-30s %-22s %6d %10.2f %10.2f %10.2f  ", r->op, r->path, r->s.n, r->s.med,
                r->s.min, r->s.p90);
        if (r->ref_name[0])
            fprintf(f, "%-26s %9.2f %7.2f  %s\n", r->ref_name, r->ref, r->s.med / r->ref, goal_text(r, 0));
        else
            fprintf(f, "%-26s %9s %7s  %s\n", "-", "-", "-", "-");
    }
}

static int write_csv(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "microbench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "operation,path,reps,median_us,min_us,p90_us,reference,reference_us,ratio,goal_factor,goal\n");
    for (int i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        fprintf(f, "%s,%s,%d,%.3f,%.3f,%.3f,", r->op, r->path, r->s.n, r->s.med, r->s.min, r->s.p90);
        if (r->ref_name[0])
            fprintf(f, "%s,%.3f,%.3f,", r->ref_name, r->ref, r->s.med / r->ref);
        else
            fprintf(f, ",,,");
        if (r->goal)
            fprintf(f, "%.1f,%s\n", GOAL_FACTOR, goal_text(r, 1));
        else
            fprintf(f, ",\n");
    }
    if (fclose(f)) {
        fprintf(stderr, "microbench: writing %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- 1. MPI references -------------------------------------------------------------- */

static summary_t mpi_pingpong(int size, int reps, int warm)
{
    static char buf[4096];
    double *v = samples(reps);
    MPI_Barrier(bc);
    for (int i = -warm; i < reps; i++) {
        if (me == 0) {
            uint64_t t0 = now_ns();
            MPI_Send(buf, size, MPI_BYTE, 1, 1, bc);
            MPI_Recv(buf, size, MPI_BYTE, 1, 1, bc, MPI_STATUS_IGNORE);
            uint64_t t1 = now_ns();
            if (i >= 0) v[i] = us(t0, t1);
        } else {
            MPI_Recv(buf, size, MPI_BYTE, 0, 1, bc, MPI_STATUS_IGNORE);
            MPI_Send(buf, size, MPI_BYTE, 0, 1, bc);
        }
    }
    summary_t s = summarize(v, reps);
    free(v);
    return s;
}

static summary_t mpi_barrier(int reps, int warm)
{
    double *v = samples(reps);
    MPI_Barrier(bc);
    for (int i = -warm; i < reps; i++) {
        uint64_t t0 = now_ns();
        MPI_Barrier(bc);
        uint64_t t1 = now_ns();
        if (i >= 0) v[i] = us(t0, t1);
    }
    summary_t s = summarize(v, reps);
    free(v);
    return s;
}

/* ---- 2. local write faults ---------------------------------------------------------- */

typedef struct faults {
    summary_t fresh, nofault, rewrite;
} faults_t;

static faults_t write_faults(size_t ps, int reps, int warm)
{
    faults_t out;
    int np = reps + warm;
    char *reg;
    CHECK(cdsm_alloc((size_t)np * ps, (void **)&reg));
    double *vf = samples(reps), *vn = samples(reps), *vr = samples(reps);
    CHECK(cdsm_barrier());
    if (me == 0) {
        cdsm_stats_t a = stats_now();
        /* First write to a fresh (valid, zero, read-only) page: fault, twin, mprotect. */
        for (int i = 0; i < np; i++) {
            volatile long *w = (volatile long *)(reg + (size_t)i * ps);
            uint64_t t0 = now_ns();
            COMPILER_FENCE();
            *w = i + 1;
            COMPILER_FENCE();
            uint64_t t1 = now_ns();
            if (i >= warm) vf[i - warm] = us(t0, t1);
        }
        cdsm_stats_t b = stats_now();
        if (DELTA(a, b, write_faults) != (uint64_t)np)
            fail("write fault: %llu write faults for %d first writes",
                 (unsigned long long)DELTA(a, b, write_faults), np);
        /* The same pages, writable now: no fault. */
        for (int i = 0; i < np; i++) {
            volatile long *w = (volatile long *)(reg + (size_t)i * ps + 64);
            uint64_t t0 = now_ns();
            COMPILER_FENCE();
            *w = i + 2;
            COMPILER_FENCE();
            uint64_t t1 = now_ns();
            if (i >= warm) vn[i - warm] = us(t0, t1);
        }
        cdsm_stats_t c = stats_now();
        if (DELTA(b, c, write_faults) != 0) fail("fault-free writes took %llu faults",
                                                 (unsigned long long)DELTA(b, c, write_faults));
    }
    /* Ends rank 0's interval: its pages are read-only again, each with the twin of a
     * closed interval whose diff nobody asked for yet. */
    CHECK(cdsm_barrier());
    if (me == 0) {
        cdsm_stats_t a = stats_now();
        for (int i = 0; i < np; i++) {
            volatile long *w = (volatile long *)(reg + (size_t)i * ps + 128);
            uint64_t t0 = now_ns();
            COMPILER_FENCE();
            *w = i + 3;
            COMPILER_FENCE();
            uint64_t t1 = now_ns();
            if (i >= warm) vr[i - warm] = us(t0, t1);
        }
        cdsm_stats_t b = stats_now();
        if (DELTA(a, b, write_faults) != (uint64_t)np || DELTA(a, b, diffs_created) != (uint64_t)np)
            fail("rewrite fault: %llu write faults, %llu diffs for %d pages",
                 (unsigned long long)DELTA(a, b, write_faults),
                 (unsigned long long)DELTA(a, b, diffs_created), np);
    }
    CHECK(cdsm_barrier());
    out.fresh = summarize(vf, me == 0 ? reps : 0);
    out.nofault = summarize(vn, me == 0 ? reps : 0);
    out.rewrite = summarize(vr, me == 0 ? reps : 0);
    free(vf);
    free(vn);
    free(vr);
    return out;
}

/* ---- 3./4. remote access misses ----------------------------------------------------- */

#define MISS_WORDS 4 /* words rank 1 writes per page and interval, 512 bytes apart */

static long miss_value(int page, int interval, int word)
{
    return 1000000L * (interval + 1) + 16L * page + word + 1;
}

/* Rank 1 writes MISS_WORDS words in each of reps+warm fresh pages in `intervals` separate
 * intervals (closed by acquiring a lock whose token rank 1 holds, so rank 0 sees nothing
 * until the barrier); after one barrier rank 0 reads one word of each page, each read an
 * access miss. `path` receives which path the library took for the timed misses. */
static summary_t remote_miss(size_t ps, int reps, int warm, int intervals, char *path, size_t pathlen)
{
    int np = reps + warm;
    char *reg;
    CHECK(cdsm_alloc((size_t)np * ps, (void **)&reg));
    double *v = samples(reps);
    CHECK(cdsm_barrier());
    if (me == 1) {
        for (int k = 0; k < intervals; k++) {
            for (int i = 0; i < np; i++)
                for (int w = 0; w < MISS_WORDS; w++)
                    ((volatile long *)(reg + (size_t)i * ps))[w * 64] = miss_value(i, k, w);
            /* Closes the interval; the token of LOCK_CLOSER is cached here: no message. */
            CHECK(cdsm_lock_acquire(LOCK_CLOSER));
            CHECK(cdsm_lock_release(LOCK_CLOSER));
        }
    }
    /* Rank 0 learns the write notices of all intervals and invalidates its copies. */
    CHECK(cdsm_barrier());
    if (me == 0) {
        cdsm_stats_t a = stats_now(), b = a;
        long bad = 0;
        for (int i = 0; i < np; i++) {
            if (i == warm) a = stats_now();
            volatile long *w = (volatile long *)(reg + (size_t)i * ps);
            uint64_t t0 = now_ns();
            COMPILER_FENCE();
            long x = *w;
            COMPILER_FENCE();
            uint64_t t1 = now_ns();
            if (i >= warm) v[i - warm] = us(t0, t1);
            if (x != miss_value(i, intervals - 1, 0)) bad++;
        }
        b = stats_now();
        for (int i = 0; i < np; i++)
            for (int w = 0; w < MISS_WORDS; w++)
                if (((volatile long *)(reg + (size_t)i * ps))[w * 64] != miss_value(i, intervals - 1, w)) bad++;
        if (bad) fail("remote miss (%d intervals): %ld words read back wrong", intervals, bad);
        uint64_t misses = DELTA(a, b, read_faults), whole = DELTA(a, b, pages_fetched),
                 diffs = DELTA(a, b, diffs_applied);
        if (misses != (uint64_t)reps)
            fail("remote miss (%d intervals): %llu access misses for %d reads", intervals,
                 (unsigned long long)misses, reps);
        if (whole == (uint64_t)reps && diffs == 0)
            snprintf(path, pathlen, "whole page");
        else if (whole == 0 && diffs == (uint64_t)reps * (uint64_t)intervals)
            snprintf(path, pathlen, intervals == 1 ? "diff" : "%d diffs", intervals);
        else
            snprintf(path, pathlen, "mixed: %llu pages %llu diffs", (unsigned long long)whole,
                     (unsigned long long)diffs);
    }
    CHECK(cdsm_barrier());
    summary_t s = summarize(v, me == 0 ? reps : 0);
    free(v);
    return s;
}

/* ---- 5. uncontended locks ----------------------------------------------------------- */

typedef struct locks {
    summary_t remote, release, cached;
} locks_t;

/* Rank 0 acquires fresh odd lock ids (manager rank 1, token at rank 1 since start-up):
 * one request/grant round trip each; releases it (local: nobody waits); re-acquires it
 * (local: the token is cached) and releases again. Rank 1 waits in the barrier, its
 * service thread answering. */
static locks_t uncontended_locks(int reps, int warm)
{
    locks_t out;
    double *va = samples(reps), *vr = samples(reps), *vc = samples(reps);
    CHECK(cdsm_barrier());
    if (me == 0) {
        cdsm_stats_t a = stats_now(), b;
        for (int i = -warm; i < reps; i++) {
            if (i == 0) a = stats_now();
            int id = LOCK_FIRST_FREE + 2 * (i + warm);
            uint64_t t0 = now_ns();
            CHECK(cdsm_lock_acquire(id));
            uint64_t t1 = now_ns();
            CHECK(cdsm_lock_release(id));
            uint64_t t2 = now_ns();
            CHECK(cdsm_lock_acquire(id));
            uint64_t t3 = now_ns();
            CHECK(cdsm_lock_release(id));
            if (i >= 0) {
                va[i] = us(t0, t1);
                vr[i] = us(t1, t2);
                vc[i] = us(t2, t3);
            }
        }
        b = stats_now();
        if (DELTA(a, b, lock_acquires) != 2u * (uint64_t)reps ||
            DELTA(a, b, lock_acquires_local) != (uint64_t)reps)
            fail("uncontended locks: %llu acquires, %llu local; want %d and %d",
                 (unsigned long long)DELTA(a, b, lock_acquires),
                 (unsigned long long)DELTA(a, b, lock_acquires_local), 2 * reps, reps);
        if (DELTA(a, b, msgs_sent) != (uint64_t)reps)
            fail("uncontended locks: %llu messages sent for %d remote acquires",
                 (unsigned long long)DELTA(a, b, msgs_sent), reps);
    }
    CHECK(cdsm_barrier());
    out.remote = summarize(va, me == 0 ? reps : 0);
    out.release = summarize(vr, me == 0 ? reps : 0);
    out.cached = summarize(vc, me == 0 ? reps : 0);
    free(va);
    free(vr);
    free(vc);
    return out;
}

/* ---- 6. contended lock -------------------------------------------------------------- */

typedef struct contended {
    summary_t acquire, iteration;
    uint64_t local;
} contended_t;

static contended_t contended_lock(size_t ps, int reps, int warm)
{
    contended_t out;
    long *counter;
    CHECK(cdsm_alloc(ps, (void **)&counter)); /* a page of its own */
    double *va = samples(reps), *vi = samples(reps);
    int iters = reps + warm;
    CHECK(cdsm_barrier());
    cdsm_stats_t a = stats_now();
    for (int i = 0; i < iters; i++) {
        uint64_t t0 = now_ns();
        CHECK(cdsm_lock_acquire(LOCK_CONTENDED));
        uint64_t t1 = now_ns();
        (*(volatile long *)counter)++;
        CHECK(cdsm_lock_release(LOCK_CONTENDED));
        uint64_t t2 = now_ns();
        if (i >= warm) {
            va[i - warm] = us(t0, t1);
            vi[i - warm] = us(t0, t2);
        }
    }
    cdsm_stats_t b = stats_now();
    out.local = DELTA(a, b, lock_acquires_local);
    CHECK(cdsm_barrier()); /* every increment is visible after it */
    if (me == 0) {
        long want = 2L * iters, got = *(volatile long *)counter;
        if (got != want) fail("contended lock: counter %ld, want %ld", got, want);
    }
    CHECK(cdsm_barrier());
    out.acquire = summarize(va, me == 0 ? reps : 0);
    out.iteration = summarize(vi, me == 0 ? reps : 0);
    free(va);
    free(vi);
    return out;
}

/* ---- 7. cdsm barrier ---------------------------------------------------------------- */

static summary_t cdsm_barriers(int reps, int warm)
{
    double *v = samples(reps);
    CHECK(cdsm_barrier());
    for (int i = -warm; i < reps; i++) {
        uint64_t t0 = now_ns();
        CHECK(cdsm_barrier());
        uint64_t t1 = now_ns();
        if (i >= 0) v[i] = us(t0, t1);
    }
    summary_t s = summarize(v, me == 0 ? reps : 0);
    free(v);
    return s;
}

/* ---- main ----------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mpiexec -n 2 microbench [-r N] [-m N] [-w N] [-o FILE]\n"
            "  -r N   repetitions of the cheap operations (default 2000)\n"
            "  -m N   repetitions of the expensive ones: remote misses, contended lock\n"
            "         (default: -r if given, else 1000)\n"
            "  -w N   intervals per page for the whole-page miss (default: CDSM_WHOLE_PAGE_NOTICES\n"
            "         from the environment, or 4, the library's default; at least 2)\n"
            "  -o F   also write the result rows as CSV to file F\n"
            "Needs CDSM_LOCKS >= 3 + 2*(N + warm-up) for the uncontended-lock test (fewer\n"
            "repetitions are run otherwise).\n");
}

static int parse_int(const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > 10000000) return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    int rc = cdsm_init(&argc, &argv);
    if (rc) {
        fprintf(stderr, "microbench: cdsm_init: %s: %s\n", cdsm_status_name(rc), cdsm_last_error());
        return 2;
    }
    me = cdsm_rank();
    int n = cdsm_nranks();

    int reps = 2000, mreps = -1, wp = -1, bad_usage = 0;
    const char *csv = NULL;
    const char *env_wpn = getenv("CDSM_WHOLE_PAGE_NOTICES");
    int lib_wpn = 4;
    if (env_wpn && parse_int(env_wpn, 0, &lib_wpn)) lib_wpn = 4; /* cdsm_init accepted it */
    int opt;
    opterr = 0;
    while ((opt = getopt(argc, argv, "r:m:w:o:h")) != -1) {
        switch (opt) {
        case 'r': bad_usage |= parse_int(optarg, 1, &reps) != 0; if (mreps < 0) mreps = -2; break;
        case 'm': bad_usage |= parse_int(optarg, 1, &mreps) != 0; break;
        case 'w': bad_usage |= parse_int(optarg, 2, &wp) != 0; break;
        case 'o': csv = optarg; break;
        case 'h': bad_usage = -1; break;
        default: bad_usage = 1; break;
        }
    }
    if (optind < argc) bad_usage = 1;
    if (mreps == -2) mreps = reps;
    if (mreps < 0) mreps = 1000;
    if (wp < 0) wp = lib_wpn >= 2 ? lib_wpn : 4;
    if (bad_usage || n != 2) {
        if (me == 0) {
            if (n != 2) fprintf(stderr, "microbench: needs exactly 2 ranks, got %d\n", n);
            else if (bad_usage > 0) fprintf(stderr, "microbench: bad arguments\n");
            usage(bad_usage < 0 && n == 2 ? stdout : stderr);
        }
        cdsm_finalize();
        return bad_usage < 0 && n == 2 ? 0 : 2;
    }
    if (MPI_Comm_dup(MPI_COMM_WORLD, &bc) != MPI_SUCCESS) {
        fprintf(stderr, "microbench[%d]: MPI_Comm_dup failed\n", me);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    /* Both ranks parsed the same argv; make sure they agree anyway. */
    int params[3] = {reps, mreps, wp};
    MPI_Bcast(params, 3, MPI_INT, 0, bc);
    reps = params[0], mreps = params[1], wp = params[2];

    size_t ps = cdsm_page_size();
    int warm = reps / 10 < 50 ? reps / 10 : 50, mwarm = mreps / 10 < 20 ? mreps / 10 : 20;
    int lreps = reps, lwarm = warm;
    int avail = (cdsm_nlocks() - LOCK_FIRST_FREE + 1) / 2; /* odd ids >= LOCK_FIRST_FREE */
    if (lreps + lwarm > avail) {
        lwarm = avail / 10 < warm ? avail / 10 : warm;
        lreps = avail - lwarm;
        if (me == 0)
            fprintf(stderr, "microbench: only %d locks (CDSM_LOCKS): uncontended-lock test runs %d "
                    "repetitions instead of %d\n", cdsm_nlocks(), lreps, reps);
    }
    if (lreps < 1) {
        if (me == 0) fprintf(stderr, "microbench: CDSM_LOCKS=%d is too small\n", cdsm_nlocks());
        MPI_Comm_free(&bc);
        cdsm_finalize();
        return 2;
    }
    if (me == 0) {
        printf("cdsm microbench: 2 ranks, page %zu B, %d locks, CDSM_WHOLE_PAGE_NOTICES=%d%s\n", ps,
               cdsm_nlocks(), lib_wpn, env_wpn ? "" : " (default)");
        printf("repetitions: cheap %d, misses/contended %d, uncontended locks %d; "
               "whole-page test writes each page in %d intervals\n", reps, mreps, lreps, wp);
        fflush(stdout);
    }

    /* 1. MPI references (cdsm's service threads sleep in poll() meanwhile). */
    summary_t pp8 = mpi_pingpong(8, reps, warm);
    summary_t pp4k = mpi_pingpong(4096, reps, warm);
    summary_t mbar = mpi_barrier(reps, warm);
    /* 2. */
    faults_t wf = write_faults(ps, reps, warm);
    /* 3. and 4. */
    char path_diff[64] = "", path_whole[64] = "";
    summary_t miss_diff = remote_miss(ps, mreps, mwarm, 1, path_diff, sizeof path_diff);
    summary_t miss_whole = remote_miss(ps, mreps, mwarm, wp, path_whole, sizeof path_whole);
    /* 5. */
    locks_t lk = uncontended_locks(lreps, lwarm);
    /* 6. */
    contended_t ct = contended_lock(ps, mreps, mwarm);
    /* 7. */
    summary_t cbar = cdsm_barriers(reps, warm);

    /* Whether the whole-page row measured what it says. */
    if (me == 0) {
        int want_whole = lib_wpn > 0 && wp >= lib_wpn;
        char want[64];
        snprintf(want, sizeof want, want_whole ? "whole page" : "%d diffs", wp);
        if (strcmp(path_whole, want))
            fail("multi-interval miss took path \"%s\", expected \"%s\"", path_whole, want);
        if (strcmp(path_diff, lib_wpn == 1 ? "whole page" : "diff"))
            fail("single-diff miss took path \"%s\"", path_diff);
    }

    if (me == 0) {
        row_t *r;
        add_row("mpi_pingpong_8B", "MPI_Send/Recv", pp8);
        add_row("mpi_pingpong_4KiB", "MPI_Send/Recv", pp4k);
        add_row("mpi_barrier", "MPI_Barrier", mbar);
        add_row("write_nofault", "page already writable", wf.nofault);
        add_row("write_fault", "fresh page: twin", wf.fresh);
        add_row("write_fault_rewrite", "lazy diff + twin", wf.rewrite);
        double miss_ref = wf.fresh.med + pp4k.med;
        r = add_row("remote_miss_diff", path_diff, miss_diff);
        set_ref(r, "write_fault+pingpong_4KiB", miss_ref, 1);
        r = add_row("remote_miss_whole_page", path_whole, miss_whole);
        set_ref(r, "write_fault+pingpong_4KiB", miss_ref, 1);
        r = add_row("lock_acquire_remote", "request/grant", lk.remote);
        set_ref(r, "mpi_pingpong_8B", pp8.med, 1);
        add_row("lock_release", "local (token kept)", lk.release);
        add_row("lock_acquire_cached", "local (cached token)", lk.cached);
        char cpath[48];
        snprintf(cpath, sizeof cpath, "%llu/%d local", (unsigned long long)ct.local, mreps + mwarm);
        r = add_row("lock_acquire_contended", cpath, ct.acquire);
        set_ref(r, "mpi_pingpong_8B", pp8.med, 0);
        r = add_row("lock_iteration_contended", "acq+incr+rel", ct.iteration);
        set_ref(r, "mpi_pingpong_8B", pp8.med, 0);
        r = add_row("cdsm_barrier", "via manager rank 0", cbar);
        set_ref(r, "mpi_barrier", mbar.med, 1);

        print_table(stdout);
        printf("\ngoals: remote miss <= 3 x (write_fault + pingpong_4KiB); uncontended remote acquire "
               "<= 3 x pingpong_8B; cdsm_barrier <= 3 x MPI_Barrier (medians, this run)\n");
        printf("checks: %s\n", failures ? "FAILED (see stderr)" : "all passed (values read back, "
                                                                   "counter, paths, counters)");
        fflush(stdout);
        if (csv && write_csv(csv)) failures++;
    }
    int all = 0;
    MPI_Allreduce(&failures, &all, 1, MPI_INT, MPI_SUM, bc);
    MPI_Comm_free(&bc);
    rc = cdsm_finalize();
    if (rc) {
        fprintf(stderr, "microbench[%d]: cdsm_finalize: %s\n", me, cdsm_last_error());
        return 2;
    }
    return all ? 1 : 0;
}
