/* barnes: 3D Barnes-Hut N-body simulation (the irregular application of the suite, after
 * the SPLASH-2 BARNES workload, written from Barnes & Hut, Nature 324, 1986, with the
 * opening criterion of Barnes, J. Comput. Phys. 87, 1990).
 *
 * Bodies start from a Plummer sphere (Aarseth, Henon & Wielen 1974) drawn with a seeded
 * LCG, ordered along a Morton curve so that contiguous blocks of bodies are compact in
 * space. Time integration is kick-drift-kick leapfrog with Plummer softening; s steps take
 * s + 1 force evaluations so that the last velocities are synchronous with the positions.
 *
 * One force evaluation:
 *   1. rank 0 builds the octree (one body per leaf) in private memory, then writes it to
 *      the shared cell array in depth-first order, computing the centres of mass on the
 *      way; the leaves carry a copy of their body's position and mass, so the walk reads
 *      only the tree (no other rank's body pages). The others wait at the barrier.
 *   2. barrier
 *   3. every participant walks the shared tree for each body of its block: irregular reads
 *      all over the tree pages, the interesting part for a DSM.
 *   4. every participant advances its own bodies (owner-only pages).
 *   5. barrier
 * A block is a contiguous range of whole 128-body chunks (so it starts on a page in every
 * body array), sized so that the blocks have equal cost (interactions) in the previous
 * evaluation: contiguous zones of the Morton order, like SPLASH's costzones.
 * Nothing another participant reads is written between the two barriers (step 3 reads the
 * tree, step 4 writes body pages that only rank 0 reads, in step 1), so the program is data
 * race free with two barriers per step.
 *
 * Every body's force is computed by the same code from the same tree in the same order
 * whatever the participant count, so all builds give bit-identical results. Rank 0 checks
 * this by re-running the whole simulation privately and comparing bitwise; as that cannot
 * catch an error common to both runs, it also measures the tree's force error against a
 * direct sum on sample bodies (must be < 0.1 rms) and reports the energy drift. */
#include "par.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_DEFAULT 16384L
#define N_TEST 1024L
#define N_MAX (1L << 24) /* int32 cell/leaf indices with room to spare */
#define S_DEFAULT 4L
#define S_MAX 100000L
#define THETA_DEFAULT 0.5
#define THETA_MAX 1.0
#define DT 0.025   /* time step (N-body units), as in SPLASH-2 BARNES */
#define EPS 0.05   /* Plummer softening length, as in SPLASH-2 BARNES */
#define MAX_DEPTH 60 /* deeper means (nearly) coincident bodies: the tree would not end */
#define SEED 123456789ULL
#define NSAMPLE 64 /* bodies checked against a direct sum */
/* Blocks of bodies start at multiples of this many bodies: 32-byte records, so every
 * participant's block of each body array starts on a 4096-byte page. */
#define BLOCK_ALIGN 128

/* What all participants read (the tree) or what only its owner writes (body records). */
typedef struct {
    double x[3], m;
} body_t; /* 32 bytes: positions (owner-written), also the leaf records of the tree */

typedef struct {
    double v[3], pad; /* pad: 32-byte records keep blocks page-aligned */
} vel_t;

typedef struct {
    double cm[3], mass;
    double rcrit2; /* open the cell when a body is closer to cm than sqrt(rcrit2) */
    int32_t child[8]; /* 0 empty, > 0 cell index, < 0 leaf -(j + 1) */
} cell_t;

typedef struct {
    int32_t child[8]; /* private build tree: 0 empty, > 0 node, < 0 body -(b + 1) */
} bnode_t;

typedef struct {
    double lo[3], hi[3];
} box_t;

/* Options (every participant parses the same argv). */
static long opt_n = N_DEFAULT, opt_s = S_DEFAULT;
static double opt_theta = THETA_DEFAULT;

/* ---- initial conditions ------------------------------------------------------------- */

static uint64_t rng_state;

static double rng_uniform(void) /* [0, 1), 53 bits */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) * 0x1.0p-53;
}

