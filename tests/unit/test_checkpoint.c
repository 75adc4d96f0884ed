/*
 * Unit tests of cell checkpoints and their transfer (engine/checkpoint.h)
 * over real RocksDB databases in a mkdtemp directory under /tmp (removed
 * afterwards).
 *
 * Two replicas live side by side in the fixture: "src" serves checkpoints
 * from <dir>/src/ckpt, "dst" receives them into <dir>/dst/incoming and
 * installs them over <dir>/dst/db. Entries are built as the Raft group does
 * (CellBatch encoded with entry_encode, applied at increasing indexes); state
 * is compared with cell_fsm_digest().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <ftw.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <rocksdb/c.h>
#include <sodium.h>

#include "engine/cell_fsm.h"
#include "engine/cell_internal.h"
#include "engine/checkpoint.h"
#include "engine/directory_fsm.h"
#include "engine/entry.h"
#include "geoscale/errors.h"

#define CELL 7
#define T0 INT64_C(1700000000000)
#define CHUNK 4096

static const uint8_t hmac_key[32] = "geoscale-test-username-key-0001";

struct node {
    char base[128];
    char path[160]; /* the DB */
    char root[160]; /* checkpoints */
    char incoming[160];
    uint32_t cell_id;
    struct cell_fsm *fsm;
    uint64_t index;
};

struct fx {
    char dir[64];
    struct node src, dst;
};

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static struct cell_fsm *open_at(const char *path, uint32_t cell_id)
{
    struct cell_fsm_options o = {.db_path = path,
                                 .cell_id = cell_id,
                                 .username_key = hmac_key,
                                 .username_key_len = sizeof hmac_key,
                                 .compression = false};
    struct cell_fsm *fsm = NULL;
    char err[256];
    int rv = cell_fsm_open(&o, &fsm, err, sizeof err);
    if (rv != 0) {
        fail_msg("open: %s (%s)", gs_error_name(rv), err);
    }
    return fsm;
}

