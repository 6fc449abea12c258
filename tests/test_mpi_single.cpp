// The program initialised MPI without MPI_THREAD_MULTIPLE: cdsm_init() refuses with a
// message that says what to do, and leaves MPI to the program.
#include <gtest/gtest.h>
#include <mpi.h>

#include <string>

#include <cdsm.h>

TEST(ProgramOwnsMpi, ThreadLevelTooLowIsRefusedClearly)
{
    EXPECT_EQ(cdsm_init(nullptr, nullptr), CDSM_ERR_MPI_THREAD);
    std::string msg = cdsm_last_error();
    EXPECT_NE(msg.find("MPI_THREAD_MULTIPLE"), std::string::npos) << msg;
    EXPECT_EQ(cdsm_rank(), -1);
    int fin = 1;
    MPI_Finalized(&fin);
    EXPECT_EQ(fin, 0);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    ::testing::InitGoogleTest(&argc, argv);
    int result = RUN_ALL_TESTS();
    MPI_Finalize();
    return result;
}
