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

// w_f(t) = sum_p c[p F + f] t^p (Horner) for P coefficients; and, with it, dw_f/dt
template <typename T, int P> ALWAYS_INLINE T value(const T *c, int64_t F, int64_t f, T t)
{
  T w = c[(P - 1) * F + f];
  for (int p = P - 2; p >= 0; p--) w = c[p * F + f] + t * w;
  return w;
}

template <typename T, int P> ALWAYS_INLINE T slope(const T *c, int64_t F, int64_t f, T t)
{
  T d = T(P - 1) * c[(P - 1) * F + f];
  for (int p = P - 2; p >= 1; p--) d = T(p) * c[p * F + f] + t * d;
  return d;
}

// Paired: each edge also goes the other way (agg[dst] += inputs[src] w), with the filter evaluated once
template <typename T, int P, bool Paired>
ALWAYS_INLINE void forward_pass(int64_t E, int64_t F, int64_t G, T inv_h, const T *table, const T *inputs, const T *r,
                                const int64_t *src, const int64_t *dst, T *agg)
{
  for (int64_t e = 0; e < E; e++) {
    T t;
    const T *c = table + interval(r[e], inv_h, G, t) * P * F;
    const T *x = inputs + dst[e] * F;
    T *a = agg + src[e] * F;
    if (Paired) {
      const T *xb = inputs + src[e] * F;
      T *ab = agg + dst[e] * F;
      for (int64_t f = 0; f < F; f++) {    // no simd: a and ab are one row for an atom's edge to its own image
        const T w = value<T, P>(c, F, f, t);
        a[f] += x[f] * w;
        ab[f] += xb[f] * w;
      }
    } else {
#pragma omp simd
      for (int64_t f = 0; f < F; f++) a[f] += x[f] * value<T, P>(c, F, f, t);
    }
  }
}

template <typename T, int P, bool Paired>
ALWAYS_INLINE void backward_pass(int64_t E, int64_t F, int64_t G, T inv_h, const T *table, const T *inputs,
                                 const T *r, const int64_t *src, const int64_t *dst, const T *grad_agg,
                                 T *grad_inputs, T *grad_r)
{
  for (int64_t e = 0; e < E; e++) {
    T t;
    const T *c = table + interval(r[e], inv_h, G, t) * P * F;
    const T *x = inputs + dst[e] * F;
    const T *g = grad_agg + src[e] * F;
    T dr = 0;
    if (Paired) {
      const T *xb = inputs + src[e] * F;
      const T *gb = grad_agg + dst[e] * F;
      T *gi = grad_inputs ? grad_inputs + dst[e] * F : nullptr;
      T *gib = grad_inputs ? grad_inputs + src[e] * F : nullptr;
      for (int64_t f = 0; f < F; f++) {
        dr += (g[f] * x[f] + gb[f] * xb[f]) * slope<T, P>(c, F, f, t);
        if (gi) {
          const T w = value<T, P>(c, F, f, t);
          gi[f] += g[f] * w;
          gib[f] += gb[f] * w;
        }
      }
    } else if (grad_inputs) {    // both in one loop over the features: each coefficient loaded once (20% faster)
      T *gi = grad_inputs + dst[e] * F;
#pragma omp simd reduction(+ : dr)
      for (int64_t f = 0; f < F; f++) {
        dr += g[f] * x[f] * slope<T, P>(c, F, f, t);
        gi[f] += g[f] * value<T, P>(c, F, f, t);
      }
    } else {
#pragma omp simd reduction(+ : dr)
      for (int64_t f = 0; f < F; f++) dr += g[f] * x[f] * slope<T, P>(c, F, f, t);
    }
    grad_r[e] += dr * inv_h;
  }
}

// The same on the blocked layout (G, F / B, P, B), B = block<T> features (one 32-byte vector): the strides between
// coefficients are compile-time constants, and the edges go in runs of one interval (as order_edges_by_interval in
// the pair style sorts them, within blocks of edges): each block of B features' P coefficients is loaded once per
// run and kept in registers over its edges. An unsorted edge list gives runs of 1 and still runs.
template <typename T> constexpr int block = 32 / sizeof(T);
constexpr int MAX_RUN = 32;

// the next run: edges [e0, e0 + n) in one interval, their positions t in it; returns the interval
template <typename T>
ALWAYS_INLINE int64_t next_run(int64_t e0, int64_t E, const T *r, T inv_h, int64_t G, T *t, int64_t &n)
{
  const int64_t i = interval(r[e0], inv_h, G, t[0]);
  n = 1;
  while (n < MAX_RUN && e0 + n < E && interval(r[e0 + n], inv_h, G, t[n]) == i) n++;
  return i;
}

