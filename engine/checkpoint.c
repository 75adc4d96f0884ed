/*
 * Checkpoints of a replicated state machine's DB (any struct rsm: cell,
 * directory, metadata) and their transfer (contract in checkpoint.h).
 *
 * Creation. rocksdb_checkpoint_create() with log_size_for_flush = UINT64_MAX
 * never flushes the memtables: it hard-links the live SST files, copies the
 * MANIFEST and the live WAL (synced), and renames its staging directory
 * <index>.tmp into place. A write of the memtables would stall the loop
 * thread for as long as the memtables take to write; the WAL copy costs the
 * size of the WAL tail, which the memtable size bounds. We then list the
 * files (name, size) and write <index>.meta, fsynced and renamed into place,
 * which is what makes the checkpoint visible to the serving side.
 *
 * The .meta file is text, versioned:
 *
 *   geoscale-checkpoint 2
 *   kind directory
 *   identity 0
 *   applied_index 42
 *   files 5
 *   000012.sst 1048576 <64 hex digits, or - before hashing>
 *   ...
 *
 * kind and identity are the rsm's (a cell and its id; the directory or the
 * metadata group and its shard). Format 1, written when only cells kept
 * checkpoints, had one line "cell_id 7" instead and is still read, as a cell's.
 *
 * Serving. checkpoint_load() hashes what the .meta does not have yet,
 * reusing the hash of an SST that another complete checkpoint links (same
 * device and inode: the same immutable file), and caches the result by
 * rewriting the .meta (temporary file, rename). Two servers hashing the same
 * checkpoint at once write the same content; the last rename wins.
 *
 * Receiving. Chunks are written with pwrite at their offset; each file's
 * received prefix is tracked so a gap is refused and a repeated chunk is
 * harmless. Verification re-reads the files from disk, so what is verified
 * is exactly what will be installed, whatever order the chunks came in.
 *
 * Install. The new DB is checked (schema, the rsm's identity, applied index)
 * through a read-only open (rsm_probe) before the live one is touched, so a
 * wrong checkpoint changes nothing. The live DB is closed and reopened by
 * the base (rsm_detach, rsm_attach), which re-checks the identity. The swap
 * is two renames, each followed by an fsync of the parent directory:
 *
 *   1. <db> -> <db>.old         crash here: <db> missing, <db>.old = old DB
 *   2. <verified> -> <db>       crash here: <db> = new DB, <db>.old leftover
 *   3. remove <db>.old
 *
 * checkpoint_recover_swap(), which rsm_open() runs before opening,
 * turns the first state back into the old DB and removes the leftover of the
 * second, so a crash at any point leaves a complete DB at <db>. If restore()
 * was interrupted with the old DB, libraft restores the same snapshot again
 * at start and the transfer is repeated; with the new DB, the restore finds
 * its index already applied.
 */
#include "checkpoint.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/c.h>
#include <sodium.h>

#include "geoscale/errors.h"
#include "log.h"
#include "rsm.h"

#define META_MAGIC "geoscale-checkpoint"
#define META_SUFFIX ".meta"
#define STAGING_SUFFIX ".tmp" /* RocksDB's staging directory of a checkpoint */
#define OLD_SUFFIX ".old"
#define META_LINE_MAX 512
#define META_FILES_MAX 10000000 /* sanity bound when parsing */
#define HASH_BUF_SIZE (1u << 20)

_Static_assert(CHECKPOINT_KEEP >= 1, "the checkpoint just made is always kept");

struct checkpoint_receiver {
    char *dir;
    struct checkpoint_info info; /* files sorted by name */
    uint64_t *received;          /* per file: bytes received from offset 0 */
    size_t cursor;               /* first file not fully received */
    bool verified;
};

/* ---------------------------------------------------------------- helpers */

