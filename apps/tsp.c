/* tsp: travelling salesman by branch and bound, in the style of the TreadMarks TSP benchmark.
 *
 * n cities get deterministic integer coordinates from a seed; distances are rounded
 * Euclidean (integers, so the optimum is exact). Rank 0 fills a shared work queue with every
 * partial tour of a fixed depth starting at city 0 (0, a, b, ... ), sorted by lower bound so
 * that promising prefixes are searched first; participants take prefixes from the queue under
 * one lock and complete them by depth-first branch and bound. Under lazy release consistency
 * a read of shared data without the lock that protects it could see any stale value, so the
 * best length is shared through the queue record itself: whoever takes work publishes its own
 * best length there if it is shorter and takes back the shortest, all under the queue lock it
 * holds anyway; the private copy used for pruning is only ever too large, which costs pruning
 * but never correctness. The best tours themselves are merged into a shared record under a
 * second lock once per participant, at the end (only the final one is ever read).
 *
 * The answer must be the same in every build, whatever the order in which the participants
 * find tours, so ties are broken: among the tours of optimal length the one reported is the
 * smallest, compared as city sequences after normalisation (start at 0, then the direction
 * whose second city is smaller). Pruning therefore drops a branch only when its bound is
 * strictly larger than the best length, so that every optimal tour is reached. */
#include "par.h"

#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXN 32          /* cities; tours are small arrays of unsigned char */
#define N_MIN 4
#define N_MAX 30         /* bit masks of int; far beyond what finishes in minutes here */
#define DEPTH_MAX 6
#define BRUTE_MAX 10     /* the check enumerates all tours up to this many cities */
#define COORD 1000       /* coordinates in [0, COORD) */
#define PAGE 4096

#define LOCK_QUEUE 0
#define LOCK_BEST 1

/* Problem, set by main() before par_run(); identical on every participant. */
static int n, depth;
static unsigned long seed;
static int dist[MAXN][MAXN];
static int minout[MAXN];            /* shortest edge leaving each city: the lower bound */
static unsigned char near[MAXN][MAXN]; /* near[c]: the other cities by distance from c, ties by index */

/* A tour (or a prefix of one) and its length. */
typedef struct {
    int len;
    unsigned char city[MAXN];
} tour_t;

/* Shared records. The queue head and the best tour each sit on a page of their own, away
 * from the read-only queue entries, so that the lock-protected writes of one never
 * invalidate the other or the entries. */
typedef struct {
    int head, count;
    int best_len;        /* shortest tour length published so far; 0: none yet */
} queue_ctl_t;

typedef struct {
    int found;           /* 0 until a tour has been stored */
    tour_t best;
    long nodes;          /* search nodes, summed over participants (report only) */
} best_t;

typedef struct {
    int bound;           /* lower bound of any completion: the queue's sort key */
    tour_t prefix;       /* city[0..depth-1] and the length along them */
} job_t;

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [-n N] [-d DEPTH] [-r SEED] [-T] [-h]\n"
            "  -n N      cities (%d..%d, default 18)\n"
            "  -d DEPTH  cities in each queued prefix, city 0 included (2..%d and < N, default 3)\n"
            "  -r SEED   seed of the city coordinates (integer >= 0, default 1)\n"
            "  -T        small test input (n = 10, depth 3)\n"
            "  -h        this help\n",
            prog, N_MIN, N_MAX, DEPTH_MAX);
}

