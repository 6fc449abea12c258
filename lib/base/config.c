/* Configuration tables and their loader. Unknown or malformed values are errors. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdsm.h"
#include "log.h"

extern char **environ;

cdsm__config_t cdsm__cfg;

#define OFF(f) offsetof(cdsm__config_t, f)

static const cdsm__cfg_entry_t heap_entries[] = {
    {"CDSM_HEAP_SIZE", "64G", "size of the shared heap, a reservation (half common arena, half per-rank arenas; only pages used cost memory); suffix K, M, G, T",
     CDSM_CFG_SIZE, OFF(heap_size), 1u << 20, 1ull << 40, NULL},
    {"CDSM_PAGE_SIZE", "4096", "DSM page size in bytes: a multiple of the OS page size",
     CDSM_CFG_SIZE, OFF(page_size), 4096, 1u << 24, NULL},
    {"CDSM_HEAP_ADDR", "0x200000000000", "virtual address where the shared heap is mapped on every rank",
     CDSM_CFG_ADDR, OFF(heap_addr), 1ull << 32, 1ull << 46, NULL},
    {"CDSM_WRITE_DETECT", "auto", "how a read-only page's first write is caught: uffd (userfaultfd write-protect bits: no change of the mapping, Linux 6.0 or later), mprotect (the page is mapped read-only) or auto (uffd where the kernel offers it, else mprotect)",
     CDSM_CFG_ENUM, OFF(write_detect), 0, 0, "auto,uffd,mprotect"},
};

static const cdsm__cfg_entry_t protocol_entries[] = {
    {"CDSM_LOCKS", "65536", "number of lock ids (0..N-1)", CDSM_CFG_INT, OFF(locks), 1, 1u << 20, NULL},
    {"CDSM_GC_BOUND", "256M", "memory of diffs, twins and write notices per rank above which a barrier collects them",
     CDSM_CFG_SIZE, OFF(gc_bound), 4096, 1ull << 40, NULL},
    {"CDSM_WHOLE_PAGE_NOTICES", "4", "an access miss needing at least this many diffs fetches the whole page instead (0: never)",
     CDSM_CFG_INT, OFF(whole_page_notices), 0, 1u << 20, NULL},
    {"CDSM_HOT_IDLE", "32", "a page written in consecutive intervals stays writable and is diffed at each interval end; after this many intervals without change it is write-protected again (0: always write-protect)",
     CDSM_CFG_INT, OFF(hot_idle), 0, 250, NULL},
    {"CDSM_FAULT_AROUND", "8", "a write fault also makes writable (with twins) the following valid pages, up to this many pages in all (1: off)",
     CDSM_CFG_INT, OFF(fault_around), 1, 1024, NULL},
    {"CDSM_OWNERSHIP", "1", "a page is owned by its first toucher until another rank reads it, and costs nothing while owned (no write detection, twin, diff or notice); only where nothing needs every write noticed: one rank, or no CDSM_SPARES (checkpoints then take every owned page with data) (0: never)",
     CDSM_CFG_BOOL, OFF(ownership), 0, 1, NULL},
    {"CDSM_LAZY_RELEASE", "1", "a lock release that hands the token to nobody closes no interval: its writes are recorded when they leave the process (a grant to another rank, a remote acquire, a barrier); only without CDSM_SPARES, where nothing replays intervals (0: every acquire and release closes one)",
     CDSM_CFG_BOOL, OFF(lazy_release), 0, 1, NULL},
    {"CDSM_PUBLISH_RELEASES", "0", "processes on one host, no CDSM_SPARES: a release of a lock whose token keeps going to other processes closes its interval and publishes the token with its records in shared memory, where a node-mate takes it with no message (while fewer than half of such releases come back untaken); 0: off",
     CDSM_CFG_BOOL, OFF(publish_releases), 0, 1, NULL},
    {"CDSM_GRANT_DIFFS", "16K", "a lock grant carries the granter's own diffs of the records it sends, newest first, up to this many bytes, and the acquirer applies those that bring a page up to date (no miss, no second request); only without CDSM_SPARES (0: never)",
     CDSM_CFG_SIZE, OFF(grant_diffs), 0, 1ull << 20, NULL},
    {"CDSM_BARRIER_FANOUT", "8", "barriers of more than N+1 ranks, without CDSM_SPARES, run through a tree with N children per rank (arrivals combined on the way up, each subtree's release filtered on the way down) instead of every rank talking to rank 0; the final barrier and the checker's rounds stay central (0: always central)",
     CDSM_CFG_INT, OFF(bar_fanout), 0, 1024, NULL},
    {"CDSM_PREFETCH", "32", "readahead: an access miss that continues a stream of misses (sequential or strided) also validates the stream's next pages in the same round trip, up to this many positions in all (1: off)",
     CDSM_CFG_INT, OFF(prefetch), 1, 64, NULL},
    {"CDSM_REFETCH", "1", "right after a barrier, fetch together the pages its write notices invalidated that this rank was using (missed on lately), instead of one miss at a time (0: never)",
     CDSM_CFG_BOOL, OFF(refetch), 0, 1, NULL},
    {"CDSM_BIND", "auto", "placement of each process on the node's cores (hwloc): core, auto (core only when every process gets a core of its own) or none",
     CDSM_CFG_ENUM, OFF(bind), 0, 0, "auto,core,none"},
    {"CDSM_BIND_SERVICE", "auto", "where the service thread runs: auto (another PU of the process's cores when it has one, else with the program thread), same, or apart (another PU, the next core's if need be)",
     CDSM_CFG_ENUM, OFF(bind_service), 0, 0, "auto,same,apart"},
    {"CDSM_MPI_IO_TOPOLOGY", "0", "when cdsm_init starts MPI: 1 lets MPI's hwloc read the I/O devices (PCI) as usual; 0 hides them from it during MPI_Init (HWLOC_COMPONENTS=-linuxio, only where HWLOC_COMPONENTS is unset), which costs 12-15 ms per process on a virtual machine and that cdsm's placement does not need",
     CDSM_CFG_BOOL, OFF(mpi_io_topology), 0, 1, NULL},
    {"CDSM_NODE_HEAP", "auto", "node heap: when every rank of the job runs on one host (no CDSM_SPARES, mpi transport, no CDSM_CHECK), the ranks map one heap and take locks by atomic operations on shared words, so sharing costs what it costs threads and the page protocol steps aside; 1: required (start-up fails, saying why, where it cannot be), 0: never, auto: where it can be",
     CDSM_CFG_ENUM, OFF(node_heap), 0, 0, "auto,1,0"},
    {"CDSM_TRANSPORT", "auto", "how protocol messages travel: mpi (MPI messages, each announced by a byte on a per-peer socket), socket (frames on those sockets: a process killed mid-send harms only its own stream) or auto (socket with CDSM_SPARES, else mpi)",
     CDSM_CFG_ENUM, OFF(transport), 0, 0, "auto,mpi,socket"},
    {"CDSM_SPIN_US", "100", "an application thread waiting for a reply receives messages itself for this long before it sleeps (0: sleep at once)",
     CDSM_CFG_INT, OFF(spin_us), 0, 1000000, NULL},
    {"CDSM_SKIP_BELLS", "1", "mpi transport, processes on one host: a message to a process whose application thread is receiving itself rings no doorbell (a flag in shared memory says so); needs heartbeats (0: always ring)",
     CDSM_CFG_BOOL, OFF(skip_bells), 0, 1, NULL},
    {"CDSM_SHM_DIFFS", "8M", "mpi transport, processes on one host: each publishes the diffs it makes in a ring of this many bytes of shared memory that its node-mates map, and a node-mate's miss copies them from there with no message and no wake-up of the writer (a diff overwritten since is asked for as usual); only without CDSM_SPARES (0: off)",
     CDSM_CFG_SIZE, OFF(shm_diffs), 0, 1ull << 34, NULL},
    {"CDSM_RMA", "auto", "mpi transport, no CDSM_SPARES: the published diffs of processes on other hosts read one-sided (MPI RMA on a window over each process's ring), with no message and, where the network offers RDMA, no wake-up of the writer; 1: for processes on other hosts, all: for every process (node-mates too: for tests and measurements), 0: never, auto: 1 where this host has an RDMA device (/sys/class/infiniband), else 0",
     CDSM_CFG_ENUM, OFF(rma), 0, 0, "auto,1,all,0"},
    {"CDSM_LATE_BELL_US", "50", "mpi transport, processes on one host: a lock request or an access miss's request rings the receiver's doorbell only if the receiver has not taken it from MPI itself (at its own next lock call or access fault) within this many microseconds; needs CDSM_SKIP_BELLS (0: ring at once)",
     CDSM_CFG_INT, OFF(late_bell_us), 0, 1000, NULL},
};

static const cdsm__cfg_entry_t recovery_entries[] = {
    {"CDSM_SPARES", "0", "the last N processes of the job are spares: they wait inside cdsm_init and replace lost ranks (the program sees the others)",
     CDSM_CFG_INT, OFF(spares), 0, 1024, NULL},
    {"CDSM_LOGGING", "1", "causal logging of the determinants a replay needs (vector clocks of lock grants and barriers); 0 turns it off (no recovery possible)",
     CDSM_CFG_BOOL, OFF(logging), 0, 1, NULL},
    {"CDSM_ARCHIVE_WARN", "1G", "with spares and no checkpoint to restore, warn when a rank's diff archive (kept for a replay from the start) passes this size, and again at each doubling (0: never)",
     CDSM_CFG_SIZE, OFF(archive_warn), 0, 1ull << 50, NULL},
    {"CDSM_ARCHIVE_MEM", "1G", "with spares and no checkpoint to restore, a rank keeps at most this many bytes of its diff archive in memory; older diffs go to a file (unlinked, in CDSM_CKPT_DIR, else TMPDIR, else /tmp) and are read back when a replacement asks (0: all in memory)",
     CDSM_CFG_SIZE, OFF(archive_mem), 0, 1ull << 40, NULL},
    {"CDSM_CKPT_DIR", "", "folder for checkpoint files (one HDF5 file per rank and checkpoint); empty: no checkpoints",
     CDSM_CFG_STR, OFF(ckpt_dir), 0, CDSM_CFG_PATH_MAX, NULL},
    {"CDSM_RESTART", "", "restart the whole job from the manifest in this job folder of an earlier run (<CDSM_CKPT_DIR>/job-<id>); the program must call cdsm_resume; empty: a fresh start",
     CDSM_CFG_STR, OFF(restart), 0, CDSM_CFG_PATH_MAX, NULL},
    {"CDSM_HDF5_LIBRARY", "", "the HDF5 shared library loaded at the first checkpoint read or write (a soname or a path); empty: the one this library was built against",
     CDSM_CFG_STR, OFF(hdf5_library), 0, CDSM_CFG_PATH_MAX, NULL},
    {"CDSM_CKPT_BARRIERS", "0", "checkpoint at every N-th barrier (0: not by barrier count)",
     CDSM_CFG_INT, OFF(ckpt_barriers), 0, 1u << 30, NULL},
    {"CDSM_CKPT_SECONDS", "60", "checkpoint at the first barrier this many seconds after the previous checkpoint (or the start) (0: not by time)",
     CDSM_CFG_INT, OFF(ckpt_seconds), 0, 1u << 30, NULL},
    {"CDSM_CKPT_LOG_SIZE", "64M", "checkpoint at the first barrier after the rank's logs (diffs, twins, records, determinants) pass this size (0: not by size)",
     CDSM_CFG_SIZE, OFF(ckpt_log_size), 0, 1ull << 40, NULL},
    {"CDSM_HEARTBEAT_MS", "200", "the service thread writes a heartbeat byte to every other process this often (0: no heartbeats, only a closed connection tells a death)",
     CDSM_CFG_INT, OFF(heartbeat_ms), 0, 60000, NULL},
    {"CDSM_HEARTBEAT_TIMEOUT", "2000", "milliseconds of silence (no heartbeat, no doorbell) after which a process is declared lost and fenced (at least twice CDSM_HEARTBEAT_MS)",
     CDSM_CFG_INT, OFF(heartbeat_timeout_ms), 1, 3600000, NULL},
    {"CDSM_REPLAY_WAIT", "600", "seconds a recovery waits for a replacement that is still replaying to reach its live point (a lock rebuild for several replacements) before it ends the run naming it (0: no bound)",
     CDSM_CFG_INT, OFF(replay_wait_s), 0, 1u << 24, NULL},
    {"CDSM_FINALIZE_TIMEOUT", "5000", "milliseconds cdsm_finalize waits for MPI_Finalize after the last barrier before it returns and leaves it behind (UCX over TCP can hang there; 0: wait forever)",
     CDSM_CFG_INT, OFF(finalize_timeout_ms), 0, 3600000, NULL},
    {"CDSM_CKPT_FULL_EVERY", "8", "every N-th checkpoint is full, the others hold only the pages changed since the previous one (1: always full)",
     CDSM_CFG_INT, OFF(ckpt_full_every), 1, 1u << 20, NULL},
};

static const cdsm__cfg_entry_t diag_entries[] = {
    {"CDSM_OUTPUT_TAGS", "0", "1: committed standard output (cdsm_printf) goes as tagged lines (rank, offset, text) that a launcher prints once (cdsmrun sets it); 0: as is",
     CDSM_CFG_BOOL, OFF(output_tags), 0, 1, NULL},
    {"CDSM_STATS", "0", "0: no statistics; 1: print this rank's counters at finalize; 2: also the sum over ranks (rank 0)",
     CDSM_CFG_INT, OFF(stats), 0, 2, NULL},
    {"CDSM_LOG_LEVEL", "warn", "error, warn, info or debug", CDSM_CFG_ENUM, OFF(log_level), 0, 0,
     "error,warn,info,debug"},
    {"CDSM_CHECK", "0", "1: run the expensive consistency checker (collective argument checks, page audits at barriers)",
     CDSM_CFG_BOOL, OFF(check), 0, 1, NULL},
    {"CDSM_KILL_AT", "", "fault injection for the failure tests: RANK:STEP:N kills the process of rank RANK with SIGKILL the N-th time it reaches STEP (ckpt_snapshot, ckpt_write, ckpt_rename, ckpt_fsync, ckpt_commit, ckpt_collect, output_release, barrier, lk_freeze: a survivor asked to freeze its locks by a replacement); empty: never",
     CDSM_CFG_STR, OFF(kill_at), 0, 64, NULL},
};

const cdsm__cfg_table_t cdsm__cfg_tables[] = {
    {"heap", heap_entries, sizeof heap_entries / sizeof heap_entries[0]},
    {"protocol", protocol_entries, sizeof protocol_entries / sizeof protocol_entries[0]},
    {"recovery", recovery_entries, sizeof recovery_entries / sizeof recovery_entries[0]},
    {"diagnostics", diag_entries, sizeof diag_entries / sizeof diag_entries[0]},
};
const size_t cdsm__cfg_ntables = sizeof cdsm__cfg_tables / sizeof cdsm__cfg_tables[0];

/* Names that are read elsewhere and are not settings of a table. */
static const char *const reserved_names[] = {"CDSM_CONFIG_FILE"};