static int fail(char *errmsg, size_t len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *errmsg, size_t len, int code, const char *fmt, ...)
{
    if (errmsg != NULL && len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errmsg, len, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* snprintf into a PATH_MAX buffer; false if it did not fit. */
static bool path_fmt(char out[PATH_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool path_fmt(char out[PATH_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    return n >= 0 && n < PATH_MAX;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

/* Remove a file or a directory tree; a missing path is fine. 0 or -1. */
static int rm_tree(const char *path)
{
    if (!exists(path)) {
        return 0;
    }
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

static int fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rv = fsync(fd);
    close(fd);
    return rv;
}

/* fsync the directory holding path. */
static int fsync_parent(const char *path)
{
    char parent[PATH_MAX];
    if (!path_fmt(parent, "%s", path)) {
        return -1;
    }
    size_t n = strlen(parent);
    while (n > 1 && parent[n - 1] == '/') {
        parent[--n] = '\0';
    }
    char *slash = strrchr(parent, '/');
    if (slash == NULL) {
        strcpy(parent, ".");
    } else if (slash == parent) {
        parent[1] = '\0';
    } else {
        *slash = '\0';
    }
    return fsync_path(parent);
}

/* Parse a whole string of decimal digits (no sign, no spaces). */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* <db_path>.old, trailing slashes of db_path ignored. */
static bool old_path(char out[PATH_MAX], const char *db_path)
{
    size_t n = strlen(db_path);
    while (n > 1 && db_path[n - 1] == '/') {
        n--;
    }
    return n < (size_t)INT_MAX && path_fmt(out, "%.*s" OLD_SUFFIX, (int)n, db_path);
}

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct checkpoint_file *)a)->name,
                  ((const struct checkpoint_file *)b)->name);
}

/* Index of `name` in files sorted by name, or -1. */
static ptrdiff_t find_file(const struct checkpoint_info *info, const char *name)
{
    size_t lo = 0, hi = info->n_files;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, info->files[mid].name);
        if (c == 0) {
            return (ptrdiff_t)mid;
        }
        if (c < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return -1;
}

/* Hash the rest of fd from its current position; *size receives the count
 * of bytes read. 0, GS_ENOMEM or GS_EIO. */
static int hash_fd(int fd, uint8_t hash[CHECKPOINT_HASH_LEN], uint64_t *size)
{
    crypto_generichash_state st;
    uint8_t *buf = malloc(HASH_BUF_SIZE);
    uint64_t total = 0;
    if (buf == NULL) {
        return GS_ENOMEM;
    }
    crypto_generichash_init(&st, NULL, 0, CHECKPOINT_HASH_LEN);
    for (;;) {
        ssize_t n = read(fd, buf, HASH_BUF_SIZE);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            free(buf);
            return GS_EIO;
        }
        if (n == 0) {
            break;
        }
        crypto_generichash_update(&st, buf, (unsigned long long)n);
        total += (uint64_t)n;
    }
    free(buf);
    crypto_generichash_final(&st, hash, CHECKPOINT_HASH_LEN);
    *size = total;
    return 0;
}

void checkpoint_info_free(struct checkpoint_info *info)
{
    if (info == NULL) {
        return;
    }
    free(info->files);
    memset(info, 0, sizeof *info);
}

bool checkpoint_name_valid(const char *name)
{
    size_t n = 0;
    if (name == NULL) {
        return false;
    }
    for (; name[n] != '\0'; n++) {
        char c = name[n];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok || n + 1 >= CHECKPOINT_NAME_MAX) {
            return false;
        }
    }
    return n > 0 && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* ---------------------------------------------------------------- .meta file */

static bool meta_path(char out[PATH_MAX], const char *root, uint64_t index)
{
    return path_fmt(out, "%s/%" PRIu64 META_SUFFIX, root, index);
}

static bool dir_path(char out[PATH_MAX], const char *root, uint64_t index)
{
    return path_fmt(out, "%s/%" PRIu64, root, index);
}

/* Write info as <root>/<index>.meta through a temporary file and a rename.
 * durable: also fsync the root (the rename is then on disk). */
static int meta_write(const char *root, const struct checkpoint_info *info, bool durable,
                      char *errmsg, size_t len)
{
    char tmp[PATH_MAX], final[PATH_MAX];
    if (!meta_path(final, root, info->applied_index) ||
        !path_fmt(tmp, "%s/%" PRIu64 META_SUFFIX ".XXXXXX", root, info->applied_index)) {
        return fail(errmsg, len, GS_EINVAL, "checkpoint root: path too long");
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        return fail(errmsg, len, GS_EIO, "cannot create %s: %s", tmp, strerror(errno));
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL) {
        close(fd);
        unlink(tmp);
        return fail(errmsg, len, GS_EIO, "cannot write %s", tmp);
    }
    fprintf(f,
            META_MAGIC " %d\nkind %s\nidentity %" PRIu64 "\napplied_index %" PRIu64 "\nfiles %zu\n",
            CHECKPOINT_META_FORMAT, info->kind, info->identity, info->applied_index, info->n_files);
    for (size_t i = 0; i < info->n_files; i++) {
        const struct checkpoint_file *cf = &info->files[i];
        fprintf(f, "%s %" PRIu64 " ", cf->name, cf->size);
        if (info->hashed) {
            for (size_t j = 0; j < CHECKPOINT_HASH_LEN; j++) {
                fprintf(f, "%02x", cf->hash[j]);
            }
            fputc('\n', f);
        } else {
            fputs("-\n", f);
        }
    }
    bool ok = fflush(f) == 0 && !ferror(f) && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, final) != 0) {
        int e = errno;
        unlink(tmp);
        return fail(errmsg, len, GS_EIO, "cannot write %s: %s", final, strerror(e));
    }
    if (durable && fsync_path(root) != 0) {
        return fail(errmsg, len, GS_EIO, "cannot sync %s: %s", root, strerror(errno));
    }
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Parse one "name size hash" line into cf; *hashed tells whether it had a
 * hash. */
