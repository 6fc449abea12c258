/* water: O(n^2) molecular dynamics in the style of SPLASH-2 Water-nsquared, simplified to
 * point particles with a Lennard-Jones potential (reduced units: sigma = epsilon = mass = 1).
 *
 * n molecules start on an fcc lattice in a periodic cubic box at density RHO; the potential
 * is cut at RC_MAX (or half the box) with the shifted-force correction, so that energy and
 * force are both continuous there, and the equations of motion are integrated with
 * velocity Verlet. Each participant owns a contiguous block of molecules. In the force phase
 * it computes the interactions of each of its molecules i with the next n/2 molecules (the
 * SPLASH-2 half-shell: every pair is seen exactly once, and every participant does the same
 * amount of work), accumulating the forces on i and on j in a private buffer; then it adds
 * the parts for other owners' blocks into the shared force array one block at a time,
 * under that block's lock, so each lock is taken at most once per participant per step.
 * A barrier separates the force phase from the integration phase, in which each owner adds
 * its own private part to what the others left in its block and updates its molecules.
 *
 * Because the locked additions happen in whatever order the participants arrive, the last
 * bits of the forces vary from run to run; the answer is therefore printed with 6
 * significant digits, and the check compares with a sequential run made privately by
 * rank 0 within a relative tolerance, and checks energy and momentum conservation. */
#include "par.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RHO 0.8       /* reduced density of the full lattice: a dense liquid */
#define TEMP0 1.0     /* initial temperature */
#define DT 0.004      /* time step */
#define RC_MAX 2.5    /* the usual LJ cutoff; smaller when the box is too small for it */
#define PAGE 4096     /* owner blocks start on their own pages, so owners write only their pages */
#define N_MAX 1000000L
#define S_MAX 500L    /* chaos amplifies round-off: ~1e-10 apart from sequential at 1000 steps */
#define REF_TOL 1e-9  /* parallel vs sequential (relative) */
#define DRIFT_TOL 1e-3 /* |E(end) - E(0)| / initial kinetic energy (E(0) may be near 0) */

/* Problem, set by main() before par_run(). */
static long n;
static long steps;
static int resumable; /* -r: register the step's state and resume from checkpoints */
static double box, rc, rc2, u_rc, g_rc; /* g_rc: -dU/dr at the cutoff */

/* Shared data comes from par_alloc() inside the worker. Positions and forces of molecule m
 * live at base + stride * owner(m) + 3 * (m - lo(owner)): one page-aligned region per owner,
 * so the writes to one owner's block never share a page with another block. */
#define NSUM 8 /* doubles per participant slot of the energy sums (64 bytes) */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-n N] [-s STEPS] [-r] [-T] [-h]\n"
            "  -n N      molecules (8..%ld, default 4000)\n"
            "  -s STEPS  time steps (1..%ld, default 20)\n"
            "  -r        resumable: a replacement restarts from its rank's checkpoint (cdsm\n"
            "            build; CDSM_CKPT_DIR), each step ends at a resume point\n"
            "  -T        small test input (n = 256, 10 steps)\n"
            "  -h        this help\n",
            prog, N_MAX, S_MAX);
}

/* Block partition: the first n % P participants take one extra molecule. */
static long blk_lo(long r, long p)
{
    long q = n / p, x = n % p;
    return r * q + (r < x ? r : x);
}

static long blk_hi(long r, long p)
{
    return blk_lo(r + 1, p);
}

