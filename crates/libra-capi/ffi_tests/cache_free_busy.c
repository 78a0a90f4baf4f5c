/* Freeing a cache with requests still open, blocks allocated but not committed, copies in
 * flight and events not drained must release everything: run under AddressSanitizer's leak
 * checker and valgrind by the harness. */
#include "libra.h"
#include "check.h"
#include <stdint.h>

#define BT 4

static libra_cache *busy_cache(uint32_t policy) {
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    cfg.block_tokens = BT;
    cfg.block_bytes = 128;
    cfg.gpu_blocks = 40;
    cfg.host_blocks = 24;
    cfg.policy = policy;
    /* Low watermarks, so that one step swaps out whatever is not pinned. */
    cfg.swap_out_high = 0.3;
    cfg.swap_out_low = 0.2;
    cfg.events = true;
    cfg.event_capacity = 8; /* overflows: dropped events are counted, not leaked */
    libra_cache *c = NULL;
    CHECK_OK(libra_cache_create(&cfg, &c));
    uint8_t w[300];
    for (size_t i = 0; i < sizeof w; i++) w[i] = (uint8_t)i;
    for (uint64_t a = 1; a <= 3; a++) CHECK_OK(libra_cache_register_adapter(c, a, w, sizeof w, 8, 0));
    return c;
}

/* Fills the GPU tier with finished requests' blocks, then leaves some requests open. */
static void load_up(libra_cache *c) {
    uint32_t tokens[32], blocks[16];
    libra_match m;
    size_t n;
    for (uint32_t r = 0; r < 12; r++) {
        for (uint32_t i = 0; i < 32; i++) tokens[i] = r * 100 + i;
        libra_status s = libra_cache_match(c, 1 + r % 3, 0, tokens, 32, r * 10, blocks, 16, &m);
        if (s != LIBRA_OK) {
            CHECK(s == LIBRA_ERR_OUT_OF_MEMORY);
            continue;
        }
        s = libra_cache_allocate(c, m.request, 32 - m.cached_tokens, r * 10, blocks, 16, &n);
        if (s == LIBRA_OK) {
            CHECK_OK(libra_cache_commit(c, m.request, tokens + m.cached_tokens, n * BT, r * 10, NULL));
        }
        if (r < 10) CHECK_OK(libra_cache_release(c, m.request, r * 10 + 1));
        /* r >= 10: left open, holding pins and blocks. */
    }
    /* One request with blocks allocated and never committed. */
    for (uint32_t i = 0; i < 32; i++) tokens[i] = 9000 + i;
    if (libra_cache_match(c, 2, 7, tokens, 32, 500, blocks, 16, &m) == LIBRA_OK) {
        (void)libra_cache_allocate(c, m.request, 16, 500, blocks, 16, &n);
    }
}

int main(void) {
    const uint32_t policies[] = {LIBRA_POLICY_ELORA, LIBRA_POLICY_LIBRA, LIBRA_POLICY_LRU,
                                 LIBRA_POLICY_VLLM, LIBRA_POLICY_SLORA};
    for (size_t p = 0; p < sizeof policies / sizeof policies[0]; p++) {
        libra_cache *c = busy_cache(policies[p]);
        load_up(c);
        /* Above the high watermark: step swaps out. The batches stay in flight until the next
         * call polls them, so the cache is freed with copies in flight. */
        libra_step_report rep;
        CHECK_OK(libra_cache_step(c, 1000, 4, false, &rep));
        libra_cache_stats st;
        st.struct_size = sizeof st;
        CHECK_OK(libra_cache_get_stats(c, &st));
        CHECK(st.open_requests > 0);
        if (policies[p] == LIBRA_POLICY_ELORA || policies[p] == LIBRA_POLICY_LRU) {
            CHECK(rep.swapped_out > 0);
            CHECK(st.inflight_batches > 0);
        }
        /* An error message is left in this thread's slot: freed at thread exit. */
        CHECK_STATUS(libra_cache_release(c, UINT64_MAX, 0), LIBRA_ERR_NOT_FOUND);
        libra_cache_free(c);
    }
    /* Created and freed unused; and a failed create leaves nothing behind. */
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    cfg.gpu_blocks = 8;
    cfg.host_blocks = 8;
    cfg.block_bytes = 64;
    libra_cache *c = NULL;
    CHECK_OK(libra_cache_create(&cfg, &c));
    libra_cache_free(c);
    cfg.backend = LIBRA_BACKEND_AUTO;
    CHECK_OK(libra_cache_create(&cfg, &c));
    libra_cache_free(c);
    cfg.swap_out_high = 2.0;
    c = NULL;
    CHECK_STATUS(libra_cache_create(&cfg, &c), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(c == NULL);
    PASS();
}
