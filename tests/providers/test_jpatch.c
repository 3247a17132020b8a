/*
 * test_jpatch.c - edits over a read-only cJSON tree (providers/jpatch.c):
 * put/drop/get semantics as the preset rewriter relies on them (in-place
 * replacement, duplicates, appended members seen by later lookups), nested
 * edits, table growth, the original tree left untouched, and allocation
 * failure at every point.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "jpatch.h"

static char *
print_patched(const struct air__jpatch *p, const cJSON *root)
{
    air_buf_t b = AIR_BUF_INIT;
    if (air__jp_print(p, root, &b) != 0) {
        air__buf_free(&b);
        return NULL;
    }
    return air__buf_steal(&b, NULL);
}

/* The patched text equals `want` byte for byte. */
static void
assert_patched(const struct air__jpatch *p, const cJSON *root, const char *want)
{
    char *got = print_patched(p, root);
    assert_non_null(got);
    assert_string_equal(got, want);
    air__free(got);
}

static void
test_jpatch_no_edit_prints_like_cjson(void **state)
{
    (void)state;
    const char *txt = "{\"a\":1,\"b\":[true,false,null,{\"c\":\"x\\ny\"}],\"d\":{},\"e\":[],"
                      "\"f\":-2.5e-3,\"g\":\"\\u00e9\"}";
    cJSON *root = cJSON_Parse(txt);
    assert_non_null(root);
    struct air__jpatch p = AIR_JPATCH_INIT;
    char *want = cJSON_PrintUnformatted(root);
    assert_patched(&p, root, want);
    assert_int_equal(air__jp_count(&p), 0);
    cJSON_free(want);
    air__jp_free(&p);
    cJSON_Delete(root);
}

static void
test_jpatch_put_replaces_first_in_place_and_drops_duplicates(void **state)
{
    (void)state;
    cJSON *root = cJSON_Parse("{\"model\":\"a\",\"x\":1,\"model\":\"b\",\"y\":2}");
    assert_non_null(root);
    struct air__jpatch p = AIR_JPATCH_INIT;
    air__jp_put(&p, root, "model", air__jp_string(&p, "z"));
    assert_patched(&p, root, "{\"model\":\"z\",\"x\":1,\"y\":2}");
    const cJSON *m = air__jp_get(&p, root, "model");
    assert_true(cJSON_IsString(m));
    assert_string_equal(m->valuestring, "z");
    /* The tree itself is untouched. */
    char *orig = cJSON_PrintUnformatted(root);
    assert_string_equal(orig, "{\"model\":\"a\",\"x\":1,\"model\":\"b\",\"y\":2}");
    cJSON_free(orig);
    air__jp_free(&p);
    cJSON_Delete(root);
}

static void
test_jpatch_put_missing_appends_and_later_lookups_see_it(void **state)
{
    (void)state;
    cJSON *root = cJSON_Parse("{\"a\":1}");
    struct air__jpatch p = AIR_JPATCH_INIT;
    assert_null(air__jp_get(&p, root, "b"));
    air__jp_put(&p, root, "b", air__jp_own(&p, cJSON_CreateNumber(2)));
    air__jp_put(&p, root, "c", air__jp_string(&p, "three"));
    assert_patched(&p, root, "{\"a\":1,\"b\":2,\"c\":\"three\"}");
    /* Replacing an added member keeps its place; dropping it removes it. */
    air__jp_put(&p, root, "b", air__jp_string(&p, "two"));
    assert_patched(&p, root, "{\"a\":1,\"b\":\"two\",\"c\":\"three\"}");
    air__jp_drop(&p, root, "b");
    assert_null(air__jp_get(&p, root, "b"));
    assert_patched(&p, root, "{\"a\":1,\"c\":\"three\"}");
    air__jp_free(&p);
    cJSON_Delete(root);
}

static void
test_jpatch_drop_removes_every_member_of_that_name(void **state)
{
    (void)state;
    cJSON *root = cJSON_Parse("{\"k\":1,\"a\":2,\"k\":3}");
    struct air__jpatch p = AIR_JPATCH_INIT;
    air__jp_drop(&p, root, "k");
    assert_null(air__jp_get(&p, root, "k"));
    assert_patched(&p, root, "{\"a\":2}");
    /* Dropping what is not there records nothing. */
    size_t n = air__jp_count(&p);
    air__jp_drop(&p, root, "nope");
    assert_int_equal(air__jp_count(&p), n);
    air__jp_drop(&p, root, "a");
    assert_patched(&p, root, "{}");
    air__jp_free(&p);
    cJSON_Delete(root);
}

