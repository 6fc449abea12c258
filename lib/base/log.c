/* Logging: one line per event, prefixed with the rank; errors recorded once. */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdsm.h"

int cdsm__log_level = CDSM_LOG_WARN;

static char last_error[512];

static const char *level_name[] = {"error", "warning", "info", "debug"};

static void vlog(int level, const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "cdsm[%d] %s: ", cdsm_rank(), level_name[level]);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    /* One fprintf per line so lines from different ranks do not interleave mid-line. */
    fprintf(stderr, "%s\n", line);
}

void cdsm__log(int level, const char *fmt, ...)
{
    if (level > cdsm__log_level) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

int cdsm__error(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    cdsm__log(CDSM_LOG_ERROR, "%s (%s)", last_error, cdsm_status_name(status));
    return status;
}

const char *cdsm_last_error(void)
{
    return last_error;
}

void cdsm__fatal(const char *file, int line, const char *what)
{
    fprintf(stderr, "cdsm[%d] fatal: invariant '%s' violated at %s:%d\n", cdsm_rank(), what,
            file, line);
    abort();
}
