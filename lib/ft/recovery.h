/* Causal logging of determinants and checkpoints at barriers (internal, never installed).
 *
 * What a replay of rank r needs, beyond r's checkpoint and the diffs the writers keep:
 * the vector clock r received at each acquire that took a grant from another rank, and
 * the global vector clock of each barrier. Interval records and diffs follow from those
 * vector clocks (a race-free program's access misses fetch exactly the diffs of the
 * intervals the vector clock covers), so they are not logged a second time.
 *
 * Every grant is logged twice, by the protocol's own message and no extra one: the granter
 * keeps a SENT entry (needed when the acquirer fails), the acquirer a RECV entry (needed to
 * rebuild the granter's SENT entries after the granter fails, so that a later failure is
 * covered too). Piggybacked: the acquirer's synchronisation number on the lock request and
 * its forward (4 bytes), the granter's on the grant (4 bytes), each rank's last committed
 * checkpoint on barrier arrivals (8 bytes) and all of them on releases (8 bytes per rank). */
#ifndef CDSM_RECOVERY_H
#define CDSM_RECOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CDSM_DET_SENT = 1, CDSM_DET_RECV = 2, CDSM_DET_BARRIER = 3 };

/* One determinant; vc[n] follows (the grant's vector clock, or the barrier's global one). */
typedef struct cdsm__det {
    uint32_t kind;    /* CDSM_DET_* */
    uint32_t peer;    /* SENT: acquirer; RECV: granter; BARRIER: this rank */
    uint32_t id;      /* lock id, or barrier epoch */
    uint32_t acq_seq; /* the acquirer's synchronisation number of the acquire (BARRIER: this rank's) */
    uint32_t grant_seq; /* the granter's synchronisation number when it granted (BARRIER: the release flags) */
    uint32_t vc[];
} cdsm__det_t;
CDSM__STATIC_ASSERT(sizeof(cdsm__det_t) == 20, "determinant header is a log and audit format");


/* ---- detlog.c: the determinant log (caller holds mu unless said otherwise) ----------- */
int cdsm__det_init(void);
void cdsm__det_fini(void);
int cdsm__det_enabled(void);
/* Log one determinant. */
void cdsm__det_log(uint32_t kind, uint32_t peer, uint32_t id, uint32_t acq_seq, uint32_t grant_seq,
                   const uint32_t *vc);
/* New checkpoint positions of every rank (n cdsm__ckpt_pos_t, as a barrier release
 * carries them: possibly unaligned): drop what no replay can need any more. */
void cdsm__det_trim(const void *pos);
/* Tests only: forget the newest determinant of a kind (1 if there was one). */
int cdsm__det_drop_newest(uint32_t kind);
/* Visit each determinant held, oldest first. */
void cdsm__det_foreach(void (*fn)(const cdsm__det_t *d, void *arg), void *arg);

/* Debug audit (CDSM_CHECK=1), in the checker's barrier round: every rank sends digests
 * of its SENT and RECV entries and the barrier epochs it holds; the manager checks that
 * each grant that a replay could need is held by both its granter and its acquirer, and
 * every barrier since the oldest checkpoint by every rank. */
void cdsm__det_audit_put(cdsm__buf_t *b);
int cdsm__det_audit_collect(int src, cdsm__rd_t *r);
/* Manager, when all have arrived: 0 if complete, else 1 and what is missing in out[4]
 * (acquirer, granter, acquire number, lock or epoch). Resets the round. */
int cdsm__det_audit_finish(uint32_t out[4]);

/* ---- gcopy.c: copies of every grant determinant, carried causally (two spares or more) -- */
/* On with logging and CDSM_SPARES >= 2; made and dropped with the log. */
int cdsm__gcopy_on(void);
int cdsm__gcopy_init(void);
void cdsm__gcopy_fini(void);
/* A grant heard of (from: the rank that told us, -1 our own); a copy already held is kept. */
void cdsm__gcopy_add(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq, uint32_t grant_seq,
                     const uint32_t *vc, int from);
/* The trailer of a message to `to` (the copies it has not had from us), and its decoder:
 * takes them and shortens r to the message before it. */
void cdsm__gcopy_put(int to, cdsm__buf_t *b);
int cdsm__gcopy_take(int from, cdsm__rd_t *r);
/* Every copy held (a replacement's replay data; `to` has them all afterwards), and its
 * decoder. */
