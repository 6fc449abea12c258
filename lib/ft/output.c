/* Output commit: output a program sends through the library (cdsm_printf, cdsm_fwrite)
 * reaches its sink only once the interval that produced it can no longer be lost, and
 * a replay never makes it appear twice.
 *
 * Every output has a place: its stream (standard output, or a file this rank writes) and
 * its byte offset in that stream. Both are deterministic, so a replay or a restarted job
 * produces the same bytes at the same places; the offsets are registered as a private
 * region, so a restored checkpoint carries them. Outputs wait in memory until the job has
 * a restart manifest past the barrier they came before (a whole-job restart can no longer
 * redo them; online recovery never loses them), or until cdsm_finalize() ends the run
 * well. A rank learns a manifest from a barrier release and emits its output just before
 * its next arrival; a checkpoint keeps the output held when it was taken, so the
 * replacement of a process that died before that arrival holds and releases it again. A replacement restores a checkpoint at or after the last manifest its lost process
 * could have released output for (a manifest of barrier E is written only once every rank,
 * the replacement included, passed E + 1), so a replay never produces released output
 * again. Files also get the bytes with pwrite() at their offset, so that writing them again
 * would change nothing; standard output cannot be rewritten: with CDSM_OUTPUT_TAGS=1 each
 * output goes as one tagged line (rank, offset, escaped text) and a launcher prints each
 * place once (cdsmrun drops repeats, and counts them: the tests require none).
 * After emitting, a rank with a checkpoint folder writes its release mark there, so that a
 * whole-job restart holds again exactly what the stopped job had not emitted. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_file.h"
#include "inject.h"
#include "recovery.h"

#define OUT_STREAMS 32
#define OUT_PATH 240

/* The part a checkpoint must hold (a private region: fixed size, no pointers). */
static struct {
    uint64_t off[OUT_STREAMS]; /* bytes produced so far per stream (0: standard output) */
    char path[OUT_STREAMS][OUT_PATH];
    uint32_t nstreams;
} S;

typedef struct pend {
    struct pend *next;
    uint32_t stream, epoch; /* produced before barrier epoch + 1 */
    uint64_t off;
    size_t len;
    char data[];
} pend_t;
static pend_t *head, **tail = &head;
static int fds[OUT_STREAMS];
static uint32_t released_upto; /* outputs before this barrier epoch are out */

int cdsm__output_init(void)
{
    memset(&S, 0, sizeof S);
    S.nstreams = 1;
    for (int i = 0; i < OUT_STREAMS; i++) fds[i] = -1;
    released_upto = 0;
    return cdsm_protect("cdsm-output", &S, sizeof S);
}

static int emit_stdout(const pend_t *p)
{
    if (!cdsm__cfg.output_tags) return write(1, p->data, p->len) == (ssize_t)p->len ? 0 : -1;
    /* One line: a launcher's reader never sees it cut by another task's output. */
    size_t cap = 64 + 2 * p->len;
    char *line = malloc(cap);
    if (!line) return -1;
    size_t k = (size_t)snprintf(line, cap, "\036cdsm-out %d %llu ", cdsm__w.rank, (unsigned long long)p->off);
    for (size_t i = 0; i < p->len; i++) {
        char c = p->data[i];
        if (c == '\n' || c == '\\') line[k++] = '\\';
        line[k++] = c == '\n' ? 'n' : c;
    }
    line[k++] = '\n';
    int rc = write(1, line, k) == (ssize_t)k ? 0 : -1;
    free(line);
    return rc;
}

static int emit(const pend_t *p)
{
    if (p->stream == 0) return emit_stdout(p);
    if (fds[p->stream] < 0) fds[p->stream] = open(S.path[p->stream], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fds[p->stream] < 0) return -1;
    return pwrite(fds[p->stream], p->data, p->len, (off_t)p->off) == (ssize_t)p->len ? 0 : -1;
}

/* A stop request (scancel, a time limit, ^C) that arrives while a rank emits output and
 * marks it released waits until the mark is written: a whole-job restart then holds again
 * exactly what was not emitted. SIGKILL cannot wait (a restart may print it twice). */
static const int stop_sigs[] = {SIGTERM, SIGINT, SIGHUP};
#define NSTOP (sizeof stop_sigs / sizeof stop_sigs[0])
static volatile sig_atomic_t stop_caught;

static void stop_later(int sig)
{
    stop_caught = sig;
}

static void guard_stops(struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = stop_later;
    sigemptyset(&sa.sa_mask);
    stop_caught = 0;
    for (size_t i = 0; i < NSTOP; i++) sigaction(stop_sigs[i], &sa, &old[i]);
}

static void unguard_stops(const struct sigaction *old)
{
    for (size_t i = 0; i < NSTOP; i++) sigaction(stop_sigs[i], &old[i], NULL);
    if (stop_caught) raise(stop_caught); /* as the program would have had it */
}

/* Emit the outputs produced before barrier epoch upto. */
static void emit_upto(uint32_t upto)
{
    while (head && head->epoch < upto) {
        pend_t *p = head;
        if (emit(p))
            cdsm__log(CDSM_LOG_ERROR, "committed output to %s (offset %llu, %zu bytes): %s",
                      p->stream ? S.path[p->stream] : "standard output", (unsigned long long)p->off, p->len,
                      strerror(errno));
        CDSM_STAT_ADD(output_bytes, p->len);
        head = p->next;
        free(p);
    }
    if (!head) tail = &head;
}