static void node_init(struct node *n, const char *dir, const char *name, uint32_t cell_id)
{
    snprintf(n->base, sizeof n->base, "%s/%s", dir, name);
    assert_int_equal(mkdir(n->base, 0700), 0);
    snprintf(n->path, sizeof n->path, "%s/db", n->base);
    snprintf(n->root, sizeof n->root, "%s/ckpt", n->base);
    snprintf(n->incoming, sizeof n->incoming, "%s/incoming", n->base);
    n->cell_id = cell_id;
    n->fsm = open_at(n->path, cell_id);
    n->index = 0;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/gs_test_ckpt_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    node_init(&f->src, f->dir, "src", CELL);
    node_init(&f->dst, f->dir, "dst", CELL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    cell_fsm_close(f->src.fsm);
    cell_fsm_close(f->dst.fsm);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Apply one CreateUser entry at the node's next index. */
static void create_user(struct node *n, const char *username, const char *bio)
{
    Geoscale__CreateUserRequest req = GEOSCALE__CREATE_USER_REQUEST__INIT;
    req.username = (char *)username;
    req.bio = (char *)bio;
    size_t blen = geoscale__create_user_request__get_packed_size(&req);
    uint8_t *body = malloc(blen + 1);
    geoscale__create_user_request__pack(&req, body);

    Geoscale__CellCommand cmd = GEOSCALE__CELL_COMMAND__INIT;
    Geoscale__CellCommand *cmds[1] = {&cmd};
    cmd.method = GEOSCALE__METHOD__METHOD_CREATE_USER;
    cmd.body.data = body;
    cmd.body.len = blen;
    Geoscale__CellBatch batch = GEOSCALE__CELL_BATCH__INIT;
    batch.timestamp_ms = T0 + (int64_t)n->index;
    batch.proposer_id = 1;
    batch.n_commands = 1;
    batch.commands = cmds;
    size_t len = entry_encoded_size(&batch);
    uint8_t *buf = malloc(len);
    assert_int_equal(entry_encode(&batch, buf), len);

    struct cell_result res[1];
    size_t nres = 0;
    n->index++;
    assert_int_equal(cell_fsm_apply(n->fsm, n->index, buf, len, res, 1, &nres), 0);
    assert_int_equal(nres, 1);
    assert_int_equal(res[0].status, 0);
    assert_int_equal(cell_fsm_applied_index(n->fsm), n->index);
    free(res[0].body);
    free(buf);
    free(body);
}

/* Users <prefix>000 .. <prefix><count-1>, one entry each. */
static void create_users(struct node *n, const char *prefix, int count)
{
    char name[64], bio[256];
    for (int i = 0; i < count; i++) {
        snprintf(name, sizeof name, "%s%03d", prefix, i);
        memset(bio, 'a' + i % 26, sizeof bio - 1);
        bio[sizeof bio - 1] = '\0';
        create_user(n, name, bio);
    }
}

static void flush(struct node *n)
{
    char *err = NULL;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(cell_fsm_rsm(n->fsm)->db, fo, &err);
    rocksdb_flushoptions_destroy(fo);
    assert_null(err);
}

struct digest {
    uint8_t d[32];
    uint64_t n;
};

static struct digest digest(struct node *n)
{
    struct digest d;
    assert_int_equal(cell_fsm_digest(n->fsm, d.d, &d.n), 0);
    return d;
}

static void assert_digest_equal(struct digest a, struct digest b)
{
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.d, b.d, 32);
}

static void checkpoint(struct node *n, struct checkpoint_info *info)
{
    char err[256] = "";
    int rv = cell_fsm_checkpoint_create(n->fsm, n->root, info, err, sizeof err);
    if (rv != 0) {
        fail_msg("checkpoint: %s (%s)", gs_error_name(rv), err);
    }
}

static void load_latest(struct node *n, struct checkpoint_info *info)
{
    char err[256] = "";
    int rv = checkpoint_latest(n->root, info, err, sizeof err);
    if (rv != 0) {
        fail_msg("latest: %s (%s)", gs_error_name(rv), err);
    }
    assert_true(info->hashed);
}

/* Number of entries of dir whose name ends with suffix (all if ""). */
static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    int n = 0;
    size_t sl = strlen(suffix);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if (l >= sl && strcmp(e->d_name + l - sl, suffix) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static uint64_t property(struct node *n, const char *name)
{
    char *v = rocksdb_property_value(cell_fsm_rsm(n->fsm)->db, name);
    assert_non_null(v);
    uint64_t x = strtoull(v, NULL, 10);
    rocksdb_free(v);
    return x;
}

static bool path_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* BLAKE2b-256 of a whole file, computed here independently. */
static void file_hash(const char *path, uint8_t out[32], uint64_t *size)
{
    crypto_generichash_state st;
    uint8_t buf[8192];
    uint64_t total = 0;
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    crypto_generichash_init(&st, NULL, 0, 32);
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, fp)) > 0) {
        crypto_generichash_update(&st, buf, n);
        total += n;
    }
    fclose(fp);
    crypto_generichash_final(&st, out, 32);
    *size = total;
}

/* Every listed file exists in the checkpoint with that size and hash. */
static void assert_files_match(const char *root, const struct checkpoint_info *info)
{
    char path[512];
    for (size_t i = 0; i < info->n_files; i++) {
        const struct checkpoint_file *cf = &info->files[i];
        uint8_t h[32];
        uint64_t size = 0;
        snprintf(path, sizeof path, "%s/%" PRIu64 "/%s", root, info->applied_index, cf->name);
        file_hash(path, h, &size);
        assert_int_equal(size, cf->size);
        if (info->hashed) {
            assert_memory_equal(h, cf->hash, 32);
        }
    }
}

/*
 * Pull the checkpoint `info` of src into dst's incoming dir, CHUNK bytes at a
 * time, the way the node's transfer would. If corrupt_chunk >= 0, one byte of
 * that chunk (counted from 0) is flipped on its way. *n_chunks receives the
 * number of chunks written. Returns the result of verification; the caller
 * frees *out.
 */
static int pull(struct fx *f, const struct checkpoint_info *info, long corrupt_chunk,
                struct checkpoint_receiver **out, long *n_chunks)
{
    char err[256] = "";
    uint8_t *buf = malloc(CHUNK);
    const char *name = NULL;
    uint64_t offset = 0;
    long chunks = 0;

