// Unit tests: interval records and write-notice bookkeeping, on a private fake of the
// library state (no MPI): storage order, duplicates, gaps, malformed records, the records
// a peer lacks, and which notices invalidate a page.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "proto.h"

namespace {

const int N = 3;
const uint32_t NPAGES = 64;
uint8_t made[(NPAGES + CDSM_PG_CHUNK - 1) / CDSM_PG_CHUNK] = {1};

struct FakeState : ::testing::Test {
    void SetUp() override
    {
        cdsm__state_t *g = &cdsm__g;
        cdsm__w.rank = 0;
        cdsm__w.n = N;
        cdsm__heap.page_size = 4096;
        cdsm__heap.npages = NPAGES;
        cdsm__heap.hpages = NPAGES; /* (no shared globals) */
        cdsm__heap.heap_size = NPAGES * 4096;
        cdsm__heap.base = (char *)mmap(nullptr, cdsm__heap.heap_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ASSERT_NE(cdsm__heap.base, MAP_FAILED);
        cdsm__heap.pages = (cdsm__page_t *)calloc(NPAGES, sizeof(cdsm__page_t));
        cdsm__heap.made = made; /* (every entry set below) */
        for (uint32_t i = 0; i < NPAGES; i++) {
            cdsm__heap.pages[i].state = CDSM_PG_RO;
            cdsm__heap.pages[i].holder = -1;
        }
        g->ivs = (cdsm__ivlist_t *)calloc(N, sizeof(cdsm__ivlist_t));
        memset(&cdsm__st, 0, sizeof cdsm__st);
        g->log_bytes = 0;
    }
    void TearDown() override
    {
        cdsm__state_t *g = &cdsm__g;
        for (int q = 0; q < N; q++) {
            for (uint32_t k = 0; k < g->ivs[q].count; k++) cdsm__iv_free(g->ivs[q].v[k]);
            free(g->ivs[q].v);
        }
        free(g->ivs);
        for (uint32_t i = 0; i < NPAGES; i++) {
            for (cdsm__notice_t *nt = cdsm__heap.pages[i].notices, *nx; nt; nt = nx) {
                nx = nt->next;
                free(nt);
            }
            free(cdsm__heap.pages[i].applied);
        }
        free(cdsm__heap.pages);
        munmap(cdsm__heap.base, cdsm__heap.heap_size);
        cdsm__heap.base = nullptr;
        cdsm__heap.pages = nullptr;
        cdsm__heap.made = nullptr;
        g->ivs = nullptr;
        cdsm__w.n = -1;
        cdsm__w.rank = -1;
    }
};

void put_record(cdsm__buf_t *b, int rank, uint32_t idx, std::vector<uint32_t> vc, std::vector<uint32_t> pages)
{
    cdsm__wire_iv_t w = {(uint16_t)rank, 0, idx, (uint32_t)pages.size()};
    cdsm__buf_put(b, &w, sizeof w);
    cdsm__buf_put(b, vc.data(), vc.size() * 4);
    cdsm__buf_put(b, pages.data(), pages.size() * 4);
}

int incorporate(cdsm__buf_t *b, uint32_t nrec)
{
    cdsm__rd_t rd = {b->p, b->len, 0, 0};
    return cdsm__iv_incorporate(&rd, nrec);
}

size_t notices_on(uint32_t pg)
{
    size_t k = 0;
    for (cdsm__notice_t *nt = cdsm__heap.pages[pg].notices; nt; nt = nt->next) k++;
    return k;
}

} // namespace

TEST_F(FakeState, RecordsStoredInOrderAndNoticesPosted)
{
    cdsm__buf_t b = {};
    put_record(&b, 1, 1, {0, 1, 0}, {3, 7});
    put_record(&b, 1, 2, {0, 2, 0}, {7});
    put_record(&b, 2, 1, {0, 1, 1}, {3, 9, 10});
    ASSERT_EQ(incorporate(&b, 3), CDSM_OK);
    ASSERT_NE(cdsm__iv_get(1, 1), nullptr);
    ASSERT_NE(cdsm__iv_get(1, 2), nullptr);
    ASSERT_NE(cdsm__iv_get(2, 1), nullptr);
    EXPECT_EQ(cdsm__iv_get(1, 3), nullptr);
    EXPECT_EQ(cdsm__iv_get(0, 1), nullptr);
    EXPECT_EQ(cdsm__iv_get(2, 1)->npages, 3u);
    EXPECT_EQ(cdsm__iv_get(2, 1)->vcsum, 2u);
    EXPECT_EQ(cdsm__iv_find_page(cdsm__iv_get(2, 1), 9), 1);
    EXPECT_EQ(cdsm__iv_find_page(cdsm__iv_get(2, 1), 8), -1);
    EXPECT_EQ(notices_on(3), 2u);
    EXPECT_EQ(notices_on(7), 2u);
    EXPECT_EQ(notices_on(9), 1u);
    EXPECT_EQ(notices_on(4), 0u);
    EXPECT_EQ(cdsm__st.notices_received, 6u);
    // Every page with a notice it lacked was invalidated; the others are untouched.
    EXPECT_EQ(cdsm__heap.pages[3].state, CDSM_PG_INVALID);
    EXPECT_EQ(cdsm__heap.pages[10].state, CDSM_PG_INVALID);
    EXPECT_EQ(cdsm__heap.pages[4].state, CDSM_PG_RO);
    EXPECT_EQ(cdsm__st.invalidations, 4u);
    EXPECT_GT(cdsm__g.log_bytes, 0u);

    // The same records again are known: nothing changes.
    ASSERT_EQ(incorporate(&b, 3), CDSM_OK);
    EXPECT_EQ(notices_on(3), 2u);
    EXPECT_EQ(cdsm__g.ivs[1].count, 2u);
    cdsm__buf_free(&b);
}

TEST_F(FakeState, GapAndMalformedRecordsRejected)
{
    cdsm__buf_t b = {};
    put_record(&b, 1, 2, {0, 2, 0}, {1}); // interval 1 of rank 1 never arrived
    EXPECT_EQ(incorporate(&b, 1), CDSM_ERR_PROTOCOL);
    cdsm__buf_free(&b);

    put_record(&b, 1, 1, {0, 1, 0}, {5, 4}); // pages not sorted
    EXPECT_EQ(incorporate(&b, 1), CDSM_ERR_PROTOCOL);
    cdsm__buf_free(&b);

    put_record(&b, 1, 1, {0, 1, 0}, {NPAGES}); // page outside the heap
    EXPECT_EQ(incorporate(&b, 1), CDSM_ERR_PROTOCOL);
    cdsm__buf_free(&b);

    put_record(&b, 7, 1, {0, 1, 0}, {1}); // rank outside the job
    EXPECT_EQ(incorporate(&b, 1), CDSM_ERR_PROTOCOL);
    cdsm__buf_free(&b);

    put_record(&b, 1, 1, {0, 1, 0}, {1, 2});
    b.len -= 3; // truncated
    EXPECT_EQ(incorporate(&b, 1), CDSM_ERR_PROTOCOL);
    cdsm__buf_free(&b);
    EXPECT_EQ(cdsm__g.ivs[1].count, 0u);
}

TEST_F(FakeState, NoticeCoveredByAppliedVectorDoesNotInvalidate)
{
    // Our copy of page 5 already holds rank 1's writes up to interval 2 (a whole-page fetch).
    cdsm__page_applied(5)[1] = 2;
    cdsm__buf_t b = {};
    put_record(&b, 1, 1, {0, 1, 0}, {5});
    put_record(&b, 1, 2, {0, 2, 0}, {5});
    ASSERT_EQ(incorporate(&b, 2), CDSM_OK);
    EXPECT_EQ(cdsm__heap.pages[5].state, CDSM_PG_RO);
    EXPECT_EQ(notices_on(5), 2u);
    cdsm__buf_free(&b);
    put_record(&b, 1, 3, {0, 3, 0}, {5});
    ASSERT_EQ(incorporate(&b, 1), CDSM_OK);
    EXPECT_EQ(cdsm__heap.pages[5].state, CDSM_PG_INVALID);
    cdsm__buf_free(&b);
}

TEST_F(FakeState, SerializeNewerSendsExactlyWhatThePeerLacks)
{
    cdsm__buf_t b = {};
    put_record(&b, 1, 1, {0, 1, 0}, {1});
    put_record(&b, 1, 2, {0, 2, 0}, {2});
    put_record(&b, 1, 3, {0, 3, 1}, {3});
    put_record(&b, 2, 1, {0, 0, 1}, {4});
    ASSERT_EQ(incorporate(&b, 4), CDSM_OK);
    cdsm__buf_free(&b);

    uint32_t have[N] = {0, 1, 0};
    cdsm__buf_t out = {};
    EXPECT_EQ(cdsm__iv_serialize_newer(&out, have), 3u);
    // Feeding it to a fresh state reproduces the records the peer lacked.
    cdsm__rd_t rd = {out.p, out.len, 0, 0};
    const cdsm__wire_iv_t *w = (const cdsm__wire_iv_t *)cdsm__rd_take(&rd, sizeof *w);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(w->rank, 1);
    EXPECT_EQ(w->idx, 2u);
    cdsm__buf_free(&out);

    uint32_t all[N] = {0, 3, 1};
    EXPECT_EQ(cdsm__iv_serialize_newer(&out, all), 0u);
    EXPECT_EQ(out.len, 0u);
    cdsm__buf_free(&out);
}
