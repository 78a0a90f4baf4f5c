/* Layer-wise readiness through the C API: per-group poll and per-group events over adopted
 * segments (4 layers x K/V, two segments per group), their error paths, and a caller built
 * against the config layout before `segments_per_group`. */
#include "libra.h"
#include "check.h"
#include <stddef.h>
#include <stdint.h>

#define BT 4
enum { SEGS = 8, BLOCKS = 8, PIECE = 32, PER_GROUP = 2, GROUPS = SEGS / PER_GROUP };

static uint8_t mem[SEGS][BLOCKS * PIECE];

static libra_cache *make_cache(libra_cache_config *cfg, libra_segment *segs) {
    for (int i = 0; i < SEGS; i++) {
        segs[i].base = (uint64_t)(uintptr_t)mem[i];
        segs[i].bytes_per_block = PIECE;
        segs[i].stride = PIECE;
    }
    cfg->struct_size = sizeof *cfg;
    CHECK_OK(libra_cache_config_default(cfg));
    CHECK(cfg->segments_per_group == 0); /* default: one group */
    cfg->block_tokens = BT;
    cfg->gpu_blocks = BLOCKS;
    cfg->host_blocks = BLOCKS;
    cfg->policy = LIBRA_POLICY_LRU;
    cfg->segments = segs;
    cfg->segment_count = SEGS;
    cfg->segments_per_group = PER_GROUP;
    libra_cache *c = NULL;
    CHECK_OK(libra_cache_create(cfg, &c));
    return c;
}

static uint8_t byte_of(size_t block_index, int seg) { return (uint8_t)(block_index * 16 + (size_t)seg + 1); }

static void test_groups_after_a_swap_in(void) {
    libra_cache_config cfg;
    libra_segment segs[SEGS];
    libra_cache *c = make_cache(&cfg, segs);
    uint8_t weights[10] = {0};
    CHECK_OK(libra_cache_register_adapter(c, 1, weights, sizeof weights, 8, 0));

    /* Cache a 4-block prompt whose pieces hold a pattern. */
    uint32_t prompt[4 * BT], other[BT];
    for (uint32_t i = 0; i < 4 * BT; i++) prompt[i] = 1000 + i;
    for (uint32_t i = 0; i < BT; i++) other[i] = 2000 + i;
    uint32_t ids[8];
    size_t n = 0;
    libra_match m;
    CHECK_OK(libra_cache_match(c, 1, 0, prompt, 4 * BT, 1, ids, 8, &m));
    CHECK_OK(libra_cache_allocate(c, m.request, 4 * BT, 2, ids, 8, &n));
    CHECK(n == 4);
    for (size_t i = 0; i < n; i++)
        for (int s = 0; s < SEGS; s++) memset(mem[s] + ids[i] * PIECE, byte_of(i, s), PIECE);
    CHECK_OK(libra_cache_commit(c, m.request, prompt, 4 * BT, 3, NULL));
    CHECK_OK(libra_cache_release(c, m.request, 4));

    /* Another request fills the tier; steps push cached blocks to the host tier. */
    libra_match o;
    CHECK_OK(libra_cache_match(c, 1, 0, other, BT, 5, ids, 8, &o));
    CHECK_OK(libra_cache_allocate(c, o.request, 3 * BT, 6, ids, 8, &n));
    for (uint64_t t = 0; t < 8; t++) CHECK_OK(libra_cache_step(c, 10 + t, 1, false, NULL));
    CHECK_OK(libra_cache_release(c, o.request, 30));
    CHECK_OK(libra_cache_step(c, 31, 1, false, NULL));
    libra_cache_stats st;
    st.struct_size = sizeof st;
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.kv_blocks_host > 0);
    uint64_t clean_before = st.clean_blocks, loaded_before = st.swap_in_blocks;
    memset(mem, 0xEE, sizeof mem);

    /* Matching again loads the host blocks back, per group (at once on the CPU backend). */
    CHECK_OK(libra_cache_match(c, 1, 0, prompt, 4 * BT, 40, ids, 8, &m));
    CHECK(m.cached_blocks == 4);
    libra_readiness r = LIBRA_PENDING;
    uint32_t ready = 99, groups = 99;
    CHECK_OK(libra_cache_poll_groups(c, m.request, &r, &ready, &groups));
    CHECK(r == LIBRA_READY && ready == GROUPS && groups == GROUPS);
    ready = 99;
    CHECK_OK(libra_cache_poll_groups(c, m.request, &r, &ready, NULL)); /* groups_out may be NULL */
    CHECK(ready == GROUPS);
    size_t first_loaded = 4 - (size_t)st.kv_blocks_host;
    for (size_t i = first_loaded; i < 4; i++)
        for (int s = 0; s < SEGS; s++) CHECK(mem[s][ids[i] * PIECE] == byte_of(i, s));
    CHECK_OK(libra_cache_get_stats(c, &st));
    CHECK(st.swap_in_blocks > loaded_before);
    /* The host keeps its copy of every block loaded back: each is clean, and none was given up. */
    CHECK(st.clean_blocks == clean_before + (st.swap_in_blocks - loaded_before));
    CHECK(st.reclaimed_host_copies == 0);

    /* One event per group; NULL on the CPU backend. */
    for (uint32_t g = 0; g < GROUPS; g++) {
        void *ev = (void *)0x1;
        CHECK_OK(libra_cache_group_event(c, m.request, g, &ev));
        CHECK(ev == NULL);
    }

    /* Error paths: nothing is written. */
    void *ev = (void *)0x1;
    CHECK_STATUS(libra_cache_group_event(c, m.request, GROUPS, &ev), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "group") != NULL);
    CHECK(ev == (void *)0x1);
    CHECK_STATUS(libra_cache_group_event(c, m.request, 0, NULL), LIBRA_ERR_NULL_ARGUMENT);
    CHECK_STATUS(libra_cache_group_event(c, 123456789, 0, &ev), LIBRA_ERR_NOT_FOUND);
    CHECK_STATUS(libra_cache_group_event(NULL, m.request, 0, &ev), LIBRA_ERR_NULL_ARGUMENT);
    ready = 77;
    CHECK_STATUS(libra_cache_poll_groups(c, m.request, NULL, &ready, &groups), LIBRA_ERR_NULL_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "readiness_out") != NULL);
    CHECK_STATUS(libra_cache_poll_groups(c, m.request, &r, NULL, &groups), LIBRA_ERR_NULL_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "ready_groups_out") != NULL);
    CHECK_STATUS(libra_cache_poll_groups(c, 123456789, &r, &ready, &groups), LIBRA_ERR_NOT_FOUND);
    CHECK_STATUS(libra_cache_poll_groups(NULL, m.request, &r, &ready, &groups), LIBRA_ERR_NULL_ARGUMENT);
    CHECK(ready == 77);

    CHECK_OK(libra_cache_release(c, m.request, 41));
    CHECK_STATUS(libra_cache_poll_groups(c, m.request, &r, &ready, &groups), LIBRA_ERR_NOT_FOUND);
    CHECK_STATUS(libra_cache_group_event(c, m.request, 0, &ev), LIBRA_ERR_NOT_FOUND);
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