/* Cities from the seed (splitmix64), distances, and the data the bound and the search use. */
static void make_cities(void)
{
    uint64_t st = seed;
    int x[MAXN], y[MAXN];
    for (int c = 0; c < n; c++) {
        uint64_t z[2];
        for (int k = 0; k < 2; k++) {
            uint64_t v = (st += 0x9e3779b97f4a7c15ULL);
            v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ULL;
            v = (v ^ (v >> 27)) * 0x94d049bb133111ebULL;
            z[k] = v ^ (v >> 31);
        }
        x[c] = (int)(z[0] % COORD);
        y[c] = (int)(z[1] % COORD);
    }
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++) {
            double dx = x[a] - x[b], dy = y[a] - y[b];
            dist[a][b] = (int)lround(sqrt(dx * dx + dy * dy));
        }
    for (int a = 0; a < n; a++) {
        int k = 0;
        for (int b = 0; b < n; b++)
            if (b != a) near[a][k++] = (unsigned char)b;
        /* insertion sort by distance, then index: deterministic order */
        for (int i = 1; i < k; i++)
            for (int j = i; j > 0; j--) {
                int p = near[a][j - 1], q = near[a][j];
                if (dist[a][p] < dist[a][q] || (dist[a][p] == dist[a][q] && p < q)) break;
                near[a][j - 1] = (unsigned char)q;
                near[a][j] = (unsigned char)p;
            }
        minout[a] = dist[a][near[a][0]];
    }
}

/* Normalise a closed tour: starts at 0 (it always does here), and runs in the direction whose
 * second city is the smaller of city[0]'s two neighbours. */
static void normalise(unsigned char *c)
{
    if (c[n - 1] < c[1])
        for (int i = 1, j = n - 1; i < j; i++, j--) {
            unsigned char t = c[i];
            c[i] = c[j];
            c[j] = t;
        }
}

/* Is (len, c) better than (blen, b)? Shorter, or as long and smaller as a sequence.
 * Both tours are normalised. */
static int better(int len, const unsigned char *c, int blen, const unsigned char *b)
{
    if (len != blen) return len < blen;
    return memcmp(c, b, (size_t)n) < 0;
}

/* The depth-first search of one participant, in private memory. */
typedef struct {
    unsigned char path[MAXN];
    int visited;       /* bit mask */
    int rest;          /* sum of minout over unvisited cities */
    long nodes;
    tour_t best;       /* the best tour this participant has found */
    int have_best;
    int limit;         /* prune above this: min(own best, published best); INT_MAX: none */
} search_t;

/* Lower bound of completing a path of `k` cities ending at `last` with length `len`: every
 * city still to be left (the last one and each unvisited one) leaves by at least its
 * shortest edge. */
static int bound_of(int len, int last, int rest)
{
    return len + minout[last] + rest;
}

static void dfs(search_t *s, int k, int len)
{
    s->nodes++;
    int last = s->path[k - 1];
    if (k == n) {
        int total = len + dist[last][0];
        if (total > s->limit) return;
        unsigned char c[MAXN];
        memcpy(c, s->path, (size_t)n);
        normalise(c);
        if (!s->have_best || better(total, c, s->best.len, s->best.city)) {
            s->best.len = total;
            memcpy(s->best.city, c, (size_t)n);
            s->have_best = 1;
            if (total < s->limit) s->limit = total;
        }
        return;
    }
    /* Nearest cities first: good tours early make the bound bite sooner. */
    for (int i = 0; i < n - 1; i++) {
        int c = near[last][i];
        if (c == 0 || (s->visited >> c & 1)) continue;
        int nl = len + dist[last][c];
        int rest = s->rest - minout[c];
        if (bound_of(nl, c, rest) > s->limit) continue;
        s->path[k] = (unsigned char)c;
        s->visited |= 1 << c;
        s->rest = rest;
        dfs(s, k + 1, nl);
        s->visited &= ~(1 << c);
        s->rest += minout[c];
    }
}

/* Merge the private best tour into the shared record, under the best lock. */
static void merge_best(const search_t *s, best_t *shared)
{
    par_lock(LOCK_BEST);
    if (s->have_best &&
        (!shared->found || better(s->best.len, s->best.city, shared->best.len, shared->best.city))) {
        shared->best = s->best;
        shared->found = 1;
    }
    shared->nodes += s->nodes;
    par_unlock(LOCK_BEST);
}

