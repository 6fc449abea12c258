// Published diffs (DESIGN, "Published diffs"; CDSM_SHM_DIFFS): node-mates copy each other's
// diffs from shared memory instead of asking. Every rank writes its own words of shared
// pages each round (multiple writers per page), and after the barrier reads every word.
// Run with the board on (the default without spares: no diff is asked for by message), on
// with a ring too small for a round's diffs (what was overwritten is asked for, and the
// answers stay exact), off (every diff asked for), and with the ranks given different
// ring sizes (each ignores the other's board: every diff asked for). With CDSM_RMA=all
// every board is read one-sided (MPI RMA), node-mates' too: the same answers, and the
// counters say the diffs came through the window.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "dsm_test_util.h"

using namespace dsmtest;

namespace {

// CDSM_SHM_DIFFS as the test runs it: 0 (off), "small" (below 1 MiB) or the default.
uint64_t ring_bytes()
{
    const char *v = getenv("CDSM_SHM_DIFFS");
    if (!v) return 8u << 20;
    return strtoull(v, nullptr, 10) * (strchr(v, 'K') ? 1024 : strchr(v, 'M') ? 1u << 20 : 1);
}


} // namespace

TEST(SharedDiffs, NodeMatesTakeDiffsWithoutAsking)
{
    const size_t PAGES = 64, W = ps() / sizeof(uint64_t), N = PAGES * W;
    const int ROUNDS = 6, n = nr();
    uint64_t *a = alloc_read_by_all<uint64_t>(PAGES);
    cdsm_stats_t s0 = stats();
    for (int r = 1; r <= ROUNDS; r++) {
        for (size_t i = (size_t)me(); i < N; i += (size_t)n) a[i] = word_value(me(), r, i);
        barrier();
        for (size_t i = 0; i < N; i++) ASSERT_EQ(a[i], word_value((int)(i % (size_t)n), r, i)) << "word " << i << ", round " << r;
        barrier();
    }
    cdsm_stats_t s1 = stats();
    uint64_t taken = s1.board_taken - s0.board_taken, served = s1.diffs_served - s0.diffs_served;
    uint64_t missed = s1.board_missed - s0.board_missed, rma = s1.board_rma_taken - s0.board_rma_taken;
    const char *rv = getenv("CDSM_RMA");
    bool one_sided = rv && !strcmp(rv, "all");
    if (n < 2) return;
    // Ranks started with different CDSM_SHM_DIFFS (MPMD launch): a node-mate's board of
    // another layout is not used, so every diff is asked for, and the answers stay exact.
    if (getenv("TEST_BOARDS_DIFFER")) {
        EXPECT_EQ(taken, 0u);
        EXPECT_GT(served, 0u);
        return;
    }
    if (ring_bytes() == 0) {
        EXPECT_EQ(taken, 0u);
        EXPECT_EQ(s1.board_published, 0u);
        EXPECT_GT(served, 0u);
    } else if (ring_bytes() >= (1u << 20)) {
        // One-sided reads that a loaded machine made slow (a batch over 10 ms: the nudged
        // writer was not scheduled) leave that writer's board to messages for a while
        // (rma_shunned): those diffs are asked for, and the answers above stayed exact.
        // (summed over the ranks: one rank's shunning makes another serve)
        cdsm_stats_t mine = s1, all;
        mine.rma_shunned = s1.rma_shunned - s0.rma_shunned;
        mine.diffs_served = served;
        mine.board_missed = missed;
        ASSERT_EQ(cdsm_stats_reduce(&mine, &all), CDSM_OK);
        EXPECT_GT(taken, 0u);
        if (!all.rma_shunned) {
            EXPECT_EQ(missed, 0u);
            EXPECT_EQ(served, 0u) << "a diff was asked for by message";
        } else {
            EXPECT_TRUE(one_sided) << "a board was left to messages without CDSM_RMA";
            EXPECT_GT(all.board_missed, 0u);
            EXPECT_GT(all.diffs_served, 0u);
        }
        if (one_sided) {
            EXPECT_EQ(rma, taken) << "a diff was copied from a mapped board";
            EXPECT_GT(s1.rma_gets - s0.rma_gets, 0u);
        } else {
            EXPECT_EQ(rma, 0u);
        }
    } else { // a round's diffs (64 pages per writer) do not fit: the first ones are asked for
        EXPECT_GT(missed, 0u);
        EXPECT_GT(served, 0u);
    }
}
