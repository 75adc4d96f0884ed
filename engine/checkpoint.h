/*
 * Checkpoints of a replicated state machine's database (any group kind:
 * cell, directory, metadata; engine/rsm.h), and their transfer to another
 * replica of the same group.
 *
 * A group's Raft snapshot is a small manifest, never the data (shared
 * design, "Durability of the state machine"). The data travels as a RocksDB
 * checkpoint, made and installed through the state machine's base (struct
 * rsm), whatever its records are:
 *
 *   serving side                          receiving side
 *   ------------                          --------------
 *   checkpoint_create(rsm)                (restore() got a newer manifest)
 *     on the loop thread: at a snapshot
 *     at most every 30 s, and when a
 *     puller needs a newer one
 *   checkpoint_latest() / _load()   --->  checkpoint_receive_begin(info)
 *     file list, sizes, BLAKE2b-256
 *   checkpoint_read_chunk()         --->  checkpoint_receive_write() per chunk
 *                                         checkpoint_receive_verify()
 *                                         checkpoint_install(rsm,
 *                                           checkpoint_receive_verified_dir())
 *                                         checkpoint_receive_free()
 *
 * A state machine hands its base out (cell_fsm_rsm(), directory_fsm_rsm(),
 * metadata_fsm_rsm()); the install closes and reopens the database through
 * rsm_detach()/rsm_attach(), which re-check its schema and identity.
 *
 * Layout of a checkpoint root (one per group replica, e.g.
 * <data>/directory/checkpoints):
 *
 *   <root>/<index>/        a RocksDB checkpoint of the DB at applied_index
 *                          <index>: SST files hard-linked, the live WAL and
 *                          the MANIFEST copied; nothing else
 *   <root>/<index>.meta    its file list (names, sizes, hashes once known);
 *                          written last, so its presence marks the checkpoint
 *                          complete
 *
 * At most CHECKPOINT_KEEP complete checkpoints are kept: each pins the SST
 * files it links, so old ones cost disk space as the DB compacts.
 *
 * Hashing. Creation runs on the group's loop thread and must stay cheap, so it
 * records names and sizes only. Hashes are computed on the serving side, by
 * checkpoint_load()/checkpoint_latest(), and cached in the .meta file. A
 * checkpoint's SST files are hard links of immutable files: when the previous
 * checkpoint links the same inode, its hash is reused, so a new checkpoint
 * costs hashing its new SSTs, its WAL and its MANIFEST only.
 *
 * Threads. checkpoint_create() and checkpoint_install() run on the thread
 * that owns the state machine. checkpoint_latest(), checkpoint_load() and
 * checkpoint_read_chunk() may run on any thread, concurrently with creation
 * in the same root: a checkpoint being served can be deleted by the creation
 * of two newer ones, and then they return GS_ENOTFOUND; the puller starts
 * again from checkpoint_latest(). A receiver is used by one thread at a time.
 */
#ifndef GS_ENGINE_CHECKPOINT_H
#define GS_ENGINE_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cell_fsm.h"
#include "rsm.h"

#define CHECKPOINT_FORMAT 1      /* of the file list on the wire (CheckpointInfoResponse) */
#define CHECKPOINT_META_FORMAT 2 /* of the .meta file; 1 (cells only) is still read */
#define CHECKPOINT_KIND_MAX 16   /* "cell", "directory", "metadata", NUL included */
#define CHECKPOINT_NAME_MAX 128  /* a file name, including its NUL */
#define CHECKPOINT_HASH_LEN 32   /* BLAKE2b-256 */
#define CHECKPOINT_KEEP 2

struct checkpoint_file {
    char name[CHECKPOINT_NAME_MAX];    /* plain file name, see checkpoint_name_valid */
    uint64_t size;                     /* bytes */
    uint8_t hash[CHECKPOINT_HASH_LEN]; /* BLAKE2b-256 of the content, if hashed */
};