static const cdsm__cfg_entry_t *find_entry(const char *name)
{
    for (size_t t = 0; t < cdsm__cfg_ntables; t++)
        for (size_t i = 0; i < cdsm__cfg_tables[t].count; i++)
            if (strcmp(cdsm__cfg_tables[t].entries[i].name, name) == 0)
                return &cdsm__cfg_tables[t].entries[i];
    return NULL;
}

const char *cdsm__config_value_text(const char *name, uint64_t v, char *buf, size_t n)
{
    const cdsm__cfg_entry_t *e = find_entry(name);
    const char *c = e && e->type == CDSM_CFG_ENUM ? e->choices : NULL;
    for (uint64_t i = 0; c && i < v; i++) {
        c = strchr(c, ',');
        if (c) c++;
    }
    if (!c) {
        snprintf(buf, n, "%llu", (unsigned long long)v);
        return buf;
    }
    size_t len = strchr(c, ',') ? (size_t)(strchr(c, ',') - c) : strlen(c);
    snprintf(buf, n, "%.*s", (int)len, c);
    return buf;
}

static int parse_u64(const char *s, int allow_suffix, uint64_t *out)
{
    if (*s == '\0' || *s == '-' || isspace((unsigned char)*s)) return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s) return -1;
    uint64_t mult = 1;
    if (allow_suffix && *end) {
        switch (toupper((unsigned char)*end)) {
        case 'K': mult = 1ull << 10; break;
        case 'M': mult = 1ull << 20; break;
        case 'G': mult = 1ull << 30; break;
        case 'T': mult = 1ull << 40; break;
        default: return -1;
        }
        end++;
        if (toupper((unsigned char)*end) == 'B' || toupper((unsigned char)*end) == 'I') end++;
    }
    if (*end) return -1;
    if (v > UINT64_MAX / mult) return -1;
    *out = v * mult;
    return 0;
}

