/* The determinant log: fixed-size entries (header + vector clock) in one growing array,
 * oldest first, compacted when checkpoints make old entries useless. See recovery.h for
 * what is logged and why that is enough. */
#include <stdlib.h>
#include <string.h>

#include "recovery.h"

/* Manager's audit state. */
typedef struct grant_key {
    uint32_t acquirer, granter, acq_seq, lock;
    uint64_t hash;
} grant_key_t;
static struct detlog {
    uint8_t *log_v;        /* entries, esz bytes each */
    size_t log_n, log_cap; /* entries held, capacity */
    size_t esz;            /* bytes per entry */
    cdsm__ckpt_pos_t *pos; /* every rank's last committed checkpoint, as last released */
    /* the manager's audit */
    grant_key_t *a_sent, *a_recv;
    size_t a_nsent, a_nrecv, a_capsent, a_caprecv;
    uint32_t *a_first, *a_last; /* per rank: barrier epochs held */
    uint32_t a_missing[4];
    int a_bad;
} D;

int cdsm__det_enabled(void)
{
    return cdsm__cfg.logging != 0;
}

int cdsm__det_init(void)
{
    int n = cdsm__w.n;
    D.esz = sizeof(cdsm__det_t) + cdsm__u32s((size_t)n);
    D.pos = calloc((size_t)n, sizeof *D.pos);
    D.a_first = calloc((size_t)n, sizeof(uint32_t));
    D.a_last = calloc((size_t)n, sizeof(uint32_t));
    if (!D.pos || !D.a_first || !D.a_last) return cdsm__error(CDSM_ERR_NOMEM, "determinant log");
    return cdsm__gcopy_init();
}

void cdsm__det_fini(void)
{
    cdsm__gcopy_fini();
    free(D.log_v);
    free(D.pos);
    free(D.a_sent);
    free(D.a_recv);
    free(D.a_first);
    free(D.a_last);
    D.log_v = NULL;
    D.pos = NULL;
    D.a_sent = D.a_recv = NULL;
    D.a_first = D.a_last = NULL;
    D.log_n = D.log_cap = D.a_nsent = D.a_nrecv = D.a_capsent = D.a_caprecv = 0;
}

static void account(void)
{
    cdsm__st.det_bytes = D.log_n * D.esz;
    if (cdsm__st.det_bytes > cdsm__st.det_bytes_peak) cdsm__st.det_bytes_peak = cdsm__st.det_bytes;
}

void cdsm__det_log(uint32_t kind, uint32_t peer, uint32_t id, uint32_t acq_seq, uint32_t grant_seq,
                   const uint32_t *vc)
{
    if (!cdsm__det_enabled()) return;
    if (D.log_n == D.log_cap) {
        size_t cap = D.log_cap ? D.log_cap * 2 : 256;
        uint8_t *v = realloc(D.log_v, cap * D.esz);
        cdsm_check(v != NULL); /* out of memory while logging: recovery would be impossible */
        D.log_v = v;
        D.log_cap = cap;
    }
    cdsm__det_t *d = (cdsm__det_t *)(D.log_v + D.log_n * D.esz);
    d->kind = kind;
    d->peer = peer;
    d->id = id;
    d->acq_seq = acq_seq;
    d->grant_seq = grant_seq;
    memcpy(d->vc, vc, cdsm__u32s((size_t)cdsm__w.n));
    D.log_n++;
    uint32_t me = (uint32_t)cdsm__w.rank;
    if (kind == CDSM_DET_SENT) cdsm__gcopy_add(me, peer, id, acq_seq, grant_seq, vc, -1);
    if (kind == CDSM_DET_RECV) cdsm__gcopy_add(peer, me, id, acq_seq, grant_seq, vc, -1);
    CDSM_STAT_ADD(det_logged, 1);
    account();
}

static uint32_t min_epoch(void)
{
    uint32_t m = UINT32_MAX;
    for (int q = 0; q < cdsm__w.n; q++)
        if (D.pos[q].epoch < m) m = D.pos[q].epoch;
    return m;
}

