/* fft: 1D complex FFT of n = 2^m points by the six-step (radix-sqrt(n)) algorithm, as in
 * SPLASH-2's FFT; one source, three builds (common/par.h).
 *
 * With n = r*r (r = 2^(m/2)), write j = j1*r + j2 and k = k1 + r*k2. Then
 *     X[k1 + r*k2] = sum_j2 w_r^(j2*k2) * w_n^(j2*k1) * sum_j1 x[j1*r + j2] * w_r^(j1*k1),
 * so viewing x as an r x r row-major matrix the transform is: transpose; an r-point FFT of
 * every row; multiply element (j2, k1) by the twiddle w_n^(j2*k1); transpose; r-point FFTs
 * of the rows; transpose. The rows are split in contiguous blocks, one per participant,
 * and every step except the transposes touches only the participant's own rows. A
 * transpose writes the participant's own rows of the destination from a column stripe of
 * the source (everyone's rows), so each one is followed by a barrier; the row FFTs that
 * follow a transpose need none, since they work on rows their participant just wrote.
 * Two shared arrays alternate as source and destination (a third receives the inverse
 * transform of the check, so the output survives it).
 *
 * The check runs the inverse transform (same algorithm, conjugate roots) in parallel and
 * compares it with the input, and participant 0 compares the output with a private
 * recursive radix-2 FFT. Every output element goes through the same operations in every
 * build and at any participant count, so the answer (sums of the output and a hash of its
 * bytes) is identical everywhere. */
#include "par.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define M_MAX 30
/* The private reference FFT (participant 0) runs up to this m; it needs 3 arrays of n. */
#define REF_M_MAX 22
#define TOLERANCE 1e-9
/* Tile edge of the blocked transposes: a 32 x 32 tile of complex doubles is 16 KiB. */
#define TILE 32

typedef struct {
    double re, im;
} cplx;

/* Options: set by main() before par_run(), read-only afterwards. */
static int m = 20;
static long n, rn; /* points, and the matrix edge sqrt(n) */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-m M] [-T] [-h]\n"
            "  -m M   log2 of the number of points, even, 2..%d (default 20)\n"
            "  -T     small test input (-m 10)\n"
            "  -h     this help\n",
            prog, M_MAX);
}

/* Input point j: a hash of j mapped to [-1, 1) for both parts, so anyone can regenerate it. */
static cplx gen(long j)
{
    uint64_t x = (uint64_t)j * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 33;
    cplx c = {(double)(x >> 40) * 0x1.0p-23 - 1.0, (double)(x & 0xffffff) * 0x1.0p-23 - 1.0};
    return c;
}

/* exp(-2 pi i num / den), with num reduced modulo den first so the angle stays exact. */
static cplx root(long num, long den)
{
    const double a = -2.0 * M_PI * (double)(num % den) / (double)den;
    cplx c = {cos(a), sin(a)};
    return c;
}

/* In-place iterative radix-2 FFT of len points; w[k] = exp(-2 pi i k / len) for k < len/2
 * (conjugated on the fly for the inverse), rev[i] = i with its log2(len) bits reversed. */
static void fft_row(cplx *a, long len, const cplx *w, const long *rev, int inverse)
{
    for (long i = 0; i < len; i++) { /* bit-reversal permutation */
        const long r = rev[i];
        if (r > i) {
            cplx t = a[i];
            a[i] = a[r];
            a[r] = t;
        }
    }
    const double s = inverse ? -1.0 : 1.0;
    for (long half = 1, stride = len / 2; half < len; half *= 2, stride /= 2)
        for (long start = 0; start < len; start += 2 * half)
            for (long k = 0; k < half; k++) {
                const cplx wk = w[k * stride];
                cplx *p = a + start + k, *q = p + half;
                const double tr = wk.re * q->re - s * wk.im * q->im;
                const double ti = wk.re * q->im + s * wk.im * q->re;
                q->re = p->re - tr;
                q->im = p->im - ti;
                p->re += tr;
                p->im += ti;
            }
}

/* Rows [lo, hi) of dst (r x r) := the transpose of src. The column stripe is read from
 * each source block in turn, starting with the next participant's, so that not everyone
 * reads the same participant's pages at the same moment. */
static void transpose(cplx *dst, const cplx *src, long lo, long hi, const long *row_lo, int me, int np)
{
    for (int s = 1; s <= np; s++) {
        const int q = (me + s) % np;
        const long clo = row_lo[q], chi = row_lo[q + 1];
        for (long r0 = lo; r0 < hi; r0 += TILE)
            for (long c0 = clo; c0 < chi; c0 += TILE) {
                const long r1 = r0 + TILE < hi ? r0 + TILE : hi, c1 = c0 + TILE < chi ? c0 + TILE : chi;
                for (long r = r0; r < r1; r++)
                    for (long c = c0; c < c1; c++) dst[r * rn + c] = src[c * rn + r];
            }
    }
}

/* The private reference: recursive radix-2 decimation in time, out[0..len) = DFT of
 * in[0], in[stride], ...; w[k] = exp(-2 pi i k / n). */
