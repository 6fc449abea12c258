/* Copies of grant determinants, carried causally (DESIGN, "Two ranks lost at once").
 *
 * A grant between two ranks is logged by those two only. When both are lost together (a
 * node), their replacements cannot replay that acquire from the log, and a survivor whose
 * state depends on it could not be matched. With two spares or more, every rank therefore
 * keeps a copy of every grant determinant it has heard of (its own among them) and passes
 * those a peer has not had from it on every message that carries causality to that peer:
 * lock requests, forwards and grants, barrier arrivals and releases (a trailer at the end
 * of the payload). So a process that knows anything of rank a's state after one of a's
 * acquires also knows that acquire's determinant: the copies the survivors hold are
 * closed under "happened before", and a replay that finds none for an acquire knows that
 * no survivor depends on what came after it (family-based causal logging, for any number
 * of failures).
 *
 * Entries are fixed-size (five words and a vector clock), oldest first, found again by
 * (acquirer, acquire number) in a hash table; per peer, the index up to which everything
 * went to it. Checkpoints that no replay can start before trim them, as the log. Caller
 * holds mu throughout. */
#include <stdlib.h>
#include <string.h>

#include "recovery.h"

enum { GCOPY_MAGIC = 0x59504347u /* "GCPY" */ };
/* A conversion (conv.c) rides as an entry with this acquirer: its home converted page
 * `lock` (the key's acquire number too: a page converts once) at synchronisation
 * grant_seq. A reader lost with the home may have been the only one to know its number. */
#define GC_CONV UINT32_MAX

typedef struct gc_ent {
    uint32_t granter, acquirer, lock, acq_seq, grant_seq;
    uint32_t vc[];
} gc_ent_t;
CDSM__STATIC_ASSERT(sizeof(gc_ent_t) == 20, "a grant copy's head is a wire format");

static struct gcopy {
    int on;
    size_t esz;        /* bytes per entry */
    uint8_t *v;        /* entries */
    int16_t *from;     /* per entry: the rank it came from (-1: our own) */
    size_t n, cap;     /* entries held, capacity */
    uint32_t *hash;    /* open addressing: entry index + 1, 0 empty */
    size_t hcap;       /* a power of two, at least 2n */
    size_t *upto;      /* per rank: entries before this index went to it */
} G;

int cdsm__gcopy_on(void)
{
    return G.on;
}

int cdsm__gcopy_init(void)
{
    int n = cdsm__w.n;
    G.on = cdsm__cfg.logging && cdsm__cfg.spares >= 2;
    if (!G.on) return CDSM_OK;
    G.esz = sizeof(gc_ent_t) + cdsm__u32s((size_t)n);
    G.upto = calloc((size_t)n, sizeof *G.upto);
    if (!G.upto) return cdsm__error(CDSM_ERR_NOMEM, "grant determinant copies");
    return CDSM_OK;
}

void cdsm__gcopy_fini(void)
{
    free(G.v);
    free(G.from);
    free(G.hash);
    free(G.upto);
    memset(&G, 0, sizeof G);
}

static gc_ent_t *ent(size_t i)
{
    return (gc_ent_t *)(void *)(G.v + i * G.esz);
}

static size_t slot_of(uint32_t acquirer, uint32_t acq_seq)
{
    uint64_t k = ((uint64_t)acquirer << 32 | acq_seq) * 0x9E3779B97F4A7C15ull;
    return (size_t)(k >> 20) & (G.hcap - 1);
}

static void rehash(size_t hcap)
{
    free(G.hash);
    G.hcap = hcap;
    G.hash = calloc(hcap, sizeof *G.hash);
    cdsm_check(G.hash != NULL); /* out of memory while logging: recovery would be impossible */
    for (size_t i = 0; i < G.n; i++) {
        size_t s = slot_of(ent(i)->acquirer, ent(i)->acq_seq);
        while (G.hash[s]) s = (s + 1) & (G.hcap - 1);
        G.hash[s] = (uint32_t)(i + 1);
    }
}

