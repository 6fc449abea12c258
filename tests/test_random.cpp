// Random data-race-free programs against a sequential interpretation (run at 2-4 ranks
// with the consistency checker on).
//
// Each seed makes a program over a shared array of a few pages: phases separated by
// barriers; in each phase every word is owned by one rank (plain writes by it alone),
// protected by one lock (read-modify-write under that lock by any rank), or read-only.
// Categories change every phase, so pages go from one writer to several and back, words
// move between ranks and locks, and a page is read long after it was written. Every rank
// derives the whole program from the seed, so every rank can compute what each word must
// hold: inside a critical section (every word of the lock's set equal: the words a grant
// brings are consistent), for a read-only word, for its own writes, and for every word
// after each barrier.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include <cdsm.h>

namespace {

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}
    uint64_t next()
    {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    }
    uint32_t below(uint32_t n) { return (uint32_t)(next() % n); }
};

uint32_t mix(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    Rng r(a * 1000003u ^ b * 10007u ^ c * 101u ^ d);
    return (uint32_t)r.next() | 1u;
}

enum Kind { WRITE, READ, SECTION };

struct Op {
    Kind kind;
    uint32_t word;  // WRITE, READ
    uint32_t lock;  // SECTION: index of the lock
    uint32_t value; // WRITE: the value; SECTION: the delta
};

// One program: sizes and, per phase, the category of each word and each rank's steps.
struct Program {
    uint64_t seed;
    int nranks;
    uint32_t words, locks, phases;
    // per phase: category of each word: rank r (< nranks), nranks + lock, or RO (~0u)
    std::vector<std::vector<uint32_t>> cat;
    std::vector<std::vector<std::vector<Op>>> ops; // [phase][rank]
};

const uint32_t RO = ~0u;

Program make(uint64_t seed, int nranks, size_t page_words)
{
    Rng g(seed);
    Program p;
    p.seed = seed;
    p.nranks = nranks;
    p.words = (uint32_t)(page_words * (2 + g.below(5))) - g.below((uint32_t)page_words / 2);
    p.locks = 1 + g.below(4);
    p.phases = 3 + g.below(4);
    for (uint32_t ph = 0; ph < p.phases; ph++) {
        std::vector<uint32_t> cat(p.words);
        std::vector<std::vector<uint32_t>> owned(nranks), guarded(p.locks);
        std::vector<uint32_t> readonly;
        // Runs of words share a category (a page is then written by one rank, several, or
        // none), with single words sprinkled in (false sharing).
        for (uint32_t w = 0; w < p.words;) {
            uint32_t c = g.below((uint32_t)nranks + p.locks + 1);
            uint32_t run = g.below(4) ? 1 + g.below((uint32_t)page_words) : 1;
            for (uint32_t k = 0; k < run && w < p.words; k++, w++) {
                cat[w] = c < (uint32_t)nranks + p.locks ? c : RO;
                if (c < (uint32_t)nranks) owned[c].push_back(w);
                else if (c < (uint32_t)nranks + p.locks) guarded[c - nranks].push_back(w);
                else readonly.push_back(w);
            }
        }
        std::vector<std::vector<Op>> steps(nranks);
        for (int r = 0; r < nranks; r++) {
            uint32_t n = 10 + g.below(40);
            for (uint32_t k = 0; k < n; k++) {
                uint32_t what = g.below(10);
                if (what < 5 && !owned[r].empty()) {
                    uint32_t w = owned[r][g.below((uint32_t)owned[r].size())];
                    steps[r].push_back({WRITE, w, 0, mix(seed, ph, w, k)});
                } else if (what < 7 && !readonly.empty()) {
                    steps[r].push_back({READ, readonly[g.below((uint32_t)readonly.size())], 0, 0});
                } else {
                    uint32_t l = g.below(p.locks);
                    if (!guarded[l].empty()) steps[r].push_back({SECTION, 0, l, 1 + mix(seed, ph, r, k) % 1000});
                }
            }
        }
        p.cat.push_back(cat);
        p.ops.push_back(steps);
    }
    return p;
}

// The array after phase ph, given it before (model), in the sequential interpretation.
void advance(const Program &p, uint32_t ph, std::vector<uint32_t> &model)
{
    std::vector<uint32_t> added(p.locks, 0);
    for (int r = 0; r < p.nranks; r++)
        for (const Op &op : p.ops[ph][r]) {
            if (op.kind == WRITE) model[op.word] = op.value; // the owner's last write wins
            if (op.kind == SECTION) added[op.lock] += op.value;
        }
    for (uint32_t w = 0; w < p.words; w++) {
        uint32_t c = p.cat[ph][w];
        if (c != RO && c >= (uint32_t)p.nranks) model[w] += added[c - p.nranks];
    }
}

