// CPU features as the running machine reports them: cpuid bits AND the OS
// saving the matching register state (XCR0), plus Linux's opt-in for AMX tiles.
#pragma once
#include <string>

namespace moebox {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool amx_tile = false;
  bool amx_int8 = false;
  bool amx_bf16 = false;
  // Linux needs ARCH_REQ_XCOMP_PERM before a process may touch tile state.
  bool amx_permitted = false;
  bool amd = false;  // vendor AuthenticAMD
  std::string brand;
};

// Detected once per process (cpuid is cheap, the AMX permission request is not repeated).
const CpuFeatures& cpu_features();

}  // namespace moebox
