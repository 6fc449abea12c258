// The program initialises MPI itself: cdsm must work beside the program's own traffic on
// MPI_COMM_WORLD, leave MPI initialised at cdsm_finalize(), and start again cleanly.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include <cdsm.h>

namespace {

// Program traffic with the same tags the library uses internally, on MPI_COMM_WORLD.
void program_traffic(int round)
{
    int me, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    int sum = 0, one = 1;
    MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    ASSERT_EQ(sum, n);
    for (int tag = 1; tag <= 9; tag++) {
        int out = round * 100 + me * 10 + tag, in = -1;
        MPI_Sendrecv(&out, 1, MPI_INT, (me + 1) % n, tag, &in, 1, MPI_INT, (me + n - 1) % n, tag,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        ASSERT_EQ(in, round * 100 + ((me + n - 1) % n) * 10 + tag);
    }
}

} // namespace

TEST(ProgramOwnsMpi, LibraryWorksBesideProgramTrafficAndLeavesMpiUp)
{
    for (int run = 0; run < 2; run++) { // twice: finalize must leave nothing behind
        ASSERT_EQ(cdsm_init(nullptr, nullptr), CDSM_OK) << cdsm_last_error();
        long *cnt = nullptr;
        ASSERT_EQ(cdsm_alloc(sizeof(long), (void **)&cnt), CDSM_OK);
        for (int round = 0; round < 20; round++) {
            program_traffic(round);
            ASSERT_EQ(cdsm_lock_acquire(1), CDSM_OK);
            (*cnt)++;
            ASSERT_EQ(cdsm_lock_release(1), CDSM_OK);
        }
        ASSERT_EQ(cdsm_barrier(), CDSM_OK);
        EXPECT_EQ(*cnt, 20L * cdsm_nranks());
        ASSERT_EQ(cdsm_finalize(), CDSM_OK);
        int fin = 1;
        MPI_Finalized(&fin);
        EXPECT_EQ(fin, 0) << "cdsm_finalize must not finalize the program's MPI";
        program_traffic(99);
    }
}

int main(int argc, char **argv)
{
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    ::testing::InitGoogleTest(&argc, argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    ::testing::TestEventListeners &ls = ::testing::UnitTest::GetInstance()->listeners();
    if (rank != 0) delete ls.Release(ls.default_result_printer());
    int result = RUN_ALL_TESTS();
    if (result) MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Finalize();
    return result;
}
