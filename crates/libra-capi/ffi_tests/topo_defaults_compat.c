/* libra_dim_desc_default, libra_optimize_config_default and libra_schedule_config_default as
 * callers built against other headers use them: a struct of the first published layout
 * (declared here as 0.1.0 published it) in a larger buffer whose tail must stay untouched, a
 * newer caller's larger struct, sizes below the first layout, NULL and misaligned pointers.
 * Each writes min(struct_size, sizeof) bytes, keeps the caller's struct_size, and on an error
 * names the function and the argument and writes nothing. */
#include "check.h"
#include "libra.h"
#include <stdalign.h>
#include <stddef.h>

/* The first published layouts, copied field for field. */
typedef struct {
    size_t struct_size;
    int32_t kind;
    uint32_t size;
    double bandwidth, latency, link_cost, switch_cost, nic_cost;
} dim_desc_v1;

typedef struct {
    size_t struct_size;
    int32_t objective, model;
    double total_bandwidth, dollar_budget;
    const double *lower, *upper;
    size_t num_bounds;
    const libra_linear_constraint *constraints;
    size_t num_constraints;
} optimize_config_v1;

typedef struct {
    size_t struct_size;
    int32_t policy;
    size_t chunks, elem_size;
} schedule_config_v1;

/* Today's layouts only append to the first ones: every old field keeps its offset. */
_Static_assert(sizeof(dim_desc_v1) <= sizeof(libra_dim_desc), "dim desc only grows");
_Static_assert(offsetof(dim_desc_v1, nic_cost) == offsetof(libra_dim_desc, nic_cost), "dim desc");
_Static_assert(offsetof(dim_desc_v1, size) == offsetof(libra_dim_desc, size), "dim desc size");
_Static_assert(sizeof(optimize_config_v1) <= sizeof(libra_optimize_config), "config only grows");
_Static_assert(offsetof(optimize_config_v1, num_constraints) == offsetof(libra_optimize_config, num_constraints),
               "optimize config");
_Static_assert(offsetof(optimize_config_v1, model) == offsetof(libra_optimize_config, model), "model");
_Static_assert(sizeof(schedule_config_v1) <= sizeof(libra_schedule_config), "config only grows");
_Static_assert(offsetof(schedule_config_v1, elem_size) == offsetof(libra_schedule_config, elem_size),
               "schedule config");

#define SENTINEL 0xEE
#define BUF 256
_Static_assert(sizeof(libra_optimize_config) + 64 <= BUF, "room for a newer, larger struct");

/* A caller's buffer: aligned for any of the structs, filled with SENTINEL. */
typedef union {
    max_align_t align;
    unsigned char bytes[BUF];
} buffer;

static void fill(buffer *b, size_t struct_size) {
    memset(b->bytes, SENTINEL, sizeof b->bytes);
    memcpy(b->bytes, &struct_size, sizeof struct_size);
}

static size_t declared(const buffer *b) {
    size_t s;
    memcpy(&s, b->bytes, sizeof s);
    return s;
}

static void check_untouched(const buffer *b, size_t from) {
    for (size_t i = from; i < sizeof b->bytes; i++) CHECK(b->bytes[i] == SENTINEL);
}

static void check_error(const char *function, const char *argument) {
    const char *m = libra_last_error_message();
    CHECK(strstr(m, function) != NULL);
    CHECK(strstr(m, argument) != NULL);
}

/* One of the three, called on a caller's buffer. */
typedef libra_status (*initialiser)(void *);
static libra_status dim_init(void *p) { return libra_dim_desc_default((libra_dim_desc *)p); }
static libra_status optimize_init(void *p) { return libra_optimize_config_default((libra_optimize_config *)p); }
static libra_status schedule_init(void *p) { return libra_schedule_config_default((libra_schedule_config *)p); }

/* The size rules every one of them follows: `first` is the first published layout's size and
 * `now` today's sizeof. The filled buffers are left in `old_out` (first layout) and `big_out`
 * (a larger struct from a newer header) for the caller to check the values. */
static void check_size_rules(initialiser init, const char *function, const char *argument, size_t first,
                             size_t now, buffer *old_out, buffer *big_out) {
    char size_name[64];
    snprintf(size_name, sizeof size_name, "`%s.struct_size`", argument);

    /* The first layout in a larger buffer: filled up to its end, nothing past it. */
    fill(old_out, first);
    CHECK_OK(init(old_out->bytes));
    CHECK(declared(old_out) == first);
    check_untouched(old_out, first);

    /* A newer caller's larger struct: today's fields filled, its own later fields untouched. */
    fill(big_out, now + 40);
    CHECK_OK(init(big_out->bytes));
    CHECK(declared(big_out) == now + 40);
    check_untouched(big_out, now);

    /* Below the first layout (e.g. left unset): refused, nothing written. */
    const size_t bad[] = {0, sizeof(size_t), first - 1};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        buffer b;
        fill(&b, bad[k]);
        CHECK_STATUS(init(b.bytes), LIBRA_ERR_INVALID_ARGUMENT);
        check_error(function, size_name);
        CHECK(declared(&b) == bad[k]);
        check_untouched(&b, sizeof(size_t));
    }

    /* NULL and misaligned pointers: refused, naming the argument. */
    char quoted[64];
    snprintf(quoted, sizeof quoted, "`%s`", argument);
    CHECK_STATUS(init(NULL), LIBRA_ERR_NULL_ARGUMENT);
    check_error(function, quoted);
    {
        buffer b;
        memset(b.bytes, SENTINEL, sizeof b.bytes);
        memcpy(b.bytes + 4, &now, sizeof now);
        CHECK_STATUS(init(b.bytes + 4), LIBRA_ERR_INVALID_ARGUMENT);
        check_error(function, quoted);
        CHECK(strstr(libra_last_error_message(), "aligned") != NULL);
        CHECK(memcmp(b.bytes + 4, &now, sizeof now) == 0);
        for (size_t i = 4 + sizeof now; i < sizeof b.bytes; i++) CHECK(b.bytes[i] == SENTINEL);
    }
}

