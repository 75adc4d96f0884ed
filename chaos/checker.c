/*
 * Checkers of chaos histories (see checker.h).
 *
 * Linearizability. Each register key is checked alone. Its ops become
 * intervals [call, ret]: failed ops are dropped (they did not take effect),
 * info reads are dropped (they constrain nothing), and a write or cas of
 * unknown outcome gets ret = +infinity and is optional: it may take effect
 * at any point after its invoke, or never. Before searching, values are used
 * to shrink the problem, each step exact (it changes no verdict):
 *
 *  - an ok read (or ok cas) of a value that no op can produce and that is not
 *    the initial value is a violation by itself, and so is an observation
 *    that completed before the only op producing its value was invoked;
 *  - an unknown-outcome write (or cas) whose value nobody observes can be
 *    dropped: in any linearization containing it, the next op after it
 *    overwrites the value unseen, so the linearization without it is valid;
 *  - an unknown-outcome op that is the only producer of a value some ok op
 *    observed must have taken effect, before the earliest such observer
 *    completed: it becomes a mandatory op with that response time.
 *
 * So only ops of unknown outcome that are observed ambiguously stay optional,
 * which keeps realistic histories (a few timeouts among thousands of ops)
 * cheap.
 *
 * The search is Wing & Gong's with Lowe's memoization, in the iterative form
 * Porcupine popularised: call and return entries of all ops sorted by time
 * in a doubly linked list; walking from the head, a call entry whose op can
 * be applied to the current register value is applied and lifted out of the
 * list (call and return together, dancing-links style), unless the
 * configuration it leads to (set of linearized ops, register value) has been
 * seen before; meeting a finite return entry means its op should have been
 * linearized already, so the search backtracks. Reaching an infinite return
 * (or an empty list) means every mandatory op is linearized: success. The
 * set of linearized ops is a bitset with an incremental Zobrist hash; the
 * memo stores it compactly (see struct memo).
 *
 * When a key is not linearizable, the report names the op whose deadline
 * stopped the deepest partial linearization, the register value there, the
 * last ops of that partial linearization and the ops concurrent with it.
 *
 * Lost acknowledged writes are checked by sorting: ok creates, ok follows,
 * ok final_exists and ok final_following, each sorted by user id.
 */
#include "chaos/checker.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "geoscale/errors.h"

#define INF_TIME INT64_MAX
#define REPORT_MAX 20 /* lines of each kind of anomaly in the report */

void chaos_check_options_default(struct chaos_check_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    opts->max_states = CHAOS_CHECK_DEFAULT_MAX_STATES;
    opts->max_memo_bytes = CHAOS_CHECK_DEFAULT_MAX_MEMO_BYTES;
}

