/*
 * Logging: one line per event on stderr,
 *   2026-11-23T11:47:16.123Z level component key=value ...
 * Never log PII values: log user ids, never names, emails or other fields.
 * The level threshold is set once at start (cmd/ mains) from the
 * GEOSCALE_LOG environment variable or config: debug, info, warn, error.
 */
#ifndef GS_ENGINE_LOG_H
#define GS_ENGINE_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
/* Parse "debug"/"info"/"warn"/"error"; returns -1 if unknown. */
int log_parse_level(const char *s);

void log_emit(enum log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(comp, ...) log_emit(LOG_DEBUG, comp, __VA_ARGS__)
#define log_info(comp, ...) log_emit(LOG_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_emit(LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_emit(LOG_ERROR, comp, __VA_ARGS__)

#endif /* GS_ENGINE_LOG_H */
