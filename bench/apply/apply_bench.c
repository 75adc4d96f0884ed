/*
 * geoscale-apply-bench: what applying UpdateUser commands costs one cell
 * replica's state machine, without Raft, the network or other replicas.
 *
 * It opens a cell (engine/cell_fsm.h) in a fresh directory, creates the
 * users, then applies entries of --per-entry UpdateUser commands, each
 * writing a new bio of --value-size bytes to a uniformly chosen user, as
 * commands of --clients clients (each with its own increasing client_seq,
 * so every command stores an idempotency row). Every --ack-every entries
 * one more command acknowledges the metadata outbox up to the rows of the
 * entry before, as a cell's shipper does (0: never, as in a lone cell).
 * Batch time advances --ms-per-entry per entry, so a run longer than the
 * cell's result TTL (one hour of batch time) also expires idempotency rows,
 * as a cell does after its first hour of writes.
 *
 * Progress (every --report entries) and the result go to stderr and stdout:
 * wall and CPU microseconds per command (CPU of the whole process, RocksDB's
 * flush and compaction threads included).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/cell_fsm.h"
#include "engine/entry.h"
#include "engine/numparse.h"
#include "geoscale/errors.h"

#define MAX_PER_ENTRY 4096

static const uint8_t username_key[32] = "geoscale-apply-bench-username-k";

struct opts {
    uint64_t users, per_entry, entries, value_size, clients, ack_every, ms_per_entry, report;
    const char *dir;
    bool keep;
};

struct bench {
    struct cell_fsm *fsm;
    uint64_t index;
    int64_t now_ms;
    Geoscale__CellCommand cmd[MAX_PER_ENTRY + 1];
    Geoscale__CellCommand *ptr[MAX_PER_ENTRY + 1];
    uint8_t *body[MAX_PER_ENTRY + 1];
    struct cell_result res[MAX_PER_ENTRY + 1];
    size_t n;
};

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("geoscale-apply-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void usage(FILE *f)
{
    fputs("usage: geoscale-apply-bench [options]\n"
          "Applies UpdateUser commands to one cell replica's state machine (RocksDB in a\n"
          "fresh directory), without Raft or the network, and prints the cost per command.\n"
          "\n"
          "  --users N         users created first, each with a bio of --value-size (10000)\n"
          "  --per-entry N     UpdateUser commands per Raft entry, 1..4096 (64)\n"
          "  --entries N       entries applied after the setup (4000)\n"
          "  --value-size N    bytes of each new bio, 0..16384 (1024)\n"
          "  --clients N       clients the commands are spread over, round robin (256)\n"
          "  --ack-every N     one outbox acknowledgement every N entries; 0: none, as in a\n"
          "                    lone cell (8)\n"
          "  --ms-per-entry N  batch time between entries; results expire after 3600000 ms\n"
          "                    of it (4)\n"
          "  --report N        progress on stderr every N entries; 0: none (500)\n"
          "  --dir PATH        parent of the temporary database directory (/tmp)\n"
          "  --keep            leave the database in place\n"
          "  --help            this text\n",
          f);
}

static uint64_t parse_u64(const char *name, const char *v, uint64_t min, uint64_t max)
{
    uint64_t x = 0;
    if (gs_parse_u64(v, min, max, &x) != 0) {
        die("%s: expected an integer in %" PRIu64 "..%" PRIu64 ", got '%s'", name, min, max, v);
    }
    return x;
}

static void parse(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){10000, 64, 4000, 1024, 256, 8, 4, 500, "/tmp", false};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--keep") == 0) {
            o->keep = true;
            continue;
        }
        if (i + 1 >= argc) {
            die("%s: unknown option or missing value (see --help)", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--users") == 0) {
            o->users = parse_u64(a, v, 1, 100000000);
        } else if (strcmp(a, "--per-entry") == 0) {
            o->per_entry = parse_u64(a, v, 1, MAX_PER_ENTRY);
        } else if (strcmp(a, "--entries") == 0) {
            o->entries = parse_u64(a, v, 1, UINT32_MAX);
        } else if (strcmp(a, "--value-size") == 0) {
            o->value_size = parse_u64(a, v, 0, 16384);
        } else if (strcmp(a, "--clients") == 0) {
            o->clients = parse_u64(a, v, 1, 1000000);
        } else if (strcmp(a, "--ack-every") == 0) {
            o->ack_every = parse_u64(a, v, 0, UINT32_MAX);
        } else if (strcmp(a, "--ms-per-entry") == 0) {
            o->ms_per_entry = parse_u64(a, v, 0, 86400000);
        } else if (strcmp(a, "--report") == 0) {
            o->report = parse_u64(a, v, 0, UINT32_MAX);
        } else if (strcmp(a, "--dir") == 0) {
            o->dir = v;
        } else {
            die("%s: unknown option (see --help)", a);
        }
    }
}

static double seconds(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void add(struct bench *b, uint32_t method, uint64_t client_id, uint64_t client_seq,
                const ProtobufCMessage *msg)
{
    size_t i = b->n++;
    size_t sz = protobuf_c_message_get_packed_size(msg);
    geoscale__cell_command__init(&b->cmd[i]);
    b->cmd[i].method = method;
    b->cmd[i].client_id = client_id;
    b->cmd[i].client_seq = client_seq;
    b->body[i] = malloc(sz + 1);
    if (b->body[i] == NULL) {
        die("out of memory");
    }
    protobuf_c_message_pack(msg, b->body[i]);
    b->cmd[i].body.data = b->body[i];
    b->cmd[i].body.len = sz;
    b->ptr[i] = &b->cmd[i];
}

/* Apply the commands added as the next entry; every one must succeed.
 * ids (if not NULL) receives the user id of each CreateUser. */
