// Python binding of the native kernels. Takes buffers zero-copy through the
// buffer protocol / DLPack (numpy arrays, torch tensors, memmaps of GGUF files);
// never links torch. Every compute call releases the GIL. Bad shapes, dtypes or
// formats raise ValueError (std::invalid_argument) before any work starts.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "moebox/cpu_features.h"
#include "moebox/decode_layer.h"
#include "moebox/decode_ops.h"
#include "moebox/dispatch.h"
#include "moebox/formats.h"
#include "moebox/matmul.h"
#include "moebox/membench.h"
#include "moebox/moe.h"
#include "moebox/thread_pool.h"

namespace nb = nanobind;
using namespace moebox;

namespace {

// Any array, read-only allowed (GGUF memmaps are); the device is checked below
// so that a GPU tensor gets a ValueError that says so.
using Array = nb::ndarray<nb::ro>;
using MutArray = nb::ndarray<>;

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// Row-major and in CPU memory (the layout every kernel assumes).
template <typename A>
bool c_contiguous(const A& a) {
  if (a.device_type() != nb::device::cpu::value) fail("arrays must be in CPU memory (got a device array)");
  int64_t expect = 1;
  for (int64_t d = static_cast<int64_t>(a.ndim()) - 1; d >= 0; --d) {
    if (a.shape(d) != 1 && a.stride(d) != expect) return false;
    expect *= static_cast<int64_t>(a.shape(d));
  }
  return true;
}

template <typename A>
int64_t nbytes(const A& a) {
  return static_cast<int64_t>(a.size()) * a.dtype().bits / 8;
}

bool is_f32(nb::dlpack::dtype t) { return t == nb::dtype<float>(); }
bool is_bf16(nb::dlpack::dtype t) {
  return t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) && t.bits == 16 && t.lanes == 1;
}

const FormatOps& format_of(int ggml_type) {
  const FormatOps* f = find_format(ggml_type);
  if (!f) fail("ggml type " + std::to_string(ggml_type) + " is not a weight format moebox_native computes with");
  return *f;
}

// Activations: 1-D [cols] or 2-D [T, cols], f32 or bf16, rows contiguous.
ActivationRows activation_rows(const Array& x, const char* what) {
  if (x.ndim() != 1 && x.ndim() != 2) fail(std::string(what) + " must be 1-D or 2-D, got " + std::to_string(x.ndim()) + "-D");
  const bool bf16 = is_bf16(x.dtype());
  if (!bf16 && !is_f32(x.dtype())) fail(std::string(what) + " must be float32 or bfloat16");
  if (!c_contiguous(x)) fail(std::string(what) + " must be C-contiguous");
  ActivationRows rows;
  rows.data = x.data();
  rows.bf16 = bf16;
  rows.rows = x.ndim() == 2 ? static_cast<int64_t>(x.shape(0)) : 1;
  rows.cols = static_cast<int64_t>(x.shape(x.ndim() - 1));
  rows.stride = rows.cols;
  return rows;
}

// A float32 output [rows, cols]: the caller's `out` (checked) or a new numpy array.
nb::object output_f32(nb::object out, int64_t rows, int64_t cols, float** ptr) {
  if (out.is_none()) {
    auto* buf = new float[static_cast<size_t>(std::max<int64_t>(1, rows * cols))];
    nb::capsule owner(buf, [](void* p) noexcept { delete[] static_cast<float*>(p); });
    *ptr = buf;
    size_t shape[2] = {static_cast<size_t>(rows), static_cast<size_t>(cols)};
    return nb::cast(nb::ndarray<nb::numpy, float>(buf, 2, shape, owner));
  }
  MutArray o;
  if (!nb::try_cast(out, o)) fail("out must be a writable CPU array");
  if (!is_f32(o.dtype())) fail("out must be float32");
  if (!c_contiguous(o)) fail("out must be C-contiguous");
  if (static_cast<int64_t>(o.size()) != rows * cols)
    fail("out has " + std::to_string(o.size()) + " elements, expected " + std::to_string(rows) + " x " + std::to_string(cols));
  *ptr = static_cast<float*>(o.data());
  return out;
}

// The GGUF bytes of a [rows, cols] matrix in ggml type `type`, checked: format, shape,
// layout and size.
WeightMatrix weight_matrix(const Array& a, int type, int64_t rows, int64_t cols, const char* what) {
  WeightMatrix m;
  m.format = &format_of(type);
  const FormatOps& f = *m.format;
  if (rows <= 0 || cols <= 0) fail(std::string(what) + ": rows and cols must be positive");
  if (cols % f.block_elems) fail(std::string(what) + ": " + f.name + " rows need a multiple of " + std::to_string(f.block_elems) + " columns, got " + std::to_string(cols));
  if (!c_contiguous(a)) fail(std::string(what) + " must be C-contiguous");
  if (nbytes(a) != rows * row_bytes(f, cols))
    fail(std::string(what) + " has " + std::to_string(nbytes(a)) + " bytes; " + std::to_string(rows) + " x " + std::to_string(cols) + " " + f.name + " needs " + std::to_string(rows * row_bytes(f, cols)));
  m.data = static_cast<const uint8_t*>(a.data());
  m.rows = rows;
  m.cols = cols;
  return m;
}

