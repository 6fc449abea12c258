/* The MPI-doorbell transport provider: protocol messages travel as MPI messages on the
 * library's own communicator; each is announced by one byte on a per-peer "doorbell"
 * socket (a Unix socket between ranks on one host, TCP otherwise). The service thread
 * sleeps in epoll_wait() on the doorbells (it never spins while idle). A byte may arrive
 * before or after its message, so each peer has a signed count: doorbell bytes read minus
 * messages received. A thread blocks in MPI_Mprobe on a peer only while that count is
 * positive (the message is surely on its way); otherwise it takes only what MPI_Improbe
 * shows. The same sockets show a dead peer as end-of-file.
 *
 * Receiving is shared: an application thread that waits for a reply probes MPI itself for
 * up to CDSM_SPIN_US before it sleeps, which saves the doorbell's latency and two thread
 * wake-ups per round trip (the service thread's and its own). Whoever holds rx_mu receives.
 *
 * Sends are MPI_Isend from a private buffer, so no thread ever blocks on a receiver
 * (two service threads replying to each other cannot deadlock). The application thread
 * completes its sends in cdsm__tp_flush() before it sleeps or returns to the program; the
 * service thread tests its own on every wake-up and sleeps at most 1 ms while any is
 * incomplete. MPI never sees shared-heap memory. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bell.h"

cdsm__bell_t cdsm__bell = {.self_in = -1, .kick_fd = -1, .stop_pipe = {-1, -1}, .epfd = -1,
                           .rx_mu = PTHREAD_MUTEX_INITIALIZER, .bye_cv = PTHREAD_COND_INITIALIZER};
static cdsm__bell_t *const bl = &cdsm__bell;

typedef struct pend {
    struct pend *next;
    MPI_Request req;
    void *buf;
    int w; /* destination process */
} pend_t;

static __thread pend_t *pending; /* this thread's incomplete sends */

static int bell_sending(void)
{
    return pending != NULL;
}

/* ---- sends ---------------------------------------------------------------------------- */

/* A send to a dead process may never complete (a large message waits for its receiver):
 * let MPI have the request and keep its buffer forever (a small, one-off leak). */
static int abandon_if_dead(pend_t *d)
{
    if (!cdsm__w.wdead || !__atomic_load_n(&cdsm__w.wdead[d->w], __ATOMIC_ACQUIRE)) return 0;
    MPI_Request_free(&d->req);
    free(d);
    return 1;
}

void cdsm__bell_test_pending(void)
{
    pend_t **pp = &pending;
    while (*pp) {
        int done = 0;
        MPI_Test(&(*pp)->req, &done, MPI_STATUS_IGNORE);
        pend_t *next = (*pp)->next;
        if (!done && abandon_if_dead(*pp)) { /* freed it */
            *pp = next;
            continue;
        }
        if (done) {
            pend_t *d = *pp;
            *pp = d->next;
            free(d->buf);
            free(d);
        } else {
            pp = &(*pp)->next;
        }
    }
}

/* Write `count` doorbell bytes to dst without ever blocking: a thread that holds rx_mu may
 * ring, and the peer that should drain the socket may be waiting for us. A full socket
 * means the peer has unread doorbells and will wake; the rest is owed, and the service
 * thread pays it within a millisecond. Returns the bytes written, or -1 if the peer is gone. */
