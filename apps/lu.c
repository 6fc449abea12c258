/* lu: blocked dense LU factorisation without pivoting (the kernel of SPLASH-2's LU), on a
 * shared matrix; one source, three builds (common/par.h).
 *
 * The n x n matrix is generated diagonally dominant (random entries in [-1, 1), n added to
 * the diagonal), so Gaussian elimination is stable without pivoting. It is cut into
 * b x b blocks, and the blocks are scattered over a pr x pc grid of participants (block
 * (I, J) belongs to (I mod pr, J mod pc)), which keeps the work balanced as the active
 * part of the matrix shrinks. Every block is stored as one contiguous b*b array, and the
 * blocks of one owner sit together in a page-aligned region of their own, so no page
 * holds blocks of two owners: the only data that moves between participants is what
 * the algorithm reads.
 *
 * Step K (right-looking):
 *   1. the owner of (K, K) factors it in place: L_KK (unit lower) and U_KK;
 *   2. owners of the perimeter blocks (K, J>K) solve L_KK X = A_KJ and those of (I>K, K)
 *      solve X U_KK = A_IK;
 *   3. owners of the interior blocks (I>K, J>K) update A_IJ -= A_IK A_KJ.
 * A barrier separates 1 from 2 and 2 from 3. None is needed between 3 and the next step's
 * 1 and 2: those write only blocks their own participant updated in 3, and nobody reads
 * row or column K again after step K.
 *
 * Every element goes through the same floating-point operations in the same order
 * whoever owns its block, so the factors are bit-identical across builds and participant
 * counts: the answer is a hash of the factored matrix. The check is the residual of L*U
 * against the regenerated matrix, done privately by participant 0. */
#include "par.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_MAX 65536L
#define B_MAX 1024L
#define PAGE 4096
/* Above this order the full product L*U (n^3/3 multiply-adds on one participant) is
 * replaced by products with a few vectors (n^2 each). */
#ifndef FULL_CHECK_MAX
#define FULL_CHECK_MAX 1024
#endif
/* Relative residual ||L*U - A||max / ||A||max accepted. Rounding gives about n * 1e-16;
 * a wrong factorisation gives O(1). */
#define TOLERANCE 1e-9

/* Options and layout: set by main() before par_run(), read-only afterwards. */
static long n = 2048, bs = 32;
static long nb;          /* blocks per dimension */
static int pr, pc;       /* participant grid */
static size_t *blk_off;  /* nb*nb: offset of block (I, J) in doubles from the matrix base */
static size_t mat_elems; /* doubles in the shared allocation (owner regions, page-padded) */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-n N] [-b B] [-T] [-h]\n"
            "  -n N   matrix order (1..%ld, a multiple of B, default 2048)\n"
            "  -b B   block size (1..%ld, default 32: 8 KiB blocks, two pages)\n"
            "  -T     small test input (-n 128 -b 16)\n"
            "  -h     this help\n",
            prog, N_MAX, B_MAX);
}


/* The matrix, as a function of (i, j): a hash of the position mapped to [-1, 1), plus n on
 * the diagonal. Any participant (and the check) can regenerate any element. */
static double gen(long i, long j)
{
    uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull ^ ((uint64_t)j + 0x632be59bd9b4e019ull);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 33;
    double v = (double)(x >> 11) * 0x1.0p-52 - 1.0; /* [-1, 1) */
    return i == j ? v + (double)n : v;
}

static int owner(long I, long J)
{
    return (int)(I % pr) * pc + (int)(J % pc);
}

/* Number of k in [0, total) with k mod step == first. */
static long count_mod(long total, long step, long first)
{
    return total > first ? (total - 1 - first) / step + 1 : 0;
}

/* The layout: each owner's blocks in one region, row-major over its own blocks, every
 * region starting on a page. Computed identically by every participant. */
static int layout(int np)
{
    /* pr: the largest divisor of np not above its square root (a square-ish grid). */
    pr = 1;
    for (int d = 1; (long)d * d <= np; d++)
        if (np % d == 0) pr = d;
    pc = np / pr;
    size_t *region = calloc((size_t)np, sizeof *region);
    blk_off = malloc((size_t)nb * (size_t)nb * sizeof *blk_off);
    if (!region || !blk_off) return -1;
    const size_t per_page = PAGE / sizeof(double), bb = (size_t)bs * (size_t)bs;
    size_t off = 0;
    for (int p = 0; p < np; p++) {
        region[p] = off;
        size_t blocks = (size_t)count_mod(nb, pr, p / pc) * (size_t)count_mod(nb, pc, p % pc);
        off += (blocks * bb + per_page - 1) / per_page * per_page;
    }
    mat_elems = off;
    for (long I = 0; I < nb; I++)
        for (long J = 0; J < nb; J++) {
            int p = owner(I, J);
            size_t ncols = (size_t)count_mod(nb, pc, p % pc);
            blk_off[I * nb + J] = region[p] + ((size_t)(I / pr) * ncols + (size_t)(J / pc)) * bb;
        }
    free(region);
    return 0;
}

