// Helpers of the MPI tests that allocate shared pages and read the counters (test_owner,
// test_home): this rank, the rank count, the page size, a collective allocation, a
// barrier and a counter snapshot, each checked.
#ifndef CDSM_DSM_TEST_UTIL_H
#define CDSM_DSM_TEST_UTIL_H

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>

#include <cdsm.h>

namespace dsmtest {

inline int me()
{
    return cdsm_rank();
}
inline int nr()
{
    return cdsm_nranks();
}
inline size_t ps()
{
    return cdsm_page_size();
}

template <typename T> T *alloc(size_t count)
{
    void *p = nullptr;
    EXPECT_EQ(cdsm_alloc(count * sizeof(T), &p), CDSM_OK) << cdsm_last_error();
    return static_cast<T *>(p);
}

inline void barrier()
{
    ASSERT_EQ(cdsm_barrier(), CDSM_OK);
}

inline cdsm_stats_t stats()
{
    cdsm_stats_t s;
    EXPECT_EQ(cdsm_stats_get(&s), CDSM_OK);
    return s;
}

// The value rank writes to a word in a round (distinct for every triple).
inline uint64_t word_value(int rank, int round, size_t word)
{
    return ((uint64_t)round << 40) ^ ((uint64_t)rank << 32) ^ (word * 2654435761u);
}

// A collective allocation of whole pages that every rank has read once (so none stays
// owned by its first toucher: each is tracked from the barrier on).
template <typename T> T *alloc_read_by_all(size_t pages)
{
    const size_t per = ps() / sizeof(T);
    T *a = alloc<T>(pages * per);
    volatile T sink = 0;
    for (size_t i = 0; i < pages * per; i += per) sink = sink + a[i];
    EXPECT_EQ(cdsm_barrier(), CDSM_OK);
    return a;
}

// Pages only their owner (first toucher, or home) uses cost nothing: no write fault, twin,
// diff, notice or interval, however often they are written between barriers.
inline void pages_their_owner_alone_uses_cost_nothing()
{
    const size_t per = 8 * ps() / sizeof(uint64_t);
    uint64_t *a = alloc<uint64_t>(per * (size_t)nr());
    uint64_t *mine = a + per * (size_t)me();
    cdsm_stats_t s0 = stats();
    for (int it = 0; it < 20; it++) {
        for (size_t i = 0; i < per; i++) mine[i] = (uint64_t)it * 1000 + i + (uint64_t)me();
        barrier();
    }
    cdsm_stats_t s1 = stats();
    EXPECT_EQ(s1.pages_owned - s0.pages_owned, 8u);
    EXPECT_EQ(s1.pages_unowned, s0.pages_unowned);
    EXPECT_EQ(s1.write_faults, s0.write_faults);
    EXPECT_EQ(s1.twins, s0.twins);
    EXPECT_EQ(s1.diffs_created, s0.diffs_created);
    EXPECT_EQ(s1.intervals, s0.intervals);
    for (size_t i = 0; i < per; i++) ASSERT_EQ(mine[i], 19000 + i + (uint64_t)me());
}

} // namespace dsmtest

#endif
