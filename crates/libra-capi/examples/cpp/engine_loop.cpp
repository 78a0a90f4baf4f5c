// A toy engine scheduler loop over libra's cache, in C++17: the same loop as
// examples/c/engine_loop.c, with RAII for the handle and exceptions for errors.
#include <libra.h>

#include <cstdio>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr uint32_t kBlockTokens = 16;
constexpr uint64_t kAdapters = 4;

void check(libra_status s, const char *what) {
    if (s != LIBRA_OK) {
        throw std::runtime_error(std::string(what) + ": " + libra_status_str(s) + " (" +
                                 libra_last_error_message() + ")");
    }
}

struct CacheDeleter {
    void operator()(libra_cache *c) const { libra_cache_free(c); }
};
using CachePtr = std::unique_ptr<libra_cache, CacheDeleter>;

CachePtr make_cache() {
    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    check(libra_cache_config_default(&cfg), "config");
    cfg.block_tokens = kBlockTokens;
    cfg.block_bytes = 4096;
    cfg.gpu_blocks = 192;
    cfg.host_blocks = 384;
    cfg.backend = LIBRA_BACKEND_AUTO;
    libra_cache *raw = nullptr;
    check(libra_cache_create(&cfg, &raw), "libra_cache_create");
    return CachePtr(raw);
}

}  // namespace

int main() try {
    CachePtr cache = make_cache();
    std::printf("backend: %s (%s)\n", libra_cache_backend_name(cache.get()),
                libra_cache_backend_reason(cache.get()));

    std::vector<unsigned char> weights(3 * 4096);
    for (size_t i = 0; i < weights.size(); i++) weights[i] = static_cast<unsigned char>(i);
    for (uint64_t a = 1; a <= kAdapters; a++) {
        check(libra_cache_register_adapter(cache.get(), a, weights.data(), weights.size(), 16, 0),
              "register");
    }

    std::mt19937 rng(1);
    std::vector<uint32_t> tokens;
    std::vector<uint32_t> blocks(256 / kBlockTokens + 1);
    unsigned finished = 0, failed = 0;
    for (uint64_t it = 0; it < 200; it++) {
        const uint64_t now = it * 20000;
        for (int r = 0; r < 4; r++) {
            const uint64_t adapter = 1 + rng() % kAdapters;
            const uint32_t conversation = rng() % 24;
            const size_t n = 64 + rng() % 192;
            tokens.resize(n);
            for (size_t i = 0; i < n; i++) {
                tokens[i] = i < 48 ? static_cast<uint32_t>(i) : conversation * 1000 + static_cast<uint32_t>(i);
            }
            libra_match m{};
            libra_status s = libra_cache_match(cache.get(), adapter, 0, tokens.data(), n, now,
                                               blocks.data(), blocks.size(), &m);
            if (s == LIBRA_ERR_OUT_OF_MEMORY || s == LIBRA_ERR_BUSY) continue;
            check(s, "match");
            if (!m.ready) {
                libra_readiness ready = LIBRA_PENDING;
                check(libra_cache_wait(cache.get(), m.request, 100000, &ready), "wait");
                if (ready != LIBRA_READY) {
                    libra_cache_abort(cache.get(), m.request, now);
                    failed++;
                    continue;
                }
            }
            size_t count = 0;
            s = libra_cache_allocate(cache.get(), m.request, n - m.cached_tokens, now, blocks.data(),
                                     blocks.size(), &count);
            if (s != LIBRA_OK) {
                libra_cache_abort(cache.get(), m.request, now);
                failed++;
                continue;
            }
            // ... prefill fills `blocks`, then the full ones are shared ...
            const size_t full = (n - m.cached_tokens) / kBlockTokens * kBlockTokens;
            check(libra_cache_commit(cache.get(), m.request, tokens.data() + m.cached_tokens, full, now,
                                     nullptr),
                  "commit");
            check(libra_cache_release(cache.get(), m.request, now + 10000), "release");
            finished++;
        }
        check(libra_cache_step(cache.get(), now + 15000, 4, false, nullptr), "step");
    }

    libra_cache_stats st{};
    st.struct_size = sizeof st;
    check(libra_cache_get_stats(cache.get(), &st), "stats");
    const double total = static_cast<double>(st.hit_tokens + st.miss_tokens);
    std::printf("requests: %u finished, %u failed\n", finished, failed);
    std::printf("hit rate: %.1f%% of %.0f prompt tokens\n", total > 0 ? 100.0 * st.hit_tokens / total : 0.0,
                total);
    std::printf("GPU blocks used: %u / %u, host: %u / %u\n", st.gpu_blocks_used, st.gpu_blocks_total,
                st.host_blocks_used, st.host_blocks_total);
    std::printf("swapped out: %llu, swapped in: %llu, adapter loads: %llu\n",
                static_cast<unsigned long long>(st.swap_out_blocks),
                static_cast<unsigned long long>(st.swap_in_blocks),
                static_cast<unsigned long long>(st.adapter_loads));
    check(libra_cache_check(cache.get()), "check");
    return finished > 0 ? 0 : 1;
} catch (const std::exception &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
}