int cdsm__config_set(cdsm__config_t *cfg, const char *name, const char *value, const char *origin)
{
    const cdsm__cfg_entry_t *e = find_entry(name);
    if (!e)
        return cdsm__error(CDSM_ERR_CONFIG, "%s: unknown setting (from %s); see docs/CONFIG.md",
                           name, origin);
    uint64_t v = 0;
    if (e->type == CDSM_CFG_STR) {
        size_t len = strlen(value);
        if (len >= e->max)
            return cdsm__error(CDSM_ERR_CONFIG, "%s: value of %zu bytes is too long (at most %llu) (from %s)",
                               name, len, (unsigned long long)(e->max - 1), origin);
        memcpy((char *)cfg + e->offset, value, len + 1);
        return CDSM_OK;
    }
    switch (e->type) {
    case CDSM_CFG_SIZE:
    case CDSM_CFG_INT:
    case CDSM_CFG_ADDR:
        if (parse_u64(value, e->type == CDSM_CFG_SIZE, &v))
            return cdsm__error(CDSM_ERR_CONFIG, "%s=%s: not a valid %s (from %s)", name, value,
                               e->type == CDSM_CFG_SIZE ? "size" : "number", origin);
        if (v < e->min || v > e->max)
            return cdsm__error(CDSM_ERR_CONFIG,
                               "%s=%s: out of range [%llu, %llu] (from %s)", name, value,
                               (unsigned long long)e->min, (unsigned long long)e->max, origin);
        break;
    case CDSM_CFG_BOOL:
        if (!strcmp(value, "1") || !strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "on"))
            v = 1;
        else if (!strcmp(value, "0") || !strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "off"))
            v = 0;
        else
            return cdsm__error(CDSM_ERR_CONFIG, "%s=%s: not a boolean (0/1/yes/no/true/false/on/off) (from %s)",
                               name, value, origin);
        break;
    case CDSM_CFG_STR: break; /* handled above */
    case CDSM_CFG_ENUM: {
        const char *c = e->choices;
        uint64_t idx = 0;
        size_t len = strlen(value);
        for (;;) {
            const char *comma = strchr(c, ',');
            size_t clen = comma ? (size_t)(comma - c) : strlen(c);
            if (clen == len && strncmp(c, value, len) == 0) break;
            if (!comma)
                return cdsm__error(CDSM_ERR_CONFIG, "%s=%s: not one of %s (from %s)", name, value,
                                   e->choices, origin);
            c = comma + 1;
            idx++;
        }
        v = idx;
        break;
    }
    }
    if (!strcmp(name, "CDSM_PAGE_SIZE")) {
        long os = sysconf(_SC_PAGESIZE);
        if (v % (uint64_t)os)
            return cdsm__error(CDSM_ERR_CONFIG, "%s=%s: not a multiple of the OS page size (%ld) (from %s)",
                               name, value, os, origin);
    }
    if (!strcmp(name, "CDSM_HEAP_ADDR") && (v & 0xffff))
        return cdsm__error(CDSM_ERR_CONFIG, "%s=%s: not 64 KiB aligned (from %s)", name, value, origin);
    *(uint64_t *)((char *)cfg + e->offset) = v;
    return CDSM_OK;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* KEY=VALUE lines; '#' starts a comment. */
