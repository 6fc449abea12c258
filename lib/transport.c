/* Transport: protocol messages travel as MPI messages on the library's own communicator;
 * each is announced by one byte on a per-peer "doorbell" socket (a Unix socket between
 * ranks on one host, TCP otherwise). The service thread sleeps in epoll_wait() on the
 * doorbells (it never spins while idle). A byte may arrive before or after its message,
 * so each peer has a signed count: doorbell bytes read minus messages received. A thread
 * blocks in MPI_Mprobe on a peer only while that count is positive (the message is surely
 * on its way); otherwise it takes only what MPI_Improbe shows. The same sockets show a
 * dead peer as end-of-file.
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
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

typedef struct pend {
    struct pend *next;
    MPI_Request req;
    void *buf;
    int w; /* destination process */
} pend_t;

static __thread pend_t *pending; /* this thread's incomplete sends */

/* Sockets, counts and debts are per process of the communicator (world rank: spares
 * included); protocol messages name logical ranks, mapped by cdsm__g.phys. */
static int *bell;          /* per peer: socket we write doorbells to (self: an eventfd) */
static int self_in = -1;   /* our own doorbell: an eventfd (a counter: it cannot fill up) */
static uint64_t *debt;     /* per peer: doorbells not yet written because its socket was full */
static int kick_fd = -1;   /* wakes our service thread to pay a debt (an eventfd) */
static int stop_pipe[2] = {-1, -1};
static int epfd = -1;      /* every doorbell we read, and the stop pipe */
static pthread_mutex_t rx_mu = PTHREAD_MUTEX_INITIALIZER; /* whoever holds it receives */
static int64_t *rx_count;  /* per peer: doorbell bytes read minus messages received */
static uint8_t *ended;     /* per peer: its doorbell stream has ended (read under rx_mu) */
static pthread_t svc;
static int svc_started;

/* The failure detector's second half (the first is end-of-file on a doorbell stream): a
 * heartbeat byte on every doorbell socket each CDSM_HEARTBEAT_MS, from the service thread,
 * which wakes for nothing else when idle. A peer silent for CDSM_HEARTBEAT_TIMEOUT (a
 * frozen process, a lost node, a cut link) is declared lost, and fenced: killed when it
 * runs on this host, its sockets shut down in any case, so that it can never act on shared
 * state again once a spare has its rank. Doorbell bytes are 1, heartbeats 2. */
enum { BELL_BYTE = 1, BEAT_BYTE = 2 };
static uint64_t *heard_ns;  /* per peer: when a byte of it last arrived (under rx_mu) */
static uint64_t next_beat_ns;
static pid_t *peer_pid;     /* per peer: its pid, when it runs on this host (else 0) */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef struct peer_info {
    char host[64];
    uint32_t port; /* TCP listener, for ranks on other hosts */
    uint32_t pid;  /* names the abstract Unix listener, for ranks on this host */
} peer_info_t;

/* ---- sends ---------------------------------------------------------------------------- */

/* A send to a dead process may never complete (a large message waits for its receiver):
 * let MPI have the request and keep its buffer forever (a small, one-off leak). */
static int abandon_if_dead(pend_t *d)
{
    if (!cdsm__g.wdead || !__atomic_load_n(&cdsm__g.wdead[d->w], __ATOMIC_ACQUIRE)) return 0;
    MPI_Request_free(&d->req);
    free(d);
    return 1;
}

static void test_pending(void)
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
        ssize_t w = send(bell[dst], bytes, k, MSG_NOSIGNAL | MSG_DONTWAIT);
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

static int ring(int dst)
{
    if (dst == cdsm__g.wrank) {
        uint64_t one = 1;
        return write(self_in, &one, 8) == 8 ? CDSM_OK : cdsm__error(CDSM_ERR_NET, "own doorbell: %s", strerror(errno));
    }
    ssize_t w = ring_bytes(dst, 1);
    if (w < 0) {
        /* Dead. The service thread handles the loss when it reads the end of the stream
         * (this thread may hold mu); if a spare takes the rank's place, requests are sent
         * again to it, so this is no error. */
        int e = errno;
        if (cdsm__world_recoverable(dst)) return CDSM_OK;
        return cdsm__error(CDSM_ERR_PEER_LOST, "rank %d was lost (its doorbell: %s)", cdsm__g.logical[dst], strerror(e));
    }
    if (w == 0) {
        /* Owed: our service thread may be asleep, so wake it to pay (a sleeping peer may
         * be waiting for exactly this doorbell). */
        uint64_t one = 1;
        __atomic_fetch_add(&debt[dst], 1, __ATOMIC_RELAXED);
        if (write(kick_fd, &one, 8) != 8) cdsm__log(CDSM_LOG_WARN, "kicking the service thread: %s", strerror(errno));
    }
    return CDSM_OK;
}