static void apply(struct bench *b, uint64_t *ids)
{
    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    batch.timestamp_ms = b->now_ms;
    batch.proposer_id = 1;
    batch.n_commands = b->n;
    batch.commands = b->ptr;
    size_t len = entry_encoded_size(&batch), nres = 0;
    uint8_t *buf = malloc(len);
    if (buf == NULL) {
        die("out of memory");
    }
    entry_encode(&batch, buf);
    int rv = cell_fsm_apply(b->fsm, ++b->index, buf, len, b->res, b->n, &nres);
    if (rv != 0 || nres != b->n) {
        die("entry %" PRIu64 ": %s", b->index, gs_error_name(rv));
    }
    for (size_t i = 0; i < nres; i++) {
        if (b->res[i].status != 0) {
            die("entry %" PRIu64 ", command %zu: %s", b->index, i, gs_error_name(b->res[i].status));
        }
        if (ids != NULL) {
            Geoscale__CreateUserResponse *r =
                geoscale__create_user_response__unpack(NULL, b->res[i].len, b->res[i].body);
            if (r == NULL) {
                die("entry %" PRIu64 ": bad CreateUser response", b->index);
            }
            ids[i] = r->user_id;
            geoscale__create_user_response__free_unpacked(r, NULL);
        }
        free(b->res[i].body);
        free(b->body[i]);
    }
    b->n = 0;
    free(buf);
}

