/* Membership's judgement of silences: the transport sends a heartbeat byte on every
 * doorbell each CDSM_HEARTBEAT_MS and ticks here; a peer silent for
 * CDSM_HEARTBEAT_TIMEOUT (a frozen process, a lost node, a cut link) is declared lost and
 * fenced (killed when it runs on this host, never heard again in any case), so that it can
 * never act on shared state once a spare has its rank. A working process that hears too
 * few others is the one cut off, and fences itself. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "recovery.h"

/* Silence that is not a freeze: a process on this host with any thread running or
 * waiting for a CPU ('R' in /proc/PID/task/TID/stat) is alive and starved (a host with many
 * more busy processes than cores: one false loss in three 64-rank runs on 2 cores). Every
 * thread counts, not only the program's: a program thread asleep in a lock wait while the
 * service thread that sends the heartbeats waits for a CPU is starved too (4 ranks on 2
 * cores, each initialising thousands of locks: a loss named after 2.4 s). A stopped,
 * traced or dead process has no thread in R. Up to STARVED_MAX times the timeout, then it
 * is judged as any other silence. A frozen process (kill -STOP, a lost node) is still
 * caught at the timeout. */
enum { STARVED_MAX = 10 };
static int starved_warned; /* (the warning is given once: service thread only) */

static int thread_runnable(int pid, const char *tid)
{
    char path[64 + sizeof(((struct dirent *)0)->d_name)], buf[256];
    snprintf(path, sizeof path, "/proc/%d/task/%s/stat", pid, tid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *close = strrchr(buf, ')'); /* state follows "tid (comm)" */
    return close && close[1] == ' ' && close[2] == 'R';
}

static int starving(int pid, uint64_t silent, uint64_t limit)
{
    if (pid <= 0 || silent > limit * STARVED_MAX) return 0;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d) return 0;
    int r = 0;
    for (struct dirent *e; !r && (e = readdir(d));)
        if (e->d_name[0] != '.') r = thread_runnable(pid, e->d_name);
    closedir(d);
    return r;
}

/* One tick's view of a peer: when last heard, whether its connection is open, and (read
 * from /proc at most once a tick, and only for a peer silent past the self-fencing
 * limit) whether it is starved rather than frozen. */
typedef struct {
    uint64_t silent;
    int pid, open, starved; /* starved: -1 not read yet */
} peer_view_t;

static peer_view_t *views; /* one per process, for the service thread's tick */

static void view_of(int p, uint64_t now)
{
    peer_view_t *v = &views[p];
    uint64_t at;
    cdsm__tp_peer_info(p, &at, &v->pid, &v->open);
    v->silent = now > at ? now - at : 0; /* (heard by another thread after now was read) */
    v->starved = -1;
}

static int view_starving(peer_view_t *v, uint64_t limit)
{
    if (v->starved < 0) v->starved = starving(v->pid, v->silent, limit);
    return v->starved;
}

/* A working process that hears from less than half of the live processes (itself
 * included) is the one cut off: it stops itself before the majority declares it lost (at
 * the full timeout), so that it never writes shared state again once a spare replays its
 * rank. Exactly half: the side that hears the lowest live process goes on. */
static void fence_self_if_cut_off(uint64_t limit)
{
    uint64_t self_limit = limit / 4 * 3;
    int live = 1, heard = 1, lowest = cdsm__w.wrank, lowest_heard = 1;
    for (int p = 0; p < cdsm__w.wn; p++) {
        peer_view_t *v = &views[p];
        if (!v->open || __atomic_load_n(&cdsm__w.wdead[p], __ATOMIC_ACQUIRE)) continue;
        int h = v->silent <= self_limit || view_starving(v, limit);
        live++;
        heard += h;
        if (p < lowest) {
            lowest = p;
            lowest_heard = h;
        }
    }
    if (2 * heard > live || (2 * heard == live && lowest_heard)) return;
    cdsm__log(CDSM_LOG_ERROR,
              "rank %d cut off: it heard no heartbeat from %d of the %d other live processes for %.0f ms; it fences "
              "itself (exit status %d) before the others replay it on a spare",
              cdsm__w.rank, live - heard, live - 1, (double)self_limit / 1e6, CDSM_EXIT_FENCED);
    _exit(CDSM_EXIT_FENCED);
}

/* Declare peer p, silent past the timeout and not starving, lost: fence it first. */
static void declare_silent_lost(int p, const peer_view_t *v)
{
    char why[96];
    snprintf(why, sizeof why, "no heartbeat for %.0f ms", (double)v->silent / 1e6);
    /* Fence first: a frozen process must never wake up to write shared state. */
    if (v->pid > 0 && kill(v->pid, SIGKILL) == 0)
        snprintf(why + strlen(why), sizeof why - strlen(why), "; pid %d killed", v->pid);
    cdsm__log(CDSM_LOG_ERROR, "process %d (rank %d) declared lost: %s", p,
              cdsm__w.logical ? cdsm__w.logical[p] : -1, why);
    cdsm__tp_cut(p);
    CDSM_STAT_ADD(heartbeat_losses, 1);
    cdsm__member_peer_down(p, why);
}

/* The transport's heartbeat tick (service thread, receiving): declare the peers silent for
 * too long lost. */
void cdsm__member_tick(void)
{
    uint64_t limit = cdsm__cfg.heartbeat_timeout_ms * 1000000ull, now = cdsm__mono_ns();
    /* Peers close as they finish; and a spare never fences anyone (it acts on no shared
     * state, and ends when the working processes' connections close). */
    if (__atomic_load_n(&cdsm__w.finalizing, __ATOMIC_ACQUIRE) || cdsm__w.rank < 0) return;
    if (!views && !(views = calloc((size_t)cdsm__w.wn, sizeof *views))) return; /* (next tick again) */
    for (int p = 0; p < cdsm__w.wn; p++) view_of(p, now);
    fence_self_if_cut_off(limit);
    for (int p = 0; p < cdsm__w.wn; p++) {
        peer_view_t *v = &views[p];
        if (!v->open || v->silent <= limit) continue;
        if (view_starving(v, limit)) {
            if (!starved_warned++)
                cdsm__log(CDSM_LOG_WARN,
                          "process %d silent for %.0f ms but runnable: this host is overloaded (more busy processes "
                          "than cores); it is declared lost only after %d times CDSM_HEARTBEAT_TIMEOUT",
                          p, (double)v->silent / 1e6, STARVED_MAX);
            continue;
        }
        declare_silent_lost(p, v);
    }
}
