/* is: bucketed integer sort (ranking) in the style of the NAS Parallel Benchmarks IS kernel
 * (written from the published specification, NAS report RNR-94-007 / NPB 3).
 *
 * n keys in [0, Bmax) come from the NAS generator (x_{k+1} = 5^13 x_k mod 2^46, seed
 * 314159265); each key is Bmax/4 times the sum of four consecutive uniforms, so keys are
 * bell-shaped. Every iteration i (1..ITERS) first sets key[i] = i and key[i+ITERS] =
 * Bmax - i, then ranks all keys: afterwards rankbuf[v] = number of keys <= v, so the rank of
 * a key v (its place in sorted order) is rankbuf[v-1].
 *
 * Parallel ranking with 2^min(10,b) buckets (bucket = top bits of the key):
 *   1. each participant counts the keys of its own block (page-aligned) per bucket and
 *      publishes the counts in its own row (own pages) of a shared matrix;       barrier
 *   2. from all rows, each participant privately computes the bucket totals, and from
 *      them the contiguous run of buckets each participant will rank (the same split
 *      everywhere: about n/P keys each, cut on page boundaries of the rank buffer where
 *      the bucket size allows); it then copies its keys into a shared buffer that holds
 *      the keys of each owner's buckets contiguously, participant after participant (so
 *      each participant writes one contiguous piece per owner; the piece for its own
 *      buckets stays in private memory, as in the MPI version of NAS IS);        barrier
 *   3. each participant counts the keys of its buckets into its own range of the rank
 *      buffer and turns the counts into running sums starting at the number of keys in
 *      smaller buckets;                                                          barrier
 * Rank 0 then reads the ranks of five test keys (partial verification). The key block of a
 * participant is only read and modified by it, and every shared buffer a phase writes was
 * last read before the previous barrier, so the three barriers are all that is needed.
 *
 * Like NAS, one untimed iteration (i = 1) runs first; then ITERS timed ones. After them,
 * each participant places the keys of its buckets at their ranks (NAS full_verify), which
 * sorts the key array.
 *
 * Check (rank 0, privately, after the timed part): a sequential histogram of the keys,
 * updated with the same modifications, gives the exact expected rank of every test key at
 * every iteration, the whole final rank buffer, and the sorted key array, all compared in
 * full. When n, b and ITERS are those of NAS class S, W, A or B, NAS's own test indices and
 * published ranks are checked too. Answer: a hash of the sorted keys and the final ranks. */
#include "par.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* uint32 words per 4096-byte page: block and row granularity. */
#define PAGE_WORDS 1024u
#define NTEST 5
#define LOG2_BUCKETS_MAX 10

/* NAS generator: multiplier 5^13, seed, modulus 2^46. */
#define NAS_A 1220703125ull
#define NAS_SEED 314159265ull
#define MASK46 ((1ull << 46) - 1)

#define N_MAX (1L << 31)
#define B_MIN 2
#define B_MAX 31

static long opt_n = 1L << 22;
static long opt_b = 19;
static long opt_iters = 10;

/* NAS classes whose published partial-verification data we can check as well. */
typedef struct {
    char name;
    long log2n, b;
    long index[NTEST], rank[NTEST];
} nas_class_t;

static const nas_class_t nas_classes[] = {
    {'S', 16, 11, {48427, 17148, 23627, 62548, 4431}, {0, 18, 346, 64917, 65463}},
    {'W', 20, 16, {357773, 934767, 875723, 898999, 404505}, {1249, 11698, 1039987, 1043896, 1048018}},
    {'A', 23, 19, {2112377, 662041, 5336171, 3642833, 4250760}, {104, 17523, 123928, 8288932, 8388264}},
    {'B', 25, 21, {41869, 812306, 5102857, 18232239, 26860214}, {33422937, 10244, 59149, 33135281, 99}},
};

/* NAS's expected rank of test key t at iteration it: the published value shifted by a
 * class-specific amount (the two modified keys move some test keys up or down). */
static long nas_expected(char cls, int t, long it, long base)
{
    switch (cls) {
    case 'S': return t <= 2 ? base + it : base - it;
    case 'W': return t < 2 ? base + it - 2 : base - it;
    case 'A': return t <= 2 ? base + it - 1 : base - (it - 1);
    default: return (t == 1 || t == 2 || t == 4) ? base + it : base - it;
    }
}