    assert_int_equal(checkpoint_receive_begin(f->dst.incoming, info, out, err, sizeof err), 0);
    while (checkpoint_receive_next(*out, &name, &offset)) {
        size_t got = 0;
        assert_int_equal(
            checkpoint_read_chunk(f->src.root, info->applied_index, name, offset, buf, CHUNK, &got),
            0);
        assert_true(got > 0);
        if (chunks == corrupt_chunk) {
            buf[got / 2] ^= 0x40;
        }
        assert_int_equal(checkpoint_receive_write(*out, name, offset, buf, got, err, sizeof err),
                         0);
        chunks++;
    }
    free(buf);
    if (n_chunks != NULL) {
        *n_chunks = chunks;
    }
    return checkpoint_receive_verify(*out, err, sizeof err);
}

/* Source with data in SST files and in the memtable/WAL. */
static void fill_source(struct node *n)
{
    create_users(n, "early", 60);
    flush(n);
    create_users(n, "late", 40);
}

/* ---------------------------------------------------------------- tests */

static void test_create_lists_files(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info, loaded, second, loaded2;
    char path[512];

    fill_source(&f->src);
    checkpoint(&f->src, &info);
    assert_int_equal(info.applied_index, 100);
    assert_int_equal(info.identity, CELL);
    assert_false(info.hashed); /* creation never hashes */
    assert_true(info.n_files >= 4);
    bool sst = false, current = false, manifest = false;
    for (size_t i = 0; i < info.n_files; i++) {
        const char *nm = info.files[i].name;
        assert_true(checkpoint_name_valid(nm));
        sst = sst || strstr(nm, ".sst") != NULL;
        current = current || strcmp(nm, "CURRENT") == 0;
        manifest = manifest || strncmp(nm, "MANIFEST-", 9) == 0;
        if (i > 0) {
            assert_true(strcmp(info.files[i - 1].name, nm) < 0);
        }
    }
    assert_true(sst && current && manifest);
    assert_files_match(f->src.root, &info);
    /* The listing is exactly the directory's content. */
    snprintf(path, sizeof path, "%s/100", f->src.root);
    assert_int_equal(count_files(path, ""), (int)info.n_files);

    /* Serving side: hashes computed, and they verify. */
    load_latest(&f->src, &loaded);
    assert_int_equal(loaded.applied_index, 100);
    assert_int_equal(loaded.n_files, info.n_files);
    for (size_t i = 0; i < info.n_files; i++) {
        assert_string_equal(loaded.files[i].name, info.files[i].name);
        assert_int_equal(loaded.files[i].size, info.files[i].size);
    }
    assert_files_match(f->src.root, &loaded);

    /* Cached: creation at the same index reuses the checkpoint, hashes and all. */
    struct checkpoint_info again;
    checkpoint(&f->src, &again);
    assert_true(again.hashed);
    assert_int_equal(again.n_files, loaded.n_files);
    assert_memory_equal(again.files, loaded.files, loaded.n_files * sizeof *loaded.files);
    checkpoint_info_free(&again);

    /* A second checkpoint shares SST files with the first (hard links); its
     * hashes, partly reused from the first, still verify. */
    create_users(&f->src, "more", 10);
    flush(&f->src);
    checkpoint(&f->src, &second);
    assert_int_equal(second.applied_index, 110);
    assert_int_equal(checkpoint_load(f->src.root, 110, &loaded2, NULL, 0), 0);
    assert_true(loaded2.hashed);
    assert_files_match(f->src.root, &loaded2);
    size_t shared = 0;
    for (size_t i = 0; i < loaded2.n_files; i++) {
        for (size_t j = 0; j < loaded.n_files; j++) {
            if (strcmp(loaded2.files[i].name, loaded.files[j].name) == 0 &&
                strstr(loaded.files[j].name, ".sst") != NULL) {
                assert_memory_equal(loaded2.files[i].hash, loaded.files[j].hash, 32);
                shared++;
            }
        }
    }
    assert_true(shared > 0);

    checkpoint_info_free(&info);
    checkpoint_info_free(&loaded);
    checkpoint_info_free(&second);
    checkpoint_info_free(&loaded2);
    checkpoint_info_free(&info); /* twice is fine */
}

