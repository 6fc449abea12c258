// Multi-rank tests of the DSM protocol (run at 2, 3 and 4 ranks, and under several
// configurations: whole-page fetches forced, garbage collection forced, larger pages).
#include <gtest/gtest.h>
#include <string>
#include <iterator>
#include <fstream>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cdsm.h>

namespace {

int me()
{
    return cdsm_rank();
}
int nr()
{
    return cdsm_nranks();
}

template <typename T> T *alloc(size_t count)
{
    void *p = nullptr;
    int rc = cdsm_alloc(count * sizeof(T), &p);
    EXPECT_EQ(rc, CDSM_OK) << cdsm_last_error();
    return static_cast<T *>(p);
}

void barrier()
{
    ASSERT_EQ(cdsm_barrier(), CDSM_OK);
}

} // namespace

// cdsm_init started MPI with the I/O devices hidden from MPI's hwloc
// (CDSM_MPI_IO_TOPOLOGY=0): the variable it set for that must be gone again, and one the
// environment gave at exec (/proc/self/environ) must be untouched.
TEST(Dsm, StartLeavesHwlocComponentsAsItFoundIt)
{
    std::ifstream f("/proc/self/environ", std::ios::binary);
    std::string env((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>()), at_exec;
    const std::string key = "HWLOC_COMPONENTS=";
    for (size_t i = 0; i < env.size();) {
        size_t end = env.find('\0', i);
        if (end == std::string::npos) end = env.size();
        if (env.compare(i, key.size(), key) == 0) at_exec = env.substr(i, end - i);
        i = end + 1;
    }
    const char *now = getenv("HWLOC_COMPONENTS");
    if (at_exec.empty()) {
        EXPECT_EQ(now, nullptr) << "HWLOC_COMPONENTS=" << now << " left behind by cdsm_init";
    } else {
        EXPECT_EQ(key + (now ? now : "(unset)"), at_exec);
    }
}

TEST(Dsm, CollectiveAllocationHasTheSameAddressEverywhere)
{
    char *a = alloc<char>(100);
    char *b = alloc<char>(3 * cdsm_page_size());
    uintptr_t *addr = alloc<uintptr_t>(2 * (size_t)nr());
    ASSERT_NE(a, nullptr);
    EXPECT_EQ((uintptr_t)a % 64, 0u);
    EXPECT_EQ((uintptr_t)b % cdsm_page_size(), 0u);
    addr[2 * me()] = (uintptr_t)a;
    addr[2 * me() + 1] = (uintptr_t)b;
    barrier();
    for (int r = 0; r < nr(); r++) {
        EXPECT_EQ(addr[2 * r], (uintptr_t)a);
        EXPECT_EQ(addr[2 * r + 1], (uintptr_t)b);
    }
    barrier();
    EXPECT_EQ(cdsm_free(b), CDSM_OK);
    EXPECT_EQ(cdsm_free(a), CDSM_OK);
    // Freed space is reused identically on every rank.
    char *c = alloc<char>(100);
    EXPECT_EQ(c, a);
    EXPECT_EQ(cdsm_free(c), CDSM_OK);
}

TEST(Dsm, LockProtectedCounter)
{
    const int iters = 300, nlocks = 5;
    long *cnt = alloc<long>(nlocks);
    barrier();
    for (int i = 0; i < iters; i++)
        for (int l = 0; l < nlocks; l++) {
            ASSERT_EQ(cdsm_lock_acquire(l), CDSM_OK);
            cnt[l]++;
            ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
        }
    barrier();
    for (int l = 0; l < nlocks; l++) EXPECT_EQ(cnt[l], (long)iters * nr()) << "lock " << l;
    // A lock acquired after everyone's release also sees the final value.
    ASSERT_EQ(cdsm_lock_acquire(3), CDSM_OK);
    EXPECT_EQ(cnt[3], (long)iters * nr());
    ASSERT_EQ(cdsm_lock_release(3), CDSM_OK);
    barrier();
}

TEST(Dsm, MultipleWritersOnOnePageMerge)
{
    const size_t words = cdsm_page_size() / sizeof(uint32_t);
    uint32_t *page = alloc<uint32_t>(words * 2);
    for (uint32_t round = 1; round <= 6; round++) {
        // Disjoint words of the same pages: first and last words included.
        for (size_t i = (size_t)me(); i < 2 * words; i += (size_t)nr()) page[i] = round * 100000u + (uint32_t)i;
        barrier();
        for (size_t i = 0; i < 2 * words; i++) ASSERT_EQ(page[i], round * 100000u + (uint32_t)i) << "word " << i;
        barrier();
    }
}

// Distinct bytes are distinct objects (C's memory model): ranks write adjacent bytes of the
// same words in the same interval (8-bit pixels, char flags), and every byte survives the
// merge, also when a rank leaves part of a word unchanged (value equal to the old one).
TEST(Dsm, MultipleWritersOnOneWordMergeByBytes)
{
    const size_t bytes = 2 * cdsm_page_size();
    unsigned char *px = alloc<unsigned char>(bytes);
    for (unsigned round = 1; round <= 6; round++) {
        for (size_t i = (size_t)me(); i < bytes; i += (size_t)nr()) px[i] = (unsigned char)(round * 37 + i % 5);
        barrier();
        for (size_t i = 0; i < bytes; i++) {
            ASSERT_EQ(px[i], (unsigned char)(round * 37 + i % 5)) << "byte " << i << " round " << round;
        }
        barrier();
    }
}

TEST(Dsm, ProducerConsumerThroughALockChain)
{
    // Rank k waits for rank k-1 through lock k-1, checks everything ranks < k wrote
    // (transitively: it never synchronised with them directly), then passes on through lock k.
    const int per = 64;
    int *flag = alloc<int>((size_t)nr());
    int *data = alloc<int>((size_t)nr() * per);
    barrier();
    for (int round = 1; round <= 3; round++) {
        if (me() > 0) {
            for (;;) {
                ASSERT_EQ(cdsm_lock_acquire(me() - 1), CDSM_OK);
                int f = flag[me() - 1];
                if (f == round) break;
                ASSERT_EQ(cdsm_lock_release(me() - 1), CDSM_OK);
            }
            for (int r = 0; r < me(); r++)
                for (int i = 0; i < per; i++) ASSERT_EQ(data[r * per + i], round * 1000 + r * per + i);
            ASSERT_EQ(cdsm_lock_release(me() - 1), CDSM_OK);
        }
        for (int i = 0; i < per; i++) data[me() * per + i] = round * 1000 + me() * per + i;
        ASSERT_EQ(cdsm_lock_acquire(me()), CDSM_OK);
        flag[me()] = round;
        ASSERT_EQ(cdsm_lock_release(me()), CDSM_OK);
        barrier();
    }
}

TEST(Dsm, BarrierStencilIsBitIdenticalToSequential)
{
    const int N = 98, iters = 25;
    double *grid[2] = {alloc<double>((size_t)N * N), alloc<double>((size_t)N * N)};
    std::vector<double> seq[2] = {std::vector<double>((size_t)N * N), std::vector<double>((size_t)N * N)};
    auto init = [&](double *g) {
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++)
                g[i * N + j] = (i == 0) ? 1.0 : (j == 0 ? 0.5 : (i * 7 + j * 13) % 17 * 0.01);
    };
    if (me() == 0) {
        init(grid[0]);
        init(grid[1]);
    }
    init(seq[0].data());
    init(seq[1].data());
    barrier();
    auto sweep = [&](const double *src, double *dst, int lo, int hi) {
        for (int i = lo; i < hi; i++)
            for (int j = 1; j < N - 1; j++)
                dst[i * N + j] = 0.25 * (src[(i - 1) * N + j] + src[(i + 1) * N + j] + src[i * N + j - 1] +
                                         src[i * N + j + 1]);
    };
    int rows = N - 2, lo = 1 + rows * me() / nr(), hi = 1 + rows * (me() + 1) / nr();
    for (int it = 0; it < iters; it++) {
        sweep(grid[it % 2], grid[(it + 1) % 2], lo, hi);
        barrier();
        sweep(seq[it % 2].data(), seq[(it + 1) % 2].data(), 1, N - 1);
    }
    const double *res = grid[iters % 2];
    for (int i = 0; i < N; i++)
        ASSERT_EQ(0, memcmp(&res[i * N], &seq[iters % 2][(size_t)i * N], N * sizeof(double))) << "row " << i;
    barrier();
}

