/* ----------------------------------------------------------------------
   native_schnet.h: a SchNet's dense layers in C++, forward and backward by
   hand. The products are this file's own row kernel, not at::mm: with F = 32
   features, MKL's float64 product in the torch wheel ran at about a quarter
   of this kernel's speed on the AMD EPYC machines measured here (0.97 ms for
   4096 x 32 x 32), and at::softplus at 10 ns an element; here the activation
   is one vectorised pass giving ssp(z) and sigmoid(z) together.
------------------------------------------------------------------------- */

#include "native_schnet.h"
#include "simd_clones.h"
#include "simd_exp.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>

#define ALWAYS_INLINE inline __attribute__((always_inline))    // the vector helpers (simd_exp.h: the ABI note)

namespace eip2nn {

namespace {

/* ---------------------------------------------------------------- the kernels
   product: out (m, N) = x (m, K) B (K, N) + bias (N, or none) + init (m, N, or
   none), B row-major. Three rows at a time, the columns in blocks of four
   32-byte vectors: the 12 sums stay in registers while k runs, each row of B's
   block loaded once for the three rows; B (K x N) is read from L1. Written with
   GCC vectors: with plain arrays and `omp simd` GCC kept the sums on the stack
   (a quarter of the speed). */

template <typename T> struct Lanes {
  typedef T V __attribute__((vector_size(32)));
  typedef T U __attribute__((vector_size(32), aligned(sizeof(T)), may_alias));    // for unaligned loads and stores
};

template <typename T, int R>
ALWAYS_INLINE void product_block(int64_t i, int64_t j0, int64_t K, int64_t N, const T *x, const T *B, const T *bias,
                                 const T *init, T *out)
{
  typedef typename Lanes<T>::V V;
  typedef typename Lanes<T>::U U;
  constexpr int L = 32 / sizeof(T), NV = 4;
  V acc[R][NV];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) {
      V sum = V{};
      if (bias) sum += *(const U *) (bias + j0 + v * L);
      if (init) sum += *(const U *) (init + (i + r) * N + j0 + v * L);
      acc[r][v] = sum;
    }
  for (int64_t k = 0; k < K; k++) {
    V b[NV];
    for (int v = 0; v < NV; v++) b[v] = *(const U *) (B + k * N + j0 + v * L);
    for (int r = 0; r < R; r++) {
      const T a = x[(i + r) * K + k];
      for (int v = 0; v < NV; v++) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) *(U *) (out + (i + r) * N + j0 + v * L) = acc[r][v];
}

template <typename T>
ALWAYS_INLINE void product_rows(int64_t m, int64_t K, int64_t N, const T *x, const T *B, const T *bias,
                                const T *init, T *out)
{
  constexpr int64_t C = 4 * 32 / sizeof(T);    // columns of a block
  const int64_t blocked = N - N % C;
  int64_t i = 0;
  for (; i + 3 <= m; i += 3)
    for (int64_t j0 = 0; j0 < blocked; j0 += C) product_block<T, 3>(i, j0, K, N, x, B, bias, init, out);
  for (; i < m; i++)
    for (int64_t j0 = 0; j0 < blocked; j0 += C) product_block<T, 1>(i, j0, K, N, x, B, bias, init, out);
  for (int64_t r = 0; r < m && blocked < N; r++)    // the last columns, fewer than a block
    for (int64_t j = blocked; j < N; j++) {
      T s = (bias ? bias[j] : T(0)) + (init ? init[r * N + j] : T(0));
      for (int64_t k = 0; k < K; k++) s += x[r * K + k] * B[k * N + j];
      out[r * N + j] = s;
    }
}

SIMD_CLONES void product(int64_t m, int64_t K, int64_t N, const double *x, const double *B, const double *bias,
                         const double *init, double *out)
{
  product_rows<double>(m, K, N, x, B, bias, init, out);
}

SIMD_CLONES void product(int64_t m, int64_t K, int64_t N, const float *x, const float *B, const float *bias,
                         const float *init, float *out)
{
  product_rows<float>(m, K, N, x, B, bias, init, out);
}

/* activation: ssp(z) = softplus(z) - ln 2 and sigmoid(z), with e = exp(-|z|):
   softplus(z) = max(z, 0) + log1p(e), log1p(e) = 2 atanh(t), t = e / (2 + e) in
   (0, 1/3], by its series in t^2; sigmoid(z) = 1 / (1 + e) for z >= 0, e / (1 + e)
   otherwise; one division for both, q = 1 / ((2 + e)(1 + e)). Above 20,
   softplus(z) = z, as torch's (threshold 20). float64: the series to t^35 (error
   < 2e-17); float32 in 8 float lanes, the series to t^13 (error < 2e-8); exp as
   simd_exp.h. */

typedef double DVec __attribute__((vector_size(32)));
typedef int64_t DIVec __attribute__((vector_size(32)));
typedef float FVec __attribute__((vector_size(32)));
typedef int32_t FIVec __attribute__((vector_size(32)));

template <typename T, typename V, typename IV, int LAST> ALWAYS_INLINE void ssp_sigmoid_lanes(V z, V &ssp, V &sig)
{
  const V zero = V{}, one = V{} + T(1);
  const V magnitude = z < zero ? -z : z;
  const V e = vexp_lanes<V, IV>(-magnitude);
  const V q = one / ((e + T(2)) * (e + one));
  const V t = e * (e + one) * q, t2 = t * t;
  V series = V{} + T(1) / T(LAST);
  for (int j = LAST - 2; j >= 1; j -= 2) series = series * t2 + T(1) / T(j);
  const V log1p_e = T(2) * t * series;
  const V positive = z > zero ? z : zero;
  const V softplus = z > T(20) ? z : positive + log1p_e;
  ssp = softplus - T(0.69314718055994530942);
  const V inverse = (e + T(2)) * q;
  sig = z >= zero ? inverse : e * inverse;
}

template <typename T, typename V, typename IV, int LAST> ALWAYS_INLINE void activation_all(int64_t n, const T *z, T *ssp, T *sig)
{
  typedef typename Lanes<T>::U U;
  constexpr int L = 32 / sizeof(T);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V a, s;
    ssp_sigmoid_lanes<T, V, IV, LAST>(*(const U *) (z + i), a, s);
    *(U *) (ssp + i) = a;
    *(U *) (sig + i) = s;
  }
  if (i < n) {    // the last few: padded lanes
    V v = V{}, a, s;
    for (int l = 0; i + l < n; l++) v[l] = z[i + l];
    ssp_sigmoid_lanes<T, V, IV, LAST>(v, a, s);
    for (int l = 0; i + l < n; l++) {
      ssp[i + l] = a[l];
      sig[i + l] = s[l];
    }
  }
}

SIMD_CLONES void activation(int64_t n, const double *z, double *ssp, double *sig)
{
  activation_all<double, DVec, DIVec, 35>(n, z, ssp, sig);
}

SIMD_CLONES void activation(int64_t n, const float *z, float *ssp, float *sig)
{
  activation_all<float, FVec, FIVec, 13>(n, z, ssp, sig);
}

std::string shape_of(const torch::Tensor &t)
{
  return c10::str(t.sizes(), " ", t.scalar_type());
}

}    // namespace

