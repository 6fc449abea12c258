// Write detection (CDSM_WRITE_DETECT, DESIGN "Write detection"): whether a read-only page
// is mapped read-only (mprotect) or read-write with its userfaultfd write-protect bit set
// (uffd), every first write in an interval must be caught, or a diff goes missing and a
// rank reads stale words. The pages start as holes of the heap's memfd that every rank
// reads first (a write-protect bit set on a hole would not stick), then each rank writes
// its own words of every page each round (multiple writers per page) and reads all.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "dsm_test_util.h"

using namespace dsmtest;

namespace {

const char *mode()
{
    const char *v = getenv("CDSM_WRITE_DETECT");
    return v ? v : "auto";
}

const size_t PAGES = 96;

// Word j of every page is rank j % n's. Odd rounds write all of them; even rounds only the
// first word of each page: the rest keeps the round before's bytes, which a lost write
// would show too.
size_t words_written(int round)
{
    return round % 2 ? ps() / sizeof(uint64_t) : (size_t)nr();
}

void write_round(uint64_t *a, int r)
{
    const size_t W = ps() / sizeof(uint64_t);
    for (size_t pg = 0; pg < PAGES; pg++)
        for (size_t j = (size_t)me(); j < words_written(r); j += (size_t)nr()) a[pg * W + j] = word_value(me(), r, pg * W + j);
}

void check_round(const uint64_t *a, int r)
{
    const size_t W = ps() / sizeof(uint64_t);
    for (size_t i = 0; i < PAGES * W; i++) {
        size_t j = i % W;
        int last = j < words_written(r) ? r : r - 1;
        ASSERT_EQ(a[i], word_value((int)(j % (size_t)nr()), last, i)) << "word " << i << ", round " << r << ", " << mode();
    }
}

} // namespace

TEST(WriteDetect, EveryFirstWriteIsCaught)
{
    uint64_t *a = alloc_read_by_all<uint64_t>(PAGES);
    cdsm_stats_t s0 = stats();
    for (int r = 1; r <= 5; r++) {
        write_round(a, r);
        barrier();
        check_round(a, r);
        barrier();
    }
    cdsm_stats_t s1 = stats();
    uint64_t faults = s1.write_faults - s0.write_faults, wp = s1.write_faults_wp - s0.write_faults_wp;
    EXPECT_GT(faults, 0u);
    if (!strcmp(mode(), "uffd")) {
        EXPECT_GT(wp, 0u) << "no write fault came from a write-protect bit";
    } else if (!strcmp(mode(), "mprotect")) {
        EXPECT_EQ(wp, 0u);
    }
}
