/* sor: red-black successive over-relaxation on a shared grid, checked bit for bit against
 * the same computation done sequentially in private memory by participant 0.
 *
 * One source, three builds (common/par.h): sor-seq, sor-pthreads (-p N), sor (cdsm, MPI ranks).
 *
 * The grid is one shared allocation of N*N doubles; each participant owns a contiguous block
 * of interior rows. A red point's neighbours are all black and vice versa, so within one
 * colour sweep nobody reads what another participant writes, and a barrier after each sweep
 * is the only synchronisation needed. The same property makes the update order inside a
 * sweep irrelevant, so the parallel result equals the sequential one exactly, whatever the
 * build and the number of participants: the answer is a hash of the grid's bytes. */
#include "par.h"

#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef PAR_CDSM
#include <cdsm.h> /* only for -s: per-rank counters (par.h prints sums only) */
#endif

/* Largest N accepted on the command line: keeps N*N*sizeof(double) far from overflowing
 * size_t; the shared arena refuses much smaller grids anyway (par_fail). */
#define N_MAX 65536L

enum { RED = 0, BLACK = 1 };

/* Options, set by main() before par_run(); read-only afterwards. */
static size_t n = 1026;
static long iters = 50;
static double omega = 1.25;
static int per_rank_stats;
static int resumable; /* -r: register the loop state and resume from checkpoints */
static int print_iters;         /* -P: a committed output line per iteration and rank */
static const char *out_prefix;  /* -O PREFIX: each rank appends a line per iteration to PREFIX.rank<R> */
static long mem_every;          /* -M K: a committed memory line per rank every K iterations */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-n N] [-i ITERS] [-w OMEGA] [-r] [-P] [-O PREFIX] [-M K] [-s] [-T] [-h]\n"
            "  -n N      grid rows = columns, boundary included (4..%ld, default 1026)\n"
            "  -i ITERS  red-black iterations (>= 1, default 50)\n"
            "  -w OMEGA  relaxation factor, 0 < OMEGA < 2 (default 1.25)\n"
            "  -r        resumable: a replacement restarts from its rank's checkpoint (cdsm\n"
            "            build; CDSM_CKPT_DIR), each iteration ends at a resume point\n"
            "  -P        print a line per iteration and rank (committed output)\n"
            "  -M K      every K iterations each rank prints its memory: resident set, and\n"
            "            the DSM's logs it holds (committed output; for long runs)\n"
            "  -O PREFIX each rank appends a line per iteration to PREFIX.rank<R> (committed)\n"
            "  -s        also print every rank's own DSM statistics (cdsm build)\n"
            "  -T        small test input (-n 66 -i 10)\n"
            "  -h        this help\n",
            prog, N_MAX);
}

/* Deterministic boundary: top row 1.0, left column 0.5 (below the top row), the rest 0. */
static void init_rows(double *g, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++)
        for (size_t j = 0; j < n; j++) g[i * n + j] = i == 0 ? 1.0 : j == 0 ? 0.5 : 0.0;
}

/* One colour over rows [lo, hi). Parallel and sequential runs both call this very
 * function, so they execute the same floating-point operations in the same order. */
static void sweep(double *g, size_t lo, size_t hi, int color, double w)
{
    for (size_t i = lo; i < hi; i++) {
        double *row = g + i * n;
        for (size_t j = 1 + ((i + 1 + (size_t)color) & 1); j < n - 1; j += 2)
            row[j] = (1.0 - w) * row[j] + w * 0.25 * (row[j - n] + row[j + n] + row[j - 1] + row[j + 1]);
    }
}

static void sor_sequential(double *g)
{
    init_rows(g, 0, n);
    for (long it = 0; it < iters; it++) {
        sweep(g, 1, n - 1, RED, omega);
        sweep(g, 1, n - 1, BLACK, omega);
    }
}

/* Bitwise comparison (memcmp: -0.0 vs 0.0 or differing NaNs count as differences).
 * Returns 1 if equal; otherwise reports the first differing element. */
