// Assigns every constant of libra.h to the field, parameter or variable it belongs to, built as
// C++17 with -Werror: an enumeration field or parameter takes only its own enumeration's
// constants there, so a constant declared with the wrong type fails to compile. Switches list
// every enumerator without a default, so -Wswitch also catches a constant left out here.
// tests/c_harness.rs checks that every constant of the header appears in this file.
#include "libra.h"

#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <vector>

static int failures = 0;
#define EXPECT(cond)                                                        \
    do {                                                                    \
        if (!(cond)) {                                                      \
            std::fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                     \
        }                                                                   \
    } while (0)

// The topology structs holding their defaults, filled as a caller does: struct_size first.
template <typename T>
static T with_size() {
    T v{};
    v.struct_size = sizeof v;
    return v;
}
static libra_dim_desc dim_desc_defaults() {
    libra_dim_desc d = with_size<libra_dim_desc>();
    EXPECT(libra_dim_desc_default(&d) == LIBRA_OK);
    return d;
}
static libra_optimize_config optimize_config_defaults() {
    libra_optimize_config c = with_size<libra_optimize_config>();
    EXPECT(libra_optimize_config_default(&c) == LIBRA_OK);
    return c;
}
static libra_schedule_config schedule_config_defaults() {
    libra_schedule_config c = with_size<libra_schedule_config>();
    EXPECT(libra_schedule_config_default(&c) == LIBRA_OK);
    return c;
}

static const char *status_name(libra_status s) {
    switch (s) {
        case LIBRA_OK: return "ok";
        case LIBRA_ERR_NULL_ARGUMENT: return "null";
        case LIBRA_ERR_INVALID_ARGUMENT: return "invalid";
        case LIBRA_ERR_OUT_OF_MEMORY: return "oom";
        case LIBRA_ERR_NOT_FOUND: return "not found";
        case LIBRA_ERR_BUSY: return "busy";
        case LIBRA_ERR_DEVICE: return "device";
        case LIBRA_ERR_PANIC: return "panic";
        case LIBRA_ERR_ALREADY_EXISTS: return "exists";
        case LIBRA_ERR_TIMEOUT: return "timeout";
        case LIBRA_ERR_POISONED: return "poisoned";
        case LIBRA_ERR_INFEASIBLE: return "infeasible";
        case LIBRA_ERR_PARSE: return "parse";
    }
    return "?";
}

static bool readiness_known(libra_readiness r) {
    switch (r) {
        case LIBRA_READY:
        case LIBRA_PENDING:
        case LIBRA_FAILED: return true;
    }
    return false;
}

static bool event_kind_known(libra_event_kind kind) {
    switch (kind) {
        case LIBRA_EVENT_STORED:
        case LIBRA_EVENT_REMOVED:
        case LIBRA_EVENT_TO_HOST:
        case LIBRA_EVENT_TO_GPU: return true;
    }
    return false;
}

static bool step_op_known(libra_step_op op) {
    switch (op) {
        case LIBRA_STEP_REDUCE_SCATTER:
        case LIBRA_STEP_ALL_GATHER:
        case LIBRA_STEP_ALL_TO_ALL: return true;
    }
    return false;
}

static void cache_constants() {
    const libra_policy policies[] = {LIBRA_POLICY_ELORA, LIBRA_POLICY_LRU, LIBRA_POLICY_VLLM, LIBRA_POLICY_SLORA,
                                     LIBRA_POLICY_LIBRA};
    const libra_backend backends[] = {LIBRA_BACKEND_CPU, LIBRA_BACKEND_CUDA, LIBRA_BACKEND_AUTO,
                                      LIBRA_BACKEND_CPU_ASYNC};
    for (libra_policy p : policies) {
        for (libra_backend b : backends) {
            libra_cache_config cfg;
            cfg.struct_size = sizeof cfg;
            EXPECT(libra_cache_config_default(&cfg) == LIBRA_OK);
            cfg.policy = p;
            cfg.backend = b;
            cfg.gpu_blocks = 16;
            cfg.host_blocks = 16;
            libra_cache *cache = nullptr;
            libra_status s = libra_cache_create(&cfg, &cache);
            // CUDA (and AUTO falling back to CPU) depend on the machine; the CPU ones must work.
            EXPECT(s == LIBRA_OK || (b == LIBRA_BACKEND_CUDA && s == LIBRA_ERR_DEVICE));
            if (s == LIBRA_OK) {
                const std::vector<unsigned char> weights(64, 7);
                EXPECT(libra_cache_register_adapter(cache, 1, weights.data(), weights.size(), LIBRA_RANK_UNKNOWN, 0) ==
                       LIBRA_OK);
                libra_adapter_info info;
                info.struct_size = sizeof info;
                EXPECT(libra_cache_adapter_info(cache, 1, &info) == LIBRA_OK && info.rank == LIBRA_RANK_UNKNOWN);
                libra_cache_free(cache);
            }
        }
    }
    EXPECT(readiness_known(LIBRA_READY) && readiness_known(LIBRA_PENDING) && readiness_known(LIBRA_FAILED));
    libra_event ev;
    ev.kind = LIBRA_EVENT_TO_GPU;
    EXPECT(event_kind_known(ev.kind));
    for (libra_status s : {LIBRA_OK, LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_PARSE}) EXPECT(status_name(s)[0] != '?');
}

