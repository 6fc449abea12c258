/* cdsm_finalize returns to the program even when MPI_Finalize never does (UCX endpoint
 * close over TCP between nodes hangs there). Run with tests/mpi_finalize_hang.c preloaded,
 * which makes MPI_Finalize block forever: every rank must print the line after
 * cdsm_finalize and end with the program's own status, argv[1] (default 0; under hydra a
 * non-zero status makes the launcher kill the other ranks, so only at one rank). */
#include <stdio.h>
#include <stdlib.h>

#include "cdsm.h"

int main(int argc, char **argv)
{
    int rc = cdsm_init(&argc, &argv);
    if (rc) {
        fprintf(stderr, "finalize_return: cdsm_init: %s\n", cdsm_last_error());
        return 1;
    }
    int rank = cdsm_rank();
    if ((rc = cdsm_barrier())) {
        fprintf(stderr, "finalize_return: cdsm_barrier: %s\n", cdsm_last_error());
        return 1;
    }
    rc = cdsm_finalize();
    printf("finalize_return: rank %d: cdsm_finalize returned %d\n", rank, rc);
    fflush(stdout);
    return rc ? 1 : argc > 1 ? atoi(argv[1]) : 0;
}
