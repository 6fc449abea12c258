// Shared lock words (DESIGN, "Shared lock words"): a node-mate joins a lock's queue by an
// exchange on the manager's tail word, and takes the previous tail's token in shared
// memory, with no message, when it was never used (a claim) or was released before the
// taker's last barrier (a take); otherwise it asks the previous tail, which grants.
// Every rank increments one counter per lock under that lock, all starting together (so
// claims race with each other and with the managers' own first acquires): each counter
// must end at the rank count. Then a value written under a claimed lock must reach the
// manager through the lock alone (an MPI message only says when; no barrier between).
// Then takes: a token released before a barrier moves with no message and its holder,
// coming back, queues behind the taker; one released since moves by a grant; and rounds
// of increments across barriers keep mutual exclusion while takes race with re-acquires.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <mpi.h>

#include "dsm_test_util.h"

using namespace dsmtest;

namespace {

const int FIRST = 101, NLOCKS = 60, TAKE_LOCK = 301, ROUNDS = 6;

// The socket provider has no shared lock words: every token held elsewhere is asked for.
bool words_on()
{
    const char *t = getenv("CDSM_TRANSPORT");
    return !t || strcmp(t, "socket") != 0;
}

} // namespace

TEST(Claims, RacingFirstAcquiresKeepMutualExclusion)
{
    uint64_t *cnt = alloc<uint64_t>(NLOCKS);
    barrier();
    cdsm_stats_t s0 = stats();
    for (int k = 0; k < NLOCKS; k++) {
        int l = (k + me() * 7) % NLOCKS; // each rank in its own order
        ASSERT_EQ(cdsm_lock_acquire(FIRST + l), CDSM_OK);
        cnt[l] += 1;
        ASSERT_EQ(cdsm_lock_release(FIRST + l), CDSM_OK);
    }
    barrier();
    for (int l = 0; l < NLOCKS; l++) ASSERT_EQ(cnt[l], (uint64_t)nr()) << "lock " << FIRST + l;
    cdsm_stats_t s1 = stats(), all;
    cdsm_stats_t mine = s1;
    mine.lock_claims = s1.lock_claims - s0.lock_claims;
    mine.rma_atomics = s1.rma_atomics - s0.rma_atomics;
    ASSERT_EQ(cdsm_stats_reduce(&mine, &all), CDSM_OK);
    // Node-mates (every test runs on one host) claim some: the first acquire of a lock
    // whose manager had not reached it yet.
    if (words_on()) {
        EXPECT_GT(all.lock_claims, 0u);
    }
    // With CDSM_RMA=all every word operation goes through MPI RMA (none in shared memory).
    const char *rma = getenv("CDSM_RMA");
    if (rma && !strcmp(rma, "all")) {
        EXPECT_GT(all.rma_atomics, 0u);
    } else {
        EXPECT_EQ(all.rma_atomics, 0u);
    }
    barrier();
}

TEST(Claims, WritesUnderAClaimedLockReachTheManagerThroughTheLock)
{
    const int l = FIRST + NLOCKS + 1;
    const int mgr = l % nr(), claimant = (mgr + 1) % nr();
    uint64_t *v = alloc<uint64_t>(1);
    MPI_Comm order; // (only says "done"; MPI carries no shared-memory writes)
    ASSERT_EQ(MPI_Comm_dup(MPI_COMM_WORLD, &order), MPI_SUCCESS);
    barrier();
    if (me() == claimant) {
        cdsm_stats_t a = stats();
        ASSERT_EQ(cdsm_lock_acquire(l), CDSM_OK);
        if (words_on()) {
            EXPECT_EQ(stats().lock_claims - a.lock_claims, 1u) << "the fresh lock was not claimed";
            EXPECT_EQ(stats().msgs_sent - a.msgs_sent, 0u);
        }
        *v = 4242;
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
        MPI_Send(nullptr, 0, MPI_BYTE, mgr, 7, order);
    } else if (me() == mgr) {
        MPI_Recv(nullptr, 0, MPI_BYTE, claimant, 7, order, MPI_STATUS_IGNORE);
        ASSERT_EQ(cdsm_lock_acquire(l), CDSM_OK);
        EXPECT_EQ(*v, 4242u) << "the claimant's write did not come with lock " << l;
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
    }
    barrier();
    MPI_Comm_free(&order);
}

