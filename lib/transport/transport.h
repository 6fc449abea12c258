/* Transport (floor 1, internal): moving messages between the processes of the job.
 *
 * It knows processes (world ranks) and the routing table from the program's logical ranks
 * to processes, and nothing of pages, locks or recovery. Providers sit behind an ops
 * table (cdsm__tp_ops_t), as UCX's transports do: MPI messages, each announced by a byte on
 * a per-peer doorbell socket (bell.c), or the messages themselves as frames on those
 * sockets (sock.c), chosen by CDSM_TRANSPORT. What it observes of peers (a stream
 * that ended, a silence) it reports upward through the event table the layers above
 * register (cdsm__tp_events_t): it decides nothing about them. */
#ifndef CDSM_TRANSPORT_H
#define CDSM_TRANSPORT_H

#include <mpi.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "cdsm.h"
#include "clock.h"
#include "config.h"
#include "counters.h"
#include "log.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every message starts with this header; the payload follows. */
typedef struct cdsm__msg_hdr {
    uint16_t type; /* the protocol's message type, 1..CDSM_TP_MAX_TYPES-1; also the MPI tag */
    uint16_t src;  /* the sender's logical rank (a spare: its world rank's slot is unused) */
    uint32_t len;  /* payload bytes after the header */
    uint64_t tag;  /* request id, lock id or barrier epoch */
} cdsm__msg_hdr_t;
CDSM__STATIC_ASSERT(sizeof(cdsm__msg_hdr_t) == 16, "message header is a wire format");

enum { CDSM_TP_MAX_TYPES = 64 };
/* The goodbye frame of the socket provider: type 0 and no payload, as a heartbeat, with
 * this tag ("goodbye!"). */
#define CDSM_TP_BYE_TAG 0x2165796264646f67ull

/* Who is where: written by membership (floor 3), read by every floor. */
typedef struct cdsm__world {
    int rank, n;        /* logical rank (the program's; -1: a spare) and number of working ranks */
    int wrank, wn;      /* this process and all processes in the communicator (spares too) */
    int *phys;          /* logical rank -> world rank (n entries) */
    int *logical;       /* world rank -> logical rank, -1 for a spare, -2 once replaced (wn entries) */
    uint8_t *wdead;     /* world ranks found dead (atomic) */
    uint32_t remap_gen; /* bumped when a logical rank moves to another process (atomic) */
    int finalizing;     /* every rank is past its work: closed streams are expected (atomic) */
    int recovered;      /* a process died in this run (MPI_Finalize would wait for it) (atomic) */
    uint32_t *lk_sent, *lk_recv; /* messages of the counted types sent to / received from each process */
    MPI_Comm comm;      /* the library's own communicator */
} cdsm__world_t;

extern cdsm__world_t cdsm__w;

/* What the layers above tell the transport and hear from it. Registered once, before
 * cdsm__tp_init(); every entry is called without the protocol's lock held. */
typedef struct cdsm__tp_events {
    /* A message arrived (service thread or a receiving application thread); takes buf. */
    void (*deliver)(const cdsm__msg_hdr_t *h, uint8_t *buf);
    /* Process w's stream ended or it fell silent (why says which): the one "peer down"
     * entry. Returns 1 if the run goes on without it (a spare takes its rank). */
    int (*peer_down)(int w, const char *why);
    /* Process w sent a message as logical rank r, which the routing table does not say:
     * 1 if it is (or has just become) r. */
    int (*adopt)(int r, int w);
    /* Process w died or is dying and a failed send to it is no error: its rank is (or
     * will be) taken by a spare, or the run is finishing. */
    int (*recoverable)(int w);
    /* The heartbeat clock ticked (service thread, receiving): judge the silences. */
    void (*tick)(void);
    /* Requests are kept until their reply (type reply_of[type]) comes, and sent again when
     * their destination moves to another process; messages of counted[type] are counted
     * per peer (cdsm__w.lk_sent/lk_recv). */
    uint8_t reply_of[CDSM_TP_MAX_TYPES];
    uint8_t counted[CDSM_TP_MAX_TYPES];
} cdsm__tp_events_t;

void cdsm__tp_set_events(const cdsm__tp_events_t *ev);

