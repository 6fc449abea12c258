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
#include <stddef.h>
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



static uint64_t slot_of(uint64_t key, uint64_t nslots)
{
    return (key * 0x9e3779b97f4a7c15ull) >> (64 - __builtin_ctzll(nslots));
}

/* Where things are in a board, in bytes from its start: the one layout that mapped readers
 * (pointers) and one-sided reads (window displacements) both use. Key's slot pair (two
 * slots per key, in one cache line), and ring offset off. */
static uint64_t pair_off(uint64_t key, uint64_t nslots)
{
    return sizeof(board_hdr_t) + (slot_of(key, nslots) & ~1ull) * sizeof(uint64_t);
}

static uint64_t ring_off(uint64_t nslots, uint64_t off)
{
    return sizeof(board_hdr_t) + nslots * sizeof(uint64_t) + off;
}

static uint8_t *ring_at(const void *mem, uint64_t nslots, uint64_t off)
{
    return (uint8_t *)mem + ring_off(nslots, off);
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
    uint64_t *sl = (uint64_t *)((char *)mem + pair_off(key, h->nslots));
    int i = __atomic_load_n(&sl[0], __ATOMIC_RELAXED) <= __atomic_load_n(&sl[1], __ATOMIC_RELAXED) ? 0 : 1;
    __atomic_store_n(&sl[i], pos + 1, __ATOMIC_RELEASE);
    return 0;
}

/* Whether entry e, read at ring offset off, can be key's. (A torn header is caught by the
 * reserve check after the copy; this only keeps the copy inside the ring.) */
static int entry_fits(const board_entry_t *e, uint64_t key, uint64_t off, uint64_t ring)
{
    return e->key == key && e->len <= ring / 4 && off + sizeof *e + e->len <= ring;
}

/* Whether the writer reserved the bytes of the entry at ring position pos again (reserve
 * read after the entry was copied): the copy may be torn. */
static int overwritten(uint64_t reserve, uint64_t pos, uint64_t ring)
{
    return reserve > pos + ring;
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
    if (!entry_fits(&e, key, off, ring)) return -1;
    void *buf = malloc(e.len ? e.len : 1);
    cdsm_check(buf != NULL);
    memcpy(buf, ring_at(mem, nslots, off) + sizeof e, e.len);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (overwritten(__atomic_load_n(&h->reserve, __ATOMIC_RELAXED), pos, ring)) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = e.len;
    return 0;
}

int cdsm__board_read(const void *mem, uint64_t ring, uint64_t nslots, uint64_t key, void **out, uint32_t *len)
{
    const uint64_t *sl = (const uint64_t *)((const char *)mem + pair_off(key, nslots));
    for (int i = 0; i < 2; i++)
        if (!read_slot(mem, ring, nslots, __atomic_load_n(&sl[i], __ATOMIC_ACQUIRE), key, out, len)) return 0;
    return -1;
}

/* ---- this process's board, its node-mates' and (one-sided) the others' ----------------- */