/* All prefixes (0, a, b, ...) of `depth` distinct cities, into jobs (NULL: count only). */
static int make_jobs(job_t *jobs, unsigned char *p, int k, int len, int visited, int rest, int count)
{
    if (k == depth) {
        if (jobs) {
            job_t *j = &jobs[count];
            j->bound = bound_of(len, p[k - 1], rest);
            j->prefix.len = len;
            memcpy(j->prefix.city, p, (size_t)depth);
        }
        return count + 1;
    }
    for (int c = 1; c < n; c++) {
        if (visited >> c & 1) continue;
        p[k] = (unsigned char)c;
        count = make_jobs(jobs, p, k + 1, len + dist[p[k - 1]][c], visited | 1 << c, rest - minout[c], count);
    }
    return count;
}

static int job_cmp(const void *a, const void *b)
{
    const job_t *x = a, *y = b;
    if (x->bound != y->bound) return x->bound < y->bound ? -1 : 1;
    return memcmp(x->prefix.city, y->prefix.city, (size_t)depth); /* total order: deterministic */
}

static int all_rest(void)
{
    int r = 0;
    for (int c = 1; c < n; c++) r += minout[c];
    return r;
}

/* Brute force for the check: every permutation of cities 1..n-1 (Heap's algorithm), the
 * best under the same order as the search. */
static void brute_force(tour_t *out)
{
    unsigned char a[MAXN], c[MAXN];
    int idx[MAXN] = {0};
    for (int i = 0; i < n; i++) a[i] = (unsigned char)i;
    out->len = -1;
    int m = n - 1; /* permute a[1..n-1] */
    for (int i = 0;;) {
        int len = 0;
        for (int k = 0; k < n; k++) len += dist[a[k]][a[(k + 1) % n]];
        memcpy(c, a, (size_t)n);
        normalise(c);
        if (out->len < 0 || better(len, c, out->len, out->city)) {
            out->len = len;
            memcpy(out->city, c, (size_t)n);
        }
        /* next permutation of a[1..m] */
        while (i < m && idx[i] >= i) idx[i++] = 0;
        if (i >= m) break;
        int sw = (i % 2 == 0) ? 0 : idx[i];
        unsigned char t = a[1 + sw];
        a[1 + sw] = a[1 + i];
        a[1 + i] = t;
        idx[i]++;
        i = 0;
    }
}

static void tour_string(char *buf, size_t size, const unsigned char *c)
{
    size_t used = 0;
    for (int i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? "-%d" : "%d", c[i]);
}

/* Start the search of a queued prefix: its path, visited set and remaining bound. */
static void start_job(search_t *s, const job_t *job)
{
    memcpy(s->path, job->prefix.city, (size_t)depth);
    s->visited = 0;
    s->rest = all_rest();
    for (int k = 0; k < depth; k++) {
        s->visited |= 1 << s->path[k];
        if (k) s->rest -= minout[s->path[k]];
    }
}

/* Take prefixes from the queue until it is empty and search each one not pruned as a
 * whole. Each take also publishes our best length and refreshes the private limit, under
 * the queue lock. */
static void search_queue(search_t *s, queue_ctl_t *queue, const job_t *jobs)
{
    for (;;) {
        par_lock(LOCK_QUEUE);
        int j = queue->head < queue->count ? queue->head++ : -1;
        if (s->have_best && (queue->best_len == 0 || s->best.len < queue->best_len)) queue->best_len = s->best.len;
        if (queue->best_len != 0 && queue->best_len < s->limit) s->limit = queue->best_len;
        par_unlock(LOCK_QUEUE);
        if (j < 0) break;
        const job_t *job = &jobs[j];
        if (job->bound > s->limit) continue; /* the whole prefix is pruned */
        start_job(s, job);
        dfs(s, depth, job->prefix.len);
    }
}

/* Check the tour found: brute force for small n; otherwise a permutation of the stated
 * length. Returns 1 if good; *why says what is wrong, *method how it was checked. */
