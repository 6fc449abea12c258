// Checkpoint files (lib/ft/ckpt_file.c): round trip, incremental chains, every refusal,
// and a writer killed mid-write. No MPI.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cdsm.h"
#include "ckpt_file.h"
#include "log.h"

namespace {

constexpr uint64_t kJob = 0x1234abcd5678ef01ull;

struct TempDir {
    std::string path;
    TempDir()
    {
        char t[] = "/tmp/cdsm-ckpt-test-XXXXXX";
        if (!mkdtemp(t)) abort();
        path = t;
    }
    ~TempDir()
    {
        if (DIR *d = opendir(path.c_str())) {
            while (dirent *e = readdir(d))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                    unlink((path + "/" + e->d_name).c_str());
            closedir(d);
        }
        rmdir(path.c_str());
    }
    std::vector<std::string> names() const
    {
        std::vector<std::string> v;
        if (DIR *d = opendir(path.c_str())) {
            while (dirent *e = readdir(d))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) v.push_back(e->d_name);
            closedir(d);
        }
        return v;
    }
};

// A checkpoint's content in owned storage; view() gives the C struct pointing into it.
struct State {
    uint32_t rank = 1, nranks = 3, page_size = 4096;
    uint64_t seq = 1, base = 0, epoch = 7;
    std::vector<uint32_t> vc, intervals;
    std::vector<uint32_t> page_index;
    std::vector<uint8_t> page_state, page_data;
    std::vector<uint32_t> applied;
    std::vector<uint8_t> locks;
    std::vector<uint64_t> log;
    std::vector<std::string> region_names;
    std::vector<std::vector<uint8_t>> region_data;
    std::vector<cdsm__ckpt_region_t> regs;

    State(uint32_t npages, uint32_t seed, uint32_t stride = 1)
    {
        std::mt19937 g(seed);
        for (uint32_t i = 0; i < nranks; i++) vc.push_back(g() % 100);
        for (uint32_t i = 0; i < 5; i++) intervals.push_back(g());
        for (uint32_t p = 0; p < npages; p++) {
            page_index.push_back(p * stride + 2);
            page_state.push_back((uint8_t)(g() % 3));
            for (uint32_t b = 0; b < page_size; b++) page_data.push_back((uint8_t)g());
            for (uint32_t r = 0; r < nranks; r++) applied.push_back(g() % 50);
        }
        for (int i = 0; i < 17; i++) locks.push_back((uint8_t)(g() % 4));
        for (int i = 0; i < 3; i++) log.push_back(((uint64_t)g() << 32) | g());
        region_names = {"solver", "iteration", "empty"};
        region_data.resize(3);
        for (int i = 0; i < 1000; i++) region_data[0].push_back((uint8_t)g());
        for (int i = 0; i < 8; i++) region_data[1].push_back((uint8_t)i);
    }

    // Set page p (adding it where absent) to fresh bytes.
    void touch(uint32_t p, uint32_t seed)
    {
        std::mt19937 g(seed);
        size_t k = 0;
        while (k < page_index.size() && page_index[k] < p) k++;
        if (k == page_index.size() || page_index[k] != p) {
            page_index.insert(page_index.begin() + (long)k, p);
            page_state.insert(page_state.begin() + (long)k, 0);
            page_data.insert(page_data.begin() + (long)(k * page_size), page_size, 0);
            applied.insert(applied.begin() + (long)(k * nranks), nranks, 0);
        }
        page_state[k] = (uint8_t)(1 + g() % 2);
        for (uint32_t b = 0; b < page_size; b++) page_data[k * page_size + b] = (uint8_t)g();
        for (uint32_t r = 0; r < nranks; r++) applied[k * nranks + r] = g() % 1000;
    }

    // Only the pages in keep (for an incremental checkpoint).
    State only(const std::vector<uint32_t> &keep) const
    {
        State s = *this;
        s.page_index.clear(), s.page_state.clear(), s.page_data.clear(), s.applied.clear();
        for (size_t k = 0; k < page_index.size(); k++) {
            bool in = false;
            for (uint32_t p : keep) in |= p == page_index[k];
            if (!in) continue;
            s.page_index.push_back(page_index[k]);
            s.page_state.push_back(page_state[k]);
            s.page_data.insert(s.page_data.end(), page_data.begin() + (long)(k * page_size),
                               page_data.begin() + (long)((k + 1) * page_size));
            s.applied.insert(s.applied.end(), applied.begin() + (long)(k * nranks),
                             applied.begin() + (long)((k + 1) * nranks));
        }
        return s;
    }

