/* PARMACS compatibility layer (include/cdsm/parmacs.h): fork-join SPLASH programs on SPMD
 * ranks by fork emulation (docs/DESIGN.md, "Running fork-join SPLASH programs on SPMD
 * ranks").
 *
 * Start (the constructor of MAIN_ENV, before main): address-space randomisation off
 * (re-exec), cdsm_init(), a shared control block (the one collective allocation), a check
 * that every rank has the same address layout. Rank 0 returns and runs main; every other
 * rank stays here, in a loop: barrier, read the command rank 0 wrote before its matching
 * barrier, run it. RUN: take over rank 0's data segment from the snapshot in shared memory,
 * call the worker function, a barrier (rank 0's WAIT_FOR_END). EXIT: cdsm_finalize, exit(0).
 *
 * The data segment is the executable's writable PT_LOAD ranges minus PT_GNU_RELRO, the
 * dynamic section, the PLT's GOT and every object imported by copy relocation (stdout,
 * environ, optarg... are libc's state). libcdsm, MPI and libc keep their state in their
 * own segments, which are never copied; hence libcdsm must be a shared library. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mpi.h>

#include "cdsm.h"
#include "cdsm/parmacs.h"
#include "config.h"
#include "heap.h"

/* Set across the re-exec that turns randomisation off (not CDSM_*: cdsm_init would reject it). */
#define PM_REEXEC_ENV "LIBCDSM_PARMACS_REEXEC"

enum { PM_OP_RUN = 1, PM_OP_EXIT = 2 };

/* In shared memory (the collective allocation at start). Rank 0 writes seq/op/fn/snap
 * before the barrier that publishes a command; lock_next is taken under the internal lock. */
typedef struct pm_ctl {
    uint64_t seq;       /* number of the last command */
    uint64_t op;        /* PM_OP_* */
    uint64_t fn;        /* worker function (same address on every rank) */
    uint64_t snap;      /* data-segment snapshot in shared memory */
    uint64_t snap_len;
    uint64_t lock_next; /* lock ids handed out so far */
    uint64_t fp[];      /* per rank: hash of the address layout (start-up check) */
} pm_ctl_t;

typedef struct pm_range {
    uintptr_t lo, hi;
} pm_range_t;

typedef struct pm_ranges {
    pm_range_t *v;
    size_t n, cap;
} pm_ranges_t;

/* This process's state: in libcdsm's own data segment, so never copied by a snapshot. */
static struct {
    int started, finished, dying;
    int rank, n;
    pm_ctl_t *ctl;
    uint64_t seq;        /* last command sent (rank 0) or run (others) */
    int in_batch;        /* rank 0: from the first CREATE to WAIT_FOR_END; others: in fn */
    long created;        /* rank 0: workers started in this batch */
    int newstyle;        /* rank 0: the batch came from CREATE(fn, P) */
    cdsm_parmacs_fn_t batch_fn;
    pm_ranges_t seg;     /* the executable's private data segment */
    size_t seg_bytes;
    char *snap;          /* rank 0: snapshot buffer in shared memory */
    int lock_base, lock_range, lock_internal;
    int warned_locks;
    uint64_t fingerprint;
    unsigned long roi_begin, roi_end;
} pm;

static void pm_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void pm_die(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "cdsm PARMACS[rank %d]: %s\n", pm.started ? pm.rank : -1, msg);
    fflush(stderr);
    if (pm.started && !pm.finished && pm.rank == 0 && !pm.in_batch) {
        /* The other ranks wait for a command: end the job in order (the exit handler stops
         * them), so the launcher forwards this message before anything is killed. */
        exit(1);
    }
    pm.dying = 1;
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    if (init) MPI_Finalized(&fin);
    if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 1);
    _exit(1);
}

/* ---- address-space randomisation -------------------------------------------------- */

static int aslr_globally_off(void)
{
    FILE *f = fopen("/proc/sys/kernel/randomize_va_space", "r");
    if (!f) return 0;
    int c = fgetc(f);
    fclose(f);
    return c == '0';
}

/* Re-execute the program with randomisation off unless it already is, so that the
 * executable, its libraries and their data lie at the same addresses on every rank.
 * Only before MPI starts: afterwards the launcher's connection would be in use. */