TEST(Dsm, LargeAllocationsAndPrivateArenas)
{
    const size_t big = (256u << 20) + 4096;
    uint8_t *p = alloc<uint8_t>(big);
    ASSERT_NE(p, nullptr);
    size_t ps = cdsm_page_size(), npg = big / ps;
    // Each rank writes every 61st page of its share; first and last byte of the block too.
    for (size_t pg = (size_t)me(); pg < npg; pg += 61 * (size_t)nr()) p[pg * ps + (pg % ps)] = (uint8_t)(pg * 7 + 1);
    if (me() == 0) p[0] = 0xa5;
    if (me() == nr() - 1) p[big - 1] = 0x5a;
    barrier();
    for (int r = 0; r < nr(); r++)
        for (size_t pg = (size_t)r; pg < npg; pg += 61 * (size_t)nr())
            if (pg != 0 && pg * ps + (pg % ps) != big - 1) {
                ASSERT_EQ(p[pg * ps + (pg % ps)], (uint8_t)(pg * 7 + 1)) << "page " << pg;
            }
    EXPECT_EQ(p[0], 0xa5);
    EXPECT_EQ(p[big - 1], 0x5a);
    barrier();
    ASSERT_EQ(cdsm_free(p), CDSM_OK);

    // Private allocations: pointers stored in shared memory are valid on every rank.
    int **slots = alloc<int *>((size_t)nr());
    int *mine = nullptr;
    ASSERT_EQ(cdsm_malloc(1000 * sizeof(int), (void **)&mine), CDSM_OK);
    for (int i = 0; i < 1000; i++) mine[i] = me() * 1000 + i;
    slots[me()] = mine;
    barrier();
    for (int r = 0; r < nr(); r++)
        for (int i = 0; i < 1000; i += 37) ASSERT_EQ(slots[r][i], r * 1000 + i);
    int other = (me() + 1) % nr();
    if (other != me()) {
        EXPECT_EQ(cdsm_free(slots[other]), CDSM_ERR_INVALID_ARG);
        EXPECT_NE(std::string(cdsm_last_error()).find("owner"), std::string::npos);
    }
    barrier();
    EXPECT_EQ(cdsm_free(mine), CDSM_OK);
    EXPECT_EQ(cdsm_free(mine), CDSM_ERR_INVALID_ARG); // double free is caught
}

