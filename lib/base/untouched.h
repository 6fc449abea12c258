/* Which pages of a private anonymous mapping were never touched (internal, every floor).
 *
 * Such a page reads as zero, and reading it to find that out maps the zero page with a
 * fault each (a program's untouched .bss of 256 MiB: tens of milliseconds at start-up).
 * /proc/self/pagemap says it without touching: neither present nor swapped. Only for
 * anonymous mappings: a page of a file mapping that is not present holds the file's
 * bytes. */
#ifndef CDSM_UNTOUCHED_H
#define CDSM_UNTOUCHED_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* For each of the npages pages of `os` bytes from addr: out[i] = 1 when it lies in an
 * anonymous private mapping and was never touched, else 0. Returns 0, or -1 when this
 * cannot be told (out then all 0: the caller reads every page). */
int cdsm__untouched(const char *addr, size_t npages, size_t os, uint8_t *out);

#ifdef __cplusplus
}
#endif
#endif
