/* The cache's C API: the request lifecycle, stats, events, and every error path. */
#include "libra.h"
#include "check.h"
#include <stdint.h>

#define BT 4 /* tokens per block in these tests */

static libra_cache *make_cache(uint32_t policy, uint32_t gpu_blocks, uint32_t host_blocks) {
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    cfg.block_tokens = BT;
    cfg.block_bytes = 64;
    cfg.gpu_blocks = gpu_blocks;
    cfg.host_blocks = host_blocks;
    cfg.policy = policy;
    cfg.events = true;
    libra_cache *c = NULL;
    CHECK_OK(libra_cache_create(&cfg, &c));
    CHECK(c != NULL);
    return c;
}

static void fill_tokens(uint32_t *t, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) t[i] = seed * 1000u + (uint32_t)i;
}

static void test_config_errors(void) {
    libra_cache_config cfg;
    libra_cache *c = (libra_cache *)0x1;
    CHECK_STATUS(libra_cache_config_default(NULL), LIBRA_ERR_NULL_ARGUMENT);
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    CHECK(cfg.struct_size == sizeof(cfg));
    CHECK_STATUS(libra_cache_create(NULL, &c), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_create(&cfg, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK(c == (libra_cache *)0x1); /* out-parameters untouched on failure */

    libra_cache_config bad = cfg;
    bad.struct_size = 8;
    CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "struct_size") != NULL);
    bad = cfg;
    bad.policy = 99;
    CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "policy") != NULL);
    bad = cfg;
    bad.block_tokens = 0;
    CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "block_tokens") != NULL);
    bad = cfg;
    bad.swap_out_high = 1.5;
    CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_INVALID_ARGUMENT);
    bad = cfg;
    bad.gpu_blocks = 0;
    CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "gpu_blocks") != NULL);
    {
        /* Adopted segments: still no `gpu_blocks = 0`, and the host tier (which the cache
         * allocates) stays under the size limit: 2^22 host blocks of 1 MiB are 4 TiB. */
        static uint8_t kv[2][4096];
        libra_segment segs[2] = {{(uint64_t)(uintptr_t)kv[0], 1u << 19, 1u << 19},
                                 {(uint64_t)(uintptr_t)kv[1], 1u << 19, 1u << 19}};
        bad = cfg;
        bad.segments = segs;
        bad.segment_count = 2;
        bad.gpu_blocks = 0;
        CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK(strstr(libra_last_error_message(), "gpu_blocks") != NULL);
        bad.gpu_blocks = 1;
        bad.host_blocks = 1u << 22;
        CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK(strstr(libra_last_error_message(), "host_blocks") != NULL);
    }
    bad = cfg;
    bad.block_bytes = UINT64_MAX / 2;
    CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_INVALID_ARGUMENT);
    bad = cfg;
    bad.segments = NULL;
    bad.segment_count = 3;
    CHECK_STATUS(libra_cache_create(&bad, &c), LIBRA_ERR_NULL_ARGUMENT);
    bad = cfg;
    bad.backend = LIBRA_BACKEND_CUDA; /* no GPU where the tests run */
    libra_status s = libra_cache_create(&bad, &c);
    if (s == LIBRA_OK) {
        libra_cache_free(c);
    } else {
        CHECK(s == LIBRA_ERR_DEVICE);
    }
    CHECK(c == (libra_cache *)0x1 || s == LIBRA_OK);
    bad = cfg;
    bad.backend = LIBRA_BACKEND_AUTO;
    libra_cache *a = NULL;
    CHECK_OK(libra_cache_create(&bad, &a));
    CHECK(libra_cache_backend_name(a) != NULL);
    CHECK(strlen(libra_cache_backend_reason(a)) > 0);
    libra_cache_free(a);
    libra_cache_free(NULL);
    CHECK(libra_cache_backend_name(NULL) == NULL);
    CHECK(libra_cache_backend_reason(NULL) == NULL);
}

