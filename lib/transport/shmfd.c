/* Shared memory between node-mates (MPI-doorbell provider): a process hands a memfd to
 * each process on its host over their doorbell socket at start-up (SCM_RIGHTS, with a
 * one-byte tag saying what it is), and maps each node-mate's. Used by the receiving flags
 * (awake.c) and the published diffs (board.c). All sends come before all receives, so the
 * socket buffers hold them and nobody waits for anybody. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bell.h"

enum { SHMFD_WAIT_MS = 2000 };

typedef union {
    struct cmsghdr h;
    char space[CMSG_SPACE(sizeof(int))];
} fd_ctl_t;

/* Hand fd to node-mate p over its doorbell socket, with a tag byte saying what it is. */
static void shmfd_send(int p, int fd, uint8_t tag, const char *what)
{
    char byte = (char)tag;
    struct iovec iov = {&byte, 1};
    fd_ctl_t ctl;
    memset(&ctl, 0, sizeof ctl);
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space, .msg_controllen = sizeof ctl.space};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(cdsm__bell.bell[p], &mh, MSG_NOSIGNAL) != 1)
        cdsm__log(CDSM_LOG_INFO, "sharing %s with process %d: %s", what, p, strerror(errno));
}

/* Receive one tag byte from p (waiting up to SHMFD_WAIT_MS), and the fd that came with it
 * (-1: none, or nothing came: *byte then 0). */
