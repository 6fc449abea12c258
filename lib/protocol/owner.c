/* First-touch ownership: a page belongs to the first rank that touches it, and costs that
 * rank nothing (no write detection, twin, diff or notice) until another rank reads it.
 * The page's directory rank (fixed when a collective allocation first covers the page:
 * cdsm__own_place) names the owner: the first rank to ask becomes it, later ones are sent
 * to it for a whole copy, and the owner tracks the page from the moment it serves one
 * (cdsm__page_unown, in cdsm__page_reply). A rank's copy of
 * a page it never touched is inaccessible until then, so every first access goes through
 * the directory, and an owner knows nobody else holds its page.
 * All of it runs under cdsm__g.mu. */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

static struct {
    int16_t *dir;    /* the owner of each page this rank is the directory of, or -1 */
    int16_t *placed; /* each page's directory rank, -1 until an allocation places it */
} own;

int cdsm__own_init(void)
{
    if (cdsm__heap.own_mode != CDSM_OWN_FIRST_TOUCH) return CDSM_OK;
    own.dir = malloc(cdsm__heap.npages * sizeof *own.dir);
    own.placed = malloc(cdsm__heap.npages * sizeof *own.placed);
    if (!own.dir || !own.placed) {
        cdsm__own_fini();
        return cdsm__error(CDSM_ERR_NOMEM, "ownership directory of %u pages", cdsm__heap.npages);
    }
    for (uint32_t pg = 0; pg < cdsm__heap.npages; pg++) own.dir[pg] = own.placed[pg] = -1;
    return CDSM_OK;
}

void cdsm__own_fini(void)
{
    free(own.dir);
    free(own.placed);
    own.dir = own.placed = NULL;
}

/* Pages up to the last one placed or with a directory entry: what a checkpoint keeps. */
static uint32_t state_extent(void)
{
    uint32_t e = cdsm__heap.npages;
    while (e > 0 && own.dir[e - 1] < 0 && own.placed[e - 1] < 0) e--;
    return e;
}

size_t cdsm__own_state_bytes(void)
{
    return own.dir ? 4 + (size_t)state_extent() * 2 * sizeof(int16_t) : 0;
}

/* Layout: u32 extent, then placed[extent], then dir[extent] (int16, host order as every
 * dataset of the file: CHECKPOINT_FORMAT.md). */
void cdsm__own_state_put(uint8_t *dst)
{
    uint32_t e = state_extent();
    memcpy(dst, &e, 4);
    memcpy(dst + 4, own.placed, (size_t)e * sizeof(int16_t));
    memcpy(dst + 4 + (size_t)e * sizeof(int16_t), own.dir, (size_t)e * sizeof(int16_t));
}

int cdsm__own_state_take(const uint8_t *p, size_t n)
{
    uint32_t e = 0;
    if (n >= 4) memcpy(&e, p, 4);
    if (!own.dir || n < 4 || e > cdsm__heap.npages || n != 4 + (size_t)e * 2 * sizeof(int16_t))
        return cdsm__error(CDSM_ERR_CORRUPT, "checkpoint region %s: %zu bytes do not hold an ownership directory of "
                           "this heap (%u pages)", "cdsm-ownership", n, cdsm__heap.npages);
    memcpy(own.placed, p + 4, (size_t)e * sizeof(int16_t));
    memcpy(own.dir, p + 4 + (size_t)e * sizeof(int16_t), (size_t)e * sizeof(int16_t));
    for (uint32_t pg = 0; pg < e; pg++)
        if (own.placed[pg] >= cdsm__w.n || own.dir[pg] >= cdsm__w.n)
            return cdsm__error(CDSM_ERR_CORRUPT, "checkpoint region cdsm-ownership: page %u names rank %d or %d of %d",
                               pg, own.placed[pg], own.dir[pg], cdsm__w.n);
    return CDSM_OK;
}

/* A page keeps its directory rank for the whole run (its entry lives there), so only
 * pages no allocation placed before are placed. */
void cdsm__own_place(uint64_t off, size_t size)
{
    if (!own.placed || !size) return;
    uint32_t first = (uint32_t)(off / cdsm__heap.page_size);
    uint32_t last = (uint32_t)((off + size - 1) / cdsm__heap.page_size);
    uint64_t np = (uint64_t)last - first + 1;
    for (uint32_t pg = first; pg <= last; pg++)
        if (own.placed[pg] < 0) own.placed[pg] = (int16_t)(((uint64_t)(pg - first) * (uint64_t)cdsm__w.n) / np);
}

/* Placed by a collective allocation; else in a cdsm_malloc arena, its rank (every rank
 * computes the same from the offset); else spread by page number. */
static int dir_rank(uint32_t pg)
{
    if (own.placed[pg] >= 0) return own.placed[pg];
    int r = cdsm__alloc_arena_rank((uint64_t)pg * cdsm__heap.page_size);
    return r >= 0 ? r : (int)(pg % (uint32_t)cdsm__w.n);
}

/* The directory: pg's owner, `who` if it had none. */
static int dir_claim(uint32_t pg, int who)
{
    if (own.dir[pg] < 0) own.dir[pg] = (int16_t)who;
    return own.dir[pg];
}

