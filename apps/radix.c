/* radix: parallel least-significant-digit radix sort of n unsigned integer keys, in the
 * manner of the SPLASH-2 RADIX kernel (written from the published algorithm).
 *
 * Each participant owns a contiguous block of the key array, aligned to 4096-byte pages so
 * that blocks never share a page. One pass per digit of log2(R) bits:
 *   1. every participant counts the digits of its own block and publishes the counts in its
 *      own row of a shared histogram matrix (each row on its own pages);          barrier
 *   2. every participant derives, privately, from all rows where its keys of each digit go:
 *      after all keys of smaller digits, and after the keys of the same digit held by
 *      lower-numbered participants (this keeps the sort stable, hence correct);
 *   3. it scatters its keys to those places in the destination array;             barrier
 *   4. source and destination swap roles.
 * Two barriers per pass suffice: the histogram rows of pass k+1 are written only after the
 * scatter barrier of pass k, by which time every participant has finished reading them,
 * and the array a pass scatters into was last read before the previous pass's barrier.
 *
 * Keys come from a 64-bit linear congruential generator; each participant jumps ahead to
 * the start of its block, so the input is the same at any participant count.
 *
 * Check (rank 0, after the timed section, in private memory): the result is sorted, and
 * it has the input's count, sum, xor and sum of a mixing hash of the keys (order-
 * independent fingerprints of the multiset). Answer: a position-dependent hash of the
 * sorted array, which is unique, so identical in every build. */
#include "par.h"

#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Keys per 4096-byte page: block and histogram-row granularity, so no two participants
 * write the same page of the source array or of the histogram matrix. */
#define PAGE_KEYS 1024u

/* Largest accepted -n: offsets are 32-bit, and 2 arrays of 2^31 keys already need 16 GiB. */
#define N_MAX (1L << 31)
#define RADIX_MAX (1L << 16)

/* LCG multiplier and increment (Knuth's MMIX constants); modulus 2^64. */
#define LCG_A 6364136223846793005ull
#define LCG_C 1442695040888963407ull

static long opt_n = 4L << 20; /* keys */
static long opt_radix = 1024; /* digit values per pass */
static long opt_bits = 32;    /* key width in bits */
static unsigned long long opt_seed = 12345;

/* ---- keys ------------------------------------------------------------------------- */

/* The LCG state after k steps from x: x_k = A^k x + C (A^k - 1)/(A - 1), computed by
 * repeated squaring of the affine map (the division never happens, so it is exact). */
static uint64_t lcg_skip(uint64_t x, uint64_t k)
{
    uint64_t mul = 1, add = 0;               /* accumulated map: x -> mul x + add */
    uint64_t step_mul = LCG_A, step_add = LCG_C; /* the map for 2^j steps */
    while (k) {
        if (k & 1) {
            mul *= step_mul;
            add = add * step_mul + step_add;
        }
        step_add = step_add * step_mul + step_add;
        step_mul *= step_mul;
        k >>= 1;
    }
    return mul * x + add;
}

/* Key i is the top `bits` bits of the LCG state after i+1 steps from the seed. */
static void gen_keys(uint32_t *dst, size_t lo, size_t hi, uint64_t seed, int bits)
{
    uint64_t x = lcg_skip(seed, lo);
    for (size_t i = lo; i < hi; i++) {
        x = x * LCG_A + LCG_C;
        dst[i - lo] = (uint32_t)(x >> (64 - bits));
    }
}

/* A strong bijective mixer (splitmix64 finaliser): a sum of mixed keys catches far more
 * multiset differences than the plain sum and xor alone. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct {
    uint64_t count, sum, xor, mixsum;
} fingerprint_t;

static void fp_add(fingerprint_t *f, const uint32_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        f->count++;
        f->sum += k[i];
        f->xor ^= k[i];
        f->mixsum += mix64(k[i]);
    }
}

/* ---- the parallel sort -------------------------------------------------------------- */

static size_t round_up(size_t x, size_t m)
{
    return (x + m - 1) / m * m;
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p) par_fail("radix: out of memory (%zu bytes)", size);
    return p;
}

/* Charge the time since *last to step i. */
static void lap(double *ph, int i, double *last)
{
    const double now = par_time();
    ph[i] += now - *last;
    *last = now;
}