static struct board {
    void *self;   /* ours, written here */
    void **peer;  /* per process: its board mapped read-only here, or NULL */
    uint64_t ring, nslots;
    size_t bytes;
    int on;       /* someone reads ours (we read theirs: the configuration is one) */
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
    if (!cdsm__cfg.shm_diffs || cdsm__cfg.spares || cdsm__bell.stream) return CDSM_OK;
    if (cdsm__heapfd_passed()) return CDSM_OK; /* (a node heap publishes no diff) */
    if (!cdsm__shmfd_any_mate() && !cdsm__rma_wanted()) return CDSM_OK;
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

int cdsm__board_rma_vote(void)
{
    return bd.self && cdsm__rma_wanted() && cdsm__words_ready() ? (int)(bd.bytes >> 12) : 0;
}

int cdsm__board_reach(int rma)
{
    if (bd.self && cdsm__rma_wanted() && !rma)
        cdsm__log(CDSM_LOG_INFO, "no one-sided reads (CDSM_RMA): another process cannot take part, or its "
                  "CDSM_SHM_DIFFS differs");
    int rc = rma ? cdsm__rma_expose(CDSM_RMA_BOARD, bd.self, bd.bytes) : CDSM_OK;
    bd.on |= cdsm__rma_on();
    if (!rc && !bd.on && bd.self) cdsm__board_fini(); /* (made for one-sided reads that are not made) */
    return rc;
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

/* ---- one-sided reads: the mapped reader's steps, each a batch of gets -------------------- */

/* Bytes after an entry's header read with it: a diff of a 4 KiB page fits. */
enum { RMA_GUESS = 8192 };

typedef struct rma_item {
    int w;             /* the process read */
    uint64_t key;
    uint64_t slot[2];  /* the key's slot pair as read */
    uint8_t *ent[2];   /* each slot's entry: header and data */
    size_t got[2];     /* bytes of it read */
} rma_item_t;

/* Run the gets; 1 if one of them went to a process lost meanwhile (its buffer must stay). */
static int rma_run(cdsm__rma_op_t *op, size_t n)
{
    cdsm__rma_get(op, n);
    int lost = 0;
    for (size_t i = 0; i < n; i++) lost |= op[i].lost;
    return lost;
}

/* Step 2: the entries the slots name, with RMA_GUESS bytes of data, then the rest of longer
 * ones. Entries not of their key, or not read whole, are dropped. */
static int rma_entries(rma_item_t *it, size_t n, cdsm__rma_op_t *op)
{
    size_t k = 0, *who = malloc(2 * n * sizeof *who); /* op -> item * 2 + slot */
    cdsm_check(who != NULL);
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < 2; j++) {
            uint64_t s = it[i].slot[j], off = s ? (s - 1) % bd.ring : 0, most = sizeof(board_entry_t) + RMA_GUESS;
            if (!s || off + sizeof(board_entry_t) > bd.ring) continue;
            it[i].got[j] = bd.ring - off < most ? bd.ring - off : most;
            it[i].ent[j] = malloc(it[i].got[j]);
            cdsm_check(it[i].ent[j] != NULL);
            who[k] = i * 2 + (size_t)j;
            op[k++] = (cdsm__rma_op_t){.w = it[i].w, .off = ring_off(bd.nslots, off), .dst = it[i].ent[j],
                                       .len = it[i].got[j]};
        }
    int lost = rma_run(op, k);
    size_t m = 0;
    for (size_t q = 0; q < k && !lost; q++) {
        rma_item_t *t = &it[who[q] / 2];
        int j = (int)(who[q] % 2);
        board_entry_t e;
        memcpy(&e, t->ent[j], sizeof e);
        uint64_t off = (t->slot[j] - 1) % bd.ring, need = sizeof e + e.len;
        if (!op[q].ok || !entry_fits(&e, t->key, off, bd.ring)) {
            free(t->ent[j]);
            t->ent[j] = NULL;
        } else if (need > t->got[j]) {
            t->ent[j] = realloc(t->ent[j], need);
            cdsm_check(t->ent[j] != NULL);
            who[m] = who[q];
            op[m++] = (cdsm__rma_op_t){.w = t->w, .off = ring_off(bd.nslots, off + t->got[j]),
                                       .dst = t->ent[j] + t->got[j], .len = need - t->got[j]};
            t->got[j] = need;
        }
    }
    lost = lost || rma_run(op, m);
    for (size_t q = 0; q < m && !lost; q++)
        if (!op[q].ok) it[who[q] / 2].got[who[q] % 2] = 0; /* (not read whole: as good as overwritten) */
    free(who);
    return lost ? -1 : 0;
}

/* Step 3: each process's reserve, read after its entries; an entry it covers again may be
 * torn. The good ones are handed out. */
static int rma_check(rma_item_t *it, size_t n, cdsm__rma_op_t *op, uint64_t *res, void **out, uint32_t *len)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t q = 0;
        while (q < k && op[q].w != it[i].w) q++;
        if (q == k)
            op[k++] = (cdsm__rma_op_t){.w = it[i].w, .off = offsetof(board_hdr_t, reserve), .dst = &res[q], .len = 8};
    }
    if (rma_run(op, k)) return -1;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        size_t q = 0;
        while (op[q].w != it[i].w) q++;
        for (int j = 0; j < 2 && op[q].ok && !out[i]; j++) {
            if (!it[i].ent[j] || !it[i].got[j] || overwritten(res[q], it[i].slot[j] - 1, bd.ring)) continue;
            board_entry_t e;
            memcpy(&e, it[i].ent[j], sizeof e);
            memmove(it[i].ent[j], it[i].ent[j] + sizeof e, e.len);
            out[i] = it[i].ent[j];
            len[i] = e.len;
            it[i].ent[j] = NULL;
            found++;
        }
    }
    return found;
}

