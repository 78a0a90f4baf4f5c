/* An engine's view of a schedule: the loop it writes over its per-dimension communicators.
 *
 * An engine holds one communicator per network dimension (with NCCL: one ncclComm_t per
 * dimension, over the ranks that differ only in that coordinate). It asks the library for a
 * schedule, then issues the steps in order: each step is a reduce-scatter or all-gather by every
 * group along one dimension, on an element range of the buffer that the schedule gives per
 * rank. Here the "communicators" are host loops over every rank's buffer, standing in for
 * ncclReduceScatter / ncclAllGather on a device; the result is checked against the naive sum
 * and against the library's reference executor. */
#include "libra.h"
#include "check.h"
#include "topo_defaults.h"

#define MAX_DIMS 4

/* One communicator per dimension: the group size and the rank stride along it. */
typedef struct {
    size_t group;
    size_t stride;
} dim_comm;

static size_t coord(const dim_comm *c, size_t rank) { return (rank / c->stride) % c->group; }

/* Part i of len elements over g, as the library splits: the first len % g parts are one longer. */
static void split_part(size_t len, size_t g, size_t i, size_t *off, size_t *cnt) {
    size_t base = len / g, rem = len % g;
    *off = i * base + (i < rem ? i : rem);
    *cnt = base + (i < rem ? 1 : 0);
}

/* What an engine does for one step on one group (ranks lead + i * stride): reduce-scatter the
 * segment so member i owns the sum of part i, or all-gather the members' parts. */
static void run_group(const dim_comm *c, int op, size_t lead, size_t off, size_t len, double **buf) {
    size_t i, m, e, po, pc;
    for (i = 0; i < c->group; i++) {
        size_t owner = lead + i * c->stride;
        split_part(len, c->group, i, &po, &pc);
        for (e = off + po; e < off + po + pc; e++) {
            if (op == LIBRA_STEP_REDUCE_SCATTER) {
                double sum = 0.0;
                for (m = 0; m < c->group; m++) sum += buf[lead + m * c->stride][e];
                buf[owner][e] = sum;
            } else {
                for (m = 0; m < c->group; m++) buf[lead + m * c->stride][e] = buf[owner][e];
            }
        }
    }
}

static void engine_all_reduce(libra_network *net, libra_schedule_policy policy) {
    enum { COUNT = 1000 };
    libra_schedule_config cfg = schedule_config_defaults();
    libra_schedule *s = NULL;
    dim_comm comms[MAX_DIMS];
    size_t dims = 0, ranks = 0, steps = 0, d, r, i, e, k;
    double **buf, **ref;
    unsigned char *done;
    double finish = 0.0;

    CHECK_OK(libra_network_num_dims(net, &dims));
    CHECK(dims <= MAX_DIMS);
    for (d = 0, k = 1; d < dims; d++) {
        libra_dim_desc desc = dim_desc_defaults();
        CHECK_OK(libra_network_dim(net, d, &desc));
        comms[d].group = desc.size;
        comms[d].stride = k;
        k *= desc.size;
    }
    cfg.policy = policy;
    cfg.chunks = 7;
    cfg.elem_size = sizeof(double);
    CHECK_OK(libra_schedule_new(net, LIBRA_COLLECTIVE_ALL_REDUCE, COUNT, NULL, 0, &cfg, &s));
    CHECK_OK(libra_schedule_num_ranks(s, &ranks));
    CHECK_OK(libra_schedule_num_steps(s, &steps));
    CHECK_OK(libra_schedule_finish_time(s, &finish));
    CHECK(ranks == k && steps > 0 && finish > 0.0);

    buf = (double **)malloc(ranks * sizeof *buf);
    ref = (double **)malloc(ranks * sizeof *ref);
    done = (unsigned char *)calloc(steps, 1);
    CHECK(buf != NULL && ref != NULL && done != NULL);
    for (r = 0; r < ranks; r++) {
        buf[r] = (double *)malloc(COUNT * sizeof(double));
        ref[r] = (double *)malloc(COUNT * sizeof(double));
        CHECK(buf[r] != NULL && ref[r] != NULL);
        for (e = 0; e < COUNT; e++) buf[r][e] = ref[r][e] = (double)((r * 31 + e * 7) % 101);
    }

    /* The engine's loop: steps in order; a step's dependencies are earlier steps (an engine
     * would wait on their events), and steps on one dimension go to its communicator in order. */
    for (i = 0; i < steps; i++) {
        libra_step st;
        size_t dep;
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        CHECK_OK(libra_schedule_step(s, i, &st));
        for (k = 0; k < st.num_deps; k++) {
            CHECK_OK(libra_schedule_step_dep(s, i, k, &dep));
            CHECK(dep < i && done[dep]);
        }
        CHECK(st.dim < dims && st.group == comms[st.dim].group && st.finish_ns >= st.start_ns);
        for (r = 0; r < ranks; r++) {
            size_t off = 0, len = 0;
            if (coord(&comms[st.dim], r) != 0) continue; /* one call per group, led by coordinate 0 */
            CHECK_OK(libra_schedule_step_segment(s, i, r, &off, &len));
            run_group(&comms[st.dim], st.op, r, off, len, buf);
        }
        done[i] = 1;
    }

    CHECK_OK(libra_schedule_execute_f64(s, (double *const *)ref, ranks, COUNT));
    for (e = 0; e < COUNT; e++) {
        double sum = 0.0;
        for (r = 0; r < ranks; r++) sum += (double)((r * 31 + e * 7) % 101);
        for (r = 0; r < ranks; r++) CHECK(buf[r][e] == sum && ref[r][e] == sum);
    }
    for (r = 0; r < ranks; r++) {
        free(buf[r]);
        free(ref[r]);
    }
    free(buf);
    free(ref);
    free(done);
    libra_schedule_free(s);
}

int main(void) {
    libra_dim_desc dims[3];
    libra_network *net = NULL;
    size_t d;
    const uint32_t sizes[3] = {4, 3, 2};
    const double bw[3] = {50.0, 200.0, 100.0};
    for (d = 0; d < 3; d++) {
        dims[d] = dim_desc_defaults();
        dims[d].kind = d == 2 ? LIBRA_DIM_SWITCH : LIBRA_DIM_RING;
        dims[d].size = sizes[d];
        dims[d].bandwidth = bw[d];
        dims[d].latency = 100.0;
    }
    CHECK_OK(libra_network_new(dims, 3, &net));
    engine_all_reduce(net, LIBRA_SCHEDULE_POLICY_BASELINE);
    engine_all_reduce(net, LIBRA_SCHEDULE_POLICY_THEMIS);
    libra_network_free(net);
    PASS();
}
