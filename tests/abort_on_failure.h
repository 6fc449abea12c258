// For multi-rank GoogleTest binaries: a failed assertion on any rank aborts the whole job
// at once, so no other rank waits forever in a barrier (the meson timeout is the last line
// of defence).
#ifndef CDSM_TESTS_ABORT_ON_FAILURE_H
#define CDSM_TESTS_ABORT_ON_FAILURE_H

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include <cdsm.h>

class AbortOnFailure : public ::testing::EmptyTestEventListener {
    void OnTestPartResult(const ::testing::TestPartResult &r) override
    {
        if (!r.failed()) return;
        fprintf(stderr, "[rank %d] FAILED at %s:%d: %s\n", cdsm_rank(), r.file_name() ? r.file_name() : "?",
                r.line_number(), r.summary());
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
};

#endif
