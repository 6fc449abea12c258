/* Checkpoint files in HDF5: write with an atomic commit, read with every byte verified.
 * The format is documented in docs/CHECKPOINT_FORMAT.md. */
#include "ckpt_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include "h5shim.h"
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cdsm.h"
#include "ckpt_file_int.h"
#include "inject.h"
#include "log.h"

/* ---- CRC-32C -------------------------------------------------------------------------- */

static uint32_t crc_table[256];
static int crc_table_ready;

static void crc_init(void)
{
    if (__atomic_load_n(&crc_table_ready, __ATOMIC_ACQUIRE)) return;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[i] = c;
    }
    __atomic_store_n(&crc_table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t cdsm__ckpt_crc32c_sw(uint32_t crc, const void *buf, size_t n)
{
    crc_init();
    const uint8_t *p = buf;
    uint32_t c = ~crc;
    while (n--) c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    while (n--) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

uint32_t cdsm__ckpt_crc32c(uint32_t crc, const void *buf, size_t n)
{
#if defined(__x86_64__)
    static int hw = -1;
    if (hw < 0) hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    if (hw) return crc_hw(crc, buf, n);
#endif
    return cdsm__ckpt_crc32c_sw(crc, buf, n);
}

/* CRC of nelem elements of elsize bytes as stored in the file (little-endian). */
uint32_t cdsm__ckf_crc_le(const void *buf, size_t nelem, size_t elsize)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return cdsm__ckpt_crc32c(0, buf, nelem * elsize);
#else
    uint32_t crc = 0;
    const uint8_t *p = buf;
    uint8_t tmp[8];
    for (size_t i = 0; i < nelem; i++, p += elsize) {
        for (size_t k = 0; k < elsize; k++) tmp[k] = p[elsize - 1 - k];
        crc = cdsm__ckpt_crc32c(crc, tmp, elsize);
    }
    return crc;
#endif
}

/* ---- error context -------------------------------------------------------------------- */


/* The innermost HDF5 error message, for the report. */
static herr_t h5_walk(unsigned n, const H5E_error2_t *e, void *data)
{
    char *out = data;
    if (n == 0 && e->desc) snprintf(out, 160, "%s", e->desc);
    return 0;
}

int cdsm__ckf_fail(ckf_ctx_t *c, int status, const char *fmt, ...)
{
    if (c->status) return -1;
    c->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof c->why, fmt, ap);
    va_end(ap);
    return -1;
}

/* Like fail, adding HDF5's own innermost message. */
int cdsm__ckf_fail_h5(ckf_ctx_t *c, int status, const char *what)
{
    char h5[160] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk, h5);
    if (h5[0]) return cdsm__ckf_fail(c, status, "%s (HDF5: %s)", what, h5);
    return cdsm__ckf_fail(c, status, "%s", what);
}


void cdsm__ckf_h5_quiet(ckf_h5quiet_t *q)
{
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void cdsm__ckf_h5_restore(const ckf_h5quiet_t *q)
{
    H5Eset_auto2(H5E_DEFAULT, q->func, q->data);
}

/* ---- names ----------------------------------------------------------------------------- */

int cdsm__ckpt_path(char *buf, size_t size, const char *dir, uint32_t rank, uint64_t seq)
{
    int n = snprintf(buf, size, "%s/rank%" PRIu32 ".ckpt%" PRIu64 ".h5", dir, rank, seq);
    if (n < 0 || (size_t)n >= size)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "checkpoint folder name too long: %s", dir);
    return CDSM_OK;
}

/* Parse a decimal number with no sign, no leading zero (except "0"), no overflow. */
static const char *parse_u64(const char *s, uint64_t *v)
{
    if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) return NULL;
    uint64_t x = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (x > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) return NULL;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *v = x;
    return s;
}

/* Is name exactly "rank<R>.ckpt<SEQ>.h5"? */
int cdsm__ckf_parse_committed(const char *name, uint64_t *rank, uint64_t *seq)
{
    if (strncmp(name, "rank", 4)) return 0;
    const char *p = parse_u64(name + 4, rank);
    if (!p || strncmp(p, ".ckpt", 5)) return 0;
    p = parse_u64(p + 5, seq);
    return p && !strcmp(p, ".h5");
}

