#include "moebox/moe.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "moebox/amx.h"

namespace moebox {
namespace {

constexpr int64_t kTokenBlock = 32;  // tokens per pass over a chunk of expert rows (see matmul.cpp)
constexpr int64_t kMinRowChunk = 4;  // expert rows per task, at least
constexpr int64_t kTasksPerThread = 16;

inline float silu(float v) { return v / (1.f + std::exp(-v)); }

// A buffer kept between calls and grown on demand, never zeroed: the intermediates
// of a prefill call are large (d alone is T k hidden floats, 117 MB for DeepSeek-V3
// at T=512), and allocating them per call costs a serial zeroing and a page fault
// per 4 KiB on every call. Every element a call reads, it has written first.
template <class T>
class Scratch {
 public:
  T* get(int64_t n) {
    if (n > size_) {
      data_.reset(new T[static_cast<size_t>(n)]);  // default-initialized: no zeroing
      size_ = n;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<T[]> data_;
  int64_t size_ = 0;
};

// The intermediates of moe_forward, one set per calling thread.
struct MoeScratch {
  Scratch<uint8_t> xq_gate, xq_up, hq;
  Scratch<float> h, d;
  Scratch<AmxActBlock> xp, hp;
};

// Tokens routed to each expert, grouped: slots [begin[e], begin[e+1]) of `token` / `slot`.
struct Routing {
  std::vector<int64_t> begin;      // experts + 1
  std::vector<int32_t> token;      // token index per grouped assignment
  std::vector<int64_t> slot_of;    // T*k: grouped position of assignment (t, j), -1 if skipped
  std::vector<int32_t> active;     // experts with at least one token
};

Routing group_by_expert(const int32_t* ids, const float* weights, int64_t T, int64_t k, int64_t experts) {
  Routing r;
  r.begin.assign(static_cast<size_t>(experts + 1), 0);
  for (int64_t a = 0; a < T * k; ++a)
    if (weights[a] != 0.f) ++r.begin[ids[a] + 1];
  for (int64_t e = 0; e < experts; ++e) {
    if (r.begin[e + 1] > 0) r.active.push_back(static_cast<int32_t>(e));
    r.begin[e + 1] += r.begin[e];
  }
  std::vector<int64_t> fill(r.begin.begin(), r.begin.end() - 1);
  r.token.resize(static_cast<size_t>(r.begin[experts]));
  r.slot_of.assign(static_cast<size_t>(T * k), -1);
  for (int64_t a = 0; a < T * k; ++a) {
    if (weights[a] == 0.f) continue;
    const int64_t pos = fill[ids[a]]++;
    r.token[pos] = static_cast<int32_t>(a / k);
    r.slot_of[a] = pos;
  }
  return r;
}

// Tasks = (active expert, chunk of its rows), about kTasksPerThread per thread
// so the threads finish together without paying for many tiny tasks.
struct ExpertChunk {
  int32_t expert;
  int64_t r0, r1;
};
// align: chunks of whole AMX row tiles (16) when tile kernels run.
std::vector<ExpertChunk> expert_chunks(const Routing& r, int64_t rows, int threads, int64_t align = 1) {
  const int64_t total = rows * static_cast<int64_t>(r.active.size());
  int64_t chunk = std::min(rows, std::max(kMinRowChunk, total / (threads * kTasksPerThread)));
  chunk = std::min(rows, (chunk + align - 1) / align * align);
  std::vector<ExpertChunk> tasks;
  for (int32_t e : r.active)
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) tasks.push_back({e, r0, std::min(rows, r0 + chunk)});
  return tasks;
}

// Activations of the experts with at least kAmxMinTokens tokens in AMX tile
// layout, packed once per call: expert e's groups start at offset[e] blocks.
struct AmxPacked {
  AmxActBlock* blocks = nullptr;
  std::vector<int64_t> offset;  // per expert, -1: too few tokens, vec_dot kernels
  const AmxActBlock* of(int32_t e) const { return offset[e] < 0 ? nullptr : blocks + offset[e]; }
};

// act: Q8_K rows act_bytes apart; an expert's token t is row order[begin[e] + t]
// (order nullptr: row begin[e] + t, activations already grouped by expert).
AmxPacked amx_pack_experts(const Routing& r, int64_t n, const uint8_t* act, int64_t act_bytes, const int32_t* order,
                           Scratch<AmxActBlock>& buf, ThreadPool& pool) {
  const int64_t nb = n / QK_K;
  AmxPacked p;
  p.offset.assign(r.begin.size() - 1, -1);
  struct Group {
    int32_t expert;
    int64_t g;
  };
  std::vector<Group> groups;
  int64_t total = 0;
  for (int32_t e : r.active) {
    const int64_t count = r.begin[e + 1] - r.begin[e];
    if (count < kAmxMinTokens) continue;
    p.offset[e] = total * nb;
    for (int64_t g = 0; g < amx_groups(count); ++g) groups.push_back({e, g});
    total += amx_groups(count);
  }
  p.blocks = buf.get(total * nb);
  pool.parallel_for(static_cast<int64_t>(groups.size()), [&](int64_t i, int) {
    const Group& grp = groups[i];
    const int64_t first = r.begin[grp.expert] + grp.g * kAmxTokens;
    const int64_t count = std::min<int64_t>(kAmxTokens, r.begin[grp.expert + 1] - first);
    AmxActBlock* dst = p.blocks + p.offset[grp.expert] + grp.g * nb;
    if (order)
      amx_pack_activations(n, act, act_bytes, order + first, count, dst);
    else
      amx_pack_activations(n, act + first * act_bytes, act_bytes, nullptr, count, dst);
  });
  return p;
}

}  // namespace

void moe_forward(const MoeWeights& m, const ActivationRows& x, const int32_t* ids, const float* weights, int64_t k,
                 float* out, ThreadPool& pool, Isa isa) {
  const int64_t T = x.rows, hidden = m.gate.cols, inter = m.gate.rows;
  const Routing r = group_by_expert(ids, weights, T, k, m.gate.experts);
  const int64_t n_assign = static_cast<int64_t>(r.token.size());
  thread_local MoeScratch scratch;

  // 1. Token activations in the gate's (and, if different, the up's) dot type.
  const GgmlType gate_act = m.gate.format->vec_dot_type, up_act = m.up.format->vec_dot_type;
  const int64_t gate_abytes = act_row_bytes(gate_act, hidden), up_abytes = act_row_bytes(up_act, hidden);
  uint8_t* const xq_gate = scratch.xq_gate.get(T * gate_abytes);
  quantize_activations(x, gate_act, xq_gate, pool, isa);
  const uint8_t* xu = xq_gate;
  if (up_act != gate_act) {
    uint8_t* const xq_up = scratch.xq_up.get(T * up_abytes);
    quantize_activations(x, up_act, xq_up, pool, isa);
    xu = xq_up;
  }

  // 2. h = silu(gate x) * up x per grouped assignment: [n_assign, inter].
  float* const h = scratch.h.get(n_assign * inter);
  {
    const VecDotFn gate_dot = select_vec_dot(*m.gate.format, isa), up_dot = select_vec_dot(*m.up.format, isa);
    const VecDotMultiFn gate_multi = select_vec_dot_multi(*m.gate.format, isa);
    const VecDotMultiFn up_multi = select_vec_dot_multi(*m.up.format, isa);
    const int64_t gate_rb = row_bytes(*m.gate.format, hidden), up_rb = row_bytes(*m.up.format, hidden);
    const bool prefetch = prefetch_next_row(std::max(gate_rb, up_rb));
    // AMX tiles for experts with enough tokens, if gate and up both have a tile kernel.
    const AmxGemmFn gate_amx = select_amx_gemm(*m.gate.format, isa), up_amx = select_amx_gemm(*m.up.format, isa);
    const bool amx = gate_amx && up_amx && gate_act == up_act;
    AmxPacked xp;
    if (amx) xp = amx_pack_experts(r, hidden, xq_gate, gate_abytes, r.token.data(), scratch.xp, pool);
    const std::vector<ExpertChunk> tasks = expert_chunks(r, inter, pool.size(), amx ? 16 : 1);
    pool.parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t i, int) {
      const ExpertChunk& c = tasks[i];
      const uint8_t* gw = m.gate.data + c.expert * m.gate.expert_bytes();
      const uint8_t* uw = m.up.data + c.expert * m.up.expert_bytes();
      if (const AmxActBlock* xa = amx ? xp.of(c.expert) : nullptr) {
        // g, u: [tokens of the expert, rows of the chunk]
        const int64_t p0 = r.begin[c.expert], count = r.begin[c.expert + 1] - p0, nr = c.r1 - c.r0;
        thread_local std::vector<float> g, u;
        g.resize(static_cast<size_t>(count * nr));
        u.resize(static_cast<size_t>(count * nr));
        gate_amx(hidden, gw + c.r0 * gate_rb, nr, xa, count, g.data(), nr);
        up_amx(hidden, uw + c.r0 * up_rb, nr, xa, count, u.data(), nr);
        for (int64_t t = 0; t < count; ++t)
          for (int64_t row = 0; row < nr; ++row) h[(p0 + t) * inter + c.r0 + row] = silu(g[t * nr + row]) * u[t * nr + row];
        return;
      }
      for (int64_t p0 = r.begin[c.expert]; p0 < r.begin[c.expert + 1]; p0 += kTokenBlock) {
        const int64_t p1 = std::min(r.begin[c.expert + 1], p0 + kTokenBlock);
        for (int64_t row = c.r0; row < c.r1; ++row) {
          const uint8_t* g_row = gw + row * gate_rb;
          const uint8_t* u_row = uw + row * up_rb;
          if (prefetch && row + 1 < c.r1) {
            prefetch_row_start(g_row + gate_rb, gate_rb);
            prefetch_row_start(u_row + up_rb, up_rb);
          }
          int64_t p = p0;
          if (gate_multi && up_multi) {
            for (; p + kMultiTokens <= p1; p += kMultiTokens) {
              const void* ag[kMultiTokens];
              const void* au[kMultiTokens];
              float g[kMultiTokens], u[kMultiTokens];
              for (int k = 0; k < kMultiTokens; ++k) {
                ag[k] = xq_gate + r.token[p + k] * gate_abytes;
                au[k] = xu + r.token[p + k] * up_abytes;
              }
              gate_multi(hidden, g_row, ag, g);
              up_multi(hidden, u_row, au, u);
              for (int k = 0; k < kMultiTokens; ++k) h[(p + k) * inter + row] = silu(g[k]) * u[k];
            }
          }
          for (; p < p1; ++p) {
            const int64_t t = r.token[p];
            const float g = gate_dot(hidden, g_row, xq_gate + t * gate_abytes);
            const float u = up_dot(hidden, u_row, xu + t * up_abytes);
            h[p * inter + row] = silu(g) * u;
          }
        }
      }
    });
  }

