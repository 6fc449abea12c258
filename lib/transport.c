/* Transport: protocol messages travel as MPI messages on the library's own communicator;
 * each is announced by one byte on a per-peer TCP "doorbell" socket. The service thread
 * sleeps in epoll_wait() on the doorbells (it never spins while idle), and when woken receives
 * exactly as many MPI messages from that peer as bytes arrived: a byte may arrive before
 * its message, so it counts doorbells and receives that many. The same sockets show a
 * dead peer as end-of-file.
 *
 * Receiving is shared: the service thread sleeps in epoll_wait(); an application thread
 * that waits for a reply drains the same doorbells itself for up to CDSM_SPIN_US before
 * it sleeps, which saves two thread wake-ups per round trip (the service thread's and its
 * own). Whoever holds rx_mu reads the doorbells and receives; the other finds nothing.
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
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

typedef struct pend {
    struct pend *next;
    MPI_Request req;
    void *buf;
} pend_t;

static __thread pend_t *pending; /* this thread's incomplete sends */
static __thread int in_service;

static int *bell;          /* per peer: socket we write doorbells to (self: socketpair end) */
static int self_in = -1;   /* read end of our own doorbell */
static int stop_pipe[2] = {-1, -1};
static int epfd = -1;      /* every doorbell we read, and the stop pipe */
static pthread_mutex_t rx_mu = PTHREAD_MUTEX_INITIALIZER; /* whoever holds it receives */
static uint64_t *rx_count; /* per peer: doorbells read whose message is not received yet */
static pthread_t svc;
static int svc_started;

typedef struct peer_info {
    char host[64];
    uint32_t port;
} peer_info_t;

/* ---- sends ---------------------------------------------------------------------------- */

