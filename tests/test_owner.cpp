// Page ownership by first touch (on by default where no spare and no checkpoint needs
// every write noticed), with the consistency checker: every state and transition of a
// page, at 2-4 ranks.
// No test frees its pages: a freed page keeps its owner, and each test wants fresh ones.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>

#include <cdsm.h>

#include "dsm_test_util.h"

namespace {

using namespace dsmtest;

} // namespace

TEST(Owner, OwnershipIsOnForThisRun)
{
    // This run must be in first-touch mode, or the other tests here would pass without
    // testing ownership: a fresh page this rank touches first becomes its own.
    ASSERT_GT(nr(), 1);
    ASSERT_EQ(getenv("CDSM_SPARES"), nullptr);
    ASSERT_EQ(getenv("CDSM_CKPT_DIR"), nullptr);
    uint64_t *a = alloc<uint64_t>(ps() / sizeof(uint64_t) * (size_t)nr());
    cdsm_stats_t s0 = stats();
    a[ps() / sizeof(uint64_t) * (size_t)me()] = 1;
    EXPECT_EQ(stats().pages_owned, s0.pages_owned + 1);
    barrier();
}

// Pages only their first toucher ever uses cost nothing: no write fault, no twin, no
// diff, no notice, however often they are written between barriers.
TEST(Owner, PagesNobodyElseReadsCostNothing)
{
    pages_their_owner_alone_uses_cost_nothing();
}

// A page written for many barriers by its owner alone, then read by another rank for the
// first time: the reader gets the latest values, and from then on the owner's writes are
// tracked and reach the reader as diffs.
TEST(Owner, ReadLongAfterItWasWrittenThenTracked)
{
    const size_t words = ps() / sizeof(uint64_t);
    uint64_t *pg = alloc<uint64_t>(words * (size_t)nr());
    uint64_t *mine = pg + words * (size_t)me();
    const uint64_t *next = pg + words * (size_t)((me() + 1) % nr());
    const uint64_t nxt = (uint64_t)((me() + 1) % nr());
    cdsm_stats_t s0{};
    for (int it = 0; it < 10; it++) {
        for (size_t i = 0; i < words; i++) mine[i] = (uint64_t)me() * 100000 + (uint64_t)it * 1000 + i;
        if (it == 9) s0 = stats(); // (the reader may come as soon as we arrive)
        barrier();
    }
    for (size_t i = 0; i < words; i++) ASSERT_EQ(next[i], nxt * 100000 + 9000 + i) << "word " << i;
    barrier();
    cdsm_stats_t s1 = stats();
    EXPECT_EQ(s1.pages_unowned - s0.pages_unowned, 1u); // our page, read by the rank before us
    EXPECT_GE(s1.pages_fetched - s0.pages_fetched, 1u);
    for (int it = 10; it < 14; it++) {
        for (size_t i = 0; i < words; i += 7) mine[i] = (uint64_t)me() * 100000 + (uint64_t)it * 1000 + i;
        barrier();
        for (size_t i = 0; i < words; i += 7) ASSERT_EQ(next[i], nxt * 100000 + (uint64_t)it * 1000 + i);
        barrier();
    }
    EXPECT_GT(stats().write_faults, s1.write_faults);
}

// Every rank touches the same fresh page first, at once, each its own words: one of them
// is named owner by the directory, the others are sent to it, and every word survives.
TEST(Owner, ConcurrentFirstTouchesOfOnePage)
{
    for (int round = 0; round < 5; round++) {
        uint32_t *w = alloc<uint32_t>(ps() / sizeof(uint32_t));
        for (int k = 0; k < 16; k++) w[k * nr() + me()] = (uint32_t)(round * 100 + me() * 16 + k + 1);
        barrier();
        for (int r = 0; r < nr(); r++)
            for (int k = 0; k < 16; k++) ASSERT_EQ(w[k * nr() + r], (uint32_t)(round * 100 + r * 16 + k + 1));
        barrier();
    }
}

// A page first touched by a read (its owner holds zeros), then written by another rank
// under a lock, then read back by the owner: one writer becomes another, then several.
TEST(Owner, FromOneWriterToSeveralUnderALock)
{
    uint64_t *v = alloc<uint64_t>(ps() / sizeof(uint64_t));
    if (me() == 0) {
        EXPECT_EQ(v[5], 0u); // rank 0 claims it by reading
    }
    barrier();
    for (int round = 0; round < 3; round++) {
        for (int r = 0; r < nr(); r++) {
            ASSERT_EQ(cdsm_lock_acquire(7), CDSM_OK);
            v[r] += 1; // every rank writes every word in turn
            v[100 + me()] = (uint64_t)round + 1;
            ASSERT_EQ(cdsm_lock_release(7), CDSM_OK);
        }
    }
    barrier();
    for (int r = 0; r < nr(); r++) {
        EXPECT_EQ(v[r], (uint64_t)(3 * nr()));
        EXPECT_EQ(v[100 + r], 3u);
    }
}

