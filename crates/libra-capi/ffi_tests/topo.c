/* Topology: networks, workloads, the optimiser and schedules, including their error paths. */
#include "libra.h"
#include "check.h"
#include "topo_defaults.h"
#include <math.h>

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    long n;
    char *buf;
    CHECK(f != NULL);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (char *)malloc((size_t)n + 1);
    CHECK(buf != NULL);
    CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static libra_network *two_dim_network(double bw0, double bw1) {
    libra_dim_desc dims[2];
    libra_network *net = NULL;
    dims[0] = dim_desc_defaults();
    dims[0].kind = LIBRA_DIM_RING;
    dims[0].size = 4;
    dims[0].bandwidth = bw0;
    dims[0].link_cost = 2.0;
    dims[1] = dim_desc_defaults();
    dims[1].kind = LIBRA_DIM_SWITCH;
    dims[1].size = 6;
    dims[1].bandwidth = bw1;
    dims[1].latency = 100.0;
    dims[1].link_cost = 7.8;
    dims[1].switch_cost = 18.0;
    dims[1].nic_cost = 31.6;
    CHECK_OK(libra_network_new(dims, 2, &net));
    return net;
}

static void test_network(void) {
    libra_dim_desc dims[2];
    libra_dim_desc d = dim_desc_defaults();
    libra_network *net = NULL;
    size_t n = 0;
    uint64_t npus = 0;
    double cost = -1.0, bw[2] = {10.0, 20.0};

    net = two_dim_network(100.0, 50.0);
    CHECK_OK(libra_network_num_dims(net, &n));
    CHECK(n == 2);
    CHECK_OK(libra_network_npus(net, &npus));
    CHECK(npus == 24);
    CHECK_OK(libra_network_dim(net, 1, &d));
    CHECK(d.kind == LIBRA_DIM_SWITCH && d.size == 6 && d.bandwidth == 50.0 && d.latency == 100.0);
    CHECK_STATUS(libra_network_dim(net, 2, &d), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_OK(libra_network_cost(net, NULL, 0, &cost));
    CHECK(fabs(cost - 24.0 * (2.0 * 100.0 + 57.4 * 50.0)) < 1e-6);
    CHECK_OK(libra_network_cost(net, bw, 2, &cost));
    CHECK(fabs(cost - 24.0 * (2.0 * 10.0 + 57.4 * 20.0)) < 1e-6);
    CHECK_STATUS(libra_network_cost(net, bw, 1, &cost), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_OK(libra_network_set_bandwidths(net, bw, 2));
    CHECK_OK(libra_network_dim(net, 0, &d));
    CHECK(d.bandwidth == 10.0);
    bw[1] = 0.0;
    CHECK_STATUS(libra_network_set_bandwidths(net, bw, 2), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "bandwidth") != NULL);
    CHECK_STATUS(libra_network_set_bandwidths(net, NULL, 2), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_network_set_bandwidths(NULL, bw, 2), LIBRA_ERR_NULL_ARGUMENT);

    /* NULL handles and out pointers. */
    CHECK_STATUS(libra_network_num_dims(NULL, &n), LIBRA_ERR_NULL_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "network") != NULL);
    CHECK_STATUS(libra_network_num_dims(net, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_network_npus(net, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_network_cost(NULL, NULL, 0, &cost), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_network_dim(net, 0, NULL), LIBRA_ERR_NULL_ARGUMENT);
    d.struct_size = 1;
    CHECK_STATUS(libra_network_dim(net, 0, &d), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "struct_size") != NULL);
    d = dim_desc_defaults();
    libra_network_free(net);
    libra_network_free(NULL);

    /* Bad networks: empty, zero and negative bandwidth, bad kind, size 1; out untouched. */
    net = (libra_network *)&n; /* sentinel: must stay unchanged on failure */
    dims[0] = dim_desc_defaults();
    dims[1] = dim_desc_defaults();
    CHECK_STATUS(libra_network_new(dims, 0, &net), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "num_dims") != NULL);
    dims[1].bandwidth = 0.0;
    CHECK_STATUS(libra_network_new(dims, 2, &net), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "dims[1].bandwidth") != NULL);
    dims[1].bandwidth = -5.0;
    CHECK_STATUS(libra_network_new(dims, 2, &net), LIBRA_ERR_INVALID_ARGUMENT);
    dims[1].bandwidth = 1.0;
    dims[1].kind = 42;
    CHECK_STATUS(libra_network_new(dims, 2, &net), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "dims[1].kind") != NULL);
    dims[1].kind = LIBRA_DIM_SWITCH;
    dims[0].size = 1;
    CHECK_STATUS(libra_network_new(dims, 2, &net), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "dims[0].size") != NULL);
    CHECK_STATUS(libra_network_new(NULL, 2, &net), LIBRA_ERR_NULL_ARGUMENT);
    CHECK(net == (libra_network *)&n);
    CHECK_STATUS(libra_network_new(dims, 2, NULL), LIBRA_ERR_NULL_ARGUMENT);
    dims[0].size = 2;
    dims[0].struct_size = 3;
    CHECK_STATUS(libra_network_new(dims, 2, &net), LIBRA_ERR_INVALID_ARGUMENT);

    /* Presets and parsing. */
    net = NULL;
    CHECK_OK(libra_network_preset_new(LIBRA_NETWORK_PRESET_4D, &net));
    CHECK_OK(libra_network_num_dims(net, &n));
    CHECK(n == 4);
    libra_network_free(net);
    CHECK_STATUS(libra_network_preset_new(7, &net), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_network_preset_new(LIBRA_NETWORK_PRESET_3D, NULL), LIBRA_ERR_NULL_ARGUMENT);
    {
        char *yml = read_file("../libra/tests/data/topo/network_3d.yml");
        char *cost_yml = read_file("../libra/tests/data/topo/cost_3d.yml");
        net = NULL;
        CHECK_OK(libra_network_parse(yml, cost_yml, &net));
        CHECK_OK(libra_network_npus(net, &npus));
        CHECK(npus == 4096);
        CHECK_OK(libra_network_dim(net, 2, &d));
        CHECK(d.kind == LIBRA_DIM_SWITCH && d.size == 32 && d.nic_cost == 31.6 && d.bandwidth == 50.0);
        libra_network_free(net);
        CHECK_OK(libra_network_parse(yml, NULL, &net));
        libra_network_free(net);
        CHECK_STATUS(libra_network_parse("Topology: [ Ring, Torus ]\nNpusCount: [ 4, 4 ]\n", NULL, &net),
                     LIBRA_ERR_PARSE);
        CHECK(strstr(libra_last_error_message(), "Topology[1]") != NULL);
        CHECK_STATUS(libra_network_parse("Topology: [ Ring\n", NULL, &net), LIBRA_ERR_PARSE);
        CHECK_STATUS(libra_network_parse(yml, "Chiplet:\n  Link: 2\n", &net), LIBRA_ERR_PARSE);
        CHECK_STATUS(libra_network_parse(NULL, NULL, &net), LIBRA_ERR_NULL_ARGUMENT);
        CHECK_STATUS(libra_network_parse(yml, NULL, NULL), LIBRA_ERR_NULL_ARGUMENT);
        /* Malformed cost models and out-of-range values are parse errors naming the key. */
        CHECK_STATUS(libra_network_parse(yml, "Chiplet:\n  Link: 2\nNode: {Link: 4, Switch: 13}\n", &net),
                     LIBRA_ERR_PARSE);
        CHECK(strstr(libra_last_error_message(), "flow-style") != NULL);
        CHECK_STATUS(libra_network_parse("Topology: [ Ring ]\nNpusCount: [ 1 ]\n", NULL, &net), LIBRA_ERR_PARSE);
        CHECK(strstr(libra_last_error_message(), "NpusCount[0]") != NULL);
        CHECK_STATUS(libra_network_parse("Topology: [ Ring ]\nNpusCount: [ 4 ]\n", cost_yml, &net),
                     LIBRA_ERR_PARSE);
        CHECK(strstr(libra_last_error_message(), "CostDimension") != NULL);
        free(yml);
        free(cost_yml);
    }
    {
        /* ASTRA-sim 2.0: GB/s per link (2^30 bytes), ns per link; and back out. */
        const char *astra = "topology: [ Ring, Switch ]\nnpus_count: [ 4, 8 ]\nbandwidth: [ 50, 100 ]\nlatency: [ 500, 700 ]\n";
        const double gb = 1073741824.0 / 1e9;
        size_t need = 0;
        char small[8];
        char *text;
        libra_network *back = NULL;
        libra_dim_desc d2 = dim_desc_defaults();
        net = NULL;
        CHECK_OK(libra_network_parse(astra, NULL, &net));
        CHECK_OK(libra_network_dim(net, 0, &d));
        CHECK(d.kind == LIBRA_DIM_RING && fabs(d.bandwidth - 100.0 * gb) < 1e-9 && d.latency == 500.0);
        CHECK_OK(libra_network_dim(net, 1, &d));
        CHECK(d.kind == LIBRA_DIM_SWITCH && fabs(d.bandwidth - 100.0 * gb) < 1e-9 && d.latency == 1400.0);
        CHECK_STATUS(libra_network_parse(astra, "Pod:\n  Link: 1\n", &back), LIBRA_ERR_PARSE);
        CHECK_OK(libra_network_export_astra_sim(net, NULL, 0, &need));
        CHECK(need > 1);
        CHECK_STATUS(libra_network_export_astra_sim(net, small, sizeof small, &need), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK(strstr(libra_last_error_message(), "cap") != NULL);
        text = (char *)malloc(need);
        CHECK(text != NULL);
        CHECK_OK(libra_network_export_astra_sim(net, text, need, &need));
        CHECK(strlen(text) + 1 == need && strstr(text, "npus_count: [ 4, 8 ]") != NULL);
        CHECK_OK(libra_network_parse(text, NULL, &back));
        CHECK_OK(libra_network_dim(back, 1, &d2));
        CHECK(fabs(d2.bandwidth - d.bandwidth) < 1e-9 && fabs(d2.latency - d.latency) < 1e-9);
        CHECK_STATUS(libra_network_export_astra_sim(NULL, text, need, &need), LIBRA_ERR_NULL_ARGUMENT);
        CHECK_STATUS(libra_network_export_astra_sim(net, text, need, NULL), LIBRA_ERR_NULL_ARGUMENT);
        free(text);
        libra_network_free(back);
        libra_network_free(net);
    }
}