/* ---- keys ------------------------------------------------------------------------- */

/* a^k mod 2^46 (the low 46 bits of a 64-bit product are exact). */
static uint64_t pow46(uint64_t a, uint64_t k)
{
    uint64_t r = 1;
    while (k) {
        if (k & 1) r = r * a & MASK46;
        a = a * a & MASK46;
        k >>= 1;
    }
    return r;
}

/* Keys lo..hi-1. Key i uses the uniforms x_{4i+1}..x_{4i+4}; (Bmax/4)(x1+x2+x3+x4) with
 * x = X/2^46 truncates to (X1+X2+X3+X4) >> (48-b), computed exactly in integers (NAS's
 * double arithmetic is exact here too, so the keys are NAS's). */
static void gen_keys(uint32_t *dst, size_t lo, size_t hi, int b)
{
    uint64_t x = NAS_SEED * pow46(NAS_A, 4 * (uint64_t)lo) & MASK46;
    for (size_t i = lo; i < hi; i++) {
        uint64_t s = 0;
        for (int j = 0; j < 4; j++) {
            x = x * NAS_A & MASK46;
            s += x;
        }
        dst[i - lo] = (uint32_t)(s >> (48 - b));
    }
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p) par_fail("is: out of memory (%zu bytes)", size);
    return p;
}

static size_t round_up(size_t x, size_t m)
{
    return (x + m - 1) / m * m;
}

/* ---- the parallel part -------------------------------------------------------------- */

typedef struct {
    int me, np;
    size_t n, bmax, iters;
    int shift;              /* bucket = key >> shift */
    size_t nb, row, gran;   /* buckets, padded row length, split granularity (buckets) */
    size_t lo, hi;          /* this participant's key block */
    uint32_t *keys, *kb2, *rankbuf, *bcount;
    uint32_t *cnt, *tot, *bstart; /* private: own counts, totals (NB), starts (NB+1) */
    size_t *edge;           /* private: owners' bucket runs (P+1) */
    uint32_t **dstp;        /* private: where this participant's next key of each bucket goes */
    size_t blo, bhi;        /* this participant's bucket run after the last ranking */
    /* This participant's keys of its own buckets stay in private memory (no other
     * participant needs them); their slots [own_lo, own_hi) of kb2 are left unwritten. */
    uint32_t *mine;
    size_t own_lo, own_hi;
    double ph[6], tp;       /* time per step, waits at barriers apart (printed by rank 0) */
} ctx_t;

/* Charge the time since the last lap to step i. */
static void lap(ctx_t *c, int i)
{
    const double now = par_time();
    c->ph[i] += now - c->tp;
    c->tp = now;
}

/* Step 1 of iteration `it`: the two modified keys, by the participant whose block holds
 * them, then the bucket counts of this block, published in this participant's row. */
static void count_buckets(ctx_t *c, size_t it)
{
    if (it >= c->lo && it < c->hi) c->keys[it] = (uint32_t)it;
    if (it + c->iters >= c->lo && it + c->iters < c->hi) c->keys[it + c->iters] = (uint32_t)(c->bmax - it);

    memset(c->cnt, 0, c->nb * sizeof *c->cnt);
    for (size_t i = c->lo; i < c->hi; i++) c->cnt[c->keys[i] >> c->shift]++;
    memcpy(c->bcount + (size_t)c->me * c->row, c->cnt, c->nb * sizeof *c->cnt);
}

/* Step 2, first part: bucket totals over all rows, and the global bucket starts. */
static void bucket_starts(ctx_t *c)
{
    const size_t nb = c->nb;
    uint32_t *tot = c->tot;
    memset(tot, 0, nb * sizeof *tot);
    for (int p = 0; p < c->np; p++) {
        const uint32_t *r = c->bcount + (size_t)p * c->row;
        for (size_t k = 0; k < nb; k++) tot[k] += r[k];
    }
    uint32_t run = 0;
    for (size_t k = 0; k < nb; k++) {
        c->bstart[k] = run;
        run += tot[k];
    }
    c->bstart[nb] = run;
}

/* Bucket run of owner q: [edge[q], edge[q+1]), cut at the first split point (a multiple of
 * gran buckets) with at least q*n/P keys in smaller buckets. Everyone computes the same
 * split from the same totals. */