static int load_file(cdsm__config_t *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return cdsm__error(CDSM_ERR_CONFIG, "CDSM_CONFIG_FILE=%s: cannot open: %s", path, strerror(errno));
    char line[1024], origin[1100];
    int lineno = 0, rc = CDSM_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = cdsm__error(CDSM_ERR_CONFIG, "%s:%d: line too long", path, lineno);
            break;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = cdsm__error(CDSM_ERR_CONFIG, "%s:%d: expected NAME=VALUE", path, lineno);
            break;
        }
        *eq = '\0';
        snprintf(origin, sizeof origin, "%s:%d", path, lineno);
        rc = cdsm__config_set(cfg, trim(s), trim(eq + 1), origin);
        if (rc) break;
    }
    fclose(f);
    return rc;
}

int cdsm__config_load(cdsm__config_t *cfg)
{
    int rc;
    memset(cfg, 0, sizeof *cfg);
    for (size_t t = 0; t < cdsm__cfg_ntables; t++)
        for (size_t i = 0; i < cdsm__cfg_tables[t].count; i++) {
            const cdsm__cfg_entry_t *e = &cdsm__cfg_tables[t].entries[i];
            rc = cdsm__config_set(cfg, e->name, e->def, "default");
            cdsm_check(rc == CDSM_OK);
        }
    const char *file = getenv("CDSM_CONFIG_FILE");
    if (file && *file && (rc = load_file(cfg, file))) return rc;
    for (char **env = environ; env && *env; env++) {
        if (strncmp(*env, "CDSM_", 5)) continue;
        const char *eq = strchr(*env, '=');
        if (!eq) continue;
        char name[128];
        size_t len = (size_t)(eq - *env);
        if (len >= sizeof name)
            return cdsm__error(CDSM_ERR_CONFIG, "%.40s...: unknown setting (environment)", *env);
        memcpy(name, *env, len);
        name[len] = '\0';
        int reserved = 0;
        for (size_t r = 0; r < sizeof reserved_names / sizeof *reserved_names; r++)
            if (!strcmp(name, reserved_names[r])) reserved = 1;
        if (reserved) continue;
        if ((rc = cdsm__config_set(cfg, name, eq + 1, "environment"))) return rc;
    }
    return CDSM_OK;
}
