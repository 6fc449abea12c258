// Causal logging and checkpoints at barriers, on several ranks under mpiexec.
//
// Its own main(): rank 0 makes a fresh folder for the checkpoints and every rank sets
// CDSM_CKPT_DIR to it before cdsm_init(); the folder is removed at the end. The policy
// comes from the environment of the meson test (CDSM_CKPT_BARRIERS, ..._FULL_EVERY,
// CDSM_GC_BOUND, CDSM_CHECK, CDSM_LOGGING), and the tests read it back to know what to expect.
#include <gtest/gtest.h>
#include <mpi.h>

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cdsm.h>

#include "abort_on_failure.h"
#include "ckpt_file.h"
#include "config.h"
#include "recovery.h"

namespace {

uint32_t word_value(uint32_t iter, uint32_t index)
{
    return iter * 1000003u + index * 7u + 1u;
}

// Committed checkpoint files of this rank in the run's folder (temporary files excluded).
std::vector<uint64_t> committed_files()
{
    std::vector<uint64_t> seqs;
    const char *dir = cdsm_checkpoint_dir();
    if (!dir) return seqs;
    DIR *d = opendir(dir);
    if (!d) return seqs;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "rank%d.ckpt", cdsm_rank());
    while (struct dirent *e = readdir(d)) {
        const char *nm = e->d_name;
        if (strncmp(nm, prefix, strlen(prefix))) continue;
        char *end;
        unsigned long long s = strtoull(nm + strlen(prefix), &end, 10);
        if (!strcmp(end, ".h5")) seqs.push_back(s);
    }
    closedir(d);
    return seqs;
}

const cdsm__ckpt_region_t *region(const cdsm__ckpt_t &c, const char *name)
{
    for (uint32_t i = 0; i < c.nregions; i++)
        if (!strcmp(c.regions[i].name, name)) return &c.regions[i];
    return nullptr;
}

} // namespace

TEST(Recovery, ProtectArgumentsAreChecked)
{
    int x = 0;
    char long_name[300];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    EXPECT_EQ(cdsm_protect(nullptr, &x, sizeof x), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_protect("", &x, sizeof x), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_protect(".hidden", &x, sizeof x), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_protect("a/b", &x, sizeof x), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_protect(long_name, &x, sizeof x), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_protect("x", nullptr, sizeof x), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_protect("x", &x, 0), CDSM_ERR_INVALID_ARG);
    void *shared = nullptr;
    ASSERT_EQ(cdsm_alloc(4096, &shared), CDSM_OK);
    EXPECT_EQ(cdsm_protect("shared", shared, 16), CDSM_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cdsm_last_error()).find("shared heap"), std::string::npos);
    ASSERT_EQ(cdsm_protect("x", &x, sizeof x), CDSM_OK);
    EXPECT_EQ(cdsm_protect("x", &x, sizeof x), CDSM_ERR_INVALID_ARG);
    EXPECT_NE(std::string(cdsm_last_error()).find("registered already"), std::string::npos);
    EXPECT_EQ(cdsm_unprotect("x"), CDSM_OK);
    EXPECT_EQ(cdsm_unprotect("x"), CDSM_ERR_INVALID_ARG);
    EXPECT_EQ(cdsm_unprotect(nullptr), CDSM_ERR_INVALID_ARG);
    ASSERT_EQ(cdsm_free(shared), CDSM_OK);
    ASSERT_EQ(cdsm_barrier(), CDSM_OK);
}

