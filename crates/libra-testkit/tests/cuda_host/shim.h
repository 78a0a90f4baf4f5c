// CUDA built-ins on the host, for compiling libra's kernels (kernels/*.cu) with g++ -x c++ in
// tests. Test code only: never installed, never shipped.
//
// The launcher (host_kernels.cpp) runs a grid one thread after another. That is equivalent to
// the device only because the kernels share nothing between threads: no shared memory, no
// barriers, no warp intrinsics, no atomics, no inline PTX. Those names are poisoned below, so a
// kernel that starts using one fails to compile here instead of running wrongly.
#pragma once
#include <cstddef>
#include <cstdint>

// Per-thread built-in indices, set by the launcher before each simulated thread runs
// (CUDA C++ Programming Guide, "Built-in Variables").
struct libra_dim3 {
    unsigned int x, y, z;
};
extern thread_local libra_dim3 threadIdx;
extern thread_local libra_dim3 blockIdx;
extern thread_local libra_dim3 blockDim;
extern thread_local libra_dim3 gridDim;

// Execution space specifiers mean nothing on the host.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
// __restrict__ is understood by g++ as it is.

// Built-in vector types with the device's alignment (Programming Guide, "Vector Types": uint2
// is 8-byte, uint4 16-byte aligned), so a misaligned vector access is detectable.
struct alignas(8) uint2 {
    unsigned int x, y;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
static_assert(sizeof(uint2) == 8 && alignof(uint2) == 8, "uint2 layout");
static_assert(sizeof(uint4) == 16 && alignof(uint4) == 16, "uint4 layout");

// Reports a fault of the current simulated thread (the device would raise a misaligned or
// illegal address error) and abandons the launch; defined by the launcher.
extern "C" [[noreturn]] void libra_shim_fault(const char* what, const void* addr);

template <typename T>
inline void libra_shim_check_aligned(const T* p, const char* what) {
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0) libra_shim_fault(what, p);
}

// Streaming load / store (Programming Guide, "Load Functions Using Cache Hints"): the device
// requires natural alignment of T; so does this, and it traps otherwise.
template <typename T>
inline T __ldcs(const T* p) {
    libra_shim_check_aligned(p, "misaligned __ldcs");
    return *p;
}
template <typename T>
inline void __stcs(T* p, T v) {
    libra_shim_check_aligned(p, "misaligned __stcs");
    *p = v;
}

// What sequential execution cannot model. Any use is a compile error ("attempt to use poisoned").
#pragma GCC poison __shared__ __syncthreads __syncthreads_count __syncthreads_and __syncthreads_or
#pragma GCC poison __syncwarp __activemask __shfl_sync __shfl_up_sync __shfl_down_sync __shfl_xor_sync
#pragma GCC poison __ballot_sync __any_sync __all_sync __match_any_sync __match_all_sync warpSize
#pragma GCC poison __reduce_add_sync __reduce_min_sync __reduce_max_sync __threadfence __threadfence_block
#pragma GCC poison atomicAdd atomicSub atomicExch atomicMin atomicMax atomicInc atomicDec atomicCAS
#pragma GCC poison atomicAnd atomicOr atomicXor atomicAdd_system atomicCAS_system
#pragma GCC poison asm __asm__ __asm
