/* A toy engine scheduler loop over libra's cache, in C: register adapters, then per iteration
 * admit requests (match, wait for copies, allocate), "prefill" them, share their full blocks
 * (commit), finish them (release, or abort on failure), and step the cache. Prints stats. */
#include <libra.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_TOKENS 16
#define ADAPTERS 4
#define ITERATIONS 200
#define MAX_TOKENS 256

static int fail(const char *what, libra_status s) {
    fprintf(stderr, "%s failed: %s (%s)\n", what, libra_status_str(s), libra_last_error_message());
    return 1;
}

int main(void) {
    if (strcmp(libra_version(), LIBRA_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s but library %s\n", LIBRA_VERSION_STRING, libra_version());
        return 1;
    }
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    libra_cache_config_default(&cfg);
    cfg.block_tokens = BLOCK_TOKENS;
    cfg.block_bytes = 4096;
    cfg.gpu_blocks = 192;
    cfg.host_blocks = 384;
    cfg.backend = LIBRA_BACKEND_AUTO; /* CUDA when present, else host memory */
    libra_cache *cache = NULL;
    libra_status s = libra_cache_create(&cfg, &cache);
    if (s != LIBRA_OK) return fail("libra_cache_create", s);
    printf("backend: %s (%s)\n", libra_cache_backend_name(cache), libra_cache_backend_reason(cache));

    /* At start: every adapter the server may serve. The library keeps its own copy. */
    static unsigned char weights[3 * 4096];
    for (size_t i = 0; i < sizeof weights; i++) weights[i] = (unsigned char)i;
    for (uint64_t a = 1; a <= ADAPTERS; a++) {
        s = libra_cache_register_adapter(cache, a, weights, sizeof weights, 16, 0);
        if (s != LIBRA_OK) return fail("libra_cache_register_adapter", s);
    }

    uint32_t tokens[MAX_TOKENS], blocks[MAX_TOKENS / BLOCK_TOKENS + 1];
    unsigned seed = 1;
    unsigned finished = 0, failed = 0;
    for (uint64_t it = 0; it < ITERATIONS; it++) {
        uint64_t now = it * 20000; /* the engine's clock, microseconds */
        /* Each iteration admits a few requests: a shared system prompt, then a conversation
         * whose earlier turns repeat. */
        for (int r = 0; r < 4; r++) {
            seed = seed * 1103515245u + 12345u;
            uint64_t adapter = 1 + (seed >> 16) % ADAPTERS;
            uint32_t conversation = (seed >> 8) % 24;
            size_t n = 64 + (seed >> 4) % (MAX_TOKENS - 64);
            for (size_t i = 0; i < n; i++) tokens[i] = i < 48 ? (uint32_t)i : conversation * 1000 + (uint32_t)i;

            libra_match m;
            s = libra_cache_match(cache, adapter, 0, tokens, n, now, blocks, sizeof blocks / sizeof blocks[0], &m);
            if (s == LIBRA_ERR_OUT_OF_MEMORY || s == LIBRA_ERR_BUSY) continue; /* admit later */
            if (s != LIBRA_OK) return fail("libra_cache_match", s);
            if (!m.ready) {
                /* A real engine makes its stream wait on libra_cache_wait_event instead. */
                libra_readiness ready;
                libra_cache_wait(cache, m.request, 100000, &ready);
                if (ready != LIBRA_READY) {
                    libra_cache_abort(cache, m.request, now);
                    failed++;
                    continue;
                }
            }
            size_t count = 0;
            s = libra_cache_allocate(cache, m.request, n - m.cached_tokens, now, blocks,
                                     sizeof blocks / sizeof blocks[0], &count);
            if (s != LIBRA_OK) {
                libra_cache_abort(cache, m.request, now);
                failed++;
                continue;
            }
            /* ... prefill writes the KV of tokens[cached_tokens..n) into `blocks` here ... */
            size_t full = (n - m.cached_tokens) / BLOCK_TOKENS * BLOCK_TOKENS;
            s = libra_cache_commit(cache, m.request, tokens + m.cached_tokens, full, now, NULL);
            if (s != LIBRA_OK) return fail("libra_cache_commit", s);
            /* ... decode; when the request finishes: */
            s = libra_cache_release(cache, m.request, now + 10000);
            if (s != LIBRA_OK) return fail("libra_cache_release", s);
            finished++;
        }
        libra_step_report rep;
        s = libra_cache_step(cache, now + 15000, 4, false, &rep);
        if (s != LIBRA_OK) return fail("libra_cache_step", s);
    }

    libra_cache_stats st;
    st.struct_size = sizeof st;
    libra_cache_get_stats(cache, &st);
    double hit = (double)st.hit_tokens / (double)(st.hit_tokens + st.miss_tokens + 1);
    printf("requests: %u finished, %u failed\n", finished, failed);
    printf("hit rate: %.1f%% (%llu of %llu prompt tokens cached)\n", 100.0 * hit,
           (unsigned long long)st.hit_tokens, (unsigned long long)(st.hit_tokens + st.miss_tokens));
    printf("GPU blocks used: %u / %u, host: %u / %u\n", st.gpu_blocks_used, st.gpu_blocks_total,
           st.host_blocks_used, st.host_blocks_total);
    printf("swapped out: %llu, swapped in: %llu, adapter loads: %llu\n",
           (unsigned long long)st.swap_out_blocks, (unsigned long long)st.swap_in_blocks,
           (unsigned long long)st.adapter_loads);
    s = libra_cache_check(cache);
    libra_cache_free(cache);
    return s == LIBRA_OK && finished > 0 ? 0 : 1;
}