/* Service thread: write owed doorbells. Returns 1 while some are still owed. */
static int pay_debts(void)
{
    int owed = 0;
    for (int p = 0; p < cdsm__g.wn; p++) {
        uint64_t d = __atomic_exchange_n(&debt[p], 0, __ATOMIC_RELAXED);
        if (!d) continue;
        ssize_t w = ring_bytes(p, d);
        if (w < 0) continue; /* the peer is gone: nothing to wake */
        if ((uint64_t)w < d) {
            __atomic_fetch_add(&debt[p], d - (uint64_t)w, __ATOMIC_RELAXED);
            owed = 1;
        }
    }
    return owed;
}

/* Requests the application thread sent and still waits a reply for: when their
 * destination moves to a spare they are sent again (the dead process may have lost them). */
typedef struct resend {
    struct resend *next;
    int dst, wdst; /* logical destination, and the process it was sent to */
    uint16_t type;
    uint64_t tag;
    size_t len;
    uint8_t *msg;  /* header and payload */
} resend_t;
static __thread resend_t *resends;

static int is_request(int type)
{
    return type == CDSM_MSG_LOCK_REQ || type == CDSM_MSG_DIFF_REQ || type == CDSM_MSG_PAGE_REQ ||
           type == CDSM_MSG_BAR_ARRIVE;
}

static int request_of(int reply)
{
    switch (reply) {
    case CDSM_MSG_LOCK_GRANT: return CDSM_MSG_LOCK_REQ;
    case CDSM_MSG_DIFF_REP: return CDSM_MSG_DIFF_REQ;
    case CDSM_MSG_PAGE_REP: return CDSM_MSG_PAGE_REQ;
    case CDSM_MSG_BAR_RELEASE: return CDSM_MSG_BAR_ARRIVE;
    default: return 0;
    }
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
    if (cdsm__world_recoverable(w) || (cdsm__g.logical && cdsm__g.logical[w] < 0)) {
        cdsm__log(CDSM_LOG_INFO, "%s to process %d failed (%s): it is lost or being lost; dropped", what, w, msg);
        return CDSM_OK;
    }
    return cdsm__error(CDSM_ERR_PEER_LOST, "%s to process %d failed: %s", what, w, msg);
}

/* Send a built message (header included) to process w; takes buf. */
static int post(int w, int type, uint8_t *buf, size_t total)
{
    cdsm__state_t *g = &cdsm__g;
    pend_t *pe = malloc(sizeof *pe);
    if (!pe) {
        free(buf);
        return cdsm__error(CDSM_ERR_NOMEM, "message buffer of %zu bytes", total);
    }
    int mrc = MPI_Isend(buf, (int)total, MPI_BYTE, w, type, g->comm, &pe->req);
    if (mrc != MPI_SUCCESS) {
        free(pe);
        free(buf);
        return send_failed(w, mrc, "MPI_Isend");
    }
    if (cdsm__is_lock_msg(type)) __atomic_fetch_add(&g->lk_sent[w], 1, __ATOMIC_RELAXED);
    pe->buf = buf;
    pe->w = w;
    pe->next = pending;
    pending = pe;
    CDSM_STAT_ADD(msgs_sent, 1);
    CDSM_STAT_ADD(bytes_sent, total);
    int rc = ring(w);
    test_pending();
    return rc;
}

static int send_to(int w, int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2)
{
    cdsm__state_t *g = &cdsm__g;
    size_t total = sizeof(cdsm__msg_hdr_t) + l1 + l2;
    if (total > INT32_MAX)
        return cdsm__error(CDSM_ERR_PROTOCOL, "message of %zu bytes to rank %d is too large", total, dst);
    uint8_t *buf = malloc(total);
    if (!buf) return cdsm__error(CDSM_ERR_NOMEM, "message buffer of %zu bytes", total);
    cdsm__msg_hdr_t h = {(uint16_t)type, (uint16_t)g->rank, (uint32_t)(l1 + l2), tag};
    memcpy(buf, &h, sizeof h);
    if (l1) memcpy(buf + sizeof h, p1, l1);
    if (l2) memcpy(buf + sizeof h + l1, p2, l2);
    /* Kept only where a spare can take the destination's place (else never sent again). */
    if (cdsm__cfg.spares && dst >= 0 && w != g->wrank && is_request(type)) {
        resend_t *e = malloc(sizeof *e);
        uint8_t *copy = malloc(total);
        cdsm_check(e && copy);
        memcpy(copy, buf, total);
        *e = (resend_t){resends, dst, w, (uint16_t)type, tag, total, copy};
        resends = e;
    }
    return post(w, type, buf, total);
}