int main(int argc, char **argv)
{
    struct opts o;
    parse(argc, argv, &o);

    char dir[4096];
    int w = snprintf(dir, sizeof dir, "%s/geoscale-apply-bench-XXXXXX", o.dir);
    if (w < 0 || (size_t)w >= sizeof dir || mkdtemp(dir) == NULL) {
        die("%s: cannot create a directory there: %s", o.dir, strerror(errno));
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/db", dir);
    struct cell_fsm_options fo = {.db_path = path,
                                  .cell_id = 1,
                                  .username_key = username_key,
                                  .username_key_len = sizeof username_key,
                                  .compression = true,
                                  .region = ""};
    static struct bench b;
    char err[256];
    if (cell_fsm_open(&fo, &b.fsm, err, sizeof err) != 0) {
        die("open %s: %s", path, err);
    }
    b.now_ms = INT64_C(1700000000000);

    uint64_t *ids = calloc(o.users, sizeof *ids);
    uint64_t *seqs = calloc(o.clients, sizeof *seqs);
    char *bio = malloc(o.value_size + 1);
    if (ids == NULL || seqs == NULL || bio == NULL) {
        die("out of memory");
    }
    memset(bio, 'a', o.value_size);
    bio[o.value_size] = '\0';

    fprintf(stderr, "creating %" PRIu64 " users in %s\n", o.users, path);
    uint64_t outbox = 0;
    for (uint64_t u = 0; u < o.users;) {
        char names[64][32];
        size_t n = 0;
        for (; n < 64 && u + n < o.users; n++) {
            Geoscale__CreateUserRequest c = GEOSCALE__CREATE_USER_REQUEST__INIT;
            snprintf(names[n], sizeof names[n], "user%" PRIu64, u + n);
            c.username = names[n];
            c.bio = bio;
            add(&b, GEOSCALE__METHOD__METHOD_CREATE_USER, 0, 0, &c.base);
        }
        apply(&b, ids + u);
        u += n;
        outbox += n;
        b.now_ms += (int64_t)o.ms_per_entry;
    }

    Geoscale__ProfileField bio_field = GEOSCALE__PROFILE_FIELD__PROFILE_FIELD_BIO;
    uint64_t rng = 0x9E3779B97F4A7C15ull, client = 0, done = 0;
    double w0 = seconds(CLOCK_MONOTONIC), c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    double lw = w0, lc = c0;
    for (uint64_t e = 0; e < o.entries; e++) {
        for (uint64_t i = 0; i < o.per_entry; i++) {
            Geoscale__UpdateUserRequest r = GEOSCALE__UPDATE_USER_REQUEST__INIT;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            r.user_id = ids[rng % o.users];
            r.n_fields = 1;
            r.fields = &bio_field;
            if (o.value_size > 0) {
                bio[0] = (char)('a' + rng % 26);
            }
            r.bio = bio;
            client = (client + 1) % o.clients;
            add(&b, GEOSCALE__METHOD__METHOD_UPDATE_USER, 1000 + client, ++seqs[client], &r.base);
        }
        if (o.ack_every != 0 && e % o.ack_every == o.ack_every - 1) {
            Geoscale__OutboxAckRequest a = GEOSCALE__OUTBOX_ACK_REQUEST__INIT;
            a.up_to_seq = outbox; /* the rows of the entries before this one */
            add(&b, GEOSCALE__METHOD__METHOD_OUTBOX_ACK, 0, 0, &a.base);
        }
        apply(&b, NULL);
        outbox += o.per_entry;
        done += o.per_entry;
        b.now_ms += (int64_t)o.ms_per_entry;
        if (o.report != 0 && (e + 1) % o.report == 0) {
            double wn = seconds(CLOCK_MONOTONIC), cn = seconds(CLOCK_PROCESS_CPUTIME_ID);
            double k = 1e6 / (double)(o.report * o.per_entry);
            fprintf(stderr, "entries %" PRIu64 "/%" PRIu64 ": %.2f us/command wall, %.2f cpu\n",
                    e + 1, o.entries, (wn - lw) * k, (cn - lc) * k);
            lw = wn;
            lc = cn;
        }
    }
    double w1 = seconds(CLOCK_MONOTONIC), c1 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    printf("commands %" PRIu64 ", value %" PRIu64 " B, %" PRIu64
           " per entry: %.2f us/command wall, %.2f us cpu, %.0f commands/s\n",
           done, o.value_size, o.per_entry, (w1 - w0) * 1e6 / (double)done,
           (c1 - c0) * 1e6 / (double)done, (double)done / (w1 - w0));

    cell_fsm_close(b.fsm);
    if (o.keep) {
        fprintf(stderr, "kept %s\n", dir);
    } else {
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    free(ids);
    free(seqs);
    free(bio);
    return 0;
}