/* Items it[0..n) read one-sided in three batches (slots, entries, reserves: three round
 * trips whatever n); out[i] set where found. -1: a read went to a process lost meanwhile;
 * its buffers (it[] too) are left where MPI may still write (the run is ending: no spares). */
static int rma_take(rma_item_t *it, size_t n, void **out, uint32_t *len)
{
    cdsm__rma_op_t *op = malloc(2 * n * sizeof *op);
    uint64_t *res = malloc(n * sizeof *res);
    cdsm_check(op && res);
    for (size_t i = 0; i < n; i++)
        op[i] = (cdsm__rma_op_t){.w = it[i].w, .off = pair_off(it[i].key, bd.nslots), .dst = it[i].slot,
                                 .len = sizeof it[i].slot};
    if (rma_run(op, n)) return -1;
    for (size_t i = 0; i < n; i++)
        if (!op[i].ok) it[i].slot[0] = it[i].slot[1] = 0;
    int found = rma_entries(it, n, op) ? -1 : rma_check(it, n, op, res, out, len);
    if (found < 0) return -1;
    for (size_t i = 0; i < n; i++) free(it[i].ent[0]), free(it[i].ent[1]);
    free(op);
    free(res);
    CDSM_STAT_ADD(board_rma_taken, (uint64_t)found);
    return found;
}

/* A mapped node-mate's blob. */
static int mapped_get(int w, uint64_t key, void **out, uint32_t *len)
{
    const void *m = bd.peer[w];
    return m ? cdsm__board_read(m, bd.ring, bd.nslots, key, out, len) : -1;
}

/* The blobs of at[0..nr) read one-sided (items it[]), into out[at[r]]. Returns how many. */
static size_t rma_many(rma_item_t *it, const size_t *at, size_t nr, void **out, uint32_t *len)
{
    void **o = calloc(nr, sizeof *o);
    uint32_t *l = calloc(nr, sizeof *l);
    cdsm_check(o && l);
    int got = rma_take(it, nr, o, l);
    if (got < 0) got = 0;
    else free(it); /* (else left to MPI) */
    for (size_t r = 0; r < nr; r++) out[at[r]] = o[r], len[at[r]] = l[r];
    CDSM_STAT_ADD(board_missed, nr - (size_t)got);
    free(o);
    free(l);
    return (size_t)got;
}

size_t cdsm__board_get_many(size_t n, const int *rank, const uint64_t *key, void **out, uint32_t *len)
{
    size_t found = 0, nr = 0, *at = NULL;
    rma_item_t *it = NULL;
    for (size_t i = 0; i < n; i++) {
        out[i] = NULL;
        if (!bd.on || rank[i] < 0 || rank[i] >= cdsm__w.n) continue;
        int w = cdsm__w.phys[rank[i]];
        if (!cdsm__rma_reaches(w)) {
            if (mapped_get(w, key[i], &out[i], &len[i])) CDSM_STAT_ADD(board_missed, 1);
            else found++;
        } else if (cdsm__rma_shunned(w)) { /* (asked for by message) */
            CDSM_STAT_ADD(board_missed, 1);
        } else {
            if (!it) it = calloc(n, sizeof *it), at = calloc(n, sizeof *at);
            cdsm_check(it && at);
            at[nr] = i;
            it[nr++] = (rma_item_t){.w = w, .key = key[i]};
        }
    }
    if (nr) found += rma_many(it, at, nr, out, len);
    free(at);
    CDSM_STAT_ADD(board_taken, found);
    return found;
}

int cdsm__board_get(int rank, uint64_t key, void **out, uint32_t *len)
{
    return cdsm__board_get_many(1, &rank, &key, out, len) ? 0 : -1;
}
