/* Fault injection for the failure tests (internal, every floor): CDSM_KILL_AT=RANK:STEP:N
 * makes the process of logical rank RANK kill itself with SIGKILL the N-th time it reaches
 * STEP, so that a test can end a process inside each step of a checkpoint (a kill from
 * outside lands where it happens to land). */
#ifndef CDSM_INJECT_H
#define CDSM_INJECT_H

#ifdef __cplusplus
extern "C" {
#endif

/* Parse CDSM_KILL_AT (after the configuration is loaded): an error names a malformed value. */
int cdsm__inject_init(void);
/* Arm it in the process that starts as a working rank (never in a spare: its replacement
 * must not kill itself again). */
void cdsm__inject_arm(int rank);
/* Rank `rank` reaches `step` (one of the names cdsm__inject_init accepts). Any thread. */
void cdsm__inject(int rank, const char *step);

#ifdef __cplusplus
}
#endif
#endif
