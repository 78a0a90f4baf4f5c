/* What an engine embedding the cache needs beyond the request loop: an adapter's length, rank
 * and block layout (rebuilding its weights from the pool), an unknown rank, a match that leaves
 * tokens to compute, and the asynchronous CPU backend's pending requests, waits and busy
 * allocations. */
#include "libra.h"
#include "check.h"
#include <stdint.h>
#include <threads.h>
#include <time.h>

#define BT 4

static libra_cache *make(uint32_t backend, uint32_t gpu, uint32_t host, double link, uint64_t swap_wait) {
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    cfg.block_tokens = BT;
    cfg.block_bytes = 64;
    cfg.gpu_blocks = gpu;
    cfg.host_blocks = host;
    cfg.backend = backend;
    cfg.link_bytes_per_us = link;
    cfg.swap_wait_us = swap_wait;
    cfg.events = true;
    libra_cache *c = NULL;
    CHECK_OK(libra_cache_create(&cfg, &c));
    return c;
}

static libra_readiness wait_ready(libra_cache *c, uint64_t request) {
    libra_readiness r = LIBRA_PENDING;
    CHECK_OK(libra_cache_wait(c, request, 10u * 1000u * 1000u, &r));
    return r;
}

/* The weights come back from the pool block by block, the last block partly filled. */
static void test_adapter_info(void) {
    libra_cache *c = make(LIBRA_BACKEND_CPU, 8, 8, 50000.0, 100000);
    uint8_t w[150];
    for (size_t i = 0; i < sizeof w; i++) w[i] = (uint8_t)(i * 7 + 3);
    CHECK_OK(libra_cache_register_adapter(c, 5, w, sizeof w, LIBRA_RANK_UNKNOWN, 0));
    CHECK_OK(libra_cache_register_adapter(c, 6, w, 10, 16, 0));

    libra_adapter_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_OK(libra_cache_adapter_info(c, 5, &info));
    CHECK(info.weights_len == 150 && info.rank == LIBRA_RANK_UNKNOWN && info.blocks == 3);
    CHECK(info.block_bytes == 64 && !info.resident);
    CHECK_OK(libra_cache_adapter_info(c, 6, &info));
    CHECK(info.weights_len == 10 && info.rank == 16 && info.blocks == 1);

    uint32_t tokens[BT] = {1, 2, 3, 4};
    uint32_t blocks[4];
    libra_match m;
    CHECK_OK(libra_cache_match(c, 5, 0, tokens, BT, 1, blocks, 4, &m));
    CHECK(wait_ready(c, m.request) == LIBRA_READY);
    CHECK_OK(libra_cache_adapter_info(c, 5, &info));
    CHECK(info.resident);
    uint32_t ids[8];
    size_t n = 0;
    CHECK_OK(libra_cache_adapter_blocks(c, 5, ids, 8, &n));
    CHECK(n == info.blocks && m.adapter_blocks == n);
    uint8_t rebuilt[150];
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t addr = 0;
        CHECK_OK(libra_cache_block_address(c, ids[i], 0, &addr));
        size_t take = info.weights_len - at < info.block_bytes ? (size_t)(info.weights_len - at) : (size_t)info.block_bytes;
        memcpy(rebuilt + at, (const void *)(uintptr_t)addr, take);
        at += take;
    }
    CHECK(at == sizeof w && memcmp(rebuilt, w, sizeof w) == 0);
    CHECK_OK(libra_cache_release(c, m.request, 2));

    libra_adapter_info small = info;
    small.struct_size = 4;
    CHECK_STATUS(libra_cache_adapter_info(c, 5, &small), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "struct_size") != NULL);
    CHECK_STATUS(libra_cache_adapter_info(c, 99, &info), LIBRA_ERR_NOT_FOUND);
    CHECK_STATUS(libra_cache_adapter_info(c, 5, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_adapter_info(NULL, 5, &info), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

/* A prompt of whole cached blocks: plain match reports all of it, match_leaving keeps some. */
static void test_match_leaving(void) {
    libra_cache *c = make(LIBRA_BACKEND_CPU, 16, 0, 50000.0, 100000);
    uint8_t w[8] = {0};
    CHECK_OK(libra_cache_register_adapter(c, 1, w, sizeof w, 4, 0));
    uint32_t t[2 * BT] = {10, 11, 12, 13, 14, 15, 16, 17};
    uint32_t blocks[4];
    size_t count = 0;
    libra_match m;
    CHECK_OK(libra_cache_match(c, 1, 0, t, 2 * BT, 1, blocks, 4, &m));
    CHECK_OK(libra_cache_allocate(c, m.request, 2 * BT, 1, blocks, 4, &count));
    CHECK_OK(libra_cache_commit(c, m.request, t, 2 * BT, 1, NULL));
    CHECK_OK(libra_cache_release(c, m.request, 1));

    CHECK_OK(libra_cache_match(c, 1, 0, t, 2 * BT, 2, blocks, 4, &m));
    CHECK(m.cached_tokens == 2 * BT);
    CHECK_OK(libra_cache_release(c, m.request, 2));
    CHECK_OK(libra_cache_match_leaving(c, 1, 0, t, 2 * BT, 1, 3, blocks, 4, &m));
    CHECK(m.cached_tokens == BT && m.cached_blocks == 1);
    CHECK_OK(libra_cache_release(c, m.request, 3));
    CHECK_OK(libra_cache_match_leaving(c, 1, 0, t, 2 * BT, 0, 4, blocks, 4, &m));
    CHECK(m.cached_tokens == 2 * BT);
    CHECK_OK(libra_cache_release(c, m.request, 4));
    CHECK_OK(libra_cache_match_leaving(c, 1, 0, t, 2 * BT, 2 * BT, 5, NULL, 0, &m));
    CHECK(m.cached_tokens == 0);
    CHECK_OK(libra_cache_release(c, m.request, 5));

    libra_cache_stats before;
    before.struct_size = sizeof before;
    CHECK_OK(libra_cache_get_stats(c, &before));
    CHECK_STATUS(libra_cache_match_leaving(c, 1, 0, t, 2 * BT, 2 * BT + 1, 6, blocks, 4, &m), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "min_uncached") != NULL);
    CHECK_STATUS(libra_cache_match_leaving(c, 1, 0, t, 2 * BT, 1, 6, blocks, 0, &m), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "blocks_capacity") != NULL);
    CHECK_STATUS(libra_cache_match_leaving(c, 1, 0, t, 2 * BT, 1, 6, NULL, 4, &m), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_match_leaving(c, 1, 0, NULL, 2 * BT, 1, 6, blocks, 4, &m), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_match_leaving(c, 1, 0, t, 2 * BT, 1, 6, blocks, 4, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_match_leaving(c, 9, 0, t, 2 * BT, 1, 6, blocks, 4, &m), LIBRA_ERR_NOT_FOUND);
    CHECK_STATUS(libra_cache_match_leaving(NULL, 1, 0, t, 2 * BT, 1, 6, blocks, 4, &m), LIBRA_ERR_NULL_ARGUMENT);
    libra_cache_stats after;
    after.struct_size = sizeof after;
    CHECK_OK(libra_cache_get_stats(c, &after));
    CHECK(after.matches == before.matches && after.open_requests == 0);
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

/* Copies complete later on the worker: a request is pending until waited for, and an
 * allocation that must first swap blocks out is busy until the copies land. */
static void test_async_backend(void) {
    CHECK_STATUS(libra_cache_create(NULL, NULL), LIBRA_ERR_NULL_ARGUMENT);
    /* 64-byte blocks at 0.0005 bytes/us: each block takes 128 ms on the link, far longer than
     * the calls that check it is still pending, even under valgrind. */
    libra_cache *c = make(LIBRA_BACKEND_CPU_ASYNC, 4, 8, 0.0005, 0);
    CHECK(strcmp(libra_cache_backend_name(c), "cpu-async") == 0);
    uint8_t w[64];
    memset(w, 9, sizeof w);
    CHECK_OK(libra_cache_register_adapter(c, 1, w, sizeof w, 8, 0));
    uint32_t t[3 * BT];
    for (size_t i = 0; i < 3 * BT; i++) t[i] = (uint32_t)(100 + i);
    uint32_t blocks[4];
    size_t count = 0;
    libra_match m;
    CHECK_OK(libra_cache_match_leaving(c, 1, 0, t, 3 * BT, 1, 10, blocks, 4, &m));
    CHECK(!m.ready);
    libra_readiness r = LIBRA_READY;
    CHECK_OK(libra_cache_poll(c, m.request, &r));
    CHECK(r == LIBRA_PENDING);
    CHECK_OK(libra_cache_wait(c, m.request, 0, &r));
    CHECK(r == LIBRA_PENDING);
    CHECK(wait_ready(c, m.request) == LIBRA_READY);
    CHECK_OK(libra_cache_allocate(c, m.request, 3 * BT, 10, blocks, 4, &count));
    CHECK(count == 3);
    CHECK_OK(libra_cache_commit(c, m.request, t, 3 * BT, 10, NULL));
    CHECK_OK(libra_cache_release(c, m.request, 10));

    /* The tier is full (adapter + 3 KV blocks): a new prompt's blocks need swap-outs first. */
    uint32_t u[3 * BT];
    for (size_t i = 0; i < 3 * BT; i++) u[i] = (uint32_t)(500 + i);
    CHECK_OK(libra_cache_match(c, 1, 0, u, 3 * BT, 20, blocks, 4, &m));
    CHECK(wait_ready(c, m.request) == LIBRA_READY);
    libra_status s = libra_cache_allocate(c, m.request, 2 * BT, 20, blocks, 4, &count);
    int busy = 0;
    uint64_t now = 20;
    /* Bounded in time, not in calls: up to 10 s for two 128 ms copies. */
    const struct timespec one_ms = {0, 1000000};
    while (s == LIBRA_ERR_BUSY && busy < 10000) {
        busy++;
        thrd_sleep(&one_ms, NULL);
        CHECK_OK(libra_cache_step(c, ++now, 1, false, NULL));
        s = libra_cache_allocate(c, m.request, 2 * BT, now, blocks, 4, &count);
    }
    CHECK(busy > 0);
    CHECK_OK(s);
    CHECK(count == 2);
    CHECK_OK(libra_cache_release(c, m.request, now));
    libra_cache_stats st;
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.swap_out_blocks >= 2);
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c); /* with copies possibly still queued on the worker */

    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    cfg.backend = 4;
    libra_cache *bad = NULL;
    CHECK_STATUS(libra_cache_create(&cfg, &bad), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "backend") != NULL && bad == NULL);
}

int main(void) {
    test_adapter_info();
    test_match_leaving();
    test_async_backend();
    PASS();
}
