/* sor: red-black successive over-relaxation on a cdsm shared grid, checked bit for bit
 * against the same computation done sequentially in private memory.
 *
 * The grid is one collective allocation of N*N doubles; each rank owns a contiguous block
 * of interior rows. A red point's neighbours are all black and vice versa, so within one
 * colour sweep no rank reads what another writes, and a barrier after each sweep is the
 * only synchronisation needed. The same property makes the update order inside a sweep
 * irrelevant, so the parallel result must equal the sequential one exactly. */
#include <cdsm.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_WRONG 1
#define EXIT_USAGE 2
#define EXIT_LIB 3

/* Largest N accepted on the command line; the shared arena refuses much smaller grids
 * anyway, but this keeps N*N*sizeof(double) far from overflowing size_t. */
#define N_MAX 65536L

enum { RED = 0, BLACK = 1 };

/* Any cdsm error is fatal. Other ranks may already wait in a barrier for this one, so
 * abort the whole job rather than exit alone and leave them hanging. */
static void die_cdsm(int rc, const char *what)
{
    fprintf(stderr, "sor: rank %d: %s: %s (%s): %s\n", cdsm_rank(), what, cdsm_strerror(rc),
            cdsm_status_name(rc), cdsm_last_error());
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, EXIT_LIB);
    exit(EXIT_LIB);
}

#define CHECK(call)                                           \
    do {                                                      \
        int check_rc_ = (call);                               \
        if (check_rc_ != CDSM_OK) die_cdsm(check_rc_, #call); \
    } while (0)

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-n N] [-i ITERS] [-w OMEGA] [-s] [-h]\n"
            "  -n N      grid rows = columns, boundary included (>= 4, default 1026)\n"
            "  -i ITERS  red-black iterations (>= 1, default 50)\n"
            "  -w OMEGA  relaxation factor, 0 < OMEGA < 2 (default 1.25)\n"
            "  -s        also print every rank's own DSM statistics\n"
            "  -h        this help\n",
            prog);
}

static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0') return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* Deterministic boundary: top row 1.0, left column 0.5 (below the top row), the rest 0. */
static void init_grid(double *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            g[i * n + j] = i == 0 ? 1.0 : j == 0 ? 0.5 : 0.0;
}

/* One colour over rows [lo, hi). Parallel and sequential runs both call this very
 * function, so they execute the same floating-point operations in the same order. */
static void sweep(double *g, size_t n, size_t lo, size_t hi, int color, double w)
{
    for (size_t i = lo; i < hi; i++) {
        double *row = g + i * n;
        for (size_t j = 1 + ((i + 1 + (size_t)color) & 1); j < n - 1; j += 2)
            row[j] = (1.0 - w) * row[j] + w * 0.25 * (row[j - n] + row[j + n] + row[j - 1] + row[j + 1]);
    }
}

static void sor_sequential(double *g, size_t n, long iters, double w)
{
    init_grid(g, n);
    for (long it = 0; it < iters; it++) {
        sweep(g, n, 1, n - 1, RED, w);
        sweep(g, n, 1, n - 1, BLACK, w);
    }
}

/* Bitwise comparison (memcmp: -0.0 vs 0.0 or differing NaNs count as differences).
 * Returns 1 if equal; otherwise reports the first differing element. */
static int compare(const double *shared, const double *ref, size_t n, int me)
{
    for (size_t i = 0; i < n; i++) {
        const double *a = shared + i * n, *b = ref + i * n;
        if (memcmp(a, b, n * sizeof *a) == 0) continue;
        for (size_t j = 0; j < n; j++)
            if (memcmp(&a[j], &b[j], sizeof *a) != 0) {
                fprintf(stderr, "sor: rank %d: mismatch at (%zu,%zu): shared %.17g, sequential %.17g\n",
                        me, i, j, a[j], b[j]);
                return 0;
            }
    }
    return 1;
}