static void pm_no_aslr(void)
{
    int pers = personality(0xffffffff);
    if (pers != -1 && (pers & ADDR_NO_RANDOMIZE)) {
        unsetenv(PM_REEXEC_ENV);
        return;
    }
    if (aslr_globally_off()) return;
    if (getenv(PM_REEXEC_ENV))
        pm_die("address-space randomisation is still on after re-executing with ADDR_NO_RANDOMIZE "
               "(personality %#x); every rank needs the same addresses: run with `setarch -R` or "
               "kernel.randomize_va_space=0",
               (unsigned)pers);
    int init = 0;
    MPI_Initialized(&init);
    if (init)
        pm_die("address-space randomisation is on and MPI is already initialised, so the program "
               "cannot re-execute itself: put MAIN_ENV in the file with main (its constructor runs "
               "first), or run with `setarch -R`");
    if (pers == -1 || personality((unsigned long)pers | ADDR_NO_RANDOMIZE) == -1)
        pm_die("personality(ADDR_NO_RANDOMIZE) failed: %s; run with `setarch -R` or "
               "kernel.randomize_va_space=0",
               strerror(errno));
    /* The same argv, read back from the kernel (main's may be changed by now). */
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) pm_die("cannot read /proc/self/cmdline to re-execute: %s", strerror(errno));
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) pm_die("out of memory reading /proc/self/cmdline");
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) pm_die("cannot read /proc/self/cmdline: %s", strerror(errno));
        if (r == 0) break;
        len += (size_t)r;
        if (len == cap) buf = realloc(buf, (cap *= 2) + 1);
    }
    close(fd);
    buf[len] = '\0';
    size_t argc = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\0') argc++;
    if (len && buf[len - 1] != '\0') argc++;
    char **argv = calloc(argc + 1, sizeof *argv);
    if (!argv) pm_die("out of memory re-executing");
    size_t k = 0;
    for (size_t i = 0; i < len && k < argc; i += strlen(buf + i) + 1) argv[k++] = buf + i;
    setenv(PM_REEXEC_ENV, "1", 1);
    execv("/proc/self/exe", argv);
    pm_die("re-executing /proc/self/exe with address-space randomisation off failed: %s",
           strerror(errno));
}

/* ---- the executable's data segment ------------------------------------------------ */

static void ranges_add(pm_ranges_t *r, uintptr_t lo, uintptr_t hi)
{
    if (hi <= lo) return;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        if (!r->v) pm_die("out of memory");
    }
    r->v[r->n++] = (pm_range_t){lo, hi};
}

/* Remove [lo, hi) from every range of r. */
static void ranges_sub(pm_ranges_t *r, uintptr_t lo, uintptr_t hi)
{
    if (hi <= lo) return;
    size_t n0 = r->n;
    for (size_t i = 0; i < n0; i++) {
        pm_range_t x = r->v[i];
        if (hi <= x.lo || lo >= x.hi) continue;
        r->v[i].hi = r->v[i].lo; /* emptied; pieces appended */
        if (x.lo < lo) ranges_add(r, x.lo, lo);
        if (hi < x.hi) ranges_add(r, hi, x.hi);
    }
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].hi > r->v[i].lo) r->v[k++] = r->v[i];
    r->n = k;
}

static int range_cmp(const void *a, const void *b)
{
    uintptr_t x = ((const pm_range_t *)a)->lo, y = ((const pm_range_t *)b)->lo;
    return x < y ? -1 : x > y;
}

typedef struct pm_exe {
    int found;
    uintptr_t bias;
    const ElfW(Phdr) *phdr;
    size_t phnum;
} pm_exe_t;

static int find_exe(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    pm_exe_t *e = data;
    /* The main program comes first, with an empty name. */
    if (info->dlpi_name && info->dlpi_name[0]) return 1;
    e->found = 1;
    e->bias = info->dlpi_addr;
    e->phdr = info->dlpi_phdr;
    e->phnum = info->dlpi_phnum;
    return 1;
}

static int hash_objects(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    uint64_t *h = data;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    for (const char *c = name;; c++) {
        *h = (*h ^ (uint8_t)*c) * 0x100000001b3ull;
        if (!*c) break;
    }
    uint64_t a = info->dlpi_addr;
    for (int i = 0; i < 8; i++) *h = (*h ^ ((a >> (8 * i)) & 0xff)) * 0x100000001b3ull;
    return 0;
}