static void split_buckets(ctx_t *c)
{
    const size_t nb = c->nb;
    size_t *edge = c->edge;
    edge[0] = 0;
    size_t cut = 0;
    for (int q = 1; q < c->np; q++) {
        const uint64_t target = ((uint64_t)q * c->n + (uint64_t)c->np - 1) / (uint64_t)c->np;
        while (cut < nb && c->bstart[cut] < target) cut += c->gran;
        edge[q] = cut < nb ? cut : nb;
    }
    edge[c->np] = nb;
    c->blo = edge[c->me];
    c->bhi = edge[c->me + 1];
}

/* Where this participant's keys go, and the copy. The keys of owner q's buckets fill
 * [bstart[edge[q]], bstart[edge[q+1]]) participant by participant (each part in bucket
 * order), not bucket by bucket: ranking only counts keys, so their order inside an owner's
 * range is free, and this way each participant writes one contiguous piece per owner,
 * which shares pages with other writers only at its two ends. Its piece for its own
 * buckets goes to private memory instead. */
static void scatter_keys(ctx_t *c)
{
    const size_t *edge = c->edge;
    for (int q = 0; q < c->np; q++) {
        uint32_t base = c->bstart[edge[q]];
        for (int p = 0; p < c->me; p++) {
            const uint32_t *r = c->bcount + (size_t)p * c->row;
            for (size_t b = edge[q]; b < edge[q + 1]; b++) base += r[b];
        }
        uint32_t *to = q == c->me ? c->mine : c->kb2 + base;
        for (size_t b = edge[q]; b < edge[q + 1]; b++) {
            c->dstp[b] = to;
            to += c->cnt[b];
        }
        if (q == c->me) {
            c->own_lo = base;
            c->own_hi = base + (size_t)(to - c->mine);
        }
    }
    for (size_t i = c->lo; i < c->hi; i++) {
        const uint32_t key = c->keys[i];
        *c->dstp[key >> c->shift]++ = key;
    }
}

/* Step 3: ranks of this participant's key range [blo<<shift, bhi<<shift). */
static void rank_own_keys(ctx_t *c)
{
    const size_t k1 = c->blo << c->shift, k2 = c->bhi << c->shift;
    if (k2 <= k1) return;
    uint32_t *rb = c->rankbuf;
    memset(rb + k1, 0, (k2 - k1) * sizeof *rb);
    for (size_t i = c->bstart[c->blo]; i < c->own_lo; i++) rb[c->kb2[i]]++;
    for (size_t i = 0; i < c->own_hi - c->own_lo; i++) rb[c->mine[i]]++;
    for (size_t i = c->own_hi; i < c->bstart[c->bhi]; i++) rb[c->kb2[i]]++;
    uint32_t sum = c->bstart[c->blo]; /* keys in smaller buckets */
    for (size_t k = k1; k < k2; k++) {
        sum += rb[k];
        rb[k] = sum;
    }
}

/* One ranking (NAS rank()) of iteration `it`: three steps, each ended by a barrier. */
static void rank_iteration(ctx_t *c, size_t it)
{
    count_buckets(c, it);
    lap(c, 0);
    par_barrier();
    lap(c, 1);

    bucket_starts(c);
    split_buckets(c);
    scatter_keys(c);
    lap(c, 2);
    par_barrier();
    lap(c, 3);

    rank_own_keys(c);
    lap(c, 4);
    par_barrier();
    lap(c, 5);
}

/* Sequential reference and comparison, rank 0 only, in private memory. Returns 1 if all
 * agree. `pv` holds the ranks of the test keys read at each iteration (iters x NTEST). */
