// libcuda STAND-IN (tests only, not a GPU): streams, events, copies, modules and launches.
// See standin.h for what it models and which documentation each behaviour follows.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "standin.h"

using namespace standin;

// The host-compiled kernels (tests/cuda_host/host_kernels.cpp), linked into this library.
extern "C" int libra_host_kernel_params(const char* name, size_t* sizes, size_t* aligns, int max);
extern "C" int libra_host_launch(const char* name, const unsigned* grid, const unsigned* block, void** params,
                                 char* err, size_t err_len);

#define EXPORT extern "C" __attribute__((visibility("default")))
#define LOCK std::unique_lock<std::mutex> lock(state().mu)

namespace standin {

static void worker(Stream* st) {
    State& s = state();
    std::unique_lock<std::mutex> lock(s.mu);
    for (;;) {
        s.cv.wait(lock, [&] { return !st->queue.empty() || st->destroyed; });
        if (st->queue.empty()) return;  // destroyed and drained: "resources ... released automatically"
        // The op stays queued while it runs, so a free of memory it uses is seen.
        auto run = st->queue.front().run;
        std::string what = st->queue.front().what;
        uint64_t seq = st->queue.front().seq;
        st->running = true;
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(op_delay_us()));
        int r = CUDA_SUCCESS;
        std::string why;
        // After a fault the context runs nothing more: its error is sticky.
        bool skip;
        {
            std::lock_guard<std::mutex> g(s.mu);
            skip = st->ctx->sticky != CUDA_SUCCESS;
        }
        if (!skip) r = run(&why);
        lock.lock();
        if (r != CUDA_SUCCESS && st->ctx->sticky == CUDA_SUCCESS) {
            st->ctx->sticky = r;
            st->ctx->sticky_what = what + ": " + why;
            std::fprintf(stderr, "[libcuda stand-in] %s failed (%d): %s; the context's error is now sticky\n",
                         what.c_str(), r, why.c_str());
        }
        st->queue.pop_front();
        st->done_seq = seq;
        st->running = false;
        s.cv.notify_all();
    }
}

static Stream* new_stream(Ctx* c) {
    Stream* st = new Stream();
    st->ctx = c;
    state().streams.push_back(st);
    st->worker = std::thread(worker, st);
    st->worker.detach();
    return st;
}

Stream* stream_of(void* h, int* err) {
    State& s = state();
    *err = CUDA_SUCCESS;
    // NULL, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD: the context's default stream.
    if (h == nullptr || h == (void*)0x1 || h == (void*)0x2) {
        if (current->null_stream == nullptr) current->null_stream = new_stream(current);
        return current->null_stream;
    }
    for (Stream* st : s.streams)
        if (st == (Stream*)h) {
            if (st->destroyed) break;
            if (st->ctx != current) {
                *err = CUDA_ERROR_INVALID_HANDLE;  // a stream of another context
                return nullptr;
            }
            return st;
        }
    *err = CUDA_ERROR_INVALID_HANDLE;
    return nullptr;
}

void drain(Stream* st, std::unique_lock<std::mutex>& lock) {
    state().cv.wait(lock, [&] { return st->queue.empty(); });
}

void drain_ctx(Ctx* c, std::unique_lock<std::mutex>& lock) {
    for (size_t i = 0; i < state().streams.size(); ++i)
        if (state().streams[i]->ctx == c) drain(state().streams[i], lock);
}

uint64_t enqueue(Stream* st, Op op) {
    op.seq = st->next_seq++;
    uint64_t seq = op.seq;
    st->queue.push_back(std::move(op));
    state().cv.notify_all();
    return seq;
}

}  // namespace standin

static Event* find_event(void* h) {
    for (Event* e : state().events)
        if (e == (Event*)h && e->live) return e;
    return nullptr;
}

static bool event_done(const Event* e) { return e->stream == nullptr || e->stream->done_seq >= e->seq; }

// ---- Streams ("Stream Management")

EXPORT CUresult cuStreamCreate(void** out, unsigned flags) {
    LOCK;
    if (int r = check_ctx()) return r;
    if (out == nullptr || flags > 1) return CUDA_ERROR_INVALID_VALUE;  // DEFAULT or NON_BLOCKING
    *out = new_stream(current);
    return CUDA_SUCCESS;
}

