/* The determinant log: fixed-size entries (header + vector clock) in one growing array,
 * oldest first, compacted when checkpoints make old entries useless. See recovery.h for
 * what is logged and why that is enough. */
#include <stdlib.h>
#include <string.h>

#include "recovery.h"

static uint8_t *log_v;        /* entries, esz bytes each */
static size_t log_n, log_cap; /* entries held, capacity */
static size_t esz;            /* bytes per entry */
static cdsm__ckpt_pos_t *pos; /* every rank's last committed checkpoint, as last released */

/* Manager's audit state. */
typedef struct grant_key {
    uint32_t acquirer, granter, acq_seq, lock;
    uint64_t hash;
} grant_key_t;
static grant_key_t *a_sent, *a_recv;
static size_t a_nsent, a_nrecv, a_capsent, a_caprecv;
static uint32_t *a_first, *a_last; /* per rank: barrier epochs held */
static uint32_t a_missing[4];
static int a_bad;

int cdsm__det_enabled(void)
{
    return cdsm__cfg.logging != 0;
}

int cdsm__det_init(void)
{
    int n = cdsm__w.n;
    esz = sizeof(cdsm__det_t) + cdsm__u32s((size_t)n);
    pos = calloc((size_t)n, sizeof *pos);
    a_first = calloc((size_t)n, sizeof(uint32_t));
    a_last = calloc((size_t)n, sizeof(uint32_t));
    if (!pos || !a_first || !a_last) return cdsm__error(CDSM_ERR_NOMEM, "determinant log");
    return CDSM_OK;
}

void cdsm__det_fini(void)
{
    free(log_v);
    free(pos);
    free(a_sent);
    free(a_recv);
    free(a_first);
    free(a_last);
    log_v = NULL;
    pos = NULL;
    a_sent = a_recv = NULL;
    a_first = a_last = NULL;
    log_n = log_cap = a_nsent = a_nrecv = a_capsent = a_caprecv = 0;
}

static void account(void)
{
    cdsm__st.det_bytes = log_n * esz;
    if (cdsm__st.det_bytes > cdsm__st.det_bytes_peak) cdsm__st.det_bytes_peak = cdsm__st.det_bytes;
}

void cdsm__det_log(uint32_t kind, uint32_t peer, uint32_t id, uint32_t acq_seq, uint32_t grant_seq,
                   const uint32_t *vc)
{
    if (!cdsm__det_enabled()) return;
    if (log_n == log_cap) {
        size_t cap = log_cap ? log_cap * 2 : 256;
        uint8_t *v = realloc(log_v, cap * esz);
        cdsm_check(v != NULL); /* out of memory while logging: recovery would be impossible */
        log_v = v;
        log_cap = cap;
    }
    cdsm__det_t *d = (cdsm__det_t *)(log_v + log_n * esz);
    d->kind = kind;
    d->peer = peer;
    d->id = id;
    d->acq_seq = acq_seq;
    d->grant_seq = grant_seq;
    memcpy(d->vc, vc, cdsm__u32s((size_t)cdsm__w.n));
    log_n++;
    CDSM_STAT_ADD(det_logged, 1);
    account();
}

static uint32_t min_epoch(void)
{
    uint32_t m = UINT32_MAX;
    for (int q = 0; q < cdsm__w.n; q++)
        if (pos[q].epoch < m) m = pos[q].epoch;
    return m;
}

/* Whether a replay from the checkpoints in pos can still need d. A replay of rank a starts
 * at its checkpoint's synchronisation number; the barrier after which it starts is the
 * checkpoint's epoch (the entry of that epoch itself is no longer needed). */
static int needed(const cdsm__det_t *d)
{
    switch (d->kind) {
    case CDSM_DET_SENT: return d->acq_seq > pos[d->peer].sync_seq;
    case CDSM_DET_RECV: return d->acq_seq > pos[cdsm__w.rank].sync_seq;
    default: return d->id > min_epoch();
    }
}

