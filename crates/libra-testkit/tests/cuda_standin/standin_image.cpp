// libcuda STAND-IN (tests only, not a GPU): reads the images cuModuleLoadData is given. Only
// what NVRTC produces is accepted: an ELF cubin (EM_CUDA) or PTX text. From a cubin it takes
// the architecture (ELF e_flags), each kernel (.text.NAME), its parameters (EIATTR_KPARAM_INFO
// in .nv.info.NAME), its register count (EIATTR_REGCOUNT in .nv.info) and __launch_bounds__
// (EIATTR_MAX_THREADS). From PTX: .target and each .entry's .param list and .maxntid.
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "standin.h"

namespace standin {

namespace {

constexpr unsigned kEmCuda = 190;
// .nv.info attribute formats and the attributes read here.
constexpr unsigned char kFmtNval = 1, kFmtBval = 2, kFmtHval = 3, kFmtSval = 4;
constexpr unsigned char kAttrMaxThreads = 0x05, kAttrKparamInfo = 0x17, kAttrRegcount = 0x2f;

template <typename T>
bool read(const unsigned char* img, size_t len, size_t off, T* out) {
    if (off > len || len - off < sizeof(T)) return false;
    std::memcpy(out, img + off, sizeof(T));
    return true;
}

struct Section {
    std::string name;
    uint32_t type;
    uint64_t off, size;
    uint32_t link, info;
};

// Walks one .nv.info section: calls f(attr, payload, payload_len) for each attribute.
template <typename F>
bool walk_info(const unsigned char* img, size_t len, const Section& s, F f) {
    if (s.off > len || s.size > len - s.off) return false;
    size_t i = 0;
    while (i + 2 <= s.size) {
        unsigned char fmt = img[s.off + i], attr = img[s.off + i + 1];
        if (fmt == kFmtNval) {
            i += 2;
        } else if (fmt == kFmtBval || fmt == kFmtHval) {
            i += 4;
        } else if (fmt == kFmtSval) {
            uint16_t n;
            if (!read(img, len, s.off + i + 2, &n) || i + 4 + n > s.size) return false;
            f(attr, img + s.off + i + 4, (size_t)n);
            i += 4 + n;
        } else {
            return false;
        }
    }
    return true;
}

int load_cubin(const unsigned char* img, size_t len, std::vector<Kernel*>* out, std::string* why) {
    unsigned char cls = img[4], abi = img[8];
    uint16_t machine, shentsize, shnum, shstrndx;
    uint32_t flags;
    uint64_t shoff;
    if (cls != 2 || !read(img, len, 0x12, &machine) || !read(img, len, 0x28, &shoff) || !read(img, len, 0x30, &flags) ||
        !read(img, len, 0x3a, &shentsize) || !read(img, len, 0x3c, &shnum) || !read(img, len, 0x3e, &shstrndx) ||
        machine != kEmCuda || shentsize != 64 || shstrndx >= shnum) {
        *why = "not a 64-bit CUDA ELF image";
        return CUDA_ERROR_INVALID_IMAGE;
    }
    // The SM version sits in the low byte of e_flags up to ELF ABI version 7 (through sm_90),
    // in the second byte from version 8 (sm_100 and later).
    int sm = abi >= 8 ? (int)((flags >> 8) & 0xff) : (int)(flags & 0xff);
    int dev = arch();
    // A cubin for X.y runs on devices X.z with z >= y (CUDA C++ Programming Guide, "Binary
    // Compatibility").
    if (sm / 10 != dev / 10 || sm % 10 > dev % 10) {
        *why = "cubin for sm_" + std::to_string(sm) + " cannot run on this sm_" + std::to_string(dev) + " device";
        return CUDA_ERROR_NO_BINARY_FOR_GPU;
    }
    std::vector<Section> secs(shnum);
    for (unsigned i = 0; i < shnum; ++i) {
        size_t o = shoff + (size_t)i * 64;
        uint32_t name;
        if (!read(img, len, o, &name) || !read(img, len, o + 4, &secs[i].type) || !read(img, len, o + 24, &secs[i].off) ||
            !read(img, len, o + 32, &secs[i].size) || !read(img, len, o + 40, &secs[i].link) ||
            !read(img, len, o + 44, &secs[i].info)) {
            *why = "truncated section headers";
            return CUDA_ERROR_INVALID_IMAGE;
        }
        secs[i].name = std::to_string(name);  // resolved below
    }
    const Section& strs = secs[shstrndx];
    for (Section& s : secs) {
        size_t at = strs.off + std::stoul(s.name);
        if (at >= len) return *why = "bad section name", CUDA_ERROR_INVALID_IMAGE;
        s.name = std::string((const char*)img + at, strnlen((const char*)img + at, len - at));
    }
    // Symbol index -> name, for EIATTR_REGCOUNT.
    std::map<uint32_t, std::string> sym_names;
    for (const Section& s : secs) {
        if (s.name != ".symtab" || s.link >= shnum) continue;
        const Section& str = secs[s.link];
        for (uint64_t i = 0; i * 24 + 24 <= s.size; ++i) {
            uint32_t n;
            if (!read(img, len, s.off + i * 24, &n) || str.off + n >= len) continue;
            sym_names[(uint32_t)i] = std::string((const char*)img + str.off + n, strnlen((const char*)img + str.off + n, len - str.off - n));
        }
    }
    std::map<std::string, Kernel*> kernels;
    for (const Section& s : secs)
        if (s.name.rfind(".text.", 0) == 0) {
            Kernel* k = new Kernel();
            k->name = s.name.substr(6);
            kernels[k->name] = k;
        }
    for (const Section& s : secs) {
        if (s.name == ".nv.info") {
            bool ok = walk_info(img, len, s, [&](unsigned char attr, const unsigned char* p, size_t n) {
                if (attr != kAttrRegcount || n < 8) return;
                uint32_t sym, regs;
                std::memcpy(&sym, p, 4);
                std::memcpy(&regs, p + 4, 4);
                auto it = kernels.find(sym_names[sym]);
                if (it != kernels.end()) it->second->registers = (int)regs;
            });
            if (!ok) return *why = "malformed .nv.info", CUDA_ERROR_INVALID_IMAGE;
        } else if (s.name.rfind(".nv.info.", 0) == 0) {
            auto it = kernels.find(s.name.substr(9));
            if (it == kernels.end()) continue;
            Kernel* k = it->second;
            bool ok = walk_info(img, len, s, [&](unsigned char attr, const unsigned char* p, size_t n) {
                if (attr == kAttrKparamInfo && n >= 12) {
                    // (index u32, ordinal u16, offset u16, flags u32 with the size in bits 18..31)
                    uint16_t ordinal;
                    uint32_t f;
                    std::memcpy(&ordinal, p + 4, 2);
                    std::memcpy(&f, p + 8, 4);
                    if (k->param_sizes.size() <= ordinal) k->param_sizes.resize(ordinal + 1, 0);
                    k->param_sizes[ordinal] = (f >> 18) & 0x3fff;
                } else if (attr == kAttrMaxThreads && n >= 12) {
                    uint32_t d[3];
                    std::memcpy(d, p, 12);
                    k->max_threads = (int)(d[0] * d[1] * d[2]);
                }
            });
            if (!ok) return *why = "malformed " + s.name, CUDA_ERROR_INVALID_IMAGE;
        }
    }
    if (kernels.empty()) return *why = "the cubin holds no kernel", CUDA_ERROR_INVALID_IMAGE;
    for (auto& kv : kernels) {
        if (kv.second->registers == 0) return *why = kv.first + " has no EIATTR_REGCOUNT", CUDA_ERROR_INVALID_IMAGE;
        out->push_back(kv.second);
    }
    return CUDA_SUCCESS;
}

size_t ptx_type_size(const std::string& t) {
    if (t.size() < 3) return 0;
    std::string bits = t.substr(2);
    if (bits == "64") return 8;
    if (bits == "32") return 4;
    if (bits == "16") return 2;
    if (bits == "8") return 1;
    return 0;
}

int load_ptx(const char* text, std::vector<Kernel*>* out, std::string* why) {
    std::string ptx(text);
    size_t t = ptx.find(".target");
    if (t == std::string::npos || ptx.find(".version") == std::string::npos) return *why = "not PTX", CUDA_ERROR_INVALID_IMAGE;
    size_t sm_at = ptx.find("sm_", t);
    if (sm_at == std::string::npos) return *why = "PTX without an sm_ target", CUDA_ERROR_INVALID_PTX;
    int sm = std::atoi(ptx.c_str() + sm_at + 3);
    // PTX for compute_XY is JIT-compiled for any device of compute capability XY or newer.
    if (sm > arch()) {
        *why = "PTX for sm_" + std::to_string(sm) + " is newer than this sm_" + std::to_string(arch()) + " device";
        return CUDA_ERROR_NO_BINARY_FOR_GPU;
    }
    size_t at = 0;
    while ((at = ptx.find(".entry ", at)) != std::string::npos) {
        size_t name_start = at + 7, open = ptx.find('(', name_start), close = ptx.find(')', open);
        if (open == std::string::npos || close == std::string::npos) return *why = "bad .entry", CUDA_ERROR_INVALID_PTX;
        Kernel* k = new Kernel();
        k->name = ptx.substr(name_start, open - name_start);
        while (!k->name.empty() && k->name.back() == ' ') k->name.pop_back();
        std::string list = ptx.substr(open + 1, close - open - 1);
        size_t p = 0;
        while ((p = list.find(".param", p)) != std::string::npos) {
            size_t end = list.find(',', p);
            std::string decl = list.substr(p, end == std::string::npos ? std::string::npos : end - p);
            size_t size = 0;
            size_t ty = decl.find(" .", 6);
            while (ty != std::string::npos && size == 0) {
                size_t te = decl.find_first_of(" [", ty + 1);
                std::string tok = decl.substr(ty + 1, te == std::string::npos ? std::string::npos : te - ty - 1);
                if (tok != ".ptr" && tok.rfind(".align", 0) != 0 && tok.rfind(".global", 0) != 0) size = ptx_type_size(tok);
                ty = decl.find(" .", ty + 1);
            }
            size_t br = decl.find('[');
            if (br != std::string::npos) size *= (size_t)std::atoi(decl.c_str() + br + 1);
            if (size == 0) return *why = "unreadable parameter in " + k->name, CUDA_ERROR_INVALID_PTX;
            k->param_sizes.push_back(size);
            p += 6;
        }
        size_t body = ptx.find('{', close), ntid = ptx.find(".maxntid", close);
        if (ntid != std::string::npos && ntid < body) {
            unsigned x = 1, y = 1, z = 1;
            std::sscanf(ptx.c_str() + ntid + 8, " %u , %u , %u", &x, &y, &z);
            k->max_threads = (int)(x * y * z);
        }
        out->push_back(k);
        at = close;
    }
    if (out->empty()) return *why = "the PTX holds no .entry", CUDA_ERROR_INVALID_PTX;
    return CUDA_SUCCESS;
}

}  // namespace

int load_image(const void* image, std::vector<Kernel*>* out, std::string* why) {
    const unsigned char* img = (const unsigned char*)image;
    if (std::memcmp(img, "\x7f" "ELF", 4) == 0) {
        // The image's size is not passed: an ELF image is as long as its section header table.
        uint64_t shoff;
        uint16_t shnum;
        std::memcpy(&shoff, img + 0x28, 8);
        std::memcpy(&shnum, img + 0x3c, 2);
        return load_cubin(img, shoff + (size_t)shnum * 64, out, why);
    }
    uint32_t magic;
    std::memcpy(&magic, img, 4);
    if (magic == 0xBA55ED50u) return *why = "fat binaries are not modelled", CUDA_ERROR_INVALID_IMAGE;
    return load_ptx((const char*)image, out, why);
}

}  // namespace standin
