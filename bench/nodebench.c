/* The node heap's basic operations (DESIGN "The node heap") next to the MPI operations of
 * the same run, on exactly 2 ranks of one host with CDSM_NODE_HEAP=1:
 *
 *   1. MPI ping-pong round trip (8 B) and MPI_Barrier, on a duplicate of MPI_COMM_WORLD;
 *   2. a word the other rank stores, seen here: a one-way hand-over through the heap
 *      (half of a ping-pong of two words; what the page protocol's miss becomes);
 *   3. a lock the other rank released last (the hand-off within a phase of a lock
 *      program: the other rank computes meanwhile, it is not woken);
 *   4. an uncontended acquire + release of a lock this rank released last;
 *   5. a contended lock: both ranks add to one counter under one lock (every acquire);
 *   6. cdsm_barrier().
 *
 * Rank 0 times each operation one at a time and prints median, min, 90th percentile and
 * mean in microseconds, the MPI reference and the ratio; -o FILE writes the rows as CSV.
 * Exit status: 0 ok, 1 a check failed (a lost update, a wrong word), 2 set-up error. */
#include <math.h>
#include <mpi.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cdsm.h>

#include "bench_util.h"

enum { REPS = 20000, LOCK_A = 1, LOCK_B = 2, LOCK_C = 3 };

static int me;
static MPI_Comm bc;

typedef struct row {
    const char *op, *ref_name;
    double med, min, p90, mean, ref;
} row_t;

static row_t rows[8];
static int nrows;

/* Sorts v (microseconds) into a row; ref: the MPI median it is compared with (0: none). */
static void add_row(const char *op, double *v, int n, const char *ref_name, double ref)
{
    summary_t s = summarize(v, n);
    rows[nrows++] = (row_t){op, ref_name, s.med, s.min, s.p90, s.mean, ref};
}

/* Spin until *w == want; a node heap shows the other rank's store within microseconds,
 * the page protocol never (no synchronisation here): 10 s, then exit 2 saying so. */
static void await_word(_Atomic uint64_t *w, uint64_t want)
{
    uint64_t end = now_ns() + 10000000000ull;
    while (atomic_load_explicit(w, memory_order_acquire) != want)
        if (now_ns() > end) {
            fprintf(stderr, "nodebench: rank %d: the other rank's store never arrived: is the node heap on "
                            "(CDSM_NODE_HEAP=1, both ranks on this host)?\n", me);
            exit(2);
        }
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "nodebench: %s: %s (%s)\n", what, cdsm_last_error(), cdsm_status_name(rc));
    exit(2);
}

static void barrier(void)
{
    int rc = cdsm_barrier();
    if (rc) die("cdsm_barrier", rc);
}