/* File offset of virtual address v (unrelocated) in the mapped ELF file, or 0. */
static size_t file_off(const ElfW(Phdr) *ph, size_t phnum, uint64_t v, uint64_t len, size_t fsize)
{
    for (size_t i = 0; i < phnum; i++) {
        if (ph[i].p_type != PT_LOAD) continue;
        if (v >= ph[i].p_vaddr && v + len <= ph[i].p_vaddr + ph[i].p_filesz) {
            uint64_t off = ph[i].p_offset + (v - ph[i].p_vaddr);
            return off + len <= fsize ? (size_t)off : 0;
        }
    }
    return 0;
}

/* Exclude what the executable's dynamic relocations place in its data segment on behalf of
 * libraries: objects imported by copy relocation, and the PLT's GOT. Read from the file
 * (the in-memory dynamic section may already be relocated by ld.so). */
static void exclude_dynamic(pm_ranges_t *seg, uintptr_t bias)
{
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) pm_die("cannot open /proc/self/exe: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || st.st_size < (off_t)sizeof(ElfW(Ehdr))) pm_die("cannot stat /proc/self/exe");
    size_t fsize = (size_t)st.st_size;
    const uint8_t *f = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f == MAP_FAILED) pm_die("cannot map /proc/self/exe: %s", strerror(errno));
    const ElfW(Ehdr) *eh = (const void *)f;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_phentsize != sizeof(ElfW(Phdr)) || eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(ElfW(Phdr)) > fsize)
        pm_die("/proc/self/exe is not a 64-bit ELF executable this layer can read");
    unsigned copy_type;
    switch (eh->e_machine) {
    case EM_X86_64: copy_type = R_X86_64_COPY; break;
#ifdef EM_AARCH64
    case EM_AARCH64: copy_type = 1024; /* R_AARCH64_COPY */ break;
#endif
    default: pm_die("machine %u: copy relocations unknown to the PARMACS layer", eh->e_machine);
    }
    const ElfW(Phdr) *ph = (const void *)(f + eh->e_phoff);
    size_t phnum = eh->e_phnum;
    uint64_t rela = 0, relasz = 0, relaent = sizeof(ElfW(Rela)), symtab = 0, syment = sizeof(ElfW(Sym));
    uint64_t pltgot = 0, pltrelsz = 0;
    for (size_t i = 0; i < phnum; i++) {
        if (ph[i].p_type != PT_DYNAMIC) continue;
        if (ph[i].p_offset + ph[i].p_filesz > fsize) pm_die("/proc/self/exe: truncated dynamic section");
        const ElfW(Dyn) *d = (const void *)(f + ph[i].p_offset);
        size_t nd = ph[i].p_filesz / sizeof *d;
        for (size_t k = 0; k < nd && d[k].d_tag != DT_NULL; k++) {
            switch (d[k].d_tag) {
            case DT_RELA: rela = d[k].d_un.d_ptr; break;
            case DT_RELASZ: relasz = d[k].d_un.d_val; break;
            case DT_RELAENT: relaent = d[k].d_un.d_val; break;
            case DT_SYMTAB: symtab = d[k].d_un.d_ptr; break;
            case DT_SYMENT: syment = d[k].d_un.d_val; break;
            case DT_PLTGOT: pltgot = d[k].d_un.d_ptr; break;
            case DT_PLTRELSZ: pltrelsz = d[k].d_un.d_val; break;
            default: break;
            }
        }
    }
    if (rela && relasz && relaent >= sizeof(ElfW(Rela))) {
        size_t ro = file_off(ph, phnum, rela, relasz, fsize);
        if (!ro) pm_die("/proc/self/exe: relocation table outside the file");
        for (uint64_t k = 0; k < relasz / relaent; k++) {
            const ElfW(Rela) *r = (const void *)(f + ro + k * relaent);
            if (ELF64_R_TYPE(r->r_info) != copy_type) continue;
            size_t so = symtab ? file_off(ph, phnum, symtab + ELF64_R_SYM(r->r_info) * syment,
                                          sizeof(ElfW(Sym)), fsize) : 0;
            if (!so) pm_die("/proc/self/exe: symbol of a copy relocation outside the file");
            const ElfW(Sym) *s = (const void *)(f + so);
            uint64_t size = s->st_size ? s->st_size : 1;
            ranges_sub(seg, bias + r->r_offset, bias + r->r_offset + size);
        }
    }
    if (pltgot) {
        uint64_t entries = 3 + (relaent ? pltrelsz / relaent : 0);
        ranges_sub(seg, bias + pltgot, bias + pltgot + entries * sizeof(void *));
    }
    munmap((void *)f, fsize);
}

