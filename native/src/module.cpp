// Python binding of the native kernels. Takes buffers zero-copy; never links torch.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "moebox/cpu_features.h"

namespace nb = nanobind;

NB_MODULE(moebox_native, m) {
  m.doc() = "moebox native CPU kernels";
  m.def(
      "cpu_features",
      []() {
        const auto& f = moebox::cpu_features();
        nb::dict d;
        d["brand"] = f.brand;
        d["avx2"] = f.avx2;
        d["fma"] = f.fma;
        d["f16c"] = f.f16c;
        d["avx512f"] = f.avx512f;
        d["avx512bw"] = f.avx512bw;
        d["avx512vl"] = f.avx512vl;
        d["avx512_vnni"] = f.avx512_vnni;
        d["avx512_bf16"] = f.avx512_bf16;
        d["amx_tile"] = f.amx_tile;
        d["amx_int8"] = f.amx_int8;
        d["amx_bf16"] = f.amx_bf16;
        d["amx_permitted"] = f.amx_permitted;
        return d;
      },
      "CPU features usable by this process: cpuid bits confirmed by OS register-state support.");
}
