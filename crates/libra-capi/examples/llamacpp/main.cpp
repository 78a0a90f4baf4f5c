// The engine's driver: a deterministic multi-tenant, multi-adapter chat workload, run either as
// a check (every turn compared bit for bit with a from-scratch prefill) or as a benchmark
// (time to first token with and without libra, side by side in one run).
//
//   llamacpp_engine check MODEL_DIR [--policies elora,lru,vllm,slora,libra] [--backend async|sync]
//   llamacpp_engine bench MODEL_DIR [--policies ...] [--runs 5] [--threads 1]
#include "engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

struct Conv {
    uint64_t tenant, adapter;
    std::vector<std::vector<llama_token>> messages;
    std::vector<llama_token> history;
};

constexpr int kTurns = 3, kAnswer = 8;
constexpr size_t kReplay = 4;  // conversation 4 replays conversation 0 in another tenant

// Two tenants share one system prompt; conversation 3 shares conversation 0's tenant and
// adapter (prefix hits), conversation 4 sends conversation 0's exact prompts as the other
// tenant (which must get no hits from them). User messages have 64 to 95 tokens.
std::vector<Conv> workload(uint64_t seed, int n_vocab) {
    std::mt19937_64 rng(seed);
    auto tokens = [&](size_t n) {
        std::vector<llama_token> t(n);
        for (auto &x : t) x = llama_token(3 + rng() % uint64_t(n_vocab - 3));
        return t;
    };
    const std::vector<llama_token> system = tokens(64);
    const uint64_t plan[][2] = {{1, 1}, {1, 2}, {2, 3}, {1, 1}, {2, 1}, {2, 2}, {1, 3}};
    std::vector<Conv> convs;
    for (auto &p : plan) {
        Conv c{p[0], p[1], {}, system};
        for (int t = 0; t < kTurns; t++) c.messages.push_back(tokens(64 + rng() % 32));
        convs.push_back(c);
    }
    convs[kReplay].messages = convs[0].messages;
    return convs;
}

struct Pool {
    const char *name;
    uint32_t gpu, host;
};
// The check's tight pool holds about an eighth of the workload's blocks, so blocks and
// adapters move all the time; the benchmark's holds about a third; roomy holds everything.
const Pool kTight{"tight", 40, 48}, kRoomy{"roomy", 512, 256}, kBenchTight{"tight", 96, 96};

struct Policy {
    const char *name;
    libra_policy value;
};
const Policy kPolicies[] = {{"elora", LIBRA_POLICY_ELORA}, {"lru", LIBRA_POLICY_LRU}, {"vllm", LIBRA_POLICY_VLLM},
                            {"slora", LIBRA_POLICY_SLORA}, {"libra", LIBRA_POLICY_LIBRA}};

EngineOptions options(const std::string &dir, const Policy &p, const Pool &pool, libra_backend backend, int threads) {
    EngineOptions o;
    o.model_path = dir + "/model.gguf";
    for (int i = 1; i <= 3; i++) o.adapter_paths.push_back(dir + "/lora-" + std::to_string(i) + ".gguf");
    o.policy = p.value;
    o.gpu_blocks = pool.gpu;
    o.host_blocks = pool.host;
    o.backend = backend;
    o.n_threads = threads;
    o.keep_reference_adapters = true;
    return o;
}

int failures = 0, passes = 0;