static int probe_var; /* an object of libcdsm's own data segment */

static void pm_find_segment(void)
{
    pm_exe_t e = {0};
    dl_iterate_phdr(find_exe, &e);
    if (!e.found) pm_die("dl_iterate_phdr did not report the main program");
    pm_ranges_t seg = {0};
    for (size_t i = 0; i < e.phnum; i++) {
        const ElfW(Phdr) *p = &e.phdr[i];
        uintptr_t lo = e.bias + p->p_vaddr, hi = lo + p->p_memsz;
        if (p->p_type == PT_LOAD && (uintptr_t)&probe_var >= lo && (uintptr_t)&probe_var < hi)
            pm_die("libcdsm is linked statically into the program: the copy of the program's data "
                   "segment at CREATE would overwrite the library's own state. Link libcdsm as a "
                   "shared library (pkg-config --libs cdsm, or the meson target's shared library)");
        if (p->p_type == PT_LOAD && (p->p_flags & PF_W)) ranges_add(&seg, lo, hi);
    }
    for (size_t i = 0; i < e.phnum; i++) {
        const ElfW(Phdr) *p = &e.phdr[i];
        uintptr_t lo = e.bias + p->p_vaddr, hi = lo + p->p_memsz;
        if (p->p_type == PT_GNU_RELRO || p->p_type == PT_DYNAMIC || p->p_type == PT_TLS)
            ranges_sub(&seg, lo, hi);
    }
    exclude_dynamic(&seg, e.bias);
    qsort(seg.v, seg.n, sizeof *seg.v, range_cmp);
    pm.seg = seg;
    pm.seg_bytes = 0;
    for (size_t i = 0; i < seg.n; i++) pm.seg_bytes += seg.v[i].hi - seg.v[i].lo;
    pm.fingerprint = 0xcbf29ce484222325ull;
    dl_iterate_phdr(hash_objects, &pm.fingerprint);
}

/* Copy between the data segment and the snapshot, writing only what differs (untouched
 * zero pages stay untouched; an unchanged snapshot page makes no diff). */
/* Byte loops the compiler keeps uninstrumented: the copy spans every global of the
 * program, red zones between them included when it is built with AddressSanitizer. */
__attribute__((no_sanitize_address)) static int raw_differs(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 1;
    return 0;
}

