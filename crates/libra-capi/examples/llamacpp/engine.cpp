#include "engine.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <thread>

int64_t wall_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

llama_token argmax(const std::vector<float> &logits) {
    size_t best = 0;
    for (size_t i = 1; i < logits.size(); i++)
        if (logits[i] > logits[best]) best = i;
    return llama_token(best);
}

namespace {

void quiet_log(ggml_log_level level, const char *text, void *) {
    if (level >= GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

std::vector<uint8_t> read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read " + path);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// The key naming one block's prefix: the namespace, the adapter and every token up to its end.
std::string prefix_key(uint64_t tenant, uint64_t adapter, const std::vector<llama_token> &t, size_t end) {
    std::string k(reinterpret_cast<const char *>(&tenant), sizeof tenant);
    k.append(reinterpret_cast<const char *>(&adapter), sizeof adapter);
    k.append(reinterpret_cast<const char *>(t.data()), end * sizeof(llama_token));
    return k;
}

}  // namespace

Engine::Engine(const EngineOptions &o) : o_(o) {
    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    t0_us_ = wall_us();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    mp.progress_callback = [](float, void *) { return true; };  // no progress dots on stderr
    model_ = llama_model_load_from_file(o.model_path.c_str(), mp);
    if (!model_) throw std::runtime_error("llama.cpp could not load " + o.model_path);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = o.n_ctx;
    // One micro-batch per prefill, flash attention on (V not transposed in the state): the same
    // kernels run whether a prompt is prefilled whole or after a restored prefix (README).
    cp.n_batch = cp.n_ubatch = o.n_ctx;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = o.n_threads;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    cp.no_perf = true;
    ctx_ = llama_init_from_model(model_, cp);
    if (!ctx_) throw std::runtime_error("llama.cpp could not create a context");
    n_vocab_ = llama_vocab_n_tokens(llama_model_get_vocab(model_));
    probe_geometry();

    libra_cache_config cfg;
    cfg.struct_size = sizeof cfg;
    check(libra_cache_config_default(&cfg), "config_default");
    cfg.block_tokens = o.block_tokens;
    cfg.block_bytes = geo_.block_bytes(o.block_tokens);
    cfg.gpu_blocks = o.gpu_blocks;
    cfg.host_blocks = o.host_blocks;
    cfg.policy = o.policy;
    cfg.backend = o.backend;
    cfg.link_bytes_per_us = o.link_bytes_per_us;
    cfg.swap_wait_us = o.swap_wait_us;
    cfg.events = true;
    cfg.event_capacity = 1 << 16;
    check(libra_cache_create(&cfg, &cache_), "create");
    for (size_t i = 0; i < o.adapter_paths.size(); i++) {
        files_.push_back(read_file(o.adapter_paths[i]));
        const uint64_t id = i + 1;
        // GGUF LoRA files carry no rank: libra takes it as a hint only.
        check(libra_cache_register_adapter(cache_, id, files_.back().data(), files_.back().size(), LIBRA_RANK_UNKNOWN, now()),
              "register_adapter");
        if (o.keep_reference_adapters) {
            from_file_[id] = llama_adapter_lora_init(model_, o.adapter_paths[i].c_str());
            if (!from_file_[id]) throw std::runtime_error("llama.cpp could not load " + o.adapter_paths[i]);
        }
    }
}

Engine::~Engine() {
    if (ctx_) llama_set_adapters_lora(ctx_, nullptr, 0, nullptr);
    for (auto &kv : built_) llama_adapter_lora_free(kv.second);
    for (auto &kv : from_file_) llama_adapter_lora_free(kv.second);
    libra_cache_free(cache_);
    if (ctx_) llama_free(ctx_);
    if (model_) llama_model_free(model_);
}

uint64_t Engine::now() {
    // A logical clock makes every libra decision a function of the call sequence (README).
    if (o_.logical_clock) return clock_ += 10000;
    return uint64_t(wall_us() - t0_us_);
}

void Engine::check(libra_status s, const char *what) const {
    if (s != LIBRA_OK)
        throw std::runtime_error(std::string("libra_cache_") + what + ": " + libra_status_str(s) + ": " + libra_last_error_message());
}

// The K/V row sizes and types come from a real one-token state of this model and context.
void Engine::probe_geometry() {
    prefill({3}, 0);
    std::vector<uint8_t> blob(llama_state_seq_get_size(ctx_, 0));
    if (llama_state_seq_get_data(ctx_, blob.data(), blob.size(), 0) != blob.size()) throw std::runtime_error("state export failed");
    kvstate::View v;
    const std::string err = kvstate::parse(blob.data(), blob.size(), 0, v);
    if (!err.empty()) throw std::runtime_error("unexpected llama.cpp state layout: " + err);
    geo_ = v.geo;
    llama_memory_clear(llama_get_memory(ctx_), true);
}

void Engine::use_adapter(llama_adapter_lora *a) {
    if (a == active_) return;
    float scale = 1.0f;
    if (llama_set_adapters_lora(ctx_, a ? &a : nullptr, a ? 1 : 0, a ? &scale : nullptr) != 0)
        throw std::runtime_error("llama_set_adapters_lora failed");
    active_ = a;
}

// llama.cpp's copy of adapter `id`, built from the bytes in libra's resident blocks (the
// caller holds a ready request of this adapter, which pins them).
llama_adapter_lora *Engine::libra_adapter(uint64_t id, bool *bytes_match) {
    auto it = built_.find(id);
    if (it != built_.end()) return it->second;
    libra_adapter_info info;
    std::memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    check(libra_cache_adapter_info(cache_, id, &info), "adapter_info");
    std::vector<uint32_t> ids(info.blocks);
    size_t n = 0;
    check(libra_cache_adapter_blocks(cache_, id, ids.data(), ids.size(), &n), "adapter_blocks");
    if (!info.resident || n != info.blocks) throw std::runtime_error("adapter not resident under a ready request");
    std::vector<uint8_t> bytes(info.weights_len);
    for (size_t i = 0, at = 0; i < n; i++) {
        uint64_t addr = 0;
        check(libra_cache_block_address(cache_, ids[i], 0, &addr), "block_address");
        const size_t take = std::min<uint64_t>(info.block_bytes, info.weights_len - at);
        std::memcpy(bytes.data() + at, reinterpret_cast<const void *>(uintptr_t(addr)), take);
        at += take;
    }
    *bytes_match = !o_.verify || bytes == files_.at(id - 1);
    FILE *f = fmemopen(bytes.data(), bytes.size(), "rb");
    if (!f) throw std::runtime_error("fmemopen failed");
    llama_adapter_lora *a = llama_adapter_lora_init_from_file_ptr(model_, f);
    std::fclose(f);
    if (!a) throw std::runtime_error("llama.cpp could not load adapter from libra's blocks");
    counters_.adapter_builds++;
    return built_[id] = a;
}

// Decodes tokens [from, end) of `tokens` at their positions, with logits for the last one.
void Engine::prefill(const std::vector<llama_token> &tokens, size_t from) {
    const size_t n = tokens.size() - from;
    llama_batch b = llama_batch_init(int32_t(n), 0, 1);
    for (size_t i = 0; i < n; i++) {
        b.token[i] = tokens[from + i];
        b.pos[i] = llama_pos(from + i);
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = i + 1 == n;
    }
    b.n_tokens = int32_t(n);
    const int32_t rc = llama_decode(ctx_, b);
    llama_batch_free(b);
    if (rc != 0) throw std::runtime_error("llama_decode failed: " + std::to_string(rc));
}

static std::vector<float> last_logits(llama_context *ctx, int n_vocab) {
    const float *l = llama_get_logits_ith(ctx, -1);
    return std::vector<float>(l, l + n_vocab);
}

// Greedy decoding of `n` tokens after a sequence of `pos` tokens whose next-token logits are
// `logits`, one token per llama_decode call.
std::vector<llama_token> Engine::generate(std::vector<float> logits, size_t pos, int n) {
    std::vector<llama_token> out;
    for (int i = 0; i < n; i++) {
        out.push_back(argmax(logits));
        if (i + 1 == n) break;
        llama_batch b = llama_batch_init(1, 0, 1);
        b.token[0] = out.back();
        b.pos[0] = llama_pos(pos + i);
        b.n_seq_id[0] = 1;
        b.seq_id[0][0] = 0;
        b.logits[0] = true;
        b.n_tokens = 1;
        const int32_t rc = llama_decode(ctx_, b);
        llama_batch_free(b);
        if (rc != 0) throw std::runtime_error("llama_decode failed: " + std::to_string(rc));
        logits = last_logits(ctx_, n_vocab_);
    }
    return out;
}

// Calls `call` until it is not LIBRA_ERR_BUSY, stepping the cache in between (the step
// finishes completed copies) and giving the copy thread a moment.
libra_status Engine::retry_busy(uint64_t t, const std::function<libra_status()> &call) {
    libra_status s;
    const int64_t give_up = wall_us() + 30 * 1000 * 1000;
    while ((s = call()) == LIBRA_ERR_BUSY) {
        if (wall_us() > give_up) throw std::runtime_error("libra stayed busy for 30 s");
        counters_.busy_retries++;
        check(libra_cache_step(cache_, t, 1, true, nullptr), "step");
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    return s;
}

void Engine::drain_events() {
    libra_event ev[256];
    size_t n = 0;
    do {
        check(libra_cache_drain_events(cache_, ev, 256, &n), "drain_events");
        for (size_t i = 0; i < n; i++) {
            if (!ev[i].adapter || (ev[i].kind != LIBRA_EVENT_REMOVED && ev[i].kind != LIBRA_EVENT_TO_HOST)) continue;
            auto it = built_.find(ev[i].adapter_id);
            if (it == built_.end()) continue;
            // The adapter left libra's pool: stop using llama.cpp's copy, then free it.
            if (active_ == it->second) use_adapter(nullptr);
            llama_adapter_lora_free(it->second);
            built_.erase(it);
            counters_.adapter_frees++;
        }
    } while (n == 256);
}

TurnResult Engine::turn(uint64_t tenant, uint64_t adapter, const std::vector<llama_token> &prompt, int answer_tokens) {
    TurnResult r;
    const int64_t start = wall_us();
    const uint32_t bt = o_.block_tokens;
    const size_t n = prompt.size();
    r.prompt_tokens = n;
    const std::vector<uint32_t> toks(prompt.begin(), prompt.end());
    std::vector<uint32_t> blocks(n / bt + 1);
    libra_match m;
    uint64_t t = now();
    // The tenant is the namespace: no tenant ever matches another's prefixes.
    // BUSY (the adapter needs room that swap-outs still in flight will free): step, retry.
    check(retry_busy(t, [&] {
              return libra_cache_match_leaving(cache_, adapter, tenant, toks.data(), n, std::min<size_t>(o_.min_suffix, n),
                                               t, blocks.data(), blocks.size(), &m);
          }),
          "match_leaving");
    if (!m.ready) {
        counters_.pending_matches++;
        libra_readiness rd = LIBRA_PENDING;
        while (rd == LIBRA_PENDING) {
            counters_.waits++;
            check(libra_cache_wait(cache_, m.request, 1000000, &rd), "wait");
        }
        if (rd == LIBRA_FAILED) throw std::runtime_error("a copy failed");
    }
    use_adapter(libra_adapter(adapter, &r.adapter_bytes_match));

    // Rebuild llama.cpp's state for the cached prefix from libra's blocks and restore it.
    llama_memory_clear(llama_get_memory(ctx_), true);
    r.cached_tokens = m.cached_tokens;
    r.restored_blocks = m.cached_blocks;
    if (m.cached_blocks > 0) {
        std::vector<const uint8_t *> ptrs;
        for (size_t j = 0; j < m.cached_blocks; j++) {
            uint64_t addr = 0;
            check(libra_cache_block_address(cache_, blocks[j], 0, &addr), "block_address");
            ptrs.push_back(reinterpret_cast<const uint8_t *>(uintptr_t(addr)));
            if (!o_.verify) continue;
            auto c = committed_.find(prefix_key(tenant, adapter, prompt, (j + 1) * bt));
            if (c == committed_.end() || std::memcmp(c->second.data(), ptrs.back(), c->second.size()) != 0)
                r.restored_bytes_match = false;
        }
        r.restored = kvstate::build(geo_, 0, bt, ptrs);
        if (llama_state_seq_set_data(ctx_, r.restored.data(), r.restored.size(), 0) != r.restored.size())
            throw std::runtime_error("llama_state_seq_set_data refused the rebuilt state");
        counters_.blocks_restored += m.cached_blocks;
    }

    // Blocks for the rest of the prompt; BUSY means swap-outs are still in flight: step, retry.
    std::vector<uint32_t> fresh(n / bt + 1);
    size_t got = 0;
    check(retry_busy(t, [&] {
              return libra_cache_allocate(cache_, m.request, n - m.cached_tokens, t, fresh.data(), fresh.size(), &got);
          }),
          "allocate");

    prefill(prompt, m.cached_tokens);
    r.prefilled_tokens = n - m.cached_tokens;
    r.logits = last_logits(ctx_, n_vocab_);
    r.ttft_us = double(wall_us() - start);
    r.answer = generate(r.logits, n, answer_tokens);

    // Export the prompt's new whole blocks (computed by this prefill) into libra and commit them.
    const size_t full = n / bt;
    if (full > m.cached_blocks) {
        std::vector<uint8_t> blob(llama_state_seq_get_size(ctx_, 0));
        if (llama_state_seq_get_data(ctx_, blob.data(), blob.size(), 0) != blob.size())
            throw std::runtime_error("llama_state_seq_get_data failed");
        kvstate::View v;
        const std::string err = kvstate::parse(blob.data(), blob.size(), 0, v);
        if (!err.empty()) throw std::runtime_error("unexpected llama.cpp state: " + err);
        for (size_t j = m.cached_blocks; j < full; j++) {
            uint64_t addr = 0;
            check(libra_cache_block_address(cache_, fresh[j - m.cached_blocks], 0, &addr), "block_address");
            auto *dst = reinterpret_cast<uint8_t *>(uintptr_t(addr));
            kvstate::cut_block(v, uint32_t(j), bt, dst);
            if (o_.verify) committed_[prefix_key(tenant, adapter, prompt, (j + 1) * bt)].assign(dst, dst + geo_.block_bytes(bt));
        }
        t = now();
        const size_t n_commit = (full - m.cached_blocks) * bt;
        check(retry_busy(t, [&] { return libra_cache_commit(cache_, m.request, toks.data() + m.cached_tokens, n_commit, t, nullptr); }),
              "commit");
        counters_.blocks_committed += full - m.cached_blocks;
    }
    check(libra_cache_release(cache_, m.request, t), "release");
    check(libra_cache_step(cache_, now(), 1, false, nullptr), "step");
    drain_events();
    return r;
}

std::vector<float> Engine::reference(uint64_t adapter, const std::vector<llama_token> &prompt, const std::vector<uint8_t> *state,
                                     size_t state_tokens, int answer_tokens, std::vector<llama_token> *answer, double *ttft_us) {
    const int64_t start = wall_us();
    use_adapter(from_file_.at(adapter));
    llama_memory_clear(llama_get_memory(ctx_), true);
    size_t from = 0;
    if (state) {
        if (llama_state_seq_set_data(ctx_, state->data(), state->size(), 0) != state->size())
            throw std::runtime_error("llama_state_seq_set_data failed");
        from = state_tokens;
    }
    prefill(prompt, from);
    std::vector<float> logits = last_logits(ctx_, n_vocab_);
    if (ttft_us) *ttft_us = double(wall_us() - start);
    if (answer) *answer = generate(logits, prompt.size(), answer_tokens);
    return logits;
}