template <typename T, int P, bool Paired>
ALWAYS_INLINE void forward_runs(int64_t E, int64_t F, int64_t G, T inv_h, const T *table, const T *inputs,
                                const T *r, const int64_t *src, const int64_t *dst, T *agg)
{
  constexpr int B = block<T>;
  T t[MAX_RUN];
  for (int64_t e0 = 0, n = 0; e0 < E; e0 += n) {
    const T *c = table + next_run(e0, E, r, inv_h, G, t, n) * P * F;
    for (int64_t f0 = 0; f0 < F; f0 += B, c += P * B) {
      T cc[P][B];
      for (int p = 0; p < P; p++)
        for (int f = 0; f < B; f++) cc[p][f] = c[p * B + f];
      for (int q = 0; q < n; q++) {
        const T *x = inputs + dst[e0 + q] * F + f0;
        T *a = agg + src[e0 + q] * F + f0;
        const T tq = t[q];
        if (Paired) {    // a and ab are one row for an edge to an own image: a's update is stored first
          const T *xb = inputs + src[e0 + q] * F + f0;
          T *ab = agg + dst[e0 + q] * F + f0;
          T w[B];
#pragma omp simd
          for (int f = 0; f < B; f++) {
            w[f] = value<T, P>(&cc[0][0], B, f, tq);
            a[f] += x[f] * w[f];
          }
#pragma omp simd
          for (int f = 0; f < B; f++) ab[f] += xb[f] * w[f];
        } else {
#pragma omp simd
          for (int f = 0; f < B; f++) a[f] += x[f] * value<T, P>(&cc[0][0], B, f, tq);
        }
      }
    }
  }
}

template <typename T, int P, bool Paired>
ALWAYS_INLINE void backward_runs(int64_t E, int64_t F, int64_t G, T inv_h, const T *table, const T *inputs,
                                 const T *r, const int64_t *src, const int64_t *dst, const T *grad_agg,
                                 T *grad_inputs, T *grad_r)
{
  constexpr int B = block<T>;
  T t[MAX_RUN];
  for (int64_t e0 = 0, n = 0; e0 < E; e0 += n) {
    const T *c = table + next_run(e0, E, r, inv_h, G, t, n) * P * F;
    T dr[MAX_RUN][B] = {};    // per edge and lane, summed at the end of the run
    for (int64_t f0 = 0; f0 < F; f0 += B, c += P * B) {
      T cc[P][B], dc[P - 1][B];    // the coefficients of w and of dw/dt
      for (int p = 0; p < P; p++)
        for (int f = 0; f < B; f++) cc[p][f] = c[p * B + f];
      for (int p = 1; p < P; p++)
        for (int f = 0; f < B; f++) dc[p - 1][f] = T(p) * cc[p][f];
      for (int q = 0; q < n; q++) {
        const T *x = inputs + dst[e0 + q] * F + f0;
        const T *g = grad_agg + src[e0 + q] * F + f0;
        T *gi = grad_inputs ? grad_inputs + dst[e0 + q] * F + f0 : nullptr;
        const T tq = t[q];
        if (Paired) {
          const T *xb = inputs + src[e0 + q] * F + f0;
          const T *gb = grad_agg + dst[e0 + q] * F + f0;
          if (gi) {    // as forward: gi and gib are one row for an edge to an own image
            T *gib = grad_inputs + src[e0 + q] * F + f0;
            T w[B];
#pragma omp simd
            for (int f = 0; f < B; f++) {
              dr[q][f] += (g[f] * x[f] + gb[f] * xb[f]) * value<T, P - 1>(&dc[0][0], B, f, tq);
              w[f] = value<T, P>(&cc[0][0], B, f, tq);
              gi[f] += g[f] * w[f];
            }
#pragma omp simd
            for (int f = 0; f < B; f++) gib[f] += gb[f] * w[f];
          } else {
#pragma omp simd
            for (int f = 0; f < B; f++)
              dr[q][f] += (g[f] * x[f] + gb[f] * xb[f]) * value<T, P - 1>(&dc[0][0], B, f, tq);
          }
        } else if (gi) {
#pragma omp simd
          for (int f = 0; f < B; f++) {
            dr[q][f] += g[f] * x[f] * value<T, P - 1>(&dc[0][0], B, f, tq);
            gi[f] += g[f] * value<T, P>(&cc[0][0], B, f, tq);
          }
        } else {
#pragma omp simd
          for (int f = 0; f < B; f++) dr[q][f] += g[f] * x[f] * value<T, P - 1>(&dc[0][0], B, f, tq);
        }
      }
    }
    for (int q = 0; q < n; q++) {
      T sum = 0;
      for (int f = 0; f < B; f++) sum += dr[q][f];
      grad_r[e0 + q] += sum * inv_h;
    }
  }
}