__attribute__((no_sanitize_address)) static void raw_copy(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

/* Copy the data segment to or from the snapshot, writing only chunks that differ (so the
 * DSM pages of the snapshot, and the program's pages, are dirtied only where needed). */
static void pm_copy(int to_snapshot, char *snap)
{
    const size_t chunk = 4096;
    size_t off = 0;
    for (size_t i = 0; i < pm.seg.n; i++) {
        char *p = (char *)pm.seg.v[i].lo;
        size_t len = pm.seg.v[i].hi - pm.seg.v[i].lo;
        for (size_t k = 0; k < len; k += chunk) {
            size_t m = len - k < chunk ? len - k : chunk;
            char *dst = to_snapshot ? snap + off + k : p + k;
            const char *src = to_snapshot ? p + k : snap + off + k;
            if (raw_differs(dst, src, m)) raw_copy(dst, src, m);
        }
        off += len;
    }
}

/* ---- commands --------------------------------------------------------------------- */

static void pm_barrier(const char *what)
{
    int rc = cdsm_barrier();
    if (rc) pm_die("%s: cdsm_barrier failed: %s (%s)", what, cdsm_last_error(), cdsm_status_name(rc));
}

static void pm_lock_raw(int id, const char *what)
{
    int rc = cdsm_lock_acquire(id);
    if (rc) pm_die("%s: cdsm_lock_acquire(%d) failed: %s (%s)", what, id, cdsm_last_error(), cdsm_status_name(rc));
}

static void pm_unlock_raw(int id, const char *what)
{
    int rc = cdsm_lock_release(id);
    if (rc) pm_die("%s: cdsm_lock_release(%d) failed: %s (%s)", what, id, cdsm_last_error(), cdsm_status_name(rc));
}

/* Rank 0: publish a command (the barrier pairs with the waiting ranks' barrier). */
static void pm_send(uint64_t op, cdsm_parmacs_fn_t fn)
{
    pm_ctl_t *c = pm.ctl;
    c->op = op;
    c->fn = (uint64_t)(uintptr_t)fn;
    c->snap = (uint64_t)(uintptr_t)pm.snap;
    c->snap_len = pm.snap ? pm.seg_bytes : 0;
    c->seq = ++pm.seq;
    pm_barrier(op == PM_OP_RUN ? "CREATE" : "MAIN_END");
}

static void pm_worker_loop(void) __attribute__((noreturn));

static void pm_worker_loop(void)
{
    for (;;) {
        pm_barrier("waiting for CREATE");
        pm_ctl_t *c = pm.ctl;
        if (c->seq != pm.seq + 1)
            pm_die("expected command %llu from rank 0 but found %llu: rank 0 entered a barrier "
                   "outside CREATE..WAIT_FOR_END",
                   (unsigned long long)(pm.seq + 1), (unsigned long long)c->seq);
        pm.seq = c->seq;
        if (c->op == PM_OP_EXIT) {
            pm.finished = 1;
            int rc = cdsm_finalize();
            if (rc) fprintf(stderr, "cdsm PARMACS[rank %d]: cdsm_finalize: %s\n", pm.rank, cdsm_last_error());
            exit(rc ? 1 : 0);
        }
        if (c->op != PM_OP_RUN) pm_die("unknown command %llu from rank 0", (unsigned long long)c->op);
        if (c->snap_len != pm.seg_bytes)
            pm_die("rank 0's data segment has %llu bytes, this rank's %zu: not the same program",
                   (unsigned long long)c->snap_len, pm.seg_bytes);
        cdsm_parmacs_fn_t fn = (cdsm_parmacs_fn_t)(uintptr_t)c->fn;
        if (c->snap_len) pm_copy(0, (char *)(uintptr_t)c->snap);
        pm.in_batch = 1;
        fn();
        pm.in_batch = 0;
        pm_barrier("worker end (WAIT_FOR_END)");
    }
}

/* Rank 0 outside a batch: tell the others to finish, finish. */
static void pm_shutdown(void)
{
    if (pm.n > 1) pm_send(PM_OP_EXIT, NULL);
    pm.finished = 1;
    if (cdsm__cfg.stats >= 1 && pm.roi_end > pm.roi_begin)
        fprintf(stderr, "cdsm PARMACS: region of interest %lu us (rank 0)\n", pm.roi_end - pm.roi_begin);
    int rc = cdsm_finalize();
    if (rc) fprintf(stderr, "cdsm PARMACS[rank 0]: cdsm_finalize: %s\n", cdsm_last_error());
}

/* exit() anywhere ends every thread of a pthreads program. Rank 0 in main: the other ranks
 * are waiting, so finish them cleanly and keep the exit status. Anywhere else the workers
 * are running: end the whole job. */
static void pm_on_exit(int status, void *arg)
{
    (void)arg;
    if (!pm.started || pm.finished || pm.dying) return;
    if (pm.rank == 0 && !pm.in_batch) {
        fflush(stdout);
        pm_shutdown();
        return;
    }
    pm.dying = 1;
    fflush(stdout);
    fprintf(stderr, "cdsm PARMACS[rank %d]: exit(%d) while the workers of a CREATE run: ending the whole job\n",
            pm.rank, status);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, status ? status : 1);
}