// A rank that never touched a page reads it after others wrote it (its copy is unclaimed
// but it holds their notices): it takes a whole copy from a writer, not from the directory.
TEST(Owner, UntouchedPageWithNoticesComesFromAWriter)
{
    uint64_t *v = alloc<uint64_t>(4 * ps() / sizeof(uint64_t));
    const size_t words = 4 * ps() / sizeof(uint64_t);
    if (me() == 0) {
        for (size_t i = 0; i < words; i++) v[i] = i;
    }
    barrier();
    if (me() == 1) {
        for (size_t i = 0; i < words; i += 3) v[i] += 1000; // reads rank 0's pages, writes them
    }
    barrier();
    for (int again = 0; again < 2; again++) {
        for (size_t i = 0; i < words; i++) ASSERT_EQ(v[i], i + (i % 3 == 0 ? 1000u : 0u)) << "word " << i;
        barrier();
    }
}

// A rank's own block written in order costs few faults (the directory is this rank: the
// pages of the stream are claimed with the one that faulted). Another rank walking that
// block down a column (a stride of 4 pages) fetches the stream's pages from the directory
// in batches, and later, once the owner's writes are tracked, their diffs in batches too.
TEST(Owner, StreamsOfMissesComeInBatches)
{
    const size_t per = 64, words = ps() / sizeof(uint64_t), stride = 4, walked = per / stride;
    uint64_t *a = alloc<uint64_t>(per * words * (size_t)nr());
    uint64_t *mine = a + per * words * (size_t)me();
    const int nx = (me() + 1) % nr();
    const uint64_t *next = a + per * words * (size_t)nx;
    auto value = [&](int r, size_t i, int round) { return (uint64_t)r << 40 | (uint64_t)round << 32 | i; };
    cdsm_stats_t s0 = stats();
    for (size_t i = 0; i < per * words; i++) mine[i] = value(me(), i, 0);
    cdsm_stats_t s1 = stats();
    EXPECT_EQ(s1.pages_owned - s0.pages_owned, per);
    EXPECT_LT(s1.read_faults - s0.read_faults, per / 4) << "claims ahead along the stream";
    cdsm_stats_t t0 = stats(); // (from before the barrier: a refetch after it counts too)
    barrier();
    for (int round = 0; round < 2; round++) {
        for (size_t pg = 0; pg < per; pg += stride) ASSERT_EQ(next[pg * words + 5], value(nx, pg * words + 5, round));
        cdsm_stats_t t1 = stats();
        EXPECT_LT(t1.read_faults - t0.read_faults, walked / 2) << "round " << round;
        EXPECT_GE(t1.prefetched - t0.prefetched, walked / 2) << "round " << round;
        for (size_t i = 0; i < per * words; i++) ASSERT_EQ(next[i], value(nx, i, round)) << "word " << i;
        barrier();
        for (size_t i = 0; i < per * words; i += 3) mine[i] = value(me(), i, round + 1);
        for (size_t i = 0; i < per * words; i++)
            if (i % 3) mine[i] = value(me(), i, round + 1);
        t0 = stats();
        barrier();
    }
}

// Pages claimed ahead of a stream by a rank that only read them (zeros) are written later
// by their directory rank, which then takes them from that rank, tracked: every rank reads
// the writer's values.
TEST(Owner, PagesClaimedAheadStillTakeOthersWrites)
{
    const size_t per = 32, words = ps() / sizeof(uint64_t);
    uint64_t *a = alloc<uint64_t>(per * words * (size_t)nr());
    const uint64_t *block0 = a; // rank 0 is the directory of the first block
    if (me() == nr() - 1) {
        for (size_t pg = 0; pg < per; pg++) ASSERT_EQ(block0[pg * words + 1], 0u); // claims ahead
    }
    barrier();
    if (me() == 0) {
        for (size_t i = 0; i < per * words; i++) a[i] = i * 3 + 1;
    }
    barrier();
    for (size_t i = 0; i < per * words; i++) ASSERT_EQ(block0[i], i * 3 + 1) << "word " << i;
    barrier();
}
