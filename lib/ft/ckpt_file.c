/* Checkpoint files in HDF5: write with an atomic commit, read with every byte verified.
 * The format is documented in docs/CHECKPOINT_FORMAT.md. */
#include "ckpt_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
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
static uint32_t crc_le(const void *buf, size_t nelem, size_t elsize)
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

typedef struct ctx {
    const char *path;
    int status;
    char why[384];
} ctx_t;

/* The innermost HDF5 error message, for the report. */
static herr_t h5_walk(unsigned n, const H5E_error2_t *e, void *data)
{
    char *out = data;
    if (n == 0 && e->desc) snprintf(out, 160, "%s", e->desc);
    return 0;
}

static int fail(ctx_t *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(ctx_t *c, int status, const char *fmt, ...)
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
static int fail_h5(ctx_t *c, int status, const char *what)
{
    char h5[160] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_walk, h5);
    if (h5[0]) return fail(c, status, "%s (HDF5: %s)", what, h5);
    return fail(c, status, "%s", what);
}

/* HDF5 prints its error stack by default; the library reports errors itself. */
typedef struct h5quiet {
    H5E_auto2_t func;
    void *data;
} h5quiet_t;

static void h5_quiet(h5quiet_t *q)
{
    H5Eget_auto2(H5E_DEFAULT, &q->func, &q->data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_restore(const h5quiet_t *q)
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
static int parse_committed(const char *name, uint64_t *rank, uint64_t *seq)
{
    if (strncmp(name, "rank", 4)) return 0;
    const char *p = parse_u64(name + 4, rank);
    if (!p || strncmp(p, ".ckpt", 5)) return 0;
    p = parse_u64(p + 5, seq);
    return p && !strcmp(p, ".h5");
}

/* Is name a temporary file ".rank<R>.ckpt<SEQ>.h5.tmp<PID>"? */
static int parse_temp(const char *name, uint64_t *rank)
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

static const char *base_name(const char *path)
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

static uint32_t header_crc(const cdsm__ckpt_t *c)
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

static int put_attr(ctx_t *x, hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v)
{
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = sp < 0 ? -1 : H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mtype, v);
    if (a >= 0) H5Aclose(a);
    if (sp >= 0) H5Sclose(sp);
    if (rc < 0) {
        char what[96];
        snprintf(what, sizeof what, "cannot write attribute %s", name);
        return fail_h5(x, CDSM_ERR_IO, what);
    }
    return 0;
}

static int put_str_attr(ctx_t *x, hid_t loc, const char *name, const char *s)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    int rc = put_attr(x, loc, name, t, t, s);
    H5Tclose(t);
    return rc;
}

/* One dataset of ndims dims (elements of elsize bytes), with its crc32c attribute. */
static int put_ds(ctx_t *x, hid_t loc, const char *name, hid_t ftype, hid_t mtype, size_t elsize,
                  int ndims, const hsize_t *dims, const void *buf)
{
    size_t nelem = 1;
    for (int i = 0; i < ndims; i++) nelem *= (size_t)dims[i];
    if (nelem && !buf) return fail(x, CDSM_ERR_INVALID_ARG, "dataset %s: no data", name);
    uint32_t crc = nelem ? crc_le(buf, nelem, elsize) : 0;
    hid_t sp = H5Screate_simple(ndims, dims, NULL);
    hid_t d = sp < 0 ? -1 : H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : 0;
    if (!rc && nelem) rc = H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    if (sp >= 0) H5Sclose(sp);
    if (rc < 0) {
        if (d >= 0) H5Dclose(d);
        char what[CDSM_CKPT_NAME_MAX + 48];
        snprintf(what, sizeof what, "cannot write dataset %s", name);
        return fail_h5(x, CDSM_ERR_IO, what);
    }
    int r = put_attr(x, d, "crc32c", H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc);
    H5Dclose(d);
    return r;
}

