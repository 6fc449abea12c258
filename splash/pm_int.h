/* Internal to the PARMACS layer (splash/): never installed. */
#ifndef CDSM_PM_INT_H
#define CDSM_PM_INT_H

#include <stddef.h>
#include <stdint.h>

/* parmacs.c: print one line naming the cause and end the whole job. */
void cdsm__pm_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* globals.c: the program's globals, shared as in its pthreads build. */
/* Before cdsm_init: find them and ask the heap to make the largest run of pages DSM pages. */
void cdsm__pm_globals_find(void);
/* Same program, same addresses, same pages shared: equal on every rank. */
uint64_t cdsm__pm_globals_fingerprint(void);
/* After cdsm_init (collective): the shadow of the part that stays outside the heap. */
void cdsm__pm_globals_setup(int rank, int nranks);
/* Bytes of globals; *mixed: those copied through the shadow. */
size_t cdsm__pm_globals_bytes(size_t *mixed);
/* Whether p lies in the program's globals. */
int cdsm__pm_globals_has(const void *p);
/* Before a release or an acquire: this rank's changes since its last sync go to the shadow. */
void cdsm__pm_globals_push(void);
/* After an acquire: the changes others made (and this rank now sees) come in. */
void cdsm__pm_globals_pull(void);
/* After an acquire: push then pull, only if records came in since the last pull (an
 * acquire served by the cached token brings none). */
void cdsm__pm_globals_sync_if_new(void);

#endif
