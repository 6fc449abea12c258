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

/* Both tables hold rank + 1, 0 for none: calloc'd, so the pages of a large heap that no
 * allocation covers cost no memory. */
static struct {
    uint16_t *dir;    /* the owner of each page this rank is the directory of */
    uint16_t *placed; /* each page's directory rank, once an allocation placed it */
    uint32_t extent;  /* pages up to the last one placed or with an owner */
} own;

static int get(const uint16_t *t, uint32_t pg)
{
    return (int)t[pg] - 1;
}

static void set(uint16_t *t, uint32_t pg, int rank)
{
    t[pg] = (uint16_t)(rank + 1);
    if (pg >= own.extent) own.extent = pg + 1;
}

int cdsm__own_init(void)
{
    if (cdsm__heap.own_mode != CDSM_OWN_FIRST_TOUCH && cdsm__heap.own_mode != CDSM_OWN_HOME) return CDSM_OK;
    own.dir = calloc(cdsm__heap.npages, sizeof *own.dir);
    own.placed = calloc(cdsm__heap.npages, sizeof *own.placed);
    own.extent = 0;
    if (!own.dir || !own.placed) {
        cdsm__own_fini();
        return cdsm__error(CDSM_ERR_NOMEM, "ownership directory of %u pages", cdsm__heap.npages);
    }
    return CDSM_OK;
}

void cdsm__own_fini(void)
{
    cdsm__conv_fini();
    free(own.dir);
    free(own.placed);
    own.dir = own.placed = NULL;
}

size_t cdsm__own_state_bytes(void)
{
    return own.dir ? 4 + (size_t)own.extent * 2 * sizeof(int16_t) : 0;
}

/* What a checkpoint keeps: pages up to the last one placed or with an owner. Layout: u32
 * extent (bit 31 set under home ownership), then placed[extent], then dir[extent] (int16,
 * -1 for none, host order as every dataset of the file: CHECKPOINT_FORMAT.md). */
#define OWN_HOME_BIT 0x80000000u

void cdsm__own_state_put(uint8_t *dst)
{
    uint32_t e = own.extent, w = e | (cdsm__heap.own_mode == CDSM_OWN_HOME ? OWN_HOME_BIT : 0);
    memcpy(dst, &w, 4);
    int16_t *pl = (int16_t *)(void *)(dst + 4), *di = pl + e;
    for (uint32_t pg = 0; pg < e; pg++) {
        int16_t a = (int16_t)get(own.placed, pg), b = (int16_t)get(own.dir, pg);
        memcpy(&pl[pg], &a, sizeof a);
        memcpy(&di[pg], &b, sizeof b);
    }
}

int cdsm__own_state_take(const uint8_t *p, size_t n)
{
    uint32_t e = 0;
    if (n >= 4) memcpy(&e, p, 4);
    int home = (e & OWN_HOME_BIT) != 0;
    e &= ~OWN_HOME_BIT;
    if (own.dir && n >= 4 && home != (cdsm__heap.own_mode == CDSM_OWN_HOME))
        return cdsm__error(CDSM_ERR_STATE, "checkpoint region %s: written with pages owned %s, and this run owns "
                           "them %s: restart it with the settings it was written with (CDSM_SPARES)", "cdsm-ownership",
                           home ? "by their home (spares)" : "by first touch (no spares)",
                           home ? "by first touch (no spares)" : "by their home (spares)");
    if (!own.dir || n < 4 || e > cdsm__heap.npages || n != 4 + (size_t)e * 2 * sizeof(int16_t))
        return cdsm__error(CDSM_ERR_CORRUPT, "checkpoint region %s: %zu bytes do not hold an ownership directory of "
                           "this heap (%u pages)", "cdsm-ownership", n, cdsm__heap.npages);
    memset(own.placed, 0, (size_t)own.extent * sizeof *own.placed);
    memset(own.dir, 0, (size_t)own.extent * sizeof *own.dir);
    own.extent = 0;
    for (uint32_t pg = 0; pg < e; pg++) {
        int16_t a, b;
        memcpy(&a, p + 4 + (size_t)pg * 2, 2);
        memcpy(&b, p + 4 + ((size_t)e + pg) * 2, 2);
        if (a < -1 || b < -1 || a >= cdsm__w.n || b >= cdsm__w.n)
            return cdsm__error(CDSM_ERR_CORRUPT, "checkpoint region cdsm-ownership: page %u names rank %d or %d of %d",
                               pg, a, b, cdsm__w.n);
        if (a >= 0) set(own.placed, pg, a);
        if (b >= 0) set(own.dir, pg, b);
    }
    return CDSM_OK;
}