static bool meta_parse_file(char *line, struct checkpoint_file *cf, bool *hashed)
{
    char *save = NULL;
    char *name = strtok_r(line, " \n", &save);
    char *size = strtok_r(NULL, " \n", &save);
    char *hash = strtok_r(NULL, " \n", &save);
    if (name == NULL || size == NULL || hash == NULL || strtok_r(NULL, " \n", &save) != NULL ||
        !checkpoint_name_valid(name) || !parse_u64(size, strlen(size), &cf->size)) {
        return false;
    }
    strcpy(cf->name, name); /* fits: checked by checkpoint_name_valid */
    if (strcmp(hash, "-") == 0) {
        *hashed = false;
        return true;
    }
    if (strlen(hash) != 2 * CHECKPOINT_HASH_LEN) {
        return false;
    }
    for (size_t j = 0; j < CHECKPOINT_HASH_LEN; j++) {
        int hi = hex_digit(hash[2 * j]), lo = hex_digit(hash[2 * j + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        cf->hash[j] = (uint8_t)(hi << 4 | lo);
    }
    *hashed = true;
    return true;
}

/* Read the header line "key value" with a u64 value. */
static bool meta_header(FILE *f, const char *key, uint64_t *v)
{
    char line[META_LINE_MAX];
    size_t klen = strlen(key);
    if (fgets(line, sizeof line, f) == NULL || strncmp(line, key, klen) != 0 || line[klen] != ' ') {
        return false;
    }
    const char *val = line + klen + 1;
    size_t n = strcspn(val, "\n");
    return val[n] == '\n' && parse_u64(val, n, v);
}

/* Read the header line "kind <name>", a name of [a-z] that fits kind. */
static bool meta_header_kind(FILE *f, char kind[CHECKPOINT_KIND_MAX])
{
    char line[META_LINE_MAX];
    if (fgets(line, sizeof line, f) == NULL || strncmp(line, "kind ", 5) != 0) {
        return false;
    }
    const char *val = line + 5;
    size_t n = strspn(val, "abcdefghijklmnopqrstuvwxyz");
    if (n == 0 || n >= CHECKPOINT_KIND_MAX || val[n] != '\n') {
        return false;
    }
    memcpy(kind, val, n);
    kind[n] = '\0';
    return true;
}

/* Read <root>/<index>.meta (no hashing). 0, GS_ENOTFOUND, GS_ENOMEM or GS_EIO. */
static int meta_read(const char *root, uint64_t index, struct checkpoint_info *out, char *errmsg,
                     size_t len)
{
    char path[PATH_MAX], line[META_LINE_MAX];
    uint64_t format = 0, identity = 0, applied = 0, n_files = 0;
    char kind[CHECKPOINT_KIND_MAX] = "cell";
    int rv = GS_EIO;

    memset(out, 0, sizeof *out);
    if (!meta_path(path, root, index)) {
        return fail(errmsg, len, GS_EINVAL, "checkpoint root: path too long");
    }
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT) {
            return fail(errmsg, len, GS_ENOTFOUND, "no checkpoint %" PRIu64, index);
        }
        return fail(errmsg, len, GS_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    bool header_ok = meta_header(f, META_MAGIC, &format);
    if (header_ok && format == 1) {
        header_ok = meta_header(f, "cell_id", &identity); /* kind stays "cell" */
    } else if (header_ok && format == CHECKPOINT_META_FORMAT) {
        header_ok = meta_header_kind(f, kind) && meta_header(f, "identity", &identity);
    } else {
        header_ok = false;
    }
    if (!header_ok || !meta_header(f, "applied_index", &applied) || applied != index ||
        !meta_header(f, "files", &n_files) || n_files > META_FILES_MAX) {
        rv = fail(errmsg, len, GS_EIO, "%s: bad header", path);
        goto err;
    }
    out->applied_index = applied;
    memcpy(out->kind, kind, sizeof out->kind);
    out->identity = identity;
    out->n_files = (size_t)n_files;
    out->hashed = true;
    out->files = calloc(n_files > 0 ? n_files : 1, sizeof *out->files);
    if (out->files == NULL) {
        rv = fail(errmsg, len, GS_ENOMEM, "out of memory");
        goto err;
    }
    for (size_t i = 0; i < out->n_files; i++) {
        bool hashed = false;
        if (fgets(line, sizeof line, f) == NULL ||
            !meta_parse_file(line, &out->files[i], &hashed) ||
            (i > 0 && strcmp(out->files[i - 1].name, out->files[i].name) >= 0)) {
            rv = fail(errmsg, len, GS_EIO, "%s: bad file line %zu", path, i + 1);
            goto err;
        }
        out->hashed = out->hashed && hashed;
    }
    if (fgets(line, sizeof line, f) != NULL) {
        rv = fail(errmsg, len, GS_EIO, "%s: trailing data", path);
        goto err;
    }
    fclose(f);
    return 0;
err:
    fclose(f);
    checkpoint_info_free(out);
    return rv;
}

/* ---------------------------------------------------------------- the root */

enum root_kind {
    ROOT_DIR,      /* <n> */
    ROOT_META,     /* <n>.meta */
    ROOT_META_TMP, /* <n>.meta.XXXXXX */
    ROOT_STAGING,  /* <n>.tmp */
};

/* Classify a name in the root; false if it is not ours. */
static bool root_parse(const char *name, uint64_t *n, enum root_kind *kind)
{
    size_t digits = strspn(name, "0123456789");
    const char *rest = name + digits;
    if (!parse_u64(name, digits, n)) {
        return false;
    }
    if (*rest == '\0') {
        *kind = ROOT_DIR;
    } else if (strcmp(rest, META_SUFFIX) == 0) {
        *kind = ROOT_META;
    } else if (strncmp(rest, META_SUFFIX ".", sizeof META_SUFFIX) == 0) {
        *kind = ROOT_META_TMP;
    } else if (strcmp(rest, STAGING_SUFFIX) == 0) {
        *kind = ROOT_STAGING;
    } else {
        return false;
    }
    return true;
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The indexes of the complete checkpoints in root (.meta and directory both
 * present), newest first. *out is malloc'd (may be NULL when *n == 0).
 * 0, GS_ENOTFOUND (no root), GS_ENOMEM or GS_EIO. */
static int root_list_complete(const char *root, uint64_t **out, size_t *n)
{
    uint64_t *v = NULL;
    size_t cnt = 0, cap = 0;
    char path[PATH_MAX];

    *out = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (d == NULL) {
        return errno == ENOENT ? GS_ENOTFOUND : GS_EIO;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t idx = 0;
        enum root_kind kind;
        if (!root_parse(e->d_name, &idx, &kind) || kind != ROOT_META) {
            continue;
        }
        if (!dir_path(path, root, idx) || !is_dir(path)) {
            continue;
        }
        if (cnt == cap) {
            size_t ncap = cap > 0 ? 2 * cap : 8;
            uint64_t *nv = realloc(v, ncap * sizeof *nv);
            if (nv == NULL) {
                free(v);
                closedir(d);
                return GS_ENOMEM;
            }
            v = nv;
            cap = ncap;
        }
        v[cnt++] = idx;
    }
    closedir(d);
    if (cnt > 0) {
        qsort(v, cnt, sizeof *v, cmp_u64_desc);
    }
    *out = v;
    *n = cnt;
    return 0;
}

/*
 * Keep the checkpoint `current` and the newest other complete one; remove
 * every other checkpoint (its .meta first, so that it stops being complete
 * before its files go), incomplete directories, RocksDB staging directories
 * and stale temporary .meta files. Runs on the creating thread only.
 * Failures are logged: they cost disk space, not correctness.
 */
static void root_retain(const char *root, uint64_t current)
{
    uint64_t *complete = NULL;
    size_t n_complete = 0;
    uint64_t keep[CHECKPOINT_KEEP];
    size_t n_keep = 0;
    char path[PATH_MAX];

    if (root_list_complete(root, &complete, &n_complete) != 0) {
        return;
    }
    keep[n_keep++] = current;
    for (size_t i = 0; i < n_complete && n_keep < CHECKPOINT_KEEP; i++) {
        if (complete[i] != current) {
            keep[n_keep++] = complete[i]; /* newest first */
        }
    }
    free(complete);

    /* Two passes: .meta files, then the rest. */
    for (int pass = 0; pass < 2; pass++) {
        DIR *d = opendir(root);
        if (d == NULL) {
            return;
        }
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            uint64_t idx = 0;
            enum root_kind kind;
            if (!root_parse(e->d_name, &idx, &kind)) {
                continue;
            }
            bool kept = false;
            for (size_t k = 0; k < n_keep; k++) {
                kept = kept || idx == keep[k];
            }
            /* Staging directories are made by this thread only; a temporary
             * .meta of a kept checkpoint may be a server caching hashes. */
            bool drop = kind == ROOT_STAGING || !kept;
            if (!drop || (pass == 0) != (kind == ROOT_META)) {
                continue;
            }
            if (!path_fmt(path, "%s/%s", root, e->d_name) || rm_tree(path) != 0) {
                log_warn("checkpoint", "event=remove_failed entry=%s", e->d_name);
            }
        }
        closedir(d);
    }
}

/* ---------------------------------------------------------------- creation */

static int list_checkpoint_dir(const char *dir, struct checkpoint_info *info, char *errmsg,
                               size_t len)
{
    char path[PATH_MAX];
    size_t cap = 0;
    int rv = 0;

    DIR *d = opendir(dir);
    if (d == NULL) {
        return fail(errmsg, len, GS_EIO, "cannot list %s: %s", dir, strerror(errno));
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if (!checkpoint_name_valid(e->d_name) || !path_fmt(path, "%s/%s", dir, e->d_name) ||
            lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            rv = fail(errmsg, len, GS_EIO, "unexpected entry in checkpoint %s", dir);
            goto out;
        }
        if (info->n_files == cap) {
            size_t ncap = cap > 0 ? 2 * cap : 16;
            struct checkpoint_file *nf = realloc(info->files, ncap * sizeof *nf);
            if (nf == NULL) {
                rv = fail(errmsg, len, GS_ENOMEM, "out of memory");
                goto out;
            }
            info->files = nf;
            cap = ncap;
        }
        struct checkpoint_file *cf = &info->files[info->n_files++];
        memset(cf, 0, sizeof *cf);
        strcpy(cf->name, e->d_name);
        cf->size = (uint64_t)st.st_size;
    }
    if (info->n_files == 0) {
        rv = fail(errmsg, len, GS_EIO, "checkpoint %s is empty", dir);
        goto out;
    }
    qsort(info->files, info->n_files, sizeof *info->files, cmp_file);
out:
    closedir(d);
    return rv;
}

/* The kind of r as the .meta file writes it: [a-z], fitting. */
static bool kind_valid(const char *kind)
{
    size_t n = kind != NULL ? strspn(kind, "abcdefghijklmnopqrstuvwxyz") : 0;
    return n > 0 && n < CHECKPOINT_KIND_MAX && kind[n] == '\0';
}

int checkpoint_create(struct rsm *r, const char *root, struct checkpoint_info *out, char *errmsg,
                      size_t errmsg_len)
{
    struct checkpoint_info info = {0};
    char dir[PATH_MAX], staging[PATH_MAX], meta[PATH_MAX];
    char *err = NULL;
    bool reused = false;
    int rv;

    if (out != NULL) {
        memset(out, 0, sizeof *out);
    }
    if (r == NULL || r->db == NULL || root == NULL || root[0] == '\0' || !kind_valid(r->kind)) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "checkpoint: no database or no root");
    }
    assert(!r->in_entry);
    uint64_t index = r->applied_index;
    if (!dir_path(dir, root, index) || !meta_path(meta, root, index) ||
        !path_fmt(staging, "%s" STAGING_SUFFIX, dir)) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "checkpoint root: path too long");
    }
    if (mkdir(root, 0755) != 0 && errno != EEXIST) {
        return fail(errmsg, errmsg_len, GS_EIO, "cannot create %s: %s", root, strerror(errno));
    }

    if (is_dir(dir) && meta_read(root, index, &info, NULL, 0) == 0 &&
        strcmp(info.kind, r->kind) == 0 && info.identity == r->identity) {
        reused = true;
    } else {
        checkpoint_info_free(&info);
        /* Leftovers of an interrupted creation at this index. */
        if (unlink(meta) != 0 && errno != ENOENT) {
            return fail(errmsg, errmsg_len, GS_EIO, "cannot remove %s", meta);
        }
        if (rm_tree(dir) != 0 || rm_tree(staging) != 0) {
            return fail(errmsg, errmsg_len, GS_EIO, "cannot remove old checkpoint %s", dir);
        }
        rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(r->db, &err);
        if (err == NULL) {
            /* UINT64_MAX: never flush the memtables, copy the live WAL. */
            rocksdb_checkpoint_create(cp, dir, UINT64_MAX, &err);
            rocksdb_checkpoint_object_destroy(cp);
        }
        if (err != NULL) {
            rv = fail(errmsg, errmsg_len, GS_EIO, "cannot create checkpoint: %s", err);
            rocksdb_free(err);
            goto err;
        }
        info.applied_index = index;
        snprintf(info.kind, sizeof info.kind, "%s", r->kind);
        info.identity = r->identity;
        rv = list_checkpoint_dir(dir, &info, errmsg, errmsg_len);
        if (rv != 0) {
            goto err;
        }
        rv = meta_write(root, &info, true, errmsg, errmsg_len);
        if (rv != 0) {
            goto err;
        }
    }
    root_retain(root, index);
    log_info("checkpoint",
             "event=create group=%s id=%" PRIu64 " index=%" PRIu64 " files=%zu reused=%d", r->kind,
             r->identity, index, info.n_files, reused);
    if (out != NULL) {
        *out = info;
    } else {
        checkpoint_info_free(&info);
    }
    return 0;