int cdsm__tp_send(int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2)
{
    cdsm__state_t *g = &cdsm__g;
    int w = dst == g->rank ? g->wrank : g->phys[dst];
    return send_to(w, dst, type, tag, p1, l1, p2, l2);
}

int cdsm__tp_send_world(int wdst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2)
{
    return send_to(wdst, -1, type, tag, p1, l1, p2, l2);
}

/* The reply to one of our requests arrived: forget the request. */
static void resend_done(int reply_type, uint64_t tag)
{
    int req = request_of(reply_type);
    for (resend_t **pp = &resends; *pp; pp = &(*pp)->next)
        if ((*pp)->type == req && (*pp)->tag == tag) {
            resend_t *e = *pp;
            *pp = e->next;
            free(e->msg);
            free(e);
            return;
        }
}

static void resend_clear(void)
{
    while (resends) {
        resend_t *e = resends;
        resends = e->next;
        free(e->msg);
        free(e);
    }
}

/* Send again every waiting request whose destination now lives in another process. */
static void resend_moved(void)
{
    cdsm__state_t *g = &cdsm__g;
    for (resend_t *e = resends; e; e = e->next) {
        int w = g->phys[e->dst];
        if (w == e->wdst) continue;
        uint8_t *copy = malloc(e->len);
        cdsm_check(copy != NULL);
        memcpy(copy, e->msg, e->len);
        e->wdst = w;
        cdsm__log(CDSM_LOG_INFO, "request (type %u, tag %llu) to rank %d sent again to its replacement",
                  e->type, (unsigned long long)e->tag, e->dst);
        post(w, e->type, copy, e->len);
    }
}

int cdsm__tp_flush(void)
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

/* ---- lost peers ---------------------------------------------------------------------------- */