// Run phase ph on this rank, checking what it reads; the lock ids start at lock0.
void run_phase(const Program &p, uint32_t ph, volatile uint32_t *a, const std::vector<uint32_t> &before, int lock0)
{
    int me = cdsm_rank();
    std::vector<std::vector<uint32_t>> guarded(p.locks);
    for (uint32_t w = 0; w < p.words; w++) {
        uint32_t c = p.cat[ph][w];
        if (c != RO && c >= (uint32_t)p.nranks) guarded[c - p.nranks].push_back(w);
    }
    for (const Op &op : p.ops[ph][me]) {
        if (op.kind == WRITE) {
            a[op.word] = op.value;
            ASSERT_EQ(a[op.word], op.value) << "seed " << p.seed << " phase " << ph << ": own write of word " << op.word;
        } else if (op.kind == READ) {
            ASSERT_EQ(a[op.word], before[op.word])
                << "seed " << p.seed << " phase " << ph << ": read-only word " << op.word;
        } else {
            ASSERT_EQ(cdsm_lock_acquire(lock0 + (int)op.lock), CDSM_OK) << cdsm_last_error();
            const std::vector<uint32_t> &set = guarded[op.lock];
            uint32_t first = a[set[0]] - before[set[0]];
            for (uint32_t w : set) { // every word of the set got the same additions so far
                ASSERT_EQ(a[w] - before[w], first)
                    << "seed " << p.seed << " phase " << ph << ": lock " << op.lock << " word " << w;
                a[w] += op.value;
            }
            ASSERT_EQ(cdsm_lock_release(lock0 + (int)op.lock), CDSM_OK) << cdsm_last_error();
        }
    }
}

void run_program(uint64_t seed)
{
    // Every third program frees its block (the next ones reuse it); the others leave theirs,
    // so that the next program's pages are fresh. Each page is cleared first by a rank the
    // seed picks: a fresh page's first touch, so owners vary (not always rank 0).
    size_t page_words = cdsm_page_size() / sizeof(uint32_t);
    Program p = make(seed, cdsm_nranks(), page_words);
    void *mem = nullptr;
    ASSERT_EQ(cdsm_alloc(p.words * sizeof(uint32_t), &mem), CDSM_OK) << cdsm_last_error();
    volatile uint32_t *a = static_cast<volatile uint32_t *>(mem);
    std::vector<uint32_t> model(p.words, 0);
    for (uint32_t w = 0; w < p.words; w++)
        if (mix(seed, w / page_words, 7, 7) % (uint32_t)cdsm_nranks() == (uint32_t)cdsm_rank()) a[w] = 0;
    ASSERT_EQ(cdsm_barrier(), CDSM_OK) << cdsm_last_error();
    int lock0 = 1 + (int)(seed % 64) * 4; // a fresh set of lock ids per program, mostly
    for (uint32_t ph = 0; ph < p.phases; ph++) {
        std::vector<uint32_t> before(model);
        run_phase(p, ph, a, before, lock0);
        ASSERT_EQ(cdsm_barrier(), CDSM_OK) << cdsm_last_error();
        advance(p, ph, model);
        for (uint32_t w = 0; w < p.words; w++)
            ASSERT_EQ(a[w], model[w]) << "seed " << seed << " after phase " << ph << ": word " << w << " of "
                                      << p.words << " (category " << (int)p.cat[ph][w] << ")";
        // The checks read every word: the next phase's writes wait for every rank's.
        ASSERT_EQ(cdsm_barrier(), CDSM_OK) << cdsm_last_error();
    }
    if (seed % 3 == 0) {
        ASSERT_EQ(cdsm_free(mem), CDSM_OK) << cdsm_last_error();
    }
}

} // namespace

TEST(Random, DataRaceFreeProgramsMatchTheirSequentialInterpretation)
{
    const char *env = getenv("RANDOM_TEST_SEEDS");
    uint64_t first = 1, count = env ? strtoull(env, nullptr, 10) : 40;
    ASSERT_GT(count, 0u);
    for (uint64_t seed = first; seed < first + count; seed++) {
        run_program(seed);
        if (::testing::Test::HasFatalFailure()) return;
    }
    cdsm_stats_t s;
    ASSERT_EQ(cdsm_stats_get(&s), CDSM_OK);
    // The programs did share: grants moved data and misses fetched it.
    if (cdsm_nranks() > 1) {
        EXPECT_GT(s.lock_acquires, s.lock_acquires_local);
        EXPECT_GT(s.read_faults, 0u);
        EXPECT_GT(s.invalidations, 0u);
    }
}