void cdsm__parmacs_start(void)
{
    if (pm.started) return;
    pm_no_aslr();
    pm_find_segment();
    int rc = cdsm_init(NULL, NULL);
    if (rc) {
        fprintf(stderr, "cdsm PARMACS: cdsm_init failed: %s (%s)\n", cdsm_last_error(), cdsm_status_name(rc));
        _exit(1);
    }
    pm.started = 1;
    pm.rank = cdsm_rank();
    pm.n = cdsm_nranks();
    int nl = cdsm_nlocks();
    if (nl < 4) pm_die("CDSM_LOCKS=%d: the PARMACS layer needs at least 4 lock ids", nl);
    pm.lock_base = nl / 2;
    pm.lock_internal = nl - 1;
    pm.lock_range = pm.lock_internal - pm.lock_base;
    /* A page of its own (at least), so the program's data never shares its page. */
    size_t need = sizeof(pm_ctl_t) + (size_t)pm.n * sizeof(uint64_t), pg = cdsm_page_size();
    void *ctl;
    rc = cdsm_alloc((need + pg - 1) / pg * pg, &ctl);
    if (rc) pm_die("control block: %s", cdsm_last_error());
    pm.ctl = ctl;
    pm.ctl->fp[pm.rank] = pm.fingerprint ^ pm.seg_bytes;
    pm_barrier("start");
    if (pm.ctl->fp[pm.rank] != pm.ctl->fp[0])
        pm_die("this rank's executable and libraries lie at other addresses than rank 0's (or the "
               "data segment differs): the same program must run on every rank with address-space "
               "randomisation off");
    if (on_exit(pm_on_exit, NULL)) pm_die("on_exit failed");
    if (pm.rank != 0) pm_worker_loop();
}

void cdsm__parmacs_main_initenv(void)
{
    cdsm__parmacs_start(); /* normally done by MAIN_ENV's constructor */
}

void cdsm__parmacs_main_end(void)
{
    if (!pm.started) exit(0);
    /* One worker (P = 1): some programs skip WAIT_FOR_END then (VOLREND); nobody is left
     * to wait for. */
    if (pm.rank == 0 && pm.in_batch && pm.n == 1) cdsm__parmacs_wait_for_end(1);
    if (pm.rank != 0 || pm.in_batch) pm_die("MAIN_END inside a worker or before WAIT_FOR_END");
    fflush(stdout);
    pm_shutdown();
    exit(0);
}

static void pm_start_batch(cdsm_parmacs_fn_t fn)
{
    if (pm.n > 1) {
        if (!pm.snap && pm.seg_bytes) {
            void *p;
            int rc = cdsm__alloc_master(pm.seg_bytes, &p);
            if (rc) pm_die("CREATE: no shared memory for the %zu-byte data segment: %s", pm.seg_bytes, cdsm_last_error());
            pm.snap = p;
        }
        if (pm.snap) pm_copy(1, pm.snap);
        pm_send(PM_OP_RUN, fn);
    }
    pm.in_batch = 1;
    pm.batch_fn = fn;
    pm.created = 0;
}

void cdsm__parmacs_create(cdsm_parmacs_fn_t fn, long nprocs)
{
    cdsm__parmacs_start();
    if (pm.rank != 0) pm_die("CREATE inside a worker: nested CREATE is not supported");
    if (nprocs > 0) { /* Splash-3: CREATE(fn, P) */
        if (pm.in_batch) pm_die("CREATE(fn, %ld) while a batch of workers runs (no WAIT_FOR_END before)", nprocs);
        if (nprocs != pm.n)
            pm_die("CREATE(fn, %ld) but the job has %d ranks (worker i runs on rank i): run with "
                   "mpiexec -n %ld, or pass %d processes to the program",
                   nprocs, pm.n, nprocs, pm.n);
        pm_start_batch(fn);
        pm.created = nprocs - 1;
        pm.newstyle = 1;
        fn();
        return;
    }
    /* SPLASH-2: CREATE(fn), once per worker; the first one starts every other rank. */
    if (!pm.in_batch) {
        pm_start_batch(fn);
        pm.newstyle = 0;
    } else if (pm.newstyle || fn != pm.batch_fn) {
        pm_die("CREATE of another function while a batch runs: every CREATE between two "
               "WAIT_FOR_END must start the same function");
    }
    if (++pm.created > pm.n - 1)
        pm_die("CREATE number %ld but the job has only %d ranks (worker i runs on rank i, rank 0 "
               "runs main's own call): run with mpiexec -n P where P-1 is the number of CREATEs",
               pm.created, pm.n);
}

void cdsm__parmacs_wait_for_end(long n)
{
    cdsm__parmacs_start();
    if (pm.rank != 0) pm_die("WAIT_FOR_END inside a worker");
    if (!pm.in_batch) {
        if (pm.n == 1) return; /* P = 1: no CREATE at all */
        pm_die("WAIT_FOR_END(%ld) without CREATE, but the job has %d ranks", n, pm.n);
    }
    if (pm.created != pm.n - 1)
        pm_die("WAIT_FOR_END(%ld): the batch started %ld workers besides main, but the job has %d "
               "ranks (worker i runs on rank i): run with mpiexec -n %ld",
               n, pm.created, pm.n, pm.created + 1);
    if (pm.n > 1) pm_barrier("WAIT_FOR_END");
    pm.in_batch = 0;
    pm.created = 0;
    pm.newstyle = 0;
    pm.batch_fn = NULL;
}

