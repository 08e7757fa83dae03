#include "moebox/dispatch.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include "moebox/cpu_features.h"

namespace moebox {
namespace {

// Formats without a kernel at a level use the best lower one (select_vec_dot).
bool has(Isa isa) {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c;
  const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512_vnni;
  switch (isa) {
    case kIsaScalar:
      return true;
    case kIsaAvx2:
      return avx2;
    case kIsaAvx512:
      return avx512;
    case kIsaAmx:
      return avx512 && f.amx_tile && f.amx_int8 && f.amx_permitted;
    default:
      return false;
  }
}

std::atomic<int> g_isa{-1};

void check_usable(Isa isa) {
  if (!has(isa))
    throw std::runtime_error(std::string("MOEBOX_ISA=") + isa_name(isa) + " was requested but this CPU (" +
                             cpu_features().brand + ") does not support it; unset MOEBOX_ISA or pick a lower level");
}

}  // namespace

// A level above AVX2 counts only once some format has a kernel written for it
// (AMX kernels are tile GEMMs, FormatOps::amx_gemm, not vec_dots).
static bool has_kernels(Isa isa) {
  int count = 0;
  const FormatOps* const* formats = all_formats(&count);
  for (int i = 0; i < count; ++i)
    if (formats[i]->vec_dot[isa] || (isa == kIsaAmx && formats[i]->amx_gemm)) return true;
  return false;
}

Isa best_isa() {
  for (int i = kIsaCount - 1; i > kIsaAvx2; --i)
    if (has(static_cast<Isa>(i)) && has_kernels(static_cast<Isa>(i))) return static_cast<Isa>(i);
  return has(kIsaAvx2) ? kIsaAvx2 : kIsaScalar;
}

const char* isa_name(Isa isa) {
  static const char* const names[] = {"scalar", "avx2", "avx512", "amx"};
  return (isa >= 0 && isa < kIsaCount) ? names[isa] : "unknown";
}

Isa parse_isa(const std::string& name) {
  for (int i = 0; i < kIsaCount; ++i)
    if (name == isa_name(static_cast<Isa>(i))) return static_cast<Isa>(i);
  throw std::invalid_argument("unknown ISA '" + name + "': expected one of scalar, avx2, avx512, amx");
}

Isa active_isa() {
  int isa = g_isa.load(std::memory_order_acquire);
  if (isa >= 0) return static_cast<Isa>(isa);
  Isa chosen;
  const char* env = std::getenv("MOEBOX_ISA");
  if (env && *env) {
    chosen = parse_isa(env);
    check_usable(chosen);
  } else {
    chosen = best_isa();
    if (chosen < kIsaAvx2)
      throw std::runtime_error("moebox needs a CPU with AVX2, FMA and F16C; this one (" + cpu_features().brand +
                               ") lacks them. (MOEBOX_ISA=scalar runs the slow reference kernels for testing.)");
  }
  g_isa.store(chosen, std::memory_order_release);
  return chosen;
}

void set_active_isa(Isa isa) {
  check_usable(isa);
  g_isa.store(isa, std::memory_order_release);
}

}  // namespace moebox
