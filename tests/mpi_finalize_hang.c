/* Preloaded by the finalize_returns test: an MPI_Finalize that never returns, as UCX's
 * endpoint close over TCP sometimes does between nodes. */
#include <unistd.h>

int MPI_Finalize(void);

int MPI_Finalize(void)
{
    for (;;) pause();
}
