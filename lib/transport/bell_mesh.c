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
#include <sys/un.h>
#include <unistd.h>

#include "bell.h"

static cdsm__bell_t *const bl = &cdsm__bell;

typedef struct peer_info {
    char host[64];
    uint32_t port; /* TCP listener, for ranks on other hosts */
    uint32_t pid;  /* names the abstract Unix listener, for ranks on this host */
} peer_info_t;

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
    uint32_t r = (uint32_t)cdsm__w.wrank;
    if (write(fd, &r, 4) != 4) goto fail;
    bl->bell[peer_rank] = fd;
    return CDSM_OK;
fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    return cdsm__error(CDSM_ERR_NET, "connecting to rank %d at %s: %s", peer_rank, where, strerror(e));
}

/* Full mesh: connect to lower ranks, accept higher ones (connects complete in the listen
 * backlog, so the order cannot deadlock). */
int cdsm__bell_mesh(void)
{
    int rc = CDSM_OK, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ufd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    peer_info_t me = {{0}, 0, (uint32_t)getpid()}, *all = calloc((size_t)cdsm__w.wn, sizeof *all);
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
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, cdsm__w.wn + 16) ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) || bind(ufd, (struct sockaddr *)&ua, ul) ||
        listen(ufd, cdsm__w.wn + 16)) {
        rc = cdsm__error(CDSM_ERR_NET, "bind/listen: %s", strerror(errno));
        goto out;
    }
    gethostname(me.host, sizeof me.host - 1);
    me.port = ntohs(sa.sin_port);
    if (MPI_Allgather(&me, sizeof me, MPI_BYTE, all, sizeof me, MPI_BYTE, cdsm__w.comm) != MPI_SUCCESS) {
        rc = cdsm__error(CDSM_ERR_MPI, "exchanging doorbell addresses");
        goto out;
    }
    for (int p = 0; p < cdsm__w.wn; p++) bl->peer_pid[p] = p != cdsm__w.wrank && !strcmp(me.host, all[p].host) ? (pid_t)all[p].pid : 0;
    for (int p = 0; p < cdsm__w.wrank && !rc; p++) rc = connect_to(&me, &all[p], p);
    /* Higher ranks connect to us, each on the listener for its host. */
    for (int k = cdsm__w.wrank + 1; k < cdsm__w.wn && !rc; k++) {
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
        if (fd < 0 || read_full(fd, &r, 4) || r <= (uint32_t)cdsm__w.wrank || r >= (uint32_t)cdsm__w.wn || bl->bell[r] >= 0) {
            if (fd >= 0) close(fd);
            rc = cdsm__error(CDSM_ERR_NET, "accepting doorbell connections: %s", fd < 0 ? strerror(errno) : "bad greeting");
            break;
        }
        if (pf[0].revents) set_sock_opts(fd);
        bl->bell[r] = fd;
    }
    if (!rc && (bl->self_in = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        rc = cdsm__error(CDSM_ERR_NET, "eventfd: %s", strerror(errno));
out:
    if (lfd >= 0) close(lfd);
    if (ufd >= 0) close(ufd);
    free(all);
    return rc;
}
