/* The topology structs holding their defaults, filled as a caller does: struct_size first,
 * then the _default() function. */
#ifndef LIBRA_FFI_TOPO_DEFAULTS_H
#define LIBRA_FFI_TOPO_DEFAULTS_H
#include "check.h"
#include "libra.h"

static inline libra_dim_desc dim_desc_defaults(void) {
    libra_dim_desc d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    CHECK_OK(libra_dim_desc_default(&d));
    return d;
}

static inline libra_optimize_config optimize_config_defaults(void) {
    libra_optimize_config c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    CHECK_OK(libra_optimize_config_default(&c));
    return c;
}

static inline libra_schedule_config schedule_config_defaults(void) {
    libra_schedule_config c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    CHECK_OK(libra_schedule_config_default(&c));
    return c;
}
#endif