static ssize_t ring_bytes(int dst, size_t count)
{
    char bytes[256];
    memset(bytes, BELL_BYTE, sizeof bytes);
    size_t done = 0;
    while (done < count) {
        size_t k = count - done < sizeof bytes ? count - done : sizeof bytes;
        ssize_t w = send(bl->bell[dst], bytes, k, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        return -1;
    }
    return (ssize_t)done;
}

void cdsm__bell_kick(void)
{
    uint64_t one = 1;
    if (write(bl->kick_fd, &one, 8) != 8) cdsm__log(CDSM_LOG_WARN, "kicking the service thread: %s", strerror(errno));
}

static int ring(int dst)
{
    ssize_t w = ring_bytes(dst, 1);
    cdsm__tp_note_wake();
    if (w < 0) {
        /* Dead. The service thread handles the loss when it reads the end of the stream
         * (this thread may hold mu); if a spare takes the rank's place, requests are sent
         * again to it, so this is no error. */
        int e = errno;
        if (cdsm__tp_ev.recoverable(dst)) return CDSM_OK;
        return cdsm__error(CDSM_ERR_PEER_LOST, "rank %d was lost (its doorbell: %s)", cdsm__w.logical[dst], strerror(e));
    }
    if (w == 0) {
        /* Owed: our service thread may be asleep, so wake it to pay (a sleeping peer may
         * be waiting for exactly this doorbell). */
        __atomic_fetch_add(&bl->debt[dst], 1, __ATOMIC_RELAXED);
        cdsm__bell_kick();
    }
    return CDSM_OK;
}

/* Service thread: write owed doorbells. Returns 1 while some are still owed. */
int cdsm__bell_pay_debts(void)
{
    int owed = 0;
    for (int p = 0; p < cdsm__w.wn; p++) {
        uint64_t d = __atomic_exchange_n(&bl->debt[p], 0, __ATOMIC_RELAXED);
        if (!d) continue;
        ssize_t w = ring_bytes(p, d);
        if (w < 0) continue; /* the peer is gone: nothing to wake */
        if ((uint64_t)w < d) {
            __atomic_fetch_add(&bl->debt[p], d - (uint64_t)w, __ATOMIC_RELAXED);
            owed = 1;
        }
    }
    return owed;
}

/* A send to process w failed inside MPI (over TCP: the process is unreachable, its node
 * lost or cut off). Where a spare can take its rank, or it held none, this is no error:
 * the doorbell or the heartbeats name it lost, and requests go again to its replacement. */
static int send_failed(int w, int mrc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(mrc, msg, &len);
    char *nl = strchr(msg, '\n');
    if (nl) *nl = 0;
    if (cdsm__tp_ev.recoverable(w) || (cdsm__w.logical && cdsm__w.logical[w] < 0)) {
        cdsm__log(CDSM_LOG_INFO, "%s to process %d failed (%s): it is lost or being lost; dropped", what, w, msg);
        return CDSM_OK;
    }
    return cdsm__error(CDSM_ERR_PEER_LOST, "%s to process %d failed: %s", what, w, msg);
}

void cdsm__bell_count_sent(int w, int type, size_t total)
{
    if (cdsm__tp_ev.counted[type]) __atomic_fetch_add(&cdsm__w.lk_sent[w], 1, __ATOMIC_RELAXED);
    CDSM_STAT_ADD(msgs_sent, 1);
    CDSM_STAT_ADD(bytes_sent, total);
}

/* Send a built message (header included) to process w; takes buf. */
static int bell_post(int w, int type, uint8_t *buf, size_t total)
{
    if (w == cdsm__w.wrank) {
        cdsm__bell_count_sent(w, type, total);
        return cdsm__loop_post(buf, total);
    }
    pend_t *pe = malloc(sizeof *pe);
    if (!pe) {
        free(buf);
        return cdsm__error(CDSM_ERR_NOMEM, "message buffer of %zu bytes", total);
    }
    int mrc = MPI_Isend(buf, (int)total, MPI_BYTE, w, type, cdsm__w.comm, &pe->req);
    if (mrc != MPI_SUCCESS) {
        free(pe);
        free(buf);
        return send_failed(w, mrc, "MPI_Isend");
    }
    cdsm__bell_count_sent(w, type, total);
    pe->buf = buf;
    pe->w = w;
    pe->next = pending;
    pending = pe;
    int rc = cdsm__awake_skip(w) ? CDSM_OK : ring(w);
    cdsm__bell_test_pending();
    return rc;
}

static int bell_flush(void)
{
    while (pending) {
        pend_t *d = pending;
        pending = d->next;
        /* Never MPI_Wait: a large send to a process that dies before receiving it never
         * completes (ch4:ucx reports nothing), and the death is learnt by the service
         * thread while we wait. MPI_Wait polls as busily as this loop does. */
        int mrc = MPI_SUCCESS;
        for (int done = 0;;) {
            mrc = MPI_Test(&d->req, &done, MPI_STATUS_IGNORE);
            if (done || mrc != MPI_SUCCESS) break;
            if (abandon_if_dead(d)) {
                d = NULL;
                break;
            }
            sched_yield();
        }
        if (!d) continue;
        int w = d->w;
        free(d->buf);
        free(d);
        if (mrc != MPI_SUCCESS && (mrc = send_failed(w, mrc, "a send"))) return mrc;
    }
    return CDSM_OK;
}

/* ---- receiving ---------------------------------------------------------------------------- */

/* Check and deliver one whole message from process src; takes buf. Caller holds rx_mu. */
int cdsm__bell_deliver(int src, uint8_t *buf, size_t count)
{
    cdsm__msg_hdr_t h;
    if (count < sizeof h) goto bad;
    memcpy(&h, buf, sizeof h);
    if (h.len != count - sizeof h || h.type == 0 || h.type >= CDSM_TP_MAX_TYPES) goto bad;
    if (__atomic_load_n(&cdsm__w.wdead[src], __ATOMIC_ACQUIRE) && cdsm__w.logical[src] < 0) {
        /* From a process declared lost and replaced (a cut-off node's message, delivered
         * once its link came back): it must change nothing here (no split brain). */
        free(buf);
        CDSM_STAT_ADD(fenced_msgs_dropped, 1);
        cdsm__log(CDSM_LOG_WARN, "a message (type %u) from lost process %d arrived late: dropped", h.type, src);
        return CDSM_OK;
    }
    if (cdsm__w.logical[src] != h.src && !cdsm__tp_ev.adopt(h.src, src)) goto bad;
    if (cdsm__tp_ev.counted[h.type]) __atomic_fetch_add(&cdsm__w.lk_recv[src], 1, __ATOMIC_RELAXED);
    CDSM_STAT_ADD(msgs_recv, 1);
    CDSM_STAT_ADD(bytes_recv, count);
    cdsm__tp_ev.deliver(&h, buf);
    return CDSM_OK;
bad:
    free(buf);
    cdsm__log(CDSM_LOG_ERROR, "malformed message of %zu bytes from rank %d", count, src);
    return CDSM_ERR_PROTOCOL;
}

/* Receive one probed message and dispatch it. Caller holds rx_mu. */
static int recv_msg(MPI_Message *m, MPI_Status *st)
{
    int count = 0, src = st->MPI_SOURCE;
    MPI_Get_count(st, MPI_BYTE, &count);
    uint8_t *buf = malloc(count > 0 ? (size_t)count : 1);
    cdsm_check(buf != NULL);
    if (MPI_Mrecv(buf, count, MPI_BYTE, m, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        free(buf);
        return CDSM_ERR_MPI;
    }
    bl->rx_count[src]--;
    uint16_t type = 0;
    if (count >= (int)sizeof(cdsm__msg_hdr_t)) memcpy(&type, buf, sizeof type);
    if (type != st->MPI_TAG) {
        free(buf);
        cdsm__log(CDSM_LOG_ERROR, "malformed message of %d bytes from rank %d (tag %d)", count, src, st->MPI_TAG);
        return CDSM_ERR_PROTOCOL;
    }
    return cdsm__bell_deliver(src, buf, (size_t)(count > 0 ? count : 0));
}

/* p's stream ended (r: recv's result, err its errno). Caller holds rx_mu. */
void cdsm__bell_ended(int p, ssize_t r, int err)
{
    /* The peer's end closed: at finalize this is expected, else the peer is dead (the
     * kernel closes a killed process's sockets at once). */
    epoll_ctl(bl->epfd, EPOLL_CTL_DEL, bl->bell[p], NULL);
    bl->ended[p] = 1; /* the socket stays open (closed at finalize): no fd number is reused under a ringer */
    bl->rx_count[p] = 0; /* what it rang for and did not send will never come */
    pthread_cond_broadcast(&bl->bye_cv); /* (a goodbye's wait counts it) */
    cdsm__tp_ev.peer_down(p, r == 0 ? "its doorbell connection closed" : strerror(err));
}

/* Read p's waiting doorbell bytes into its count. Returns -1 once p's stream has ended
 * (p died, or finishes), after handling that; else the bytes read. Caller holds rx_mu. */
static int bell_read(int p)
{
    if (bl->bell[p] < 0 || bl->ended[p]) return -1;
    char tmp[256];
    ssize_t r = recv(bl->bell[p], tmp, sizeof tmp, MSG_DONTWAIT);
    if (r > 0) {
        int rings = 0;
        for (ssize_t i = 0; i < r; i++) {
            rings += tmp[i] == BELL_BYTE;
            if (tmp[i] == BYE_BYTE) cdsm__bell_heard_bye(p);
            bl->nudged |= tmp[i] == NUDGE_BYTE;
        }
        bl->heard_ns[p] = cdsm__mono_ns();
        bl->rx_count[p] += rings;
        return rings;
    }
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    cdsm__bell_ended(p, r, errno);
    return -1;
}

/* Receive what has arrived: everything MPI shows now, and from each peer whose count says
 * a message is on its way, that message (waiting for it, unless the peer dies first: a
 * process killed right after ringing may never have sent it). Caller holds rx_mu. */
void cdsm__bell_rx_messages(void)
{
    MPI_Message m;
    MPI_Status st;
    for (;;) {
        int flag = 0;
        if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, cdsm__w.comm, &flag, &m, &st) != MPI_SUCCESS) flag = 0;
        if (flag) {
            if (recv_msg(&m, &st)) cdsm_check(!"unreadable protocol message");
            continue;
        }
        int p;
        for (p = 0; p < cdsm__w.wn && bl->rx_count[p] <= 0; p++) {
        }
        if (p == cdsm__w.wn) return;
        if (!__atomic_load_n(&cdsm__w.recovered, __ATOMIC_ACQUIRE) && !cdsm__cfg.spares) {
            /* Nobody can die unnoticed here: wait inside MPI. */
            if (MPI_Mprobe(p, MPI_ANY_TAG, cdsm__w.comm, &m, &st) != MPI_SUCCESS || recv_msg(&m, &st))
                cdsm_check(!"unreadable protocol message");
            continue;
        }
        /* The message is normally microseconds away; the peer's end of stream says it
         * will never come. Meanwhile other peers' messages are taken (a replacement's
         * request must not wait behind it), and after a while the caller naps instead. */
        for (int tries = 0;; tries++) {
            flag = 0;
            if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, cdsm__w.comm, &flag, &m, &st) != MPI_SUCCESS) flag = 0;
            if (flag) {
                if (recv_msg(&m, &st)) cdsm_check(!"unreadable protocol message");
                break;
            }
            if (bell_read(p) < 0 || bl->rx_count[p] <= 0) break;
            if (tries >= 1000) return;
            sched_yield();
        }
    }
}