err:
    unlink(meta);
    log_error("checkpoint", "event=create_failed group=%s id=%" PRIu64 " index=%" PRIu64 " code=%s",
              r->kind, r->identity, index, gs_error_name(rv));
    checkpoint_info_free(&info);
    rm_tree(dir);
    rm_tree(staging);
    return rv;
}

/* ---------------------------------------------------------------- serving */

/* Copy the hash of files that are the same inode as a hashed SST of another
 * complete checkpoint. done[i] is set for each file copied. */
static void hash_reuse(const char *root, const struct checkpoint_info *info, bool *done)
{
    uint64_t *complete = NULL;
    size_t n_complete = 0;
    char path[PATH_MAX], other_path[PATH_MAX];

    if (root_list_complete(root, &complete, &n_complete) != 0) {
        return;
    }
    for (size_t c = 0; c < n_complete; c++) {
        struct checkpoint_info other;
        if (complete[c] == info->applied_index ||
            meta_read(root, complete[c], &other, NULL, 0) != 0) {
            continue;
        }
        for (size_t i = 0; other.hashed && i < info->n_files; i++) {
            struct checkpoint_file *cf = &info->files[i];
            size_t nlen = strlen(cf->name);
            /* SST files are immutable; the WAL and MANIFEST are copies. */
            if (done[i] || nlen < 4 || strcmp(cf->name + nlen - 4, ".sst") != 0) {
                continue;
            }
            ptrdiff_t j = find_file(&other, cf->name);
            struct stat a, b;
            if (j < 0 || other.files[j].size != cf->size ||
                !path_fmt(path, "%s/%" PRIu64 "/%s", root, info->applied_index, cf->name) ||
                !path_fmt(other_path, "%s/%" PRIu64 "/%s", root, other.applied_index, cf->name) ||
                stat(path, &a) != 0 || stat(other_path, &b) != 0 || a.st_dev != b.st_dev ||
                a.st_ino != b.st_ino) {
                continue;
            }
            memcpy(cf->hash, other.files[j].hash, CHECKPOINT_HASH_LEN);
            done[i] = true;
        }
        checkpoint_info_free(&other);
    }
    free(complete);
}

