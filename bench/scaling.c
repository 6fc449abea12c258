/* Start-up and barrier scaling: run at P ranks (any P), rank 0 prints one result line.
 *
 *   scaling [REPS [MPI_REPS]]   cdsm barriers timed (500), MPI barriers timed (REPS)
 *
 *   init_ms        wall time of cdsm_init() (the slowest rank), from just before it
 *   mpi_barrier_us median MPI_Barrier on a duplicate of MPI_COMM_WORLD made here
 *   barrier_us     median cdsm_barrier() (empty intervals), and its 10th/90th percentiles
 *   release_bytes  bytes rank 0 (the barrier manager, the tree's root) sends per barrier,
 *   arrival_bytes  bytes rank P-1 sends per barrier: what grows with the rank count, and
 *   busiest_bytes  bytes sent and received per barrier by the rank that moves the most
 *
 * Every rank does the same; a barrier is timed on rank 0 one at a time. Exit status 0, or
 * 2 when the library or MPI fails (the error is printed). */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cdsm.h>

#include "bench_util.h"


static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

static int fail(const char *what)
{
    fprintf(stderr, "scaling: %s: %s\n", what, cdsm_last_error());
    return 2;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 500, mreps = argc > 2 ? atoi(argv[2]) : reps;
    if (reps < 10) reps = 10;
    if (mreps < 10) mreps = 10;
    if (mreps > reps) mreps = reps;
    uint64_t t0 = now_ns();
    if (cdsm_init(&argc, &argv) != CDSM_OK) return fail("cdsm_init");
    double init_ms = (double)(now_ns() - t0) / 1e6, init_max = 0;
    int me = cdsm_rank(), n = cdsm_nranks();
    MPI_Comm bc;
    MPI_Comm_dup(MPI_COMM_WORLD, &bc);
    MPI_Reduce(&init_ms, &init_max, 1, MPI_DOUBLE, MPI_MAX, 0, bc);
    double *v = malloc((size_t)reps * sizeof *v);
    if (!v) return 2;
    for (int i = -5; i < mreps; i++) {
        uint64_t a = now_ns();
        MPI_Barrier(bc);
        if (i >= 0) v[i] = (double)(now_ns() - a) / 1e3;
    }
    double mpi_us = pct(v, mreps, 0.5);
    for (int i = 0; i < 20; i++)
        if (cdsm_barrier() != CDSM_OK) return fail("cdsm_barrier");
    cdsm_stats_t s0, s1;
    cdsm_stats_get(&s0);
    for (int i = 0; i < reps; i++) {
        uint64_t a = now_ns();
        if (cdsm_barrier() != CDSM_OK) return fail("cdsm_barrier");
        v[i] = (double)(now_ns() - a) / 1e3;
    }
    cdsm_stats_get(&s1);
    double sent = (double)(s1.bytes_sent - s0.bytes_sent) / reps, last_sent = sent;
    double moved = (double)(s1.bytes_sent - s0.bytes_sent + s1.bytes_recv - s0.bytes_recv) / reps, busiest = moved;
    if (n > 1) {
        if (me == n - 1) MPI_Send(&sent, 1, MPI_DOUBLE, 0, 7, bc);
        if (me == 0) MPI_Recv(&last_sent, 1, MPI_DOUBLE, n - 1, 7, bc, MPI_STATUS_IGNORE);
        MPI_Reduce(&moved, &busiest, 1, MPI_DOUBLE, MPI_MAX, 0, bc);
    }
    if (me == 0) {
        double p10 = pct(v, reps, 0.1), p50 = pct(v, reps, 0.5), p90 = pct(v, reps, 0.9);
        printf("ranks=%d init_ms=%.1f mpi_barrier_us=%.2f barrier_us=%.2f barrier_p10_us=%.2f barrier_p90_us=%.2f "
               "release_bytes=%.0f arrival_bytes=%.0f busiest_bytes=%.0f\n",
               n, init_max, mpi_us, p50, p10, p90, sent, last_sent, busiest);
    }
    free(v);
    MPI_Comm_free(&bc);
    return cdsm_finalize() == CDSM_OK ? 0 : fail("cdsm_finalize");
}