void cdsm__peer_lost(int rank, const char *why)
{
    cdsm__state_t *g = &cdsm__g;
    int none = -1;
    if (!__atomic_compare_exchange_n(&g->lost_rank, &none, rank, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return; /* the first loss was reported already */
    cdsm__log(CDSM_LOG_ERROR,
              "rank %d lost (%s): the process exited or was killed; no spare rank takes its place, so "
              "every operation that waits for another rank now fails with CDSM_ERR_PEER_LOST",
              rank, why);
    pthread_mutex_lock(&g->mu);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* ---- replies to the application thread ------------------------------------------------- */

cdsm__reply_t *cdsm__wait_reply(int type, uint64_t tag)
{
    return cdsm__wait_reply_for(type, tag, 0, NULL);
}

cdsm__reply_t *cdsm__wait_reply_for(int type, uint64_t tag, uint64_t timeout_ms, int *timed_out)
{
    cdsm__state_t *g = &cdsm__g;
    if (timed_out) *timed_out = 0;
    /* Complete our own sends before sleeping: the peer may need them to progress. */
    pthread_mutex_unlock(&g->mu);
    /* A rank may have moved to a spare between our request and this wait (the loop
     * below sees only later moves): send again what went to a dead process. */
    uint32_t gen = __atomic_load_n(&g->remap_gen, __ATOMIC_ACQUIRE);
    if (resends) resend_moved();
    cdsm__tp_flush();
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t spin_ns = cdsm__cfg.spin_us * 1000u;
    pthread_mutex_lock(&g->mu);
    int drained = 0;
    for (int spinning = spin_ns > 0;;) {
        for (cdsm__reply_t **pp = &g->replies; *pp; pp = &(*pp)->next) {
            cdsm__reply_t *r = *pp;
            if (r->hdr.type == type && r->hdr.tag == tag) {
                *pp = r->next;
                resend_done(type, tag);
                return r;
            }
        }
        if (cdsm__lost() >= 0) {
            resend_clear();
            return NULL;
        }
        if (type == CDSM_MSG_BAR_RELEASE && __atomic_load_n(&g->final_mgr_gone, __ATOMIC_ACQUIRE)) {
            /* Finalizing, and rank 0 is gone: a release it sent before is received after
             * one more drain (its sends complete before it closes); without one, it died
             * first. */
            if (!drained) {
                drained = 1;
                pthread_mutex_unlock(&g->mu);
                cdsm__tp_progress();
                pthread_mutex_lock(&g->mu);
                continue; /* look at the replies again */
            }
            __atomic_store_n(&g->recovered, 1, __ATOMIC_RELEASE);
            cdsm__log(CDSM_LOG_WARN, "rank 0 lost during finalize (all work was done): finishing without it");
            resend_clear();
            return NULL;
        }
        if (gen != __atomic_load_n(&g->remap_gen, __ATOMIC_ACQUIRE)) {
            /* A rank moved to a spare: what we asked of it may be lost. */
            gen = __atomic_load_n(&g->remap_gen, __ATOMIC_ACQUIRE);
            pthread_mutex_unlock(&g->mu);
            resend_moved();
            cdsm__tp_flush();
            pthread_mutex_lock(&g->mu);
            continue;
        }
        if (!spinning) {
            if (pending) { /* sent while spinning: complete it before sleeping */
                pthread_mutex_unlock(&g->mu);
                cdsm__tp_flush();
                pthread_mutex_lock(&g->mu);
                continue;
            }
            /* Asleep, but MPI is progressed every 100 ms: a send counted complete may still
             * wait in MPI for its connection to the peer to be set up, which needs this
             * process to progress (seen: a spare's first request to a rank, never
             * delivered while both slept). */
            struct timespec dl = cdsm__deadline_ms(100);
            if (pthread_cond_timedwait(&g->cv, &g->mu, &dl) == ETIMEDOUT) {
                pthread_mutex_unlock(&g->mu);
                cdsm__tp_progress();
                pthread_mutex_lock(&g->mu);
                clock_gettime(CLOCK_MONOTONIC, &t);
                if (timeout_ms && (uint64_t)(t.tv_sec - t0.tv_sec) * 1000u + (uint64_t)(t.tv_nsec - t0.tv_nsec) / 1000000 >=
                                      timeout_ms) {
                    if (timed_out) *timed_out = 1;
                    return NULL;
                }
            }
            continue;
        }
        /* Receive ourselves for a while: the reply usually comes within a round trip. */
        pthread_mutex_unlock(&g->mu);
        if (!cdsm__tp_progress()) sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &t);
        spinning = (uint64_t)(t.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)(t.tv_nsec - t0.tv_nsec) < spin_ns;
        pthread_mutex_lock(&g->mu);
    }
}

void cdsm__reply_free(cdsm__reply_t *r)
{
    if (!r) return;
    free(r->payload - sizeof(cdsm__msg_hdr_t));
    free(r);
}

/* ---- the service thread ----------------------------------------------------------------- */

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
    rx_count[src]--;
    cdsm__msg_hdr_t h;
    if ((size_t)count < sizeof h) goto bad;
    memcpy(&h, buf, sizeof h);
    if (h.len != (size_t)count - sizeof h || h.type == 0 || h.type >= CDSM_MSG_TYPES || h.type != st->MPI_TAG)
        goto bad;
    if (__atomic_load_n(&cdsm__g.wdead[src], __ATOMIC_ACQUIRE) && cdsm__g.logical[src] < 0) {
        /* From a process declared lost and replaced (a cut-off node's message, delivered
         * once its link came back): it must change nothing here (no split brain). */
        free(buf);
        CDSM_STAT_ADD(fenced_msgs_dropped, 1);
        cdsm__log(CDSM_LOG_WARN, "a message (type %u) from lost process %d arrived late: dropped", h.type, src);
        return CDSM_OK;
    }
    if (cdsm__g.logical[src] != h.src && !cdsm__recover_adopt(h.src, src)) goto bad;
    if (cdsm__is_lock_msg(h.type)) __atomic_fetch_add(&cdsm__g.lk_recv[src], 1, __ATOMIC_RELAXED);
    CDSM_STAT_ADD(msgs_recv, 1);
    CDSM_STAT_ADD(bytes_recv, count);
    cdsm__dispatch(&h, buf);
    return CDSM_OK;
bad:
    free(buf);
    cdsm__log(CDSM_LOG_ERROR, "malformed message of %d bytes from rank %d", count, src);
    return CDSM_ERR_PROTOCOL;
}

/* Read p's waiting doorbell bytes into its count. Returns -1 once p's stream has ended
 * (p died, or finishes), after handling that; else the bytes read. Caller holds rx_mu. */
static int bell_read(int p)
{
    cdsm__state_t *g = &cdsm__g;
    if (bell[p] < 0 || ended[p]) return -1;
    char tmp[256];
    ssize_t r = recv(bell[p], tmp, sizeof tmp, MSG_DONTWAIT);
    if (r > 0) {
        int rings = 0;
        for (ssize_t i = 0; i < r; i++) rings += tmp[i] == BELL_BYTE;
        heard_ns[p] = mono_ns();
        rx_count[p] += rings;
        return rings;
    }
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    /* The peer's end closed: at finalize this is expected, else the peer is dead (the
     * kernel closes a killed process's sockets at once). */
    int e = errno;
    epoll_ctl(epfd, EPOLL_CTL_DEL, bell[p], NULL);
    ended[p] = 1; /* the socket stays open (closed at finalize): no fd number is reused under a ringer */
    rx_count[p] = 0; /* what it rang for and did not send will never come */
    if (!__atomic_load_n(&g->finalizing, __ATOMIC_ACQUIRE))
        cdsm__world_lost(p, r == 0 ? "its doorbell connection closed" : strerror(e));
    else
        cdsm__final_lost(p); /* done with shared memory: only the last barrier misses it */
    return -1;
}

/* Receive what has arrived: everything MPI shows now, and from each peer whose count says
 * a message is on its way, that message (waiting for it, unless the peer dies first: a
 * process killed right after ringing may never have sent it). Caller holds rx_mu. */
static void rx_messages(void)
{
    cdsm__state_t *g = &cdsm__g;
    MPI_Message m;
    MPI_Status st;
    for (;;) {
        int flag = 0;
        if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, g->comm, &flag, &m, &st) != MPI_SUCCESS) flag = 0;
        if (flag) {
            if (recv_msg(&m, &st)) cdsm_check(!"unreadable protocol message");
            continue;
        }
        int p;
        for (p = 0; p < g->wn && rx_count[p] <= 0; p++) {
        }
        if (p == g->wn) return;
        if (!__atomic_load_n(&g->recovered, __ATOMIC_ACQUIRE) && !cdsm__cfg.spares) {
            /* Nobody can die unnoticed here: wait inside MPI. */
            if (MPI_Mprobe(p, MPI_ANY_TAG, g->comm, &m, &st) != MPI_SUCCESS || recv_msg(&m, &st))
                cdsm_check(!"unreadable protocol message");
            continue;
        }
        /* The message is normally microseconds away; the peer's end of stream says it
         * will never come. Meanwhile other peers' messages are taken (a replacement's
         * request must not wait behind it), and after a while the caller naps instead. */
        for (int tries = 0;; tries++) {
            flag = 0;
            if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, g->comm, &flag, &m, &st) != MPI_SUCCESS) flag = 0;
            if (flag) {
                if (recv_msg(&m, &st)) cdsm_check(!"unreadable protocol message");
                break;
            }
            if (bell_read(p) < 0 || rx_count[p] <= 0) break;
            if (tries >= 1000) return;
            sched_yield();
        }
    }
}