/* A deterministic generator (splitmix64), so every build starts from the same state. */
static uint64_t rng_state;
static double rng_uniform(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* Cells per box side of the fcc lattice: the smallest with 4 side^3 >= n sites. */
static long lattice_side(void)
{
    long side = 1;
    while (4 * side * side * side < n) side++;
    return side;
}

/* Initial state in plain arrays x[3n], v[3n]: an fcc lattice (the dense LJ solid) with the
 * n molecules spread evenly over its sites, the vacancies too, so that no two molecules
 * start closer than the lattice's neighbour distance; random velocities with zero total
 * momentum, scaled to TEMP0. */
static void initial_state(double *x, double *v)
{
    static const double basis[4][3] = {{0, 0, 0}, {0.5, 0.5, 0}, {0.5, 0, 0.5}, {0, 0.5, 0.5}};
    const long side = lattice_side(), sites = 4 * side * side * side;
    const double a = box / (double)side;
    for (long m = 0; m < n; m++) {
        long site = (long)((double)m * (double)sites / (double)n); /* distinct: sites >= n */
        long c = site / 4, b = site % 4;
        long i = c % side, j = (c / side) % side, k = c / (side * side);
        x[3 * m] = (i + basis[b][0] + 0.25) * a;
        x[3 * m + 1] = (j + basis[b][1] + 0.25) * a;
        x[3 * m + 2] = (k + basis[b][2] + 0.25) * a;
    }
    rng_state = 12345;
    double p[3] = {0, 0, 0};
    for (long m = 0; m < 3 * n; m++) {
        v[m] = rng_uniform() - 0.5;
        p[m % 3] += v[m];
    }
    double ke2 = 0;
    for (long m = 0; m < 3 * n; m++) {
        v[m] -= p[m % 3] / (double)n;
        ke2 += v[m] * v[m];
    }
    double scale = sqrt(3.0 * (double)(n - 1) * TEMP0 / ke2);
    for (long m = 0; m < 3 * n; m++) v[m] *= scale;
}

/* Pair forces for molecules i in [lo, hi) against the next n/2 molecules (mod n), added
 * into f[3n] (zeroed by the caller); returns the potential energy of those pairs. When n
 * is even the pair (i, i + n/2) would be met from both ends: only i < n/2 takes it. */
static double pair_forces(const double *x, double *f, long lo, long hi)
{
    const double half = 0.5 * box, inv = 1.0 / box;
    double pe = 0;
    for (long i = lo; i < hi; i++) {
        long cnt = (n % 2 == 0 && i >= n / 2) ? n / 2 - 1 : n / 2;
        double xi = x[3 * i], yi = x[3 * i + 1], zi = x[3 * i + 2];
        double fxi = 0, fyi = 0, fzi = 0;
        long j = i;
        for (long c = 0; c < cnt; c++) {
            if (++j == n) j = 0;
            double dx = xi - x[3 * j], dy = yi - x[3 * j + 1], dz = zi - x[3 * j + 2];
            /* minimum image; positions are kept in [0, box) so one correction suffices */
            if (fabs(dx) > half) dx -= box * nearbyint(dx * inv);
            if (fabs(dy) > half) dy -= box * nearbyint(dy * inv);
            if (fabs(dz) > half) dz -= box * nearbyint(dz * inv);
            double r2 = dx * dx + dy * dy + dz * dz;
            if (r2 >= rc2) continue;
            /* shifted force: U(r) - U(rc) + (r - rc) g_rc, whose force is continuous (zero)
             * at the cutoff, so the energy is conserved much better than with a plain cut */
            double r = sqrt(r2), s2 = 1.0 / r2, s6 = s2 * s2 * s2;
            pe += 4.0 * s6 * (s6 - 1.0) - u_rc + (r - rc) * g_rc;
            double g = 24.0 * s6 * (2.0 * s6 - 1.0) * s2 - g_rc / r; /* -dU/dr / r */
            fxi += g * dx;
            fyi += g * dy;
            fzi += g * dz;
            f[3 * j] -= g * dx;
            f[3 * j + 1] -= g * dy;
            f[3 * j + 2] -= g * dz;
        }
        f[3 * i] += fxi;
        f[3 * i + 1] += fyi;
        f[3 * i + 2] += fzi;
    }
    return pe;
}

static double wrap(double c)
{
    if (c >= box) c -= box * floor(c / box);
    else if (c < 0) c -= box * floor(c / box);
    return c >= box ? 0.0 : c;
}

/* Second half-kick, then (if `drift`) the first half-kick and drift of the next step, for
 * molecules [0, cnt) of block arrays x, v, f. Returns the kinetic energy and momentum at the
 * end of the step (after the second half-kick) in ek[0] and ek[1..3]. */
static void integrate(double *x, double *v, const double *f, long cnt, int drift, double ek[4])
{
    const double h = 0.5 * DT;
    double k = 0, px = 0, py = 0, pz = 0;
    for (long m = 0; m < cnt; m++) {
        double *vm = v + 3 * m;
        const double *fm = f + 3 * m;
        vm[0] += h * fm[0];
        vm[1] += h * fm[1];
        vm[2] += h * fm[2];
        k += vm[0] * vm[0] + vm[1] * vm[1] + vm[2] * vm[2];
        px += vm[0];
        py += vm[1];
        pz += vm[2];
        if (drift) {
            double *xm = x + 3 * m;
            for (int d = 0; d < 3; d++) {
                vm[d] += h * fm[d];
                xm[d] = wrap(xm[d] + DT * vm[d]);
            }
        }
    }
    ek[0] = 0.5 * k;
    ek[1] = px;
    ek[2] = py;
    ek[3] = pz;
}

/* The whole simulation in private memory, one participant: the reference for the check.
 * Returns potential and kinetic energy at the end in *pe, *ke and the initial total in *e0. */
static void simulate_sequential(double *x, double *v, double *f, double *pe, double *ke, double *e0)
{
    double ek[4];
    initial_state(x, v);
    memset(f, 0, 3 * (size_t)n * sizeof *f);
    double u = pair_forces(x, f, 0, n);
    double k0 = 0;
    for (long m = 0; m < 3 * n; m++) k0 += v[m] * v[m];
    *e0 = u + 0.5 * k0;
    for (long s = 0; s < steps; s++) {
        /* first half-kick and drift (the second half-kick is done after the forces) */
        for (long m = 0; m < 3 * n; m++) {
            v[m] += 0.5 * DT * f[m];
            x[m] = wrap(x[m] + DT * v[m]);
        }
        memset(f, 0, 3 * (size_t)n * sizeof *f);
        u = pair_forces(x, f, 0, n);
        integrate(x, v, f, n, 0, ek);
    }
    *pe = u;
    *ke = ek[0];
}

static double reldiff(double a, double b)
{
    double d = fabs(a - b), s = fmax(fabs(a), fabs(b));
    return s > 0 ? d / s : d;
}

static void worker(void)
{
    const int me = par_rank(), np = par_nprocs();
    const long lo = blk_lo(me, np), hi = blk_hi(me, np), cnt = hi - lo;

    /* Collective allocations, in the same order everywhere. An owner region holds the
     * block's 3 cnt doubles and, after them, its stamp (see the force phase). */
    const long maxblk = blk_hi(0, np) - blk_lo(0, np);
    const size_t stamp_at = 3 * (size_t)maxblk;
    const size_t blk_stride = ((stamp_at + 1) * sizeof(double) + PAGE - 1) / PAGE * PAGE / sizeof(double);
    const size_t region = blk_stride * (size_t)np * sizeof(double);
    double *pos_s = par_alloc(region);
    double *frc_s = par_alloc(region);
    double *sums_s = par_alloc((size_t)np * NSUM * sizeof(double));    /* end: U, K, momentum */
    double *energy0_s = par_alloc((size_t)np * NSUM * sizeof(double)); /* start: U + K */
    double *my_x = pos_s + blk_stride * (size_t)me;
    const double *my_fs = frc_s + blk_stride * (size_t)me;

    /* Private: all positions (gathered once per step), this participant's force sums, and
     * the velocities of its own block (nobody else ever needs them, so they are not shared:
     * that saves a twin and a diff per velocity page and step). */
    double *x = malloc(3 * (size_t)n * sizeof *x);
    double *f = malloc(3 * (size_t)n * sizeof *f);
    double *v = malloc(3 * (size_t)n * sizeof *v);
    if (!x || !f || !v) par_fail("water: out of memory (%ld molecules)", n);
    double *my_v = v + 3 * lo, *my_f = f + 3 * lo;

    /* Every participant computes the same initial state and keeps its own block. */
    initial_state(x, v);
    /* With -r, what a resumed rank needs after a step: the next step, its block's
     * velocities, the kinetic sums and the seconds spent (positions and forces are shared;
     * everything else is recomputed in each step). */
    long s = 0;
    double ek[4] = {0, 0, 0, 0}, pe = 0, done = 0.0;
    int resumed = 0;
    if (resumable) {
        par_protect("step", &s, sizeof s);
        par_protect("velocities", my_v, 3 * (size_t)cnt * sizeof *my_v);
        par_protect("kinetic", ek, sizeof ek);
        par_protect("seconds", &done, sizeof done);
        resumed = par_resume();
    }
    if (!resumed) {
        memcpy(my_x, x + 3 * lo, 3 * (size_t)cnt * sizeof *x);
        par_barrier();
    }
    double t0 = par_time() - done;

    while (s <= steps) {
        const double stamp = (double)(s + 1); /* never 0, the value of a fresh block */
        /* Force phase: read every block's positions into private memory, once. */
        for (int r = 0; r < np; r++) {
            long rl = blk_lo(r, np), rh = blk_hi(r, np);
            memcpy(x + 3 * rl, pos_s + blk_stride * (size_t)r, 3 * (size_t)(rh - rl) * sizeof *x);
        }
        memset(f, 0, 3 * (size_t)n * sizeof *f);
        pe = pair_forces(x, f, lo, hi);
        /* Hand the contributions for other blocks to their owners, one lock acquisition
         * per block, starting after our own so that participants arrive at different locks.
         * The first writer of a step finds an old stamp and stores instead of adding: the
         * owner never has to clear its block, so no page of zeros travels, and with two
         * participants the single foreign writer's copy of the block stays valid. A block
         * that received no contribution (the half-shell never reaches it, or all its pairs
         * are beyond the cutoff) is skipped, lock and all. */
        for (int k = 1; k < np; k++) {
            int r = (me + k) % np;
            long rl = blk_lo(r, np), rh = blk_hi(r, np);
            double *dst = frc_s + blk_stride * (size_t)r;
            const double *src = f + 3 * rl;
            size_t len = 3 * (size_t)(rh - rl), a = 0;
            while (a < len && src[a] == 0.0) a++;
            if (a == len) continue;
            par_lock(r);
            if (dst[stamp_at] != stamp) {
                memcpy(dst, src, len * sizeof *dst);
                dst[stamp_at] = stamp;
            } else {
                for (size_t e = a; e < len; e++) dst[e] += src[e];
            }
            par_unlock(r);
        }
        par_barrier();
        /* Integration phase, own block only: our own contributions plus the others'. */
        if (my_fs[stamp_at] == stamp)
            for (long e = 0; e < 3 * cnt; e++) my_f[e] += my_fs[e];
        int drift = s < steps;
        if (s == 0) {
            /* Step 0 has no second half-kick: only the first half of step 1. */
            double k = 0;
            for (long e = 0; e < 3 * cnt; e++) k += my_v[e] * my_v[e];
            energy0_s[NSUM * me] = pe + 0.5 * k;
            for (long e = 0; e < 3 * cnt; e++) {
                my_v[e] += 0.5 * DT * my_f[e];
                my_x[e] = wrap(my_x[e] + DT * my_v[e]);
            }
        } else {
            integrate(my_x, my_v, my_f, cnt, drift, ek);
        }
        s++;
        if (resumable) {
            done = par_time() - t0;
            par_resume_point();
        } else {
            par_barrier();
        }
    }
    /* pe and ek are this participant's shares at the end of the last step. */
    sums_s[NSUM * me] = pe;
    for (int d = 0; d < 4; d++) sums_s[NSUM * me + 1 + d] = ek[d];
    par_barrier();
    double t_par = par_time() - t0;

    int status = PAR_EXIT_VERIFIED;
    if (me == 0) {
        /* Sum the participants' shares in rank order. */
        double u = 0, kin = 0, p[3] = {0, 0, 0}, e0 = 0;
        for (int r = 0; r < np; r++) {
            u += sums_s[NSUM * r];
            kin += sums_s[NSUM * r + 1];
            for (int d = 0; d < 3; d++) p[d] += sums_s[NSUM * r + 2 + d];
            e0 += energy0_s[NSUM * r];
        }
        double etot = u + kin;

        /* Reference: the same simulation privately, sequentially. */
        double *rx = malloc(3 * (size_t)n * sizeof *rx), *rv = malloc(3 * (size_t)n * sizeof *rv);
        double *rf = malloc(3 * (size_t)n * sizeof *rf);
        if (!rx || !rv || !rf) par_fail("water: out of memory for the check");
        double ru, rk, re0;
        simulate_sequential(rx, rv, rf, &ru, &rk, &re0);
        double dx = 0; /* largest position difference, in box units, minimum image */
        for (int r = 0; r < np; r++) {
            long rl = blk_lo(r, np), rh = blk_hi(r, np);
            const double *bx = pos_s + blk_stride * (size_t)r;
            for (long e = 0; e < 3 * (rh - rl); e++) {
                double d = fabs(bx[e] - rx[3 * rl + e]);
                d = fmin(d, box - d);
                dx = fmax(dx, d / box);
            }
        }
        free(rx);
        free(rv);
        free(rf);
        double pnorm = sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]) / sqrt(2.0 * kin * (double)n);
        double drift_rel = fabs(etot - e0) / (1.5 * (double)(n - 1) * TEMP0);
        double d_e = reldiff(etot, ru + rk), d_k = reldiff(kin, rk), d_e0 = reldiff(e0, re0);
        int ok_ref = d_e <= REF_TOL && d_k <= REF_TOL && d_e0 <= REF_TOL && dx <= REF_TOL;
        int ok_cons = drift_rel <= DRIFT_TOL && pnorm <= 1e-10;

        par_report_head("water");
        printf("molecules: %ld, steps: %ld, box %.4f, cutoff %.4f, dt %g\n", n, steps, box, rc, DT);
        par_report_time(t_par);
        printf("energy: start %.10e end %.10e (drift %.2e), kinetic %.10e, |momentum| %.2e\n", e0, etot,
               drift_rel, kin, pnorm);
        printf("vs sequential: energy %.1e, kinetic %.1e, positions %.1e (tolerance %g)\n", d_e, d_k, dx,
               REF_TOL);
        par_report_answer("etot=%.5e ekin=%.5e", etot, kin);
        par_report_result(ok_ref && ok_cons, "%s%s", ok_ref ? "" : "differs from sequential; ",
                          ok_cons ? "" : "energy or momentum not conserved");
        status = ok_ref && ok_cons ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;
    }
    par_share_status(status);
    par_print_stats(stdout);
    free(x);
    free(f);
    free(v);
}

