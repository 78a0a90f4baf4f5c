// libra's kernel source compiled for the host, and a launcher that runs a grid the way the
// device would, one simulated thread after another. Test code only: linked into the kernel
// tests' shared object and into the libcuda stand-in, never installed or shipped.
//
// Arguments arrive as cuLaunchKernel takes them (CUDA Driver API, cuLaunchKernel: "kernelParams
// is an array of N pointers ... each of kernelParams[0] through kernelParams[N-1] must point to
// a region of memory from which the actual kernel parameter will be copied"); the number of
// parameters and their sizes come from each kernel's own C++ signature.
#include <csetjmp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <utility>

#include "shim.h"

#ifndef LIBRA_KERNEL_SOURCE
#define LIBRA_KERNEL_SOURCE "../../../libra/kernels/swap.cu"
#endif
#include LIBRA_KERNEL_SOURCE

thread_local libra_dim3 threadIdx;
thread_local libra_dim3 blockIdx;
thread_local libra_dim3 blockDim;
thread_local libra_dim3 gridDim;

namespace {

constexpr int kMaxParams = 32;

struct Kernel {
    const char* name;
    void (*run)(void** params);
    int nparams;
    size_t sizes[kMaxParams];
    size_t aligns[kMaxParams];
};

template <typename F>
struct Signature;
template <typename... A>
struct Signature<void (*)(A...)> {
    static_assert(sizeof...(A) <= kMaxParams, "too many kernel parameters");
    template <void (*K)(A...), size_t... I>
    static void call(void** p, std::index_sequence<I...>) {
        K(*static_cast<std::remove_cv_t<A>*>(p[I])...);
    }
    template <void (*K)(A...)>
    static void run(void** p) {
        call<K>(p, std::index_sequence_for<A...>{});
    }
    static Kernel make(const char* name, void (*run_fn)(void**)) {
        Kernel k{name, run_fn, (int)sizeof...(A), {sizeof(A)...}, {alignof(A)...}};
        return k;
    }
};

#define LIBRA_HOST_KERNEL(k) Signature<decltype(&k)>::make(#k, &Signature<decltype(&k)>::run<&k>)

// Every __global__ function of the kernel source; a test compares this list with the source.
const Kernel kKernels[] = {
    LIBRA_HOST_KERNEL(libra_gather),
    LIBRA_HOST_KERNEL(libra_scatter),
    LIBRA_HOST_KERNEL(libra_upload),
};
constexpr int kCount = sizeof(kKernels) / sizeof(kKernels[0]);

const Kernel* find(const char* name) {
    for (const Kernel& k : kKernels)
        if (std::strcmp(k.name, name) == 0) return &k;
    return nullptr;
}

// The running launch of this thread: where a fault returns to, and what it was.
thread_local sigjmp_buf* tl_jump = nullptr;
thread_local char tl_fault[160];

struct sigaction g_old_segv, g_old_bus;

void on_fault_signal(int sig, siginfo_t* info, void* uctx) {
    if (tl_jump != nullptr) {
        std::snprintf(tl_fault, sizeof tl_fault, "illegal address %p (signal %d) in block (%u,%u,%u) thread (%u,%u,%u)",
                      info->si_addr, sig, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
        sigjmp_buf* j = tl_jump;
        tl_jump = nullptr;
        siglongjmp(*j, 1);
    }
    // Not ours: hand the signal to whoever had it before (e.g. a runtime's stack-overflow guard).
    struct sigaction* old = sig == SIGSEGV ? &g_old_segv : &g_old_bus;
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, info, uctx);
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
    } else {
        sigaction(sig, old, nullptr);  // default action when the faulting instruction reruns
    }
}

void install_handlers() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault_signal;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
    });
}

}  // namespace

extern "C" [[noreturn]] void libra_shim_fault(const char* what, const void* addr) {
    if (tl_jump == nullptr) {
        std::fprintf(stderr, "libra host kernels: %s at %p outside a launch\n", what, addr);
        std::abort();
    }
    std::snprintf(tl_fault, sizeof tl_fault, "%s at %p in block (%u,%u,%u) thread (%u,%u,%u)", what, addr,
                  blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    sigjmp_buf* j = tl_jump;
    tl_jump = nullptr;
    siglongjmp(*j, 1);
}

extern "C" {

int libra_host_kernel_count(void) { return kCount; }

const char* libra_host_kernel_name(int i) { return i >= 0 && i < kCount ? kKernels[i].name : nullptr; }

// Writes up to `max` parameter sizes (and alignments, when `aligns` is not NULL); returns the
// number of parameters, or -1 for an unknown kernel.
int libra_host_kernel_params(const char* name, size_t* sizes, size_t* aligns, int max) {
    const Kernel* k = find(name);
    if (k == nullptr) return -1;
    for (int i = 0; i < k->nparams && i < max; ++i) {
        sizes[i] = k->sizes[i];
        if (aligns != nullptr) aligns[i] = k->aligns[i];
    }
    return k->nparams;
}

// Runs `name` over grid x block with the argument array `params`. Returns 0, or 1 after a fault
// (the message goes to `err`), or -1 for an unknown kernel or an invalid shape.
int libra_host_launch(const char* name, const unsigned* grid, const unsigned* block, void** params, char* err,
                      size_t err_len) {
    const Kernel* k = find(name);
    unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (k == nullptr || threads == 0 || threads > 1024 || grid[0] == 0 || grid[1] == 0 || grid[2] == 0) {
        if (err_len) std::snprintf(err, err_len, "unknown kernel or invalid launch shape");
        return -1;
    }
    install_handlers();
    gridDim = {grid[0], grid[1], grid[2]};
    blockDim = {block[0], block[1], block[2]};
    tl_fault[0] = 0;
    sigjmp_buf jump;
    if (sigsetjmp(jump, 1) != 0) {
        if (err_len) std::snprintf(err, err_len, "%s", tl_fault);
        return 1;
    }
    tl_jump = &jump;
    for (unsigned bz = 0; bz < grid[2]; ++bz)
        for (unsigned by = 0; by < grid[1]; ++by)
            for (unsigned bx = 0; bx < grid[0]; ++bx) {
                blockIdx = {bx, by, bz};
                for (unsigned tz = 0; tz < block[2]; ++tz)
                    for (unsigned ty = 0; ty < block[1]; ++ty)
                        for (unsigned tx = 0; tx < block[0]; ++tx) {
                            threadIdx = {tx, ty, tz};
                            k->run(params);
                        }
            }
    tl_jump = nullptr;
    return 0;
}

}  // extern "C"