static int compare(const double *shared, const double *ref)
{
    for (size_t i = 0; i < n; i++) {
        const double *a = shared + i * n, *b = ref + i * n;
        if (memcmp(a, b, n * sizeof *a) == 0) continue;
        for (size_t j = 0; j < n; j++)
            if (memcmp(&a[j], &b[j], sizeof *a) != 0) {
                fprintf(stderr, "sor: mismatch at (%zu,%zu): shared %.17g, sequential %.17g\n", i, j, a[j],
                        b[j]);
                return 0;
            }
    }
    return 1;
}

/* One participant's share of the run. `it` and `done` are registered with par_protect()
 * under -r, so they live here, for the whole worker, not in the functions that update them. */
typedef struct {
    int me, np;
    size_t rows, q, extra; /* interior rows, and the split: q each, the first `extra` one more */
    size_t lo, hi;         /* own interior rows */
    double *grid;
    long it;               /* iterations done */
    double done;           /* parallel seconds spent before a resume point */
} sor_t;

/* Contiguous blocks of interior rows; the first rows % np participants take one extra. */
static void sor_partition(sor_t *c)
{
    c->me = par_rank();
    c->np = par_nprocs();
    c->rows = n - 2;
    const size_t r = (size_t)c->me;
    c->q = c->rows / (size_t)c->np;
    c->extra = c->rows % (size_t)c->np;
    c->lo = 1 + r * c->q + (r < c->extra ? r : c->extra);
    c->hi = c->lo + c->q + (r < c->extra ? 1 : 0);
}

/* With -r, where the loop goes on after a resume point, and the parallel seconds spent
 * before it, are all the private state a resumed rank needs (the grid is shared). A fresh
 * start initialises the grid: each participant its own rows, so its pages start out local,
 * and participant 0 also the two boundary rows. */
static void sor_start(sor_t *c)
{
    int resumed = 0;
    if (resumable) {
        par_protect("iteration", &c->it, sizeof c->it);
        par_protect("seconds", &c->done, sizeof c->done);
        resumed = par_resume();
    }
    if (!resumed) {
        init_rows(c->grid, c->lo, c->hi);
        if (c->me == 0) {
            init_rows(c->grid, 0, 1);
            init_rows(c->grid, n - 1, n);
        }
        par_barrier();
    }
}

/* The committed output of -P and -O after iteration it. */
static void report_iteration(int me, long it)
{
    if (print_iters) par_out("sor: rank %d finished iteration %ld\n", me, it);
    if (mem_every && it % mem_every == 0) {
        char mem[160];
        par_mem_line(mem, sizeof mem);
        par_out("sor: rank %d iteration %ld memory %s\n", me, it, mem);
    }
    if (out_prefix) {
        char path[512], line[64];
        snprintf(path, sizeof path, "%s.rank%d", out_prefix, me);
        int len = snprintf(line, sizeof line, "iteration %ld\n", it);
        par_out_file(path, line, (size_t)len);
    }
}

/* The red-black iterations from c->it on; returns the parallel seconds. Each iteration ends
 * at a resume point under -r (which synchronises like a barrier), else at a barrier. */
static double sor_iterate(sor_t *c)
{
    const double t0 = par_time() - c->done;
    while (c->it < iters) {
        sweep(c->grid, c->lo, c->hi, RED, omega);
        par_barrier();
        sweep(c->grid, c->lo, c->hi, BLACK, omega);
        c->it++;
        report_iteration(c->me, c->it);
        if (resumable) {
            c->done = par_time() - t0;
            par_resume_point();
        } else {
            par_barrier();
        }
    }
    return par_time() - t0;
}

/* Participant 0's check and report: the sequential run, the comparison, the answer.
 * Returns the exit status. */