nb::object matmul_py(const Array& weight, int ggml_type, int64_t rows, int64_t cols, const Array& x, nb::object out) {
  const WeightMatrix wm = weight_matrix(weight, ggml_type, rows, cols, "weight");
  const FormatOps& f = *wm.format;
  const ActivationRows xr = activation_rows(x, "x");
  if (xr.cols != cols) fail("x has " + std::to_string(xr.cols) + " columns, weight has " + std::to_string(cols));
  float* y = nullptr;
  nb::object result = output_f32(out, xr.rows, rows, &y);
  const Isa isa = active_isa();
  {
    nb::gil_scoped_release release;
    auto pool = global_pool();
    matmul(f, wm.data, rows, xr, y, rows, *pool, isa);
  }
  if (x.ndim() == 1 && out.is_none()) return result.attr("reshape")(rows);
  return result;
}

nb::object quantize_act_py(const Array& x, int ggml_type) {
  const FormatOps& f = format_of(ggml_type);
  const ActivationRows xr = activation_rows(x, "x");
  if (xr.cols % f.block_elems) fail("x columns must be a multiple of " + std::to_string(f.block_elems));
  const int64_t bytes = act_row_bytes(f.vec_dot_type, xr.cols);
  auto* buf = new uint8_t[static_cast<size_t>(std::max<int64_t>(1, xr.rows * bytes))];
  nb::capsule owner(buf, [](void* p) noexcept { delete[] static_cast<uint8_t*>(p); });
  const Isa isa = active_isa();
  {
    nb::gil_scoped_release release;
    auto pool = global_pool();
    quantize_activations(xr, f.vec_dot_type, buf, *pool, isa);
  }
  size_t shape[2] = {static_cast<size_t>(xr.rows), static_cast<size_t>(bytes)};
  return nb::cast(nb::ndarray<nb::numpy, uint8_t>(buf, 2, shape, owner));
}

nb::object dequantize_py(const Array& data, int ggml_type, nb::object out) {
  const FormatOps& f = format_of(ggml_type);
  if (!c_contiguous(data)) fail("data must be C-contiguous");
  if (nbytes(data) % f.block_bytes) fail("data size is not a whole number of " + std::string(f.name) + " blocks");
  const int64_t n = nbytes(data) / f.block_bytes * f.block_elems;
  MutArray o;
  if (!nb::try_cast(out, o)) fail("out must be a writable CPU array");
  const bool bf16 = is_bf16(o.dtype());
  if (!bf16 && !is_f32(o.dtype())) fail("out must be float32 or bfloat16");
  if (!c_contiguous(o)) fail("out must be C-contiguous");
  if (static_cast<int64_t>(o.size()) != n) fail("out has " + std::to_string(o.size()) + " elements, the data holds " + std::to_string(n));
  const auto* src = static_cast<const uint8_t*>(data.data());
  {
    nb::gil_scoped_release release;
    auto pool = global_pool();
    dequantize(f, src, n, bf16 ? nullptr : static_cast<float*>(o.data()), bf16 ? static_cast<uint16_t*>(o.data()) : nullptr, *pool);
  }
  return out;
}

// --- fused decode ops: float32 arrays whose last dimension is contiguous ---
bool is_f16(nb::dlpack::dtype t) { return (t.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float) && t.bits == 16 && t.lanes == 1); }

template <typename A>
void check_rows_f32(const A& a, size_t ndim, const char* what) {
  if (a.device_type() != nb::device::cpu::value) fail(std::string(what) + " must be in CPU memory");
  if (a.ndim() != ndim) fail(std::string(what) + " must be " + std::to_string(ndim) + "-D, got " + std::to_string(a.ndim()) + "-D");
  if (!is_f32(a.dtype())) fail(std::string(what) + " must be float32");
  if (a.shape(ndim - 1) > 1 && a.stride(ndim - 1) != 1) fail(std::string(what) + "'s last dimension must be contiguous");
}

void rms_norm_py(const Array& x, const Array& weight, float eps, MutArray out) {
  check_rows_f32(x, 2, "x");
  check_rows_f32(out, 2, "out");
  check_rows_f32(weight, 1, "weight");
  const int64_t rows = x.shape(0), n = x.shape(1);
  if (static_cast<int64_t>(weight.shape(0)) != n) fail("weight has " + std::to_string(weight.shape(0)) + " elements, x rows " + std::to_string(n));
  if (static_cast<int64_t>(out.shape(0)) != rows || static_cast<int64_t>(out.shape(1)) != n) fail("out must have x's shape");
  rms_norm(static_cast<const float*>(x.data()), x.stride(0), static_cast<const float*>(weight.data()), eps,
           static_cast<float*>(out.data()), out.stride(0), rows, n, active_isa());
}