static void test_transfer_and_install(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info;
    struct checkpoint_receiver *r = NULL;
    char err[256] = "";
    long chunks = 0;

    fill_source(&f->src);
    checkpoint(&f->src, NULL);
    load_latest(&f->src, &info);
    /* The destination has some state of its own, behind the source. */
    create_users(&f->dst, "stale", 3);

    assert_int_equal(pull(f, &info, -1, &r, &chunks), 0);
    assert_true(chunks > (long)info.n_files); /* small chunks: files in pieces */
    assert_int_equal(
        cell_fsm_install(f->dst.fsm, checkpoint_receive_verified_dir(r), err, sizeof err), 0);
    assert_false(path_exists(f->dst.incoming)); /* renamed into place */
    checkpoint_receive_free(r);
    char old[256];
    snprintf(old, sizeof old, "%s.old", f->dst.path);
    assert_false(path_exists(old));

    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 100);
    assert_digest_equal(digest(&f->dst), digest(&f->src));

    /* Both go on applying the same entries. */
    f->dst.index = 100;
    create_users(&f->src, "after", 5);
    create_users(&f->dst, "after", 5);
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 105);
    assert_digest_equal(digest(&f->dst), digest(&f->src));

    /* The install is durable. */
    struct digest d = digest(&f->dst);
    cell_fsm_close(f->dst.fsm);
    f->dst.fsm = open_at(f->dst.path, CELL);
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 105);
    assert_digest_equal(digest(&f->dst), d);
    checkpoint_info_free(&info);
}

static void test_corrupt_chunk_fails_verification(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info;
    struct checkpoint_receiver *r = NULL;
    char err[256] = "";
    long chunks = 0;

    fill_source(&f->src);
    checkpoint(&f->src, NULL);
    load_latest(&f->src, &info);
    create_users(&f->dst, "mine", 2);
    struct digest before = digest(&f->dst);

    /* Count the chunks once, then corrupt each of a few positions. */
    assert_int_equal(pull(f, &info, -1, &r, &chunks), 0);
    checkpoint_receive_free(r);
    assert_false(path_exists(f->dst.incoming)); /* free removes what was not installed */
    long positions[] = {0, chunks / 2, chunks - 1};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(pull(f, &info, positions[i], &r, NULL), GS_EIO);
        assert_int_equal(checkpoint_receive_verify(r, err, sizeof err), GS_EIO);
        assert_non_null(strstr(err, "mismatch"));
        /* There is no directory to install, and install refuses none. */
        assert_null(checkpoint_receive_verified_dir(r));
        assert_int_equal(
            cell_fsm_install(f->dst.fsm, checkpoint_receive_verified_dir(r), err, sizeof err),
            GS_EINVAL);
        checkpoint_receive_free(r);
    }
    /* Nothing was installed: the destination is as it was and works. */
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 2);
    assert_digest_equal(digest(&f->dst), before);
    create_users(&f->dst, "next", 1);

    /* An incomplete transfer does not verify either. */
    assert_int_equal(checkpoint_receive_begin(f->dst.incoming, &info, &r, err, sizeof err), 0);
    assert_int_equal(checkpoint_receive_verify(r, err, sizeof err), GS_EIO);
    assert_non_null(strstr(err, "incomplete"));

    /* Chunks that do not fit are refused. */
    const struct checkpoint_file *cf = &info.files[0];
    uint8_t buf[16] = {0};
    assert_int_equal(checkpoint_receive_write(r, "no-such-file", 0, buf, 1, err, sizeof err),
                     GS_EINVAL);
    assert_int_equal(checkpoint_receive_write(r, "../escape", 0, buf, 1, err, sizeof err),
                     GS_EINVAL);
    assert_int_equal(checkpoint_receive_write(r, cf->name, cf->size, buf, 1, err, sizeof err),
                     GS_EINVAL);
    assert_int_equal(checkpoint_receive_write(r, cf->name, UINT64_MAX - 2, buf, 8, err, sizeof err),
                     GS_EINVAL);
    if (cf->size > 2) {
        /* A gap: nothing received yet, offset 1. */
        assert_int_equal(checkpoint_receive_write(r, cf->name, 1, buf, 1, err, sizeof err),
                         GS_EINVAL);
    }
    checkpoint_receive_free(r);

    /* Info without hashes, or with a bad name, is refused up front. */
    struct checkpoint_info bad = info;
    bad.hashed = false;
    assert_int_equal(checkpoint_receive_begin(f->dst.incoming, &bad, &r, err, sizeof err),
                     GS_EINVAL);
    assert_null(r);
    bad.hashed = true;
    struct checkpoint_file saved = info.files[0];
    strcpy(info.files[0].name, "../../db/CURRENT");
    assert_int_equal(checkpoint_receive_begin(f->dst.incoming, &bad, &r, err, sizeof err),
                     GS_EINVAL);
    info.files[0] = saved;
    checkpoint_info_free(&info);
}