static void test_config_layout_before_groups(void) {
    libra_cache_config cfg;
    libra_segment segs[SEGS];
    libra_cache *c = make_cache(&cfg, segs);
    libra_cache_free(c);
    /* A caller built before `segments_per_group` existed: its struct ends there. */
    cfg.struct_size = offsetof(libra_cache_config, segments_per_group);
    cfg.segments_per_group = 1; /* beyond the caller's struct: must not be read */
    c = NULL;
    CHECK_OK(libra_cache_create(&cfg, &c));
    uint8_t weights[10] = {0};
    CHECK_OK(libra_cache_register_adapter(c, 1, weights, sizeof weights, 8, 0));
    uint32_t tokens[BT] = {1, 2, 3, 4}, ids[1];
    libra_match m;
    CHECK_OK(libra_cache_match(c, 1, 0, tokens, BT, 1, ids, 1, &m));
    libra_readiness r;
    uint32_t ready = 0, groups = 0;
    CHECK_OK(libra_cache_poll_groups(c, m.request, &r, &ready, &groups));
    CHECK(groups == 1 && ready == 1 && r == LIBRA_READY);
    CHECK_OK(libra_cache_release(c, m.request, 2));
    libra_cache_free(c);
    /* Shorter than that layout: refused, naming the field. */
    cfg.struct_size = offsetof(libra_cache_config, segments_per_group) - 4;
    CHECK_STATUS(libra_cache_create(&cfg, &c), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "struct_size") != NULL);
}

/* Adapter weights registered layer by layer: the upload lands in the layer groups (at once on
 * the CPU backend) and every byte sits where `libra_cache_adapter_blocks` says. */
static void test_layered_adapter(void) {
    libra_cache_config cfg;
    libra_segment segs[SEGS];
    libra_cache *c = make_cache(&cfg, segs);
    CHECK(cfg.layered_adapters == 0); /* default: an upload lands whole */
    libra_cache_free(c);
    cfg.layered_adapters = 1;
    c = NULL;
    CHECK_OK(libra_cache_create(&cfg, &c));
    enum { LEN = 700 }; /* three blocks of SEGS x PIECE bytes, the last partly filled */
    uint8_t weights[LEN];
    for (int i = 0; i < LEN; i++) weights[i] = (uint8_t)(i * 7 + 3);
    CHECK_OK(libra_cache_register_adapter(c, 2, weights, LEN, 8, 0));
    uint32_t tokens[BT] = {1, 2, 3, 4}, ids[1];
    libra_match m;
    CHECK_OK(libra_cache_match(c, 2, 0, tokens, BT, 1, ids, 1, &m));
    libra_readiness r = LIBRA_PENDING;
    uint32_t ready = 0, groups = 0;
    CHECK_OK(libra_cache_poll_groups(c, m.request, &r, &ready, &groups));
    CHECK(r == LIBRA_READY && ready == GROUPS && groups == GROUPS);
    uint32_t blocks[4];
    size_t n = 0;
    CHECK_OK(libra_cache_adapter_blocks(c, 2, blocks, 4, &n));
    CHECK(n == 3);
    /* A block's logical bytes run through the segments in order, PIECE bytes each. */
    for (int i = 0; i < LEN; i++) {
        size_t in_block = (size_t)i % (SEGS * PIECE), block = blocks[(size_t)i / (SEGS * PIECE)];
        CHECK(mem[in_block / PIECE][block * PIECE + in_block % PIECE] == weights[i]);
    }
    for (uint32_t g = 0; g < GROUPS; g++) {
        void *ev = (void *)0x1;
        CHECK_OK(libra_cache_group_event(c, m.request, g, &ev));
        CHECK(ev == NULL);
    }
    CHECK_OK(libra_cache_release(c, m.request, 2));
    CHECK_OK(libra_cache_check(c));
    libra_cache_free(c);
}

int main(void) {
    test_groups_after_a_swap_in();
    test_config_layout_before_groups();
    test_layered_adapter();
    PASS();
}