static hid_t new_group(ctx_t *x, hid_t f, const char *name)
{
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) {
        char what[64];
        snprintf(what, sizeof what, "cannot create group %s", name);
        fail_h5(x, CDSM_ERR_IO, what);
    }
    return g;
}

static int validate(ctx_t *x, const cdsm__ckpt_t *c)
{
    if (!c->job_id) return fail(x, CDSM_ERR_INVALID_ARG, "job id 0 is reserved");
    if (!c->nranks || c->rank >= c->nranks)
        return fail(x, CDSM_ERR_INVALID_ARG, "rank %" PRIu32 " of %" PRIu32, c->rank, c->nranks);
    if (!c->seq) return fail(x, CDSM_ERR_INVALID_ARG, "sequence number 0 is reserved");
    if (c->base_seq >= c->seq)
        return fail(x, CDSM_ERR_INVALID_ARG, "base %" PRIu64 " is not older than %" PRIu64,
                    c->base_seq, c->seq);
    if (!c->page_size) return fail(x, CDSM_ERR_INVALID_ARG, "page size 0");
    if (!c->vc) return fail(x, CDSM_ERR_INVALID_ARG, "no vector clock");
    for (uint32_t i = 1; i < c->npages; i++)
        if (c->page_index[i] <= c->page_index[i - 1])
            return fail(x, CDSM_ERR_INVALID_ARG, "page numbers not strictly increasing at entry %" PRIu32, i);
    for (uint32_t i = 0; i < c->nregions; i++) {
        if (!cdsm__ckpt_region_name_ok(c->regions[i].name))
            return fail(x, CDSM_ERR_INVALID_ARG, "private region %" PRIu32 ": bad name", i);
        for (uint32_t k = 0; k < i; k++)
            if (!strcmp(c->regions[i].name, c->regions[k].name))
                return fail(x, CDSM_ERR_INVALID_ARG, "private region %s registered twice", c->regions[i].name);
    }
    return 0;
}

