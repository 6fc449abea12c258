// Fresh-lock claims (DESIGN, "Fresh-lock claims"): a node-mate takes a never-used lock's
// token from its manager's word in shared memory, with no message; the manager settles
// the word the first time it touches the lock and the queue goes on from the claimant.
// Every rank increments one counter per lock under that lock, all starting together (so
// claims race with each other and with the managers' own first acquires): each counter
// must end at the rank count. Then a value written under a claimed lock must reach the
// manager through the lock alone (an MPI message only says when; no barrier between).
#include <gtest/gtest.h>

#include <cstdint>

#include <mpi.h>

#include "dsm_test_util.h"

using namespace dsmtest;

namespace {

const int FIRST = 101, NLOCKS = 60;

} // namespace

TEST(Claims, RacingFirstAcquiresKeepMutualExclusion)
{
    uint64_t *cnt = alloc<uint64_t>(NLOCKS);
    barrier();
    cdsm_stats_t s0 = stats();
    for (int k = 0; k < NLOCKS; k++) {
        int l = (k + me() * 7) % NLOCKS; // each rank in its own order
        ASSERT_EQ(cdsm_lock_acquire(FIRST + l), CDSM_OK);
        cnt[l] += 1;
        ASSERT_EQ(cdsm_lock_release(FIRST + l), CDSM_OK);
    }
    barrier();
    for (int l = 0; l < NLOCKS; l++) ASSERT_EQ(cnt[l], (uint64_t)nr()) << "lock " << FIRST + l;
    cdsm_stats_t s1 = stats(), all;
    cdsm_stats_t mine = s1;
    mine.lock_claims = s1.lock_claims - s0.lock_claims;
    ASSERT_EQ(cdsm_stats_reduce(&mine, &all), CDSM_OK);
    // Node-mates (every test runs on one host) claim some: the first acquire of a lock
    // whose manager had not reached it yet.
    EXPECT_GT(all.lock_claims, 0u);
    barrier();
}

TEST(Claims, WritesUnderAClaimedLockReachTheManagerThroughTheLock)
{
    const int l = FIRST + NLOCKS + 1;
    const int mgr = l % nr(), claimant = (mgr + 1) % nr();
    uint64_t *v = alloc<uint64_t>(1);
    MPI_Comm order; // (only says "done"; MPI carries no shared-memory writes)
    ASSERT_EQ(MPI_Comm_dup(MPI_COMM_WORLD, &order), MPI_SUCCESS);
    barrier();
    if (me() == claimant) {
        cdsm_stats_t a = stats();
        ASSERT_EQ(cdsm_lock_acquire(l), CDSM_OK);
        EXPECT_EQ(stats().lock_claims - a.lock_claims, 1u) << "the fresh lock was not claimed";
        EXPECT_EQ(stats().msgs_sent - a.msgs_sent, 0u);
        *v = 4242;
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
        MPI_Send(nullptr, 0, MPI_BYTE, mgr, 7, order);
    } else if (me() == mgr) {
        MPI_Recv(nullptr, 0, MPI_BYTE, claimant, 7, order, MPI_STATUS_IGNORE);
        ASSERT_EQ(cdsm_lock_acquire(l), CDSM_OK);
        EXPECT_EQ(*v, 4242u) << "the claimant's write did not come with lock " << l;
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
    }
    barrier();
    MPI_Comm_free(&order);
}