    cdsm__ckpt_t view()
    {
        regs.clear();
        for (size_t i = 0; i < region_names.size(); i++)
            regs.push_back({(char *)region_names[i].c_str(), region_data[i].data(), region_data[i].size()});
        cdsm__ckpt_t c{};
        c.job_id = kJob;
        c.rank = rank, c.nranks = nranks, c.seq = seq, c.base_seq = base, c.epoch = epoch;
        c.page_size = page_size;
        c.created = 1700000000 + (int64_t)seq;
        c.vc = vc.data();
        c.nintervals = (uint32_t)intervals.size(), c.intervals = intervals.data();
        c.npages = (uint32_t)page_index.size();
        c.page_index = page_index.data(), c.page_state = page_state.data();
        c.page_data = page_data.data(), c.applied = applied.data();
        c.nlocks = (uint32_t)locks.size(), c.lock_state = locks.data();
        c.nlog = (uint32_t)log.size(), c.log_pos = log.data();
        c.nregions = (uint32_t)regs.size(), c.regions = regs.data();
        return c;
    }

    int write(const std::string &dir)
    {
        cdsm__ckpt_t c = view();
        return cdsm__ckpt_write(dir.c_str(), &c);
    }
};

template <class T> std::vector<T> vec(const T *p, size_t n) { return n ? std::vector<T>(p, p + n) : std::vector<T>(); }

void expect_same(const cdsm__ckpt_t &a, const cdsm__ckpt_t &b, bool same_base = true)
{
    EXPECT_EQ(a.job_id, b.job_id);
    EXPECT_EQ(a.rank, b.rank);
    EXPECT_EQ(a.nranks, b.nranks);
    EXPECT_EQ(a.seq, b.seq);
    if (same_base) {
        EXPECT_EQ(a.base_seq, b.base_seq);
    }
    EXPECT_EQ(a.epoch, b.epoch);
    EXPECT_EQ(a.page_size, b.page_size);
    EXPECT_EQ(vec(a.vc, a.nranks), vec(b.vc, b.nranks));
    EXPECT_EQ(vec(a.intervals, a.nintervals), vec(b.intervals, b.nintervals));
    ASSERT_EQ(a.npages, b.npages);
    EXPECT_EQ(vec(a.page_index, a.npages), vec(b.page_index, b.npages));
    EXPECT_EQ(vec(a.page_state, a.npages), vec(b.page_state, b.npages));
    EXPECT_TRUE(vec(a.page_data, (size_t)a.npages * a.page_size) == vec(b.page_data, (size_t)b.npages * b.page_size));
    EXPECT_EQ(vec(a.applied, (size_t)a.npages * a.nranks), vec(b.applied, (size_t)b.npages * b.nranks));
    EXPECT_EQ(vec(a.lock_state, a.nlocks), vec(b.lock_state, b.nlocks));
    EXPECT_EQ(vec(a.log_pos, a.nlog), vec(b.log_pos, b.nlog));
    ASSERT_EQ(a.nregions, b.nregions);
    for (uint32_t i = 0; i < a.nregions; i++) {
        // The reader lists regions by name; compare by name.
        const cdsm__ckpt_region_t *rb = nullptr;
        for (uint32_t k = 0; k < b.nregions; k++)
            if (!strcmp(a.regions[i].name, b.regions[k].name)) rb = &b.regions[k];
        ASSERT_NE(rb, nullptr) << a.regions[i].name;
        EXPECT_EQ(vec(a.regions[i].data, a.regions[i].size), vec(rb->data, rb->size)) << a.regions[i].name;
    }
}

std::string ckpt_path(const std::string &dir, uint32_t rank, uint64_t seq)
{
    return dir + "/rank" + std::to_string(rank) + ".ckpt" + std::to_string(seq) + ".h5";
}