static libra_network *network_of(libra_dim_kind kind) {
    libra_dim_desc d[2] = {dim_desc_defaults(), dim_desc_defaults()};
    d[0].kind = kind;
    d[0].size = 4;
    d[0].bandwidth = 100.0;
    d[0].link_cost = 2.0;
    d[0].switch_cost = 18.0;
    d[0].nic_cost = 31.6;
    d[1].kind = LIBRA_DIM_RING;
    d[1].size = 2;
    d[1].bandwidth = 50.0;
    d[1].link_cost = 7.8;
    libra_network *net = nullptr;
    EXPECT(libra_network_new(d, 2, &net) == LIBRA_OK);
    libra_dim_desc back = dim_desc_defaults();
    EXPECT(libra_network_dim(net, 0, &back) == LIBRA_OK && back.kind == kind);
    return net;
}

static void topology_constants() {
    for (libra_dim_kind kind : {LIBRA_DIM_RING, LIBRA_DIM_FULLY_CONNECTED, LIBRA_DIM_SWITCH}) {
        libra_network *net = network_of(kind);
        for (libra_overlap overlap : {LIBRA_OVERLAP_NONE, LIBRA_OVERLAP_FULL}) {
            libra_workload *wl = nullptr;
            EXPECT(libra_workload_new(overlap, &wl) == LIBRA_OK);
            const int32_t groups[2] = {4, 2};
            for (libra_collective c : {LIBRA_COLLECTIVE_NONE, LIBRA_COLLECTIVE_ALL_REDUCE, LIBRA_COLLECTIVE_REDUCE_SCATTER,
                                       LIBRA_COLLECTIVE_ALL_GATHER, LIBRA_COLLECTIVE_ALL_TO_ALL}) {
                EXPECT(libra_workload_add_phase(wl, nullptr, 10.0, c, 1e6, groups, 2) == LIBRA_OK);
            }
            for (libra_time_model m : {LIBRA_MODEL_LIBRA, LIBRA_MODEL_ALPHA_BETA}) {
                double t = 0.0;
                EXPECT(libra_iteration_time(net, wl, m, &t) == LIBRA_OK && t > 0.0);
                for (libra_objective o : {LIBRA_OBJECTIVE_TIME, LIBRA_OBJECTIVE_TIME_COST}) {
                    for (libra_cmp cmp : {LIBRA_CMP_LE, LIBRA_CMP_GE, LIBRA_CMP_EQ}) {
                        const double coeffs[2] = {1.0, 0.0};
                        libra_linear_constraint lc;
                        lc.coeffs = coeffs;
                        lc.num_coeffs = 2;
                        lc.cmp = cmp;
                        lc.rhs = 40.0;
                        libra_optimize_config cfg = optimize_config_defaults();
                        cfg.objective = o;
                        cfg.model = m;
                        cfg.total_bandwidth = 200.0;
                        cfg.constraints = &lc;
                        cfg.num_constraints = 1;
                        double bw[2];
                        libra_optimize_result res;
                        res.struct_size = sizeof res;
                        libra_status s = libra_optimize(net, wl, &cfg, bw, 2, &res);
                        EXPECT(s == LIBRA_OK);
                        if (s == LIBRA_OK && cmp == LIBRA_CMP_EQ) EXPECT(bw[0] > 39.999 && bw[0] < 40.001);
                    }
                }
            }
            libra_workload_free(wl);
        }
        for (libra_schedule_policy policy : {LIBRA_SCHEDULE_POLICY_BASELINE, LIBRA_SCHEDULE_POLICY_THEMIS}) {
            libra_schedule_config cfg = schedule_config_defaults();
            cfg.policy = policy;
            for (libra_collective c : {LIBRA_COLLECTIVE_ALL_REDUCE, LIBRA_COLLECTIVE_REDUCE_SCATTER,
                                       LIBRA_COLLECTIVE_ALL_GATHER, LIBRA_COLLECTIVE_ALL_TO_ALL}) {
                libra_schedule *s = nullptr;
                EXPECT(libra_schedule_new(net, c, 64 * 8, nullptr, 0, &cfg, &s) == LIBRA_OK);
                size_t n = 0;
                EXPECT(libra_schedule_num_steps(s, &n) == LIBRA_OK && n > 0);
                libra_step st;
                st.struct_size = sizeof st;
                EXPECT(libra_schedule_step(s, 0, &st) == LIBRA_OK && step_op_known(st.op));
                libra_schedule_free(s);
            }
        }
        libra_network_free(net);
    }
    for (libra_network_preset np : {LIBRA_NETWORK_PRESET_3D, LIBRA_NETWORK_PRESET_4D}) {
        libra_network *net = nullptr;
        EXPECT(libra_network_preset_new(np, &net) == LIBRA_OK);
        for (libra_workload_preset wp : {LIBRA_WORKLOAD_PRESET_GPT3, LIBRA_WORKLOAD_PRESET_MSFT_1T,
                                         LIBRA_WORKLOAD_PRESET_TURING_NLG, LIBRA_WORKLOAD_PRESET_RESNET50}) {
            libra_workload *wl = nullptr;
            EXPECT(libra_workload_preset_new(wp, np, &wl) == LIBRA_OK);
            libra_workload_free(wl);
        }
        libra_network_free(net);
    }
}

int main() {
    cache_constants();
    topology_constants();
    if (failures != 0) return 1;
    std::printf("header constants: every constant assigned and accepted\n");
    return 0;
}