static int check(const ctx_t *c, const size_t *tidx, const uint32_t *tval, const uint32_t *pv,
                 const nas_class_t *cls, uint64_t *answer)
{
    const size_t n = c->n, bmax = c->bmax, iters = c->iters;
    int ok = 1;
    uint32_t *hist = xmalloc(bmax * sizeof *hist);
    memset(hist, 0, bmax * sizeof *hist);
    const size_t blk = 1u << 16;
    uint32_t *tmp = xmalloc(blk * sizeof *tmp);
    for (size_t s = 0; s < n; s += blk) {
        const size_t e = s + blk < n ? s + blk : n;
        gen_keys(tmp, s, e, (int)opt_b);
        for (size_t i = 0; i < e - s; i++) hist[tmp[i]]++;
    }
    /* Original values of the keys the iterations overwrite (indices 1..2*iters). */
    uint32_t *orig = xmalloc((2 * iters + 1) * sizeof *orig);
    gen_keys(orig, 0, 2 * iters + 1, (int)opt_b);
    free(tmp);

    long nas_bad = 0, pv_bad = 0;
    for (size_t it = 1; it <= iters; it++) {
        hist[orig[it]]--;
        hist[it]++;
        hist[orig[it + iters]]--;
        hist[bmax - it]++;
        for (int t = 0; t < NTEST; t++) {
            uint64_t want = 0;
            for (size_t v = 0; v < tval[t]; v++) want += hist[v];
            const uint32_t got = pv[(it - 1) * NTEST + t];
            if (got != want) {
                if (pv_bad++ < 5)
                    fprintf(stderr, "is: iteration %zu: rank of test key %d (index %zu, value %u) is %u, want %" PRIu64 "\n",
                            it, t, tidx[t], tval[t], got, want);
            }
            /* NAS checks keys 0 < v <= n-1 only. */
            if (cls && tval[t] > 0 && tval[t] <= n - 1 &&
                (long)got != nas_expected(cls->name, t, (long)it, cls->rank[t])) {
                if (nas_bad++ < 5)
                    fprintf(stderr, "is: iteration %zu: test key %d has rank %u, NAS class %c says %ld\n", it, t,
                            got, cls->name, nas_expected(cls->name, t, (long)it, cls->rank[t]));
            }
        }
    }
    if (pv_bad || nas_bad) ok = 0;

    /* Final ranks (running sums of the histogram) and the sorted keys (its expansion). */
    uint64_t sum = 0, h = 0xcbf29ce484222325ull; /* FNV-1a basis */
    size_t rank_bad = 0, pos = 0, sort_bad = 0;
    for (size_t v = 0; v < bmax; v++) {
        for (uint32_t j = 0; j < hist[v]; j++, pos++)
            if (c->keys[pos] != v && sort_bad++ < 5)
                fprintf(stderr, "is: sorted key %zu is %u, want %zu\n", pos, c->keys[pos], v);
        sum += hist[v];
        if (c->rankbuf[v] != sum && rank_bad++ < 5)
            fprintf(stderr, "is: rank of keys <= %zu is %u, want %" PRIu64 "\n", v, c->rankbuf[v], sum);
    }
    if (rank_bad || sort_bad) ok = 0;
    for (size_t i = 0; i < n; i++) h = (h ^ c->keys[i]) * 0x100000001b3ull;
    for (size_t v = 0; v < bmax; v++) h = (h ^ c->rankbuf[v]) * 0x100000001b3ull;
    *answer = h;
    free(orig);
    free(hist);
    return ok;
}

/* The sizes, this participant's key block, and the collective and private allocations
 * (the par_alloc() calls in the same order everywhere). */
static void ctx_init(ctx_t *c)
{
    c->me = par_rank();
    c->np = par_nprocs();
    c->n = (size_t)opt_n;
    c->bmax = (size_t)1 << opt_b;
    c->iters = (size_t)opt_iters;
    const int lognb = opt_b < LOG2_BUCKETS_MAX ? (int)opt_b : LOG2_BUCKETS_MAX;
    c->nb = (size_t)1 << lognb;
    c->shift = (int)opt_b - lognb;
    c->row = round_up(c->nb, PAGE_WORDS);
    /* Split the buckets on rank-buffer page boundaries when that still leaves a few split
     * points per participant; otherwise (tiny Bmax) accept some false sharing there. */
    const size_t bucket_keys = (size_t)1 << c->shift;
    size_t gran = bucket_keys >= PAGE_WORDS ? 1 : PAGE_WORDS / bucket_keys;
    const size_t fine = c->nb / (4 * (size_t)c->np);
    if (gran > fine) gran = fine ? fine : 1;
    c->gran = gran;

    const size_t chunk = round_up((c->n + (size_t)c->np - 1) / (size_t)c->np, PAGE_WORDS);
    c->lo = (size_t)c->me * chunk < c->n ? (size_t)c->me * chunk : c->n;
    c->hi = c->lo + chunk < c->n ? c->lo + chunk : c->n;

    c->keys = par_alloc(c->n * sizeof *c->keys);
    c->kb2 = par_alloc(c->n * sizeof *c->kb2);
    c->rankbuf = par_alloc(c->bmax * sizeof *c->rankbuf);
    c->bcount = par_alloc((size_t)c->np * c->row * sizeof *c->bcount);
    c->cnt = xmalloc(c->nb * sizeof *c->cnt);
    c->tot = xmalloc(c->nb * sizeof *c->tot);
    c->dstp = xmalloc(c->nb * sizeof *c->dstp);
    c->mine = xmalloc((c->hi - c->lo) * sizeof *c->mine);
    c->edge = xmalloc(((size_t)c->np + 1) * sizeof *c->edge);
    c->bstart = xmalloc((c->nb + 1) * sizeof *c->bstart);
}

