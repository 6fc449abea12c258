/* Transport front (floor 1): the routing table from logical ranks to processes, the
 * events the layers above registered, the requests kept for a resend when their
 * destination moves to a spare, and the provider behind its ops table. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bell.h"

cdsm__world_t cdsm__w = {.rank = -1, .n = -1};
cdsm__tp_events_t cdsm__tp_ev;
/* The provider (chosen by cdsm__tp_init). Same-host shared memory and one-sided providers
 * plug in here. */
static const cdsm__tp_ops_t *ops = &cdsm__bell_ops;

void cdsm__tp_set_events(const cdsm__tp_events_t *ev)
{
    cdsm__tp_ev = *ev;
}

int cdsm__world_init(int wrank, int wn, int n)
{
    cdsm__world_t *w = &cdsm__w;
    w->wrank = wrank;
    w->wn = wn;
    w->n = n;
    w->phys = malloc((size_t)n * sizeof *w->phys);
    w->logical = malloc((size_t)wn * sizeof *w->logical);
    w->wdead = calloc((size_t)wn, 1);
    w->lk_sent = calloc((size_t)wn, sizeof *w->lk_sent);
    w->lk_recv = calloc((size_t)wn, sizeof *w->lk_recv);
    if (!w->phys || !w->logical || !w->wdead || !w->lk_sent || !w->lk_recv)
        return cdsm__error(CDSM_ERR_NOMEM, "rank map");
    for (int q = 0; q < n; q++) w->phys[q] = q;
    for (int p = 0; p < wn; p++) w->logical[p] = p < n ? p : -1;
    w->rank = wrank < n ? wrank : -1;
    return CDSM_OK;
}

void cdsm__world_fini(void)
{
    cdsm__world_t *w = &cdsm__w;
    free(w->phys);
    free(w->logical);
    free(w->wdead);
    free(w->lk_sent);
    free(w->lk_recv);
    w->phys = w->logical = NULL;
    w->wdead = NULL;
    w->lk_sent = w->lk_recv = NULL;
    w->rank = w->n = -1;
    w->finalizing = w->recovered = 0;
    w->remap_gen = 0;
}

typedef struct resend {
    struct resend *next;
    int dst, wdst; /* logical destination, and the process it was sent to */
    uint16_t type;
    uint64_t tag;
    size_t len;
    uint8_t *msg;  /* header and payload */
} resend_t;
static __thread resend_t *resends;
static __thread int woke;

void cdsm__tp_note_wake(void)
{
    woke = 1;
}

int cdsm__tp_woke(void)
{
    int w = woke;
    woke = 0;
    return w;
}

static int send_to(int w, int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2)
{
    size_t total = sizeof(cdsm__msg_hdr_t) + l1 + l2;
    if (total > INT32_MAX)
        return cdsm__error(CDSM_ERR_PROTOCOL, "message of %zu bytes to rank %d is too large", total, dst);
    uint8_t *buf = malloc(total);
    if (!buf) return cdsm__error(CDSM_ERR_NOMEM, "message buffer of %zu bytes", total);
    cdsm__msg_hdr_t h = {(uint16_t)type, (uint16_t)cdsm__w.rank, (uint32_t)(l1 + l2), tag};
    memcpy(buf, &h, sizeof h);
    if (l1) memcpy(buf + sizeof h, p1, l1);
    if (l2) memcpy(buf + sizeof h + l1, p2, l2);
    /* Kept only where a spare can take the destination's place (else never sent again). */
    if (cdsm__cfg.spares && dst >= 0 && w != cdsm__w.wrank && cdsm__tp_ev.reply_of[type]) {
        resend_t *e = malloc(sizeof *e);
        uint8_t *copy = malloc(total);
        cdsm_check(e && copy);
        memcpy(copy, buf, total);
        *e = (resend_t){resends, dst, w, (uint16_t)type, tag, total, copy};
        resends = e;
    }
    return ops->post(w, type, buf, total);
}

int cdsm__tp_send(int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2)
{
    int w = dst == cdsm__w.rank ? cdsm__w.wrank : cdsm__w.phys[dst];
    return send_to(w, dst, type, tag, p1, l1, p2, l2);
}

int cdsm__tp_send_world(int wdst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2)
{
    return send_to(wdst, -1, type, tag, p1, l1, p2, l2);
}

/* The reply to one of our requests arrived: forget the request. */
void cdsm__tp_resend_done(int reply_type, uint64_t tag)
{
    for (resend_t **pp = &resends; *pp; pp = &(*pp)->next)
        if (cdsm__tp_ev.reply_of[(*pp)->type] == reply_type && (*pp)->tag == tag) {
            resend_t *e = *pp;
            *pp = e->next;
            free(e->msg);
            free(e);
            return;
        }
}

