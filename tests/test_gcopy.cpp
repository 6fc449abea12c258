// Copies of determinants, carried causally (CDSM_SPARES=2: lib/ft/gcopy.c). A grant
// between two ranks must reach a third rank with the first message by which that rank can
// depend on it (a grant from one of the two, or a barrier), and not before: that is what
// lets the replacements of two ranks lost together replay the grants between them
// (the Slurm suite's two_at_once and node-loss tests kill them).
#include <gtest/gtest.h>

#include <cstdint>

#include <cdsm.h>

#include "dsm_test_util.h"
#include "recovery.h"

namespace {

using namespace dsmtest;

struct count_arg {
    uint32_t lock;
    uint64_t n;
};

void count_one(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq, uint32_t grant_seq,
               const uint32_t *vc, void *arg)
{
    (void)granter, (void)acquirer, (void)acq_seq, (void)grant_seq, (void)vc;
    count_arg *c = static_cast<count_arg *>(arg);
    if (lock == c->lock) c->n++;
}

// Copies of grants of lock l this rank holds (its own included).
uint64_t copies_of(uint32_t l)
{
    count_arg c = {l, 0};
    pthread_mutex_lock(&cdsm__g.mu);
    cdsm__gcopy_foreach(count_one, &c);
    pthread_mutex_unlock(&cdsm__g.mu);
    return c.n;
}

// Ranks 0 and 1 pass lock `l` between them, taking turns (turn: whose, under the lock), so
// that each of the `rounds` turns after the first is a grant.
void pass_between_0_and_1(int l, uint64_t *turn, int rounds)
{
    if (me() > 1) return;
    for (int done = 0; done < rounds;) {
        ASSERT_EQ(cdsm_lock_acquire(l), CDSM_OK);
        if (*turn % 2 == (uint64_t)me()) {
            (*turn)++;
            done++;
        }
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
    }
}

} // namespace

TEST(GrantCopies, AGrantFromOneOfTheTwoBringsThemToAThird)
{
    ASSERT_TRUE(cdsm__gcopy_on()) << "run with CDSM_SPARES=2 and logging on";
    ASSERT_GE(nr(), 3);
    const int lk = 1, carrier = 2 * nr() + 2; // lock 1: managed by rank 1; the carrier lock by rank 2
    uint64_t *shared = alloc<uint64_t>(ps() / sizeof(uint64_t));
    // Rank 1 holds the carrier lock before ranks 0 and 1 start passing lock 1 around.
    if (me() == 1) {
        ASSERT_EQ(cdsm_lock_acquire(carrier), CDSM_OK);
    }
    barrier();
    pass_between_0_and_1(lk, &shared[0], 20);
    const uint64_t before = copies_of(lk);
    if (me() == 2) {
        EXPECT_EQ(before, 0u) << "nothing of ranks 0 and 1 has reached rank 2 yet";
    }
    if (me() == 1) {
        shared[1] = copies_of(lk); // what rank 1 knows when it hands the carrier lock on
        EXPECT_GE(shared[1], 39u) << "each turn after the first took a grant";
        ASSERT_EQ(cdsm_lock_release(carrier), CDSM_OK);
    }
    if (me() == 2) {
        ASSERT_EQ(cdsm_lock_acquire(carrier), CDSM_OK); // granted by rank 1, after its release
        EXPECT_GE(copies_of(lk), shared[1]) << "the grant from rank 1 carried what rank 1 knew";
        ASSERT_EQ(cdsm_lock_release(carrier), CDSM_OK);
    }
    barrier();
    // After a barrier every rank has heard of every grant of lock 1.
    const uint64_t all = copies_of(lk);
    EXPECT_GT(all, 0u);
    uint64_t *seen = alloc<uint64_t>((size_t)nr());
    seen[me()] = all;
    barrier();
    for (int q = 0; q < nr(); q++) EXPECT_EQ(seen[q], all) << "rank " << q << " holds another number of copies";
    barrier();
}
