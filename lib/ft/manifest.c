/* The whole-job restart manifest: a few lines of text in the job's checkpoint folder,
 * readable with cat, closed by a CRC-32C of what precedes it:
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
 * at any moment leaves either the previous manifest or the new one, never a torn one. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_file.h"
#include "proto.h"

#define MANIFEST_HEAD "cdsm restart manifest 1\n"

static int body(char *buf, size_t size, const cdsm__manifest_t *m)
{
    return snprintf(buf, size, MANIFEST_HEAD "job %016" PRIx64 "\nranks %" PRIu32 "\nbarrier %" PRIu32 "\n", m->job,
                    m->nranks, m->epoch);
}

int cdsm__manifest_write(const char *dir, const cdsm__manifest_t *m)
{
    char path[PATH_MAX], tmp[PATH_MAX], text[256];
    if (snprintf(path, sizeof path, "%s/manifest", dir) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s/.manifest.tmp%ld", dir, (long)getpid()) >= (int)sizeof tmp)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "restart manifest: folder name too long: %s", dir);
    int len = body(text, sizeof text, m);
    len += snprintf(text + len, sizeof text - (size_t)len, "crc32c %08" PRIx32 "\n",
                    cdsm__ckpt_crc32c(0, text, (size_t)len));
    FILE *f = fopen(tmp, "w");
    int ok = f && fwrite(text, 1, (size_t)len, f) == (size_t)len;
    if (f && fclose(f)) ok = 0;
    if (!ok || cdsm__fsync_path(tmp, 0) || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return cdsm__error(CDSM_ERR_IO, "restart manifest %s: %s", path, strerror(e));
    }
    if (cdsm__fsync_path(dir, 1))
        return cdsm__error(CDSM_ERR_IO, "restart manifest %s: fsync of the folder: %s", path, strerror(errno));
    return CDSM_OK;
}

int cdsm__manifest_read(const char *dir, cdsm__manifest_t *m)
{
    char path[PATH_MAX], text[512], want[256];
    if (snprintf(path, sizeof path, "%s/manifest", dir) >= (int)sizeof path)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "restart manifest: folder name too long: %s", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return cdsm__error(CDSM_ERR_IO,
                           "%s: %s (no manifest: the job never committed a checkpoint on every rank at one resume "
                           "point, or %s is not a job folder <CDSM_CKPT_DIR>/job-<id>)",
                           path, strerror(errno), dir);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    uint32_t crc = 0;
    char *at = strstr(text, "crc32c ");
    if (strncmp(text, MANIFEST_HEAD, strlen(MANIFEST_HEAD)) || !at ||
        sscanf(text + strlen(MANIFEST_HEAD), "job %" SCNx64 "\nranks %" SCNu32 "\nbarrier %" SCNu32 "\n", &m->job,
               &m->nranks, &m->epoch) != 3 ||
        sscanf(at, "crc32c %" SCNx32, &crc) != 1)
        return cdsm__error(CDSM_ERR_CORRUPT, "%s: not a cdsm restart manifest (version 1)", path);
    /* The text must be exactly what this version writes, and its checksum must hold. */
    int len = body(want, sizeof want, m);
    if ((size_t)(at - text) != (size_t)len || memcmp(text, want, (size_t)len) ||
        cdsm__ckpt_crc32c(0, text, (size_t)len) != crc || !m->job || !m->nranks || !m->epoch)
        return cdsm__error(CDSM_ERR_CORRUPT, "%s: checksum or content mismatch (a damaged manifest)", path);
    return CDSM_OK;
}