static int write_body(ctx_t *x, hid_t f, const cdsm__ckpt_t *c)
{
    cdsm__ckpt_t h = *c;
    h.format_version = CDSM_CKPT_FORMAT_VERSION;
    uint32_t crc = header_crc(&h);
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

    ctx_t x = {.path = path};
    if (validate(&x, c)) return cdsm__error(x.status, "checkpoint %s: %s", path, x.why);
    cdsm__ckpt_t h = *c;
    if (!h.created) h.created = (int64_t)time(NULL);

    h5quiet_t q;
    h5_quiet(&q);
    /* Newest object header versions: HDF5 checksums its own metadata too. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        fail_h5(&x, CDSM_ERR_IO, "cannot create the temporary file");
    } else {
        write_body(&x, f, &h);
        if (H5Fclose(f) < 0) fail_h5(&x, CDSM_ERR_IO, "cannot close the temporary file");
    }
    h5_restore(&q);
    if (!x.status && cdsm__fsync_path(tmp, 0))
        fail(&x, CDSM_ERR_IO, "fsync of %s: %s", tmp, strerror(errno));
    if (!x.status && rename(tmp, path))
        fail(&x, CDSM_ERR_IO, "rename from %s: %s", tmp, strerror(errno));
    if (x.status) {
        unlink(tmp);
        return cdsm__error(x.status, "checkpoint %s: %s", path, x.why);
    }
    if (cdsm__fsync_path(dir, 1))
        return cdsm__error(CDSM_ERR_IO, "checkpoint %s: fsync of folder %s: %s", path, dir, strerror(errno));
    return CDSM_OK;
}

/* ---- reading ---------------------------------------------------------------------------- */

static int get_attr(ctx_t *x, hid_t loc, const char *name, hid_t mtype, void *v)
{
    htri_t e = H5Aexists(loc, name);
    if (e < 0) return fail(x, CDSM_ERR_CORRUPT, "attribute %s is unreadable", name);
    if (!e) return fail(x, CDSM_ERR_CORRUPT, "attribute %s is missing", name);
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t sp = a < 0 ? -1 : H5Aget_space(a);
    int ok = sp >= 0 && H5Sget_simple_extent_type(sp) == H5S_SCALAR;
    if (ok) {
        hid_t t = H5Aget_type(a);
        ok = t >= 0 && H5Tget_class(t) == H5T_INTEGER;
        if (t >= 0) H5Tclose(t);
    }
    if (ok) ok = H5Aread(a, mtype, v) >= 0;
    if (sp >= 0) H5Sclose(sp);
    if (a >= 0) H5Aclose(a);
    if (!ok) return fail(x, CDSM_ERR_CORRUPT, "attribute %s is unreadable or not a scalar integer", name);
    return 0;
}

static int check_magic(ctx_t *x, hid_t f)
{
    char buf[64] = "";
    htri_t e = H5Aexists(f, "magic");
    if (e < 0) return fail_h5(x, CDSM_ERR_CORRUPT, "the root group is unreadable");
    if (!e) return fail(x, CDSM_ERR_CORRUPT, "not a cdsm checkpoint (no magic attribute)");
    hid_t a = H5Aopen(f, "magic", H5P_DEFAULT);
    hid_t t = a < 0 ? -1 : H5Aget_type(a);
    int ok = t >= 0 && H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t) &&
             H5Tget_size(t) < sizeof buf;
    if (ok) {
        hid_t m = H5Tcopy(t);
        H5Tset_strpad(m, H5T_STR_NULLTERM);
        ok = H5Aread(a, m, buf) >= 0;
        H5Tclose(m);
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    buf[sizeof buf - 1] = 0;
    if (!ok || strcmp(buf, CDSM_CKPT_MAGIC))
        return fail(x, CDSM_ERR_CORRUPT, "not a cdsm checkpoint (magic \"%.20s\", expected \"%s\")", buf,
                    CDSM_CKPT_MAGIC);
    return 0;
}

/* Open dataset loc/name of ndims dims; check the dims that are fixed (dims[i] != ANY) and
 * return the others; check its storage can hold it. */
#define DIM_ANY ((hsize_t)-1)
static hid_t open_ds(ctx_t *x, hid_t loc, const char *gname, const char *name, int ndims, hsize_t *dims,
                     size_t elsize)
{
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) {
        fail(x, CDSM_ERR_CORRUPT, "dataset /%s/%s is missing", gname, name);
        return -1;
    }
    hid_t sp = H5Dget_space(d);
    hsize_t got[2] = {0, 0};
    int nd = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    if (nd == ndims) H5Sget_simple_extent_dims(sp, got, NULL);
    if (sp >= 0) H5Sclose(sp);
    int ok = nd == ndims;
    size_t nelem = 1;
    for (int i = 0; ok && i < ndims; i++) {
        if (dims[i] != DIM_ANY && dims[i] != got[i]) ok = 0;
        dims[i] = got[i];
        if (got[i] && nelem > SIZE_MAX / 2 / got[i]) ok = 0;
        nelem *= (size_t)got[i];
    }
    if (!ok) {
        H5Dclose(d);
        fail(x, CDSM_ERR_CORRUPT, "dataset /%s/%s has the wrong shape", gname, name);
        return -1;
    }
    /* A damaged shape must not make us allocate more than the file holds. */
    if (nelem && H5Dget_storage_size(d) < (hsize_t)nelem * elsize) {
        H5Dclose(d);
        fail(x, CDSM_ERR_CORRUPT, "dataset /%s/%s: storage smaller than its shape", gname, name);
        return -1;
    }
    return d;
}

