/* SIGSEGV and SIGBUS handling: faults inside the shared heap are protocol events (read
 * miss, first write in an interval: SIGBUS where userfaultfd write-protects, wprot.c);
 * every other fault goes to the handler that was there before (UCX installs one at
 * MPI_Init), so real crashes still report. Installed after MPI_Init. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <ucontext.h>

#include "proto.h"

static struct sigaction previous, previous_bus;
static int installed;

static int fault_is_write(void *ucv)
{
#if defined(__x86_64__)
    ucontext_t *uc = ucv;
    return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#elif defined(__aarch64__)
    /* ESR is in the extra context; conservatively treat as write only when the page is
     * already readable (a read would not have faulted). */
    (void)ucv;
    return -1;
#else
#error "cdsm: fault classification not implemented for this architecture"
#endif
}

static void chain(const struct sigaction *prev, int sig, siginfo_t *si, void *uc)
{
    if (prev->sa_flags & SA_SIGINFO) {
        prev->sa_sigaction(sig, si, uc);
    } else if (prev->sa_handler == SIG_IGN) {
        return;
    } else if (prev->sa_handler == SIG_DFL) {
        /* Restore the default action and return: the access faults again and the
         * process dies with the original signal and address. */
        signal(sig, SIG_DFL);
    } else {
        prev->sa_handler(sig);
    }
}

/* In the heap, SIGBUS is a write to a write-protected page (wprot.c). */
static void on_fault(int sig, siginfo_t *si, void *uc)
{
    char *a = si->si_addr;
    if (!cdsm__heap_contains(a)) {
        chain(sig == SIGBUS ? &previous_bus : &previous, sig, si, uc);
        return;
    }
    int saved = errno;
    uint32_t pg = cdsm__page_of(a);
    int w = sig == SIGBUS ? 2 : fault_is_write(uc);
    if (w < 0) w = cdsm__pg(pg)->state != CDSM_PG_INVALID;
    cdsm__fault(pg, w);
    errno = saved;
}

int cdsm__fault_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &previous))
        return cdsm__error(CDSM_ERR_INVALID_ARG, "sigaction(SIGSEGV): %s", strerror(errno));
    if (sigaction(SIGBUS, &sa, &previous_bus)) {
        int e = errno;
        sigaction(SIGSEGV, &previous, NULL);
        return cdsm__error(CDSM_ERR_INVALID_ARG, "sigaction(SIGBUS): %s", strerror(e));
    }
    installed = 1;
    return CDSM_OK;
}

void cdsm__fault_uninstall(void)
{
    if (installed) {
        sigaction(SIGSEGV, &previous, NULL);
        sigaction(SIGBUS, &previous_bus, NULL);
    }
    installed = 0;
}
