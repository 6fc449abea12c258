/* The shared heap: one memfd mapped twice, its pages and their protection, allocation
 * and write detection (internal, protocol). */
#ifndef CDSM_HEAP_H
#define CDSM_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include "interval.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CDSM_PG_OWN: owned exclusively, no other rank holds a copy, so the page is writable
 * with no twin, no diff and no notice (write detection is off for it). */
enum { CDSM_PG_INVALID = 0, CDSM_PG_RO = 1, CDSM_PG_RW = 2, CDSM_PG_OWN = 3 };
/* Ownership modes (owner.c): off (every page tracked), all (one rank owns every page),
 * first touch (a directory names each page's first toucher its owner), home (with
 * spares: each page's directory rank owns it; conv.c), node (every rank maps one heap:
 * nodeheap.c). */
enum { CDSM_OWN_OFF = 0, CDSM_OWN_ALL = 1, CDSM_OWN_FIRST_TOUCH = 2, CDSM_OWN_HOME = 3, CDSM_OWN_NODE = 4 };
/* A page's claim under first-touch ownership: none (owned, or its base copy is known),
 * unclaimed (never touched here: the first access asks the directory), unclaimed and
 * served meanwhile (the directory named this rank while another already read the page). */
enum { CDSM_CLAIM_NONE = 0, CDSM_CLAIM_UNCLAIMED = 1, CDSM_CLAIM_SERVED = 2 };
#define CDSM_IV_OPEN UINT32_MAX
/* A page this rank missed on is fetched again, right after the barrier whose notices
 * invalidate it, at most this many times before another miss must say it is still used. */
#define CDSM_WS_CREDIT 4
/* Hot-page pressure: a page cooled under pressure that is written again becomes hot and
 * immune to pressure (it really is rewritten every few intervals). */
enum { CDSM_STICKY_NONE = 0, CDSM_STICKY_IMMUNE = 1, CDSM_STICKY_COOLED = 2 };

typedef struct cdsm__page {
    uint8_t state;
    uint8_t dirty;     /* listed in the dirty set (the open interval's writes, and hot pages) */
    uint8_t hot;       /* 0: cold; else kept writable, 1 + intervals it has not changed */
    uint8_t spec;      /* made writable ahead of a write (fault-around), not known written */
    int16_t holder;    /* after GC: rank that holds the base copy of an invalid page, or -1 */
    uint8_t sticky;    /* CDSM_STICKY_*: how the hot-page pressure rule treats this page */
    uint8_t ckflags;   /* bit 0: changed since the last checkpoint; bit 1: ever changed */
    uint8_t claim;     /* CDSM_CLAIM_* */
    uint8_t ws;        /* working-set credit: CDSM_WS_CREDIT on a miss, one spent per refetch */
    uint8_t conv;      /* converted in the open interval (home ownership): listed in it */
    uint8_t wp : 1;     /* its userfaultfd write-protect bit is set (wprot.c) */
    uint8_t backed : 1; /* the memfd has memory for it (allocated once, never freed) */
    uint8_t patch : 1;  /* hot, invalidated by a grant's notice, twin kept for its diffs */
    uint32_t twin_iv;  /* interval the twin belongs to (CDSM_IV_OPEN: the open one) */
    uint32_t dirty_pos; /* index in the dirty set while dirty */
    uint32_t last_wr;  /* our interval count when the page was last write-faulted (+1; 0: never) */
    void *twin;
    cdsm__notice_t *notices; /* since the last GC, newest first */
    uint32_t *applied; /* per rank: last interval whose writes this copy holds (lazy) */
} cdsm__page_t;

typedef struct cdsm__heap {
    char *base;   /* application view: protected per page */
    char *sys;    /* library view of the same memory: always read-write */
    int memfd;
    size_t heap_size, page_size, os_page;
    uint32_t npages; /* the heap's pages, then the program's shared globals (if any) */
    uint32_t hpages; /* the heap's pages: page numbers from hpages on are globals */
    char *gbase;     /* application view of the shared globals (their own address), or NULL */
    size_t gsize;    /* bytes of shared globals (a whole number of pages) */
    int gmapped;     /* the globals are mapped onto the memfd (after the fault handler) */
    int gcopied;     /* their bytes are in the memfd already (rank 0 offering a node heap) */
    int own_mode; /* CDSM_OWN_* */
    /* The page table covers the whole reservation (CDSM_HEAP_SIZE), but only chunks of
     * CDSM_PG_CHUNK entries that something touched are made (cdsm__pg): untouched entries
     * stay zero pages of an anonymous mapping, so a large heap costs no memory for the
     * pages a program never uses. */
    cdsm__page_t *pages;
    uint8_t *made; /* per chunk: its entries were set to the initial state */
} cdsm__heap_t;

