/* Published diffs (MPI-doorbell provider, processes on one host): each process appends
 * the diffs it makes to a ring in shared memory (a memfd its node-mates map read-only at
 * start-up), indexed by key, so that a node-mate's access miss copies them without a
 * message and without waking the writer (issue 15: a miss served by a node-mate costs a
 * memory copy, with the holder computing).
 *
 * One writer (the owner, under the protocol's lock), any number of readers, no lock
 * between them. Entries never move and never wrap around the ring's end; a reader checks
 * after copying that the writer has not reserved the entry's bytes again (a sequence lock
 * on the ring position), and a key the index no longer names, or names for another entry,
 * is simply not there: the reader asks the writer by message, as without the board. So
 * the board is a cache that can only miss, never serve a wrong byte. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bell.h"
#include "config.h"
#include "counters.h"

enum { BOARD_BYTE = 4 };
#define BOARD_MAGIC 0x31647262736d6463ull /* "cdsmbrd1" */

typedef struct board_hdr {
    uint64_t magic;
    uint64_t ring;     /* bytes of the ring */
    uint64_t nslots;   /* index slots (a power of two) */
    uint64_t head;     /* ring position after the last published entry (monotonic) */
    uint64_t reserve;  /* ring position up to which the writer may be writing */
    uint64_t pad[3];
} board_hdr_t;
CDSM__STATIC_ASSERT(sizeof(board_hdr_t) == 64, "the board header is shared between processes");

typedef struct board_entry {
    uint64_t key;
    uint32_t len;
    uint32_t pad;
} board_entry_t;
CDSM__STATIC_ASSERT(sizeof(board_entry_t) == 16, "a board entry is shared between processes");

static uint64_t nslots_for(uint64_t ring)
{
    uint64_t n = 1024;
    while (n * 2 <= ring / 512) n *= 2;
    return n;
}

size_t cdsm__board_bytes(uint64_t ring)
{
    return sizeof(board_hdr_t) + nslots_for(ring) * sizeof(uint64_t) + ring;
}

void cdsm__board_format(void *mem, uint64_t ring)
{
    board_hdr_t *h = mem;
    memset(h, 0, sizeof *h);
    h->magic = BOARD_MAGIC;
    h->ring = ring;
    h->nslots = nslots_for(ring);
}

static uint64_t *slots(const void *mem)
{
    return (uint64_t *)((char *)mem + sizeof(board_hdr_t));
}

static uint8_t *ring_at(const void *mem, uint64_t nslots, uint64_t off)
{
    return (uint8_t *)mem + sizeof(board_hdr_t) + nslots * sizeof(uint64_t) + off;
}

static uint64_t slot_of(uint64_t key, uint64_t nslots)
{
    return (key * 0x9e3779b97f4a7c15ull) >> (64 - __builtin_ctzll(nslots));
}

int cdsm__board_write(void *mem, uint64_t key, const void *data, uint32_t len)
{
    board_hdr_t *h = mem;
    uint64_t ring = h->ring, need = sizeof(board_entry_t) + (((uint64_t)len + 15) & ~15ull);
    if (need > ring / 4) return -1;
    uint64_t pos = h->head;
    if (pos % ring + need > ring) pos += ring - pos % ring; /* entries never wrap */
    /* Readers must see the reservation before any byte of the entries it covers changes. */
    __atomic_store_n(&h->reserve, pos + need, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    board_entry_t e = {key, len, 0};
    uint8_t *at = ring_at(mem, h->nslots, pos % ring);
    memcpy(at, &e, sizeof e);
    memcpy(at + sizeof e, data, len);
    __atomic_store_n(&h->head, pos + need, __ATOMIC_RELEASE);
    /* Two slots per key (a pair in one cache line): the older entry's gives way, so a key
     * is pushed out by the ring's wrapping rather than by another key's hash. */
    uint64_t *sl = &slots(mem)[slot_of(key, h->nslots) & ~1ull];
    int i = __atomic_load_n(&sl[0], __ATOMIC_RELAXED) <= __atomic_load_n(&sl[1], __ATOMIC_RELAXED) ? 0 : 1;
    __atomic_store_n(&sl[i], pos + 1, __ATOMIC_RELEASE);
    return 0;
}

/* The entry that slot value s names, copied, if it holds key and was not overwritten. */
static int read_slot(const void *mem, uint64_t ring, uint64_t nslots, uint64_t s, uint64_t key, void **out, uint32_t *len)
{
    const board_hdr_t *h = mem;
    if (!s) return -1;
    uint64_t pos = s - 1, off = pos % ring;
    board_entry_t e;
    if (off + sizeof e > ring) return -1;
    memcpy(&e, ring_at(mem, nslots, off), sizeof e);
    /* (a torn header is caught below; these only keep the copy inside the ring) */
    if (e.key != key || e.len > ring / 4 || off + sizeof e + e.len > ring) return -1;
    void *buf = malloc(e.len ? e.len : 1);
    cdsm_check(buf != NULL);
    memcpy(buf, ring_at(mem, nslots, off) + sizeof e, e.len);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&h->reserve, __ATOMIC_RELAXED) > pos + ring) { /* overwritten meanwhile */
        free(buf);
        return -1;
    }
    *out = buf;
    *len = e.len;
    return 0;
}

