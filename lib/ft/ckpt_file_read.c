/* Checkpoint files in HDF5, the reader's half: every byte verified before anything is
 * returned (a corrupt, truncated or foreign file is an error naming it), and the
 * incremental chains merged into one checkpoint. The format is docs/CHECKPOINT_FORMAT.md. */
#include <errno.h>
#include <fcntl.h>
#include "h5shim.h"
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cdsm.h"
#include "ckpt_file_int.h"
#include "log.h"

/* ---- reading ---------------------------------------------------------------------------- */

static int get_attr(ckf_ctx_t *x, hid_t loc, const char *name, hid_t mtype, void *v)
{
    htri_t e = H5Aexists(loc, name);
    if (e < 0) return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "attribute %s is unreadable", name);
    if (!e) return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "attribute %s is missing", name);
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
    if (!ok) return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "attribute %s is unreadable or not a scalar integer", name);
    return 0;
}

static int check_magic(ckf_ctx_t *x, hid_t f)
{
    char buf[64] = "";
    htri_t e = H5Aexists(f, "magic");
    if (e < 0) return cdsm__ckf_fail_h5(x, CDSM_ERR_CORRUPT, "the root group is unreadable");
    if (!e) return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "not a cdsm checkpoint (no magic attribute)");
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
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "not a cdsm checkpoint (magic \"%.20s\", expected \"%s\")", buf,
                    CDSM_CKPT_MAGIC);
    return 0;
}

/* Open dataset loc/name of ndims dims; check the dims that are fixed (dims[i] != ANY) and
 * return the others; check its storage can hold it. */
#define DIM_ANY ((hsize_t)-1)
static hid_t open_ds(ckf_ctx_t *x, hid_t loc, const char *gname, const char *name, int ndims, hsize_t *dims,
                     size_t elsize)
{
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) {
        cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "dataset /%s/%s is missing", gname, name);
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
        cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "dataset /%s/%s has the wrong shape", gname, name);
        return -1;
    }
    /* A damaged shape must not make us allocate more than the file holds. */
    if (nelem && H5Dget_storage_size(d) < (hsize_t)nelem * elsize) {
        H5Dclose(d);
        cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "dataset /%s/%s: storage smaller than its shape", gname, name);
        return -1;
    }
    return d;
}

/* Read an opened dataset into a new buffer (NULL for 0 elements) and verify its crc32c. */
static int read_ds(ckf_ctx_t *x, hid_t d, const char *gname, const char *name, hid_t mtype, size_t elsize,
                   size_t nelem, void **out)
{
    *out = NULL;
    uint32_t want;
    int rc = get_attr(x, d, "crc32c", H5T_NATIVE_UINT32, &want);
    void *buf = NULL;
    if (!rc && nelem) {
        buf = malloc(nelem * elsize);
        if (!buf) rc = cdsm__ckf_fail(x, CDSM_ERR_NOMEM, "dataset /%s/%s: %zu bytes", gname, name, nelem * elsize);
        else if (H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            char what[CDSM_CKPT_NAME_MAX + 48];
            snprintf(what, sizeof what, "dataset /%s/%s is unreadable", gname, name);
            rc = cdsm__ckf_fail_h5(x, CDSM_ERR_CORRUPT, what);
        }
    }
    if (!rc) {
        uint32_t got = nelem ? cdsm__ckf_crc_le(buf, nelem, elsize) : 0;
        if (got != want)
            rc = cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "dataset /%s/%s: checksum mismatch (crc32c %08" PRIx32
                      ", stored %08" PRIx32 ")", gname, name, got, want);
    }
    H5Dclose(d);
    if (rc) free(buf);
    else *out = buf;
    return rc;
}

/* Open + read + verify in one, for datasets of fixed or free shape. */
static int load(ckf_ctx_t *x, hid_t g, const char *gname, const char *name, hid_t mtype, size_t elsize,
                int ndims, hsize_t *dims, void **out)
{
    hid_t d = open_ds(x, g, gname, name, ndims, dims, elsize);
    if (d < 0) return -1;
    size_t nelem = 1;
    for (int i = 0; i < ndims; i++) nelem *= (size_t)dims[i];
    return read_ds(x, d, gname, name, mtype, elsize, nelem, out);
}

static hid_t open_group(ckf_ctx_t *x, hid_t f, const char *name)
{
    hid_t g = H5Gopen2(f, name, H5P_DEFAULT);
    if (g < 0) cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "group /%s is missing", name);
    return g;
}