/* Read an opened dataset into a new buffer (NULL for 0 elements) and verify its crc32c. */
static int read_ds(ctx_t *x, hid_t d, const char *gname, const char *name, hid_t mtype, size_t elsize,
                   size_t nelem, void **out)
{
    *out = NULL;
    uint32_t want;
    int rc = get_attr(x, d, "crc32c", H5T_NATIVE_UINT32, &want);
    void *buf = NULL;
    if (!rc && nelem) {
        buf = malloc(nelem * elsize);
        if (!buf) rc = fail(x, CDSM_ERR_NOMEM, "dataset /%s/%s: %zu bytes", gname, name, nelem * elsize);
        else if (H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            char what[CDSM_CKPT_NAME_MAX + 48];
            snprintf(what, sizeof what, "dataset /%s/%s is unreadable", gname, name);
            rc = fail_h5(x, CDSM_ERR_CORRUPT, what);
        }
    }
    if (!rc) {
        uint32_t got = nelem ? crc_le(buf, nelem, elsize) : 0;
        if (got != want)
            rc = fail(x, CDSM_ERR_CORRUPT, "dataset /%s/%s: checksum mismatch (crc32c %08" PRIx32
                      ", stored %08" PRIx32 ")", gname, name, got, want);
    }
    H5Dclose(d);
    if (rc) free(buf);
    else *out = buf;
    return rc;
}

/* Open + read + verify in one, for datasets of fixed or free shape. */
static int load(ctx_t *x, hid_t g, const char *gname, const char *name, hid_t mtype, size_t elsize,
                int ndims, hsize_t *dims, void **out)
{
    hid_t d = open_ds(x, g, gname, name, ndims, dims, elsize);
    if (d < 0) return -1;
    size_t nelem = 1;
    for (int i = 0; i < ndims; i++) nelem *= (size_t)dims[i];
    return read_ds(x, d, gname, name, mtype, elsize, nelem, out);
}

static hid_t open_group(ctx_t *x, hid_t f, const char *name)
{
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    if (g < 0) fail(x, CDSM_ERR_CORRUPT, "group /%s is missing", name);
    return g;
}

typedef struct region_it {
    ctx_t *x;
    cdsm__ckpt_t *c;
    uint32_t cap;
} region_it_t;

static herr_t region_visit(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    region_it_t *it = data;
    cdsm__ckpt_t *c = it->c;
    if (!cdsm__ckpt_region_name_ok(name)) {
        fail(it->x, CDSM_ERR_CORRUPT, "private region with a bad name");
        return -1;
    }
    if (c->nregions == it->cap) {
        uint32_t cap = it->cap ? 2 * it->cap : 8;
        void *p = realloc(c->regions, cap * sizeof *c->regions);
        if (!p) {
            fail(it->x, CDSM_ERR_NOMEM, "private region list");
            return -1;
        }
        c->regions = p;
        it->cap = cap;
    }
    cdsm__ckpt_region_t *r = &c->regions[c->nregions];
    memset(r, 0, sizeof *r);
    r->name = strdup(name);
    if (!r->name) {
        fail(it->x, CDSM_ERR_NOMEM, "private region name");
        return -1;
    }
    c->nregions++;
    hsize_t d[1] = {DIM_ANY};
    void *buf;
    if (load(it->x, g, "private", name, H5T_NATIVE_UINT8, 1, 1, d, &buf)) return -1;
    r->data = buf;
    r->size = d[0];
    return 0;
}

/* The root group's attributes: magic, format version, the header (checked against its
 * crc32c and for consistency), and whether the file is the expected job's and rank's and
 * agrees with its committed name. */