static int shmfd_recv(int p, char *byte)
{
    int s = cdsm__bell.bell[p], fd = -1;
    struct pollfd pf = {s, POLLIN, 0};
    struct iovec iov = {byte, 1};
    fd_ctl_t ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space, .msg_controllen = sizeof ctl.space};
    *byte = 0;
    if (poll(&pf, 1, SHMFD_WAIT_MS) != 1 || recvmsg(s, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

/* Take p's fd (the tag must match) and map `bytes` of it with prot; NULL, logged, if
 * anything is off. */
static void *shmfd_take(int p, uint8_t tag, size_t bytes, int prot, const char *what)
{
    char byte;
    int fd = shmfd_recv(p, &byte);
    struct stat st;
    void *m = MAP_FAILED;
    if (byte == (char)tag && fd >= 0 && !fstat(fd, &st) && (size_t)st.st_size >= bytes)
        m = mmap(NULL, bytes, prot, MAP_SHARED, fd, 0);
    if (fd >= 0) close(fd);
    if (m != MAP_FAILED) return m;
    cdsm__log(CDSM_LOG_INFO, "process %d's %s could not be mapped (its messages take the usual path)", p, what);
    return NULL;
}

void cdsm__shmfd_unmap(void *self, void **peer, size_t bytes)
{
    for (int p = 0; peer && p < cdsm__w.wn; p++)
        if (peer[p]) munmap(peer[p], bytes);
    if (self) munmap(self, bytes);
    free(peer);
}

void *cdsm__shmfd_create(const char *name, size_t bytes, int populate, int *fd)
{
    void *m = MAP_FAILED;
    *fd = memfd_create(name, MFD_CLOEXEC);
    if (*fd >= 0 && !ftruncate(*fd, (off_t)bytes))
        m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (populate ? MAP_POPULATE : 0), *fd, 0);
    if (m != MAP_FAILED) return m;
    if (*fd >= 0) close(*fd);
    *fd = -1;
    return NULL;
}

void cdsm__shmfd_exchange(int fd, uint8_t tag, size_t bytes, int prot, const char *what, void **peer)
{
    /* All sends first, then all receives: the socket buffers hold them, nobody waits. */
    for (int p = 0; p < cdsm__w.wn; p++)
        if (cdsm__bell.peer_pid[p]) shmfd_send(p, fd, tag, what);
    for (int p = 0; p < cdsm__w.wn; p++)
        if (cdsm__bell.peer_pid[p]) peer[p] = shmfd_take(p, tag, bytes, prot, what);
    close(fd);
}

void *cdsm__shmfd_share(const cdsm__shm_seg_t *seg, void ***peer)
{
    int fd = -1;
    void *self = NULL;
    *peer = calloc((size_t)cdsm__w.wn, sizeof **peer);
    if (*peer) self = cdsm__shmfd_create(seg->name, seg->bytes, seg->populate, &fd);
    if (!self) {
        int e = *peer ? errno : ENOMEM;
        free(*peer);
        *peer = NULL;
        errno = e;
        return NULL;
    }
    if (seg->init) seg->init(self);
    cdsm__shmfd_exchange(fd, seg->tag, seg->bytes, seg->prot, seg->what, *peer);
    return self;
}

int cdsm__shmfd_any_mate(void)
{
    for (int p = 0; p < cdsm__w.wn; p++)
        if (cdsm__bell.peer_pid[p]) return 1;
    return 0;
}

/* ---- the node heap: one process's segment handed to every other ------------------------ */

enum { HEAPFD_BYTE = 6 };

static struct {
    int offered; /* the fd the layer above offered (ours, not closed here), or -1 */
    int got;     /* rank 0's, received (the layer above takes it), or -1 */
    int shared;  /* rank 0: handed to every other process */
} hf = {-1, -1, 0};

void cdsm__tp_offer_heap_fd(int fd)
{
    hf.offered = fd;
    hf.got = -1;
    hf.shared = 0;
}

/* Only when every process of the job is on this host: the heap is then one. */
static int all_mates(void)
{
    for (int p = 0; p < cdsm__w.wn; p++)
        if (p != cdsm__w.wrank && !cdsm__bell.peer_pid[p]) return 0;
    return cdsm__w.wn > 1;
}

/* Take p's fd with the tag (no mapping); -1 if none came with it (logged only when the tag
 * itself did not come). */
static int shmfd_take_fd(int p, uint8_t tag, const char *what)
{
    char byte;
    int fd = shmfd_recv(p, &byte);
    if (fd >= 0 && byte == (char)tag) return fd;
    if (fd >= 0) close(fd);
    if (byte != (char)tag) cdsm__log(CDSM_LOG_INFO, "process %d's %s did not arrive", p, what);
    return -1;
}

/* Tell p there is no fd: the tag byte alone. */
static void shmfd_send_none(int p, uint8_t tag)
{
    char byte = (char)tag;
    if (send(cdsm__bell.bell[p], &byte, 1, MSG_NOSIGNAL) != 1)
        cdsm__log(CDSM_LOG_INFO, "telling process %d there is no node heap: %s", p, strerror(errno));
}

/* At start-up, before the board and the lock words, when every process runs on this
 * host: the process of rank 0 hands the heap fd it was offered to every other one (the
 * tag byte alone if it was offered none), and every other one takes it, whether it
 * offered one or not, so that nothing is left on the doorbell sockets. Whether the heap
 * is then one is decided above, by every rank together (a receiver may have failed). */
void cdsm__heapfd_setup(void)
{
    if (cdsm__bell.stream || !all_mates()) return;
    int zero = cdsm__w.phys[0];
    if (cdsm__w.wrank == zero) {
        for (int p = 0; p < cdsm__w.wn; p++)
            if (p != zero && hf.offered >= 0) shmfd_send(p, hf.offered, HEAPFD_BYTE, "the node heap");
            else if (p != zero) shmfd_send_none(p, HEAPFD_BYTE);
        hf.shared = hf.offered >= 0;
        return;
    }
    int fd = shmfd_take_fd(zero, HEAPFD_BYTE, "node heap");
    if (fd >= 0 && hf.offered < 0) {
        close(fd); /* (this process wants none: CDSM_NODE_HEAP=0, or a setting rules it out) */
        fd = -1;
    }
    hf.got = fd;
}

int cdsm__heapfd_passed(void)
{
    return hf.shared || hf.got >= 0;
}

int cdsm__tp_node_heap_fd(void)
{
    int fd = hf.shared ? -2 : hf.got;
    hf.got = -1;
    return fd;
}