/* The reply names the owner; when that is this rank, it carries the page as well (one
 * round trip instead of two), which makes the owner track it from now on. */
void cdsm__own_on_dir_req(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    uint32_t pg = cdsm__rd_u32(rd);
    /* (The asker may have made the allocation that placed pg before this rank did:
     * collective allocations do not wait for each other.) */
    if (rd->bad || !own.dir || pg >= cdsm__heap.npages) {
        cdsm__log(CDSM_LOG_ERROR, "bad directory request from rank %u (page %u)", h->src, pg);
        cdsm_check(!"directory request outside the heap");
    }
    int owner = dir_claim(pg, (int)h->src), with_page = owner == cdsm__w.rank;
    cdsm__buf_t b = {0};
    const void *bytes = NULL;
    cdsm__buf_put_u32(&b, pg);
    cdsm__buf_put_u32(&b, (uint32_t)owner);
    cdsm__buf_put_u32(&b, (uint32_t)with_page);
    if (with_page) cdsm__page_reply(pg, &b, &bytes);
    cdsm__tp_send((int)h->src, CDSM_MSG_DIR_REP, h->tag, b.p, b.len, bytes, with_page ? cdsm__heap.page_size : 0);
    cdsm__buf_free(&b);
}

/* Ask pg's directory who owns it (this rank, if nobody did). *fetched: the owner's copy
 * came with the answer and is installed. */
static int ask_directory(uint32_t pg, int *owner, int *fetched)
{
    cdsm__state_t *g = &cdsm__g;
    int d = dir_rank(pg);
    *fetched = 0;
    if (d == cdsm__w.rank) {
        *owner = dir_claim(pg, cdsm__w.rank);
        return CDSM_OK;
    }
    uint64_t id = g->next_req++;
    int rc = cdsm__tp_send(d, CDSM_MSG_DIR_REQ, id, &pg, 4, NULL, 0);
    if (rc) return rc;
    cdsm__reply_t *r = cdsm__wait_reply(CDSM_MSG_DIR_REP, id); /* (releases mu meanwhile) */
    if (!r) return CDSM_ERR_PEER_LOST;
    cdsm__rd_t rd = {r->payload, r->hdr.len, 0, 0};
    uint32_t got = cdsm__rd_u32(&rd), who = cdsm__rd_u32(&rd), with_page = cdsm__rd_u32(&rd);
    const uint32_t *ap = with_page ? cdsm__rd_take(&rd, cdsm__u32s((size_t)cdsm__w.n)) : NULL;
    const void *bytes = with_page ? cdsm__rd_take(&rd, cdsm__heap.page_size) : NULL;
    if (rd.bad || got != pg || who >= (uint32_t)cdsm__w.n || rd.pos != rd.len || (with_page && who != (uint32_t)d)) {
        cdsm__reply_free(r);
        return cdsm__error(CDSM_ERR_PROTOCOL, "malformed directory reply from rank %d for page %u", d, pg);
    }
    if (with_page) cdsm__page_install(pg, bytes, ap);
    cdsm__reply_free(r);
    *owner = (int)who;
    *fetched = (int)with_page;
    return CDSM_OK;
}

int cdsm__own_miss(uint32_t pg)
{
    cdsm__page_t *p = &cdsm__heap.pages[pg];
    /* Others wrote it since it left its owner: a writer (or the keeper a GC named) holds
     * a whole copy, and the validation fetches it with the diffs it lacks. */
    if (p->holder < 0 && p->notices) p->holder = (int16_t)cdsm__latest_notice(p)->rank;
    if (p->holder >= 0) {
        p->claim = CDSM_CLAIM_NONE;
        return cdsm__validate(pg);
    }
    int owner = -1, fetched = 0;
    int rc = ask_directory(pg, &owner, &fetched);
    if (rc) return rc;
    if (owner != cdsm__w.rank) {
        p->claim = CDSM_CLAIM_NONE;
        if (fetched) { /* (no notice of it can have come meanwhile: this thread takes them) */
            cdsm__page_protect(pg, 1, CDSM_PG_RO);
            return CDSM_OK;
        }
        p->holder = (int16_t)owner; /* serve_page makes the owner track it */
        return cdsm__validate(pg);
    }
    /* Ours. Still zero here; if another rank was sent to us and read it while we asked,
     * it holds a copy, so our writes are tracked from the start. */
    int served = p->claim == CDSM_CLAIM_SERVED;
    p->claim = CDSM_CLAIM_NONE;
    cdsm__page_protect(pg, 1, served ? CDSM_PG_RO : CDSM_PG_OWN);
    CDSM_STAT_ADD(pages_owned, 1);
    return CDSM_OK;
}

void cdsm__page_unown(uint32_t pg)
{
    /* Read-only from now on: the copy served is exactly the bytes written so far, and the
     * owner's next write faults and is tracked as any other (the application thread may
     * be writing the page as this runs: a write after the mprotect waits for mu). */
    cdsm__heap.pages[pg].last_wr = cdsm__g.vc[cdsm__w.rank] + 1; /* (it becomes hot sooner) */
    cdsm__page_protect(pg, 1, CDSM_PG_RO);
    CDSM_STAT_ADD(pages_unowned, 1);
}