/* One participant's sort: sizes, its block, the arrays, and the time per step. */
typedef struct {
    int me, np;
    size_t n, radix;
    int keybits, dbits, passes;
    size_t lo, hi;          /* own block of keys */
    size_t row;             /* histogram row length, padded to whole pages */
    uint32_t *a, *b, *hist; /* shared: the two key arrays and the histogram matrix */
    uint32_t *count, *offset; /* private, per digit */
    /* Time per step, waits at barriers apart (rank 0 prints its own): where a slow run
     * loses its time. */
    double ph[4], tp;
} sort_t;

/* The sizes, this participant's block, and the allocations (par_alloc() in the same order
 * everywhere). */
static void sort_init(sort_t *s)
{
    s->me = par_rank();
    s->np = par_nprocs();
    s->n = (size_t)opt_n;
    s->radix = (size_t)opt_radix;
    s->keybits = (int)opt_bits;
    s->dbits = 0;
    while ((1ul << s->dbits) < s->radix) s->dbits++;
    s->passes = (s->keybits + s->dbits - 1) / s->dbits;

    /* Blocks of whole pages; the last participants may get fewer keys or none. */
    const size_t chunk = round_up((s->n + (size_t)s->np - 1) / (size_t)s->np, PAGE_KEYS);
    s->lo = (size_t)s->me * chunk < s->n ? (size_t)s->me * chunk : s->n;
    s->hi = s->lo + chunk < s->n ? s->lo + chunk : s->n;
    /* Histogram rows padded to whole pages so each participant writes only its own. */
    s->row = round_up(s->radix, PAGE_KEYS);

    s->a = par_alloc(s->n * sizeof *s->a);
    s->b = par_alloc(s->n * sizeof *s->b);
    s->hist = par_alloc((size_t)s->np * s->row * sizeof *s->hist);

    s->count = xmalloc(s->radix * sizeof *s->count);
    s->offset = xmalloc(s->radix * sizeof *s->offset);
}

/* Step 2: destination of this participant's first key of each digit: the keys of all
 * smaller digits, plus those of this digit held by participants before it. `count` is
 * reused for the digit totals over all participants. */
static void digit_offsets(sort_t *s)
{
    const size_t radix = s->radix;
    memset(s->offset, 0, radix * sizeof *s->offset);
    memset(s->count, 0, radix * sizeof *s->count);
    for (int p = 0; p < s->np; p++) {
        const uint32_t *h = s->hist + (size_t)p * s->row;
        if (p < s->me)
            for (size_t d = 0; d < radix; d++) s->offset[d] += h[d];
        for (size_t d = 0; d < radix; d++) s->count[d] += h[d];
    }
    uint32_t run = 0;
    for (size_t d = 0; d < radix; d++) {
        s->offset[d] += run;
        run += s->count[d];
    }
}

/* One pass, on the digit at `shift`, from src to dst; two barriers. */
static void radix_pass(sort_t *s, const uint32_t *src, uint32_t *dst, int shift)
{
    const uint32_t mask = (uint32_t)(s->radix - 1);

    /* 1. Local histogram, published in this participant's row. */
    memset(s->count, 0, s->radix * sizeof *s->count);
    for (size_t i = s->lo; i < s->hi; i++) s->count[(src[i] >> shift) & mask]++;
    memcpy(s->hist + (size_t)s->me * s->row, s->count, s->radix * sizeof *s->count);
    lap(s->ph, 0, &s->tp);
    par_barrier();
    lap(s->ph, 1, &s->tp);

    digit_offsets(s);

    /* 3. Stable scatter of this participant's keys. */
    for (size_t i = s->lo; i < s->hi; i++) {
        const uint32_t k = src[i];
        dst[s->offset[(k >> shift) & mask]++] = k;
    }
    lap(s->ph, 2, &s->tp);
    par_barrier();
    lap(s->ph, 3, &s->tp);
}

/* Check on rank 0, privately: fingerprints of a freshly generated input against those of
 * the result, and sortedness; then the report. Returns the exit status. */