static void report(FILE *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(FILE *out, const char *fmt, ...)
{
    if (out == NULL) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* ------------------------------------------------------------ register ops */

struct reg_val {
    int64_t v;
    bool null;
};

struct reg_op {
    const char *key;
    enum chaos_fn f; /* read, write or cas */
    bool info;       /* outcome unknown */
    bool optional;   /* may be left out (ret is INF_TIME) */
    bool dropped;
    int64_t process;
    int64_t call, ret;
    size_t call_line, ret_line; /* ret_line: 0 when there is no completion */
    size_t order_line;          /* tie-breaker of the return entry */
    int order_sub;
    /* read: value read (v, null); write: v; cas: from v, to w */
    struct reg_val v;
    int64_t w;
};

static bool val_eq(struct reg_val a, struct reg_val b)
{
    return a.null == b.null && (a.null || a.v == b.v);
}

static void format_val(char *buf, size_t len, struct reg_val v)
{
    if (v.null) {
        snprintf(buf, len, "null");
    } else {
        snprintf(buf, len, "%" PRId64, v.v);
    }
}

static void format_op(char *buf, size_t len, const struct reg_op *op)
{
    char val[32];
    char lines[48];
    format_val(val, sizeof val, op->v);
    if (op->ret_line != 0) {
        snprintf(lines, sizeof lines, "lines %zu-%zu", op->call_line, op->ret_line);
    } else {
        snprintf(lines, sizeof lines, "line %zu, no completion", op->call_line);
    }
    const char *info = op->info ? ", outcome unknown" : "";
    switch (op->f) {
    case CHAOS_F_READ:
        snprintf(buf, len, "p%" PRId64 " read -> %s (%s%s)", op->process, val, lines, info);
        break;
    case CHAOS_F_WRITE:
        snprintf(buf, len, "p%" PRId64 " write %s (%s%s)", op->process, val, lines, info);
        break;
    default:
        snprintf(buf, len, "p%" PRId64 " cas %s -> %" PRId64 " (%s%s)", op->process, val, op->w,
                 lines, info);
        break;
    }
}

/* The value an op leaves in the register when it takes effect. */
static bool op_produces(const struct reg_op *op, struct reg_val *out)
{
    if (op->f == CHAOS_F_WRITE) {
        *out = op->v;
        return true;
    }
    if (op->f == CHAOS_F_CAS) {
        out->v = op->w;
        out->null = false;
        return true;
    }
    return false;
}

/* Apply op to state: false if it cannot take effect there. */
static bool op_step(const struct reg_op *op, struct reg_val state, struct reg_val *next)
{
    switch (op->f) {
    case CHAOS_F_READ:
        *next = state;
        return val_eq(state, op->v);
    case CHAOS_F_WRITE:
        *next = op->v;
        return true;
    default:
        if (!val_eq(state, op->v)) {
            return false;
        }
        next->v = op->w;
        next->null = false;
        return true;
    }
}

/* ------------------------------------------------------------------- memo */

/* Set of configurations (linearized set S, register value). Ops are indexed
 * by invoke order, so S is nearly a prefix: it is stored as G (one past the
 * highest op in S) and the "holes", the ops below G not in S: ops pending
 * at that point plus optional ops left out. That is a few words per record
 * where a bitset would take n/64 words, which matters on keys of tens of
 * thousands of ops. Records live in one arena of uint64:
 * [hash, value, null, G, n_holes, holes...]. */
struct memo {
    uint64_t *slots; /* record offset + 1; 0 = empty */
    size_t cap;      /* power of two */
    uint64_t *arena;
    size_t arena_len, arena_cap;
    size_t n;
};

#define MEMO_HEADER 5

static void memo_free(struct memo *m)
{
    free(m->slots);
    free(m->arena);
    memset(m, 0, sizeof(*m));
}

static uint64_t memo_bytes(const struct memo *m)
{
    return (uint64_t)m->cap * sizeof(uint64_t) + (uint64_t)m->arena_cap * sizeof(uint64_t);
}

static int memo_grow_slots(struct memo *m)
{
    size_t cap = m->cap == 0 ? 1024 : m->cap * 2;
    uint64_t *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL) {
        return GS_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i] != 0) {
            uint64_t h = m->arena[m->slots[i] - 1];
            size_t j = h & (cap - 1);
            while (slots[j] != 0) {
                j = (j + 1) & (cap - 1);
            }
            slots[j] = m->slots[i];
        }
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

/* 1: inserted; 0: already present; GS_ENOMEM. */
static int memo_insert(struct memo *m, uint64_t hash, struct reg_val state, uint64_t g,
                       const uint64_t *holes, size_t n_holes)
{
    if ((m->n + 1) * 2 > m->cap && memo_grow_slots(m) != 0) {
        return GS_ENOMEM;
    }
    size_t rec = MEMO_HEADER + n_holes;
    size_t j = hash & (m->cap - 1);
    while (m->slots[j] != 0) {
        const uint64_t *r = &m->arena[m->slots[j] - 1];
        if (r[0] == hash && (int64_t)r[1] == state.v && r[2] == (uint64_t)state.null && r[3] == g &&
            r[4] == n_holes && memcmp(&r[MEMO_HEADER], holes, n_holes * sizeof(uint64_t)) == 0) {
            return 0;
        }
        j = (j + 1) & (m->cap - 1);
    }
    if (m->arena_len + rec > m->arena_cap) {
        size_t cap = m->arena_cap == 0 ? 4096 : m->arena_cap * 2;
        while (cap < m->arena_len + rec) {
            cap *= 2;
        }
        uint64_t *a = realloc(m->arena, cap * sizeof(*a));
        if (a == NULL) {
            return GS_ENOMEM;
        }
        m->arena = a;
        m->arena_cap = cap;
    }
    uint64_t *r = &m->arena[m->arena_len];
    r[0] = hash;
    r[1] = (uint64_t)state.v;
    r[2] = (uint64_t)state.null;
    r[3] = g;
    r[4] = n_holes;
    memcpy(&r[MEMO_HEADER], holes, n_holes * sizeof(uint64_t));
    m->slots[j] = m->arena_len + 1;
    m->arena_len += rec;
    m->n++;
    return 1;
}

/* The holes of S = bits below g, knowing every op below f is in S. */
static size_t collect_holes(const uint64_t *bits, size_t f, size_t g, uint64_t *holes)
{
    size_t n = 0;
    for (size_t w = f / 64; w * 64 < g; w++) {
        uint64_t missing = ~bits[w];
        while (missing != 0) {
            size_t i = w * 64 + (size_t)__builtin_ctzll(missing);
            if (i >= g) {
                break;
            }
            holes[n++] = i;
            missing &= missing - 1;
        }
    }
    return n;
}

static bool bit_test(const uint64_t *bits, size_t i)
{
    return (bits[i / 64] >> (i % 64)) & 1;
}

/* ---------------------------------------------------------------- search */

enum key_verdict { KEY_OK, KEY_VIOLATION, KEY_UNKNOWN };

struct entry {
    size_t op;
    bool is_call;
    int64_t time;
    size_t line;
    int sub;
};

static int compare_entries(const void *a, const void *b)
{
    const struct entry *x = a;
    const struct entry *y = b;
    if (x->time != y->time) {
        return x->time < y->time ? -1 : 1;
    }
    if (x->line != y->line) {
        return x->line < y->line ? -1 : 1;
    }
    if (x->sub != y->sub) {
        return x->sub < y->sub ? -1 : 1;
    }
    /* Same event: a call before a return (only for zero-length ops). */
    return (int)y->is_call - (int)x->is_call;
}

#define EXPLAIN_TAIL 4

struct search_result {
    enum key_verdict verdict;
    uint64_t states;
    int error; /* GS_ENOMEM */
    /* Violation: the deepest partial linearization met culprit's deadline. */
    size_t depth;
    size_t culprit;
    struct reg_val state;
    size_t tail[EXPLAIN_TAIL]; /* last linearized ops, most recent first */
    size_t n_tail;
};

/* One linearized op on the search stack, with what to restore on undo. */
struct frame {
    size_t entry;
    struct reg_val state;
    size_t f, g;
};

/* ops: one key's ops in invoke order. */
static void search(const struct reg_op *ops, size_t n, struct reg_val init,
                   const struct chaos_check_options *opts, struct search_result *res)
{
    memset(res, 0, sizeof(*res));
    size_t n_entries = 2 * n;
    size_t head = n_entries;
    struct entry *entries = malloc((n_entries + 1) * sizeof(*entries));
    size_t *match = malloc((n_entries + 1) * sizeof(*match));
    size_t *call_of = malloc((n + 1) * sizeof(*call_of));
    size_t *prev = malloc((n_entries + 1) * sizeof(*prev));
    size_t *next = malloc((n_entries + 1) * sizeof(*next));
    size_t words = (n + 63) / 64;
    uint64_t *bits = calloc(words + 1, sizeof(*bits));
    uint64_t *holes = malloc((n + 1) * sizeof(*holes));
    uint64_t *zobrist = malloc((n + 1) * sizeof(*zobrist));
    struct frame *stack = malloc((n + 1) * sizeof(*stack));
    struct memo memo = {0};
    bool have_best = false;
    if (entries == NULL || match == NULL || call_of == NULL || prev == NULL || next == NULL ||
        bits == NULL || holes == NULL || zobrist == NULL || stack == NULL) {
        res->error = GS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        entries[2 * i] =
            (struct entry){.op = i, .is_call = true, .time = ops[i].call, .line = ops[i].call_line};
        entries[2 * i + 1] = (struct entry){.op = i,
                                            .is_call = false,
                                            .time = ops[i].optional ? INF_TIME : ops[i].ret,
                                            .line = ops[i].optional ? SIZE_MAX : ops[i].order_line,
                                            .sub = ops[i].order_sub};
        zobrist[i] = mix64(0x9e3779b97f4a7c15ULL * (i + 1));
    }
    qsort(entries, n_entries, sizeof(*entries), compare_entries);
    for (size_t i = 0; i < n_entries; i++) {
        if (entries[i].is_call) {
            call_of[entries[i].op] = i;
        }
    }
    for (size_t i = 0; i < n_entries; i++) {
        if (!entries[i].is_call) {
            match[i] = call_of[entries[i].op];
            match[call_of[entries[i].op]] = i;
        }
    }
    /* Circular list through the head sentinel. */
    for (size_t i = 0; i <= n_entries; i++) {
        next[i] = i == n_entries ? 0 : i + 1;
        prev[i] = i == 0 ? n_entries : i - 1;
    }
    if (n_entries == 0) {
        next[head] = prev[head] = head;
    }

    struct reg_val state = init;
    uint64_t zhash = 0;
    size_t depth = 0;
    size_t f = 0; /* every op below f is linearized */
    size_t g = 0; /* no op at or above g is */
    size_t e = next[head];
    while (next[head] != head) {
        const struct entry *en = &entries[e];
        if (en->is_call) {
            size_t i = en->op;
            struct reg_val after;
            if (op_step(&ops[i], state, &after)) {
                bits[i / 64] |= 1ULL << (i % 64);
                size_t nf = f;
                while (nf < n && bit_test(bits, nf)) {
                    nf++;
                }
                size_t ng = i + 1 > g ? i + 1 : g;
                size_t n_holes = collect_holes(bits, nf, ng, holes);
                uint64_t h = zhash ^ zobrist[i];
                uint64_t full = h ^ mix64((uint64_t)after.v ^ (after.null ? 0x5bd1e995ULL : 0));
                int ins = memo_insert(&memo, full, after, ng, holes, n_holes);
                if (ins < 0) {
                    res->error = ins;
                    goto out;
                }
                if (ins == 1) {
                    if (memo.n > opts->max_states || memo_bytes(&memo) > opts->max_memo_bytes) {
                        res->verdict = KEY_UNKNOWN;
                        goto out;
                    }
                    stack[depth++] = (struct frame){.entry = e, .state = state, .f = f, .g = g};
                    state = after;
                    zhash = h;
                    f = nf;
                    g = ng;
                    /* lift: the call, then its return */
                    size_t r = match[e];
                    next[prev[e]] = next[e];
                    prev[next[e]] = prev[e];
                    next[prev[r]] = next[r];
                    prev[next[r]] = prev[r];
                    e = next[head];
                    continue;
                }
                bits[i / 64] &= ~(1ULL << (i % 64));
            }
            e = next[e];
            continue;
        }
        /* A return entry whose call is still in the list. */
        if (ops[en->op].optional) {
            break; /* only optional ops remain: linearizable */
        }
        if (!have_best || depth > res->depth) {
            have_best = true;
            res->depth = depth;
            res->culprit = en->op;
            res->state = state;
            res->n_tail = 0;
            for (size_t k = depth; k > 0 && res->n_tail < EXPLAIN_TAIL; k--) {
                res->tail[res->n_tail++] = entries[stack[k - 1].entry].op;
            }
        }
        if (depth == 0) {
            res->verdict = KEY_VIOLATION;
            goto out;
        }
        const struct frame *fr = &stack[--depth];
        size_t c = fr->entry;
        size_t i = entries[c].op;
        state = fr->state;
        f = fr->f;
        g = fr->g;
        zhash ^= zobrist[i];
        bits[i / 64] &= ~(1ULL << (i % 64));
        /* unlift: the return, then its call (reverse order of the lift) */
        size_t r = match[c];
        next[prev[r]] = r;
        prev[next[r]] = r;
        next[prev[c]] = c;
        prev[next[c]] = c;
        e = next[c];
    }
    res->verdict = KEY_OK;
out:
    res->states = memo.n;
    memo_free(&memo);
    free(entries);
    free(match);
    free(call_of);
    free(prev);
    free(next);
    free(bits);
    free(holes);
    free(zobrist);
    free(stack);
}

/* --------------------------------------------------------- per-key checks */

struct valref {
    struct reg_val v;
    size_t op;
};

static int compare_valref(const void *a, const void *b)
{
    const struct valref *x = a;
    const struct valref *y = b;
    if (x->v.null != y->v.null) {
        return x->v.null ? -1 : 1;
    }
    if (x->v.v != y->v.v) {
        return x->v.v < y->v.v ? -1 : 1;
    }
    return (x->op > y->op) - (x->op < y->op);
}

/* [*lo, *hi) of refs with value v. */
static void valref_range(const struct valref *refs, size_t n, struct reg_val v, size_t *lo,
                         size_t *hi)
{
    size_t a = 0, b = n;
    struct valref key = {.v = v, .op = 0};
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (compare_valref(&refs[mid], &key) < 0) {
            a = mid + 1;
        } else {
            b = mid;
        }
    }
    *lo = a;
    while (a < n && val_eq(refs[a].v, v)) {
        a++;
    }
    *hi = a;
}

