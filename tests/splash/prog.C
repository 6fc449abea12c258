/*
 * A small program in SPLASH style (PARMACS macros, turned into C by m4 with
 * include/cdsm/c.m4.cdsm) that checks the fork emulation of the PARMACS layer:
 *
 *   - G_MALLOC in main before CREATE (a global struct, a shared array), pointers kept in
 *     globals; the program's globals are shared as in its pthreads build: a global set by
 *     main before CREATE is seen by every worker (Secret, and again at the next CREATE:
 *     Scribble), a global a worker writes after a BARRIER is seen by main after
 *     WAIT_FOR_END (Scribble), a global counter under a lock sums every worker's adds
 *     (GlobalCount), a global pointer to memory one worker G_MALLOCs is followed by the
 *     others (WorkerArea), and a large global array (many pages) written in chunks is
 *     read across a BARRIER (BigGlobal);
 *   - worker ids from a lock-protected counter are distinct, 0..P-1; a lock-protected
 *     counter and an array of locks (ALOCK) give exact sums;
 *   - BARRIER phases: each worker sees its neighbour's writes of the same phase;
 *   - G_MALLOC inside workers, pointers stored in shared memory and followed by others;
 *   - PAUSE hand-offs (SETPAUSE/WAITPAUSE/CLEARPAUSE) and a condition variable (workers
 *     take turns in id order);
 *   - both CREATE forms: Splash-3's CREATE(fn, P) and SPLASH-2's CREATE(fn) P-1 times.
 *
 * Usage: mpiexec -n P prog -pP   (P must equal the number of ranks). Rank 0 prints one
 * report; the exit status is 0 only if every check passed.
 */

MAIN_ENV

#include <stdio.h>
#include <string.h>

#define MAXPROCS 64
#define CHUNK 600  /* longs per worker in the shared array (more than one page) */
#define PHASES 3
#define ROUNDS 40

struct GlobalMemory {
    LOCKDEC(IdLock)
    LOCKDEC(CountLock)
    LOCKDEC(ErrLock)
    LOCKDEC(TurnLock)
    ALOCKDEC(SlotLock, MAXPROCS)
    BARDEC(Start)
    PAUSEDEC(Go)
    PAUSEDEC(Done)
    CONDVARDEC(TurnCv)
    long Id;
    long Count;
    long Arrived;
    long Token;
    long Turn;
    long NOrder;
    long Order[MAXPROCS];
    long IdSeen[MAXPROCS];
    long Seen[MAXPROCS];
    long ScribbleSeen[MAXPROCS];
    long ExtraSum[MAXPROCS];
    long Slots[MAXPROCS];
    long *Private[MAXPROCS];
    unsigned long Time[MAXPROCS];
    long Errors;
};

struct GlobalMemory *Global;  /* globals holding pointers to shared memory */
long *Shared;
long *Extra;
long NumProcs = 1;
long Secret;      /* set by main before each CREATE */
long Scribble;    /* set by main before each CREATE, then by the last worker after a BARRIER */
long Batch;
long GlobalCount; /* a global counter under CountLock */
long *WorkerArea; /* set by worker 0 to memory it G_MALLOCs */
long BigGlobal[MAXPROCS * CHUNK]; /* many pages: each worker writes its chunk */

void Work(void);

static void Fail(long me, const char *what, long got, long want)
{
    fprintf(stderr, "prog: batch %ld, worker %ld: %s: got %ld, want %ld\n", Batch, me, what, got, want);
    LOCK(Global->ErrLock);
    Global->Errors++;
    UNLOCK(Global->ErrLock);
}

static long Expected(long who, long phase, long i)
{
    return Batch * 10000000 + phase * 100000 + who * 1000 + i;
}