void expect(bool ok, const std::string &what) {
    if (ok) {
        passes++;
    } else {
        failures++;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

float max_abs_diff(const std::vector<float> &a, const std::vector<float> &b) {
    float d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs the whole workload on one engine with every check; returns each turn's cached tokens.
std::vector<size_t> run_checked(Engine &e, const char *label, const Pool &pool, bool reuses_kv) {
    std::vector<Conv> convs = workload(42, e.n_vocab());
    std::vector<size_t> hits;
    size_t negatives = 0;
    for (int t = 0; t < kTurns; t++) {
        for (size_t c = 0; c < convs.size(); c++) {
            Conv &cv = convs[c];
            std::vector<llama_token> prompt = cv.history;
            prompt.insert(prompt.end(), cv.messages[t].begin(), cv.messages[t].end());
            TurnResult r = e.turn(cv.tenant, cv.adapter, prompt, kAnswer);
            const std::string where = std::string(label) + " conv " + std::to_string(c) + " turn " + std::to_string(t);
            std::vector<llama_token> ref_answer;
            const std::vector<float> ref = e.reference(cv.adapter, prompt, nullptr, 0, kAnswer, &ref_answer, nullptr);
            expect(same_bits(r.logits, ref), where + ": logits on restored KV differ from a full prefill (max |diff| " +
                                                 std::to_string(max_abs_diff(r.logits, ref)) + ")");
            expect(r.answer == ref_answer, where + ": greedy answers differ");
            expect(r.restored_bytes_match, where + ": a restored block differs from what was committed for its prefix");
            expect(r.adapter_bytes_match, where + ": adapter weights rebuilt from libra differ from the GGUF file");
            expect(libra_cache_check(e.cache()) == LIBRA_OK, where + ": libra_cache_check: " + libra_last_error_message());
            if (r.cached_tokens > 0) {
                // Negative control: the same prefix KV under another adapter is not its KV.
                const uint64_t other = cv.adapter % 3 + 1;
                const std::vector<float> truth = e.reference(other, prompt, nullptr, 0, 0, nullptr, nullptr);
                const std::vector<float> wrong = e.reference(other, prompt, &r.restored, r.cached_tokens, 0, nullptr, nullptr);
                expect(!same_bits(truth, wrong), where + ": another adapter's restored KV gave identical logits");
                negatives++;
            }
            if (c == kReplay && t == 0)
                expect(r.cached_tokens == 0, where + ": a tenant hit another tenant's prefix");
            if (c == 3 && t == 0 && reuses_kv && pool.gpu == kRoomy.gpu)
                expect(r.cached_tokens >= 64, where + ": the shared system prompt was not reused in its own tenant");
            std::printf("%s: prompt %zu cached %zu prefilled %zu\n", where.c_str(), r.prompt_tokens, r.cached_tokens,
                        r.prefilled_tokens);
            hits.push_back(r.cached_tokens);
            cv.history = prompt;
            cv.history.insert(cv.history.end(), r.answer.begin(), r.answer.end());
        }
    }
    libra_cache_stats st;
    st.struct_size = sizeof st;
    expect(libra_cache_get_stats(e.cache(), &st) == LIBRA_OK, std::string(label) + ": libra_cache_get_stats failed");
    const EngineCounters &k = e.counters();
    std::printf("%s: pending %llu waits %llu busy %llu adapter builds %llu frees %llu restored %llu committed %llu "
                "swap-out %llu swap-in %llu adapter loads %llu negatives %zu\n",
                label, (unsigned long long)k.pending_matches, (unsigned long long)k.waits, (unsigned long long)k.busy_retries,
                (unsigned long long)k.adapter_builds, (unsigned long long)k.adapter_frees,
                (unsigned long long)k.blocks_restored, (unsigned long long)k.blocks_committed,
                (unsigned long long)st.swap_out_blocks, (unsigned long long)st.swap_in_blocks,
                (unsigned long long)st.adapter_loads, negatives);
    return hits;
}

int check(const std::string &dir, const std::vector<Policy> &policies, libra_backend backend) {
    for (const Policy &p : policies) {
        for (const Pool *pool : {&kTight, &kRoomy}) {
            const std::string label = std::string(p.name) + "/" + pool->name;
            Engine e(options(dir, p, *pool, backend, 1));
            std::vector<size_t> hits = run_checked(e, label.c_str(), *pool, p.value != LIBRA_POLICY_SLORA);
            if (pool == &kTight) {
                const EngineCounters &k = e.counters();
                expect(backend != LIBRA_BACKEND_CPU_ASYNC || k.pending_matches > 0,
                       label + ": the asynchronous backend never left a request pending");
                // A logical clock makes decisions a function of the calls. With asynchronous
                // copies, which copies have landed at each call also depends on timing, so
                // reproducibility is checked with synchronous copies: two runs, same hits.
                std::vector<size_t> first;
                for (int rep = 0; rep < 2; rep++) {
                    Engine s(options(dir, p, *pool, LIBRA_BACKEND_CPU, 1));
                    const std::string l = label + "/sync" + std::to_string(rep + 1);
                    std::vector<size_t> h = run_checked(s, l.c_str(), *pool, p.value != LIBRA_POLICY_SLORA);
                    if (rep == 0) first = h;
                    else expect(h == first, label + ": hit counts differ between two runs with a logical clock");
                }
            }
        }
    }
    std::printf("%d passed, %d failed\n", passes, failures);
    return failures == 0 ? 0 : 1;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// TTFT per turn with libra and without it (a full prefill on the same context, adapters kept
// loaded), measured side by side on every turn, medians over conversations and runs. The
// synchronous CPU backend: on a CPU engine both tiers are host memory and a copy is a memcpy,
// so pacing copies at a modelled link would only add made-up latency; and with a logical
// clock the tokens prefilled are then the same in every run (checked).
int bench(const std::string &dir, const std::vector<Policy> &policies, int runs, int threads) {
    std::printf("| pool | policy | prefilled (libra / without) | saved | TTFT turn 1 | TTFT turn 2 | TTFT turn 3 | ratio turn 2 | ratio turn 3 |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|\n");
    for (const Pool *pool : {&kBenchTight, &kRoomy}) {
        for (const Policy &p : policies) {
            std::vector<double> with[kTurns], without[kTurns], ratio[kTurns];
            size_t prefilled = 0, total = 0;
            for (int run = 0; run < runs; run++) {
                EngineOptions o = options(dir, p, *pool, LIBRA_BACKEND_CPU, threads);
                o.verify = false;  // the check's byte comparisons stay out of the timings
                Engine e(o);
                std::vector<Conv> convs = workload(42, e.n_vocab());
                size_t pf = 0, tot = 0;
                for (int t = 0; t < kTurns; t++) {
                    for (Conv &cv : convs) {
                        std::vector<llama_token> prompt = cv.history;
                        prompt.insert(prompt.end(), cv.messages[t].begin(), cv.messages[t].end());
                        TurnResult r = e.turn(cv.tenant, cv.adapter, prompt, kAnswer);
                        double base = 0;
                        e.reference(cv.adapter, prompt, nullptr, 0, 0, nullptr, &base);
                        with[t].push_back(r.ttft_us / 1000.0);
                        without[t].push_back(base / 1000.0);
                        ratio[t].push_back(base / r.ttft_us);
                        pf += r.prefilled_tokens;
                        tot += r.prompt_tokens;
                        cv.history = prompt;
                        cv.history.insert(cv.history.end(), r.answer.begin(), r.answer.end());
                    }
                }
                if (run > 0 && pf != prefilled) {
                    std::fprintf(stderr, "error: %s/%s prefilled %zu tokens, an earlier run %zu\n", pool->name, p.name, pf,
                                 prefilled);
                    return 1;
                }
                prefilled = pf;
                total = tot;
            }
            char cell[kTurns][64];
            for (int t = 0; t < kTurns; t++)
                std::snprintf(cell[t], sizeof cell[t], "%.1f / %.1f ms", median(with[t]), median(without[t]));
            std::printf("| %s (%u+%u blocks) | %s | %zu / %zu | %.0f%% | %s | %s | %s | %.2fx | %.2fx |\n", pool->name, pool->gpu,
                        pool->host, p.name, prefilled, total, 100.0 * double(total - prefilled) / double(total), cell[0],
                        cell[1], cell[2], median(ratio[1]), median(ratio[2]));
            std::fflush(stdout);
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 3 || (std::strcmp(argv[1], "check") != 0 && std::strcmp(argv[1], "bench") != 0)) {
        std::fprintf(stderr, "usage: %s check|bench MODEL_DIR [--policies a,b] [--backend async|sync] [--runs N] [--threads N]\n",
                     argv[0]);
        return 2;
    }
    const std::string mode = argv[1], dir = argv[2];
    std::vector<Policy> policies(std::begin(kPolicies), std::end(kPolicies));
    libra_backend backend = LIBRA_BACKEND_CPU_ASYNC;
    int runs = 5, threads = 1;
    for (int i = 3; i + 1 < argc; i += 2) {
        const std::string k = argv[i], v = argv[i + 1];
        if (k == "--policies") {
            policies.clear();
            for (const Policy &p : kPolicies)
                if (("," + v + ",").find(std::string(",") + p.name + ",") != std::string::npos) policies.push_back(p);
        } else if (k == "--backend") {
            backend = v == "sync" ? LIBRA_BACKEND_CPU : LIBRA_BACKEND_CPU_ASYNC;
        } else if (k == "--runs") {
            runs = std::max(1, std::atoi(v.c_str()));
        } else if (k == "--threads") {
            threads = std::max(1, std::atoi(v.c_str()));
        } else {
            std::fprintf(stderr, "unknown option %s\n", k.c_str());
            return 2;
        }
    }
    try {
        return mode == "check" ? check(dir, policies, backend) : bench(dir, policies, runs, threads);
    } catch (const std::exception &ex) {
        std::fprintf(stderr, "error: %s\n", ex.what());
        return 1;
    }
}
