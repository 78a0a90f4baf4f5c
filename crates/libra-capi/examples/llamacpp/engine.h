// A small multi-LoRA, multi-tenant chat engine on llama.cpp's public C API, with libra as its
// store of prefix KV and of adapter residency. llama.cpp computes; its own KV memory holds only
// the conversation being served. Between turns a conversation's KV lives in libra blocks (one
// block = block_tokens tokens of every layer's K and V), moved in and out of llama.cpp through
// its per-sequence state API; adapters are registered with libra as their GGUF bytes, and
// llama.cpp's copy of an adapter is built from libra's resident blocks and freed when libra's
// events say the adapter left the pool.
#pragma once

#include "kvstate.h"

#include <libra.h>
#include <llama.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

struct EngineOptions {
    std::string model_path;
    std::vector<std::string> adapter_paths;  // adapter i + 1 is adapter_paths[i]
    libra_policy policy = LIBRA_POLICY_ELORA;
    libra_backend backend = LIBRA_BACKEND_CPU_ASYNC;
    uint32_t gpu_blocks = 64, host_blocks = 64, block_tokens = 16;
    double link_bytes_per_us = 2000.0;  // pace of the asynchronous backend's copies
    uint64_t swap_wait_us = 0;           // 0: allocations report BUSY instead of waiting
    uint32_t min_suffix = 64;            // tokens always prefilled (see README: kernel choice)
    bool logical_clock = true;
    int n_threads = 1;
    uint32_t n_ctx = 1024;
    bool keep_reference_adapters = false;  // load adapters from their files too (checks)
    bool verify = true;                    // keep committed bytes, compare restored ones
};

// One turn's result on the libra path.
struct TurnResult {
    size_t prompt_tokens = 0, cached_tokens = 0, prefilled_tokens = 0;
    double ttft_us = 0;             // match .. restore .. prefill .. first token's logits
    std::vector<float> logits;      // next-token logits after the prompt
    std::vector<llama_token> answer;
    std::vector<uint8_t> restored;  // the state blob restored (empty when nothing was cached)
    size_t restored_blocks = 0;
    bool restored_bytes_match = true;  // every restored block equals what was committed
    bool adapter_bytes_match = true;   // the weights rebuilt from libra equal the GGUF file
};

struct EngineCounters {
    uint64_t pending_matches = 0, waits = 0, busy_retries = 0, adapter_builds = 0, adapter_frees = 0;
    uint64_t blocks_committed = 0, blocks_restored = 0;
};

class Engine {
public:
    explicit Engine(const EngineOptions &o);
    ~Engine();
    Engine(const Engine &) = delete;
    Engine &operator=(const Engine &) = delete;

    // Serves one turn of a conversation: `prompt` is its whole history plus the new message.
    TurnResult turn(uint64_t tenant, uint64_t adapter, const std::vector<llama_token> &prompt, int answer_tokens);

    // Without libra: prefills the whole prompt from scratch under `adapter` (loaded from its
    // file) after restoring `state` if given. Returns the next-token logits; generates too.
    std::vector<float> reference(uint64_t adapter, const std::vector<llama_token> &prompt, const std::vector<uint8_t> *state,
                                 size_t state_tokens, int answer_tokens, std::vector<llama_token> *answer, double *ttft_us);

    libra_cache *cache() const { return cache_; }
    const EngineCounters &counters() const { return counters_; }
    int n_vocab() const { return n_vocab_; }
    const kvstate::Geometry &geometry() const { return geo_; }

private:
    uint64_t now();
    void check(libra_status s, const char *what) const;
    void probe_geometry();
    void use_adapter(llama_adapter_lora *a);
    llama_adapter_lora *libra_adapter(uint64_t id, bool *bytes_match);
    void prefill(const std::vector<llama_token> &tokens, size_t from);
    std::vector<llama_token> generate(std::vector<float> logits, size_t pos, int n);
    void drain_events();
    libra_status retry_busy(uint64_t t, const std::function<libra_status()> &call);

    EngineOptions o_;
    llama_model *model_ = nullptr;
    llama_context *ctx_ = nullptr;
    libra_cache *cache_ = nullptr;
    int n_vocab_ = 0;
    kvstate::Geometry geo_;
    std::vector<std::vector<uint8_t>> files_;             // adapter GGUF bytes, by id - 1
    std::map<uint64_t, llama_adapter_lora *> built_;      // llama.cpp copies built from libra blocks
    std::map<uint64_t, llama_adapter_lora *> from_file_;  // reference copies (checks only)
    llama_adapter_lora *active_ = nullptr;
    std::map<std::string, std::vector<uint8_t>> committed_;  // prefix key -> block bytes committed
    uint64_t clock_ = 0;
    int64_t t0_us_ = 0;
    EngineCounters counters_;
};

// Greedy choice: the first index of the largest logit.
llama_token argmax(const std::vector<float> &logits);
int64_t wall_us();
