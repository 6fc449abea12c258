/* Placement: bind this process's threads by the topology (CDSM_BIND; start-up,
 * collective) (internal, runtime). */
#ifndef CDSM_PLACEMENT_H
#define CDSM_PLACEMENT_H

#include <pthread.h>

int cdsm__place(pthread_t service);
/* What placement did, for the run's header. */
const char *cdsm__placement(void);

#endif
