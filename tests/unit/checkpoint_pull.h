/*
 * Shared by the state machines' unit tests: receive a checkpoint the way a
 * peer's transfer would (engine/checkpoint.h). Include after <cmocka.h>.
 */
#ifndef GS_TESTS_UNIT_CHECKPOINT_PULL_H
#define GS_TESTS_UNIT_CHECKPOINT_PULL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/checkpoint.h"

/* Receive the checkpoint `info` of root into incoming, 4 KiB at a time, as a
 * peer's transfer would; with corrupt, one byte of the largest received file
 * is then flipped on disk. Returns what verification says; *out is the
 * receiver (the caller frees it). */
static int receive_checkpoint(const char *root, const struct checkpoint_info *info,
                              const char *incoming, bool corrupt, struct checkpoint_receiver **out)
{
    char err[256] = "";
    uint8_t buf[4096];
    const char *name = NULL;
    uint64_t offset = 0;
    assert_int_equal(checkpoint_receive_begin(incoming, info, out, err, sizeof err), 0);
    while (checkpoint_receive_next(*out, &name, &offset)) {
        size_t got = 0;
        assert_int_equal(
            checkpoint_read_chunk(root, info->applied_index, name, offset, buf, sizeof buf, &got),
            0);
        assert_true(got > 0);
        assert_int_equal(checkpoint_receive_write(*out, name, offset, buf, got, err, sizeof err),
                         0);
    }
    if (corrupt) {
        size_t big = 0;
        for (size_t i = 1; i < info->n_files; i++) {
            big = info->files[i].size > info->files[big].size ? i : big;
        }
        char path[512];
        snprintf(path, sizeof path, "%s/%s", incoming, info->files[big].name);
        FILE *fp = fopen(path, "r+b");
        assert_non_null(fp);
        long at = (long)(info->files[big].size / 2);
        assert_int_equal(fseek(fp, at, SEEK_SET), 0);
        int c = fgetc(fp);
        assert_true(c != EOF);
        assert_int_equal(fseek(fp, at, SEEK_SET), 0);
        assert_int_equal(fputc(c ^ 0x20, fp), c ^ 0x20);
        assert_int_equal(fclose(fp), 0);
    }
    return checkpoint_receive_verify(*out, err, sizeof err);
}

#endif /* GS_TESTS_UNIT_CHECKPOINT_PULL_H */