int cdsm__board_read(const void *mem, uint64_t ring, uint64_t nslots, uint64_t key, void **out, uint32_t *len)
{
    const uint64_t *sl = &slots(mem)[slot_of(key, nslots) & ~1ull];
    for (int i = 0; i < 2; i++)
        if (!read_slot(mem, ring, nslots, __atomic_load_n(&sl[i], __ATOMIC_ACQUIRE), key, out, len)) return 0;
    return -1;
}

/* ---- this process's board and its node-mates' ------------------------------------------ */

static struct board {
    void *self;   /* ours, written here */
    void **peer;  /* per process: its board mapped read-only here, or NULL */
    uint64_t ring, nslots;
    size_t bytes;
    int on;       /* some node-mate maps ours (we map theirs: the configuration is one) */
} bd;

/* A node-mate's board as we expect it (same size), or unmapped. */
static void *checked(void *m, int p)
{
    const board_hdr_t *h = m;
    if (!m || (h->magic == BOARD_MAGIC && h->ring == bd.ring && h->nslots == bd.nslots)) return m;
    cdsm__log(CDSM_LOG_INFO, "process %d's published diffs have another layout (CDSM_SHM_DIFFS differs?): not used", p);
    munmap(m, bd.bytes);
    return NULL;
}

static void format_ours(void *mem)
{
    cdsm__board_format(mem, bd.ring);
}

int cdsm__board_setup(void)
{
    /* With spares a replacement makes its diffs again while others may look for them:
     * they ask it, as they always did (the board is for runs without spares). */
    if (!cdsm__cfg.shm_diffs || cdsm__cfg.spares || cdsm__bell.stream || !cdsm__shmfd_any_mate()) return CDSM_OK;
    if (cdsm__heapfd_passed()) return CDSM_OK; /* (a node heap publishes no diff) */
    bd.ring = (cdsm__cfg.shm_diffs + 4095) & ~4095ull;
    bd.nslots = nslots_for(bd.ring);
    bd.bytes = cdsm__board_bytes(bd.ring);
    /* Populated now: a fresh ring page costs a fault at its first write otherwise, which
     * made publishing cost radix what reading saved (populated: fft 0.92x, is 0.80x,
     * radix 0.99x the time without the board; unpopulated 1.0x, 0.95x, 1.06x). */
    cdsm__shm_seg_t seg = {"cdsm-board", "published diffs", bd.bytes, 1, PROT_READ, BOARD_BYTE, format_ours};
    bd.self = cdsm__shmfd_share(&seg, &bd.peer);
    if (!bd.self) {
        cdsm__log(CDSM_LOG_INFO, "no published diffs (%s): node-mates ask for every diff", strerror(errno));
        return CDSM_OK;
    }
    for (int p = 0; p < cdsm__w.wn; p++) {
        bd.peer[p] = checked(bd.peer[p], p);
        bd.on |= bd.peer[p] != NULL;
    }
    return CDSM_OK;
}

void cdsm__board_fini(void)
{
    cdsm__shmfd_unmap(bd.self, (void **)bd.peer, bd.bytes);
    memset(&bd, 0, sizeof bd);
}

int cdsm__board_on(void)
{
    return bd.on;
}

void cdsm__board_put(uint64_t key, const void *data, uint32_t len)
{
    if (bd.on && !cdsm__board_write(bd.self, key, data, len)) CDSM_STAT_ADD(board_published, 1);
}

int cdsm__board_get(int rank, uint64_t key, void **out, uint32_t *len)
{
    if (!bd.on || rank < 0 || rank >= cdsm__w.n) return -1;
    const void *m = bd.peer[cdsm__w.phys[rank]];
    if (!m) return -1;
    int rc = cdsm__board_read(m, bd.ring, bd.nslots, key, out, len);
    if (rc) CDSM_STAT_ADD(board_missed, 1);
    else CDSM_STAT_ADD(board_taken, 1);
    return rc;
}
