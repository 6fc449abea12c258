// cdsm__untouched: the pages of a private anonymous mapping never touched, without
// touching them (the globals' start-up copy skips them); a file's pages are never called
// untouched (not present there still means the file's bytes).
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

#include "untouched.h"

TEST(Untouched, NamesThePagesNeverWrittenOrRead)
{
    const size_t os = (size_t)sysconf(_SC_PAGESIZE), n = 64;
    char *m = static_cast<char *>(mmap(nullptr, n * os, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(m, MAP_FAILED);
    m[3 * os] = 1;                                   // written
    volatile char sink = m[10 * os + 5];             // read: the zero page is mapped
    (void)sink;
    std::vector<uint8_t> out(n, 7);
    ASSERT_EQ(cdsm__untouched(m, n, os, out.data()), 0);
    for (size_t i = 0; i < n; i++) EXPECT_EQ(out[i], i == 3 || i == 10 ? 0 : 1) << "page " << i;
    // After the last call, pages touched since are touched.
    m[40 * os] = 2;
    ASSERT_EQ(cdsm__untouched(m + 32 * os, 16, os, out.data()), 0);
    for (size_t i = 0; i < 16; i++) EXPECT_EQ(out[i], i == 8 ? 0 : 1) << "page " << 32 + i;
    munmap(m, n * os);
}

TEST(Untouched, AFileMappingIsNeverUntouched)
{
    const size_t os = (size_t)sysconf(_SC_PAGESIZE), n = 4;
    FILE *f = tmpfile();
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(ftruncate(fileno(f), (off_t)(n * os)), 0);
    char *m = static_cast<char *>(mmap(nullptr, n * os, PROT_READ | PROT_WRITE, MAP_PRIVATE, fileno(f), 0));
    ASSERT_NE(m, MAP_FAILED);
    std::vector<uint8_t> out(n, 7);
    ASSERT_EQ(cdsm__untouched(m, n, os, out.data()), 0);
    for (size_t i = 0; i < n; i++) EXPECT_EQ(out[i], 0) << "page " << i;
    munmap(m, n * os);
    fclose(f);
}
