// Unit tests: page protection and its batch (lib/protocol/heap.c), on a private fake of
// the heap (no MPI). The protection of the application's view must always end equal to
// what each page's state says; within a batch the states change at once and each page's
// protection once, at the end, from its state before to its state after.
#include <gtest/gtest.h>

#include <sys/mman.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "proto.h"

namespace {

const uint32_t NPAGES = 16;
uint8_t made[(NPAGES + CDSM_PG_CHUNK - 1) / CDSM_PG_CHUNK] = {1};

// The permissions ("rw-", "r--", "---") /proc/self/maps gives the page at addr.
std::string perms(const void *addr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return "?";
    char line[512];
    std::string out = "?";
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char p[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, p) == 3 && a >= lo && a < hi) {
            out = std::string(p, 3);
            break;
        }
    }
    fclose(f);
    return out;
}

const char *want(int state)
{
    return state == CDSM_PG_INVALID ? "---" : state == CDSM_PG_RO ? "r--" : "rw-";
}

struct Protect : ::testing::Test {
    void SetUp() override
    {
        cdsm__heap.page_size = 4096;
        cdsm__heap.npages = NPAGES;
        cdsm__heap.hpages = NPAGES;
        cdsm__heap.heap_size = NPAGES * 4096;
        cdsm__heap.base = (char *)mmap(nullptr, cdsm__heap.heap_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ASSERT_NE(cdsm__heap.base, MAP_FAILED);
        cdsm__heap.pages = (cdsm__page_t *)calloc(NPAGES, sizeof(cdsm__page_t));
        cdsm__heap.made = made; // every page starts invalid (state 0), as mapped
    }
    void TearDown() override
    {
        munmap(cdsm__heap.base, cdsm__heap.heap_size);
        free(cdsm__heap.pages);
        cdsm__heap.base = nullptr;
        cdsm__heap.pages = nullptr;
        cdsm__heap.made = nullptr;
    }
    void expect_consistent()
    {
        for (uint32_t pg = 0; pg < NPAGES; pg++)
            EXPECT_EQ(perms(cdsm__app_page(pg)), want(cdsm__pg(pg)->state)) << "page " << pg;
    }
};

} // namespace

TEST_F(Protect, OutsideABatchProtectionFollowsTheStateAtOnce)
{
    ASSERT_EQ(cdsm__page_protect(2, 3, CDSM_PG_RO), CDSM_OK);
    EXPECT_EQ(perms(cdsm__app_page(2)), "r--");
    ASSERT_EQ(cdsm__page_protect(3, 1, CDSM_PG_OWN), CDSM_OK);
    EXPECT_EQ(cdsm__pg(3)->state, CDSM_PG_OWN);
    expect_consistent();
}

TEST_F(Protect, ABatchSetsEachPageOnceAndKeepsEveryState)
{
    cdsm__page_protect(0, 6, CDSM_PG_RO);
    cdsm__protect_batch(1);
    // Neighbours that end with the same protection but different states (the run is one
    // mprotect; the states must stay as set).
    cdsm__page_protect(6, 1, CDSM_PG_RW);
    cdsm__page_protect(7, 1, CDSM_PG_OWN);
    cdsm__page_protect(8, 1, CDSM_PG_RW);
    // Invalidated and made valid again: the same protection as before.
    cdsm__page_protect(1, 1, CDSM_PG_INVALID);
    cdsm__page_protect(1, 1, CDSM_PG_RO);
    // Made valid and invalidated again.
    cdsm__page_protect(10, 1, CDSM_PG_RO);
    cdsm__page_protect(10, 1, CDSM_PG_INVALID);
    // Invalidated for good.
    cdsm__page_protect(4, 1, CDSM_PG_INVALID);
    EXPECT_EQ(perms(cdsm__app_page(6)), "---") << "deferred until the batch ends";
    EXPECT_EQ(perms(cdsm__app_page(4)), "r--") << "deferred until the batch ends";
    EXPECT_EQ(cdsm__pg(4)->state, CDSM_PG_INVALID) << "states change at once";
    cdsm__protect_batch(0);
    EXPECT_EQ(cdsm__pg(6)->state, CDSM_PG_RW);
    EXPECT_EQ(cdsm__pg(7)->state, CDSM_PG_OWN);
    EXPECT_EQ(cdsm__pg(8)->state, CDSM_PG_RW);
    EXPECT_EQ(cdsm__pg(1)->state, CDSM_PG_RO);
    EXPECT_EQ(cdsm__pg(10)->state, CDSM_PG_INVALID);
    expect_consistent();
}

TEST_F(Protect, NestedBatchesApplyAtTheOutermostEnd)
{
    cdsm__protect_batch(1);
    cdsm__page_protect(5, 2, CDSM_PG_RO);
    cdsm__protect_batch(1);
    cdsm__page_protect(6, 1, CDSM_PG_RW);
    cdsm__protect_batch(0);
    EXPECT_EQ(perms(cdsm__app_page(5)), "---") << "an inner end applies nothing";
    cdsm__protect_batch(0);
    EXPECT_EQ(cdsm__pg(5)->state, CDSM_PG_RO);
    EXPECT_EQ(cdsm__pg(6)->state, CDSM_PG_RW);
    expect_consistent();
}
