/* Logging, error recording and invariant checks (internal). */
#ifndef CDSM_LOG_H
#define CDSM_LOG_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { CDSM_LOG_ERROR = 0, CDSM_LOG_WARN = 1, CDSM_LOG_INFO = 2, CDSM_LOG_DEBUG = 3 };

extern int cdsm__log_level;

/* Print one line "cdsm[rank] level: message" to stderr if level is enabled. */
void cdsm__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Decide an error: record it for cdsm_last_error(), log it once, return status. */
int cdsm__error(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fatal invariant violation: documented fatal path (prints and aborts). */
void cdsm__fatal(const char *file, int line, const char *what) __attribute__((noreturn));

#define cdsm_log_debug(...)                                                                  \
    do {                                                                                     \
        if (cdsm__log_level >= CDSM_LOG_DEBUG) cdsm__log(CDSM_LOG_DEBUG, __VA_ARGS__);       \
    } while (0)

/* Always-on check for conditions whose violation would corrupt shared memory. */
#define cdsm_check(c)                                                                        \
    do {                                                                                     \
        if (__builtin_expect(!(c), 0)) cdsm__fatal(__FILE__, __LINE__, #c);                  \
    } while (0)

/* Debug-build invariant (compiled out with NDEBUG). */
#ifdef NDEBUG
#define cdsm_assert(c) ((void)0)
#else
#define cdsm_assert(c) cdsm_check(c)
#endif

#ifdef __cplusplus
}
#endif
#endif