  // 3. h in the down projection's dot type.
  const GgmlType down_act = m.down.format->vec_dot_type;
  const int64_t down_abytes = act_row_bytes(down_act, inter);
  uint8_t* const hq = scratch.hq.get(n_assign * down_abytes);
  ActivationRows h_rows;
  h_rows.data = h;
  h_rows.rows = n_assign;
  h_rows.cols = inter;
  h_rows.stride = inter;
  quantize_activations(h_rows, down_act, hq, pool, isa);

  // 4. d = down h per grouped assignment: [n_assign, hidden].
  float* const d = scratch.d.get(n_assign * hidden);
  {
    const VecDotFn down_dot = select_vec_dot(*m.down.format, isa);
    const VecDotMultiFn down_multi = select_vec_dot_multi(*m.down.format, isa);
    const int64_t down_rb = row_bytes(*m.down.format, inter);
    const bool prefetch = prefetch_next_row(down_rb);
    const AmxGemmFn down_amx = select_amx_gemm(*m.down.format, isa);
    AmxPacked hp;
    if (down_amx) hp = amx_pack_experts(r, inter, hq, down_abytes, nullptr, scratch.hp, pool);
    const std::vector<ExpertChunk> tasks = expert_chunks(r, hidden, pool.size(), down_amx ? 16 : 1);
    pool.parallel_for(static_cast<int64_t>(tasks.size()), [&](int64_t i, int) {
      const ExpertChunk& c = tasks[i];
      const uint8_t* dw = m.down.data + c.expert * m.down.expert_bytes();
      if (const AmxActBlock* ha = down_amx ? hp.of(c.expert) : nullptr) {
        const int64_t p0 = r.begin[c.expert];
        down_amx(inter, dw + c.r0 * down_rb, c.r1 - c.r0, ha, r.begin[c.expert + 1] - p0, d + p0 * hidden + c.r0,
                 hidden);
        return;
      }
      for (int64_t p0 = r.begin[c.expert]; p0 < r.begin[c.expert + 1]; p0 += kTokenBlock) {
        const int64_t p1 = std::min(r.begin[c.expert + 1], p0 + kTokenBlock);
        for (int64_t row = c.r0; row < c.r1; ++row) {
          const uint8_t* d_row = dw + row * down_rb;
          if (prefetch && row + 1 < c.r1) prefetch_row_start(d_row + down_rb, down_rb);
          int64_t p = p0;
          if (down_multi) {
            for (; p + kMultiTokens <= p1; p += kMultiTokens) {
              const void* a[kMultiTokens];
              float o[kMultiTokens];
              for (int k = 0; k < kMultiTokens; ++k) a[k] = hq + (p + k) * down_abytes;
              down_multi(inter, d_row, a, o);
              for (int k = 0; k < kMultiTokens; ++k) d[(p + k) * hidden + row] = o[k];
            }
          }
          for (; p < p1; ++p) d[p * hidden + row] = down_dot(inter, d_row, hq + p * down_abytes);
        }
      }
    });
  }

  // 5. out[t] = sum_j w[t,j] * d[slot(t,j)], in slot order j for a fixed summation order.
  auto reduce = [&](int64_t t, int) {
    float* o = out + t * hidden;
    std::fill(o, o + hidden, 0.f);
    for (int64_t j = 0; j < k; ++j) {
      const int64_t p = r.slot_of[t * k + j];
      if (p < 0) continue;
      const float wj = weights[t * k + j];
      const float* dp = d + p * hidden;
      for (int64_t i = 0; i < hidden; ++i) o[i] += wj * dp[i];
    }
  };
  if (T == 1)
    reduce(0, 0);
  else
    pool.parallel_for(T, reduce);
}

}  // namespace moebox