extern cdsm__heap_t cdsm__heap;

/* nodeheap.c: the node heap (one heap for every rank of a job on one host). */
#define CDSM_NODE_PIECES 8
typedef struct cdsm__node_piece {
    void *addr;
    size_t len;
} cdsm__node_piece_t;
typedef struct cdsm__node {
    int on;
    int npieces;                                /* globals mapped beside the heap's own */
    cdsm__node_piece_t pieces[CDSM_NODE_PIECES];
    uint32_t *words;  /* per lock id: free, taken, taken with waiters (a futex) */
    uint8_t *held;    /* per lock id: held by this rank */
    uint32_t nheld;   /* how many */
    uint32_t *waiting; /* the word the application thread sleeps on, or NULL (atomic) */
} cdsm__node_t;
extern cdsm__node_t cdsm__node;
/* Bytes the heap's memfd keeps after the globals for the lock words. */
size_t cdsm__node_extra_bytes(void);
/* Before the transport: offer the heap's memfd to be handed out (rank 0 first copies the
 * globals into it). After it: agree and map (an error only where CDSM_NODE_HEAP=1). */
void cdsm__node_offer(void);
int cdsm__node_attach(void);
void cdsm__node_fini(void);
int cdsm__node_lock_acquire(int id);
int cdsm__node_lock_release(int id);
/* A rank was lost for good: wake the application thread if it sleeps on a lock word. */
void cdsm__node_wake(void);
void cdsm__node_unshare_globals(void);
/* The locks this rank holds, as a checkpoint keeps them (a region of their own), and
 * taken again at a restart. */
size_t cdsm__node_state_bytes(void);
void cdsm__node_state_put(uint8_t *b);
int cdsm__node_state_take(const uint8_t *b, size_t n);
/* Map len bytes of the heap's memfd from heap_off at addr (whole pages of the program's
 * globals the PARMACS layer shares this way); private again at cdsm_finalize. */
int cdsm__node_share_pages(void *addr, size_t len, uint64_t heap_off);
/* heap.c: the protection the heap is mapped with at the start (by the ownership mode). */
int cdsm__heap_initial_prot(void);
/* heap.c: copy the program's globals into the memfd (their shared copy's first bytes). */
void cdsm__heap_globals_copy(void);

#define CDSM_PG_CHUNK_SHIFT 10
#define CDSM_PG_CHUNK (1u << CDSM_PG_CHUNK_SHIFT)

/* heap.c: set a chunk's entries to the initial state (once; either thread). */
void cdsm__pg_make(uint32_t chunk);
/* The first page at or after pg whose chunk was made, or npages: a page of a chunk never
 * made is in its initial state (no twin, notice, copy vector or change mark). */
uint32_t cdsm__pg_next_made(uint32_t pg);

/* Every page whose chunk was made (the rest is in its initial state). */
#define CDSM_PG_FOR_MADE(pg) \
    for (uint32_t pg = cdsm__pg_next_made(0); pg < cdsm__heap.npages; pg = cdsm__pg_next_made(pg + 1))

static inline int cdsm__pg_made(uint32_t pg)
{
    return __atomic_load_n(&cdsm__heap.made[pg >> CDSM_PG_CHUNK_SHIFT], __ATOMIC_ACQUIRE);
}
/* A page's entry (made on first use). */
static inline cdsm__page_t *cdsm__pg(uint32_t pg)
{
    if (__builtin_expect(!cdsm__pg_made(pg), 0)) cdsm__pg_make(pg >> CDSM_PG_CHUNK_SHIFT);
    return &cdsm__heap.pages[pg];
}

/* Whether addr is a page of the DSM: the heap, or the program's shared globals. */
static inline int cdsm__heap_contains(const void *addr)
{
    const char *a = (const char *)addr;
    return (cdsm__heap.base && (size_t)(a - cdsm__heap.base) < cdsm__heap.heap_size && a >= cdsm__heap.base) ||
           (cdsm__heap.gmapped && a >= cdsm__heap.gbase && (size_t)(a - cdsm__heap.gbase) < cdsm__heap.gsize);
}
static inline uint32_t cdsm__page_of(const void *addr)
{
    const char *a = (const char *)addr;
    if (a >= cdsm__heap.base && (size_t)(a - cdsm__heap.base) < cdsm__heap.heap_size)
        return (uint32_t)((size_t)(a - cdsm__heap.base) / cdsm__heap.page_size);
    return cdsm__heap.hpages + (uint32_t)((size_t)(a - cdsm__heap.gbase) / cdsm__heap.page_size);
}
static inline char *cdsm__sys_page(uint32_t pg)
{
    return cdsm__heap.sys + (size_t)pg * cdsm__heap.page_size;
}
static inline char *cdsm__app_page(uint32_t pg)
{
    if (pg >= cdsm__heap.hpages) return cdsm__heap.gbase + (size_t)(pg - cdsm__heap.hpages) * cdsm__heap.page_size;
    return cdsm__heap.base + (size_t)pg * cdsm__heap.page_size;
}

