/*
 * Chaos histories: the record of what clients asked and what they were told
 * during a fault-injection run, one JSON object per line (chaos/README.md):
 *
 *   {"process":3,"type":"invoke","f":"write","key":"u:17","value":42,"time":123456789}
 *
 * A process has at most one outstanding operation; the completion ("ok",
 * "fail" or "info") of an invoke is the next event of the same process. An
 * optional {"type":"init","key":K,"value":V} gives register K's initial value
 * (default null).
 *
 * The writer is shared by the client threads of a run (one mutex); the
 * loader reads a whole file into memory, checks its structure and pairs each
 * invoke with its completion. Both are bounded: keys, lines, lists and files
 * larger than the limits below are refused with GS_ETOOBIG.
 */
#ifndef GS_CHAOS_HISTORY_H
#define GS_CHAOS_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits of the format, enforced by both writer and loader. */
#define CHAOS_KEY_MAX 64                       /* bytes of a key, with its NUL */
#define CHAOS_LINE_MAX (4u << 20)              /* bytes of one line (a full list fits) */
#define CHAOS_LIST_MAX 100000u                 /* ids in one final_following */
#define CHAOS_HISTORY_MAX_BYTES (256ull << 20) /* bytes of a history file */
#define CHAOS_HISTORY_MAX_EVENTS 4000000u      /* events in a history file */

/* Index meaning "no such event" (an invoke without completion). */
#define CHAOS_NO_EVENT SIZE_MAX

/* time_ns value asking the writer to stamp the event itself (see
 * chaos_history_append). */
#define CHAOS_TIME_NOW INT64_MIN

enum chaos_event_type {
    CHAOS_INVOKE,
    CHAOS_OK,
    CHAOS_FAIL, /* definitely did not take effect */
    CHAOS_INFO, /* outcome unknown: may have taken effect after its invoke */
    CHAOS_INIT, /* a register's initial value; no process, f or time */
};

enum chaos_fn {
    CHAOS_F_NONE, /* init events only */
    CHAOS_F_READ,
    CHAOS_F_WRITE,
    CHAOS_F_CAS,
    CHAOS_F_CREATE,
    CHAOS_F_FOLLOW,
    CHAOS_F_FINAL_FOLLOWING,
    CHAOS_F_FINAL_EXISTS,
};

enum chaos_value_kind {
    CHAOS_VALUE_NULL,
    CHAOS_VALUE_INT,  /* i */
    CHAOS_VALUE_PAIR, /* pair[0], pair[1]: a cas [from, to] */
    CHAOS_VALUE_BOOL, /* i is 0 or 1 */
    CHAOS_VALUE_LIST, /* list[0..n_list): ids of a final_following */
};

struct chaos_value {
    enum chaos_value_kind kind;
    int64_t i;
    int64_t pair[2];
    int64_t *list; /* writer: borrowed; loaded history: owned by the history */
    size_t n_list;
};

struct chaos_event {
    enum chaos_event_type type;
    enum chaos_fn f;
    int64_t process;
    char key[CHAOS_KEY_MAX];
    struct chaos_value value;
    int64_t time_ns; /* monotonic nanoseconds; 0 for init events */
    size_t line;     /* loader: 1-based line of the event in its file */
};

/* Value constructors, for building events to append. */
struct chaos_value chaos_value_null(void);
struct chaos_value chaos_value_int(int64_t i);
struct chaos_value chaos_value_pair(int64_t from, int64_t to);
struct chaos_value chaos_value_bool(bool b);
/* The list is borrowed: it must stay valid until the append returns. */
struct chaos_value chaos_value_list(const int64_t *ids, size_t n);

/* Stable names used in the file ("invoke", "write", ...). Never NULL. */
const char *chaos_event_type_name(enum chaos_event_type type);
const char *chaos_fn_name(enum chaos_fn f);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t chaos_now_ns(void);

/* Parse a user key "u:<id>" (decimal id); false for any other key. */
bool chaos_key_user_id(const char *key, int64_t *user_id);

/* ------------------------------------------------------------------ writer */

struct chaos_history_writer;

/* Create (or truncate) path and return a writer in *out. 0 or GS_EIO /
 * GS_ENOMEM (errmsg, if not NULL, gets errlen bytes of detail). The caller
 * closes it with chaos_history_writer_close(). */
int chaos_history_writer_open(const char *path, struct chaos_history_writer **out, char *errmsg,
                              size_t errlen);

/* Append one event as one line, flushed to the kernel before returning (a run
 * that crashes leaves every recorded event behind; an invoke left without its
 * completion is read as "info"). Thread-safe. If ev->time_ns is
 * CHAOS_TIME_NOW the writer stamps chaos_now_ns() under its lock, so that the
 * file's order and its times agree; the stamp is stored back in ev->time_ns.
 * Record an invoke before sending the request and its completion after the
 * answer (or its absence) is known. ev->line is ignored. Returns 0, GS_EINVAL
 * (malformed event: unknown type or f, key too long or not terminated, list
 * too long) or GS_EIO. */
int chaos_history_append(struct chaos_history_writer *w, struct chaos_event *ev);

/* Convenience around chaos_history_append for the common case: an event of
 * process with the writer's own time stamp. key may be NULL for "". */
int chaos_history_record(struct chaos_history_writer *w, int64_t process,
                         enum chaos_event_type type, enum chaos_fn f, const char *key,
                         struct chaos_value value);

/* Flush, fsync and close; frees w (NULL is a no-op). Returns 0 or GS_EIO (w
 * is freed either way). */
int chaos_history_writer_close(struct chaos_history_writer *w);

/* ------------------------------------------------------------------ loader */

struct chaos_history {
    struct chaos_event *events; /* in file order */
    size_t n_events;
    /* For each event index: if it is an invoke, the index of its completion
     * (CHAOS_NO_EVENT when the file ends first); if it is a completion, the
     * index of its invoke; CHAOS_NO_EVENT for init events. */
    size_t *pair;
};

/* Load and validate path. On success *out is a history the caller frees with
 * chaos_history_free(). Errors: GS_EIO (cannot open/read), GS_ETOOBIG (file,
 * line, key or list over the limits above), GS_EINVAL (a line that is not
 * one event of the format, a completion without an outstanding invoke, an
 * invoke while the process has one outstanding, a completion whose f differs
 * from its invoke's, a completion earlier than its invoke, two init events
 * for one key), GS_ENOMEM. errmsg (if not NULL) receives a one-line reason
 * naming the line. */
int chaos_history_load(const char *path, struct chaos_history **out, char *errmsg, size_t errlen);

void chaos_history_free(struct chaos_history *h);

#endif /* GS_CHAOS_HISTORY_H */