void cdsm__gcopy_put_all(cdsm__buf_t *b, int to);
int cdsm__gcopy_take_all(cdsm__rd_t *r, int from);
/* Every grant copy held (conversions not). */
void cdsm__gcopy_foreach(void (*fn)(uint32_t granter, uint32_t acquirer, uint32_t lock, uint32_t acq_seq,
                                    uint32_t grant_seq, const uint32_t *vc, void *arg),
                         void *arg);
/* A conversion of page pg by its home at synchronisation seq (conv.c), carried the same
 * way; and the ones of `home` held, each to fn. */
void cdsm__gcopy_converted(uint32_t pg, int home, uint32_t seq);
void cdsm__gcopy_conversions(int home, void (*fn)(uint32_t pg, uint32_t seq, void *arg), void *arg);
/* Drop the copies no replay from these checkpoints (n positions) can need. */
void cdsm__gcopy_trim(const cdsm__ckpt_pos_t *pos);

/* ---- archive.c: own diffs kept after garbage collection for a replay from the start -- */
/* Whether collected intervals must be archived (logging on, no checkpoints). */
int cdsm__archive_needed(void);
/* Take over one of this rank's interval records at garbage collection (its pending diffs
 * are made first); caller holds mu and no longer frees it. */
void cdsm__archive_keep(cdsm__interval_t *iv);
/* The archived record of this rank's interval idx, or NULL. */
const cdsm__interval_t *cdsm__archive_find(uint32_t idx);
void cdsm__archive_fini(void);

/* With spares: keep another rank's record at garbage collection (serialized), for the
 * replay of a rank lost together with that one; and the ones kept of rank q. */
void cdsm__archive_other(const cdsm__interval_t *iv);
uint32_t cdsm__archive_other_records(int q, const cdsm__buf_t **records);

/* Number of archived records, and a visit of each in increasing idx. */
uint32_t cdsm__archive_count(void);
void cdsm__archive_foreach(void (*fn)(const cdsm__interval_t *iv, void *arg), void *arg);

/* ---- ft.c: fault tolerance joins the floors below ------------------------------------- */
/* Register the protocol hooks and the transport events (before the transport starts). */
void cdsm__ft_init(void);

/* ---- membership.c, silence.c: the rank map, spares, leader, takeover ------------------- */
/* Rank map for wn processes of which the first n work (the transport's routing table). */
int cdsm__map_init(int wrank, int wn, int n);
void cdsm__map_fini(void);
/* The transport's "peer down" entry, and its heartbeat tick (silence.c). */
int cdsm__member_peer_down(int w, const char *why);
void cdsm__member_tick(void);
/* Process w died (its stream ended, or it fell silent). Returns 1 if a spare takes its
 * rank's place (or it held no rank), 0 if the run has lost the rank for good. */
int cdsm__world_lost(int w, const char *why);
/* Process w ended while this rank finalizes: the last barrier goes on without it. */
void cdsm__final_lost(int w);
/* Process w sent a message as logical rank r: 1 if it is (or has just become) r. */
int cdsm__recover_adopt(int r, int w);
/* Process w died or is dying and its rank is (or will be) replayed by a spare. Any thread. */
int cdsm__world_recoverable(int w);
/* World rank w's loss is no error for a send: recoverable, or the run is finishing. */
int cdsm__send_loss_harmless(int w);
/* Whether rank r is being replayed (its replacement is not live yet). */
int cdsm__member_replayed_now(int r);
/* Rank r's replacement is live (its lock rebuild came): a later loss can be recovered. */
void cdsm__recover_done(int r);
/* Spare: sleep until a takeover (returns the rank to become), the end of the run (-1), or
 * every working process is gone with no takeover (-2). */
int cdsm__spare_wait(void);
/* A recovery step's wait for one answer (type, tag) to an empty request (req_type, tag)
 * from the ranks q with sent_to[q] >= 0 (the process each request went to; set to -1 once
 * q answered). A rank whose process has been replaced since (it died before answering)
 * is asked again, of its replacement; after a minute without an answer, an error names
 * the rank. Caller holds mu. */
int cdsm__ft_wait_each(int req_type, int type, uint64_t tag, int *sent_to, const char *what, cdsm__reply_t **out);
/* Rank 0 at finalize: release the spares that were never needed. */
void cdsm__retire_spares(void);
/* Messages reaching a spare before its protocol state exists are kept for later (1). */
int cdsm__hold_early(const cdsm__msg_hdr_t *h, uint8_t *buf);
/* The protocol state exists: dispatch the messages held until now. Call without mu. */
void cdsm__proto_ready(void);
void cdsm__on_takeover(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);
void cdsm__on_retire(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);