static void rng_direction(double r, double out[3])
{
    double z = 1.0 - 2.0 * rng_uniform();
    double ph = 2.0 * M_PI * rng_uniform();
    double s = sqrt(1.0 - z * z);
    out[0] = r * s * cos(ph);
    out[1] = r * s * sin(ph);
    out[2] = r * z;
}

/* Spread the low 21 bits of v to every third bit. */
static uint64_t spread3(uint64_t v)
{
    v &= 0x1fffff;
    v = (v | v << 32) & 0x1f00000000ffffULL;
    v = (v | v << 16) & 0x1f0000ff0000ffULL;
    v = (v | v << 8) & 0x100f00f00f00f00fULL;
    v = (v | v << 4) & 0x10c30c30c30c30c3ULL;
    v = (v | v << 2) & 0x1249249249249249ULL;
    return v;
}

typedef struct {
    uint64_t key;
    long idx;
} mkey_t;

static int mkey_cmp(const void *a, const void *b)
{
    const mkey_t *p = a, *q = b;
    if (p->key != q->key) return p->key < q->key ? -1 : 1;
    return p->idx < q->idx ? -1 : p->idx > q->idx;
}

/* Plummer sphere in N-body units (G = M = 1, E = -1/4), centre-of-mass frame, sorted
 * along a Morton curve (x the lowest bit, like the octants of the tree). Deterministic. */
static void make_bodies(body_t *b, vel_t *v, long n)
{
    const double scale = 3.0 * M_PI / 16.0; /* Plummer radius in N-body units */
    body_t *tb = malloc((size_t)n * sizeof *tb);
    vel_t *tv = malloc((size_t)n * sizeof *tv);
    mkey_t *key = malloc((size_t)n * sizeof *key);
    if (!tb || !tv || !key) par_fail("barnes: out of memory for %ld initial bodies", n);
    rng_state = SEED;
    double cm[3] = {0, 0, 0}, cv[3] = {0, 0, 0};
    for (long i = 0; i < n; i++) {
        double r;
        do { /* radius from the cumulative mass; the far tail is cut off at 9 scale radii */
            double u = rng_uniform();
            r = u > 0.0 ? 1.0 / sqrt(pow(u, -2.0 / 3.0) - 1.0) : INFINITY;
        } while (!(r < 9.0));
        double q, g;
        do { /* von Neumann rejection for q = v / v_escape, density q^2 (1 - q^2)^3.5 */
            q = rng_uniform();
            g = q * q * pow(1.0 - q * q, 3.5);
        } while (0.1 * rng_uniform() >= g);
        double ve = M_SQRT2 * pow(1.0 + r * r, -0.25);
        rng_direction(r * scale, tb[i].x);
        rng_direction(q * ve / sqrt(scale), tv[i].v);
        tb[i].m = 1.0 / (double)n;
        tv[i].pad = 0.0;
        for (int d = 0; d < 3; d++) {
            cm[d] += tb[i].x[d];
            cv[d] += tv[i].v[d];
        }
    }
    box_t bx = {{INFINITY, INFINITY, INFINITY}, {-INFINITY, -INFINITY, -INFINITY}};
    for (long i = 0; i < n; i++)
        for (int d = 0; d < 3; d++) {
            tb[i].x[d] -= cm[d] / (double)n;
            tv[i].v[d] -= cv[d] / (double)n;
            bx.lo[d] = fmin(bx.lo[d], tb[i].x[d]);
            bx.hi[d] = fmax(bx.hi[d], tb[i].x[d]);
        }
    for (long i = 0; i < n; i++) {
        uint64_t k = 0;
        for (int d = 0; d < 3; d++) {
            double span = bx.hi[d] - bx.lo[d];
            double f = span > 0 ? (tb[i].x[d] - bx.lo[d]) / span : 0.0;
            uint64_t c = (uint64_t)(f * 2097151.0);
            k |= spread3(c) << d;
        }
        key[i].key = k;
        key[i].idx = i;
    }
    qsort(key, (size_t)n, sizeof *key, mkey_cmp);
    for (long i = 0; i < n; i++) {
        b[i] = tb[key[i].idx];
        v[i] = tv[key[i].idx];
    }
    free(key);
    free(tv);
    free(tb);
}

/* ---- tree construction (rank 0) ------------------------------------------------------ */

