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

/* One participant's run. With -r, s, ek and done (and the block's velocities) are
 * registered with par_protect(), so they live here, for the whole worker. */
typedef struct {
    int me, np;
    long lo, hi, cnt;             /* own block of molecules */
    size_t stamp_at, blk_stride;  /* an owner region: the block's 3 cnt doubles, then its stamp */
    double *pos_s, *frc_s;        /* shared: positions and forces, a region per owner */
    double *sums_s, *energy0_s;   /* shared: end: U, K, momentum; start: U + K */
    double *my_x;                 /* own region of pos_s */
    const double *my_fs;          /* own region of frc_s */
    double *x, *f, *v;            /* private: all positions, own force sums, velocities */
    double *my_v, *my_f;          /* own block of v and f */
    long s;                       /* the next step */
    double ek[4], pe, done;       /* own kinetic sums and potential share, seconds spent */
} water_t;

/* This participant's block, the collective allocations (in the same order everywhere) and
 * the private arrays. */
static void water_setup(water_t *w)
{
    w->me = par_rank();
    w->np = par_nprocs();
    w->lo = blk_lo(w->me, w->np);
    w->hi = blk_hi(w->me, w->np);
    w->cnt = w->hi - w->lo;

    /* An owner region holds the block's 3 cnt doubles and, after them, its stamp (see
     * the force phase). */
    const long maxblk = blk_hi(0, w->np) - blk_lo(0, w->np);
    w->stamp_at = 3 * (size_t)maxblk;
    w->blk_stride = ((w->stamp_at + 1) * sizeof(double) + PAGE - 1) / PAGE * PAGE / sizeof(double);
    const size_t region = w->blk_stride * (size_t)w->np * sizeof(double);
    w->pos_s = par_alloc(region);
    w->frc_s = par_alloc(region);
    w->sums_s = par_alloc((size_t)w->np * NSUM * sizeof(double));
    w->energy0_s = par_alloc((size_t)w->np * NSUM * sizeof(double));
    w->my_x = w->pos_s + w->blk_stride * (size_t)w->me;
    w->my_fs = w->frc_s + w->blk_stride * (size_t)w->me;

    /* Private: all positions (gathered once per step), this participant's force sums, and
     * the velocities of its own block (nobody else ever needs them, so they are not shared:
     * that saves a twin and a diff per velocity page and step). */
    w->x = malloc(3 * (size_t)n * sizeof *w->x);
    w->f = malloc(3 * (size_t)n * sizeof *w->f);
    w->v = malloc(3 * (size_t)n * sizeof *w->v);
    if (!w->x || !w->f || !w->v) par_fail("water: out of memory (%ld molecules)", n);
    w->my_v = w->v + 3 * w->lo;
    w->my_f = w->f + 3 * w->lo;
}

/* Every participant computes the same initial state and keeps its own block. With -r,
 * what a resumed rank needs after a step: the next step, its block's velocities, the
 * kinetic sums and the seconds spent (positions and forces are shared; everything else is
 * recomputed in each step). */
static void water_start(water_t *w)
{
    initial_state(w->x, w->v);
    int resumed = 0;
    if (resumable) {
        par_protect("step", &w->s, sizeof w->s);
        par_protect("velocities", w->my_v, 3 * (size_t)w->cnt * sizeof *w->my_v);
        par_protect("kinetic", w->ek, sizeof w->ek);
        par_protect("seconds", &w->done, sizeof w->done);
        resumed = par_resume();
    }
    if (!resumed) {
        memcpy(w->my_x, w->x + 3 * w->lo, 3 * (size_t)w->cnt * sizeof *w->x);
        par_barrier();
    }
}

/* Force phase, first part: read every block's positions into private memory, once. */
static void gather_positions(water_t *w)
{
    for (int r = 0; r < w->np; r++) {
        long rl = blk_lo(r, w->np), rh = blk_hi(r, w->np);
        memcpy(w->x + 3 * rl, w->pos_s + w->blk_stride * (size_t)r, 3 * (size_t)(rh - rl) * sizeof *w->x);
    }
}

/* Hand the contributions for other blocks to their owners, one lock acquisition per
 * block, starting after our own so that participants arrive at different locks. The first
 * writer of a step finds an old stamp and stores instead of adding: the owner never has to
 * clear its block, so no page of zeros travels, and with two participants the single
 * foreign writer's copy of the block stays valid. A block that received no contribution
 * (the half-shell never reaches it, or all its pairs are beyond the cutoff) is skipped,
 * lock and all. */
