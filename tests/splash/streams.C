/*
 * First misses of a SPLASH program's G_MALLOC'd data come in windows, not a page at a time
 * (turned into C by m4 with include/cdsm/c.m4.cdsm):
 *
 *   - main G_MALLOCs a matrix A of ROWS rows of one page each and fills it; every worker
 *     then reads it all: its pages' directory is rank 0, which owns them, so a worker's
 *     stream of first misses asks once per readahead window;
 *   - as it reads its own rows of A, each worker first writes the same rows of a second
 *     matrix T, never touched in main: a second stream of first misses, interleaved miss
 *     for miss with the first (as in FFT's transpose);
 *   - main allocates a small matrix S (and T) after filling A and a page B after it, so
 *     its stream of first writes ran on to where S lies; each worker writes its rows of S, another checks them: pages past an allocation must not be claimed ahead (WATER-SPATIAL's answer was
 *     NaN when they were).
 *
 * Each worker checks its sum and the rows of T another worker wrote, and that it missed at
 * most MAX_MISSES times (on ranks other than 0, which ran main: with the pages' directory
 * spread by page number, or one stream of misses followed at a time, nearly every page
 * cost a miss of its own).
 *
 * Usage: mpiexec -n P streams -pP. Prints "streams: ok" and exits 0 only if the answer is
 * right.
 */

MAIN_ENV

#include <stdio.h>
#include <string.h>
#include <cdsm.h>

#define ROWS 512
#define COLS (PAGE_SIZE / sizeof(long))
#define MAX_MISSES 96
#define SROWS 16 /* a small matrix allocated after A is filled */

#define MAXPROCS 64

struct GlobalMemory {
    BARDEC(Start)
    long Bad[MAXPROCS];
} *Global;

long P = 1;
long (*A)[COLS]; /* main's: filled there */
long (*T)[COLS]; /* the workers': first written by them */
long (*S)[COLS]; /* the same, small */

long Shifted(long r, long c)
{
    return A[r][(c + r) % (long)COLS];
}

long Value(long r, long c)
{
    return r * 7919 + c;
}

/* Rows of A in order, with T's rows [first, last) written as the same rows of A come;
 * the misses it took. */
long Walk(long first, long last, long *sum)
{
    cdsm_stats_t before, after;
    cdsm_stats_get(&before);
    for (long r = 0; r < ROWS; r++) {
        for (long c = 0; c < (long)COLS; c++) *sum += A[r][c];
        if (r >= first && r < last)
            for (long c = 0; c < (long)COLS; c++) T[r][c] = Shifted(r, c);
    }
    cdsm_stats_get(&after);
    return (long)(after.read_faults - before.read_faults);
}

void Work(void)
{
    long me = cdsm_rank(), first = ROWS * me / P, last = ROWS * (me + 1) / P;
    long sum = 0, want = 0, bad = 0;
    BARRIER(Global->Start, P);
    long misses = Walk(first, last, &sum);
    for (long r = 0; r < ROWS; r++)
        for (long c = 0; c < (long)COLS; c++) want += Value(r, c);
    if (sum != want) {
        printf("streams: worker %ld summed %ld, want %ld\n", me, sum, want);
        bad++;
    }
    if (me != 0 && misses > MAX_MISSES) {
        printf("streams: worker %ld missed %ld times on %d + %ld pages (at most %d)\n", me, misses, ROWS,
               last - first, MAX_MISSES);
        bad++;
    }
    for (long r = SROWS * me / P; r < SROWS * (me + 1) / P; r++)
        for (long c = 0; c < (long)COLS; c++) S[r][c] = Value(r, c) + 1;
    BARRIER(Global->Start, P);
    long other = (me + 1) % P, ofirst = ROWS * other / P, olast = ROWS * (other + 1) / P;
    for (long r = SROWS * other / P; r < SROWS * (other + 1) / P; r++)
        for (long c = 0; c < (long)COLS; c++)
            if (S[r][c] != Value(r, c) + 1) bad++;
    for (long r = ofirst; r < olast; r++)
        for (long c = 0; c < (long)COLS; c++)
            if (T[r][c] != Shifted(r, c)) bad++;
    printf("streams: worker %ld missed %ld times, %ld wrong\n", me, misses, bad);
    Global->Bad[me] = bad;
}

int main(int argc, char *argv[])
{
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "-p", 2)) P = atol(argv[i] + 2);
    if (P < 1 || P > MAXPROCS) {
        fprintf(stderr, "streams: P must be in 1..%d\n", MAXPROCS);
        return 1;
    }
    MAIN_INITENV(,)
    Global = (struct GlobalMemory *) G_MALLOC(sizeof(struct GlobalMemory));
    A = (long (*)[COLS]) G_MALLOC(ROWS * sizeof *A);
    long *B = (long *) G_MALLOC(PAGE_SIZE); /* one page: its directory is rank 0 */
    BARINIT(Global->Start, P);
    memset(Global->Bad, 0, sizeof Global->Bad);
    for (long r = 0; r < ROWS; r++)
        for (long c = 0; c < (long)COLS; c++) A[r][c] = Value(r, c);
    for (long c = 0; c < (long)COLS; c++) B[c] = c;
    /* S and T only now: main's stream of first writes to A and B ran on to where S lies
     * (B's directory is main's rank, as the pages past it were by page number). No page
     * past an allocation may be claimed ahead: S is placed in blocks afterwards, and a page
     * main claimed would then have two owners (main and the worker whose block it is in). */
    S = (long (*)[COLS]) G_MALLOC(SROWS * sizeof *S);
    T = (long (*)[COLS]) G_MALLOC(ROWS * sizeof *T);
    CREATE(Work, P);
    WAIT_FOR_END(P);
    long bad = 0;
    for (long i = 0; i < P; i++) bad += Global->Bad[i];
    if (bad) {
        printf("streams: %ld checks failed\n", bad);
        return 1;
    }
    printf("streams: ok, %ld workers\n", P);
    MAIN_END;
    return 0;
}
