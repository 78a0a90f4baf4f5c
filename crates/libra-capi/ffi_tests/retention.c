/* Retention hints through the C API: defaults, every refused hint, the order they impose on
 * evictions, expiry, and stats read through an older, smaller stats struct; and the opposite
 * hint, libra_cache_expect_no_reuse: what it marks, and that marked blocks leave first
 * without a host copy. */
#include "libra.h"
#include "check.h"
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define BT 4 /* tokens per block in these tests */

/* The defaults, with BT-token blocks of 64 bytes, the tiers' sizes and a policy. */
static libra_cache_config small_config(libra_policy policy, uint32_t gpu_blocks, uint32_t host_blocks) {
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    CHECK(cfg.write_through_blocks == 1024);
    cfg.block_tokens = BT;
    cfg.block_bytes = 64;
    cfg.gpu_blocks = gpu_blocks;
    cfg.host_blocks = host_blocks;
    cfg.policy = policy;
    return cfg;
}

static libra_cache *create(const libra_cache_config *cfg) {
    libra_cache *c = NULL;
    CHECK_OK(libra_cache_create(cfg, &c));
    return c;
}

static libra_cache *make_cache(uint32_t gpu_blocks) {
    /* No host tier: evictions drop, so what stays is what the order kept. */
    libra_cache_config cfg = small_config(LIBRA_POLICY_LRU, gpu_blocks, 0);
    return create(&cfg);
}

/* Matches, fills and commits a two-block prompt; returns the open request. */
static uint64_t put(libra_cache *c, uint32_t seed, uint64_t now) {
    uint32_t tokens[2 * BT], ids[4], blocks[4];
    for (uint32_t i = 0; i < 2 * BT; i++) tokens[i] = seed * 100u + i;
    libra_match m;
    size_t nb = 0;
    CHECK_OK(libra_cache_match(c, 1, 0, tokens, 2 * BT, now, ids, 4, &m));
    CHECK_OK(libra_cache_allocate(c, m.request, 2 * BT, now, blocks, 4, &nb));
    CHECK(nb == 2);
    size_t shared = 0;
    CHECK_OK(libra_cache_commit(c, m.request, tokens, 2 * BT, now, &shared));
    CHECK(shared == 2);
    return m.request;
}

static size_t cached(libra_cache *c, uint32_t seed, uint64_t now) {
    uint32_t tokens[2 * BT], ids[4];
    for (uint32_t i = 0; i < 2 * BT; i++) tokens[i] = seed * 100u + i;
    libra_match m;
    CHECK_OK(libra_cache_match(c, 1, 0, tokens, 2 * BT, now, ids, 4, &m));
    CHECK_OK(libra_cache_release(c, m.request, now));
    return m.cached_tokens;
}

static void expect_refused(libra_cache *c, uint64_t req, const libra_retention *h, const char *field) {
    CHECK_STATUS(libra_cache_set_retention(c, req, 1000, h), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), field) != NULL);
}

static void test_errors(void) {
    libra_retention h;
    CHECK_STATUS(libra_retention_default(NULL), LIBRA_ERR_NULL_ARGUMENT);
    h.struct_size = sizeof h;
    CHECK_OK(libra_retention_default(&h));
    CHECK(h.struct_size == sizeof h && h.priority == 1.0 && h.duration_us == 0 && h.expect_back_us == 0);

    libra_cache *c = make_cache(16);
    uint8_t w[128] = {0};
    CHECK_OK(libra_cache_register_adapter(c, 1, w, sizeof w, 8, 0));
    uint64_t req = put(c, 1, 1000);

    expect_refused(c, req, &h, "duration_us"); /* neither a duration nor an expected return */
    libra_retention bad = h;
    bad.duration_us = 10;
    bad.priority = NAN;
    expect_refused(c, req, &bad, "priority");
    bad.priority = -2.0;
    expect_refused(c, req, &bad, "priority");
    bad.priority = INFINITY;
    expect_refused(c, req, &bad, "priority");
    bad = h;
    bad.expect_back_us = 999; /* before now */
    expect_refused(c, req, &bad, "expect_back_us");
    bad.expect_back_us = 1000; /* now is not after now */
    expect_refused(c, req, &bad, "expect_back_us");
    bad = h;
    bad.duration_us = (uint64_t)1 << 41;
    expect_refused(c, req, &bad, "duration_us");
    bad = h;
    bad.duration_us = 10;
    bad.struct_size = 8;
    expect_refused(c, req, &bad, "struct_size");
    CHECK_STATUS(libra_cache_set_retention(c, req, 1000, NULL), LIBRA_ERR_NULL_ARGUMENT);
    h.duration_us = 10;
    CHECK_STATUS(libra_cache_set_retention(NULL, req, 1000, &h), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_set_retention(c, req + 1, 1000, &h), LIBRA_ERR_NOT_FOUND);

    libra_cache_stats st;
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.hinted_blocks == 0); /* refused hints changed nothing */
    CHECK_OK(libra_cache_set_retention(c, req, 1000, &h));
    CHECK_OK(libra_cache_release(c, req, 1000));
    CHECK_STATUS(libra_cache_set_retention(c, req, 1000, &h), LIBRA_ERR_NOT_FOUND); /* released */
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.hinted_blocks == 2);

    /* A caller built against the header before `hinted_blocks` existed: only its bytes are
     * written, the rest of its buffer is left alone. */
    unsigned char buf[sizeof(libra_cache_stats) + 16];
    memset(buf, 0xAB, sizeof buf);
    libra_cache_stats *old = (libra_cache_stats *)buf;
    old->struct_size = offsetof(libra_cache_stats, hinted_blocks);
    CHECK_OK(libra_cache_get_stats(c, old));
    CHECK(old->gpu_blocks_total == 16 && old->kv_blocks_gpu == 2);
    for (size_t i = offsetof(libra_cache_stats, hinted_blocks); i < sizeof buf; i++) CHECK(buf[i] == 0xAB);
    old->struct_size = offsetof(libra_cache_stats, hinted_blocks) - 1;
    CHECK_STATUS(libra_cache_get_stats(c, old), LIBRA_ERR_INVALID_ARGUMENT);

    /* Expiry at a step: 1000 + 10 us. */
    CHECK_OK(libra_cache_step(c, 1010, 1, false, NULL));
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.hinted_blocks == 0);
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