/* A doorbell rang for a message not received yet (the service thread naps, not sleeps). */
int cdsm__bell_rx_owed(void)
{
    for (int p = 0; p < cdsm__w.wn; p++)
        if (bl->rx_count[p] > 0) return 1;
    return 0;
}

/* Read the doorbells epoll reported, then receive and dispatch that many messages.
 * Caller holds rx_mu. Returns 1 if the stop pipe fired. */
int cdsm__bell_rx_drain(const struct epoll_event *ev, int nev)
{
    int stop = 0;
    for (int i = 0; i < nev; i++) {
        int p = (int)ev[i].data.u32;
        if (p == cdsm__w.wn) {
            stop = 1;
            continue;
        }
        if (p == cdsm__w.wn + 1) { /* a kick: debts are paid by the service loop */
            uint64_t k;
            if (read(bl->kick_fd, &k, 8) != 8) k = 0;
            continue;
        }
        if (p == cdsm__w.wrank) {
            uint64_t rings = 0;
            if (read(bl->self_in, &rings, 8) != 8) rings = 0;
            cdsm__loop_deliver();
            continue;
        }
        if (bl->stream)
            cdsm__sock_read(p);
        else if (bell_read(p) > 0)
            CDSM_STAT_ADD(doorbells, 1);
    }
    if (!bl->stream) {
        cdsm__awake_collect(bl->rx_count);
        cdsm__bell_rx_messages();
    }
    /* A one-sided read waits for our MPI progress (no RDMA): passes for RMA_SERVE_US serve
     * its batch of gets (one pass served one or two of eight, measured here) and the
     * reader's next batch, which follows within microseconds; then back to sleep. */
    for (uint64_t end = cdsm__mono_ns() + RMA_SERVE_US * 1000ull; bl->nudged && cdsm__mono_ns() < end;)
        cdsm__bell_rx_messages();
    bl->nudged = 0;
    return stop;
}

