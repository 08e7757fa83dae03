// The table of weight formats. Adding a format = one X(...) line here plus its
// own file in native/src/formats/ defining kFormat<NAME> (see moebox/formats.h).
#include "moebox/formats.h"

#define MOEBOX_FORMAT_LIST(X) \
  X(F32)                      \
  X(F16)                      \
  X(BF16)                     \
  X(Q8_0)                     \
  X(Q4_0)                     \
  X(Q4_1)                     \
  X(Q5_0)                     \
  X(Q5_1)                     \
  X(Q2_K)                     \
  X(Q3_K)                     \
  X(Q4_K)                     \
  X(Q5_K)                     \
  X(Q6_K)                     \
  X(IQ1_S)                    \
  X(IQ1_M)                    \
  X(IQ2_XXS)                  \
  X(IQ2_XS)                   \
  X(IQ2_S)                    \
  X(IQ3_XXS)                  \
  X(IQ3_S)                    \
  X(IQ4_NL)                   \
  X(IQ4_XS)

namespace moebox {

#define MOEBOX_DECLARE_FORMAT(NAME) extern const FormatOps kFormat##NAME;
MOEBOX_FORMAT_LIST(MOEBOX_DECLARE_FORMAT)
#undef MOEBOX_DECLARE_FORMAT

namespace {
#define MOEBOX_FORMAT_ENTRY(NAME) &kFormat##NAME,
const FormatOps* const kFormats[] = {MOEBOX_FORMAT_LIST(MOEBOX_FORMAT_ENTRY)};
#undef MOEBOX_FORMAT_ENTRY
constexpr int kFormatCount = sizeof(kFormats) / sizeof(kFormats[0]);
}  // namespace

const FormatOps* find_format(int type) {
  for (const FormatOps* f : kFormats)
    if (static_cast<int>(f->type) == type) return f;
  return nullptr;
}

const FormatOps* const* all_formats(int* count) {
  *count = kFormatCount;
  return kFormats;
}

VecDotFn select_vec_dot(const FormatOps& f, Isa isa) {
  for (int i = isa; i >= 0; --i)
    if (f.vec_dot[i]) return f.vec_dot[i];
  return nullptr;
}

VecDotMultiFn select_vec_dot_multi(const FormatOps& f, Isa isa) {
  for (int i = isa; i >= 0; --i)
    if (f.vec_dot[i]) return f.vec_dot_multi[i];
  return nullptr;
}

VecDotPairFn select_vec_dot_pair(const FormatOps& f, Isa isa) {
  for (int i = isa; i >= 0; --i)
    if (f.vec_dot[i]) return f.vec_dot_pair[i];
  return nullptr;
}

}  // namespace moebox