/* A page keeps its directory rank for the whole run (its entry lives there), so only
 * pages no allocation placed before are placed. */
void cdsm__own_place(uint64_t off, size_t size)
{
    if (!own.placed || !size) return;
    uint32_t first = (uint32_t)(off / cdsm__heap.page_size);
    uint32_t last = (uint32_t)((off + size - 1) / cdsm__heap.page_size);
    uint64_t np = (uint64_t)last - first + 1, n = (uint64_t)cdsm__w.n;
    /* Page first + k goes to rank floor(k n / np): rank r's pages are k in [ceil(r np / n),
     * ceil((r + 1) np / n)). A loop per rank with no division, since programs ask for
     * gigabytes they never touch (OCEAN -n258's G_MALLOCs: 5.5 M pages, a division per page
     * was 25-50 ms of every rank's start). */
    for (uint64_t r = 0; r < n; r++) {
        uint64_t lo = (r * np + n - 1) / n, hi = ((r + 1) * np + n - 1) / n;
        for (uint64_t k = lo; k < hi; k++)
            if (!own.placed[first + k]) own.placed[first + k] = (uint16_t)(r + 1);
    }
    if (last >= own.extent) own.extent = last + 1;
}

/* Placed by an allocation (a collective one, or main's G_MALLOC in the PARMACS layer:
 * alloc.c); else in a cdsm_malloc arena, its rank (every rank computes the same from the
 * offset); else spread by page number. */
static int dir_rank(uint32_t pg)
{
    if (get(own.placed, pg) >= 0) return get(own.placed, pg);
    int r = cdsm__alloc_arena_rank((uint64_t)pg * cdsm__heap.page_size);
    return r >= 0 ? r : (int)(pg % (uint32_t)cdsm__w.n);
}

int cdsm__own_home(uint32_t pg)
{
    /* Without ownership (CDSM_OWNERSHIP=0) no page has a home: nothing is converted. */
    return own.placed ? dir_rank(pg) : -1;
}

/* Whether pg's directory rank is for good: placed by an allocation, or in a rank's own
 * arena. A page past the allocations (a stream runs on beyond them) is placed by the
 * next collective allocation, perhaps elsewhere: no claim ahead of it. */
static int dir_final(uint32_t pg)
{
    return get(own.placed, pg) >= 0 || cdsm__alloc_arena_rank((uint64_t)pg * cdsm__heap.page_size) >= 0;
}

/* The directory: pg's owner, `who` if it had none (under home ownership, always the
 * directory itself: nothing of the directory is then lost with a rank). */
static int dir_claim(uint32_t pg, int who)
{
    if (cdsm__heap.own_mode == CDSM_OWN_HOME) who = cdsm__w.rank;
    if (get(own.dir, pg) < 0) set(own.dir, pg, who);
    return get(own.dir, pg);
}

/* ---- the directory's messages ---------------------------------------------------------- */

/* DIR_REQ: u32 count (1..CDSM_RA_MAX; DIR_BASE set: a replay's first fetch, which takes
 * the base of a converted page: conv.c), then the pages: the asker's miss and the pages
 * its stream of misses goes to next. Each is claimed for the asker if nobody owns it: a
 * stream's next pages are almost surely its next first touches (an initialisation, a
 * partition walked in order), and a wrong guess only means another rank's first touch
 * gets the page from the asker, tracked. */
#define DIR_BASE 0x80000000u

static void put_dir_req(cdsm__buf_t *b, const uint32_t *pages, uint32_t n, int base)
{
    cdsm__buf_put_u32(b, n | (base ? DIR_BASE : 0));
    for (uint32_t i = 0; i < n; i++) cdsm__buf_put_u32(b, pages[i]);
}

static int take_dir_req(cdsm__rd_t *rd, uint32_t *pages, uint32_t *n, int *base)
{
    *n = cdsm__rd_u32(rd);
    *base = (*n & DIR_BASE) != 0;
    *n &= ~DIR_BASE;
    if (rd->bad || !*n || *n > CDSM_RA_MAX) return -1;
    for (uint32_t i = 0; i < *n; i++) {
        pages[i] = cdsm__rd_u32(rd);
        if (rd->bad || pages[i] >= cdsm__heap.npages) return -1;
    }
    return rd->pos == rd->len ? 0 : -1;
}