static int read_header(ctx_t *x, hid_t f, int expect_rank, uint64_t expect_job, cdsm__ckpt_t *c)
{
    if (check_magic(x, f)) return -1;
    if (get_attr(x, f, "format_version", H5T_NATIVE_UINT32, &c->format_version)) return -1;
    if (c->format_version != CDSM_CKPT_FORMAT_VERSION)
        return fail(x, CDSM_ERR_CORRUPT, "unknown format version %" PRIu32 " (this library reads version %u)",
                    c->format_version, CDSM_CKPT_FORMAT_VERSION);
    uint32_t hcrc;
    if (get_attr(x, f, "job_id", H5T_NATIVE_UINT64, &c->job_id) ||
        get_attr(x, f, "rank", H5T_NATIVE_UINT32, &c->rank) ||
        get_attr(x, f, "nranks", H5T_NATIVE_UINT32, &c->nranks) ||
        get_attr(x, f, "seq", H5T_NATIVE_UINT64, &c->seq) ||
        get_attr(x, f, "base_seq", H5T_NATIVE_UINT64, &c->base_seq) ||
        get_attr(x, f, "epoch", H5T_NATIVE_UINT64, &c->epoch) ||
        get_attr(x, f, "page_size", H5T_NATIVE_UINT32, &c->page_size) ||
        get_attr(x, f, "created", H5T_NATIVE_INT64, &c->created) ||
        get_attr(x, f, "header_crc32c", H5T_NATIVE_UINT32, &hcrc))
        return -1;
    uint32_t got = header_crc(c);
    if (got != hcrc)
        return fail(x, CDSM_ERR_CORRUPT, "header attributes: checksum mismatch (crc32c %08" PRIx32
                    ", stored %08" PRIx32 ")", got, hcrc);
    if (!c->nranks || c->rank >= c->nranks || !c->seq || c->base_seq >= c->seq || !c->page_size ||
        !c->job_id)
        return fail(x, CDSM_ERR_CORRUPT, "inconsistent header (rank %" PRIu32 " of %" PRIu32 ", seq %" PRIu64
                    ", base %" PRIu64 ", page size %" PRIu32 ")", c->rank, c->nranks, c->seq, c->base_seq,
                    c->page_size);
    if (expect_job != CDSM_CKPT_ANY_JOB && c->job_id != expect_job)
        return fail(x, CDSM_ERR_CORRUPT, "foreign job: file has job id %016" PRIx64 ", expected %016" PRIx64,
                    c->job_id, expect_job);
    if (expect_rank != CDSM_CKPT_ANY_RANK && (expect_rank < 0 || c->rank != (uint32_t)expect_rank))
        return fail(x, CDSM_ERR_CORRUPT, "foreign rank: file is rank %" PRIu32 "'s, expected rank %d", c->rank,
                    expect_rank);
    /* A committed name must agree with the content (a renamed file is someone else's). */
    uint64_t nrank, nseq;
    if (parse_committed(base_name(x->path), &nrank, &nseq) && (nrank != c->rank || nseq != c->seq))
        return fail(x, CDSM_ERR_CORRUPT, "file name says rank %" PRIu64 " checkpoint %" PRIu64
                    ", content says rank %" PRIu32 " checkpoint %" PRIu64, nrank, nseq, c->rank, c->seq);
    return 0;
}

/* A dataset's length as a 32-bit count: the in-memory counts are 32-bit. */
static int count32(ctx_t *x, hsize_t len, uint32_t *count)
{
    if (len > UINT32_MAX) return fail(x, CDSM_ERR_CORRUPT, "a dataset has more than 2^32 entries");
    *count = (uint32_t)len;
    return 0;
}

/* /clock: the vector clock (one entry per rank) and the interval counts. */
static int read_clock(ctx_t *x, hid_t f, cdsm__ckpt_t *c)
{
    hid_t g = open_group(x, f, "clock");
    if (g < 0) return -1;
    int rc = -1;
    void *p;
    hsize_t d[1] = {c->nranks};
    if (load(x, g, "clock", "vector", H5T_NATIVE_UINT32, 4, 1, d, &p)) goto out;
    c->vc = p;
    d[0] = DIM_ANY;
    if (load(x, g, "clock", "intervals", H5T_NATIVE_UINT32, 4, 1, d, &p)) goto out;
    c->intervals = p;
    rc = count32(x, d[0], &c->nintervals);
out:
    H5Gclose(g);
    return rc;
}