void silu_mul_py(const Array& gate_up, MutArray out) {
  check_rows_f32(gate_up, 2, "gate_up");
  check_rows_f32(out, 2, "out");
  const int64_t rows = gate_up.shape(0), n = out.shape(1);
  if (static_cast<int64_t>(gate_up.shape(1)) != 2 * n || static_cast<int64_t>(out.shape(0)) != rows)
    fail("gate_up must be [T, 2n] for out [T, n]");
  if (!c_contiguous(out)) fail("out must be C-contiguous");
  silu_mul(static_cast<const float*>(gate_up.data()), gate_up.stride(0), static_cast<float*>(out.data()), rows, n, active_isa());
}

void rope_py(MutArray x, const Array& cos, const Array& sin, const Array& positions, bool interleaved) {
  check_rows_f32(x, 3, "x");
  check_rows_f32(cos, 2, "cos");
  check_rows_f32(sin, 2, "sin");
  const int64_t tokens = x.shape(0), heads = x.shape(1), dim = x.shape(2);
  if (dim % 2 || static_cast<int64_t>(cos.shape(1)) != dim / 2 || !c_contiguous(cos) || !c_contiguous(sin) ||
      cos.shape(0) != sin.shape(0) || cos.shape(1) != sin.shape(1))
    fail("cos and sin must be contiguous [positions, dim / 2] tables for x's dim " + std::to_string(dim));
  if (positions.ndim() != 1 || static_cast<int64_t>(positions.shape(0)) != tokens || positions.dtype() != nb::dtype<int64_t>() || !c_contiguous(positions))
    fail("positions must be int64 [tokens]");
  const auto* pos = static_cast<const int64_t*>(positions.data());
  for (int64_t t = 0; t < tokens; ++t)
    if (pos[t] < 0 || pos[t] >= static_cast<int64_t>(cos.shape(0))) fail("position " + std::to_string(pos[t]) + " is outside the cos/sin table");
  rope_inplace(static_cast<float*>(x.data()), tokens, heads, dim, x.stride(0), x.stride(1), static_cast<const float*>(cos.data()),
               static_cast<const float*>(sin.data()), pos, interleaved);
}

void attend_one_py(const Array& q, const Array& k, const Array& v, float scale, MutArray out) {
  check_rows_f32(q, 2, "q");
  if (!c_contiguous(q)) fail("q must be C-contiguous [heads, dim]");
  const int64_t heads = q.shape(0), dim = q.shape(1);
  if (k.ndim() != 3 || v.ndim() != 3) fail("k and v must be [len, kv_heads, dim]");
  if (k.device_type() != nb::device::cpu::value || v.device_type() != nb::device::cpu::value) fail("k and v must be in CPU memory");
  const bool fp16 = is_f16(k.dtype());
  if (k.dtype() != v.dtype() || (!fp16 && !is_f32(k.dtype()))) fail("k and v must both be float32 or both float16");
  const int64_t len = k.shape(0), kv_heads = k.shape(1);
  for (const Array* a : {&k, &v})
    if (static_cast<int64_t>(a->shape(0)) != len || static_cast<int64_t>(a->shape(1)) != kv_heads || static_cast<int64_t>(a->shape(2)) != dim ||
        a->stride(2) != 1 || (kv_heads > 1 && a->stride(1) != dim))
      fail("k and v must be [len, kv_heads, dim] with q's dim and each token's heads contiguous");
  if (len < 1 || kv_heads < 1 || heads % kv_heads) fail("need len >= 1 and heads a multiple of kv_heads");
  if (!is_f32(out.dtype()) || !c_contiguous(out) || static_cast<int64_t>(out.size()) != heads * dim) fail("out must be contiguous float32 with heads * dim elements");
  const Isa isa = active_isa();
  nb::gil_scoped_release release;
  auto pool = global_pool();
  attend_one(static_cast<const float*>(q.data()), heads, kv_heads, dim, k.data(), k.stride(0), v.data(), v.stride(0), fp16, len,
             scale, static_cast<float*>(out.data()), *pool, isa);
}