/* Hash every file of info not hashed yet, then cache the hashes. */
static int checkpoint_hash(const char *root, struct checkpoint_info *info, char *errmsg, size_t len)
{
    char path[PATH_MAX];
    size_t reused = 0;
    int rv = 0;

    if (sodium_init() < 0) {
        return fail(errmsg, len, GS_EINTERNAL, "libsodium initialisation failed");
    }
    bool *done = calloc(info->n_files > 0 ? info->n_files : 1, sizeof *done);
    if (done == NULL) {
        return fail(errmsg, len, GS_ENOMEM, "out of memory");
    }
    hash_reuse(root, info, done);
    for (size_t i = 0; i < info->n_files; i++) {
        struct checkpoint_file *cf = &info->files[i];
        uint64_t size = 0;
        if (done[i]) {
            reused++;
            continue;
        }
        if (!path_fmt(path, "%s/%" PRIu64 "/%s", root, info->applied_index, cf->name)) {
            rv = fail(errmsg, len, GS_EINVAL, "checkpoint root: path too long");
            goto out;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            rv = fail(errmsg, len, errno == ENOENT ? GS_ENOTFOUND : GS_EIO, "cannot open %s: %s",
                      path, strerror(errno));
            goto out;
        }
        rv = hash_fd(fd, cf->hash, &size);
        close(fd);
        if (rv == 0 && size != cf->size) {
            rv = GS_EIO;
        }
        if (rv != 0) {
            fail(errmsg, len, rv, "cannot hash %s (size %" PRIu64 ", listed %" PRIu64 ")", path,
                 size, cf->size);
            goto out;
        }
    }
    info->hashed = true;
    /* The cache is an optimisation: serve the hashes even if it fails. */
    char cache_err[256];
    if (meta_write(root, info, false, cache_err, sizeof cache_err) != 0) {
        log_warn("checkpoint", "event=hash_cache_failed index=%" PRIu64 " err=\"%s\"",
                 info->applied_index, cache_err);
    }
    log_info("checkpoint", "event=hashed index=%" PRIu64 " files=%zu reused=%zu",
             info->applied_index, info->n_files, reused);
out:
    free(done);
    return rv;
}