TEST(Dsm, BadArgumentsAreRejected)
{
    void *p = nullptr;
    EXPECT_EQ(cdsm_alloc(0, &p), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_malloc(16, nullptr), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_alloc((size_t)1 << 40, &p), CDSM_ERR_NO_SPACE);
    int x;
    EXPECT_EQ(cdsm_free(&x), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_lock_acquire(-1), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_lock_acquire(cdsm_nlocks()), CDSM_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cdsm_last_error()).find("CDSM_LOCKS"), std::string::npos);
    EXPECT_EQ(cdsm_lock_release(2), CDSM_ERR_INVALID_ARG);
    ASSERT_EQ(cdsm_lock_acquire(2), CDSM_OK);
    EXPECT_EQ(cdsm_lock_acquire(2), CDSM_ERR_INVALID_ARG);
    ASSERT_EQ(cdsm_lock_release(2), CDSM_OK);
    barrier();
}

TEST(Dsm, ManyIntervalsManyPagesStayConsistent)
{
    // Work that produces many diffs and notices (exercises GC under a small bound):
    // each round every rank rewrites a rotating share of 64 pages, then all check.
    const size_t ps = cdsm_page_size(), npg = 64, words = npg * ps / 8;
    uint64_t *a = alloc<uint64_t>(words);
    for (uint64_t round = 1; round <= 20; round++) {
        for (size_t pg = 0; pg < npg; pg++) {
            if ((pg + round) % (size_t)nr() != (size_t)me()) continue;
            uint64_t *w = a + pg * ps / 8;
            for (size_t i = 0; i < ps / 8; i += 3) w[i] = round * 1000003u + pg * 131 + i;
        }
        barrier();
        for (size_t pg = 0; pg < npg; pg++) {
            const uint64_t *w = a + pg * ps / 8;
            for (size_t i = 0; i < ps / 8; i += 3) ASSERT_EQ(w[i], round * 1000003u + pg * 131 + i);
        }
        barrier();
    }
}

