/* A caller built against the first published cache header: its own copies of the
 * libra_cache_config and libra_cache_stats layouts of that header, passed with their smaller
 * struct_size. Every field it sets must be read, the fields it lacks must take their defaults,
 * and no byte past its stats struct may be written. Also pins the sizes of the frozen results. */
#include "libra.h"
#include "check.h"
#include <stddef.h>
#include <stdint.h>

/* The first published layouts, copied field for field. */
typedef struct {
    size_t struct_size;
    uint32_t block_tokens, gpu_blocks, host_blocks;
    int32_t policy, backend;
    uint64_t block_bytes;
    const libra_segment *segments;
    size_t segment_count;
    double swap_out_high, swap_out_low, swap_in_idle, swap_in_target, host_high, host_low;
    double vllm_adapter_fraction;
    uint64_t hash_key[2];
    double link_bytes_per_us, prefill_tokens_per_us;
    uint64_t popularity_window_us, value_time_unit_us, swap_wait_us, prefetch_interval_us;
    bool events;
    uint32_t event_capacity;
} config_v0;

typedef struct {
    size_t struct_size;
    uint32_t gpu_blocks_total, gpu_blocks_used, host_blocks_total, host_blocks_used;
    uint64_t kv_blocks_gpu, kv_blocks_host;
    uint32_t adapters_registered, adapters_resident;
    uint64_t invalid_kv_blocks, hit_tokens, miss_tokens, matches, swap_out_blocks, swap_in_blocks;
    uint64_t dropped_blocks, pruned_host_blocks, adapter_loads, bytes_to_host, bytes_to_gpu;
    uint64_t failed_batches;
    uint32_t inflight_batches, open_requests;
    uint64_t events_dropped;
} stats_v0;

/* The old layouts are prefixes of today's: same offsets for every field they have. */
_Static_assert(sizeof(config_v0) == offsetof(libra_cache_config, segments_per_group), "config v0");
_Static_assert(offsetof(config_v0, event_capacity) == offsetof(libra_cache_config, event_capacity), "config");
_Static_assert(offsetof(config_v0, policy) == offsetof(libra_cache_config, policy), "config policy");
_Static_assert(sizeof(stats_v0) == offsetof(libra_cache_stats, hinted_blocks), "stats v0");
_Static_assert(offsetof(stats_v0, events_dropped) == offsetof(libra_cache_stats, events_dropped), "stats");
/* Frozen for the 0.x ABI (64-bit targets): results written without struct_size. */
_Static_assert(sizeof(void *) != 8 || sizeof(libra_match) == 48, "libra_match is frozen");
_Static_assert(sizeof(void *) != 8 || sizeof(libra_step_report) == 20, "libra_step_report is frozen");
_Static_assert(sizeof(void *) != 8 || sizeof(libra_event) == 32, "libra_event is frozen");
_Static_assert(sizeof(void *) != 8 || sizeof(config_v0) == 184, "first config layout");
_Static_assert(sizeof(void *) != 8 || sizeof(stats_v0) == 160, "first stats layout");

#define BT 4

/* An old caller fills its struct by hand (its defaults come from its own header's docs), with
 * values that differ from today's defaults wherever a difference shows in behaviour. */
static config_v0 old_config(void) {
    config_v0 c;
    memset(&c, 0, sizeof c);
    c.struct_size = sizeof c;
    c.block_tokens = BT;
    c.gpu_blocks = 6;
    c.host_blocks = 5;
    c.policy = LIBRA_POLICY_LRU;
    c.backend = LIBRA_BACKEND_CPU;
    c.block_bytes = 32;
    c.swap_out_high = 0.8;
    c.swap_out_low = 0.7;
    c.swap_in_idle = 0.6;
    c.swap_in_target = 0.7;
    c.host_high = 0.8;
    c.host_low = 0.7;
    c.vllm_adapter_fraction = 0.2;
    c.hash_key[0] = 11;
    c.hash_key[1] = 12;
    c.link_bytes_per_us = 50000.0;
    c.prefill_tokens_per_us = 0.0;
    c.popularity_window_us = 30000000;
    c.swap_wait_us = 0;
    c.prefetch_interval_us = 0;
    c.events = true;
    c.event_capacity = 2;
    return c;
}

static libra_cache *create_old(config_v0 *c) {
    libra_cache *cache = NULL;
    CHECK_OK(libra_cache_create((const libra_cache_config *)c, &cache));
    CHECK(cache != NULL);
    CHECK(c->struct_size == sizeof *c); /* the caller's struct is only read */
    return cache;
}

