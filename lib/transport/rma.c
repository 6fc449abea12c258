/* One-sided reads (MPI-doorbell provider, CDSM_RMA): each process exposes its board (the
 * published diffs, board.c) in an MPI window, and a reader on another host copies what it
 * needs with MPI_Rget instead of asking the writer by message; its lock words likewise, with
 * MPI atomics (DESIGN section 2, "One-sided access across hosts").
 *
 * Where the network offers RDMA (UCX over InfiniBand or RoCE), a get completes without the
 * target's CPU. Where it does not (UCX over TCP or shared memory, as on a machine without
 * an RDMA device), MPICH serves a get only when the target enters MPI: its service thread
 * sleeps in epoll and its application thread may compute for seconds. So a read that has
 * not completed within RMA_NUDGE_US rings the target's doorbell with a nudge byte (not a
 * message: it counts for nothing), which wakes its service thread into RMA_SERVE_US of MPI
 * progress (bell.c); again every RMA_RENUDGE_US while it waits. Nothing spins while idle:
 * the reader waits only for its own reads, yielding the core after RMA_NUDGE_US. */
#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "bell.h"

/* A get over RDMA takes a few microseconds: nudging sooner would wake targets that need
 * no waking; one over an emulated path waits for the target, so nudging later only adds
 * delay (measured here: 10-30 us a get with the target woken, 1-2 s without). */
enum { RMA_NUDGE_US = 20, RMA_RENUDGE_US = 100, RMA_SLOW_MS = 10, RMA_GIVE_UP_MS = 100, RMA_SHUN_MS = 1000 };

static struct rma {
    MPI_Win win[CDSM_RMA_WINS]; /* the board's window exists: one-sided access is on */
    int want;       /* cdsm__rma_plan's answer (2: node-mates too, CDSM_RMA=all) */
    int rdma;       /* this host has an RDMA device: remote atomics need no nudge */
    uint8_t *eager; /* per process: its last read needed a nudge, so the next nudges at once */
    uint64_t *shun_ns; /* per process: a read of it was slow; until then none is tried */
    uint64_t batches, gave_up;
} rm = {{MPI_WIN_NULL, MPI_WIN_NULL}, 0, 0, NULL, NULL, 0, 0};

/* Whether this host has an RDMA device (what CDSM_RMA=auto asks). */
static int rdma_device(void)
{
    DIR *d = opendir("/sys/class/infiniband");
    if (!d) return 0;
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) found = e->d_name[0] != '.';
    closedir(d);
    return found;
}

/* Whether some process of the job runs on another host. */
static int other_host(void)
{
    for (int p = 0; p < cdsm__w.wn; p++)
        if (p != cdsm__w.wrank && !cdsm__bell.peer_pid[p]) return 1;
    return 0;
}

void cdsm__rma_plan(void)
{
    enum { RMA_AUTO, RMA_HOSTS, RMA_ALL, RMA_NEVER };
    rm.rdma = rdma_device();
    rm.want = 0;
    if (cdsm__cfg.rma == RMA_NEVER || cdsm__cfg.spares || cdsm__bell.stream) return;
    if (cdsm__cfg.rma == RMA_ALL) rm.want = cdsm__w.wn > 1 ? 2 : 0;
    else if (other_host()) rm.want = cdsm__cfg.rma == RMA_HOSTS || rm.rdma;
}

int cdsm__rma_wanted(void)
{
    return rm.want;
}

int cdsm__rma_expose(int which, void *mem, size_t bytes)
{
    if (!rm.eager) {
        rm.eager = calloc((size_t)cdsm__w.wn, 1);
        rm.shun_ns = calloc((size_t)cdsm__w.wn, sizeof *rm.shun_ns);
        if (!rm.eager || !rm.shun_ns) return cdsm__error(CDSM_ERR_NOMEM, "CDSM_RMA: a table per process");
    }
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "same_disp_unit", "true");
    int rc = MPI_Win_create(mem, (MPI_Aint)bytes, 1, info, cdsm__w.comm, &rm.win[which]);
    MPI_Info_free(&info);
    if (rc != MPI_SUCCESS) return cdsm__error(CDSM_ERR_MPI, "CDSM_RMA: MPI_Win_create failed");
    MPI_Win_set_errhandler(rm.win[which], MPI_ERRORS_RETURN);
    if (MPI_Win_lock_all(MPI_MODE_NOCHECK, rm.win[which]) != MPI_SUCCESS)
        return cdsm__error(CDSM_ERR_MPI, "CDSM_RMA: MPI_Win_lock_all failed");
    return CDSM_OK;
}