static void fft_ref(cplx *out, const cplx *in, long len, long stride, const cplx *w)
{
    if (len == 1) {
        out[0] = in[0];
        return;
    }
    const long h = len / 2;
    fft_ref(out, in, h, 2 * stride, w);         /* even points */
    fft_ref(out + h, in + stride, h, 2 * stride, w); /* odd points */
    for (long k = 0; k < h; k++) {
        const cplx wk = w[k * stride], e = out[k], o = out[k + h];
        const double tr = wk.re * o.re - wk.im * o.im, ti = wk.re * o.im + wk.im * o.re;
        out[k].re = e.re + tr;
        out[k].im = e.im + ti;
        out[k + h].re = e.re - tr;
        out[k + h].im = e.im - ti;
    }
}

/* Per-participant private data: the r-point roots and the twiddles of its own rows. */
struct priv {
    long lo, hi;   /* own rows */
    long *row_lo;  /* np+1 row boundaries */
    cplx *w;       /* rn/2 roots of the row FFT */
    long *rev;     /* rn bit-reversed indices */
    cplx *tw;      /* (hi-lo) x rn twiddles w_n^(row*col) */
    int me, np;
};

/* The six steps: src -> a (transpose), row FFTs and twiddles on a; a -> b, row FFTs on b;
 * b -> a. The result is in a; src is only read (it may be b, which is overwritten). Ends
 * with a barrier: a is complete for everyone. */
static void six_step(cplx *a, cplx *b, const cplx *src, const struct priv *p, int inverse)
{
    const double s = inverse ? -1.0 : 1.0;
    transpose(a, src, p->lo, p->hi, p->row_lo, p->me, p->np);
    for (long r = p->lo; r < p->hi; r++) {
        cplx *row = a + r * rn;
        const cplx *t = p->tw + (r - p->lo) * rn;
        fft_row(row, rn, p->w, p->rev, inverse);
        for (long c = 0; c < rn; c++) {
            const double re = row[c].re * t[c].re - s * row[c].im * t[c].im;
            const double im = row[c].im * t[c].re + s * row[c].re * t[c].im;
            row[c].re = re;
            row[c].im = im;
        }
    }
    par_barrier();
    transpose(b, a, p->lo, p->hi, p->row_lo, p->me, p->np);
    for (long r = p->lo; r < p->hi; r++) fft_row(b + r * rn, rn, p->w, p->rev, inverse);
    par_barrier();
    transpose(a, b, p->lo, p->hi, p->row_lo, p->me, p->np);
    par_barrier();
}

/* Contiguous blocks of rows; the first rn % np participants take one extra. */
static void partition_rows(struct priv *p)
{
    p->me = par_rank();
    p->np = par_nprocs();
    p->row_lo = malloc((size_t)(p->np + 1) * sizeof *p->row_lo);
    if (!p->row_lo) par_fail("fft: out of memory");
    const long q = rn / p->np, extra = rn % p->np;
    for (int k = 0; k <= p->np; k++) p->row_lo[k] = k * q + (k < extra ? k : extra);
    p->lo = p->row_lo[p->me];
    p->hi = p->row_lo[p->me + 1];
}

/* Private set-up, not timed (as in SPLASH-2): roots, own twiddles, own input rows of x. */
static void private_setup(struct priv *p, cplx *x)
{
    p->w = malloc((size_t)(rn / 2 + 1) * sizeof *p->w);
    p->tw = malloc((size_t)((p->hi - p->lo) * rn + 1) * sizeof *p->tw);
    p->rev = malloc((size_t)rn * sizeof *p->rev);
    if (!p->w || !p->tw || !p->rev) par_fail("fft: out of memory");
    for (long k = 0; k < rn / 2; k++) p->w[k] = root(k, rn);
    for (long i = 0; i < rn; i++) {
        long r = 0;
        for (int b = 0; b < m / 2; b++) r |= ((i >> b) & 1) << (m / 2 - 1 - b);
        p->rev[i] = r;
    }
    for (long r = p->lo; r < p->hi; r++)
        for (long c = 0; c < rn; c++) p->tw[(r - p->lo) * rn + c] = root(r * c, n);
    for (long j = p->lo * rn; j < p->hi * rn; j++) x[j] = gen(j);
}

/* Largest error of the unscaled inverse z, divided by n, against the input. */
static double inverse_error(const cplx *z)
{
    double inv_err = 0.0;
    for (long j = 0; j < n; j++) {
        const cplx g = gen(j);
        inv_err = fmax(inv_err, fmax(fabs(z[j].re / (double)n - g.re), fabs(z[j].im / (double)n - g.im)));
    }
    return inv_err;
}

/* The output y against the private reference FFT, relative to the largest output
 * component ymax; -1 when m is too large for the reference. */
