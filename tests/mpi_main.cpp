// main() for multi-rank GoogleTest binaries run under mpiexec. Every rank runs every
// test; a failed assertion on any rank aborts the whole job at once (so no other rank
// waits forever in a barrier), and the meson test timeout is the last line of defence.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <cdsm.h>

#include "abort_on_failure.h"

int main(int argc, char **argv)
{
    ::testing::InitGoogleTest(&argc, argv);
    int rc = cdsm_init(&argc, &argv);
    if (rc) {
        fprintf(stderr, "cdsm_init: %s: %s\n", cdsm_strerror(rc), cdsm_last_error());
        return 1;
    }
    ::testing::TestEventListeners &ls = ::testing::UnitTest::GetInstance()->listeners();
    if (cdsm_rank() != 0) delete ls.Release(ls.default_result_printer());
    ls.Append(new AbortOnFailure);
    int result = RUN_ALL_TESTS();
#ifdef CDSM_TEST_EXPECT_GC
    // This binary runs with a tiny CDSM_GC_BOUND: collection must have happened.
    cdsm_stats_t s;
    cdsm_stats_get(&s);
    if (s.gc_runs == 0) {
        fprintf(stderr, "[rank %d] expected garbage collections with CDSM_GC_BOUND=%s, saw none\n",
                cdsm_rank(), getenv("CDSM_GC_BOUND"));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (cdsm_rank() == 0) printf("garbage collections on rank 0: %llu\n", (unsigned long long)s.gc_runs);
#endif
    rc = cdsm_finalize();
    if (rc) {
        fprintf(stderr, "cdsm_finalize: %s\n", cdsm_strerror(rc));
        return 1;
    }
    return result;
}