/* A rename as the rewriter does it: the moved value wins, then an allow-list
 * pass sees the member under its new name. */
static void
test_jpatch_rename_then_allow_list_keeps_new_name(void **state)
{
    (void)state;
    cJSON *root = cJSON_Parse("{\"seed\":7,\"junk\":1,\"model\":\"m\"}");
    struct air__jpatch p = AIR_JPATCH_INIT;
    const cJSON *v = air__jp_get(&p, root, "seed");
    air__jp_drop(&p, root, "seed");
    air__jp_put(&p, root, "random_seed", v);
    struct air__jp_iter it = AIR_JP_ITER_INIT;
    struct air__jp_member m;
    int seen_new = 0;
    while (air__jp_next(&p, root, &it, &m)) {
        if (strcmp(m.key, "random_seed") == 0)
            seen_new = 1;
        if (strcmp(m.key, "model") != 0 && strcmp(m.key, "random_seed") != 0)
            air__jp_drop_member(&p, root, &m);
    }
    assert_true(seen_new);
    assert_patched(&p, root, "{\"model\":\"m\",\"random_seed\":7}");
    air__jp_free(&p);
    cJSON_Delete(root);
}

static void
test_jpatch_nested_edits_leave_siblings_alone(void **state)
{
    (void)state;
    cJSON *root = cJSON_Parse("{\"messages\":[{\"role\":\"developer\",\"content\":\"s\"},"
                              "{\"role\":\"user\",\"content\":\"u\",\"name\":\"n\"}],"
                              "\"stream_options\":{\"include_usage\":false,\"x\":1}}");
    struct air__jpatch p = AIR_JPATCH_INIT;
    const cJSON *msgs = air__jp_get(&p, root, "messages");
    assert_non_null(msgs);
    air__jp_put(&p, cJSON_GetArrayItem(msgs, 0), "role", air__jp_string(&p, "system"));
    air__jp_drop(&p, cJSON_GetArrayItem(msgs, 1), "name");
    const cJSON *so = air__jp_get(&p, root, "stream_options");
    air__jp_put(&p, so, "include_usage", air__jp_own(&p, cJSON_CreateTrue()));
    assert_patched(&p, root,
                   "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                   "{\"role\":\"user\",\"content\":\"u\"}],"
                   "\"stream_options\":{\"include_usage\":true,\"x\":1}}");
    air__jp_free(&p);
    cJSON_Delete(root);
}

/* A replaced value that is itself an object can be edited further. */
static void
test_jpatch_edit_inside_replacement_value(void **state)
{
    (void)state;
    cJSON *root = cJSON_Parse("{\"so\":null}");
    struct air__jpatch p = AIR_JPATCH_INIT;
    air__jp_put(&p, root, "so", air__jp_own(&p, cJSON_CreateObject()));
    const cJSON *so = air__jp_get(&p, root, "so");
    assert_true(cJSON_IsObject(so));
    air__jp_put(&p, so, "include_usage", air__jp_own(&p, cJSON_CreateTrue()));
    assert_patched(&p, root, "{\"so\":{\"include_usage\":true}}");
    air__jp_free(&p);
    cJSON_Delete(root);
}

/* Thousands of edited objects: the node table grows, every edit is kept. */
static void
test_jpatch_many_edits_grow_the_table(void **state)
{
    (void)state;
    enum { N = 3000 };
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(root, "messages");
    for (int i = 0; i < N; i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddNumberToObject(m, "i", i);
        cJSON_AddStringToObject(m, "drop", "x");
        cJSON_AddItemToArray(arr, m);
    }
    struct air__jpatch p = AIR_JPATCH_INIT;
    const cJSON *m;
    int i = 0;
    cJSON_ArrayForEach(m, arr)
    {
        air__jp_drop(&p, m, "drop");
        if (i++ % 2 == 0)
            air__jp_put(&p, m, "even", air__jp_own(&p, cJSON_CreateTrue()));
    }
    char *got = print_patched(&p, root);
    assert_non_null(got);
    cJSON *back = cJSON_Parse(got);
    air__free(got);
    assert_non_null(back);
    const cJSON *barr = cJSON_GetObjectItemCaseSensitive(back, "messages");
    assert_int_equal(cJSON_GetArraySize(barr), N);
    i = 0;
    cJSON_ArrayForEach(m, barr)
    {
        assert_null(cJSON_GetObjectItemCaseSensitive(m, "drop"));
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(m, "i")->valueint, i);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(m, "even") != NULL, i % 2 == 0);
        i++;
    }
    cJSON_Delete(back);
    air__jp_free(&p);
    cJSON_Delete(root);
}

