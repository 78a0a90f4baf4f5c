// libcuda.so.1 STAND-IN: a CPU imitation of the CUDA driver API, for libra's tests only. It is
// not a GPU and not NVIDIA's driver; it is never installed or shipped. Built by
// tests/cuda_standin.rs into target/, and selected for a child test process by LD_LIBRARY_PATH.
//
// Unmistakable: the device is named "libra CPU stand-in for libcuda (not a GPU)", the library
// exports the marker symbol `libra_cuda_standin`, and scripts/gpu_check.sh refuses to report it.
//
// Exported driver entry points (what libra calls through cudarc 0.19.10, plus what its tests and
// the copy benchmark call). cudarc resolves each on first use and panics when one is missing:
//   cuInit cuDriverGetVersion cuDeviceGetCount cuDeviceGet cuDeviceGetAttribute cuDeviceGetName
//   cuDeviceTotalMem_v2 cuDevicePrimaryCtxRetain cuDevicePrimaryCtxRelease_v2 cuCtxGetCurrent
//   cuCtxSetCurrent cuCtxSynchronize cuMemAlloc_v2 cuMemFree_v2 cuMemGetInfo_v2 cuMemHostAlloc
//   cuMemFreeHost cuMemHostGetDevicePointer_v2 cuPointerGetAttribute cuMemcpyAsync
//   cuMemcpyHtoDAsync_v2 cuMemcpyDtoHAsync_v2 cuStreamCreate cuStreamDestroy_v2
//   cuStreamSynchronize cuStreamWaitEvent cuEventCreate cuEventRecord cuEventQuery
//   cuEventSynchronize cuEventDestroy_v2 cuModuleLoadData cuModuleGetFunction cuModuleUnload
//   cuLaunchKernel cuLaunchHostFunc cuGetErrorString cuGetErrorName
//
// Behaviour, each point following the CUDA Driver API reference (docs.nvidia.com/cuda/
// cuda-driver-api, sections named below) and its "API synchronization behavior" page:
// - Streams run on worker threads with a delay per operation (LIBRA_STANDIN_OP_DELAY_US,
//   default 200), so a read before waiting on an event or stream sees stale bytes ("Stream
//   Management": work in a stream is asynchronous to the host).
// - Device and pinned allocations are poisoned (0xA5 / 0x5A), end at a guard page and are never
//   reused after free ("Memory Management": cuMemAlloc "The memory is not cleared").
// - Frees while queued work uses the allocation, and allocations, streams, events and modules
//   still alive when a primary context is released, are reported.
// - Every call checks cuInit ("Initialization": otherwise CUDA_ERROR_NOT_INITIALIZED), the
//   current context (CUDA_ERROR_INVALID_CONTEXT) and its handles (CUDA_ERROR_INVALID_HANDLE).
// - Modules load only NVRTC cubins (ELF, EM_CUDA) and PTX: the architecture is checked against
//   the device ("Module Management": CUDA_ERROR_NO_BINARY_FOR_GPU), each kernel's parameter
//   sizes (EIATTR_KPARAM_INFO) against its C++ signature, registers x block size against the
//   register file at launch ("Execution Control": CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES).
// - Launches run the host-compiled kernels (tests/cuda_host). A faulting access makes the
//   context's error sticky ("Error Handling": CUDA_ERROR_ILLEGAL_ADDRESS "the process must be
//   terminated and relaunched" for the context). LIBRA_STANDIN_FAULT_LAUNCH=N makes the N-th
//   launch of the process fault.
// - Transfers from pageable host memory read the source when the stream runs them, not at the
//   call: "for transfers between device memory and pageable host memory, the function might be
//   synchronous", so a caller may not rely on either.
// - LIBRA_STANDIN_STRICT=1: any report makes the process exit with status 97 at exit.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum : int {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209,
    CUDA_ERROR_INVALID_PTX = 218,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_READY = 600,
    CUDA_ERROR_ILLEGAL_ADDRESS = 700,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_MISALIGNED_ADDRESS = 716,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

namespace standin {

struct Ctx;
struct Stream;

// One allocation: [base, base + size) inside a mapping that ends at a guard page.
struct Alloc {
    uintptr_t base;
    size_t size;
    void* map;
    size_t map_len;
    bool pinned;
    bool live;
    Ctx* ctx;
};

struct Ctx {
    bool alive = true;
    int sticky = CUDA_SUCCESS;  // first asynchronous error; every later call returns it
    std::string sticky_what;
    Stream* null_stream = nullptr;
};

struct Op {
    uint64_t seq;
    std::string what;
    std::vector<std::pair<uintptr_t, size_t>> uses;  // ranges the op reads or writes
    std::function<int(std::string*)> run;
};

struct Stream {
    Ctx* ctx;
    std::deque<Op> queue;
    uint64_t next_seq = 1;
    uint64_t done_seq = 0;
    bool running = false;
    bool destroyed = false;
    std::thread worker;
};

struct Event {
    Ctx* ctx;
    Stream* stream = nullptr;  // where the last record was made
    uint64_t seq = 0;          // the stream's work captured by that record
    bool live = true;
};

struct Kernel {
    std::string name;
    std::vector<size_t> param_sizes;
    int registers = 0;  // 0: unknown (PTX, chosen by the JIT)
    int max_threads = 0;  // from __launch_bounds__, 0 when absent
};

struct Module {
    Ctx* ctx;
    bool live = true;
    std::vector<Kernel*> kernels;
};

struct Function {
    Module* module;
    Kernel* kernel;
};

// Everything, under one lock. Handles are never freed (a stale handle is detected, not reused).
struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool initialized = false;
    int primary_refs = 0;
    Ctx* primary = nullptr;  // the active primary context, or null
    std::vector<Ctx*> contexts;
    std::vector<Alloc*> allocs;
    std::vector<Stream*> streams;
    std::vector<Event*> events;
    std::vector<Module*> modules;
    std::vector<Function*> functions;
    std::vector<std::string> reports;
    uint64_t launches = 0;
    uint64_t ctx_synchronize_calls = 0;
};

State& state();
extern thread_local Ctx* current;

// Device properties (LIBRA_STANDIN_ARCH, default 90; LIBRA_STANDIN_SMS, default 4).
int arch();
int sm_count();
unsigned op_delay_us();

void report(const std::string& what);  // caller holds the lock
int check_ctx();                       // caller holds the lock: init, current context, sticky error
bool live_ctx(Ctx* c);
Alloc* find_alloc(uintptr_t p, bool include_freed);  // caller holds the lock
Stream* stream_of(void* h, int* err);                // caller holds the lock; null handle: default
void drain(Stream* s, std::unique_lock<std::mutex>& lock);
void drain_ctx(Ctx* c, std::unique_lock<std::mutex>& lock);
uint64_t enqueue(Stream* s, Op op);  // caller holds the lock; returns the op's sequence number
void release_ctx(Ctx* c, std::unique_lock<std::mutex>& lock);

// Images (standin_image.cpp): parses an NVRTC cubin or PTX into kernels, or says why not.
int load_image(const void* image, std::vector<Kernel*>* out, std::string* why);

}  // namespace standin