/* /pages: the page list (strictly increasing indices), and per page its state, its data
 * and the intervals applied to it from each rank. */
static int read_pages(ctx_t *x, hid_t f, cdsm__ckpt_t *c)
{
    hid_t g = open_group(x, f, "pages");
    if (g < 0) return -1;
    int rc = -1;
    void *p;
    hsize_t d[2];
    d[0] = DIM_ANY;
    if (load(x, g, "pages", "page_index", H5T_NATIVE_UINT32, 4, 1, d, &p)) goto out;
    c->page_index = p;
    if (count32(x, d[0], &c->npages)) goto out;
    if (load(x, g, "pages", "page_state", H5T_NATIVE_UINT8, 1, 1, d, &p)) goto out;
    c->page_state = p;
    d[1] = c->page_size;
    if (load(x, g, "pages", "page_data", H5T_NATIVE_UINT8, 1, 2, d, &p)) goto out;
    c->page_data = p;
    d[1] = c->nranks;
    if (load(x, g, "pages", "applied", H5T_NATIVE_UINT32, 4, 2, d, &p)) goto out;
    c->applied = p;
    for (uint32_t i = 1; i < c->npages; i++)
        if (c->page_index[i] <= c->page_index[i - 1]) {
            fail(x, CDSM_ERR_CORRUPT, "/pages/page_index not strictly increasing at entry %" PRIu32, i);
            goto out;
        }
    rc = 0;
out:
    H5Gclose(g);
    return rc;
}

/* A group holding one dataset of any length (/locks/state, /log/position): its data in
 * *data (also when the length is refused, so that it is freed with the rest) and its
 * length in *count. */
static int read_list(ctx_t *x, hid_t f, const char *gname, const char *name, hid_t mtype, size_t elsize,
                     void **data, uint32_t *count)
{
    *data = NULL;
    hid_t g = open_group(x, f, gname);
    if (g < 0) return -1;
    hsize_t d[1] = {DIM_ANY};
    int rc = load(x, g, gname, name, mtype, elsize, 1, d, data);
    if (!rc) rc = count32(x, d[0], count);
    H5Gclose(g);
    return rc;
}

/* /private: the registered regions, one dataset each. */
static int read_private(ctx_t *x, hid_t f, cdsm__ckpt_t *c)
{
    hid_t g = open_group(x, f, "private");
    if (g < 0) return -1;
    region_it_t it = {.x = x, .c = c};
    int rc = 0;
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, region_visit, &it) < 0)
        rc = fail(x, CDSM_ERR_CORRUPT, "group /private is unreadable");
    H5Gclose(g);
    return rc;
}

/* The whole file into c, group by group; stops at the first error (in x). */
static int read_body(ctx_t *x, hid_t f, int expect_rank, uint64_t expect_job, cdsm__ckpt_t *c)
{
    if (read_header(x, f, expect_rank, expect_job, c) || read_clock(x, f, c) || read_pages(x, f, c)) return -1;
    void *p;
    int rc = read_list(x, f, "locks", "state", H5T_NATIVE_UINT8, 1, &p, &c->nlocks);
    c->lock_state = p;
    if (rc) return -1;
    rc = read_list(x, f, "log", "position", H5T_NATIVE_UINT64, 8, &p, &c->nlog);
    c->log_pos = p;
    if (rc) return -1;
    return read_private(x, f, c);
}

void cdsm__ckpt_free(cdsm__ckpt_t *c)
{
    if (!c) return;
    free(c->vc);
    free(c->intervals);
    free(c->page_index);
    free(c->page_state);
    free(c->page_data);
    free(c->applied);
    free(c->lock_state);
    free(c->log_pos);
    for (uint32_t i = 0; i < c->nregions; i++) {
        free(c->regions[i].name);
        free(c->regions[i].data);
    }
    free(c->regions);
    memset(c, 0, sizeof *c);
}

static const uint8_t h5_signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