/* ---------------------------------------------------------------- the model */

NativeSchNet::NativeSchNet(const std::vector<torch::Tensor> &weights, int layers, int width) :
    nlayers(layers), nwidth(width)
{
  const size_t expected = 1 + 5 * (size_t) layers + 5;
  if (layers < 1 || width < 1 || weights.size() != expected)
    throw std::runtime_error(c10::str("native_dense has ", weights.size(), " tensors; ", expected, " expected for ",
                                      layers, " layers"));
  const auto dtype = weights[0].scalar_type();
  if (dtype != torch::kFloat32 && dtype != torch::kFloat64)
    throw std::runtime_error(c10::str("native_dense is ", dtype, ", not float32 or float64"));
  size_t next = 0;
  auto take = [&](const char *what, std::vector<int64_t> shape) -> torch::Tensor {
    const torch::Tensor &t = weights[next++];
    bool ok = t.scalar_type() == dtype && t.dim() == (int64_t) shape.size();
    for (size_t d = 0; ok && d < shape.size(); d++) ok = shape[d] < 0 || t.size(d) == shape[d];
    if (!ok)
      throw std::runtime_error(c10::str("native_dense tensor ", next - 1, " (", what, ") is ", shape_of(t),
                                        ", expected ", c10::IntArrayRef(shape), " ", dtype, " (-1: any)"));
    return t.contiguous();
  };
  embedding = take("embedding", {-1, width});
  const int64_t species = embedding.size(0);
  for (int k = 0; k < layers; k++) {
    Layer l;
    l.in2f = take("in2f", {width, width});
    l.w0 = take("f2out.0 weight", {width, width});
    l.b0 = take("f2out.0 bias", {width});
    l.w2 = take("f2out.2 weight", {width, width});
    l.b2 = take("f2out.2 bias", {width});
    // the forward products read W^T (in, out) row by row
    l.in2f_t = l.in2f.t().contiguous();
    l.w0_t = l.w0.t().contiguous();
    l.w2_t = l.w2.t().contiguous();
    layer_weights.push_back(l);
  }
  head_w0 = take("head net.0 weight", {-1, width});
  head_b0 = take("head net.0 bias", {head_w0.size(0)});
  head_w2 = take("head net.2 weight", {head_w0.size(0)});
  head_b2 = take("head net.2 bias", {1});
  offsets = take("offsets", {species});
  head_w0_t = head_w0.t().contiguous();
  first_inputs_of_species = times(embedding, layer_weights[0].in2f_t);    // the kernel every row goes through
  sigmoid_z.resize(layers);
}

