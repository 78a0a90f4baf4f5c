/* Struct versioning of the topology API, as a caller built against another header sees it:
 * an older, shorter libra_optimize_result (declared here as 0.1.0 published it), a newer,
 * longer libra_dim_desc array, sizes below the first published layout, strides that would
 * misalign the array, and misaligned pointers. Every error names the function and field. */
#include "check.h"
#include "topo_defaults.h"
#include "libra.h"
#include <math.h>
#include <stdalign.h>

/* libra_optimize_result as published in 0.1.0, before `solver_iterations`. */
typedef struct {
    size_t struct_size;
    double time_ns;
    double cost;
    double equal_split_time_ns;
    double proportional_split_time_ns;
    double speedup_vs_equal;
    double speedup_vs_proportional;
} optimize_result_v1;

/* A libra_dim_desc from a later header with one more field. */
typedef struct {
    libra_dim_desc d;
    double added_later;
} dim_desc_next;

static libra_network *ring_and_switch(void) {
    dim_desc_next dims[2];
    libra_network *net = NULL;
    libra_dim_desc got;
    size_t n = 0;
    memset(dims, 0, sizeof dims);
    for (int i = 0; i < 2; i++) {
        dims[i].d = dim_desc_defaults();
        dims[i].d.struct_size = sizeof(dim_desc_next);
        dims[i].added_later = 1e300;
    }
    dims[0].d.kind = LIBRA_DIM_RING;
    dims[0].d.size = 4;
    dims[0].d.bandwidth = 100.0;
    dims[0].d.link_cost = 2.0;
    dims[1].d.kind = LIBRA_DIM_SWITCH;
    dims[1].d.size = 6;
    dims[1].d.bandwidth = 50.0;
    dims[1].d.link_cost = 7.8;
    dims[1].d.switch_cost = 18.0;
    dims[1].d.nic_cost = 31.6;
    /* Elements are read struct_size bytes apart: the second one is found past the extra field. */
    CHECK_OK(libra_network_new(&dims[0].d, 2, &net));
    CHECK_OK(libra_network_num_dims(net, &n));
    CHECK(n == 2);
    got = dim_desc_defaults();
    CHECK_OK(libra_network_dim(net, 1, &got));
    CHECK(got.kind == LIBRA_DIM_SWITCH && got.size == 6 && got.bandwidth == 50.0 && got.nic_cost == 31.6);

    /* Elements of different sizes, and a stride that misaligns the second element. */
    dims[1].d.struct_size = sizeof(libra_dim_desc);
    libra_network *bad = NULL;
    CHECK_STATUS(libra_network_new(&dims[0].d, 2, &bad), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "libra_network_new:") != NULL);
    CHECK(strstr(libra_last_error_message(), "dims[1].struct_size") != NULL);
    {
        alignas(8) unsigned char buf[2 * 64];
        libra_dim_desc d = dim_desc_defaults();
        size_t odd = sizeof(libra_dim_desc) + 4;
        d.struct_size = odd;
        memcpy(buf, &d, sizeof d);
        memcpy(buf + odd, &d, sizeof d);
        CHECK_STATUS(libra_network_new((const libra_dim_desc *)(void *)buf, 2, &bad), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK(strstr(libra_last_error_message(), "alignment") != NULL);
    }
    CHECK(bad == NULL);
    return net;
}

