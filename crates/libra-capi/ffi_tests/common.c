/* Status strings, last-error messages and the version. */
#include "libra.h"
#include "check.h"

int main(void) {
    CHECK(strcmp(libra_version(), LIBRA_VERSION_STRING) == 0);
    CHECK(strcmp(libra_status_str(LIBRA_OK), "ok") == 0);
    CHECK(strlen(libra_status_str(LIBRA_ERR_NULL_ARGUMENT)) > 0);
    CHECK(strcmp(libra_status_str(-1), "unknown status") == 0);
    CHECK(strcmp(libra_status_str(9999), "unknown status") == 0);
    CHECK(libra_last_error_message() != NULL);
    PASS();
}