/* Whether a replay from the checkpoints in pos can still need d. A replay of rank a starts
 * at its checkpoint's synchronisation number; the barrier after which it starts is the
 * checkpoint's epoch (the entry of that epoch itself is no longer needed); lo: the
 * oldest checkpoint epoch of all ranks (min_epoch()). */
static int needed(const cdsm__det_t *d, uint32_t lo)
{
    switch (d->kind) {
    case CDSM_DET_SENT: return d->acq_seq > D.pos[d->peer].sync_seq;
    case CDSM_DET_RECV: return d->acq_seq > D.pos[cdsm__w.rank].sync_seq;
    default: return d->id > lo;
    }
}

void cdsm__det_trim(const void *np)
{
    size_t psz = (size_t)cdsm__w.n * sizeof *D.pos;
    /* Only a newer checkpoint somewhere frees entries: scanning the whole log at every
     * barrier made a long run without checkpoints quadratic in its barriers. */
    if (!memcmp(D.pos, np, psz)) return;
    memcpy(D.pos, np, psz);
    /* With spares, only checkpoints a replacement can start from bound the log (those of a
     * program in resume mode; an unmodified one is replayed from its start). */
    if (cdsm__cfg.spares && !cdsm__mode.resume_mode) return;
    cdsm__gcopy_trim(D.pos);
    uint32_t lo = min_epoch();
    size_t k = 0;
    for (size_t i = 0; i < D.log_n; i++) {
        const cdsm__det_t *d = (const cdsm__det_t *)(D.log_v + i * D.esz);
        if (!needed(d, lo)) continue;
        if (k != i) memmove(D.log_v + k * D.esz, d, D.esz);
        k++;
    }
    D.log_n = k;
    account();
}

void cdsm__det_foreach(void (*fn)(const cdsm__det_t *d, void *arg), void *arg)
{
    for (size_t i = 0; i < D.log_n; i++) fn((const cdsm__det_t *)(D.log_v + i * D.esz), arg);
}

/* ---- the audit ---------------------------------------------------------------------- */

static uint64_t vc_hash(const uint32_t *vc)
{
    uint64_t h = 1469598103934665603ull;
    for (int q = 0; q < cdsm__w.n; q++) h = (h ^ vc[q]) * 1099511628211ull;
    return h;
}

/* Digest: u32 count, then per grant entry {kind, peer, id, acq_seq, hash64}; then the first
 * and last barrier epoch held (0, 0 when none). */
void cdsm__det_audit_put(cdsm__buf_t *b)
{
    uint32_t count = 0, first = 0, last = 0;
    size_t at = b->len;
    cdsm__buf_put_u32(b, 0);
    for (size_t i = 0; i < D.log_n; i++) {
        const cdsm__det_t *d = (const cdsm__det_t *)(D.log_v + i * D.esz);
        if (d->kind == CDSM_DET_BARRIER) {
            if (!first) first = d->id;
            last = d->id;
            continue;
        }
        uint64_t h = vc_hash(d->vc);
        cdsm__buf_put_u32(b, d->kind);
        cdsm__buf_put_u32(b, d->peer);
        cdsm__buf_put_u32(b, d->id);
        cdsm__buf_put_u32(b, d->acq_seq);
        cdsm__buf_put(b, &h, 8);
        count++;
    }
    memcpy(b->p + at, &count, sizeof count);
    cdsm__buf_put_u32(b, first);
    cdsm__buf_put_u32(b, last);
}

static void push(grant_key_t **v, size_t *n, size_t *cap, grant_key_t k)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        *v = realloc(*v, *cap * sizeof **v);
        cdsm_check(*v != NULL);
    }
    (*v)[(*n)++] = k;
}