// Every rank writes its slice of A at every iteration and its slice of B only once; each
// barrier takes a checkpoint (CDSM_CKPT_BARRIERS=1). Every checkpoint of the committed chain,
// restored through its incremental files, must hold exactly the state of its barrier: the
// protected iteration number, the rank's own pages of A with that iteration's words, B's
// pages with their words although no incremental file after the first holds them, and the
// other ranks' pages of A invalid (their writes are only known by notice).
TEST(Recovery, CheckpointsHoldTheStateAtTheirBarrier)
{
    if (!cdsm_checkpoint_dir() || cdsm__cfg.ckpt_barriers != 1) GTEST_SKIP() << "needs CDSM_CKPT_BARRIERS=1";
    const int n = cdsm_nranks(), me = cdsm_rank();
    const size_t ps = cdsm_page_size(), words = ps / 4, per_rank = 6;
    uint32_t *a = nullptr, *b = nullptr;
    ASSERT_EQ(cdsm_alloc(per_rank * n * ps, (void **)&a), CDSM_OK);
    ASSERT_EQ(cdsm_alloc(per_rank * n * ps, (void **)&b), CDSM_OK);
    const size_t mine = per_rank * words * (size_t)me, slice = per_rank * words;
    struct {
        uint32_t iter, rank;
    } priv = {0, (uint32_t)me};
    std::vector<uint32_t> big(3000);
    ASSERT_EQ(cdsm_protect("priv", &priv, sizeof priv), CDSM_OK);
    ASSERT_EQ(cdsm_protect("big", big.data(), big.size() * 4), CDSM_OK);
    for (size_t i = 0; i < slice; i++) b[mine + i] = word_value(777, (uint32_t)(mine + i));
    cdsm__ckpt_take_drain();
    uint64_t before = 0; // checkpoints of the barriers before this test
    ASSERT_EQ(cdsm__ckpt_latest(cdsm_checkpoint_dir(), (uint32_t)me, &before), CDSM_OK);
    const uint32_t iters = 7;
    for (uint32_t it = 1; it <= iters; it++) {
        for (size_t i = 0; i < slice; i++) a[mine + i] = word_value(it, (uint32_t)(mine + i));
        for (size_t i = 0; i < big.size(); i++) big[i] = it * 31u + (uint32_t)i;
        priv.iter = it;
        ASSERT_EQ(cdsm_barrier(), CDSM_OK);
        // Read the next rank's slice: valid now, invalidated again by the next barrier. (The
        // read races with that rank's next iteration: the tracked protocol, which this test
        // runs under (CDSM_OWNERSHIP=0), gives exactly this iteration's words.)
        size_t other = per_rank * words * (size_t)((me + 1) % n);
        for (size_t i = 0; i < slice; i += 97) ASSERT_EQ(a[other + i], word_value(it, (uint32_t)(other + i)));
    }
    cdsm__ckpt_take_drain();
    std::vector<uint64_t> files = committed_files();
    ASSERT_FALSE(files.empty());
    uint64_t latest = 0;
    ASSERT_EQ(cdsm__ckpt_latest(cdsm_checkpoint_dir(), (uint32_t)me, &latest), CDSM_OK);
    ASSERT_EQ(latest, before + iters) << "one checkpoint per barrier of the loop";
    bool saw_incremental = false;
    for (uint64_t seq : files) {
        if (seq <= before) continue;
        cdsm__ckpt_t one{};
        ASSERT_EQ(cdsm__ckpt_read((std::string(cdsm_checkpoint_dir()) + "/rank" + std::to_string(me) + ".ckpt" +
                                  std::to_string(seq) + ".h5").c_str(),
                                  me, CDSM_CKPT_ANY_JOB, &one),
                  CDSM_OK)
            << cdsm_last_error();
        if (one.base_seq) saw_incremental = true;
        cdsm__ckpt_free(&one);

        cdsm__ckpt_t c{};
        ASSERT_EQ(cdsm__ckpt_restore_chain(cdsm_checkpoint_dir(), (uint32_t)me, 0, seq, &c), CDSM_OK)
            << cdsm_last_error();
        const cdsm__ckpt_region_t *pr = region(c, "priv"), *bg = region(c, "big");
        ASSERT_TRUE(pr && bg);
        ASSERT_EQ(pr->size, sizeof priv);
        uint32_t it;
        memcpy(&it, pr->data, 4);
        EXPECT_EQ(it, (uint32_t)(seq - before)) << "checkpoint " << seq << " is the one of iteration " << seq - before;
        ASSERT_EQ(bg->size, big.size() * 4);
        for (size_t i = 0; i < big.size(); i += 111) {
            uint32_t v;
            memcpy(&v, bg->data + i * 4, 4);
            ASSERT_EQ(v, it * 31u + (uint32_t)i);
        }
        // Heap page numbers of A's and B's first pages.
        uint32_t a_first = cdsm__page_of(a), b_first = cdsm__page_of(b);
        auto entry = [&](uint32_t pg) -> int64_t {
            for (uint32_t k = 0; k < c.npages; k++)
                if (c.page_index[k] == pg) return k;
            return -1;
        };
        for (int q = 0; q < n; q++)
            for (size_t p = 0; p < per_rank; p++) {
                uint32_t pa = a_first + (uint32_t)(q * per_rank + p), pb = b_first + (uint32_t)(q * per_rank + p);
                int64_t ka = entry(pa), kb = entry(pb);
                if (q == me) {
                    ASSERT_GE(ka, 0) << "own page of A missing in checkpoint " << seq;
                    ASSERT_GE(kb, 0) << "own page of B missing in checkpoint " << seq;
                    ASSERT_NE(c.page_state[ka], CDSM_PG_INVALID);
                    ASSERT_NE(c.page_state[kb], CDSM_PG_INVALID);
                    const uint32_t *wa = (const uint32_t *)(c.page_data + (size_t)ka * ps);
                    const uint32_t *wb = (const uint32_t *)(c.page_data + (size_t)kb * ps);
                    size_t w0 = (q * per_rank + p) * words;
                    for (size_t w = 0; w < words; w++) {
                        ASSERT_EQ(wa[w], word_value(it, (uint32_t)(w0 + w))) << "A page " << p << " word " << w;
                        ASSERT_EQ(wb[w], word_value(777, (uint32_t)(w0 + w))) << "B page " << p << " word " << w;
                    }
                    ASSERT_EQ(c.applied[(size_t)ka * n + me], c.vc[me]) << "own page holds own last write";
                } else if (ka >= 0) {
                    // Another rank wrote it in this iteration: only its notice is known here.
                    EXPECT_EQ(c.page_state[ka], CDSM_PG_INVALID) << "foreign page of A valid in checkpoint " << seq;
                }
            }
        cdsm__ckpt_free(&c);
    }
    EXPECT_TRUE(saw_incremental || cdsm__cfg.ckpt_full_every == 1);
    ASSERT_EQ(cdsm_unprotect("priv"), CDSM_OK);
    ASSERT_EQ(cdsm_unprotect("big"), CDSM_OK);
    ASSERT_EQ(cdsm_barrier(), CDSM_OK);
}

