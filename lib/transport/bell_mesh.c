/* The MPI-doorbell provider's socket mesh, made once at start-up: every pair of
 * processes gets a doorbell connection (a Unix socket on one host, TCP across hosts). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/random.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "bell.h"
#include "clock.h"

static cdsm__bell_t *const bl = &cdsm__bell;

/* The first bytes on a doorbell connection: who connects, and the job's secret, which only
 * the job's processes know (rank 0 draws it at start-up and broadcasts it over MPI). A
 * listener on all interfaces can be reached by anyone: a stranger's connection (a port
 * scanner, another job, garbage) is closed and logged, never given a rank's slot and never
 * fatal to the job. */
typedef struct greeting {
    char magic[8];      /* "cdsmbell" */
    uint32_t rank;      /* the connecting process (world rank) */
    uint32_t version;   /* GREETING_VERSION */
    uint8_t secret[16]; /* the job's */
} greeting_t;
CDSM__STATIC_ASSERT(sizeof(greeting_t) == 32, "doorbell greeting is a wire format");
enum { GREETING_VERSION = 1, GREETING_WAIT_MS = 2000 };
static const char greeting_magic[8] = {'c', 'd', 's', 'm', 'b', 'e', 'l', 'l'};
static uint8_t job_secret[16];

typedef struct peer_info {
    char host[64];
    uint32_t port;      /* TCP listener, for ranks on other hosts */
    uint32_t pid;       /* names the abstract Unix listener, for ranks on this host */
    uint8_t secret[16]; /* (world rank 0's: the job's) */
    uint32_t failed;    /* its listeners (or rank 0's secret) could not be set up */
} peer_info_t;
_Static_assert(sizeof(peer_info_t) == 92, "peer_info_t is exchanged between processes as bytes");

/* How long a process waits for the higher ranks' connections: one that failed after the
 * exchange (it could not reach this host) stops connecting and never comes. */
enum { MESH_WAIT_MS = 60000 };

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
    greeting_t gr = {.rank = (uint32_t)cdsm__w.wrank, .version = GREETING_VERSION};
    memcpy(gr.magic, greeting_magic, sizeof gr.magic);
    memcpy(gr.secret, job_secret, sizeof gr.secret);
    if (write(fd, &gr, sizeof gr) != (ssize_t)sizeof gr) goto fail;
    bl->bell[peer_rank] = fd;
    return CDSM_OK;
fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    return cdsm__error(CDSM_ERR_NET, "connecting to rank %d at %s: %s", peer_rank, where, strerror(e));
}

/* Rank 0 draws the job's secret; every process learns it over MPI with the addresses
 * (start-up: one collective for both). */
static int draw_secret(peer_info_t *me)
{
    if (cdsm__w.wrank == 0 && getrandom(me->secret, sizeof me->secret, 0) != (ssize_t)sizeof me->secret)
        return cdsm__error(CDSM_ERR_NET, "drawing the job's doorbell secret: %s", strerror(errno));
    return CDSM_OK;
}

/* Read and check an accepted connection's greeting (waiting at most GREETING_WAIT_MS for
 * it); keep the connection as its rank's doorbell, or close it and say why. Returns 0 if
 * kept. */
static int take_greeting(int fd, int tcp)
{
    greeting_t gr;
    struct timeval tv = {GREETING_WAIT_MS / 1000, (GREETING_WAIT_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const char *why = NULL;
    uint8_t diff = 0;
    if (read_full(fd, &gr, sizeof gr)) {
        why = "no complete greeting";
    } else {
        for (size_t i = 0; i < sizeof gr.secret; i++) diff |= (uint8_t)(gr.secret[i] ^ job_secret[i]);
        if (memcmp(gr.magic, greeting_magic, sizeof gr.magic) || gr.version != GREETING_VERSION) why = "not a doorbell greeting";
        else if (diff) why = "a greeting without this job's secret";
        else if (gr.rank <= (uint32_t)cdsm__w.wrank || gr.rank >= (uint32_t)cdsm__w.wn) why = "a greeting naming no higher rank";
        else if (bl->bell[gr.rank] >= 0) why = "a second greeting for a connected rank";
    }
    if (why) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        char who[64] = "a local process";
        if (tcp && !getpeername(fd, (struct sockaddr *)&ss, &sl) && ss.ss_family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            snprintf(who, sizeof who, "%s:%u", inet_ntoa(in->sin_addr), ntohs(in->sin_port));
        }
        cdsm__log(CDSM_LOG_WARN, "doorbell listener: a connection from %s sent %s: closed", who, why);
        close(fd);
        return -1;
    }
    tv = (struct timeval){0, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (tcp) set_sock_opts(fd);
    bl->bell[gr.rank] = fd;
    return 0;
}

/* Every process of the job is connected: whoever still waits in a listen backlog is a
 * stranger. Each is read (its greeting, within the usual bound), logged and closed, rather
 * than left hanging until the listener closes, unnamed. */
static void turn_away_backlog(int lfd, int ufd)
{
    for (;;) {
        struct pollfd pf[2] = {{lfd, POLLIN, 0}, {ufd, POLLIN, 0}};
        if (poll(pf, 2, 0) <= 0) return;
        int tcp = pf[0].revents != 0, fd = accept4(tcp ? lfd : ufd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) return;
        take_greeting(fd, tcp); /* (refused: no rank is left to connect) */
    }
}

/* Open this process's listeners (TCP for other hosts, an abstract Unix socket for this
 * one) and fill in its entry of the exchange. */
static int listen_on(int *lfd, int *ufd, peer_info_t *me)
{
    *lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    *ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*lfd < 0 || *ufd < 0) return cdsm__error(CDSM_ERR_NET, "listen sockets: %s", strerror(errno));
    set_sock_opts(*lfd);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_ANY);
    socklen_t sl = sizeof sa;
    struct sockaddr_un ua;
    socklen_t ul = uds_addr(&ua, me->pid);
    if (bind(*lfd, (struct sockaddr *)&sa, sizeof sa) || listen(*lfd, cdsm__w.wn + 16) ||
        getsockname(*lfd, (struct sockaddr *)&sa, &sl) || bind(*ufd, (struct sockaddr *)&ua, ul) ||
        listen(*ufd, cdsm__w.wn + 16))
        return cdsm__error(CDSM_ERR_NET, "bind/listen: %s", strerror(errno));
    me->port = ntohs(sa.sin_port);
    return draw_secret(me);
}