/* The entry of acquirer's acquire acq_seq, or NULL. */
static const gc_ent_t *find(uint32_t acquirer, uint32_t acq_seq)
{
    if (!G.hcap) return NULL;
    for (size_t s = slot_of(acquirer, acq_seq); G.hash[s]; s = (s + 1) & (G.hcap - 1)) {
        const gc_ent_t *e = ent(G.hash[s] - 1);
        if (e->acquirer == acquirer && e->acq_seq == acq_seq) return e;
    }
    return NULL;
}

/* A grant this rank's lost process made, heard of from another rank (a replacement; a
 * process never hears of its own grant first): its log keeps it as its own, so that the
 * acquirer's next replay finds it here too. */
static void mine(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq, uint32_t grant_seq,
                 const uint32_t *vc, int from)
{
    if (from >= 0 && granter == (uint32_t)cdsm__w.rank && acquirer != GC_CONV && acquirer != granter)
        cdsm__det_log(CDSM_DET_SENT, acquirer, lock, acq_seq, grant_seq, vc);
}

void cdsm__gcopy_add(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq, uint32_t grant_seq,
                     const uint32_t *vc, int from)
{
    if (!G.on || find(acquirer, acq_seq)) return;
    if (G.n == G.cap) {
        G.cap = G.cap ? 2 * G.cap : 256;
        G.v = realloc(G.v, G.cap * G.esz);
        G.from = realloc(G.from, G.cap * sizeof *G.from);
        cdsm_check(G.v && G.from);
    }
    gc_ent_t *e = ent(G.n);
    *e = (gc_ent_t){granter, acquirer, lock, acq_seq, grant_seq};
    memcpy(e->vc, vc, cdsm__u32s((size_t)cdsm__w.n));
    G.from[G.n++] = (int16_t)from;
    if (2 * G.n > G.hcap) {
        rehash(G.hcap ? 2 * G.hcap : 1024);
        mine(granter, acquirer, lock, acq_seq, grant_seq, vc, from);
        return;
    }
    size_t s = slot_of(acquirer, acq_seq);
    while (G.hash[s]) s = (s + 1) & (G.hcap - 1);
    G.hash[s] = (uint32_t)G.n;
    mine(granter, acquirer, lock, acq_seq, grant_seq, vc, from);
}

void cdsm__gcopy_converted(uint32_t pg, int home, uint32_t seq)
{
    if (!G.on) return;
    uint32_t *zero = calloc((size_t)cdsm__w.n, sizeof *zero);
    cdsm_check(zero != NULL);
    cdsm__gcopy_add((uint32_t)home, GC_CONV, pg, pg, seq, zero, -1);
    free(zero);
}

/* Entries `to` has not had from us and cannot know otherwise (not its own grants, not
 * ones it told us), from index `first`; with b NULL only counted. */
static uint32_t put_from(cdsm__buf_t *b, int to, size_t first)
{
    uint32_t count = 0;
    for (size_t i = first; i < G.n; i++) {
        const gc_ent_t *e = ent(i);
        /* (A party knows its own grant, unless its process was replaced since: a
         * replacement learns its lost process's grants this way too. GC_CONV is no rank.) */
        int party = e->granter == (uint32_t)to || e->acquirer == (uint32_t)to;
        if (to >= 0 && ((party && cdsm__w.phys[to] == to) || G.from[i] == to)) continue;
        if (b) cdsm__buf_put(b, e, G.esz);
        count++;
    }
    return count;
}

void cdsm__gcopy_put(int to, cdsm__buf_t *b)
{
    if (!G.on) return;
    uint32_t count = put_from(b, to, G.upto[to]);
    G.upto[to] = G.n;
    cdsm__buf_put_u32(b, count);
    cdsm__buf_put_u32(b, GCOPY_MAGIC);
    CDSM_STAT_ADD(piggyback_bytes, 8 + count * G.esz);
}

