/*
 * GeoScale: byteCrc32() computed eight bytes at a time ("slicing-by-8").
 *
 * scripts/build-libraft.sh appends this file to libraft's src/byte.c after
 * renaming libraft's own byteCrc32() to byteCrc32Bytewise(), which stays
 * as the reference and is still used for the last size % 8 bytes.
 *
 * libraft's CRC is the non-reflected CRC-32 of polynomial 0x04c11db7 with
 * no final XOR, one table lookup per byte in a chain where each lookup
 * waits for the previous one. raft_uv runs it over every entry it writes,
 * on the group's loop thread: under load with 1 KiB values it was 6.5% of
 * the machine's CPU time (bench/RESULTS.md, seventh round). Here eight
 * lookups per eight bytes are independent of each other: the same sums,
 * so segments written before and after the change read alike.
 * scripts/libraft/crc32_check.c checks it against a bit-at-a-time CRC
 * computed from the polynomial alone, at every build.
 *
 * gsCrcTable[k][b] is the CRC register after byte b followed by k zero
 * bytes, starting from 0: [0] is libraft's byteCrcTable.
 */
static unsigned gsCrcTable[8][256];

__attribute__((constructor)) static void gsCrcTableInit(void)
{
    for (unsigned b = 0; b < 256; b++) {
        gsCrcTable[0][b] = byteCrcBytewiseTable[b];
    }
    for (unsigned k = 1; k < 8; k++) {
        for (unsigned b = 0; b < 256; b++) {
            unsigned c = gsCrcTable[k - 1][b];
            gsCrcTable[k][b] = (c << 8) ^ byteCrcBytewiseTable[c >> 24];
        }
    }
}

static unsigned gsLoadBe32(const uint8_t *p)
{
    return (unsigned)p[0] << 24 | (unsigned)p[1] << 16 | (unsigned)p[2] << 8 | (unsigned)p[3];
}

unsigned byteCrc32(const void *buf, const size_t size, const unsigned init)
{
    const uint8_t *p = buf;
    size_t n = size;
    unsigned crc = init;

    while (n >= 8) {
        unsigned hi = crc ^ gsLoadBe32(p);
        unsigned lo = gsLoadBe32(p + 4);
        crc = gsCrcTable[7][hi >> 24] ^ gsCrcTable[6][(hi >> 16) & 255] ^
              gsCrcTable[5][(hi >> 8) & 255] ^ gsCrcTable[4][hi & 255] ^
              gsCrcTable[3][lo >> 24] ^ gsCrcTable[2][(lo >> 16) & 255] ^
              gsCrcTable[1][(lo >> 8) & 255] ^ gsCrcTable[0][lo & 255];
        p += 8;
        n -= 8;
    }
    return byteCrc32Bytewise(p, n, crc);
}