std::vector<char> slurp(const std::string &p)
{
    std::ifstream f(p, std::ios::binary);
    return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void spit(const std::string &p, const std::vector<char> &b, size_t n)
{
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(b.data(), (std::streamsize)n);
}

// Read expecting refusal with status want and a message naming the file and saying why.
void expect_refused(const std::string &path, int rank, uint64_t job, int want, const char *why)
{
    cdsm__ckpt_t c;
    int rc = cdsm__ckpt_read(path.c_str(), rank, job, &c);
    EXPECT_EQ(rc, want) << cdsm_status_name(rc) << ": " << cdsm_last_error();
    std::string msg = cdsm_last_error();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(why), std::string::npos) << msg;
    EXPECT_EQ(c.npages, 0u);
    EXPECT_EQ(c.page_data, nullptr);
}

// Rewrite one root attribute of a file with HDF5 (a foreign writer's file).
void set_u32_attr(const std::string &path, const char *name, uint32_t v)
{
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    ASSERT_GE(a, 0);
    EXPECT_GE(H5Awrite(a, H5T_NATIVE_UINT32, &v), 0);
    H5Aclose(a);
    H5Fclose(f);
}

TEST(CkptFile, Crc32c)
{
    EXPECT_EQ(cdsm__ckpt_crc32c(0, "123456789", 9), 0xE3069283u);
    EXPECT_EQ(cdsm__ckpt_crc32c_sw(0, "123456789", 9), 0xE3069283u);
    std::vector<uint8_t> b(10000);
    std::mt19937 g(1);
    for (auto &x : b) x = (uint8_t)g();
    for (size_t off : {0, 1, 3, 7}) {
        for (size_t n : {0, 1, 9, 64, 9991}) {
            EXPECT_EQ(cdsm__ckpt_crc32c(0, b.data() + off, n), cdsm__ckpt_crc32c_sw(0, b.data() + off, n));
            uint32_t chained = cdsm__ckpt_crc32c(cdsm__ckpt_crc32c(0, b.data() + off, n / 2), b.data() + off + n / 2,
                                                 n - n / 2);
            EXPECT_EQ(chained, cdsm__ckpt_crc32c(0, b.data() + off, n));
        }
    }
}

TEST(CkptFile, RoundTrip)
{
    TempDir d;
    State s(20, 42);
    s.seq = 5;
    ASSERT_EQ(s.write(d.path), CDSM_OK) << cdsm_last_error();
    // Only the committed file is left.
    EXPECT_EQ(d.names(), std::vector<std::string>{"rank1.ckpt5.h5"});

    cdsm__ckpt_t in = s.view(), out;
    ASSERT_EQ(cdsm__ckpt_read(ckpt_path(d.path, 1, 5).c_str(), 1, kJob, &out), CDSM_OK) << cdsm_last_error();
    EXPECT_EQ(out.format_version, CDSM_CKPT_FORMAT_VERSION);
    EXPECT_EQ(out.created, in.created);
    expect_same(in, out);
    // The reader lists regions in name order.
    ASSERT_EQ(out.nregions, 3u);
    EXPECT_STREQ(out.regions[0].name, "empty");
    EXPECT_EQ(out.regions[0].size, 0u);
    cdsm__ckpt_free(&out);
    EXPECT_EQ(out.page_data, nullptr);

    // Wildcards read it too.
    ASSERT_EQ(cdsm__ckpt_read(ckpt_path(d.path, 1, 5).c_str(), CDSM_CKPT_ANY_RANK, CDSM_CKPT_ANY_JOB, &out), CDSM_OK);
    cdsm__ckpt_free(&out);

    uint64_t latest;
    ASSERT_EQ(cdsm__ckpt_latest(d.path.c_str(), 1, &latest), CDSM_OK);
    EXPECT_EQ(latest, 5u);
    ASSERT_EQ(cdsm__ckpt_latest(d.path.c_str(), 0, &latest), CDSM_OK);
    EXPECT_EQ(latest, 0u);
}

TEST(CkptFile, EmptyCheckpoint)
{
    TempDir d;
    State s(0, 3);
    s.intervals.clear(), s.locks.clear(), s.log.clear(), s.region_names.clear(), s.region_data.clear();
    cdsm__ckpt_t in = s.view();
    in.created = 0; // the writer stamps the time
    ASSERT_EQ(cdsm__ckpt_write(d.path.c_str(), &in), CDSM_OK) << cdsm_last_error();
    cdsm__ckpt_t out;
    ASSERT_EQ(cdsm__ckpt_read(ckpt_path(d.path, 1, 1).c_str(), 1, kJob, &out), CDSM_OK) << cdsm_last_error();
    expect_same(in, out);
    EXPECT_GT(out.created, 1700000000);
    cdsm__ckpt_free(&out);
}

