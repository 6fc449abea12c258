#include <cdsm.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    int rc = cdsm_init(&argc, &argv);
    if (rc) { fprintf(stderr, "init: %s: %s\n", cdsm_strerror(rc), cdsm_last_error()); return 1; }
    int me = cdsm_rank(), n = cdsm_nranks();
    long *counter; int *arr;
    cdsm_alloc(sizeof(long), (void **)&counter);
    cdsm_alloc(4096 * 4, (void **)&arr);
    for (int i = 0; i < 1000; i++) {
        cdsm_lock_acquire(0);
        (*counter)++;
        cdsm_lock_release(0);
    }
    for (int i = me; i < 4096; i += n) arr[i] = i + 1;
    cdsm_barrier();
    long bad = 0;
    for (int i = 0; i < 4096; i++) if (arr[i] != i + 1) bad++;
    printf("rank %d counter %ld (want %d) bad %ld\n", me, *counter, 1000 * n, bad);
    cdsm_finalize();
    return 0;
}
