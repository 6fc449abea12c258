/* The shared heap: one memfd mapped twice, at the common address (protected per page,
 * seen by the application) and anywhere (always writable, used by the library to apply
 * diffs and read pages without touching the protection). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diff.h"
#include "internal.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

void cdsm__log_bytes_add(int64_t delta)
{
    cdsm__g.log_bytes += (uint64_t)delta;
    cdsm__g.st.log_bytes = cdsm__g.log_bytes;
    if (cdsm__g.log_bytes > cdsm__g.st.log_bytes_peak) cdsm__g.st.log_bytes_peak = cdsm__g.log_bytes;
}

int cdsm__heap_init(void)
{
    cdsm__state_t *g = &cdsm__g;
    g->os_page = (size_t)sysconf(_SC_PAGESIZE);
    g->page_size = cdsm__cfg.page_size;
    g->heap_size = cdsm__cfg.heap_size;
    if (g->heap_size % g->page_size)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_HEAP_SIZE=%zu: not a multiple of CDSM_PAGE_SIZE=%zu",
                           g->heap_size, g->page_size);
    if (g->heap_size / g->page_size >= UINT32_MAX)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_HEAP_SIZE=%zu: too many pages of %zu bytes",
                           g->heap_size, g->page_size);
    if (g->heap_size / 2 / (size_t)g->n < g->page_size)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_HEAP_SIZE=%zu: too small for %d per-rank arenas",
                           g->heap_size, g->n);
    g->npages = (uint32_t)(g->heap_size / g->page_size);

    g->memfd = memfd_create("cdsm-heap", MFD_CLOEXEC);
    if (g->memfd < 0)
        return cdsm__error(CDSM_ERR_HEAP_MAP, "memfd_create: %s", strerror(errno));
    if (ftruncate(g->memfd, (off_t)g->heap_size)) {
        int e = errno;
        close(g->memfd);
        return cdsm__error(CDSM_ERR_HEAP_MAP, "ftruncate(%zu): %s", g->heap_size, strerror(e));
    }
    void *want = (void *)(uintptr_t)cdsm__cfg.heap_addr;
    /* Every page starts valid and zero on every rank: read-only until written. */
    void *a = mmap(want, g->heap_size, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE | MAP_NORESERVE,
                   g->memfd, 0);
    if (a == MAP_FAILED || a != want) {
        int e = errno;
        if (a != MAP_FAILED) munmap(a, g->heap_size);
        close(g->memfd);
        return cdsm__error(CDSM_ERR_HEAP_MAP,
                           "cannot map %zu bytes at CDSM_HEAP_ADDR=%p: %s (choose another address)",
                           g->heap_size, want, a == MAP_FAILED ? strerror(e) : "kernel chose another address");
    }
    g->base = a;
    void *s = mmap(NULL, g->heap_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, g->memfd, 0);
    if (s == MAP_FAILED) {
        int e = errno;
        munmap(g->base, g->heap_size);
        close(g->memfd);
        return cdsm__error(CDSM_ERR_HEAP_MAP, "mmap of the library view: %s", strerror(e));
    }
    g->sys = s;
    g->pages = calloc(g->npages, sizeof *g->pages);
    g->scratch = malloc(cdsm__diff_max(g->page_size));
    g->scratch_n = malloc((size_t)g->n * 4);
    if (!g->pages || !g->scratch || !g->scratch_n) {
        cdsm__heap_fini();
        return cdsm__error(CDSM_ERR_NOMEM, "page table for %u pages", g->npages);
    }
    for (uint32_t i = 0; i < g->npages; i++) {
        g->pages[i].state = CDSM_PG_RO;
        g->pages[i].holder = -1;
    }
    return CDSM_OK;
}

void cdsm__heap_fini(void)
{
    cdsm__state_t *g = &cdsm__g;
    if (g->pages) {
        for (uint32_t i = 0; i < g->npages; i++) {
            cdsm__page_t *p = &g->pages[i];
            free(p->twin);
            free(p->applied);
            for (cdsm__notice_t *nt = p->notices, *nx; nt; nt = nx) {
                nx = nt->next;
                free(nt);
            }
        }
        free(g->pages);
        g->pages = NULL;
    }
    free(g->scratch);
    free(g->scratch_n);
    g->scratch = NULL;
    g->scratch_n = NULL;
    if (g->sys) munmap(g->sys, g->heap_size);
    if (g->base) munmap(g->base, g->heap_size);
    if (g->memfd > 0) close(g->memfd);
    g->sys = g->base = NULL;
    g->memfd = -1;
}

int cdsm__page_protect(uint32_t first, uint32_t count, int state)
{
    static const int prot[] = {PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE};
    if (mprotect(cdsm__app_page(first), (size_t)count * cdsm__g.page_size, prot[state])) {
        /* Only fails on a bad range or when the kernel is out of mapping entries. */
        cdsm__log(CDSM_LOG_ERROR, "mprotect(page %u, %u pages): %s", first, count, strerror(errno));
        cdsm_check(!"mprotect failed");
    }
    for (uint32_t i = 0; i < count; i++) {
        cdsm__g.pages[first + i].state = (uint8_t)state;
        cdsm__g.pages[first + i].ckflags = 3; /* changed since the last checkpoint */
    }
    return CDSM_OK;
}
