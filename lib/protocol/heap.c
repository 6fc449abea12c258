/* The shared heap: one memfd mapped twice, at the common address (protected per page,
 * seen by the application) and anywhere (always writable, used by the library to apply
 * diffs and read pages without touching the protection). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diff.h"
#include "pool.h"
#include "untouched.h"
#include "proto.h"

cdsm__heap_t cdsm__heap = {.memfd = -1};

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

void cdsm__log_bytes_add(int64_t delta)
{
    cdsm__g.log_bytes += (uint64_t)delta;
    cdsm__st.log_bytes = cdsm__g.log_bytes;
    if (cdsm__g.log_bytes > cdsm__st.log_bytes_peak) cdsm__st.log_bytes_peak = cdsm__g.log_bytes;
}

/* One rank owns everything; without spares (no replay) the first toucher owns a page;
 * with spares its home does, and the conversions are remembered for replays (a replay
 * needs the exact version of every page its rank read: DESIGN, "Pages and their states").
 * Checkpoints take every owned page that holds data. */
static int own_mode(void)
{
    if (!cdsm__cfg.ownership) return CDSM_OWN_OFF;
    if (cdsm__w.n == 1) return CDSM_OWN_ALL;
    return cdsm__cfg.spares ? CDSM_OWN_HOME : CDSM_OWN_FIRST_TOUCH;
}

/* Every page starts alike on every rank (zero; the globals: the program's own bytes):
 * read-only until written (tracked), writable (one rank owns them all), or inaccessible
 * until its first touch claims it. By CDSM_OWN_*: the protection it is mapped with, and
 * the state and claim its page-table entry is made with (cdsm__pg_make). */
static const struct {
    int prot;
    uint8_t state, claim;
} initial[] = {
    [CDSM_OWN_OFF] = {PROT_READ, CDSM_PG_RO, CDSM_CLAIM_NONE},
    [CDSM_OWN_ALL] = {PROT_READ | PROT_WRITE, CDSM_PG_OWN, CDSM_CLAIM_NONE},
    [CDSM_OWN_FIRST_TOUCH] = {PROT_NONE, CDSM_PG_INVALID, CDSM_CLAIM_UNCLAIMED},
    [CDSM_OWN_HOME] = {PROT_NONE, CDSM_PG_INVALID, CDSM_CLAIM_UNCLAIMED},
    [CDSM_OWN_NODE] = {PROT_READ | PROT_WRITE, CDSM_PG_OWN, CDSM_CLAIM_NONE},
};

int cdsm__heap_initial_prot(void)
{
    return initial[cdsm__heap.own_mode].prot;
}

/* The program's globals to share (cdsm__heap_share_globals, before cdsm_init). */
static struct {
    char *addr;
    size_t size;
} globals_req;

int cdsm__heap_share_globals(void *addr, size_t size)
{
    size_t os = (size_t)sysconf(_SC_PAGESIZE);
    if (((uintptr_t)addr | size) % os)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "shared globals at %p..+%zu: not whole pages of %zu bytes", addr,
                           size, os);
    globals_req.addr = addr;
    globals_req.size = size;
    return CDSM_OK;
}

/* Reads the program's globals (AddressSanitizer's red zones between them included). */
__attribute__((no_sanitize_address)) static int zero_page(const char *p, size_t n)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    for (size_t i = 0; i < n / 8; i++)
        if (w[i]) return 0;
    return 1;
}

__attribute__((no_sanitize_address)) static void raw_copy(char *dst, const char *src, size_t n)
{
    uint64_t *d = (uint64_t *)(void *)dst;
    const uint64_t *s = (const uint64_t *)(const void *)src;
    for (size_t i = 0; i < n / 8; i++) d[i] = s[i];
}

/* Copy the globals' bytes into the memfd (zero pages stay holes: a large .bss that was
 * never touched costs nothing), then map the memfd over them. Every rank starts from the
 * same bytes (same program, same addresses), as every heap page starts zero. */
void cdsm__heap_globals_copy(void)
{
    char *dst = cdsm__heap.sys + cdsm__heap.heap_size;
    size_t os = cdsm__heap.os_page, n = cdsm__heap.gsize / os;
    uint8_t *never = malloc(n); /* (pages never touched are zero: not even read) */
    if (never) cdsm__untouched(cdsm__heap.gbase, n, os, never);
    for (size_t i = 0; i < n; i++)
        if (!(never && never[i]) && !zero_page(cdsm__heap.gbase + i * os, os))
            raw_copy(dst + i * os, cdsm__heap.gbase + i * os, os);
    free(never);
    cdsm__heap.gcopied = 1;
}

