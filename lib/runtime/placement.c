/* Placement of ranks and their service threads by the machine's topology (hwloc).
 *
 * Every process of the job (spares too) learns how many processes share its node
 * (MPI_COMM_TYPE_SHARED, at start-up) and its index among them. CDSM_BIND=core gives
 * process i of k on a node with c cores the cores [i*c/k, (i+1)*c/k) (round robin when
 * k > c); auto does the same only when every process gets a core of its own, since binding
 * an oversubscribed node only forbids the kernel to balance it. The application thread is
 * bound to the first PU of the process's set. CDSM_BIND_SERVICE places the service thread:
 * auto on another PU of the set when it has one, else unbound (free to run where a PU is
 * idle); "apart" on another PU even outside the set (the next core), "same" with the
 * application thread. The outcome is logged at start-up (the run's header). */
#include <hwloc.h>
#include <stdio.h>
#include <string.h>

#include "placement.h"
#include "proto.h"

enum { BIND_AUTO = 0, BIND_CORE = 1, BIND_NONE = 2 };
enum { SVC_AUTO = 0, SVC_SAME = 1, SVC_APART = 2 };

static char where[320] = "not bound";

const char *cdsm__placement(void)
{
    return where;
}

static void describe(hwloc_const_bitmap_t set, char *buf, size_t size)
{
    hwloc_bitmap_list_snprintf(buf, size, set);
}

int cdsm__place(pthread_t service)
{
    /* (the transport knows who shares this host: a split of the communicator, as MPI would
     * make it, costs a collective, 2 s of start-up at 32 processes on 2 cores) */
    int idx = 0, count = 1;
    cdsm__tp_node_index(&idx, &count);
    uint64_t mode = cdsm__cfg.bind, svc_mode = cdsm__cfg.bind_service;
    if (mode == BIND_NONE) {
        snprintf(where, sizeof where, "not bound (CDSM_BIND=none), process %d of %d on this node", idx, count);
        return CDSM_OK;
    }
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) || hwloc_topology_load(topo)) {
        cdsm__log(CDSM_LOG_WARN, "placement: hwloc cannot read this machine's topology; processes are not bound");
        snprintf(where, sizeof where, "not bound (hwloc found no topology)");
        return CDSM_OK;
    }
    int cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    if (cores <= 0) cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    hwloc_obj_type_t unit = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) > 0 ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
    if (mode == BIND_AUTO && count > cores) {
        snprintf(where, sizeof where, "not bound: %d processes on %d cores (CDSM_BIND=auto binds only when each has "
                 "a core)", count, cores);
        hwloc_topology_destroy(topo);
        return CDSM_OK;
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc(), app = hwloc_bitmap_alloc(), svc = hwloc_bitmap_alloc();
    int lo = count <= cores ? idx * cores / count : idx % cores;
    int hi = count <= cores ? (idx + 1) * cores / count : lo + 1;
    for (int c = lo; c < hi; c++) hwloc_bitmap_or(set, set, hwloc_get_obj_by_type(topo, unit, (unsigned)c)->cpuset);
    int first = hwloc_bitmap_first(set);
    hwloc_bitmap_only(app, (unsigned)first);
    int other = hwloc_bitmap_next(set, first);
    if (svc_mode == SVC_SAME) {
        hwloc_bitmap_copy(svc, app);
    } else if (svc_mode == SVC_AUTO && other < 0) {
        /* No PU of its own: measured, pinning it beside the program thread cost up to 18 %
         * (bench/run-placement.sh); left free, the kernel runs it where a PU is idle. */
        hwloc_bitmap_copy(svc, hwloc_topology_get_topology_cpuset(topo));
    } else if (other >= 0) {
        hwloc_bitmap_only(svc, (unsigned)other);
    } else { /* apart, and the set has one PU: the next core's first PU */
        hwloc_obj_t next = hwloc_get_obj_by_type(topo, unit, (unsigned)(hi % cores));
        hwloc_bitmap_only(svc, (unsigned)hwloc_bitmap_first(next->cpuset));
    }
    int bad = hwloc_set_cpubind(topo, app, HWLOC_CPUBIND_THREAD) ||
              hwloc_set_thread_cpubind(topo, service, svc, 0);
    char a[64], s[64], p[64];
    describe(set, p, sizeof p);
    describe(app, a, sizeof a);
    describe(svc, s, sizeof s);
    if (bad) {
        cdsm__log(CDSM_LOG_WARN, "placement: binding to PUs %s failed; processes are not bound", p);
        snprintf(where, sizeof where, "not bound (binding failed)");
    } else {
        snprintf(where, sizeof where, "process %d of %d on this node, cores %d-%d: program thread PU %s, service "
                 "thread PU %s", idx, count, lo, hi - 1, a, s);
    }
    hwloc_bitmap_free(set);
    hwloc_bitmap_free(app);
    hwloc_bitmap_free(svc);
    hwloc_topology_destroy(topo);
    return CDSM_OK;
}