TEST(CkptFile, WriterRejectsBadContent)
{
    TempDir d;
    State s(3, 1);
    cdsm__ckpt_t c = s.view();
    c.base_seq = c.seq;
    EXPECT_EQ(cdsm__ckpt_write(d.path.c_str(), &c), CDSM_ERR_INVALID_ARG);
    c = s.view();
    c.rank = c.nranks;
    EXPECT_EQ(cdsm__ckpt_write(d.path.c_str(), &c), CDSM_ERR_INVALID_ARG);
    c = s.view();
    std::swap(s.page_index[0], s.page_index[1]);
    EXPECT_EQ(cdsm__ckpt_write(d.path.c_str(), &c), CDSM_ERR_INVALID_ARG);
    std::swap(s.page_index[0], s.page_index[1]);
    s.region_names[1] = "solver";
    c = s.view();
    EXPECT_EQ(cdsm__ckpt_write(d.path.c_str(), &c), CDSM_ERR_INVALID_ARG);
    s.region_names[1] = "a/b";
    c = s.view();
    EXPECT_EQ(cdsm__ckpt_write(d.path.c_str(), &c), CDSM_ERR_INVALID_ARG);
    EXPECT_TRUE(d.names().empty());
    EXPECT_EQ(cdsm__ckpt_write((d.path + "/no/such/dir").c_str(), &c), CDSM_ERR_INVALID_ARG);
    s.region_names[1] = "ok";
    c = s.view();
    EXPECT_EQ(cdsm__ckpt_write((d.path + "/no/such/dir").c_str(), &c), CDSM_ERR_IO);
    EXPECT_NE(std::string(cdsm_last_error()).find("/no/such/dir/rank1.ckpt1.h5"), std::string::npos);
}

