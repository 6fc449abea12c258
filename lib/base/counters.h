/* The process's counters (cdsm_stats_t), updated by every floor (internal). */
#ifndef CDSM_COUNTERS_H
#define CDSM_COUNTERS_H

#include <stdint.h>

#include "cdsm.h"

#ifdef __cplusplus
extern "C" {
#endif

extern cdsm_stats_t cdsm__st;

#define CDSM_NSTATS (sizeof(cdsm_stats_t) / sizeof(uint64_t))
#define CDSM_STAT_ADD(field, v) __atomic_fetch_add(&cdsm__st.field, (uint64_t)(v), __ATOMIC_RELAXED)

#ifdef __cplusplus
}
#endif
#endif
