/* The node heap (DESIGN, "The node heap"): when every rank of a job runs on one host, with
 * no spares, the ranks map one heap, rank 0's memfd, handed to the others over the
 * doorbell sockets at start-up. Every page is then owned by every rank at once: written
 * in place, no write detection, twin, diff or notice; the host's caches keep the copies
 * coherent, as they do for threads. Locks become words in the same memfd, taken by an
 * atomic exchange and waited for with a futex; barriers stay the protocol's (they are
 * also where checkpoints, collections and output commits happen).
 *
 * Why only without spares: a replay needs every value its rank read to be reproducible
 * from logs, and a read of a node-mate's word in place leaves no trace. Why only when the
 * whole job is on one host: a heap shared by some ranks and kept coherent with the others
 * by the page protocol needs a two-level protocol (the node as the unit), not built. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "inject.h"
#include "proto.h"

/* A lock word: free, taken, or taken with a waiter sleeping on it (Drepper's mutex). */
enum { NL_FREE = 0, NL_TAKEN = 1, NL_WAITERS = 2 };
/* A waiter looks at the loss of a rank at least this often (the loss also wakes it). */
enum { NL_WAIT_NS = 200 * 1000 * 1000 };

cdsm__node_t cdsm__node;

static int futex(uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
    return (int)syscall(SYS_futex, w, op, val, ts, NULL, 0);
}

/* Where the words live in the heap's memfd: after the heap and the globals, a hole until
 * a lock is used. */
static size_t words_bytes(void)
{
    return ((size_t)cdsm__cfg.locks * sizeof(uint32_t) + cdsm__heap.os_page - 1) & ~(cdsm__heap.os_page - 1);
}

size_t cdsm__node_extra_bytes(void)
{
    return words_bytes();
}

/* Why this run cannot have a node heap (before the transport), or NULL. */
static const char *why_not(void)
{
    if (cdsm__cfg.spares) return "CDSM_SPARES is set (a replay needs every read logged)";
    if (cdsm__cfg.check) return "CDSM_CHECK=1 (the checker audits the page protocol)";
    if (!cdsm__cfg.ownership) return "CDSM_OWNERSHIP=0 (every page tracked)";
    if (cdsm__cfg.transport == 2) return "CDSM_TRANSPORT=socket";
    return NULL;
}

void cdsm__node_offer(void)
{
    if (cdsm__cfg.node_heap == 2 || cdsm__w.n < 2 || why_not()) return;
    /* Rank 0's globals go into the memfd now, before anyone maps it; in a node heap
     * nobody copies them again (a rank already running may have written them). */
    if (cdsm__w.rank == 0) cdsm__heap_globals_copy();
    cdsm__tp_offer_heap_fd(cdsm__heap.memfd);
}

/* Map fd over our heap (with prot) and library view (same addresses); 0 or -1. */
static int map_heap(int fd, int prot)
{
    size_t total = cdsm__heap.heap_size + cdsm__heap.gsize;
    void *a = mmap(cdsm__heap.base, cdsm__heap.heap_size, prot, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd, 0);
    if (a == MAP_FAILED) return -1;
    void *s = mmap(cdsm__heap.sys, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd, 0);
    return s == MAP_FAILED ? -1 : 0;
}

static int map_words(int fd)
{
    void *w = mmap(NULL, words_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
                   (off_t)(cdsm__heap.heap_size + cdsm__heap.gsize));
    cdsm__node.words = w == MAP_FAILED ? NULL : w;
    cdsm__node.held = calloc(cdsm__cfg.locks, 1);
    return cdsm__node.words && cdsm__node.held ? 0 : -1;
}

/* After the transport: each rank maps rank 0's memfd over its own heap and library view
 * (rank 0 its own again: a fresh mapping with no write-protect registration left on it),
 * and its lock words; then every rank agrees (one collective, at start-up). A rank whose
 * part failed turns it off for all, and each goes back to its own heap; where
 * CDSM_NODE_HEAP=1 the start-up then fails, saying why. */