/* Before HDF5 sees the file: it exists, is an HDF5 file, and is as long as its superblock
 * says (superblock versions 2 and 3 hold the end-of-file address at byte 28). */
static int precheck(ctx_t *x, const char *path)
{
    uint64_t rank;
    if (parse_temp(base_name(path), &rank))
        return fail(x, CDSM_ERR_CORRUPT, "uncommitted temporary file (a writer never finished it)");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(x, CDSM_ERR_IO, "%s", errno == ENOENT ? "no such file" : strerror(errno));
    struct stat st;
    uint8_t sb[48];
    ssize_t n = fstat(fd, &st) ? -1 : pread(fd, sb, sizeof sb, 0);
    int e = errno;
    close(fd);
    if (n < 0) return fail(x, CDSM_ERR_IO, "%s", strerror(e));
    if (!S_ISREG(st.st_mode)) return fail(x, CDSM_ERR_IO, "not a regular file");
    if (n < 8 || memcmp(sb, h5_signature, 8))
        return fail(x, CDSM_ERR_CORRUPT, n < 8 ? "truncated: %lld bytes, not even an HDF5 signature"
                                               : "not an HDF5 file (%lld bytes, bad signature)",
                    (long long)st.st_size);
    if (n >= 40 && (sb[8] == 2 || sb[8] == 3) && sb[9] == 8) {
        uint64_t eof = 0;
        for (int i = 7; i >= 0; i--) eof = eof << 8 | sb[28 + i];
        if ((uint64_t)st.st_size < eof)
            return fail(x, CDSM_ERR_CORRUPT, "truncated: %lld bytes, its superblock says %" PRIu64,
                        (long long)st.st_size, eof);
    }
    return 0;
}

int cdsm__ckpt_read(const char *path, int expect_rank, uint64_t expect_job, cdsm__ckpt_t *out)
{
    if (!path || !out) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm__ckpt_read: NULL argument");
    memset(out, 0, sizeof *out);
    ctx_t x = {.path = path};
    if (precheck(&x, path)) return cdsm__error(x.status, "checkpoint %s: %s", path, x.why);
    h5quiet_t q;
    h5_quiet(&q);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG); /* close everything, even after errors */
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        fail_h5(&x, CDSM_ERR_CORRUPT, "HDF5 cannot open it (damaged or truncated)");
    } else {
        read_body(&x, f, expect_rank, expect_job, out);
        H5Fclose(f);
    }
    h5_restore(&q);
    if (x.status) {
        cdsm__ckpt_free(out);
        return cdsm__error(x.status, "checkpoint %s: %s", path, x.why);
    }
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
        if (parse_committed(e->d_name, &r, &s) && r == rank && s > *seq) *seq = s;
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
        if (!parse_temp(e->d_name, &r) || r != rank) continue;
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

/* ---- incremental chains ----------------------------------------------------------------- */

/* Read checkpoint seq of rank and its bases back to the full checkpoint into *chain,
 * newest first: (*chain)[0] is seq, (*chain)[*n - 1] the full one. On error, *chain
 * holds the *n checkpoints read so far, for the caller to free. */