void cdsm__rma_fini(void)
{
    /* Freeing a window is collective: only where every process is finishing with us (not
     * on a failed start-up, nor after a death, where it would wait for ever). */
    int dead = __atomic_load_n(&cdsm__w.recovered, __ATOMIC_ACQUIRE);
    for (int p = 0; p < cdsm__w.wn; p++) dead |= __atomic_load_n(&cdsm__w.wdead[p], __ATOMIC_ACQUIRE);
    for (int k = 0; k < CDSM_RMA_WINS; k++) {
        if (rm.win[k] == MPI_WIN_NULL) continue;
        if (__atomic_load_n(&cdsm__w.finalizing, __ATOMIC_ACQUIRE) && !dead) {
            MPI_Win_unlock_all(rm.win[k]);
            MPI_Win_free(&rm.win[k]);
        }
        rm.win[k] = MPI_WIN_NULL;
    }
    rm.want = 0;
    free(rm.eager);
    free(rm.shun_ns);
    rm.eager = NULL;
    rm.shun_ns = NULL;
}

int cdsm__rma_on(void)
{
    return rm.win[CDSM_RMA_BOARD] != MPI_WIN_NULL;
}

int cdsm__rma_reaches(int w)
{
    return cdsm__rma_on() && w != cdsm__w.wrank && (rm.want == 2 || !cdsm__bell.peer_pid[w]);
}

int cdsm__rma_shunned(int w)
{
    return rm.shun_ns[w] && cdsm__mono_ns() < rm.shun_ns[w];
}

/* Wake process w's service thread into MPI (see the top). A full socket means it has
 * bytes to read and will wake anyway. */
static void nudge(int w)
{
    char b = NUDGE_BYTE;
    if (send(cdsm__bell.bell[w], &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) CDSM_STAT_ADD(rma_nudges, 1);
}

/* Nudge the targets of the reads still open (each once). */
static void nudge_open(cdsm__rma_op_t *op, const MPI_Request *rq, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (rq[i] == MPI_REQUEST_NULL || op[i].ok) continue;
        size_t j = 0;
        while (j < i && !(op[j].w == op[i].w && rq[j] != MPI_REQUEST_NULL && !op[j].ok)) j++;
        if (j == i) nudge(op[i].w);
    }
}

/* Test the open reads; 1 while some are still open. A read from a process found dead,
 * or still open after RMA_GIVE_UP_MS (late: a nudged live process serves within
 * milliseconds, and the caller may hold the protocol's lock, which our service thread
 * needs to learn of a death), is left (its buffer with it: op.lost) and fails: the caller
 * asks by message, which has its own ways with a lost peer. */