typedef struct {
    bnode_t *node; /* private build pool */
    long cap;      /* cells available, in the private pool and in the shared array */
    long nnode;
    const body_t *body;
    cell_t *cell; /* output: the shared (or, for the check, private) tree */
    body_t *leaf;
    long ncell, nleaf;
    double theta;
} tree_t;

static int octant(const double x[3], const double c[3])
{
    return (x[0] >= c[0]) | (x[1] >= c[1]) << 1 | (x[2] >= c[2]) << 2;
}

static void child_centre(const double c[3], double half, int oct, double out[3])
{
    for (int d = 0; d < 3; d++) out[d] = c[d] + ((oct >> d & 1) ? 0.5 : -0.5) * half;
}

static long new_node(tree_t *t)
{
    if (t->nnode >= t->cap)
        par_fail("barnes: the octree needs more than %ld cells (the pool holds 2n + 64): bodies too "
                 "clustered", t->cap);
    memset(&t->node[t->nnode], 0, sizeof t->node[0]);
    return t->nnode++;
}

static void insert(tree_t *t, long b, const double root_c[3], double root_half)
{
    const double *x = t->body[b].x;
    long nd = 0;
    double c[3] = {root_c[0], root_c[1], root_c[2]}, half = root_half;
    for (int depth = 0;; depth++) {
        if (depth > MAX_DEPTH)
            par_fail("barnes: bodies %ld and others coincide (tree deeper than %d levels)", b, MAX_DEPTH);
        int oct = octant(x, c);
        int32_t ch = t->node[nd].child[oct];
        if (ch == 0) {
            t->node[nd].child[oct] = (int32_t)-(b + 1);
            return;
        }
        double cc[3];
        child_centre(c, half, oct, cc);
        if (ch < 0) { /* a body sits here: push it one level down into a new cell */
            long other = -(long)ch - 1;
            long nn = new_node(t);
            t->node[nd].child[oct] = (int32_t)nn;
            t->node[nn].child[octant(t->body[other].x, cc)] = ch;
            ch = (int32_t)nn;
        }
        nd = ch;
        memcpy(c, cc, sizeof c);
        half *= 0.5;
    }
}

/* Write node nd of the build tree to the output in depth-first order, children first filled
 * in, and return its index there; computes mass, centre of mass and opening radius. */
static int32_t emit(tree_t *t, long nd, const double c[3], double half)
{
    long me = t->ncell++;
    cell_t out;
    memset(&out, 0, sizeof out);
    double m = 0, mx[3] = {0, 0, 0};
    for (int o = 0; o < 8; o++) {
        int32_t ch = t->node[nd].child[o];
        if (ch == 0) continue;
        const double *x;
        double cm;
        if (ch < 0) {
            long j = t->nleaf++;
            t->leaf[j] = t->body[-(long)ch - 1];
            out.child[o] = (int32_t)-(j + 1);
            x = t->leaf[j].x;
            cm = t->leaf[j].m;
        } else {
            double cc[3];
            child_centre(c, half, o, cc);
            int32_t k = emit(t, ch, cc, 0.5 * half);
            out.child[o] = k;
            x = t->cell[k].cm;
            cm = t->cell[k].mass;
        }
        m += cm;
        for (int d = 0; d < 3; d++) mx[d] += cm * x[d];
    }
    double delta2 = 0;
    for (int d = 0; d < 3; d++) {
        out.cm[d] = mx[d] / m;
        delta2 += (out.cm[d] - c[d]) * (out.cm[d] - c[d]);
    }
    out.mass = m;
    /* Barnes (1990): the centre of mass may sit off the geometric centre, so the critical
     * radius grows by that offset; otherwise a body inside a cell could accept it. */
    double rc = t->theta > 0 ? 2.0 * half / t->theta + sqrt(delta2) : INFINITY;
    out.rcrit2 = rc * rc;
    t->cell[me] = out; /* one store of the whole record into the shared array */
    return (int32_t)me;
}

