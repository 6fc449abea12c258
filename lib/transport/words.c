/* Shared words (MPI-doorbell provider, node-mates, no spares): each process has two 32-bit
 * words per lock id in a memfd its node-mates map read-write, passed over the doorbell
 * sockets at start-up. The protocol keeps there, for each lock, the tail of its queue
 * (the manager's word: node-mates join the queue by an atomic exchange, without asking
 * the manager) and whether the token cached here may be taken (each process's word: a
 * lock released before the taker's last barrier, or never used, moves with no message
 * and no wake-up; protocol/lockwords.c). Not populated: a page of words costs
 * memory once a lock on it is used. With spares a replacement rebuilds the lock queues
 * from what the survivors report, which a token moved in shared memory would bypass:
 * off. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bell.h"

enum { WORDS_BYTE = 5 };

static struct words {
    uint32_t *self;   /* ours; node-mates map it too */
    uint32_t **peer;  /* per process: its words mapped here, or NULL */
    size_t bytes;
} sw;

int cdsm__words_setup(void)
{
    if (cdsm__cfg.spares || cdsm__bell.stream || !cdsm__shmfd_any_mate() || cdsm__heapfd_passed()) return CDSM_OK;
    sw.bytes = ((size_t)cdsm__cfg.locks * CDSM_WORDS_PER_LOCK * sizeof(uint32_t) + 4095) & ~(size_t)4095;
    cdsm__shm_seg_t seg = {"cdsm-words", "lock words", sw.bytes, 0, PROT_READ | PROT_WRITE, WORDS_BYTE, NULL};
    sw.self = cdsm__shmfd_share(&seg, (void ***)&sw.peer);
    if (!sw.self) cdsm__log(CDSM_LOG_INFO, "no shared lock words (%s): every acquire of a token held elsewhere asks by message", strerror(errno));
    return CDSM_OK;
}

void cdsm__words_fini(void)
{
    cdsm__shmfd_unmap(sw.self, (void **)sw.peer, sw.bytes);
    memset(&sw, 0, sizeof sw);
}

uint32_t *cdsm__words_of(int rank)
{
    if (!sw.self || rank < 0 || rank >= cdsm__w.n) return NULL;
    if (rank == cdsm__w.rank) return sw.self;
    return sw.peer[cdsm__w.phys[rank]];
}