static double reference_error(const cplx *y, double ymax)
{
    if (m > REF_M_MAX) return -1.0;
    cplx *in = malloc((size_t)n * sizeof *in), *out = malloc((size_t)n * sizeof *out);
    cplx *w = malloc((size_t)(n / 2 + 1) * sizeof *w);
    if (!in || !out || !w) par_fail("fft: out of memory in the check");
    for (long j = 0; j < n; j++) in[j] = gen(j);
    for (long k = 0; k < n / 2; k++) w[k] = root(k, n);
    fft_ref(out, in, n, 1, w);
    double ref_err = 0.0;
    for (long k = 0; k < n; k++)
        ref_err = fmax(ref_err, fmax(fabs(y[k].re - out[k].re), fabs(y[k].im - out[k].im)));
    ref_err = ymax > 0 ? ref_err / ymax : ref_err;
    free(in);
    free(out);
    free(w);
    return ref_err;
}

/* Participant 0's check and report of the forward output y and the inverse z. Returns the
 * exit status. */
static int fft_check(const cplx *y, const cplx *z, int np, double t_fwd, double t_inv)
{
    /* Answer: sums of the output and a hash of its bytes (bit-identical everywhere). */
    double sre = 0.0, sim = 0.0, ymax = 0.0;
    for (long k = 0; k < n; k++) {
        sre += y[k].re;
        sim += y[k].im;
        ymax = fmax(ymax, fmax(fabs(y[k].re), fabs(y[k].im)));
    }
    const uint64_t hash = par_fnv1a(PAR_FNV_INIT, y, (size_t)n * sizeof *y);
    const double inv_err = inverse_error(z);
    const double ref_err = reference_error(y, ymax);
    const int verified = inv_err < TOLERANCE && (ref_err < 0 || ref_err < TOLERANCE);
    const long q = rn / np, extra = rn % np;

    printf("fft: six-step complex FFT (%s build)\n", par_build());
    printf("  points          2^%d = %ld (a %ld x %ld matrix), %.1f MiB shared\n", m, n, rn, rn,
           (double)(3 * (size_t)n * sizeof *y) / (1 << 20));
    printf("  procs           %d (%ld..%ld rows each)\n", np, q, q + (extra ? 1 : 0));
    printf("  forward time    %.6f s (%.1f Mflop/s at 5 n log2 n)\n", t_fwd,
           t_fwd > 0 ? 5.0 * (double)n * m / t_fwd * 1e-6 : 0.0);
    printf("  inverse time    %.6f s (part of the check)\n", t_inv);
    printf("  inverse error   %.3e (max |ifft(fft(x)) - x|, tolerance %.0e)\n", inv_err, TOLERANCE);
    if (ref_err >= 0)
        printf("  reference error %.3e (max |fft - recursive fft| / max |fft|, tolerance %.0e)\n", ref_err,
               TOLERANCE);
    else
        printf("  reference error not computed (m > %d)\n", REF_M_MAX);
    par_report_head("fft");
    par_report_time(t_fwd);
    par_report_answer("sum %.6e %.6e fnv1a 0x%016llx", sre, sim, (unsigned long long)hash);
    par_report_result(verified, "inverse error %.3e, reference error %.3e", inv_err, ref_err);
    return verified ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;
}

static void worker(void)
{
    struct priv p;
    partition_rows(&p);

    cplx *x = par_alloc((size_t)n * sizeof *x);
    cplx *y = par_alloc((size_t)n * sizeof *y);
    cplx *z = par_alloc((size_t)n * sizeof *z);

    private_setup(&p, x);
    par_barrier();

    double t0 = par_time();
    six_step(y, x, x, &p, 0); /* forward: x -> y (x becomes scratch) */
    const double t_fwd = par_time() - t0;
    t0 = par_time();
    six_step(z, x, y, &p, 1); /* inverse, unscaled: y -> z (y kept, x is scratch) */
    const double t_inv = par_time() - t0;

    int status = PAR_EXIT_VERIFIED;
    if (p.me == 0) status = fft_check(y, z, p.np, t_fwd, t_inv);
    par_share_status(status);
    par_print_stats(stdout);
    fflush(stdout);
    free(p.w);
    free(p.tw);
    free(p.rev);
    free(p.row_lo);
}

int main(int argc, char **argv)
{
    if (par_init(&argc, &argv)) return PAR_EXIT_FAILURE;

    long m_opt = m;
    int help = 0, bad = 0, test = 0, m_set = 0, opt;
    opterr = 0;
    while (!bad && !help && (opt = getopt(argc, argv, ":m:Th")) != -1) {
        switch (opt) {
        case 'm':
            if (par_parse_long(optarg, &m_opt) || m_opt < 2 || m_opt > M_MAX || m_opt % 2 != 0)
                bad = par_opt_error("fft", "-m %s: log2 of the points must be an even integer in [2, %d]", optarg,
                                    M_MAX);
            m_set = 1;
            break;
        case 'T': test = 1; break;
        case 'h': help = 1; break;
        default: bad = par_opt_other("fft", opt); break;
        }
    }
    if (!bad && !help) bad = par_opt_rest("fft", argc, argv);
    if (bad || help) return par_usage(usage, argv[0], bad);
    if (test && !m_set) m_opt = 10;
    m = (int)m_opt;
    n = 1L << m;
    rn = 1L << (m / 2);

    par_run(worker);
    return par_finish(par_exit_status());
}