static int check_tour(const tour_t *got, int found, const char **why, const char **method)
{
    int ok = found;
    *why = ok ? "" : "no tour found";
    int seen = 0, len = 0;
    for (int i = 0; ok && i < n; i++) {
        if (got->city[i] >= n || (seen >> got->city[i] & 1)) {
            ok = 0;
            *why = "not a permutation";
        } else {
            seen |= 1 << got->city[i];
            len += dist[got->city[i]][got->city[(i + 1) % n]];
        }
    }
    if (ok && (got->city[0] != 0 || got->city[1] > got->city[n - 1])) ok = 0, *why = "not normalised";
    if (ok && len != got->len) ok = 0, *why = "length does not match the tour";
    *method = "tour is a permutation of the stated length";
    if (ok && n <= BRUTE_MAX) {
        tour_t ref;
        brute_force(&ref);
        *method = "brute force over all tours";
        if (ref.len != got->len || memcmp(ref.city, got->city, (size_t)n)) ok = 0, *why = "brute force differs";
    }
    return ok;
}

/* Rank 0's check and report; returns the exit status. */
static int tsp_report(const best_t *best, int njobs, double t_par)
{
    tour_t got = best->best;
    char path[4 * MAXN + 8];
    tour_string(path, sizeof path, got.city);
    const char *why, *method;
    const int ok = check_tour(&got, best->found, &why, &method);

    par_report_head("tsp");
    printf("cities: %d, seed %lu, prefix depth %d, jobs %d, search nodes %ld\n", n, seed, depth, njobs,
           best->nodes);
    par_report_time(t_par);
    printf("check: %s\n", method);
    par_report_answer("length=%d tour=%s", got.len, path);
    par_report_result(ok, "%s", why);
    return ok ? PAR_EXIT_VERIFIED : PAR_EXIT_WRONG;
}

static void worker(void)
{
    const int me = par_rank();
    unsigned char p[MAXN] = {0};
    const int njobs = make_jobs(NULL, p, 1, 0, 1, all_rest(), 0);

    /* Collective allocations, in the same order everywhere. */
    job_t *jobs = par_alloc((size_t)njobs * sizeof *jobs);
    queue_ctl_t *queue = par_alloc(PAGE);
    best_t *best = par_alloc(PAGE);

    /* Rank 0 fills the queue; everyone else reads it after the barrier. */
    if (me == 0) {
        make_jobs(jobs, p, 1, 0, 1, all_rest(), 0);
        qsort(jobs, (size_t)njobs, sizeof *jobs, job_cmp);
        queue->head = 0;
        queue->count = njobs;
    }
    par_barrier();
    double t0 = par_time();

    search_t s;
    memset(&s, 0, sizeof s);
    s.limit = INT_MAX;
    search_queue(&s, queue, jobs);
    merge_best(&s, best);
    par_barrier();
    double t_par = par_time() - t0;

    int status = PAR_EXIT_VERIFIED;
    if (me == 0) status = tsp_report(best, njobs, t_par);
    par_share_status(status);
    par_print_stats(stdout);
}

int main(int argc, char **argv)
{
    if (par_init(&argc, &argv)) return PAR_EXIT_FAILURE;
    long n_opt = 18, d_opt = 3, r_opt = 1;
    int test = 0, help = 0, bad = 0, opt;
    opterr = 0;
    while (!bad && !help && (opt = getopt(argc, argv, ":n:d:r:Th")) != -1) {
        switch (opt) {
        case 'n': bad = par_opt_long("tsp", opt, optarg, N_MIN, N_MAX, "cities", &n_opt); break;
        case 'd': bad = par_opt_long("tsp", opt, optarg, 2, DEPTH_MAX, "depth", &d_opt); break;
        case 'r': bad = par_opt_long("tsp", opt, optarg, 0, LONG_MAX, "seed", &r_opt); break;
        case 'T': test = 1; break;
        case 'h': help = 1; break;
        default: bad = par_opt_other("tsp", opt); break;
        }
    }
    if (!bad && !help) bad = par_opt_rest("tsp", argc, argv);
    if (!bad && !help && !test && d_opt >= n_opt)
        bad = par_opt_error("tsp", "-d %ld: depth must be smaller than the number of cities (%ld)", d_opt, n_opt);
    if (bad || help) return par_usage(usage, argv[0], bad);
    if (test) {
        n_opt = 10;
        d_opt = 3;
    }
    n = (int)n_opt;
    depth = (int)d_opt;
    seed = (unsigned long)r_opt;
    make_cities();
    par_run(worker);
    return par_finish(par_exit_status());
}
