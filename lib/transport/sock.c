/* The socket transport provider: protocol messages travel as frames (the message header,
 * then its payload) on the per-peer stream sockets of the doorbell mesh (a Unix socket
 * between processes on one host, TCP across hosts), with no MPI on the path.
 *
 * Why: MPI's shared-memory paths are not fault-tolerant. MPICH's POSIX queue and UCX's mm
 * FIFO are one queue per receiver, written by every sender; a sender killed between taking
 * a slot and filling it leaves a hole the receiver waits on for good, and every later
 * message from anyone sits behind it (measured: 1 in 20-40 kills of a process flooding
 * a receiver; and a large message's CMA read from a sender that died aborts the
 * receiver). Here a process killed mid-send harms only its own stream: its partial frame
 * ends with its end-of-file. Chosen where deaths are survived (CDSM_SPARES: the default
 * "auto"); without spares a death ends the run and the MPI-doorbell provider is used.
 *
 * A send never blocks on the receiver: what the socket does not take waits in the peer's
 * queue, which the sender tries again on its next send and flush, and the service thread
 * every millisecond while anything waits. Receiving is under rx_mu, as for the other
 * provider: the service thread on epoll's word, or an application thread waiting for a
 * reply. The mesh, heartbeats (a frame of type 0) and the service thread are shared with
 * the MPI-doorbell provider (bell.c, bell_mesh.c, bell_service.c). */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bell.h"

static cdsm__bell_t *const bl = &cdsm__bell;

typedef struct frame {
    struct frame *next;
    uint8_t *buf;
    size_t len, off; /* bytes, and how many the socket took */
} frame_t;

typedef struct txq {
    pthread_mutex_t mu;
    frame_t *head, *tail;
} txq_t;

/* The frame being read from one peer (under rx_mu). */
typedef struct rxs {
    cdsm__msg_hdr_t hdr;
    size_t hgot;  /* header bytes read */
    uint8_t *msg; /* once the header is whole: header and payload */
    size_t mlen, mgot;
} rxs_t;

enum { SOCK_READS_PER_WAKE = 16, SOCK_FINI_WAIT_MS = 2000 };

static struct {
    txq_t *tx;         /* per peer (ours unused: loopback.c) */
    rxs_t *rx;         /* per peer */
    int queued;        /* frames waiting in peers' queues (atomic) */
    uint8_t stage[1 << 16]; /* what one recv() read (under rx_mu) */
} sk;

/* ---- sends ---------------------------------------------------------------------------- */