/* DIR_REP: u32 count, then for each page asked, in order: u32 page, u32 owner (every
 * page asked is claimed, so there always is one), u32 with_page; with the page (its owner
 * is the directory itself, so one round trip brings it), its applied vector, its bytes
 * and the synchronisation number of its conversion (home ownership; else 0). */
typedef struct dir_ent {
    uint32_t pg;
    int owner, with_page;
    const uint32_t *applied;
    const void *bytes;
    uint32_t seq;
} dir_ent_t;

/* Who serves pg's copy: its owner; but a home whose copy a collection left invalid (others
 * wrote it since) names the rank that keeps the current copy, as a GC's holder does. */
static int server_of(uint32_t pg, int owner)
{
    const cdsm__page_t *p = cdsm__pg(pg);
    if (owner != cdsm__w.rank || p->state != CDSM_PG_INVALID || p->claim) return owner;
    return p->holder >= 0 ? p->holder : p->notices ? (int)cdsm__latest_notice(pg)->rank : owner;
}

/* base: 1 for a replay's miss, 2 for a page a replay's stream goes to next (sent only
 * with a base: a current copy could hold writes the replay must not see yet). */
static void put_dir_ent(cdsm__buf_t *b, uint32_t pg, int owner, int base)
{
    const void *stored;
    const uint32_t *ap;
    cdsm__conv_base(pg, &stored, &ap);
    if (!base || !stored) owner = server_of(pg, owner);
    int with_page = owner == cdsm__w.rank && (base < 2 || stored);
    cdsm__buf_put_u32(b, pg);
    cdsm__buf_put_u32(b, (uint32_t)owner);
    cdsm__buf_put_u32(b, (uint32_t)with_page);
    if (!with_page) return;
    const void *bytes, *none;
    const uint32_t *applied;
    uint32_t seq = cdsm__conv_base(pg, &bytes, &applied);
    if (base && bytes) { /* a replay's first fetch: the base (DESIGN, "Ownership with spares") */
        cdsm__buf_put(b, applied, cdsm__u32s((size_t)cdsm__w.n));
    } else { /* the applied vector; the first copy served converts the page */
        cdsm__page_reply(pg, b, &bytes);
        seq = cdsm__conv_base(pg, &none, &applied);
    }
    cdsm__buf_put(b, bytes, cdsm__heap.page_size);
    cdsm__buf_put_u32(b, seq);
}

static int take_dir_ent(cdsm__rd_t *rd, int d, dir_ent_t *e)
{
    e->pg = cdsm__rd_u32(rd);
    uint32_t who = cdsm__rd_u32(rd);
    e->with_page = (int)cdsm__rd_u32(rd);
    e->owner = (int)who;
    e->applied = e->with_page ? cdsm__rd_take(rd, cdsm__u32s((size_t)cdsm__w.n)) : NULL;
    e->bytes = e->with_page ? cdsm__rd_take(rd, cdsm__heap.page_size) : NULL;
    e->seq = e->with_page ? cdsm__rd_u32(rd) : 0;
    return rd->bad || who >= (uint32_t)cdsm__w.n || (e->with_page && e->owner != d) ? -1 : 0;
}

int cdsm__own_dir_req_ready(const uint8_t *p, size_t len)
{
    cdsm__rd_t rd = {p, len, 0, 0};
    uint32_t pages[CDSM_RA_MAX], n = 0;
    int base = 0;
    if (!own.dir || take_dir_req(&rd, pages, &n, &base)) return 1; /* (served now: reported there) */
    const void *bytes;
    const uint32_t *applied;
    cdsm__conv_base(pages[0], &bytes, &applied);
    return base && bytes; /* (the stream's next pages go without a page when they have none yet) */
}

