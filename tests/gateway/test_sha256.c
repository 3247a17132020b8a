/*
 * test_sha256.c - the gateway's SHA-256 against the FIPS 180-2 examples,
 * incremental hashing at every split, hex round trips and the digest
 * comparison.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sha256.h"

static void
hex_of(const void *data, size_t len, char out[65])
{
    uint8_t d[AIR_SHA256_LEN];
    air__sha256(data, len, d);
    air__sha256_to_hex(d, out);
}

static void
test_sha256_fips_vectors_match(void **state)
{
    (void)state;
    char h[65];
    hex_of("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hex_of("", 0, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(two, strlen(two), h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *four = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnop"
                       "jklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(four, strlen(four), h);
    assert_string_equal(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void
test_sha256_million_a_matches(void **state)
{
    (void)state;
    char block[1000];
    memset(block, 'a', sizeof block);
    air__sha256_t s;
    air__sha256_init(&s);
    for (int i = 0; i < 1000; i++)
        air__sha256_update(&s, block, sizeof block);
    uint8_t d[AIR_SHA256_LEN];
    air__sha256_final(&s, d);
    char h[65];
    air__sha256_to_hex(d, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void
test_sha256_incremental_split_equals_oneshot(void **state)
{
    (void)state;
    char msg[300];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (char)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof msg; len += 13) {
        uint8_t want[AIR_SHA256_LEN];
        air__sha256(msg, len, want);
        for (size_t cut = 0; cut <= len; cut += 5) {
            air__sha256_t s;
            air__sha256_init(&s);
            air__sha256_update(&s, msg, cut);
            air__sha256_update(&s, msg + cut, len - cut);
            uint8_t got[AIR_SHA256_LEN];
            air__sha256_final(&s, got);
            assert_memory_equal(got, want, AIR_SHA256_LEN);
        }
    }
}

static void
test_sha256_hex_round_trip_and_rejects(void **state)
{
    (void)state;
    uint8_t d[AIR_SHA256_LEN], e[AIR_SHA256_LEN];
    air__sha256("key", 3, d);
    char h[65];
    air__sha256_to_hex(d, h);
    assert_int_equal(air__sha256_from_hex(h, e), 0);
    assert_memory_equal(d, e, AIR_SHA256_LEN);
    /* Upper case is accepted too. */
    for (char *p = h; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    assert_int_equal(air__sha256_from_hex(h, e), 0);
    assert_memory_equal(d, e, AIR_SHA256_LEN);
    assert_int_equal(air__sha256_from_hex("abc", e), -1);
    h[10] = 'g';
    assert_int_equal(air__sha256_from_hex(h, e), -1);
    assert_int_equal(air__sha256_from_hex(NULL, e), -1);
}

static void
test_sha256_equal_detects_any_difference(void **state)
{
    (void)state;
    uint8_t a[AIR_SHA256_LEN], b[AIR_SHA256_LEN];
    air__sha256("x", 1, a);
    memcpy(b, a, sizeof a);
    assert_true(air__sha256_equal(a, b));
    for (int i = 0; i < AIR_SHA256_LEN; i++) {
        b[i] ^= 0x40;
        assert_false(air__sha256_equal(a, b));
        b[i] ^= 0x40;
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_fips_vectors_match),
        cmocka_unit_test(test_sha256_million_a_matches),
        cmocka_unit_test(test_sha256_incremental_split_equals_oneshot),
        cmocka_unit_test(test_sha256_hex_round_trip_and_rejects),
        cmocka_unit_test(test_sha256_equal_detects_any_difference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