static void test_install_refuses_wrong_checkpoint(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info;
    struct checkpoint_receiver *r = NULL;
    char err[256] = "";

    /* The source becomes a replica of another cell. */
    cell_fsm_close(f->src.fsm);
    nftw(f->src.base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    node_init(&f->src, f->dir, "src", CELL + 1);
    fill_source(&f->src);
    checkpoint(&f->src, NULL);
    load_latest(&f->src, &info);
    assert_int_equal(info.identity, CELL + 1);

    create_users(&f->dst, "mine", 4);
    struct digest before = digest(&f->dst);
    assert_int_equal(pull(f, &info, -1, &r, NULL), 0); /* the bytes are fine */
    assert_int_equal(
        cell_fsm_install(f->dst.fsm, checkpoint_receive_verified_dir(r), err, sizeof err),
        GS_EINVAL);
    assert_non_null(strstr(err, "cell"));
    assert_true(path_exists(checkpoint_receive_verified_dir(r))); /* left for free() */
    checkpoint_receive_free(r);

    /* The old DB still works, in place. */
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 4);
    assert_digest_equal(digest(&f->dst), before);
    create_users(&f->dst, "still", 2);
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 6);
    cell_fsm_close(f->dst.fsm);
    f->dst.fsm = open_at(f->dst.path, CELL);
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 6);

    /* A checkpoint behind the DB (same cell) is refused too. */
    struct checkpoint_info own;
    checkpoint(&f->dst, NULL); /* at 6 */
    create_users(&f->dst, "ahead", 1);
    before = digest(&f->dst);
    assert_int_equal(checkpoint_load(f->dst.root, 6, &own, err, sizeof err), 0);
    assert_int_equal(checkpoint_receive_begin(f->dst.incoming, &own, &r, err, sizeof err), 0);
    const char *name = NULL;
    uint64_t off = 0;
    uint8_t buf[CHUNK];
    while (checkpoint_receive_next(r, &name, &off)) {
        size_t got = 0;
        assert_int_equal(checkpoint_read_chunk(f->dst.root, 6, name, off, buf, sizeof buf, &got),
                         0);
        assert_int_equal(checkpoint_receive_write(r, name, off, buf, got, err, sizeof err), 0);
    }
    assert_int_equal(checkpoint_receive_verify(r, err, sizeof err), 0);
    assert_int_equal(
        cell_fsm_install(f->dst.fsm, checkpoint_receive_verified_dir(r), err, sizeof err),
        GS_EINVAL);
    assert_non_null(strstr(err, "behind"));
    checkpoint_receive_free(r);
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 7);
    assert_digest_equal(digest(&f->dst), before);

    /* Not a database at all. */
    assert_int_equal(mkdir(f->dst.incoming, 0700), 0);
    assert_int_equal(cell_fsm_install(f->dst.fsm, f->dst.incoming, err, sizeof err), GS_EINVAL);
    assert_int_equal(cell_fsm_install(f->dst.fsm, f->dst.path, err, sizeof err), GS_EINVAL);
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 7);
    create_users(&f->dst, "last", 1);
    checkpoint_info_free(&info);
    checkpoint_info_free(&own);
}