static void test_older_result_struct(void) {
    libra_network *net = ring_and_switch();
    libra_workload *wl = NULL;
    int32_t all[2] = {4, 6};
    double bw[2] = {0.0, 0.0}, bw_old[2] = {0.0, 0.0}, t_full = 0.0;
    libra_optimize_config cfg = optimize_config_defaults();
    libra_optimize_result now;
    struct {
        optimize_result_v1 r;
        unsigned char after[16];
    } old;

    CHECK_OK(libra_workload_new(LIBRA_OVERLAP_NONE, &wl));
    CHECK_OK(libra_workload_add_phase(wl, "grad", 1000.0, LIBRA_COLLECTIVE_ALL_REDUCE, 1e8, all, 2));
    cfg.total_bandwidth = 300.0;

    memset(&now, 0, sizeof now);
    now.struct_size = sizeof now;
    CHECK_OK(libra_optimize(net, wl, &cfg, bw, 2, &now));
    CHECK(now.struct_size == sizeof now);
    CHECK(now.solver_iterations > 0);
    CHECK(now.time_ns > 0.0 && now.speedup_vs_equal >= 1.0 - 1e-9);
    t_full = now.time_ns;

    /* The same call with the 0.1.0 struct: every field it has, nothing written past it. */
    memset(&old, 0xAB, sizeof old);
    old.r.struct_size = sizeof old.r;
    CHECK(sizeof old.r < sizeof now);
    CHECK_OK(libra_optimize(net, wl, &cfg, bw_old, 2, (libra_optimize_result *)(void *)&old.r));
    CHECK(old.r.struct_size == sizeof old.r);
    CHECK(old.r.time_ns == now.time_ns && old.r.cost == now.cost);
    CHECK(old.r.equal_split_time_ns == now.equal_split_time_ns);
    CHECK(old.r.proportional_split_time_ns == now.proportional_split_time_ns);
    CHECK(old.r.speedup_vs_equal == now.speedup_vs_equal);
    CHECK(old.r.speedup_vs_proportional == now.speedup_vs_proportional);
    CHECK(bw_old[0] == bw[0] && bw_old[1] == bw[1]);
    for (size_t i = 0; i < sizeof old.after; i++) CHECK(old.after[i] == 0xAB);

    /* Below the first published size: refused, nothing written. */
    old.r.struct_size = sizeof old.r - 1;
    old.r.time_ns = -1.0;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw_old, 2, (libra_optimize_result *)(void *)&old.r),
                 LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "libra_optimize:") != NULL);
    CHECK(strstr(libra_last_error_message(), "out.struct_size") != NULL);
    CHECK(old.r.time_ns == -1.0);

    /* A config from a newer, longer header is read up to what this library knows. */
    {
        struct {
            libra_optimize_config c;
            double added_later;
        } next;
        memset(&next, 0, sizeof next);
        next.c = optimize_config_defaults();
        next.c.struct_size = sizeof next;
        next.c.total_bandwidth = 300.0;
        next.added_later = NAN;
        CHECK_OK(libra_optimize(net, wl, &next.c, bw, 2, &now));
        CHECK(now.time_ns == t_full && now.solver_iterations > 0);
    }
    cfg.struct_size = sizeof cfg - 8;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &now), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "config.struct_size") != NULL);

    libra_workload_free(wl);
    libra_network_free(net);
}

static void test_schedule_structs(void) {
    libra_network *net = ring_and_switch();
    libra_schedule *s = NULL;
    libra_schedule_config cfg = schedule_config_defaults();
    libra_step st;
    alignas(8) unsigned char buf[sizeof(libra_schedule_config) + 8];

    CHECK(cfg.policy == LIBRA_SCHEDULE_POLICY_THEMIS);
    cfg.struct_size = sizeof cfg - 1;
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 1024, NULL, 0, &cfg, &s),
                 LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "libra_schedule_new:") != NULL);
    CHECK(strstr(libra_last_error_message(), "config.struct_size") != NULL);
    CHECK(s == NULL);

    /* A misaligned config pointer is refused rather than read. */
    cfg.struct_size = sizeof cfg;
    memcpy(buf + 4, &cfg, sizeof cfg);
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 1024, NULL, 0,
                                    (const libra_schedule_config *)(void *)(buf + 4), &s),
                 LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "aligned") != NULL);

    cfg.policy = LIBRA_SCHEDULE_POLICY_BASELINE;
    CHECK_OK(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 1024, NULL, 0, &cfg, &s));
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st - 8;
    CHECK_STATUS(libra_schedule_step(s, 0, &st), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "libra_schedule_step:") != NULL);
    CHECK(st.chunk == 0 && st.finish_ns == 0.0);
    st.struct_size = sizeof st;
    CHECK_OK(libra_schedule_step(s, 0, &st));
    CHECK(st.struct_size == sizeof st && st.finish_ns > 0.0);
    libra_schedule_free(s);
    libra_network_free(net);
}

int main(void) {
    test_older_result_struct();
    test_schedule_structs();
    PASS();
}
