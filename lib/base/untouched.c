/* Untouched pages from /proc/self/maps (which ranges are anonymous) and
 * /proc/self/pagemap (bit 63 present, bit 62 swapped). */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "untouched.h"

enum { PM_BATCH = 512 };
#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)

/* Mark out[] for the pages of [lo, hi) that pagemap shows never touched. */
static int mark_range(int pm, uintptr_t base, uintptr_t lo, uintptr_t hi, size_t os, uint8_t *out)
{
    uint64_t e[PM_BATCH];
    for (uintptr_t a = lo; a < hi;) {
        size_t n = (hi - a) / os < PM_BATCH ? (hi - a) / os : PM_BATCH;
        ssize_t got = pread(pm, e, n * 8, (off_t)(a / os * 8));
        if (got != (ssize_t)(n * 8)) return -1;
        for (size_t i = 0; i < n; i++) out[(a - base) / os + i] = !(e[i] & (PM_PRESENT | PM_SWAPPED));
        a += n * os;
    }
    return 0;
}

int cdsm__untouched(const char *addr, size_t npages, size_t os, uint8_t *out)
{
    memset(out, 0, npages);
    uintptr_t base = (uintptr_t)addr, end = base + npages * os;
    FILE *maps = fopen("/proc/self/maps", "re");
    int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC), rc = maps && pm >= 0 ? 0 : -1;
    char line[512];
    while (!rc && fgets(line, sizeof line, maps)) {
        uintptr_t lo, hi;
        char perms[8];
        unsigned long long off, inode;
        unsigned dev_major, dev_minor;
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s %llx %x:%x %llu", &lo, &hi, perms, &off, &dev_major,
                   &dev_minor, &inode) != 7)
            continue;
        if (inode || perms[3] != 'p' || hi <= base || lo >= end) continue; /* (a file's, or shared) */
        rc = mark_range(pm, base, lo > base ? lo : base, hi < end ? hi : end, os, out);
    }
    if (maps) fclose(maps);
    if (pm >= 0) close(pm);
    if (rc) memset(out, 0, npages);
    return rc;
}