/* A doorbell rang for a message not received yet (the service thread naps, not sleeps). */
static int rx_owed(void)
{
    for (int p = 0; p < cdsm__g.wn; p++)
        if (rx_count[p] > 0) return 1;
    return 0;
}

/* Read the doorbells epoll reported, then receive and dispatch that many messages.
 * Caller holds rx_mu. Returns 1 if the stop pipe fired. */
static int rx_drain(const struct epoll_event *ev, int nev)
{
    cdsm__state_t *g = &cdsm__g;
    int stop = 0;
    for (int i = 0; i < nev; i++) {
        int p = (int)ev[i].data.u32;
        if (p == g->wn) {
            stop = 1;
            continue;
        }
        if (p == g->wn + 1) { /* a kick: debts are paid by the service loop */
            uint64_t k;
            if (read(kick_fd, &k, 8) != 8) k = 0;
            continue;
        }
        if (p == g->wrank) {
            uint64_t rings = 0;
            if (read(self_in, &rings, 8) == 8) rx_count[p] += (int64_t)rings;
            continue;
        }
        if (bell_read(p) > 0) CDSM_STAT_ADD(doorbells, 1);
    }
    rx_messages();
    return stop;
}

int cdsm__tp_progress(void)
{
    if (epfd < 0 || pthread_mutex_trylock(&rx_mu)) return 0;
    uint64_t before = cdsm__g.st.msgs_recv;
    /* Doorbells are only for sleepers: a thread that is awake asks MPI directly. */
    rx_messages();
    int got = cdsm__g.st.msgs_recv != before;
    pthread_mutex_unlock(&rx_mu);
    /* Requests served here were answered from this thread: complete those sends before it
     * sleeps or returns to the program (a large reply needs its sender to progress).
     * Never while holding rx_mu: the receiver's service thread may need ours to drain. */
    if (got) cdsm__tp_flush();
    return got;
}

/* Service thread: send heartbeats when due; return the milliseconds until the next. */
static int beat(void)
{
    cdsm__state_t *g = &cdsm__g;
    uint64_t period = cdsm__cfg.heartbeat_ms * 1000000ull, now = mono_ns();
    if (now >= next_beat_ns) {
        char b = BEAT_BYTE;
        for (int p = 0; p < g->wn; p++)
            if (p != g->wrank && bell[p] >= 0 && !__atomic_load_n(&g->wdead[p], __ATOMIC_ACQUIRE))
                (void)send(bell[p], &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT); /* full: it has bytes to read */
        next_beat_ns = now + period;
    }
    return (int)((next_beat_ns - now + 999999) / 1000000);
}

