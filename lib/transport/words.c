/* Shared words (MPI-doorbell provider, no spares): each process has two 32-bit words per
 * lock id. The protocol keeps there, for each lock, the tail of its queue (the manager's
 * word: a process joins the queue by an atomic exchange, without asking the manager) and
 * whether the token cached here may be taken (each process's word: a lock released before
 * the taker's last barrier, or never used, moves with no message and no wake-up;
 * protocol/lockwords.c).
 *
 * Between node-mates the words are a memfd each maps read-write (passed over the doorbell
 * sockets at start-up; not populated: a page of words costs memory once a lock on it is
 * used), and the operations are the CPU's atomics. With one-sided access (CDSM_RMA) the
 * words are also in an MPI window that processes on other hosts reach with MPI atomics;
 * then every operation on any word goes through MPI, ours and node-mates' too: MPI makes
 * its atomics atomic only with each other, not with a CPU's on the same word (a NIC's
 * atomics are not coherent with the CPU's on most hardware). With spares a replacement
 * rebuilds the lock queues from what the survivors report, which a token moved in shared
 * memory would bypass: off. */
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
    int rma;          /* every operation goes through MPI (the window exists) */
} sw;

int cdsm__words_setup(void)
{
    if (cdsm__cfg.spares || cdsm__bell.stream || cdsm__heapfd_passed()) return CDSM_OK;
    if (!cdsm__shmfd_any_mate() && !cdsm__rma_wanted()) return CDSM_OK;
    sw.bytes = ((size_t)cdsm__cfg.locks * CDSM_WORDS_PER_LOCK * sizeof(uint32_t) + 4095) & ~(size_t)4095;
    cdsm__shm_seg_t seg = {"cdsm-words", "lock words", sw.bytes, 0, PROT_READ | PROT_WRITE, WORDS_BYTE, NULL};
    sw.self = cdsm__shmfd_share(&seg, (void ***)&sw.peer);
    if (!sw.self)
        cdsm__log(CDSM_LOG_INFO, "no shared lock words (%s): every acquire of a token held elsewhere asks by message",
                  strerror(errno));
    return CDSM_OK;
}

int cdsm__words_ready(void)
{
    return sw.self && cdsm__rma_wanted();
}

int cdsm__words_reach_setup(int rma)
{
    if (rma) {
        int rc = cdsm__rma_expose(CDSM_RMA_WORDS, sw.self, sw.bytes);
        if (rc) return rc;
        sw.rma = 1;
        return CDSM_OK;
    }
    /* Made for one-sided access that is not made (no node-mate: nobody else can map
     * them). With node-mates they stay, even where none could be mapped here: a
     * node-mate that mapped ours reads our own word. */
    if (sw.self && !cdsm__shmfd_any_mate()) cdsm__words_fini();
    return CDSM_OK;
}

void cdsm__words_fini(void)
{
    cdsm__shmfd_unmap(sw.self, (void **)sw.peer, sw.bytes);
    memset(&sw, 0, sizeof sw);
}

/* Process w's words mapped here, or NULL. */
static uint32_t *mapped(int w)
{
    return w == cdsm__w.wrank ? sw.self : sw.peer ? sw.peer[w] : NULL;
}

int cdsm__words_reach(int rank)
{
    if (!sw.self || rank < 0 || rank >= cdsm__w.n) return 0;
    return sw.rma || mapped(cdsm__w.phys[rank]) != NULL; /* (one-sided: every process, through the window) */
}

uint32_t cdsm__word_load(int rank, size_t i)
{
    int w = cdsm__w.phys[rank];
    if (sw.rma) return cdsm__rma_word(w, i * 4, CDSM_RMA_LOAD, 0, 0);
    return __atomic_load_n(&mapped(w)[i], __ATOMIC_ACQUIRE);
}

void cdsm__word_store(int rank, size_t i, uint32_t v)
{
    int w = cdsm__w.phys[rank];
    if (sw.rma) cdsm__rma_word(w, i * 4, CDSM_RMA_SWAP, v, 0);
    else __atomic_store_n(&mapped(w)[i], v, __ATOMIC_RELEASE);
}

uint32_t cdsm__word_swap(int rank, size_t i, uint32_t v)
{
    int w = cdsm__w.phys[rank];
    if (sw.rma) return cdsm__rma_word(w, i * 4, CDSM_RMA_SWAP, v, 0);
    return __atomic_exchange_n(&mapped(w)[i], v, __ATOMIC_ACQ_REL);
}

int cdsm__word_cas(int rank, size_t i, uint32_t *expect, uint32_t desired)
{
    int w = cdsm__w.phys[rank];
    if (!sw.rma)
        return __atomic_compare_exchange_n(&mapped(w)[i], expect, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    uint32_t was = cdsm__rma_word(w, i * 4, CDSM_RMA_CAS, *expect, desired);
    if (was == *expect) return 1;
    *expect = was;
    return 0;
}