typedef struct region_it {
    ckf_ctx_t *x;
    cdsm__ckpt_t *c;
    uint32_t cap;
} region_it_t;

static herr_t region_visit(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    region_it_t *it = data;
    cdsm__ckpt_t *c = it->c;
    if (!cdsm__ckpt_region_name_ok(name)) {
        cdsm__ckf_fail(it->x, CDSM_ERR_CORRUPT, "private region with a bad name");
        return -1;
    }
    if (c->nregions == it->cap) {
        uint32_t cap = it->cap ? 2 * it->cap : 8;
        void *p = realloc(c->regions, cap * sizeof *c->regions);
        if (!p) {
            cdsm__ckf_fail(it->x, CDSM_ERR_NOMEM, "private region list");
            return -1;
        }
        c->regions = p;
        it->cap = cap;
    }
    cdsm__ckpt_region_t *r = &c->regions[c->nregions];
    memset(r, 0, sizeof *r);
    r->name = strdup(name);
    if (!r->name) {
        cdsm__ckf_fail(it->x, CDSM_ERR_NOMEM, "private region name");
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
static int read_header(ckf_ctx_t *x, hid_t f, int expect_rank, uint64_t expect_job, cdsm__ckpt_t *c)
{
    if (check_magic(x, f)) return -1;
    if (get_attr(x, f, "format_version", H5T_NATIVE_UINT32, &c->format_version)) return -1;
    if (c->format_version != CDSM_CKPT_FORMAT_VERSION)
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "unknown format version %" PRIu32 " (this library reads version %u)",
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
    uint32_t got = cdsm__ckf_header_crc(c);
    if (got != hcrc)
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "header attributes: checksum mismatch (crc32c %08" PRIx32
                    ", stored %08" PRIx32 ")", got, hcrc);
    if (!c->nranks || c->rank >= c->nranks || !c->seq || c->base_seq >= c->seq || !c->page_size ||
        !c->job_id)
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "inconsistent header (rank %" PRIu32 " of %" PRIu32 ", seq %" PRIu64
                    ", base %" PRIu64 ", page size %" PRIu32 ")", c->rank, c->nranks, c->seq, c->base_seq,
                    c->page_size);
    if (expect_job != CDSM_CKPT_ANY_JOB && c->job_id != expect_job)
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "foreign job: file has job id %016" PRIx64 ", expected %016" PRIx64,
                    c->job_id, expect_job);
    if (expect_rank != CDSM_CKPT_ANY_RANK && (expect_rank < 0 || c->rank != (uint32_t)expect_rank))
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "foreign rank: file is rank %" PRIu32 "'s, expected rank %d", c->rank,
                    expect_rank);
    /* A committed name must agree with the content (a renamed file is someone else's). */
    uint64_t nrank, nseq;
    if (cdsm__ckf_parse_committed(cdsm__ckf_base_name(x->path), &nrank, &nseq) && (nrank != c->rank || nseq != c->seq))
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "file name says rank %" PRIu64 " checkpoint %" PRIu64
                    ", content says rank %" PRIu32 " checkpoint %" PRIu64, nrank, nseq, c->rank, c->seq);
    return 0;
}

/* A dataset's length as a 32-bit count: the in-memory counts are 32-bit. */
static int count32(ckf_ctx_t *x, hsize_t len, uint32_t *count)
{
    if (len > UINT32_MAX) return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "a dataset has more than 2^32 entries");
    *count = (uint32_t)len;
    return 0;
}

/* /clock: the vector clock (one entry per rank) and the interval counts. */
static int read_clock(ckf_ctx_t *x, hid_t f, cdsm__ckpt_t *c)
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
static int read_pages(ckf_ctx_t *x, hid_t f, cdsm__ckpt_t *c)
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
            cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "/pages/page_index not strictly increasing at entry %" PRIu32, i);
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
static int read_list(ckf_ctx_t *x, hid_t f, const char *gname, const char *name, hid_t mtype, size_t elsize,
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
static int read_private(ckf_ctx_t *x, hid_t f, cdsm__ckpt_t *c)
{
    hid_t g = open_group(x, f, "private");
    if (g < 0) return -1;
    region_it_t it = {.x = x, .c = c};
    int rc = 0;
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, region_visit, &it) < 0)
        rc = cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "group /private is unreadable");
    H5Gclose(g);
    return rc;
}