// P: 4 (cubic) or 6 (quintic) coefficients; blocked: the table in the blocked layout; the first `pairs` edges go
// both ways
template <typename T, bool Paired>
ALWAYS_INLINE void forward_one(int64_t P, bool blocked, int64_t E, int64_t F, int64_t G, T inv_h, const T *table,
                               const T *inputs, const T *r, const int64_t *src, const int64_t *dst, T *agg)
{
  if (blocked && P == 6) forward_runs<T, 6, Paired>(E, F, G, inv_h, table, inputs, r, src, dst, agg);
  else if (blocked) forward_runs<T, 4, Paired>(E, F, G, inv_h, table, inputs, r, src, dst, agg);
  else if (P == 6) forward_pass<T, 6, Paired>(E, F, G, inv_h, table, inputs, r, src, dst, agg);
  else forward_pass<T, 4, Paired>(E, F, G, inv_h, table, inputs, r, src, dst, agg);
}

template <typename T>
ALWAYS_INLINE void forward_any(int64_t P, bool blocked, int64_t pairs, int64_t E, int64_t F, int64_t G, T inv_h,
                               const T *table, const T *inputs, const T *r, const int64_t *src, const int64_t *dst,
                               T *agg)
{
  forward_one<T, true>(P, blocked, pairs, F, G, inv_h, table, inputs, r, src, dst, agg);
  forward_one<T, false>(P, blocked, E - pairs, F, G, inv_h, table, inputs, r + pairs, src + pairs, dst + pairs, agg);
}