static void ctx_free(ctx_t *c)
{
    free(c->bstart);
    free(c->mine);
    free(c->dstp);
    free(c->edge);
    free(c->tot);
    free(c->cnt);
}

/* Test keys: NAS's indices for a NAS class (returned), else five spread over the indices
 * the iterations never modify (so their values stay fixed; NULL returned). */
static const nas_class_t *test_keys(const ctx_t *c, size_t tidx[NTEST])
{
    const nas_class_t *cls = NULL;
    for (size_t k = 0; k < sizeof nas_classes / sizeof *nas_classes; k++)
        if (c->n == (size_t)1 << nas_classes[k].log2n && opt_b == nas_classes[k].b && c->iters == 10)
            cls = &nas_classes[k];
    for (int t = 0; t < NTEST; t++)
        tidx[t] = cls ? (size_t)cls->index[t]
                      : 2 * c->iters + 1 + (size_t)((uint64_t)(2 * t + 1) * (c->n - 2 * c->iters - 1) / (2 * NTEST));
    return cls;
}

/* The timed iterations; rank 0 records the ranks of the test keys of value tval in pv.
 * Returns the parallel seconds. */
static double timed_iterations(ctx_t *c, const uint32_t tval[NTEST], uint32_t *pv)
{
    memset(c->ph, 0, sizeof c->ph);
    const double t0 = c->tp = par_time();
    for (size_t it = 1; it <= c->iters; it++) {
        rank_iteration(c, it);
        /* Partial verification data, read between the ranking's last barrier and the
         * next iteration's second barrier, before which no one rewrites the rank buffer. */
        if (c->me == 0)
            for (int t = 0; t < NTEST; t++) pv[(it - 1) * NTEST + t] = tval[t] ? c->rankbuf[tval[t] - 1] : 0;
    }
    const double t1 = par_time();
    return t1 - t0;
}

/* NAS full_verify: place the keys of this participant's buckets at their ranks. The place
 * of a key is decremented from a private copy of the rank range (the shared rank buffer
 * stays as the answer). Buckets hold consecutive ranks, so each participant writes one
 * contiguous range of the key array, which no one reads any more. */
static void place_keys(ctx_t *c)
{
    const size_t k1 = c->blo << c->shift, k2 = c->bhi << c->shift;
    if (k2 <= k1) return;
    uint32_t *next = xmalloc((k2 - k1) * sizeof *next);
    memcpy(next, c->rankbuf + k1, (k2 - k1) * sizeof *next);
    for (size_t i = c->bstart[c->blo]; i < c->bstart[c->bhi]; i++) {
        const uint32_t k = i < c->own_lo ? c->kb2[i] : i < c->own_hi ? c->mine[i - c->own_lo] : c->kb2[i];
        c->keys[--next[k - k1]] = k;
    }
    free(next);
}

/* Rank 0's check and report; returns the exit status. */
static int report(const ctx_t *c, const size_t *tidx, const uint32_t *tval, const uint32_t *pv,
                  const nas_class_t *cls, double t_parallel)
{
    uint64_t answer = 0;
    const int ok = check(c, tidx, tval, pv, cls, &answer);
    par_report_head("is");
    printf("keys: %zu in [0, 2^%ld), %zu buckets, %zu iterations%s%c\n", c->n, opt_b, c->nb, c->iters,
           cls ? ", NAS class " : "", cls ? cls->name : ' ');
    par_report_time(t_parallel);
    printf("rank 0 steps: count %.4f s, wait %.4f s, scatter %.4f s, wait %.4f s, rank %.4f s, wait %.4f s\n",
           c->ph[0], c->ph[1], c->ph[2], c->ph[3], c->ph[4], c->ph[5]);
    printf("mops: %.2f\n", t_parallel > 0 ? (double)c->iters * (double)c->n / t_parallel * 1e-6 : 0.0);
    par_report_answer("%016" PRIx64, answer);
    par_report_result(ok, "see stderr");
    return ok ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;
}

