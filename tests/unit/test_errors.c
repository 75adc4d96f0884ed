/*
 * Unit tests of the error codes (include/geoscale/errors.h): every code has a
 * stable name and a text, positive and negative codes agree (the wire carries
 * positive codes), and codes outside the table get the fallback strings
 * instead of reading past the table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <ctype.h>
#include <limits.h>

#include <cmocka.h>

#include "geoscale/errors.h"

static const struct {
    int code;
    const char *name;
} expected[] = {
    {GS_OK, "OK"},
    {GS_EINVAL, "INVALID"},
    {GS_ENOTFOUND, "NOT_FOUND"},
    {GS_EEXIST, "ALREADY_EXISTS"},
    {GS_ECONFLICT, "CONFLICT"},
    {GS_ENOTLEADER, "NOT_LEADER"},
    {GS_EUNAVAILABLE, "UNAVAILABLE"},
    {GS_ETIMEOUT, "TIMEOUT"},
    {GS_EUNKNOWN, "OUTCOME_UNKNOWN"},
    {GS_ETOOBIG, "TOO_BIG"},
    {GS_EPROTO, "PROTOCOL"},
    {GS_EBUSY, "BUSY"},
    {GS_ENOMEM, "NO_MEMORY"},
    {GS_EIO, "IO"},
    {GS_EBLOCKED, "BLOCKED"},
    {GS_EUNIMPL, "UNIMPLEMENTED"},
    {GS_EWRONGCELL, "WRONG_CELL"},
    {GS_ESHUTDOWN, "SHUTDOWN"},
    {GS_ECLOSED, "CLOSED"},
    {GS_ECONNECT, "CONNECT"},
    {GS_EINTERNAL, "INTERNAL"},
    {GS_EDENIED, "PERMISSION_DENIED"},
};
#define N_EXPECTED (sizeof expected / sizeof expected[0])

/* The table above covers every code from GS_OK down to GS_ERROR_MIN. */
static void test_table_is_complete(void **state)
{
    (void)state;
    assert_int_equal(N_EXPECTED, (size_t)(-GS_ERROR_MIN) + 1);
    for (size_t i = 0; i < N_EXPECTED; i++) {
        assert_int_equal(expected[i].code, -(int)i);
    }
}

static void test_names(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_EXPECTED; i++) {
        const char *name = gs_error_name(expected[i].code);
        assert_non_null(name);
        assert_string_equal(name, expected[i].name);
        /* Positive codes (as on the wire) give the same name. */
        assert_string_equal(gs_error_name(-expected[i].code), expected[i].name);
        for (const char *p = name; *p != '\0'; p++) {
            assert_true(isupper((unsigned char)*p) || *p == '_');
        }
    }
}

static void test_names_unique(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_EXPECTED; i++) {
        for (size_t j = i + 1; j < N_EXPECTED; j++) {
            assert_string_not_equal(gs_error_name(expected[i].code),
                                    gs_error_name(expected[j].code));
        }
    }
}

static void test_strerror(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_EXPECTED; i++) {
        const char *text = gs_strerror(expected[i].code);
        assert_non_null(text);
        assert_true(strlen(text) > 0);
        assert_string_not_equal(text, "unknown error");
        assert_string_equal(gs_strerror(-expected[i].code), text);
        for (size_t j = i + 1; j < N_EXPECTED; j++) {
            assert_string_not_equal(text, gs_strerror(expected[j].code));
        }
    }
    assert_string_equal(gs_strerror(GS_OK), "success");
    assert_string_equal(gs_strerror(GS_ENOTFOUND), "not found");
}

static void test_out_of_range(void **state)
{
    (void)state;
    /* INT_MIN is left out: negating it in errors.c is undefined (reported). */
    const int codes[] = {GS_ERROR_MIN - 1, -GS_ERROR_MIN + 1, -1000, 1000, INT_MAX, INT_MIN + 1};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_string_equal(gs_strerror(codes[i]), "unknown error");
        assert_string_equal(gs_error_name(codes[i]), "UNKNOWN_ERROR");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_is_complete), cmocka_unit_test(test_names),
        cmocka_unit_test(test_names_unique),      cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_out_of_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