/* Is name a temporary file ".rank<R>.ckpt<SEQ>.h5.tmp<PID>"? */
int cdsm__ckf_parse_temp(const char *name, uint64_t *rank)
{
    uint64_t seq, pid;
    if (name[0] != '.' || strncmp(name + 1, "rank", 4)) return 0;
    const char *p = parse_u64(name + 5, rank);
    if (!p || strncmp(p, ".ckpt", 5)) return 0;
    p = parse_u64(p + 5, &seq);
    if (!p || strncmp(p, ".h5.tmp", 7)) return 0;
    p = parse_u64(p + 7, &pid);
    return p && !*p;
}

const char *cdsm__ckf_base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int cdsm__ckpt_region_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= CDSM_CKPT_NAME_MAX && s[0] != '.' && !strchr(s, '/');
}

/* ---- the header checksum ---------------------------------------------------------------- */

static void put_le(uint8_t **p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) *(*p)++ = (uint8_t)(v >> (8 * i));
}

uint32_t cdsm__ckf_header_crc(const cdsm__ckpt_t *c)
{
    uint8_t b[64], *p = b;
    memcpy(p, CDSM_CKPT_MAGIC, sizeof CDSM_CKPT_MAGIC - 1);
    p += sizeof CDSM_CKPT_MAGIC - 1;
    put_le(&p, c->format_version, 4);
    put_le(&p, c->job_id, 8);
    put_le(&p, c->rank, 4);
    put_le(&p, c->nranks, 4);
    put_le(&p, c->seq, 8);
    put_le(&p, c->base_seq, 8);
    put_le(&p, c->epoch, 8);
    put_le(&p, c->page_size, 4);
    put_le(&p, (uint64_t)c->created, 8);
    return cdsm__ckpt_crc32c(0, b, (size_t)(p - b));
}

/* ---- writing ---------------------------------------------------------------------------- */

static int put_attr(ckf_ctx_t *x, hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mtype, v);
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    if (rc < 0) {
        char what[96];
        snprintf(what, sizeof what, "cannot write attribute %s", name);
        return cdsm__ckf_fail_h5(x, CDSM_ERR_IO, what);
    }
    return 0;
}

static int put_str_attr(ckf_ctx_t *x, hid_t loc, const char *name, const char *s)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    int rc = put_attr(x, loc, name, t, t, s);
    H5Tclose(t);
    return rc;
}

/* One dataset of ndims dims (elements of elsize bytes), with its crc32c attribute. */
static int put_ds(ckf_ctx_t *x, hid_t loc, const char *name, hid_t ftype, hid_t mtype, size_t elsize,
                  int ndims, const hsize_t *dims, const void *buf)
{
    size_t nelem = 1;
    for (int i = 0; i < ndims; i++) nelem *= (size_t)dims[i];
    if (nelem && !buf) return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "dataset %s: no data", name);
    uint32_t crc = nelem ? cdsm__ckf_crc_le(buf, nelem, elsize) : 0;
    hid_t sp = H5Screate_simple(ndims, dims, NULL);
    hid_t d = sp < 0 ? -1 : H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : 0;
    if (!rc && nelem) rc = H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    if (sp >= 0) H5Sclose(sp);
    if (rc < 0) {
        if (d >= 0) H5Dclose(d);
        char what[CDSM_CKPT_NAME_MAX + 48];
        snprintf(what, sizeof what, "cannot write dataset %s", name);
        return cdsm__ckf_fail_h5(x, CDSM_ERR_IO, what);
    }
    int r = put_attr(x, d, "crc32c", H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc);
    H5Dclose(d);
    return r;
}

static hid_t new_group(ckf_ctx_t *x, hid_t f, const char *name)
{
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        char what[64];
        snprintf(what, sizeof what, "cannot create group %s", name);
        cdsm__ckf_fail_h5(x, CDSM_ERR_IO, what);
    }
    return g;
}