// The restart manifest and the output release marks (manifest.c): round trips, a missing
// mark, and every refusal names the file.
static void rewrite(const std::string &path, const std::string &from, const std::string &to)
{
    std::ifstream in(path);
    std::string t((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t at = t.find(from);
    ASSERT_NE(at, std::string::npos) << t;
    t.replace(at, from.size(), to);
    std::ofstream(path) << t;
}

TEST(CkptFile, ManifestRoundTripAndDamage)
{
    TempDir d;
    cdsm__manifest_t m = {kJob, 4, 42}, r = {};
    ASSERT_EQ(cdsm__manifest_write(d.path.c_str(), &m), CDSM_OK);
    ASSERT_EQ(cdsm__manifest_read(d.path.c_str(), &r), CDSM_OK);
    EXPECT_EQ(r.job, kJob);
    EXPECT_EQ(r.nranks, 4u);
    EXPECT_EQ(r.epoch, 42u);
    EXPECT_EQ(d.names(), std::vector<std::string>{"manifest"}); // no temporary file left
    rewrite(d.path + "/manifest", "barrier 42", "barrier 43");
    EXPECT_EQ(cdsm__manifest_read(d.path.c_str(), &r), CDSM_ERR_CORRUPT);
    EXPECT_NE(std::string(cdsm_last_error()).find("checksum or content mismatch"), std::string::npos);
    std::ofstream(d.path + "/manifest") << "hello\n";
    EXPECT_EQ(cdsm__manifest_read(d.path.c_str(), &r), CDSM_ERR_CORRUPT);
    EXPECT_NE(std::string(cdsm_last_error()).find("not a cdsm restart manifest"), std::string::npos);
    unlink((d.path + "/manifest").c_str());
    EXPECT_EQ(cdsm__manifest_read(d.path.c_str(), &r), CDSM_ERR_IO);
    EXPECT_NE(std::string(cdsm_last_error()).find("no manifest"), std::string::npos);
}

TEST(CkptFile, ReleaseMarkRoundTripAndRefusals)
{
    TempDir d;
    uint32_t upto = 99;
    ASSERT_EQ(cdsm__output_mark_read(d.path.c_str(), kJob, 2, &upto), CDSM_OK); // none: nothing went out
    EXPECT_EQ(upto, 0u);
    ASSERT_EQ(cdsm__output_mark_write(d.path.c_str(), kJob, 2, 41), CDSM_OK);
    ASSERT_EQ(cdsm__output_mark_write(d.path.c_str(), kJob, 2, 63), CDSM_OK); // replaced
    ASSERT_EQ(cdsm__output_mark_read(d.path.c_str(), kJob, 2, &upto), CDSM_OK);
    EXPECT_EQ(upto, 63u);
    EXPECT_EQ(d.names(), std::vector<std::string>{"rank2.released"});
    std::string path = d.path + "/rank2.released";
    EXPECT_EQ(cdsm__output_mark_read(d.path.c_str(), kJob + 1, 2, &upto), CDSM_ERR_CORRUPT); // another job's
    EXPECT_NE(std::string(cdsm_last_error()).find(path + ": a mark of job"), std::string::npos) << cdsm_last_error();
    rename(path.c_str(), (d.path + "/rank1.released").c_str()); // another rank's, under this name
    rename((d.path + "/rank1.released").c_str(), (d.path + "/keep").c_str());
    ASSERT_EQ(cdsm__output_mark_write(d.path.c_str(), kJob, 1, 7), CDSM_OK);
    rename((d.path + "/rank1.released").c_str(), path.c_str());
    EXPECT_EQ(cdsm__output_mark_read(d.path.c_str(), kJob, 2, &upto), CDSM_ERR_CORRUPT);
    EXPECT_NE(std::string(cdsm_last_error()).find("rank 1, expected job"), std::string::npos) << cdsm_last_error();
    rename((d.path + "/keep").c_str(), path.c_str());
    rewrite(path, "barrier 63", "barrier 64");
    EXPECT_EQ(cdsm__output_mark_read(d.path.c_str(), kJob, 2, &upto), CDSM_ERR_CORRUPT);
    EXPECT_NE(std::string(cdsm_last_error()).find(path + ": not a cdsm output release mark"), std::string::npos);
}

TEST(CkptFile, IncrementalChainRestoresLikeFull)
{
    TempDir d, full;
    State s(30, 7, 3); // pages 2, 5, 8, ...
    s.seq = 1;
    ASSERT_EQ(s.write(d.path), CDSM_OK) << cdsm_last_error();

    // Interval 2: some pages change, one new page appears, the clock moves.
    std::vector<uint32_t> ch2 = {5, 8, 45, 1000};
    for (uint32_t p : ch2) s.touch(p, p * 11);
    s.vc[0] += 3, s.epoch++, s.locks[2] ^= 1, s.log[0] += 100, s.region_data[0][5] ^= 0xff;
    State inc2 = s.only(ch2);
    inc2.seq = 2, inc2.base = 1;
    ASSERT_EQ(inc2.write(d.path), CDSM_OK) << cdsm_last_error();

    // Interval 3: a page from 1 and one from 2 change again, another new one.
    std::vector<uint32_t> ch3 = {2, 45, 3};
    for (uint32_t p : ch3) s.touch(p, p * 13 + 1);
    s.vc[2] += 1, s.epoch++, s.intervals[4]++;
    s.region_data[1].push_back(99);
    State inc3 = s.only(ch3);
    inc3.seq = 3, inc3.base = 2;
    ASSERT_EQ(inc3.write(d.path), CDSM_OK) << cdsm_last_error();

    // The same state as one full checkpoint.
    s.seq = 3, s.base = 0;
    ASSERT_EQ(s.write(full.path), CDSM_OK) << cdsm_last_error();

    cdsm__ckpt_t chain, whole;
    ASSERT_EQ(cdsm__ckpt_restore_chain(d.path.c_str(), 1, kJob, 3, &chain), CDSM_OK) << cdsm_last_error();
    ASSERT_EQ(cdsm__ckpt_read(ckpt_path(full.path, 1, 3).c_str(), 1, kJob, &whole), CDSM_OK);
    EXPECT_EQ(chain.base_seq, 0u);
    EXPECT_EQ(chain.npages, 30u + 3u); // 45, 1000 and 3 are new
    expect_same(chain, whole);
    cdsm__ckpt_free(&chain);
    cdsm__ckpt_free(&whole);

    // A middle of the chain restores too, as the state at 2.
    ASSERT_EQ(cdsm__ckpt_restore_chain(d.path.c_str(), 1, kJob, 2, &chain), CDSM_OK) << cdsm_last_error();
    EXPECT_EQ(chain.seq, 2u);
    EXPECT_EQ(chain.npages, 32u);
    cdsm__ckpt_free(&chain);

    // A chain with a missing link is refused, naming the missing file.
    ASSERT_EQ(unlink(ckpt_path(d.path, 1, 2).c_str()), 0);
    EXPECT_EQ(cdsm__ckpt_restore_chain(d.path.c_str(), 1, kJob, 3, &chain), CDSM_ERR_IO);
    EXPECT_NE(std::string(cdsm_last_error()).find(ckpt_path(d.path, 1, 2)), std::string::npos);
    EXPECT_EQ(chain.npages, 0u);
}

class Refusals : public ::testing::Test {
  protected:
    TempDir d;
    std::string good;
    void SetUp() override
    {
        State s(16, 99);
        s.seq = 4;
        ASSERT_EQ(s.write(d.path), CDSM_OK) << cdsm_last_error();
        good = ckpt_path(d.path, 1, 4);
    }
    std::string copy_as(const std::string &name, size_t len = SIZE_MAX)
    {
        std::vector<char> b = slurp(good);
        std::string p = d.path + "/" + name;
        spit(p, b, std::min(len, b.size()));
        return p;
    }
};

TEST_F(Refusals, MissingFile)
{
    expect_refused(d.path + "/rank1.ckpt9.h5", 1, kJob, CDSM_ERR_IO, "no such file");
}

TEST_F(Refusals, TruncatedFile)
{
    size_t size = slurp(good).size();
    for (size_t len : {size - 1, size / 2, (size_t)100, (size_t)4, (size_t)0}) {
        std::string p = copy_as("truncated.h5", len);
        expect_refused(p, 1, kJob, CDSM_ERR_CORRUPT, "truncated");
    }
}

TEST_F(Refusals, CorruptedPageData)
{
    // Flip one byte in the middle of /pages/page_data.
    hid_t f = H5Fopen(good.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t ds = H5Dopen2(f, "/pages/page_data", H5P_DEFAULT);
    haddr_t off = H5Dget_offset(ds);
    H5Dclose(ds);
    H5Fclose(f);
    ASSERT_NE(off, HADDR_UNDEF);
    std::vector<char> b = slurp(good);
    b[off + 16 * 4096 / 2] ^= 0x10;
    std::string p = d.path + "/flipped.h5";
    spit(p, b, b.size());
    expect_refused(p, 1, kJob, CDSM_ERR_CORRUPT, "/pages/page_data: checksum mismatch");
}

TEST_F(Refusals, AnyFlippedByteIsRefusedOrHarmless)
{
    // Flip bytes all over the file: every read either refuses the file or returns exactly
    // the checkpoint (the byte was unused space); it never returns different content.
    cdsm__ckpt_t ref;
    ASSERT_EQ(cdsm__ckpt_read(good.c_str(), 1, kJob, &ref), CDSM_OK);
    std::vector<char> b = slurp(good);
    std::string p = d.path + "/rank1.ckpt4.h5.fuzz";
    int refused = 0, harmless = 0;
    int old_level = cdsm__log_level;
    cdsm__log_level = -1; // hundreds of refusals: keep the log quiet
    for (size_t pos = 0; pos < b.size(); pos += b.size() / 400 + 1) {
        std::vector<char> m = b;
        m[pos] ^= 0x5a;
        spit(p, m, m.size());
        cdsm__ckpt_t c;
        int rc = cdsm__ckpt_read(p.c_str(), 1, kJob, &c);
        // No HDF5 object is left open, whatever the damage.
        EXPECT_EQ(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL), 0) << "flipped byte at " << pos << ": "
                                                                  << cdsm_last_error();
        if (rc) {
            EXPECT_TRUE(rc == CDSM_ERR_CORRUPT || rc == CDSM_ERR_NOMEM) << pos << ": " << cdsm_status_name(rc);
            refused++;
        } else {
            SCOPED_TRACE("flipped byte at " + std::to_string(pos));
            expect_same(ref, c);
            EXPECT_EQ(ref.created, c.created);
            cdsm__ckpt_free(&c);
            harmless++;
        }
    }
    cdsm__log_level = old_level;
    cdsm__ckpt_free(&ref);
    EXPECT_GT(refused, 0);
    printf("flipped bytes: %d refused, %d in unused space\n", refused, harmless);
}

TEST_F(Refusals, ForeignRank)
{
    expect_refused(good, 2, kJob, CDSM_ERR_CORRUPT, "foreign rank");
}

TEST_F(Refusals, ForeignJob)
{
    expect_refused(good, 1, kJob + 1, CDSM_ERR_CORRUPT, "foreign job");
}

TEST_F(Refusals, WrongVersion)
{
    std::string p = copy_as("v2.h5");
    set_u32_attr(p, "format_version", 2);
    expect_refused(p, 1, kJob, CDSM_ERR_CORRUPT, "unknown format version 2");
}

TEST_F(Refusals, WrongMagic)
{
    std::string p = copy_as("magic.h5");
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    ASSERT_GE(H5Adelete(f, "magic"), 0);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 10);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "magic", t, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, t, "OTHER-APP");
    H5Aclose(a), H5Sclose(sp), H5Tclose(t), H5Fclose(f);
    expect_refused(p, 1, kJob, CDSM_ERR_CORRUPT, "not a cdsm checkpoint");

    // Not HDF5 at all.
    std::string q = d.path + "/text.h5";
    spit(q, std::vector<char>(200, 'x'), 200);
    expect_refused(q, 1, kJob, CDSM_ERR_CORRUPT, "not an HDF5 file");
}

