/* Fault tolerance joins the floors below: it fills the protocol's hook table and adds
 * membership's entries to the transport's events. Nothing below names a function here. */
#include "proto.h"
#include "recovery.h"

/* Fault tolerance's own request types (replies go to the protocol's reply queue). */
static void on_message(const cdsm__msg_hdr_t *h, cdsm__rd_t *r)
{
    switch (h->type) {
    case CDSM_MSG_TAKEOVER: cdsm__on_takeover(h, r); break;
    case CDSM_MSG_RETIRE: cdsm__on_retire(h, r); break;
    case CDSM_MSG_REPLAY_REQ: cdsm__serve_replay(h, r); break;
    case CDSM_MSG_LK_FREEZE: cdsm__lk_on_freeze(h, r); break;
    case CDSM_MSG_LK_REBUILD: cdsm__lk_on_rebuild(h, r); break;
    case CDSM_MSG_KNOW_REQ: cdsm__serve_know(h, r); break;
    case CDSM_MSG_REC_REQ: cdsm__serve_records(h, r); break;
    default: cdsm__log(CDSM_LOG_ERROR, "message type %u from rank %u is not fault tolerance's", h->type, h->src);
    }
}

/* Every grant is logged twice: the granter keeps a SENT entry, the acquirer a RECV one. */
static void grant_sent(int to, uint32_t l, uint32_t to_seq, uint32_t grant_seq, const uint32_t *vc)
{
    cdsm__det_log(CDSM_DET_SENT, (uint32_t)to, l, to_seq, grant_seq, vc);
}

static void grant_taken(int from, uint32_t l, uint32_t seq, uint32_t grant_seq, const uint32_t *vc)
{
    cdsm__det_log(CDSM_DET_RECV, (uint32_t)from, l, seq, grant_seq, vc);
}

/* A barrier release: drop what no replay can need any more, and log the barrier's global
 * vector clock (every rank logs every barrier). */
static void released(uint32_t epoch, uint32_t flags, const void *all_pos)
{
    cdsm__det_trim(all_pos);
    cdsm__det_log(CDSM_DET_BARRIER, (uint32_t)cdsm__w.rank, epoch, cdsm__g.sync_seq, flags, cdsm__g.vc);
}

/* Garbage collection with checkpoints: every rank commits a full one, synchronously. */
static int ckpt_commit(void)
{
    return cdsm__ckpt_take(1, 1);
}

void cdsm__ft_init(void)
{
    cdsm__ft_hooks_t h = {
        .on_message = on_message,
        .hold_early = cdsm__hold_early,
        .defer = cdsm__replay_defer,
        .grant_sent = grant_sent,
        .grant_taken = grant_taken,
        .replay_acquire = cdsm__replay_acquire,
        .replay_synced = cdsm__replay_serve_deferred,
        .replay_barrier = cdsm__replay_barrier_hook,
        .trailer_put = cdsm__gcopy_put,
        .trailer_take = cdsm__gcopy_take,
        .converted = cdsm__replay_converted,
        .logging = cdsm__det_enabled,
        .ckpt_committed = cdsm__ckpt_committed,
        .want_ckpt = cdsm__ckpt_due,
        .released = released,
        .after_barrier = cdsm__ckpt_policy,
        .release_output = cdsm__output_release,
        .audit_put = cdsm__det_audit_put,
        .audit_collect = cdsm__det_audit_collect,
        .audit_finish = cdsm__det_audit_finish,
        .archive_needed = cdsm__archive_needed,
        .archive_own = cdsm__archive_keep,
        .archive_other = cdsm__archive_other,
        .archived = cdsm__archive_find,
        .ckpt_enabled = cdsm__ckpt_enabled,
        .ckpt_commit = ckpt_commit,
        .ckpt_manifest = cdsm__ckpt_manifest,
    };
    cdsm__ft_register(&h);
    cdsm__tp_events_t ev = {0};
    cdsm__proto_events(&ev);
    ev.peer_down = cdsm__member_peer_down;
    ev.adopt = cdsm__recover_adopt;
    ev.recoverable = cdsm__send_loss_harmless;
    ev.tick = cdsm__member_tick;
    cdsm__tp_set_events(&ev);
}