/* ---- replay_serve.c: survivors serve a replay ------------------------------------------ */
void cdsm__serve_replay(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);
/* A replacement lost with the asking one: its own records first..last (REC_REQ), once its
 * replay has made them again (kept until then); the newest one a request asks for. */
void cdsm__serve_records(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);
int cdsm__rec_req_newest(const uint8_t *p, size_t len, uint32_t *newest);
/* How many of the asking rank's intervals this rank knows (KNOW_REQ). */
void cdsm__serve_know(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);

/* ---- replay.c: the replacement ---------------------------------------------------------- */
/* Replacement, after its state is initialised: gather what the replay needs. */
int cdsm__replay_begin(void);
/* In a barrier of epoch `epoch` (caller holds mu): 1 if it is replayed from the log (its
 * records incorporated, vector clock taken, release flags in *flags), 0 if it is live. */
int cdsm__replay_barrier(uint32_t epoch, uint32_t *flags);
/* The protocol's replay_barrier hook (see ft_hooks.h). */
int cdsm__replay_barrier_hook(int kind, uint32_t epoch, int *flags_out, int *rc);
/* The protocol's replay_acquire hook (see ft_hooks.h). */
int cdsm__replay_acquire(uint32_t l, uint32_t seq);
void cdsm__replay_serve_deferred(void);
/* The protocol's converted hook: keep a copy of the conversion, and (a replaying home)
 * serve the first fetches that waited for its base. */
void cdsm__replay_converted(uint32_t pg, int home, uint32_t seq);
/* Whether barrier `epoch` is in the replay store's log (the survivors passed it). */
int cdsm__replay_logged(uint32_t epoch);
/* A checkpoint was restored (cdsm_resume): records up to its clock are applied. */
void cdsm__replay_restored(void);
/* Where the log ends (the first live barrier or acquire): serve what waited, rebuild the
 * lock queues, drop the store. Caller holds mu. */
int cdsm__replay_finish(void);
/* A replacement still replaying keeps requests it cannot serve yet (1): diff requests
 * until it has made their diffs again, page requests and barrier arrivals until it is
 * live. Caller holds mu. */
int cdsm__replay_defer(const cdsm__msg_hdr_t *h, const cdsm__rd_t *r);
/* Take out the kept messages of this type and tag and hand each to fn (its payload is
 * freed afterwards). Caller holds mu. */
void cdsm__replay_take(int type, uint64_t tag, void (*fn)(const cdsm__msg_hdr_t *h, cdsm__rd_t *r, void *arg),
                       void *arg);

/* ---- lockrebuild.c: the lock queues after a loss (caller holds mu) ------------------- */
/* Replacement going live: freeze the survivors' queues, rebuild them, let them go on. */
int cdsm__lock_rebuild(void);
/* Survivor: freeze and report (LK_FREEZE); take the rebuilt queues (LK_REBUILD). */
void cdsm__lk_on_freeze(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);
void cdsm__lk_on_rebuild(const cdsm__msg_hdr_t *h, cdsm__rd_t *rd);

/* A lock's state in a rebuild's report: the lock states, and waiting with the grant come
 * but unread. */
enum { CDSM_LKR_NONE = CDSM_LK_NONE, CDSM_LKR_TOKEN = CDSM_LK_TOKEN, CDSM_LKR_HELD = CDSM_LK_HELD,
       CDSM_LKR_WAITING = CDSM_LK_WAITING, CDSM_LKR_GRANTED = 4 };
uint32_t cdsm__lk_report_state(const cdsm__lock_t *lk, uint32_t l);
/* Send the lost process's grant of lock l to `to` (its acquire seq; to_vc: its clock)
 * again, from the log. */
void cdsm__lk_regrant(uint32_t l, int to, uint32_t seq, const uint32_t *to_vc);
/* A recovery wait's answer: a lower rank being replayed leads this rebuild instead. */
enum { CDSM__LK_GIVE_WAY = 1 };

/* ---- lockjoint.c: replacements going live together (caller holds mu) ------------------ */
/* What the grants this replacement has heard of say of lock l: its lost process's last
 * grant of it (to whom, *to_seq: for which acquire; -1: none), and whether they name the
 * lock at all. Dropped by cdsm__lk_know_free. */
int cdsm__lk_know_last_to(uint32_t l, uint32_t *to_seq);
int cdsm__lk_know_named(uint32_t l);
void cdsm__lk_know_free(void);
/* The leader of a rebuild for several replacements (repl[x]: x is one): whether the grants
 * it has heard of (every report brings the reporter's) end lock l's token path at x. */