// "the function will return immediately and the resources associated with hStream will be
// released automatically once the device has completed all work in hStream"
EXPORT CUresult cuStreamDestroy_v2(void* h) {
    LOCK;
    if (int r = check_ctx(); r == CUDA_ERROR_NOT_INITIALIZED || r == CUDA_ERROR_INVALID_CONTEXT) return r;
    int err;
    Stream* st = stream_of(h, &err);
    if (st == nullptr || st == current->null_stream) return CUDA_ERROR_INVALID_HANDLE;
    st->destroyed = true;
    state().cv.notify_all();
    return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(void* h) {
    LOCK;
    if (int r = check_ctx(); r == CUDA_ERROR_NOT_INITIALIZED || r == CUDA_ERROR_INVALID_CONTEXT) return r;
    int err;
    Stream* st = stream_of(h, &err);
    if (st == nullptr) return err;
    drain(st, lock);
    return st->ctx->sticky;  // "may also return error codes from previous, asynchronous launches"
}

EXPORT CUresult cuStreamWaitEvent(void* h, void* ev, unsigned flags) {
    LOCK;
    if (int r = check_ctx()) return r;
    int err;
    Stream* st = stream_of(h, &err);
    if (st == nullptr) return err;
    Event* e = find_event(ev);
    if (e == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    // The wait covers the work captured by the event's most recent record, as of this call.
    Stream* other = e->stream;
    uint64_t seq = e->seq;
    if (other == nullptr) return CUDA_SUCCESS;
    Op op;
    op.what = "cuStreamWaitEvent";
    op.run = [other, seq](std::string*) {
        std::unique_lock<std::mutex> l(state().mu);
        state().cv.wait(l, [&] { return other->done_seq >= seq || other->ctx->sticky != CUDA_SUCCESS; });
        return CUDA_SUCCESS;
    };
    enqueue(st, std::move(op));
    return CUDA_SUCCESS;
}

// ---- Events ("Event Management")

EXPORT CUresult cuEventCreate(void** out, unsigned flags) {
    LOCK;
    if (int r = check_ctx()) return r;
    if (out == nullptr || (flags & ~7u) != 0) return CUDA_ERROR_INVALID_VALUE;
    Event* e = new Event();
    e->ctx = current;
    state().events.push_back(e);
    *out = e;
    return CUDA_SUCCESS;
}

// "Captures in hEvent the contents of hStream at the time of this call ... hEvent and hStream
// must be from the same context"; recording again replaces the previous capture.
EXPORT CUresult cuEventRecord(void* ev, void* h) {
    LOCK;
    if (int r = check_ctx()) return r;
    Event* e = find_event(ev);
    if (e == nullptr || e->ctx != current) return CUDA_ERROR_INVALID_HANDLE;
    int err;
    Stream* st = stream_of(h, &err);
    if (st == nullptr) return err;
    e->stream = st;
    e->seq = st->next_seq - 1;
    return CUDA_SUCCESS;
}

// CUDA_SUCCESS when the captured work is complete (or nothing was recorded), else NOT_READY.
EXPORT CUresult cuEventQuery(void* ev) {
    LOCK;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    Event* e = find_event(ev);
    if (e == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (e->ctx->sticky != CUDA_SUCCESS) return e->ctx->sticky;
    return event_done(e) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

EXPORT CUresult cuEventSynchronize(void* ev) {
    LOCK;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    Event* e = find_event(ev);
    if (e == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    state().cv.wait(lock, [&] { return event_done(e) || e->ctx->sticky != CUDA_SUCCESS; });
    return e->ctx->sticky;
}

EXPORT CUresult cuEventDestroy_v2(void* ev) {
    LOCK;
    if (!state().initialized) return CUDA_ERROR_NOT_INITIALIZED;
    Event* e = find_event(ev);
    if (e == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    e->live = false;
    return CUDA_SUCCESS;
}

// ---- Copies ("Memory Management"; unified addressing: cuMemcpyAsync infers the direction)

// A side of a copy: inside one live allocation (device or pinned), or pageable host memory.
// Err when it touches freed memory or runs past its allocation.
static int check_side(uintptr_t p, size_t n, bool must_be_device, std::vector<std::pair<uintptr_t, size_t>>* uses) {
    Alloc* a = find_alloc(p, true);
    if (a == nullptr) return must_be_device ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
    if (!a->live || p + n > a->base + a->size) return CUDA_ERROR_INVALID_VALUE;
    uses->push_back({p, n});
    return CUDA_SUCCESS;
}

static int copy_async(uintptr_t dst, uintptr_t src, size_t n, void* h, bool dst_dev, bool src_dev, const char* what) {
    if (int r = check_ctx()) return r;
    int err;
    Stream* st = stream_of(h, &err);
    if (st == nullptr) return err;
    if (n == 0) return CUDA_SUCCESS;
    Op op;
    if (int r = check_side(dst, n, dst_dev, &op.uses)) return r;
    if (int r = check_side(src, n, src_dev, &op.uses)) return r;
    op.what = what;
    // Pageable sources are read when the stream gets here, not now: the documentation allows
    // either, so callers must keep them alive and unchanged until the copy completes.
    op.run = [dst, src, n](std::string*) {
        std::memmove((void*)dst, (const void*)src, n);
        return CUDA_SUCCESS;
    };
    enqueue(st, std::move(op));
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t n, void* h) {
    LOCK;
    return copy_async(dst, src, n, h, false, false, "cuMemcpyAsync");
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* h) {
    LOCK;
    return copy_async(dst, (uintptr_t)src, n, h, true, false, "cuMemcpyHtoDAsync");
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* h) {
    LOCK;
    return copy_async((uintptr_t)dst, src, n, h, false, true, "cuMemcpyDtoHAsync");
}

// ---- Modules ("Module Management")

EXPORT CUresult cuModuleLoadData(void** out, const void* image) {
    LOCK;
    if (int r = check_ctx()) return r;
    if (out == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
    std::vector<Kernel*> kernels;
    std::string why;
    if (int r = load_image(image, &kernels, &why)) {
        std::fprintf(stderr, "[libcuda stand-in] cuModuleLoadData: %s\n", why.c_str());
        return r;
    }
    // Each kernel must be one the stand-in can run, with the parameters its source declares.
    for (Kernel* k : kernels) {
        size_t sizes[32];
        int n = libra_host_kernel_params(k->name.c_str(), sizes, nullptr, 32);
        bool same = n == (int)k->param_sizes.size();
        for (int i = 0; same && i < n; ++i) same = sizes[i] == k->param_sizes[i];
        if (!same) {
            std::fprintf(stderr, "[libcuda stand-in] cuModuleLoadData: kernel %s: %s\n", k->name.c_str(),
                         n < 0 ? "not in the host-compiled kernel source" : "parameter sizes differ from its signature");
            return CUDA_ERROR_INVALID_IMAGE;
        }
    }
    Module* m = new Module{current, true, kernels};
    state().modules.push_back(m);
    *out = m;
    return CUDA_SUCCESS;
}

static Module* find_module(void* h) {
    for (Module* m : state().modules)
        if (m == (Module*)h && m->live) return m;
    return nullptr;
}

EXPORT CUresult cuModuleGetFunction(void** out, void* mod, const char* name) {
    LOCK;
    if (int r = check_ctx()) return r;
    Module* m = find_module(mod);
    if (m == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    if (out == nullptr || name == nullptr) return CUDA_ERROR_INVALID_VALUE;
    for (Kernel* k : m->kernels)
        if (k->name == name) {
            Function* f = new Function{m, k};
            state().functions.push_back(f);
            *out = f;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_NOT_FOUND;
}

EXPORT CUresult cuModuleUnload(void* mod) {
    LOCK;
    if (int r = check_ctx(); r == CUDA_ERROR_NOT_INITIALIZED || r == CUDA_ERROR_INVALID_CONTEXT) return r;
    Module* m = find_module(mod);
    if (m == nullptr) return CUDA_ERROR_INVALID_HANDLE;
    m->live = false;
    return CUDA_SUCCESS;
}

// ---- Launch ("Execution Control": cuLaunchKernel)

EXPORT CUresult cuLaunchKernel(void* fh, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                               unsigned shared, void* h, void** params, void** extra) {
    LOCK;
    State& s = state();
    if (int r = check_ctx()) return r;
    Function* f = nullptr;
    for (Function* x : s.functions)
        if (x == (Function*)fh) f = x;
    if (f == nullptr || !f->module->live) return CUDA_ERROR_INVALID_HANDLE;
    if (f->module->ctx != current) return CUDA_ERROR_INVALID_CONTEXT;
    if (extra != nullptr) return CUDA_ERROR_NOT_SUPPORTED;  // the `extra` packing is not modelled
    int err;
    Stream* st = stream_of(h, &err);
    if (st == nullptr) return err;
    unsigned long long threads = (unsigned long long)bx * by * bz;
    if (gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || bx == 0 || by == 0 || bz == 0 || bx > 1024 ||
        by > 1024 || bz > 64 || threads > 1024 || shared > 48 * 1024)
        return CUDA_ERROR_INVALID_VALUE;
    const Kernel* k = f->kernel;
    // Registers are allocated per warp: a block needs registers x threads rounded up to warps.
    unsigned long long warps_threads = (threads + 31) / 32 * 32;
    if ((k->max_threads != 0 && threads > (unsigned long long)k->max_threads) ||
        (unsigned long long)k->registers * warps_threads > 65536)
        return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    if (!k->param_sizes.empty() && params == nullptr) return CUDA_ERROR_INVALID_VALUE;
    // The values are copied now: the caller's array may be gone when the stream runs the launch.
    std::vector<size_t> offsets;
    size_t total = 0;
    for (size_t sz : k->param_sizes) {
        offsets.push_back(total);
        total += (sz + 7) / 8 * 8;
    }
    std::vector<unsigned char> values(total + 8);
    for (size_t i = 0; i < k->param_sizes.size(); ++i) {
        if (params[i] == nullptr) return CUDA_ERROR_INVALID_VALUE;
        std::memcpy(values.data() + offsets[i], params[i], k->param_sizes[i]);
    }
    Op op;
    op.what = "cuLaunchKernel(" + k->name + ")";
    // Arguments that point into a known allocation: the launch uses it until it has run.
    for (size_t i = 0; i < k->param_sizes.size(); ++i)
        if (k->param_sizes[i] == 8) {
            uint64_t v;
            std::memcpy(&v, values.data() + offsets[i], 8);
            if (Alloc* a = find_alloc(v, false)) op.uses.push_back({a->base, a->size});
        }
    uint64_t nth = ++s.launches;
    const char* fault_env = std::getenv("LIBRA_STANDIN_FAULT_LAUNCH");
    bool inject = fault_env != nullptr && std::strtoull(fault_env, nullptr, 10) == nth;
    std::string name = k->name;
    op.run = [name, gx, gy, gz, bx, by, bz, values, offsets, inject, nth](std::string* why) mutable {
        if (inject) {
            *why = "fault injected at launch " + std::to_string(nth) + " (LIBRA_STANDIN_FAULT_LAUNCH)";
            return (int)CUDA_ERROR_ILLEGAL_ADDRESS;
        }
        std::vector<void*> ptrs;
        for (size_t off : offsets) ptrs.push_back(values.data() + off);
        unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
        char err[256] = {0};
        int r = libra_host_launch(name.c_str(), grid, block, ptrs.data(), err, sizeof err);
        if (r == 0) return (int)CUDA_SUCCESS;
        *why = err;
        return (int)(std::strstr(err, "misaligned") ? CUDA_ERROR_MISALIGNED_ADDRESS : CUDA_ERROR_ILLEGAL_ADDRESS);
    };
    enqueue(st, std::move(op));
    return CUDA_SUCCESS;
}

// ---- Host functions ("Execution Control": cuLaunchHostFunc runs after the work queued before
// it and blocks the work queued after it)

EXPORT CUresult cuLaunchHostFunc(void* h, void (*fn)(void*), void* user) {
    LOCK;
    if (int r = check_ctx()) return r;
    if (fn == nullptr) return CUDA_ERROR_INVALID_VALUE;
    int err;
    Stream* st = stream_of(h, &err);
    if (st == nullptr) return err;
    Op op;
    op.what = "cuLaunchHostFunc";
    op.run = [fn, user](std::string*) {
        fn(user);
        return (int)CUDA_SUCCESS;
    };
    enqueue(st, std::move(op));
    return CUDA_SUCCESS;
}