static int sort_check(const sort_t *s, const uint32_t *src, double t_par)
{
    const size_t n = s->n;
    fingerprint_t in = {0}, out = {0};
    const size_t blk = 1u << 16;
    uint32_t *tmp = xmalloc(blk * sizeof *tmp);
    for (size_t b = 0; b < n; b += blk) {
        const size_t e = b + blk < n ? b + blk : n;
        gen_keys(tmp, b, e, opt_seed, s->keybits);
        fp_add(&in, tmp, e - b);
    }
    free(tmp);
    fp_add(&out, src, n);
    size_t unsorted = 0;
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a offset basis, one step per key */
    for (size_t i = 0; i < n; i++) {
        if (i && src[i - 1] > src[i]) unsorted++;
        h = (h ^ src[i]) * 0x100000001b3ull;
    }
    const int same = in.count == out.count && in.sum == out.sum && in.xor == out.xor && in.mixsum == out.mixsum;
    if (unsorted) fprintf(stderr, "radix: %zu adjacent pairs out of order\n", unsorted);
    if (!same) fprintf(stderr, "radix: output is not a permutation of the input (fingerprints differ)\n");
    const int ok = !unsorted && same;

    par_report_head("radix");
    printf("keys: %zu, %d-bit, radix %zu (%d passes of %d bits), seed %llu\n", n, s->keybits, s->radix,
           s->passes, s->dbits, opt_seed);
    par_report_time(t_par);
    printf("rank 0 steps: histogram %.4f s, wait %.4f s, offsets+scatter %.4f s, wait %.4f s\n", s->ph[0],
           s->ph[1], s->ph[2], s->ph[3]);
    par_report_answer("%016" PRIx64, h);
    par_report_result(ok, "see stderr");
    return ok ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;
}

static void worker(void)
{
    sort_t s = {0};
    sort_init(&s);

    gen_keys(s.a + s.lo, s.lo, s.hi, opt_seed, s.keybits);
    par_barrier();

    s.tp = par_time();
    const double t0 = s.tp;
    uint32_t *src = s.a, *dst = s.b;
    for (int pass = 0; pass < s.passes; pass++) {
        radix_pass(&s, src, dst, pass * s.dbits);
        uint32_t *t = src;
        src = dst;
        dst = t;
    }
    const double t1 = par_time();

    free(s.offset);
    free(s.count);

    int status = PAR_EXIT_VERIFIED;
    if (s.me == 0) status = sort_check(&s, src, t1 - t0);
    par_share_status(status);
    par_print_stats(stdout);
    fflush(stdout);
}

/* ---- options ---------------------------------------------------------------------- */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-n N] [-r R] [-m BITS] [-s SEED] [-T] [-h]\n"
            "  -n N      number of keys, 1..%ld (default 4194304)\n"
            "  -r R      radix, a power of two in 2..%ld (default 1024)\n"
            "  -m BITS   key width in bits, 1..32 (default 32)\n"
            "  -s SEED   generator seed, a non-negative integer (default 12345)\n"
            "  -T        small test input (65536 keys)\n"
            "  -h        this help\n",
            prog, N_MAX, RADIX_MAX);
}

int main(int argc, char **argv)
{
    if (par_init(&argc, &argv)) return PAR_EXIT_FAILURE;
    int bad = 0, help = 0, test = 0, opt, n_set = 0;
    long seed = (long)opt_seed;
    opterr = 0; /* our own messages, from rank 0 only */
    while (!bad && (opt = getopt(argc, argv, ":n:r:m:s:Th")) != -1) {
        switch (opt) {
        case 'n':
            bad = par_opt_long("radix", opt, optarg, 1, N_MAX, "the key count", &opt_n);
            n_set = 1;
            break;
        case 'r':
            if (par_parse_long(optarg, &opt_radix) || opt_radix < 2 || opt_radix > RADIX_MAX ||
                (opt_radix & (opt_radix - 1)))
                bad = par_opt_error("radix", "-r %s: the radix must be a power of two in [2, %ld]", optarg, RADIX_MAX);
            break;
        case 'm': bad = par_opt_long("radix", opt, optarg, 1, 32, "the key width", &opt_bits); break;
        case 's': bad = par_opt_long("radix", opt, optarg, 0, LONG_MAX, "the seed", &seed); break;
        case 'T': test = 1; break;
        case 'h': help = 1; break;
        default: bad = par_opt_other("radix", opt); break;
        }
    }
    if (!bad) bad = par_opt_rest("radix", argc, argv);
    if (bad || help) return par_usage(usage, argv[0], bad);
    if (test && !n_set) opt_n = 1L << 16;
    opt_seed = (unsigned long long)seed;

    par_run(worker);
    return par_finish(par_exit_status());
}