void cdsm__tp_resend_clear(void)
{
    while (resends) {
        resend_t *e = resends;
        resends = e->next;
        free(e->msg);
        free(e);
    }
}

/* Send again every waiting request whose destination now lives in another process. */
void cdsm__tp_resend_moved(void)
{
    for (resend_t *e = resends; e; e = e->next) {
        int w = cdsm__w.phys[e->dst];
        if (w == e->wdst) continue;
        uint8_t *copy = malloc(e->len);
        cdsm_check(copy != NULL);
        memcpy(copy, e->msg, e->len);
        e->wdst = w;
        cdsm__log(CDSM_LOG_INFO, "request (type %u, tag %llu) to rank %d sent again to its replacement",
                  e->type, (unsigned long long)e->tag, e->dst);
        ops->post(w, e->type, copy, e->len);
    }
}

/* Whether every process of the job runs on this host (collective, start-up only), by the
 * host names the doorbell mesh goes by: one reduction of the smallest and the largest hash
 * of the name (MPI_Comm_split_type and a reduction were two collectives, each as dear as
 * a barrier of the whole job at start-up). Two names with one hash would only choose the
 * socket provider across hosts, which works there too. */
static int one_host(void)
{
    char host[64] = {0};
    gethostname(host, sizeof host - 1); /* (as bell_mesh.c: the first 63 bytes) */
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (const char *c = host; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
    uint64_t v[2] = {h, ~h}, r[2];
    if (MPI_Allreduce(v, r, 2, MPI_UINT64_T, MPI_MIN, cdsm__w.comm) != MPI_SUCCESS) return 0;
    return r[0] == ~r[1];
}

int cdsm__tp_init(void)
{
    enum { TP_AUTO, TP_MPI, TP_SOCKET }; /* CDSM_TRANSPORT's choices */
    /* auto: the socket provider where deaths are survived on one host, where MPI's
     * shared-memory queues stop delivering after a sender is killed mid-send; across
     * hosts MPI's path is kept (DESIGN section 7). */
    int sock = cdsm__cfg.transport == TP_SOCKET ||
               (cdsm__cfg.transport == TP_AUTO && cdsm__cfg.spares && one_host());
    ops = sock ? &cdsm__sock_ops : &cdsm__bell_ops;
    return ops->init();
}

int cdsm__tp_goodbye(uint64_t ms, int *missing, int *first)
{
    *missing = 0;
    *first = -1;
    return ops->goodbye ? ops->goodbye(ms, missing, first) : 0;
}

void cdsm__tp_fini(void)
{
    ops->fini();
}

const char *cdsm__tp_name(void)
{
    return ops->name;
}

int cdsm__tp_flush(void)
{
    int rc = ops->flush();
    ops->idle();
    return rc;
}

int cdsm__tp_flush_sends(void)
{
    return ops->flush();
}

void cdsm__tp_idle(void)
{
    ops->idle();
}

void cdsm__tp_receiving(int on)
{
    if (ops->receiving) ops->receiving(on);
}

void cdsm__tp_late(int on)
{
    if (ops->late) ops->late(on);
}

int cdsm__tp_ring_late(int answered)
{
    return ops->ring_late ? ops->ring_late(answered) : CDSM_OK;
}

int cdsm__tp_late_pending(void)
{
    return ops->late_pending ? ops->late_pending() : 0;
}

int cdsm__tp_send_late(int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2)
{
    cdsm__tp_late(1);
    int rc = cdsm__tp_send(dst, type, tag, p1, l1, p2, l2);
    cdsm__tp_late(0);
    if (rc) cdsm__tp_ring_late(0);
    return rc;
}

int cdsm__tp_poll(void)
{
    return ops->poll ? ops->poll() : 0;
}

int cdsm__tp_progress(void)
{
    return ops->progress();
}

int cdsm__tp_sending(void)
{
    return ops->sending();
}

void cdsm__tp_peer_info(int w, uint64_t *heard_ns, int *pid, int *open)
{
    ops->peer_info(w, heard_ns, pid, open);
}

void cdsm__tp_node_index(int *idx, int *count)
{
    *idx = 0;
    *count = 1;
    for (int w = 0; w < cdsm__w.wn; w++) {
        uint64_t heard;
        int pid = 0, open;
        if (w != cdsm__w.wrank) ops->peer_info(w, &heard, &pid, &open);
        *count += pid != 0;
        *idx += pid != 0 && w < cdsm__w.wrank;
    }
}

void cdsm__tp_cut(int w)
{
    ops->cut(w);
}

pthread_t cdsm__tp_service_thread(void)
{
    return ops->service_thread();
}
