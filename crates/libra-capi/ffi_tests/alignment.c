/* Caller arrays and structs at misaligned addresses: every one is refused with
 * LIBRA_ERR_INVALID_ARGUMENT naming the argument, before it is read or written and before
 * anything changes, rather than read through a misaligned pointer. */
#include "libra.h"
#include "check.h"
#include "topo_defaults.h"
#include <stdalign.h>
#include <stdint.h>

/* Misaligned by 4 bytes within an 8-aligned buffer. */
#define ODD(buf) ((void *)((unsigned char *)(buf) + 4))

static void check_named(const char *function, const char *argument) {
    const char *m = libra_last_error_message();
    CHECK(strstr(m, function) != NULL);
    CHECK(strstr(m, argument) != NULL);
    CHECK(strstr(m, "aligned") != NULL);
}

static void test_network_arrays(void) {
    /* The dimension array itself misaligned (its stride is fine). */
    alignas(8) unsigned char buf[2 * sizeof(libra_dim_desc) + 8];
    libra_dim_desc d = dim_desc_defaults();
    memcpy(ODD(buf), &d, sizeof d);
    libra_network *net = NULL;
    CHECK_STATUS(libra_network_new((const libra_dim_desc *)ODD(buf), 1, &net), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_network_new:", "`dims[0]`");
    CHECK(net == NULL);

    CHECK_OK(libra_network_preset_new(LIBRA_NETWORK_PRESET_3D, &net));
    size_t dims = 0;
    CHECK_OK(libra_network_num_dims(net, &dims));
    CHECK(dims == 3);
    alignas(8) double space[8] = {100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0};
    double cost = -1.0;
    CHECK_STATUS(libra_network_cost(net, (const double *)ODD(space), dims, &cost), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_network_cost:", "`bandwidths`");
    CHECK(cost == -1.0);
    CHECK_STATUS(libra_network_set_bandwidths(net, (const double *)ODD(space), dims), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_network_set_bandwidths:", "`bandwidths`");

    /* The optimiser's output array: refused before the solve, nothing written. */
    libra_workload *wl = NULL;
    CHECK_OK(libra_workload_new(LIBRA_OVERLAP_NONE, &wl));
    libra_optimize_config cfg = optimize_config_defaults();
    cfg.total_bandwidth = 300.0;
    libra_optimize_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    memset(space, 0, sizeof space);
    CHECK_STATUS(libra_optimize(net, wl, &cfg, (double *)ODD(space), dims, &res), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_optimize:", "`bandwidths_out`");
    for (size_t i = 0; i < 8; i++) CHECK(space[i] == 0.0);
    CHECK(res.time_ns == 0.0);
    libra_workload_free(wl);
    libra_network_free(net);
}

static libra_cache *small_cache(void) {
    libra_cache_config c;
    c.struct_size = sizeof c;
    CHECK_OK(libra_cache_config_default(&c));
    c.block_tokens = 4;
    c.gpu_blocks = 8;
    c.host_blocks = 0;
    c.block_bytes = 64;
    libra_cache *cache = NULL;
    CHECK_OK(libra_cache_create(&c, &cache));
    return cache;
}

static void test_cache_arrays(void) {
    /* The adopted segment array. */
    alignas(8) unsigned char mem[8 * 64];
    alignas(8) unsigned char segs[sizeof(libra_segment) + 8];
    libra_segment s = {(uint64_t)(uintptr_t)mem, 64, 64};
    memcpy(ODD(segs), &s, sizeof s);
    libra_cache_config c;
    c.struct_size = sizeof c;
    CHECK_OK(libra_cache_config_default(&c));
    c.gpu_blocks = 8;
    c.host_blocks = 0;
    c.segments = (const libra_segment *)ODD(segs);
    c.segment_count = 1;
    libra_cache *cache = NULL;
    CHECK_STATUS(libra_cache_create(&c, &cache), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_create:", "`config.segments`");
    CHECK(cache == NULL);
    /* The config struct itself. */
    alignas(8) unsigned char cbuf[sizeof(libra_cache_config) + 8];
    c.segments = NULL;
    c.segment_count = 0;
    memcpy(ODD(cbuf), &c, sizeof c);
    CHECK_STATUS(libra_cache_create((const libra_cache_config *)ODD(cbuf), &cache), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_create:", "`config`");

    cache = small_cache();
    const unsigned char w[64] = {3};
    CHECK_OK(libra_cache_register_adapter(cache, 1, w, sizeof w, LIBRA_RANK_UNKNOWN, 0));
    alignas(8) uint32_t tokens[9] = {0};
    alignas(8) uint32_t ids[9] = {0};
    libra_match m;
    memset(&m, 0, sizeof m);
    /* Token ids and the block-id output of a match: no request is opened. */
    CHECK_STATUS(libra_cache_match(cache, 1, 0, (const uint32_t *)((unsigned char *)tokens + 2), 8, 1, ids, 8, &m),
                 LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_match:", "`tokens`");
    CHECK_STATUS(libra_cache_match(cache, 1, 0, tokens, 8, 1, (uint32_t *)((unsigned char *)ids + 2), 8, &m),
                 LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_match:", "`blocks_out`");
    CHECK(m.request == 0);
    libra_cache_stats st;
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(cache, &st));
    CHECK(st.open_requests == 0 && st.matches == 0);

    /* Allocation output: nothing is allocated. */
    CHECK_OK(libra_cache_match(cache, 1, 0, tokens, 8, 1, ids, 8, &m));
    size_t n = 99;
    CHECK_STATUS(libra_cache_allocate(cache, m.request, 8, 1, (uint32_t *)((unsigned char *)ids + 2), 8, &n),
                 LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_allocate:", "`blocks_out`");
    CHECK(n == 99);
    CHECK_OK(libra_cache_get_stats(cache, &st));
    uint32_t used = st.gpu_blocks_used;
    CHECK_OK(libra_cache_allocate(cache, m.request, 8, 1, ids, 8, &n));
    CHECK(n == 2);
    CHECK_OK(libra_cache_get_stats(cache, &st));
    CHECK(st.gpu_blocks_used == used + 2);
    /* Commit's token ids, and the adapter's block list. */
    CHECK_STATUS(libra_cache_commit(cache, m.request, (const uint32_t *)((unsigned char *)tokens + 2), 8, 1, NULL),
                 LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_commit:", "`tokens`");
    CHECK_STATUS(libra_cache_adapter_blocks(cache, 1, (uint32_t *)((unsigned char *)ids + 2), 8, &n),
                 LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_adapter_blocks:", "`blocks_out`");
    /* Optional and scalar outputs: refused before the call changes anything. */
    alignas(8) unsigned char scratch[64] = {0};
    CHECK_STATUS(libra_cache_commit(cache, m.request, tokens, 8, 1, (size_t *)ODD(scratch)), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_commit:", "`shared_out`");
    CHECK_STATUS(libra_cache_allocate(cache, m.request, 0, 1, ids, 8, (size_t *)ODD(scratch)), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_allocate:", "`count_out`");
    libra_readiness r;
    uint32_t ready = 0;
    CHECK_STATUS(libra_cache_poll_groups(cache, m.request, &r, &ready, (uint32_t *)((unsigned char *)scratch + 2)),
                 LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_poll_groups:", "`groups_out`");
    CHECK_STATUS(libra_cache_step(cache, 2, 1, false, (libra_step_report *)((unsigned char *)scratch + 2)), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_step:", "`report_out`");
    CHECK_OK(libra_cache_commit(cache, m.request, tokens, 8, 1, NULL));
    CHECK_OK(libra_cache_release(cache, m.request, 2));
    /* The event log's output: nothing is drained. */
    size_t count = 0;
    CHECK_STATUS(libra_cache_drain_events(cache, (libra_event *)ODD(scratch), 1, &count), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_drain_events:", "`events_out`");
    /* Result structs. */
    alignas(8) unsigned char sbuf[sizeof(libra_cache_stats) + 8];
    ((libra_cache_stats *)(void *)sbuf)->struct_size = sizeof(libra_cache_stats);
    memmove(ODD(sbuf), sbuf, sizeof(size_t));
    CHECK_STATUS(libra_cache_get_stats(cache, (libra_cache_stats *)ODD(sbuf)), LIBRA_ERR_INVALID_ARGUMENT);
    check_named("libra_cache_get_stats:", "`out`");
    CHECK_OK(libra_cache_check(cache));
    libra_cache_free(cache);
}

int main(void) {
    test_network_arrays();
    test_cache_arrays();
    PASS();
}
