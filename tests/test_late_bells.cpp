// Late doorbells (CDSM_LATE_BELL_US): a lock request to a node-mate rings its doorbell only
// if the node-mate has not taken it itself (at its own next lock call) in time. Every rank
// increments one shared counter under one lock, with lock calls of its own in between (so
// each calls in often); the counter must come out exact. With late bells on, requests go
// out late and nearly all are taken without a doorbell; off (0), none goes out late.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <mpi.h>

#include "dsm_test_util.h"

using namespace dsmtest;

TEST(LateBells, ContendedCounterIsExactAndRequestsRingLate)
{
    const int N = 3000, n = nr();
    uint64_t *c = alloc<uint64_t>(ps() / sizeof(uint64_t));
    barrier();
    cdsm_stats_t s0 = stats();
    int own = 2 + me() * n; // a lock id this rank manages (id mod n == rank): local
    for (int i = 0; i < N; i++) {
        ASSERT_EQ(cdsm_lock_acquire(1), CDSM_OK);
        *c += 1;
        ASSERT_EQ(cdsm_lock_release(1), CDSM_OK);
        ASSERT_EQ(cdsm_lock_acquire(own), CDSM_OK);
        ASSERT_EQ(cdsm_lock_release(own), CDSM_OK);
    }
    barrier();
    EXPECT_EQ(*c, (uint64_t)N * (uint64_t)n);
    cdsm_stats_t s1 = stats();
    uint64_t mine[2] = {s1.bells_late - s0.bells_late, s1.bells_late_rung - s0.bells_late_rung}, all[2];
    MPI_Allreduce(mine, all, 2, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    const char *v = getenv("CDSM_LATE_BELL_US");
    if (n < 2) return;
    if (v && strcmp(v, "0") == 0) {
        EXPECT_EQ(all[0], 0u);
    } else {
        EXPECT_GT(all[0], 0u);
        EXPECT_LE(all[1], all[0]);
    }
    barrier();
}
