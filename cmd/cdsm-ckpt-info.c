/* cdsm-ckpt-info PATH: a summary of one checkpoint file, with every checksum verified.
 * Exit status 0 when the file is a sound checkpoint, 1 when it is refused (the reason is
 * printed, naming the file), 2 on a usage error. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cdsm.h"
#include "ckpt_file.h"
#include "log.h"

static const char *state_name(uint8_t s)
{
    switch (s) {
    case 0: return "invalid";
    case 1: return "read-only";
    case 2: return "read-write";
    }
    return "unknown";
}

static void usage(FILE *f)
{
    fprintf(f, "usage: cdsm-ckpt-info PATH\n"
               "Prints a summary of a cdsm checkpoint file (docs/CHECKPOINT_FORMAT.md) and verifies\n"
               "its checksums (header and every dataset, crc32c).\n"
               "Options:\n"
               "  -h, --help  this help\n"
               "Environment: none (no CDSM_* setting applies).\n"
               "Exit status: 0 a sound checkpoint, 1 refused (the reason is printed, naming the\n"
               "file), 2 usage error.\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    const char *path = argv[1];
    cdsm__log_level = -1; /* the error is printed below, once */
    cdsm__ckpt_t c;
    int rc = cdsm__ckpt_read(path, CDSM_CKPT_ANY_RANK, CDSM_CKPT_ANY_JOB, &c);
    if (rc) {
        printf("file         %s\n", path);
        printf("checksums    FAILED\n");
        fprintf(stderr, "cdsm-ckpt-info: %s (%s)\n", cdsm_last_error(), cdsm_status_name(rc));
        /* HDF5 1.10 keeps internal state after a metadata checksum failure and complains
         * at exit ("infinite loop closing library"): skip its exit handler. */
        fflush(stdout);
        fflush(stderr);
        _exit(1);
    }
    char when[64] = "?";
    time_t t = (time_t)c.created;
    struct tm tm;
    if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);

    printf("file         %s\n", path);
    printf("format       %s version %" PRIu32 "\n", CDSM_CKPT_MAGIC, c.format_version);
    printf("job          %016" PRIx64 "\n", c.job_id);
    printf("rank         %" PRIu32 " of %" PRIu32 "\n", c.rank, c.nranks);
    printf("seq          %" PRIu64 "\n", c.seq);
    if (c.base_seq) printf("base         %" PRIu64 " (incremental)\n", c.base_seq);
    else printf("base         0 (full)\n");
    printf("epoch        %" PRIu64 "\n", c.epoch);
    printf("created      %s\n", when);
    printf("vector clock [");
    for (uint32_t i = 0; i < c.nranks; i++) printf(i ? " %" PRIu32 : "%" PRIu32, c.vc[i]);
    printf("]\n");
    printf("intervals    %" PRIu32 " counters\n", c.nintervals);
    unsigned nstate[4] = {0};
    for (uint32_t i = 0; i < c.npages; i++) nstate[c.page_state[i] < 3 ? c.page_state[i] : 3]++;
    printf("page size    %" PRIu32 "\n", c.page_size);
    printf("pages        %" PRIu32 " (%" PRIu64 " bytes)", c.npages, (uint64_t)c.npages * c.page_size);
    const char *sep = ": ";
    for (int s = 0; s < 4; s++)
        if (nstate[s]) {
            printf("%s%u %s", sep, nstate[s], state_name((uint8_t)s));
            sep = ", ";
        }
    printf("\n");
    if (c.npages)
        printf("page range   %" PRIu32 "..%" PRIu32 "\n", c.page_index[0], c.page_index[c.npages - 1]);
    printf("locks        %" PRIu32 "\n", c.nlocks);
    printf("log position [");
    for (uint32_t i = 0; i < c.nlog; i++) printf(i ? " %" PRIu64 : "%" PRIu64, c.log_pos[i]);
    printf("]\n");
    uint64_t pbytes = 0;
    for (uint32_t i = 0; i < c.nregions; i++) pbytes += c.regions[i].size;
    printf("private      %" PRIu32 " regions (%" PRIu64 " bytes)\n", c.nregions, pbytes);
    for (uint32_t i = 0; i < c.nregions; i++)
        printf("  %-24s %" PRIu64 " bytes\n", c.regions[i].name, c.regions[i].size);
    printf("checksums    OK (header and %" PRIu32 " datasets, crc32c)\n", 8 + c.nregions);
    cdsm__ckpt_free(&c);
    return 0;
}