void rope_cache_attend_py(MutArray qkv, const Array& cos, const Array& sin, int64_t pos, bool interleaved, MutArray k_cache,
                          MutArray v_cache, int64_t len, int64_t heads, float scale, MutArray out) {
  check_rows_f32(qkv, 2, "qkv");
  if (qkv.shape(0) != 1 || !c_contiguous(qkv)) fail("qkv must be one contiguous row [1, (heads + 2 * kv_heads) * dim]");
  if (k_cache.ndim() != 3 || v_cache.ndim() != 3) fail("k_cache and v_cache must be [size, kv_heads, dim]");
  const int64_t kv_heads = k_cache.shape(1), dim = k_cache.shape(2);
  if (heads < 1 || kv_heads < 1 || heads % kv_heads) fail("heads must be a positive multiple of kv_heads");
  if (static_cast<int64_t>(qkv.shape(1)) != (heads + 2 * kv_heads) * dim) fail("qkv row length must be (heads + 2 * kv_heads) * dim");
  const bool fp16 = is_f16(k_cache.dtype());
  if (k_cache.dtype() != v_cache.dtype() || (!fp16 && !is_f32(k_cache.dtype()))) fail("k_cache and v_cache must both be float32 or both float16");
  if (k_cache.device_type() != nb::device::cpu::value || v_cache.device_type() != nb::device::cpu::value) fail("the caches must be in CPU memory");
  for (const MutArray* c : {&k_cache, &v_cache})
    if (c->shape(1) != k_cache.shape(1) || c->shape(2) != k_cache.shape(2) || !c_contiguous(*c)) fail("k_cache and v_cache must be contiguous with equal shapes");
  if (len < 0 || len + 1 > static_cast<int64_t>(k_cache.shape(0)) || len + 1 > static_cast<int64_t>(v_cache.shape(0)))
    fail("the caches have no room for entry " + std::to_string(len));
  check_rows_f32(cos, 2, "cos");
  check_rows_f32(sin, 2, "sin");
  if (dim % 2 || static_cast<int64_t>(cos.shape(1)) != dim / 2 || !c_contiguous(cos) || !c_contiguous(sin) || cos.shape(0) != sin.shape(0) || cos.shape(1) != sin.shape(1))
    fail("cos and sin must be contiguous [positions, dim / 2] tables");
  if (pos < 0 || pos >= static_cast<int64_t>(cos.shape(0))) fail("position " + std::to_string(pos) + " is outside the cos/sin table");
  if (!is_f32(out.dtype()) || !c_contiguous(out) || static_cast<int64_t>(out.size()) != heads * dim) fail("out must be contiguous float32 with heads * dim elements");
  const Isa isa = active_isa();
  nb::gil_scoped_release release;
  auto pool = global_pool();
  rope_cache_attend(static_cast<float*>(qkv.data()), heads, kv_heads, dim, static_cast<const float*>(cos.data()),
                    static_cast<const float*>(sin.data()), pos, interleaved, k_cache.data(), v_cache.data(), fp16, len, scale,
                    static_cast<float*>(out.data()), *pool, isa);
}

// Expert weights of one MoE layer, held zero-copy; the arrays stay referenced.
class MoeExperts {
 public:
  MoeExperts(Array gate, int gate_type, Array up, int up_type, Array down, int down_type, int64_t experts,
             int64_t hidden, int64_t inter)
      : gate_(gate), up_(up), down_(down) {
    if (experts <= 0 || hidden <= 0 || inter <= 0) fail("experts, hidden and inter must be positive");
    m_.gate = tensor(gate, gate_type, experts, inter, hidden, "gate");
    m_.up = tensor(up, up_type, experts, inter, hidden, "up");
    m_.down = tensor(down, down_type, experts, hidden, inter, "down");
  }

  int64_t experts() const { return m_.gate.experts; }
  int64_t hidden() const { return m_.gate.cols; }
  int64_t inter() const { return m_.gate.rows; }

  struct Call {
    ActivationRows x;
    std::vector<int32_t> ids;
    std::vector<float> weights;
    int64_t k = 0;
    float* out = nullptr;
    nb::object result;
  };

  Call prepare(const Array& x, const Array& ids, const Array& weights, nb::object out) const {
    Call c;
    c.x = activation_rows(x, "x");
    if (c.x.cols != hidden()) fail("x has " + std::to_string(c.x.cols) + " columns, the experts take " + std::to_string(hidden()));
    const int64_t T = c.x.rows;
    if (ids.ndim() != weights.ndim() || ids.ndim() != x.ndim()) fail("ids and weights must be [T, k] (or [k] for a 1-D x)");
    if (ids.ndim() == 2 && (static_cast<int64_t>(ids.shape(0)) != T || static_cast<int64_t>(weights.shape(0)) != T))
      fail("ids and weights need one row per token of x");
    c.k = static_cast<int64_t>(ids.shape(ids.ndim() - 1));
    if (c.k < 1 || static_cast<int64_t>(weights.shape(weights.ndim() - 1)) != c.k) fail("ids and weights must have the same k >= 1");
    if (!c_contiguous(ids) || !c_contiguous(weights)) fail("ids and weights must be C-contiguous");
    if (!is_f32(weights.dtype())) fail("weights must be float32");
    c.ids.resize(static_cast<size_t>(T * c.k));
    const auto t = ids.dtype();
    for (int64_t i = 0; i < T * c.k; ++i) {
      int64_t v;
      if (t == nb::dtype<int32_t>())
        v = static_cast<const int32_t*>(ids.data())[i];
      else if (t == nb::dtype<int64_t>())
        v = static_cast<const int64_t*>(ids.data())[i];
      else
        fail("ids must be int32 or int64");
      if (v < 0 || v >= experts()) fail("expert id " + std::to_string(v) + " out of range [0, " + std::to_string(experts()) + ")");
      c.ids[i] = static_cast<int32_t>(v);
    }
    const auto* w = static_cast<const float*>(weights.data());
    c.weights.assign(w, w + T * c.k);
    c.result = output_f32(out, T, hidden(), &c.out);
    if (x.ndim() == 1 && out.is_none()) c.result = c.result.attr("reshape")(hidden());
    return c;
  }

