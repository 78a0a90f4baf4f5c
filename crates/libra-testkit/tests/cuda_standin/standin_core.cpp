// libcuda STAND-IN (tests only, not a GPU): initialisation, device, contexts, memory, errors.
// See standin.h for what it models and which documentation each behaviour follows.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "standin.h"

using namespace standin;

// The marker: a program can tell it runs on the stand-in (scripts/gpu_check.sh looks for it).
extern "C" __attribute__((visibility("default"))) const char libra_cuda_standin[];
extern "C" const char libra_cuda_standin[] = "libra CPU stand-in for libcuda: not a GPU, for tests only";

namespace standin {

State& state() {
    static State* s = new State();  // never destroyed: worker threads may outlive static teardown
    return *s;
}
thread_local Ctx* current = nullptr;

static int env_int(const char* name, int dflt) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : dflt;
}
int arch() { return env_int("LIBRA_STANDIN_ARCH", 90); }
int sm_count() { return std::max(1, env_int("LIBRA_STANDIN_SMS", 4)); }
unsigned op_delay_us() { return (unsigned)std::max(0, env_int("LIBRA_STANDIN_OP_DELAY_US", 200)); }

void report(const std::string& what) {
    std::fprintf(stderr, "[libcuda stand-in] %s\n", what.c_str());
    state().reports.push_back(what);
}

bool live_ctx(Ctx* c) {
    for (Ctx* x : state().contexts)
        if (x == c) return c->alive;
    return false;
}

int check_ctx() {
    State& s = state();
    if (!s.initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (current == nullptr || !live_ctx(current)) return CUDA_ERROR_INVALID_CONTEXT;
    return current->sticky;
}

Alloc* find_alloc(uintptr_t p, bool include_freed) {
    for (Alloc* a : state().allocs)
        if ((a->live || include_freed) && p >= a->base && p < a->base + a->size) return a;
    return nullptr;
}

void release_ctx(Ctx* c, std::unique_lock<std::mutex>& lock) {
    State& s = state();
    drain_ctx(c, lock);
    char buf[200];
    for (Alloc* a : s.allocs)
        if (a->live && a->ctx == c) {
            std::snprintf(buf, sizeof buf, "leak: %s allocation of %zu bytes at %#lx alive when its context was released",
                          a->pinned ? "pinned" : "device", a->size, (unsigned long)a->base);
            report(buf);
        }
    for (Stream* st : s.streams)
        if (!st->destroyed && st->ctx == c && st != c->null_stream) report("leak: a stream alive when its context was released");
    for (Event* e : s.events)
        if (e->live && e->ctx == c) report("leak: an event alive when its context was released");
    for (Module* m : s.modules)
        if (m->live && m->ctx == c) report("leak: a module alive when its context was released");
    c->alive = false;
}

}  // namespace standin

__attribute__((destructor)) static void at_exit_report() {
    State& s = state();
    std::lock_guard<std::mutex> g(s.mu);
    if (s.reports.empty()) return;
    std::fprintf(stderr, "[libcuda stand-in] %zu report(s) in this process\n", s.reports.size());
    const char* strict = std::getenv("LIBRA_STANDIN_STRICT");
    if (strict && std::strcmp(strict, "1") == 0) _exit(97);
}

#define EXPORT extern "C" __attribute__((visibility("default")))
#define LOCK std::unique_lock<std::mutex> lock(state().mu)
#define REQUIRE_INIT \
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED

// ---- Initialization, version, device ("Initialization", "Version Management", "Device Management")

