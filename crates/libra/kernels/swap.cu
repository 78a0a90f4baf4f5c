// libra's swap kernels: move whole batches of blocks between the GPU tier (a block is one piece
// in each of several segments) and a flat buffer (host slots in pinned, mapped memory, or a
// device staging buffer), or between GPU blocks.
//
// Work is split host-side into units (src/backend/cuda/tables.rs): one unit is a range of at
// most a chunk of one segment's piece, the same list for every block. A batch is (pairs x units); each CTA takes units in a
// grid-stride loop, so a batch of many small pieces needs one launch and a huge piece still
// spreads over many SMs. src/backend/reference.rs mirrors this index math on the CPU and is
// tested against plain copies.
//
// Compiled by NVRTC at run time: no headers, only builtin vector types and intrinsics.

typedef unsigned long long u64;
typedef unsigned int u32;

// One segment of the GPU tier; `offset` is its piece's place in a block's logical bytes.
struct LibraSegment {
    u64 base;
    u64 bytes;
    u64 stride;
    u64 offset;
};

// A range of one segment's piece: [start, start + len).
struct LibraUnit {
    u32 segment;
    u32 pad;
    u64 start;
    u64 len;
};

// Loads per thread before the stores: keeps several 16-byte reads in flight, which is what
// hides PCIe latency when the source is host memory.
#define LIBRA_UNROLL 4

template <typename V>
__device__ __forceinline__ void libra_copy_vectors(const V* __restrict__ src, V* __restrict__ dst,
                                                   u64 n) {
    const u64 step = (u64)blockDim.x * LIBRA_UNROLL;
    for (u64 base = threadIdx.x; base < n; base += step) {
        V r[LIBRA_UNROLL];
#pragma unroll
        for (int j = 0; j < LIBRA_UNROLL; ++j) {
            const u64 i = base + (u64)j * blockDim.x;
            // Streaming hints: swapped bytes are touched once, so keep them out of the caches,
            // and the intrinsics give global (not generic) accesses.
            if (i < n) r[j] = __ldcs(src + i);
        }
#pragma unroll
        for (int j = 0; j < LIBRA_UNROLL; ++j) {
            const u64 i = base + (u64)j * blockDim.x;
            if (i < n) __stcs(dst + i, r[j]);
        }
    }
}

// Copies len bytes with the widest access both sides allow: a byte-wise head up to the
// alignment of that width, vectors, then a byte-wise tail. The whole CTA cooperates.
__device__ __forceinline__ void libra_copy_range(u64 src, u64 dst, u64 len) {
    const u64 rel = (src ^ dst) & 15;
    const u64 width = rel == 0 ? 16 : (rel & 7) == 0 ? 8 : (rel & 3) == 0 ? 4 : (rel & 1) == 0 ? 2 : 1;
    u64 head = (width - (src & (width - 1))) & (width - 1);
    if (head > len) head = len;
    const u64 nvec = (len - head) / width;
    const u64 body = nvec * width;
    const u64 tail = len - head - body;

    const unsigned char* s = (const unsigned char*)src;
    unsigned char* d = (unsigned char*)dst;
    for (u64 i = threadIdx.x; i < head; i += blockDim.x) d[i] = s[i];
    const u64 vs = src + head;
    const u64 vd = dst + head;
    switch (width) {
        case 16: libra_copy_vectors<uint4>((const uint4*)vs, (uint4*)vd, nvec); break;
        case 8: libra_copy_vectors<uint2>((const uint2*)vs, (uint2*)vd, nvec); break;
        case 4: libra_copy_vectors<u32>((const u32*)vs, (u32*)vd, nvec); break;
        case 2: libra_copy_vectors<unsigned short>((const unsigned short*)vs, (unsigned short*)vd, nvec); break;
        default: libra_copy_vectors<unsigned char>((const unsigned char*)vs, (unsigned char*)vd, nvec); break;
    }
    const u64 t0 = head + body;
    for (u64 i = threadIdx.x; i < tail; i += blockDim.x) d[t0 + i] = s[t0 + i];
}

// Where unit k of GPU block `block` lives.
__device__ __forceinline__ u64 libra_gpu_addr(const LibraSegment& seg, u32 block, const LibraUnit& u) {
    return seg.base + (u64)block * seg.stride + u.start;
}

// Where unit k of flat slot `slot` lives.
__device__ __forceinline__ u64 libra_flat_addr(u64 flat_base, u64 block_bytes, const LibraSegment& seg,
                                               u32 slot, const LibraUnit& u) {
    return flat_base + (u64)slot * block_bytes + seg.offset + u.start;
}

// GPU blocks -> flat slots. pairs[i] = (gpu block, slot).
extern "C" __global__ void libra_gather(const LibraSegment* __restrict__ segs,
                                        const LibraUnit* __restrict__ units, u32 units_per_block,
                                        const uint2* __restrict__ pairs, u32 npairs, u64 flat_base,
                                        u64 block_bytes) {
    const u64 total = (u64)npairs * units_per_block;
    for (u64 w = blockIdx.x; w < total; w += gridDim.x) {
        const uint2 p = pairs[w / units_per_block];
        const LibraUnit u = units[w % units_per_block];
        const LibraSegment seg = segs[u.segment];
        libra_copy_range(libra_gpu_addr(seg, p.x, u), libra_flat_addr(flat_base, block_bytes, seg, p.y, u),
                         u.len);
    }
}

// Flat slots -> GPU blocks. pairs[i] = (gpu block, slot).
extern "C" __global__ void libra_scatter(const LibraSegment* __restrict__ segs,
                                         const LibraUnit* __restrict__ units, u32 units_per_block,
                                         const uint2* __restrict__ pairs, u32 npairs, u64 flat_base,
                                         u64 block_bytes) {
    const u64 total = (u64)npairs * units_per_block;
    for (u64 w = blockIdx.x; w < total; w += gridDim.x) {
        const uint2 p = pairs[w / units_per_block];
        const LibraUnit u = units[w % units_per_block];
        const LibraSegment seg = segs[u.segment];
        libra_copy_range(libra_flat_addr(flat_base, block_bytes, seg, p.y, u), libra_gpu_addr(seg, p.x, u),
                         u.len);
    }
}

// A contiguous buffer of flat_len bytes -> blocks[0], blocks[1], ... in logical order; the last
// block may be partly filled, so every unit is clipped to the bytes that exist.
extern "C" __global__ void libra_upload(const LibraSegment* __restrict__ segs,
                                        const LibraUnit* __restrict__ units, u32 units_per_block,
                                        const u32* __restrict__ blocks, u32 nblocks, u64 flat_base,
                                        u64 block_bytes, u64 flat_len) {
    const u64 total = (u64)nblocks * units_per_block;
    for (u64 w = blockIdx.x; w < total; w += gridDim.x) {
        const u32 slot = (u32)(w / units_per_block);
        const LibraUnit u = units[w % units_per_block];
        const LibraSegment seg = segs[u.segment];
        const u64 logical = (u64)slot * block_bytes + seg.offset + u.start;
        if (logical >= flat_len) continue;
        const u64 avail = flat_len - logical;
        const u64 len = u.len < avail ? u.len : avail;
        libra_copy_range(flat_base + logical, libra_gpu_addr(seg, blocks[slot], u), len);
    }
}