/* ---- block kernels (row-major b x b arrays) ------------------------------------------------ */

/* In-place LU of a diagonal block: unit lower L below the diagonal, U on and above. */
static void factor_diag(double *a, long b)
{
    for (long k = 0; k < b; k++) {
        const double piv = a[k * b + k];
        for (long i = k + 1; i < b; i++) {
            const double l = a[i * b + k] /= piv;
            for (long j = k + 1; j < b; j++) a[i * b + j] -= l * a[k * b + j];
        }
    }
}

/* A_KJ := L_KK^-1 A_KJ (forward substitution, unit lower L from the diagonal block d). */
static void solve_row_block(double *a, const double *d, long b)
{
    for (long k = 0; k < b; k++)
        for (long i = k + 1; i < b; i++) {
            const double l = d[i * b + k];
            for (long j = 0; j < b; j++) a[i * b + j] -= l * a[k * b + j];
        }
}

/* A_IK := A_IK U_KK^-1 (each row solved against the upper triangle of d). */
static void solve_col_block(double *a, const double *d, long b)
{
    for (long r = 0; r < b; r++) {
        double *row = a + r * b;
        for (long k = 0; k < b; k++) {
            const double x = row[k] /= d[k * b + k];
            for (long j = k + 1; j < b; j++) row[j] -= x * d[k * b + j];
        }
    }
}

/* C -= A B, each element's updates in k order (the same order in every build). */
static void update_block(double *restrict c, const double *restrict a, const double *restrict bm, long b)
{
    for (long i = 0; i < b; i++)
        for (long k = 0; k < b; k++) {
            const double x = a[i * b + k];
            for (long j = 0; j < b; j++) c[i * b + j] -= x * bm[k * b + j];
        }
}

/* ---- check (participant 0, private memory) ------------------------------------------------- */

/* ||L*U - A||max / ||A||max from the factored matrix f (row-major n x n). Full product up
 * to FULL_CHECK_MAX; beyond, the same measure on L*(U*x) - A*x for a few vectors x. */
static double residual(const double *f)
{
    double err = 0.0, amax = 0.0;
    double *row = malloc((size_t)n * sizeof *row);
    if (!row) par_fail("lu: out of memory in the check");
    if (n <= FULL_CHECK_MAX) {
        for (long i = 0; i < n; i++) {
            /* Row i of L*U: sum over k <= i of L_ik * (row k of U), with L_ii = 1. */
            memset(row, 0, (size_t)n * sizeof *row);
            for (long k = 0; k <= i; k++) {
                const double l = k == i ? 1.0 : f[i * n + k];
                const double *u = f + k * n;
                for (long j = k; j < n; j++) row[j] += l * u[j];
            }
            for (long j = 0; j < n; j++) {
                const double a = gen(i, j);
                err = fmax(err, fabs(row[j] - a));
                amax = fmax(amax, fabs(a));
            }
        }
    } else {
        double *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
        if (!x || !y) par_fail("lu: out of memory in the check");
        for (int v = 0; v < 3; v++) {
            for (long j = 0; j < n; j++) x[j] = v == 0 ? 1.0 : gen(j + v * n, j); /* off-diagonal: [-1, 1) */
            for (long i = 0; i < n; i++) { /* y = U x */
                double s = 0.0;
                for (long j = i; j < n; j++) s += f[i * n + j] * x[j];
                y[i] = s;
            }
            double xmax = 0.0;
            for (long j = 0; j < n; j++) xmax = fmax(xmax, fabs(x[j]));
            for (long i = 0; i < n; i++) { /* row = L y - A x; ||A x|| <= ||A||inf ||x|| */
                double s = y[i], ax = 0.0, arow = 0.0;
                for (long k = 0; k < i; k++) s += f[i * n + k] * y[k];
                for (long j = 0; j < n; j++) {
                    const double a = gen(i, j);
                    ax += a * x[j];
                    arow += fabs(a);
                }
                err = fmax(err, fabs(s - ax) / xmax);
                amax = fmax(amax, arow);
            }
        }
        free(x);
        free(y);
    }
    free(row);
    return amax > 0 ? err / amax : err;
}

/* ---- the parallel program ------------------------------------------------------------------- */