void cdsm__det_trim(const void *np)
{
    memcpy(pos, np, (size_t)cdsm__w.n * sizeof *pos);
    /* With spares, only checkpoints a replacement can start from bound the log (those of a
     * program in resume mode; an unmodified one is replayed from its start). */
    if (cdsm__cfg.spares && !cdsm__mode.resume_mode) return;
    size_t k = 0;
    for (size_t i = 0; i < log_n; i++) {
        const cdsm__det_t *d = (const cdsm__det_t *)(log_v + i * esz);
        if (!needed(d)) continue;
        if (k != i) memmove(log_v + k * esz, d, esz);
        k++;
    }
    log_n = k;
    account();
}

void cdsm__det_foreach(void (*fn)(const cdsm__det_t *d, void *arg), void *arg)
{
    for (size_t i = 0; i < log_n; i++) fn((const cdsm__det_t *)(log_v + i * esz), arg);
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
    for (size_t i = 0; i < log_n; i++) {
        const cdsm__det_t *d = (const cdsm__det_t *)(log_v + i * esz);
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
            push(&a_sent, &a_nsent, &a_capsent, (grant_key_t){peer, (uint32_t)src, seq, id, h});
        else if (kind == CDSM_DET_RECV)
            push(&a_recv, &a_nrecv, &a_caprecv, (grant_key_t){(uint32_t)src, peer, seq, id, h});
        else
            return CDSM_ERR_PROTOCOL;
    }
    a_first[src] = cdsm__rd_u32(r);
    a_last[src] = cdsm__rd_u32(r);
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
    if (a_bad) return;
    a_bad = 1;
    a_missing[0] = k->acquirer;
    a_missing[1] = k->granter;
    a_missing[2] = k->acq_seq;
    a_missing[3] = k->lock;
}

/* Grants a replay can need: every one the acquirer logged after its checkpoint must be
 * held by its granter, and every one a granter holds by its acquirer. */
static void check_grants(void)
{
    qsort(a_sent, a_nsent, sizeof *a_sent, key_cmp);
    qsort(a_recv, a_nrecv, sizeof *a_recv, key_cmp);
    size_t i = 0, j = 0;
    while (i < a_nsent || j < a_nrecv) {
        int c = i == a_nsent ? 1 : j == a_nrecv ? -1 : key_cmp(&a_sent[i], &a_recv[j]);
        if (c == 0) {
            i++, j++;
            continue;
        }
        const grant_key_t *k = c < 0 ? &a_sent[i++] : &a_recv[j++];
        if (k->acq_seq > pos[k->acquirer].sync_seq) missing(k);
    }
}

int cdsm__det_audit_finish(uint32_t out[4])
{
    int n = cdsm__w.n;
    check_grants();
    /* Barriers: every rank holds each epoch after the oldest checkpoint, up to the last. */
    uint32_t need_first = min_epoch() + 1, last = cdsm__bar.epoch;
    for (int q = 0; q < n && !a_bad; q++) {
        if (last < need_first) break;
        uint32_t want_last = a_last[0];
        if (!a_first[q] || a_first[q] > need_first || a_last[q] != want_last) {
            a_bad = 1;
            a_missing[0] = (uint32_t)q;
            a_missing[1] = UINT32_MAX;
            a_missing[2] = a_first[q];
            a_missing[3] = need_first;
        }
    }
    int bad = a_bad;
    memcpy(out, a_missing, sizeof a_missing);
    a_nsent = a_nrecv = 0;
    a_bad = 0;
    memset(a_first, 0, cdsm__u32s((size_t)n));
    memset(a_last, 0, cdsm__u32s((size_t)n));
    return bad;
}

int cdsm__det_drop_newest(uint32_t kind)
{
    for (size_t i = log_n; i-- > 0;) {
        const cdsm__det_t *d = (const cdsm__det_t *)(log_v + i * esz);
        if (d->kind != kind) continue;
        memmove(log_v + i * esz, log_v + (i + 1) * esz, (log_n - i - 1) * esz);
        log_n--;
        account();
        return 1;
    }
    return 0;
}
