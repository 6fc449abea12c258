// The node heap (CDSM_NODE_HEAP=1, every rank on this host): one heap for every rank,
// locks as shared words. Run at 2 and 4 ranks; the protocol's own tests run with
// CDSM_NODE_HEAP=0 (tests/meson.build).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>

#include <cdsm.h>

#include "dsm_test_util.h"

using namespace dsmtest;

namespace {

// A write is seen by the other ranks at once, with no synchronisation at all: a rank
// polls a word another rank stores to (under the page protocol it would poll its own
// copy for ever). Bounded: 20 s, then the test fails.
TEST(NodeHeap, AWriteIsSeenWithoutSynchronisation)
{
    auto *w = alloc<uint64_t>(ps() / sizeof(uint64_t));
    barrier();
    auto *flag = reinterpret_cast<std::atomic<uint64_t> *>(w);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    // A token passed around the ring of ranks by plain stores: rank r waits for r, writes r+1.
    for (int round = 0; round < 50; round++) {
        uint64_t mine = (uint64_t)round * nr() + me();
        if (me() == 0 && round == 0) flag->store(0);
        while (flag->load(std::memory_order_acquire) != mine && std::chrono::steady_clock::now() < until) {
        }
        ASSERT_EQ(flag->load(), mine) << "rank " << me() << " never saw the token of round " << round;
        flag->store(mine + 1, std::memory_order_release);
    }
    barrier();
    cdsm_stats_t s = stats();
    EXPECT_EQ(s.read_faults, 0u) << "a node heap takes no access fault";
    EXPECT_EQ(s.write_faults, 0u);
    barrier();
    ASSERT_EQ(cdsm_free(w), CDSM_OK);
}

// Mutual exclusion: a read-modify-write of two words that must stay equal, by every rank
// in turn, many times; no update is lost and no rank sees the words apart.
TEST(NodeHeap, LocksExcludeAndLoseNoUpdate)
{
    auto *w = alloc<uint64_t>(2);
    if (me() == 0) w[0] = w[1] = 0; // (a collective allocation is not cleared)
    barrier();
    const int rounds = 20000;
    uint64_t apart = 0;
    for (int i = 0; i < rounds; i++) {
        ASSERT_EQ(cdsm_lock_acquire(7), CDSM_OK) << cdsm_last_error();
        volatile uint64_t *v = w;
        uint64_t a = v[0], b = v[1];
        apart += a != b;
        v[0] = a + 1;
        v[1] = b + 1;
        ASSERT_EQ(cdsm_lock_release(7), CDSM_OK) << cdsm_last_error();
    }
    barrier();
    EXPECT_EQ(apart, 0u);
    EXPECT_EQ(w[0], (uint64_t)rounds * nr());
    EXPECT_EQ(w[1], (uint64_t)rounds * nr());
    barrier();
    ASSERT_EQ(cdsm_free(w), CDSM_OK);
}

// Many locks at once, taken in id order (no deadlock): each guards its own counter.
TEST(NodeHeap, ManyLocksEachGuardItsCounter)
{
    const int nl = 64;
    auto *c = alloc<uint64_t>(nl);
    if (me() == 0) std::memset(c, 0, nl * sizeof *c);
    barrier();
    for (int i = 0; i < 4000; i++) {
        int a = (i * 7 + me()) % nl, b = (a + 1 + i % 5) % nl;
        if (a > b) std::swap(a, b);
        ASSERT_EQ(cdsm_lock_acquire(a), CDSM_OK);
        c[a]++;
        if (b != a) {
            ASSERT_EQ(cdsm_lock_acquire(b), CDSM_OK);
            c[b]++;
            ASSERT_EQ(cdsm_lock_release(b), CDSM_OK);
        }
        ASSERT_EQ(cdsm_lock_release(a), CDSM_OK);
    }
    barrier();
    uint64_t want = 0;
    for (int r = 0; r < nr(); r++)
        for (int i = 0; i < 4000; i++) {
            int a = (i * 7 + r) % nl, b = (a + 1 + i % 5) % nl;
            want += a == b ? 1 : 2;
        }
    uint64_t sum = 0;
    for (int i = 0; i < nl; i++) sum += c[i];
    EXPECT_EQ(sum, want);
    barrier();
    ASSERT_EQ(cdsm_free(c), CDSM_OK);
}

// What the protocol refuses, the node heap refuses the same way.
TEST(NodeHeap, LockMisuseIsAnError)
{
    EXPECT_EQ(cdsm_lock_release(3), CDSM_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cdsm_last_error()).find("not held"), std::string::npos) << cdsm_last_error();
    ASSERT_EQ(cdsm_lock_acquire(3), CDSM_OK);
    EXPECT_EQ(cdsm_lock_acquire(3), CDSM_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cdsm_last_error()).find("already held"), std::string::npos) << cdsm_last_error();
    ASSERT_EQ(cdsm_lock_release(3), CDSM_OK);
    EXPECT_EQ(cdsm_lock_acquire(cdsm_nlocks()), CDSM_ERR_INVALID_ARG);
    barrier();
}

// Private allocations of different ranks never overlap, and each rank's writes to its
// own stay its own (one heap, per-rank arenas).
TEST(NodeHeap, PrivateAllocationsDoNotOverlap)
{
    const size_t n = 3 * ps() / sizeof(uint32_t);
    void *p = nullptr;
    ASSERT_EQ(cdsm_malloc(n * sizeof(uint32_t), &p), CDSM_OK) << cdsm_last_error();
    auto *mine = static_cast<uint32_t *>(p);
    for (size_t i = 0; i < n; i++) mine[i] = (uint32_t)me() * 1000003u + (uint32_t)i;
    barrier();
    for (size_t i = 0; i < n; i++) ASSERT_EQ(mine[i], (uint32_t)me() * 1000003u + (uint32_t)i) << i;
    barrier();
    ASSERT_EQ(cdsm_free(p), CDSM_OK);
}

// A collective allocation is one block of memory: a rank's writes before a barrier are
// what every rank reads after it.
TEST(NodeHeap, BarrierPublishesEveryWrite)
{
    const size_t n = 64 * ps() / sizeof(uint32_t);
    auto *a = alloc<uint32_t>(n);
    for (int round = 1; round <= 5; round++) {
        for (size_t i = (size_t)me(); i < n; i += (size_t)nr()) a[i] = (uint32_t)(round * 7919 + i);
        barrier();
        for (size_t i = 0; i < n; i++)
            ASSERT_EQ(a[i], (uint32_t)(round * 7919 + i)) << "word " << i << " round " << round;
        barrier();
    }
    ASSERT_EQ(cdsm_free(a), CDSM_OK);
}

} // namespace
