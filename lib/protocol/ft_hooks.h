/* The table of hooks through which fault tolerance (floor 3) joins the protocol
 * (internal). The protocol never calls fault tolerance by name: fault tolerance fills this
 * table at init (cdsm__ft_register), and every entry has a default that does nothing, so
 * the protocol runs alone (the unit tests run it so). Unless said otherwise, the caller
 * holds the protocol lock (cdsm__g.mu). */
#ifndef CDSM_FT_HOOKS_H
#define CDSM_FT_HOOKS_H

#include <stdint.h>

#include "interval.h"
#include "msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A rank's last committed checkpoint, as barrier arrivals and releases carry it. */
typedef struct cdsm__ckpt_pos {
    uint32_t sync_seq; /* synchronisation number at the checkpoint (0: none) */
    uint32_t epoch;    /* barrier epoch of the checkpoint (0: none) */
} cdsm__ckpt_pos_t;
CDSM__STATIC_ASSERT(sizeof(cdsm__ckpt_pos_t) == 8, "checkpoint position is a wire format");

/* What fault tolerance tells the protocol about how this rank runs (set by it, read by
 * the protocol). */
typedef struct cdsm__mode {
    int replaying;       /* this process is a replacement replaying a lost rank */
    int replaying_start; /* this process took over a rank in cdsm_init: replay begins */
    int resume_mode;     /* the program called cdsm_resume(): checkpoints only at resume points */
    int fast_forward;    /* replacement before cdsm_resume() restores a checkpoint: the
                          * program's allocation barriers are passed without effect */
} cdsm__mode_t;
extern cdsm__mode_t cdsm__mode;

typedef struct cdsm__ft_hooks {
    /* ---- messages */
    /* A message of fault tolerance's own request types (takeover, retire, replay and
     * lock-rebuild requests). */
    void (*on_message)(const cdsm__msg_hdr_t *h, cdsm__rd_t *r);
    /* A spare being set up keeps messages until its protocol state exists (1: kept). */
    int (*hold_early)(const cdsm__msg_hdr_t *h, uint8_t *buf);
    /* A replacement still replaying keeps requests it cannot serve yet (1: kept). */
    int (*defer)(const cdsm__msg_hdr_t *h, const cdsm__rd_t *r);

    /* ---- locks */
    /* A grant of lock l was sent to `to` for its acquire to_seq / taken from `from` for
     * our acquire seq: the determinant a replay needs (vc: the grant's vector clock). */
    void (*grant_sent)(int to, uint32_t l, uint32_t to_seq, uint32_t grant_seq, const uint32_t *vc);
    void (*grant_taken)(int from, uint32_t l, uint32_t seq, uint32_t grant_seq, const uint32_t *vc);
    /* Replacement, at acquire seq of lock l: take it as the lost process did (0, state
     * HELD), or go live here (0, state HELD if the token is here, else WAITING). */
    int (*replay_acquire)(uint32_t l, uint32_t seq);
    /* Replacement, past an acquire's or a release's synchronisation point: serve the
     * requests that waited for what it has made again since. */
    void (*replay_synced)(void);

    /* ---- causality (two spares or more: gcopy.c) */
    /* The trailer of a message that carries causality to `to` (lock requests, forwards
     * and grants, barrier arrivals and releases), and at its receipt: taken, and r
     * shortened to the message before it (non-zero: malformed). */
    void (*trailer_put)(int to, cdsm__buf_t *b);
    int (*trailer_take)(int from, cdsm__rd_t *r);
    /* Page pg was converted by its home at synchronisation seq (made here, or learned
     * from the copy served). */
    void (*converted)(uint32_t pg, int home, uint32_t seq);

    /* ---- barriers */
    /* Replacement in barrier `epoch` (kind as entered): 1 if the barrier was replayed
     * from the log (its outcome in *flags, status in *rc; mu released on return), 0 if it
     * is live (mu still held; *rc non-zero if going live failed). */
    int (*replay_barrier)(int kind, uint32_t epoch, int *flags, int *rc);
    /* Arrivals carry this rank's last committed checkpoint when logging is on. */
    int (*logging)(void);
    cdsm__ckpt_pos_t (*ckpt_committed)(void);
    /* This rank's checkpoint policy wants a checkpoint at this resume point. */
    int (*want_ckpt)(void);
    /* A release came: every rank's checkpoint position (n entries, possibly unaligned)
     * and the barrier's outcome (vector clock in cdsm__g.vc). */
    void (*released)(uint32_t epoch, uint32_t flags, const void *all_pos);
    /* After a plain barrier outside resume mode: take a checkpoint if the policy says so. */
    int (*after_barrier)(void);
    /* Outputs produced before barrier `upto` can be released (mu not held). */
    void (*release_output)(uint32_t upto);
    /* The checker's round also audits the logs (manager: collect, then finish). */
    void (*audit_put)(cdsm__buf_t *b);
    int (*audit_collect)(int src, cdsm__rd_t *r);
    int (*audit_finish)(uint32_t out[4]);

    /* ---- garbage collection */
    /* Whether collected intervals must be kept (logging on, no checkpoints). */
    int (*archive_needed)(void);
    /* Take over one of this rank's records (*own*) / keep another rank's (a copy). */
    void (*archive_own)(cdsm__interval_t *iv);
    void (*archive_other)(const cdsm__interval_t *iv);
    /* The archived record of this rank's interval idx, or NULL. */
    const cdsm__interval_t *(*archived)(uint32_t idx);
    /* Checkpoints on: every rank commits a full one before a diff is dropped. */
    int (*ckpt_enabled)(void);
    int (*ckpt_commit)(void);
    /* Resume mode, every rank committed at the end of a collection: the restart manifest. */
    void (*ckpt_manifest)(void);
} cdsm__ft_hooks_t;

/* The hooks in force (defaults until fault tolerance registers). */
extern cdsm__ft_hooks_t cdsm__ft;
/* Fault tolerance fills the entries it implements; the others keep their defaults. */
void cdsm__ft_register(const cdsm__ft_hooks_t *h);

#ifdef __cplusplus
}
#endif
#endif
