// Lazy release (DESIGN, "Lazy release"): a release that hands the token to nobody closes
// no interval; the interval closes when its writes must leave the process, at the latest
// when another rank takes the token, and then the service thread diffs the pages the
// application may be writing at that moment from a copy of each (a live close). Run with it on (the default without
// spares) and off (CDSM_LAZY_RELEASE=0): the answers must be the same, the counters differ.
// And diffs with the grant (CDSM_GRANT_DIFFS): what the granter wrote comes with the token.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <mpi.h>

#include "dsm_test_util.h"

using namespace dsmtest;

namespace {

// Whether a setting that is on by default was left on (only "0" turns it off).
bool setting_on(const char *var)
{
    const char *v = getenv(var);
    return !(v && strcmp(v, "0") == 0);
}

bool grant_diffs_on()
{
    return setting_on("CDSM_GRANT_DIFFS");
}

// Wait for rank `from`'s go (an MPI message: no interval sees it), or give rank `to` one.
void wait_go(int from)
{
    int k;
    MPI_Recv(&k, 1, MPI_INT, from, 79, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
}
void give_go(int to)
{
    int k = 1;
    MPI_Send(&k, 1, MPI_INT, to, 79, MPI_COMM_WORLD);
}

// Hot pages (CDSM_HOT_IDLE=0 turns them off: then nothing is kept in place).
bool hot_on()
{
    return setting_on("CDSM_HOT_IDLE");
}

bool lazy_on()
{
    return setting_on("CDSM_LAZY_RELEASE");
}

// Every rank reads the pages once, so that none stays owned by its first toucher: owned
// pages are never tracked, and these tests are about tracked ones.
void share(const uint64_t *a, size_t words)
{
    volatile uint64_t sink = 0;
    for (size_t i = 0; i < words; i += ps() / sizeof(uint64_t)) sink = sink + a[i];
    barrier();
}

} // namespace

// A rank taking and giving back a lock nobody else wants, 50 times, writing each time:
// lazily, that is one open interval (no record until the barrier); eagerly, 50 records.
// Either way every rank sees the last value after the barrier.
TEST(LazyRelease, ReleasesNobodyWaitsForCloseNoInterval)
{
    const size_t W = ps() / sizeof(uint64_t);
    uint64_t *a = alloc<uint64_t>(W);
    if (me() == 0) a[0] = 1;
    barrier();
    share(a, W);
    cdsm_stats_t s0 = stats();
    if (me() == 0) { // lock 0 is managed by rank 0: its token starts here
        for (int k = 0; k < 50; k++) {
            ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
            a[0] += 1;
            ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
        }
        cdsm_stats_t s1 = stats();
        EXPECT_EQ(s1.lock_acquires_local - s0.lock_acquires_local, 50u);
        if (lazy_on() && nr() > 1) {
            EXPECT_EQ(s1.lazy_releases - s0.lazy_releases, 50u);
            EXPECT_EQ(s1.intervals, s0.intervals);
        } else if (nr() > 1) {
            EXPECT_EQ(s1.lazy_releases, s0.lazy_releases);
            EXPECT_EQ(s1.intervals - s0.intervals, 50u);
        }
    }
    barrier();
    EXPECT_EQ(a[0], 51u);
    barrier();
}

// Each round, rank 0 writes four pages under lock 0 (managed by rank 0) and releases it
// with nobody waiting: lazily, its interval stays open. Only then (an MPI message, which
// no interval sees) do the other ranks take the lock, while rank 0 goes on writing, outside
// any lock, words it writes only once, spread over many pages that stay writable. So each round the service thread of rank 0 closes the interval
// while the program writes (a live close: the pages are diffed from a copy of each, which
// becomes the twin, and stay writable; copying the page into the twin after the diff lost
// words here). Every grant must carry the whole critical section (the four
// pages at one value, never going back), and no write may be lost: after the barrier
// every rank sees every word rank 0 wrote.
TEST(LazyRelease, GrantsCarryTheCriticalSectionAndLoseNoLaterWrite)
{
    const size_t W = ps() / sizeof(uint64_t), P = 4, NPOST = 256 * W;
    const uint64_t rounds = 150;
    // Word w goes to page w mod 256: every page is written again and again (it turns hot,
    // and stays writable across intervals), each word once.
    auto slot = [&](size_t w) { return (w % 256) * W + w / 256; };
    uint64_t *cs = alloc<uint64_t>(P * W);
    uint64_t *post = alloc<uint64_t>(NPOST + 1);
    share(cs, P * W);
    share(post, NPOST + 1);
    cdsm_stats_t s0 = stats();
    int n = nr();
    if (me() == 0) {
        volatile uint64_t *vp = post;
        size_t next = 0;
        for (uint64_t k = 1; k <= rounds; k++) {
            ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
            for (size_t i = 0; i < P * W; i += 64) cs[i] = k;
            ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
            for (int r = 1; r < n; r++) MPI_Send(&k, 1, MPI_UINT64_T, r, 77, MPI_COMM_WORLD);
            int left = n - 1;
            while (left > 0) {
                for (int j = 0; j < 64 && next < NPOST; j++, next++) vp[slot(next)] = next + 1;
                int flag = 0;
                MPI_Status st;
                MPI_Iprobe(MPI_ANY_SOURCE, 78, MPI_COMM_WORLD, &flag, &st);
                if (flag) {
                    uint64_t done;
                    MPI_Recv(&done, 1, MPI_UINT64_T, st.MPI_SOURCE, 78, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                    left--;
                }
            }
        }
        post[NPOST] = next;
        cdsm_stats_t s1 = stats();
        if (lazy_on() && n > 1) {
            EXPECT_EQ(s1.lazy_releases - s0.lazy_releases, rounds);
            EXPECT_EQ(s1.lazy_closes - s0.lazy_closes, rounds); // one grant per round closed it
            // The service thread made those closes while this loop wrote: the pages it
            // writes stayed writable, diffed from a copy (no protection, no new fault).
            EXPECT_GT(s1.live_closed - s0.live_closed, 0u);
        } else {
            EXPECT_EQ(s1.lazy_closes, s0.lazy_closes);
            EXPECT_EQ(s1.live_closed, s0.live_closed);
        }
    } else {
        uint64_t last = 0;
        for (uint64_t j = 0; j < rounds; j++) {
            uint64_t k;
            MPI_Recv(&k, 1, MPI_UINT64_T, 0, 77, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
            uint64_t v = cs[0];
            for (size_t i = 0; i < P * W; i += 64) ASSERT_EQ(cs[i], v) << "word " << i << ", round " << k;
            ASSERT_GE(v, k) << "round " << k;
            ASSERT_GE(v, last) << "round " << k;
            last = v;
            ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
            MPI_Send(&k, 1, MPI_UINT64_T, 0, 78, MPI_COMM_WORLD);
        }
    }
    barrier();
    uint64_t written = post[NPOST];
    ASSERT_GT(written, 0u);
    for (size_t i = 0; i < written; i++) ASSERT_EQ(post[slot(i)], i + 1) << "word " << i << " of " << written;
    for (size_t i = 0; i < P * W; i += 64) ASSERT_EQ(cs[i], rounds) << "word " << i;
    barrier();
}

// A remote acquire keeps the acquirer's interval open (lazy release on) unless the grant
// names a page written in it: rank 0 writes page A outside any lock, then takes lock 1
// from rank 1, whose critical section wrote page B only: no interval is closed, and rank
// 0 still sees B. Then rank 1 takes the lock back and must see A (rank 0's grant closes
// it). Second round: rank 0 writes word 0 of page C, and the grant names C (rank 1 wrote
// word 1 of it): rank 0's interval ends before the notice, and both words survive on
// both ranks. With lazy release off every acquire closes the interval.
TEST(LazyRelease, ARemoteAcquireEndsTheIntervalOnlyForThePagesItsGrantNames)
{
    if (nr() < 2) GTEST_SKIP() << "needs two ranks";
    const size_t W = ps() / sizeof(uint64_t);
    uint64_t *pa = alloc<uint64_t>(3 * W), *pb = pa + W, *pc = pa + 2 * W;
    share(pa, 3 * W);
    const int lock = 1; // managed by rank 1: its token starts there
    for (int round = 0; round < 2; round++) {
        uint64_t *mine = round ? pc : pa, *theirs = round ? pc + 1 : pb;
        if (me() == 1) {
            ASSERT_EQ(cdsm_lock_acquire(lock), CDSM_OK);
            *theirs = 100 + (uint64_t)round;
            ASSERT_EQ(cdsm_lock_release(lock), CDSM_OK);
            give_go(0);
            wait_go(0);
            ASSERT_EQ(cdsm_lock_acquire(lock), CDSM_OK);
            EXPECT_EQ(*mine, 200 + (uint64_t)round) << "round " << round;
            EXPECT_EQ(*theirs, 100 + (uint64_t)round) << "round " << round;
            ASSERT_EQ(cdsm_lock_release(lock), CDSM_OK);
        } else if (me() == 0) {
            wait_go(1);
            *mine = 200 + (uint64_t)round;
            cdsm_stats_t s0 = stats();
            ASSERT_EQ(cdsm_lock_acquire(lock), CDSM_OK);
            cdsm_stats_t s1 = stats();
            EXPECT_EQ(s1.lock_acquires_local, s0.lock_acquires_local) << "a remote acquire";
            EXPECT_EQ(s1.intervals - s0.intervals, lazy_on() && round == 0 ? 0u : 1u) << "round " << round;
            EXPECT_EQ(*theirs, 100 + (uint64_t)round) << "round " << round;
            EXPECT_EQ(*mine, 200 + (uint64_t)round) << "round " << round;
            ASSERT_EQ(cdsm_lock_release(lock), CDSM_OK);
            give_go(1);
        }
        barrier();
        EXPECT_EQ(round ? pc[0] : pa[0], 200 + (uint64_t)round);
        EXPECT_EQ(round ? pc[1] : pb[0], 100 + (uint64_t)round);
        barrier();
    }
}

// Rank 0 writes two pages under lock 0 that rank 1 holds copies of; rank 1 then takes the
// lock: the grant brings rank 0's diffs, and rank 1 reads both pages with no miss. Rank 2
// (at 3 ranks and more) takes the lock from rank 1, whose grant carries only rank 1's own
// diffs: it misses on rank 0's pages and fetches them, and sees the same values.
TEST(GrantDiffs, TheCriticalSectionComesWithTheToken)
{
    if (nr() < 2) GTEST_SKIP() << "needs two ranks";
    const size_t W = ps() / sizeof(uint64_t);
    uint64_t *a = alloc<uint64_t>(2 * W);
    share(a, 2 * W);
    if (me() == 0) {
        ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
        a[3] = 11;
        a[W + 5] = 12;
        ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
        give_go(1);
    } else if (me() == 1 || me() == 2) {
        wait_go(me() - 1);
        cdsm_stats_t s0 = stats();
        ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
        cdsm_stats_t s1 = stats();
        EXPECT_EQ(a[3], 11u);
        EXPECT_EQ(a[W + 5], 12u);
        cdsm_stats_t s2 = stats();
        // The page a diff made valid is read-only again: this write is tracked.
        a[W + 6 + (size_t)me()] = 20u + (uint64_t)me();
        ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
        if (me() == 1 && nr() > 2) give_go(2);
        if (me() == 1 && grant_diffs_on()) {
            EXPECT_EQ(s1.grant_diffs_applied - s0.grant_diffs_applied, 2u);
            EXPECT_EQ(s2.read_faults, s1.read_faults); // both pages valid on arrival
        } else {
            EXPECT_EQ(s1.grant_diffs_applied, s0.grant_diffs_applied);
            EXPECT_EQ(s2.read_faults - s1.read_faults, 2u); // one miss per page
        }
    }
    barrier();
    EXPECT_EQ(a[3], 11u);
    EXPECT_EQ(a[W + 5], 12u);
    for (int r = 1; r < nr() && r <= 2; r++) EXPECT_EQ(a[W + 6 + (size_t)r], 20u + (uint64_t)r) << "rank " << r;
    barrier();
}

// A page that lacks another rank's write as well is not made valid by the grant's diffs:
// rank 2 writes word 1 under lock 0, rank 0 takes the lock and writes word 0, and rank 1
// takes it from rank 0. Rank 1's copy lacks both writes; the grant carries rank 0's diff
// only, so the page stays invalid and its miss fetches both.
TEST(GrantDiffs, APageLackingOtherWritesIsFetchedAtItsMiss)
{
    if (nr() < 3) GTEST_SKIP() << "needs three ranks";
    const size_t W = ps() / sizeof(uint64_t);
    uint64_t *a = alloc<uint64_t>(W);
    share(a, W);
    // Rank 2 writes word 1, then rank 0 word 0, each under lock 0, in that order.
    for (int turn = 0; turn < 2; turn++) {
        int who = turn == 0 ? 2 : 0;
        if (me() != who) continue;
        if (turn == 1) wait_go(2);
        ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
        a[turn == 0 ? 1 : 0] = turn == 0 ? 7 : 5;
        ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
        give_go(turn == 0 ? 0 : 1);
    }
    if (me() == 1) {
        wait_go(0);
        ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
        cdsm_stats_t s1 = stats();
        EXPECT_EQ(a[0], 5u);
        EXPECT_EQ(a[1], 7u);
        cdsm_stats_t s2 = stats();
        ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
        EXPECT_EQ(s2.read_faults - s1.read_faults, 1u);
    }
    barrier();
    EXPECT_EQ(a[0], 5u);
    EXPECT_EQ(a[1], 7u);
    barrier();
}

// A page written under a lock that goes back and forth is hot on both sides. Its grant's
// diff is applied in place, to the page and to its twin alike, and the page stays writable
// (counter grant_patched): no fault and no new twin per hand-off. The same page holds each
// rank's own slot, written outside the lock: had the twin kept the bytes of before the
// grant, the holder's next diff would carry the other rank's slot as its own write, at an
// older value, and that rank would see its slot go back when the diff came to it.
TEST(GrantDiffs, AHotPageTakesTheGrantInPlace)
{
    if (nr() < 2) GTEST_SKIP() << "needs two ranks";
    const size_t W = ps() / sizeof(uint64_t), TURN = 0, COUNT = 1, SLOT = 8;
    const uint64_t ROUNDS = 60;
    uint64_t *a = alloc<uint64_t>(W);
    share(a, W);
    if (me() < 2) {
        const int other = 1 - me();
        cdsm_stats_t s0 = stats();
        uint64_t done = 0;
        double since = MPI_Wtime(); // (a lost turn would leave both ranks waiting for it)
        while (done < ROUNDS) {
            ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
            bool mine = a[TURN] == (uint64_t)me();
            if (mine) {
                a[COUNT]++;
                a[TURN] = (uint64_t)other;
                done++;
                since = MPI_Wtime();
            }
            ASSERT_LT(MPI_Wtime() - since, 20.0) << "round " << done << ": no turn for 20 s, turn word " << a[TURN]
                                                  << ", count " << a[COUNT];
            ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
            if (mine) a[SLOT + (size_t)me()] = done; // outside the lock: only this rank writes it
            ASSERT_EQ(a[SLOT + (size_t)me()], done) << "round " << done << ": a diff brought back an old value";
        }
        cdsm_stats_t s1 = stats();
        if (grant_diffs_on() && hot_on()) {
            EXPECT_GT(s1.grant_patched - s0.grant_patched, 0u);
        } else {
            EXPECT_EQ(s1.grant_patched, s0.grant_patched);
        }
    }
    barrier();
    EXPECT_EQ(a[COUNT], 2 * ROUNDS);
    EXPECT_EQ(a[SLOT], ROUNDS);
    EXPECT_EQ(a[SLOT + 1], ROUNDS);
    barrier();
}

// The same at barriers: each rank writes its own part of a page in every phase, so the page
// is hot on every side and every release's notices name it. The refetch applies the others'
// diffs to page and twin and the page stays writable (counter refetch_patched). Had the
// twin kept the others' old bytes, this rank's next diff would carry them as its own
// writes, and each other rank would see its own part go back one phase right after the
// next barrier (checked there: only its owner writes a part, so reading it is race-free).
TEST(Refetch, AHotPageTakesTheOthersPartsInPlace)
{
    const size_t W = ps() / sizeof(uint64_t), PHASES = 24;
    const int n = nr();
    uint64_t *a = alloc<uint64_t>(W);
    share(a, W);
    const size_t part = W / (size_t)n, mine = part * (size_t)me();
    cdsm_stats_t s0 = stats();
    for (uint64_t ph = 1; ph <= PHASES; ph++) {
        for (size_t i = mine; i < mine + part; i++) a[i] = ph * 1000 + (uint64_t)me();
        barrier();
        for (size_t i = mine; i < mine + part; i += 7)
            ASSERT_EQ(a[i], ph * 1000 + (uint64_t)me()) << "phase " << ph << ": this rank's part went back, word " << i;
    }
    cdsm_stats_t s1 = stats();
    barrier();
    for (int r = 0; r < n; r++)
        for (size_t i = part * (size_t)r; i < part * (size_t)(r + 1); i += 7)
            ASSERT_EQ(a[i], PHASES * 1000 + (uint64_t)r) << "rank " << r << "'s part, word " << i;
    if (n > 1 && hot_on()) {
        EXPECT_GT(s1.refetch_patched - s0.refetch_patched, PHASES / 2) << "the page stayed hot";
    }
    barrier();
}