static void worker(void)
{
    const int me = par_rank(), np = par_nprocs();
    const long b = bs;
    double *mat = par_alloc(mat_elems * sizeof *mat);
#define BLK(I, J) (mat + blk_off[(size_t)(I) * (size_t)nb + (size_t)(J)])

    /* Each owner generates its own blocks, so they start out in its memory. */
    for (long I = 0; I < nb; I++)
        for (long J = 0; J < nb; J++) {
            if (owner(I, J) != me) continue;
            double *blk = BLK(I, J);
            for (long i = 0; i < b; i++)
                for (long j = 0; j < b; j++) blk[i * b + j] = gen(I * b + i, J * b + j);
        }
    par_barrier();

    const double t0 = par_time();
    for (long K = 0; K < nb; K++) {
        double *diag = BLK(K, K);
        if (owner(K, K) == me) factor_diag(diag, b);
        par_barrier();
        /* Perimeter: row K to the right, column K below. */
        for (long J = K + 1; J < nb; J++)
            if (owner(K, J) == me) solve_row_block(BLK(K, J), diag, b);
        for (long I = K + 1; I < nb; I++)
            if (owner(I, K) == me) solve_col_block(BLK(I, K), diag, b);
        par_barrier();
        /* Interior: only this participant's rows I (I mod pr) and columns J (J mod pc). */
        const long I0 = K + 1 + ((me / pc - (K + 1) % pr) % pr + pr) % pr;
        const long J0 = K + 1 + ((me % pc - (K + 1) % pc) % pc + pc) % pc;
        for (long I = I0; I < nb; I += pr) {
            const double *aik = BLK(I, K);
            for (long J = J0; J < nb; J += pc) update_block(BLK(I, J), aik, BLK(K, J), b);
        }
    }
    par_barrier();
    const double t_par = par_time() - t0;

    int status = PAR_EXIT_VERIFIED;
    if (me == 0) {
        /* Gather the factors into a private row-major copy: the hash and the residual are
         * then independent of the layout (which depends on the participant count). */
        double *f = malloc((size_t)n * (size_t)n * sizeof *f);
        if (!f) par_fail("lu: cannot allocate %zu bytes for the check", (size_t)n * (size_t)n * sizeof *f);
        for (long I = 0; I < nb; I++)
            for (long J = 0; J < nb; J++) {
                const double *blk = BLK(I, J);
                for (long i = 0; i < b; i++)
                    memcpy(f + (I * b + i) * n + J * b, blk + i * b, (size_t)b * sizeof *f);
            }
        const uint64_t hash = par_fnv1a(PAR_FNV_INIT, f, (size_t)n * (size_t)n * sizeof *f);
        double udiag = 0.0;
        for (long i = 0; i < n; i++) udiag += fabs(f[i * n + i]);
        const double t1 = par_time();
        const double res = residual(f);
        const double t_check = par_time() - t1;
        free(f);
        const int verified = res < TOLERANCE; /* also false for NaN */
        status = verified ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;

        printf("lu: blocked LU without pivoting (%s build)\n", par_build());
        printf("  matrix          %ld x %ld, blocks %ld x %ld (%ld x %ld of them), %.1f MiB shared\n", n, n, b,
               b, nb, nb, (double)(mat_elems * sizeof *mat) / (1 << 20));
        printf("  procs           %d (a %d x %d grid of block owners)\n", np, pr, pc);
        printf("  parallel time   %.6f s (%.1f Mflop/s)\n", t_par,
               t_par > 0 ? 2.0 / 3.0 * (double)n * (double)n * (double)n / t_par * 1e-6 : 0.0);
        printf("  sum |U_ii|      %.6e\n", udiag);
        printf("  residual        %.3e (||LU - A||max / ||A||max%s, tolerance %.0e, %.3f s)\n", res,
               n <= FULL_CHECK_MAX ? "" : " via 3 vectors", TOLERANCE, t_check);
        par_report_head("lu");
        par_report_time(t_par);
        par_report_answer("fnv1a 0x%016llx", (unsigned long long)hash);
        par_report_result(verified, "residual %.3e above %.0e", res, TOLERANCE);
    }
    par_share_status(status);
    par_print_stats(stdout);
    fflush(stdout);
#undef BLK
}

int main(int argc, char **argv)
{
    if (par_init(&argc, &argv)) return PAR_EXIT_FAILURE;

    int help = 0, bad = 0, test = 0, n_set = 0, b_set = 0, opt;
    opterr = 0;
    while (!bad && !help && (opt = getopt(argc, argv, ":n:b:Th")) != -1) {
        switch (opt) {
        case 'n':
            bad = par_opt_long("lu", opt, optarg, 1, N_MAX, "matrix order", &n);
            n_set = 1;
            break;
        case 'b':
            bad = par_opt_long("lu", opt, optarg, 1, B_MAX, "block size", &bs);
            b_set = 1;
            break;
        case 'T': test = 1; break;
        case 'h': help = 1; break;
        default: bad = par_opt_other("lu", opt); break;
        }
    }
    if (!bad && !help) bad = par_opt_rest("lu", argc, argv);
    if (!bad && !help) {
        if (test && !n_set) n = 128;
        if (test && !b_set) bs = 16;
        if (n % bs != 0)
            bad = par_opt_error("lu", "-n %ld: the matrix order must be a multiple of the block size %ld (-b)", n,
                                bs);
    }
    if (bad || help) return par_usage(usage, argv[0], bad);
    nb = n / bs;
    if (layout(par_nprocs())) par_fail("lu: out of memory");

    par_run(worker);
    free(blk_off);
    return par_finish(par_exit_status());
}