/* An ok op that observes a value: an ok read, or an ok cas (its from). */
static bool op_observes(const struct reg_op *op)
{
    return !op->info && (op->f == CHAOS_F_READ || op->f == CHAOS_F_CAS);
}

struct checker {
    const struct chaos_check_options *opts;
    FILE *out;
    struct chaos_check_summary *sum;
    size_t keys_unknown;
    int error;
};

/* The ops concurrent with ops[culprit], and the span of lines from the
 * first of them (or of the n_tail ops of tail) to the last. */
static void report_window(struct checker *c, const struct reg_op *ops, size_t n, size_t culprit,
                          const size_t *tail, size_t n_tail)
{
    const struct reg_op *x = &ops[culprit];
    int64_t end = x->optional ? INF_TIME : x->ret;
    size_t shown = 0, more = 0;
    size_t lo_line = x->call_line, hi_line = x->ret_line ? x->ret_line : x->call_line;
    for (size_t k = 0; k < n_tail; k++) {
        if (ops[tail[k]].call_line < lo_line) {
            lo_line = ops[tail[k]].call_line;
        }
    }
    char buf[160];
    for (size_t i = 0; i < n; i++) {
        const struct reg_op *y = &ops[i];
        int64_t yend = y->optional ? INF_TIME : y->ret;
        if (i == culprit || y->call > end || yend < x->call) {
            continue;
        }
        if (shown == 0) {
            report(c->out, "  ops concurrent with it:\n");
        }
        if (shown < 10) {
            format_op(buf, sizeof buf, y);
            report(c->out, "    %s\n", buf);
            shown++;
        } else {
            more++;
        }
        if (y->call_line < lo_line) {
            lo_line = y->call_line;
        }
        if (y->ret_line > hi_line) {
            hi_line = y->ret_line;
        }
    }
    if (more > 0) {
        report(c->out, "    ... and %zu more\n", more);
    }
    report(c->out, "  window of events: lines %zu..%zu\n", lo_line, hi_line);
}