/* A transport provider. */
typedef struct cdsm__tp_ops {
    const char *name;
    int (*init)(void);
    void (*fini)(void);
    /* Send a built message (header included) to process w; takes buf. Never blocks on
     * the receiver. */
    int (*post)(int w, int type, uint8_t *buf, size_t total);
    /* Complete this thread's outstanding sends; whether it has any. */
    int (*flush)(void);
    int (*sending)(void);
    /* This thread stops receiving (it sleeps, or returns to the program): wake the
     * service thread for what it left to it (our own messages, loopback.c). */
    void (*idle)(void);
    /* This thread receives itself from now on (1) or no longer (0), so senders on this
     * host may skip the doorbell; NULL where the provider has no use for it. */
    void (*receiving)(int on);
    /* Late doorbells (NULL where the provider has none): this thread's requests from now
     * on wake their receiver only if it has not taken them itself within
     * CDSM_LATE_BELL_US (on 1) or ring at once (0); ring_late rings those not taken yet
     * (answered: the reply came); late_pending: some are waiting to be rung. */
    void (*late)(int on);
    int (*ring_late)(int answered);
    int (*late_pending)(void);
    /* Receive what node-mates left with late doorbells, if any (cheap when nothing is). */
    int (*poll)(void);
    /* Receive and deliver what has arrived, without blocking; >0 if anything came. */
    int (*progress)(void);
    /* Liveness facts about process w, for membership's judgement: when a byte of it last
     * arrived, its pid when it runs on this host (else 0), whether its stream is open. */
    void (*peer_info)(int w, uint64_t *heard_ns, int *pid, int *open);
    /* Stop hearing process w for good (it was declared lost). */
    void (*cut)(int w);
    pthread_t (*service_thread)(void);
    /* The goodbye at the end (NULL: none): see cdsm__tp_goodbye. */
    int (*goodbye)(uint64_t ms, int *missing, int *first);
} cdsm__tp_ops_t;

/* Published diffs (board.c; MPI-doorbell provider, node-mates): a process publishes the
 * diffs it makes, by key, in shared memory its node-mates map; a node-mate copies one
 * without a message. A cache that can only miss: cdsm__board_get returns -1 for a key
 * never published, overwritten since, or of a rank on another host (unless CDSM_RMA reads
 * it one-sided), and the caller asks by message. cdsm__board_on: node-mates read ours, so publishing is worth it. */
int cdsm__board_on(void);
void cdsm__board_put(uint64_t key, const void *data, uint32_t len);
/* A malloc'd copy of the blob `key` of logical rank `rank` (0), or -1. */
int cdsm__board_get(int rank, uint64_t key, void **out, uint32_t *len);
/* The same for n blobs at once (out[i] NULL where not found; how many were): a board
 * read one-sided (CDSM_RMA, a process on another host) costs three round trips a batch. */
size_t cdsm__board_get_many(size_t n, const int *rank, const uint64_t *key, void **out, uint32_t *len);
/* Shared words (words.c; MPI-doorbell provider, no spares): CDSM_WORDS_PER_LOCK 32-bit
 * words per lock id (CDSM_LOCKS; lock l's at index l * CDSM_WORDS_PER_LOCK) of each
 * logical rank. reach: whether rank's words can be used here (a node-mate's, mapped, or
 * any rank's through MPI RMA with CDSM_RMA; not on another host without it, with spares,
 * on the socket provider); the operations are atomic (cas: 1 if *expect was there and
 * desired is now, else *expect is what is there) and only for a rank reached. */
#define CDSM_WORDS_PER_LOCK 2
int cdsm__words_reach(int rank);
uint32_t cdsm__word_load(int rank, size_t i);
void cdsm__word_store(int rank, size_t i, uint32_t v);
uint32_t cdsm__word_swap(int rank, size_t i, uint32_t v);
int cdsm__word_cas(int rank, size_t i, uint32_t *expect, uint32_t desired);
/* The board's memory itself (for its unit test): bytes for a ring of `ring` bytes, an empty
 * board, one entry written (-1: too large for the ring), one read by a node-mate. */
size_t cdsm__board_bytes(uint64_t ring);
void cdsm__board_format(void *mem, uint64_t ring);
int cdsm__board_write(void *mem, uint64_t key, const void *data, uint32_t len);
int cdsm__board_read(const void *mem, uint64_t ring, uint64_t nslots, uint64_t key, void **out, uint32_t *len);

