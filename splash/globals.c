/* The program's globals under the PARMACS layer: shared, as in the pthreads program a
 * SPLASH program is (docs/DESIGN.md, "The program's globals").
 *
 * The data segment is the executable's writable PT_LOAD ranges minus PT_GNU_RELRO, the
 * dynamic section, the PLT's GOT and every object imported by copy relocation (stdout,
 * environ, optarg... are libc's state: any thread reads them, so they must never fault).
 * Its largest piece of whole pages is mapped onto the DSM heap's memfd (cdsm_init does it)
 * and is DSM pages like the heap's: faults, twins, diffs, notices, checkpoints, replay.
 * The rest (the pages it shares with libc's objects and the GOT: a few KiB) is copied
 * through a shadow in shared memory at every synchronisation of the layer: the bytes
 * changed since the last sync go out before it (a release or an acquire), and the bytes
 * others changed come in after an acquire. libcdsm, MPI and libc keep their state in their own segments, which
 * are never shared; hence libcdsm must be a shared library. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cdsm.h"
#include "heap.h"
#include "interval.h"
#include "pm_int.h"

typedef struct pm_range {
    uintptr_t lo, hi;
} pm_range_t;

typedef struct pm_ranges {
    pm_range_t *v;
    size_t n, cap;
} pm_ranges_t;

/* This process's view of the globals (in libcdsm's own data segment, never shared). */
static struct {
    pm_ranges_t seg;   /* the program's globals: the data segment minus libraries' objects */
    size_t seg_bytes;
    pm_ranges_t mixed; /* the part that is not DSM pages: copied through the shadow */
    size_t mixed_bytes;
    char *shadow;      /* [mixed_bytes] in shared memory */
    char *twin;        /* [mixed_bytes] the shadow as this rank last synchronised it */
    uint64_t pulled_gen; /* cdsm__iv_incorporated() at the last pull */
    uint64_t *gen;       /* node heap: pushes that changed the shadow (in shared memory) */
    uint64_t pulled_push; /* node heap: *gen at the last pull */
    int pulled;        /* the first pull of a rank > 0 takes every byte */
    uint64_t fingerprint;
} gl;