/* Check one key's ops (sorted by call); returns its verdict. */
static enum key_verdict check_key(struct checker *c, const char *key, struct reg_op *ops, size_t n,
                                  struct reg_val init)
{
    char buf[160], buf2[160], val[32];
    enum key_verdict verdict = KEY_OK;
    struct valref *producers = malloc((n + 1) * sizeof(*producers));
    struct valref *observers = malloc((n + 1) * sizeof(*observers));
    struct valref *info_from = malloc((n + 1) * sizeof(*info_from)); /* unknown cas: from */
    struct reg_op *kept = NULL;
    size_t n_prod = 0, n_obs = 0, n_info_from = 0;
    if (producers == NULL || observers == NULL || info_from == NULL) {
        c->error = GS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct reg_val v;
        if (op_produces(&ops[i], &v)) {
            producers[n_prod++] = (struct valref){.v = v, .op = i};
        }
        if (op_observes(&ops[i])) {
            observers[n_obs++] = (struct valref){.v = ops[i].v, .op = i};
        }
        if (ops[i].info && ops[i].f == CHAOS_F_CAS) {
            info_from[n_info_from++] = (struct valref){.v = ops[i].v, .op = i};
        }
    }
    qsort(info_from, n_info_from, sizeof(*info_from), compare_valref);
    qsort(producers, n_prod, sizeof(*producers), compare_valref);
    qsort(observers, n_obs, sizeof(*observers), compare_valref);