  const MoeWeights& weights() const { return m_; }

  void run(const Call& c, Isa isa) const {
    auto pool = global_pool();
    moe_forward(m_, c.x, c.ids.data(), c.weights.data(), c.k, c.out, *pool, isa);
  }

 private:
  static ExpertTensor tensor(const Array& a, int type, int64_t experts, int64_t rows, int64_t cols, const char* what) {
    ExpertTensor e;
    e.format = &format_of(type);
    if (cols % e.format->block_elems)
      fail(std::string(what) + ": " + e.format->name + " needs rows of a multiple of " + std::to_string(e.format->block_elems));
    if (!c_contiguous(a)) fail(std::string(what) + " must be C-contiguous");
    e.data = static_cast<const uint8_t*>(a.data());
    e.experts = experts;
    e.rows = rows;
    e.cols = cols;
    if (nbytes(a) != experts * e.expert_bytes())
      fail(std::string(what) + " has " + std::to_string(nbytes(a)) + " bytes; [" + std::to_string(experts) + ", " + std::to_string(rows) + ", " + std::to_string(cols) + "] " + e.format->name + " needs " + std::to_string(experts * e.expert_bytes()));
    return e;
  }

  Array gate_, up_, down_;  // keep the buffers alive
  MoeWeights m_;
};

// A submitted MoE call. Holds its inputs until the work is done.
class MoeJob {
 public:
  MoeJob(std::shared_ptr<AsyncJob> job, std::unique_ptr<MoeExperts::Call> call, nb::object experts, Array x,
         Array ids, Array weights)
      : job_(std::move(job)), call_(std::move(call)), experts_(experts), x_(x), ids_(ids), weights_(weights) {}
  ~MoeJob() {
    if (job_ && !job_->done()) {
      nb::gil_scoped_release release;
      try {
        job_->wait();
      } catch (...) {
      }
    }
  }
  bool done() const { return job_->done(); }
  nb::object wait() {
    {
      nb::gil_scoped_release release;
      job_->wait();
    }
    return call_->result;
  }

 private:
  std::shared_ptr<AsyncJob> job_;
  std::unique_ptr<MoeExperts::Call> call_;
  nb::object experts_;
  Array x_, ids_, weights_;
};

}  // namespace


