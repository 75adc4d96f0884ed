/*
 * Chaos histories: writer and loader (see history.h for the format).
 *
 * The writer builds each event as a jansson object outside its lock and only
 * stamps the time, serializes and flushes under it: the file's order is then
 * the order of the time stamps, and a crash of the run loses nothing that
 * was appended.
 *
 * The loader reads the whole file (bounded by CHAOS_HISTORY_MAX_BYTES), parses
 * one object per line, and pairs each invoke with the next event of its
 * process through a small open-addressing map from process to its
 * outstanding invoke. It validates what the checkers rely on, so that they
 * can assume a well-formed history: the values an op needs have the right
 * shape, user keys are "u:<id>", completions follow their invokes.
 */
#include "chaos/history.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "geoscale/errors.h"

static const char *const type_names[] = {
    [CHAOS_INVOKE] = "invoke", [CHAOS_OK] = "ok",     [CHAOS_FAIL] = "fail",
    [CHAOS_INFO] = "info",     [CHAOS_INIT] = "init",
};

static const char *const fn_names[] = {
    [CHAOS_F_NONE] = "",
    [CHAOS_F_READ] = "read",
    [CHAOS_F_WRITE] = "write",
    [CHAOS_F_CAS] = "cas",
    [CHAOS_F_CREATE] = "create",
    [CHAOS_F_FOLLOW] = "follow",
    [CHAOS_F_FINAL_FOLLOWING] = "final_following",
    [CHAOS_F_FINAL_EXISTS] = "final_exists",
};

#define N_TYPES (sizeof(type_names) / sizeof(type_names[0]))
#define N_FNS (sizeof(fn_names) / sizeof(fn_names[0]))

const char *chaos_event_type_name(enum chaos_event_type type)
{
    return (unsigned)type < N_TYPES ? type_names[type] : "?";
}

const char *chaos_fn_name(enum chaos_fn f)
{
    return (unsigned)f < N_FNS ? fn_names[f] : "?";
}

struct chaos_value chaos_value_null(void)
{
    struct chaos_value v = {.kind = CHAOS_VALUE_NULL};
    return v;
}

struct chaos_value chaos_value_int(int64_t i)
{
    struct chaos_value v = {.kind = CHAOS_VALUE_INT, .i = i};
    return v;
}

struct chaos_value chaos_value_pair(int64_t from, int64_t to)
{
    struct chaos_value v = {.kind = CHAOS_VALUE_PAIR, .pair = {from, to}};
    return v;
}

struct chaos_value chaos_value_bool(bool b)
{
    struct chaos_value v = {.kind = CHAOS_VALUE_BOOL, .i = b ? 1 : 0};
    return v;
}

struct chaos_value chaos_value_list(const int64_t *ids, size_t n)
{
    /* The writer only reads the list; the cast keeps one struct for both
     * directions. */
    struct chaos_value v = {
        .kind = CHAOS_VALUE_LIST, .list = (int64_t *)(uintptr_t)ids, .n_list = n};
    return v;
}

