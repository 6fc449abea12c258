// Unit tests: the stream detector of access misses (lib/protocol/validate.c readahead),
// on a private fake of the library state (no MPI): which pages a miss takes with it for a
// sequential reader, a constant stride, and runs of a few pages at a long stride (blocked
// LU's column of the other rank's two-page blocks), where a stream does not continue, and
// several streams at once.
#include <gtest/gtest.h>

#include <vector>

#include "proto.h"

namespace {

struct Readahead : ::testing::Test {
    void SetUp() override
    {
        cdsm__cfg.prefetch = 32;
        cdsm__heap.npages = 1u << 20;
        cdsm__ra_reset();
    }
    void TearDown() override
    {
        cdsm__ra_reset();
        cdsm__heap.npages = 0;
    }
    // A miss on pg: the positions its readahead offers (every one taken, or stopped at
    // `stop_at`), recorded as the stream's extent.
    std::vector<uint32_t> miss(uint32_t pg, uint32_t stop_at = UINT32_MAX)
    {
        struct Arg {
            std::vector<uint32_t> seen;
            uint32_t stop_at;
        } a{{}, stop_at};
        cdsm__ra_t ra = cdsm__ra_begin(pg);
        cdsm__ra_walk(
            pg, &ra,
            [](uint32_t q, void *p) {
                Arg *a = (Arg *)p;
                if (q == a->stop_at) return -1;
                a->seen.push_back(q);
                return 1;
            },
            &a);
        cdsm__ra_end(pg, &ra);
        return a.seen;
    }
};

using V = std::vector<uint32_t>;

TEST_F(Readahead, SequentialWindowDoubles)
{
    EXPECT_EQ(miss(10), V{});
    EXPECT_EQ(miss(11), (V{12}));
    EXPECT_EQ(miss(13), (V{14, 15, 16}));
    EXPECT_EQ(miss(17), (V{18, 19, 20, 21, 22, 23, 24}));
}

TEST_F(Readahead, ConstantStride)
{
    EXPECT_EQ(miss(0), V{});
    EXPECT_EQ(miss(4), (V{8}));
    EXPECT_EQ(miss(12), (V{16, 20, 24}));
}

TEST_F(Readahead, RunsOfTwoPagesAtALongStride)
{
    // Blocked LU at two ranks: the other rank's blocks down a column, two pages each,
    // 64 pages apart (its region's row of blocks).
    EXPECT_EQ(miss(100), V{});
    EXPECT_EQ(miss(101), (V{102}));
    EXPECT_EQ(miss(164), (V{165, 228, 229}));
    EXPECT_EQ(miss(292), (V{293, 356, 357, 420, 421, 484, 485}));
    // The window is capped by CDSM_PREFETCH in pages: 32 pages are 16 runs.
    EXPECT_EQ(miss(548).size(), 15u);
    std::vector<uint32_t> w = miss(548 + 8 * 64);
    ASSERT_EQ(w.size(), 31u);
    EXPECT_EQ(w.back(), 548 + 8 * 64 + 15 * 64 + 1);
}

TEST_F(Readahead, RunLongerThanHalfTheWindowIsNoRun)
{
    // A sequential stream whose misses span 32 pages, then a jump: no runs (a run would
    // not fit twice in the window of 32 pages) and no stride (too far).
    miss(0);
    miss(1);
    miss(3);
    miss(7);
    miss(15);
    EXPECT_EQ(miss(31).size(), 31u);
    EXPECT_EQ(miss(1000), V{});
}

TEST_F(Readahead, FarJumpIsNoStream)
{
    miss(100);
    miss(101);
    EXPECT_EQ(miss(101 + 5000), V{});
    EXPECT_EQ(miss(101 + 5000 + 65), V{}); // (beyond a stride's reach of either stream)
}

TEST_F(Readahead, InterleavedStreamsKeepTheirWindows)
{
    // A transpose: one array read in order while the first writes to the other walk it
    // four pages at a time. Each miss continues its own stream.
    EXPECT_EQ(miss(1000), V{});
    EXPECT_EQ(miss(5000), V{});
    EXPECT_EQ(miss(1001), (V{1002}));
    EXPECT_EQ(miss(5004), (V{5008}));
    EXPECT_EQ(miss(1003), (V{1004, 1005, 1006}));
    EXPECT_EQ(miss(5012), (V{5016, 5020, 5024}));
    EXPECT_EQ(miss(1007).size(), 7u);
    EXPECT_EQ(miss(5028).size(), 7u);
}

TEST_F(Readahead, OldestStreamMakesRoom)
{
    // Five streams in turn: the fifth takes the slot of the least recently used (the
    // first), the others go on.
    for (uint32_t s = 0; s < 5; s++) miss(10000 * (s + 1));
    for (uint32_t s = 1; s < 5; s++) EXPECT_EQ(miss(10000 * (s + 1) + 1), (V{10000 * (s + 1) + 2}));
    EXPECT_EQ(miss(10001), V{}); // (its stream was forgotten: no stride yet)
}

TEST_F(Readahead, StoppedWalkMovesTheNextMiss)
{
    miss(100);
    miss(101);
    EXPECT_EQ(miss(164, 228), (V{165})); // stopped before 228: the stream's next miss is there
    EXPECT_EQ(miss(228), (V{229, 292, 293, 356, 357, 420, 421}));
}

TEST_F(Readahead, StrideFromTheLastMissPastValidPages)
{
    // A column walk of stride 3 over pages some of which are valid already (refetched
    // after a barrier): misses at 110 and 116 (113 valid), then 119. The stride comes
    // from the last miss (3), not from the end of what 116 took ahead (122: -3).
    EXPECT_EQ(miss(110), V{});
    EXPECT_EQ(miss(116), (V{122}));
    EXPECT_EQ(miss(119), (V{122}));
    EXPECT_EQ(miss(125), (V{128, 131, 134}));
}

TEST_F(Readahead, ContinuesWhereTheNextPageWasValid)
{
    EXPECT_EQ(miss(10), V{});
    EXPECT_EQ(miss(11), (V{12}));
    // 13 (where the stream went next) was valid: a miss one page further goes on.
    EXPECT_EQ(miss(14), (V{15, 16, 17}));
    // Further than a window along it: the sequential stream (10..14) is taken as a run
    // of 5 pages, and the miss as the start of the next run 20 pages on.
    EXPECT_EQ(miss(30), (V{31, 32, 33, 34, 50, 51, 52, 53, 54}));
}

TEST_F(Readahead, ResetEndsTheStream)
{
    miss(100);
    miss(101);
    cdsm__ra_reset();
    EXPECT_EQ(miss(164), V{});
    EXPECT_EQ(miss(165), (V{166}));
}

} // namespace