static void build_tree(tree_t *t, long n)
{
    box_t bx = {{INFINITY, INFINITY, INFINITY}, {-INFINITY, -INFINITY, -INFINITY}};
    for (long i = 0; i < n; i++)
        for (int d = 0; d < 3; d++) {
            bx.lo[d] = fmin(bx.lo[d], t->body[i].x[d]);
            bx.hi[d] = fmax(bx.hi[d], t->body[i].x[d]);
        }
    double c[3], half = 0;
    for (int d = 0; d < 3; d++) {
        c[d] = 0.5 * (bx.lo[d] + bx.hi[d]);
        half = fmax(half, 0.5 * (bx.hi[d] - bx.lo[d]));
    }
    if (!isfinite(half)) par_fail("barnes: a body position is not finite: the simulation blew up");
    half = half * 1.000001 + 1e-12; /* every body strictly inside the root cube */
    t->nnode = 0;
    new_node(t);
    for (long i = 0; i < n; i++) insert(t, i, c, half);
    t->ncell = t->nleaf = 0;
    emit(t, 0, c, half);
}

/* ---- force walk and integration ------------------------------------------------------ */

/* Softened interaction of a body at p with mass m at x: accumulate into a, phi. */
#define INTERACT(x, m)                                                             \
    do {                                                                           \
        double dx_ = (x)[0] - p0, dy_ = (x)[1] - p1, dz_ = (x)[2] - p2;            \
        double rinv_ = 1.0 / sqrt(dx_ * dx_ + dy_ * dy_ + dz_ * dz_ + EPS * EPS); \
        double mr_ = (m) * rinv_, mr3_ = mr_ * rinv_ * rinv_;                      \
        a0 += dx_ * mr3_;                                                          \
        a1 += dy_ * mr3_;                                                          \
        a2 += dz_ * mr3_;                                                          \
        ph -= mr_;                                                                 \
        cnt++;                                                                     \
    } while (0)

/* Accelerations and potentials of bodies [lo, hi) into acc/phi (indexed from lo); returns
 * the number of interactions. The walk is depth-first with an explicit stack: a cell's
 * leaves and accepted children interact at once, opened children are visited later. The
 * order is fixed by the tree alone, so every build sums in the same order. */
static long forces(const cell_t *cell, const body_t *leaf, const body_t *body, long lo, long hi,
                   double (*acc)[3], double *phi)
{
    long cnt = 0;
    int32_t stack[8 * (MAX_DEPTH + 2)];
    for (long i = lo; i < hi; i++) {
        const double p0 = body[i].x[0], p1 = body[i].x[1], p2 = body[i].x[2];
        double a0 = 0, a1 = 0, a2 = 0, ph = 0;
        int sp = 0;
        stack[sp++] = 0;
        while (sp > 0) {
            const cell_t *c = &cell[stack[--sp]];
            for (int o = 0; o < 8; o++) {
                int32_t ch = c->child[o];
                if (ch == 0) continue;
                if (ch < 0) {
                    const body_t *l = &leaf[-(long)ch - 1];
                    /* Positions are distinct (coincident bodies are refused by the build),
                     * so an equal position is the body itself. */
                    if (l->x[0] == p0 && l->x[1] == p1 && l->x[2] == p2) continue;
                    INTERACT(l->x, l->m);
                } else {
                    const cell_t *k = &cell[ch];
                    double dx = k->cm[0] - p0, dy = k->cm[1] - p1, dz = k->cm[2] - p2;
                    if (dx * dx + dy * dy + dz * dz > k->rcrit2)
                        INTERACT(k->cm, k->mass);
                    else
                        stack[sp++] = ch;
                }
            }
        }
        acc[i - lo][0] = a0;
        acc[i - lo][1] = a1;
        acc[i - lo][2] = a2;
        phi[i - lo] = ph;
    }
    return cnt;
}

/* Evaluation k of 0..s: close the previous step's kick, record the energy at the first and
 * last evaluation, then open the next kick and drift. */
static void advance(body_t *body, vel_t *vel, double *e0, double *e1, long lo, long hi,
                    const double (*acc)[3], const double *phi, long k, long s)
{
    const double h = 0.5 * DT;
    for (long i = lo; i < hi; i++) {
        const double *a = acc[i - lo];
        double *v = vel[i].v;
        if (k > 0)
            for (int d = 0; d < 3; d++) v[d] += h * a[d];
        if (k == 0 || k == s) {
            double v2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
            (k == 0 ? e0 : e1)[i] = body[i].m * (0.5 * v2 + 0.5 * phi[i - lo]);
        }
        if (k < s)
            for (int d = 0; d < 3; d++) {
                v[d] += h * a[d];
                body[i].x[d] += DT * v[d];
            }
    }
}