/* count entries at p (unaligned) from rank `from`. */
static void take_entries(const uint8_t *p, uint32_t count, int from)
{
    size_t vcb = cdsm__u32s((size_t)cdsm__w.n);
    uint32_t *vc = malloc(vcb);
    cdsm_check(vc != NULL);
    for (uint32_t k = 0; k < count; k++, p += G.esz) {
        gc_ent_t h;
        memcpy(&h, p, sizeof h);
        memcpy(vc, p + sizeof h, vcb);
        if (h.granter >= (uint32_t)cdsm__w.n || (h.acquirer >= (uint32_t)cdsm__w.n && h.acquirer != GC_CONV)) {
            cdsm__log(CDSM_LOG_ERROR, "a grant copy from rank %d names rank %u: dropped", from, h.granter);
            continue;
        }
        cdsm__gcopy_add(h.granter, h.acquirer, h.lock, h.acq_seq, h.grant_seq, vc, from);
    }
    free(vc);
}

int cdsm__gcopy_take(int from, cdsm__rd_t *r)
{
    if (!G.on) return CDSM_OK;
    uint32_t count, magic;
    if (r->len - r->pos < 8) goto bad;
    memcpy(&count, r->p + r->len - 8, 4);
    memcpy(&magic, r->p + r->len - 4, 4);
    if (magic != GCOPY_MAGIC || count > (r->len - r->pos - 8) / G.esz) goto bad;
    r->len -= 8 + (size_t)count * G.esz;
    take_entries(r->p + r->len, count, from);
    return CDSM_OK;
bad:
    cdsm__log(CDSM_LOG_ERROR, "a message from rank %d lacks its grant copies (do all ranks have CDSM_SPARES >= 2?)",
              from);
    return CDSM_ERR_PROTOCOL;
}

void cdsm__gcopy_put_all(cdsm__buf_t *b, int to)
{
    if (!G.on) return;
    cdsm__buf_put_u32(b, put_from(NULL, -1, 0));
    put_from(b, -1, 0);
    if (to >= 0) G.upto[to] = G.n; /* (it has them all now) */
}

int cdsm__gcopy_take_all(cdsm__rd_t *r, int from)
{
    if (!G.on) return CDSM_OK;
    uint32_t count = cdsm__rd_u32(r);
    const uint8_t *p = r->bad || count > (r->len - r->pos) / G.esz ? NULL : cdsm__rd_take(r, (size_t)count * G.esz);
    if (!p && count) return CDSM_ERR_PROTOCOL;
    take_entries(p, count, from);
    return r->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

void cdsm__gcopy_conversions(int home, void (*fn)(uint32_t pg, uint32_t seq, void *arg), void *arg)
{
    for (size_t i = 0; i < G.n; i++) {
        const gc_ent_t *e = ent(i);
        if (e->acquirer == GC_CONV && e->granter == (uint32_t)home) fn(e->lock, e->grant_seq, arg);
    }
}

void cdsm__gcopy_foreach(void (*fn)(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq,
                                    uint32_t grant_seq, const uint32_t *vc, void *arg),
                         void *arg)
{
    for (size_t i = 0; i < G.n; i++) {
        const gc_ent_t *e = ent(i);
        if (e->acquirer == GC_CONV) continue;
        fn(e->granter, e->acquirer, e->lock, e->acq_seq, e->grant_seq, e->vc, arg);
    }
}

void cdsm__gcopy_trim(const cdsm__ckpt_pos_t *pos)
{
    if (!G.on) return;
    size_t k = 0;
    for (size_t i = 0; i < G.n; i++) {
        const gc_ent_t *e = ent(i);
        /* Needed while a replay of the acquirer or of the granter can start before it. */
        int keep = e->grant_seq > pos[e->granter].sync_seq ||
                   (e->acquirer != GC_CONV && e->acq_seq > pos[e->acquirer].sync_seq);
        if (keep && k != i) {
            memmove(ent(k), e, G.esz);
            G.from[k] = G.from[i];
        }
        k += (size_t)keep;
        for (int q = 0; q < cdsm__w.n; q++) /* (what went to q stays gone: renumbered) */
            if (G.upto[q] == i + 1) G.upto[q] = k;
    }
    G.n = k;
    rehash(G.hcap ? G.hcap : 1024);
}