/* Service thread: a working process that hears from less than half of the live processes
 * (itself included) is the one cut off: it stops itself before the majority declares it
 * lost (at the full timeout), so that it never writes shared state again once a spare
 * replays its rank. Exactly half: the side that hears the lowest live process goes on. */
static void fence_self_if_cut_off(uint64_t now, uint64_t limit)
{
    cdsm__state_t *g = &cdsm__g;
    uint64_t self_limit = limit / 4 * 3;
    int live = 1, heard = 1, lowest = g->wrank, lowest_heard = 1;
    for (int p = 0; p < g->wn; p++) {
        if (p == g->wrank || bell[p] < 0 || ended[p] || __atomic_load_n(&g->wdead[p], __ATOMIC_ACQUIRE)) continue;
        int h = now - heard_ns[p] <= self_limit;
        live++;
        heard += h;
        if (p < lowest) {
            lowest = p;
            lowest_heard = h;
        }
    }
    if (2 * heard > live || (2 * heard == live && lowest_heard)) return;
    cdsm__log(CDSM_LOG_ERROR,
              "rank %d cut off: it heard no heartbeat from %d of the %d other live processes for %.0f ms; it fences "
              "itself (exit status %d) before the others replay it on a spare",
              g->rank, live - heard, live - 1, (double)self_limit / 1e6, CDSM_EXIT_FENCED);
    _exit(CDSM_EXIT_FENCED);
}

/* Service thread, holding rx_mu: declare the peers silent for too long lost. */
static void check_silence(void)
{
    cdsm__state_t *g = &cdsm__g;
    uint64_t limit = cdsm__cfg.heartbeat_timeout_ms * 1000000ull, now = mono_ns();
    /* Peers close as they finish; and a spare never fences anyone (it acts on no shared
     * state, and ends when the working processes' connections close). */
    if (__atomic_load_n(&g->finalizing, __ATOMIC_ACQUIRE) || g->rank < 0) return;
    fence_self_if_cut_off(now, limit);
    for (int p = 0; p < g->wn; p++) {
        if (p == g->wrank || bell[p] < 0 || ended[p] || now - heard_ns[p] <= limit) continue;
        char why[96];
        snprintf(why, sizeof why, "no heartbeat for %.0f ms", (double)(now - heard_ns[p]) / 1e6);
        /* Fence first: a frozen process must never wake up to write shared state. */
        if (peer_pid[p] > 0 && kill(peer_pid[p], SIGKILL) == 0)
            snprintf(why + strlen(why), sizeof why - strlen(why), "; pid %d killed", (int)peer_pid[p]);
        cdsm__log(CDSM_LOG_ERROR, "process %d (rank %d) declared lost: %s", p, g->logical ? g->logical[p] : -1, why);
        shutdown(bell[p], SHUT_RDWR);
        epoll_ctl(epfd, EPOLL_CTL_DEL, bell[p], NULL);
        ended[p] = 1;
        rx_count[p] = 0;
        CDSM_STAT_ADD(heartbeat_losses, 1);
        cdsm__world_lost(p, why);
    }
}

static void *service_main(void *arg)
{
    (void)arg;
    struct epoll_event ev[64];
    int hb = cdsm__cfg.heartbeat_ms > 0;
    for (;;) {
        /* Asleep until a doorbell rings or a heartbeat is due; 1 ms naps only while our
         * own sends are incomplete, doorbells are owed, or a message rung for has not
         * arrived yet. */
        int owed = pay_debts();
        int late = rx_owed();
        int to = pending || owed || late ? 1 : -1;
        if (hb) {
            int next = beat();
            if (to < 0 || next < to) to = next;
        }
        int nev = epoll_wait(epfd, ev, 64, to);
        if (nev < 0 && errno != EINTR) {
            cdsm__log(CDSM_LOG_ERROR, "service thread: epoll_wait: %s", strerror(errno));
            break;
        }
        int stop = 0;
        if (nev > 0 || late || hb) {
            pthread_mutex_lock(&rx_mu);
            if (nev > 0)
                stop = rx_drain(ev, nev);
            else
                rx_messages(); /* a heartbeat's wake-up also progresses MPI (see cdsm__wait_reply) */
            if (hb && !stop) check_silence();
            pthread_mutex_unlock(&rx_mu);
        }
        test_pending();
        if (stop) break;
    }
    cdsm__tp_flush();
    return NULL;
}

/* ---- set-up ------------------------------------------------------------------------------ */

static int set_sock_opts(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static int read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        got += (size_t)r;
    }
    return 0;
}

/* Abstract-namespace Unix socket name of a rank's listener (nothing in the file system). */
static socklen_t uds_addr(struct sockaddr_un *ua, uint32_t pid)
{
    memset(ua, 0, sizeof *ua);
    ua->sun_family = AF_UNIX;
    int len = snprintf(ua->sun_path + 1, sizeof ua->sun_path - 1, "cdsm-doorbell-%u", pid);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)len);
}