static int sor_check(const sor_t *c, double t_par)
{
    const size_t bytes = n * n * sizeof *c->grid;
    double *ref = malloc(bytes);
    if (!ref) par_fail("sor: cannot allocate %zu bytes for the sequential grid", bytes);
    const double t1 = par_time();
    sor_sequential(ref);
    const double t_seq = par_time() - t1;
    const int verified = compare(c->grid, ref);
    const uint64_t hash = par_fnv1a(PAR_FNV_INIT, c->grid, bytes);
    free(ref);

    printf("sor: red-black SOR (%s build)\n", par_build());
    printf("  grid            %zu x %zu (%zu x %zu interior), %.1f MiB shared\n", n, n, c->rows, c->rows,
           (double)bytes / (1 << 20));
    printf("  iterations      %ld (omega %g)\n", iters, omega);
    printf("  procs           %d (%zu..%zu rows each)\n", c->np, c->q, c->q + (c->extra ? 1 : 0));
    printf("  parallel time   %.6f s\n", t_par);
    printf("  sequential time %.6f s\n", t_seq);
    printf("  speedup         %.3f\n", t_par > 0 ? t_seq / t_par : 0.0);
    printf("  check           %s\n", verified ? "bit-identical to the sequential run" : "MISMATCH");
    par_report_head("sor");
    par_report_time(t_par);
    par_report_answer("fnv1a 0x%016llx", (unsigned long long)hash);
    par_report_result(verified, "the shared grid differs from the sequential run");
    return verified ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;
}

/* -s: every rank's own DSM statistics, one rank at a time, to keep the lines of different
 * ranks apart (collective: np barriers). */
static void print_rank_stats(int me, int np)
{
#ifdef PAR_CDSM
    if (per_rank_stats) {
        for (int k = 0; k < np; k++) {
            if (k == me) {
                printf("  rank %d:\n", me);
                if (cdsm_stats_print(stdout)) par_fail("cdsm_stats_print failed");
                fflush(stdout);
            }
            par_barrier();
        }
    }
#else
    (void)me;
    (void)np;
#endif
}

static void worker(void)
{
    sor_t c = {0};
    sor_partition(&c);
    c.grid = par_alloc(n * n * sizeof *c.grid);
    sor_start(&c);
    const double t_par = sor_iterate(&c);

    /* Participant 0 checks alone while the others wait in par_share_status() (cdsm's and
     * pthreads' barriers block rather than spin), so its sequential time is not inflated. */
    int status = PAR_EXIT_VERIFIED;
    if (c.me == 0) status = sor_check(&c, t_par);
    par_share_status(status);

    /* Collective: counters of the whole run (init, sweeps, check). */
    par_print_stats(stdout);
    fflush(stdout);
    print_rank_stats(c.me, c.np);
}

int main(int argc, char **argv)
{
    if (par_init(&argc, &argv)) return PAR_EXIT_FAILURE;

    long n_opt = (long)n;
    int help = 0, bad = 0, test = 0, n_set = 0, i_set = 0, opt;
    opterr = 0; /* our own messages, from rank 0 only */
    while (!bad && !help && (opt = getopt(argc, argv, ":n:i:w:rPO:M:sTh")) != -1) {
        switch (opt) {
        case 'n':
            bad = par_opt_long("sor", opt, optarg, 4, N_MAX, "grid size", &n_opt);
            n_set = 1;
            break;
        case 'i':
            bad = par_opt_long("sor", opt, optarg, 1, LONG_MAX, "iterations", &iters);
            i_set = 1;
            break;
        case 'w':
            if (par_parse_double(optarg, &omega) || !(omega > 0.0 && omega < 2.0))
                bad = par_opt_error("sor", "-w %s: omega must be a number with 0 < omega < 2", optarg);
            break;
        case 'r': resumable = 1; break;
        case 'P': print_iters = 1; break;
        case 'O': out_prefix = optarg; break;
        case 'M': bad = par_opt_long("sor", opt, optarg, 1, LONG_MAX, "iterations between memory lines", &mem_every); break;
        case 's': per_rank_stats = 1; break;
        case 'T': test = 1; break;
        case 'h': help = 1; break;
        default: bad = par_opt_other("sor", opt); break;
        }
    }
    if (!bad && !help) bad = par_opt_rest("sor", argc, argv);
    if (bad || help) return par_usage(usage, argv[0], bad);
    /* -T gives the small input, but explicit -n / -i still win. */
    if (test && !n_set) n_opt = 66;
    if (test && !i_set) iters = 10;
    n = (size_t)n_opt;

    par_run(worker);
    return par_finish(par_exit_status());
}