int64_t chaos_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void set_err(char *errmsg, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *errmsg, size_t errlen, const char *fmt, ...)
{
    if (errmsg == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ writer */

struct chaos_history_writer {
    pthread_mutex_t mu;
    FILE *f;
    int error; /* sticky: 0 or GS_EIO once a write failed */
};

int chaos_history_writer_open(const char *path, struct chaos_history_writer **out, char *errmsg,
                              size_t errlen)
{
    *out = NULL;
    struct chaos_history_writer *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        set_err(errmsg, errlen, "out of memory");
        return GS_ENOMEM;
    }
    w->f = fopen(path, "w");
    if (w->f == NULL) {
        set_err(errmsg, errlen, "cannot create %s: %s", path, strerror(errno));
        free(w);
        return GS_EIO;
    }
    pthread_mutex_init(&w->mu, NULL);
    *out = w;
    return 0;
}

static json_t *value_to_json(const struct chaos_value *v)
{
    switch (v->kind) {
    case CHAOS_VALUE_NULL:
        return json_null();
    case CHAOS_VALUE_INT:
        return json_integer(v->i);
    case CHAOS_VALUE_BOOL:
        return json_boolean(v->i != 0);
    case CHAOS_VALUE_PAIR: {
        json_t *a = json_array();
        if (a != NULL) {
            json_array_append_new(a, json_integer(v->pair[0]));
            json_array_append_new(a, json_integer(v->pair[1]));
        }
        return a;
    }
    case CHAOS_VALUE_LIST: {
        json_t *a = json_array();
        for (size_t i = 0; a != NULL && i < v->n_list; i++) {
            if (json_array_append_new(a, json_integer(v->list[i])) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    }
    return NULL;
}

int chaos_history_append(struct chaos_history_writer *w, struct chaos_event *ev)
{
    if ((unsigned)ev->type >= N_TYPES || (unsigned)ev->f >= N_FNS ||
        memchr(ev->key, '\0', sizeof(ev->key)) == NULL ||
        (unsigned)ev->value.kind > CHAOS_VALUE_LIST ||
        (ev->value.kind == CHAOS_VALUE_LIST && ev->value.n_list > CHAOS_LIST_MAX) ||
        (ev->type != CHAOS_INIT && ev->f == CHAOS_F_NONE)) {
        return GS_EINVAL;
    }
    json_t *obj = json_object();
    json_t *value = value_to_json(&ev->value);
    if (obj == NULL || value == NULL) {
        json_decref(obj);
        json_decref(value);
        return GS_ENOMEM;
    }
    if (ev->type == CHAOS_INIT) {
        json_object_set_new(obj, "type", json_string("init"));
        json_object_set_new(obj, "key", json_string(ev->key));
        json_object_set_new(obj, "value", value);
    } else {
        json_object_set_new(obj, "process", json_integer(ev->process));
        json_object_set_new(obj, "type", json_string(type_names[ev->type]));
        json_object_set_new(obj, "f", json_string(fn_names[ev->f]));
        json_object_set_new(obj, "key", json_string(ev->key));
        json_object_set_new(obj, "value", value);
    }
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    if (w->error != 0) {
        rc = w->error;
        goto out;
    }
    if (ev->type != CHAOS_INIT) {
        if (ev->time_ns == CHAOS_TIME_NOW) {
            ev->time_ns = chaos_now_ns();
        }
        json_object_set_new(obj, "time", json_integer(ev->time_ns));
    }
    if (json_dumpf(obj, w->f, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
        fputc('\n', w->f) == EOF || fflush(w->f) != 0) {
        w->error = GS_EIO;
        rc = GS_EIO;
    }
out:
    pthread_mutex_unlock(&w->mu);
    json_decref(obj);
    return rc;
}

int chaos_history_record(struct chaos_history_writer *w, int64_t process,
                         enum chaos_event_type type, enum chaos_fn f, const char *key,
                         struct chaos_value value)
{
    struct chaos_event ev = {
        .type = type, .f = f, .process = process, .value = value, .time_ns = CHAOS_TIME_NOW};
    if (key != NULL) {
        size_t n = strlen(key);
        if (n >= sizeof(ev.key)) {
            return GS_EINVAL;
        }
        memcpy(ev.key, key, n + 1);
    }
    return chaos_history_append(w, &ev);
}

int chaos_history_writer_close(struct chaos_history_writer *w)
{
    if (w == NULL) {
        return 0;
    }
    int rc = w->error;
    if (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0) {
        rc = GS_EIO;
    }
    if (fclose(w->f) != 0) {
        rc = GS_EIO;
    }
    pthread_mutex_destroy(&w->mu);
    free(w);
    return rc;
}

/* ------------------------------------------------------------------ loader */

/* Open-addressing map from process to its outstanding invoke. */
struct process_map {
    int64_t *process;
    size_t *invoke; /* CHAOS_NO_EVENT: no outstanding invoke */
    bool *used;
    size_t cap; /* power of two */
    size_t n;
};

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static void process_map_free(struct process_map *m)
{
    free(m->process);
    free(m->invoke);
    free(m->used);
    memset(m, 0, sizeof(*m));
}

static int process_map_init(struct process_map *m, size_t cap)
{
    m->process = calloc(cap, sizeof(*m->process));
    m->invoke = calloc(cap, sizeof(*m->invoke));
    m->used = calloc(cap, sizeof(*m->used));
    m->cap = cap;
    m->n = 0;
    if (m->process == NULL || m->invoke == NULL || m->used == NULL) {
        process_map_free(m);
        return GS_ENOMEM;
    }
    return 0;
}

/* The slot of process p, inserted (with no outstanding invoke) if absent. */
static int process_map_slot(struct process_map *m, int64_t p, size_t *slot)
{
    if ((m->n + 1) * 2 > m->cap) {
        struct process_map bigger;
        if (process_map_init(&bigger, m->cap * 2) != 0) {
            return GS_ENOMEM;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->used[i]) {
                size_t j = mix64((uint64_t)m->process[i]) & (bigger.cap - 1);
                while (bigger.used[j]) {
                    j = (j + 1) & (bigger.cap - 1);
                }
                bigger.used[j] = true;
                bigger.process[j] = m->process[i];
                bigger.invoke[j] = m->invoke[i];
                bigger.n++;
            }
        }
        process_map_free(m);
        *m = bigger;
    }
    size_t j = mix64((uint64_t)p) & (m->cap - 1);
    while (m->used[j] && m->process[j] != p) {
        j = (j + 1) & (m->cap - 1);
    }
    if (!m->used[j]) {
        m->used[j] = true;
        m->process[j] = p;
        m->invoke[j] = CHAOS_NO_EVENT;
        m->n++;
    }
    *slot = j;
    return 0;
}

bool chaos_key_user_id(const char *key, int64_t *user_id)
{
    if (strncmp(key, "u:", 2) != 0 || key[2] < '0' || key[2] > '9') {
        return false;
    }
    errno = 0;
    char *end = NULL;
    long long v = strtoll(key + 2, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *user_id = v;
    return true;
}

static int parse_value(const json_t *j, enum chaos_fn f, struct chaos_value *v, char *why,
                       size_t whylen)
{
    memset(v, 0, sizeof(*v));
    if (j == NULL || json_is_null(j)) {
        v->kind = CHAOS_VALUE_NULL;
    } else if (json_is_integer(j)) {
        v->kind = CHAOS_VALUE_INT;
        v->i = json_integer_value(j);
    } else if (json_is_boolean(j)) {
        v->kind = CHAOS_VALUE_BOOL;
        v->i = json_is_true(j) ? 1 : 0;
    } else if (json_is_array(j)) {
        size_t n = json_array_size(j);
        for (size_t i = 0; i < n; i++) {
            if (!json_is_integer(json_array_get(j, i))) {
                snprintf(why, whylen, "\"value\" array holds a non-integer");
                return GS_EINVAL;
            }
        }
        if (f == CHAOS_F_CAS) {
            if (n != 2) {
                snprintf(why, whylen, "a cas value is [from, to]");
                return GS_EINVAL;
            }
            v->kind = CHAOS_VALUE_PAIR;
            v->pair[0] = json_integer_value(json_array_get(j, 0));
            v->pair[1] = json_integer_value(json_array_get(j, 1));
        } else {
            if (n > CHAOS_LIST_MAX) {
                snprintf(why, whylen, "list of %zu ids exceeds %u", n, CHAOS_LIST_MAX);
                return GS_ETOOBIG;
            }
            v->kind = CHAOS_VALUE_LIST;
            v->n_list = n;
            v->list = malloc((n > 0 ? n : 1) * sizeof(*v->list));
            if (v->list == NULL) {
                snprintf(why, whylen, "out of memory");
                return GS_ENOMEM;
            }
            for (size_t i = 0; i < n; i++) {
                v->list[i] = json_integer_value(json_array_get(j, i));
            }
        }
    } else {
        snprintf(why, whylen, "\"value\" is not null, an integer, a boolean or an array");
        return GS_EINVAL;
    }
    return 0;
}

static int lookup_name(const char *s, const char *const *names, size_t n, int first)
{
    for (size_t i = (size_t)first; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            return (int)i;
        }
    }
    return -1;
}

/* Parse one line into *ev. why gets the reason on failure. */
static int parse_event(const char *line, size_t len, struct chaos_event *ev, char *why,
                       size_t whylen)
{
    memset(ev, 0, sizeof(*ev));
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc = GS_EINVAL;
    if (obj == NULL) {
        snprintf(why, whylen, "not JSON: %s", jerr.text);
        return GS_EINVAL;
    }
    if (!json_is_object(obj)) {
        snprintf(why, whylen, "not a JSON object");
        goto out;
    }
    const json_t *type = json_object_get(obj, "type");
    const json_t *key = json_object_get(obj, "key");
    int t =
        json_is_string(type) ? lookup_name(json_string_value(type), type_names, N_TYPES, 0) : -1;
    if (t < 0) {
        snprintf(why, whylen, "\"type\" is not one of invoke, ok, fail, info, init");
        goto out;
    }
    ev->type = (enum chaos_event_type)t;
    if (!json_is_string(key)) {
        snprintf(why, whylen, "\"key\" is missing or not a string");
        goto out;
    }
    if (json_string_length(key) >= CHAOS_KEY_MAX ||
        strlen(json_string_value(key)) >= CHAOS_KEY_MAX) {
        snprintf(why, whylen, "\"key\" longer than %d bytes", CHAOS_KEY_MAX - 1);
        rc = GS_ETOOBIG;
        goto out;
    }
    strcpy(ev->key, json_string_value(key));
    if (ev->type != CHAOS_INIT) {
        const json_t *process = json_object_get(obj, "process");
        const json_t *f = json_object_get(obj, "f");
        const json_t *time = json_object_get(obj, "time");
        int fn = json_is_string(f) ? lookup_name(json_string_value(f), fn_names, N_FNS, 1) : -1;
        if (fn < 0) {
            snprintf(why, whylen, "\"f\" is not a known operation");
            goto out;
        }
        ev->f = (enum chaos_fn)fn;
        if (!json_is_integer(process) || !json_is_integer(time) || json_integer_value(time) < 0) {
            snprintf(why, whylen,
                     "\"process\" or \"time\" missing or not a (non-negative) integer");
            goto out;
        }
        ev->process = json_integer_value(process);
        ev->time_ns = json_integer_value(time);
    }
    rc = parse_value(json_object_get(obj, "value"), ev->f, &ev->value, why, whylen);
    if (rc == 0 && ev->type == CHAOS_INIT && ev->value.kind != CHAOS_VALUE_NULL &&
        ev->value.kind != CHAOS_VALUE_INT) {
        snprintf(why, whylen, "an init value is an integer or null");
        rc = GS_EINVAL;
    }
out:
    json_decref(obj);
    if (rc != 0) {
        free(ev->value.list);
        ev->value.list = NULL;
    }
    return rc;
}

/* What the checkers need of an op, checked once its invoke and completion
 * are known (comp may be NULL: no completion yet). NULL or the reason. */
static const char *check_op_shape(const struct chaos_event *inv, const struct chaos_event *comp)
{
    int64_t id;
    switch (inv->f) {
    case CHAOS_F_WRITE:
        return inv->value.kind == CHAOS_VALUE_INT ? NULL : "a write's value is an integer";
    case CHAOS_F_CAS:
        return inv->value.kind == CHAOS_VALUE_PAIR ? NULL : "a cas value is [from, to]";
    case CHAOS_F_READ:
        if (comp != NULL && comp->type == CHAOS_OK && comp->value.kind != CHAOS_VALUE_INT &&
            comp->value.kind != CHAOS_VALUE_NULL) {
            return "a read's ok value is an integer or null";
        }
        return NULL;
    case CHAOS_F_CREATE:
        if (comp != NULL && comp->type == CHAOS_OK && !chaos_key_user_id(comp->key, &id)) {
            return "an ok create's key is \"u:<id>\"";
        }
        return NULL;
    case CHAOS_F_FOLLOW:
        if (!chaos_key_user_id(inv->key, &id)) {
            return "a follow's key is \"u:<actor>\"";
        }
        return inv->value.kind == CHAOS_VALUE_INT ? NULL : "a follow's value is the target id";
    case CHAOS_F_FINAL_FOLLOWING:
        if (!chaos_key_user_id(inv->key, &id)) {
            return "a final_following's key is \"u:<actor>\"";
        }
        if (comp != NULL && comp->type == CHAOS_OK && comp->value.kind != CHAOS_VALUE_LIST) {
            return "a final_following's ok value is an array of ids";
        }
        return NULL;
    case CHAOS_F_FINAL_EXISTS:
        if (!chaos_key_user_id(inv->key, &id)) {
            return "a final_exists's key is \"u:<id>\"";
        }
        if (comp != NULL && comp->type == CHAOS_OK && comp->value.kind != CHAOS_VALUE_BOOL) {
            return "a final_exists's ok value is true or false";
        }
        return NULL;
    case CHAOS_F_NONE:
        break;
    }
    return "unknown operation";
}

void chaos_history_free(struct chaos_history *h)
{
    if (h == NULL) {
        return;
    }
    for (size_t i = 0; i < h->n_events; i++) {
        free(h->events[i].value.list);
    }
    free(h->events);
    free(h->pair);
    free(h);
}

/* Read the whole file into a NUL-terminated buffer. */
static int read_file(const char *path, char **buf, size_t *len, char *errmsg, size_t errlen)
{
    *buf = NULL;
    *len = 0;
    int rc = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        set_err(errmsg, errlen, "cannot open %s: %s", path, strerror(errno));
        return GS_EIO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(errmsg, errlen, "%s is not a regular file", path);
        rc = GS_EIO;
        goto out;
    }
    if ((unsigned long long)st.st_size > CHAOS_HISTORY_MAX_BYTES) {
        set_err(errmsg, errlen, "%s: %lld bytes exceed the limit of %llu", path,
                (long long)st.st_size, CHAOS_HISTORY_MAX_BYTES);
        rc = GS_ETOOBIG;
        goto out;
    }
    size_t cap = (size_t)st.st_size + 1;
    char *b = malloc(cap);
    if (b == NULL) {
        set_err(errmsg, errlen, "out of memory reading %s", path);
        rc = GS_ENOMEM;
        goto out;
    }
    /* The file may grow while we read: read at most what we allotted, and
     * refuse a file that is longer than its size said. */
    size_t n = fread(b, 1, cap, f);
    if (ferror(f)) {
        set_err(errmsg, errlen, "cannot read %s: %s", path, strerror(errno));
        free(b);
        rc = GS_EIO;
        goto out;
    }
    if (n == cap) {
        set_err(errmsg, errlen, "%s grew while being read", path);
        free(b);
        rc = GS_EIO;
        goto out;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
out:
    fclose(f);
    return rc;
}

static int compare_init_keys(const void *a, const void *b)
{
    const struct chaos_event *x = *(const struct chaos_event *const *)a;
    const struct chaos_event *y = *(const struct chaos_event *const *)b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->line > y->line) - (x->line < y->line);
}

/* At most one init event per key. */
static int check_inits(const struct chaos_history *h, char *errmsg, size_t errlen, const char *path)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n_events; i++) {
        n += h->events[i].type == CHAOS_INIT;
    }
    if (n < 2) {
        return 0;
    }
    const struct chaos_event **inits = malloc(n * sizeof(*inits));
    if (inits == NULL) {
        set_err(errmsg, errlen, "out of memory loading %s", path);
        return GS_ENOMEM;
    }
    n = 0;
    for (size_t i = 0; i < h->n_events; i++) {
        if (h->events[i].type == CHAOS_INIT) {
            inits[n++] = &h->events[i];
        }
    }
    qsort(inits, n, sizeof(*inits), compare_init_keys);
    int rc = 0;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(inits[i - 1]->key, inits[i]->key) == 0) {
            set_err(errmsg, errlen, "%s:%zu: a second init for key %s (first at line %zu)", path,
                    inits[i]->line, inits[i]->key, inits[i - 1]->line);
            rc = GS_EINVAL;
            break;
        }
    }
    free(inits);
    return rc;
}