// A long run of lock hand-offs, diffs and barriers: garbage collection of diffs runs (with
// a forced full checkpoint on every rank), checkpoint files are collected down to the
// current chain, determinants down to what the last checkpoints still need. Bounds:
// files <= CDSM_CKPT_FULL_EVERY + 1 per rank at any barrier; determinants held well below
// what was logged; diffs and records within a few times CDSM_GC_BOUND.
TEST(Recovery, LogsAndCheckpointFilesStayBounded)
{
    const int n = cdsm_nranks(), me = cdsm_rank();
    const size_t ps = cdsm_page_size(), words = ps / 4;
    const int nlocks = 4, iters = 240, pages_per_rank = 8;
    uint32_t *counters = nullptr, *scratch = nullptr;
    ASSERT_EQ(cdsm_alloc(nlocks * ps, (void **)&counters), CDSM_OK);
    ASSERT_EQ(cdsm_alloc((size_t)pages_per_rank * n * ps, (void **)&scratch), CDSM_OK);
    uint32_t it_done = 0;
    ASSERT_EQ(cdsm_protect("iter", &it_done, sizeof it_done), CDSM_OK);
    cdsm_stats_t s0;
    ASSERT_EQ(cdsm_stats_get(&s0), CDSM_OK);
    size_t max_files = 0;
    for (int it = 0; it < iters; it++) {
        int l = (it + me) % nlocks;
        ASSERT_EQ(cdsm_lock_acquire(l), CDSM_OK);
        counters[(size_t)l * words] += 1;
        ASSERT_EQ(cdsm_lock_release(l), CDSM_OK);
        uint32_t *mine = scratch + (size_t)me * pages_per_rank * words;
        for (int p = 0; p < pages_per_rank; p++) mine[(size_t)p * words + (size_t)(it % (int)words)] = (uint32_t)it;
        it_done = (uint32_t)it + 1;
        ASSERT_EQ(cdsm_barrier(), CDSM_OK);
        if (cdsm_checkpoint_dir()) {
            size_t nf = committed_files().size();
            if (nf > max_files) max_files = nf;
            ASSERT_LE(nf, cdsm__cfg.ckpt_full_every + 1) << "checkpoint files of rank " << me << " at iteration " << it;
        }
    }
    for (int l = 0; l < nlocks; l++) EXPECT_EQ(counters[(size_t)l * words], (uint32_t)(iters * n / nlocks));
    cdsm_stats_t s;
    ASSERT_EQ(cdsm_stats_get(&s), CDSM_OK);
    const size_t esz = sizeof(cdsm__det_t) + (size_t)n * 4;
    if (!cdsm__cfg.logging) {
        // (The lock messages keep their 4-byte synchronisation numbers: one wire format.)
        EXPECT_EQ(s.det_logged, 0u);
        EXPECT_EQ(s.det_bytes_peak, 0u);
    } else {
        // Each iteration: one barrier entry, and each remote grant is logged by both sides.
        EXPECT_GE(s.det_logged - s0.det_logged, (uint64_t)iters);
        EXPECT_GT(s.piggyback_bytes, s0.piggyback_bytes);
        if (cdsm_checkpoint_dir()) {
            // Checkpoints every barrier: only the last few barriers' determinants are held.
            EXPECT_LE(s.det_bytes_peak, 64 * esz) << "determinants are not collected";
            EXPECT_LT(s.det_bytes_peak * 4, (s.det_logged - s0.det_logged) * esz);
        } else {
            EXPECT_GE(s.det_bytes, (uint64_t)iters * esz) << "without checkpoints everything is kept";
        }
    }
    if (cdsm_checkpoint_dir()) {
        EXPECT_GE(s.ckpts - s0.ckpts, (uint64_t)iters / cdsm__cfg.ckpt_barriers - 2);
        EXPECT_GT(s.ckpt_files_removed, 0u);
        EXPECT_GE(max_files, 1u);
    }
    if (s.gc_runs > 0 && cdsm_checkpoint_dir()) {
        EXPECT_GE(s.ckpts_full, s.gc_runs) << "every GC forces a full checkpoint";
    }
    // With logging and spares but without checkpoints, collected diffs of this rank are
    // archived for a replay from the start; otherwise nothing is archived (without spares
    // nothing ever replays, and a long run's memory stays bounded by CDSM_GC_BOUND).
    if (cdsm__cfg.logging && cdsm__cfg.spares && !cdsm_checkpoint_dir() && s.gc_runs > 0) {
        EXPECT_GT(s.archive_bytes, 0u);
    } else {
        EXPECT_EQ(s.archive_bytes, 0u);
    }
    if (cdsm__cfg.gc_bound <= (256u << 10)) {
        EXPECT_GT(s.gc_runs, 0u) << "the diffs of this run pass CDSM_GC_BOUND";
        // (archive_bytes also counts the other ranks' records kept with spares, which
        // log_bytes never held: with pages owned by their home it can pass the peak.)
        uint64_t held = s.log_bytes_peak > s.archive_bytes ? s.log_bytes_peak - s.archive_bytes : 0;
        EXPECT_LE(held, 4 * cdsm__cfg.gc_bound + ((uint64_t)pages_per_rank * n + nlocks) * 2 * ps);
    }
    ASSERT_EQ(cdsm_unprotect("iter"), CDSM_OK);
    ASSERT_EQ(cdsm_barrier(), CDSM_OK);
}

