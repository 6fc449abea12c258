/* The service thread of both socket-mesh providers (MPI-doorbell and socket): asleep in
 * epoll_wait() until a doorbell rings (or a frame arrives) or a heartbeat is due; it
 * receives and delivers, pays owed doorbells (pushes queued frames), sends the heartbeats
 * and lets membership judge the silences. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "bell.h"

static cdsm__bell_t *const bl = &cdsm__bell;

/* Service thread: send heartbeats when due; return the milliseconds until the next. */
static int beat(void)
{
    uint64_t period = cdsm__cfg.heartbeat_ms * 1000000ull, now = cdsm__mono_ns();
    if (now >= bl->next_beat_ns) {
        char b = BEAT_BYTE;
        for (int p = 0; p < cdsm__w.wn; p++) {
            if (p == cdsm__w.wrank || bl->bell[p] < 0 || __atomic_load_n(&cdsm__w.wdead[p], __ATOMIC_ACQUIRE))
                continue;
            if (bl->stream)
                cdsm__sock_beat(p);
            else
                (void)send(bl->bell[p], &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT); /* full: it has bytes to read */
        }
        bl->next_beat_ns = now + period;
    }
    return (int)((bl->next_beat_ns - now + 999999) / 1000000);
}

void *cdsm__bell_service_main(void *arg)
{
    (void)arg;
    struct epoll_event ev[64];
    int hb = cdsm__cfg.heartbeat_ms > 0;
    for (;;) {
        /* Asleep until a doorbell rings or a heartbeat is due; 1 ms naps only while our
         * own sends are incomplete, doorbells are owed, or a message rung for has not
         * arrived yet. */
        int owed = bl->stream ? cdsm__sock_push_all() : cdsm__bell_pay_debts();
        int late = cdsm__bell_rx_owed();
        int to = cdsm__bell_ops.sending() || owed || late ? 1 : -1;
        if (hb) {
            int next = beat();
            if (to < 0 || next < to) to = next;
        }
        int nev = epoll_wait(bl->epfd, ev, 64, to);
        if (nev < 0 && errno != EINTR) {
            cdsm__log(CDSM_LOG_ERROR, "service thread: epoll_wait: %s", strerror(errno));
            break;
        }
        int stop = 0;
        if (nev > 0 || late || hb) {
            pthread_mutex_lock(&bl->rx_mu);
            if (nev > 0)
                stop = cdsm__bell_rx_drain(ev, nev);
            else if (!bl->stream)
                cdsm__bell_rx_messages(); /* a heartbeat's wake-up also progresses MPI (see cdsm__wait_reply) */
            if (nev <= 0) cdsm__loop_deliver(); /* (what a thread left unannounced: never for long) */
            if (hb && !stop && cdsm__tp_ev.tick) cdsm__tp_ev.tick();
            pthread_mutex_unlock(&bl->rx_mu);
        }
        cdsm__bell_test_pending();
        if (stop) break;
    }
    cdsm__bell_ops.flush();
    return NULL;
}