void Work(void)
{
    long me, next, i, ph, r, last;
    long *mine, *theirs;
    unsigned long t0, t1;

    CLOCK(t0);
    LOCK(Global->IdLock);
    me = Global->Id++;
    UNLOCK(Global->IdLock);
    if (me < 0 || me >= NumProcs) {
        Fail(me, "worker id out of range", me, NumProcs - 1);
        me = ((me % NumProcs) + NumProcs) % NumProcs;
    }
    next = (me + 1) % NumProcs;
    LOCK(Global->IdLock);
    Global->IdSeen[me]++;
    UNLOCK(Global->IdLock);

    /* Private globals: main's values, whichever rank this worker runs on. */
    Global->Seen[me] = Secret;
    Global->ScribbleSeen[me] = Scribble;

    for (r = 0; r < ROUNDS; r++) {
        LOCK(Global->CountLock);
        Global->Count += me + 1;
        GlobalCount += me + 1;
        UNLOCK(Global->CountLock);
        ALOCK(Global->SlotLock, next);
        Global->Slots[next] += 1;
        AULOCK(Global->SlotLock, next);
        LOCK(AGETL(Global->SlotLock, me));
        Global->Slots[me] += 1;
        UNLOCK(AGETL(Global->SlotLock, me));
    }
    for (i = 0; i < CHUNK; i++) Global->ExtraSum[me] += Extra[i];
    if (me == 0) {
        WorkerArea = (long *) G_MALLOC(CHUNK * sizeof(long), me);
        for (i = 0; i < CHUNK; i++) WorkerArea[i] = 5 * i + Batch;
    }

    BARRIER(Global->Start, NumProcs);
    if (!WorkerArea) {
        Fail(me, "worker 0's global pointer after BARRIER is NULL", 0, 1);
    } else {
        for (i = 0; i < CHUNK; i++)
            if (WorkerArea[i] != 5 * i + Batch) {
                Fail(me, "memory behind worker 0's global pointer", WorkerArea[i], 5 * i + Batch);
                break;
            }
    }
    if (me == NumProcs - 1) Scribble = -1 - Batch; /* every worker read it before the BARRIER */

    /* Barrier phases: write my chunk, read my neighbour's of the same phase. */
    for (ph = 0; ph < PHASES; ph++) {
        for (i = 0; i < CHUNK; i++) Shared[me * CHUNK + i] = Expected(me, ph, i);
        for (i = 0; i < CHUNK; i++) BigGlobal[me * CHUNK + i] = -Expected(me, ph, i);
        BARRIER(Global->Start, NumProcs);
        for (i = 0; i < CHUNK; i++)
            if (Shared[next * CHUNK + i] != Expected(next, ph, i)) {
                Fail(me, "neighbour's chunk after BARRIER", Shared[next * CHUNK + i], Expected(next, ph, i));
                break;
            }
        for (i = 0; i < CHUNK; i++)
            if (BigGlobal[next * CHUNK + i] != -Expected(next, ph, i)) {
                Fail(me, "neighbour's chunk of a global array after BARRIER", BigGlobal[next * CHUNK + i],
                     -Expected(next, ph, i));
                break;
            }
        BARRIER(Global->Start, NumProcs);
    }

    /* G_MALLOC inside a worker: the pointer goes through shared memory to the neighbour. */
    mine = (long *) G_MALLOC(CHUNK * sizeof(long), me);
    for (i = 0; i < CHUNK; i++) mine[i] = me * 7 + i + Batch;
    Global->Private[me] = mine;
    BARRIER(Global->Start, NumProcs);
    theirs = Global->Private[next];
    for (i = 0; i < CHUNK; i++)
        if (theirs[i] != next * 7 + i + Batch) {
            Fail(me, "neighbour's G_MALLOC'd memory", theirs[i], next * 7 + i + Batch);
            break;
        }
    BARRIER(Global->Start, NumProcs);

    /* PAUSE hand-offs: worker 0 publishes a token; the others report back, the last one
     * sets Done for worker 0. */
    if (NumProcs > 1) {
        if (me == 0) {
            Global->Token = 4242 + Batch;
            RELEASE_FENCE;
            SETPAUSE(Global->Go);
            WAITPAUSE(Global->Done);
            if (Global->Arrived != NumProcs - 1)
                Fail(me, "reports before Done", Global->Arrived, NumProcs - 1);
        } else {
            WAITPAUSE(Global->Go);
            if (Global->Token != 4242 + Batch) Fail(me, "token after WAITPAUSE", Global->Token, 4242 + Batch);
            LOCK(Global->CountLock);
            last = ++Global->Arrived == NumProcs - 1;
            UNLOCK(Global->CountLock);
            if (last) SETPAUSE(Global->Done);
        }
    }
    BARRIER(Global->Start, NumProcs);
    if (me == 0) {
        CLEARPAUSE(Global->Go);
        CLEARPAUSE(Global->Done);
    }

    /* Condition variable: workers take turns in id order. */
    LOCK(Global->TurnLock);
    while (Global->Turn != me) CONDVARWAIT(Global->TurnCv, Global->TurnLock);
    Global->Order[Global->NOrder++] = me;
    Global->Turn++;
    CONDVARBCAST(Global->TurnCv);
    UNLOCK(Global->TurnLock);
    BARRIER(Global->Start, NumProcs);

    CLOCK(t1);
    Global->Time[me] = t1 - t0;
}

