/* The goodbye at the end, for both providers of the doorbell mesh. A process that has
 * passed the program's last barrier says goodbye on every open doorbell stream (a byte,
 * or an empty frame with a tag of its own on the socket provider, after the frames
 * queued before it), then waits until each peer has said goodbye or its stream ended.
 * A stream that ended without one belongs to a process that died after the last barrier
 * (otherwise its end looks like a finish): MPI_Finalize would wait for it for ever, in
 * the launcher's barrier that still counts it, so the caller skips it instead of waiting
 * out CDSM_FINALIZE_TIMEOUT. */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>

#include "bell.h"

static cdsm__bell_t *const bl = &cdsm__bell;

void cdsm__bell_heard_bye(int p)
{
    bl->bye[p] = 1;
    pthread_cond_broadcast(&bl->bye_cv);
}

/* The MPI-doorbell provider's goodbye byte, after the doorbells before it. */
static void say_bye(int p, uint64_t deadline_ns)
{
    char b = BYE_BYTE;
    while (send(bl->bell[p], &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return; /* (its end: its stream tells) */
        uint64_t now = cdsm__mono_ns();
        struct pollfd pf = {bl->bell[p], POLLOUT, 0};
        if (now >= deadline_ns || poll(&pf, 1, (int)((deadline_ns - now) / 1000000) + 1) < 0) return;
    }
}

/* Peers not heard from yet (*missing) and those whose stream ended without a goodbye
 * (the return value, with the first in *first). Caller holds rx_mu. */
static int count_unsaid(int *missing, int *first)
{
    int died = 0;
    *missing = 0;
    *first = -1;
    for (int p = 0; p < cdsm__w.wn; p++) {
        if (p == cdsm__w.wrank || bl->bell[p] < 0 || bl->bye[p]) continue;
        if (!bl->ended[p]) {
            (*missing)++;
        } else if (!died++) {
            *first = p;
        }
    }
    return died;
}

int cdsm__bell_goodbye(uint64_t ms, int *missing, int *first)
{
    uint64_t deadline = cdsm__mono_ns() + ms * 1000000;
    for (int p = 0; p < cdsm__w.wn; p++)
        if (p != cdsm__w.wrank && bl->bell[p] >= 0) bl->stream ? cdsm__sock_bye(p) : say_bye(p, deadline);
    if (bl->stream) cdsm__bell_kick(); /* (the service thread pushes what the sockets did not take) */
    /* One deadline on one clock for the sends and the wait: ms in all. */
    struct timespec dl = cdsm__mono_ts(deadline);
    pthread_mutex_lock(&bl->rx_mu);
    int rc = 0, died;
    while ((died = count_unsaid(missing, first)), *missing && rc != ETIMEDOUT)
        rc = pthread_cond_clockwait(&bl->bye_cv, &bl->rx_mu, CLOCK_MONOTONIC, &dl);
    pthread_mutex_unlock(&bl->rx_mu);
    return died;
}
