// Unit tests: diff encode/apply against a reference, over many seeds.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "diff.h"

namespace {

enum Pattern { SPARSE, RUNS, FIRST_LAST, WHOLE, ALTERNATE, NONE };

// Modify `page` (a copy of twin) according to a pattern; returns the set of changed words.
std::vector<bool> mutate(std::vector<uint32_t> &page, Pattern p, std::mt19937 &rng)
{
    size_t n = page.size();
    std::vector<bool> changed(n, false);
    auto set = [&](size_t i) {
        uint32_t v;
        do v = (uint32_t)rng(); while (v == page[i]);
        page[i] = v;
        changed[i] = true;
    };
    switch (p) {
    case SPARSE:
        for (int k = 0, m = 1 + (int)(rng() % 20); k < m; k++) set(rng() % n);
        break;
    case RUNS:
        for (int k = 0, m = 1 + (int)(rng() % 6); k < m; k++) {
            size_t s = rng() % n, len = 1 + rng() % 64;
            for (size_t i = s; i < std::min(n, s + len); i++) set(i);
        }
        break;
    case FIRST_LAST:
        set(0);
        set(n - 1);
        break;
    case WHOLE:
        for (size_t i = 0; i < n; i++) set(i);
        break;
    case ALTERNATE:
        for (size_t i = rng() % 2; i < n; i += 2) set(i);
        break;
    case NONE:
        break;
    }
    return changed;
}

} // namespace

TEST(Diff, RoundTripManySeeds)
{
    const size_t sizes[] = {4096, 8192, 16384};
    for (size_t size : sizes) {
        size_t n = size / 4;
        std::vector<uint8_t> enc(cdsm__diff_max(size));
        for (unsigned seed = 0; seed < 400; seed++) {
            std::mt19937 rng(seed);
            std::vector<uint32_t> twin(n), page;
            for (auto &w : twin) w = (uint32_t)rng();
            page = twin;
            Pattern p = (Pattern)(seed % 6);
            std::vector<bool> changed = mutate(page, p, rng);
            size_t len = cdsm__diff_encode(page.data(), twin.data(), size, enc.data());
            ASSERT_LE(len, enc.size());
            size_t nchanged = 0;
            for (bool c : changed) nchanged += c;
            ASSERT_EQ(cdsm__diff_words(enc.data(), len), (long)nchanged) << "seed " << seed;
            if (p == NONE) {
                ASSERT_EQ(len, 0u);
            }

            // Applied to the twin, the diff reproduces the page exactly.
            std::vector<uint32_t> out = twin;
            ASSERT_EQ(cdsm__diff_apply(out.data(), size, enc.data(), len), 0);
            ASSERT_EQ(0, memcmp(out.data(), page.data(), size)) << "seed " << seed << " pattern " << p;

            // Applied to a copy where another writer changed other words, it touches only
            // its own words (multiple writers merge).
            std::vector<uint32_t> other = twin;
            std::mt19937 rng2(seed + 100000);
            for (int k = 0; k < 50; k++) {
                size_t i = rng2() % n;
                if (!changed[i]) other[i] = (uint32_t)rng2();
            }
            std::vector<uint32_t> merged = other;
            ASSERT_EQ(cdsm__diff_apply(merged.data(), size, enc.data(), len), 0);
            for (size_t i = 0; i < n; i++) ASSERT_EQ(merged[i], changed[i] ? page[i] : other[i]);
        }
    }
}

TEST(Diff, WorstCaseFitsBound)
{
    const size_t size = 4096, n = size / 4;
    std::vector<uint32_t> twin(n, 0), page(n, 0);
    for (size_t i = 0; i < n; i += 2) page[i] = 1;
    std::vector<uint8_t> enc(cdsm__diff_max(size));
    size_t len = cdsm__diff_encode(page.data(), twin.data(), size, enc.data());
    EXPECT_EQ(len, (n / 2) * 12);
    EXPECT_LE(len, enc.size());
}

TEST(Diff, MalformedIsRejectedWithoutWriting)
{
    const size_t size = 4096;
    std::vector<uint32_t> page(size / 4, 7), copy;
    copy = page;
    cdsm__diff_run_t run = {1020, 8}; // runs past the end of the page
    std::vector<uint8_t> enc(sizeof run + 32, 0xab);
    memcpy(enc.data(), &run, sizeof run);
    EXPECT_EQ(cdsm__diff_apply(page.data(), size, enc.data(), enc.size()), -1);
    EXPECT_EQ(page, copy);
    // Truncated data.
    cdsm__diff_run_t ok = {0, 4};
    std::vector<uint8_t> trunc(sizeof ok + 8);
    memcpy(trunc.data(), &ok, sizeof ok);
    EXPECT_EQ(cdsm__diff_apply(page.data(), size, trunc.data(), trunc.size()), -1);
    // A zero-length run is not valid output of the encoder.
    cdsm__diff_run_t zero = {0, 0};
    EXPECT_EQ(cdsm__diff_apply(page.data(), size, (const uint8_t *)&zero, sizeof zero), -1);
    EXPECT_EQ(page, copy);
}