/* ---- the parallel program ------------------------------------------------------------ */

static uint64_t checksum(const body_t *b, const vel_t *v, long n)
{
    uint64_t h = PAR_FNV_INIT;
    for (long i = 0; i < n; i++) {
        h = par_fnv1a(h, b[i].x, sizeof b[i].x);
        h = par_fnv1a(h, v[i].v, sizeof v[i].v);
    }
    return h;
}

static double sum(const double *e, long n) /* in index order: the same in every build */
{
    double s = 0;
    for (long i = 0; i < n; i++) s += e[i];
    return s;
}

static void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p) par_fail("barnes: out of memory (%zu bytes)", size);
    return p;
}

/* Shared control data: one cache line per participant for its counters. */
typedef struct {
    double t_force, t_build;
    long inter, nb_min, nb_max;
    char pad[64 - 2 * sizeof(double) - 3 * sizeof(long)];
} slot_t;

/* Costzones-like partition (Singh et al., SPLASH): participant me gets chunks
 * [*c_lo, *c_hi), contiguous, with about 1/np of the total cost, the cost of a chunk being
 * its interactions in the previous force evaluation (a good predictor: bodies move little
 * per step). Without costs (first evaluation), equal numbers of chunks. Every participant
 * computes all boundaries from the same data, so they agree. */
static void partition(const long *ccost, long nchunk, int np, int me, long *c_lo, long *c_hi)
{
    if (!ccost) {
        *c_lo = (long)me * nchunk / np;
        *c_hi = (long)(me + 1) * nchunk / np;
        return;
    }
    double total = 0;
    for (long c = 0; c < nchunk; c++) total += (double)ccost[c];
    /* Boundary r (1 <= r < np): the chunk edge whose prefix cost is closest to r/np of the
     * total, found by one forward scan, so boundaries never decrease. */
    long c = 0, edge[2] = {0, nchunk};
    double prefix = 0;
    for (int r = 1; r <= me + 1 && r < np; r++) {
        double target = total * r / np;
        while (c < nchunk && fabs(prefix + (double)ccost[c] - target) <= fabs(prefix - target)) {
            prefix += (double)ccost[c];
            c++;
        }
        if (r == me) edge[0] = c;
        if (r == me + 1) edge[1] = c;
    }
    *c_lo = edge[0];
    *c_hi = edge[1];
}

typedef struct {
    body_t *body;
    vel_t *vel;
    double *e0, *e1;
    cell_t *cell;
    body_t *leaf;
    long n, s, cap;
} world_t;

/* The arrays of a world of n bodies and cap cells, from `alloc`: par_alloc for the shared
 * world, xmalloc for rank 0's private re-run (same shapes, so the check compares like with like). */
static world_t world_new(long n, long s, long cap, void *(*alloc)(size_t))
{
    world_t w = {.n = n, .s = s, .cap = cap};
    w.body = alloc((size_t)n * sizeof *w.body);
    w.vel = alloc((size_t)n * sizeof *w.vel);
    w.e0 = alloc((size_t)n * sizeof *w.e0);
    w.e1 = alloc((size_t)n * sizeof *w.e1);
    w.cell = alloc((size_t)cap * sizeof *w.cell);
    w.leaf = alloc((size_t)n * sizeof *w.leaf);
    return w;
}

/* The whole simulation, sequentially, in private memory (rank 0's check); leaves the final
 * state, energies and last accelerations in w/acc. */
static void simulate_private(world_t *w, double (*acc)[3], double *phi, bnode_t *pool, double theta)
{
    make_bodies(w->body, w->vel, w->n);
    tree_t t = {.node = pool, .cap = w->cap, .body = w->body, .cell = w->cell, .leaf = w->leaf, .theta = theta};
    for (long k = 0; k <= w->s; k++) {
        build_tree(&t, w->n);
        forces(w->cell, w->leaf, w->body, 0, w->n, acc, phi);
        advance(w->body, w->vel, w->e0, w->e1, 0, w->n, (const double (*)[3])acc, phi, k, w->s);
    }
}

