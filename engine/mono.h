/*
 * Monotonic time and sleeping for the tools, tests and node processes
 * (CLOCK_MONOTONIC; a sleep resumes after EINTR). No state machine reads a
 * clock: replicated state uses the batch time of its Raft entry.
 */
#ifndef GS_ENGINE_MONO_H
#define GS_ENGINE_MONO_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t gs_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline double gs_mono_ms(void)
{
    return (double)gs_mono_ns() / 1e6;
}

static inline double gs_mono_s(void)
{
    return (double)gs_mono_ns() / 1e9;
}

static inline void gs_sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

#endif /* GS_ENGINE_MONO_H */
