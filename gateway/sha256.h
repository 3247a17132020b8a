/*
 * sha256.h - SHA-256 (FIPS 180-4) for the gateway's key checks: client and
 * admin keys are kept only as digests and compared digest to digest in
 * constant time, so neither the key nor its length leaks through timing.
 */
#ifndef AIR_GW_SHA256_H
#define AIR_GW_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define AIR_SHA256_LEN 32

typedef struct air__sha256 {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t buf[64];
    size_t nbuf;
} air__sha256_t;

void air__sha256_init(air__sha256_t *s);
void air__sha256_update(air__sha256_t *s, const void *data, size_t len);
void air__sha256_final(air__sha256_t *s, uint8_t out[AIR_SHA256_LEN]);
/* One-shot digest of data. */
void air__sha256(const void *data, size_t len, uint8_t out[AIR_SHA256_LEN]);
/* 1 when the two digests are equal; runs in time independent of the
 * contents. */
int air__sha256_equal(const uint8_t a[AIR_SHA256_LEN], const uint8_t b[AIR_SHA256_LEN]);
/* Parse 64 hex digits (either case) into a digest. 0 on success, -1 when s
 * is not exactly 64 hex digits. */
int air__sha256_from_hex(const char *s, uint8_t out[AIR_SHA256_LEN]);
/* Lower-case hex of a digest (65 bytes with the NUL). */
void air__sha256_to_hex(const uint8_t d[AIR_SHA256_LEN], char out[2 * AIR_SHA256_LEN + 1]);

#endif
