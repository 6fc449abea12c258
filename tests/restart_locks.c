/* A lock program in resume mode whose tokens move between ranks at every step, for the
 * whole-job restart test (tests/sbatch_restart.sh): each step every rank adds rank + 1 to
 * each of LOCKS shared totals, each under its own lock, in a rank-dependent order, then
 * reaches a resume point. A restart from a checkpoint taken at one of those points must
 * find every lock's queue where the stopped job left it: a token cached at a rank that
 * is not the lock's manager is reached after the restart as before it.
 *
 * With "hold", one more lock is held across every resume point: at step s rank s % n
 * takes it, counts the step under it and keeps it through the resume point (so every
 * checkpoint has it held, and a restart must give it back to that rank, held, with the
 * count); the holder releases it at the top of the next step, and the next holder waits
 * for it there.
 *
 * Usage: restart_locks [STEPS [hold]] (default 300). Prints "answer: " with the totals'
 * sum and "result: VERIFIED" when every total is STEPS * n(n+1)/2 (and, with hold, the
 * held lock's count is STEPS). */
#include <string.h>
#include <stdio.h>
#include <stdlib.h>

#include <cdsm.h>

enum { LOCKS = 6, FIRST_LOCK = 11, HELD_LOCK = 40 };

static void check(int rc, const char *what)
{
    if (rc == CDSM_OK) return;
    fprintf(stderr, "restart_locks: %s: %s (%s)\n", what, cdsm_last_error(), cdsm_status_name(rc));
    exit(1);
}

int main(int argc, char **argv)
{
    check(cdsm_init(&argc, &argv), "cdsm_init");
    long steps = argc > 1 ? strtol(argv[1], NULL, 10) : 300;
    if (steps < 1 || steps > 1000000) {
        fprintf(stderr, "restart_locks: STEPS must be in [1, 1000000]\n");
        return 2;
    }
    int me = cdsm_rank(), n = cdsm_nranks(), resumed = 0, hold = argc > 2 && strcmp(argv[2], "hold") == 0;
    long *total, step = 0;
    check(cdsm_alloc((LOCKS + 1) * sizeof *total, (void **)&total), "cdsm_alloc");
    check(cdsm_protect("step", &step, sizeof step), "cdsm_protect");
    check(cdsm_resume(&resumed), "cdsm_resume");
    while (step < steps) {
        /* (a restart resumes here, the held lock still held by the last step's holder) */
        if (hold && step > 0 && me == (int)((step - 1) % n)) check(cdsm_lock_release(HELD_LOCK), "release held");
        for (int k = 0; k < LOCKS; k++) {
            int l = (k + me + (int)step) % LOCKS; /* a different order each step and rank */
            check(cdsm_lock_acquire(FIRST_LOCK + l), "cdsm_lock_acquire");
            total[l] += me + 1;
            check(cdsm_lock_release(FIRST_LOCK + l), "cdsm_lock_release");
        }
        if (hold && me == (int)(step % n)) {
            check(cdsm_lock_acquire(HELD_LOCK), "acquire held");
            total[LOCKS] += 1;
        }
        step++;
        check(cdsm_resume_point(), "cdsm_resume_point");
    }
    if (hold && me == (int)((step - 1) % n)) check(cdsm_lock_release(HELD_LOCK), "release held");
    long want = steps * n * (n + 1) / 2, sum = 0;
    int ok = 1;
    for (int l = 0; l < LOCKS; l++) {
        sum += total[l];
        if (total[l] != want) ok = 0;
    }
    check(cdsm_barrier(), "cdsm_barrier");
    if (hold && total[LOCKS] != steps) ok = 0;
    if (hold) sum += total[LOCKS];
    if (me == 0) {
        printf("answer: %ld\n", sum);
        printf("result: %s\n", ok ? "VERIFIED" : "WRONG");
    }
    check(cdsm_finalize(), "cdsm_finalize");
    return ok ? 0 : 1;
}