/* An application thread's pass: what MPI shows now, and what those messages made us send
 * ourselves (this thread may return to the program next, and nobody would be woken for
 * it). Doorbells are only for sleepers: a thread that is awake asks MPI directly. Caller
 * holds rx_mu; returns whether anything came. */
static int rx_pass(void)
{
    uint64_t before = cdsm__st.msgs_recv;
    cdsm__bell_rx_messages();
    while (cdsm__loop_deliver()) {
    }
    return cdsm__st.msgs_recv != before;
}

static int bell_progress(void)
{
    if (bl->epfd < 0 || pthread_mutex_trylock(&bl->rx_mu)) return 0;
    /* Messages node-mates left without a doorbell (late bells): received here, their
     * credits taken, so that their senders ring nobody. */
    cdsm__awake_collect(bl->rx_count);
    int got = rx_pass();
    pthread_mutex_unlock(&bl->rx_mu);
    /* Requests served here were answered from this thread: complete those sends before it
     * sleeps or returns to the program (a large reply needs its sender to progress).
     * Never while holding rx_mu: the receiver's service thread may need ours to drain. */
    if (got) bell_flush();
    return got;
}

/* The application thread receives itself from now on, or no longer. Its last pass must
 * not be skipped (progress only tries rx_mu): the service thread may hold it, having
 * probed just before a sender that saw our flag put its message in. */
