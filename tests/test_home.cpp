// Page ownership by home (runs with spares: CDSM_SPARES=1 here, the spare never needed),
// with the consistency checker: each page belongs to its home (the rank whose block of a
// collective allocation holds it) and costs nothing there until another rank reads it;
// the serve converts it, and the home keeps its base copy for a replay of any reader.
// Kills of homes and readers are in the Slurm suite (every slurm_recover_* test runs in
// this mode). No test frees its pages: each wants fresh ones.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>

#include <cdsm.h>

#include "dsm_test_util.h"

namespace {

using namespace dsmtest;

size_t words()
{
    return ps() / sizeof(uint64_t);
}

} // namespace

TEST(Home, HomeOwnershipIsOnForThisRun)
{
    // A page of this rank's block is its own at the first touch; a page of the next
    // rank's block comes from that rank, whole, and is not owned here.
    ASSERT_GT(nr(), 1);
    ASSERT_NE(getenv("CDSM_SPARES"), nullptr);
    uint64_t *a = alloc<uint64_t>(words() * (size_t)nr());
    cdsm_stats_t s0 = stats();
    a[words() * (size_t)me()] = 1;
    cdsm_stats_t s1 = stats();
    EXPECT_EQ(s1.pages_owned, s0.pages_owned + 1);
    barrier();
    const int nx = (me() + 1) % nr();
    EXPECT_EQ(a[words() * (size_t)nx], 1u);
    cdsm_stats_t s2 = stats();
    EXPECT_EQ(s2.pages_owned, s1.pages_owned);
    EXPECT_EQ(s2.pages_fetched, s1.pages_fetched + 1);
    barrier();
    // Our page was read by the rank before us: converted, and its base kept here.
    cdsm_stats_t s3 = stats();
    EXPECT_EQ(s3.pages_unowned, s0.pages_unowned + 1);
    EXPECT_GE(s3.conv_base_bytes, s0.conv_base_bytes + ps());
}

// Pages only their home uses cost nothing: no write fault, twin, diff, notice or interval.
TEST(Home, PagesTheirHomeAloneUsesCostNothing)
{
    pages_their_owner_alone_uses_cost_nothing();
}

// Written by its home alone for many barriers, then read by another rank: the reader gets
// the latest values; the conversion is listed in the home's next interval even if the
// home never writes the page again there, and later writes reach the reader as diffs.
TEST(Home, ReadLongAfterItWasWrittenThenTracked)
{
    uint64_t *pg = alloc<uint64_t>(words() * (size_t)nr());
    uint64_t *mine = pg + words() * (size_t)me();
    const int nx = (me() + 1) % nr();
    const uint64_t *next = pg + words() * (size_t)nx;
    for (int it = 0; it < 10; it++) {
        for (size_t i = 0; i < words(); i++) mine[i] = (uint64_t)me() * 100000 + (uint64_t)it * 1000 + i;
        barrier();
    }
    cdsm_stats_t s0 = stats();
    for (size_t i = 0; i < words(); i++) ASSERT_EQ(next[i], (uint64_t)nx * 100000 + 9000 + i) << "word " << i;
    barrier();
    EXPECT_GE(stats().intervals, s0.intervals + 1) << "the conversion is listed";
    for (int it = 10; it < 14; it++) {
        for (size_t i = 0; i < words(); i += 7) mine[i] = (uint64_t)me() * 100000 + (uint64_t)it * 1000 + i;
        barrier();
        for (size_t i = 0; i < words(); i += 7) ASSERT_EQ(next[i], (uint64_t)nx * 100000 + (uint64_t)it * 1000 + i);
        barrier();
    }
    EXPECT_GT(stats().write_faults, s0.write_faults);
}

// A page first written by a rank that is not its home: the home serves its zero copy and
// tracks it from then on, and reads the writer's values after the barrier.
TEST(Home, FirstWriterIsNotTheHome)
{
    uint64_t *a = alloc<uint64_t>(words() * (size_t)nr());
    const int nx = (me() + 1) % nr();
    uint64_t *theirs = a + words() * (size_t)nx; // the next rank is its home
    for (size_t i = me() % 2; i < words(); i += 2) theirs[i] = (uint64_t)me() << 32 | i;
    barrier();
    const int pv = (me() + nr() - 1) % nr();
    const uint64_t *mine = a + words() * (size_t)me(); // written by the rank before us
    for (size_t i = pv % 2; i < words(); i += 2) ASSERT_EQ(mine[i], (uint64_t)pv << 32 | i) << "word " << i;
    barrier();
}

// The home converts a page while it waits for a lock, and the grant that ends the wait
// brings the reader's writes to that page: the home's copy takes them, and the next
// rank sees both. (Whether the read comes during the wait depends on timing; every
// order must give the same values.)
TEST(Home, ConvertedWhileTheHomeWaitsForALock)
{
    for (int round = 0; round < 4; round++) {
        uint64_t *a = alloc<uint64_t>(words() * (size_t)nr());
        uint64_t *home0 = a; // rank 0's page
        if (me() == 0) {
            for (size_t i = 0; i < words(); i++) home0[i] = i;
        }
        if (me() == 1) {
            ASSERT_EQ(cdsm_lock_acquire(3), CDSM_OK);
        }
        barrier();
        if (me() == 0) {
            ASSERT_EQ(cdsm_lock_acquire(3), CDSM_OK); // waits for rank 1
            for (size_t i = 1; i < words(); i += 2) ASSERT_EQ(home0[i], i + 7000) << "word " << i;
            for (size_t i = 0; i < words(); i += 2) home0[i] += 100;
            ASSERT_EQ(cdsm_lock_release(3), CDSM_OK);
        } else if (me() == 1) {
            for (size_t i = 1; i < words(); i += 2) home0[i] = home0[i] + 7000; // reads: converts
            ASSERT_EQ(cdsm_lock_release(3), CDSM_OK);
        }
        barrier();
        for (size_t i = 0; i < words(); i++) ASSERT_EQ(home0[i], i + (i % 2 ? 7000u : 100u)) << "word " << i;
        barrier();
    }
}