/* 8 blocks: the adapter takes 2, three two-block prompts 6. The oldest prompt is hinted (an
 * expected return); a fourth prompt must evict one, and it is the unhinted older one. */
static void test_order(void) {
    libra_cache *c = make_cache(8);
    uint8_t w[128] = {0};
    CHECK_OK(libra_cache_register_adapter(c, 1, w, sizeof w, 8, 0));
    libra_retention h;
    h.struct_size = sizeof h;
    CHECK_OK(libra_retention_default(&h));
    h.expect_back_us = 60000000; /* the tool call is expected back within a minute */
    h.duration_us = 5000000;     /* and may run 5 s late */
    h.priority = 10.0;
    uint64_t a = put(c, 1, 10);
    CHECK_OK(libra_cache_set_retention(c, a, 10, &h));
    CHECK_OK(libra_cache_release(c, a, 10));
    CHECK_OK(libra_cache_release(c, put(c, 2, 20), 20));
    CHECK_OK(libra_cache_release(c, put(c, 3, 30), 30));
    CHECK_OK(libra_cache_release(c, put(c, 4, 40), 40));
    CHECK_OK(libra_cache_check(c));
    CHECK(cached(c, 1, 50) == 2 * BT); /* hinted, oldest: kept */
    CHECK(cached(c, 2, 50) == 0);      /* unhinted, oldest of the rest: gone */
    CHECK(cached(c, 4, 50) == 2 * BT);
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

/* Write-through under LIBRA: 40 blocks, the adapter and ten two-block prompts use 22, above
 * a low swap-out mark of 0.5 (20); the next swap-out (from 0.6 down to 0.5) takes 4 blocks,
 * which a step copies to the host while they stay on the GPU. A larger allocation then frees
 * them without a copy. With write_through_blocks = 0 nothing is copied ahead. */
static void test_write_through(uint32_t blocks_per_pass) {
    libra_cache_config cfg = small_config(LIBRA_POLICY_LIBRA, 40, 40);
    cfg.swap_out_high = 0.6;
    cfg.swap_out_low = 0.5;
    cfg.prefetch_interval_us = 0;
    cfg.write_through_blocks = blocks_per_pass;
    libra_cache *c = create(&cfg);
    uint8_t w[128] = {0};
    CHECK_OK(libra_cache_register_adapter(c, 1, w, sizeof w, 8, 0));
    for (uint32_t i = 0; i < 10; i++) CHECK_OK(libra_cache_release(c, put(c, 10 + i, 100 + i), 100 + i));
    CHECK_OK(libra_cache_step(c, 200, 1, false, NULL)); /* submits the copies */
    CHECK_OK(libra_cache_step(c, 201, 1, false, NULL)); /* finishes them */
    libra_cache_stats st;
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(c, &st));
    uint64_t want = blocks_per_pass ? 4 : 0;
    CHECK(st.clean_blocks == want && st.write_through_bytes == want * 64);
    CHECK(st.gpu_blocks_used == 22 && st.instant_evictions == 0);
    uint32_t tokens[20 * BT], ids[24], blocks[24];
    for (uint32_t i = 0; i < 20 * BT; i++) tokens[i] = 9000 + i;
    libra_match m;
    size_t nb = 0;
    CHECK_OK(libra_cache_match(c, 1, 0, tokens, 20 * BT, 300, ids, 24, &m));
    CHECK_OK(libra_cache_allocate(c, m.request, 20 * BT, 300, blocks, 24, &nb));
    CHECK(nb == 20);
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.instant_evictions == (blocks_per_pass ? 2 : 0));
    CHECK_OK(libra_cache_abort(c, m.request, 300));
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