static void bell_receiving(int on)
{
    cdsm__awake_receiving(on);
    if (on) return;
    pthread_mutex_lock(&bl->rx_mu);
    cdsm__awake_collect(bl->rx_count);
    int got = rx_pass(), late = cdsm__bell_rx_owed();
    pthread_mutex_unlock(&bl->rx_mu);
    if (late) cdsm__bell_kick(); /* (spares: a message still on its way is the service thread's to wait for) */
    if (got) bell_flush();
}

static int bell_poll(void)
{
    return cdsm__awake_late_left() ? bell_progress() : 0;
}

static int bell_ring_late(int answered)
{
    return cdsm__awake_ring_late(answered, ring);
}

/* ---- set-up ------------------------------------------------------------------------------ */

static pthread_t bell_service_thread(void)
{
    return bl->svc;
}

static int bell_init(void)
{
    bl->bell = malloc((size_t)cdsm__w.wn * sizeof *bl->bell);
    bl->peer_pid = calloc((size_t)cdsm__w.wn, sizeof *bl->peer_pid);
    bl->heard_ns = calloc((size_t)cdsm__w.wn, sizeof *bl->heard_ns);
    if (!bl->bell || !bl->peer_pid || !bl->heard_ns) return cdsm__error(CDSM_ERR_NOMEM, "doorbell table");
    if (cdsm__cfg.heartbeat_ms && cdsm__cfg.heartbeat_timeout_ms < 2 * cdsm__cfg.heartbeat_ms)
        return cdsm__error(CDSM_ERR_CONFIG,
                           "CDSM_HEARTBEAT_TIMEOUT=%llu ms: must be at least twice CDSM_HEARTBEAT_MS=%llu (else a peer "
                           "is declared lost between two of its heartbeats)",
                           (unsigned long long)cdsm__cfg.heartbeat_timeout_ms,
                           (unsigned long long)cdsm__cfg.heartbeat_ms);
    for (int p = 0; p < cdsm__w.wn; p++) bl->bell[p] = -1;
    int rc = cdsm__bell_mesh();
    /* Every rank must agree before anyone relies on the mesh, on the provider, and on
     * whether boards are read one-sided (every process wants it, with one board size):
     * one reduction for all. */
    int vote = cdsm__board_rma_vote();
    int mine[5] = {rc, bl->stream, -bl->stream, vote, -vote}, agreed[5];
    MPI_Allreduce(mine, agreed, 5, MPI_INT, MPI_MIN, cdsm__w.comm);
    if (agreed[0]) {
        if (!rc) rc = cdsm__error(CDSM_ERR_NET, "another rank could not set up its doorbells");
        return rc;
    }
    if (agreed[1] != -agreed[2])
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_TRANSPORT differs between the job's processes (this one: %s)",
                           bl->stream ? "socket" : "mpi");
    if (pipe2(bl->stop_pipe, O_CLOEXEC)) return cdsm__error(CDSM_ERR_NET, "pipe: %s", strerror(errno));
    bl->rx_count = calloc((size_t)cdsm__w.wn, sizeof *bl->rx_count);
    bl->ended = calloc((size_t)cdsm__w.wn, 1);
    bl->bye = calloc((size_t)cdsm__w.wn, 1);
    bl->debt = calloc((size_t)cdsm__w.wn, sizeof *bl->debt);
    if (!bl->debt || !bl->ended || !bl->bye) return cdsm__error(CDSM_ERR_NOMEM, "doorbell table");
    bl->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!bl->rx_count || bl->epfd < 0) return cdsm__error(CDSM_ERR_NET, "epoll_create1: %s", strerror(errno));
    bl->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (bl->kick_fd < 0) return cdsm__error(CDSM_ERR_NET, "eventfd: %s", strerror(errno));
    for (int p = 0; p <= cdsm__w.wn + 1; p++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)p};
        int fd = p == cdsm__w.wn + 1 ? bl->kick_fd : p == cdsm__w.wn ? bl->stop_pipe[0] : (p == cdsm__w.wrank ? bl->self_in : bl->bell[p]);
        if (epoll_ctl(bl->epfd, EPOLL_CTL_ADD, fd, &ev))
            return cdsm__error(CDSM_ERR_NET, "epoll_ctl: %s", strerror(errno));
    }
    /* Connect every pair of processes now, in both directions: a first message between
     * two processes later (a spare's first requests after a takeover) sometimes stayed
     * inside MPI for good, both sides progressing (seen under a full test round). */
    int *one = malloc((size_t)cdsm__w.wn * sizeof *one), *got = malloc((size_t)cdsm__w.wn * sizeof *got);
    if (!one || !got) {
        free(one);
        free(got);
        return cdsm__error(CDSM_ERR_NOMEM, "connection warm-up");
    }
    for (int p = 0; p < cdsm__w.wn; p++) one[p] = cdsm__w.wrank;
    int wrc = MPI_Alltoall(one, 1, MPI_INT, got, 1, MPI_INT, cdsm__w.comm);
    free(one);
    free(got);
    if (wrc != MPI_SUCCESS) return cdsm__error(CDSM_ERR_MPI, "connecting every pair of processes (MPI_Alltoall)");
    int rma = agreed[3] > 0 && agreed[3] == -agreed[4], rc2 = cdsm__board_reach(rma); /* (collective when 1) */
    if (!rc2) rc2 = cdsm__words_reach_setup(rma);
    if (rc2) return rc2;
    uint64_t now = cdsm__mono_ns(); /* silence is counted from here */
    for (int p = 0; p < cdsm__w.wn; p++) bl->heard_ns[p] = now;
    bl->next_beat_ns = now;
    if (pthread_create(&bl->svc, NULL, cdsm__bell_service_main, NULL))
        return cdsm__error(CDSM_ERR_NOMEM, "cannot start the service thread");
    bl->svc_started = 1;
    return CDSM_OK;
}

