/*
 * Strict decimal numbers from the command line and option values: digits
 * only (no sign, no blanks, no base prefix), the whole string, no overflow,
 * within [min, max]. "007" is 7. Header-only, as mono.h: the CLI, the
 * daemon and the benchmark tools each include it without linking the engine.
 */
#ifndef GS_ENGINE_NUMPARSE_H
#define GS_ENGINE_NUMPARSE_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* 0 and *out set, or -1 with *out untouched (and errno clobbered). */
static inline int gs_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

#endif /* GS_ENGINE_NUMPARSE_H */