EXPORT CUresult cuInit(unsigned flags) {
    LOCK;
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;  // "Currently, the Flags parameter must be 0"
    state().initialized = true;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDriverGetVersion(int* v) {
    if (v == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *v = 12080;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int* n) {
    LOCK;
    REQUIRE_INIT;
    if (n == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *n = 1;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    LOCK;
    REQUIRE_INIT;
    if (d == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice d) {
    LOCK;
    REQUIRE_INIT;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::snprintf(name, (size_t)len, "libra CPU stand-in for libcuda (not a GPU)");
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice d) {
    LOCK;
    REQUIRE_INIT;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *bytes = (size_t)4 << 30;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice d) {
    LOCK;
    REQUIRE_INIT;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (v == nullptr) return CUDA_ERROR_INVALID_VALUE;
    switch (attr) {
        case 1: *v = 1024; break;                          // MAX_THREADS_PER_BLOCK
        case 2: case 3: *v = 1024; break;                  // MAX_BLOCK_DIM_X / Y
        case 4: *v = 64; break;                            // MAX_BLOCK_DIM_Z
        case 5: *v = 2147483647; break;                    // MAX_GRID_DIM_X
        case 6: case 7: *v = 65535; break;                 // MAX_GRID_DIM_Y / Z
        case 8: *v = 48 * 1024; break;                     // MAX_SHARED_MEMORY_PER_BLOCK
        case 10: *v = 32; break;                           // WARP_SIZE
        case 12: case 82: *v = 65536; break;               // MAX_REGISTERS_PER_BLOCK / _PER_MULTIPROCESSOR
        case 16: *v = sm_count(); break;                   // MULTIPROCESSOR_COUNT
        case 19: *v = 1; break;                            // CAN_MAP_HOST_MEMORY
        case 33: case 50: *v = 0; break;                   // PCI_BUS_ID / PCI_DEVICE_ID
        case 39: *v = 2048; break;                         // MAX_THREADS_PER_MULTIPROCESSOR
        case 41: *v = 1; break;                            // UNIFIED_ADDRESSING
        case 75: *v = arch() / 10; break;                  // COMPUTE_CAPABILITY_MAJOR
        case 76: *v = arch() % 10; break;                  // COMPUTE_CAPABILITY_MINOR
        case 91: *v = 1; break;                            // CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
        case 106: *v = 32; break;                          // MAX_BLOCKS_PER_MULTIPROCESSOR
        case 115: *v = 0; break;                           // MEMORY_POOLS_SUPPORTED: no async allocator
        default: return CUDA_ERROR_INVALID_VALUE;          // not modelled: refuse rather than guess
    }
    return CUDA_SUCCESS;
}

// ---- Primary context and current context ("Primary Context Management", "Context Management")

EXPORT CUresult cuDevicePrimaryCtxRetain(void** ctx, CUdevice d) {
    LOCK;
    REQUIRE_INIT;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (ctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
    State& s = state();
    if (s.primary == nullptr) {
        // A fresh context after the last release: the previous handle stays invalid.
        s.primary = new Ctx();
        s.contexts.push_back(s.primary);
    }
    s.primary_refs++;
    *ctx = s.primary;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) {
    LOCK;
    REQUIRE_INIT;
    if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
    State& s = state();
    if (s.primary_refs <= 0) return CUDA_ERROR_INVALID_CONTEXT;
    if (--s.primary_refs == 0) {
        // "the primary context will be destroyed regardless of whether it is current to any thread"
        Ctx* c = s.primary;
        s.primary = nullptr;
        release_ctx(c, lock);
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(void** ctx) {
    LOCK;
    REQUIRE_INIT;
    if (ctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *ctx = current;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSetCurrent(void* ctx) {
    LOCK;
    REQUIRE_INIT;
    if (ctx != nullptr && !live_ctx((Ctx*)ctx)) return CUDA_ERROR_INVALID_CONTEXT;
    current = (Ctx*)ctx;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize(void) {
    LOCK;
    int r = check_ctx();
    state().ctx_synchronize_calls++;
    if (r == CUDA_ERROR_INVALID_CONTEXT || r == CUDA_ERROR_NOT_INITIALIZED) return r;
    drain_ctx(current, lock);
    return current->sticky;
}

// ---- Memory ("Memory Management", "Unified Addressing")

static int map_guarded(size_t size, bool pinned, Alloc** out) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t body = (size + 255) / 256 * 256;  // device allocations are 256-byte aligned
    size_t len = (body + page - 1) / page * page + 2 * page;
    void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    mprotect(m, page, PROT_NONE);                            // guard before
    mprotect((char*)m + len - page, page, PROT_NONE);        // guard after
    uintptr_t end = (uintptr_t)m + len - page;
    uintptr_t base = end - body;                              // overruns past the body fault
    std::memset((void*)base, pinned ? 0x5a : 0xa5, body);     // "The memory is not cleared"
    *out = new Alloc{base, size, m, len, pinned, true, current};
    state().allocs.push_back(*out);
    return CUDA_SUCCESS;
}

// Frees never return the address range: it stays mapped without access, so a late use faults.
static int unmap_guarded(Alloc* a, std::unique_lock<std::mutex>& lock) {
    State& s = state();
    for (Stream* st : s.streams)
        for (const Op& op : st->queue)
            for (auto& u : op.uses)
                if (u.first < a->base + a->size && a->base < u.first + u.second) {
                    char buf[200];
                    std::snprintf(buf, sizeof buf, "free of %#lx while queued work (%s) still uses it",
                                  (unsigned long)a->base, op.what.c_str());
                    report(buf);
                    drain(st, lock);
                    goto done;
                }
done:
    a->live = false;
    madvise(a->map, a->map_len, MADV_DONTNEED);
    mprotect(a->map, a->map_len, PROT_NONE);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t size) {
    LOCK;
    if (int r = check_ctx()) return r;
    if (p == nullptr || size == 0) return CUDA_ERROR_INVALID_VALUE;
    Alloc* a;
    if (int r = map_guarded(size, false, &a)) return r;
    *p = a->base;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
    LOCK;
    if (int r = check_ctx(); r == CUDA_ERROR_NOT_INITIALIZED || r == CUDA_ERROR_INVALID_CONTEXT) return r;
    Alloc* a = find_alloc(p, false);
    if (a == nullptr || a->pinned || a->base != p) return CUDA_ERROR_INVALID_VALUE;
    unmap_guarded(a, lock);
    return current->sticky;
}

EXPORT CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    LOCK;
    if (int r = check_ctx()) return r;
    if (free_bytes == nullptr || total == nullptr) return CUDA_ERROR_INVALID_VALUE;
    size_t used = 0;
    for (Alloc* a : state().allocs)
        if (a->live && !a->pinned) used += a->size;
    *total = (size_t)4 << 30;
    *free_bytes = used < *total ? *total - used : 0;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemHostAlloc(void** pp, size_t size, unsigned flags) {
    LOCK;
    if (int r = check_ctx()) return r;
    if (pp == nullptr || size == 0 || (flags & ~7u) != 0) return CUDA_ERROR_INVALID_VALUE;
    Alloc* a;
    if (int r = map_guarded(size, true, &a)) return r;
    *pp = (void*)a->base;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFreeHost(void* p) {
    LOCK;
    if (int r = check_ctx(); r == CUDA_ERROR_NOT_INITIALIZED || r == CUDA_ERROR_INVALID_CONTEXT) return r;
    Alloc* a = find_alloc((uintptr_t)p, false);
    if (a == nullptr || !a->pinned || a->base != (uintptr_t)p) return CUDA_ERROR_INVALID_VALUE;
    unmap_guarded(a, lock);
    return current->sticky;
}

// Under unified addressing the device pointer of mapped pinned memory is its host pointer.
EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr* d, void* p, unsigned flags) {
    LOCK;
    if (int r = check_ctx()) return r;
    if (d == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;  // "Flags ... must be 0"
    Alloc* a = find_alloc((uintptr_t)p, false);
    if (a == nullptr || !a->pinned) return CUDA_ERROR_INVALID_VALUE;
    *d = (CUdeviceptr)p;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuPointerGetAttribute(void* data, int attr, CUdeviceptr p) {
    LOCK;
    REQUIRE_INIT;
    if (data == nullptr) return CUDA_ERROR_INVALID_VALUE;
    Alloc* a = find_alloc(p, false);
    if (a == nullptr) return CUDA_ERROR_INVALID_VALUE;  // not memory the driver knows
    switch (attr) {
        case 1: *(void**)data = a->ctx; break;                            // CONTEXT
        case 2: *(unsigned*)data = a->pinned ? 1u : 2u; break;            // MEMORY_TYPE host / device
        case 3: *(CUdeviceptr*)data = p; break;                           // DEVICE_POINTER
        case 4:                                                           // HOST_POINTER
            if (!a->pinned) return CUDA_ERROR_INVALID_VALUE;
            *(void**)data = (void*)p;
            break;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

// ---- Errors ("Error Handling")

struct ErrorText {
    int code;
    const char* name;
    const char* text;
};
static const ErrorText kErrors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {200, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {209, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {218, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {716, "CUDA_ERROR_MISALIGNED_ADDRESS", "misaligned address"},
    {801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
};

EXPORT CUresult cuGetErrorName(int e, const char** s) {
    if (s == nullptr) return CUDA_ERROR_INVALID_VALUE;
    for (const ErrorText& t : kErrors)
        if (t.code == e) return *s = t.name, CUDA_SUCCESS;
    *s = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuGetErrorString(int e, const char** s) {
    if (s == nullptr) return CUDA_ERROR_INVALID_VALUE;
    for (const ErrorText& t : kErrors)
        if (t.code == e) return *s = t.text, CUDA_SUCCESS;
    *s = nullptr;
    return CUDA_ERROR_INVALID_VALUE;
}

// ---- Stand-in only: what tests inspect.

EXPORT unsigned long long libra_standin_ctx_synchronize_calls(void) {
    LOCK;
    return state().ctx_synchronize_calls;
}

EXPORT unsigned long long libra_standin_reports(void) {
    LOCK;
    return state().reports.size();
}