/* Replacing an added member again and again amends its record: the count
 * grows, the record array does not, and later edits still land in bounds
 * (ASan checks the writes). */
static void
test_jpatch_amended_adds_count_but_do_not_grow(void **state)
{
    (void)state;
    cJSON *root = cJSON_Parse("{}");
    struct air__jpatch p = AIR_JPATCH_INIT;
    air__jp_put(&p, root, "a", air__jp_own(&p, cJSON_CreateNumber(0)));
    for (int i = 1; i <= 40; i++)
        air__jp_put(&p, root, "a", air__jp_own(&p, cJSON_CreateNumber(i)));
    assert_int_equal(air__jp_count(&p), 41);
    static const char *const keys[] = {"b", "c", "d", "e", "f", "g", "h", "i", "j", "k",
                                       "l", "m", "n", "o", "p", "q", "r", "s", "t", "u"};
    for (size_t i = 0; i < 20; i++)
        air__jp_put(&p, root, keys[i], air__jp_own(&p, cJSON_CreateTrue()));
    assert_int_equal(air__jp_count(&p), 61);
    char *got = print_patched(&p, root);
    assert_non_null(got);
    const char *head = "{\"a\":40,\"b\":true,";
    assert_true(strncmp(got, head, strlen(head)) == 0);
    assert_non_null(strstr(got, ",\"u\":true}"));
    air__free(got);
    air__jp_free(&p);
    cJSON_Delete(root);
}

static void
test_jpatch_oom_sweep_is_clean(void **state)
{
    (void)state;
    cJSON *root = cJSON_Parse("{\"a\":{\"b\":1,\"c\":2},\"d\":[{\"e\":3}],\"seed\":1}");
    const char *want = "{\"a\":{\"c\":2,\"z\":\"zz\"},\"d\":[{\"e\":4}],\"random_seed\":1}";
    int ok = 0;
    for (unsigned long k = 1; k < 200 && !ok; k++) {
        struct air__jpatch p = AIR_JPATCH_INIT;
        air__alloc_fail_after(k);
        const cJSON *a = air__jp_get(&p, root, "a");
        air__jp_drop(&p, a, "b");
        air__jp_put(&p, a, "z", air__jp_string(&p, "zz"));
        const cJSON *d0 = cJSON_GetArrayItem(air__jp_get(&p, root, "d"), 0);
        air__jp_put(&p, d0, "e", air__jp_own(&p, cJSON_CreateNumber(4)));
        const cJSON *seed = air__jp_get(&p, root, "seed");
        air__jp_drop(&p, root, "seed");
        air__jp_put(&p, root, "random_seed", seed);
        char *got = print_patched(&p, root);
        air__alloc_fail_after(0);
        if (got != NULL) {
            ok = 1;
            assert_string_equal(got, want);
            air__free(got);
        }
        air__jp_free(&p);
    }
    assert_true(ok);
    cJSON_Delete(root);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jpatch_no_edit_prints_like_cjson),
        cmocka_unit_test(test_jpatch_put_replaces_first_in_place_and_drops_duplicates),
        cmocka_unit_test(test_jpatch_put_missing_appends_and_later_lookups_see_it),
        cmocka_unit_test(test_jpatch_drop_removes_every_member_of_that_name),
        cmocka_unit_test(test_jpatch_rename_then_allow_list_keeps_new_name),
        cmocka_unit_test(test_jpatch_nested_edits_leave_siblings_alone),
        cmocka_unit_test(test_jpatch_edit_inside_replacement_value),
        cmocka_unit_test(test_jpatch_many_edits_grow_the_table),
        cmocka_unit_test(test_jpatch_amended_adds_count_but_do_not_grow),
        cmocka_unit_test(test_jpatch_oom_sweep_is_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