static void get_old_stats(libra_cache *cache, stats_v0 *out) {
    /* The old struct sits in a larger buffer whose tail must stay untouched. */
    union {
        stats_v0 s;
        unsigned char bytes[sizeof(libra_cache_stats) + 64];
    } buf;
    memset(buf.bytes, 0xAB, sizeof buf.bytes);
    buf.s.struct_size = sizeof(stats_v0);
    CHECK_OK(libra_cache_get_stats(cache, (libra_cache_stats *)&buf.s));
    CHECK(buf.s.struct_size == sizeof(stats_v0));
    for (size_t i = sizeof(stats_v0); i < sizeof buf.bytes; i++) CHECK(buf.bytes[i] == 0xAB);
    *out = buf.s;
}

/* Compares every field of the old stats with today's full struct. */
static void check_same_stats(libra_cache *cache) {
    stats_v0 o;
    get_old_stats(cache, &o);
    libra_cache_stats n;
    n.struct_size = sizeof n;
    CHECK_OK(libra_cache_get_stats(cache, &n));
    CHECK(n.struct_size == sizeof n);
    CHECK(o.gpu_blocks_total == n.gpu_blocks_total && o.gpu_blocks_used == n.gpu_blocks_used);
    CHECK(o.host_blocks_total == n.host_blocks_total && o.host_blocks_used == n.host_blocks_used);
    CHECK(o.kv_blocks_gpu == n.kv_blocks_gpu && o.kv_blocks_host == n.kv_blocks_host);
    CHECK(o.adapters_registered == n.adapters_registered && o.adapters_resident == n.adapters_resident);
    CHECK(o.invalid_kv_blocks == n.invalid_kv_blocks && o.hit_tokens == n.hit_tokens);
    CHECK(o.miss_tokens == n.miss_tokens && o.matches == n.matches);
    CHECK(o.swap_out_blocks == n.swap_out_blocks && o.swap_in_blocks == n.swap_in_blocks);
    CHECK(o.dropped_blocks == n.dropped_blocks && o.pruned_host_blocks == n.pruned_host_blocks);
    CHECK(o.adapter_loads == n.adapter_loads && o.bytes_to_host == n.bytes_to_host);
    CHECK(o.bytes_to_gpu == n.bytes_to_gpu && o.failed_batches == n.failed_batches);
    CHECK(o.inflight_batches == n.inflight_batches && o.open_requests == n.open_requests);
    CHECK(o.events_dropped == n.events_dropped);
}

/* Runs one request of `blocks` blocks to completion and returns what a second match finds. */
static libra_match run_request(libra_cache *cache, uint32_t seed, size_t blocks, uint64_t now) {
    uint32_t tokens[64], ids[16];
    for (size_t i = 0; i < blocks * BT; i++) tokens[i] = seed * 100u + (uint32_t)i;
    libra_match m;
    CHECK_OK(libra_cache_match(cache, 1, 0, tokens, blocks * BT, now, ids, 16, &m));
    size_t n = 0;
    CHECK_OK(libra_cache_allocate(cache, m.request, blocks * BT, now, ids, 16, &n));
    CHECK(n == blocks);
    CHECK_OK(libra_cache_commit(cache, m.request, tokens, blocks * BT, now, NULL));
    CHECK_OK(libra_cache_release(cache, m.request, now));
    libra_match again;
    CHECK_OK(libra_cache_match(cache, 1, 0, tokens, blocks * BT, now + 1, ids, 16, &again));
    CHECK_OK(libra_cache_release(cache, again.request, now + 1));
    return again;
}

static void test_old_config_fields_are_read(void) {
    config_v0 c = old_config();
    libra_cache *cache = create_old(&c);
    CHECK(strcmp(libra_cache_backend_name(cache), "cpu") == 0);
    const unsigned char w[40] = {1};
    CHECK_OK(libra_cache_register_adapter(cache, 1, w, sizeof w, LIBRA_RANK_UNKNOWN, 0));

    libra_adapter_info info;
    info.struct_size = sizeof info;
    CHECK_OK(libra_cache_adapter_info(cache, 1, &info));
    CHECK(info.block_bytes == 32); /* block_bytes read */
    CHECK(info.blocks == 2);

    stats_v0 s;
    get_old_stats(cache, &s);
    CHECK(s.gpu_blocks_total == 6 && s.host_blocks_total == 5); /* gpu_blocks, host_blocks read */

    libra_match m = run_request(cache, 1, 2, 10);
    CHECK(m.cached_tokens == 2 * BT); /* block_tokens read */

    /* events + event_capacity read: a log of 2, the rest dropped and counted. */
    libra_event ev[8];
    size_t n = 0;
    CHECK_OK(libra_cache_drain_events(cache, ev, 8, &n));
    CHECK(n == 2);
    for (size_t i = 0; i < n; i++) CHECK(ev[i].kind >= LIBRA_EVENT_STORED && ev[i].kind <= LIBRA_EVENT_TO_GPU);
    get_old_stats(cache, &s);
    CHECK(s.events_dropped > 0);
    check_same_stats(cache);
    CHECK_OK(libra_cache_check(cache));
    libra_cache_free(cache);

    /* hash_key read: another key names the same prefix differently, so the KV hashes differ. */
    size_t kv = 0;
    while (kv < n && ev[kv].adapter) kv++;
    CHECK(kv < n);
    uint64_t first = ev[kv].block_hash_lo;
    c = old_config();
    c.hash_key[0] = 99;
    cache = create_old(&c);
    CHECK_OK(libra_cache_register_adapter(cache, 1, w, sizeof w, LIBRA_RANK_UNKNOWN, 0));
    run_request(cache, 1, 2, 10);
    CHECK_OK(libra_cache_drain_events(cache, ev, 8, &n));
    CHECK(n == 2 && !ev[kv].adapter && ev[kv].block_hash_lo != first);
    libra_cache_free(cache);
}

