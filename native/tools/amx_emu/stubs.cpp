// The AVX-512 vec_dots k_quants.cpp links to; the emulated kernels never call them.
#include <cstdint>
#include <cstdlib>
namespace moebox {
#define S(name) float name(int64_t, const void*, const void*) { std::abort(); }
#define M(name) void name(int64_t, const void*, const void* const*, float*) { std::abort(); }
S(vec_dot_q2_K_avx512) S(vec_dot_q3_K_avx512) S(vec_dot_q4_K_avx512) S(vec_dot_q6_K_avx512)
M(q2_K_avx512_multi) M(q4_K_avx512_multi) M(q6_K_avx512_multi)
}