/* ---- memory ----------------------------------------------------------------------- */

void *cdsm__parmacs_malloc(size_t size)
{
    cdsm__parmacs_start();
    void *p = NULL;
    if (!size) size = 1;
    /* main on rank 0 while the others wait: the common arena (nobody else allocates there
     * any more); inside a worker: this rank's arena. Both are valid on every rank. */
    int in_main = pm.rank == 0 && !pm.in_batch;
    int rc = in_main ? cdsm__alloc_master(size, &p) : cdsm_malloc(size, &p);
    /* A program cannot check: G_MALLOC never hands it NULL. */
    if (rc)
        pm_die("G_MALLOC of %zu bytes (%.1f MiB) %s failed: %s; the shared heap is CDSM_HEAP_SIZE=%zu bytes: "
               "set CDSM_HEAP_SIZE larger", size, (double)size / 1048576.0, in_main ? "in main" : "in a worker",
               cdsm_last_error(), cdsm__heap.heap_size);
    return p;
}

void cdsm__parmacs_free(void *ptr)
{
    (void)ptr; /* kept: see README (G_FREE) */
}

unsigned long cdsm__parmacs_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long)ts.tv_sec * 1000000ul + (unsigned long)(ts.tv_nsec / 1000);
}

/* ---- locks ------------------------------------------------------------------------ */

static int pm_take_ids(long count)
{
    cdsm__parmacs_start();
    if (count < 0) pm_die("ALOCKINIT with a negative count (%ld)", count);
    pm_lock_raw(pm.lock_internal, "LOCKINIT");
    uint64_t first = pm.ctl->lock_next;
    pm.ctl->lock_next = first + (uint64_t)count;
    pm_unlock_raw(pm.lock_internal, "LOCKINIT");
    if (first + (uint64_t)count > (uint64_t)pm.lock_range && !pm.warned_locks) {
        pm.warned_locks = 1;
        fprintf(stderr,
                "cdsm PARMACS[rank %d]: more than %d locks initialised: lock ids are shared from now on "
                "(correct unless a worker holds two locks with one id; raise CDSM_LOCKS to avoid it)\n",
                pm.rank, pm.lock_range);
    }
    return (int)(first % (uint64_t)pm.lock_range);
}

int cdsm__parmacs_lock_new(void)
{
    return pm.lock_base + pm_take_ids(1);
}

void cdsm__parmacs_alock_init(cdsm_parmacs_lock_t *locks, long n)
{
    int first = pm_take_ids(n);
    for (long i = 0; i < n; i++) locks[i] = pm.lock_base + (int)(((long)first + i) % pm.lock_range);
}

static void pm_check_lock(int id, const char *what)
{
    if (!pm.started) pm_die("%s before the layer started (MAIN_ENV missing?)", what);
    if (id < pm.lock_base || id >= pm.lock_internal)
        pm_die("%s on a lock that LOCKINIT/ALOCKINIT did not initialise (value %d; ids are %d..%d)", what, id,
               pm.lock_base, pm.lock_internal - 1);
}

void cdsm__parmacs_lock(int id)
{
    pm_check_lock(id, "LOCK");
    pm_lock_raw(id, "LOCK");
}

void cdsm__parmacs_unlock(int id)
{
    pm_check_lock(id, "UNLOCK");
    pm_unlock_raw(id, "UNLOCK");
}

void cdsm__parmacs_barrier(long n)
{
    cdsm__parmacs_start();
    if (n != pm.n)
        pm_die("BARRIER(.., %ld) but the job has %d ranks: every rank runs one worker, so the "
               "program's process count must equal the number of ranks",
               n, pm.n);
    if (pm.n > 1 && !pm.in_batch)
        pm_die("BARRIER in main outside CREATE..WAIT_FOR_END: the other ranks run no worker");
    pm_barrier("BARRIER");
}

/* ---- pause flags and condition variables ------------------------------------------- */

