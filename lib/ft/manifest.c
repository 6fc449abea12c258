/* Small text records in a job's checkpoint folder, readable with cat, each closed by a
 * CRC-32C of what precedes it.
 *
 * The whole-job restart manifest, <job folder>/manifest:
 *
 *   cdsm restart manifest 1
 *   job 0000000da00000cb
 *   ranks 4
 *   barrier 42
 *   crc32c 1a2b3c4d
 *
 * Two-phase rule: every rank commits its checkpoint of a resume point before it arrives at
 * the barrier that ends that collection (prepared); rank 0 writes the manifest only after
 * that barrier's release (all prepared) and renames it into place (commit). A job stopped
 * at any moment leaves either the previous manifest or the new one, never a torn one.
 *
 * A rank's output release mark, <job folder>/rank<R>.released ("cdsm output released 1",
 * job, rank, barrier, crc32c): the rank has emitted every output produced before that
 * barrier. A whole-job restart holds again only the output its checkpoint holds from that
 * barrier on. It is renamed into place but not fsynced: it guards against stopped
 * processes, and a lost mark only makes a restart print output again, never lose it. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_file.h"
#include "proto.h"

#define MANIFEST_HEAD "cdsm restart manifest 1\n"
#define MARK_HEAD "cdsm output released 1\n"

/* Write body + its crc32c line to dir/name by temporary file and rename; sync: fsync the
 * file before the rename and the folder after it. */
static int write_checked(const char *dir, const char *name, const char *what, const char *body, int sync)
{
    char path[PATH_MAX], tmp[PATH_MAX], text[512];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s/.%s.tmp%ld", dir, name, (long)getpid()) >= (int)sizeof tmp)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "%s: folder name too long: %s", what, dir);
    int len = snprintf(text, sizeof text, "%scrc32c %08" PRIx32 "\n", body, cdsm__ckpt_crc32c(0, body, strlen(body)));
    FILE *f = fopen(tmp, "w");
    int ok = f && fwrite(text, 1, (size_t)len, f) == (size_t)len;
    if (f && fclose(f)) ok = 0;
    if (!ok || (sync && cdsm__fsync_path(tmp, 0)) || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return cdsm__error(CDSM_ERR_IO, "%s %s: %s", what, path, strerror(e));
    }
    if (sync && cdsm__fsync_path(dir, 1))
        return cdsm__error(CDSM_ERR_IO, "%s %s: fsync of the folder: %s", what, path, strerror(errno));
    return CDSM_OK;
}

/* Read the file at path into text (NUL-terminated) and check its crc32c line against
 * what precedes it; *body_len: the checked part. 1: it cannot be opened (errno set);
 * -1: no valid crc32c line. */
static int read_checked(const char *path, char *text, size_t size, size_t *body_len)
{
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(text, 1, size - 1, f);
    fclose(f);
    text[n] = '\0';
    uint32_t crc = 0;
    char *at = strstr(text, "crc32c ");
    if (!at || sscanf(at, "crc32c %" SCNx32, &crc) != 1 || cdsm__ckpt_crc32c(0, text, (size_t)(at - text)) != crc)
        return -1;
    *body_len = (size_t)(at - text);
    return 0;
}

static int body(char *buf, size_t size, const cdsm__manifest_t *m)
{
    return snprintf(buf, size, MANIFEST_HEAD "job %016" PRIx64 "\nranks %" PRIu32 "\nbarrier %" PRIu32 "\n", m->job,
                    m->nranks, m->epoch);
}

int cdsm__manifest_write(const char *dir, const cdsm__manifest_t *m)
{
    char text[256];
    body(text, sizeof text, m);
    return write_checked(dir, "manifest", "restart manifest", text, 1);
}

int cdsm__manifest_read(const char *dir, cdsm__manifest_t *m)
{
    char path[PATH_MAX], text[512], want[256];
    size_t len = 0;
    if (snprintf(path, sizeof path, "%s/manifest", dir) >= (int)sizeof path)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "restart manifest: folder name too long: %s", dir);
    int rc = read_checked(path, text, sizeof text, &len);
    if (rc > 0)
        return cdsm__error(CDSM_ERR_IO,
                           "%s: %s (no manifest: the job never committed a checkpoint on every rank at one resume "
                           "point, or %s is not a job folder <CDSM_CKPT_DIR>/job-<id>)",
                           path, strerror(errno), dir);
    if (strncmp(text, MANIFEST_HEAD, strlen(MANIFEST_HEAD)) ||
        sscanf(text + strlen(MANIFEST_HEAD), "job %" SCNx64 "\nranks %" SCNu32 "\nbarrier %" SCNu32 "\n", &m->job,
               &m->nranks, &m->epoch) != 3)
        return cdsm__error(CDSM_ERR_CORRUPT, "%s: not a cdsm restart manifest (version 1)", path);
    /* The text must be exactly what this version writes, and its checksum must hold. */
    if (rc || (size_t)body(want, sizeof want, m) != len || memcmp(text, want, len) || !m->job || !m->nranks ||
        !m->epoch)
        return cdsm__error(CDSM_ERR_CORRUPT, "%s: checksum or content mismatch (a damaged manifest)", path);
    return CDSM_OK;
}

static int mark_body(char *buf, size_t size, uint64_t job, int rank, uint32_t upto)
{
    return snprintf(buf, size, MARK_HEAD "job %016" PRIx64 "\nrank %d\nbarrier %" PRIu32 "\n", job, rank, upto);
}

int cdsm__output_mark_write(const char *dir, uint64_t job, int rank, uint32_t upto)
{
    char name[64], text[256];
    snprintf(name, sizeof name, "rank%d.released", rank);
    mark_body(text, sizeof text, job, rank, upto);
    return write_checked(dir, name, "output release mark", text, 0);
}

int cdsm__output_mark_read(const char *dir, uint64_t job, int rank, uint32_t *upto)
{
    char path[PATH_MAX], text[512], want[256];
    size_t len = 0;
    uint64_t j = 0;
    int r = -1;
    *upto = 0;
    if (snprintf(path, sizeof path, "%s/rank%d.released", dir, rank) >= (int)sizeof path)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "output release mark: folder name too long: %s", dir);
    int rc = read_checked(path, text, sizeof text, &len);
    if (rc > 0 && errno == ENOENT) return CDSM_OK; /* the rank never released output there */
    if (rc > 0) return cdsm__error(CDSM_ERR_IO, "%s: %s", path, strerror(errno));
    if (strncmp(text, MARK_HEAD, strlen(MARK_HEAD)) ||
        sscanf(text + strlen(MARK_HEAD), "job %" SCNx64 "\nrank %d\nbarrier %" SCNu32 "\n", &j, &r, upto) != 3 || rc ||
        (size_t)mark_body(want, sizeof want, j, r, *upto) != len || memcmp(text, want, len))
        return cdsm__error(CDSM_ERR_CORRUPT, "%s: not a cdsm output release mark (version 1), or a damaged one", path);
    if (j != job || r != rank)
        return cdsm__error(CDSM_ERR_CORRUPT, "%s: a mark of job %016" PRIx64 " rank %d, expected job %016" PRIx64 " rank %d",
                           path, j, r, job, rank);
    return CDSM_OK;
}