template <typename T, bool Paired>
ALWAYS_INLINE void backward_one(int64_t P, bool blocked, int64_t E, int64_t F, int64_t G, T inv_h, const T *table,
                                const T *inputs, const T *r, const int64_t *src, const int64_t *dst,
                                const T *grad_agg, T *grad_inputs, T *grad_r)
{
  if (blocked && P == 6)
    backward_runs<T, 6, Paired>(E, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
  else if (blocked)
    backward_runs<T, 4, Paired>(E, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
  else if (P == 6)
    backward_pass<T, 6, Paired>(E, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
  else
    backward_pass<T, 4, Paired>(E, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
}

template <typename T>
ALWAYS_INLINE void backward_any(int64_t P, bool blocked, int64_t pairs, int64_t E, int64_t F, int64_t G, T inv_h,
                                const T *table, const T *inputs, const T *r, const int64_t *src, const int64_t *dst,
                                const T *grad_agg, T *grad_inputs, T *grad_r)
{
  backward_one<T, true>(P, blocked, pairs, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
  backward_one<T, false>(P, blocked, E - pairs, F, G, inv_h, table, inputs, r + pairs, src + pairs, dst + pairs,
                         grad_agg, grad_inputs, grad_r + pairs);
}

// one clone set per dtype, overloaded (target_clones takes no templates)
SIMD_CLONES void forward_edges(int64_t P, bool blocked, int64_t pairs, int64_t E, int64_t F, int64_t G, double inv_h,
                               const double *table, const double *inputs, const double *r, const int64_t *src,
                               const int64_t *dst, double *agg)
{
  forward_any<double>(P, blocked, pairs, E, F, G, inv_h, table, inputs, r, src, dst, agg);
}

SIMD_CLONES void forward_edges(int64_t P, bool blocked, int64_t pairs, int64_t E, int64_t F, int64_t G, float inv_h,
                               const float *table, const float *inputs, const float *r, const int64_t *src,
                               const int64_t *dst, float *agg)
{
  forward_any<float>(P, blocked, pairs, E, F, G, inv_h, table, inputs, r, src, dst, agg);
}

SIMD_CLONES void backward_edges(int64_t P, bool blocked, int64_t pairs, int64_t E, int64_t F, int64_t G,
                                double inv_h, const double *table, const double *inputs, const double *r,
                                const int64_t *src, const int64_t *dst, const double *grad_agg, double *grad_inputs,
                                double *grad_r)
{
  backward_any<double>(P, blocked, pairs, E, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
}

SIMD_CLONES void backward_edges(int64_t P, bool blocked, int64_t pairs, int64_t E, int64_t F, int64_t G, float inv_h,
                                const float *table, const float *inputs, const float *r, const int64_t *src,
                                const int64_t *dst, const float *grad_agg, float *grad_inputs, float *grad_r)
{
  backward_any<float>(P, blocked, pairs, E, F, G, inv_h, table, inputs, r, src, dst, grad_agg, grad_inputs, grad_r);
}

// the table's intervals, coefficients per interval and features: (G, P, F), or blocked (G, F / B, P, B)
struct Shape {
  int64_t G, P, F;
  bool blocked;
};

int64_t block_of(const torch::Tensor &table)
{
  return table.scalar_type() == torch::kFloat32 ? block<float> : block<double>;
}

Shape check(const torch::Tensor &inputs, const torch::Tensor &r, const torch::Tensor &src, const torch::Tensor &dst,
            const torch::Tensor &table, double spacing, int64_t pairs)
{
  auto fail = [](const std::string &what) { throw std::runtime_error("tabulated filter: " + what); };
  const int64_t B = block_of(table);
  const bool blocked = table.dim() == 4 && table.size(3) == B;
  if (table.dim() != 3 && !blocked) fail("table must be (intervals, coefficients, features) or blocked");
  const Shape shape{table.size(0), table.size(blocked ? 2 : 1), blocked ? table.size(1) * B : table.size(2), blocked};
  if (shape.P != 4 && shape.P != 6) fail("the table must have 4 or 6 coefficients per interval");
  if (inputs.dim() != 2 || inputs.size(1) != shape.F) fail("inputs must be (atoms, features of the table)");
  if (inputs.scalar_type() != table.scalar_type() || r.scalar_type() != table.scalar_type())
    fail("inputs, r and table must share a dtype");
  if (r.dim() != 1 || src.size(0) != r.size(0) || dst.size(0) != r.size(0)) fail("r, src and dst: one per edge");
  if (src.scalar_type() != torch::kInt64 || dst.scalar_type() != torch::kInt64) fail("src and dst must be int64");
  if (!(spacing > 0.0)) fail("spacing must be > 0");
  if (pairs < 0 || pairs > r.size(0)) fail("pairs must be within 0 and the number of edges");
  for (const torch::Tensor *t : {&inputs, &r, &src, &dst, &table})
    if (!t->is_contiguous() || t->device().type() != torch::kCPU) fail("tensors must be contiguous, on the CPU");
  return shape;
}

}    // namespace

torch::Tensor blocked_filter_table(const torch::Tensor &table)
{
  const int64_t B = block_of(table);
  if (table.dim() != 3 || table.size(2) % B != 0) return table;
  return table.reshape({table.size(0), table.size(1), table.size(2) / B, B}).permute({0, 2, 1, 3}).contiguous();
}

torch::Tensor tabulated_convolution(const torch::Tensor &inputs, const torch::Tensor &r, const torch::Tensor &src,
                                    const torch::Tensor &dst, const torch::Tensor &table, double spacing,
                                    int64_t m, int64_t pairs)
{
  const Shape shape = check(inputs, r, src, dst, table, spacing, pairs);
  torch::Tensor agg = torch::zeros({m, shape.F}, inputs.options());
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "tabulated_convolution", [&] {
    const auto *c = table.data_ptr<scalar_t>();
    const auto *x = inputs.data_ptr<scalar_t>();
    const auto *d = r.data_ptr<scalar_t>();
    auto *out = agg.data_ptr<scalar_t>();
    const auto inv_h = static_cast<scalar_t>(1.0 / spacing);
    forward_edges(shape.P, shape.blocked, pairs, r.size(0), shape.F, shape.G, inv_h, c, x, d, src.data_ptr<int64_t>(),
                  dst.data_ptr<int64_t>(), out);
  });
  return agg;
}

void tabulated_convolution_backward(const torch::Tensor &grad_agg, const torch::Tensor &inputs,
                                    const torch::Tensor &r, const torch::Tensor &src, const torch::Tensor &dst,
                                    const torch::Tensor &table, double spacing, torch::Tensor grad_inputs,
                                    torch::Tensor grad_r, int64_t pairs)
{
  const Shape shape = check(inputs, r, src, dst, table, spacing, pairs);
  const torch::Tensor g = grad_agg.to(table.scalar_type()).contiguous();
  if (g.dim() != 2 || g.size(1) != shape.F) throw std::runtime_error("tabulated filter: bad grad_agg");
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
    backward_edges(shape.P, shape.blocked, pairs, r.size(0), shape.F, shape.G, inv_h, c, x, d, src.data_ptr<int64_t>(),
                   dst.data_ptr<int64_t>(), g.data_ptr<scalar_t>(), gi, grad_r.data_ptr<scalar_t>());
  });
}

}    // namespace eip2nn