static void hand_forces(water_t *w, double stamp)
{
    for (int k = 1; k < w->np; k++) {
        int r = (w->me + k) % w->np;
        long rl = blk_lo(r, w->np), rh = blk_hi(r, w->np);
        double *dst = w->frc_s + w->blk_stride * (size_t)r;
        const double *src = w->f + 3 * rl;
        size_t len = 3 * (size_t)(rh - rl), a = 0;
        while (a < len && src[a] == 0.0) a++;
        if (a == len) continue;
        par_lock(r);
        if (dst[w->stamp_at] != stamp) {
            memcpy(dst, src, len * sizeof *dst);
            dst[w->stamp_at] = stamp;
        } else {
            for (size_t e = a; e < len; e++) dst[e] += src[e];
        }
        par_unlock(r);
    }
}

/* Integration phase, own block only: our own contributions plus the others'. */
static void integrate_block(water_t *w, double stamp)
{
    const long cnt = w->cnt;
    if (w->my_fs[w->stamp_at] == stamp)
        for (long e = 0; e < 3 * cnt; e++) w->my_f[e] += w->my_fs[e];
    int drift = w->s < steps;
    if (w->s == 0) {
        /* Step 0 has no second half-kick: only the first half of step 1. */
        double k = 0;
        for (long e = 0; e < 3 * cnt; e++) k += w->my_v[e] * w->my_v[e];
        w->energy0_s[NSUM * w->me] = w->pe + 0.5 * k;
        for (long e = 0; e < 3 * cnt; e++) {
            w->my_v[e] += 0.5 * DT * w->my_f[e];
            w->my_x[e] = wrap(w->my_x[e] + DT * w->my_v[e]);
        }
    } else {
        integrate(w->my_x, w->my_v, w->my_f, cnt, drift, w->ek);
    }
}

/* The steps from w->s on, each a force phase, a barrier, and the integration phase,
 * ended by a resume point under -r (which synchronises like a barrier), else a barrier.
 * Returns the start time of the parallel part. */
static double water_steps(water_t *w)
{
    double t0 = par_time() - w->done;
    while (w->s <= steps) {
        const double stamp = (double)(w->s + 1); /* never 0, the value of a fresh block */
        gather_positions(w);
        memset(w->f, 0, 3 * (size_t)n * sizeof *w->f);
        w->pe = pair_forces(w->x, w->f, w->lo, w->hi);
        hand_forces(w, stamp);
        par_barrier();
        integrate_block(w, stamp);
        w->s++;
        if (resumable) {
            w->done = par_time() - t0;
            par_resume_point();
        } else {
            par_barrier();
        }
    }
    return t0;
}

/* The same simulation privately, sequentially (rank 0's reference): its final potential
 * and kinetic energy and initial total into *ru, *rk, *re0; returns the largest position
 * difference from the shared run, in box units, minimum image. */
static double reference_run(const water_t *w, double *ru, double *rk, double *re0)
{
    double *rx = malloc(3 * (size_t)n * sizeof *rx), *rv = malloc(3 * (size_t)n * sizeof *rv);
    double *rf = malloc(3 * (size_t)n * sizeof *rf);
    if (!rx || !rv || !rf) par_fail("water: out of memory for the check");
    simulate_sequential(rx, rv, rf, ru, rk, re0);
    double dx = 0;
    for (int r = 0; r < w->np; r++) {
        long rl = blk_lo(r, w->np), rh = blk_hi(r, w->np);
        const double *bx = w->pos_s + w->blk_stride * (size_t)r;
        for (long e = 0; e < 3 * (rh - rl); e++) {
            double d = fabs(bx[e] - rx[3 * rl + e]);
            d = fmin(d, box - d);
            dx = fmax(dx, d / box);
        }
    }
    free(rx);
    free(rv);
    free(rf);
    return dx;
}

/* Rank 0's check and report; returns the exit status. */
static int water_check(const water_t *w, double t_par)
{
    /* Sum the participants' shares in rank order. */
    double u = 0, kin = 0, p[3] = {0, 0, 0}, e0 = 0;
    for (int r = 0; r < w->np; r++) {
        u += w->sums_s[NSUM * r];
        kin += w->sums_s[NSUM * r + 1];
        for (int d = 0; d < 3; d++) p[d] += w->sums_s[NSUM * r + 2 + d];
        e0 += w->energy0_s[NSUM * r];
    }
    double etot = u + kin;

    double ru, rk, re0;
    double dx = reference_run(w, &ru, &rk, &re0);
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
    return ok_ref && ok_cons ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;
}

static void worker(void)
{
    water_t w = {0};
    water_setup(&w);
    water_start(&w);
    const double t0 = water_steps(&w);
    /* pe and ek are this participant's shares at the end of the last step. */
    w.sums_s[NSUM * w.me] = w.pe;
    for (int d = 0; d < 4; d++) w.sums_s[NSUM * w.me + 1 + d] = w.ek[d];
    par_barrier();
    double t_par = par_time() - t0;

    int status = PAR_EXIT_VERIFIED;
    if (w.me == 0) status = water_check(&w, t_par);
    par_share_status(status);
    par_print_stats(stdout);
    free(w.x);
    free(w.f);
    free(w.v);
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