/* /locks/tails, (lock, rank) pairs; absent in the files of older versions (no tails). */
static int read_tails(ckf_ctx_t *x, hid_t f, cdsm__ckpt_t *c)
{
    c->ntails = 0;
    hid_t g = open_group(x, f, "locks");
    if (g < 0) return -1;
    int rc = 0;
    if (H5Lexists(g, "tails", H5P_DEFAULT) > 0) {
        hsize_t d[2] = {DIM_ANY, 2};
        void *p = NULL;
        rc = load(x, g, "locks", "tails", H5T_NATIVE_UINT32, 4, 2, d, &p);
        c->lock_tails = p;
        if (!rc) rc = count32(x, d[0], &c->ntails);
        for (uint32_t i = 0; !rc && i < c->ntails; i++)
            if (c->lock_tails[2 * i] >= c->nlocks || c->lock_tails[2 * i + 1] >= c->nranks)
                rc = cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "/locks/tails entry %" PRIu32 " names lock %" PRIu32
                                    " and rank %" PRIu32 " (%" PRIu32 " locks, %" PRIu32 " ranks)", i,
                                    c->lock_tails[2 * i], c->lock_tails[2 * i + 1], c->nlocks, c->nranks);
    }
    H5Gclose(g);
    return rc;
}

/* The whole file into c, group by group; stops at the first error (in x). */
static int read_body(ckf_ctx_t *x, hid_t f, int expect_rank, uint64_t expect_job, cdsm__ckpt_t *c)
{
    if (read_header(x, f, expect_rank, expect_job, c) || read_clock(x, f, c) || read_pages(x, f, c)) return -1;
    void *p;
    int rc = read_list(x, f, "locks", "state", H5T_NATIVE_UINT8, 1, &p, &c->nlocks);
    c->lock_state = p;
    if (rc || read_tails(x, f, c)) return -1;
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
    free(c->lock_tails);
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
static int precheck(ckf_ctx_t *x, const char *path)
{
    uint64_t rank;
    if (cdsm__ckf_parse_temp(cdsm__ckf_base_name(path), &rank))
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "uncommitted temporary file (a writer never finished it)");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cdsm__ckf_fail(x, CDSM_ERR_IO, "%s", errno == ENOENT ? "no such file" : strerror(errno));
    struct stat st;
    uint8_t sb[48];
    ssize_t n = fstat(fd, &st) ? -1 : pread(fd, sb, sizeof sb, 0);
    int e = errno;
    close(fd);
    if (n < 0) return cdsm__ckf_fail(x, CDSM_ERR_IO, "%s", strerror(e));
    if (!S_ISREG(st.st_mode)) return cdsm__ckf_fail(x, CDSM_ERR_IO, "not a regular file");
    if (n < 8 || memcmp(sb, h5_signature, 8))
        return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, n < 8 ? "truncated: %lld bytes, not even an HDF5 signature"
                                               : "not an HDF5 file (%lld bytes, bad signature)",
                    (long long)st.st_size);
    if (n >= 40 && (sb[8] == 2 || sb[8] == 3) && sb[9] == 8) {
        uint64_t eof = 0;
        for (int i = 7; i >= 0; i--) eof = eof << 8 | sb[28 + i];
        if ((uint64_t)st.st_size < eof)
            return cdsm__ckf_fail(x, CDSM_ERR_CORRUPT, "truncated: %lld bytes, its superblock says %" PRIu64,
                        (long long)st.st_size, eof);
    }
    return 0;
}

int cdsm__ckpt_read(const char *path, int expect_rank, uint64_t expect_job, cdsm__ckpt_t *out)
{
    if (!path || !out) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm__ckpt_read: NULL argument");
    memset(out, 0, sizeof *out);
    ckf_ctx_t x = {.path = path};
    if (precheck(&x, path)) return cdsm__error(x.status, "checkpoint %s: %s", path, x.why);
    int rc = cdsm__ckpt_files_ready();
    if (rc) return rc;
    ckf_h5quiet_t q;
    cdsm__ckf_h5_quiet(&q);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG); /* close everything, even after errors */
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        cdsm__ckf_fail_h5(&x, CDSM_ERR_CORRUPT, "HDF5 cannot open it (damaged or truncated)");
    } else {
        read_body(&x, f, expect_rank, expect_job, out);
        H5Fclose(f);
    }
    cdsm__ckf_h5_restore(&q);
    if (x.status) {
        cdsm__ckpt_free(out);
        return cdsm__error(x.status, "checkpoint %s: %s", path, x.why);
    }
    return CDSM_OK;
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