    /* Observations no op can explain. */
    for (size_t i = 0; i < n_obs; i++) {
        const struct reg_op *o = &ops[observers[i].op];
        struct reg_val v = observers[i].v;
        size_t lo, hi;
        valref_range(producers, n_prod, v, &lo, &hi);
        bool by_init = val_eq(init, v);
        format_op(buf, sizeof buf, o);
        format_val(val, sizeof val, v);
        if (lo == hi && !by_init) {
            report(c->out, "key %s: NOT LINEARIZABLE\n  %s observes %s, which no op wrote%s\n", key,
                   buf, val, init.null ? "" : " and is not the initial value");
            report_window(c, ops, n, observers[i].op, NULL, 0);
            verdict = KEY_VIOLATION;
            goto out;
        }
        if (hi - lo == 1 && !by_init && o->ret < ops[producers[lo].op].call) {
            format_op(buf2, sizeof buf2, &ops[producers[lo].op]);
            report(c->out,
                   "key %s: NOT LINEARIZABLE\n  %s observes %s before the only op writing it "
                   "was invoked: %s\n",
                   key, buf, val, buf2);
            report_window(c, ops, n, observers[i].op, NULL, 0);
            verdict = KEY_VIOLATION;
            goto out;
        }
    }

    /* Ops of unknown outcome: drop the unobserved, pin the surely applied. */
    for (size_t i = 0; i < n_prod; i++) {
        struct reg_op *p = &ops[producers[i].op];
        if (!p->info) {
            continue;
        }
        struct reg_val v = producers[i].v;
        size_t plo, phi, olo, ohi, ilo, ihi;
        valref_range(producers, n_prod, v, &plo, &phi);
        valref_range(observers, n_obs, v, &olo, &ohi);
        valref_range(info_from, n_info_from, v, &ilo, &ihi);
        if (olo == ohi && ilo == ihi) {
            p->dropped = true;
            continue;
        }
        if (phi - plo == 1 && !val_eq(init, v) && olo < ohi) {
            const struct reg_op *first = &ops[observers[olo].op];
            for (size_t k = olo + 1; k < ohi; k++) {
                const struct reg_op *o = &ops[observers[k].op];
                if (o->ret < first->ret ||
                    (o->ret == first->ret && o->ret_line < first->ret_line)) {
                    first = o;
                }
            }
            p->optional = false;
            p->ret = first->ret;
            p->order_line = first->ret_line;
            p->order_sub = 1;
        }
    }
    size_t n_kept = 0;
    kept = malloc((n + 1) * sizeof(*kept));
    if (kept == NULL) {
        c->error = GS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!ops[i].dropped) {
            kept[n_kept++] = ops[i];
        }
    }
    struct search_result res;
    search(kept, n_kept, init, c->opts, &res);
    if (res.error != 0) {
        c->error = res.error;
        report(c->out, "key %s: out of memory after %" PRIu64 " states\n", key, res.states);
        verdict = KEY_UNKNOWN;
        goto out;
    }
    verdict = res.verdict;
    if (verdict == KEY_UNKNOWN) {
        report(c->out,
               "key %s: UNKNOWN: search budget exhausted after %" PRIu64
               " states (%zu ops, %zu kept); not a pass\n",
               key, res.states, n, n_kept);
    } else if (verdict == KEY_VIOLATION) {
        format_op(buf, sizeof buf, &kept[res.culprit]);
        format_val(val, sizeof val, res.state);
        report(c->out, "key %s: NOT LINEARIZABLE (%zu ops)\n  no order of the ops explains %s\n",
               key, n, buf);
        report(c->out,
               "  the deepest partial linearization found has %zu ops and leaves the register "
               "at %s%s\n",
               res.depth, val, res.n_tail > 0 ? "; its last ops:" : "");
        for (size_t k = 0; k < res.n_tail; k++) {
            format_op(buf2, sizeof buf2, &kept[res.tail[k]]);
            report(c->out, "    %s\n", buf2);
        }
        report_window(c, kept, n_kept, res.culprit, res.tail, res.n_tail);
    } else if (c->opts->verbose) {
        report(c->out, "key %s: linearizable (%zu ops, %zu searched, %" PRIu64 " states)\n", key, n,
               n_kept, res.states);
    }