/* Two prompts under a shared one-block system prompt, with a host tier: the newer one is
 * declared finished for good. Its own block leaves first and is dropped although the host tier
 * has room; the older prompt is copied to the host. A match reads the shared block again. */
static void test_no_reuse(void) {
    libra_cache_config cfg = small_config(LIBRA_POLICY_LRU, 8, 16);
    libra_cache *c = create(&cfg);
    uint8_t w[128] = {0};
    CHECK_OK(libra_cache_register_adapter(c, 1, w, sizeof w, 8, 0)); /* 2 blocks */

    CHECK_STATUS(libra_cache_expect_no_reuse(NULL, 1, 0, 0), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_expect_no_reuse(c, 12345, 0, 0), LIBRA_ERR_NOT_FOUND);
    CHECK(strstr(libra_last_error_message(), "not open") != NULL);

    /* Both prompts start with the same block. */
    uint32_t older[2 * BT], newer[2 * BT];
    for (uint32_t i = 0; i < 2 * BT; i++) {
        older[i] = i < BT ? 7 : 1000 + i;
        newer[i] = i < BT ? 7 : 2000 + i;
    }
    uint32_t ids[4], blocks[4];
    libra_match m;
    size_t nb = 0, shared = 0;
    CHECK_OK(libra_cache_match(c, 1, 0, older, 2 * BT, 10, ids, 4, &m));
    CHECK_OK(libra_cache_allocate(c, m.request, 2 * BT, 10, blocks, 4, &nb));
    CHECK_OK(libra_cache_commit(c, m.request, older, 2 * BT, 10, &shared));
    CHECK_OK(libra_cache_release(c, m.request, 10));
    CHECK_OK(libra_cache_match(c, 1, 0, newer, 2 * BT, 20, ids, 4, &m));
    CHECK(m.cached_tokens == BT);
    CHECK_OK(libra_cache_allocate(c, m.request, BT, 20, blocks, 4, &nb));
    CHECK_OK(libra_cache_commit(c, m.request, newer + BT, BT, 20, &shared));
    CHECK_OK(libra_cache_expect_no_reuse(c, m.request, 20, BT)); /* keep the shared block */
    CHECK_OK(libra_cache_expect_no_reuse(c, m.request, 20, BT)); /* again: same effect */
    libra_cache_stats st;
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.no_reuse_blocks == 0); /* marked at release */
    CHECK_OK(libra_cache_release(c, m.request, 20));
    CHECK_STATUS(libra_cache_expect_no_reuse(c, m.request, 20, 0), LIBRA_ERR_NOT_FOUND);
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.no_reuse_blocks == 1 && st.hinted_blocks == 0 && st.gpu_blocks_used == 5);

    /* Five fresh blocks: three free, so two must leave: the marked block (dropped), then the
     * older prompt's own block (copied to the host). */
    uint32_t fresh[5 * BT], fids[8], fblocks[8];
    for (uint32_t i = 0; i < 5 * BT; i++) fresh[i] = 5000 + i;
    CHECK_OK(libra_cache_match(c, 1, 0, fresh, 5 * BT, 30, fids, 8, &m));
    CHECK_OK(libra_cache_allocate(c, m.request, 5 * BT, 30, fblocks, 8, &nb));
    CHECK(nb == 5);
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.dropped_blocks == 1 && st.swap_out_blocks == 1 && st.no_reuse_blocks == 0);
    CHECK(st.kv_blocks_host == 1);
    CHECK_OK(libra_cache_abort(c, m.request, 30));
    CHECK_OK(libra_cache_check(c));

    /* The newer prompt finds only the shared block; the older one all of it (one block on the
     * host). */
    CHECK_OK(libra_cache_match(c, 1, 0, newer, 2 * BT, 40, ids, 4, &m));
    CHECK(m.cached_tokens == BT);
    CHECK_OK(libra_cache_release(c, m.request, 40));
    CHECK_OK(libra_cache_match(c, 1, 0, older, 2 * BT, 40, ids, 4, &m));
    CHECK(m.cached_tokens == 2 * BT);
    libra_readiness ready;
    CHECK_OK(libra_cache_wait(c, m.request, 1000000, &ready));
    CHECK(ready == LIBRA_READY);
    CHECK_OK(libra_cache_release(c, m.request, 40));
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

int main(void) {
    test_errors();
    test_no_reuse();
    test_order();
    test_write_through(16);
    test_write_through(0);
    PASS();
}