// Resume mode (cdsm_resume) is for the rest of the run: this test comes last in the file,
// and alone in the variant with a spare (GTEST_FILTER).
TEST(RecoveryResume, CheckpointsOnlyAtResumePointsAndLogsBounded)
{
    const int n = cdsm_nranks(), me = cdsm_rank();
    const size_t ps = cdsm_page_size(), words = ps / 4, per_rank = 4;
    int resumed = -1;
    EXPECT_EQ(cdsm_resume_point(), CDSM_ERR_STATE) << "a resume point before cdsm_resume";
    EXPECT_EQ(cdsm_resume(nullptr), CDSM_ERR_INVALID_ARG);
    uint32_t *a = nullptr;
    ASSERT_EQ(cdsm_alloc(per_rank * n * ps, (void **)&a), CDSM_OK);
    uint32_t it = 0;
    ASSERT_EQ(cdsm_protect("resume-iter", &it, sizeof it), CDSM_OK);
    ASSERT_EQ(cdsm_resume(&resumed), CDSM_OK) << cdsm_last_error();
    EXPECT_EQ(resumed, 0) << "no process of this run was lost";
    EXPECT_EQ(cdsm_resume(&resumed), CDSM_ERR_STATE) << "cdsm_resume twice";
    cdsm_stats_t s0, s;
    cdsm__ckpt_take_drain();
    ASSERT_EQ(cdsm_stats_get(&s0), CDSM_OK);
    const size_t mine = per_rank * words * (size_t)me, slice = per_rank * words;
    const uint32_t iters = 60;
    while (it < iters) {
        for (size_t i = 0; i < slice; i++) a[mine + i] = word_value(it, (uint32_t)(mine + i));
        cdsm__ckpt_take_drain(); // (the earlier tests' last checkpoint may still be written)
        ASSERT_EQ(cdsm_stats_get(&s), CDSM_OK);
        const uint64_t ck = s.ckpts;
        ASSERT_EQ(cdsm_barrier(), CDSM_OK);
        cdsm__ckpt_take_drain();
        ASSERT_EQ(cdsm_stats_get(&s), CDSM_OK);
        ASSERT_EQ(s.ckpts, ck) << "a checkpoint at a plain barrier in resume mode (iteration " << it << ")";
        size_t other = per_rank * words * (size_t)((me + 1) % n);
        for (size_t i = 0; i < slice; i += 61) ASSERT_EQ(a[other + i], word_value(it, (uint32_t)(other + i)));
        it++;
        ASSERT_EQ(cdsm_resume_point(), CDSM_OK) << cdsm_last_error();
    }
    cdsm__ckpt_take_drain();
    ASSERT_EQ(cdsm_stats_get(&s), CDSM_OK);
    const size_t esz = sizeof(cdsm__det_t) + (size_t)n * 4;
    if (cdsm_checkpoint_dir() && cdsm__cfg.ckpt_barriers) {
        // Every checkpoint is a full one taken at a collection (any rank's wish makes one).
        EXPECT_GE(s.ckpts - s0.ckpts, (uint64_t)iters / cdsm__cfg.ckpt_barriers - 1);
        EXPECT_EQ(s.ckpts_full - s0.ckpts_full, s.ckpts - s0.ckpts);
        EXPECT_GE(s.gc_runs - s0.gc_runs, s.ckpts - s0.ckpts);
        EXPECT_EQ(s.archive_bytes, 0u) << "resume mode archives nothing, spares or not";
        if (cdsm__cfg.logging) {
            EXPECT_LE(s.det_bytes, (uint64_t)(8 * cdsm__cfg.ckpt_barriers + 8) * esz)
                << "determinants older than every rank's checkpoint are dropped (spares: " << cdsm__cfg.spares << ")";
        }
        // The newest file is a resume point: its region says where to go on, and the
        // heap it holds is the one of that resume point.
        uint64_t latest = 0;
        ASSERT_EQ(cdsm__ckpt_latest(cdsm_checkpoint_dir(), (uint32_t)me, &latest), CDSM_OK);
        cdsm__ckpt_t c{};
        ASSERT_EQ(cdsm__ckpt_restore_chain(cdsm_checkpoint_dir(), (uint32_t)me, CDSM_CKPT_ANY_JOB, latest, &c), CDSM_OK)
            << cdsm_last_error();
        ASSERT_GE(c.nlog, 4u);
        EXPECT_EQ(c.log_pos[3], 1u) << "marked as a resume point";
        const cdsm__ckpt_region_t *r = region(c, "resume-iter");
        ASSERT_NE(r, nullptr);
        uint32_t at = 0;
        memcpy(&at, r->data, 4);
        ASSERT_GE(at, 1u);
        size_t checked = 0;
        for (uint32_t k = 0; k < c.npages; k++) {
            const char *pg_addr = cdsm__app_page(c.page_index[k]);
            if (pg_addr < (const char *)(a + mine) || pg_addr >= (const char *)(a + mine + slice)) continue;
            const uint32_t *w = (const uint32_t *)(c.page_data + (size_t)k * ps);
            size_t off = (size_t)((const uint32_t *)pg_addr - a);
            EXPECT_EQ(w[0], word_value(at - 1, (uint32_t)off)) << "page " << c.page_index[k];
            checked++;
        }
        EXPECT_EQ(checked, per_rank) << "every page of this rank's slice is in the checkpoint";
        cdsm__ckpt_free(&c);
    }
    ASSERT_EQ(cdsm_unprotect("resume-iter"), CDSM_OK);
}