int main(int argc, char **argv)
{
    if (par_init(&argc, &argv)) return PAR_EXIT_FAILURE;
    long n_opt = 4000, s_opt = 20;
    int test = 0, help = 0, bad = 0, opt;
    opterr = 0;
    while (!bad && !help && (opt = getopt(argc, argv, ":n:s:rTh")) != -1) {
        switch (opt) {
        case 'n': bad = par_opt_long("water", opt, optarg, 8, N_MAX, "molecules", &n_opt); break;
        case 's': bad = par_opt_long("water", opt, optarg, 1, S_MAX, "steps", &s_opt); break;
        case 'r': resumable = 1; break;
        case 'T': test = 1; break;
        case 'h': help = 1; break;
        default: bad = par_opt_other("water", opt); break;
        }
    }
    if (!bad && !help) bad = par_opt_rest("water", argc, argv);
    if (bad || help) return par_usage(usage, argv[0], bad);
    if (test) {
        n_opt = 256;
        s_opt = 10;
    }
    n = n_opt;
    steps = s_opt;
    if (par_nprocs() > n) {
        par_opt_error("water", "-n %ld: needs at least one molecule per participant (%d)", n, par_nprocs());
        return par_finish(PAR_EXIT_USAGE);
    }
    if (par_nprocs() > PAR_NLOCKS) {
        par_opt_error("water", "at most %d participants (one lock per block)", PAR_NLOCKS);
        return par_finish(PAR_EXIT_USAGE);
    }
    /* The box holds the whole fcc lattice at density RHO; when n is not 4 k^3 the extra
     * sites stay empty, so the density is a little lower but no pair starts too close. */
    box = (double)lattice_side() * cbrt(4.0 / RHO);
    rc = fmin(RC_MAX, 0.5 * box);
    rc2 = rc * rc;
    double s6 = 1.0 / (rc2 * rc2 * rc2);
    u_rc = 4.0 * s6 * (s6 - 1.0);
    g_rc = 24.0 * s6 * (2.0 * s6 - 1.0) / rc;
    par_run(worker);
    return par_finish(par_exit_status());
}