static int same(const void *a, const void *b, size_t len)
{
    return memcmp(a, b, len) == 0;
}

/* One participant's run: the shared world, the costzones state and its own counters. */
typedef struct {
    int me, np;
    long n, s, cap;
    double theta;
    world_t sh;
    slot_t *slot;
    long nchunk;
    long *ccost;     /* shared: interactions per chunk in the previous evaluation */
    long cap_mine;   /* bodies acc and phi hold; they only grow, across evaluations */
    double (*acc)[3];
    double *phi;
    bnode_t *pool;   /* rank 0: the private build tree (the check reuses it) */
    tree_t tree;
    double t_force, t_build;
    long inter, nb_min, nb_max;
} run_t;

/* The collective allocations (same order everywhere) and rank 0's build pool. Blocks are
 * contiguous runs of whole BLOCK_ALIGN-body chunks (page-aligned starts), balanced by the
 * cost of the previous force evaluation (see partition()). */
static void run_init(run_t *r)
{
    r->me = par_rank();
    r->np = par_nprocs();
    r->n = opt_n;
    r->s = opt_s;
    r->theta = opt_theta;
    r->cap = 2 * r->n + 64;

    r->sh = world_new(r->n, r->s, r->cap, par_alloc);
    r->slot = par_alloc((size_t)r->np * sizeof *r->slot);
    r->nchunk = (r->n + BLOCK_ALIGN - 1) / BLOCK_ALIGN;
    r->ccost = par_alloc((size_t)r->nchunk * sizeof *r->ccost);
    r->pool = r->me == 0 ? xmalloc((size_t)r->cap * sizeof *r->pool) : NULL;
    r->tree = (tree_t){.node = r->pool, .cap = r->cap, .body = r->sh.body, .cell = r->sh.cell,
                       .leaf = r->sh.leaf, .theta = r->theta};
    r->nb_min = r->n;
}

/* Room for `mine` bodies in the private acc and phi. */
static void reserve_bodies(run_t *r, long mine)
{
    if (mine <= r->cap_mine) return;
    free(r->phi);
    free(r->acc);
    r->cap_mine = mine;
    r->acc = xmalloc((size_t)mine * sizeof *r->acc);
    r->phi = xmalloc((size_t)mine * sizeof *r->phi);
}

/* Force evaluation k of 0..s: steps 1 to 5 of the header, two barriers. */
static void evaluate(run_t *r, long k)
{
    const long n = r->n;
    /* Chunk costs were last written before the previous barrier and are next written
     * after the coming one: everyone reads the same values and finds the same zones. */
    long c_lo, c_hi;
    partition(k == 0 ? NULL : r->ccost, r->nchunk, r->np, r->me, &c_lo, &c_hi);
    const long lo = c_lo * BLOCK_ALIGN, hi = c_hi * BLOCK_ALIGN < n ? c_hi * BLOCK_ALIGN : n;
    const long mine = hi > lo ? hi - lo : 0;
    reserve_bodies(r, mine);
    if (mine < r->nb_min) r->nb_min = mine;
    if (mine > r->nb_max) r->nb_max = mine;
    if (r->me == 0) {
        double tb = par_time();
        build_tree(&r->tree, n);
        r->t_build += par_time() - tb;
    }
    par_barrier();
    double tf = par_time();
    for (long c = c_lo; c < c_hi; c++) {
        long b_hi = (c + 1) * BLOCK_ALIGN < n ? (c + 1) * BLOCK_ALIGN : n;
        long cnt = forces(r->sh.cell, r->sh.leaf, r->sh.body, c * BLOCK_ALIGN, b_hi,
                          r->acc + (c * BLOCK_ALIGN - lo), r->phi + (c * BLOCK_ALIGN - lo));
        r->ccost[c] = cnt;
        r->inter += cnt;
    }
    r->t_force += par_time() - tf;
    advance(r->sh.body, r->sh.vel, r->sh.e0, r->sh.e1, lo, hi, (const double (*)[3])r->acc, r->phi, k, r->s);
    par_barrier();
}

