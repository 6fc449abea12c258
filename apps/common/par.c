/* par.c: the three backends of par.h (selected at compile time). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "par.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <malloc.h>
#include <unistd.h>

/* Resident set size of this process in KiB (-1 if /proc cannot say). */
static long rss_kb(void)
{
    long pages = -1, resident = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
        fclose(f);
    }
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ---- shared by the three backends ------------------------------------------------------- */

/* Rank 0's verdict, handed to every participant by the backend's broadcast_status(). */
static int broadcast_status(int status);

double par_time(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

unsigned long long par_fnv1a(unsigned long long h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static int exit_status;

int par_share_status(int status)
{
    const int s = broadcast_status(status);
#ifdef PAR_PTHREADS
    if (par_rank() == 0) /* the threads share exit_status: one writer */
#endif
        exit_status = s;
    return s;
}

int par_exit_status(void)
{
    return exit_status;
}

int par_parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0') return -1;
    *out = v;
    return 0;
}

int par_parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

int par_opt_error(const char *app, const char *fmt, ...)
{
    if (par_rank() != 0) return -1; /* the others reach the same verdict silently */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", app);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

int par_opt_long(const char *app, int opt, const char *arg, long lo, long hi, const char *what, long *out)
{
    long v;
    if (!par_parse_long(arg, &v) && v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    if (hi == LONG_MAX) return par_opt_error(app, "-%c %s: %s must be an integer >= %ld", opt, arg, what, lo);
    return par_opt_error(app, "-%c %s: %s must be an integer in [%ld, %ld]", opt, arg, what, lo, hi);
}

int par_opt_double(const char *app, int opt, const char *arg, double lo, double hi, const char *what,
                   double *out)
{
    double v;
    if (!par_parse_double(arg, &v) && v >= lo && v <= hi) {
        *out = v;
        return 0;
    }
    return par_opt_error(app, "-%c %s: %s must be a number in [%g, %g]", opt, arg, what, lo, hi);
}

int par_opt_other(const char *app, int c)
{
    if (c == ':') return par_opt_error(app, "-%c needs a value", optopt);
    return par_opt_error(app, "unknown option -%c", optopt);
}

int par_opt_rest(const char *app, int argc, char **argv)
{
    if (optind >= argc) return 0;
    return par_opt_error(app, "unexpected argument '%s'", argv[optind]);
}

int par_usage(void (*usage)(FILE *f, const char *prog), const char *prog, int bad)
{
    if (par_rank() == 0) usage(bad ? stderr : stdout, prog);
    return par_finish(bad ? PAR_EXIT_USAGE : 0);
}

void par_report_head(const char *app)
{
    if (par_rank() != 0) return;
    printf("app: %s\n", app);
    printf("build: %s\n", par_build());
    printf("procs: %d\n", par_nprocs());
}

void par_report_time(double seconds)
{
    if (par_rank() == 0) printf("time: %.6f s\n", seconds);
}

void par_report_answer(const char *fmt, ...)
{
    if (par_rank() != 0) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("answer: ", stdout);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

void par_report_result(int verified, const char *why, ...)
{
    if (par_rank() != 0) return;
    if (verified) {
        printf("result: VERIFIED\n");
    } else {
        va_list ap;
        va_start(ap, why);
        fputs("result: WRONG (", stdout);
        vprintf(why, ap);
        fputs(")\n", stdout);
        va_end(ap);
    }
    fflush(stdout);
}

#if defined(PAR_CDSM)
/* ---- cdsm: one participant per MPI rank ------------------------------------------------ */
#include <cdsm.h>
#include <mpi.h>

void par_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[rank %d] ", cdsm_rank());
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, PAR_EXIT_FAILURE);
    exit(PAR_EXIT_FAILURE);
}

static void check(int rc, const char *what)
{
    if (rc) par_fail("%s: %s: %s", what, cdsm_strerror(rc), cdsm_last_error());
}

int par_init(int *argc, char ***argv)
{
    int rc = cdsm_init(argc, argv);
    if (rc) {
        fprintf(stderr, "cdsm_init: %s: %s\n", cdsm_strerror(rc), cdsm_last_error());
        return 1;
    }
    if (cdsm_nlocks() < PAR_NLOCKS) {
        fprintf(stderr, "CDSM_LOCKS=%d: the apps need at least %d\n", cdsm_nlocks(), PAR_NLOCKS);
        return 1;
    }
    return 0;
}

void par_run(void (*worker)(void))
{
    worker();
}

int par_rank(void)
{
    return cdsm_rank();
}

int par_nprocs(void)
{
    return cdsm_nranks();
}

void *par_alloc(size_t size)
{
    void *p = NULL;
    check(cdsm_alloc(size, &p), "cdsm_alloc");
    return p;
}

void par_barrier(void)
{
    check(cdsm_barrier(), "cdsm_barrier");
}

void par_protect(const char *name, void *p, size_t size)
{
    check(cdsm_protect(name, p, size), "cdsm_protect");
}

void par_out(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    check(cdsm_printf("%s", buf), "cdsm_printf");
}

void par_out_file(const char *path, const void *data, size_t len)
{
    check(cdsm_fwrite(path, data, len), "cdsm_fwrite");
}

int par_resume(void)
{
    int resumed = 0;
    check(cdsm_resume(&resumed), "cdsm_resume");
    return resumed;
}

void par_resume_point(void)
{
    check(cdsm_resume_point(), "cdsm_resume_point");
}

void par_lock(int id)
{
    check(cdsm_lock_acquire(id), "cdsm_lock_acquire");
}

void par_unlock(int id)
{
    check(cdsm_lock_release(id), "cdsm_lock_release");
}

const char *par_build(void)
{
    return "cdsm";
}

void par_mem_line(char *buf, size_t n)
{
    cdsm_stats_t st;
    check(cdsm_stats_get(&st), "cdsm_stats_get");
    snprintf(buf, n, "rss_kb=%ld log_bytes=%llu det_bytes=%llu archive_bytes=%llu malloc_kb=%zu", rss_kb(),
             (unsigned long long)st.log_bytes, (unsigned long long)st.det_bytes,
             (unsigned long long)st.archive_bytes, mallinfo2().uordblks / 1024);
}

static int broadcast_status(int status)
{
    /* Through the DSM, not an MPI collective: after start-up nothing in a cdsm run may
     * depend on every rank being alive for an MPI collective (recovery replaces ranks). */
    int *slot = par_alloc(sizeof *slot);
    if (par_rank() == 0) *slot = status;
    par_barrier();
    int s = *slot;
    par_barrier(); /* everyone has read it before the slot could be reused */
    check(cdsm_free(slot), "cdsm_free");
    return s;
}

void par_print_stats(FILE *f)
{
    cdsm_stats_t mine, total;
    check(cdsm_stats_get(&mine), "cdsm_stats_get");
    check(cdsm_stats_reduce(&mine, &total), "cdsm_stats_reduce");
    if (cdsm_rank() != 0) return;
    int n = cdsm_nranks();
    fprintf(f, "  DSM statistics, summed over %d ranks\n", n);
    fprintf(f, "  %-24s %16s %16s\n", "counter", "total", "per rank");
#define PAR_X(field, help) \
    fprintf(f, "  %-24s %16llu %16.1f\n", #field, (unsigned long long)total.field, (double)total.field / n);
    CDSM_STATS_TABLE(PAR_X)
#undef PAR_X
}

int par_finish(int status)
{
    int rc = cdsm_finalize();
    if (rc) {
        fprintf(stderr, "cdsm_finalize: %s\n", cdsm_strerror(rc));
        return status ? status : 1;
    }
    return status;
}

#elif defined(PAR_PTHREADS)
/* ---- pthreads: P threads of one process -------------------------------------------------- */
#include <pthread.h>

static int nprocs = 2;
static __thread int my_rank;
static pthread_barrier_t bar;
static pthread_mutex_t locks[PAR_NLOCKS];
static void *alloc_slot;
static void (*the_worker)(void);

void par_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "[thread %d] ", my_rank);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(PAR_EXIT_FAILURE);
}

int par_init(int *argc, char ***argv)
{
    /* Take "-p N" out of argv so the program's own parser never sees it. */
    char **v = *argv;
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        if (!strcmp(v[i], "-p") && i + 1 < *argc) {
            char *end;
            long p = strtol(v[i + 1], &end, 10);
            if (*end || p < 1 || p > 1024) {
                fprintf(stderr, "-p %s: the thread count must be 1..1024\n", v[i + 1]);
                return 1;
            }
            nprocs = (int)p;
            i++;
            continue;
        }
        v[out++] = v[i];
    }
    v[out] = NULL;
    *argc = out;
    pthread_barrier_init(&bar, NULL, (unsigned)nprocs);
    for (int i = 0; i < PAR_NLOCKS; i++) pthread_mutex_init(&locks[i], NULL);
    return 0;
}