static int validate(ckf_ctx_t *x, const cdsm__ckpt_t *c)
{
    if (!c->job_id) return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "job id 0 is reserved");
    if (!c->nranks || c->rank >= c->nranks)
        return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "rank %" PRIu32 " of %" PRIu32, c->rank, c->nranks);
    if (!c->seq) return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "sequence number 0 is reserved");
    if (c->base_seq >= c->seq)
        return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "base %" PRIu64 " is not older than %" PRIu64,
                    c->base_seq, c->seq);
    if (!c->page_size) return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "page size 0");
    if (!c->vc) return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "no vector clock");
    for (uint32_t i = 1; i < c->npages; i++)
        if (c->page_index[i] <= c->page_index[i - 1])
            return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "page numbers not strictly increasing at entry %" PRIu32, i);
    for (uint32_t i = 0; i < c->nregions; i++) {
        if (!cdsm__ckpt_region_name_ok(c->regions[i].name))
            return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "private region %" PRIu32 ": bad name", i);
        for (uint32_t k = 0; k < i; k++)
            if (!strcmp(c->regions[i].name, c->regions[k].name))
                return cdsm__ckf_fail(x, CDSM_ERR_INVALID_ARG, "private region %s registered twice", c->regions[i].name);
    }
    return 0;
}

static int write_body(ckf_ctx_t *x, hid_t f, const cdsm__ckpt_t *c)
{
    cdsm__ckpt_t h = *c;
    h.format_version = CDSM_CKPT_FORMAT_VERSION;
    uint32_t crc = cdsm__ckf_header_crc(&h);
    if (put_str_attr(x, f, "magic", CDSM_CKPT_MAGIC) ||
        put_attr(x, f, "format_version", H5T_STD_U32LE, H5T_NATIVE_UINT32, &h.format_version) ||
        put_attr(x, f, "job_id", H5T_STD_U64LE, H5T_NATIVE_UINT64, &h.job_id) ||
        put_attr(x, f, "rank", H5T_STD_U32LE, H5T_NATIVE_UINT32, &h.rank) ||
        put_attr(x, f, "nranks", H5T_STD_U32LE, H5T_NATIVE_UINT32, &h.nranks) ||
        put_attr(x, f, "seq", H5T_STD_U64LE, H5T_NATIVE_UINT64, &h.seq) ||
        put_attr(x, f, "base_seq", H5T_STD_U64LE, H5T_NATIVE_UINT64, &h.base_seq) ||
        put_attr(x, f, "epoch", H5T_STD_U64LE, H5T_NATIVE_UINT64, &h.epoch) ||
        put_attr(x, f, "page_size", H5T_STD_U32LE, H5T_NATIVE_UINT32, &h.page_size) ||
        put_attr(x, f, "created", H5T_STD_I64LE, H5T_NATIVE_INT64, &h.created) ||
        put_attr(x, f, "header_crc32c", H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc))
        return -1;

    int rc = -1;
    hid_t g = -1;
    hsize_t d[2];
    if ((g = new_group(x, f, "clock")) < 0) goto out;
    d[0] = c->nranks;
    if (put_ds(x, g, "vector", H5T_STD_U32LE, H5T_NATIVE_UINT32, 4, 1, d, c->vc)) goto out;
    d[0] = c->nintervals;
    if (put_ds(x, g, "intervals", H5T_STD_U32LE, H5T_NATIVE_UINT32, 4, 1, d, c->intervals)) goto out;
    H5Gclose(g);

    if ((g = new_group(x, f, "pages")) < 0) goto out;
    d[0] = c->npages;
    if (put_ds(x, g, "page_index", H5T_STD_U32LE, H5T_NATIVE_UINT32, 4, 1, d, c->page_index)) goto out;
    if (put_ds(x, g, "page_state", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, 1, d, c->page_state)) goto out;
    d[1] = c->page_size;
    if (put_ds(x, g, "page_data", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, 2, d, c->page_data)) goto out;
    d[1] = c->nranks;
    if (put_ds(x, g, "applied", H5T_STD_U32LE, H5T_NATIVE_UINT32, 4, 2, d, c->applied)) goto out;
    H5Gclose(g);

    if ((g = new_group(x, f, "locks")) < 0) goto out;
    d[0] = c->nlocks;
    if (put_ds(x, g, "state", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, 1, d, c->lock_state)) goto out;
    d[0] = c->ntails;
    d[1] = 2;
    if (put_ds(x, g, "tails", H5T_STD_U32LE, H5T_NATIVE_UINT32, 4, 2, d, c->lock_tails)) goto out;
    H5Gclose(g);

    if ((g = new_group(x, f, "log")) < 0) goto out;
    d[0] = c->nlog;
    if (put_ds(x, g, "position", H5T_STD_U64LE, H5T_NATIVE_UINT64, 8, 1, d, c->log_pos)) goto out;
    H5Gclose(g);

    if ((g = new_group(x, f, "private")) < 0) goto out;
    for (uint32_t i = 0; i < c->nregions; i++) {
        d[0] = c->regions[i].size;
        if (put_ds(x, g, c->regions[i].name, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, 1, d, c->regions[i].data))
            goto out;
    }
    rc = 0;
out:
    if (g >= 0) H5Gclose(g);
    return rc;
}