/* Same host: a Unix socket (half the latency of TCP loopback); else TCP to its name. */
static int connect_to(const peer_info_t *me, const peer_info_t *peer, int peer_rank)
{
    int fd = -1;
    char where[128];
    if (!strcmp(me->host, peer->host)) {
        struct sockaddr_un ua;
        socklen_t len = uds_addr(&ua, peer->pid);
        snprintf(where, sizeof where, "local socket of pid %u", peer->pid);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&ua, len)) goto fail;
    } else {
        struct addrinfo hints = {0}, *ai = NULL;
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        char port[16];
        snprintf(port, sizeof port, "%u", peer->port);
        snprintf(where, sizeof where, "%s:%s", peer->host, port);
        int gai = getaddrinfo(peer->host, port, &hints, &ai);
        if (gai)
            return cdsm__error(CDSM_ERR_NET, "resolving %s for rank %d: %s", peer->host, peer_rank, gai_strerror(gai));
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int bad = fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen);
        freeaddrinfo(ai);
        if (bad) goto fail;
        set_sock_opts(fd);
    }
    uint32_t r = (uint32_t)cdsm__g.wrank;
    if (write(fd, &r, 4) != 4) goto fail;
    bell[peer_rank] = fd;
    return CDSM_OK;
fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    return cdsm__error(CDSM_ERR_NET, "connecting to rank %d at %s: %s", peer_rank, where, strerror(e));
}

/* Full mesh: connect to lower ranks, accept higher ones (connects complete in the listen
 * backlog, so the order cannot deadlock). */
