/* A caller built against the first published cache header: its own copies of the
 * libra_cache_config and libra_cache_stats layouts of that header, passed with their smaller
 * struct_size. Every field it sets must be read, the fields it lacks must take their defaults,
 * and no byte past its config (filled by libra_cache_config_default) or stats struct may be
 * written. libra_adapter_info and libra_retention, published once, take a newer caller's larger
 * struct and refuse a truncated one. Also pins the sizes of the frozen results. */
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
/* Published once: these layouts are the first ones (64-bit targets). */
_Static_assert(sizeof(void *) != 8 || sizeof(libra_adapter_info) == 40, "first adapter info layout");
_Static_assert(sizeof(void *) != 8 || offsetof(libra_adapter_info, resident) == 32, "adapter info");
_Static_assert(sizeof(libra_adapter_info) % 8 == 0 && sizeof(libra_retention) == 32, "first layouts");

#define BT 4

/* Every byte of `bytes[from..to)` still holds the 0xEE a test filled it with. */
static void check_untouched(const unsigned char *bytes, size_t from, size_t to) {
    for (size_t i = from; i < to; i++) CHECK(bytes[i] == 0xEE);
}

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

/* libra_cache_config_default on the old struct: the defaults of the fields it has, nothing
 * written past it, and the result creates a cache. */
static void test_old_config_filled_by_default(void) {
    union {
        config_v0 c;
        unsigned char bytes[sizeof(libra_cache_config) + 32];
    } buf;
    memset(buf.bytes, 0xEE, sizeof buf.bytes);
    buf.c.struct_size = sizeof(config_v0);
    CHECK_OK(libra_cache_config_default((libra_cache_config *)&buf.c));
    CHECK(buf.c.struct_size == sizeof(config_v0));
    check_untouched(buf.bytes, sizeof(config_v0), sizeof buf.bytes);
    libra_cache_config now;
    now.struct_size = sizeof now;
    CHECK_OK(libra_cache_config_default(&now));
    CHECK(now.struct_size == sizeof now);
    /* Every field of the old layout holds today's default (padding bytes are unspecified). */
    CHECK(buf.c.block_bytes == now.block_bytes && buf.c.segments == NULL && buf.c.segment_count == 0);
    CHECK(buf.c.swap_out_high == now.swap_out_high && buf.c.swap_out_low == now.swap_out_low);
    CHECK(buf.c.swap_in_idle == now.swap_in_idle && buf.c.swap_in_target == now.swap_in_target);
    CHECK(buf.c.host_high == now.host_high && buf.c.host_low == now.host_low);
    CHECK(buf.c.vllm_adapter_fraction == now.vllm_adapter_fraction);
    CHECK(buf.c.hash_key[0] == now.hash_key[0] && buf.c.hash_key[1] == now.hash_key[1]);
    CHECK(buf.c.link_bytes_per_us == now.link_bytes_per_us);
    CHECK(buf.c.prefill_tokens_per_us == now.prefill_tokens_per_us);
    CHECK(buf.c.popularity_window_us == now.popularity_window_us);
    CHECK(buf.c.value_time_unit_us == now.value_time_unit_us && buf.c.swap_wait_us == now.swap_wait_us);
    CHECK(buf.c.prefetch_interval_us == now.prefetch_interval_us);
    CHECK(buf.c.event_capacity == now.event_capacity);
    CHECK(buf.c.block_tokens == 16 && buf.c.gpu_blocks == 1024 && buf.c.host_blocks == 4096);
    CHECK(buf.c.policy == LIBRA_POLICY_ELORA && buf.c.backend == LIBRA_BACKEND_CPU && !buf.c.events);
    buf.c.gpu_blocks = 8;
    buf.c.host_blocks = 4;
    buf.c.block_bytes = 64;
    libra_cache *cache = create_old(&buf.c);
    stats_v0 s;
    get_old_stats(cache, &s);
    CHECK(s.gpu_blocks_total == 8 && s.host_blocks_total == 4);
    libra_cache_free(cache);

    /* A newer header's larger struct: the known bytes written, its size kept, its tail not. */
    union {
        libra_cache_config c;
        unsigned char bytes[sizeof(libra_cache_config) + 32];
    } big;
    memset(big.bytes, 0xEE, sizeof big.bytes);
    big.c.struct_size = sizeof big.bytes;
    CHECK_OK(libra_cache_config_default(&big.c));
    CHECK(big.c.struct_size == sizeof big.bytes && big.c.write_through_blocks == now.write_through_blocks);
    CHECK(big.c.layered_adapters == now.layered_adapters && now.layered_adapters == 0);
    check_untouched(big.bytes, sizeof(libra_cache_config), sizeof big.bytes);

    /* Below the first layout (e.g. never set): refused, nothing written. */
    size_t bad[] = {0, sizeof(config_v0) - 1, sizeof(size_t)};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        memset(buf.bytes, 0xEE, sizeof buf.bytes);
        buf.c.struct_size = bad[k];
        CHECK_STATUS(libra_cache_config_default((libra_cache_config *)&buf.c), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK(strstr(libra_last_error_message(), "libra_cache_config_default:") != NULL);
        CHECK(strstr(libra_last_error_message(), "config.struct_size") != NULL);
        CHECK(buf.c.struct_size == bad[k]);
        check_untouched(buf.bytes, sizeof(size_t), sizeof buf.bytes);
    }
    CHECK_STATUS(libra_cache_config_default(NULL), LIBRA_ERR_NULL_ARGUMENT);
    uint64_t raw[sizeof(libra_cache_config) / 8 + 2];
    memset(raw, 0, sizeof raw);
    raw[1] = sizeof(libra_cache_config);
    CHECK_STATUS(libra_cache_config_default((libra_cache_config *)((char *)raw + 4)), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "aligned") != NULL);
}