// A decoder layer's weights held for decode_layer_step (zero-copy; the arrays stay referenced).
class DecodeLayer {
 public:
  DecodeLayer(int64_t hidden, int64_t heads, int64_t kv_heads, int64_t dim, float eps, float scale, bool interleaved,
              Array attn_norm, Array ffn_norm, Array qkv, int qkv_type, Array o, int o_type, nb::object q_norm,
              nb::object k_norm, float qk_eps, nb::object gate_up, int gate_up_type, nb::object down, int down_type,
              nb::object router, nb::object experts, int64_t top_k, bool normalize, float expert_scale) {
    if (hidden <= 0 || heads <= 0 || kv_heads <= 0 || dim <= 0 || heads % kv_heads || dim % 2)
      fail("need positive hidden, heads, kv_heads and dim, heads a multiple of kv_heads and dim even");
    s_.hidden = hidden;
    s_.heads = heads;
    s_.kv_heads = kv_heads;
    s_.dim = dim;
    s_.eps = eps;
    s_.scale = scale;
    s_.interleaved = interleaved;
    s_.attn_norm = vector_f32(attn_norm, hidden, "attn_norm");
    s_.ffn_norm = vector_f32(ffn_norm, hidden, "ffn_norm");
    s_.qkv = weight_matrix(qkv, qkv_type, (heads + 2 * kv_heads) * dim, hidden, "qkv");
    s_.o = weight_matrix(o, o_type, hidden, heads * dim, "o");
    if (q_norm.is_none() != k_norm.is_none()) fail("q_norm and k_norm go together");
    if (!q_norm.is_none()) {
      s_.q_norm = vector_f32(keep(q_norm), dim, "q_norm");
      s_.k_norm = vector_f32(keep(k_norm), dim, "k_norm");
      s_.qk_eps = qk_eps;
    }
    if (experts.is_none()) {
      if (gate_up.is_none() || down.is_none()) fail("a layer needs gate_up and down, or router and experts");
      const Array& gu = keep(gate_up);
      if (gu.ndim() < 1) fail("gate_up must be the GGUF bytes of a matrix");
      const FormatOps& gf = format_of(gate_up_type);
      const int64_t gu_rows = nbytes(gu) / row_bytes(gf, hidden);
      if (gu_rows % 2) fail("gate_up must hold an even number of rows (gate rows, then up rows)");
      s_.gate_up = weight_matrix(gu, gate_up_type, gu_rows, hidden, "gate_up");
      s_.down = weight_matrix(keep(down), down_type, hidden, gu_rows / 2, "down");
    } else {
      if (router.is_none()) fail("routed experts need their router");
      const MoeExperts& e = nb::cast<const MoeExperts&>(experts);
      held_objects_.push_back(experts);
      if (e.hidden() != hidden) fail("the experts take " + std::to_string(e.hidden()) + " columns, the layer has " + std::to_string(hidden));
      if (top_k < 1 || top_k > e.experts()) fail("top_k must lie in [1, experts]");
      moe_.router = weight_matrix(keep(router), static_cast<int>(GgmlType::F32), e.experts(), hidden, "router");
      moe_.experts = e.weights();
      moe_.top_k = top_k;
      moe_.normalize = normalize;
      moe_.scale = expert_scale;
      s_.moe = &moe_;
    }
    held_.push_back(attn_norm);
    held_.push_back(ffn_norm);
    held_.push_back(qkv);
    held_.push_back(o);
  }

  void step(const Array& x_in, MutArray x_out, const Array& cos, const Array& sin, int64_t pos, MutArray k_cache,
            MutArray v_cache, int64_t len) const {
    for (const Array* a : {&x_in, &cos, &sin})
      if (!is_f32(a->dtype()) || !c_contiguous(*a)) fail("x, cos and sin must be contiguous float32");
    if (!is_f32(x_out.dtype()) || !c_contiguous(x_out)) fail("x_out must be contiguous float32");
    if (static_cast<int64_t>(x_in.size()) != s_.hidden || static_cast<int64_t>(x_out.size()) != s_.hidden)
      fail("x and x_out must hold one token of " + std::to_string(s_.hidden) + " values");
    const bool fp16 = is_f16(k_cache.dtype());
    if (k_cache.dtype() != v_cache.dtype() || (!fp16 && !is_f32(k_cache.dtype())))
      fail("k_cache and v_cache must both be float32 or both float16");
    for (const MutArray* c : {&k_cache, &v_cache}) {
      if (c->ndim() != 3 || !c_contiguous(*c) || static_cast<int64_t>(c->shape(1)) != s_.kv_heads ||
          static_cast<int64_t>(c->shape(2)) != s_.dim)
        fail("k_cache and v_cache must be contiguous [size, kv_heads, dim]");
      if (len < 0 || len + 1 > static_cast<int64_t>(c->shape(0))) fail("the caches have no room for entry " + std::to_string(len));
    }
    if (cos.ndim() != 2 || sin.ndim() != 2 || static_cast<int64_t>(cos.shape(1)) != s_.dim / 2 || cos.shape(0) != sin.shape(0) ||
        cos.shape(1) != sin.shape(1))
      fail("cos and sin must be [positions, dim / 2] tables");
    if (pos < 0 || pos >= static_cast<int64_t>(cos.shape(0))) fail("position " + std::to_string(pos) + " is outside the cos/sin table");
    const Isa isa = active_isa();
    nb::gil_scoped_release release;
    auto pool = global_pool();
    decode_layer_step(s_, static_cast<const float*>(x_in.data()), static_cast<float*>(x_out.data()),
                      static_cast<const float*>(cos.data()), static_cast<const float*>(sin.data()), pos, k_cache.data(),
                      v_cache.data(), fp16, len, *pool, isa);
  }