int cdsm__node_attach(void)
{
    int fd = cdsm__tp_node_heap_fd(), mine = cdsm__heap.memfd;
    if (cdsm__w.n < 2) return CDSM_OK; /* (one rank owns every page already; spares know n too) */
    const char *why = cdsm__cfg.node_heap == 2 ? "CDSM_NODE_HEAP=0" : why_not();
    int ok = !why && (fd >= 0 || fd == -2), e = 0;
    int use = fd >= 0 ? fd : mine, tried = ok;
    if (ok && (map_heap(use, PROT_READ | PROT_WRITE) || map_words(use))) {
        ok = 0;
        e = errno;
        cdsm__log(CDSM_LOG_WARN, "node heap: cannot map rank 0's heap or its lock words: %s", strerror(e));
    }
    /* (Both at once: whether every rank could, and whether none requires it.) */
    int vote[2] = {ok, cdsm__cfg.node_heap != 1}, agreed[2] = {0, 0};
    MPI_Allreduce(vote, agreed, 2, MPI_INT, MPI_MIN, cdsm__w.comm);
    if (agreed[0]) {
        if (fd >= 0) close(mine);
        cdsm__heap.memfd = use;
        cdsm__own_fini(); /* (the first-touch directory: nothing to direct) */
        cdsm__heap.own_mode = CDSM_OWN_NODE;
        cdsm__node.on = 1;
        return CDSM_OK;
    }
    /* Back to our own heap, as the page protocol maps it (the same calls that worked). */
    if (tried && map_heap(mine, cdsm__heap_initial_prot()))
        return cdsm__error(CDSM_ERR_HEAP_MAP, "node heap: cannot map this rank's own heap again: %s", strerror(errno));
    if (fd >= 0) close(fd);
    cdsm__node_fini();
    if (agreed[1]) return CDSM_OK;
    if (cdsm__cfg.node_heap != 1)
        return cdsm__error(CDSM_ERR_CONFIG, "another rank requires CDSM_NODE_HEAP=1, and the ranks cannot share one "
                                            "heap%s%s", why ? ": " : "", why ? why : "");
    if (!why) why = ok ? "another rank could not map rank 0's heap (its log says why)"
                       : e ? "this rank could not map rank 0's heap"
                           : "not every process of the job runs on this host, or rank 0's heap did not arrive";
    return cdsm__error(CDSM_ERR_CONFIG, "CDSM_NODE_HEAP=1, but the ranks cannot share one heap: %s", why);
}

void cdsm__node_fini(void)
{
    if (cdsm__node.words) munmap(cdsm__node.words, words_bytes());
    free(cdsm__node.held);
    memset(&cdsm__node, 0, sizeof cdsm__node);
}