/* (Rank 0 copied them before offering its memfd for a node heap, with nothing of the
 * program run since, and in a node heap nobody copies again: a rank already running may
 * have written them.) */
int cdsm__heap_globals_map(void)
{
    if (!cdsm__heap.gsize || cdsm__heap.gmapped) return CDSM_OK;
    if (!cdsm__node.on && !cdsm__heap.gcopied) cdsm__heap_globals_copy();
    void *a = mmap(cdsm__heap.gbase, cdsm__heap.gsize, initial[cdsm__heap.own_mode].prot, MAP_SHARED | MAP_FIXED,
                   cdsm__heap.memfd, (off_t)cdsm__heap.heap_size);
    if (a == MAP_FAILED) /* (the old mapping is intact: MAP_FIXED fails before unmapping) */
        return cdsm__error(CDSM_ERR_HEAP_MAP, "cannot map the program's globals (%p..+%zu) onto the heap: %s",
                           (void *)cdsm__heap.gbase, cdsm__heap.gsize, strerror(errno));
    cdsm__heap.gmapped = 1;
    return cdsm__node.on ? CDSM_OK : cdsm__wp_register(cdsm__heap.gbase, cdsm__heap.gsize);
}

/* The page table: zero pages of an anonymous mapping until a chunk is made. */
static size_t page_table_bytes(void)
{
    return (size_t)cdsm__heap.npages * sizeof(cdsm__page_t);
}

static int page_table_map(void)
{
    size_t nchunks = ((size_t)cdsm__heap.npages + CDSM_PG_CHUNK - 1) >> CDSM_PG_CHUNK_SHIFT;
    void *t = mmap(NULL, page_table_bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    cdsm__heap.pages = t == MAP_FAILED ? NULL : t;
    cdsm__heap.made = calloc(nchunks, 1);
    return cdsm__heap.pages && cdsm__heap.made ? 0 : -1;
}

static pthread_mutex_t make_mu = PTHREAD_MUTEX_INITIALIZER;

void cdsm__pg_make(uint32_t chunk)
{
    pthread_mutex_lock(&make_mu);
    if (!cdsm__heap.made[chunk]) {
        uint32_t first = chunk << CDSM_PG_CHUNK_SHIFT;
        uint32_t end = cdsm__heap.npages - first < CDSM_PG_CHUNK ? cdsm__heap.npages : first + CDSM_PG_CHUNK;
        for (uint32_t i = first; i < end; i++) {
            cdsm__heap.pages[i].state = initial[cdsm__heap.own_mode].state;
            cdsm__heap.pages[i].claim = initial[cdsm__heap.own_mode].claim;
            cdsm__heap.pages[i].holder = -1;
        }
        __atomic_store_n(&cdsm__heap.made[chunk], 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&make_mu);
}

uint32_t cdsm__pg_next_made(uint32_t pg)
{
    while (pg < cdsm__heap.npages && !cdsm__pg_made(pg)) pg = ((pg >> CDSM_PG_CHUNK_SHIFT) + 1) << CDSM_PG_CHUNK_SHIFT;
    return pg < cdsm__heap.npages ? pg : cdsm__heap.npages;
}

int cdsm__heap_init(void)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__heap.os_page = (size_t)sysconf(_SC_PAGESIZE);
    cdsm__heap.page_size = cdsm__cfg.page_size;
    cdsm__heap.heap_size = cdsm__cfg.heap_size;
    if (cdsm__heap.heap_size % cdsm__heap.page_size)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_HEAP_SIZE=%zu: not a multiple of CDSM_PAGE_SIZE=%zu",
                           cdsm__heap.heap_size, cdsm__heap.page_size);
    if (cdsm__heap.heap_size / cdsm__heap.page_size >= UINT32_MAX)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_HEAP_SIZE=%zu: too many pages of %zu bytes",
                           cdsm__heap.heap_size, cdsm__heap.page_size);
    if (cdsm__heap.heap_size / 2 / (size_t)cdsm__w.n < cdsm__heap.page_size)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_HEAP_SIZE=%zu: too small for %d per-rank arenas",
                           cdsm__heap.heap_size, cdsm__w.n);
    cdsm__heap.hpages = (uint32_t)(cdsm__heap.heap_size / cdsm__heap.page_size);
    /* Whole DSM pages from the start of the globals asked for (the rest stays with the
     * caller, which shares it another way). */
    cdsm__heap.gsize = globals_req.size / cdsm__heap.page_size * cdsm__heap.page_size;
    cdsm__heap.gbase = cdsm__heap.gsize ? globals_req.addr : NULL;
    cdsm__heap.npages = cdsm__heap.hpages + (uint32_t)(cdsm__heap.gsize / cdsm__heap.page_size);
    size_t total = cdsm__heap.heap_size + cdsm__heap.gsize;

    cdsm__heap.memfd = memfd_create("cdsm-heap", MFD_CLOEXEC);
    if (cdsm__heap.memfd < 0)
        return cdsm__error(CDSM_ERR_HEAP_MAP, "memfd_create: %s", strerror(errno));
    if (ftruncate(cdsm__heap.memfd, (off_t)(total + cdsm__node_extra_bytes()))) { /* (a hole until used) */
        int e = errno;
        close(cdsm__heap.memfd);
        return cdsm__error(CDSM_ERR_HEAP_MAP, "ftruncate(%zu): %s", total, strerror(e));
    }
    void *want = (void *)(uintptr_t)cdsm__cfg.heap_addr;
    cdsm__heap.own_mode = own_mode();
    int prot = initial[cdsm__heap.own_mode].prot;
    void *a = mmap(want, cdsm__heap.heap_size, prot, MAP_SHARED | MAP_FIXED_NOREPLACE | MAP_NORESERVE,
                   cdsm__heap.memfd, 0);
    if (a == MAP_FAILED || a != want) {
        int e = errno;
        if (a != MAP_FAILED) munmap(a, cdsm__heap.heap_size);
        close(cdsm__heap.memfd);
        return cdsm__error(CDSM_ERR_HEAP_MAP,
                           "cannot map %zu bytes at CDSM_HEAP_ADDR=%p: %s (choose another address)",
                           cdsm__heap.heap_size, want, a == MAP_FAILED ? strerror(e) : "kernel chose another address");
    }
    cdsm__heap.base = a;
    void *s = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, cdsm__heap.memfd, 0);
    if (s == MAP_FAILED) {
        int e = errno;
        munmap(cdsm__heap.base, cdsm__heap.heap_size);
        close(cdsm__heap.memfd);
        return cdsm__error(CDSM_ERR_HEAP_MAP, "mmap of the library view: %s", strerror(e));
    }
    cdsm__heap.sys = s;
    g->scratch = malloc(cdsm__diff_max(cdsm__heap.page_size));
    g->scratch_n = malloc(cdsm__u32s((size_t)cdsm__w.n));
    g->snap = malloc(cdsm__heap.page_size);
    if (page_table_map() || !g->scratch || !g->scratch_n || !g->snap) {
        cdsm__heap_fini();
        return cdsm__error(CDSM_ERR_NOMEM, "page table for %u pages", cdsm__heap.npages);
    }
    int rc = cdsm__wp_init(cdsm__heap.base, cdsm__heap.heap_size);
    if (!rc) rc = cdsm__own_init();
    if (rc) cdsm__heap_fini();
    return rc;
}

