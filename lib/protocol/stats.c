/* Counters: snapshot, print, and sum over ranks (carried by a barrier). */
#include <string.h>

#include "proto.h"

int cdsm_stats_get(cdsm_stats_t *out)
{
    if (!out) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_stats_get: out is NULL");
    if (!cdsm__g.initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_stats_get before cdsm_init");
    const uint64_t *src = (const uint64_t *)&cdsm__st;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < CDSM_NSTATS; i++) dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    return CDSM_OK;
}

static void print_stats(FILE *f, const cdsm_stats_t *s, const char *prefix)
{
#define CDSM_X_PRINT(field, help) fprintf(f, "%s%-22s %llu\n", prefix, #field, (unsigned long long)s->field);
    CDSM_STATS_TABLE(CDSM_X_PRINT)
#undef CDSM_X_PRINT
}

int cdsm_stats_print(FILE *f)
{
    cdsm_stats_t s;
    if (!f) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_stats_print: f is NULL");
    int rc = cdsm_stats_get(&s);
    if (rc) return rc;
    char prefix[32];
    snprintf(prefix, sizeof prefix, "cdsm[%d] ", cdsm__w.rank);
    print_stats(f, &s, prefix);
    return CDSM_OK;
}

int cdsm__stats_print_total(FILE *f, const cdsm_stats_t *total)
{
    print_stats(f, total, "cdsm[all] ");
    return CDSM_OK;
}

int cdsm_stats_reduce(const cdsm_stats_t *mine, cdsm_stats_t *total)
{
    if (!mine || !total) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_stats_reduce: NULL argument");
    return cdsm__barrier_full(CDSM_BAR_PLAIN, 0, mine, total, NULL);
}