TEST(Dsm, StatisticsCountTheProtocol)
{
    cdsm_stats_t s, total;
    ASSERT_EQ(cdsm_stats_get(&s), CDSM_OK);
    EXPECT_GT(s.barriers, 0u);
    if (nr() == 1) {
        // One rank owns every page: no other rank can need one, so nothing is tracked.
        EXPECT_EQ(s.write_faults, 0u);
        EXPECT_EQ(s.twins, 0u);
        EXPECT_EQ(s.diffs_created, 0u);
        EXPECT_EQ(s.intervals, 0u);
    } else {
        // Pages several ranks write are tracked, whether or not pages start owned.
        EXPECT_GT(s.write_faults, 0u);
        EXPECT_GT(s.intervals, 0u);
    }
    if (nr() > 1) {
        EXPECT_GT(s.msgs_sent, 0u);
        EXPECT_GT(s.read_faults, 0u);
        EXPECT_GT(s.diffs_applied + s.pages_fetched, 0u);
    }
    const char *tp = getenv("CDSM_TRANSPORT");
    if (tp && strcmp(tp, "socket") == 0) {
        // Messages travel as frames on the sockets: none was announced by a doorbell byte.
        EXPECT_EQ(s.doorbells, 0u);
        if (nr() > 1) {
            EXPECT_GT(s.msgs_recv, 0u);
        }
    }
    ASSERT_EQ(cdsm_stats_reduce(&s, &total), CDSM_OK);
    EXPECT_GE(total.barriers, s.barriers);
    EXPECT_GE(total.write_faults, s.write_faults);
    EXPECT_EQ(cdsm_stats_reduce(nullptr, &total), CDSM_ERR_INVALID_ARG);
}

// Fault-around follows what it pays for: scattered writes (one page in ten, each page once,
// so none turns hot) leave the pages made writable ahead unwritten, and after the first
// rounds a write fault makes at most a probe's worth of them (seven per fault without
// the rule); then a sequential writer gets it back within its first pass. Every value
// is checked on the other ranks.
TEST(Dsm, FaultAroundFollowsTheWritesItPays)
{
    const char *fa = getenv("CDSM_FAULT_AROUND");
    if (nr() < 2 || (fa && strcmp(fa, "1") == 0)) {
        GTEST_SKIP() << "pages are tracked only when another rank reads them; fault-around must be on";
    }
    const size_t npg = 320, stride = 10, w = cdsm_page_size() / sizeof(uint64_t);
    uint64_t *a = alloc<uint64_t>(npg * w);
    if (me() == 0)
        for (size_t pg = 0; pg < npg; pg++) a[pg * w] = pg;
    barrier();
    uint64_t sum = 0; // every rank reads every page: all are tracked from here on
    for (size_t pg = 0; pg < npg; pg++) sum += a[pg * w];
    EXPECT_EQ(sum, npg * (npg - 1) / 2);
    barrier();
    cdsm_stats_t s0{}, s1{}, s2{};
    for (size_t round = 0; round < stride; round++) {
        if (round == 3) {
            ASSERT_EQ(cdsm_stats_get(&s0), CDSM_OK);
        }
        if (me() == 0)
            for (size_t pg = round; pg < npg; pg += stride) a[pg * w + 1] = 1000 + pg;
        barrier();
    }
    ASSERT_EQ(cdsm_stats_get(&s1), CDSM_OK);
    if (me() == 0)
        for (size_t pg = 0; pg < npg; pg++) a[pg * w + 2] = 2000 + pg;
    barrier();
    ASSERT_EQ(cdsm_stats_get(&s2), CDSM_OK);
    if (me() == 0) {
        uint64_t faults = s1.write_faults - s0.write_faults, ahead = s1.fault_around - s0.fault_around;
        EXPECT_EQ(faults, (stride - 3) * npg / stride);
        EXPECT_LT(ahead, faults / 2) << "pages made writable ahead of scattered writes";
        EXPECT_GT(s1.fault_around_unused, 0u);
        EXPECT_LT(s2.write_faults - s1.write_faults, npg / 3) << "a sequential pass over " << npg << " pages";
    }
    for (size_t pg = 0; pg < npg; pg++) {
        ASSERT_EQ(a[pg * w + 1], 1000 + pg);
        ASSERT_EQ(a[pg * w + 2], 2000 + pg);
    }
    barrier();
}