/* The routing table for wn processes of which the first n work (membership fills it). */
int cdsm__world_init(int wrank, int wn, int n);
void cdsm__world_fini(void);

int cdsm__tp_init(void);
void cdsm__tp_fini(void);
/* Once past the program's last barrier, before cdsm__tp_fini: say goodbye to every peer
 * and wait up to ms until each has said goodbye or its stream ended. Returns how many
 * ended without one (processes that died after the last barrier; the first's world rank
 * in *first, else -1); *missing: peers heard neither way by then. */
int cdsm__tp_goodbye(uint64_t ms, int *missing, int *first);
/* The provider in use ("mpi-doorbell" or "socket"), for the start-up line. */
const char *cdsm__tp_name(void);
/* Send header+payload (two parts, either may be empty) to logical rank dst. Never blocks
 * on the receiver: the application thread completes its sends in cdsm__tp_flush(). */
int cdsm__tp_send(int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2);
/* The same to a world rank (spares, before they have a logical rank). */
int cdsm__tp_send_world(int wdst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2,
                        size_t l2);
/* Receive and deliver whatever has arrived, without blocking (skipped when another
 * thread is receiving). Returns >0 if anything came. */
int cdsm__tp_progress(void);
/* Complete this thread's outstanding sends, and leave receiving to the service thread
 * (cdsm__tp_idle): before returning to the program. */
int cdsm__tp_flush(void);
/* Only complete them: a waiter that goes on receiving itself. */
int cdsm__tp_flush_sends(void);
/* This thread stops receiving (it is about to sleep): the service thread must see what
 * this thread sent itself and did not take yet. */
void cdsm__tp_idle(void);
/* The application thread receives itself from now on (1), or no longer (0): after 0 it
 * must receive once more (a sender may have seen the 1). */
void cdsm__tp_receiving(int on);
/* A request whose sender waits for the answer next: sent with a late doorbell (its
 * receiver is woken only if it has not taken the request itself by the time the wait
 * stops being active). After a failed send, requests already left late are rung, since no
 * wait follows. */
int cdsm__tp_send_late(int dst, int type, uint64_t tag, const void *p1, size_t l1, const void *p2, size_t l2);
/* Late doorbells (see cdsm__tp_ops_t.late): no-ops where the provider has none. */
void cdsm__tp_late(int on);
int cdsm__tp_ring_late(int answered);
int cdsm__tp_late_pending(void);
int cdsm__tp_poll(void);
/* Whether this thread has sends not yet complete. */
int cdsm__tp_sending(void);
/* Whether this thread woke another thread (a doorbell rung, a frame on a socket, its own
 * service thread kicked) since it last asked; asking clears it. A waiter that woke nobody
 * spins without yielding the core for a moment: the thread that will answer is running. */
int cdsm__tp_woke(void);
/* (providers) This thread just woke one. */
void cdsm__tp_note_wake(void);
/* Kept requests: the reply of (type, tag) came; forget every one (a peer is lost for
 * good); send again those whose destination now lives in another process. This thread's. */
void cdsm__tp_resend_done(int reply_type, uint64_t tag);
void cdsm__tp_resend_clear(void);
void cdsm__tp_resend_moved(void);
/* Liveness facts and fencing (see cdsm__tp_ops_t). */
void cdsm__tp_peer_info(int w, uint64_t *heard_ns, int *pid, int *open);
/* This process's index among the job's processes on its host, and their count (spares
 * included), from the mesh's exchange of host names: no collective of its own. */
void cdsm__tp_node_index(int *idx, int *count);
void cdsm__tp_cut(int w);
pthread_t cdsm__tp_service_thread(void);
/* The node heap (DESIGN, "The node heap"): before cdsm__tp_init the layer above offers
 * the memfd of its heap; at start-up, when every process of the job runs on this host
 * (no socket provider), the process of rank 0 hands it to every other one over the
 * doorbell sockets. Afterwards: rank 0's fd as received here (the caller's to close),
 * -2 on rank 0 when it handed its own out, else -1. Asked once. */
void cdsm__tp_offer_heap_fd(int fd);
int cdsm__tp_node_heap_fd(void);

/* For the provider: events registered by the layers above. */
extern cdsm__tp_events_t cdsm__tp_ev;

#ifdef __cplusplus
}
#endif
#endif
