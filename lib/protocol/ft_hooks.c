/* The hooks of fault tolerance, and their defaults: the protocol alone logs nothing,
 * keeps nothing for a replay and is never a replacement. */
#include <stddef.h>

#include "proto.h"

cdsm__mode_t cdsm__mode;

static void no_message(const cdsm__msg_hdr_t *h, cdsm__rd_t *r)
{
    (void)r;
    cdsm__log(CDSM_LOG_ERROR, "message type %u from rank %u needs fault tolerance, which is not running", h->type,
              h->src);
}
static int no_hold(const cdsm__msg_hdr_t *h, uint8_t *buf)
{
    (void)h, (void)buf;
    return 0;
}
static int no_defer(const cdsm__msg_hdr_t *h, const cdsm__rd_t *r)
{
    (void)h, (void)r;
    return 0;
}
static void no_grant(int peer, uint32_t l, uint32_t seq, uint32_t grant_seq, const uint32_t *vc)
{
    (void)peer, (void)l, (void)seq, (void)grant_seq, (void)vc;
}
static int no_replay_acquire(uint32_t l, uint32_t seq)
{
    (void)l, (void)seq;
    return cdsm__error(CDSM_ERR_STATE, "a replay without fault tolerance");
}
static int no_replay_barrier(int kind, uint32_t epoch, int *flags, int *rc)
{
    (void)kind, (void)epoch, (void)flags;
    *rc = CDSM_OK;
    return 0;
}
static int none(void)
{
    return 0;
}
static cdsm__ckpt_pos_t no_pos(void)
{
    return (cdsm__ckpt_pos_t){0, 0};
}
static void no_released(uint32_t epoch, uint32_t flags, const void *pos)
{
    (void)epoch, (void)flags, (void)pos;
}
static void no_output(uint32_t upto)
{
    (void)upto;
}
static void no_audit_put(cdsm__buf_t *b)
{
    (void)b;
}
static int no_audit_collect(int src, cdsm__rd_t *r)
{
    (void)src, (void)r;
    return 0;
}
static int no_audit_finish(uint32_t out[4])
{
    (void)out;
    return 0;
}
static void no_archive_own(cdsm__interval_t *iv)
{
    cdsm__iv_free(iv);
}
static void no_archive_other(const cdsm__interval_t *iv)
{
    (void)iv;
}
static const cdsm__interval_t *no_archived(uint32_t idx)
{
    (void)idx;
    return NULL;
}
static void nothing(void)
{
}
static void no_trailer_put(int to, cdsm__buf_t *b)
{
    (void)to, (void)b;
}
static int no_trailer_take(int from, cdsm__rd_t *r)
{
    (void)from, (void)r;
    return 0;
}
static void no_converted(uint32_t pg, int home, uint32_t seq)
{
    (void)pg, (void)home, (void)seq;
}

cdsm__ft_hooks_t cdsm__ft = {
    .on_message = no_message,
    .hold_early = no_hold,
    .defer = no_defer,
    .grant_sent = no_grant,
    .grant_taken = no_grant,
    .replay_acquire = no_replay_acquire,
    .replay_synced = nothing,
    .replay_barrier = no_replay_barrier,
    .trailer_put = no_trailer_put,
    .trailer_take = no_trailer_take,
    .converted = no_converted,
    .logging = none,
    .ckpt_committed = no_pos,
    .want_ckpt = none,
    .released = no_released,
    .after_barrier = none,
    .release_output = no_output,
    .audit_put = no_audit_put,
    .audit_collect = no_audit_collect,
    .audit_finish = no_audit_finish,
    .archive_needed = none,
    .archive_own = no_archive_own,
    .archive_other = no_archive_other,
    .archived = no_archived,
    .ckpt_enabled = none,
    .ckpt_commit = none,
    .ckpt_manifest = nothing,
};

/* Copy the entries fault tolerance sets; keep the defaults of the others. */
void cdsm__ft_register(const cdsm__ft_hooks_t *h)
{
#define TAKE(f)                                                                              \
    if (h->f) cdsm__ft.f = h->f;
    TAKE(on_message) TAKE(hold_early) TAKE(defer) TAKE(grant_sent) TAKE(grant_taken)
    TAKE(replay_acquire) TAKE(replay_synced) TAKE(replay_barrier) TAKE(trailer_put) TAKE(trailer_take)
    TAKE(converted) TAKE(logging) TAKE(ckpt_committed) TAKE(want_ckpt)
    TAKE(released) TAKE(after_barrier) TAKE(release_output) TAKE(audit_put) TAKE(audit_collect)
    TAKE(audit_finish) TAKE(archive_needed) TAKE(archive_own) TAKE(archive_other) TAKE(archived)
    TAKE(ckpt_enabled) TAKE(ckpt_commit) TAKE(ckpt_manifest)
#undef TAKE
}