out:
    free(producers);
    free(observers);
    free(info_from);
    free(kept);
    return verdict;
}

static int compare_ops(const void *a, const void *b)
{
    const struct reg_op *x = a;
    const struct reg_op *y = b;
    int k = strcmp(x->key, y->key);
    if (k != 0) {
        return k;
    }
    if (x->call != y->call) {
        return x->call < y->call ? -1 : 1;
    }
    return (x->call_line > y->call_line) - (x->call_line < y->call_line);
}

static int compare_event_keys(const void *a, const void *b)
{
    const struct chaos_event *x = *(const struct chaos_event *const *)a;
    const struct chaos_event *y = *(const struct chaos_event *const *)b;
    return strcmp(x->key, y->key);
}

/* The init event of key among inits (sorted by key), or NULL. */
static const struct chaos_event *find_init(const struct chaos_event **inits, size_t n,
                                           const char *key)
{
    struct chaos_event probe;
    snprintf(probe.key, sizeof probe.key, "%s", key);
    const struct chaos_event *p = &probe;
    const struct chaos_event **found = bsearch(&p, inits, n, sizeof(*inits), compare_event_keys);
    return found != NULL ? *found : NULL;
}

static void check_registers(struct checker *c, const struct chaos_history *h)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n_events; i++) {
        const struct chaos_event *ev = &h->events[i];
        n += ev->type == CHAOS_INVOKE &&
             (ev->f == CHAOS_F_READ || ev->f == CHAOS_F_WRITE || ev->f == CHAOS_F_CAS);
    }
    struct reg_op *ops = malloc((n + 1) * sizeof(*ops));
    const struct chaos_event **inits = malloc((h->n_events + 1) * sizeof(*inits));
    size_t n_inits = 0;
    if (ops == NULL || inits == NULL) {
        c->error = GS_ENOMEM;
        report(c->out, "out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < h->n_events; i++) {
        if (h->events[i].type == CHAOS_INIT) {
            inits[n_inits++] = &h->events[i];
        }
    }
    qsort(inits, n_inits, sizeof(*inits), compare_event_keys);
    size_t n_ops = 0;
    size_t n_keys = 0;
    /* Keys are counted over every register op, even those dropped below. */
    for (size_t i = 0; i < h->n_events; i++) {
        const struct chaos_event *ev = &h->events[i];
        if (ev->type != CHAOS_INVOKE ||
            !(ev->f == CHAOS_F_READ || ev->f == CHAOS_F_WRITE || ev->f == CHAOS_F_CAS)) {
            continue;
        }
        size_t ci = h->pair[i];
        const struct chaos_event *comp = ci == CHAOS_NO_EVENT ? NULL : &h->events[ci];
        struct reg_op op = {.key = ev->key,
                            .f = ev->f,
                            .process = ev->process,
                            .call = ev->time_ns,
                            .call_line = ev->line,
                            .v = {.null = true}};
        if (comp != NULL && comp->type == CHAOS_FAIL) {
            op.dropped = true; /* did not take effect; only counted as a key */
        }
        op.info = comp == NULL || comp->type == CHAOS_INFO;
        if (op.info) {
            op.optional = true;
            op.ret = INF_TIME;
            op.ret_line = comp != NULL ? comp->line : 0;
            op.order_line = SIZE_MAX;
            if (ev->f == CHAOS_F_READ) {
                op.dropped = true; /* an unknown read constrains nothing */
            }
        } else {
            op.ret = comp->time_ns;
            op.ret_line = comp->line;
            op.order_line = comp->line;
        }
        if (ev->f == CHAOS_F_READ) {
            if (comp != NULL && comp->type == CHAOS_OK && comp->value.kind == CHAOS_VALUE_INT) {
                op.v = (struct reg_val){.v = comp->value.i, .null = false};
            }
        } else if (ev->f == CHAOS_F_WRITE) {
            op.v = (struct reg_val){.v = ev->value.i, .null = false};
        } else {
            op.v = (struct reg_val){.v = ev->value.pair[0], .null = false};
            op.w = ev->value.pair[1];
        }
        ops[n_ops++] = op;
    }
    qsort(ops, n_ops, sizeof(*ops), compare_ops);
    size_t start = 0;
    for (size_t i = 0; i <= n_ops; i++) {
        if (i < n_ops && (i == start || strcmp(ops[i].key, ops[start].key) == 0)) {
            continue;
        }
        if (i == start) {
            break;
        }
        /* ops[start, i) is one key; keep only what takes part. */
        const char *key = ops[start].key;
        n_keys++;
        size_t m = 0;
        for (size_t k = start; k < i; k++) {
            if (!ops[k].dropped) {
                ops[start + m++] = ops[k];
            }
        }
        struct reg_val init = {.null = true};
        const struct chaos_event *iev = find_init(inits, n_inits, key);
        if (iev != NULL && iev->value.kind == CHAOS_VALUE_INT) {
            init = (struct reg_val){.v = iev->value.i, .null = false};
        }
        enum key_verdict v = check_key(c, key, &ops[start], m, init);
        if (v == KEY_VIOLATION) {
            c->sum->lin_violations++;
        } else if (v == KEY_UNKNOWN) {
            c->sum->unknown++;
            c->keys_unknown++;
        }
        if (c->error != 0) {
            break;
        }
        start = i;
    }
    c->sum->keys = n_keys;
out:
    free(ops);
    free(inits);
}

