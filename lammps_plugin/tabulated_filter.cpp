/* ----------------------------------------------------------------------
   SchNet's continuous-filter convolution from a tabulated filter (see
   tabulated_filter.h)
------------------------------------------------------------------------- */

#include "tabulated_filter.h"
#include "simd_clones.h"

#include <algorithm>
#include <stdexcept>
#include <string>

// the edge loops: SIMD_CLONES (simd_clones.h)
#define ALWAYS_INLINE inline __attribute__((always_inline))

namespace eip2nn {

namespace {

// the interval of r and the position t in it, clamped to the table
template <typename T> ALWAYS_INLINE int64_t interval(T r, T inv_h, int64_t G, T &t)
{
  const T s = r * inv_h;
  int64_t i = static_cast<int64_t>(s);
  i = std::min<int64_t>(std::max<int64_t>(i, 0), G - 1);
  t = s - static_cast<T>(i);
  return i;
}

template <typename T>
ALWAYS_INLINE void forward_pass(int64_t E, int64_t F, int64_t G, T inv_h, const T *table, const T *inputs, const T *r,
                  const int64_t *src, const int64_t *dst, T *agg)
{
  for (int64_t e = 0; e < E; e++) {
    T t;
    const T *c = table + interval(r[e], inv_h, G, t) * 4 * F;
    const T *x = inputs + dst[e] * F;
    T *a = agg + src[e] * F;
    for (int64_t f = 0; f < F; f++) a[f] += x[f] * (c[f] + t * (c[F + f] + t * (c[2 * F + f] + t * c[3 * F + f])));
  }
}

template <typename T>
ALWAYS_INLINE void backward_pass(int64_t E, int64_t F, int64_t G, T inv_h, const T *table, const T *inputs, const T *r,
                   const int64_t *src, const int64_t *dst, const T *grad_agg, T *grad_inputs, T *grad_r)
{
  for (int64_t e = 0; e < E; e++) {
    T t;
    const T *c = table + interval(r[e], inv_h, G, t) * 4 * F;
    const T *x = inputs + dst[e] * F;
    const T *g = grad_agg + src[e] * F;
    T dr = 0;
    if (grad_inputs) {    // both in one loop over the features: each coefficient loaded once (20% faster)
      T *gi = grad_inputs + dst[e] * F;
#pragma omp simd reduction(+ : dr)
      for (int64_t f = 0; f < F; f++) {
        const T c1 = c[F + f], c2 = c[2 * F + f], c3 = c[3 * F + f];
        dr += g[f] * x[f] * (c1 + t * (T(2) * c2 + T(3) * t * c3));
        gi[f] += g[f] * (c[f] + t * (c1 + t * (c2 + t * c3)));
      }
    } else {
#pragma omp simd reduction(+ : dr)
      for (int64_t f = 0; f < F; f++)
        dr += g[f] * x[f] * (c[F + f] + t * (T(2) * c[2 * F + f] + T(3) * t * c[3 * F + f]));
    }
    grad_r[e] += dr * inv_h;
  }
}

// one clone set per dtype, overloaded (target_clones takes no templates)
SIMD_CLONES void forward_edges(int64_t E, int64_t F, int64_t G, double inv_h, const double *table, const double *inputs,
                             const double *r, const int64_t *src, const int64_t *dst, double *agg)
{
  forward_pass<double>(E, F, G, inv_h, table, inputs, r, src, dst, agg);
}

SIMD_CLONES void forward_edges(int64_t E, int64_t F, int64_t G, float inv_h, const float *table, const float *inputs,
                             const float *r, const int64_t *src, const int64_t *dst, float *agg)
{
  forward_pass<float>(E, F, G, inv_h, table, inputs, r, src, dst, agg);
}

SIMD_CLONES void backward_edges(int64_t E, int64_t F, int64_t G, double inv_h, const double *table,
                              const double *inputs, const double *r, const int64_t *src, const int64_t *dst,
                              const double *grad_agg, double *grad_inputs, double *grad_r)
{
  backward_pass<double>(E, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
}

SIMD_CLONES void backward_edges(int64_t E, int64_t F, int64_t G, float inv_h, const float *table, const float *inputs,
                              const float *r, const int64_t *src, const int64_t *dst, const float *grad_agg,
                              float *grad_inputs, float *grad_r)
{
  backward_pass<float>(E, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
}

void check(const torch::Tensor &inputs, const torch::Tensor &r, const torch::Tensor &src, const torch::Tensor &dst,
           const torch::Tensor &table, double spacing)
{
  auto fail = [](const std::string &what) { throw std::runtime_error("tabulated filter: " + what); };
  if (table.dim() != 3 || table.size(1) != 4) fail("table must be (intervals, 4, features)");
  if (inputs.dim() != 2 || inputs.size(1) != table.size(2)) fail("inputs must be (atoms, features of the table)");
  if (inputs.scalar_type() != table.scalar_type() || r.scalar_type() != table.scalar_type())
    fail("inputs, r and table must share a dtype");
  if (r.dim() != 1 || src.size(0) != r.size(0) || dst.size(0) != r.size(0)) fail("r, src and dst: one per edge");
  if (src.scalar_type() != torch::kInt64 || dst.scalar_type() != torch::kInt64) fail("src and dst must be int64");
  if (!(spacing > 0.0)) fail("spacing must be > 0");
  for (const torch::Tensor *t : {&inputs, &r, &src, &dst, &table})
    if (!t->is_contiguous() || t->device().type() != torch::kCPU) fail("tensors must be contiguous, on the CPU");
}

}    // namespace

torch::Tensor tabulated_convolution(const torch::Tensor &inputs, const torch::Tensor &r, const torch::Tensor &src,
                                    const torch::Tensor &dst, const torch::Tensor &table, double spacing,
                                    int64_t m)
{
  check(inputs, r, src, dst, table, spacing);
  torch::Tensor agg = torch::zeros({m, table.size(2)}, inputs.options());
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "tabulated_convolution", [&] {
    const auto *c = table.data_ptr<scalar_t>();
    const auto *x = inputs.data_ptr<scalar_t>();
    const auto *d = r.data_ptr<scalar_t>();
    auto *out = agg.data_ptr<scalar_t>();
    const auto inv_h = static_cast<scalar_t>(1.0 / spacing);
    forward_edges(r.size(0), table.size(2), table.size(0), inv_h, c, x, d, src.data_ptr<int64_t>(),
                  dst.data_ptr<int64_t>(), out);
  });
  return agg;
}

void tabulated_convolution_backward(const torch::Tensor &grad_agg, const torch::Tensor &inputs,
                                    const torch::Tensor &r, const torch::Tensor &src, const torch::Tensor &dst,
                                    const torch::Tensor &table, double spacing, torch::Tensor grad_inputs,
                                    torch::Tensor grad_r)
{
  check(inputs, r, src, dst, table, spacing);
  const torch::Tensor g = grad_agg.to(table.scalar_type()).contiguous();
  if (g.dim() != 2 || g.size(1) != table.size(2)) throw std::runtime_error("tabulated filter: bad grad_agg");
  if (grad_inputs.defined() && (!grad_inputs.is_contiguous() || grad_inputs.sizes() != inputs.sizes()))
    throw std::runtime_error("tabulated filter: grad_inputs must be contiguous, shaped as inputs");
  if (!grad_r.is_contiguous() || grad_r.sizes() != r.sizes() || grad_r.scalar_type() != r.scalar_type())
    throw std::runtime_error("tabulated filter: grad_r must be contiguous, shaped and typed as r");
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "tabulated_convolution_backward", [&] {
    const auto *c = table.data_ptr<scalar_t>();
    const auto *x = inputs.data_ptr<scalar_t>();
    const auto *d = r.data_ptr<scalar_t>();
    auto *gi = grad_inputs.defined() ? grad_inputs.data_ptr<scalar_t>() : nullptr;
    const auto inv_h = static_cast<scalar_t>(1.0 / spacing);
    backward_edges(r.size(0), table.size(2), table.size(0), inv_h, c, x, d, src.data_ptr<int64_t>(),
                   dst.data_ptr<int64_t>(), g.data_ptr<scalar_t>(), gi, grad_r.data_ptr<scalar_t>());
  });
}

}    // namespace eip2nn
