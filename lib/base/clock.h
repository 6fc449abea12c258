/* Clocks (internal, every floor): monotonic nanoseconds for timeouts, wall-clock seconds
 * for log lines a script compares with the moment it killed a process, and deadlines for
 * pthread_cond_timedwait. */
#ifndef CDSM_CLOCK_H
#define CDSM_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t cdsm__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline double cdsm__wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The CLOCK_REALTIME instant ms milliseconds from now: a pthread_cond_timedwait deadline. */
static inline struct timespec cdsm__deadline_ms(uint64_t ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += (time_t)(ms / 1000);
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    return dl;
}

/* A CLOCK_MONOTONIC instant (from cdsm__mono_ns) as a timespec: a pthread_cond_clockwait
 * deadline on the same clock as the timeout it ends. */
static inline struct timespec cdsm__mono_ts(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    return ts;
}

#endif
