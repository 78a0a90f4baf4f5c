// llama.cpp's per-sequence state blob (llama_state_seq_get_data / set_data) for the one release
// this example is pinned to, read and written by hand so that the KV of a prefix can be cut
// into libra blocks and put back together.
//
// The format is internal to llama.cpp and changes between releases: this file accepts exactly
// LLAMA_STATE_SEQ_VERSION 3 (llama-cpp-python 0.3.36), and the parser checks every field it
// relies on at run time too. Layout (all little-endian, no padding):
//   u32 magic 0xaf143cd8, i32 seq_id, u32 n_stream (1 here),
//   u32 cell_count, cell_count x {i32 pos, u32 n_seq_id (1), i32 seq_id},
//   u32 v_trans (0: flash attention on), u32 n_layer,
//   n_layer x {i32 k_type, u64 k_row_bytes, cell_count rows},
//   n_layer x {i32 v_type, u64 v_row_bytes, cell_count rows}.
#pragma once

#include <llama.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#if !defined(LLAMA_STATE_SEQ_VERSION) || LLAMA_STATE_SEQ_VERSION != 3
#error "this example reads llama.cpp's sequence state format version 3 (llama-cpp-python==0.3.36); other releases lay it out differently"
#endif

namespace kvstate {

// Per-layer K and V row sizes and types, the same for every layer (checked).
struct Geometry {
    uint32_t n_layer = 0;
    int32_t k_type = -1, v_type = -1;
    uint64_t k_row = 0, v_row = 0;
    // Bytes of one libra block: block_tokens tokens of every layer's K, then of every layer's V.
    uint64_t block_bytes(uint32_t block_tokens) const { return uint64_t(block_tokens) * n_layer * (k_row + v_row); }
};

// A parsed blob: where each layer's K and V rows start inside `data`.
struct View {
    const uint8_t *data = nullptr;
    size_t size = 0;
    uint32_t cells = 0;
    Geometry geo;
    std::vector<size_t> k_off, v_off;
};

// Parses a blob of sequence `seq`; its cells must hold positions 0..cells-1 in order. Returns
// an empty string on success, else what is wrong.
std::string parse(const uint8_t *data, size_t size, int32_t seq, View &out);

// Copies tokens [block * bt, (block + 1) * bt) of every layer's K and V into `dst` (block_bytes).
void cut_block(const View &v, uint32_t block, uint32_t bt, uint8_t *dst);

// Builds a blob for sequence `seq` holding `blocks.size()` whole blocks (positions 0..n-1),
// each given by the address of its block_bytes in libra's pool.
std::vector<uint8_t> build(const Geometry &g, int32_t seq, uint32_t bt, const std::vector<const uint8_t *> &blocks);

}  // namespace kvstate