/* Accept the higher ranks' connections, strangers turned away, for at most MESH_WAIT_MS. */
static int accept_higher(int lfd, int ufd)
{
    uint64_t end = cdsm__mono_ns() + (uint64_t)MESH_WAIT_MS * 1000000u;
    for (int k = cdsm__w.wrank + 1; k < cdsm__w.wn;) {
        uint64_t now = cdsm__mono_ns();
        struct pollfd pf[2] = {{lfd, POLLIN, 0}, {ufd, POLLIN, 0}};
        int n = now < end ? poll(pf, 2, (int)((end - now) / 1000000u) + 1) : 0;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return cdsm__error(CDSM_ERR_NET, "waiting for doorbell connections: %s", strerror(errno));
        if (n == 0) {
            int r = cdsm__w.wrank + 1;
            while (r < cdsm__w.wn && bl->bell[r] >= 0) r++;
            return cdsm__error(CDSM_ERR_NET, "rank %d never connected its doorbell (waited %d s; its log says why)",
                               r, MESH_WAIT_MS / 1000);
        }
        int tcp = pf[0].revents != 0, fd = accept4(tcp ? lfd : ufd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                return cdsm__error(CDSM_ERR_NET, "accepting doorbell connections: %s", strerror(errno));
            continue;
        }
        if (take_greeting(fd, tcp)) continue; /* a stranger: closed, logged */
        k++;
    }
    return CDSM_OK;
}

/* Full mesh: connect to lower ranks, accept higher ones (connects complete in the listen
 * backlog, so the order cannot deadlock). A process whose listeners fail still takes part
 * in the exchange, marked failed, so that nobody waits for it. */
int cdsm__bell_mesh(void)
{
    int lfd = -1, ufd = -1;
    peer_info_t me = {{0}, 0, (uint32_t)getpid(), {0}, 0}, *all = calloc((size_t)cdsm__w.wn, sizeof *all);
    cdsm_check(all != NULL);
    int rc = listen_on(&lfd, &ufd, &me);
    me.failed = rc != CDSM_OK;
    gethostname(me.host, sizeof me.host - 1);
    if (MPI_Allgather(&me, sizeof me, MPI_BYTE, all, sizeof me, MPI_BYTE, cdsm__w.comm) != MPI_SUCCESS) {
        rc = cdsm__error(CDSM_ERR_MPI, "exchanging doorbell addresses and the job's secret");
        goto out;
    }
    for (int p = 0; p < cdsm__w.wn && !rc; p++)
        if (all[p].failed) rc = cdsm__error(CDSM_ERR_NET, "rank %d could not set up its doorbell listeners or draw the job's secret (its log says why)", p);
    if (rc) goto out;
    memcpy(job_secret, all[0].secret, sizeof job_secret);
    for (int p = 0; p < cdsm__w.wn; p++) bl->peer_pid[p] = p != cdsm__w.wrank && !strcmp(me.host, all[p].host) ? (pid_t)all[p].pid : 0;
    for (int p = 0; p < cdsm__w.wrank && !rc; p++) rc = connect_to(&me, &all[p], p);
    /* Higher ranks connect to us, each on the listener for its host. */
    if (!rc) rc = accept_higher(lfd, ufd);
    if (!rc) turn_away_backlog(lfd, ufd);
    if (!rc) rc = cdsm__awake_setup();
    if (!rc) cdsm__heapfd_setup();
    if (!rc) cdsm__rma_plan();
    if (!rc) rc = cdsm__board_setup();
    if (!rc) rc = cdsm__words_setup();
    if (!rc && (bl->self_in = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        rc = cdsm__error(CDSM_ERR_NET, "eventfd: %s", strerror(errno));
out:
    if (lfd >= 0) close(lfd);
    if (ufd >= 0) close(ufd);
    free(all);
    return rc;
}