static void test_lifecycle(void) {
    libra_cache *c = make_cache(LIBRA_POLICY_ELORA, 32, 32);
    CHECK(strcmp(libra_cache_backend_name(c), "cpu") == 0);
    uint8_t weights[100];
    memset(weights, 7, sizeof weights);
    CHECK_OK(libra_cache_register_adapter(c, 42, weights, sizeof weights, 16, 0));
    CHECK_STATUS(libra_cache_register_adapter(c, 42, weights, sizeof weights, 16, 0), LIBRA_ERR_ALREADY_EXISTS);
    CHECK_STATUS(libra_cache_register_adapter(c, 43, NULL, 10, 16, 0), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_register_adapter(c, 43, weights, 0, 16, 0), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_cache_register_adapter(NULL, 43, weights, 10, 1, 0), LIBRA_ERR_NULL_ARGUMENT);

    uint32_t tokens[10];
    fill_tokens(tokens, 10, 1);
    uint32_t ids[16];
    libra_match m;
    memset(&m, 0xAB, sizeof m);
    CHECK_STATUS(libra_cache_match(c, 999, 0, tokens, 10, 1, ids, 16, &m), LIBRA_ERR_NOT_FOUND);
    CHECK(strstr(libra_last_error_message(), "999") != NULL);
    CHECK(m.request == 0xABABABABABABABABull); /* untouched */
    CHECK_STATUS(libra_cache_match(c, 42, 0, NULL, 10, 1, ids, 16, &m), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_match(c, 42, 0, tokens, 10, 1, ids, 16, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_match(c, 42, 0, tokens, 10, 1, ids, 1, &m), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_OK(libra_cache_match(c, 42, 0, tokens, 10, 1, ids, 16, &m));
    CHECK(m.cached_tokens == 0 && m.cached_blocks == 0 && m.adapter_blocks == 2);

    uint32_t ab[4];
    size_t n_ab = 0;
    CHECK_OK(libra_cache_adapter_blocks(c, 42, ab, 4, &n_ab));
    CHECK(n_ab == 2);
    CHECK_STATUS(libra_cache_adapter_blocks(c, 42, ab, 1, &n_ab), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_cache_adapter_blocks(c, 42, ab, 4, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_adapter_blocks(c, 7, ab, 4, &n_ab), LIBRA_ERR_NOT_FOUND);

    libra_readiness r = LIBRA_FAILED;
    CHECK_OK(libra_cache_poll(c, m.request, &r));
    CHECK(r == LIBRA_READY);
    CHECK_OK(libra_cache_wait(c, m.request, 1000, &r));
    CHECK(r == LIBRA_READY);
    CHECK_STATUS(libra_cache_poll(c, m.request, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_wait(c, m.request, 10, NULL), LIBRA_ERR_NULL_ARGUMENT);
    void *ev = (void *)0x1;
    CHECK_OK(libra_cache_wait_event(c, m.request, &ev));
    CHECK(ev == NULL); /* CPU backend: nothing to wait on */
    CHECK_STATUS(libra_cache_wait_event(c, m.request, NULL), LIBRA_ERR_NULL_ARGUMENT);

    uint32_t blocks[8];
    size_t nb = 0;
    CHECK_STATUS(libra_cache_allocate(c, m.request, 10, 1, blocks, 2, &nb), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_cache_allocate(c, m.request, 10, 1, blocks, 8, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_allocate(c, 123456789, 10, 1, blocks, 8, &nb), LIBRA_ERR_NOT_FOUND);
    CHECK_OK(libra_cache_allocate(c, m.request, 10, 1, blocks, 8, &nb));
    CHECK(nb == 3);

    /* The engine writes KV into the blocks through their addresses. */
    uint64_t addr = 0;
    CHECK_OK(libra_cache_block_address(c, blocks[0], 0, &addr));
    CHECK(addr != 0);
    memset((void *)(uintptr_t)addr, 0x5A, 64);
    CHECK_STATUS(libra_cache_block_address(c, 1000, 0, &addr), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_cache_block_address(c, 0, 1, &addr), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_cache_block_address(c, 0, 0, NULL), LIBRA_ERR_NULL_ARGUMENT);

    size_t shared = 99;
    CHECK_STATUS(libra_cache_commit(c, m.request, tokens, 6, 2, &shared), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "multiple") != NULL);
    CHECK(shared == 99);
    CHECK_STATUS(libra_cache_commit(c, m.request, NULL, 8, 2, &shared), LIBRA_ERR_NULL_ARGUMENT);
    uint32_t too_many[16];
    fill_tokens(too_many, 16, 1);
    CHECK_STATUS(libra_cache_commit(c, m.request, too_many, 16, 2, &shared), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_OK(libra_cache_commit(c, m.request, tokens, 8, 2, &shared));
    CHECK(shared == 2);
    CHECK_OK(libra_cache_release(c, m.request, 3));
    CHECK_STATUS(libra_cache_release(c, m.request, 3), LIBRA_ERR_NOT_FOUND); /* double release */
    CHECK_STATUS(libra_cache_abort(c, m.request, 3), LIBRA_ERR_NOT_FOUND);
    CHECK_STATUS(libra_cache_commit(c, m.request, tokens, 4, 3, NULL), LIBRA_ERR_NOT_FOUND);

    /* The same prompt now hits the two committed blocks. */
    libra_match m2;
    CHECK_OK(libra_cache_match(c, 42, 0, tokens, 10, 4, ids, 16, &m2));
    CHECK(m2.cached_tokens == 8 && m2.cached_blocks == 2 && m2.ready);
    CHECK(ids[0] == blocks[0] && ids[1] == blocks[1]);
    uint8_t *p = (uint8_t *)(uintptr_t)addr;
    CHECK(p[0] == 0x5A && p[63] == 0x5A);
    CHECK_STATUS(libra_cache_unregister_adapter(c, 42), LIBRA_ERR_BUSY);
    CHECK_OK(libra_cache_abort(c, m2.request, 5));

    libra_step_report rep;
    CHECK_OK(libra_cache_step(c, 10, 4, false, &rep));
    CHECK_OK(libra_cache_step(c, 11, 4, true, NULL));
    CHECK_STATUS(libra_cache_step(NULL, 11, 4, true, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_OK(libra_cache_set_cost_hints(c, 10.0, 50000.0));
    CHECK_STATUS(libra_cache_set_cost_hints(c, -1.0, 50000.0), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_cache_set_cost_hints(c, 1.0, 0.0), LIBRA_ERR_INVALID_ARGUMENT);

    libra_cache_stats st;
    memset(&st, 0, sizeof st);
    CHECK_STATUS(libra_cache_get_stats(c, &st), LIBRA_ERR_INVALID_ARGUMENT); /* struct_size unset */
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.gpu_blocks_total == 32 && st.host_blocks_total == 32);
    CHECK(st.adapters_registered == 1 && st.matches == 2 && st.hit_tokens == 8);
    CHECK(st.invalid_kv_blocks == 0 && st.open_requests == 0);
    CHECK_STATUS(libra_cache_get_stats(c, NULL), LIBRA_ERR_NULL_ARGUMENT);

    libra_event events[64];
    size_t ne = 0;
    CHECK_STATUS(libra_cache_drain_events(c, NULL, 4, &ne), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_drain_events(c, events, 64, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_OK(libra_cache_drain_events(c, events, 64, &ne));
    CHECK(ne >= 2);
    int stored = 0;
    for (size_t i = 0; i < ne; i++) stored += events[i].kind == LIBRA_EVENT_STORED;
    CHECK(stored == 2);
    CHECK_OK(libra_cache_drain_events(c, events, 64, &ne));
    CHECK(ne == 0);

    CHECK_OK(libra_cache_check(c));
    CHECK_STATUS(libra_cache_check(NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_OK(libra_cache_unregister_adapter(c, 42));
    CHECK_STATUS(libra_cache_unregister_adapter(c, 42), LIBRA_ERR_NOT_FOUND);
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.gpu_blocks_used == 0 && st.kv_blocks_gpu == 0);
    libra_cache_free(c);
}

static void test_pool_exhausted(void) {
    /* 8 blocks: the adapter takes 2, a pinned request the other 6. */
    libra_cache *c = make_cache(LIBRA_POLICY_LRU, 8, 0);
    uint8_t w[128] = {0};
    CHECK_OK(libra_cache_register_adapter(c, 1, w, sizeof w, 8, 0));
    uint32_t tokens[24];
    fill_tokens(tokens, 24, 3);
    uint32_t ids[8], blocks[8];
    size_t nb;
    libra_match m;
    CHECK_OK(libra_cache_match(c, 1, 0, tokens, 24, 1, ids, 8, &m));
    CHECK_OK(libra_cache_allocate(c, m.request, 24, 1, blocks, 8, &nb));
    CHECK(nb == 6);
    libra_cache_stats before, after;
    before.struct_size = after.struct_size = sizeof before;
    CHECK_OK(libra_cache_get_stats(c, &before));
    nb = 77;
    CHECK_STATUS(libra_cache_allocate(c, m.request, 4, 2, blocks, 8, &nb), LIBRA_ERR_OUT_OF_MEMORY);
    CHECK(nb == 77);
    CHECK_OK(libra_cache_get_stats(c, &after));
    CHECK(memcmp(&before, &after, sizeof before) == 0); /* nothing changed */
    CHECK_OK(libra_cache_abort(c, m.request, 3));
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

static void test_adopted_segments(void) {
    /* The engine's own "KV tensors": 2 layers x K/V, 4 blocks of 32 bytes each, stride 48. */
    enum { LAYERS = 4, BLOCKS = 4, PIECE = 32, STRIDE = 48 };
    static uint8_t mem[LAYERS][BLOCKS * STRIDE];
    libra_segment segs[LAYERS];
    for (int i = 0; i < LAYERS; i++) {
        segs[i].base = (uint64_t)(uintptr_t)mem[i];
        segs[i].bytes_per_block = PIECE;
        segs[i].stride = STRIDE;
    }
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    cfg.block_tokens = BT;
    cfg.gpu_blocks = BLOCKS;
    cfg.host_blocks = 4;
    cfg.segments = segs;
    cfg.segment_count = LAYERS;
    libra_cache *c = NULL;
    CHECK_OK(libra_cache_create(&cfg, &c));
    uint64_t addr;
    CHECK_OK(libra_cache_block_address(c, 2, 3, &addr));
    CHECK(addr == (uint64_t)(uintptr_t)(mem[3] + 2 * STRIDE));
    libra_cache_free(c);

    segs[1].stride = 8; /* smaller than the piece */
    CHECK_STATUS(libra_cache_create(&cfg, &c), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "segments[1]") != NULL);
}

/* Request ids are never 0, and one cache refuses another's ids even where the same slot is
 * open in it. */
static void test_request_ids_are_unambiguous(void) {
    libra_cache *a = make_cache(LIBRA_POLICY_LRU, 16, 16);
    libra_cache *b = make_cache(LIBRA_POLICY_LRU, 16, 16);
    uint8_t weights[64] = {1};
    CHECK_OK(libra_cache_register_adapter(a, 1, weights, sizeof weights, 8, 0));
    CHECK_OK(libra_cache_register_adapter(b, 1, weights, sizeof weights, 8, 0));
    uint32_t tokens[8];
    fill_tokens(tokens, 8, 3);
    uint32_t ids[8];
    libra_match ma, mb;
    CHECK_OK(libra_cache_match(a, 1, 0, tokens, 8, 1, ids, 8, &ma));
    CHECK_OK(libra_cache_match(b, 1, 0, tokens, 8, 1, ids, 8, &mb));
    CHECK(ma.request != 0 && mb.request != 0);
    CHECK(ma.request != mb.request);
    libra_readiness st;
    CHECK_STATUS(libra_cache_poll(b, ma.request, &st), LIBRA_ERR_NOT_FOUND);
    CHECK_STATUS(libra_cache_release(a, mb.request, 2), LIBRA_ERR_NOT_FOUND);
    CHECK_OK(libra_cache_release(a, ma.request, 2));
    CHECK_OK(libra_cache_release(b, mb.request, 2));
    /* The slot is reused, the id is not. */
    libra_match again;
    CHECK_OK(libra_cache_match(a, 1, 0, tokens, 8, 3, ids, 8, &again));
    CHECK(again.request != ma.request && again.request != 0);
    CHECK_STATUS(libra_cache_poll(a, ma.request, &st), LIBRA_ERR_NOT_FOUND);
    CHECK_OK(libra_cache_release(a, again.request, 4));
    libra_cache_free(a);
    libra_cache_free(b);
}

int main(void) {
    test_request_ids_are_unambiguous();
    test_config_errors();
    test_lifecycle();
    test_pool_exhausted();
    test_adopted_segments();
    PASS();
}