TEST_F(Refusals, AlteredHeader)
{
    // Someone changed the rank attribute (and nothing else): the header checksum says so.
    std::string p = copy_as("altered.h5");
    set_u32_attr(p, "nranks", 5);
    expect_refused(p, 1, kJob, CDSM_ERR_CORRUPT, "header attributes: checksum mismatch");
}

TEST_F(Refusals, RenamedFile)
{
    // A committed name that disagrees with the content is someone else's file.
    std::string p = copy_as("rank1.ckpt5.h5");
    expect_refused(p, 1, kJob, CDSM_ERR_CORRUPT, "file name says rank 1 checkpoint 5");
}

TEST_F(Refusals, TemporaryFileIsNeverACheckpoint)
{
    // A writer killed mid-write: part of a file under the temporary name, never renamed.
    size_t size = slurp(good).size();
    std::string part = copy_as(".rank1.ckpt5.h5.tmp4242", size / 2);
    std::string whole = copy_as(".rank1.ckpt6.h5.tmp4243");
    expect_refused(part, 1, kJob, CDSM_ERR_CORRUPT, "uncommitted temporary file");
    expect_refused(whole, 1, kJob, CDSM_ERR_CORRUPT, "uncommitted temporary file");
    uint64_t latest;
    ASSERT_EQ(cdsm__ckpt_latest(d.path.c_str(), 1, &latest), CDSM_OK);
    EXPECT_EQ(latest, 4u);
    unsigned removed;
    ASSERT_EQ(cdsm__ckpt_remove_temps(d.path.c_str(), 1, &removed), CDSM_OK);
    EXPECT_EQ(removed, 2u);
    EXPECT_EQ(d.names(), std::vector<std::string>{"rank1.ckpt4.h5"});
}