int cdsm__fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int cdsm__ckpt_write(const char *dir, const cdsm__ckpt_t *c)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (!dir || !c) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm__ckpt_write: NULL argument");
    int rc = cdsm__ckpt_path(path, sizeof path, dir, c->rank, c->seq);
    if (rc) return rc;
    int n = snprintf(tmp, sizeof tmp, "%s/.rank%" PRIu32 ".ckpt%" PRIu64 ".h5.tmp%ld", dir, c->rank,
                     c->seq, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "checkpoint folder name too long: %s", dir);

    ckf_ctx_t x = {.path = path};
    if (validate(&x, c)) return cdsm__error(x.status, "checkpoint %s: %s", path, x.why);
    cdsm__ckpt_t h = *c;
    if (!h.created) h.created = (int64_t)time(NULL);

    if ((rc = cdsm__ckpt_files_ready())) return rc;
    ckf_h5quiet_t q;
    cdsm__ckf_h5_quiet(&q);
    /* Newest object header versions: HDF5 checksums its own metadata too. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        cdsm__ckf_fail_h5(&x, CDSM_ERR_IO, "cannot create the temporary file");
    } else {
        write_body(&x, f, &h);
        cdsm__inject((int)c->rank, "ckpt_write");
        if (H5Fclose(f) < 0) cdsm__ckf_fail_h5(&x, CDSM_ERR_IO, "cannot close the temporary file");
    }
    cdsm__ckf_h5_restore(&q);
    if (!x.status && cdsm__fsync_path(tmp, 0))
        cdsm__ckf_fail(&x, CDSM_ERR_IO, "fsync of %s: %s", tmp, strerror(errno));
    if (!x.status) cdsm__inject((int)c->rank, "ckpt_rename");
    if (!x.status && rename(tmp, path))
        cdsm__ckf_fail(&x, CDSM_ERR_IO, "rename from %s: %s", tmp, strerror(errno));
    if (x.status) {
        unlink(tmp);
        return cdsm__error(x.status, "checkpoint %s: %s", path, x.why);
    }
    cdsm__inject((int)c->rank, "ckpt_fsync");
    if (cdsm__fsync_path(dir, 1))
        return cdsm__error(CDSM_ERR_IO, "checkpoint %s: fsync of folder %s: %s", path, dir, strerror(errno));
    return CDSM_OK;
}

int cdsm__ckpt_files_ready(void)
{
    const char *why;
    if (cdsm__h5_load(&why)) return cdsm__error(CDSM_ERR_IO, "checkpoint files: %s", why);
    return CDSM_OK;
}

/* ---- the folder ------------------------------------------------------------------------- */

int cdsm__ckpt_latest(const char *dir, uint32_t rank, uint64_t *seq)
{
    *seq = 0;
    DIR *d = opendir(dir);
    if (!d) return cdsm__error(CDSM_ERR_IO, "checkpoint folder %s: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t r, s;
        if (cdsm__ckf_parse_committed(e->d_name, &r, &s) && r == rank && s > *seq) *seq = s;
    }
    closedir(d);
    return CDSM_OK;
}

int cdsm__ckpt_remove_temps(const char *dir, uint32_t rank, unsigned *removed)
{
    if (removed) *removed = 0;
    DIR *d = opendir(dir);
    if (!d) return cdsm__error(CDSM_ERR_IO, "checkpoint folder %s: %s", dir, strerror(errno));
    int rc = CDSM_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t r;
        if (!cdsm__ckf_parse_temp(e->d_name, &r) || r != rank) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) && errno != ENOENT) {
            rc = cdsm__error(CDSM_ERR_IO, "checkpoint folder %s: cannot remove %s: %s", dir, e->d_name,
                             strerror(errno));
            break;
        }
        if (removed) ++*removed;
    }
    closedir(d);
    return rc;
}