int chaos_history_load(const char *path, struct chaos_history **out, char *errmsg, size_t errlen)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    struct process_map procs = {0};
    struct chaos_history *h = NULL;
    char why[200] = "";
    size_t lineno = 0;
    int rc = read_file(path, &buf, &len, errmsg, errlen);
    if (rc != 0) {
        return rc;
    }
    size_t n_lines = 0;
    for (size_t i = 0; i < len; i++) {
        n_lines += buf[i] == '\n';
    }
    n_lines++; /* a last line without its newline */
    if (n_lines > CHAOS_HISTORY_MAX_EVENTS + 1) {
        set_err(errmsg, errlen, "%s: more than %u events", path, CHAOS_HISTORY_MAX_EVENTS);
        rc = GS_ETOOBIG;
        goto out;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL || (h->events = calloc(n_lines, sizeof(*h->events))) == NULL ||
        (h->pair = malloc(n_lines * sizeof(*h->pair))) == NULL ||
        process_map_init(&procs, 64) != 0) {
        set_err(errmsg, errlen, "out of memory loading %s", path);
        rc = GS_ENOMEM;
        goto out;
    }
    const char *p = buf;
    const char *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl != NULL ? nl : end;
        size_t line_len = (size_t)(line_end - p);
        lineno++;
        const char *line = p;
        p = nl != NULL ? nl + 1 : end;
        if (line_len > CHAOS_LINE_MAX) {
            snprintf(why, sizeof why, "line longer than %u bytes", CHAOS_LINE_MAX);
            rc = GS_ETOOBIG;
            goto bad_line;
        }
        size_t k = 0;
        while (k < line_len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) {
            k++;
        }
        if (k == line_len) {
            continue; /* blank line */
        }
        struct chaos_event *ev = &h->events[h->n_events];
        rc = parse_event(line, line_len, ev, why, sizeof why);
        if (rc != 0) {
            goto bad_line;
        }
        ev->line = lineno;
        size_t idx = h->n_events++;
        h->pair[idx] = CHAOS_NO_EVENT;
        if (ev->type == CHAOS_INIT) {
            continue; /* duplicates are found below, once all are read */
        }
        size_t slot;
        if (process_map_slot(&procs, ev->process, &slot) != 0) {
            snprintf(why, sizeof why, "out of memory");
            rc = GS_ENOMEM;
            goto bad_line;
        }
        size_t inv = procs.invoke[slot];
        if (ev->type == CHAOS_INVOKE) {
            if (inv != CHAOS_NO_EVENT) {
                snprintf(why, sizeof why,
                         "process %" PRId64 " invokes while its op of line %zu is outstanding",
                         ev->process, h->events[inv].line);
                rc = GS_EINVAL;
                goto bad_line;
            }
            const char *shape = check_op_shape(ev, NULL);
            if (shape != NULL) {
                snprintf(why, sizeof why, "%s", shape);
                rc = GS_EINVAL;
                goto bad_line;
            }
            procs.invoke[slot] = idx;
            continue;
        }
        if (inv == CHAOS_NO_EVENT) {
            snprintf(why, sizeof why, "a completion of process %" PRId64 " without an invoke",
                     ev->process);
            rc = GS_EINVAL;
            goto bad_line;
        }
        const struct chaos_event *iev = &h->events[inv];
        if (iev->f != ev->f) {
            snprintf(why, sizeof why, "completes a %s with a %s (invoke at line %zu)",
                     fn_names[iev->f], fn_names[ev->f], iev->line);
            rc = GS_EINVAL;
            goto bad_line;
        }
        if (ev->time_ns < iev->time_ns) {
            snprintf(why, sizeof why, "completion earlier than its invoke (line %zu)", iev->line);
            rc = GS_EINVAL;
            goto bad_line;
        }
        const char *shape = check_op_shape(iev, ev);
        if (shape != NULL) {
            snprintf(why, sizeof why, "%s", shape);
            rc = GS_EINVAL;
            goto bad_line;
        }
        h->pair[inv] = idx;
        h->pair[idx] = inv;
        procs.invoke[slot] = CHAOS_NO_EVENT;
    }
    rc = check_inits(h, errmsg, errlen, path);
    if (rc != 0) {
        goto out;
    }
    *out = h;
    h = NULL;
    goto out;
bad_line:
    set_err(errmsg, errlen, "%s:%zu: %s", path, lineno, why);
out:
    process_map_free(&procs);
    chaos_history_free(h);
    free(buf);
    return rc;
}