static void test_pending(void)
{
    pend_t **pp = &pending;
    while (*pp) {
        int done = 0;
        MPI_Test(&(*pp)->req, &done, MPI_STATUS_IGNORE);
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

static int ring(int dst)
{
    char c = 1;
    for (;;) {
        ssize_t w = send(bell[dst], &c, 1, MSG_NOSIGNAL);
        if (w == 1) return CDSM_OK;
        if (w < 0 && errno == EINTR) continue;
        return cdsm__error(CDSM_ERR_PEER_LOST, "doorbell to rank %d: %s", dst,
                           w < 0 ? strerror(errno) : "short write");
    }
}

int cdsm__tp_send(int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2)
{
    cdsm__state_t *g = &cdsm__g;
    size_t total = sizeof(cdsm__msg_hdr_t) + l1 + l2;
    if (total > INT32_MAX)
        return cdsm__error(CDSM_ERR_PROTOCOL, "message of %zu bytes to rank %d is too large", total, dst);
    pend_t *pe = malloc(sizeof *pe);
    uint8_t *buf = malloc(total);
    if (!pe || !buf) {
        free(pe);
        free(buf);
        return cdsm__error(CDSM_ERR_NOMEM, "message buffer of %zu bytes", total);
    }
    cdsm__msg_hdr_t h = {(uint16_t)type, (uint16_t)g->rank, (uint32_t)(l1 + l2), tag};
    memcpy(buf, &h, sizeof h);
    if (l1) memcpy(buf + sizeof h, p1, l1);
    if (l2) memcpy(buf + sizeof h + l1, p2, l2);
    int mrc = MPI_Isend(buf, (int)total, MPI_BYTE, dst, type, g->comm, &pe->req);
    if (mrc != MPI_SUCCESS) {
        free(pe);
        free(buf);
        return cdsm__error(CDSM_ERR_MPI, "MPI_Isend of %zu bytes to rank %d failed (%d)", total, dst, mrc);
    }
    pe->buf = buf;
    pe->next = pending;
    pending = pe;
    CDSM_STAT_ADD(msgs_sent, 1);
    CDSM_STAT_ADD(bytes_sent, total);
    int rc = ring(dst);
    test_pending();
    return rc;
}

int cdsm__tp_flush(void)
{
    while (pending) {
        pend_t *d = pending;
        pending = d->next;
        int mrc = MPI_Wait(&d->req, MPI_STATUS_IGNORE);
        free(d->buf);
        free(d);
        if (mrc != MPI_SUCCESS) return cdsm__error(CDSM_ERR_MPI, "MPI_Wait on a send failed (%d)", mrc);
    }
    return CDSM_OK;
}

/* ---- replies to the application thread ------------------------------------------------- */

cdsm__reply_t *cdsm__wait_reply(int type, uint64_t tag)
{
    cdsm__state_t *g = &cdsm__g;
    /* Complete our own sends before sleeping: the peer may need them to progress. */
    pthread_mutex_unlock(&g->mu);
    cdsm__tp_flush();
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t spin_ns = cdsm__cfg.spin_us * 1000u;
    pthread_mutex_lock(&g->mu);
    for (int spinning = spin_ns > 0;;) {
        for (cdsm__reply_t **pp = &g->replies; *pp; pp = &(*pp)->next) {
            cdsm__reply_t *r = *pp;
            if (r->hdr.type == type && r->hdr.tag == tag) {
                *pp = r->next;
                return r;
            }
        }
        if (!spinning) {
            pthread_cond_wait(&g->cv, &g->mu);
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

static int recv_one(int src)
{
    cdsm__state_t *g = &cdsm__g;
    MPI_Message m;
    MPI_Status st;
    int count = 0;
    if (MPI_Mprobe(src, MPI_ANY_TAG, g->comm, &m, &st) != MPI_SUCCESS) return CDSM_ERR_MPI;
    MPI_Get_count(&st, MPI_BYTE, &count);
    uint8_t *buf = malloc(count > 0 ? (size_t)count : 1);
    cdsm_check(buf != NULL);
    if (MPI_Mrecv(buf, count, MPI_BYTE, &m, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        free(buf);
        return CDSM_ERR_MPI;
    }
    cdsm__msg_hdr_t h;
    if ((size_t)count < sizeof h) goto bad;
    memcpy(&h, buf, sizeof h);
    if (h.src != src || h.len != (size_t)count - sizeof h || h.type == 0 || h.type >= CDSM_MSG_TYPES ||
        h.type != st.MPI_TAG)
        goto bad;
    CDSM_STAT_ADD(msgs_recv, 1);
    CDSM_STAT_ADD(bytes_recv, count);
    cdsm__dispatch(&h, buf);
    return CDSM_OK;
bad:
    free(buf);
    cdsm__log(CDSM_LOG_ERROR, "malformed message of %d bytes from rank %d", count, src);
    return CDSM_ERR_PROTOCOL;
}

/* Read the doorbells epoll reported, then receive and dispatch that many messages.
 * Caller holds rx_mu. Returns 1 if the stop pipe fired. */
static int rx_drain(const struct epoll_event *ev, int nev)
{
    cdsm__state_t *g = &cdsm__g;
    int stop = 0;
    for (int i = 0; i < nev; i++) {
        int p = (int)ev[i].data.u32;
        if (p == g->n) {
            stop = 1;
            continue;
        }
        int fd = p == g->rank ? self_in : bell[p];
        char tmp[256];
        ssize_t r = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (r > 0) {
            rx_count[p] += (uint64_t)r;
            CDSM_STAT_ADD(doorbells, 1);
        } else if (r == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
            /* The peer's end closed: at finalize this is expected. */
            if (!__atomic_load_n(&g->finalizing, __ATOMIC_ACQUIRE))
                cdsm__log(CDSM_LOG_WARN, "rank %d closed its doorbell connection (process lost?)", p);
            epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        }
    }
    for (int p = 0; p < g->n; p++)
        while (rx_count[p]) {
            if (recv_one(p)) cdsm_check(!"unreadable protocol message");
            rx_count[p]--;
        }
    return stop;
}

int cdsm__tp_progress(void)
{
    struct epoll_event ev[64];
    if (epfd < 0 || pthread_mutex_trylock(&rx_mu)) return 0;
    int nev = epoll_wait(epfd, ev, 64, 0);
    if (nev > 0) rx_drain(ev, nev);
    pthread_mutex_unlock(&rx_mu);
    return nev > 0 ? nev : 0;
}

static void *service_main(void *arg)
{
    (void)arg;
    in_service = 1;
    struct epoll_event ev[64];
    for (;;) {
        /* Asleep until a doorbell rings; 1 ms naps only while our own sends are incomplete. */
        int nev = epoll_wait(epfd, ev, 64, pending ? 1 : -1);
        if (nev < 0 && errno != EINTR) {
            cdsm__log(CDSM_LOG_ERROR, "service thread: epoll_wait: %s", strerror(errno));
            break;
        }
        int stop = 0;
        if (nev > 0) {
            pthread_mutex_lock(&rx_mu);
            stop = rx_drain(ev, nev);
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

static int connect_to(const peer_info_t *me, const peer_info_t *peer, int peer_rank)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    char port[16];
    snprintf(port, sizeof port, "%u", peer->port);
    /* Same host: loopback, whatever the name resolves to. */
    const char *host = strcmp(me->host, peer->host) ? peer->host : "127.0.0.1";
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai)
        return cdsm__error(CDSM_ERR_NET, "resolving %s for rank %d: %s", host, peer_rank, gai_strerror(gai));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen)) {
        int e = errno;
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return cdsm__error(CDSM_ERR_NET, "connecting to rank %d at %s:%s: %s", peer_rank, host, port, strerror(e));
    }
    freeaddrinfo(ai);
    set_sock_opts(fd);
    uint32_t r = (uint32_t)cdsm__g.rank;
    if (write(fd, &r, 4) != 4) {
        close(fd);
        return cdsm__error(CDSM_ERR_NET, "greeting rank %d: %s", peer_rank, strerror(errno));
    }
    bell[peer_rank] = fd;
    return CDSM_OK;
}

/* Full mesh: connect to lower ranks, accept higher ones (connects complete in the listen
 * backlog, so the order cannot deadlock). */
static int mesh(void)
{
    cdsm__state_t *g = &cdsm__g;
    int rc = CDSM_OK, lfd = socket(AF_INET, SOCK_STREAM, 0);
    peer_info_t me = {{0}, 0}, *all = calloc((size_t)g->n, sizeof *all);
    if (lfd < 0 || !all) {
        rc = cdsm__error(CDSM_ERR_NET, "listen socket: %s", strerror(errno));
        goto out;
    }
    set_sock_opts(lfd);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t sl = sizeof sa;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, g->n + 16) ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl)) {
        rc = cdsm__error(CDSM_ERR_NET, "bind/listen: %s", strerror(errno));
        goto out;
    }
    gethostname(me.host, sizeof me.host - 1);
    me.port = ntohs(sa.sin_port);
    if (MPI_Allgather(&me, sizeof me, MPI_BYTE, all, sizeof me, MPI_BYTE, g->comm) != MPI_SUCCESS) {
        rc = cdsm__error(CDSM_ERR_MPI, "exchanging doorbell addresses");
        goto out;
    }
    for (int p = 0; p < g->rank && !rc; p++) rc = connect_to(&me, &all[p], p);
    for (int k = g->rank + 1; k < g->n && !rc; k++) {
        int fd = accept(lfd, NULL, NULL);
        uint32_t r;
        if (fd < 0 || read_full(fd, &r, 4) || r <= (uint32_t)g->rank || r >= (uint32_t)g->n || bell[r] >= 0) {
            if (fd >= 0) close(fd);
            rc = cdsm__error(CDSM_ERR_NET, "accepting doorbell connections: %s", fd < 0 ? strerror(errno) : "bad greeting");
            break;
        }
        set_sock_opts(fd);
        bell[r] = fd;
    }
    int sp[2];
    if (!rc && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp))
        rc = cdsm__error(CDSM_ERR_NET, "socketpair: %s", strerror(errno));
    else if (!rc) {
        bell[g->rank] = sp[1];
        self_in = sp[0];
    }
out:
    if (lfd >= 0) close(lfd);
    free(all);
    return rc;
}

int cdsm__tp_init(void)
{
    cdsm__state_t *g = &cdsm__g;
    bell = malloc((size_t)g->n * sizeof *bell);
    if (!bell) return cdsm__error(CDSM_ERR_NOMEM, "doorbell table");
    for (int p = 0; p < g->n; p++) bell[p] = -1;
    int rc = mesh();
    /* Every rank must agree before anyone relies on the mesh. */
    int all = rc;
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, g->comm);
    if (all) {
        if (!rc) rc = cdsm__error(CDSM_ERR_NET, "another rank could not set up its doorbells");
        return rc;
    }
    if (pipe2(stop_pipe, O_CLOEXEC)) return cdsm__error(CDSM_ERR_NET, "pipe: %s", strerror(errno));
    rx_count = calloc((size_t)g->n, sizeof *rx_count);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!rx_count || epfd < 0) return cdsm__error(CDSM_ERR_NET, "epoll_create1: %s", strerror(errno));
    for (int p = 0; p <= g->n; p++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)p};
        int fd = p == g->n ? stop_pipe[0] : (p == g->rank ? self_in : bell[p]);
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev))
            return cdsm__error(CDSM_ERR_NET, "epoll_ctl: %s", strerror(errno));
    }
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
        for (int p = 0; p < cdsm__g.n; p++)
            if (bell[p] >= 0) close(bell[p]);
        free(bell);
        bell = NULL;
    }
    if (self_in >= 0) close(self_in);
    self_in = -1;
    if (epfd >= 0) close(epfd);
    epfd = -1;
    free(rx_count);
    rx_count = NULL;
}
