/* Does this machine's MPI survive a sender killed in the middle of a send?
 *
 * Three processes under Slurm direct launch (srun --mpi=pmi2, where a killed task does
 * not end the step). Rank 1 floods rank 0 with messages of 1 B to 16 KiB and is killed
 * (SIGKILL, from a thread of its own) after a delay drawn from the seed; rank 2 sends
 * rank 0 `count` messages of up to 4 KiB. Rank 0 receives from anyone and prints one line:
 *   OK     every message of rank 2 arrived;
 *   STUCK  nothing arrived for 5 s although rank 2 had more to send (the receiver is deaf).
 * A receiver that MPI itself aborted prints nothing (the runner counts that as "aborted").
 * The library's socket transport exists because of what this shows (DESIGN section 6).
 *
 * Usage: mpi_kill_probe SEED COUNT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { BIG = 16384, SMALL = 4096, STALL_S = 5 };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *killer(void *arg)
{
    usleep((useconds_t)(long)arg);
    kill(getpid(), SIGKILL);
    return NULL;
}

static int receive(int seed, long count, char *buf)
{
    long got[3] = {0, 0, 0};
    double last = now();
    while (got[2] < count) {
        int flag = 0;
        MPI_Status st;
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
        if (!flag) {
            if (now() - last > STALL_S) {
                printf("STUCK seed %d: from rank 1 %ld, from rank 2 %ld of %ld\n", seed, got[1], got[2], count);
                return 3;
            }
            continue;
        }
        MPI_Recv(buf, BIG, MPI_BYTE, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (st.MPI_SOURCE >= 1 && st.MPI_SOURCE <= 2) got[st.MPI_SOURCE]++;
        last = now();
    }
    printf("OK seed %d: from rank 1 %ld, from rank 2 %ld of %ld\n", seed, got[1], got[2], count);
    return 0;
}

int main(int argc, char **argv)
{
    int prov, r, n;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &prov);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (argc != 3 || n != 3 || prov != MPI_THREAD_MULTIPLE) {
        if (r == 0) fprintf(stderr, "usage: srun -n 3 mpi_kill_probe SEED COUNT (MPI_THREAD_MULTIPLE needed)\n");
        MPI_Finalize();
        return 2;
    }
    int seed = atoi(argv[1]);
    long count = atol(argv[2]);
    static char buf[BIG];
    memset(buf, r, sizeof buf);
    MPI_Barrier(MPI_COMM_WORLD);
    int rc = 0;
    if (r == 0) {
        rc = receive(seed, count, buf);
    } else {
        srand((unsigned)(seed * 7 + r));
        pthread_t t;
        if (r == 1) pthread_create(&t, NULL, killer, (void *)(long)(1000 + rand() % 20000));
        for (long i = 0; r == 1 || i < count; i++)
            MPI_Send(buf, 1 + rand() % (r == 1 ? BIG : SMALL), MPI_BYTE, 0, (int)(i % 1000), MPI_COMM_WORLD);
        sleep(1); /* rank 0 is still receiving */
    }
    fflush(stdout);
    _exit(rc); /* never MPI_Finalize: a process of the job is dead */
}