/* A checkpoint of another kind of group (a directory replica's) is refused
 * by a cell, whatever the identity numbers, and nothing changes. */
static void test_install_refuses_other_kind(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info;
    struct checkpoint_receiver *r = NULL;
    char err[256] = "", dir_db[256], dir_root[256];

    snprintf(dir_db, sizeof dir_db, "%s/dirdb", f->dir);
    snprintf(dir_root, sizeof dir_root, "%s/dirckpt", f->dir);
    struct directory_fsm_options o = {.db_path = dir_db, .compression = false};
    struct directory_fsm *dir = NULL;
    assert_int_equal(directory_fsm_open(&o, &dir, err, sizeof err), 0);
    assert_int_equal(checkpoint_create(directory_fsm_rsm(dir), dir_root, NULL, err, sizeof err), 0);
    assert_int_equal(checkpoint_latest(dir_root, &info, err, sizeof err), 0);
    assert_string_equal(info.kind, "directory");
    assert_int_equal(info.identity, 0);

    create_users(&f->dst, "mine", 2);
    struct digest before = digest(&f->dst);
    assert_int_equal(checkpoint_receive_begin(f->dst.incoming, &info, &r, err, sizeof err), 0);
    const char *name = NULL;
    uint64_t off = 0;
    uint8_t buf[CHUNK];
    while (checkpoint_receive_next(r, &name, &off)) {
        size_t got = 0;
        assert_int_equal(
            checkpoint_read_chunk(dir_root, info.applied_index, name, off, buf, sizeof buf, &got),
            0);
        assert_int_equal(checkpoint_receive_write(r, name, off, buf, got, err, sizeof err), 0);
    }
    assert_int_equal(checkpoint_receive_verify(r, err, sizeof err), 0);
    assert_int_equal(
        cell_fsm_install(f->dst.fsm, checkpoint_receive_verified_dir(r), err, sizeof err),
        GS_EINVAL);
    assert_non_null(strstr(err, "cell_id"));
    checkpoint_receive_free(r);
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 2);
    assert_digest_equal(digest(&f->dst), before);
    checkpoint_info_free(&info);
    directory_fsm_close(dir);
}

/* The .meta of format 1 (cells only: a cell_id line) is still read, as a
 * cell's; new ones say kind and identity. */
static void test_meta_format_1_still_read(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info, old;
    char path[512], line[256], err[256] = "";

    create_users(&f->src, "u", 5);
    checkpoint(&f->src, &info);
    snprintf(path, sizeof path, "%s/5.meta", f->src.root);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "geoscale-checkpoint 2\n");
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "kind cell\n");
    assert_non_null(fgets(line, sizeof line, fp));
    assert_string_equal(line, "identity 7\n");
    fclose(fp);

    /* Rewrite it as format 1 wrote it. */
    fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "geoscale-checkpoint 1\ncell_id %d\napplied_index 5\nfiles %zu\n", CELL,
            info.n_files);
    for (size_t i = 0; i < info.n_files; i++) {
        fprintf(fp, "%s %" PRIu64 " -\n", info.files[i].name, info.files[i].size);
    }
    fclose(fp);
    assert_int_equal(checkpoint_load(f->src.root, 5, &old, err, sizeof err), 0);
    assert_string_equal(old.kind, "cell");
    assert_int_equal(old.identity, CELL);
    assert_true(old.hashed);
    assert_files_match(f->src.root, &old);
    checkpoint_info_free(&old);

    /* A bad kind line is refused. */
    fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "geoscale-checkpoint 2\nkind Cell/x\nidentity 7\napplied_index 5\nfiles 0\n");
    fclose(fp);
    assert_int_equal(checkpoint_load(f->src.root, 5, &old, err, sizeof err), GS_EIO);
    checkpoint_info_free(&info);
}

