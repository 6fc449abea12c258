/* The MPI-doorbell provider's own state, shared by its files (bell.c: sends and receives;
 * bell_service.c: the service thread; bell_mesh.c: the socket mesh at start-up). */
#ifndef CDSM_BELL_H
#define CDSM_BELL_H

#include <sys/epoll.h>
#include <sys/types.h>

#include "transport.h"

/* Doorbell bytes are 1, heartbeats 2, the goodbye at the end 3 (goodbye.c); a nudge 7
 * wakes the service thread into MPI for a one-sided read (rma.c) and counts for nothing. */
enum { BELL_BYTE = 1, BEAT_BYTE = 2, BYE_BYTE = 3, NUDGE_BYTE = 7, RMA_SERVE_US = 50 };

/* Sockets, counts and debts are per process of the communicator (world rank: spares
 * included). */
typedef struct cdsm__bell {
    int *bell;          /* per peer: socket we write doorbells to (self: an eventfd) */
    int self_in;        /* our own doorbell: an eventfd (a counter: it cannot fill up) */
    uint64_t *debt;     /* per peer: doorbells not yet written because its socket was full */
    int kick_fd;        /* wakes our service thread to pay a debt (an eventfd) */
    int stop_pipe[2];
    int epfd;           /* every doorbell we read, and the stop pipe */
    pthread_mutex_t rx_mu; /* whoever holds it receives */
    int64_t *rx_count;  /* per peer: doorbell bytes read minus messages received */
    uint8_t *ended;     /* per peer: its doorbell stream has ended (read under rx_mu) */
    uint8_t *bye;       /* per peer: it said goodbye before its end (under rx_mu) */
    pthread_cond_t bye_cv; /* (with rx_mu) a goodbye came, or a stream ended */
    pthread_t svc;
    int svc_started;
    /* The failure detector's second half (the first is end-of-file on a doorbell
     * stream): a heartbeat byte on every doorbell socket each CDSM_HEARTBEAT_MS, from the
     * service thread, which wakes for nothing else when idle. Membership judges the
     * silences (cdsm__tp_events_t.tick). */
    uint64_t *heard_ns; /* per peer: when a byte of it last arrived (under rx_mu) */
    uint64_t next_beat_ns;
    pid_t *peer_pid;    /* per peer: its pid, when it runs on this host (else 0) */
    int stream;         /* the socket provider: messages travel on these sockets (sock.c) */
    int nudged;         /* a nudge byte came (under rx_mu): serve one-sided reads (rma.c) */
} cdsm__bell_t;

extern cdsm__bell_t cdsm__bell;
extern const cdsm__tp_ops_t cdsm__bell_ops;
extern const cdsm__tp_ops_t cdsm__sock_ops;

int cdsm__bell_mesh(void);
void *cdsm__bell_service_main(void *arg);
/* The service thread's work between sleeps (bell.c). */
void cdsm__bell_test_pending(void);
int cdsm__bell_pay_debts(void);
/* Wake our service thread (to pay debts, push queued frames, wait for a late message). */
void cdsm__bell_kick(void);
/* Count a message sent to process w (lock messages for the rebuild's cut, the stats). */
void cdsm__bell_count_sent(int w, int type, size_t total);
int cdsm__bell_rx_owed(void);
int cdsm__bell_rx_drain(const struct epoll_event *ev, int nev);
void cdsm__bell_rx_messages(void);
/* Shared by both providers (bell.c): check and deliver one whole message (header and
 * payload, count bytes) from process src, taking buf; handle the end of p's stream. Both
 * under rx_mu. */
int cdsm__bell_deliver(int src, uint8_t *buf, size_t count);
void cdsm__bell_ended(int p, ssize_t r, int err);
/* The socket provider's part of the service thread's work (sock.c): read p's stream
 * (-1 once it ended), deliver our own messages, send a heartbeat frame, push queued
 * frames (1 while some remain). */
int cdsm__sock_read(int p);
void cdsm__sock_beat(int p);
/* The socket provider's goodbye frame to p, after the frames queued before it. */
void cdsm__sock_bye(int p);
/* goodbye.c: p said goodbye (under rx_mu); the goodbye itself (cdsm__tp_goodbye). */
void cdsm__bell_heard_bye(int p);
int cdsm__bell_goodbye(uint64_t ms, int *missing, int *first);
int cdsm__sock_push_all(void);
/* Messages to ourselves (loopback.c): queue one (takes buf); deliver the queued ones
 * (under rx_mu; 1 if any); wake the service thread for what is still queued, once this
 * thread stops receiving; drop them all at the end. */
int cdsm__loop_post(uint8_t *buf, size_t total);
int cdsm__loop_deliver(void);
void cdsm__loop_wake(void);
void cdsm__loop_drop(void);
/* Doorbells only for sleepers (awake.c, node-mates on the MPI-doorbell provider): share
 * the receiving flags at start-up (never fatal); set ours; after a message went out to
 * w, whether its doorbell may be skipped (w collects a credit instead); add the credits
 * senders left us to the per-peer counts (under rx_mu). */