int checkpoint_load(const char *root, uint64_t applied_index, struct checkpoint_info *out,
                    char *errmsg, size_t errmsg_len)
{
    char dir[PATH_MAX];
    memset(out, 0, sizeof *out);
    if (root == NULL || !dir_path(dir, root, applied_index)) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "checkpoint root: missing or too long");
    }
    int rv = meta_read(root, applied_index, out, errmsg, errmsg_len);
    if (rv != 0) {
        return rv;
    }
    if (!is_dir(dir)) {
        checkpoint_info_free(out);
        return fail(errmsg, errmsg_len, GS_ENOTFOUND, "no checkpoint %" PRIu64, applied_index);
    }
    if (!out->hashed) {
        rv = checkpoint_hash(root, out, errmsg, errmsg_len);
        if (rv != 0) {
            checkpoint_info_free(out);
        }
    }
    return rv;
}

int checkpoint_latest(const char *root, struct checkpoint_info *out, char *errmsg,
                      size_t errmsg_len)
{
    uint64_t *complete = NULL;
    size_t n = 0;

    memset(out, 0, sizeof *out);
    if (root == NULL) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "checkpoint root: missing");
    }
    int rv = root_list_complete(root, &complete, &n);
    if (rv == GS_ENOTFOUND || (rv == 0 && n == 0)) {
        free(complete);
        return fail(errmsg, errmsg_len, GS_ENOTFOUND, "no checkpoint in %s", root);
    }
    if (rv != 0) {
        return fail(errmsg, errmsg_len, rv, "cannot list %s", root);
    }
    /* Newest first; one deleted under us is skipped. */
    rv = GS_ENOTFOUND;
    for (size_t i = 0; i < n && rv == GS_ENOTFOUND; i++) {
        rv = checkpoint_load(root, complete[i], out, errmsg, errmsg_len);
    }
    free(complete);
    return rv;
}

int checkpoint_read_chunk(const char *root, uint64_t applied_index, const char *name,
                          uint64_t offset, uint8_t *buf, size_t len, size_t *n_read)
{
    char meta[PATH_MAX], path[PATH_MAX];
    struct stat st;
    size_t got = 0;

    *n_read = 0;
    if (root == NULL || !checkpoint_name_valid(name) || (buf == NULL && len > 0) ||
        offset > (uint64_t)INT64_MAX) {
        return GS_EINVAL;
    }
    if (!meta_path(meta, root, applied_index) ||
        !path_fmt(path, "%s/%" PRIu64 "/%s", root, applied_index, name)) {
        return GS_EINVAL;
    }
    if (stat(meta, &st) != 0) {
        return errno == ENOENT ? GS_ENOTFOUND : GS_EIO; /* not complete, or gone */
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return errno == ENOENT ? GS_ENOTFOUND : errno == ELOOP ? GS_EINVAL : GS_EIO;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return GS_EINVAL;
    }
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)(offset + got));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            close(fd);
            return GS_EIO;
        }
        if (n == 0) {
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    *n_read = got;
    return 0;
}

/* ---------------------------------------------------------------- receiving */

int checkpoint_receive_begin(const char *incoming_dir, const struct checkpoint_info *info,
                             struct checkpoint_receiver **out, char *errmsg, size_t errmsg_len)
{
    struct checkpoint_receiver *r = NULL;
    char path[PATH_MAX];
    int rv;

    *out = NULL;
    if (incoming_dir == NULL || incoming_dir[0] == '\0' || info == NULL || !info->hashed ||
        info->n_files == 0 || info->files == NULL) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "checkpoint info: empty or not hashed");
    }
    for (size_t i = 0; i < info->n_files; i++) {
        if (!checkpoint_name_valid(info->files[i].name)) {
            return fail(errmsg, errmsg_len, GS_EINVAL, "checkpoint info: bad file name %zu", i);
        }
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        return fail(errmsg, errmsg_len, GS_ENOMEM, "out of memory");
    }
    r->dir = strdup(incoming_dir);
    r->info = *info;
    r->info.files = calloc(info->n_files, sizeof *info->files);
    r->received = calloc(info->n_files, sizeof *r->received);
    if (r->dir == NULL || r->info.files == NULL || r->received == NULL) {
        free(r->dir);
        free(r->info.files);
        free(r->received);
        free(r);
        return fail(errmsg, errmsg_len, GS_ENOMEM, "out of memory");
    }
    memcpy(r->info.files, info->files, info->n_files * sizeof *info->files);
    qsort(r->info.files, r->info.n_files, sizeof *r->info.files, cmp_file);
    for (size_t i = 1; i < r->info.n_files; i++) {
        if (strcmp(r->info.files[i - 1].name, r->info.files[i].name) == 0) {
            rv = fail(errmsg, errmsg_len, GS_EINVAL, "checkpoint info: duplicate file name");
            goto err;
        }
    }
    if (rm_tree(incoming_dir) != 0) {
        rv = fail(errmsg, errmsg_len, GS_EIO, "cannot clear %s", incoming_dir);
        goto err;
    }
    if (mkdir(incoming_dir, 0700) != 0) {
        rv =
            fail(errmsg, errmsg_len, GS_EIO, "cannot create %s: %s", incoming_dir, strerror(errno));
        goto err;
    }
    for (size_t i = 0; i < r->info.n_files; i++) {
        if (!path_fmt(path, "%s/%s", incoming_dir, r->info.files[i].name)) {
            rv = fail(errmsg, errmsg_len, GS_EINVAL, "incoming dir: path too long");
            goto err;
        }
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            rv = fail(errmsg, errmsg_len, GS_EIO, "cannot create %s: %s", path, strerror(errno));
            goto err;
        }
        close(fd);
    }
    while (r->cursor < r->info.n_files && r->info.files[r->cursor].size == 0) {
        r->cursor++;
    }
    log_info("checkpoint",
             "event=receive_begin group=%s id=%" PRIu64 " index=%" PRIu64 " files=%zu", info->kind,
             info->identity, info->applied_index, info->n_files);
    *out = r;
    return 0;