size_t temp_size(const std::string &dir, std::string *name)
{
    size_t best = 0;
    if (DIR *d = opendir(dir.c_str())) {
        while (dirent *e = readdir(d)) {
            if (strncmp(e->d_name, ".rank0.ckpt2.h5.tmp", 19)) continue;
            struct stat st;
            if (!stat((dir + "/" + e->d_name).c_str(), &st)) {
                best = (size_t)st.st_size + 1;
                *name = e->d_name;
            }
        }
        closedir(d);
    }
    return best;
}

TEST(CkptFile, WriterKilledMidWriteLeavesPreviousCheckpoint)
{
    TempDir d;
    State small(4, 5);
    small.rank = 0, small.seq = 1;
    ASSERT_EQ(small.write(d.path), CDSM_OK) << cdsm_last_error();

    State big(1, 6);
    big.rank = 0, big.seq = 2, big.page_size = 16384;
    // 96 MiB of pages: the child is killed while HDF5 is still writing them.
    const uint32_t npages = 6144;
    big.page_index.resize(npages), big.page_state.assign(npages, 2), big.applied.assign(npages * 3, 1);
    for (uint32_t i = 0; i < npages; i++) big.page_index[i] = i;
    big.page_data.assign((size_t)npages * big.page_size, 0xab);

    bool killed_mid_write = false;
    for (int attempt = 0; attempt < 5 && !killed_mid_write; attempt++) {
        pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            int rc = big.write(d.path);
            _exit(rc == CDSM_OK ? 0 : 3);
        }
        std::string tmp;
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        int status = 0;
        bool exited = false;
        while (std::chrono::steady_clock::now() < until) {
            if (temp_size(d.path, &tmp) > (1u << 20)) break; // a megabyte in: mid-write
            if (waitpid(pid, &status, WNOHANG) == pid) {
                exited = true;
                break;
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        if (!exited) {
            kill(pid, SIGKILL);
            ASSERT_EQ(waitpid(pid, &status, 0), pid);
        }
        struct stat st;
        if (exited || !WIFSIGNALED(status) || stat(ckpt_path(d.path, 0, 2).c_str(), &st) == 0) {
            // The child finished before the kill: start over.
            unlink(ckpt_path(d.path, 0, 2).c_str());
            unsigned n;
            cdsm__ckpt_remove_temps(d.path.c_str(), 0, &n);
            continue;
        }
        killed_mid_write = true;
        EXPECT_FALSE(tmp.empty());

        // The previous committed checkpoint is whole; the lookup ignores the temporary file.
        uint64_t latest;
        ASSERT_EQ(cdsm__ckpt_latest(d.path.c_str(), 0, &latest), CDSM_OK);
        EXPECT_EQ(latest, 1u);
        cdsm__ckpt_t in = small.view(), out;
        ASSERT_EQ(cdsm__ckpt_read(ckpt_path(d.path, 0, 1).c_str(), 0, kJob, &out), CDSM_OK) << cdsm_last_error();
        expect_same(in, out);
        cdsm__ckpt_free(&out);
        expect_refused(d.path + "/" + tmp, 0, kJob, CDSM_ERR_CORRUPT, "uncommitted temporary file");
        EXPECT_EQ(cdsm__ckpt_restore_chain(d.path.c_str(), 0, kJob, 2, &out), CDSM_ERR_IO);

        // The next writer of that checkpoint succeeds, and the leftover can be removed.
        unsigned n;
        ASSERT_EQ(cdsm__ckpt_remove_temps(d.path.c_str(), 0, &n), CDSM_OK);
        EXPECT_EQ(n, 1u);
        big.page_data.resize((size_t)4 * big.page_size), big.page_index.resize(4), big.page_state.resize(4);
        big.applied.resize(12);
        ASSERT_EQ(big.write(d.path), CDSM_OK) << cdsm_last_error();
        ASSERT_EQ(cdsm__ckpt_latest(d.path.c_str(), 0, &latest), CDSM_OK);
        EXPECT_EQ(latest, 2u);
    }
    EXPECT_TRUE(killed_mid_write) << "the writer always finished before it could be killed";
}

#ifdef CDSM_CKPT_INFO
std::string run(const std::string &cmd, int *status)
{
    std::string out;
    FILE *p = popen((cmd + " 2>&1").c_str(), "r");
    char buf[512];
    while (p && fgets(buf, sizeof buf, p)) out += buf;
    int st = p ? pclose(p) : -1;
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

TEST_F(Refusals, InfoTool)
{
    int st;
    std::string out = run(std::string(CDSM_CKPT_INFO) + " " + good, &st);
    EXPECT_EQ(st, 0) << out;
    for (const char *want : {"rank         1 of 3", "seq          4", "base         0 (full)",
                             "pages        16 (65536 bytes)", "private      3 regions (1008 bytes)",
                             "checksums    OK", "job          1234abcd5678ef01"})
        EXPECT_NE(out.find(want), std::string::npos) << want << "\n" << out;

    std::string p = copy_as("half.h5", slurp(good).size() / 2);
    out = run(std::string(CDSM_CKPT_INFO) + " " + p, &st);
    EXPECT_EQ(st, 1) << out;
    EXPECT_NE(out.find("checksums    FAILED"), std::string::npos) << out;
    EXPECT_NE(out.find(p + ": truncated"), std::string::npos) << out;

    out = run(std::string(CDSM_CKPT_INFO) + " " + d.path + "/nothing.h5", &st);
    EXPECT_EQ(st, 1) << out;
    EXPECT_NE(out.find("no such file"), std::string::npos) << out;
}
#endif

} // namespace