static void *thread_main(void *arg)
{
    my_rank = (int)(intptr_t)arg;
    the_worker();
    return NULL;
}

void par_run(void (*worker)(void))
{
    pthread_t *t = malloc((size_t)nprocs * sizeof *t);
    if (!t) par_fail("out of memory");
    the_worker = worker;
    for (int i = 1; i < nprocs; i++)
        if (pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i)) par_fail("pthread_create");
    thread_main((void *)0);
    for (int i = 1; i < nprocs; i++) pthread_join(t[i], NULL);
    free(t);
}

int par_rank(void)
{
    return my_rank;
}

int par_nprocs(void)
{
    return nprocs;
}

void *par_alloc(size_t size)
{
    /* Collective: thread 0 allocates, everyone leaves with the same pointer. */
    par_barrier();
    if (my_rank == 0) {
        alloc_slot = calloc(1, size ? size : 1);
        if (!alloc_slot) par_fail("calloc(%zu) failed", size);
    }
    par_barrier();
    void *p = alloc_slot;
    par_barrier();
    return p;
}

void par_barrier(void)
{
    pthread_barrier_wait(&bar);
}

void par_lock(int id)
{
    pthread_mutex_lock(&locks[id]);
}

void par_unlock(int id)
{
    pthread_mutex_unlock(&locks[id]);
}