/* Protection changes deferred while the application thread is in the library and touches
 * no shared page (cdsm__protect_batch): the page, the order, and its state and
 * write-protect bit before the change (pb_apply's second pass keeps them). */
typedef struct pb_rec {
    uint32_t pg, seq;
    uint8_t state, wp;
} pb_rec_t;
static struct {
    int depth; /* nested: a barrier's collection runs barriers of its own */
    pb_rec_t *v;
    size_t n, cap;
} pb;

void cdsm__heap_fini(void)
{
    cdsm__state_t *g = &cdsm__g;
    cdsm__own_fini();
    if (cdsm__heap.pages && cdsm__heap.made) {
        CDSM_PG_FOR_MADE(i) {
            cdsm__page_t *p = &cdsm__heap.pages[i];
            cdsm__pool_free(p->twin, cdsm__heap.page_size);
            free(p->applied);
            for (cdsm__notice_t *nt = p->notices, *nx; nt; nt = nx) {
                nx = nt->next;
                free(nt);
            }
        }
    }
    if (cdsm__heap.pages) munmap(cdsm__heap.pages, page_table_bytes());
    free(cdsm__heap.made);
    cdsm__heap.pages = NULL;
    cdsm__heap.made = NULL;
    free(g->scratch);
    free(g->scratch_n);
    free(g->snap);
    free(pb.v);
    memset(&pb, 0, sizeof pb);
    g->scratch = NULL;
    g->scratch_n = NULL;
    g->snap = NULL;
    /* The globals stay where they are, on the memfd, writable: the program lives on. */
    cdsm__wp_fini();
    if (cdsm__heap.gmapped) mprotect(cdsm__heap.gbase, cdsm__heap.gsize, PROT_READ | PROT_WRITE);
    cdsm__node_fini();
    cdsm__heap.gmapped = cdsm__heap.gcopied = 0;
    if (cdsm__heap.sys) munmap(cdsm__heap.sys, cdsm__heap.heap_size + cdsm__heap.gsize);
    if (cdsm__heap.base) munmap(cdsm__heap.base, cdsm__heap.heap_size);
    if (cdsm__heap.memfd > 0) close(cdsm__heap.memfd);
    cdsm__heap.sys = cdsm__heap.base = NULL;
    cdsm__heap.memfd = -1;
}