void cdsm__lk_know_all(const uint8_t *repl);
int cdsm__lk_know_hold_of(int x, uint32_t l);
/* Whether a rank lower than this one is being replayed (it leads the rebuild). */
int cdsm__lk_lower_replayed(void);
/* Wait at the live point until another's rebuild made this rank live (CDSM_OK), or
 * nobody lower is replayed any more (CDSM__LK_GIVE_WAY: lead). */
int cdsm__lk_follow(void);
/* The rebuild h made this rank live: wake cdsm__lk_follow; a rebuild this rank leads meanwhile
 * gives way (cdsm__lk_made_live: until cdsm__lk_follow took the note). */
void cdsm__lk_joined(const cdsm__msg_hdr_t *h);
int cdsm__lk_made_live(void);

/* ---- output.c: output commit (cdsm_printf, cdsm_fwrite) ----------------------------- */
/* Register the output offsets as a private region (cdsm_init, every process). */
int cdsm__output_init(void);
/* Emit the outputs produced before barrier epoch upto (UINT32_MAX: all; the run ended
 * well). Application thread, without mu. */
void cdsm__output_release(uint32_t upto);
void cdsm__output_fini(void);
/* The output this rank holds (produced, not yet released), for a checkpoint: its size in
 * bytes as a private region named CDSM_OUTPUT_HELD, and its bytes. */
#define CDSM_OUTPUT_HELD "cdsm-output-held"
/* The ownership directory and placement (first-touch ownership): a region of its own. */
/* protect.c: the regions the program registered (cdsm_protect), by name. */
typedef struct cdsm__region {
    char *name;
    void *ptr;
    size_t size;
} cdsm__region_t;
const cdsm__region_t *cdsm__protect_regions(size_t *n);
cdsm__region_t *cdsm__protect_find(const char *name);
#define CDSM_OWN_REGION "cdsm-ownership"
/* In a checkpoint of a node heap (and only there): the locks the rank holds; its pages are
 * the rank's share of the heap. */
#define CDSM_NODE_REGION "cdsm-node-heap"
size_t cdsm__output_held_bytes(void);
void cdsm__output_held_put(uint8_t *dst);
/* A replacement whose lost process may have died holding output, or a restarted job's
 * rank (restored with the checkpoint's offsets): hold again the outputs produced at or
 * after barrier from (the rest went out: the release mark), to be released as usual; why
 * ends the log line. CDSM_ERR_CORRUPT on a malformed region. */
int cdsm__output_held_take(const uint8_t *p, size_t n, uint32_t from, const char *why);

/* ---- ckpt.c: checkpoints at barriers ------------------------------------------------ */
int cdsm__ckpt_init(void);
/* Wait for the writer and stop it. */
void cdsm__ckpt_fini(void);
int cdsm__ckpt_enabled(void);
/* After a barrier release, caller holds mu: take a checkpoint if the policy says so. */
int cdsm__ckpt_policy(void);
/* Whether this rank's policy wants a checkpoint now (counts one barrier). Caller holds mu. */
int cdsm__ckpt_due(void);
/* Replacement (caller holds mu): number its checkpoints after the lost process's, and find
 * the lost process's newest checkpoint a resume can start from: taken at a resume point
 * whose collection ended (epoch + 1 <= last_epoch, the log's last barrier). It is read and
 * verified now and kept for cdsm__ckpt_restore(); *seq = 0 when there is none. A corrupt
 * or foreign file is an error (named), never skipped. */
int cdsm__ckpt_takeover(uint32_t last_epoch, uint64_t *seq);
/* Replacement in cdsm_resume() (caller holds mu): restore that checkpoint into the DSM
 * state (pages, clocks, counters, locks) and the registered private regions. */
int cdsm__ckpt_restore(void);
/* Rank 0, after the barrier that ends a resume point's collection: commit the restart
 * manifest naming that resume point (every rank has its checkpoint of it). */
void cdsm__ckpt_manifest(void);
/* Take a checkpoint now; caller holds mu, released while waiting for the writer. full: not incremental; sync: return only when
 * it is committed (garbage collection drops diffs only after every rank has one). */
int cdsm__ckpt_take(int full, int sync);
/* Wait until no checkpoint is being written. */
void cdsm__ckpt_take_drain(void);
/* This rank's last committed checkpoint (thread-safe). */
cdsm__ckpt_pos_t cdsm__ckpt_committed(void);
void cdsm__protect_fini(void);

#ifdef __cplusplus
}
#endif
#endif
