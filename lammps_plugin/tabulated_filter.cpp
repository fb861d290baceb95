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
// the vector helpers are always inlined: no vector crosses a call, so the ABI note is moot
#pragma GCC diagnostic ignored "-Wpsabi"

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

/* The passes go over runs of edges that share a source atom (the pair style lists each atom's edges together;
   any order is correct, runs of one only slower) and over the features in blocks of four 32-byte vectors, so that
   within a run the block of agg (forward) or of grad_agg (backward) stays in registers: with a plain loop over the
   features GCC stored and reloaded the source's row on every edge, a quarter slower. Features beyond the last
   whole block (F not a multiple of 16 doubles or 32 floats) go by the plain loop. */

template <typename T> struct Lanes {
  typedef T V __attribute__((vector_size(32)));
  typedef T U __attribute__((vector_size(32), aligned(sizeof(T)), may_alias));    // unaligned loads and stores
};
template <typename T> constexpr int LANES = 32 / sizeof(T);
template <typename T> constexpr int64_t BLOCK = 4 * LANES<T>;    // features of a block

// the end of the run of edges from e0 that share its source
ALWAYS_INLINE int64_t run_end(int64_t e0, int64_t E, const int64_t *src)
{
  int64_t e1 = e0 + 1;
  while (e1 < E && src[e1] == src[e0]) e1++;
  return e1;
}

template <typename T>
ALWAYS_INLINE void forward_pass(int64_t E, int64_t F, int64_t G, T inv_h, const T *table, const T *inputs, const T *r,
                  const int64_t *src, const int64_t *dst, T *agg)
{
  typedef typename Lanes<T>::V V;
  typedef typename Lanes<T>::U U;
  constexpr int L = LANES<T>;
  const int64_t blocked = F - F % BLOCK<T>;
  for (int64_t e0 = 0, e1; e0 < E; e0 = e1) {
    e1 = run_end(e0, E, src);
    T *a = agg + src[e0] * F;
    for (int64_t f0 = 0; f0 < blocked; f0 += BLOCK<T>) {
      V acc[4];
      for (int v = 0; v < 4; v++) acc[v] = *(const U *) (a + f0 + v * L);
      for (int64_t e = e0; e < e1; e++) {
        T t;
        const T *c = table + interval(r[e], inv_h, G, t) * 4 * F + f0;
        const T *x = inputs + dst[e] * F + f0;
        for (int v = 0; v < 4; v++) {
          const int64_t o = v * L;
          const V w = *(const U *) (c + o)
              + t * (*(const U *) (c + F + o) + t * (*(const U *) (c + 2 * F + o) + t * *(const U *) (c + 3 * F + o)));
          acc[v] += *(const U *) (x + o) * w;
        }
      }
      for (int v = 0; v < 4; v++) *(U *) (a + f0 + v * L) = acc[v];
    }
    if (blocked == F) continue;
    for (int64_t e = e0; e < e1; e++) {
      T t;
      const T *c = table + interval(r[e], inv_h, G, t) * 4 * F;
      const T *x = inputs + dst[e] * F;
      for (int64_t f = blocked; f < F; f++)
        a[f] += x[f] * (c[f] + t * (c[F + f] + t * (c[2 * F + f] + t * c[3 * F + f])));
    }
  }
}

template <typename T>
ALWAYS_INLINE void backward_pass(int64_t E, int64_t F, int64_t G, T inv_h, const T *table, const T *inputs, const T *r,
                   const int64_t *src, const int64_t *dst, const T *grad_agg, T *grad_inputs, T *grad_r)
{
  typedef typename Lanes<T>::V V;
  typedef typename Lanes<T>::U U;
  constexpr int L = LANES<T>;
  const int64_t blocked = F - F % BLOCK<T>;
  for (int64_t e0 = 0, e1; e0 < E; e0 = e1) {
    e1 = run_end(e0, E, src);
    const T *g_row = grad_agg + src[e0] * F;
    for (int64_t f0 = 0; f0 < blocked; f0 += BLOCK<T>) {
      V g[4];
      for (int v = 0; v < 4; v++) g[v] = *(const U *) (g_row + f0 + v * L);
      for (int64_t e = e0; e < e1; e++) {
        T t;
        const T *c = table + interval(r[e], inv_h, G, t) * 4 * F + f0;
        const T *x = inputs + dst[e] * F + f0;
        T *gi = grad_inputs ? grad_inputs + dst[e] * F + f0 : nullptr;
        V dr = V{};
        for (int v = 0; v < 4; v++) {
          const int64_t o = v * L;
          const V c0 = *(const U *) (c + o), c1 = *(const U *) (c + F + o), c2 = *(const U *) (c + 2 * F + o),
                  c3 = *(const U *) (c + 3 * F + o);
          dr += g[v] * *(const U *) (x + o) * (c1 + t * (T(2) * c2 + T(3) * t * c3));
          if (gi) *(U *) (gi + o) += g[v] * (c0 + t * (c1 + t * (c2 + t * c3)));
        }
        T sum = 0;
        for (int l = 0; l < L; l++) sum += dr[l];
        grad_r[e] += sum * inv_h;
      }
    }
    if (blocked == F) continue;
    for (int64_t e = e0; e < e1; e++) {
      T t;
      const T *c = table + interval(r[e], inv_h, G, t) * 4 * F;
      const T *x = inputs + dst[e] * F;
      T dr = 0;
      for (int64_t f = blocked; f < F; f++)
        dr += g_row[f] * x[f] * (c[F + f] + t * (T(2) * c[2 * F + f] + T(3) * t * c[3 * F + f]));
      grad_r[e] += dr * inv_h;
      if (grad_inputs) {
        T *gi = grad_inputs + dst[e] * F;
        for (int64_t f = blocked; f < F; f++)
          gi[f] += g_row[f] * (c[f] + t * (c[F + f] + t * (c[2 * F + f] + t * c[3 * F + f])));
      }
    }
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