namespace {

// Acquire lock l: what the acquire changed in these counters.
struct acquired {
    uint64_t takes, published, msgs, local;
};
acquired acquire_counted(int l)
{
    cdsm_stats_t a = stats();
    EXPECT_EQ(cdsm_lock_acquire(l), CDSM_OK);
    cdsm_stats_t b = stats();
    return {b.lock_takes - a.lock_takes, b.lock_takes_published - a.lock_takes_published, b.msgs_sent - a.msgs_sent,
            b.lock_acquires_local - a.lock_acquires_local};
}

void write_under(int l, uint64_t *v, uint64_t x)
{
    ASSERT_EQ(cdsm_lock_acquire(l), CDSM_OK);
    *v = x;
    ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
}

} // namespace

TEST(Takes, ATokenReleasedBeforeTheBarrierMovesWithNoMessage)
{
    const int l = TAKE_LOCK, holder = (l + 1) % nr(), taker = (l + 2) % nr();
    uint64_t *v = alloc<uint64_t>(1);
    MPI_Comm order;
    ASSERT_EQ(MPI_Comm_dup(MPI_COMM_WORLD, &order), MPI_SUCCESS);
    barrier();
    if (me() == holder) write_under(l, v, 77); // (the token stays cached here)
    barrier();
    if (me() == taker) {
        acquired d = acquire_counted(l);
        EXPECT_EQ(d.takes, words_on() ? 1u : 0u) << "a token released before the barrier: taken iff lock words";
        if (words_on()) {
            EXPECT_EQ(d.msgs, 0u);
        }
        EXPECT_EQ(*v, 77u);
        *v = 78;
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
        MPI_Send(nullptr, 0, MPI_BYTE, holder, 8, order);
    } else if (me() == holder) {
        // Its token is gone (taken, or granted without lock words): it must queue behind
        // the taker and get its write.
        MPI_Recv(nullptr, 0, MPI_BYTE, taker, 8, order, MPI_STATUS_IGNORE);
        acquired d = acquire_counted(l);
        EXPECT_EQ(d.local, 0u) << "re-took a token that was taken";
        EXPECT_EQ(*v, 78u) << "the taker's write did not come with lock " << l;
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
    }
    barrier();
    MPI_Comm_free(&order);
}

TEST(Takes, ATokenThatNeverMovedReleasedInThisPhaseComesWithAGrant)
{
    // The manager's own token, used only there: its release leaves the writes in the open
    // interval (lazy release), so a node-mate must ask.
    const int l = TAKE_LOCK + 2, holder = l % nr(), taker = (l + 1) % nr();
    uint64_t *v = alloc<uint64_t>(1);
    MPI_Comm order;
    ASSERT_EQ(MPI_Comm_dup(MPI_COMM_WORLD, &order), MPI_SUCCESS);
    barrier();
    if (me() == holder) {
        write_under(l, v, 99);
        MPI_Send(nullptr, 0, MPI_BYTE, taker, 9, order);
    } else if (me() == taker) {
        MPI_Recv(nullptr, 0, MPI_BYTE, holder, 9, order, MPI_STATUS_IGNORE);
        acquired d = acquire_counted(l);
        EXPECT_EQ(d.takes + d.published, 0u) << "took a token whose release no barrier has shown it";
        EXPECT_GT(d.msgs, 0u);
        EXPECT_EQ(*v, 99u) << "the holder's write did not come with lock " << l;
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
    }
    barrier();
    MPI_Comm_free(&order);
}

