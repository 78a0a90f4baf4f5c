/* Tiny assertion helpers shared by the C tests. */
#ifndef LIBRA_FFI_CHECK_H
#define LIBRA_FFI_CHECK_H
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Atomic: the threaded tests check from several threads at once. */
static atomic_int libra_checks_run = 0;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        libra_checks_run++;                                                         \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                \
        }                                                                           \
    } while (0)

/* Expects a status and, for errors, a non-empty last-error message. */
#define CHECK_STATUS(call, expected)                                                       \
    do {                                                                                   \
        libra_status got_ = (call);                                                        \
        libra_checks_run++;                                                                \
        if (got_ != (expected)) {                                                          \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d; last error: %s\n",  \
                    __FILE__, __LINE__, #call, (int)got_, libra_status_str(got_),          \
                    (int)(expected), libra_last_error_message());                          \
            exit(1);                                                                       \
        }                                                                                  \
        if ((expected) != LIBRA_OK && libra_last_error_message()[0] == '\0') {             \
            fprintf(stderr, "%s:%d: %s gave no error message\n", __FILE__, __LINE__, #call); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, LIBRA_OK)

#define PASS()                                             \
    do {                                                   \
        printf("%d checks passed\n", atomic_load(&libra_checks_run));    \
        return 0;                                          \
    } while (0)

#endif