std::string NativeSchNet::summary() const
{
  return c10::str(nlayers, " layers of ", nwidth, " features, head of ", head_w0.size(0), " units, ",
                  embedding.scalar_type() == torch::kFloat64 ? "float64" : "float32");
}

// out (m, N) = x (m, K) B (K, N) [+ bias] [+ init]: the row kernel, in the dtype of x
torch::Tensor NativeSchNet::times(const torch::Tensor &x, const torch::Tensor &B, const torch::Tensor &bias,
                                  const torch::Tensor &init)
{
  const torch::Tensor xc = x.contiguous();
  const int64_t m = xc.size(0), K = xc.size(1), N = B.size(1);
  if (B.size(0) != K || xc.scalar_type() != B.scalar_type())
    throw std::runtime_error(c10::str("native SchNet: product of ", shape_of(xc), " and ", shape_of(B)));
  torch::Tensor out = torch::empty({m, N}, xc.options());
  const torch::Tensor ic = init.defined() ? init.contiguous() : init;
  if (xc.scalar_type() == torch::kFloat64)
    product(m, K, N, xc.data_ptr<double>(), B.data_ptr<double>(), bias.defined() ? bias.data_ptr<double>() : nullptr,
            ic.defined() ? ic.data_ptr<double>() : nullptr, out.data_ptr<double>());
  else
    product(m, K, N, xc.data_ptr<float>(), B.data_ptr<float>(), bias.defined() ? bias.data_ptr<float>() : nullptr,
            ic.defined() ? ic.data_ptr<float>() : nullptr, out.data_ptr<float>());
  return out;
}

// (ssp(z), sigmoid(z)) of z, elementwise
std::pair<torch::Tensor, torch::Tensor> NativeSchNet::activate(const torch::Tensor &z)
{
  torch::Tensor ssp = torch::empty_like(z), sig = torch::empty_like(z);
  if (z.scalar_type() == torch::kFloat64)
    activation(z.numel(), z.data_ptr<double>(), ssp.data_ptr<double>(), sig.data_ptr<double>());
  else
    activation(z.numel(), z.data_ptr<float>(), ssp.data_ptr<float>(), sig.data_ptr<float>());
  return {ssp, sig};
}

torch::Tensor NativeSchNet::initial_features(const torch::Tensor &species) const
{
  return embedding.index_select(0, species);
}

torch::Tensor NativeSchNet::layer_inputs(int layer, const torch::Tensor &features) const
{
  return times(features, layer_weights.at(layer).in2f_t);
}

torch::Tensor NativeSchNet::first_inputs(const torch::Tensor &species) const
{
  return first_inputs_of_species.index_select(0, species);
}

torch::Tensor NativeSchNet::layer_output(int layer, const torch::Tensor &features, const torch::Tensor &agg)
{
  const Layer &l = layer_weights.at(layer);
  auto [ssp, sig] = activate(times(agg, l.w0_t, l.b0));
  sigmoid_z[layer] = sig;
  return times(ssp, l.w2_t, l.b2, features);
}

torch::Tensor NativeSchNet::energies(const torch::Tensor &species, const torch::Tensor &features)
{
  auto [ssp, sig] = activate(times(features, head_w0_t, head_b0));
  sigmoid_u = sig;
  return times(ssp, head_w2.unsqueeze(1)).squeeze(1).add_(head_b2).add_(offsets.index_select(0, species));
}

torch::Tensor NativeSchNet::energies_backward() const
{
  return times(sigmoid_u * head_w2, head_w0);
}

torch::Tensor NativeSchNet::layer_output_backward(int layer, const torch::Tensor &g) const
{
  const Layer &l = layer_weights.at(layer);
  return times(times(g, l.w2).mul_(sigmoid_z.at(layer)), l.w0);
}

torch::Tensor NativeSchNet::layer_inputs_backward(int layer, const torch::Tensor &grad_inputs,
                                                  const torch::Tensor &add) const
{
  return times(grad_inputs, layer_weights.at(layer).in2f, torch::Tensor(), add);
}

}    // namespace eip2nn