int main(int argc, char **argv)
{
    ::testing::InitGoogleTest(&argc, argv);
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    // A fresh folder for this run's checkpoints, unless the test runs without them.
    char dir[256] = "";
    const char *want = getenv("TEST_NO_CKPT") ? nullptr : "yes";
    if (rank == 0 && want) {
        snprintf(dir, sizeof dir, "/tmp/cdsm-test-ckpt-XXXXXX");
        if (!mkdtemp(dir)) dir[0] = '\0';
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (dir[0]) setenv("CDSM_CKPT_DIR", dir, 1);
    int rc = cdsm_init(&argc, &argv);
    if (rc) {
        fprintf(stderr, "cdsm_init: %s: %s\n", cdsm_strerror(rc), cdsm_last_error());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    ::testing::TestEventListeners &ls = ::testing::UnitTest::GetInstance()->listeners();
    if (cdsm_rank() != 0) delete ls.Release(ls.default_result_printer());
    ls.Append(new AbortOnFailure);
    int result = RUN_ALL_TESTS();
    rc = cdsm_finalize();
    if (rc) {
        fprintf(stderr, "cdsm_finalize: %s\n", cdsm_last_error());
        result = 1;
    }
    // (No MPI_COMM_WORLD barrier here: spares ended inside cdsm_init. cdsm_finalize's own
    // barriers come after every rank's last checkpoint write.)
    if (rank == 0 && dir[0]) {
        std::string cmd = std::string("rm -rf '") + dir + "'";
        if (system(cmd.c_str()) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    MPI_Finalize();
    return result;
}
