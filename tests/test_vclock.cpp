// Unit tests: vector clock order and merge.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "vclock.h"

TEST(VClock, CompareBasic)
{
    uint32_t a[3] = {1, 2, 3}, b[3] = {1, 2, 3}, c[3] = {1, 3, 3}, d[3] = {2, 1, 3};
    EXPECT_EQ(cdsm__vc_compare(a, b, 3), CDSM_VC_EQUAL);
    EXPECT_EQ(cdsm__vc_compare(a, c, 3), CDSM_VC_BEFORE);
    EXPECT_EQ(cdsm__vc_compare(c, a, 3), CDSM_VC_AFTER);
    EXPECT_EQ(cdsm__vc_compare(c, d, 3), CDSM_VC_CONCURRENT);
    EXPECT_TRUE(cdsm__vc_leq(a, c, 3));
    EXPECT_FALSE(cdsm__vc_leq(c, a, 3));
    EXPECT_FALSE(cdsm__vc_leq(c, d, 3));
}

TEST(VClock, MergeIsLeastUpperBound)
{
    std::mt19937 rng(7);
    for (int trial = 0; trial < 1000; trial++) {
        int n = 1 + (int)(rng() % 16);
        std::vector<uint32_t> a(n), b(n), m(n);
        for (int i = 0; i < n; i++) {
            a[i] = rng() % 5;
            b[i] = rng() % 5;
        }
        m = a;
        cdsm__vc_merge(m.data(), b.data(), n);
        ASSERT_TRUE(cdsm__vc_leq(a.data(), m.data(), n));
        ASSERT_TRUE(cdsm__vc_leq(b.data(), m.data(), n));
        for (int i = 0; i < n; i++) ASSERT_EQ(m[i], std::max(a[i], b[i]));
        // Merge is idempotent and commutative.
        std::vector<uint32_t> m2 = b;
        cdsm__vc_merge(m2.data(), a.data(), n);
        ASSERT_EQ(m, m2);
        cdsm__vc_merge(m2.data(), a.data(), n);
        ASSERT_EQ(m, m2);
    }
}

TEST(VClock, SumIsLinearExtensionOfHappenedBefore)
{
    std::mt19937 rng(11);
    for (int trial = 0; trial < 2000; trial++) {
        int n = 1 + (int)(rng() % 8);
        std::vector<uint32_t> a(n), b(n);
        for (int i = 0; i < n; i++) {
            a[i] = rng() % 4;
            b[i] = rng() % 4;
        }
        cdsm__vc_order_t o = cdsm__vc_compare(a.data(), b.data(), n);
        uint64_t sa = cdsm__vc_sum(a.data(), n), sb = cdsm__vc_sum(b.data(), n);
        if (o == CDSM_VC_BEFORE) { ASSERT_LT(sa, sb); }
        if (o == CDSM_VC_AFTER) { ASSERT_GT(sa, sb); }
        if (o == CDSM_VC_EQUAL) { ASSERT_EQ(sa, sb); }
        // Antisymmetry of compare.
        cdsm__vc_order_t r = cdsm__vc_compare(b.data(), a.data(), n);
        if (o == CDSM_VC_BEFORE) { ASSERT_EQ(r, CDSM_VC_AFTER); }
        if (o == CDSM_VC_CONCURRENT) { ASSERT_EQ(r, CDSM_VC_CONCURRENT); }
    }
}