static void test_workload_and_optimizer(void) {
    libra_network *net = two_dim_network(100.0, 50.0);
    libra_workload *wl = NULL;
    int32_t all[2] = {4, 6}, inner[2] = {4, -1}, bad[2] = {3, 6}, zero[2] = {0, 6};
    size_t n = 0;
    double t = 0.0, bw[2] = {0.0, 0.0}, lower[2] = {300.0, 300.0}, coeffs[2] = {1.0, -1.0};
    libra_optimize_config cfg = optimize_config_defaults();
    libra_optimize_result res;
    libra_linear_constraint lc;

    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    CHECK_OK(libra_workload_new(LIBRA_OVERLAP_NONE, &wl));
    CHECK_OK(libra_workload_add_phase(wl, "fwd", 1000.0, LIBRA_COLLECTIVE_ALL_REDUCE, 1e6, inner, 2));
    CHECK_OK(libra_workload_add_phase(wl, NULL, 500.0, LIBRA_COLLECTIVE_NONE, 0.0, NULL, 0));
    CHECK_OK(libra_workload_add_phase(wl, "wg", 1000.0, LIBRA_COLLECTIVE_ALL_REDUCE, 4e6, all, 2));
    CHECK_OK(libra_workload_num_phases(wl, &n));
    CHECK(n == 3);
    CHECK_STATUS(libra_workload_add_phase(wl, "x", -1.0, LIBRA_COLLECTIVE_NONE, 0.0, NULL, 0),
                 LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "compute_ns") != NULL);
    CHECK_STATUS(libra_workload_add_phase(wl, "x", 1.0, LIBRA_COLLECTIVE_ALL_REDUCE, -1.0, all, 2),
                 LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_workload_add_phase(wl, "x", 1.0, LIBRA_COLLECTIVE_ALL_REDUCE, 1.0, NULL, 2),
                 LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_workload_add_phase(wl, "x", 1.0, LIBRA_COLLECTIVE_ALL_REDUCE, 1.0, zero, 2),
                 LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "groups[0]") != NULL);
    CHECK_STATUS(libra_workload_add_phase(wl, "x", 1.0, 99, 1.0, all, 2), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_workload_add_phase(NULL, "x", 1.0, LIBRA_COLLECTIVE_NONE, 0.0, NULL, 0),
                 LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_workload_num_phases(wl, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_OK(libra_workload_num_phases(wl, &n));
    CHECK(n == 3);

    /* fwd: 2e6*3/4/100 = 15000; wg: max(6e6/100, 2*1e6*5/6/50) = 60000. */
    CHECK_OK(libra_iteration_time(net, wl, LIBRA_MODEL_LIBRA, &t));
    CHECK(fabs(t - (2500.0 + 15000.0 + 60000.0)) < 1e-6);
    CHECK_OK(libra_iteration_time(net, wl, LIBRA_MODEL_ALPHA_BETA, &t));
    CHECK(t >= 2500.0 + 15000.0 + 60000.0); /* dimension 1 latency (600 ns) is hidden by dimension 0 */
    CHECK_STATUS(libra_iteration_time(net, wl, 5, &t), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_iteration_time(NULL, wl, LIBRA_MODEL_LIBRA, &t), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_iteration_time(net, NULL, LIBRA_MODEL_LIBRA, &t), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_iteration_time(net, wl, LIBRA_MODEL_LIBRA, NULL), LIBRA_ERR_NULL_ARGUMENT);

    /* Optimise: budget 150 GB/s. */
    cfg.total_bandwidth = 150.0;
    CHECK_OK(libra_optimize(net, wl, &cfg, bw, 2, &res));
    CHECK(bw[0] > 0.0 && bw[1] > 0.0 && bw[0] + bw[1] <= 150.0 * (1.0 + 1e-6));
    CHECK(res.time_ns > 2500.0 && res.speedup_vs_equal >= 1.0 - 1e-9 && res.speedup_vs_proportional >= 1.0 - 1e-9);
    CHECK(res.cost > 0.0 && res.equal_split_time_ns >= res.time_ns * (1.0 - 1e-9));
    /* With a constraint B0 - B1 <= 0. */
    lc.coeffs = coeffs;
    lc.num_coeffs = 2;
    lc.cmp = LIBRA_CMP_LE;
    lc.rhs = 0.0;
    cfg.constraints = &lc;
    cfg.num_constraints = 1;
    CHECK_OK(libra_optimize(net, wl, &cfg, bw, 2, &res));
    CHECK(bw[0] <= bw[1] * (1.0 + 1e-6));
    cfg.constraints = NULL;
    cfg.num_constraints = 0;
    /* Perf-per-cost and a dollar budget, alpha-beta model. */
    cfg.objective = LIBRA_OBJECTIVE_TIME_COST;
    cfg.model = LIBRA_MODEL_ALPHA_BETA;
    CHECK_OK(libra_optimize(net, wl, &cfg, bw, 2, &res));
    cfg.objective = LIBRA_OBJECTIVE_TIME;
    cfg.total_bandwidth = 0.0;
    cfg.dollar_budget = 50000.0;
    CHECK_OK(libra_optimize(net, wl, &cfg, bw, 2, &res));
    CHECK(res.cost <= 50000.0 * (1.0 + 1e-6));
    cfg.model = LIBRA_MODEL_LIBRA;
    cfg.dollar_budget = 0.0;

    /* Perf-per-cost needs the total budget, met with equality. */
    cfg.objective = LIBRA_OBJECTIVE_TIME_COST;
    cfg.total_bandwidth = 150.0;
    CHECK_OK(libra_optimize(net, wl, &cfg, bw, 2, &res));
    CHECK(fabs(bw[0] + bw[1] - 150.0) < 1e-6 * 150.0);
    cfg.total_bandwidth = 0.0;
    cfg.dollar_budget = 50000.0;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "total_bandwidth") != NULL);
    cfg.objective = LIBRA_OBJECTIVE_TIME;
    cfg.dollar_budget = 0.0;
    /* Bounds without their count are an error, not ignored. */
    cfg.total_bandwidth = 150.0;
    cfg.upper = lower;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "num_bounds") != NULL);
    cfg.upper = NULL;
    /* Non-finite or negative bandwidths are refused by the cost function. */
    {
        double nan_bw[2];
        nan_bw[0] = NAN;
        nan_bw[1] = 1.0;
        CHECK_STATUS(libra_network_cost(net, nan_bw, 2, &t), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK(strstr(libra_last_error_message(), "bandwidths[0]") != NULL);
        nan_bw[0] = -1.0;
        CHECK_STATUS(libra_network_cost(net, nan_bw, 2, &t), LIBRA_ERR_INVALID_ARGUMENT);
    }

    /* Errors: infeasible budget, negative budget, no budget, bad sizes, NULLs. */
    bw[0] = bw[1] = -7.0;
    cfg.total_bandwidth = 500.0;
    cfg.lower = lower;
    cfg.num_bounds = 2;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INFEASIBLE);
    CHECK(strstr(libra_last_error_message(), "total_bandwidth") != NULL);
    CHECK(bw[0] == -7.0 && bw[1] == -7.0);
    cfg.lower = NULL;
    cfg.num_bounds = 0;
    cfg.total_bandwidth = -1.0;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "total_bandwidth") != NULL);
    cfg.total_bandwidth = 0.0;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INVALID_ARGUMENT);
    cfg.total_bandwidth = 150.0;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 3, &res), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_optimize(net, wl, &cfg, NULL, 2, &res), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_optimize(net, wl, NULL, bw, 2, &res), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_optimize(NULL, wl, &cfg, bw, 2, &res), LIBRA_ERR_NULL_ARGUMENT);
    cfg.struct_size = 0;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INVALID_ARGUMENT);
    cfg = optimize_config_defaults();
    cfg.total_bandwidth = 150.0;

    /* A group size that does not divide its dimension is caught when the workload is used. */
    CHECK_OK(libra_workload_add_phase(wl, "bad", 1.0, LIBRA_COLLECTIVE_ALL_GATHER, 1e3, bad, 2));
    CHECK_STATUS(libra_iteration_time(net, wl, LIBRA_MODEL_LIBRA, &t), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "groups[0]") != NULL);
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INVALID_ARGUMENT);
    libra_workload_free(wl);
    libra_workload_free(NULL);

    /* An empty workload. */
    CHECK_OK(libra_workload_new(LIBRA_OVERLAP_FULL, &wl));
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INVALID_ARGUMENT);
    libra_workload_free(wl);
    CHECK_STATUS(libra_workload_new(9, &wl), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_workload_new(LIBRA_OVERLAP_NONE, NULL), LIBRA_ERR_NULL_ARGUMENT);
    libra_network_free(net);

    /* Presets and parsed LIBRA inputs. */
    CHECK_OK(libra_network_preset_new(LIBRA_NETWORK_PRESET_3D, &net));
    CHECK_OK(libra_workload_preset_new(LIBRA_WORKLOAD_PRESET_GPT3, LIBRA_NETWORK_PRESET_3D, &wl));
    cfg.total_bandwidth = 350.0;
    CHECK_STATUS(libra_optimize(net, wl, &cfg, bw, 2, &res), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "num_dims") != NULL);
    {
        double bw3[3];
        CHECK_OK(libra_optimize(net, wl, &cfg, bw3, 3, &res));
        CHECK(res.speedup_vs_equal >= 1.0 - 1e-9 && bw3[0] + bw3[1] + bw3[2] <= 350.0 * (1.0 + 1e-6));
    }
    libra_workload_free(wl);
    CHECK_STATUS(libra_workload_preset_new(17, LIBRA_NETWORK_PRESET_3D, &wl), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_workload_preset_new(LIBRA_WORKLOAD_PRESET_GPT3, 3, &wl), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_workload_preset_new(LIBRA_WORKLOAD_PRESET_RESNET50, LIBRA_NETWORK_PRESET_3D, NULL),
                 LIBRA_ERR_NULL_ARGUMENT);
    {
        char *text = read_file("../libra/tests/data/topo/toy_transformer.txt");
        char *comm = read_file("../libra/tests/data/topo/communicator_3d.yml");
        double bw3[3];
        wl = NULL;
        CHECK_OK(libra_workload_parse(text, comm, 3, LIBRA_OVERLAP_NONE, &wl));
        CHECK_OK(libra_workload_num_phases(wl, &n));
        CHECK(n == 12);
        CHECK_OK(libra_optimize(net, wl, &cfg, bw3, 3, &res));
        CHECK(res.speedup_vs_equal >= 1.0 - 1e-9);
        libra_workload_free(wl);
        CHECK_STATUS(libra_workload_parse("l -1 1 ALLREDUCE 5 1 NONE 0 1 NONE\n", comm, 3, LIBRA_OVERLAP_NONE, &wl),
                     LIBRA_ERR_PARSE);
        CHECK(strstr(libra_last_error_message(), "line 1") != NULL);
        CHECK_STATUS(libra_workload_parse(text, "Forward: [ 16, -1 ]\n", 3, LIBRA_OVERLAP_NONE, &wl), LIBRA_ERR_PARSE);
        CHECK_STATUS(libra_workload_parse(text, NULL, 3, LIBRA_OVERLAP_NONE, &wl), LIBRA_ERR_NULL_ARGUMENT);
        CHECK_STATUS(libra_workload_parse(text, comm, 3, LIBRA_OVERLAP_NONE, NULL), LIBRA_ERR_NULL_ARGUMENT);
        /* The same file through its own parallelism header, and with the communicator. */
        CHECK_OK(libra_workload_parse_astra(net, text, NULL, LIBRA_OVERLAP_NONE, &wl));
        CHECK_OK(libra_workload_num_phases(wl, &n));
        CHECK(n == 12);
        libra_workload_free(wl);
        CHECK_OK(libra_workload_parse_astra(net, text, comm, LIBRA_OVERLAP_NONE, &wl));
        libra_workload_free(wl);
        CHECK_STATUS(libra_workload_parse_astra(net, "l -1 1 NONE 0 1 NONE 0 1 ALLREDUCE 8 1\n", NULL,
                                                LIBRA_OVERLAP_NONE, &wl),
                     LIBRA_ERR_INVALID_ARGUMENT);
        CHECK(strstr(libra_last_error_message(), "communicator") != NULL);
        CHECK_STATUS(libra_workload_parse_astra(net, "DATA\n2\nl -1 1 NONE 0 1 NONE 0 1 ALLREDUCE 8 1\n", NULL,
                                                LIBRA_OVERLAP_NONE, &wl),
                     LIBRA_ERR_PARSE);
        CHECK(strstr(libra_last_error_message(), "2 layers") != NULL);
        CHECK_STATUS(libra_workload_parse_astra(net, text, "Forward: [1]\n", LIBRA_OVERLAP_NONE, &wl), LIBRA_ERR_PARSE);
        CHECK_STATUS(libra_workload_parse_astra(NULL, text, NULL, LIBRA_OVERLAP_NONE, &wl), LIBRA_ERR_NULL_ARGUMENT);
        CHECK_STATUS(libra_workload_parse_astra(net, NULL, NULL, LIBRA_OVERLAP_NONE, &wl), LIBRA_ERR_NULL_ARGUMENT);
        CHECK_STATUS(libra_workload_parse_astra(net, text, NULL, 7, &wl), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(libra_workload_parse_astra(net, text, NULL, LIBRA_OVERLAP_NONE, NULL), LIBRA_ERR_NULL_ARGUMENT);
        free(text);
        free(comm);
    }
    {
        /* HYBRID_CUSTOMIZED: each layer names its parallelism. */
        const char *custom = "HYBRID_CUSTOMIZED\n2\n"
                             "a -1 10 ALLGATHER 64 10 NONE 0 10 ALLREDUCE 64 1 HYBRID_DATA_MODEL\n"
                             "b -1 10 NONE 0 10 NONE 0 10 ALLREDUCE 64 1 DATA\n";
        CHECK_OK(libra_workload_parse_astra(net, custom, NULL, LIBRA_OVERLAP_NONE, &wl));
        CHECK_OK(libra_iteration_time(net, wl, LIBRA_MODEL_LIBRA, &t));
        CHECK(t > 60.0);
        libra_workload_free(wl);
    }
    libra_network_free(net);
}