/* A page's protection: read-only pages are mapped read-only, or read-write with their
 * write-protect bit set (wprot.c). */
static int prot_of(int state, int wp)
{
    if (state == CDSM_PG_INVALID) return PROT_NONE;
    return state == CDSM_PG_RO && !wp ? PROT_READ : PROT_READ | PROT_WRITE;
}

/* The write-protect bit a page in `state` gets (an invalid page keeps the one it has). */
static int wp_for(int state, int old_wp)
{
    if (!cdsm__wp_uffd()) return 0;
    return state == CDSM_PG_INVALID ? old_wp : state == CDSM_PG_RO;
}

static void pb_add(uint32_t first, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        if (pb.n == pb.cap) {
            pb.cap = pb.cap ? pb.cap * 2 : 256;
            pb.v = realloc(pb.v, pb.cap * sizeof *pb.v);
            cdsm_check(pb.v != NULL);
        }
        cdsm__page_t *p = cdsm__pg(first + i);
        pb.v[pb.n] = (pb_rec_t){first + i, (uint32_t)pb.n, p->state, p->wp};
        pb.n++;
    }
}

static int pb_cmp(const void *a, const void *b)
{
    const pb_rec_t *x = a, *y = b;
    if (x->pg != y->pg) return x->pg < y->pg ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* What a batch does to a page: set its write-protect bit, clear it, change its
 * protection (to `prot`). */
enum { PB_WP_ON = 1, PB_WP_OFF = 2, PB_PROT = 4 };

/* A page the memfd has no memory for takes no write-protect bit (a write would go
 * unseen): allocate it first, once (a system call per arming was 1-2 % of a lock
 * program's profile; the heap's memory is never given back). */
static void back_pages(uint32_t first, uint32_t count)
{
    uint32_t i = 0;
    while (i < count && cdsm__pg(first + i)->backed) i++;
    if (i == count) return;
    off_t off = (off_t)((size_t)first * cdsm__heap.page_size);
    int e = fallocate(cdsm__heap.memfd, 0, off, (off_t)((size_t)count * cdsm__heap.page_size));
    if (e) cdsm__log(CDSM_LOG_ERROR, "fallocate(page %u, %u pages): %s", first, count, strerror(errno));
    cdsm_check(e == 0);
    for (i = 0; i < count; i++) cdsm__pg(first + i)->backed = 1;
}

/* One operation on the application's view of pages [first, first + count). */
static void range_op(uint32_t first, uint32_t count, int op, int prot)
{
    uint32_t h = cdsm__heap.hpages;
    if (first < h && count > h - first) { /* the heap's end and the globals are not adjacent */
        range_op(h, count - (h - first), op, prot);
        count = h - first;
    }
    char *a = cdsm__app_page(first);
    size_t len = (size_t)count * cdsm__heap.page_size;
    if (op == PB_WP_ON) {
        back_pages(first, count);
        cdsm__wp_range(a, len, 1);
    } else if (op == PB_WP_OFF) {
        cdsm__wp_range(a, len, 0);
    } else if (mprotect(a, len, prot)) {
        /* Only fails on a bad range or when the kernel is out of mapping entries. */
        cdsm__log(CDSM_LOG_ERROR, "mprotect(page %u, %u pages): %s", first, count, strerror(errno));
        cdsm_check(!"mprotect failed");
    }
}

/* Runs of consecutive pages that take operation `op` (with the same protection). */
static void pb_runs(size_t m, int op)
{
    for (size_t i = 0; i < m;) {
        if (!(pb.v[i].wp & op)) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < m && pb.v[j].pg == pb.v[j - 1].pg + 1 && (pb.v[j].wp & op) &&
               (op != PB_PROT || pb.v[j].state == pb.v[i].state))
            j++;
        range_op(pb.v[i].pg, (uint32_t)(j - i), op, pb.v[i].state);
        i = j;
    }
}

/* Each page once, from its state before the batch to its state now. Bits are set before
 * a page becomes accessible and cleared while it still is not, so a page is never
 * writable unseen: write-protect on, then off, then the protection changes. */