err:
    checkpoint_receive_free(r);
    return rv;
}

bool checkpoint_receive_next(const struct checkpoint_receiver *r, const char **name,
                             uint64_t *offset)
{
    if (r->cursor >= r->info.n_files) {
        return false;
    }
    *name = r->info.files[r->cursor].name;
    *offset = r->received[r->cursor];
    return true;
}

int checkpoint_receive_write(struct checkpoint_receiver *r, const char *name, uint64_t offset,
                             const void *data, size_t len, char *errmsg, size_t errmsg_len)
{
    char path[PATH_MAX];
    size_t done = 0;

    if (!checkpoint_name_valid(name)) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "chunk: bad file name");
    }
    ptrdiff_t i = find_file(&r->info, name);
    if (i < 0) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "chunk: %s is not in the checkpoint", name);
    }
    const struct checkpoint_file *cf = &r->info.files[i];
    if (offset > cf->size || len > cf->size - offset) {
        return fail(errmsg, errmsg_len, GS_EINVAL,
                    "chunk: %s at %" PRIu64 "+%zu passes its size %" PRIu64, name, offset, len,
                    cf->size);
    }
    if (offset > r->received[i]) {
        return fail(errmsg, errmsg_len, GS_EINVAL,
                    "chunk: %s at %" PRIu64 " leaves a gap after %" PRIu64, name, offset,
                    r->received[i]);
    }
    if (data == NULL && len > 0) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "chunk: no data");
    }
    if (!path_fmt(path, "%s/%s", r->dir, name)) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "incoming dir: path too long");
    }
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        return fail(errmsg, errmsg_len, GS_EIO, "cannot open %s: %s", path, strerror(errno));
    }
    while (done < len) {
        ssize_t n = pwrite(fd, (const uint8_t *)data + done, len - done, (off_t)(offset + done));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            int e = errno;
            close(fd);
            return fail(errmsg, errmsg_len, GS_EIO, "cannot write %s: %s", path, strerror(e));
        }
        done += (size_t)n;
    }
    if (close(fd) != 0) {
        return fail(errmsg, errmsg_len, GS_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    if (offset + len > r->received[i]) {
        r->received[i] = offset + len;
    }
    r->verified = false;
    while (r->cursor < r->info.n_files && r->received[r->cursor] == r->info.files[r->cursor].size) {
        r->cursor++;
    }
    return 0;
}

int checkpoint_receive_verify(struct checkpoint_receiver *r, char *errmsg, size_t errmsg_len)
{
    char path[PATH_MAX];
    int rv = 0;

    if (sodium_init() < 0) {
        return fail(errmsg, errmsg_len, GS_EINTERNAL, "libsodium initialisation failed");
    }
    r->verified = false;
    for (size_t i = 0; i < r->info.n_files; i++) {
        const struct checkpoint_file *cf = &r->info.files[i];
        uint8_t hash[CHECKPOINT_HASH_LEN];
        uint64_t size = 0;
        if (r->received[i] != cf->size) {
            rv = fail(errmsg, errmsg_len, GS_EIO, "%s incomplete: %" PRIu64 " of %" PRIu64 " bytes",
                      cf->name, r->received[i], cf->size);
            goto out;
        }
        if (!path_fmt(path, "%s/%s", r->dir, cf->name)) {
            rv = fail(errmsg, errmsg_len, GS_EINVAL, "incoming dir: path too long");
            goto out;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0) {
            rv = fail(errmsg, errmsg_len, GS_EIO, "cannot open %s: %s", path, strerror(errno));
            goto out;
        }
        rv = hash_fd(fd, hash, &size);
        if (rv == 0 && (size != cf->size || memcmp(hash, cf->hash, sizeof hash) != 0)) {
            rv = fail(errmsg, errmsg_len, GS_EIO, "%s: checksum or size mismatch", cf->name);
        } else if (rv == 0 && fsync(fd) != 0) {
            rv = fail(errmsg, errmsg_len, GS_EIO, "cannot sync %s", path);
        } else if (rv != 0) {
            fail(errmsg, errmsg_len, rv, "cannot read %s", path);
        }
        close(fd);
        if (rv != 0) {
            goto out;
        }
    }
    if (fsync_path(r->dir) != 0) {
        rv = fail(errmsg, errmsg_len, GS_EIO, "cannot sync %s", r->dir);
        goto out;
    }
    r->verified = true;
out:
    if (rv != 0) {
        log_error("checkpoint", "event=verify_failed index=%" PRIu64 " code=%s",
                  r->info.applied_index, gs_error_name(rv));
    }
    return rv;
}

const char *checkpoint_receive_verified_dir(const struct checkpoint_receiver *r)
{
    return r->verified ? r->dir : NULL;
}

void checkpoint_receive_free(struct checkpoint_receiver *r)
{
    if (r == NULL) {
        return;
    }
    if (r->dir != NULL && rm_tree(r->dir) != 0) {
        log_warn("checkpoint", "event=remove_failed entry=incoming");
    }
    free(r->dir);
    free(r->info.files);
    free(r->received);
    free(r);
}

/* ---------------------------------------------------------------- install */

int checkpoint_install(struct rsm *r, const char *verified_dir, char *errmsg, size_t errmsg_len)
{
    char old[PATH_MAX], scratch[256], again[256];
    struct stat st_new, st_db;
    uint64_t new_index = 0;
    int rv;

    if (errmsg == NULL || errmsg_len == 0) {
        errmsg = scratch;
        errmsg_len = sizeof scratch;
    }
    errmsg[0] = '\0';
    if (r == NULL || r->db == NULL || verified_dir == NULL) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "install: no database or no directory");
    }
    assert(!r->in_entry);
    const char *db_path = r->db_path;
    if (!old_path(old, db_path)) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "db_path too long");
    }
    if (lstat(verified_dir, &st_new) != 0 || !S_ISDIR(st_new.st_mode) ||
        stat(db_path, &st_db) != 0) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "install: %s is not a directory", verified_dir);
    }
    if (st_new.st_dev != st_db.st_dev) {
        return fail(errmsg, errmsg_len, GS_EINVAL,
                    "install: checkpoint is not on the database's file system");
    }
    if (st_new.st_ino == st_db.st_ino) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "install: checkpoint is the database");
    }
    rv = rsm_probe(r, verified_dir, &new_index, errmsg, errmsg_len);
    if (rv == 0 && new_index < r->applied_index) {
        rv = fail(errmsg, errmsg_len, GS_EINVAL,
                  "checkpoint index %" PRIu64 " is behind the database (%" PRIu64 ")", new_index,
                  r->applied_index);
    }
    if (rv == 0 && rm_tree(old) != 0) {
        rv = fail(errmsg, errmsg_len, GS_EIO, "cannot remove leftover %s", old);
    }
    if (rv != 0) {
        log_error(r->kind, "event=install_refused %s=%" PRIu64 " code=%s", r->kind, r->identity,
                  gs_error_name(rv));
        return rv;
    }
    uint64_t prev_index = r->applied_index;

    /* From here the DB is closed; every failure puts the old one back. */
    rsm_detach(r);
    if (rename(db_path, old) != 0) {
        rv =
            fail(errmsg, errmsg_len, GS_EIO, "cannot move the database aside: %s", strerror(errno));
        goto reopen_old;
    }
    fsync_parent(db_path);
    if (rename(verified_dir, db_path) != 0) {
        rv = fail(errmsg, errmsg_len, GS_EIO, "cannot move the checkpoint into place: %s",
                  strerror(errno));
        goto restore_old;
    }
    if (fsync_parent(db_path) != 0 || fsync_parent(verified_dir) != 0) {
        rv = fail(errmsg, errmsg_len, GS_EIO, "cannot sync the database's directory");
        goto unmove_new;
    }
    rv = rsm_attach(r, errmsg, errmsg_len);
    if (rv != 0) {
        goto unmove_new;
    }
    assert(r->applied_index == new_index);
    if (rm_tree(old) != 0) {
        log_warn(r->kind, "event=remove_failed entry=db.old"); /* removed at the next open */
    }
    fsync_parent(db_path);
    log_info(r->kind, "event=install %s=%" PRIu64 " from_index=%" PRIu64 " index=%" PRIu64, r->kind,
             r->identity, prev_index, r->applied_index);
    return 0;

