#include "moebox/cpu_features.h"

#include <cpuid.h>
#include <cstdint>
#include <cstring>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace moebox {
namespace {

struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned subleaf) {
  Regs r;
  __cpuid_count(leaf, subleaf, r.a, r.b, r.c, r.d);
  return r;
}

uint64_t xgetbv0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

bool bit(unsigned v, int n) { return (v >> n) & 1u; }

bool request_amx_permission() {
#if defined(__linux__)
  constexpr int kArchGetXcompPerm = 0x1022;
  constexpr int kArchReqXcompPerm = 0x1023;
  constexpr int kXfeatureXtiledata = 18;
  unsigned long bitmask = 0;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) != 0) return false;
  return (bitmask >> kXfeatureXtiledata) & 1ul;
#else
  return false;
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
  const Regs l0 = cpuid(0, 0);
  const unsigned max_leaf = l0.a;
  char vendor[13] = {0};
  std::memcpy(vendor, &l0.b, 4);
  std::memcpy(vendor + 4, &l0.d, 4);
  std::memcpy(vendor + 8, &l0.c, 4);
  f.amd = std::strcmp(vendor, "AuthenticAMD") == 0;
  const Regs l1 = cpuid(1, 0);
  const bool osxsave = bit(l1.c, 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM hi256 + hi16 ZMM
  const bool os_tile = (xcr0 & 0x60000) == 0x60000;    // XTILECFG + XTILEDATA

  f.fma = os_ymm && bit(l1.c, 12);
  f.f16c = os_ymm && bit(l1.c, 29);
  if (max_leaf >= 7) {
    const Regs l7 = cpuid(7, 0);
    const Regs l7s1 = cpuid(7, 1);
    f.avx2 = os_ymm && bit(l7.b, 5);
    f.avx512f = os_zmm && bit(l7.b, 16);
    f.avx512bw = os_zmm && bit(l7.b, 30);
    f.avx512vl = os_zmm && bit(l7.b, 31);
    f.avx512_vnni = os_zmm && bit(l7.c, 11);
    f.avx512_bf16 = os_zmm && bit(l7s1.a, 5);
    f.amx_bf16 = os_tile && bit(l7.d, 22);
    f.amx_tile = os_tile && bit(l7.d, 24);
    f.amx_int8 = os_tile && bit(l7.d, 25);
  }
  if (f.amx_tile) f.amx_permitted = request_amx_permission();

  char brand[49] = {0};
  if (cpuid(0x80000000u, 0).a >= 0x80000004u) {
    for (unsigned i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002u + i, 0);
      std::memcpy(brand + 16 * i, &r, 16);
    }
  }
  f.brand = brand;
  const auto first = f.brand.find_first_not_of(' ');
  f.brand = first == std::string::npos ? std::string() : f.brand.substr(first);
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace moebox