int cdsm__awake_setup(void);
/* shmfd.c, memfds shared with node-mates over the doorbell sockets. A segment of ours: a memfd of `bytes` mapped here (NULL and fd -1 if that failed). */
void *cdsm__shmfd_create(const char *name, size_t bytes, int populate, int *fd);
/* Hand fd to every node-mate (with a tag byte saying what it is) and map `bytes` of each
 * one's with prot into peer[] (per process; NULL where none or on failure, logged);
 * closes fd. */
void cdsm__shmfd_exchange(int fd, uint8_t tag, size_t bytes, int prot, const char *what, void **peer);
/* Unmap our segment and the node-mates' (per process, NULL where none), free the array. */
void cdsm__shmfd_unmap(void *self, void **peer, size_t bytes);
/* A segment of ours that every node-mate maps: made (populated if asked), set up by init
 * (if any), handed out, and theirs mapped into *peer (an array made here, per process).
 * NULL, errno set and *peer NULL, if ours could not be made. */
typedef struct cdsm__shm_seg {
    const char *name, *what; /* memfd name; what it is, for the log */
    size_t bytes;
    int populate, prot; /* prot: how node-mates' segments are mapped here */
    uint8_t tag;
    void (*init)(void *mem);
} cdsm__shm_seg_t;
void *cdsm__shmfd_share(const cdsm__shm_seg_t *seg, void ***peer);
/* Whether another process of the job runs on this host. */
int cdsm__shmfd_any_mate(void);
/* The node heap's fd, handed out by rank 0's process at start-up (before the board and
 * the words, which a node heap does without: neither is set up once the fd passed; if
 * the ranks then fail to agree on one heap, diffs and tokens go by message). */
void cdsm__heapfd_setup(void);
int cdsm__heapfd_passed(void);
/* board.c: the published diffs, shared with node-mates at start-up (after the flags and
 * the node heap's fd). */
int cdsm__board_setup(void);
void cdsm__board_fini(void);
/* board.c: this process's vote for one-sided reads (its board's size in pages where it
 * wants them, else 0; every process must vote the same, start-up's agreement); then, once
 * all agreed (rma: they did, and the call is collective), whether other processes' boards
 * are read one-sided, and so whether publishing is worth it. */
int cdsm__board_rma_vote(void);
int cdsm__board_reach(int rma);
/* rma.c: one-sided access to other processes' boards and lock words (CDSM_RMA). plan:
 * whether this process wants it, decided once in the mesh before the board and the words
 * are made; wanted: that answer, 0 no, 1 for processes on other hosts, 2 for every process.
 * expose, once all agreed, is collective: a window over every process's board, or words
 * (the board's first: its window is what turns one-sided access on). */
enum { CDSM_RMA_BOARD, CDSM_RMA_WORDS, CDSM_RMA_WINS };
typedef struct cdsm__rma_op {
    int w;              /* the process read */
    uint64_t off;       /* from this byte of its board */
    void *dst;
    size_t len;
    int ok, lost;       /* read; its process was lost meanwhile (dst must then stay allocated) */
} cdsm__rma_op_t;
void cdsm__rma_plan(void);
int cdsm__rma_wanted(void);
int cdsm__rma_expose(int which, void *mem, size_t bytes);
void cdsm__rma_fini(void);
int cdsm__rma_on(void);
int cdsm__rma_reaches(int w);
/* A read of process w was given up lately (it did not serve within RMA_GIVE_UP_MS): its
 * board is not read one-sided for a while, its diffs are asked for by message. */
int cdsm__rma_shunned(int w);
/* A 32-bit word of process w's lock words at byte off, atomically: load, store (swap),
 * or compare-and-swap (expected a, desired b); what was there (UINT32_MAX on an error). */
enum { CDSM_RMA_LOAD, CDSM_RMA_SWAP, CDSM_RMA_CAS };
uint32_t cdsm__rma_word(int w, uint64_t off, int op, uint32_t a, uint32_t b);
/* Do the n reads and wait for them all (nudging their targets when they wait long). */
void cdsm__rma_get(cdsm__rma_op_t *op, size_t n);
/* words.c: the lock words, shared with node-mates at start-up (after the board). */
int cdsm__words_setup(void);
void cdsm__words_fini(void);
/* Whether our words are ready for one-sided access (the vote's other half), and, once all
 * agreed (rma, collective), their window; without it, words made only for it go. */
int cdsm__words_ready(void);
int cdsm__words_reach_setup(int rma);
void cdsm__awake_fini(void);
void cdsm__awake_receiving(int on);
int cdsm__awake_skip(int w);
/* Late doorbells (awake.c): this thread's sends ring late (1) or at once (0); credits left
 * late with anyone; ring those still there (answered: the reply came, which keeps late
 * bells on for those receivers), with ring(w) once per credit taken back. */
void cdsm__awake_late(int on);
int cdsm__awake_late_pending(void);
/* Node-mates left late credits here since the last collect (one load). */
int cdsm__awake_late_left(void);
int cdsm__awake_ring_late(int answered, int (*ring)(int w));
void cdsm__awake_collect(int64_t *rx_count);

#endif