unmove_new:
    if (rename(db_path, verified_dir) != 0) {
        /* Keep going: the old DB back at db_path is what matters. */
        rm_tree(db_path);
    }
restore_old:
    if (rename(old, db_path) != 0) {
        log_error(r->kind, "event=install_rollback_failed %s=%" PRIu64, r->kind, r->identity);
        return GS_EIO; /* <db> missing, <db>.old intact: recovered at the next open */
    }
    fsync_parent(db_path);
reopen_old:
    if (rsm_attach(r, again, sizeof again) != 0) {
        log_error(r->kind, "event=install_reopen_failed %s=%" PRIu64 " err=\"%s\"", r->kind,
                  r->identity, again);
        return GS_EIO;
    }
    log_error(r->kind, "event=install_failed %s=%" PRIu64 " code=%s", r->kind, r->identity,
              gs_error_name(rv));
    return rv;
}

int cell_fsm_checkpoint_create(struct cell_fsm *fsm, const char *root, struct checkpoint_info *out,
                               char *errmsg, size_t errmsg_len)
{
    return checkpoint_create(fsm != NULL ? cell_fsm_rsm(fsm) : NULL, root, out, errmsg, errmsg_len);
}

int cell_fsm_install(struct cell_fsm *fsm, const char *verified_dir, char *errmsg,
                     size_t errmsg_len)
{
    return checkpoint_install(fsm != NULL ? cell_fsm_rsm(fsm) : NULL, verified_dir, errmsg,
                              errmsg_len);
}

int checkpoint_recover_swap(const char *db_path, char *errmsg, size_t errmsg_len)
{
    char old[PATH_MAX];
    if (db_path == NULL || db_path[0] == '\0' || !old_path(old, db_path)) {
        return fail(errmsg, errmsg_len, GS_EINVAL, "db_path: missing or too long");
    }
    if (!exists(old)) {
        return 0;
    }
    if (exists(db_path)) {
        /* The install got as far as renaming the new DB into place. */
        if (rm_tree(old) != 0) {
            return fail(errmsg, errmsg_len, GS_EIO, "cannot remove %s", old);
        }
        log_info("checkpoint", "event=swap_recovered kept=new");
    } else {
        /* Crashed between the two renames: the old DB is complete. */
        if (rename(old, db_path) != 0) {
            return fail(errmsg, errmsg_len, GS_EIO, "cannot rename %s back: %s", old,
                        strerror(errno));
        }
        log_warn("checkpoint", "event=swap_recovered kept=old");
    }
    if (fsync_parent(db_path) != 0) {
        return fail(errmsg, errmsg_len, GS_EIO, "cannot sync the database's directory");
    }
    return 0;
}