TEST(Takes, AReleasePublishedWithItsRecordsIsTakenWithNoMessage)
{
    // Each round: rank a writes x under lock l1 and passes it on; rank b takes l1 (a's
    // interval comes with it), writes y under l2 and releases it; rank c takes l2 in the
    // same phase and must see y and, through the records b knew, x. After two rounds b
    // has seen l2's token leave twice: with CDSM_PUBLISH_RELEASES=1 its release is then
    // published, and c takes it, with a's and b's records, from the boards. At two ranks
    // c is a.
    const int l1 = TAKE_LOCK + 4, l2 = TAKE_LOCK + 7, a = 0, b = 1, c = nr() > 2 ? 2 : 0;
    uint64_t *x = alloc<uint64_t>(1), *y = alloc<uint64_t>(1), published = 0;
    MPI_Comm order;
    ASSERT_EQ(MPI_Comm_dup(MPI_COMM_WORLD, &order), MPI_SUCCESS);
    barrier();
    for (uint64_t i = 0; i < 4; i++) {
        if (me() == a) {
            if (i && a != c) MPI_Recv(nullptr, 0, MPI_BYTE, c, 12, order, MPI_STATUS_IGNORE);
            write_under(l1, x, 41 + i);
            MPI_Send(nullptr, 0, MPI_BYTE, b, 10, order);
        }
        if (me() == b) {
            MPI_Recv(nullptr, 0, MPI_BYTE, a, 10, order, MPI_STATUS_IGNORE);
            ASSERT_EQ(cdsm_lock_acquire(l1), CDSM_OK);
            EXPECT_EQ(*x, 41 + i);
            ASSERT_EQ(cdsm_lock_release(l1), CDSM_OK);
            write_under(l2, y, 42 + i);
            MPI_Send(nullptr, 0, MPI_BYTE, c, 11, order);
        }
        if (me() == c) {
            MPI_Recv(nullptr, 0, MPI_BYTE, b, 11, order, MPI_STATUS_IGNORE);
            acquired d = acquire_counted(l2);
            published += d.published;
            if (d.published) {
                EXPECT_EQ(d.msgs, 0u);
            }
            EXPECT_EQ(*y, 42 + i) << "the holder's write did not come with lock " << l2;
            EXPECT_EQ(*x, 41 + i) << "a third rank's write the holder had seen did not come with lock " << l2;
            ASSERT_EQ(cdsm_lock_release(l2), CDSM_OK);
            if (a != c && i < 3) MPI_Send(nullptr, 0, MPI_BYTE, a, 12, order);
        }
    }
    const char *pub = getenv("CDSM_PUBLISH_RELEASES");
    const bool publishing = words_on() && pub && !strcmp(pub, "1");
    if (me() == c) {
        if (publishing) {
            EXPECT_GE(published, 1u) << "no release of lock " << l2 << " was taken published";
        } else {
            EXPECT_EQ(published, 0u);
        }
    }
    barrier();
    MPI_Comm_free(&order);
}

TEST(Takes, RoundsAcrossBarriersKeepMutualExclusion)
{
    uint64_t *cnt = alloc<uint64_t>(NLOCKS);
    const int first = TAKE_LOCK + 10;
    barrier();
    cdsm_stats_t s0 = stats();
    for (int r = 0; r < ROUNDS; r++) {
        for (int k = 0; k < NLOCKS; k++) {
            int l = (k + me() * 7 + r * 13) % NLOCKS; // each rank and round in its own order
            for (int twice = 0; twice < 2; twice++) {  // (the second: a re-acquire, often of a cached token)
                ASSERT_EQ(cdsm_lock_acquire(first + l), CDSM_OK);
                cnt[l] += 1;
                ASSERT_EQ(cdsm_lock_release(first + l), CDSM_OK);
            }
        }
        barrier();
    }
    for (int l = 0; l < NLOCKS; l++) ASSERT_EQ(cnt[l], (uint64_t)(2 * ROUNDS * nr())) << "lock " << first + l;
    cdsm_stats_t s1 = stats(), all;
    cdsm_stats_t mine = s1;
    mine.lock_takes = s1.lock_takes - s0.lock_takes;
    ASSERT_EQ(cdsm_stats_reduce(&mine, &all), CDSM_OK);
    if (words_on())
        EXPECT_GT(all.lock_takes, 0u) << "no token released before a barrier was taken";
    else
        EXPECT_EQ(all.lock_takes, 0u);
    barrier();
}