/* ------------------------------------------------------ acknowledged writes */

struct user_fact {
    int64_t user;
    int64_t other; /* follow: the target; final_exists: 1 or 0 */
    size_t event;  /* index of the completion (finals) or invoke (follows) */
};

static int compare_facts(const void *a, const void *b)
{
    const struct user_fact *x = a;
    const struct user_fact *y = b;
    if (x->user != y->user) {
        return x->user < y->user ? -1 : 1;
    }
    if (x->other != y->other) {
        return x->other < y->other ? -1 : 1;
    }
    return (x->event > y->event) - (x->event < y->event);
}

static void facts_range(const struct user_fact *f, size_t n, int64_t user, size_t *lo, size_t *hi)
{
    size_t a = 0, b = n;
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (f[mid].user < user) {
            a = mid + 1;
        } else {
            b = mid;
        }
    }
    *lo = a;
    while (a < n && f[a].user == user) {
        a++;
    }
    *hi = a;
}

static int compare_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void check_acknowledged(struct checker *c, const struct chaos_history *h)
{
    size_t n = h->n_events;
    struct user_fact *creates = malloc((n + 1) * sizeof(*creates));
    struct user_fact *follows = malloc((n + 1) * sizeof(*follows));
    struct user_fact *exists = malloc((n + 1) * sizeof(*exists));
    struct user_fact *following = malloc((n + 1) * sizeof(*following));
    int64_t **sorted_lists = calloc(n + 1, sizeof(*sorted_lists));
    size_t n_creates = 0, n_follows = 0, n_exists = 0, n_following = 0;
    size_t lost = 0, undecided = 0;
    if (creates == NULL || follows == NULL || exists == NULL || following == NULL ||
        sorted_lists == NULL) {
        c->error = GS_ENOMEM;
        report(c->out, "out of memory\n");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const struct chaos_event *ev = &h->events[i];
        if (ev->type != CHAOS_OK) {
            continue;
        }
        const struct chaos_event *inv = &h->events[h->pair[i]];
        int64_t id = 0;
        switch (ev->f) {
        case CHAOS_F_CREATE:
            if (chaos_key_user_id(ev->key, &id)) {
                creates[n_creates++] = (struct user_fact){.user = id, .event = i};
            }
            break;
        case CHAOS_F_FOLLOW:
            if (chaos_key_user_id(inv->key, &id)) {
                follows[n_follows++] =
                    (struct user_fact){.user = id, .other = inv->value.i, .event = i};
            }
            break;
        case CHAOS_F_FINAL_EXISTS:
            if (chaos_key_user_id(inv->key, &id)) {
                exists[n_exists++] =
                    (struct user_fact){.user = id, .other = ev->value.i, .event = i};
            }
            break;
        case CHAOS_F_FINAL_FOLLOWING:
            if (chaos_key_user_id(inv->key, &id)) {
                int64_t *list = malloc((ev->value.n_list + 1) * sizeof(*list));
                if (list == NULL) {
                    c->error = GS_ENOMEM;
                    report(c->out, "out of memory\n");
                    goto out;
                }
                memcpy(list, ev->value.list, ev->value.n_list * sizeof(*list));
                qsort(list, ev->value.n_list, sizeof(*list), compare_i64);
                sorted_lists[i] = list;
                following[n_following++] = (struct user_fact){.user = id, .event = i};
            }
            break;
        default:
            break;
        }
    }
    qsort(creates, n_creates, sizeof(*creates), compare_facts);
    qsort(follows, n_follows, sizeof(*follows), compare_facts);
    qsort(exists, n_exists, sizeof(*exists), compare_facts);
    qsort(following, n_following, sizeof(*following), compare_facts);

    /* Every acknowledged create exists at the end. */
    size_t n_created = 0;
    for (size_t i = 0; i < n_creates; i++) {
        if (i > 0 && creates[i].user == creates[i - 1].user) {
            continue;
        }
        n_created++;
        size_t lo, hi;
        facts_range(exists, n_exists, creates[i].user, &lo, &hi);
        size_t line = h->events[creates[i].event].line;
        if (lo == hi) {
            if (undecided++ < REPORT_MAX) {
                report(c->out,
                       "UNDECIDED: user %" PRId64 " created ok (line %zu) has no ok final_exists\n",
                       creates[i].user, line);
            }
            continue;
        }
        for (size_t k = lo; k < hi; k++) {
            if (exists[k].other == 0) {
                if (lost++ < REPORT_MAX) {
                    report(c->out,
                           "LOST WRITE: user %" PRId64
                           " created ok (line %zu) but final_exists is false (line %zu)\n",
                           creates[i].user, line, h->events[exists[k].event].line);
                }
                break;
            }
        }
    }
    /* Every acknowledged follow is listed at the end. */
    size_t n_pairs = 0;
    int64_t undecided_actor = 0;
    bool have_undecided_actor = false;
    for (size_t i = 0; i < n_follows; i++) {
        if (i > 0 && follows[i].user == follows[i - 1].user &&
            follows[i].other == follows[i - 1].other) {
            continue;
        }
        n_pairs++;
        size_t lo, hi;
        facts_range(following, n_following, follows[i].user, &lo, &hi);
        size_t line = h->events[follows[i].event].line;
        if (lo == hi) {
            /* Count each actor once: a user lacking its final read. */
            if (!have_undecided_actor || undecided_actor != follows[i].user) {
                have_undecided_actor = true;
                undecided_actor = follows[i].user;
                if (undecided++ < REPORT_MAX) {
                    report(c->out,
                           "UNDECIDED: user %" PRId64
                           " followed ok (line %zu) has no ok final_following\n",
                           follows[i].user, line);
                }
            }
            continue;
        }
        for (size_t k = lo; k < hi; k++) {
            size_t ev = following[k].event;
            const struct chaos_event *fev = &h->events[ev];
            if (bsearch(&follows[i].other, sorted_lists[ev], fev->value.n_list, sizeof(int64_t),
                        compare_i64) == NULL) {
                if (lost++ < REPORT_MAX) {
                    report(
                        c->out,
                        "LOST WRITE: follow %" PRId64 " -> %" PRId64
                        " acknowledged (line %zu) is missing from final_following of user %" PRId64
                        " (line %zu)\n",
                        follows[i].user, follows[i].other, line, follows[i].user, fev->line);
                }
                break;
            }
        }
    }
    if (lost > REPORT_MAX || undecided > REPORT_MAX) {
        report(c->out, "... %zu lost writes and %zu undecided users in all\n", lost, undecided);
    }
    report(c->out, "acknowledged writes: %zu users created, %zu follows; %zu lost, %zu undecided\n",
           n_created, n_pairs, lost, undecided);
    c->sum->lost_writes += lost;
    c->sum->unknown += (int)(undecided > (size_t)INT32_MAX ? INT32_MAX : undecided);
out:
    if (sorted_lists != NULL) {
        for (size_t i = 0; i < n; i++) {
            free(sorted_lists[i]);
        }
    }
    free(sorted_lists);
    free(creates);
    free(follows);
    free(exists);
    free(following);
}