/* libra_adapter_info: a newer caller's larger struct gets today's fields and keeps its tail; a
 * truncated struct (smaller than the first published layout) is refused, nothing written. */
static void test_adapter_info_sizes(void) {
    config_v0 c = old_config();
    libra_cache *cache = create_old(&c);
    const unsigned char w[40] = {1};
    CHECK_OK(libra_cache_register_adapter(cache, 1, w, sizeof w, 8, 0));
    union {
        libra_adapter_info i;
        unsigned char bytes[sizeof(libra_adapter_info) + 24];
    } big;
    memset(big.bytes, 0xEE, sizeof big.bytes);
    big.i.struct_size = sizeof big.bytes;
    CHECK_OK(libra_cache_adapter_info(cache, 1, &big.i));
    CHECK(big.i.struct_size == sizeof big.bytes);
    CHECK(big.i.weights_len == 40 && big.i.rank == 8 && big.i.blocks == 2 && big.i.block_bytes == 32);
    CHECK(big.i.resident == 0);
    check_untouched(big.bytes, sizeof(libra_adapter_info), sizeof big.bytes);

    /* Truncated before `resident` and before `block_bytes`. */
    size_t truncated[] = {offsetof(libra_adapter_info, resident), offsetof(libra_adapter_info, block_bytes), 0};
    for (size_t k = 0; k < sizeof truncated / sizeof truncated[0]; k++) {
        memset(big.bytes, 0xEE, sizeof big.bytes);
        big.i.struct_size = truncated[k];
        CHECK_STATUS(libra_cache_adapter_info(cache, 1, &big.i), LIBRA_ERR_INVALID_ARGUMENT);
        CHECK(strstr(libra_last_error_message(), "libra_cache_adapter_info:") != NULL);
        CHECK(strstr(libra_last_error_message(), "out.struct_size") != NULL);
        CHECK(big.i.struct_size == truncated[k]);
        check_untouched(big.bytes, sizeof(size_t), sizeof big.bytes);
    }
    /* Refused before the lookup: a bad size wins over an unknown adapter. */
    big.i.struct_size = 0;
    CHECK_STATUS(libra_cache_adapter_info(cache, 99, &big.i), LIBRA_ERR_INVALID_ARGUMENT);
    libra_cache_free(cache);

    /* libra_retention_default the same way. */
    union {
        libra_retention h;
        unsigned char bytes[sizeof(libra_retention) + 16];
    } hint;
    memset(hint.bytes, 0xEE, sizeof hint.bytes);
    hint.h.struct_size = sizeof hint.bytes;
    CHECK_OK(libra_retention_default(&hint.h));
    CHECK(hint.h.struct_size == sizeof hint.bytes && hint.h.priority == 1.0 && hint.h.duration_us == 0);
    check_untouched(hint.bytes, sizeof(libra_retention), sizeof hint.bytes);
    memset(hint.bytes, 0xEE, sizeof hint.bytes);
    hint.h.struct_size = offsetof(libra_retention, expect_back_us);
    CHECK_STATUS(libra_retention_default(&hint.h), LIBRA_ERR_INVALID_ARGUMENT);
    CHECK(strstr(libra_last_error_message(), "hint.struct_size") != NULL);
    check_untouched(hint.bytes, sizeof(size_t), sizeof hint.bytes);
}

int main(void) {
    test_old_config_filled_by_default();
    test_adapter_info_sizes();
    test_old_config_fields_are_read();
    test_old_config_gets_defaults_for_new_fields();
    test_old_sizes_are_checked();
    PASS();
}