static void test_old_config_gets_defaults_for_new_fields(void) {
    /* The fields past the old struct are garbage in the caller's memory: never read. */
    union {
        config_v0 c;
        unsigned char bytes[sizeof(libra_cache_config) + 16];
    } buf;
    memset(buf.bytes, 0xFF, sizeof buf.bytes);
    buf.c = old_config();
    buf.c.policy = LIBRA_POLICY_LIBRA;
    libra_cache *cache = create_old(&buf.c);
    const unsigned char w[40] = {1};
    CHECK_OK(libra_cache_register_adapter(cache, 1, w, sizeof w, LIBRA_RANK_UNKNOWN, 0));
    libra_match m = run_request(cache, 2, 1, 5);
    CHECK(m.request != 0);
    /* segments_per_group defaulted: one layer group. */
    uint32_t tokens[BT] = {7, 8, 9, 10}, ids[4];
    CHECK_OK(libra_cache_match(cache, 1, 0, tokens, BT, 6, ids, 4, &m));
    libra_readiness r;
    uint32_t ready = 0, groups = 0;
    CHECK_OK(libra_cache_poll_groups(cache, m.request, &r, &ready, &groups));
    CHECK(groups == 1);
    CHECK_OK(libra_cache_abort(cache, m.request, 6));
    check_same_stats(cache);
    libra_cache_free(cache);
}

static void test_old_sizes_are_checked(void) {
    libra_cache *cache = (libra_cache *)0x1;
    config_v0 c = old_config();
    c.struct_size = sizeof c - 1;
    CHECK_STATUS(libra_cache_create((const libra_cache_config *)&c, &cache), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "config.struct_size") != NULL);
    CHECK(cache == (libra_cache *)0x1);
    c = old_config();
    c.policy = 42;
    CHECK_STATUS(libra_cache_create((const libra_cache_config *)&c, &cache), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "`config.policy` is 42") != NULL);
    c = old_config();
    c.backend = -1;
    CHECK_STATUS(libra_cache_create((const libra_cache_config *)&c, &cache), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "`config.backend` is -1") != NULL);

    c = old_config();
    cache = create_old(&c);
    union {
        stats_v0 s;
        unsigned char bytes[sizeof(libra_cache_stats)];
    } buf;
    memset(buf.bytes, 0xAB, sizeof buf.bytes);
    buf.s.struct_size = sizeof(stats_v0) - 8;
    CHECK_STATUS(libra_cache_get_stats(cache, (libra_cache_stats *)&buf.s), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "out.struct_size") != NULL);
    for (size_t i = sizeof(size_t); i < sizeof buf.bytes; i++) CHECK(buf.bytes[i] == 0xAB); /* nothing written */
    /* Misaligned: refused before anything is read or written. */
    uint64_t raw[sizeof(libra_cache_stats) / 8 + 2];
    memset(raw, 0, sizeof raw);
    CHECK_STATUS(libra_cache_get_stats(cache, (libra_cache_stats *)((char *)raw + 4)), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "aligned") != NULL);
    CHECK_STATUS(libra_cache_get_stats(cache, NULL), LIBRA_ERR_NULL_ARGUMENT);

    /* A larger struct from a newer header: accepted, struct_size kept, only known bytes written. */
    union {
        libra_cache_stats s;
        unsigned char bytes[sizeof(libra_cache_stats) + 32];
    } big;
    memset(big.bytes, 0xCD, sizeof big.bytes);
    big.s.struct_size = sizeof big.bytes;
    CHECK_OK(libra_cache_get_stats(cache, &big.s));
    CHECK(big.s.struct_size == sizeof big.bytes);
    CHECK(big.s.gpu_blocks_total == 6);
    for (size_t i = sizeof(libra_cache_stats); i < sizeof big.bytes; i++) CHECK(big.bytes[i] == 0xCD);
    libra_cache_free(cache);
}

int main(void) {
    test_old_config_fields_are_read();
    test_old_config_gets_defaults_for_new_fields();
    test_old_sizes_are_checked();
    PASS();
}
