/* The checkpoint file layer's own helpers, shared by its writer and folder half
 * (ckpt_file.c) and its reader half (ckpt_file_read.c). Internal to lib/ft. */
#ifndef CDSM_CKPT_FILE_INT_H
#define CDSM_CKPT_FILE_INT_H

#include "h5shim.h"
#include <stddef.h>
#include <stdint.h>

#include "ckpt_file.h"

/* Where an operation stands: the first failure's status and message win. */
typedef struct ctx {
    const char *path;
    int status;
    char why[384];
} ckf_ctx_t;

/* Record a failure (the first one only); returns -1. */
int cdsm__ckf_fail(ckf_ctx_t *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Like cdsm__ckf_fail, adding HDF5's own innermost message. */
int cdsm__ckf_fail_h5(ckf_ctx_t *c, int status, const char *what);

/* HDF5 prints its error stack by default; the library reports errors itself. */
typedef struct h5quiet {
    H5E_auto2_t func;
    void *data;
} ckf_h5quiet_t;
void cdsm__ckf_h5_quiet(ckf_h5quiet_t *q);
void cdsm__ckf_h5_restore(const ckf_h5quiet_t *q);

/* CRC-32C of nelem little-endian elements of elsize bytes. */
uint32_t cdsm__ckf_crc_le(const void *buf, size_t nelem, size_t elsize);
/* The header checksum of a checkpoint. */
uint32_t cdsm__ckf_header_crc(const cdsm__ckpt_t *c);
/* The last part of a path. */
const char *cdsm__ckf_base_name(const char *path);
/* rank<r>.ckpt<seq>.h5 (committed) and its temporary name: 1 if name is one. */
int cdsm__ckf_parse_committed(const char *name, uint64_t *rank, uint64_t *seq);
int cdsm__ckf_parse_temp(const char *name, uint64_t *rank);

#endif