static void test_read_chunk_rejects_bad_names(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info;
    char path[512], secret[512];
    uint8_t buf[64];
    size_t got = 99;

    create_users(&f->src, "u", 5);
    checkpoint(&f->src, &info);
    const uint64_t idx = info.applied_index;

    /* A file next to the checkpoints that must never be served. */
    snprintf(secret, sizeof secret, "%s/secret", f->src.root);
    FILE *fp = fopen(secret, "w");
    assert_non_null(fp);
    fputs("not for peers", fp);
    fclose(fp);

    static const char *const bad[] = {
        "",          ".",        "..",   "../secret",  "/etc/passwd", "a/b",
        "./CURRENT", "CURRENT/", "x\ny", "..\\secret", "CURRENT ",    "%2e%2e",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        got = 99;
        assert_int_equal(checkpoint_read_chunk(f->src.root, idx, bad[i], 0, buf, sizeof buf, &got),
                         GS_EINVAL);
        assert_int_equal(got, 0);
    }
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(checkpoint_read_chunk(f->src.root, idx, longname, 0, buf, sizeof buf, &got),
                     GS_EINVAL);
    assert_int_equal(checkpoint_read_chunk(f->src.root, idx, NULL, 0, buf, sizeof buf, &got),
                     GS_EINVAL);

    /* A symbolic link planted in the checkpoint is not followed. */
    snprintf(path, sizeof path, "%s/%" PRIu64 "/link", f->src.root, idx);
    assert_int_equal(symlink(secret, path), 0);
    assert_int_equal(checkpoint_read_chunk(f->src.root, idx, "link", 0, buf, sizeof buf, &got),
                     GS_EINVAL);
    assert_int_equal(got, 0);

    /* A valid name works; past the end reads nothing; unknown ones are not found. */
    assert_int_equal(checkpoint_read_chunk(f->src.root, idx, "CURRENT", 0, buf, sizeof buf, &got),
                     0);
    assert_true(got > 0 && got < sizeof buf);
    assert_memory_equal(buf, "MANIFEST-", 9);
    assert_int_equal(
        checkpoint_read_chunk(f->src.root, idx, "CURRENT", 1000, buf, sizeof buf, &got), 0);
    assert_int_equal(got, 0);
    assert_int_equal(checkpoint_read_chunk(f->src.root, idx, "NOPE", 0, buf, sizeof buf, &got),
                     GS_ENOTFOUND);
    assert_int_equal(
        checkpoint_read_chunk(f->src.root, idx + 1, "CURRENT", 0, buf, sizeof buf, &got),
        GS_ENOTFOUND);

    assert_true(checkpoint_name_valid("000012.sst"));
    assert_true(checkpoint_name_valid("MANIFEST-000005"));
    assert_true(checkpoint_name_valid("OPTIONS-000007"));
    assert_false(checkpoint_name_valid(longname));
    checkpoint_info_free(&info);
}

static void test_keeps_two(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info;
    char path[512];
    struct stat st;

    /* Leftovers of crashes and a file that is not ours. */
    assert_int_equal(mkdir(f->src.root, 0755), 0);
    snprintf(path, sizeof path, "%s/1.tmp", f->src.root);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/2", f->src.root); /* no .meta: incomplete */
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/2.meta.Ab12Cd", f->src.root);
    fclose(fopen(path, "w"));
    snprintf(path, sizeof path, "%s/README", f->src.root);
    fclose(fopen(path, "w"));

    static const char *const prefix[] = {"", "one", "two", "three", "four"};
    for (int i = 1; i <= 4; i++) {
        create_users(&f->src, prefix[i], i);
        flush(&f->src);
        checkpoint(&f->src, &info);
        checkpoint_info_free(&info);
        int expect = i < 2 ? 1 : 2;
        assert_int_equal(count_files(f->src.root, ".meta"), expect);
    }
    /* Indexes 1, 3, 6, 10: the newest two remain, nothing else of ours. */
    assert_int_equal(count_files(f->src.root, ""), 2 + 2 + 1);
    snprintf(path, sizeof path, "%s/10", f->src.root);
    assert_int_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/6.meta", f->src.root);
    assert_int_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/README", f->src.root);
    assert_int_equal(stat(path, &st), 0);
    snprintf(path, sizeof path, "%s/3", f->src.root);
    assert_false(path_exists(path));

    load_latest(&f->src, &info);
    assert_int_equal(info.applied_index, 10);
    checkpoint_info_free(&info);

    /* A checkpoint that disappeared is "not found" to a server. */
    uint8_t buf[8];
    size_t got = 0;
    assert_int_equal(checkpoint_load(f->src.root, 3, &info, NULL, 0), GS_ENOTFOUND);
    assert_int_equal(checkpoint_read_chunk(f->src.root, 3, "CURRENT", 0, buf, sizeof buf, &got),
                     GS_ENOTFOUND);
}