int main(int argc, char **argv)
{
    /* Initialise first so that only rank 0 reports a usage error; every rank sees the same
     * argv, so every rank reaches the same verdict and they all finalise and exit together. */
    int rc = cdsm_init(&argc, &argv);
    if (rc != CDSM_OK) {
        fprintf(stderr, "sor: cdsm_init: %s (%s): %s\n", cdsm_strerror(rc), cdsm_status_name(rc),
                cdsm_last_error());
        return EXIT_LIB;
    }
    const int me = cdsm_rank(), nranks = cdsm_nranks();
    FILE *err = me == 0 ? stderr : NULL;

    long n_opt = 1026, iters = 50;
    double w = 1.25;
    int per_rank_stats = 0, help = 0, bad = 0, opt;
    opterr = 0; /* our own messages, from rank 0 only */
    while (!bad && !help && (opt = getopt(argc, argv, ":n:i:w:sh")) != -1) {
        switch (opt) {
        case 'n':
            if (parse_long(optarg, &n_opt) || n_opt < 4 || n_opt > N_MAX) {
                if (err) fprintf(err, "sor: -n %s: grid size must be an integer in [4, %ld]\n", optarg, N_MAX);
                bad = 1;
            }
            break;
        case 'i':
            if (parse_long(optarg, &iters) || iters < 1) {
                if (err) fprintf(err, "sor: -i %s: iterations must be an integer >= 1\n", optarg);
                bad = 1;
            }
            break;
        case 'w':
            if (parse_double(optarg, &w) || !(w > 0.0 && w < 2.0)) {
                if (err) fprintf(err, "sor: -w %s: omega must be a number with 0 < omega < 2\n", optarg);
                bad = 1;
            }
            break;
        case 's': per_rank_stats = 1; break;
        case 'h': help = 1; break;
        case ':':
            if (err) fprintf(err, "sor: -%c needs a value\n", optopt);
            bad = 1;
            break;
        default:
            if (err) fprintf(err, "sor: unknown option -%c\n", optopt);
            bad = 1;
            break;
        }
    }
    if (!bad && !help && optind < argc) {
        if (err) fprintf(err, "sor: unexpected argument '%s'\n", argv[optind]);
        bad = 1;
    }
    if (bad || help) {
        if (me == 0) usage(bad ? stderr : stdout, argv[0]);
        CHECK(cdsm_finalize());
        return bad ? EXIT_USAGE : 0;
    }

    const size_t n = (size_t)n_opt;
    const size_t rows = n - 2;
    /* Contiguous blocks of interior rows; the first rows % nranks ranks take one extra. */
    const size_t q = rows / (size_t)nranks, extra = rows % (size_t)nranks, r = (size_t)me;
    const size_t lo = 1 + r * q + (r < extra ? r : extra);
    const size_t hi = lo + q + (r < extra ? 1 : 0);

    double *grid;
    int *ok;
    CHECK(cdsm_alloc(n * n * sizeof *grid, (void **)&grid));
    CHECK(cdsm_alloc((size_t)nranks * sizeof *ok, (void **)&ok));

    if (me == 0) init_grid(grid, n);
    CHECK(cdsm_barrier());

    double t0 = MPI_Wtime();
    for (long it = 0; it < iters; it++) {
        sweep(grid, n, lo, hi, RED, w);
        CHECK(cdsm_barrier());
        sweep(grid, n, lo, hi, BLACK, w);
        CHECK(cdsm_barrier());
    }
    const double t_par = MPI_Wtime() - t0;

    double *ref = malloc(n * n * sizeof *ref);
    if (!ref) {
        fprintf(stderr, "sor: rank %d: cannot allocate %zu bytes for the sequential grid\n", me,
                n * n * sizeof *ref);
        MPI_Abort(MPI_COMM_WORLD, EXIT_LIB);
        return EXIT_LIB;
    }
    /* Rank 0 times its sequential run while the others sleep in the barrier (cdsm's barrier
     * blocks, it does not spin), so the time is not inflated by sharing the cores. */
    double t_seq = 0.0;
    if (me == 0) {
        t0 = MPI_Wtime();
        sor_sequential(ref, n, iters, w);
        t_seq = MPI_Wtime() - t0;
    }
    CHECK(cdsm_barrier());
    if (me != 0) sor_sequential(ref, n, iters, w);

    ok[me] = compare(grid, ref, n, me);
    free(ref);
    CHECK(cdsm_barrier());
    /* Every rank reads the verdicts (not only rank 0) so that all exit with the same status. */
    int nok = 0;
    for (int k = 0; k < nranks; k++) nok += ok[k] == 1;
    const int verified = nok == nranks;

    /* Collective: every rank contributes its counters (whole run: init, sweeps, check). */
    cdsm_stats_t mine, total;
    CHECK(cdsm_stats_get(&mine));
    CHECK(cdsm_stats_reduce(&mine, &total));

    if (me == 0) {
        printf("sor: red-black SOR on cdsm\n");
        printf("  grid            %zu x %zu (%zu x %zu interior), %.1f MiB shared\n", n, n, rows, rows,
               (double)(n * n * sizeof *grid) / (1 << 20));
        printf("  iterations      %ld (omega %g)\n", iters, w);
        printf("  ranks           %d (%zu..%zu rows each)\n", nranks, q, q + (extra ? 1 : 0));
        printf("  parallel time   %.6f s\n", t_par);
        printf("  sequential time %.6f s\n", t_seq);
        printf("  speedup         %.3f\n", t_par > 0 ? t_seq / t_par : 0.0);
        if (verified)
            printf("  result: VERIFIED (bit-identical to sequential)\n");
        else
            printf("  result: WRONG (%d of %d ranks saw a mismatch)\n", nranks - nok, nranks);
        printf("\n  DSM statistics, summed over %d ranks (whole run)\n", nranks);
        printf("  %-22s %16s %16s\n", "counter", "total", "per rank");
#define SOR_X_ROW(field, help) \
    printf("  %-22s %16llu %16.1f\n", #field, (unsigned long long)total.field, (double)total.field / nranks);
        CDSM_STATS_TABLE(SOR_X_ROW)
#undef SOR_X_ROW
        fflush(stdout);
    }

    if (per_rank_stats) {
        /* One rank at a time, to keep the lines of different ranks apart. The counters
         * printed are those at this point, so they include the barriers of the loop. */
        for (int k = 0; k < nranks; k++) {
            if (k == me) {
                CHECK(cdsm_stats_print(stdout));
                fflush(stdout);
            }
            CHECK(cdsm_barrier());
        }
    }

    CHECK(cdsm_free(ok));
    CHECK(cdsm_free(grid));
    CHECK(cdsm_finalize());
    return verified ? 0 : EXIT_WRONG;
}