/* heap.c */
/* Before cdsm_init (the PARMACS layer): make [addr, addr + size) of the program's globals
 * (whole OS pages) DSM pages too, as in a pthreads program where every global is shared.
 * cdsm_init takes the whole CDSM_PAGE_SIZE pages from addr on: gbase, gsize. */
int cdsm__heap_share_globals(void *addr, size_t size);
/* After the fault handler is in place: put the globals onto the heap's memfd, keeping
 * their bytes (cdsm_init calls it; nothing to do without cdsm__heap_share_globals). */
int cdsm__heap_globals_map(void);
int cdsm__heap_init(void);
void cdsm__heap_fini(void);
int cdsm__page_protect(uint32_t first, uint32_t count, int state);
/* A write fault on a page its state already lets the program write (a write-protect bit
 * left by a change of state made meanwhile): clear the bit. */
void cdsm__page_rearm(uint32_t pg);
/* Defer protection changes (on) while the application thread is in the library, where it
 * touches shared pages only through the library's own mapping (waits included: the
 * service thread's changes wait too, and the program runs nothing meanwhile): a page
 * invalidated by a notice and made valid again changes state twice and protection not at
 * all. Off (as many times as on): each page's protection is set once, from its state
 * before to its state now, in runs. */
void cdsm__protect_batch(int on);
/* The pages that hold data (the memfd has no hole there), an owned page's only sign of
 * having been written: sorted runs [v[2i], v[2i+1]), as many as the heap has extents,
 * not a map of every page of a large reservation. */
typedef struct cdsm__runs {
    uint32_t *v;
    size_t n, cap, at; /* at: the cursor of cdsm__runs_next */
} cdsm__runs_t;
int cdsm__heap_data_runs(cdsm__runs_t *r);
/* The first page at or after pg that holds data (npages if none); pg must not go back. */
uint32_t cdsm__runs_next(cdsm__runs_t *r, uint32_t pg);
static inline int cdsm__runs_has(cdsm__runs_t *r, uint32_t pg)
{
    return cdsm__runs_next(r, pg) == pg;
}
/* gc.c: the interval of the page's newest notice (it has one), whose writer holds a whole
 * copy (the GC's keeper). */
const cdsm__interval_t *cdsm__latest_notice(uint32_t pg);
/* How writes are detected, for the start-up line. */
const char *cdsm__heap_detection(void);
void cdsm__log_bytes_add(int64_t delta);

/* alloc.c */
int cdsm__alloc_init(void);
void cdsm__alloc_fini(void);
/* Every rank at the same point (the PARMACS layer's start, after its collective
 * allocations): from now on the common arena is rank 0's, cdsm_alloc is refused, and
 * under first-touch ownership rank 0 places up to cap of its G_MALLOCs (directories in
 * blocks, one per rank, as a collective allocation's) until the others learn them. */
int cdsm__alloc_master_start(size_t cap);
/* Non-collective allocation from the common arena (rank 0 of the PARMACS layer only). */
int cdsm__alloc_master(size_t size, void **out);
/* Rank 0: the placements (offset, size) made since the last call, into out (room for max,
 * at least the cap given at the start). Another rank: learn one, before it touches the
 * allocation. */
size_t cdsm__alloc_master_take(uint64_t (*out)[2], size_t max);
int cdsm__alloc_master_learn(uint64_t off, uint64_t size);
/* The rank whose cdsm_malloc arena holds heap offset off, or -1 (the common arena). */
int cdsm__alloc_arena_rank(uint64_t off);

/* wprot.c: write detection by userfaultfd write-protect bits (CDSM_WRITE_DETECT). Init
 * registers the heap's application view when the kernel allows (else mprotect stays); the
 * globals are registered when they are mapped. */
int cdsm__wp_init(void *addr, size_t len);
int cdsm__wp_register(void *addr, size_t len);
void cdsm__wp_fini(void);
/* Whether read-only pages are write-protected by userfaultfd (mapped read-write). */
int cdsm__wp_uffd(void);
void cdsm__wp_range(void *addr, size_t len, int on);

/* fault.c */
int cdsm__fault_install(void);
void cdsm__fault_uninstall(void);

#ifdef __cplusplus
}
#endif
#endif