struct checkpoint_info {
    uint64_t applied_index;         /* also the checkpoint's name under its root */
    char kind[CHECKPOINT_KIND_MAX]; /* the rsm's kind: "cell", "directory", "metadata" */
    uint64_t identity;              /* the rsm's identity: cell id, or shard id */
    bool hashed;                    /* every files[i].hash is set */
    size_t n_files;
    struct checkpoint_file *files; /* sorted by name; freed by checkpoint_info_free */
};

/* Free what *info holds and zero it. NULL and a zeroed info are ok. */
void checkpoint_info_free(struct checkpoint_info *info);

/* True if `name` may name a checkpoint file: 1 to CHECKPOINT_NAME_MAX - 1
 * bytes of [A-Za-z0-9._-], not "." or "..". RocksDB's own names (000012.sst,
 * MANIFEST-000005, CURRENT, OPTIONS-000007) all qualify; nothing with a '/'
 * does. */
bool checkpoint_name_valid(const char *name);

/* ---------------------------------------------------------------- serving side */

/*
 * Make a checkpoint of the state machine's DB at its current applied index in
 * <root>/<applied_index> (root is created if missing; its parent must exist).
 * The memtables are not flushed: the live WAL is copied instead, so the cost
 * is hard links plus a copy of the WAL tail, never a write of the memtable.
 * If a complete checkpoint at this index already exists it is reused (the DB
 * state is a function of the applied index). Afterwards at most
 * CHECKPOINT_KEEP complete checkpoints remain (this one and the newest others),
 * and leftovers of interrupted creations are removed.
 *
 * On success fills *out (names and sizes; hashes only if a reused checkpoint
 * had them cached: out->hashed says). The caller frees it with
 * checkpoint_info_free(); out may be NULL. Returns 0, GS_EINVAL, GS_ENOMEM or
 * GS_EIO with one line in errmsg. Not inside an entry.
 */
int checkpoint_create(struct rsm *r, const char *root, struct checkpoint_info *out, char *errmsg,
                      size_t errmsg_len);

/* checkpoint_create() of a cell's base. */
int cell_fsm_checkpoint_create(struct cell_fsm *fsm, const char *root, struct checkpoint_info *out,
                               char *errmsg, size_t errmsg_len);

/*
 * The complete checkpoint <root>/<applied_index>, with every hash (computed
 * now, reading the files, if not cached yet; this can take long: never on a
 * loop thread). Fills *out, which the caller frees with
 * checkpoint_info_free(). Returns 0, GS_ENOTFOUND (no such complete
 * checkpoint, or it was deleted meanwhile), GS_ENOMEM or GS_EIO.
 */
int checkpoint_load(const char *root, uint64_t applied_index, struct checkpoint_info *out,
                    char *errmsg, size_t errmsg_len);

/* As checkpoint_load() for the newest complete checkpoint under root.
 * GS_ENOTFOUND if there is none. */
int checkpoint_latest(const char *root, struct checkpoint_info *out, char *errmsg,
                      size_t errmsg_len);

/*
 * Read up to len bytes at offset of file `name` of the complete checkpoint
 * <root>/<applied_index>. *n_read receives the count: less than len only at
 * the end of the file, 0 at or past it. `name` must pass
 * checkpoint_name_valid(), else GS_EINVAL (nothing is opened); a symbolic
 * link is refused. Returns 0, GS_EINVAL, GS_ENOTFOUND (no such checkpoint or
 * file) or GS_EIO.
 */
int checkpoint_read_chunk(const char *root, uint64_t applied_index, const char *name,
                          uint64_t offset, uint8_t *buf, size_t len, size_t *n_read);

/* ---------------------------------------------------------------- receiving side */

struct checkpoint_receiver;

/*
 * Start receiving the checkpoint described by `info` (which must be hashed,
 * with valid, distinct names) into incoming_dir. Whatever is at incoming_dir
 * is removed first (a previous, interrupted transfer); its parent must exist
 * and should be the directory of the group's DB, since checkpoint_install()
 * renames it into place. Every file is created empty. The receiver keeps a
 * copy of info. On success *out is the receiver, freed with
 * checkpoint_receive_free(). Returns 0, GS_EINVAL, GS_ENOMEM or GS_EIO.
 */