const char *par_build(void)
{
    return "pthreads";
}

static int status_slot;

static int broadcast_status(int status)
{
    if (my_rank == 0) status_slot = status;
    par_barrier();
    const int s = status_slot;
    par_barrier(); /* a later call rewrites the slot only after everyone has read it */
    return s;
}

void par_print_stats(FILE *f)
{
    (void)f;
}

int par_finish(int status)
{
    return status;
}

#else
/* ---- sequential: one worker, no synchronisation ------------------------------------------ */

void par_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(PAR_EXIT_FAILURE);
}

int par_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

void par_run(void (*worker)(void))
{
    worker();
}

int par_rank(void)
{
    return 0;
}

int par_nprocs(void)
{
    return 1;
}

void *par_alloc(size_t size)
{
    void *p = calloc(1, size ? size : 1);
    if (!p) par_fail("calloc(%zu) failed", size);
    return p;
}

void par_barrier(void)
{
}

void par_lock(int id)
{
    (void)id;
}

void par_unlock(int id)
{
    (void)id;
}

const char *par_build(void)
{
    return "seq";
}

static int broadcast_status(int status)
{
    return status;
}

void par_print_stats(FILE *f)
{
    (void)f;
}

int par_finish(int status)
{
    return status;
}
#endif

#if !defined(PAR_CDSM)
void par_mem_line(char *buf, size_t n)
{
    snprintf(buf, n, "rss_kb=%ld", rss_kb());
}

/* Nothing to resume from: threads and a sequential run share one fate. */
void par_protect(const char *name, void *p, size_t size)
{
    (void)name;
    (void)p;
    (void)size;
}

int par_resume(void)
{
    return 0;
}

void par_out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

void par_out_file(const char *path, const void *data, size_t len)
{
    /* Each participant's own file, emptied by its first write (as cdsm_fwrite). */
    static char opened[8][256];
    int k = 0;
    while (k < 8 && opened[k][0] && strcmp(opened[k], path)) k++;
    FILE *f = fopen(path, k < 8 && opened[k][0] ? "a" : "w");
    if (k < 8 && !opened[k][0]) snprintf(opened[k], sizeof opened[k], "%s", path);
    if (!f || fwrite(data, 1, len, f) != len || fclose(f)) par_fail("par_out_file(%s): cannot write", path);
}

void par_resume_point(void)
{
    par_barrier();
}
#endif
