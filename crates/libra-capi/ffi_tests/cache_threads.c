/* One cache shared by several threads, each running requests through the full lifecycle. */
#include "libra.h"
#include "check.h"
#include <pthread.h>
#include <stdint.h>

#define THREADS 8
#define ROUNDS 200
#define BT 4

static libra_cache *cache;

static void *worker(void *arg) {
    uint32_t id = (uint32_t)(uintptr_t)arg;
    uint32_t tokens[32], ids[8], blocks[8];
    for (uint32_t round = 0; round < ROUNDS; round++) {
        /* Half the prompts are shared between threads, so matches hit each other's blocks. */
        uint32_t seed = (round % 2) ? round % 7 : 1000 + id * 100 + round;
        for (uint32_t i = 0; i < 32; i++) tokens[i] = seed * 64 + i;
        uint64_t adapter = 1 + (round + id) % 3;
        uint64_t now = (uint64_t)round * 1000 + id;
        libra_match m;
        libra_status s = libra_cache_match(cache, adapter, 0, tokens, 32, now, ids, 8, &m);
        if (s == LIBRA_ERR_OUT_OF_MEMORY) continue;
        CHECK(s == LIBRA_OK);
        if (!m.ready) {
            libra_readiness r;
            CHECK_OK(libra_cache_wait(cache, m.request, 1000000, &r));
            CHECK(r == LIBRA_READY);
        }
        size_t nb = 0;
        size_t rest = 32 - m.cached_tokens;
        s = libra_cache_allocate(cache, m.request, rest, now, blocks, 8, &nb);
        if (s == LIBRA_OK) {
            CHECK(nb * BT >= rest);
            CHECK(libra_cache_commit(cache, m.request, tokens + m.cached_tokens, nb * BT, now, NULL) == LIBRA_OK);
            CHECK_OK(libra_cache_release(cache, m.request, now + 1));
        } else {
            CHECK(s == LIBRA_ERR_OUT_OF_MEMORY || s == LIBRA_ERR_BUSY);
            CHECK_OK(libra_cache_abort(cache, m.request, now + 1));
        }
        if (round % 10 == 0) {
            libra_cache_stats st;
            st.struct_size = sizeof st;
            CHECK_OK(libra_cache_get_stats(cache, &st));
            CHECK(st.gpu_blocks_used <= st.gpu_blocks_total);
            CHECK_OK(libra_cache_step(cache, now, THREADS, false, NULL));
        }
    }
    return NULL;
}

int main(void) {
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    CHECK_OK(libra_cache_config_default(&cfg));
    cfg.block_tokens = BT;
    cfg.block_bytes = 64;
    cfg.gpu_blocks = 96;
    cfg.host_blocks = 64;
    CHECK_OK(libra_cache_create(&cfg, &cache));
    uint8_t w[64] = {1};
    for (uint64_t a = 1; a <= 3; a++) CHECK_OK(libra_cache_register_adapter(cache, a, w, sizeof w, 8, 0));
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], NULL, worker, (void *)i) == 0);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(t[i], NULL) == 0);
    CHECK_OK(libra_cache_check(cache));
    libra_cache_stats st;
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(cache, &st));
    CHECK(st.open_requests == 0);
    CHECK(st.hit_tokens > 0);
    printf("threads: %u matches, %llu hit tokens\n", (unsigned)st.matches, (unsigned long long)st.hit_tokens);
    libra_cache_free(cache);
    PASS();
}