static long Check(const char *how)
{
    long i, bad = 0, want;
    unsigned long slowest = 0;
    for (i = 0; i < NumProcs; i++) {
        if (Global->Time[i] > slowest) slowest = Global->Time[i];
        if (Global->IdSeen[i] != 1) {
            printf("  id %ld was taken %ld times\n", i, Global->IdSeen[i]);
            bad++;
        }
        if (Global->Seen[i] != Secret) {
            printf("  worker %ld saw Secret = %ld, main set %ld\n", i, Global->Seen[i], Secret);
            bad++;
        }
        if (Global->ScribbleSeen[i] != Batch * 3) {
            printf("  worker %ld saw Scribble = %ld, main set %ld\n", i, Global->ScribbleSeen[i], Batch * 3);
            bad++;
        }
        if (Global->Slots[i] != 2 * ROUNDS) {
            printf("  slot %ld = %ld, want %d\n", i, Global->Slots[i], 2 * ROUNDS);
            bad++;
        }
        if (Global->ExtraSum[i] != (long)CHUNK * (CHUNK - 1) / 2 + CHUNK * Batch) {
            printf("  worker %ld summed %ld from main's Extra\n", i, Global->ExtraSum[i]);
            bad++;
        }
        if (Global->Order[i] != i) {
            printf("  turn %ld went to worker %ld\n", i, Global->Order[i]);
            bad++;
        }
    }
    want = ROUNDS * NumProcs * (NumProcs + 1) / 2;
    if (Global->Count != want) {
        printf("  counter %ld, want %ld\n", Global->Count, want);
        bad++;
    }
    if (GlobalCount != want) {
        printf("  global counter %ld, want %ld\n", GlobalCount, want);
        bad++;
    }
    if (Scribble != -1 - Batch) {
        printf("  main sees Scribble = %ld after WAIT_FOR_END, the last worker set %ld\n", Scribble, -1 - Batch);
        bad++;
    }
    for (i = 0; i < NumProcs * CHUNK; i++)
        if (BigGlobal[i] != -Expected(i / CHUNK, PHASES - 1, i % CHUNK)) {
            printf("  main sees BigGlobal[%ld] = %ld, want %ld\n", i, BigGlobal[i], -Expected(i / CHUNK, PHASES - 1, i % CHUNK));
            bad++;
            break;
        }
    if (Global->NOrder != NumProcs) {
        printf("  %ld turns, want %ld\n", Global->NOrder, NumProcs);
        bad++;
    }
    bad += Global->Errors;
    printf("batch %ld (%s): %s, slowest worker %lu us\n", Batch, how, bad ? "FAILED" : "ok", slowest);
    return bad;
}

static void Reset(void)
{
    long i;
    Global->Id = 0;
    Global->Count = 0;
    Global->Arrived = 0;
    Global->Turn = 0;
    Global->NOrder = 0;
    Global->Errors = 0;
    GlobalCount = 0;
    WorkerArea = NULL;
    for (i = 0; i < MAXPROCS; i++) {
        Global->IdSeen[i] = Global->Seen[i] = Global->ScribbleSeen[i] = 0;
        Global->Slots[i] = Global->ExtraSum[i] = Global->Order[i] = 0;
        Global->Time[i] = 0;
    }
    for (i = 0; i < CHUNK; i++) Extra[i] = i + Batch;
}

int main(int argc, char *argv[])
{
    long i, bad = 0;
    int c;
    unsigned long start, end;

    while ((c = getopt(argc, argv, "p:h")) != -1) {
        switch (c) {
        case 'p': NumProcs = atol(optarg); break;
        default:
            printf("Usage: prog -pP   (run with mpiexec -n P)\n");
            exit(c == 'h' ? 0 : 1);
        }
    }
    if (NumProcs < 1 || NumProcs > MAXPROCS) {
        fprintf(stderr, "prog: P must be in 1..%d\n", MAXPROCS);
        exit(1);
    }

    MAIN_INITENV(,1000000);
    CLOCK(start);

    Global = (struct GlobalMemory *) G_MALLOC(sizeof(struct GlobalMemory));
    Shared = (long *) G_MALLOC(NumProcs * CHUNK * sizeof(long));
    Extra = (long *) G_MALLOC(CHUNK * sizeof(long));
    LOCKINIT(Global->IdLock);
    LOCKINIT(Global->CountLock);
    LOCKINIT(Global->ErrLock);
    LOCKINIT(Global->TurnLock);
    ALOCKINIT(Global->SlotLock, MAXPROCS);
    BARINIT(Global->Start, NumProcs);
    PAUSEINIT(Global->Go);
    PAUSEINIT(Global->Done);
    CONDVARINIT(Global->TurnCv);

    SPLASH3_ROI_BEGIN();
    for (Batch = 1; Batch <= 2; Batch++) {
        if (Batch == 2) Extra = (long *) G_MALLOC(CHUNK * sizeof(long)); /* main again, between batches */
        Reset();
        Secret = 1000 + 11 * Batch;
        Scribble = 3 * Batch;
        if (Batch == 1) {
            CREATE(Work, NumProcs);        /* Splash-3 */
            WAIT_FOR_END(NumProcs);
            bad += Check("Splash-3 form: one call with P");
        } else {
            for (i = 1; i < NumProcs; i++) CREATE(Work);   /* SPLASH-2 */
            Work();
            WAIT_FOR_END(NumProcs - 1);
            bad += Check("SPLASH-2 form: P-1 calls");
        }
    }
    SPLASH3_ROI_END();
    CLOCK(end);

    if (bad) {
        printf("prog: P=%ld: %ld checks FAILED\n", NumProcs, bad);
        exit(1);
    }
    printf("prog: P=%ld: all checks passed in %lu us\n", NumProcs, end - start);
    MAIN_END;
}