int checkpoint_receive_begin(const char *incoming_dir, const struct checkpoint_info *info,
                             struct checkpoint_receiver **out, char *errmsg, size_t errmsg_len);

/*
 * The next piece still missing: true and the file's name (owned by the
 * receiver) and the offset to request, or false when every byte of every file
 * has been written. Files are received in order, each from offset 0 up.
 */
bool checkpoint_receive_next(const struct checkpoint_receiver *r, const char **name,
                             uint64_t *offset);

/*
 * Write one chunk of file `name` at offset. The file must be in the info,
 * offset + len must not pass its size, and offset must not pass what was
 * received of it so far (no gaps; a chunk sent twice is fine). Returns 0 or
 * GS_EINVAL (nothing written) or GS_EIO.
 */
int checkpoint_receive_write(struct checkpoint_receiver *r, const char *name, uint64_t offset,
                             const void *data, size_t len, char *errmsg, size_t errmsg_len);

/*
 * Check that every file is complete and that the bytes on disk have the
 * size and BLAKE2b-256 hash of the info, then make them durable (fsync of
 * every file and of the directory). Reads every file once. Returns 0 (then
 * checkpoint_receive_verified_dir() names the directory to install) or
 * GS_EIO (incomplete or corrupt: nothing to install) or GS_ENOMEM.
 */
int checkpoint_receive_verify(struct checkpoint_receiver *r, char *errmsg, size_t errmsg_len);

/* The directory to pass to checkpoint_install() (owned by the receiver), or
 * NULL unless the last checkpoint_receive_verify() succeeded and nothing was
 * written since. */
const char *checkpoint_receive_verified_dir(const struct checkpoint_receiver *r);

/* Remove the incoming directory if it is still there (after a successful
 * install it is not) and free the receiver. NULL is ok. */
void checkpoint_receive_free(struct checkpoint_receiver *r);

/*
 * Replace the state machine's DB with the verified checkpoint in verified_dir
 * (same file system as the DB). First, without touching the open DB, the new
 * one is checked through a read-only open (rsm_probe()): it must have a
 * supported schema, the rsm's identity (same kind of group, same cell or
 * shard) and an applied index not below the rsm's: else GS_EINVAL and
 * nothing changed. Then the DB is closed (rsm_detach()), <db> renamed to
 * <db>.old, verified_dir renamed to <db>, the DB reopened (rsm_attach()) and
 * <db>.old removed. After success rsm_applied_index() is the checkpoint's
 * index and verified_dir no longer exists.
 *
 * On failure the old DB is put back and reopened, and the rsm stays usable;
 * only if that too fails (the disk is failing) the rsm has no DB and may only
 * be closed: then GS_EIO and rsm_applied_index() returns 0. Not inside an
 * entry.
 *
 * Crash safety: at every instant either <db> is a complete DB (old or new),
 * or <db> is missing and <db>.old is the old DB; checkpoint_recover_swap(),
 * which rsm_open() runs first, then renames it back.
 */
int checkpoint_install(struct rsm *r, const char *verified_dir, char *errmsg, size_t errmsg_len);

/* checkpoint_install() into a cell's base. */
int cell_fsm_install(struct cell_fsm *fsm, const char *verified_dir, char *errmsg,
                     size_t errmsg_len);

/*
 * Finish or undo a swap interrupted by a crash, before the DB at db_path is
 * opened: if db_path is missing and <db_path>.old exists, rename it back; if
 * both exist, <db_path> is the installed DB and <db_path>.old is removed.
 * Returns 0 or GS_EIO.
 */
int checkpoint_recover_swap(const char *db_path, char *errmsg, size_t errmsg_len);

#endif /* GS_ENGINE_CHECKPOINT_H */
