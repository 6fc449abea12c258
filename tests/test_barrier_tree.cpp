// The barrier tree (CDSM_BARRIER_FANOUT, DESIGN "Barriers"): above fanout + 1 ranks each
// rank with children combines their arrivals with its own, and passes the release on to
// each child with the records that child's subtree lacks. Run with small fanouts so that
// a few ranks make a tree of depth 2 or 3 (a chain at fanout 1), and with the default
// (central at these sizes), with the consistency checker on (its rounds stay central,
// between tree barriers). Every test fails when a record, a sum, a check value or a
// forward is lost on the way.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "dsm_test_util.h"

using namespace dsmtest;

namespace {

int fanout()
{
    const char *f = getenv("CDSM_BARRIER_FANOUT");
    return f ? atoi(f) : 8;
}

bool tree_on()
{
    return fanout() > 0 && nr() > fanout() + 1;
}

int children(int r)
{
    int k = fanout(), first = k * r + 1;
    if (first >= nr()) return 0;
    return first + k <= nr() ? k : nr() - first;
}

} // namespace

// Every rank writes its own words on pages that every rank writes (several writers per
// page, records of every rank in every barrier), and reads everyone's after the barrier.
TEST(BarrierTree, EveryRanksWritesReachEveryRank)
{
    const size_t per = ps() / sizeof(uint64_t), pages = 6;
    uint64_t *a = alloc_read_by_all<uint64_t>(pages);
    for (int round = 1; round <= 12; round++) {
        for (size_t w = (size_t)me(); w < pages * per; w += (size_t)nr()) a[w] = word_value(me(), round, w);
        barrier();
        for (size_t w = 0; w < pages * per; w++)
            ASSERT_EQ(a[w], word_value((int)(w % (size_t)nr()), round, w)) << "round " << round << " word " << w;
        barrier(); // (no rank writes the next round while another still reads this one)
    }
}

// What a lock carried between two barriers reaches, through the next barrier, ranks that
// never took the lock: the records travel up one subtree and down the others.
TEST(BarrierTree, LockRecordsPassThroughTheTree)
{
    uint64_t *v = alloc_read_by_all<uint64_t>(1);
    for (int round = 0; round < 5; round++) {
        ASSERT_EQ(cdsm_lock_acquire(7), CDSM_OK);
        v[0] += (uint64_t)me() + 1;
        v[1 + me()] = (uint64_t)round;
        ASSERT_EQ(cdsm_lock_release(7), CDSM_OK);
        barrier();
        uint64_t n = (uint64_t)nr();
        ASSERT_EQ(v[0], (uint64_t)(round + 1) * n * (n + 1) / 2) << "round " << round;
        for (int r = 0; r < nr(); r++) ASSERT_EQ(v[1 + r], (uint64_t)round) << "rank " << r;
        barrier();
    }
}

// Counters summed over the tree: each rank adds a different amount.
TEST(BarrierTree, StatsReduceSumsEveryRank)
{
    cdsm_stats_t mine = {}, all;
    mine.lock_acquires = (uint64_t)me() + 1;
    mine.barriers = 1000u * (uint64_t)me();
    ASSERT_EQ(cdsm_stats_reduce(&mine, &all), CDSM_OK);
    uint64_t n = (uint64_t)nr();
    EXPECT_EQ(all.lock_acquires, n * (n + 1) / 2);
    EXPECT_EQ(all.barriers, 1000u * n * (n - 1) / 2);
}

// The tree is used where it should be: a rank with children and a parent passes on the
// release of every barrier but the final ones; the root and the leaves pass on none.
TEST(BarrierTree, InnerRanksPassReleasesOn)
{
    cdsm_stats_t s0 = stats();
    for (int i = 0; i < 10; i++) barrier();
    cdsm_stats_t s1 = stats();
    uint64_t expect = tree_on() && me() != 0 ? 10u * (uint64_t)children(me()) : 0u;
    EXPECT_EQ(s1.bar_forwarded - s0.bar_forwarded, expect) << "fanout " << fanout() << ", " << nr() << " ranks";
}

// With the checker on, every rank asks cdsm_alloc for the same size through a barrier
// that compares them: one leaf asking for another size is seen by every rank. (Last: the
// ranks' heaps differ afterwards.)
TEST(BarrierTree, ZAllocSizeMismatchSeenByEveryRank)
{
    const char *c = getenv("CDSM_CHECK");
    if (!c || strcmp(c, "1") != 0) GTEST_SKIP() << "needs CDSM_CHECK=1";
    void *p = nullptr;
    size_t size = me() == nr() - 1 ? 8192 : 4096;
    EXPECT_EQ(cdsm_alloc(size, &p), CDSM_ERR_MISMATCH);
}
