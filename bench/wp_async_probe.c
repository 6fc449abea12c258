/* wp_async_probe: what write detection without a signal would cost on this kernel (DESIGN
 * section 6, "Where BARNES's time goes"). Not cdsm: a memfd mapped shared (as the heap
 * is), registered with userfaultfd in write-protect mode with UFFD_FEATURE_WP_ASYNC (the
 * kernel resolves a write to a protected page itself, no signal), written in k pages per
 * round, then PAGEMAP_SCAN with PM_SCAN_WP_MATCHING lists the pages written and protects
 * them again in one call. Prints the cost of such a write and of the scan per round.
 *
 *   ./build/bench/wp_async_probe [K]      (K written pages per round of 16384, default 128)
 *
 * Exit status 0, or 2 where the kernel lacks the features (before 6.7), with a message.
 * The uapi definitions are spelled out: Debian 12's kernel headers (6.1) predate them. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PROBE_UFFD_USER_MODE_ONLY 1
#define PROBE_WP_SHMEM (1 << 12)       /* UFFD_FEATURE_WP_HUGETLBFS_SHMEM */
#define PROBE_WP_UNPOPULATED (1 << 13) /* UFFD_FEATURE_WP_UNPOPULATED */
#define PROBE_WP_ASYNC (1 << 15)       /* UFFD_FEATURE_WP_ASYNC */
#define PROBE_PAGE_IS_WRITTEN (1 << 1)
#define PROBE_PM_SCAN_WP_MATCHING (1 << 0)
#define PROBE_PM_SCAN_CHECK_WPASYNC (1 << 1)

struct probe_region {
    uint64_t start, end, categories;
};
struct probe_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
_Static_assert(sizeof(struct probe_scan_arg) == 96, "struct pm_scan_arg of linux/fs.h");
#define PROBE_PAGEMAP_SCAN _IOWR('f', 16, struct probe_scan_arg)

enum { NPAGES = 16384, ROUNDS = 50 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int unsupported(const char *what)
{
    fprintf(stderr, "wp_async_probe: %s: %s (needs Linux 6.7 or later)\n", what, strerror(errno));
    return 2;
}

/* The region, write-protected with asynchronous resolution; NULL (errno set) if refused. */
static char *protected_region(size_t bytes, int *uffd_out, const char **what)
{
    int fd = memfd_create("wp_async_probe", MFD_CLOEXEC);
    char *m = MAP_FAILED;
    *what = "memfd";
    if (fd < 0 || ftruncate(fd, (off_t)bytes)) return NULL;
    m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return NULL;
    for (size_t o = 0; o < bytes; o += 4096) m[o] = 1; /* (populated, as a used heap is) */
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | PROBE_UFFD_USER_MODE_ONLY);
    struct uffdio_api api = {.api = UFFD_API, .features = PROBE_WP_ASYNC | PROBE_WP_SHMEM | PROBE_WP_UNPOPULATED};
    struct uffdio_register reg = {.range = {(uint64_t)(uintptr_t)m, bytes}, .mode = UFFDIO_REGISTER_MODE_WP};
    struct uffdio_writeprotect wp = {.range = {(uint64_t)(uintptr_t)m, bytes}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
    *what = uffd < 0 ? "userfaultfd" : ioctl(uffd, UFFDIO_API, &api) ? "UFFDIO_API with WP_ASYNC"
                     : ioctl(uffd, UFFDIO_REGISTER, &reg)           ? "UFFDIO_REGISTER (write-protect)"
                     : ioctl(uffd, UFFDIO_WRITEPROTECT, &wp)        ? "UFFDIO_WRITEPROTECT"
                                                                    : NULL;
    if (*what) return NULL;
    *uffd_out = uffd;
    return m;
}

int main(int argc, char **argv)
{
    const size_t ps = 4096, np = NPAGES, bytes = np * ps;
    size_t k = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 128;
    if (k < 1 || k > np) {
        fprintf(stderr, "usage: %s [K]  (written pages per round, 1..%zu)\n", argv[0], np);
        return 1;
    }
    int uffd = -1;
    const char *what;
    char *m = protected_region(bytes, &uffd, &what);
    if (!m) return unsupported(what);
    int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    struct probe_region *vec = calloc(np, sizeof *vec);
    if (pm < 0 || !vec) return unsupported("/proc/self/pagemap");
    double tw = 0, ts = 0;
    size_t found = 0, wrong = 0, stride = np / k;
    for (size_t r = 0; r < ROUNDS; r++) {
        double a = now();
        for (size_t j = 0; j < k; j++) m[(j * stride + r % stride) * ps + 8] = (char)r;
        double b = now();
        struct probe_scan_arg arg = {.size = sizeof arg, .flags = PROBE_PM_SCAN_WP_MATCHING | PROBE_PM_SCAN_CHECK_WPASYNC,
                                     .start = (uint64_t)(uintptr_t)m, .end = (uint64_t)(uintptr_t)m + bytes,
                                     .vec = (uint64_t)(uintptr_t)vec, .vec_len = np,
                                     .category_mask = PROBE_PAGE_IS_WRITTEN, .return_mask = PROBE_PAGE_IS_WRITTEN};
        long n = ioctl(pm, PROBE_PAGEMAP_SCAN, &arg);
        double c = now();
        if (n < 0) return unsupported("PAGEMAP_SCAN");
        size_t pages = 0;
        for (long i = 0; i < n; i++) pages += (size_t)((vec[i].end - vec[i].start) / ps);
        wrong += pages != k;
        found += pages;
        tw += b - a;
        ts += c - b;
    }
    printf("%zu of %zu pages written per round, %d rounds: a write to a protected page %.3f us (no signal); "
           "scan and protect again %.1f us a round (%.3f us per written page); pages found %zu of %zu, "
           "rounds with a wrong count %zu\n",
           k, np, ROUNDS, tw / (double)(ROUNDS * k) * 1e6, ts / ROUNDS * 1e6, ts / (double)(ROUNDS * k) * 1e6, found,
           (size_t)ROUNDS * k, wrong);
    return wrong ? 1 : 0;
}