/* What rank 0's check found. */
typedef struct {
    double t_check; /* seconds of the private re-run */
    long bad;       /* first body that differs from the re-run, or -1 */
    long ns;        /* bodies sampled against the direct sum */
    double ferr;    /* their rms relative force error */
} check_t;

/* The first body whose record differs (bitwise) between worlds a and b, or -1. */
static long first_difference(const world_t *a, const world_t *b)
{
    for (long i = 0; i < a->n; i++)
        if (!same(&a->body[i], &b->body[i], sizeof b->body[i]) ||
            !same(&a->vel[i], &b->vel[i], sizeof b->vel[i]) || !same(&a->e0[i], &b->e0[i], sizeof b->e0[i]) ||
            !same(&a->e1[i], &b->e1[i], sizeof b->e1[i]))
            return i;
    return -1;
}

/* Physics sanity (common to both runs, so not covered by the bitwise check): the tree's
 * accelerations acc at the final positions of w against a direct sum, on *ns sample
 * bodies; returns the rms relative error. */
static double force_error(const world_t *w, const double (*acc)[3], long *ns)
{
    const long n = w->n;
    double err2 = 0, ref2 = 0;
    *ns = n < NSAMPLE ? n : NSAMPLE;
    for (long j = 0; j < *ns; j++) {
        long i = j * n / *ns;
        double a[3] = {0, 0, 0};
        for (long k = 0; k < n; k++) {
            if (k == i) continue;
            double dx[3], r2 = EPS * EPS;
            for (int d = 0; d < 3; d++) {
                dx[d] = w->body[k].x[d] - w->body[i].x[d];
                r2 += dx[d] * dx[d];
            }
            double rinv = 1.0 / sqrt(r2);
            for (int d = 0; d < 3; d++) a[d] += dx[d] * w->body[k].m * rinv * rinv * rinv;
        }
        for (int d = 0; d < 3; d++) {
            err2 += (acc[i][d] - a[d]) * (acc[i][d] - a[d]);
            ref2 += a[d] * a[d];
        }
    }
    return sqrt(err2 / ref2);
}

/* The check: the same simulation again, sequentially in private memory (rank 0). */
static check_t check_run(const run_t *r)
{
    check_t ck;
    world_t pv = world_new(r->n, r->s, r->cap, xmalloc);
    double(*pacc)[3] = xmalloc((size_t)r->n * sizeof *pacc);
    double *pphi = xmalloc((size_t)r->n * sizeof *pphi);
    const double tc = par_time();
    simulate_private(&pv, pacc, pphi, r->pool, r->theta);
    ck.t_check = par_time() - tc;
    ck.bad = first_difference(&r->sh, &pv);
    ck.ferr = force_error(&pv, (const double (*)[3])pacc, &ck.ns);
    free(pphi);
    free(pacc);
    free(pv.leaf);
    free(pv.cell);
    free(pv.e1);
    free(pv.e0);
    free(pv.vel);
    free(pv.body);
    return ck;
}

