// Unit tests: the board of published diffs (lib/transport/board.c), on private memory (no
// MPI, no node-mate). A reader gets exactly the bytes published under a key, or nothing:
// never a wrong byte, whether the key was never published, overwritten as the ring wrapped,
// displaced from the index by another key, or rewritten while it was being copied.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

extern "C" {
#include "transport.h"
}

namespace {

const uint64_t RING = 64 * 1024;

struct Board {
    std::vector<uint64_t> mem; // (8-byte aligned)
    uint64_t nslots;
    explicit Board(uint64_t ring) : mem(cdsm__board_bytes(ring) / 8 + 1)
    {
        cdsm__board_format(mem.data(), ring);
        nslots = (cdsm__board_bytes(ring) - 64 - ring) / 8;
    }
    void *p() { return mem.data(); }
};

// The payload published under key k: len bytes that depend on k.
std::vector<uint8_t> payload(uint64_t k, uint32_t len)
{
    std::vector<uint8_t> v(len);
    for (uint32_t i = 0; i < len; i++) v[i] = (uint8_t)(k * 131 + i * 7 + (k >> 8));
    return v;
}

bool read_back(Board &b, uint64_t ring, uint64_t key, std::vector<uint8_t> *out)
{
    void *blob = nullptr;
    uint32_t len = 0;
    if (cdsm__board_read(b.p(), ring, b.nslots, key, &blob, &len)) return false;
    out->assign((uint8_t *)blob, (uint8_t *)blob + len);
    free(blob);
    return true;
}

} // namespace

TEST(Board, WhatIsPublishedReadsBackExactly)
{
    Board b(RING);
    std::vector<uint8_t> got;
    EXPECT_FALSE(read_back(b, RING, 7, &got)); // never published
    for (uint64_t k = 1; k <= 20; k++) {
        auto v = payload(k, (uint32_t)(k * 37 % 900));
        ASSERT_EQ(cdsm__board_write(b.p(), k, v.data(), (uint32_t)v.size()), 0);
    }
    for (uint64_t k = 1; k <= 20; k++) {
        ASSERT_TRUE(read_back(b, RING, k, &got)) << k;
        EXPECT_EQ(got, payload(k, (uint32_t)(k * 37 % 900))) << k;
    }
    EXPECT_FALSE(read_back(b, RING, 21, &got));
}

TEST(Board, AnEntryLargerThanAQuarterOfTheRingIsNotPublished)
{
    Board b(RING);
    auto v = payload(1, RING / 4);
    EXPECT_EQ(cdsm__board_write(b.p(), 1, v.data(), (uint32_t)v.size()), -1);
    std::vector<uint8_t> got;
    EXPECT_FALSE(read_back(b, RING, 1, &got));
}

// Entries of 4 KiB + 16: the ring holds 15 of them. After 100, the last ones read back
// and the first ones are gone (they were overwritten), never read as another's bytes.
TEST(Board, WhatTheRingOverwroteIsGone)
{
    Board b(RING);
    const uint32_t len = 4096;
    for (uint64_t k = 1; k <= 100; k++) {
        auto v = payload(k, len);
        ASSERT_EQ(cdsm__board_write(b.p(), k, v.data(), len), 0);
    }
    std::vector<uint8_t> got;
    int found = 0;
    for (uint64_t k = 1; k <= 100; k++)
        if (read_back(b, RING, k, &got)) {
            EXPECT_EQ(got, payload(k, len)) << k;
            EXPECT_GT(k, 100u - RING / (len + 16)) << "an overwritten entry read back";
            found++;
        }
    EXPECT_GE(found, (int)(RING / (len + 16)) - 1);
}

// Keys whose index pair is full push out the oldest of the pair: it is not found although
// it is still in the ring (the index names other entries), and the newest is found.
TEST(Board, AKeyDisplacedFromTheIndexIsNotFound)
{
    const uint64_t ring = 1 << 20;
    Board b(ring);
    uint8_t one = 1;
    ASSERT_EQ(cdsm__board_write(b.p(), 1, &one, 1), 0);
    std::vector<uint8_t> got;
    uint64_t k = 2;
    for (; k < 100000; k++) {
        ASSERT_EQ(cdsm__board_write(b.p(), k, &one, 1), 0);
        if (!read_back(b, ring, 1, &got)) break;
    }
    ASSERT_LT(k, 100000u) << "no three keys shared a pair of slots";
    EXPECT_TRUE(read_back(b, ring, k, &got));
}

// A writer publishing as fast as it can into a small ring and a reader copying recent keys
// at the same time: every read that succeeds holds exactly its key's bytes.
TEST(Board, AReaderRacingTheWriterGetsExactBytesOrNothing)
{
    const uint64_t ring = 16 * 1024, N = 200000;
    Board b(ring);
    std::atomic<uint64_t> written{0};
    std::thread writer([&] {
        for (uint64_t k = 1; k <= N; k++) {
            auto v = payload(k, (uint32_t)(64 + k % 1500));
            cdsm__board_write(b.p(), k, v.data(), (uint32_t)v.size());
            written.store(k, std::memory_order_release);
        }
    });
    uint64_t ok = 0, bad = 0, misses = 0;
    std::vector<uint8_t> got;
    for (uint64_t i = 0; written.load(std::memory_order_acquire) < N; i++) {
        uint64_t w = written.load(std::memory_order_acquire);
        if (!w) continue;
        uint64_t k = w - i % 8;
        if (k < 1) continue;
        if (read_back(b, ring, k, &got)) {
            ok++;
            if (got != payload(k, (uint32_t)(64 + k % 1500))) bad++;
        } else {
            misses++;
        }
    }
    writer.join();
    EXPECT_EQ(bad, 0u) << ok << " reads, " << misses << " misses";
    EXPECT_GT(ok, 0u);
}