static void pm_check_shared(const void *p, const char *what)
{
    cdsm__parmacs_start();
    const char *c = p;
    if (pm.n > 1 && (c < cdsm__heap.base || c >= cdsm__heap.base + cdsm__heap.heap_size))
        pm_die("%s: the variable at %p is not in shared memory; declare it inside G_MALLOC'd memory", what, p);
}

/* Polling: yield the CPU between reads, then sleep a little (ranks may share cores). */
static void pm_poll_wait(unsigned *spins)
{
    if (++*spins < 200) {
        sched_yield();
    } else {
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
}

void cdsm__parmacs_pause_init(cdsm_parmacs_pause_t *p)
{
    pm_check_shared(p, "PAUSEINIT");
    p->lock = cdsm__parmacs_lock_new();
    pm_lock_raw(p->lock, "PAUSEINIT");
    p->flag = 0;
    pm_unlock_raw(p->lock, "PAUSEINIT");
}

static void pm_pause_put(cdsm_parmacs_pause_t *p, int v, const char *what)
{
    pm_check_shared(p, what);
    pm_check_lock(p->lock, what);
    pm_lock_raw(p->lock, what);
    p->flag = v;
    pm_unlock_raw(p->lock, what);
}

void cdsm__parmacs_pause_set(cdsm_parmacs_pause_t *p)
{
    pm_pause_put(p, 1, "SETPAUSE");
}

void cdsm__parmacs_pause_clear(cdsm_parmacs_pause_t *p)
{
    pm_pause_put(p, 0, "CLEARPAUSE");
}

void cdsm__parmacs_pause_wait(cdsm_parmacs_pause_t *p)
{
    pm_check_shared(p, "WAITPAUSE");
    pm_check_lock(p->lock, "WAITPAUSE");
    for (unsigned spins = 0;; pm_poll_wait(&spins)) {
        pm_lock_raw(p->lock, "WAITPAUSE");
        int f = p->flag;
        pm_unlock_raw(p->lock, "WAITPAUSE");
        if (f) return;
    }
}

void cdsm__parmacs_cond_init(cdsm_parmacs_condvar_t *c)
{
    pm_check_shared(c, "CONDVARINIT");
    c->lock = cdsm__parmacs_lock_new();
    pm_lock_raw(c->lock, "CONDVARINIT");
    c->gen = 0;
    pm_unlock_raw(c->lock, "CONDVARINIT");
}

/* Called with `lock` held, returns with it held. The generation is read while `lock` is
 * held, so a signal sent under `lock` after the caller checked its predicate is not lost. */
void cdsm__parmacs_cond_wait(cdsm_parmacs_condvar_t *c, int lock)
{
    pm_check_shared(c, "CONDVARWAIT");
    pm_check_lock(c->lock, "CONDVARWAIT");
    pm_check_lock(lock, "CONDVARWAIT");
    pm_lock_raw(c->lock, "CONDVARWAIT");
    unsigned gen = c->gen;
    pm_unlock_raw(c->lock, "CONDVARWAIT");
    pm_unlock_raw(lock, "CONDVARWAIT");
    for (unsigned spins = 0;; pm_poll_wait(&spins)) {
        pm_lock_raw(c->lock, "CONDVARWAIT");
        unsigned now = c->gen;
        pm_unlock_raw(c->lock, "CONDVARWAIT");
        if (now != gen) break;
    }
    pm_lock_raw(lock, "CONDVARWAIT");
}

/* SIGNAL and BCAST alike: every waiter wakes (a spurious wake-up for all but one, which
 * pthread_cond_signal allows); waiters re-check their predicate. */
void cdsm__parmacs_cond_signal(cdsm_parmacs_condvar_t *c)
{
    pm_check_shared(c, "CONDVARSIGNAL");
    pm_check_lock(c->lock, "CONDVARSIGNAL");
    pm_lock_raw(c->lock, "CONDVARSIGNAL");
    c->gen++;
    pm_unlock_raw(c->lock, "CONDVARSIGNAL");
}

/* ---- region of interest ------------------------------------------------------------ */

void cdsm__parmacs_roi_begin(void)
{
    pm.roi_begin = cdsm__parmacs_clock();
}

void cdsm__parmacs_roi_end(void)
{
    pm.roi_end = cdsm__parmacs_clock();
}

unsigned long cdsm_parmacs_roi_us(void)
{
    return pm.roi_end > pm.roi_begin ? pm.roi_end - pm.roi_begin : 0;
}