 private:
  const Array& keep(nb::object o) {
    Array a;
    if (!nb::try_cast(o, a)) fail("expected an array");
    held_.push_back(a);
    return held_.back();
  }
  static const float* vector_f32(const Array& a, int64_t n, const char* what) {
    if (!is_f32(a.dtype()) || !c_contiguous(a) || static_cast<int64_t>(a.size()) != n)
      fail(std::string(what) + " must be contiguous float32 with " + std::to_string(n) + " values");
    return static_cast<const float*>(a.data());
  }
  DecodeLayerSpec s_;
  DecodeMoe moe_;
  std::deque<Array> held_;  // stable addresses: keep() hands out references
  std::vector<nb::object> held_objects_;
};

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

  m.def(
      "formats",
      []() {
        nb::list out;
        int count = 0;
        const FormatOps* const* all = all_formats(&count);
        for (int i = 0; i < count; ++i) {
          const FormatOps& f = *all[i];
          nb::dict d;
          d["name"] = f.name;
          d["type"] = static_cast<int>(f.type);
          d["block_elems"] = f.block_elems;
          d["block_bytes"] = f.block_bytes;
          d["vec_dot_type"] = static_cast<int>(f.vec_dot_type);
          nb::list isas;
          for (int s = 0; s < kIsaCount; ++s)
            if (f.vec_dot[s] || (s == kIsaAmx && f.amx_gemm)) isas.append(isa_name(static_cast<Isa>(s)));
          d["isas"] = isas;
          out.append(d);
        }
        return out;
      },
      "Weight formats: name, ggml type number, block geometry, activation type, ISAs with their own kernel.");

  m.def("best_isa", []() { return std::string(isa_name(best_isa())); }, "Best ISA level this CPU supports.");
  m.def(
      "isa", []() { return std::string(isa_name(active_isa())); },
      "ISA the kernels use (MOEBOX_ISA or the best available); raises RuntimeError on a CPU without AVX2.");
  m.def(
      "set_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); }, nb::arg("name"),
      "Force scalar|avx2|avx512|amx for this process. ValueError for an unknown name, RuntimeError if the CPU lacks it.");
  m.def("physical_cores", &physical_cores, "Physical cores this process may run on.");
  m.def("num_threads", &global_pool_threads, "Threads of the kernel thread pool.");
  m.def(
      "set_num_threads", [](int n) { set_global_pool_threads(n); }, nb::arg("n"),
      "Use n threads (n <= 0: physical cores). The pool is created on first use.");

  m.def("matmul", &matmul_py, nb::arg("weight"), nb::arg("ggml_type"), nb::arg("rows"), nb::arg("cols"), nb::arg("x"),
        nb::arg("out") = nb::none(),
        "y = W x. weight: the GGUF bytes of a [rows, cols] matrix (any dtype, C-contiguous); x: [T, cols] or [cols] "
        "float32/bfloat16; returns float32 [T, rows] (or [rows]), written into out if given.");
  m.def("quantize_activations", &quantize_act_py, nb::arg("x"), nb::arg("ggml_type"),
        "The activation blocks matmul dots x with for weights of ggml_type: uint8 [T, row bytes].");
  m.def("dequantize", &dequantize_py, nb::arg("data"), nb::arg("ggml_type"), nb::arg("out"),
        "Dequantize GGUF blocks into out (float32 or bfloat16 with as many elements); returns out.");


  m.def("rms_norm", &rms_norm_py, nb::arg("x"), nb::arg("weight"), nb::arg("eps"), nb::arg("out"),
        "out = x / sqrt(mean(x^2, -1) + eps) * weight for float32 x [T, n] (rows may be strided), written into out [T, n].");
  m.def("silu_mul", &silu_mul_py, nb::arg("gate_up"), nb::arg("out"),
        "out = silu(gate_up[:, :n]) * gate_up[:, n:] for float32 gate_up [T, 2n], out [T, n] contiguous.");
  m.def("rope", &rope_py, nb::arg("x"), nb::arg("cos"), nb::arg("sin"), nb::arg("positions"), nb::arg("interleaved"),
        "Rotate float32 x [tokens, heads, dim] in place by the rows positions[t] of the cos/sin tables [P, dim / 2]; "
        "interleaved pairs (x[2i], x[2i+1]) or neox halves (x[i], x[i + dim/2]).");
  m.def("attend_one", &attend_one_py, nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("scale"), nb::arg("out"),
        "Attention of one query: q [heads, dim] float32 over k, v [len, kv_heads, dim] (float32 or float16, "
        "grouped-query); out[h] = softmax(scale * q[h] k^T) v, heads * dim float32 elements.");
  m.def("rope_cache_attend", &rope_cache_attend_py, nb::arg("qkv"), nb::arg("cos"), nb::arg("sin"), nb::arg("pos"),
        nb::arg("interleaved"), nb::arg("k_cache"), nb::arg("v_cache"), nb::arg("len"), nb::arg("heads"), nb::arg("scale"),
        nb::arg("out"),
        "One decode step of grouped-query attention: rotate q and k of the float32 row qkv [1, (heads + 2 kv_heads) dim] "
        "in place (rows pos of cos/sin), store k and v as entry len of k_cache / v_cache [size, kv_heads, dim] "
        "(float32 or float16), and write the attention over entries 0..len into out (heads * dim float32).");

  m.def(
      "read_bandwidth",
      [](const Array& buf, int repeats) {
        if (!c_contiguous(buf)) fail("buffer must be C-contiguous");
        if (repeats < 1) fail("repeats must be >= 1");
        if (!cpu_features().avx2) throw std::runtime_error("read_bandwidth needs AVX2");
        const auto* p = static_cast<const uint8_t*>(buf.data());
        const int64_t n = nbytes(buf);
        nb::gil_scoped_release release;
        auto pool = global_pool();
        return read_bandwidth_gbs(p, n, repeats, *pool);
      },
      nb::arg("buffer"), nb::arg("repeats") = 5,
      "STREAM-like read of buffer with all kernel threads; best of `repeats` passes in GB/s.");

  nb::class_<MoeExperts>(m, "MoeExperts",
                         "Routed experts of one MoE layer from stacked GGUF tensors (zero-copy): gate and up "
                         "[experts, inter, hidden], down [experts, hidden, inter].")
      .def(nb::init<Array, int, Array, int, Array, int, int64_t, int64_t, int64_t>(), nb::arg("gate"),
           nb::arg("gate_type"), nb::arg("up"), nb::arg("up_type"), nb::arg("down"), nb::arg("down_type"),
           nb::arg("experts"), nb::arg("hidden"), nb::arg("inter"))
      .def_prop_ro("experts", &MoeExperts::experts)
      .def_prop_ro("hidden", &MoeExperts::hidden)
      .def_prop_ro("inter", &MoeExperts::inter)
      .def(
          "forward",
          [](const MoeExperts& self, const Array& x, const Array& ids, const Array& weights, nb::object out) {
            MoeExperts::Call c = self.prepare(x, ids, weights, out);
            const Isa isa = active_isa();
            {
              nb::gil_scoped_release release;
              self.run(c, isa);
            }
            return c.result;
          },
          nb::arg("x"), nb::arg("ids"), nb::arg("weights"), nb::arg("out") = nb::none(),
          "out[t] = sum_j weights[t,j] * down(silu(gate x[t]) * up x[t]) of expert ids[t,j]. x [T, hidden] "
          "float32/bfloat16, ids [T, k] int32/int64, weights [T, k] float32; returns float32 [T, hidden].")
      .def(
          "submit",
          [](nb::object self_obj, const Array& x, const Array& ids, const Array& weights, nb::object out) {
            const MoeExperts& self = nb::cast<const MoeExperts&>(self_obj);
            auto call = std::make_unique<MoeExperts::Call>(self.prepare(x, ids, weights, out));
            const Isa isa = active_isa();
            const MoeExperts* sp = &self;
            const MoeExperts::Call* cp = call.get();
            auto job = submit_async([sp, cp, isa] { sp->run(*cp, isa); });
            return new MoeJob(std::move(job), std::move(call), self_obj, x, ids, weights);
          },
          nb::arg("x"), nb::arg("ids"), nb::arg("weights"), nb::arg("out") = nb::none(),
          "Like forward, but returns a MoeJob at once; the work runs on the kernel threads.");

  nb::class_<DecodeLayer>(m, "DecodeLayer",
                          "A pre-norm GQA decoder layer (dense SwiGLU or softmax-routed experts) for one-call decode steps.")
      .def(nb::init<int64_t, int64_t, int64_t, int64_t, float, float, bool, Array, Array, Array, int, Array, int, nb::object,
                    nb::object, float, nb::object, int, nb::object, int, nb::object, nb::object, int64_t, bool, float>(),
           nb::arg("hidden"), nb::arg("heads"), nb::arg("kv_heads"), nb::arg("dim"), nb::arg("eps"), nb::arg("scale"),
           nb::arg("interleaved"), nb::arg("attn_norm"), nb::arg("ffn_norm"), nb::arg("qkv"), nb::arg("qkv_type"), nb::arg("o"),
           nb::arg("o_type"), nb::arg("q_norm") = nb::none(), nb::arg("k_norm") = nb::none(), nb::arg("qk_eps") = 0.f,
           nb::arg("gate_up") = nb::none(), nb::arg("gate_up_type") = -1, nb::arg("down") = nb::none(),
           nb::arg("down_type") = -1, nb::arg("router") = nb::none(), nb::arg("experts") = nb::none(),
           nb::arg("top_k") = 0, nb::arg("normalize") = false, nb::arg("expert_scale") = 1.f)
      .def("step", &DecodeLayer::step, nb::arg("x"), nb::arg("out"), nb::arg("cos"), nb::arg("sin"), nb::arg("pos"),
           nb::arg("k_cache"), nb::arg("v_cache"), nb::arg("len"),
           "out = the layer applied to one token x [hidden] (out may be x); its k, v become cache entry len, attention "
           "covers entries 0..len, rotation uses row pos of the cos / sin tables.");

  nb::class_<MoeJob>(m, "MoeJob", "A submitted MoE call.")
      .def("done", &MoeJob::done, "True once the result is ready.")
      .def("wait", &MoeJob::wait, "Block (without the GIL) until done; returns the float32 [T, hidden] output.");
}
