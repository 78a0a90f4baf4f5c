#include "kvstate.h"

#include <cstring>

namespace kvstate {

namespace {

constexpr uint32_t kMagic = 0xaf143cd8u;  // llama_context's io_magic for sequence state

struct Reader {
    const uint8_t *p;
    size_t n, at = 0;
    bool ok = true;
    template <class T> T get() {
        T v{};
        if (at + sizeof(T) > n) {
            ok = false;
            return v;
        }
        std::memcpy(&v, p + at, sizeof(T));
        at += sizeof(T);
        return v;
    }
    bool skip(uint64_t bytes) {
        if (bytes > n - at) return ok = false;
        at += bytes;
        return true;
    }
};

template <class T> void put(std::vector<uint8_t> &out, T v) {
    const auto *b = reinterpret_cast<const uint8_t *>(&v);
    out.insert(out.end(), b, b + sizeof(T));
}

}  // namespace

std::string parse(const uint8_t *data, size_t size, int32_t seq, View &out) {
    Reader r{data, size};
    if (r.get<uint32_t>() != kMagic) return "bad magic";
    if (r.get<int32_t>() != seq) return "wrong sequence id";
    if (r.get<uint32_t>() != 1) return "expected one KV stream";
    out = View{};
    out.data = data;
    out.size = size;
    out.cells = r.get<uint32_t>();
    for (uint32_t i = 0; i < out.cells; i++) {
        const int32_t pos = r.get<int32_t>();
        const uint32_t n_seq = r.get<uint32_t>();
        const int32_t s = r.get<int32_t>();
        if (!r.ok) return "truncated cell list";
        if (pos != int32_t(i) || n_seq != 1 || s != seq) return "cells are not positions 0..n-1 of one sequence";
    }
    if (r.get<uint32_t>() != 0) return "V is transposed (flash attention off): not supported";
    Geometry &g = out.geo;
    g.n_layer = r.get<uint32_t>();
    if (!r.ok || g.n_layer == 0) return "no layers";
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t l = 0; l < g.n_layer; l++) {
            const int32_t type = r.get<int32_t>();
            const uint64_t row = r.get<uint64_t>();
            if (!r.ok) return "truncated layer header";
            int32_t &want_type = pass == 0 ? g.k_type : g.v_type;
            uint64_t &want_row = pass == 0 ? g.k_row : g.v_row;
            if (l == 0) {
                want_type = type;
                want_row = row;
            } else if (type != want_type || row != want_row) {
                return "layers differ in K/V type or row size";
            }
            (pass == 0 ? out.k_off : out.v_off).push_back(r.at);
            if (row == 0 || uint64_t(out.cells) > (size - r.at) / row || !r.skip(row * out.cells)) return "truncated rows";
        }
    }
    if (r.at != size) return "trailing bytes";
    return "";
}

void cut_block(const View &v, uint32_t block, uint32_t bt, uint8_t *dst) {
    const Geometry &g = v.geo;
    for (uint32_t l = 0; l < g.n_layer; l++) {
        std::memcpy(dst, v.data + v.k_off[l] + size_t(block) * bt * g.k_row, bt * g.k_row);
        dst += bt * g.k_row;
    }
    for (uint32_t l = 0; l < g.n_layer; l++) {
        std::memcpy(dst, v.data + v.v_off[l] + size_t(block) * bt * g.v_row, bt * g.v_row);
        dst += bt * g.v_row;
    }
}

std::vector<uint8_t> build(const Geometry &g, int32_t seq, uint32_t bt, const std::vector<const uint8_t *> &blocks) {
    const uint32_t cells = uint32_t(blocks.size()) * bt;
    std::vector<uint8_t> out;
    out.reserve(64 + size_t(cells) * 12 + blocks.size() * g.block_bytes(bt) + g.n_layer * 24);
    put(out, kMagic);
    put(out, seq);
    put(out, uint32_t(1));
    put(out, cells);
    for (uint32_t i = 0; i < cells; i++) {
        put(out, int32_t(i));
        put(out, uint32_t(1));
        put(out, seq);
    }
    put(out, uint32_t(0));
    put(out, g.n_layer);
    for (int pass = 0; pass < 2; pass++) {
        const uint64_t row = pass == 0 ? g.k_row : g.v_row;
        const uint64_t base = pass == 0 ? 0 : uint64_t(g.n_layer) * bt * g.k_row;
        for (uint32_t l = 0; l < g.n_layer; l++) {
            put(out, pass == 0 ? g.k_type : g.v_type);
            put(out, row);
            for (const uint8_t *b : blocks) {
                const uint8_t *src = b + base + uint64_t(l) * bt * row;
                out.insert(out.end(), src, src + bt * row);
            }
        }
    }
    return out;
}

}  // namespace kvstate