void cdsm__own_on_dir_req(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd)
{
    uint32_t pages[CDSM_RA_MAX], n = 0;
    int base = 0;
    if (cdsm__ft.defer(h, rd)) return; /* a replacement serves its pages once it is live */
    /* (The asker may have made the allocation that placed a page before this rank did:
     * collective allocations do not wait for each other.) */
    if (!own.dir || take_dir_req(rd, pages, &n, &base)) {
        cdsm__log(CDSM_LOG_ERROR, "bad directory request from rank %u (%u pages)", h->src, n);
        cdsm_check(!"directory request outside the heap");
    }
    cdsm__buf_t b = {0};
    cdsm__buf_put_u32(&b, n);
    for (uint32_t i = 0; i < n; i++) put_dir_ent(&b, pages[i], dir_claim(pages[i], (int)h->src), base ? 1 + (i > 0) : 0);
    cdsm__tp_send((int)h->src, CDSM_MSG_DIR_REP, h->tag, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
}

/* ---- a miss on a page never touched here ------------------------------------------------ */

/* A page of pg's stream that can go to the same directory in the same request: never
 * touched here either, and nobody's writes known. 1: take it, 0: skip it (valid), -1: end. */
static int aheadable(uint32_t q, int d)
{
    if (q == UINT32_MAX) return -1;
    const cdsm__page_t *p = cdsm__pg(q);
    if (p->state != CDSM_PG_INVALID) return 0;
    return p->claim == CDSM_CLAIM_UNCLAIMED && p->holder < 0 && !p->notices && dir_final(q) && dir_rank(q) == d ? 1
                                                                                                               : -1;
}

typedef struct ahead {
    int d;
    uint32_t *pages, n;
} ahead_t;

static int ahead_one(uint32_t q, void *arg)
{
    ahead_t *a = arg;
    int take = aheadable(q, a->d);
    if (take > 0) a->pages[a->n++] = q;
    return take;
}

/* pg, then the pages of its stream (ra) whose directory is d too; returns the count. */
static uint32_t stream_pages(uint32_t pg, cdsm__ra_t *ra, int d, uint32_t *pages)
{
    ahead_t a = {d, pages, 1};
    pages[0] = pg;
    cdsm__ra_walk(pg, ra, ahead_one, &a);
    return a.n;
}

/* The directory named this rank pg's owner: still zero here. If another rank was sent to
 * us and read it while we asked, it holds a copy, so our writes are tracked from the start. */
static void became_ours(uint32_t pg)
{
    cdsm__page_t *p = cdsm__pg(pg);
    int served = p->claim == CDSM_CLAIM_SERVED;
    p->claim = CDSM_CLAIM_NONE;
    cdsm__page_protect(pg, 1, served ? CDSM_PG_RO : CDSM_PG_OWN);
    CDSM_STAT_ADD(pages_owned, 1);
}

/* What the directory said of a page of the stream ahead of the miss: ours now, or its
 * copy came (the owner is the directory), or its owner is known (its first access, or the
 * readahead of a later miss, fetches it whole). */
static void take_ahead(const dir_ent_t *e)
{
    cdsm__page_t *p = cdsm__pg(e->pg);
    if (p->claim == CDSM_CLAIM_NONE || (cdsm__mode.replaying && !e->with_page)) return; /* (no base: its own miss asks) */
    if (e->owner == cdsm__w.rank) {
        became_ours(e->pg);
        return;
    }
    p->claim = CDSM_CLAIM_NONE;
    if (e->with_page) {
        cdsm__page_install(e->pg, e->bytes, e->applied);
        if (cdsm__heap.own_mode == CDSM_OWN_HOME) cdsm__conv_learned(e->pg, e->owner, e->seq);
        cdsm__page_protect(e->pg, 1, CDSM_PG_RO);
        p->ws = CDSM_WS_CREDIT;
    } else {
        p->holder = (int16_t)e->owner;
    }
    CDSM_STAT_ADD(prefetched, 1);
}

/* Ask directory d about pages[0..n): who owns each (this rank, if nobody did).
 * *fetched: pages[0]'s copy came with the answer and is installed. base: a replay's
 * first fetch (n is 1). */
static int ask_remote(int d, const uint32_t *pages, uint32_t n, int base, int *owner, int *fetched)
{
    uint64_t id = cdsm__g.next_req++;
    cdsm__buf_t b = {0};
    put_dir_req(&b, pages, n, base);
    /* (late: the directory rank may take it at its own next fault) */
    int rc = cdsm__tp_send_late(d, CDSM_MSG_DIR_REQ, id, b.p, b.len, NULL, 0);
    cdsm__buf_free(&b);
    if (rc) return rc;
    cdsm__reply_t *r = cdsm__wait_reply(CDSM_MSG_DIR_REP, id); /* (releases mu meanwhile) */
    if (!r) return CDSM_ERR_PEER_LOST;
    cdsm__rd_t rd = {r->payload, r->hdr.len, 0, 0};
    dir_ent_t e[CDSM_RA_MAX];
    uint32_t got = cdsm__rd_u32(&rd);
    int bad = rd.bad || got != n;
    for (uint32_t i = 0; i < n && !bad; i++) bad = take_dir_ent(&rd, d, &e[i]) || e[i].pg != pages[i];
    if (bad || rd.pos != rd.len) {
        cdsm__reply_free(r);
        return cdsm__error(CDSM_ERR_PROTOCOL, "malformed directory reply from rank %d for page %u", d, pages[0]);
    }
    if (e[0].with_page) cdsm__page_install(pages[0], e[0].bytes, e[0].applied);
    if (e[0].with_page && cdsm__heap.own_mode == CDSM_OWN_HOME) cdsm__conv_learned(pages[0], d, e[0].seq);
    for (uint32_t i = 1; i < n; i++) take_ahead(&e[i]);
    *owner = e[0].owner;
    *fetched = e[0].with_page;
    cdsm__reply_free(r);
    return CDSM_OK;
}

/* Ask pg's directory who owns it (this rank, if nobody did), and the same of the pages of
 * its stream (ra) with the same directory. *fetched: the owner's copy came with the answer. */
static int ask_directory(uint32_t pg, cdsm__ra_t *ra, int *owner, int *fetched)
{
    int d = dir_rank(pg);
    uint32_t pages[CDSM_RA_MAX], n = stream_pages(pg, cdsm__mode.replaying ? NULL : ra, d, pages);
    *fetched = 0;
    if (d != cdsm__w.rank) return ask_remote(d, pages, n, 0, owner, fetched);
    *owner = dir_claim(pg, cdsm__w.rank);
    for (uint32_t i = 1; i < n; i++) {
        dir_ent_t e = {pages[i], dir_claim(pages[i], cdsm__w.rank), 0, NULL, NULL};
        take_ahead(&e);
    }
    return CDSM_OK;
}

/* A replay's first access to a page another rank is home of: the base its conversion
 * left (never the home's current copy: it may hold writes made after the logged clocks),
 * then the diffs the copy lacks. */
static int replay_first_fetch(uint32_t pg, cdsm__ra_t *ra, int d)
{
    int owner = -1, fetched = 0;
    uint32_t pages[CDSM_RA_MAX], n = stream_pages(pg, ra, d, pages); /* (bases of the stream too) */
    int rc = ask_remote(d, pages, n, 1, &owner, &fetched);
    if (rc) return rc;
    if (!fetched)
        return cdsm__error(CDSM_ERR_PROTOCOL, "rank %d sent no base copy of page %u to the replay", d, pg);
    cdsm__page_t *p = cdsm__pg(pg);
    p->claim = CDSM_CLAIM_NONE;
    const uint32_t *ap = cdsm__page_applied(pg);
    for (const cdsm__notice_t *nt = p->notices; nt; nt = nt->next)
        if (nt->iv->idx > ap[nt->iv->rank]) return cdsm__validate(pg, NULL); /* (still invalid) */
    cdsm__page_protect(pg, 1, CDSM_PG_RO);
    return CDSM_OK;
}

int cdsm__own_miss(uint32_t pg, cdsm__ra_t *ra)
{
    cdsm__page_t *p = cdsm__pg(pg);
    if (cdsm__mode.replaying && cdsm__heap.own_mode == CDSM_OWN_HOME && dir_rank(pg) != cdsm__w.rank)
        return replay_first_fetch(pg, ra, dir_rank(pg));
    /* Others wrote it since it left its owner: a writer (or the keeper a GC named) holds
     * a whole copy, and the validation fetches it with the diffs it lacks. */
    if (p->holder < 0 && p->notices) p->holder = (int16_t)cdsm__latest_notice(pg)->rank;
    if (p->holder >= 0) {
        p->claim = CDSM_CLAIM_NONE;
        return cdsm__validate(pg, ra);
    }
    int owner = -1, fetched = 0;
    int rc = ask_directory(pg, ra, &owner, &fetched);
    if (rc) return rc;
    if (owner != cdsm__w.rank) {
        p->claim = CDSM_CLAIM_NONE;
        if (fetched) { /* (no notice of it can have come meanwhile: this thread takes them) */
            cdsm__page_protect(pg, 1, CDSM_PG_RO);
            return CDSM_OK;
        }
        p->holder = (int16_t)owner; /* serve_page makes the owner track it */
        return cdsm__validate(pg, ra); /* (with the stream's pages whose owner is known) */
    }
    became_ours(pg);
    return CDSM_OK;
}

void cdsm__page_unown(uint32_t pg)
{
    /* Read-only from now on: the copy served is exactly the bytes written so far, and the
     * owner's next write faults and is tracked as any other (the application thread may
     * be writing the page as this runs: a write after the mprotect waits for mu). */
    cdsm__pg(pg)->last_wr = cdsm__g.vc[cdsm__w.rank] + 1; /* (it becomes hot sooner) */
    cdsm__page_protect(pg, 1, CDSM_PG_RO);
    CDSM_STAT_ADD(pages_unowned, 1);
}