// A column walk (a stride of 3 pages) over pages another rank wrote fetches the stream's
// pages in batches, and sees every write, whether the pages come whole or as diffs.
TEST(Dsm, StridedReadsComeInBatchesAndSeeEveryWrite)
{
    const size_t np = 96, stride = 3, walked = np / stride, words = cdsm_page_size() / sizeof(uint64_t);
    uint64_t *a = alloc<uint64_t>(np * words);
    for (int round = 0; round < 3; round++) {
        if (me() == 0) {
            for (size_t i = 0; i < np * words; i += (size_t)round + 1) a[i] = (uint64_t)round << 32 | i;
        }
        barrier();
        if (me() != 0) {
            cdsm_stats_t s0, s1;
            ASSERT_EQ(cdsm_stats_get(&s0), CDSM_OK);
            for (size_t pg = 0; pg < np; pg += stride) ASSERT_EQ(a[pg * words], (uint64_t)round << 32 | pg * words);
            ASSERT_EQ(cdsm_stats_get(&s1), CDSM_OK);
            EXPECT_LT(s1.read_faults - s0.read_faults, walked / 2) << "round " << round;
            for (size_t i = 0; i < np * words; i++) {
                uint64_t want = 0;
                for (int r = round; r >= 0; r--)
                    if (i % (size_t)(r + 1) == 0) {
                        want = (uint64_t)r << 32 | i;
                        break;
                    }
                ASSERT_EQ(a[i], want) << "round " << round << " word " << i;
            }
        }
        barrier();
    }
}

// A rank waiting inside the library (for a barrier's release, a lock grant) receives
// messages itself, so node-mates on the mpi transport send to it without ringing its
// doorbell (CDSM_SKIP_BELLS): every message still arrives, none is late for good, and the
// counter says whether any doorbell was skipped. Run with a long CDSM_SPIN_US
// (dsm_skip_bells_np3), every release finds its receiver waiting, so some must be skipped;
// with skipping off or on the socket transport, none may be.
TEST(Dsm, WaitersInTheLibraryTakeMessagesWithoutDoorbells)
{
    const int rounds = 60;
    long *v = alloc<long>(rounds + 1);
    barrier();
    cdsm_stats_t s0, s1, total;
    ASSERT_EQ(cdsm_stats_get(&s0), CDSM_OK);
    for (int i = 0; i < rounds; i++) {
        ASSERT_EQ(cdsm_lock_acquire(7), CDSM_OK);
        v[0]++;
        ASSERT_EQ(cdsm_lock_release(7), CDSM_OK);
        if (me() == i % nr()) v[1 + i] = 7L * i + 1;
        barrier();
        ASSERT_EQ(v[1 + i], 7L * i + 1) << "round " << i;
    }
    barrier();
    EXPECT_EQ(v[0], (long)rounds * nr());
    ASSERT_EQ(cdsm_stats_get(&s1), CDSM_OK);
    s1.doorbells_skipped -= s0.doorbells_skipped;
    ASSERT_EQ(cdsm_stats_reduce(&s1, &total), CDSM_OK);
    const char *tp = getenv("CDSM_TRANSPORT"), *skip = getenv("CDSM_SKIP_BELLS"), *spin = getenv("CDSM_SPIN_US");
    bool off = nr() == 1 || (tp && strcmp(tp, "socket") == 0) || (skip && strcmp(skip, "0") == 0);
    if (off) {
        EXPECT_EQ(total.doorbells_skipped, 0u);
    } else if (spin && atol(spin) >= 1000000) {
        EXPECT_GT(total.doorbells_skipped, 0u);
    }
}