static void pb_apply(void)
{
    qsort(pb.v, pb.n, sizeof *pb.v, pb_cmp);
    size_t m = 0;
    for (size_t i = 0; i < pb.n; i++) {
        if (i && pb.v[i].pg == pb.v[i - 1].pg) continue; /* (the first record has the state before) */
        cdsm__page_t *p = cdsm__pg(pb.v[i].pg);
        int wp = wp_for(p->state, pb.v[i].wp);
        int before = prot_of(pb.v[i].state, pb.v[i].wp), after = prot_of(p->state, wp);
        /* (re-armed on every return to read-only: the bit may be gone with the page) */
        int arm = wp && p->state == CDSM_PG_RO && !(pb.v[i].state == CDSM_PG_RO && pb.v[i].wp);
        int ops = (arm ? PB_WP_ON : 0) | (pb.v[i].wp && !wp ? PB_WP_OFF : 0) | (before != after ? PB_PROT : 0);
        p->wp = (uint8_t)wp;
        /* (the record now holds the operations in wp, the protection after in state) */
        if (ops) pb.v[m++] = (pb_rec_t){pb.v[i].pg, 0, (uint8_t)after, (uint8_t)ops};
    }
    pb_runs(m, PB_WP_ON);
    pb_runs(m, PB_WP_OFF);
    pb_runs(m, PB_PROT);
    pb.n = 0;
}

void cdsm__protect_batch(int on)
{
    if (on) {
        pb.depth++;
    } else if (pb.depth && !--pb.depth) {
        pb_apply();
    }
}

int cdsm__page_protect(uint32_t first, uint32_t count, int state)
{
    pb_add(first, count);
    for (uint32_t i = 0; i < count; i++) {
        cdsm__page_t *p = cdsm__pg(first + i);
        p->state = (uint8_t)state;
        p->ckflags = 3; /* changed since the last checkpoint */
    }
    if (!pb.depth) pb_apply();
    return CDSM_OK;
}

void cdsm__page_rearm(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    if (!cdsm__wp_uffd() || p->state == CDSM_PG_RO || p->state == CDSM_PG_INVALID) return;
    range_op(pg, 1, PB_WP_OFF, 0);
    p->wp = 0;
}

int cdsm__heap_data_runs(cdsm__runs_t *r)
{
    size_t ps = cdsm__heap.page_size;
    off_t pos = 0, end = (off_t)(cdsm__heap.heap_size + cdsm__heap.gsize);
    r->n = r->at = 0;
    while (pos < end) {
        off_t data = lseek(cdsm__heap.memfd, pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO) break; /* only a hole is left */
        if (data < 0) return cdsm__error(CDSM_ERR_HEAP_MAP, "lseek(SEEK_DATA) on the heap: %s", strerror(errno));
        off_t hole = lseek(cdsm__heap.memfd, data, SEEK_HOLE);
        if (hole < 0) return cdsm__error(CDSM_ERR_HEAP_MAP, "lseek(SEEK_HOLE) on the heap: %s", strerror(errno));
        if (r->n == r->cap) {
            size_t cap = r->cap ? 2 * r->cap : 64;
            uint32_t *v = realloc(r->v, cap * 2 * sizeof *v);
            if (!v) return cdsm__error(CDSM_ERR_NOMEM, "list of %zu runs of heap data", cap);
            r->v = v;
            r->cap = cap;
        }
        uint64_t lo = (uint64_t)data / ps, hi = ((uint64_t)hole + ps - 1) / ps;
        r->v[2 * r->n] = (uint32_t)lo;
        r->v[2 * r->n + 1] = (uint32_t)(hi < cdsm__heap.npages ? hi : cdsm__heap.npages);
        r->n++;
        pos = hole;
    }
    return CDSM_OK;
}

/* Runs are visited in increasing page order (r->at only moves forward). */
uint32_t cdsm__runs_next(cdsm__runs_t *r, uint32_t pg)
{
    while (r->at < r->n && r->v[2 * r->at + 1] <= pg) r->at++;
    if (r->at == r->n) return cdsm__heap.npages;
    return pg > r->v[2 * r->at] ? pg : r->v[2 * r->at];
}

const char *cdsm__heap_detection(void)
{
    static const char *const what[] = {"write detection by %s on every page",
                                       "write detection off (one rank owns every page)",
                                       "pages owned by first touch, write detection by %s once shared",
                                       "pages owned by their home, write detection by %s once shared",
                                       "node heap: one heap for every rank, no write detection"};
    static char line[96];
    snprintf(line, sizeof line, what[cdsm__heap.own_mode], cdsm__wp_uffd() ? "userfaultfd write-protect" : "mprotect");
    return line;
}
