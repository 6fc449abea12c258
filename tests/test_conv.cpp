// Unit tests: the conversion table of home ownership (lib/protocol/conv.c), on a private
// fake of the library state (no MPI): what a home keeps when it serves a page (the base
// and its synchronisation number), what it reports to a replacement, and the checkpoint
// region: a round trip, and every malformed region refused with CDSM_ERR_CORRUPT.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "proto.h"

namespace {

const int N = 3;
const uint32_t NPAGES = 64;
uint8_t made[(NPAGES + CDSM_PG_CHUNK - 1) / CDSM_PG_CHUNK] = {1};

struct Conv : ::testing::Test {
    void SetUp() override
    {
        cdsm__w.rank = 1;
        cdsm__w.n = N;
        cdsm__heap.page_size = 4096;
        cdsm__heap.npages = NPAGES;
        cdsm__heap.hpages = NPAGES;
        cdsm__heap.heap_size = NPAGES * 4096;
        cdsm__heap.sys = (char *)mmap(nullptr, cdsm__heap.heap_size, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ASSERT_NE(cdsm__heap.sys, MAP_FAILED);
        cdsm__heap.pages = (cdsm__page_t *)calloc(NPAGES, sizeof(cdsm__page_t));
        cdsm__heap.made = made;
        cdsm__g.vc = (uint32_t *)calloc(N, sizeof(uint32_t));
        memset(&cdsm__st, 0, sizeof cdsm__st);
    }
    void TearDown() override
    {
        cdsm__conv_fini();
        for (uint32_t i = 0; i < NPAGES; i++) free(cdsm__heap.pages[i].applied);
        free(cdsm__heap.pages);
        free(cdsm__g.vc);
        munmap(cdsm__heap.sys, cdsm__heap.heap_size);
        cdsm__heap.sys = nullptr;
        cdsm__heap.pages = nullptr;
        cdsm__heap.made = nullptr;
        cdsm__g.vc = nullptr;
        cdsm__w.n = -1;
        cdsm__w.rank = -1;
    }
    std::vector<uint8_t> region()
    {
        std::vector<uint8_t> r(cdsm__conv_state_bytes());
        if (!r.empty()) cdsm__conv_state_put(r.data());
        return r;
    }
};

TEST_F(Conv, ServeKeepsTheBaseAsServed)
{
    memset(cdsm__sys_page(5), 0x5a, 4096);
    cdsm__page_applied(5)[0] = 7;
    cdsm__g.vc[1] = 3;
    cdsm__g.sync_seq = 42;
    EXPECT_EQ(cdsm__conv_served(5), 42u);
    memset(cdsm__sys_page(5), 0x11, 4096); // the home writes on
    const void *bytes;
    const uint32_t *applied;
    EXPECT_EQ(cdsm__conv_base(5, &bytes, &applied), 42u);
    ASSERT_NE(bytes, nullptr);
    EXPECT_EQ(((const uint8_t *)bytes)[100], 0x5a);
    EXPECT_EQ(applied[0], 7u);
    EXPECT_EQ(cdsm__st.conv_base_bytes, 4096u);
    // A page another rank is home of: its number only, no base here.
    cdsm__conv_learned(9, 2, 17);
    EXPECT_EQ(cdsm__conv_base(9, &bytes, &applied), 17u);
    EXPECT_EQ(bytes, nullptr);
}

TEST_F(Conv, ReportsTheLostHomesPagesOnly)
{
    cdsm__conv_learned(3, 0, 10);
    cdsm__conv_learned(4, 2, 11);
    cdsm__conv_learned(6, 0, 12);
    cdsm__buf_t b = {};
    cdsm__conv_put_for(&b, 0);
    cdsm__rd_t rd = {b.p, b.len, 0, 0};
    ASSERT_EQ(cdsm__rd_u32(&rd), 2u);
    uint32_t got[4];
    for (uint32_t &v : got) v = cdsm__rd_u32(&rd);
    EXPECT_EQ(got[0], 3u);
    EXPECT_EQ(got[1], 10u);
    EXPECT_EQ(got[2], 6u);
    EXPECT_EQ(got[3], 12u);
    cdsm__buf_free(&b);
}

TEST_F(Conv, CheckpointRegionRoundTrip)
{
    memset(cdsm__sys_page(2), 0x77, 4096);
    cdsm__g.sync_seq = 5;
    cdsm__conv_served(2);
    cdsm__conv_learned(8, 0, 6);
    std::vector<uint8_t> r = region();
    cdsm__conv_fini();
    ASSERT_EQ(cdsm__conv_state_take(r.data(), r.size()), CDSM_OK);
    const void *bytes;
    const uint32_t *applied;
    EXPECT_EQ(cdsm__conv_base(2, &bytes, &applied), 5u);
    ASSERT_NE(bytes, nullptr);
    EXPECT_EQ(((const uint8_t *)bytes)[4095], 0x77);
    EXPECT_EQ(cdsm__conv_base(8, &bytes, &applied), 6u);
    EXPECT_EQ(cdsm__conv_count(), 2u);
}

TEST_F(Conv, MalformedRegionsAreRefused)
{
    cdsm__conv_served(2);
    cdsm__conv_learned(8, 0, 6);
    std::vector<uint8_t> good = region();
    cdsm__conv_fini();
    auto refused = [](std::vector<uint8_t> r) { return cdsm__conv_state_take(r.data(), r.size()) == CDSM_ERR_CORRUPT; };
    std::vector<uint8_t> r = good;
    r.pop_back();
    EXPECT_TRUE(refused(r)) << "truncated";
    r = good;
    r.push_back(0);
    EXPECT_TRUE(refused(r)) << "trailing bytes";
    r = good;
    uint32_t big = NPAGES;
    memcpy(&r[4], &big, 4);
    EXPECT_TRUE(refused(r)) << "page beyond the heap";
    r = good;
    uint32_t home = N;
    memcpy(&r[4 + 12], &home, 4);
    EXPECT_TRUE(refused(r)) << "home beyond the ranks";
    r = good;
    uint32_t other = 0;
    memcpy(&r[4 + 12], &other, 4);
    EXPECT_TRUE(refused(r)) << "a base kept for a page another rank is home of";
    r = good;
    uint32_t count = 3;
    memcpy(&r[0], &count, 4);
    EXPECT_TRUE(refused(r)) << "more entries than bytes";
}

TEST_F(Conv, ReportsForAReplacementAreChecked)
{
    uint32_t bad[] = {1, NPAGES, 3};
    cdsm__rd_t rd = {(const uint8_t *)bad, sizeof bad, 0, 0};
    EXPECT_EQ(cdsm__conv_take_due(&rd), CDSM_ERR_PROTOCOL);
    uint32_t shortv[] = {2, 1, 3};
    cdsm__rd_t rd2 = {(const uint8_t *)shortv, sizeof shortv, 0, 0};
    EXPECT_EQ(cdsm__conv_take_listed(&rd2), CDSM_ERR_PROTOCOL);
}

} // namespace