static void test_dim_desc(void) {
    buffer old, big;
    dim_desc_v1 o;
    libra_dim_desc n;
    check_size_rules(dim_init, "libra_dim_desc_default:", "desc", sizeof(dim_desc_v1), sizeof(libra_dim_desc), &old,
                     &big);
    memcpy(&o, old.bytes, sizeof o);
    memcpy(&n, big.bytes, sizeof n);
    CHECK(o.kind == LIBRA_DIM_RING && o.size == 2 && o.bandwidth == 1.0 && o.latency == 0.0);
    CHECK(o.link_cost == 0.0 && o.switch_cost == 0.0 && o.nic_cost == 0.0);
    CHECK(n.kind == o.kind && n.size == o.size && n.bandwidth == o.bandwidth && n.latency == o.latency);
    CHECK(n.link_cost == o.link_cost && n.switch_cost == o.switch_cost && n.nic_cost == o.nic_cost);

    /* The defaults make a valid one-dimension network: 2 NPUs at 1 GB/s. */
    libra_network *net = NULL;
    uint64_t npus = 0;
    n.struct_size = sizeof n;
    CHECK_OK(libra_network_new(&n, 1, &net));
    CHECK_OK(libra_network_npus(net, &npus));
    CHECK(npus == 2);
    libra_network_free(net);
}

static void test_optimize_config(void) {
    buffer old, big;
    optimize_config_v1 o;
    libra_optimize_config n;
    check_size_rules(optimize_init, "libra_optimize_config_default:", "config", sizeof(optimize_config_v1),
                     sizeof(libra_optimize_config), &old, &big);
    memcpy(&o, old.bytes, sizeof o);
    memcpy(&n, big.bytes, sizeof n);
    CHECK(o.objective == LIBRA_OBJECTIVE_TIME && o.model == LIBRA_MODEL_LIBRA);
    CHECK(o.total_bandwidth == 0.0 && o.dollar_budget == 0.0);
    CHECK(o.lower == NULL && o.upper == NULL && o.num_bounds == 0);
    CHECK(o.constraints == NULL && o.num_constraints == 0);
    CHECK(n.objective == o.objective && n.model == o.model && n.total_bandwidth == 0.0 && n.dollar_budget == 0.0);
    CHECK(n.lower == NULL && n.upper == NULL && n.num_bounds == 0 && n.constraints == NULL && n.num_constraints == 0);

    /* The old struct, given a budget, runs the optimiser. */
    libra_network *net = NULL;
    libra_workload *wl = NULL;
    int32_t all[1] = {2};
    double bw[1] = {0.0};
    libra_optimize_result res;
    libra_dim_desc d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    CHECK_OK(libra_dim_desc_default(&d));
    CHECK_OK(libra_network_new(&d, 1, &net));
    CHECK_OK(libra_workload_new(LIBRA_OVERLAP_NONE, &wl));
    CHECK_OK(libra_workload_add_phase(wl, "grad", 10.0, LIBRA_COLLECTIVE_ALL_REDUCE, 1e6, all, 1));
    o.total_bandwidth = 40.0;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    CHECK_OK(libra_optimize(net, wl, (const libra_optimize_config *)(const void *)&o, bw, 1, &res));
    CHECK(bw[0] > 39.999 && bw[0] < 40.001 && res.time_ns > 0.0);
    libra_workload_free(wl);
    libra_network_free(net);
}

static void test_schedule_config(void) {
    buffer old, big;
    schedule_config_v1 o;
    libra_schedule_config n;
    check_size_rules(schedule_init, "libra_schedule_config_default:", "config", sizeof(schedule_config_v1),
                     sizeof(libra_schedule_config), &old, &big);
    memcpy(&o, old.bytes, sizeof o);
    memcpy(&n, big.bytes, sizeof n);
    CHECK(o.policy == LIBRA_SCHEDULE_POLICY_THEMIS && o.chunks == 64 && o.elem_size == 4);
    CHECK(n.policy == o.policy && n.chunks == o.chunks && n.elem_size == o.elem_size);

    /* The old struct builds a schedule of its chunk count. */
    libra_network *net = NULL;
    libra_schedule *s = NULL;
    libra_step st;
    CHECK_OK(libra_network_preset_new(LIBRA_NETWORK_PRESET_3D, &net));
    o.chunks = 3;
    CHECK_OK(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 3000, NULL, 0,
                                (const libra_schedule_config *)(const void *)&o, &s));
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK_OK(libra_schedule_step(s, 0, &st));
    CHECK(st.chunk < 3);
    libra_schedule_free(s);
    libra_network_free(net);
}

int main(void) {
    test_dim_desc();
    test_optimize_config();
    test_schedule_config();
    PASS();
}
