/*
 * Checks libraft's byteCrc32(), as built with scripts/libraft/crc32_slice8.c,
 * against a CRC computed one bit at a time from the polynomial alone
 * (non-reflected, polynomial 0x04c11db7, no final XOR: libraft's format).
 * Every length from 0 to 4096 bytes at each of 8 alignments, with a
 * non-zero initial value too, and chained calls (a sum continued over
 * several buffers, as raft_uv does over an entry batch).
 *
 * Built and run by scripts/build-libraft.sh against libraft's src/byte.c:
 *   cc -I src scripts/libraft/crc32_check.c src/byte.c && ./a.out
 * Exit status 0 when every sum matches.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "byte.h"

static unsigned crc_bitwise(const uint8_t *p, size_t n, unsigned crc)
{
    for (size_t i = 0; i < n; i++) {
        crc ^= (unsigned)p[i] << 24;
        for (int bit = 0; bit < 8; bit++) {
            crc = crc & 0x80000000u ? (crc << 1) ^ 0x04c11db7u : crc << 1;
        }
    }
    return crc;
}

int main(void)
{
    enum { MAX = 4096, ALIGNS = 8 };
    static uint8_t buf[MAX + ALIGNS];
    uint64_t x = 0x9e3779b97f4a7c15u;
    unsigned long checked = 0;

    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    for (size_t off = 0; off < ALIGNS; off++) {
        for (size_t n = 0; n <= MAX; n++) {
            const unsigned inits[] = {0, 0xdeadbeefu};
            for (size_t k = 0; k < 2; k++) {
                unsigned want = crc_bitwise(buf + off, n, inits[k]);
                unsigned got = byteCrc32(buf + off, n, inits[k]);
                size_t half = n / 3;
                unsigned chained = byteCrc32(buf + off + half, n - half,
                                             byteCrc32(buf + off, half, inits[k]));
                if (got != want || chained != want) {
                    fprintf(stderr,
                            "crc32_check: offset %zu length %zu init %#x: want %#x, "
                            "got %#x (chained %#x)\n",
                            off, n, inits[k], want, got, chained);
                    return 1;
                }
                checked++;
            }
        }
    }
    printf("crc32_check: %lu sums match the bitwise CRC\n", checked);
    return 0;
}