static int test_open(cdsm__rma_op_t *op, MPI_Request *rq, size_t n, int late)
{
    int open = 0;
    for (size_t i = 0; i < n; i++) {
        if (rq[i] == MPI_REQUEST_NULL) continue;
        int flag = 0;
        if (MPI_Test(&rq[i], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
            rq[i] = MPI_REQUEST_NULL; /* (an error completes the request: nothing read) */
            continue;
        }
        if (flag) {
            op[i].ok = 1;
        } else if (late || __atomic_load_n(&cdsm__w.wdead[op[i].w], __ATOMIC_ACQUIRE)) {
            if (late && !rm.gave_up++)
                cdsm__log(CDSM_LOG_WARN, "CDSM_RMA: a one-sided read of process %d waited %d ms: asked for by message "
                          "(counter rma_shunned; logged once)", op[i].w, RMA_GIVE_UP_MS);
            op[i].lost = 1;
            rq[i] = MPI_REQUEST_NULL;
        } else {
            open = 1;
        }
    }
    return open;
}

void cdsm__rma_get(cdsm__rma_op_t *op, size_t n)
{
    MPI_Request stack[16], *rq = n <= 16 ? stack : malloc(n * sizeof *rq);
    cdsm_check(rq != NULL);
    for (size_t i = 0; i < n; i++) {
        op[i].ok = op[i].lost = 0;
        rq[i] = MPI_REQUEST_NULL;
        if (rm.win[CDSM_RMA_BOARD] == MPI_WIN_NULL || !op[i].len) continue;
        if (MPI_Rget(op[i].dst, (int)op[i].len, MPI_BYTE, op[i].w, (MPI_Aint)op[i].off, (int)op[i].len, MPI_BYTE,
                     rm.win[CDSM_RMA_BOARD], &rq[i]) != MPI_SUCCESS)
            rq[i] = MPI_REQUEST_NULL;
        else
            CDSM_STAT_ADD(rma_gets, 1);
    }
    /* A target whose last reads needed a nudge is nudged at once, but every 64th batch
     * waits first, to learn whether the network still needs it. */
    uint64_t t0 = cdsm__mono_ns(), wait = RMA_NUDGE_US * 1000ull;
    int eager = 0, nudged = 0;
    if (++rm.batches % 64)
        for (size_t i = 0; i < n; i++) eager |= rq[i] != MPI_REQUEST_NULL && rm.eager[op[i].w];
    uint64_t next = eager ? t0 : t0 + wait;
    for (uint64_t now = t0; test_open(op, rq, n, now - t0 > RMA_GIVE_UP_MS * 1000000ull);) {
        now = cdsm__mono_ns();
        if (now >= next) {
            nudge_open(op, rq, n);
            nudged = 1;
            next = now + RMA_RENUDGE_US * 1000ull;
        }
        if (now - t0 >= wait) sched_yield(); /* (the target may need this core to answer) */
    }
    for (size_t i = 0; i < n && !eager; i++) rm.eager[op[i].w] = (uint8_t)nudged;
    /* A batch that took RMA_SLOW_MS (a round trip is microseconds with RDMA, a wake-up
     * without) means its targets do not serve: their diffs go by message for a while. The
     * caller holds the protocol's lock, which our service thread needs to deliver and to
     * send heartbeats: slow reads would starve it, and a silent process is fenced. */
    uint64_t end = cdsm__mono_ns();
    for (size_t i = 0; i < n && end - t0 > RMA_SLOW_MS * 1000000ull; i++) {
        if (!rm.shun_ns[op[i].w]) CDSM_STAT_ADD(rma_shunned, 1);
        rm.shun_ns[op[i].w] = end + RMA_SHUN_MS * 1000000ull;
    }
    if (rq != stack) free(rq);
}

uint32_t cdsm__rma_word(int w, uint64_t off, int op, uint32_t a, uint32_t b)
{
    MPI_Win win = rm.win[CDSM_RMA_WORDS];
    uint32_t res = 0;
    /* MPI_Win_flush cannot be left to nudge later: nudge first where the target must serve
     * (another process, no RDMA here, or its last reads needed it). */
    if (w != cdsm__w.wrank && (!rm.rdma || rm.eager[w])) nudge(w);
    int rc;
    if (op == CDSM_RMA_CAS)
        rc = MPI_Compare_and_swap(&b, &a, &res, MPI_UINT32_T, w, (MPI_Aint)off, win);
    else
        rc = MPI_Fetch_and_op(&a, &res, MPI_UINT32_T, w, (MPI_Aint)off, op == CDSM_RMA_LOAD ? MPI_NO_OP : MPI_REPLACE,
                              win);
    if (rc == MPI_SUCCESS) rc = MPI_Win_flush(w, win);
    /* (a lost process: the run ends without spares; what the caller reads is no token) */
    if (rc != MPI_SUCCESS)
        cdsm__log(CDSM_LOG_ERROR, "CDSM_RMA: an atomic operation on process %d's lock words failed", w);
    CDSM_STAT_ADD(rma_atomics, 1);
    return rc == MPI_SUCCESS ? res : UINT32_MAX;
}
