/* par.h: one application source, three builds.
 *
 *   PAR_SEQ       one process, one worker: the sequential baseline
 *   PAR_PTHREADS  one process, P threads sharing memory: the shared-memory baseline
 *   PAR_CDSM      P MPI ranks on the cdsm DSM
 *
 * The model is SPMD: main() calls par_init(), parses its options, then par_run(worker)
 * runs `worker` on every participant (each sees its own par_rank()); shared data comes
 * from par_alloc() (collective: every participant calls it with the same sizes in the same
 * order and gets the same address); synchronisation is par_barrier() and par_lock()/
 * par_unlock(). Programs must be data-race free: under cdsm, writes become visible to
 * another participant only through a barrier or a lock it acquires after the writer
 * released it (lazy release consistency). Output is printed by par_rank() == 0.
 *
 * The number of participants: the MPI rank count (PAR_CDSM), the -p option parsed by
 * par_init() (PAR_PTHREADS, default 2), or 1 (PAR_SEQ).
 */
#ifndef APPS_PAR_H
#define APPS_PAR_H

#include <stddef.h>
#include <stdio.h>

#if !defined(PAR_SEQ) && !defined(PAR_PTHREADS) && !defined(PAR_CDSM)
#error "build with -DPAR_SEQ, -DPAR_PTHREADS or -DPAR_CDSM"
#endif

/* Number of lock ids par_lock() accepts. */
#define PAR_NLOCKS 1024

/* Exit statuses of every app (scripts tell the outcomes apart by them): the answer verified,
 * the answer wrong, a bad command line, a runtime failure (par_fail()). */
#define PAR_EXIT_VERIFIED 0
#define PAR_EXIT_WRONG 1
#define PAR_EXIT_USAGE 2
#define PAR_EXIT_FAILURE 3

/* Start the runtime (cdsm_init for PAR_CDSM; for PAR_PTHREADS consumes "-p N" from argv).
 * Returns 0, or non-zero after printing why. Call once, before option parsing. */
int par_init(int *argc, char ***argv);

/* Run worker() on every participant and return when all have finished. Call once. */
void par_run(void (*worker)(void));

/* This participant's id (0..par_nprocs()-1) and the number of participants. */
int par_rank(void);
int par_nprocs(void);

/* Collective allocation of shared memory, zero-filled; exits the job on failure. */
void *par_alloc(size_t size);

/* Synchronisation. Lock ids are 0..PAR_NLOCKS-1. */
void par_barrier(void);
void par_lock(int id);
void par_unlock(int id);

/* Resuming from checkpoints (cdsm build; the others have nothing to resume): register the
 * private state that says where the program goes on after a resume point, then call
 * par_resume() once, after the allocations and before any other synchronisation: it
 * returns 1 in a replacement restored from its rank's checkpoint (skip the initialisation
 * and go on from the registered state), else 0. par_resume_point() is a barrier from
 * which the program can be resumed (update the registered state before calling it). */
void par_protect(const char *name, void *p, size_t size);
int par_resume(void);
void par_resume_point(void);

/* Committed output (cdsm build: cdsm_printf / cdsm_fwrite, released once the work that
 * produced it can no longer be redone, never twice; the others write at once): a line to
 * standard output, and bytes appended to this participant's own file. */
void par_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void par_out_file(const char *path, const void *data, size_t len);

/* Wall-clock seconds. */
double par_time(void);

/* FNV-1a (64 bit) over a byte range, chainable: the apps' answer hashes, identical
 * whenever the bytes are. Start from PAR_FNV_INIT. */
#define PAR_FNV_INIT 0xcbf29ce484222325ull
unsigned long long par_fnv1a(unsigned long long h, const void *p, size_t len);

/* This process's memory now, one line without newline: resident set, and (cdsm build) the
 * protocol's own logs held (diffs, twins, records; determinants; archived own diffs). For
 * long runs that must show their memory bounded. */
void par_mem_line(char *buf, size_t n);

/* The build's name ("seq", "pthreads", "cdsm"). */
const char *par_build(void);

/* Print the DSM counters summed over ranks (collective under PAR_CDSM; no-op elsewhere).
 * Every participant must call it; rank 0 prints. */
void par_print_stats(FILE *f);

/* Share rank 0's exit status (collective, with a barrier's effect): every participant passes
 * one, every one gets rank 0's back, so that all processes of the job exit alike. It is also
 * kept as the process's exit status, for main() after par_run(): see par_exit_status(). */
int par_share_status(int status);

/* The status the last par_share_status() returned (0 before any): one value per process,
 * written once even where the participants are threads sharing it. */
int par_exit_status(void);

/* ---- command line: main() parses argv with getopt() on every participant (they all see the
 * same argv and reach the same verdict); only rank 0 prints, to stderr, "<app>: <why>".
 * Each helper returns 0, or -1 once the message is printed: the command line is bad. ---- */

/* Strict number parsing (the whole string, no overflow; doubles finite). 0 or -1, silent. */
int par_parse_long(const char *s, long *out);
int par_parse_double(const char *s, double *out);

/* The value `arg` of option -`opt` into *out if it is an integer (a number) in [lo, hi];
 * otherwise "<app>: -<opt> <arg>: <what> must be an integer in [lo, hi]" (">= lo" when hi is
 * LONG_MAX; "a number" for par_opt_double). Conditions of other shapes: par_parse_* and
 * par_opt_error(). */
int par_opt_long(const char *app, int opt, const char *arg, long lo, long hi, const char *what, long *out);
int par_opt_double(const char *app, int opt, const char *arg, double lo, double hi, const char *what,
                   double *out);

/* Any other complaint about the command line: "<app>: " and the formatted message. */
int par_opt_error(const char *app, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* getopt()'s error results, with an optstring that starts with ':': ':' (the option optopt
 * lacks its value) and '?' (optopt is unknown). */
int par_opt_other(const char *app, int c);

/* Arguments left after the options (argv[optind] on): the apps take none. */
int par_opt_rest(const char *app, int argc, char **argv);

/* End of option parsing when the command line is bad or asked for help (-h): rank 0 prints
 * usage(f, prog) to stderr or stdout; returns what main() must return (PAR_EXIT_USAGE or 0,
 * through par_finish()). */
int par_usage(void (*usage)(FILE *f, const char *prog), const char *prog, int bad);

/* ---- the report: the lines scripts parse (tests/app_check.sh, bench/apps_table.py). Printed
 * on rank 0 only (a no-op elsewhere), in this order, an app's own lines between them:
 *   par_report_head()    app: <app>, build: <par_build()>, procs: <par_nprocs()>
 *   par_report_time()    time: <seconds> s
 *   par_report_answer()  answer: <formatted>, the same in every build and at any count
 *   par_report_result()  result: VERIFIED, or result: WRONG (<formatted why>); flushes stdout */
void par_report_head(const char *app);
void par_report_time(double seconds);
void par_report_answer(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void par_report_result(int verified, const char *why, ...) __attribute__((format(printf, 2, 3)));

/* Finish (cdsm_finalize). Returns the status to exit with: `status` if the job ended
 * cleanly, non-zero otherwise. */
int par_finish(int status);

/* Abort the whole job with a message (all ranks). */
void par_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
