/*
 * Edge cases of the PARMACS layer, in SPLASH style (turned into C by m4 with
 * include/cdsm/c.m4.cdsm):
 *
 *   - PAGE_SIZE and __MAX_THREADS__ come from the macro file, as Splash-3's pthreads macro
 *     file gives them (LU's and OCEAN's padding use PAGE_SIZE);
 *   - one worker: with -p1 the program skips WAIT_FOR_END, as VOLREND does, and still ends
 *     well at MAIN_END;
 *   - -b: a G_MALLOC larger than the shared heap stops the run with a message naming the
 *     size and CDSM_HEAP_SIZE (G_MALLOC never hands NULL to a program);
 *   - a sparse 4 GiB G_MALLOC in main (OCEAN's non-contiguous version asks for 25 GiB and
 *     touches a few MB): each worker writes one word far into it, worker 0 reads them all,
 *     and every worker's resident memory stays below 256 MiB (only touched pages cost);
 *   - as a tree code (BARNES: ALOCKINIT of MAXLOCK 2048 cell locks): each worker holds two
 *     cell locks 511 apart (one id under the old default of 1024 lock ids, where the
 *     second acquire failed with "already held by this rank") while it initialises a
 *     condition variable; and, as BARNES at every time step, each worker initialises its
 *     condition variable again REINITS times (more than the ids a rank has at 4 ranks:
 *     the same variable must take the same id, not use the ids up).
 *
 * Usage: mpiexec -n P edge -pP [-b]. Prints "edge: ok" and exits 0 only if the answer is right.
 */

MAIN_ENV

#include <stdio.h>
#include <string.h>

#define SLOTS (__MAX_THREADS__ < 64 ? __MAX_THREADS__ : 64)
#define CELLS 2048
#define SPARSE_LONGS (((size_t)4 << 30) / sizeof(long))
#define RSS_LIMIT_KB (256L << 10)
#define REINITS 20000

struct Padded {
    long value;
    char pad[PAGE_SIZE - sizeof(long)]; /* one slot a page, as the suites pad against false sharing */
};

struct GlobalMemory {
    LOCKDEC(IdLock)
    BARDEC(Start)
    ALOCKDEC(CellLock, CELLS)
    CONDVARDEC(Cv[SLOTS])
    long Cell[CELLS];
    long Ids;
    long Sum;
    long *Sparse;
    struct Padded Slot[SLOTS];
} *Global;

long P = 1;

/* Resident memory of this process (kB), from /proc/self/status. */
long rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

/* The word worker i writes into the sparse block: spread over its whole length. */
long *sparse_word(long i)
{
    return Global->Sparse + (size_t)(i + 1) * (SPARSE_LONGS / (size_t)(P + 1));
}

void Work(void)
{
    long id, i;
    LOCK(Global->IdLock)
    id = Global->Ids++;
    UNLOCK(Global->IdLock)
    ALOCK(Global->CellLock, id)
    for (i = 0; i < REINITS; i++) CONDVARINIT(Global->Cv[id])
    ALOCK(Global->CellLock, id + 511)
    Global->Cell[id] += 1;
    Global->Cell[id + 511] += 2;
    AULOCK(Global->CellLock, id + 511)
    AULOCK(Global->CellLock, id)
    Global->Slot[id].value = id + 1;
    *sparse_word(id) = 10 * (id + 1);
    BARRIER(Global->Start, P)
    if (id == 0) {
        long s = 0, i;
        for (i = 0; i < P; i++)
            s += Global->Slot[i].value + Global->Cell[i] + Global->Cell[i + 511] - 3 + *sparse_word(i) - 10 * (i + 1);
        Global->Sum = s;
    }
    if (rss_kb() < 0 || rss_kb() > RSS_LIMIT_KB) {
        printf("edge: worker %ld resident memory %ld kB, above %ld kB\n", id, rss_kb(), RSS_LIMIT_KB);
        exit(1);
    }
    BARRIER(Global->Start, P)
}

int main(int argc, char **argv)
{
    int i, big = 0;
    for (i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-p", 2)) P = atol(argv[i] + 2);
        else if (!strcmp(argv[i], "-b")) big = 1;
    }
    if (P < 1 || P > SLOTS) {
        fprintf(stderr, "edge: -p between 1 and %d\n", SLOTS);
        exit(2);
    }
    if (sizeof(struct Padded) != PAGE_SIZE) {
        fprintf(stderr, "edge: PAGE_SIZE padding is %zu bytes\n", sizeof(struct Padded));
        exit(1);
    }
    MAIN_INITENV(, 1000000)
    if (big) {
        void *p = G_MALLOC((size_t)1 << 42)
        printf("edge: G_MALLOC of 4 TiB returned %p\n", p);
        exit(1);
    }
    Global = (struct GlobalMemory *)G_MALLOC(sizeof(struct GlobalMemory))
    LOCKINIT(Global->IdLock)
    ALOCKINIT(Global->CellLock, CELLS)
    memset(Global->Cell, 0, sizeof Global->Cell);
    BARINIT(Global->Start, P)
    Global->Ids = 0;
    Global->Sum = 0;
    Global->Sparse = (long *)G_MALLOC(SPARSE_LONGS * sizeof(long))
    CREATE(Work, P)
    if (P > 1) WAIT_FOR_END(P - 1) /* one worker: no WAIT_FOR_END, as VOLREND */
    if (Global->Sum != P * (P + 1) / 2) {
        printf("edge: sum %ld, want %ld\n", Global->Sum, P * (P + 1) / 2);
        exit(1);
    }
    printf("edge: ok, %ld workers, PAGE_SIZE %d, __MAX_THREADS__ %d\n", P, PAGE_SIZE, __MAX_THREADS__);
    MAIN_END
}
