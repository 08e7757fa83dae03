// Which ISA the kernels run with: the best the CPU has, or the one MOEBOX_ISA forces.
#pragma once
#include <string>

#include "moebox/formats.h"

namespace moebox {

// Best level this CPU and OS support (kIsaScalar if not even AVX2).
Isa best_isa();
// Name used by MOEBOX_ISA: "scalar", "avx2", "avx512", "amx".
const char* isa_name(Isa isa);
// Parse a name; throws std::invalid_argument for an unknown one.
Isa parse_isa(const std::string& name);
// The ISA compute calls use. On first use it is MOEBOX_ISA if set, else best_isa().
// Throws std::runtime_error if the forced ISA is missing on this CPU, or if the CPU
// lacks AVX2 and scalar was not forced explicitly.
Isa active_isa();
// Force an ISA for this process (tests, benchmarks); same checks as MOEBOX_ISA.
void set_active_isa(Isa isa);

}  // namespace moebox
