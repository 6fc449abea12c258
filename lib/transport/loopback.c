/* Messages a process sends itself (both providers): a queue in memory, delivered by
 * whichever thread receives, under rx_mu.
 *
 * Why not MPI and our own doorbell at once: the application thread that sends itself a
 * request (rank 0's barrier arrival, a lock request to a lock it manages) nearly always
 * waits for the answer, receiving itself, and takes the message from this queue. Writing
 * the eventfd woke the service thread for nothing; on two cores that wake-up was most of a
 * barrier (3.4 us without it, 13-17 us with it, measured 2026-12-03). So a thread other than
 * the service thread only marks the queue owed, and wakes the service thread when it stops
 * receiving (cdsm__loop_wake(): before it sleeps or returns to the program) if frames are
 * still there. The service thread's own sends ring at once (it is the one that sleeps). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bell.h"

typedef struct lb_frame {
    struct lb_frame *next;
    uint8_t *buf;
    size_t len;
} lb_frame_t;

static struct loopback {
    pthread_mutex_t mu;
    lb_frame_t *head, *tail;
    int owed; /* frames were queued without our doorbell (atomic) */
} lb = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int ring_self(void)
{
    uint64_t one = 1;
    if (write(cdsm__bell.self_in, &one, 8) == 8) return CDSM_OK;
    return cdsm__error(CDSM_ERR_NET, "own doorbell: %s", strerror(errno));
}

static int on_service_thread(void)
{
    return cdsm__bell.svc_started && pthread_equal(pthread_self(), cdsm__bell.svc);
}

int cdsm__loop_post(uint8_t *buf, size_t total)
{
    lb_frame_t *f = malloc(sizeof *f);
    if (!f) {
        free(buf);
        return cdsm__error(CDSM_ERR_NOMEM, "message to ourselves");
    }
    *f = (lb_frame_t){NULL, buf, total};
    pthread_mutex_lock(&lb.mu);
    if (lb.tail)
        lb.tail->next = f;
    else
        lb.head = f;
    lb.tail = f;
    pthread_mutex_unlock(&lb.mu);
    if (on_service_thread()) return ring_self();
    __atomic_store_n(&lb.owed, 1, __ATOMIC_RELEASE);
    return CDSM_OK;
}

int cdsm__loop_deliver(void)
{
    pthread_mutex_lock(&lb.mu);
    lb_frame_t *f = lb.head;
    lb.head = lb.tail = NULL;
    pthread_mutex_unlock(&lb.mu);
    int got = f != NULL;
    while (f) {
        lb_frame_t *next = f->next;
        if (cdsm__bell_deliver(cdsm__w.wrank, f->buf, f->len)) cdsm_check(!"unreadable protocol message");
        free(f);
        f = next;
    }
    return got;
}

void cdsm__loop_wake(void)
{
    if (!__atomic_exchange_n(&lb.owed, 0, __ATOMIC_ACQ_REL)) return;
    pthread_mutex_lock(&lb.mu);
    int queued = lb.head != NULL;
    pthread_mutex_unlock(&lb.mu);
    if (queued) (void)ring_self(); /* (an error is logged; the heartbeat's wake-up delivers it) */
}

void cdsm__loop_drop(void)
{
    pthread_mutex_lock(&lb.mu);
    while (lb.head) {
        lb_frame_t *f = lb.head;
        lb.head = f->next;
        free(f->buf);
        free(f);
    }
    lb.tail = NULL;
    lb.owed = 0;
    pthread_mutex_unlock(&lb.mu);
}