/* Rank 0's report, from the participants' slots and the check; returns the exit status. */
static int barnes_report(const run_t *r, double t_par, const check_t *ck)
{
    const long n = r->n, s = r->s;
    const double E0 = sum(r->sh.e0, n), E1 = sum(r->sh.e1, n);
    const double drift = (E1 - E0) / fabs(E0);
    const uint64_t h = checksum(r->sh.body, r->sh.vel, n);

    double fmin_ = INFINITY, fmax_ = 0;
    long imin = -1, imax = 0, itot = 0, bmin = n, bmax = 0;
    for (int p = 0; p < r->np; p++) {
        const slot_t *sl = &r->slot[p];
        fmin_ = fmin(fmin_, sl->t_force);
        fmax_ = fmax(fmax_, sl->t_force);
        if (imin < 0 || sl->inter < imin) imin = sl->inter;
        if (sl->inter > imax) imax = sl->inter;
        itot += sl->inter;
        if (sl->nb_min < bmin) bmin = sl->nb_min;
        if (sl->nb_max > bmax) bmax = sl->nb_max;
    }

    par_report_head("barnes");
    printf("bodies: %ld, steps: %ld, theta %g, dt %g, eps %g, cells %ld (pool %ld)\n", n, s, r->theta, DT, EPS,
           r->tree.ncell, r->cap);
    par_report_time(t_par);
    printf("tree build (rank 0, serial): %.6f s; force walks per participant: min %.6f max %.6f s\n",
           r->t_build, fmin_, fmax_);
    printf("interactions: %ld (%.1f per body per step), per participant min %ld max %ld\n", itot,
           (double)itot / (double)n / (double)(s + 1), imin, imax);
    printf("bodies per participant (costzones, any step): min %ld max %ld\n", bmin, bmax);
    printf("sequential check on rank 0: %.6f s\n", ck->t_check);
    printf("energy: start %.10e end %.10e (drift %.2e)\n", E0, E1, drift);
    printf("force error vs direct sum (%ld bodies, final positions): rms relative %.2e\n", ck->ns, ck->ferr);
    par_report_answer("fnv=%016llx energy=%.6e", (unsigned long long)h, E1);
    int ok = ck->bad < 0 && ck->ferr < 0.1;
    if (ck->bad >= 0)
        par_report_result(ok, "body %ld differs from the sequential recomputation", ck->bad);
    else
        par_report_result(ok, "tree force error %.2e vs direct sum exceeds 0.1", ck->ferr);
    return ok ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;
}

static void worker(void)
{
    run_t r = {0};
    run_init(&r);

    if (r.me == 0) make_bodies(r.sh.body, r.sh.vel, r.n);
    par_barrier();

    par_barrier();
    const double t0 = par_time();
    for (long k = 0; k <= r.s; k++) evaluate(&r, k);
    const double t_par = par_time() - t0;
    r.slot[r.me].t_force = r.t_force;
    r.slot[r.me].t_build = r.t_build;
    r.slot[r.me].inter = r.inter;
    r.slot[r.me].nb_min = r.nb_min;
    r.slot[r.me].nb_max = r.nb_max;
    free(r.phi);
    free(r.acc);
    par_barrier();

    int status = PAR_EXIT_VERIFIED;
    if (r.me == 0) {
        const check_t ck = check_run(&r);
        status = barnes_report(&r, t_par, &ck);
    }
    par_share_status(status);
    free(r.pool);
    par_print_stats(stdout);
}

/* ---- options ------------------------------------------------------------------------- */

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-n BODIES] [-s STEPS] [-t THETA] [-T] [-h]\n"
            "  -n BODIES  number of bodies, 2..%ld (default %ld)\n"
            "  -s STEPS   time steps, 1..%ld (default %ld)\n"
            "  -t THETA   opening criterion, 0..%g (default %g; 0 = direct sum)\n"
            "  -T         small test input (%ld bodies) unless -n is given\n"
            "  -h         this help\n"
            "pthreads build: -p THREADS; cdsm build: run under mpiexec.\n",
            prog, N_MAX, N_DEFAULT, S_MAX, S_DEFAULT, THETA_MAX, THETA_DEFAULT, N_TEST);
}

int main(int argc, char **argv)
{
    if (par_init(&argc, &argv)) return PAR_EXIT_FAILURE;
    int bad = 0, help = 0, test = 0, n_given = 0, opt;
    opterr = 0; /* our own messages, from rank 0 only */
    while (!bad && !help && (opt = getopt(argc, argv, ":n:s:t:Th")) != -1) {
        switch (opt) {
        case 'n':
            bad = par_opt_long("barnes", opt, optarg, 2, N_MAX, "bodies", &opt_n);
            n_given = 1;
            break;
        case 's': bad = par_opt_long("barnes", opt, optarg, 1, S_MAX, "steps", &opt_s); break;
        case 't': bad = par_opt_double("barnes", opt, optarg, 0, THETA_MAX, "theta", &opt_theta); break;
        case 'T': test = 1; break;
        case 'h': help = 1; break;
        default: bad = par_opt_other("barnes", opt); break;
        }
    }
    if (!bad && !help) bad = par_opt_rest("barnes", argc, argv);
    if (bad || help) return par_usage(usage, argv[0], bad);
    if (test && !n_given) opt_n = N_TEST;
    par_run(worker);
    return par_finish(par_exit_status());
}
