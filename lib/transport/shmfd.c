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

/* Take p's fd (the tag must match) and map `bytes` of it with prot; NULL, logged, if
 * anything is off. */
static void *shmfd_take(int p, uint8_t tag, size_t bytes, int prot, const char *what)
{
    int s = cdsm__bell.bell[p], fd = -1;
    struct pollfd pf = {s, POLLIN, 0};
    if (poll(&pf, 1, SHMFD_WAIT_MS) != 1) goto off;
    char byte = 0;
    struct iovec iov = {&byte, 1};
    fd_ctl_t ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space, .msg_controllen = sizeof ctl.space};
    if (recvmsg(s, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1) goto off;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) memcpy(&fd, CMSG_DATA(c), sizeof fd);
    struct stat st;
    void *m = MAP_FAILED;
    if (byte == (char)tag && fd >= 0 && !fstat(fd, &st) && (size_t)st.st_size >= bytes)
        m = mmap(NULL, bytes, prot, MAP_SHARED, fd, 0);
    if (fd >= 0) close(fd);
    if (m != MAP_FAILED) return m;
off:
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