static void ranges_add(pm_ranges_t *r, uintptr_t lo, uintptr_t hi)
{
    if (hi <= lo) return;
    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->v = realloc(r->v, r->cap * sizeof *r->v);
        if (!r->v) cdsm__pm_die("out of memory");
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
    if (fd < 0) cdsm__pm_die("cannot open /proc/self/exe: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || st.st_size < (off_t)sizeof(ElfW(Ehdr))) cdsm__pm_die("cannot stat /proc/self/exe");
    size_t fsize = (size_t)st.st_size;
    const uint8_t *f = mmap(NULL, fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f == MAP_FAILED) cdsm__pm_die("cannot map /proc/self/exe: %s", strerror(errno));
    const ElfW(Ehdr) *eh = (const void *)f;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_phentsize != sizeof(ElfW(Phdr)) || eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(ElfW(Phdr)) > fsize)
        cdsm__pm_die("/proc/self/exe is not a 64-bit ELF executable this layer can read");
    unsigned copy_type;
    switch (eh->e_machine) {
    case EM_X86_64: copy_type = R_X86_64_COPY; break;
#ifdef EM_AARCH64
    case EM_AARCH64: copy_type = 1024; /* R_AARCH64_COPY */ break;
#endif
    default: cdsm__pm_die("machine %u: copy relocations unknown to the PARMACS layer", eh->e_machine);
    }
    const ElfW(Phdr) *ph = (const void *)(f + eh->e_phoff);
    size_t phnum = eh->e_phnum;
    uint64_t rela = 0, relasz = 0, relaent = sizeof(ElfW(Rela)), symtab = 0, syment = sizeof(ElfW(Sym));
    uint64_t pltgot = 0, pltrelsz = 0;
    for (size_t i = 0; i < phnum; i++) {
        if (ph[i].p_type != PT_DYNAMIC) continue;
        if (ph[i].p_offset + ph[i].p_filesz > fsize) cdsm__pm_die("/proc/self/exe: truncated dynamic section");
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
        if (!ro) cdsm__pm_die("/proc/self/exe: relocation table outside the file");
        for (uint64_t k = 0; k < relasz / relaent; k++) {
            const ElfW(Rela) *r = (const void *)(f + ro + k * relaent);
            if (ELF64_R_TYPE(r->r_info) != copy_type) continue;
            size_t so = symtab ? file_off(ph, phnum, symtab + ELF64_R_SYM(r->r_info) * syment,
                                          sizeof(ElfW(Sym)), fsize) : 0;
            if (!so) cdsm__pm_die("/proc/self/exe: symbol of a copy relocation outside the file");
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

/* The writable PT_LOAD ranges of the executable minus what libraries own in them. */
static void find_segment(pm_exe_t *e)
{
    dl_iterate_phdr(find_exe, e);
    if (!e->found) cdsm__pm_die("dl_iterate_phdr did not report the main program");
    pm_ranges_t seg = {0};
    for (size_t i = 0; i < e->phnum; i++) {
        const ElfW(Phdr) *p = &e->phdr[i];
        uintptr_t lo = e->bias + p->p_vaddr, hi = lo + p->p_memsz;
        if (p->p_type == PT_LOAD && (uintptr_t)&probe_var >= lo && (uintptr_t)&probe_var < hi)
            cdsm__pm_die("libcdsm is linked statically into the program: the program's globals, which are "
                         "shared, would hold the library's own state. Link libcdsm as a shared library "
                         "(pkg-config --libs cdsm, or the meson target's shared library)");
        if (p->p_type == PT_LOAD && (p->p_flags & PF_W)) ranges_add(&seg, lo, hi);
    }
    for (size_t i = 0; i < e->phnum; i++) {
        const ElfW(Phdr) *p = &e->phdr[i];
        uintptr_t lo = e->bias + p->p_vaddr, hi = lo + p->p_memsz;
        if (p->p_type == PT_GNU_RELRO || p->p_type == PT_DYNAMIC || p->p_type == PT_TLS)
            ranges_sub(&seg, lo, hi);
    }
    exclude_dynamic(&seg, e->bias);
    qsort(seg.v, seg.n, sizeof *seg.v, range_cmp);
    gl.seg = seg;
    gl.seg_bytes = 0;
    for (size_t i = 0; i < seg.n; i++) gl.seg_bytes += seg.v[i].hi - seg.v[i].lo;
}

/* The piece of the segment with the most whole OS pages becomes DSM pages; its last page
 * may run past the segment's end when nothing else lives there (the end of a PT_LOAD). */
static void choose_region(const pm_exe_t *e, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t os = (uintptr_t)sysconf(_SC_PAGESIZE), load_end = 0;
    for (size_t i = 0; i < e->phnum; i++)
        if (e->phdr[i].p_type == PT_LOAD && (e->phdr[i].p_flags & PF_W) &&
            e->bias + e->phdr[i].p_vaddr + e->phdr[i].p_memsz > load_end)
            load_end = e->bias + e->phdr[i].p_vaddr + e->phdr[i].p_memsz;
    *lo = *hi = 0;
    for (size_t i = 0; i < gl.seg.n; i++) {
        uintptr_t a = (gl.seg.v[i].lo + os - 1) / os * os;
        uintptr_t b = gl.seg.v[i].hi == load_end ? (load_end + os - 1) / os * os : gl.seg.v[i].hi / os * os;
        if (b > a && b - a > *hi - *lo) {
            *lo = a;
            *hi = b;
        }
    }
}

void cdsm__pm_globals_find(void)
{
    pm_exe_t e = {0};
    find_segment(&e);
    gl.fingerprint = 0xcbf29ce484222325ull;
    dl_iterate_phdr(hash_objects, &gl.fingerprint);
    uintptr_t lo, hi;
    choose_region(&e, &lo, &hi);
    if (hi > lo && cdsm__heap_share_globals((void *)lo, hi - lo))
        cdsm__pm_die("sharing the program's globals: %s", cdsm_last_error());
}

uint64_t cdsm__pm_globals_fingerprint(void)
{
    return gl.fingerprint ^ gl.seg_bytes ^ ((uint64_t)cdsm__heap.gsize << 20);
}

/* The shadow's first bytes: the node heap's push count (a cache line of its own). */
#define SHADOW_HEAD 64

/* A node heap: the whole pages of the other pieces (only the program's globals on them)
 * are mapped from the heap's memfd too, rank 0's bytes first, so that only the pages
 * beside libc's objects are copied at each lock (RADIOSITY's 44 KB of .data were). */
static void share_whole_pages(int rank)
{
    uintptr_t os = (uintptr_t)cdsm__heap.os_page;
    pm_ranges_t whole = {0};
    size_t total = 0;
    for (size_t i = 0; i < gl.mixed.n; i++) {
        uintptr_t a = (gl.mixed.v[i].lo + os - 1) & ~(os - 1), b = gl.mixed.v[i].hi & ~(os - 1);
        if (b <= a || whole.n == CDSM_NODE_PIECES) continue; /* (the rest stays in the shadow) */
        ranges_add(&whole, a, b);
        total += b - a;
    }
    void *s = NULL;
    if (!total) return;
    if (cdsm_alloc(total + os, &s))
        cdsm__pm_die("no shared memory for %zu bytes of globals: %s", total, cdsm_last_error());
    uintptr_t at = ((uintptr_t)s + os - 1) & ~(os - 1);
    for (size_t i = 0, off = 0; rank == 0 && i < whole.n; off += whole.v[i].hi - whole.v[i].lo, i++)
        memcpy((char *)at + off, (const void *)whole.v[i].lo, whole.v[i].hi - whole.v[i].lo);
    if (cdsm_barrier()) cdsm__pm_die("start: cdsm_barrier failed: %s", cdsm_last_error());
    for (size_t i = 0, off = 0; i < whole.n; off += whole.v[i].hi - whole.v[i].lo, i++) {
        if (cdsm__node_share_pages((void *)whole.v[i].lo, whole.v[i].hi - whole.v[i].lo,
                                   (uint64_t)(at - (uintptr_t)cdsm__heap.base) + off))
            cdsm__pm_die("%s", cdsm_last_error());
        ranges_sub(&gl.mixed, whole.v[i].lo, whole.v[i].hi);
    }
    free(whole.v);
}

/* After cdsm_init, collectively: what is not DSM pages gets a shadow in shared memory. */
void cdsm__pm_globals_setup(int rank, int nranks)
{
    uintptr_t glo = (uintptr_t)cdsm__heap.gbase, ghi = glo + cdsm__heap.gsize;
    for (size_t i = 0; i < gl.seg.n; i++) ranges_add(&gl.mixed, gl.seg.v[i].lo, gl.seg.v[i].hi);
    ranges_sub(&gl.mixed, glo, ghi);
    if (cdsm__node.on) share_whole_pages(rank);
    qsort(gl.mixed.v, gl.mixed.n, sizeof *gl.mixed.v, range_cmp);
    gl.mixed_bytes = 0;
    for (size_t i = 0; i < gl.mixed.n; i++) gl.mixed_bytes += gl.mixed.v[i].hi - gl.mixed.v[i].lo;
    gl.pulled = rank == 0; /* rank 0's globals are the program's from the start */
    if (nranks == 1 || !gl.mixed_bytes) return;
    void *s;
    if (cdsm_alloc(SHADOW_HEAD + gl.mixed_bytes, &s))
        cdsm__pm_die("no shared memory for the %zu bytes of globals that share pages with libc's objects: %s",
                     gl.mixed_bytes, cdsm_last_error());
    gl.gen = s;
    gl.shadow = (char *)s + SHADOW_HEAD;
    /* Zero, as the shadow starts: rank 0's first push writes every byte that is not. */
    gl.twin = calloc(1, gl.mixed_bytes);
    if (!gl.twin) cdsm__pm_die("out of memory (%zu bytes for the globals' twin)", gl.mixed_bytes);
}

size_t cdsm__pm_globals_bytes(size_t *mixed)
{
    *mixed = gl.mixed_bytes;
    return gl.seg_bytes;
}

int cdsm__pm_globals_has(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    for (size_t i = 0; i < gl.seg.n; i++)
        if (a >= gl.seg.v[i].lo && a < gl.seg.v[i].hi) return 1;
    return 0;
}

/* Uninstrumented (the globals' AddressSanitizer red zones are read too). Copies the bytes
 * of `from` that differ from `twin` to `to` and to the twin; all of them when `all`. A
 * lock program pushes at every release (BARNES: 1.1 M per rank), mostly with nothing
 * changed: equal chunks are passed by libc's vectorised memcmp, a byte loop runs only in
 * a chunk that differs (it was 7 % of BARNES's profile comparing 8 bytes at a time).
 * Under AddressSanitizer libc's memcmp is intercepted and would report the red zones:
 * chunks are compared a word at a time by uninstrumented loads instead. */
#define SYNC_CHUNK 256
#if defined(__SANITIZE_ADDRESS__)
__attribute__((no_sanitize_address)) static int chunk_equal(const char *a, const char *b, size_t m)
{
    size_t k = 0;
    for (; k + 8 <= m; k += 8) {
        uint64_t x, y;
        __builtin_memcpy(&x, a + k, 8); /* (a load: a constant 8-byte copy is never a call) */
        __builtin_memcpy(&y, b + k, 8);
        if (x != y) return 0;
    }
    for (; k < m; k++)
        if (a[k] != b[k]) return 0;
    return 1;
}
#define SYNC_EQUAL(a, b, m) chunk_equal((a), (b), (m))
#else
#define SYNC_EQUAL(a, b, m) (memcmp((a), (b), (m)) == 0)
#endif
__attribute__((no_sanitize_address)) static int sync_bytes(const char *from, char *twin, char *to, size_t n, int all)
{
    int changed = 0;
    if (!all && SYNC_EQUAL(from, twin, n)) return 0; /* (the usual case, in one call) */
    for (size_t c = 0; c < n; c += SYNC_CHUNK) {
        size_t m = n - c < SYNC_CHUNK ? n - c : SYNC_CHUNK;
        if (!all && SYNC_EQUAL(from + c, twin + c, m)) continue;
        changed = 1;
        for (size_t k = c; k < c + m; k++)
            if (from[k] != twin[k] || all) to[k] = twin[k] = from[k];
    }
    return changed;
}

void cdsm__pm_globals_push(void)
{
    if (!gl.shadow || !gl.pulled) return; /* (a rank > 0 has no program values before its first pull) */
    size_t off = 0;
    int changed = 0;
    for (size_t i = 0; i < gl.mixed.n; i++) {
        size_t len = gl.mixed.v[i].hi - gl.mixed.v[i].lo;
        changed |= sync_bytes((const char *)gl.mixed.v[i].lo, gl.twin + off, gl.shadow + off, len, 0);
        off += len;
    }
    if (changed && cdsm__node.on) {
        uint64_t before = __atomic_fetch_add(gl.gen, 1, __ATOMIC_RELEASE);
        if (before == gl.pulled_push) gl.pulled_push = before + 1; /* (only ours since our pull: nothing to take) */
    }
}

void cdsm__pm_globals_pull(void)
{
    if (!gl.shadow) return;
    /* A node heap's shadow is one for every rank: unchanged since our last pull, skip it. */
    uint64_t push = cdsm__node.on ? __atomic_load_n(gl.gen, __ATOMIC_ACQUIRE) : 0;
    if (cdsm__node.on && gl.pulled && push == gl.pulled_push) return;
    gl.pulled_push = push;
    size_t off = 0;
    for (size_t i = 0; i < gl.mixed.n; i++) {
        size_t len = gl.mixed.v[i].hi - gl.mixed.v[i].lo;
        sync_bytes(gl.shadow + off, gl.twin + off, (char *)gl.mixed.v[i].lo, len, !gl.pulled);
        off += len;
    }
    gl.pulled = 1;
    gl.pulled_gen = cdsm__iv_incorporated();
}

void cdsm__pm_globals_sync_if_new(void)
{
    /* (A node heap incorporates no records: its acquires tell nothing, so each pulls.) */
    if (!gl.shadow || (gl.pulled && !cdsm__node.on && cdsm__iv_incorporated() == gl.pulled_gen)) return;
    /* This rank's writes since its last synchronisation go first, so that the pull cannot
     * overwrite them (another rank's newer bytes are other bytes: the program is race-free). */
    cdsm__pm_globals_push();
    cdsm__pm_globals_pull();
}