static void worker(void)
{
    ctx_t c = {0};
    ctx_init(&c);
    size_t tidx[NTEST];
    const nas_class_t *cls = test_keys(&c, tidx);

    gen_keys(c.keys + c.lo, c.lo, c.hi, (int)opt_b);
    par_barrier();

    uint32_t tval[NTEST] = {0};
    uint32_t *pv = NULL;
    if (c.me == 0) {
        for (int t = 0; t < NTEST; t++) tval[t] = c.keys[tidx[t]];
        pv = xmalloc(c.iters * NTEST * sizeof *pv);
    }

    rank_iteration(&c, 1); /* untimed, as in NAS: pages and tables warmed up */
    const double t_parallel = timed_iterations(&c, tval, pv);
    place_keys(&c);
    par_barrier();

    int status = PAR_EXIT_VERIFIED;
    if (c.me == 0) {
        status = report(&c, tidx, tval, pv, cls, t_parallel);
        free(pv);
    }
    par_share_status(status);
    ctx_free(&c);
    par_print_stats(stdout);
    fflush(stdout);
}

/* ---- options ---------------------------------------------------------------------- */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-n N] [-b LOG2BMAX] [-i ITERS] [-T] [-h]\n"
            "  -n N         number of keys, %d..%ld (default 4194304); n > 2*ITERS+1\n"
            "  -b LOG2BMAX  keys lie in [0, 2^LOG2BMAX), %d..%d (default 19); 2^LOG2BMAX > ITERS\n"
            "  -i ITERS     timed iterations, >= 1 (default 10)\n"
            "  -T           small test input: NAS class S (n = 2^16, LOG2BMAX = 11)\n"
            "  -h           this help\n"
            "NAS classes are n = 2^16/2^20/2^23/2^25 with LOG2BMAX = 11/16/19/21 (S/W/A/B).\n",
            prog, 4, N_MAX, B_MIN, B_MAX);
}

int main(int argc, char **argv)
{
    if (par_init(&argc, &argv)) return PAR_EXIT_FAILURE;
    int bad = 0, help = 0, test = 0, n_set = 0, b_set = 0, opt;
    opterr = 0; /* our own messages, from rank 0 only */
    while (!bad && (opt = getopt(argc, argv, ":n:b:i:Th")) != -1) {
        switch (opt) {
        case 'n':
            bad = par_opt_long("is", opt, optarg, 4, N_MAX, "the key count", &opt_n);
            n_set = 1;
            break;
        case 'b':
            bad = par_opt_long("is", opt, optarg, B_MIN, B_MAX, "log2 of the key range", &opt_b);
            b_set = 1;
            break;
        case 'i': bad = par_opt_long("is", opt, optarg, 1, 1000000, "the iteration count", &opt_iters); break;
        case 'T': test = 1; break;
        case 'h': help = 1; break;
        default: bad = par_opt_other("is", opt); break;
        }
    }
    if (!bad) bad = par_opt_rest("is", argc, argv);
    if (!bad && test) {
        if (!n_set) opt_n = 1L << 16;
        if (!b_set) opt_b = 11;
    }
    /* NAS writes keys i and i+ITERS for i <= ITERS, and the key values i and Bmax-i. */
    if (!bad && opt_n < 2 * opt_iters + 2)
        bad = par_opt_error("is", "-n %ld: needs more than 2*ITERS+1 = %ld keys", opt_n, 2 * opt_iters + 1);
    if (!bad && opt_iters >= (1L << opt_b))
        bad = par_opt_error("is", "-i %ld: needs fewer iterations than 2^LOG2BMAX = %ld", opt_iters, 1L << opt_b);
    if (bad || help) return par_usage(usage, argv[0], bad);

    par_run(worker);
    return par_finish(par_exit_status());
}
