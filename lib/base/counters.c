/* The process's counters: one instance, updated atomically by whichever thread counts. */
#include "counters.h"

cdsm_stats_t cdsm__st;
