/* Doorbells only for sleepers (MPI-doorbell provider, processes on one host): each
 * process shares one small page (a memfd passed to its node-mates over the doorbell
 * socket at start-up) saying whether its application thread is receiving messages itself
 * right now, and counting the messages each sender sent it with no doorbell.
 *
 * Why: a doorbell wakes the receiver's service thread even when its application thread is
 * waiting in the library and takes the message first. On two cores that wake-up was most
 * of a barrier's or lock hand-off's cost (barrier 11-14 us with it, 4.1-4.4 us without,
 * measured 2026-12-03, MPI_Barrier 1.4 us).
 *
 * A credit replaces the doorbell byte, so the receiver's count (doorbell bytes read plus
 * credits collected, minus messages received) stays exact: positive only while a message
 * is surely on its way, and then the receiver waits for it as for a rung one (one pass of
 * MPI progress may not show a message put in a moment before). Order (Dekker): a sender
 * puts the message into MPI, adds a credit, then reads the flag; a receiver clears the
 * flag, then collects the credits and receives once more. Either the receiver collects
 * the credit, or the sender sees the flag clear and takes it back and rings. Skipping
 * is off without heartbeats (CDSM_HEARTBEAT_MS=0), whose wake-ups are the last resort. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bell.h"

enum { AWAKE_BYTE = 3, AWAKE_WAIT_MS = 2000 };

typedef struct awake_page {
    uint32_t receiving; /* the application thread receives itself now */
    uint32_t pad;
    uint32_t credit[];  /* per sender (world rank): messages sent with no doorbell */
} awake_page_t;

static struct awake {
    awake_page_t *self;  /* ours; node-mates map it too */
    awake_page_t **peer; /* per process: its page mapped here, or NULL (always ring) */
    size_t bytes;
} aw;

static void send_page(int p, int fd)
{
    char byte = AWAKE_BYTE;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space, .msg_controllen = sizeof ctl.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(cdsm__bell.bell[p], &mh, MSG_NOSIGNAL) != 1)
        cdsm__log(CDSM_LOG_INFO, "sharing the receiving flag with process %d: %s (it rings every message)", p, strerror(errno));
}

/* Receive and map p's page; NULL (ring p every time) if anything is off. */
static awake_page_t *take_page(int p)
{
    int s = cdsm__bell.bell[p], fd = -1;
    struct pollfd pf = {s, POLLIN, 0};
    if (poll(&pf, 1, AWAKE_WAIT_MS) != 1) return NULL;
    char byte = 0;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space, .msg_controllen = sizeof ctl.space};
    if (recvmsg(s, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1) return NULL;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    struct stat st;
    void *m = MAP_FAILED;
    if (byte == AWAKE_BYTE && fd >= 0 && !fstat(fd, &st) && (size_t)st.st_size >= aw.bytes)
        m = mmap(NULL, aw.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0) close(fd);
    if (m == MAP_FAILED) {
        cdsm__log(CDSM_LOG_INFO, "process %d's receiving flag could not be mapped (it is rung every message)", p);
        return NULL;
    }
    return m;
}

int cdsm__awake_setup(void)
{
    if (!cdsm__cfg.skip_bells || !cdsm__cfg.heartbeat_ms || cdsm__bell.stream) return CDSM_OK;
    aw.bytes = sizeof(awake_page_t) + (size_t)cdsm__w.wn * sizeof(uint32_t);
    aw.peer = calloc((size_t)cdsm__w.wn, sizeof *aw.peer);
    int fd = memfd_create("cdsm-awake", MFD_CLOEXEC);
    if (!aw.peer || fd < 0 || ftruncate(fd, (off_t)aw.bytes)) goto off;
    aw.self = mmap(NULL, aw.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (aw.self == MAP_FAILED) goto off;
    /* All sends first, then all receives: the socket buffers hold them, nobody waits. */
    for (int p = 0; p < cdsm__w.wn; p++)
        if (cdsm__bell.peer_pid[p]) send_page(p, fd);
    for (int p = 0; p < cdsm__w.wn; p++)
        if (cdsm__bell.peer_pid[p]) aw.peer[p] = take_page(p);
    close(fd);
    return CDSM_OK;
off:
    cdsm__log(CDSM_LOG_INFO, "no shared receiving flag (%s): every message rings its doorbell", strerror(errno));
    if (fd >= 0) close(fd);
    if (aw.self == MAP_FAILED) aw.self = NULL;
    free(aw.peer);
    aw.peer = NULL;
    return CDSM_OK;
}

void cdsm__awake_fini(void)
{
    for (int p = 0; aw.peer && p < cdsm__w.wn; p++)
        if (aw.peer[p]) munmap(aw.peer[p], aw.bytes);
    if (aw.self) munmap(aw.self, aw.bytes);
    free(aw.peer);
    memset(&aw, 0, sizeof aw);
}

void cdsm__awake_receiving(int on)
{
    if (aw.self) __atomic_store_n(&aw.self->receiving, (uint32_t)on, __ATOMIC_SEQ_CST);
}

int cdsm__awake_skip(int w)
{
    awake_page_t *pg = aw.peer ? aw.peer[w] : NULL;
    if (!pg) return 0;
    /* Announce first, then look (the message is in MPI already): either the receiver's
     * last pass counts this credit, or we see its flag clear and take the credit back. */
    uint32_t *c = &pg->credit[cdsm__w.wrank];
    __atomic_fetch_add(c, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pg->receiving, __ATOMIC_SEQ_CST)) {
        CDSM_STAT_ADD(doorbells_skipped, 1);
        return 1;
    }
    uint32_t v = __atomic_load_n(c, __ATOMIC_ACQUIRE);
    while (v && !__atomic_compare_exchange_n(c, &v, v - 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    }
    return v == 0; /* 0: taken back, ring; 1: the receiver counted it already */
}

void cdsm__awake_collect(int64_t *rx_count)
{
    if (!aw.self) return;
    for (int p = 0; p < cdsm__w.wn; p++)
        if (aw.peer[p]) rx_count[p] += __atomic_exchange_n(&aw.self->credit[p], 0, __ATOMIC_ACQ_REL);
}
