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
    for (size_t i = 0; i < n; i += 2) page[i] = 1; // one byte of every other word: masked runs
    std::vector<uint8_t> enc(cdsm__diff_max(size));
    size_t len = cdsm__diff_encode(page.data(), twin.data(), size, enc.data());
    EXPECT_EQ(len, (n / 2) * 13);
    EXPECT_LE(len, enc.size());
    for (size_t i = 0; i < n; i += 2) page[i] = 0x01010101u; // whole words: no mask
    EXPECT_EQ(cdsm__diff_encode(page.data(), twin.data(), size, enc.data()), (n / 2) * 12);
}

// Two writers change different bytes of the same words (8-bit pixels, adjacent char flags):
// each diff carries only its own bytes, so both writes survive in either order.
TEST(Diff, BytesOfOneWordFromTwoWriters)
{
    const size_t size = 4096;
    std::vector<uint8_t> twin(size, 0x55), a = twin, b = twin;
    for (size_t i = 0; i < size; i += 2) a[i] = (uint8_t)(i / 2); // even bytes (a few equal the twin)
    for (size_t i = 1; i < size; i += 4) b[i] = 0xee;             // every other odd byte
    std::vector<uint8_t> ea(cdsm__diff_max(size)), eb(cdsm__diff_max(size));
    size_t la = cdsm__diff_encode(a.data(), twin.data(), size, ea.data());
    size_t lb = cdsm__diff_encode(b.data(), twin.data(), size, eb.data());
    for (int order = 0; order < 2; order++) {
        std::vector<uint8_t> m = twin;
        ASSERT_EQ(cdsm__diff_apply(m.data(), size, order ? eb.data() : ea.data(), order ? lb : la), 0);
        ASSERT_EQ(cdsm__diff_apply(m.data(), size, order ? ea.data() : eb.data(), order ? la : lb), 0);
        for (size_t i = 0; i < size; i++) ASSERT_EQ(m[i], i % 2 == 0 ? a[i] : b[i]) << "byte " << i << " order " << order;
    }
    EXPECT_EQ(cdsm__diff_words(eb.data(), lb), (long)(size / 4)); // one changed byte in each word
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
    // A mask that names no byte, or a mask past the run's last word.
    for (uint8_t bad : {(uint8_t)0, (uint8_t)0x11}) {
        cdsm__diff_run_t m = {0, 1 | CDSM_DIFF_MASKED};
        std::vector<uint8_t> e(sizeof m + 5, 0xab);
        memcpy(e.data(), &m, sizeof m);
        e[sizeof m] = bad;
        EXPECT_EQ(cdsm__diff_apply(page.data(), size, e.data(), e.size()), -1);
    }
    EXPECT_EQ(page, copy);
}

namespace {

// The encoding word by word, as the format defines it (diff.h): the reference the
// encoder's two-words-at-a-time paths must match byte for byte.
std::vector<uint8_t> reference_encode(const std::vector<uint32_t> &p, const std::vector<uint32_t> &t)
{
    std::vector<uint8_t> out;
    auto put = [&](const void *v, size_t n) { out.insert(out.end(), (const uint8_t *)v, (const uint8_t *)v + n); };
    size_t n = p.size(), i = 0;
    while (i < n) {
        if (p[i] == t[i]) {
            i++;
            continue;
        }
        size_t s = i;
        bool partial = false;
        for (; i < n && p[i] != t[i]; i++) {
            uint32_t x = p[i] ^ t[i];
            for (int b = 0; b < 4; b++) partial |= ((x >> 8 * b) & 0xff) == 0;
        }
        cdsm__diff_run_t run = {(uint32_t)s, (uint32_t)(i - s) | (partial ? CDSM_DIFF_MASKED : 0u)};
        put(&run, sizeof run);
        if (partial) {
            std::vector<uint8_t> m((i - s + 1) / 2, 0);
            for (size_t j = 0; j < i - s; j++) {
                uint8_t bytes = 0;
                for (int b = 0; b < 4; b++) // the word's byte b in memory
                    bytes |= (uint8_t)((((const uint8_t *)&p[s + j])[b] != ((const uint8_t *)&t[s + j])[b]) << b);
                m[j / 2] |= (uint8_t)(bytes << (j & 1) * 4);
            }
            put(m.data(), m.size());
        }
        put(&p[s], 4 * (i - s));
    }
    return out;
}

} // namespace

// Runs of every length from 1 to 9 words at every offset, words changed whole or in part
// (some bytes kept), on pages of odd and even word counts: the encoding is the reference's
// byte for byte, and applying it over a page where another writer changed the kept bytes
// keeps that writer's bytes.
TEST(Diff, PairedPathsMatchTheWordByWordFormat)
{
    std::mt19937 rng(7);
    for (size_t n : {9u, 10u, 17u, 1024u})
        for (size_t len = 1; len <= 9 && len <= n; len++)
            for (size_t off = 0; off + len <= n && off < 6; off++)
                for (int trial = 0; trial < 20; trial++) {
                    std::vector<uint32_t> t(n), p;
                    for (auto &w : t) w = (uint32_t)rng();
                    p = t;
                    std::vector<uint32_t> other = t; // a second writer's bytes: those p keeps
                    for (size_t i = off; i < off + len; i++) {
                        uint8_t *pb = (uint8_t *)&p[i], *ob = (uint8_t *)&other[i];
                        int keep = (int)(rng() % 5) - 1; // -1: the whole word changes
                        for (int b = 0; b < 4; b++) {
                            if (b == keep) {
                                ob[b] = (uint8_t)(ob[b] ^ 0x5a);
                                continue;
                            }
                            pb[b] = (uint8_t)(pb[b] ^ (1 + rng() % 255));
                        }
                    }
                    std::vector<uint8_t> enc(cdsm__diff_max(4 * n));
                    size_t l = cdsm__diff_encode(p.data(), t.data(), 4 * n, enc.data());
                    std::vector<uint8_t> want = reference_encode(p, t);
                    ASSERT_EQ(std::vector<uint8_t>(enc.begin(), enc.begin() + (long)l), want)
                        << "n " << n << " len " << len << " off " << off << " trial " << trial;
                    std::vector<uint32_t> m = other;
                    ASSERT_EQ(cdsm__diff_apply(m.data(), 4 * n, enc.data(), l), 0);
                    for (size_t i = 0; i < n; i++)
                        for (int b = 0; b < 4; b++) {
                            uint8_t pb = ((uint8_t *)&p[i])[b], tb = ((uint8_t *)&t[i])[b], ob = ((uint8_t *)&other[i])[b];
                            ASSERT_EQ(((uint8_t *)&m[i])[b], pb != tb ? pb : ob) << "word " << i << " byte " << b;
                        }
                }
}