/* ------------------------------------------------------------ entry points */

int chaos_check_history(const struct chaos_history *h, const struct chaos_check_options *opts,
                        FILE *out, struct chaos_check_summary *sum)
{
    struct chaos_check_options defaults;
    struct chaos_check_summary local;
    if (opts == NULL) {
        chaos_check_options_default(&defaults);
        opts = &defaults;
    }
    if (sum == NULL) {
        sum = &local;
    }
    memset(sum, 0, sizeof(*sum));
    sum->events = h->n_events;
    for (size_t i = 0; i < h->n_events; i++) {
        if (h->events[i].type == CHAOS_INVOKE) {
            sum->ops++;
            size_t ci = h->pair[i];
            sum->info_ops += ci == CHAOS_NO_EVENT || h->events[ci].type == CHAOS_INFO;
        }
    }
    struct checker c = {.opts = opts, .out = out, .sum = sum};
    check_registers(&c, h);
    report(out, "linearizability: %zu keys, %zu not linearizable, %zu over the search budget\n",
           sum->keys, sum->lin_violations, c.keys_unknown);
    if (c.error == 0) {
        check_acknowledged(&c, h);
    }
    if (c.error != 0) {
        report(out, "result: ERROR (%s)\n", gs_strerror(c.error));
        return c.error;
    }
    bool pass = sum->lin_violations == 0 && sum->lost_writes == 0 && sum->unknown == 0;
    report(out, "result: %s (%zu events, %zu ops, %zu of unknown outcome)\n",
           pass ? "PASS" : "FAIL", sum->events, sum->ops, sum->info_ops);
    return pass ? 0 : 1;
}

int chaos_check_file_opts(const char *path, const struct chaos_check_options *opts, FILE *out,
                          struct chaos_check_summary *sum)
{
    struct chaos_history *h = NULL;
    char errmsg[256];
    if (sum != NULL) {
        memset(sum, 0, sizeof(*sum));
    }
    int rc = chaos_history_load(path, &h, errmsg, sizeof errmsg);
    if (rc != 0) {
        report(out, "history %s: cannot load: %s (%s)\n", path, errmsg, gs_error_name(rc));
        return rc;
    }
    report(out, "history %s: %zu events\n", path, h->n_events);
    rc = chaos_check_history(h, opts, out, sum);
    chaos_history_free(h);
    return rc;
}

int chaos_check_file(const char *path, FILE *out, struct chaos_check_summary *sum)
{
    return chaos_check_file_opts(path, NULL, out, sum);
}