static int read_chain(const char *dir, uint32_t rank, uint64_t job, uint64_t seq, cdsm__ckpt_t **chain,
                      size_t *n)
{
    size_t cap = 0;
    int rc;
    char path[PATH_MAX];
    uint64_t want = seq;
    for (;;) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            void *p = realloc(*chain, cap * sizeof **chain);
            if (!p) return cdsm__error(CDSM_ERR_NOMEM, "checkpoint chain of rank %" PRIu32, rank);
            *chain = p;
        }
        cdsm__ckpt_t *ch = *chain;
        if ((rc = cdsm__ckpt_path(path, sizeof path, dir, rank, want))) return rc;
        if ((rc = cdsm__ckpt_read(path, (int)rank, job, &ch[*n]))) return rc;
        cdsm__ckpt_t *c = &ch[(*n)++];
        if (c->seq != want) /* the name and content agree (checked), so this cannot happen */
            return cdsm__error(CDSM_ERR_CORRUPT, "checkpoint %s: holds checkpoint %" PRIu64, path, c->seq);
        if (*n > 1 &&
            (c->nranks != ch[0].nranks || c->page_size != ch[0].page_size || c->job_id != ch[0].job_id))
            return cdsm__error(CDSM_ERR_CORRUPT,
                               "checkpoint %s: base of checkpoint %" PRIu64 " but has %" PRIu32
                               " ranks and %" PRIu32 "-byte pages (expected %" PRIu32 " and %" PRIu32 ")",
                               path, ch[*n - 2].seq, c->nranks, c->page_size, ch[0].nranks, ch[0].page_size);
        if (!c->base_seq) return CDSM_OK;
        want = c->base_seq; /* strictly smaller: the reader checked base_seq < seq */
    }
}

/* Replace the pages of chain[0] by the union of the chain's pages, newest record wins: a
 * k-way merge over sorted, unique page lists. */
static int merge_pages(cdsm__ckpt_t *chain, size_t n, uint32_t rank)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += chain[i].npages;
    cdsm__ckpt_t *top = &chain[0];
    const uint32_t ps = top->page_size, nr = top->nranks;
    size_t *pos = calloc(n, sizeof *pos);
    uint32_t *idx = malloc((total ? total : 1) * sizeof *idx);
    uint8_t *st = malloc(total ? total : 1);
    uint8_t *data = malloc((total ? total : 1) * (size_t)ps);
    uint32_t *app = malloc((total ? total : 1) * (size_t)nr * sizeof *app);
    if (!pos || !idx || !st || !data || !app) {
        free(pos), free(idx), free(st), free(data), free(app);
        return cdsm__error(CDSM_ERR_NOMEM, "checkpoint chain of rank %" PRIu32 ": %zu pages", rank, total);
    }
    size_t m = 0;
    for (;;) {
        size_t best = n;
        for (size_t i = 0; i < n; i++) /* newest first, so ties keep the newest */
            if (pos[i] < chain[i].npages &&
                (best == n || chain[i].page_index[pos[i]] < chain[best].page_index[pos[best]]))
                best = i;
        if (best == n) break;
        uint32_t pg = chain[best].page_index[pos[best]];
        size_t k = pos[best];
        idx[m] = pg;
        st[m] = chain[best].page_state[k];
        memcpy(data + m * ps, chain[best].page_data + k * ps, ps);
        memcpy(app + m * nr, chain[best].applied + k * nr, nr * sizeof *app);
        m++;
        for (size_t i = 0; i < n; i++)
            if (pos[i] < chain[i].npages && chain[i].page_index[pos[i]] == pg) pos[i]++;
    }
    free(pos);
    free(top->page_index), free(top->page_state), free(top->page_data), free(top->applied);
    top->page_index = idx;
    top->page_state = st;
    top->page_data = data;
    top->applied = app;
    top->npages = (uint32_t)m;
    return CDSM_OK;
}

int cdsm__ckpt_restore_chain(const char *dir, uint32_t rank, uint64_t job, uint64_t seq, cdsm__ckpt_t *out)
{
    memset(out, 0, sizeof *out);
    cdsm__ckpt_t *chain = NULL;
    size_t n = 0;
    int rc = read_chain(dir, rank, job, seq, &chain, &n);
    if (rc == CDSM_OK) rc = merge_pages(chain, n, rank);
    if (rc == CDSM_OK) {
        /* chain[0], now holding all pages, is the result: a full checkpoint. */
        chain[0].base_seq = 0;
        *out = chain[0];
        memset(&chain[0], 0, sizeof chain[0]);
    }
    for (size_t i = 0; i < n; i++) cdsm__ckpt_free(&chain[i]);
    free(chain);
    return rc;
}
