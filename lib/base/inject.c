/* Fault injection for the failure tests (CDSM_KILL_AT). */
#include "inject.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdsm.h"
#include "config.h"
#include "log.h"

static const char *const steps[] = {"ckpt_snapshot", "ckpt_write", "ckpt_rename", "ckpt_fsync", "ckpt_commit",
                                    "ckpt_collect",  "output_release", "barrier", "lk_freeze", "finished",
                                    "lock_held"};

static struct {
    int set, on, rank; /* a valid value was given; this process is armed */
    unsigned step, left; /* kill when left reaches 0 */
} K;

int cdsm__inject_init(void)
{
    const char *v = cdsm__cfg.kill_at;
    K.set = K.on = 0;
    if (!*v) return CDSM_OK;
    char name[32];
    int rank, used = 0;
    unsigned long n;
    if (sscanf(v, "%d:%31[a-z_]:%lu%n", &rank, name, &n, &used) != 3 || v[used] || rank < 0 || n < 1)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_KILL_AT=%s: expected RANK:STEP:N (N >= 1)", v);
    for (unsigned i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (!strcmp(name, steps[i])) {
            K.set = 1;
            K.rank = rank;
            K.step = i;
            K.left = (unsigned)n;
            return CDSM_OK;
        }
    char known[256] = "";
    for (unsigned i = 0; i < sizeof steps / sizeof steps[0]; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "", steps[i]);
    return cdsm__error(CDSM_ERR_CONFIG, "CDSM_KILL_AT=%s: unknown step \"%s\" (%s)", v, name, known);
}

void cdsm__inject_arm(int rank)
{
    K.on = K.set && rank == K.rank;
    if (K.on) cdsm__log(CDSM_LOG_WARN, "fault injection: rank %d kills itself at step %s, time %u", rank, steps[K.step], K.left);
}

void cdsm__inject(int rank, const char *step)
{
    if (!K.on || rank != K.rank || strcmp(step, steps[K.step])) return;
    if (__atomic_sub_fetch(&K.left, 1, __ATOMIC_ACQ_REL) != 0) return;
    cdsm__log(CDSM_LOG_WARN, "fault injection: rank %d kills itself at step %s", rank, step);
    fflush(NULL);
    kill(getpid(), SIGKILL);
}
