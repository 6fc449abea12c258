// Multi-rank test of the consistency checker (run with CDSM_CHECK=1): a copy corrupted
// behind the protocol's back on one rank is found at the next barrier, on every rank,
// with the page named.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include <cdsm.h>

#include "proto.h"

TEST(Checker, CleanRunsPass)
{
    int *a = nullptr;
    ASSERT_EQ(cdsm_alloc(4 * cdsm_page_size(), (void **)&a), CDSM_OK);
    for (int round = 0; round < 5; round++) {
        a[cdsm_rank() * 7 + round] = round + 1;
        ASSERT_EQ(cdsm_barrier(), CDSM_OK) << cdsm_last_error();
    }
}

TEST(Checker, CorruptedCopyIsDetected)
{
    int *a = nullptr;
    ASSERT_EQ(cdsm_alloc(cdsm_page_size(), (void **)&a), CDSM_OK);
    if (cdsm_rank() == 0) a[5] = 42;
    ASSERT_EQ(cdsm_barrier(), CDSM_OK);
    ASSERT_EQ(a[5], 42); // every rank now holds a valid copy
    ASSERT_EQ(cdsm_barrier(), CDSM_OK);
    uint32_t pg = (uint32_t)(((char *)a - cdsm__heap.base) / cdsm__heap.page_size);
    if (cdsm_rank() == cdsm_nranks() - 1) {
        // A bug's effect: this copy changes without a write notice.
        int *lib_view = (int *)(cdsm__heap.sys + (size_t)pg * cdsm__heap.page_size);
        lib_view[6] = 7;
    }
    int rc = cdsm_barrier();
    EXPECT_EQ(rc, CDSM_ERR_PROTOCOL);
    std::string msg = cdsm_last_error();
    EXPECT_NE(msg.find("page " + std::to_string(pg) + " differs"), std::string::npos) << msg;
}