static void test_no_memtable_flush(void **state)
{
    struct fx *f = *state;
    struct checkpoint_info info;
    struct checkpoint_receiver *r = NULL;
    char path[512], err[256] = "";

    create_users(&f->src, "mem", 50);
    uint64_t entries = property(&f->src, "rocksdb.num-entries-active-mem-table");
    assert_true(entries >= 50);
    assert_int_equal(count_files(f->src.path, ".sst"), 0);

    checkpoint(&f->src, &info);
    /* A flush would have written an SST file and emptied the memtable. */
    assert_int_equal(count_files(f->src.path, ".sst"), 0);
    assert_int_equal(property(&f->src, "rocksdb.num-entries-active-mem-table"), entries);
    assert_int_equal(property(&f->src, "rocksdb.num-immutable-mem-table"), 0);
    snprintf(path, sizeof path, "%s/%" PRIu64, f->src.root, info.applied_index);
    assert_int_equal(count_files(path, ".sst"), 0);
    bool wal = false;
    for (size_t i = 0; i < info.n_files; i++) {
        wal = wal || (strstr(info.files[i].name, ".log") != NULL && info.files[i].size > 0);
    }
    assert_true(wal);
    checkpoint_info_free(&info);

    /* And yet the checkpoint holds everything: the WAL carries it. */
    load_latest(&f->src, &info);
    assert_int_equal(pull(f, &info, -1, &r, NULL), 0);
    assert_int_equal(
        cell_fsm_install(f->dst.fsm, checkpoint_receive_verified_dir(r), err, sizeof err), 0);
    checkpoint_receive_free(r);
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 50);
    assert_digest_equal(digest(&f->dst), digest(&f->src));
    checkpoint_info_free(&info);
}

static void test_swap_recovery_at_open(void **state)
{
    struct fx *f = *state;
    char old[256];
    snprintf(old, sizeof old, "%s.old", f->dst.path);

    create_users(&f->dst, "keep", 3);
    struct digest d = digest(&f->dst);
    cell_fsm_close(f->dst.fsm);

    /* Crash between the two renames: only <db>.old exists. */
    assert_int_equal(rename(f->dst.path, old), 0);
    f->dst.fsm = open_at(f->dst.path, CELL);
    assert_false(path_exists(old));
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 3);
    assert_digest_equal(digest(&f->dst), d);
    cell_fsm_close(f->dst.fsm);

    /* Crash after the second rename: <db> is the new DB, <db>.old a leftover. */
    assert_int_equal(mkdir(old, 0700), 0);
    snprintf(old + strlen(old), sizeof old - strlen(old), "/000001.sst");
    fclose(fopen(old, "w"));
    f->dst.fsm = open_at(f->dst.path, CELL);
    snprintf(old, sizeof old, "%s.old", f->dst.path);
    assert_false(path_exists(old));
    assert_int_equal(cell_fsm_applied_index(f->dst.fsm), 3);
    assert_digest_equal(digest(&f->dst), d);

    /* The same with a trailing slash in the path. */
    char err[128];
    char slashed[200];
    snprintf(slashed, sizeof slashed, "%s/", f->dst.path);
    assert_int_equal(mkdir(old, 0700), 0);
    assert_int_equal(checkpoint_recover_swap(slashed, err, sizeof err), 0);
    assert_false(path_exists(old));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_create_lists_files),
        T(test_transfer_and_install),
        T(test_corrupt_chunk_fails_verification),
        T(test_install_refuses_wrong_checkpoint),
        T(test_install_refuses_other_kind),
        T(test_meta_format_1_still_read),
        T(test_read_chunk_rejects_bad_names),
        T(test_keeps_two),
        T(test_no_memtable_flush),
        T(test_swap_recovery_at_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