static double mpi_pingpong(double *v)
{
    char b[8] = {0};
    for (int i = -100; i < REPS; i++) {
        uint64_t t0 = now_ns();
        if (me == 0) {
            MPI_Send(b, 8, MPI_BYTE, 1, 0, bc);
            MPI_Recv(b, 8, MPI_BYTE, 1, 0, bc, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(b, 8, MPI_BYTE, 0, 0, bc, MPI_STATUS_IGNORE);
            MPI_Send(b, 8, MPI_BYTE, 0, 0, bc);
        }
        if (i >= 0) v[i] = (double)(now_ns() - t0) / 1000;
    }
    add_row("mpi_pingpong_8B", v, REPS, "", 0);
    return rows[nrows - 1].med;
}

static double mpi_barrier(double *v)
{
    for (int i = -100; i < REPS; i++) {
        uint64_t t0 = now_ns();
        MPI_Barrier(bc);
        if (i >= 0) v[i] = (double)(now_ns() - t0) / 1000;
    }
    add_row("mpi_barrier", v, REPS, "", 0);
    return rows[nrows - 1].med;
}

/* Two words: rank 0 stores i into ping, rank 1 waits for it and stores i into pong. The
 * round trip over two (one-way time = half of it). */
static int word_handover(_Atomic uint64_t *w, double *v, double ref)
{
    for (int i = 1; i <= REPS + 100; i++) {
        uint64_t t0 = now_ns();
        if (me == 0) {
            atomic_store_explicit(&w[0], (uint64_t)i, memory_order_release);
            await_word(&w[8], (uint64_t)i);
        } else {
            await_word(&w[0], (uint64_t)i);
            atomic_store_explicit(&w[8], (uint64_t)i, memory_order_release);
        }
        if (i > 100) v[i - 101] = (double)(now_ns() - t0) / 2000;
    }
    add_row("node_word_one_way", v, REPS, "mpi_pingpong_8B / 2", ref / 2);
    return 0;
}

/* Lock A goes back and forth: each rank takes it in turn (a turn word says whose), so
 * every acquire on rank 0 takes the lock rank 1 released last. */
static int lock_handoff(_Atomic uint64_t *w, double *v, double ref)
{
    int bad = 0, rc;
    for (int i = 0; i < 2 * (REPS + 100); i++) {
        if (i % 2 != me) continue;
        await_word(&w[16], (uint64_t)i);
        uint64_t t0 = now_ns();
        if ((rc = cdsm_lock_acquire(LOCK_A))) die("cdsm_lock_acquire", rc);
        double dt = (double)(now_ns() - t0) / 1000;
        bad += w[24] != (uint64_t)i;
        w[24] = (uint64_t)i + 1;
        if ((rc = cdsm_lock_release(LOCK_A))) die("cdsm_lock_release", rc);
        atomic_store_explicit(&w[16], (uint64_t)i + 1, memory_order_release);
        if (me == 0 && i >= 200) v[(i - 200) / 2] = dt;
    }
    if (me == 0) add_row("node_lock_handoff", v, REPS, "mpi_pingpong_8B", ref);
    return bad;
}

static void lock_local(double *v, double ref)
{
    int rc;
    for (int i = -100; i < REPS; i++) {
        uint64_t t0 = now_ns();
        if ((rc = cdsm_lock_acquire(LOCK_B)) || (rc = cdsm_lock_release(LOCK_B))) die("lock B", rc);
        if (i >= 0) v[i] = (double)(now_ns() - t0) / 1000;
    }
    if (me == 0) add_row("node_lock_uncontended", v, REPS, "mpi_pingpong_8B", ref);
}

static int lock_contended(uint64_t *w, double *v, double ref)
{
    int rc;
    for (int i = 0; i < REPS; i++) {
        uint64_t t0 = now_ns();
        if ((rc = cdsm_lock_acquire(LOCK_C))) die("lock C", rc);
        v[i] = (double)(now_ns() - t0) / 1000;
        w[32]++;
        if ((rc = cdsm_lock_release(LOCK_C))) die("lock C", rc);
    }
    barrier();
    if (me == 0) add_row("node_lock_contended", v, REPS, "mpi_pingpong_8B", ref);
    return w[32] != 2u * REPS;
}

static void barriers(double *v, double ref)
{
    for (int i = -100; i < REPS; i++) {
        uint64_t t0 = now_ns();
        barrier();
        if (i >= 0) v[i] = (double)(now_ns() - t0) / 1000;
    }
    if (me == 0) add_row("cdsm_barrier", v, REPS, "mpi_barrier", ref);
}

static void report(const char *csv)
{
    printf("%-24s %9s %9s %9s %9s  %-22s %9s %7s\n", "operation", "med_us", "min_us", "p90_us", "mean_us",
           "reference", "ref_us", "ratio");
    for (int i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        printf("%-24s %9.3f %9.3f %9.3f %9.3f  %-22s", r->op, r->med, r->min, r->p90, r->mean, r->ref_name);
        if (r->ref > 0) printf(" %9.3f %7.2f", r->ref, r->med / r->ref);
        printf("\n");
    }
    FILE *f = csv ? fopen(csv, "w") : NULL;
    if (!f) return;
    fprintf(f, "operation,med_us,min_us,p90_us,mean_us,reference,ref_us,ratio\n");
    for (int i = 0; i < nrows; i++) {
        const row_t *r = &rows[i];
        fprintf(f, "%s,%.4f,%.4f,%.4f,%.4f,%s,%.4f,%.3f\n", r->op, r->med, r->min, r->p90, r->mean, r->ref_name,
                r->ref, r->ref > 0 ? r->med / r->ref : 0.0);
    }
    fclose(f);
    printf("csv: %s\n", csv);
}

int main(int argc, char **argv)
{
    int rc = cdsm_init(&argc, &argv);
    if (rc) die("cdsm_init", rc);
    me = cdsm_rank();
    if (cdsm_nranks() != 2) {
        fprintf(stderr, "nodebench: run it on exactly 2 ranks (mpiexec -n 2), with CDSM_NODE_HEAP=1\n");
        return 2;
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &bc);
    double *v = malloc(REPS * sizeof *v);
    void *p = NULL;
    if (!v || (rc = cdsm_alloc(4096, &p))) die("allocation", rc);
    if (me == 0) memset(p, 0, 4096);
    barrier();
    uint64_t *w = p;
    double pp = mpi_pingpong(v), mb = mpi_barrier(v);
    barrier();
    int bad = word_handover((_Atomic uint64_t *)w, v, pp);
    barrier();
    bad += lock_handoff((_Atomic uint64_t *)w, v, pp);
    barrier();
    lock_local(v, pp);
    barrier();
    bad += lock_contended(w, v, pp);
    barriers(v, mb);
    if (me == 0) report(argc > 2 && !strcmp(argv[1], "-o") ? argv[2] : NULL);
    if (bad) fprintf(stderr, "nodebench: rank %d: %d lost or misordered updates\n", me, bad);
    MPI_Comm_free(&bc);
    rc = cdsm_finalize();
    free(v);
    return bad ? 1 : rc ? 2 : 0;
}
