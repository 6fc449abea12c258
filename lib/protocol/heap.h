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

enum { CDSM_PG_INVALID = 0, CDSM_PG_RO = 1, CDSM_PG_RW = 2 };
#define CDSM_IV_OPEN UINT32_MAX
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
    uint32_t npages;
    cdsm__page_t *pages;
} cdsm__heap_t;

extern cdsm__heap_t cdsm__heap;

static inline uint32_t cdsm__page_of(const void *addr)
{
    return (uint32_t)(((const char *)addr - cdsm__heap.base) / cdsm__heap.page_size);
}
static inline char *cdsm__sys_page(uint32_t pg)
{
    return cdsm__heap.sys + (size_t)pg * cdsm__heap.page_size;
}
static inline char *cdsm__app_page(uint32_t pg)
{
    return cdsm__heap.base + (size_t)pg * cdsm__heap.page_size;
}

/* heap.c */
int cdsm__heap_init(void);
void cdsm__heap_fini(void);
int cdsm__page_protect(uint32_t first, uint32_t count, int state);
void cdsm__log_bytes_add(int64_t delta);

/* alloc.c */
int cdsm__alloc_init(void);
void cdsm__alloc_fini(void);
/* Non-collective allocation from the common arena (rank 0 of the PARMACS layer only). */
int cdsm__alloc_master(size_t size, void **out);

/* fault.c */
int cdsm__fault_install(void);
void cdsm__fault_uninstall(void);

#ifdef __cplusplus
}
#endif
#endif