int cdsm__det_audit_collect(int src, cdsm__rd_t *r)
{
    uint32_t count = cdsm__rd_u32(r);
    for (uint32_t i = 0; i < count && !r->bad; i++) {
        uint32_t kind = cdsm__rd_u32(r), peer = cdsm__rd_u32(r), id = cdsm__rd_u32(r), seq = cdsm__rd_u32(r);
        uint64_t h = cdsm__rd_u64(r);
        if (peer >= (uint32_t)cdsm__w.n) return CDSM_ERR_PROTOCOL;
        if (kind == CDSM_DET_SENT)
            push(&D.a_sent, &D.a_nsent, &D.a_capsent, (grant_key_t){peer, (uint32_t)src, seq, id, h});
        else if (kind == CDSM_DET_RECV)
            push(&D.a_recv, &D.a_nrecv, &D.a_caprecv, (grant_key_t){(uint32_t)src, peer, seq, id, h});
        else
            return CDSM_ERR_PROTOCOL;
    }
    D.a_first[src] = cdsm__rd_u32(r);
    D.a_last[src] = cdsm__rd_u32(r);
    return r->bad ? CDSM_ERR_PROTOCOL : CDSM_OK;
}

static int key_cmp(const void *a, const void *b)
{
    const grant_key_t *x = a, *y = b;
    if (x->acquirer != y->acquirer) return x->acquirer < y->acquirer ? -1 : 1;
    if (x->acq_seq != y->acq_seq) return x->acq_seq < y->acq_seq ? -1 : 1;
    if (x->granter != y->granter) return x->granter < y->granter ? -1 : 1;
    if (x->lock != y->lock) return x->lock < y->lock ? -1 : 1;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

static void missing(const grant_key_t *k)
{
    if (D.a_bad) return;
    D.a_bad = 1;
    D.a_missing[0] = k->acquirer;
    D.a_missing[1] = k->granter;
    D.a_missing[2] = k->acq_seq;
    D.a_missing[3] = k->lock;
}

/* Grants a replay can need: every one the acquirer logged after its checkpoint must be
 * held by its granter, and every one a granter holds by its acquirer. */
static void check_grants(void)
{
    qsort(D.a_sent, D.a_nsent, sizeof *D.a_sent, key_cmp);
    qsort(D.a_recv, D.a_nrecv, sizeof *D.a_recv, key_cmp);
    size_t i = 0, j = 0;
    while (i < D.a_nsent || j < D.a_nrecv) {
        int c = i == D.a_nsent ? 1 : j == D.a_nrecv ? -1 : key_cmp(&D.a_sent[i], &D.a_recv[j]);
        if (c == 0) {
            i++, j++;
            continue;
        }
        const grant_key_t *k = c < 0 ? &D.a_sent[i++] : &D.a_recv[j++];
        if (k->acq_seq > D.pos[k->acquirer].sync_seq) missing(k);
    }
}

int cdsm__det_audit_finish(uint32_t out[4])
{
    int n = cdsm__w.n;
    check_grants();
    /* Barriers: every rank holds each epoch after the oldest checkpoint, up to the last. */
    uint32_t need_first = min_epoch() + 1, last = cdsm__bar.epoch;
    for (int q = 0; q < n && !D.a_bad; q++) {
        if (last < need_first) break;
        uint32_t want_last = D.a_last[0];
        if (!D.a_first[q] || D.a_first[q] > need_first || D.a_last[q] != want_last) {
            D.a_bad = 1;
            D.a_missing[0] = (uint32_t)q;
            D.a_missing[1] = UINT32_MAX;
            D.a_missing[2] = D.a_first[q];
            D.a_missing[3] = need_first;
        }
    }
    int bad = D.a_bad;
    memcpy(out, D.a_missing, sizeof D.a_missing);
    D.a_nsent = D.a_nrecv = 0;
    D.a_bad = 0;
    memset(D.a_first, 0, cdsm__u32s((size_t)n));
    memset(D.a_last, 0, cdsm__u32s((size_t)n));
    return bad;
}

int cdsm__det_drop_newest(uint32_t kind)
{
    for (size_t i = D.log_n; i-- > 0;) {
        const cdsm__det_t *d = (const cdsm__det_t *)(D.log_v + i * D.esz);
        if (d->kind != kind) continue;
        memmove(D.log_v + i * D.esz, D.log_v + (i + 1) * D.esz, (D.log_n - i - 1) * D.esz);
        D.log_n--;
        account();
        return 1;
    }
    return 0;
}
