// The logging audit (CDSM_CHECK=1) notices a determinant missing where a replay needs it:
// a grant logged by its acquirer but no longer by its granter is named, on every rank, by
// the next barrier.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include <cdsm.h>
#include <mpi.h>

#include "config.h"
#include "recovery.h"

TEST(LoggingAudit, AMissingGrantDeterminantIsNamed)
{
    ASSERT_TRUE(cdsm__cfg.check && cdsm__cfg.logging) << "run with CDSM_CHECK=1 and logging on";
    const int me = cdsm_rank();
    ASSERT_GE(cdsm_nranks(), 2);
    // Lock 0 is managed by rank 0, which uses it first (a node-mate could otherwise claim
    // the never-used token with no grant at all) and keeps its token: rank 1 takes it by a
    // grant. Both acquires are in one barrier epoch (ordered by an MPI message, which
    // carries no shared-memory writes): a token released before rank 1's last barrier
    // would move in shared memory, with no grant either.
    MPI_Comm order;
    ASSERT_EQ(MPI_Comm_dup(MPI_COMM_WORLD, &order), MPI_SUCCESS);
    ASSERT_EQ(cdsm_barrier(), CDSM_OK);
    if (me == 0) {
        ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
        ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
        MPI_Send(nullptr, 0, MPI_BYTE, 1, 7, order);
    }
    if (me == 1) {
        MPI_Recv(nullptr, 0, MPI_BYTE, 0, 7, order, MPI_STATUS_IGNORE);
        ASSERT_EQ(cdsm_lock_acquire(0), CDSM_OK);
        ASSERT_EQ(cdsm_lock_release(0), CDSM_OK);
    }
    MPI_Comm_free(&order);
    ASSERT_EQ(cdsm_barrier(), CDSM_OK) << "the audit passes while both sides hold the grant";
    if (me == 0) {
        pthread_mutex_lock(&cdsm__g.mu);
        int dropped = cdsm__det_drop_newest(CDSM_DET_SENT);
        pthread_mutex_unlock(&cdsm__g.mu);
        ASSERT_EQ(dropped, 1);
    }
    int rc = cdsm_barrier();
    EXPECT_EQ(rc, CDSM_ERR_PROTOCOL);
    std::string msg = cdsm_last_error();
    EXPECT_NE(msg.find("logging audit"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 1's synchronisation"), std::string::npos) << msg;
    EXPECT_NE(msg.find("granter 0"), std::string::npos) << msg;
}
