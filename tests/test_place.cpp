// Directory placement of the pages of an allocation (lib/protocol/owner.c, cdsm__own_place):
// page first + k of an np-page allocation belongs to rank floor(k n / np), pages placed by
// an earlier allocation keep their rank, and the ranks' shares differ by at most one page.
// The placement runs on every rank alike, so it must be exactly this formula everywhere.
#include <gtest/gtest.h>

#include <vector>

#include "proto.h"

namespace {

const uint32_t NPAGES = 4096;

struct Place : ::testing::TestWithParam<int> {
    void SetUp() override
    {
        cdsm__w.rank = 0;
        cdsm__w.n = GetParam();
        cdsm__heap.page_size = 4096;
        cdsm__heap.npages = NPAGES;
        cdsm__heap.hpages = NPAGES;
        cdsm__heap.heap_size = (size_t)NPAGES * 4096;
        cdsm__heap.own_mode = CDSM_OWN_FIRST_TOUCH;
        ASSERT_EQ(cdsm__own_init(), CDSM_OK);
    }
    void TearDown() override
    {
        cdsm__own_fini();
        cdsm__heap.own_mode = 0;
        cdsm__w.n = -1;
        cdsm__w.rank = -1;
    }
    static void place(uint32_t first, uint32_t np)
    {
        cdsm__own_place((uint64_t)first * 4096, (size_t)np * 4096);
    }
};

TEST_P(Place, EachPageGoesToItsShareOfTheAllocation)
{
    const uint64_t n = (uint64_t)GetParam();
    // Sizes around multiples of n, and one that is not a whole number of pages.
    uint32_t first = 1;
    for (uint32_t np : {1u, 2u, 3u, 5u, 7u, 64u, 100u, 1000u}) {
        place(first, np);
        std::vector<int> share(n, 0);
        for (uint32_t k = 0; k < np; k++) {
            int r = cdsm__own_home(first + k);
            ASSERT_EQ(r, (int)((uint64_t)k * n / np)) << "page " << k << " of " << np << " at " << n << " ranks";
            share[(size_t)r]++;
        }
        for (uint64_t r = 0; r < n && np >= n; r++) EXPECT_LE(share[r], (int)((np + n - 1) / n));
        first += np;
    }
    cdsm__own_place((uint64_t)first * 4096 + 100, 4096); // [+100, +4196): two pages
    EXPECT_EQ(cdsm__own_home(first), 0);
    EXPECT_EQ(cdsm__own_home(first + 1), (int)(n / 2));
}

TEST_P(Place, PagesPlacedBeforeKeepTheirRank)
{
    const int n = GetParam();
    place(100, 10);
    std::vector<int> before;
    for (uint32_t k = 0; k < 10; k++) before.push_back(cdsm__own_home(100 + k));
    place(50, 200); // covers them: only the others are placed by this one
    for (uint32_t k = 0; k < 10; k++) EXPECT_EQ(cdsm__own_home(100 + k), before[k]) << "page " << 100 + k;
    for (uint32_t k = 0; k < 200; k++) {
        if (k >= 50 && k < 60) continue;
        EXPECT_EQ(cdsm__own_home(50 + k), (int)((uint64_t)k * (uint64_t)n / 200)) << "page " << 50 + k;
    }
    // Unplaced pages are spread by page number.
    EXPECT_EQ(cdsm__own_home(3000), (int)(3000 % (uint32_t)n));
}

INSTANTIATE_TEST_SUITE_P(Ranks, Place, ::testing::Values(1, 2, 3, 7, 64));

} // namespace