static void bell_fini(void)
{
    if (bl->svc_started) {
        char c = 0;
        if (write(bl->stop_pipe[1], &c, 1) != 1) cdsm__log(CDSM_LOG_WARN, "stopping the service thread: %s", strerror(errno));
        pthread_join(bl->svc, NULL);
        bl->svc_started = 0;
    }
    bell_flush();
    cdsm__loop_drop();
    cdsm__awake_fini();
    cdsm__rma_fini(); /* (before the memory its windows expose goes) */
    cdsm__board_fini();
    cdsm__words_fini();
    for (int i = 0; i < 2; i++)
        if (bl->stop_pipe[i] >= 0) close(bl->stop_pipe[i]);
    bl->stop_pipe[0] = bl->stop_pipe[1] = -1;
    if (bl->bell) {
        for (int p = 0; p < cdsm__w.wn; p++)
            if (bl->bell[p] >= 0) close(bl->bell[p]);
        free(bl->bell);
        bl->bell = NULL;
    }
    if (bl->self_in >= 0) close(bl->self_in);
    bl->self_in = -1;
    if (bl->epfd >= 0) close(bl->epfd);
    if (bl->kick_fd >= 0) close(bl->kick_fd);
    bl->epfd = bl->kick_fd = -1;
    free(bl->rx_count);
    free(bl->ended);
    free(bl->bye);
    bl->bye = NULL;
    free(bl->debt);
    free(bl->peer_pid);
    free(bl->heard_ns);
    bl->peer_pid = NULL;
    bl->heard_ns = NULL;
    bl->ended = NULL;
    bl->rx_count = NULL;
    bl->debt = NULL;
}
/* Liveness facts for membership (called from its tick, which holds rx_mu). */
static void bell_peer_info(int w, uint64_t *heard, int *pid, int *open)
{
    *heard = bl->heard_ns[w];
    *pid = (int)bl->peer_pid[w];
    *open = w != cdsm__w.wrank && bl->bell[w] >= 0 && !bl->ended[w];
}

/* Stop hearing w for good (called from membership's tick, which holds rx_mu): a frozen
 * process must never wake up to act on shared state. */
static void bell_cut(int w)
{
    shutdown(bl->bell[w], SHUT_RDWR);
    epoll_ctl(bl->epfd, EPOLL_CTL_DEL, bl->bell[w], NULL);
    bl->ended[w] = 1;
    bl->rx_count[w] = 0;
}

const cdsm__tp_ops_t cdsm__bell_ops = {
    .name = "mpi-doorbell",
    .init = bell_init,
    .fini = bell_fini,
    .post = bell_post,
    .flush = bell_flush,
    .sending = bell_sending,
    .idle = cdsm__loop_wake,
    .receiving = bell_receiving,
    .late = cdsm__awake_late,
    .ring_late = bell_ring_late,
    .late_pending = cdsm__awake_late_pending,
    .poll = bell_poll,
    .progress = bell_progress,
    .peer_info = bell_peer_info,
    .cut = bell_cut,
    .goodbye = cdsm__bell_goodbye,
    .service_thread = bell_service_thread,
};
