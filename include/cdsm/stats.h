/**
 * @file cdsm/stats.h
 * @brief Per-rank counters of the DSM protocol (generated from one table).
 */
#ifndef CDSM_STATS_H
#define CDSM_STATS_H

#include <stdint.h>

/** X(field, help): every counter, in print order. */
#define CDSM_STATS_TABLE(X)                                                     \
    X(read_faults, "access misses and read faults on protected pages")         \
    X(write_faults, "write faults (first write to a page in an interval)")     \
    X(twins, "twins created")                                                  \
    X(fault_around, "pages made writable ahead of a sequential write fault")   \
    X(diffs_created, "diffs encoded from page and twin")                       \
    X(diff_bytes_created, "bytes of encoded diffs")                            \
    X(diffs_applied, "diffs applied to local pages")                           \
    X(diffs_served, "diffs sent to other ranks")                               \
    X(pages_fetched, "whole pages fetched")                                    \
    X(prefetched, "pages validated ahead of use (readahead, directory, refetch)") \
    X(pages_served, "whole pages sent to other ranks")                         \
    X(invalidations, "pages invalidated by write notices")                     \
    X(pages_owned, "pages owned by first touch (no tracking while owned)")     \
    X(pages_unowned, "owned pages another rank read: tracked from then on")   \
    X(intervals, "intervals closed by this rank with writes")                  \
    X(notices_received, "write notices received from other ranks")             \
    X(lock_acquires, "lock acquires")                                          \
    X(lock_acquires_local, "lock acquires served by a cached token")           \
    X(barriers, "barriers")                                                    \
    X(gc_runs, "garbage collections of diffs and notices")                     \
    X(msgs_sent, "protocol messages sent")                                     \
    X(msgs_recv, "protocol messages received")                                 \
    X(bytes_sent, "protocol bytes sent (headers included)")                    \
    X(bytes_recv, "protocol bytes received (headers included)")                \
    X(doorbells, "doorbell wake-ups of the service thread")                    \
    X(log_bytes, "bytes of diffs, twins and interval records held now")        \
    X(log_bytes_peak, "peak of log_bytes")                                     \
    X(archive_bytes, "own diffs kept after GC for a replay from the start (no checkpoints)") \
    X(det_logged, "determinants logged (grants sent and received, barriers)")  \
    X(det_bytes, "bytes of determinants held now")                             \
    X(det_bytes_peak, "peak of det_bytes")                                     \
    X(piggyback_bytes, "bytes of logging data piggybacked on protocol messages") \
    X(ckpts, "checkpoints committed")                                          \
    X(ckpts_full, "full checkpoints committed")                                \
    X(ckpt_pages, "pages written to checkpoints")                              \
    X(ckpt_bytes, "bytes of committed checkpoint files")                       \
    X(ckpt_stall_us, "microseconds the program waited for checkpoints (copy)") \
    X(ckpt_write_us, "microseconds the writer thread spent writing files")     \
    X(ckpt_files_removed, "checkpoint files removed by garbage collection")    \
    X(manifests, "restart manifests committed (rank 0)")                       \
    X(output_held, "bytes of committed output produced (cdsm_printf, cdsm_fwrite)") \
    X(output_bytes, "bytes of committed output released to their sinks")       \
    X(ckpt_restores, "checkpoints restored by cdsm_resume (as a replacement)")  \
    X(ckpt_restore_us, "microseconds to read and restore them")                \
    X(ranks_lost, "lost ranks seen by this rank that a spare took over")          \
    X(heartbeat_losses, "processes this one declared lost for missed heartbeats") \
    X(fenced_msgs_dropped, "messages from processes declared lost that arrived later, dropped") \
    X(replays, "replays of a lost rank this process made (as its replacement)") \
    X(replay_us, "microseconds of replay until the rank was live again")       \
    X(replayed_barriers, "barriers replayed from the log")                    \
    X(doorbells_skipped, "messages sent with no doorbell: the receiver was receiving itself") \
    X(conv_base_bytes, "bytes of base copies a home keeps for replays of its readers (spares)") \
    X(lazy_releases, "lock releases that closed no interval (lazy release: nobody was waiting)") \
    X(lazy_closes, "intervals a lazy release left open, closed when their writes had to leave") \
    X(grant_diffs_sent, "own diffs sent with lock grants")                     \
    X(grant_diffs_applied, "diffs applied from lock grants (pages made valid with no miss)") \
    X(board_published, "own diffs published in shared memory for node-mates")  \
    X(board_taken, "diffs copied from a node-mate's shared memory (no message)") \
    X(board_missed, "diffs looked for in a node-mate's shared memory and not there (asked for)") \
    X(bells_late, "requests to node-mates sent with a late doorbell (rung only if not taken soon)") \
    X(bells_late_rung, "late doorbells rung: the node-mate had not taken the request in time") \
    X(write_faults_wp, "write faults caught by a userfaultfd write-protect bit (CDSM_WRITE_DETECT=uffd)") \
    X(lock_claims, "first acquires of a node-mate's never-used lock, taken in shared memory (no message)") \
    X(archive_disk_bytes, "bytes of the diff archive written to its file on disk (past CDSM_ARCHIVE_MEM)") \
    X(archive_disk_reads, "archived intervals read back from that file for a replacement") \
    X(fault_around_unused, "pages made writable ahead of a write fault that the interval did not write") \
    X(lock_takes, "acquires that took a node-mate's token released before the last barrier, in shared memory (no message)") \
    X(lock_takes_published, "acquires that took a node-mate's published token with the records from its board (no message)") \
    X(bar_forwarded, "barrier releases this rank passed on to its children in the barrier tree (CDSM_BARRIER_FANOUT)") \
    X(grant_patched, "hot pages a grant's diffs brought up to date in place, twin included, so that they stayed writable") \
    X(live_closed, "pages diffed from a copy and left writable by a close the service thread made while the program ran") \
    X(refetch_patched, "hot pages a barrier's refetch brought up to date in place, twin included, so that they stayed writable") \
    X(board_rma_taken, "diffs read one-sided (MPI RMA) from the board of a process on another host (CDSM_RMA)") \
    X(rma_gets, "one-sided reads (MPI RMA gets) of other processes' boards") \
    X(rma_atomics, "atomic operations on lock words through MPI RMA (CDSM_RMA: every word operation then)") \
    X(rma_shunned, "times a process's board was left for messages for a while: its one-sided reads were slow") \
    X(rma_nudges, "nudges rung because a one-sided read waited for its target to enter MPI (a network without RDMA)")

/** A snapshot of one rank's counters (or their sum over ranks). */
typedef struct cdsm_stats {
#define CDSM_X_FIELD(field, help) uint64_t field;
    CDSM_STATS_TABLE(CDSM_X_FIELD)
#undef CDSM_X_FIELD
} cdsm_stats_t;

#endif /* CDSM_STATS_H */
