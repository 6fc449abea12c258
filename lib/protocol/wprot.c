/* Write detection by userfaultfd write-protect bits (CDSM_WRITE_DETECT).
 *
 * With mprotect, a read-only page is a mapping of its own: every first write splits the
 * heap's mapping and every interval end merges it again, and each change flushes the
 * other threads' TLBs through the mm's mapping lock (DESIGN, "Write detection"). A
 * userfaultfd write-protect bit is a bit in the page-table entry: the page stays mapped
 * read-write, a write to it raises SIGBUS (UFFD_FEATURE_SIGBUS: no handler thread to
 * wake), and setting or clearing it changes page-table entries only. Read-only is then
 * "writable, write-protected"; invalid pages keep PROT_NONE. Needs write-protect on
 * shared memory (Linux 6.0); elsewhere the heap keeps mprotect. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proto.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif

enum { WD_AUTO = 0, WD_UFFD = 1, WD_MPROTECT = 2 };

static int uffd = -1;

int cdsm__wp_uffd(void)
{
    return uffd >= 0;
}

/* A userfaultfd for write-protect faults raised as SIGBUS, or -1 with *why set. */
static int uffd_open(const char **why)
{
    /* User-mode faults only: what an unprivileged process may ask for (a write the kernel
     * makes on the program's behalf, read(2) into a protected page, fails with EFAULT as
     * it does under mprotect). Kernels before 5.11 know no such flag. */
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0 && errno == EINVAL) fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        *why = strerror(errno);
        return -1;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
    if (ioctl(fd, UFFDIO_API, &api)) {
        *why = "the kernel has no write-protect on shared memory (Linux 6.0 or later)";
        close(fd);
        return -1;
    }
    return fd;
}

/* Register [addr, addr + len) for write-protect; NULL, or why not. */
static const char *register_range(void *addr, size_t len)
{
    errno = 0;
    struct uffdio_register r = {.range = {(uintptr_t)addr, len}, .mode = UFFDIO_REGISTER_MODE_WP};
    if (!ioctl(uffd, UFFDIO_REGISTER, &r) && (r.ioctls & (1ull << _UFFDIO_WRITEPROTECT))) return NULL;
    return errno ? strerror(errno) : "write-protect not offered for this mapping";
}

int cdsm__wp_register(void *addr, size_t len)
{
    const char *why = uffd < 0 || !len ? NULL : register_range(addr, len);
    if (why) return cdsm__error(CDSM_ERR_HEAP_MAP, "userfaultfd write-protect of %p..+%zu: %s", addr, len, why);
    return CDSM_OK;
}

int cdsm__wp_init(void *addr, size_t len)
{
    if (cdsm__cfg.write_detect == WD_MPROTECT) return CDSM_OK;
    const char *why = NULL;
    uffd = uffd_open(&why);
    if (uffd >= 0 && (why = register_range(addr, len))) {
        close(uffd);
        uffd = -1;
    }
    if (uffd >= 0) return CDSM_OK;
    if (cdsm__cfg.write_detect == WD_UFFD)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_WRITE_DETECT=uffd: userfaultfd unavailable: %s", why);
    cdsm__log(CDSM_LOG_INFO, "write detection by mprotect: userfaultfd unavailable (%s)", why);
    return CDSM_OK;
}

void cdsm__wp_range(void *addr, size_t len, int on)
{
    struct uffdio_writeprotect w = {.range = {(uintptr_t)addr, len}, .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
    while (ioctl(uffd, UFFDIO_WRITEPROTECT, &w)) {
        if (errno == EAGAIN || errno == EINTR) continue; /* (the mapping changed meanwhile) */
        /* Only fails on a bad range: a page left writable would lose writes. */
        cdsm__log(CDSM_LOG_ERROR, "userfaultfd write-protect %s of %p..+%zu: %s", on ? "set" : "clear", addr, len,
                  strerror(errno));
        cdsm_check(!"userfaultfd write-protect failed");
    }
}

void cdsm__wp_fini(void)
{
    if (uffd < 0) return;
    /* Closing the descriptor drops the registrations; the globals, which live on, lose
     * their bits first (kernels before 6.2 leave them set on unregistration). */
    if (cdsm__heap.gmapped) cdsm__wp_range(cdsm__heap.gbase, cdsm__heap.gsize, 0);
    close(uffd);
    uffd = -1;
}