static void test_schedule(void) {
    libra_network *net = two_dim_network(25.0, 200.0);
    libra_schedule *s = NULL, *b = NULL;
    libra_schedule_config cfg = schedule_config_defaults();
    libra_step st;
    size_t steps = 0, ranks = 0, i, r, off = 0, cnt = 0, dep = 0;
    double tt = 0.0, tb = 0.0;
    int32_t bad[2] = {4, 4};
    enum { COUNT = 1001 };
    double *bufs[24];

    CHECK(cfg.policy == LIBRA_SCHEDULE_POLICY_THEMIS && cfg.chunks > 0 && cfg.elem_size == 4);
    /* On a large all-reduce Themis beats the fixed order on this mismatched network. */
    CHECK_OK(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, (size_t)1 << 22, NULL, 0, &cfg, &s));
    cfg.policy = LIBRA_SCHEDULE_POLICY_BASELINE;
    CHECK_OK(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, (size_t)1 << 22, NULL, 0, &cfg, &b));
    CHECK_OK(libra_schedule_finish_time(s, &tt));
    CHECK_OK(libra_schedule_finish_time(b, &tb));
    CHECK(tt > 0.0 && tb > 1.5 * tt);
    libra_schedule_free(s);
    cfg.policy = LIBRA_SCHEDULE_POLICY_THEMIS;
    CHECK_OK(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, COUNT, NULL, 0, &cfg, &s));
    CHECK_OK(libra_schedule_num_steps(s, &steps));
    CHECK_OK(libra_schedule_num_ranks(s, &ranks));
    CHECK(ranks == 24 && steps > 0);
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    for (i = 0; i < steps; i++) {
        size_t j;
        CHECK_OK(libra_schedule_step(s, i, &st));
        CHECK(st.dim < 2 && (st.op == LIBRA_STEP_REDUCE_SCATTER || st.op == LIBRA_STEP_ALL_GATHER));
        CHECK(st.finish_ns >= st.start_ns && st.bytes > 0.0);
        CHECK(st.chunk_offset + st.chunk_count <= COUNT);
        for (j = 0; j < st.num_deps; j++) {
            CHECK_OK(libra_schedule_step_dep(s, i, j, &dep));
            CHECK(dep < i);
        }
        CHECK_STATUS(libra_schedule_step_dep(s, i, st.num_deps, &dep), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK_OK(libra_schedule_step_segment(s, i, 23, &off, &cnt));
        CHECK(off >= st.chunk_offset && off + cnt <= st.chunk_offset + st.chunk_count);
    }
    CHECK_STATUS(libra_schedule_step(s, steps, &st), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_schedule_step(s, 0, NULL), LIBRA_ERR_NULL_ARGUMENT);
    st.struct_size = 0;
    CHECK_STATUS(libra_schedule_step(s, 0, &st), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_schedule_step_segment(s, 0, 24, &off, &cnt), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_schedule_step_segment(s, 0, 0, NULL, &cnt), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_schedule_num_steps(NULL, &steps), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_schedule_num_ranks(s, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_schedule_finish_time(s, NULL), LIBRA_ERR_NULL_ARGUMENT);

    /* Run it: every rank ends with the element-wise sum (exact on integers). */
    for (r = 0; r < 24; r++) {
        bufs[r] = (double *)malloc(COUNT * sizeof(double));
        CHECK(bufs[r] != NULL);
        for (i = 0; i < COUNT; i++) bufs[r][i] = (double)(r * 1000 + i);
    }
    CHECK_OK(libra_schedule_execute_f64(s, bufs, 24, COUNT));
    for (r = 0; r < 24; r++)
        for (i = 0; i < COUNT; i++) CHECK(bufs[r][i] == 276000.0 + 24.0 * (double)i);
    CHECK_STATUS(libra_schedule_execute_f64(s, bufs, 23, COUNT), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_schedule_execute_f64(s, bufs, 24, COUNT - 1), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_schedule_execute_f64(s, NULL, 24, COUNT), LIBRA_ERR_NULL_ARGUMENT);
    for (r = 0; r < 24; r++) free(bufs[r]);
    libra_schedule_free(s);
    libra_schedule_free(b);
    libra_schedule_free(NULL);

    /* Errors: a group that does not divide, no elements, bad kind and policy, NULLs. */
    s = NULL;
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 10, bad, 2, NULL, &s), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "groups[1]") != NULL);
    CHECK(s == NULL);
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 0, NULL, 0, NULL, &s), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_NONE, 10, NULL, 0, NULL, &s), LIBRA_ERR_INVALID_ARGUMENT);
    /* An all-to-all moves equal blocks: 10 elements do not split over 24 ranks. */
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_TO_ALL, 10, NULL, 0, NULL, &s), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "count") != NULL);
    cfg.policy = 9;
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 10, NULL, 0, &cfg, &s), LIBRA_ERR_INVALID_ARGUMENT);
    cfg = schedule_config_defaults();
    cfg.chunks = 0;
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 10, NULL, 0, &cfg, &s), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(libra_schedule_new(NULL, LIBRA_COLLECTIVE_ALL_REDUCE, 10, NULL, 0, NULL, &s), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, 10, NULL, 0, NULL, NULL), LIBRA_ERR_NULL_ARGUMENT);
    /* A reduce-scatter over part of the network, default config. */
    bad[1] = -1;
    CHECK_OK(libra_schedule_new(net, LIBRA_COLLECTIVE_REDUCE_SCATTER, 10, bad, 2, NULL, &s));
    CHECK_OK(libra_schedule_num_ranks(s, &ranks));
    CHECK(ranks == 4);
    libra_schedule_free(s);
    libra_network_free(net);
}