static int mesh(void)
{
    cdsm__state_t *g = &cdsm__g;
    int rc = CDSM_OK, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    peer_info_t me = {{0}, 0, (uint32_t)getpid()}, *all = calloc((size_t)g->wn, sizeof *all);
    if (lfd < 0 || ufd < 0 || !all) {
        rc = cdsm__error(CDSM_ERR_NET, "listen sockets: %s", strerror(errno));
        goto out;
    }
    set_sock_opts(lfd);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t sl = sizeof sa;
    struct sockaddr_un ua;
    socklen_t ul = uds_addr(&ua, me.pid);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, g->wn + 16) ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) || bind(ufd, (struct sockaddr *)&ua, ul) ||
        listen(ufd, g->wn + 16)) {
        rc = cdsm__error(CDSM_ERR_NET, "bind/listen: %s", strerror(errno));
        goto out;
    }
    gethostname(me.host, sizeof me.host - 1);
    me.port = ntohs(sa.sin_port);
    if (MPI_Allgather(&me, sizeof me, MPI_BYTE, all, sizeof me, MPI_BYTE, g->comm) != MPI_SUCCESS) {
        rc = cdsm__error(CDSM_ERR_MPI, "exchanging doorbell addresses");
        goto out;
    }
    for (int p = 0; p < g->wn; p++) peer_pid[p] = p != g->wrank && !strcmp(me.host, all[p].host) ? (pid_t)all[p].pid : 0;
    for (int p = 0; p < g->wrank && !rc; p++) rc = connect_to(&me, &all[p], p);
    /* Higher ranks connect to us, each on the listener for its host. */
    for (int k = g->wrank + 1; k < g->wn && !rc; k++) {
        struct pollfd pf[2] = {{lfd, POLLIN, 0}, {ufd, POLLIN, 0}};
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR) {
                k--;
                continue;
            }
            rc = cdsm__error(CDSM_ERR_NET, "waiting for doorbell connections: %s", strerror(errno));
            break;
        }
        int fd = accept4(pf[0].revents ? lfd : ufd, NULL, NULL, SOCK_CLOEXEC);
        uint32_t r;
        if (fd < 0 || read_full(fd, &r, 4) || r <= (uint32_t)g->wrank || r >= (uint32_t)g->wn || bell[r] >= 0) {
            if (fd >= 0) close(fd);
            rc = cdsm__error(CDSM_ERR_NET, "accepting doorbell connections: %s", fd < 0 ? strerror(errno) : "bad greeting");
            break;
        }
        if (pf[0].revents) set_sock_opts(fd);
        bell[r] = fd;
    }
    if (!rc && (self_in = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        rc = cdsm__error(CDSM_ERR_NET, "eventfd: %s", strerror(errno));
out:
    if (lfd >= 0) close(lfd);
    if (ufd >= 0) close(ufd);
    free(all);
    return rc;
}

pthread_t cdsm__tp_service_thread(void)
{
    return svc;
}

int cdsm__tp_init(void)
{
    cdsm__state_t *g = &cdsm__g;
    bell = malloc((size_t)g->wn * sizeof *bell);
    peer_pid = calloc((size_t)g->wn, sizeof *peer_pid);
    heard_ns = calloc((size_t)g->wn, sizeof *heard_ns);
    if (!bell || !peer_pid || !heard_ns) return cdsm__error(CDSM_ERR_NOMEM, "doorbell table");
    if (cdsm__cfg.heartbeat_ms && cdsm__cfg.heartbeat_timeout_ms < 2 * cdsm__cfg.heartbeat_ms)
        return cdsm__error(CDSM_ERR_CONFIG,
                           "CDSM_HEARTBEAT_TIMEOUT=%llu ms: must be at least twice CDSM_HEARTBEAT_MS=%llu (else a peer "
                           "is declared lost between two of its heartbeats)",
                           (unsigned long long)cdsm__cfg.heartbeat_timeout_ms,
                           (unsigned long long)cdsm__cfg.heartbeat_ms);
    for (int p = 0; p < g->wn; p++) bell[p] = -1;
    int rc = mesh();
    /* Every rank must agree before anyone relies on the mesh. */
    int all = rc;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, g->comm);
    if (all) {
        if (!rc) rc = cdsm__error(CDSM_ERR_NET, "another rank could not set up its doorbells");
        return rc;
    }
    if (pipe2(stop_pipe, O_CLOEXEC)) return cdsm__error(CDSM_ERR_NET, "pipe: %s", strerror(errno));
    rx_count = calloc((size_t)g->wn, sizeof *rx_count);
    ended = calloc((size_t)g->wn, 1);
    debt = calloc((size_t)g->wn, sizeof *debt);
    if (!debt || !ended) return cdsm__error(CDSM_ERR_NOMEM, "doorbell table");
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!rx_count || epfd < 0) return cdsm__error(CDSM_ERR_NET, "epoll_create1: %s", strerror(errno));
    kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (kick_fd < 0) return cdsm__error(CDSM_ERR_NET, "eventfd: %s", strerror(errno));
    for (int p = 0; p <= g->wn + 1; p++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)p};
        int fd = p == g->wn + 1 ? kick_fd : p == g->wn ? stop_pipe[0] : (p == g->wrank ? self_in : bell[p]);
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev))
            return cdsm__error(CDSM_ERR_NET, "epoll_ctl: %s", strerror(errno));
    }
    /* Connect every pair of processes now, in both directions: a first message between
     * two processes later (a spare's first requests after a takeover) sometimes stayed
     * inside MPI for good, both sides progressing (seen under a full test round). */
    int *one = malloc((size_t)g->wn * sizeof *one), *got = malloc((size_t)g->wn * sizeof *got);
    if (!one || !got) {
        free(one);
        free(got);
        return cdsm__error(CDSM_ERR_NOMEM, "connection warm-up");
    }
    for (int p = 0; p < g->wn; p++) one[p] = g->wrank;
    int wrc = MPI_Alltoall(one, 1, MPI_INT, got, 1, MPI_INT, g->comm);
    free(one);
    free(got);
    if (wrc != MPI_SUCCESS) return cdsm__error(CDSM_ERR_MPI, "connecting every pair of processes (MPI_Alltoall)");
    uint64_t now = mono_ns(); /* silence is counted from here */
    for (int p = 0; p < g->wn; p++) heard_ns[p] = now;
    next_beat_ns = now;
    if (pthread_create(&svc, NULL, service_main, NULL))
        return cdsm__error(CDSM_ERR_NOMEM, "cannot start the service thread");
    svc_started = 1;
    return CDSM_OK;
}

void cdsm__tp_fini(void)
{
    if (svc_started) {
        char c = 0;
        if (write(stop_pipe[1], &c, 1) != 1) cdsm__log(CDSM_LOG_WARN, "stopping the service thread: %s", strerror(errno));
        pthread_join(svc, NULL);
        svc_started = 0;
    }
    cdsm__tp_flush();
    for (int i = 0; i < 2; i++)
        if (stop_pipe[i] >= 0) close(stop_pipe[i]);
    stop_pipe[0] = stop_pipe[1] = -1;
    if (bell) {
        for (int p = 0; p < cdsm__g.wn; p++)
            if (bell[p] >= 0) close(bell[p]);
        free(bell);
        bell = NULL;
    }
    if (self_in >= 0) close(self_in);
    self_in = -1;
    if (epfd >= 0) close(epfd);
    if (kick_fd >= 0) close(kick_fd);
    epfd = kick_fd = -1;
    free(rx_count);
    free(ended);
    free(debt);
    free(peer_pid);
    free(heard_ns);
    peer_pid = NULL;
    heard_ns = NULL;
    ended = NULL;
    rx_count = NULL;
    debt = NULL;
}