/* ---- locks ------------------------------------------------------------------------------ */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static int spin_take(uint32_t *w)
{
    uint64_t end = cdsm__mono_ns() + cdsm__cfg.spin_us * 1000;
    do {
        uint32_t c = NL_FREE;
        if (__atomic_load_n(w, __ATOMIC_RELAXED) == NL_FREE &&
            __atomic_compare_exchange_n(w, &c, NL_TAKEN, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 1;
        cpu_relax();
    } while (cdsm__mono_ns() < end);
    return 0;
}

/* Sleep until the word is ours (marked as having waiters: the release wakes one), or a
 * rank is lost for good (no spare: the job cannot go on; the holder may be the dead). */
static int sleep_take(int id, uint32_t *w)
{
    struct timespec ts = {0, NL_WAIT_NS};
    __atomic_store_n(&cdsm__node.waiting, w, __ATOMIC_RELEASE);
    while (__atomic_exchange_n(w, NL_WAITERS, __ATOMIC_ACQUIRE) != NL_FREE) {
        if (cdsm__lost() >= 0) {
            __atomic_store_n(&cdsm__node.waiting, NULL, __ATOMIC_RELEASE);
            return cdsm__error(CDSM_ERR_PEER_LOST, "cdsm_lock_acquire(%d): rank %d was lost", id, cdsm__lost());
        }
        futex(w, FUTEX_WAIT, NL_WAITERS, &ts);
    }
    __atomic_store_n(&cdsm__node.waiting, NULL, __ATOMIC_RELEASE);
    return CDSM_OK;
}

int cdsm__node_lock_acquire(int id)
{
    if (cdsm__node.held[id])
        return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_lock_acquire(%d): already held by this rank", id);
    uint32_t *w = &cdsm__node.words[id], c = NL_FREE;
    CDSM_STAT_ADD(lock_acquires, 1);
    if (__atomic_compare_exchange_n(w, &c, NL_TAKEN, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        CDSM_STAT_ADD(lock_acquires_local, 1);
    } else if (!spin_take(w)) {
        int rc = sleep_take(id, w);
        if (rc) return rc;
    }
    cdsm__node.held[id] = 1;
    cdsm__node.nheld++;
    cdsm__inject(cdsm__w.rank, "lock_held"); /* (a test's moment: a holder that dies) */
    return CDSM_OK;
}

int cdsm__node_lock_release(int id)
{
    if (!cdsm__node.held[id])
        return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_lock_release(%d): not held by this rank", id);
    cdsm__node.held[id] = 0;
    cdsm__node.nheld--;
    uint32_t *w = &cdsm__node.words[id];
    if (__atomic_exchange_n(w, NL_FREE, __ATOMIC_RELEASE) == NL_WAITERS) futex(w, FUTEX_WAKE, 1, NULL);
    return CDSM_OK;
}

void cdsm__node_wake(void)
{
    uint32_t *w = __atomic_load_n(&cdsm__node.waiting, __ATOMIC_ACQUIRE);
    if (w) futex(w, FUTEX_WAKE, INT_MAX, NULL);
}

/* ---- the globals after the run ---------------------------------------------------------- */

/* ---- the locks in a checkpoint ------------------------------------------------------------ */

/* Layout (host order, as every dataset of the file): u32 count, then the ids of the locks
 * this rank holds. A restart takes them again before any rank can ask (cdsm_resume ends
 * with a barrier). */
size_t cdsm__node_state_bytes(void)
{
    return cdsm__node.on ? 4 + 4 * (size_t)cdsm__node.nheld : 0;
}

void cdsm__node_state_put(uint8_t *b)
{
    uint32_t k = 0;
    for (uint32_t id = 0; id < cdsm__cfg.locks && k < cdsm__node.nheld; id++)
        if (cdsm__node.held[id]) memcpy(b + 4 + 4 * (size_t)k++, &id, 4);
    memcpy(b, &k, 4);
}

int cdsm__node_state_take(const uint8_t *b, size_t n)
{
    uint32_t k = 0, id;
    if (n >= 4) memcpy(&k, b, 4);
    if (n < 4 || n != 4 + 4 * (size_t)k)
        return cdsm__error(CDSM_ERR_CORRUPT, "cdsm_resume: the node heap's lock list is %zu bytes, not 4 + 4 x %u", n,
                           k);
    for (uint32_t i = 0; i < k; i++) {
        memcpy(&id, b + 4 + 4 * (size_t)i, 4);
        if (id >= cdsm__cfg.locks || cdsm__node.held[id])
            return cdsm__error(CDSM_ERR_CORRUPT, "cdsm_resume: the node heap's lock list names lock %u (of %u) twice "
                                                 "or out of range", id, (unsigned)cdsm__cfg.locks);
        cdsm__node.held[id] = 1;
        cdsm__node.nheld++;
        __atomic_store_n(&cdsm__node.words[id], NL_TAKEN, __ATOMIC_RELEASE);
    }
    return CDSM_OK;
}

/* ---- more of the program's globals ------------------------------------------------------ */

int cdsm__node_share_pages(void *addr, size_t len, uint64_t heap_off)
{
    if (cdsm__node.npieces == CDSM_NODE_PIECES)
        return cdsm__error(CDSM_ERR_NOMEM, "node heap: more than %d pieces of globals", CDSM_NODE_PIECES);
    void *a = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, cdsm__heap.memfd, (off_t)heap_off);
    if (a == MAP_FAILED)
        return cdsm__error(CDSM_ERR_HEAP_MAP, "node heap: cannot map globals at %p..+%zu: %s", addr, len,
                           strerror(errno));
    cdsm__node.pieces[cdsm__node.npieces++] = (cdsm__node_piece_t){addr, len};
    return CDSM_OK;
}

/* Copy the globals' bytes that hold data (the memfd's data runs: a large .bss never
 * touched stays a hole, and reading it would allocate it) to `to`. */
static int copy_data(char *to)
{
    off_t lo = (off_t)cdsm__heap.heap_size, end = lo + (off_t)cdsm__heap.gsize, pos = lo;
    while (pos < end) {
        off_t data = lseek(cdsm__heap.memfd, pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO) break; /* only a hole is left */
        off_t hole = data < 0 ? -1 : lseek(cdsm__heap.memfd, data, SEEK_HOLE);
        if (hole < 0) return -1;
        if (data >= end) break;
        if (hole > end) hole = end;
        memcpy(to + (data - lo), cdsm__heap.gbase + (data - lo), (size_t)(hole - data));
        pos = hole;
    }
    return 0;
}

/* A private copy of shared globals (all their bytes, or for the heap's own piece only its
 * data runs), moved over the shared mapping in one step; logged if it stays shared. */
static int unshare_globals(char *addr, size_t len, int data_only)
{
    char *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (copy == MAP_FAILED) goto fail;
    if (data_only ? copy_data(copy) : (memcpy(copy, addr, len), 0)) goto fail;
    if (mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr) != MAP_FAILED) return 0;
fail:
    cdsm__log(CDSM_LOG_WARN, "node heap: the globals at %p stay shared after cdsm_finalize: %s", (void *)addr,
              strerror(errno));
    if (copy != MAP_FAILED) munmap(copy, len);
    return -1;
}

/* Each rank's globals become its own again (the values every rank sees at the last
 * barrier), so that a program going on after cdsm_finalize does not write its
 * node-mates' globals. Between the two barriers of cdsm_finalize. */
void cdsm__node_unshare_globals(void)
{
    if (!cdsm__node.on) return;
    for (int i = 0; i < cdsm__node.npieces; i++)
        unshare_globals(cdsm__node.pieces[i].addr, cdsm__node.pieces[i].len, 0);
    cdsm__node.npieces = 0;
    if (cdsm__heap.gmapped && !unshare_globals(cdsm__heap.gbase, cdsm__heap.gsize, 1)) cdsm__heap.gmapped = 0;
}