void cdsm__output_release(uint32_t upto)
{
    if (upto <= released_upto && upto != UINT32_MAX) return;
    cdsm__inject(cdsm__w.rank, "output_release");
    released_upto = upto;
    const char *dir = cdsm_checkpoint_dir();
    int mark = dir && head && head->epoch < upto; /* a restart may follow: mark what went out */
    struct sigaction old[NSTOP];
    if (mark) guard_stops(old);
    emit_upto(upto);
    if (mark) {
        cdsm__output_mark_write(dir, cdsm__g.job_id, cdsm__w.rank, upto);
        unguard_stops(old);
    }
    if (upto == UINT32_MAX)
        for (int i = 0; i < OUT_STREAMS; i++)
            if (fds[i] >= 0) {
                close(fds[i]);
                fds[i] = -1;
            }
}

static int queue(uint32_t stream, const void *data, size_t len)
{
    pend_t *p = malloc(sizeof *p + len + 1);
    if (!p) return cdsm__error(CDSM_ERR_NOMEM, "committed output of %zu bytes", len);
    p->next = NULL;
    p->stream = stream;
    p->epoch = cdsm__bar.epoch;
    p->off = S.off[stream];
    p->len = len;
    memcpy(p->data, data, len);
    S.off[stream] += len;
    *tail = p;
    tail = &p->next;
    CDSM_STAT_ADD(output_held, len);
    return CDSM_OK;
}

int cdsm_printf(const char *fmt, ...)
{
    if (!cdsm__g.initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_printf before cdsm_init");
    if (!fmt) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_printf(NULL)");
    va_list ap;
    va_start(ap, fmt);
    char small[512], *buf = small;
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_printf: bad format \"%.40s\"", fmt);
    if ((size_t)n >= sizeof small) {
        if (!(buf = malloc((size_t)n + 1))) return cdsm__error(CDSM_ERR_NOMEM, "cdsm_printf of %d bytes", n);
        va_start(ap, fmt);
        vsnprintf(buf, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    int rc = queue(0, buf, (size_t)n);
    if (buf != small) free(buf);
    return rc;
}

int cdsm_fwrite(const char *path, const void *data, size_t len)
{
    if (!cdsm__g.initialized) return cdsm__error(CDSM_ERR_STATE, "cdsm_fwrite before cdsm_init");
    if (!path || !*path || (!data && len)) return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_fwrite: NULL or empty argument");
    if (strlen(path) >= OUT_PATH)
        return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_fwrite(\"%.40s...\"): a path is at most %d bytes", path,
                           OUT_PATH - 1);
    uint32_t s = 1;
    while (s < S.nstreams && strcmp(S.path[s], path)) s++;
    if (s == S.nstreams) {
        if (s == OUT_STREAMS)
            return cdsm__error(CDSM_ERR_INVALID_ARG, "cdsm_fwrite(\"%s\"): at most %d files per rank", path,
                               OUT_STREAMS - 1);
        /* A file this rank writes from its start: what it held before is replaced. */
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) return cdsm__error(CDSM_ERR_IO, "cdsm_fwrite(\"%s\"): %s", path, strerror(errno));
        close(fd);
        snprintf(S.path[s], OUT_PATH, "%s", path);
        S.nstreams++;
    }
    return len ? queue(s, data, len) : CDSM_OK;
}

static void free_list(pend_t *p)
{
    for (pend_t *nx; p; p = nx) {
        nx = p->next;
        free(p);
    }
}

/* A held output in a checkpoint: its place, the barrier it came before, its bytes. */
typedef struct held_rec {
    uint32_t stream, epoch;
    uint64_t off, len;
} held_rec_t;
CDSM__STATIC_ASSERT(sizeof(held_rec_t) == 24, "held output record is an on-disk format");

size_t cdsm__output_held_bytes(void)
{
    size_t n = 0;
    for (const pend_t *p = head; p; p = p->next) n += sizeof(held_rec_t) + p->len;
    return n;
}

void cdsm__output_held_put(uint8_t *dst)
{
    for (const pend_t *p = head; p; p = p->next) {
        held_rec_t h = {p->stream, p->epoch, p->off, p->len};
        memcpy(dst, &h, sizeof h);
        memcpy(dst + sizeof h, p->data, p->len);
        dst += sizeof h + p->len;
    }
}

int cdsm__output_held_take(const uint8_t *p, size_t n, uint32_t from, const char *why)
{
    pend_t *list = NULL, **end = &list;
    size_t pos = 0, bytes = 0;
    while (pos < n) {
        held_rec_t h;
        if (n - pos < sizeof h) goto bad;
        memcpy(&h, p + pos, sizeof h);
        pos += sizeof h;
        if (h.stream >= S.nstreams || h.len > n - pos) goto bad;
        pend_t *e = malloc(sizeof *e + h.len + 1);
        if (!e) {
            free_list(list);
            return cdsm__error(CDSM_ERR_NOMEM, "held output of %llu bytes", (unsigned long long)h.len);
        }
        *e = (pend_t){NULL, h.stream, h.epoch, h.off, (size_t)h.len};
        memcpy(e->data, p + pos, h.len);
        pos += h.len;
        if (h.epoch < from) { /* emitted before the stop */
            free(e);
            continue;
        }
        bytes += h.len;
        *end = e;
        end = &e->next;
    }
    if (!list) return CDSM_OK;
    /* Older than anything produced since the restore: they go first. */
    *end = head;
    head = list;
    if (!*end) tail = end;
    cdsm__log(CDSM_LOG_WARN, "rank %d: holds again %zu bytes of committed output %s", cdsm__w.rank, bytes, why);
    return CDSM_OK;
bad:
    free_list(list);
    return cdsm__error(CDSM_ERR_CORRUPT, "checkpoint region %s: malformed at byte %zu of %zu", CDSM_OUTPUT_HELD, pos, n);
}

void cdsm__output_fini(void)
{
    free_list(head);
    head = NULL;
    tail = &head;
    for (int i = 0; i < OUT_STREAMS; i++)
        if (fds[i] >= 0) close(fds[i]);
}