/* An all-to-all of 5-element blocks over both dimensions: rank r ends with block j of rank j's
 * input block r; every step is an all-to-all step whose range lies within one block. */
static void test_all_to_all(void) {
    libra_network *net = two_dim_network(25.0, 200.0);
    libra_schedule *s = NULL;
    libra_schedule_config cfg = schedule_config_defaults();
    libra_step st;
    size_t steps = 0, i, r, j, off = 0, cnt = 0;
    enum { RANKS = 24, BLOCK = 5, COUNT = RANKS * BLOCK };
    double *bufs[RANKS];

    cfg.chunks = 3;
    CHECK_OK(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_TO_ALL, COUNT, NULL, 0, &cfg, &s));
    CHECK_OK(libra_schedule_num_steps(s, &steps));
    CHECK(steps == 3 * 2);
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    for (i = 0; i < steps; i++) {
        CHECK_OK(libra_schedule_step(s, i, &st));
        CHECK(st.op == LIBRA_STEP_ALL_TO_ALL && st.bytes > 0.0);
        CHECK(st.chunk_offset + st.chunk_count <= BLOCK);
        CHECK_OK(libra_schedule_step_segment(s, i, 7, &off, &cnt));
        CHECK(off == st.chunk_offset && cnt == st.chunk_count);
    }
    for (r = 0; r < RANKS; r++) {
        bufs[r] = (double *)malloc(COUNT * sizeof(double));
        CHECK(bufs[r] != NULL);
        for (i = 0; i < COUNT; i++) bufs[r][i] = (double)(r * 1000 + i);
    }
    CHECK_OK(libra_schedule_execute_f64(s, bufs, RANKS, COUNT));
    for (r = 0; r < RANKS; r++)
        for (j = 0; j < RANKS; j++)
            for (i = 0; i < BLOCK; i++) CHECK(bufs[r][j * BLOCK + i] == (double)(j * 1000 + r * BLOCK + i));
    for (r = 0; r < RANKS; r++) free(bufs[r]);
    libra_schedule_free(s);
    libra_network_free(net);
}

int main(void) {
    test_network();
    test_workload_and_optimizer();
    test_schedule();
    test_all_to_all();
    PASS();
}