/* Write what the socket takes now. Returns the bytes written, or -1 (errno) if w is gone. */
static ssize_t push_bytes(int w, const uint8_t *p, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t k = send(bl->bell[w], p + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            done += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    return (ssize_t)done;
}

static void drop_queue(txq_t *q)
{
    while (q->head) {
        frame_t *f = q->head;
        q->head = f->next;
        free(f->buf);
        free(f);
        __atomic_fetch_sub(&sk.queued, 1, __ATOMIC_RELAXED);
    }
    q->tail = NULL;
}

static void enqueue(txq_t *q, uint8_t *buf, size_t len, size_t off)
{
    frame_t *f = malloc(sizeof *f);
    cdsm_check(f != NULL);
    *f = (frame_t){NULL, buf, len, off};
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
    __atomic_fetch_add(&sk.queued, 1, __ATOMIC_RELAXED);
}

/* Push w's queue (q->mu held). Returns 1 while frames remain, -1 (errno) if w is gone
 * (the queue is then dropped). */
static int push_queue(int w, txq_t *q)
{
    while (q->head) {
        frame_t *f = q->head;
        ssize_t k = push_bytes(w, f->buf + f->off, f->len - f->off);
        if (k < 0) {
            int e = errno;
            drop_queue(q);
            errno = e;
            return -1;
        }
        f->off += (size_t)k;
        if (f->off < f->len) return 1;
        q->head = f->next;
        if (!q->head) q->tail = NULL;
        free(f->buf);
        free(f);
        __atomic_fetch_sub(&sk.queued, 1, __ATOMIC_RELAXED);
    }
    return 0;
}

/* Process w is gone (its socket refused a frame). */
static int lost(int w, int err)
{
    /* The service thread handles the loss when it reads the end of the stream (this
     * thread may hold mu); if a spare takes the rank's place, requests are sent again
     * to it, so this is no error. */
    if (cdsm__tp_ev.recoverable(w)) return CDSM_OK;
    return cdsm__error(CDSM_ERR_PEER_LOST, "rank %d was lost (its socket: %s)", cdsm__w.logical[w], strerror(err));
}

/* Send a built message (header included) to process w; takes buf. */
static int sock_post(int w, int type, uint8_t *buf, size_t total)
{
    cdsm__bell_count_sent(w, type, total);
    if (w == cdsm__w.wrank) return cdsm__loop_post(buf, total);
    cdsm__tp_note_wake(); /* (a frame wakes the peer's service thread) */
    if (bl->bell[w] < 0) {
        free(buf);
        return lost(w, ENOTCONN);
    }
    txq_t *q = &sk.tx[w];
    pthread_mutex_lock(&q->mu);
    int older = q->head ? push_queue(w, q) : 0; /* frames keep their order */
    ssize_t k = older ? 0 : push_bytes(w, buf, total);
    int e = errno, gone = older < 0 || k < 0, wait = !gone && (size_t)k < total;
    if (wait) {
        enqueue(q, buf, total, (size_t)k);
        buf = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    free(buf);
    if (gone) return lost(w, e);
    if (wait) cdsm__bell_kick(); /* the service thread pushes the rest */
    return CDSM_OK;
}

/* Push every peer's queue. Returns 1 while frames remain. */
int cdsm__sock_push_all(void)
{
    if (!__atomic_load_n(&sk.queued, __ATOMIC_RELAXED)) return 0;
    int left = 0;
    for (int p = 0; p < cdsm__w.wn; p++) {
        if (p == cdsm__w.wrank) continue;
        txq_t *q = &sk.tx[p];
        pthread_mutex_lock(&q->mu);
        if (q->head && push_queue(p, q) > 0) left = 1;
        pthread_mutex_unlock(&q->mu);
    }
    return left;
}

static int sock_flush(void)
{
    cdsm__sock_push_all();
    return CDSM_OK;
}

static int sock_sending(void)
{
    return __atomic_load_n(&sk.queued, __ATOMIC_RELAXED) != 0;
}

/* An empty frame of type 0 (a header alone), pushed now or queued behind what waits;
 * idle: only when nothing waits (a heartbeat). */
static void empty_frame(int p, uint64_t tag, int idle)
{
    txq_t *q = &sk.tx[p];
    cdsm__msg_hdr_t h = {0, (uint16_t)cdsm__w.rank, 0, tag};
    pthread_mutex_lock(&q->mu);
    if (!q->head || !idle) {
        ssize_t k = q->head ? 0 : push_bytes(p, (const uint8_t *)&h, sizeof h);
        if (k >= 0 && (size_t)k < sizeof h) {
            uint8_t *copy = malloc(sizeof h);
            cdsm_check(copy != NULL);
            memcpy(copy, &h, sizeof h);
            enqueue(q, copy, sizeof h, (size_t)k);
        }
    }
    pthread_mutex_unlock(&q->mu);
}

/* A heartbeat only when nothing waits (a waiting frame will reach the peer first, and
 * any byte counts as a sign of life). */
void cdsm__sock_beat(int p)
{
    empty_frame(p, 0, 1);
}

void cdsm__sock_bye(int p)
{
    empty_frame(p, CDSM_TP_BYE_TAG, 0);
}

/* ---- receiving ------------------------------------------------------------------------ */

/* Consume n bytes of p's stream, delivering each frame it completes. */
static void take(int p, const uint8_t *d, size_t n)
{
    rxs_t *s = &sk.rx[p];
    while (n) {
        if (!s->msg) {
            size_t k = sizeof s->hdr - s->hgot < n ? sizeof s->hdr - s->hgot : n;
            memcpy((uint8_t *)&s->hdr + s->hgot, d, k);
            s->hgot += k;
            d += k;
            n -= k;
            if (s->hgot < sizeof s->hdr) return;
            s->hgot = 0;
            if (s->hdr.type == 0 && s->hdr.len == 0) { /* a heartbeat, or the goodbye */
                if (s->hdr.tag == CDSM_TP_BYE_TAG) cdsm__bell_heard_bye(p);
                continue;
            }
            if (s->hdr.type == 0 || s->hdr.type >= CDSM_TP_MAX_TYPES || s->hdr.len > INT32_MAX - sizeof s->hdr) {
                cdsm__log(CDSM_LOG_ERROR, "malformed frame (type %u, %u bytes) from process %d", s->hdr.type,
                          s->hdr.len, p);
                cdsm_check(!"unreadable protocol message");
            }
            s->mlen = sizeof s->hdr + s->hdr.len;
            s->msg = malloc(s->mlen);
            cdsm_check(s->msg != NULL);
            memcpy(s->msg, &s->hdr, sizeof s->hdr);
            s->mgot = sizeof s->hdr;
        }
        size_t k = s->mlen - s->mgot < n ? s->mlen - s->mgot : n;
        memcpy(s->msg + s->mgot, d, k);
        s->mgot += k;
        d += k;
        n -= k;
        if (s->mgot < s->mlen) return;
        uint8_t *m = s->msg;
        s->msg = NULL;
        if (cdsm__bell_deliver(p, m, s->mlen)) cdsm_check(!"unreadable protocol message");
    }
}

static void forget_partial(int p)
{
    free(sk.rx[p].msg);
    sk.rx[p] = (rxs_t){0};
}

/* Read what p sent (bounded, so that one busy peer cannot starve the others: epoll is
 * level-triggered). Returns the bytes read, or -1 once p's stream ended. Under rx_mu. */
int cdsm__sock_read(int p)
{
    if (bl->bell[p] < 0 || bl->ended[p]) return -1;
    int got = 0;
    for (int i = 0; i < SOCK_READS_PER_WAKE && !bl->ended[p]; i++) { /* (a delivery may cut p) */
        ssize_t r = recv(bl->bell[p], sk.stage, sizeof sk.stage, MSG_DONTWAIT);
        if (r > 0) {
            bl->heard_ns[p] = cdsm__mono_ns();
            got += (int)r;
            take(p, sk.stage, (size_t)r);
            if ((size_t)r < sizeof sk.stage) break;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        forget_partial(p); /* a process killed mid-send: its last frame never ends */
        cdsm__bell_ended(p, r, errno);
        return -1;
    }
    return got;
}

/* An application thread: take what has arrived without sleeping. The stop pipe and the
 * kick are left to the service thread. */
static int sock_progress(void)
{
    if (bl->epfd < 0 || pthread_mutex_trylock(&bl->rx_mu)) return 0;
    uint64_t before = cdsm__st.msgs_recv;
    struct epoll_event ev[64];
    int nev = epoll_wait(bl->epfd, ev, 64, 0), k = 0;
    for (int i = 0; i < nev; i++)
        if (ev[i].data.u32 < (uint32_t)cdsm__w.wn) ev[k++] = ev[i];
    if (k > 0) cdsm__bell_rx_drain(ev, k);
    while (cdsm__loop_deliver()) { /* (what the messages made us send ourselves: see bell.c) */
    }
    int got = cdsm__st.msgs_recv != before;
    pthread_mutex_unlock(&bl->rx_mu);
    if (got) cdsm__sock_push_all(); /* replies sent from here */
    return got;
}

/* ---- set-up ------------------------------------------------------------------------------ */

static void sock_free(void)
{
    if (sk.tx)
        for (int p = 0; p < cdsm__w.wn; p++) {
            drop_queue(&sk.tx[p]);
            pthread_mutex_destroy(&sk.tx[p].mu);
        }
    if (sk.rx)
        for (int p = 0; p < cdsm__w.wn; p++) forget_partial(p);
    free(sk.tx);
    free(sk.rx);
    sk.tx = NULL;
    sk.rx = NULL;
    sk.queued = 0;
}

static int sock_init(void)
{
    sk.tx = calloc((size_t)cdsm__w.wn, sizeof *sk.tx);
    sk.rx = calloc((size_t)cdsm__w.wn, sizeof *sk.rx);
    if (!sk.tx || !sk.rx) {
        free(sk.tx);
        free(sk.rx);
        sk.tx = NULL;
        sk.rx = NULL;
        return cdsm__error(CDSM_ERR_NOMEM, "socket transport queues");
    }
    for (int p = 0; p < cdsm__w.wn; p++) pthread_mutex_init(&sk.tx[p].mu, NULL);
    bl->stream = 1;
    return cdsm__bell_ops.init();
}

/* What still waits goes out before the sockets close (peers read until they finish). */
static void sock_fini(void)
{
    for (int ms = 0; ms < SOCK_FINI_WAIT_MS && cdsm__sock_push_all(); ms++) poll(NULL, 0, 1);
    cdsm__bell_ops.fini();
    bl->stream = 0;
    sock_free();
}

static void sock_cut(int w)
{
    cdsm__bell_ops.cut(w);
    pthread_mutex_lock(&sk.tx[w].mu);
    drop_queue(&sk.tx[w]);
    pthread_mutex_unlock(&sk.tx[w].mu);
    forget_partial(w); /* (membership's tick holds rx_mu) */
}

static void sock_peer_info(int w, uint64_t *heard_ns, int *pid, int *open)
{
    cdsm__bell_ops.peer_info(w, heard_ns, pid, open);
}

static pthread_t sock_service_thread(void)
{
    return cdsm__bell_ops.service_thread();
}

const cdsm__tp_ops_t cdsm__sock_ops = {
    .name = "socket",
    .init = sock_init,
    .fini = sock_fini,
    .post = sock_post,
    .flush = sock_flush,
    .sending = sock_sending,
    .idle = cdsm__loop_wake,
    .progress = sock_progress,
    .peer_info = sock_peer_info,
    .cut = sock_cut,
    .goodbye = cdsm__bell_goodbye,
    .service_thread = sock_service_thread,
};
