/* ----------------------------------------------------------------------
   NativeSymmetryFunctions: see native_symmetry_functions.h. The values follow
   eip2nn/nn/sf_torch.py (same tables, same cut-off formula); the gradients are
   the reverse of the same expressions, written out below.

   Per neighbour pair (a, b) of atom i, with c = cos(theta), r_a = |v_a|,
   r_b = |v_b|, r_jk = |v_b - v_a|, the cut-offs f_a, f_b, f_jk and their
   derivatives f'_a ...:
     G4_k += A_p(c) X4_q F4,  X4_q = exp(-eta_q (r_a^2 + r_b^2 + r_jk^2)),  F4 = f_a f_b f_jk
     G5_k += A_p(c) X5_q F5,  X5_q = exp(-eta_q (r_a^2 + r_b^2)),           F5 = f_a f_b
   so with S = sum_k beta_k A'_p X_q, T = sum_k beta_k A_p X_q, T_eta = sum_k beta_k A_p X_q eta_q:
     dE/dc    += S F
     dE/dr_a  += T f'_a f_b (f_jk) - 2 r_a T_eta F,   dE/dr_b likewise,
     dE/dr_jk += T f_a f_b f'_jk - 2 r_jk T_eta F4     (G4 only)
   and to the vectors: dr_a/dv_a = u_a = v_a / r_a, dc/dv_a = (u_b - c u_a) / r_a,
   dr_jk/dv_b = -dr_jk/dv_a = (v_b - v_a) / r_jk.
------------------------------------------------------------------------- */

#include "native_symmetry_functions.h"
#include "simd_clones.h"
#include "simd_exp.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

using eip2nn::NativeSymmetryFunctions;
using eip2nn::PAIR_LANES;

// the pair loops: SIMD_CLONES (simd_clones.h)
#define ALWAYS_INLINE inline __attribute__((always_inline))
// the vector helpers below are always inlined: no vector crosses a call, so the ABI note is moot
#pragma GCC diagnostic ignored "-Wpsabi"

namespace {

const double PI = 3.14159265358979323846;
const double R_MIN = 1e-10;    // an edge this short counts 0 (as in native_bispectrum)
const int MAX_INT_ZETA = 64;   // an integer zeta up to this goes by repeated multiplication, not pow

// PAIR_LANES doubles (int64s); aligned as a double and allowed to alias doubles, so that a buffer of doubles
// (entry-major: entry i of lane l at [i * PAIR_LANES + l]) can be read as vectors
typedef double Vec __attribute__((vector_size(8 * PAIR_LANES), aligned(8), may_alias));
typedef int64_t IntVec __attribute__((vector_size(8 * PAIR_LANES), aligned(8), may_alias));

ALWAYS_INLINE Vec &lanes(std::vector<double> &buffer, int entry)
{
  return *reinterpret_cast<Vec *>(&buffer[(size_t) entry * PAIR_LANES]);
}

// buffer[offset + l] += v[l], l < PAIR_LANES (per-edge arrays: edges b0 ... b0 + PAIR_LANES - 1)
ALWAYS_INLINE void lanes_add(std::vector<double> &buffer, int offset, Vec v)
{
  *reinterpret_cast<Vec *>(&buffer[offset]) += v;
}

ALWAYS_INLINE Vec load(const double *p)
{
  return *reinterpret_cast<const Vec *>(p);
}

ALWAYS_INLINE Vec splat(double x)
{
  return Vec{} + x;
}

ALWAYS_INLINE double sum_lanes(Vec v)
{
  double s = 0.0;
  for (int l = 0; l < PAIR_LANES; l++) s += v[l];
  return s;
}

ALWAYS_INLINE Vec vsqrt(Vec x)
{
  for (int l = 0; l < PAIR_LANES; l++) x[l] = __builtin_sqrt(x[l]);    // -fno-math-errno: one instruction
  return x;
}

// exp(x) lane by lane (simd_exp.h): within 2 ulp of std::exp
ALWAYS_INLINE Vec vexp(Vec x)
{
  return eip2nn::vexp_lanes<Vec, IntVec>(x);
}

// Taylor coefficients of sin(t) / t and cos(t) in t^2: (-1)^j / (2j+1)!, (-1)^j / (2j)!, j = 0 ... 12
const double SIN_COEF[13] = {1.0, -0.16666666666666666, 0.008333333333333333, -0.0001984126984126984, 2.7557319223985893e-06, -2.505210838544172e-08, 1.6059043836821613e-10, -7.647163731819816e-13, 2.8114572543455206e-15, -8.22063524662433e-18, 1.9572941063391263e-20, -3.868170170630684e-23, 6.446950284384474e-26};
const double COS_COEF[13] = {1.0, -0.5, 0.041666666666666664, -0.001388888888888889, 2.48015873015873e-05, -2.755731922398589e-07, 2.08767569878681e-09, -1.1470745597729725e-11, 4.779477332387385e-14, -1.5619206968586225e-16, 4.110317623312165e-19, -8.896791392450574e-22, 1.6117375710961184e-24};

// cos(theta) and sin(theta) lane by lane for theta in [0, pi]: with t = theta - pi/2 in [-pi/2, pi/2],
// cos theta = -sin t and sin theta = cos t, both by their Taylor series to t^25 and t^24 (error < 1e-20)
ALWAYS_INLINE void vcos_sin(Vec theta, Vec &c, Vec &s)
{
  const double PIO2_HI = 1.57079632679489655800e+00, PIO2_LO = 6.12323399573676603587e-17;
  const Vec t = (theta - PIO2_HI) - PIO2_LO, z = t * t;
  Vec sin_t = splat(SIN_COEF[12]), cos_t = splat(COS_COEF[12]);
  for (int j = 11; j >= 0; j--) {
    sin_t = sin_t * z + SIN_COEF[j];
    cos_t = cos_t * z + COS_COEF[j];
  }
  c = -(sin_t * t);
  s = cos_t;
}

// x^m for m >= 0 by repeated squaring
template <class T> ALWAYS_INLINE T int_power(T x, int m)
{
  T result = x * 0.0 + 1.0;
  while (m > 0) {
    if (m & 1) result *= x;
    x *= x;
    m >>= 1;
  }
  return result;
}

std::runtime_error table_error(const std::string &what)
{
  return std::runtime_error("symmetry-function tables of the model (backbone.descriptor): " + what);
}

c10::IValue attribute(const torch::jit::Module &m, const std::string &name)
{
  if (!m.hasattr(name)) throw table_error("no attribute '" + name + "'");
  return m.attr(name);
}

// buffer `name` as a float64 (K, columns) tensor
torch::Tensor table(const torch::jit::Module &m, const std::string &name, int64_t columns)
{
  c10::IValue v = attribute(m, name);
  if (!v.isTensor()) throw table_error("'" + name + "' is not a tensor");
  torch::Tensor t = v.toTensor();
  if (!t.is_floating_point() || t.dim() != 2 || t.size(1) != columns)
    throw table_error("'" + name + "' is " + std::string(c10::toString(t.scalar_type())) + " of shape " +
                      c10::str(t.sizes()) + ", expected floats of shape (K, " + std::to_string(columns) + ")");
  return t.to(torch::kFloat64).contiguous();
}

// the distinct values of `values`, in first-seen order, and for each value its index among them
std::vector<int> index_distinct(const std::vector<double> &values, std::vector<double> &distinct)
{
  std::vector<int> index;
  for (double x : values) {
    auto it = std::find(distinct.begin(), distinct.end(), x);
    index.push_back((int) (it - distinct.begin()));
    if (it == distinct.end()) distinct.push_back(x);
  }
  return index;
}

}    // namespace

/* ---------------------------------------------------------------------- */

NativeSymmetryFunctions::NativeSymmetryFunctions(const torch::jit::Module &m)
{
  c10::IValue cut = attribute(m, "cutoff");
  if (!cut.isDouble() || !(cut.toDouble() > 0.0)) throw table_error("'cutoff' is not a positive float");
  cutoff = cut.toDouble();

  torch::Tensor g1 = table(m, "g1", 1), g2 = table(m, "g2", 2), g3 = table(m, "g3", 1);
  torch::Tensor g4 = table(m, "g4", 3), g5 = table(m, "g5", 3);
  n1 = (int) g1.size(0), n2 = (int) g2.size(0), n3 = (int) g3.size(0);
  n4 = (int) g4.size(0), n5 = (int) g5.size(0);
  n_functions = n1 + n2 + n3 + n4 + n5;

  // kliff_order[d] = block column of output column d: invert it
  c10::IValue order_value = attribute(m, "kliff_order");
  if (!order_value.isTensor()) throw table_error("'kliff_order' is not a tensor");
  torch::Tensor order = order_value.toTensor();
  if (order.is_floating_point() || order.numel() != n_functions)
    throw table_error("'kliff_order' has " + std::to_string(order.numel()) + " entries, expected " +
                      std::to_string(n_functions) + " integers");
  order = order.reshape({-1}).to(torch::kInt64).contiguous();
  kliff_column.assign(n_functions, -1);
  const int64_t *po = order.data_ptr<int64_t>();
  for (int d = 0; d < n_functions; d++) {
    if (po[d] < 0 || po[d] >= n_functions || kliff_column[po[d]] >= 0)
      throw table_error("'kliff_order' is not a permutation of 0 ... " + std::to_string(n_functions - 1));
    kliff_column[po[d]] = d;
  }

  const double *p2 = g2.data_ptr<double>(), *p3 = g3.data_ptr<double>();
  for (int i = 0; i < n2; i++) {
    g2_eta.push_back(p2[2 * i]);
    g2_rs.push_back(p2[2 * i + 1]);
  }
  g3_kappa.assign(p3, p3 + n3);

  // G4 and G5: distinct (zeta, lambda) (shared) and distinct eta (each its own), so that each factor of a
  // pair is computed once
  std::vector<std::pair<double, double>> angles;
  auto angle_of = [&angles](double zeta, double lambda) {
    auto key = std::make_pair(zeta, lambda);
    auto it = std::find(angles.begin(), angles.end(), key);
    if (it != angles.end()) return (int) (it - angles.begin());
    angles.push_back(key);
    return (int) angles.size() - 1;
  };
  std::vector<double> etas4, etas5;
  const double *p4 = g4.data_ptr<double>(), *p5 = g5.data_ptr<double>();
  for (int k = 0; k < n4; k++) {
    g4_angle.push_back(angle_of(p4[3 * k], p4[3 * k + 1]));
    etas4.push_back(p4[3 * k + 2]);
  }
  for (int k = 0; k < n5; k++) {
    g5_angle.push_back(angle_of(p5[3 * k], p5[3 * k + 1]));
    etas5.push_back(p5[3 * k + 2]);
  }
  g4_eta = index_distinct(etas4, eta4);
  g5_eta = index_distinct(etas5, eta5);
  for (auto [zeta, lambda] : angles) {
    if (!(zeta > 0.0)) throw table_error("zeta " + std::to_string(zeta) + " is not positive");
    angle_scale.push_back(std::pow(2.0, 1.0 - zeta));
    angle_zeta.push_back(zeta);
    angle_lambda.push_back(lambda);
    const bool integer = zeta == std::floor(zeta) && zeta <= MAX_INT_ZETA;
    angle_int_zeta.push_back(integer ? (int) zeta : -1);
  }
  for (auto *v : {&pc, &prjk, &pfc, &pdfc}) v->resize(PAIR_LANES);
  pa.resize(angles.size() * PAIR_LANES);
  pda.resize(angles.size() * PAIR_LANES);
  x4.resize(eta4.size() * PAIR_LANES);
  x5.resize(eta5.size() * PAIR_LANES);
  sums.resize((n4 + n5) * PAIR_LANES);
  block.resize(n_functions);
  beta_block.resize(n_functions);
}

/* ---------------------------------------------------------------------- */

std::string NativeSymmetryFunctions::summary() const
{
  std::string kinds;
  const int counts[5] = {n1, n2, n3, n4, n5};
  for (int k = 0; k < 5; k++)
    if (counts[k] > 0) kinds += (kinds.empty() ? "" : ", ") + std::to_string(counts[k]) + " G" + std::to_string(k + 1);
  return std::to_string(n_functions) + " functions (" + kinds + ")";
}

/* ---------------------------------------------------------------------- */

void NativeSymmetryFunctions::load_edges(const double *vectors, int n)
{
  const int q4 = (int) eta4.size(), q5 = (int) eta5.size();
  edge_index.clear();
  for (int t = 0; t < n; t++) {
    const double *v = vectors + 3 * t;
    const double r = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (r < cutoff && r > R_MIN) edge_index.push_back(t);
  }
  m = (int) edge_index.size();
  stride = m + PAIR_LANES;    // a batch starting at b0 < m ends before stride
  for (auto *a : {&ex, &ey, &ez, &er, &einv, &efc, &edfc}) a->assign(stride, 0.0);
  e4.assign((size_t) q4 * stride, 0.0);
  e5.assign((size_t) q5 * stride, 0.0);
  for (int t = 0; t < m; t++) {
    const double *v = vectors + 3 * edge_index[t];
    const double r = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    ex[t] = v[0], ey[t] = v[1], ez[t] = v[2];
    er[t] = r;
    einv[t] = 1.0 / r;
    efc[t] = 0.5 * (std::cos(r * PI / cutoff) + 1.0);
    edfc[t] = -0.5 * PI / cutoff * std::sin(r * PI / cutoff);
    for (int q = 0; q < q4; q++) e4[q * stride + t] = std::exp(-eta4[q] * r * r);
    for (int q = 0; q < q5; q++) e5[q * stride + t] = std::exp(-eta5[q] * r * r);
  }
}

/* ----------------------------------------------------------------------
   lanes b = b0 ... b0 + PAIR_LANES - 1 (padding lanes past m have zero
   vectors and cut-offs, so that everything they add is 0)
------------------------------------------------------------------------- */

ALWAYS_INLINE void NativeSymmetryFunctions::pair_factors(int a, int b0, bool derivative)
{
  const double ax = ex[a], ay = ey[a], az = ez[a];
  const Vec bx = load(&ex[b0]), by = load(&ey[b0]), bz = load(&ez[b0]);
  const Vec dx = bx - ax, dy = by - ay, dz = bz - az;
  const Vec rjk2 = dx * dx + dy * dy + dz * dz, rjk = vsqrt(rjk2);
  const Vec c = (bx * ax + by * ay + bz * az) * einv[a] * load(&einv[b0]);
  lanes(pc, 0) = c;
  lanes(prjk, 0) = rjk;

  // fc(r_jk) and its derivative, 0 from the cut-off on
  const auto inside = rjk < cutoff;
  Vec cos_jk, sin_jk;
  vcos_sin(inside ? rjk * PI / cutoff : splat(0.0), cos_jk, sin_jk);
  lanes(pfc, 0) = inside ? 0.5 * (cos_jk + 1.0) : splat(0.0);
  lanes(pdfc, 0) = inside ? (-0.5 * PI / cutoff) * sin_jk : splat(0.0);

  // A_p = 2^(1-zeta) (1 + lambda c)^zeta, dA_p/dc; 0 where the base is <= 0 (KLIFF)
  for (size_t p = 0; p < angle_scale.size(); p++) {
    const Vec base = 1.0 + angle_lambda[p] * c;
    const auto positive = base > 0.0;
    Vec below;    // base^(zeta-1)
    const int mz = angle_int_zeta[p];
    if (mz > 0)
      below = int_power(base, mz - 1);
    else
      for (int l = 0; l < PAIR_LANES; l++) below[l] = base[l] > 0.0 ? std::pow(base[l], angle_zeta[p] - 1.0) : 0.0;
    lanes(pa, p) = positive ? angle_scale[p] * below * base : splat(0.0);
    if (derivative)
      lanes(pda, p) = positive ? (angle_scale[p] * angle_zeta[p] * angle_lambda[p]) * below : splat(0.0);
  }
  for (size_t q = 0; q < eta5.size(); q++) lanes(x5, q) = e5[q * stride + a] * load(&e5[q * stride + b0]);
  for (size_t q = 0; q < eta4.size(); q++)
    lanes(x4, q) = e4[q * stride + a] * load(&e4[q * stride + b0]) * vexp(-eta4[q] * rjk2);
}

/* ---------------------------------------------------------------------- */

SIMD_CLONES void NativeSymmetryFunctions::values(const double *vectors, int n, double *g)
{
  load_edges(vectors, n);
  const int o2 = n1, o3 = n1 + n2, o4 = o3 + n3;
  std::fill(block.begin(), block.end(), 0.0);
  for (int t = 0; t < m; t++) {
    const double r = er[t], fc = efc[t];
    for (int i = 0; i < n1; i++) block[i] += fc;
    for (int i = 0; i < n2; i++) block[o2 + i] += std::exp(-g2_eta[i] * (r - g2_rs[i]) * (r - g2_rs[i])) * fc;
    for (int i = 0; i < n3; i++) block[o3 + i] += std::cos(g3_kappa[i] * r) * fc;
  }
  if (n4 + n5 > 0) {
    std::fill(sums.begin(), sums.end(), 0.0);
    for (int a = 0; a < m; a++)
      for (int b0 = a + 1; b0 < m; b0 += PAIR_LANES) {
        pair_factors(a, b0, false);
        const Vec f5 = efc[a] * load(&efc[b0]), f4 = f5 * lanes(pfc, 0);
        for (int k = 0; k < n4; k++) lanes(sums, k) += lanes(pa, g4_angle[k]) * lanes(x4, g4_eta[k]) * f4;
        for (int k = 0; k < n5; k++) lanes(sums, n4 + k) += lanes(pa, g5_angle[k]) * lanes(x5, g5_eta[k]) * f5;
      }
    for (int k = 0; k < n4 + n5; k++) block[o4 + k] = sum_lanes(lanes(sums, k));
  }
  for (int i = 0; i < n_functions; i++) g[kliff_column[i]] = block[i];
}

/* ---------------------------------------------------------------------- */

double NativeSymmetryFunctions::radial_gradient(int t, const double *beta) const
{
  const double r = er[t], fc = efc[t], dfc = edfc[t];
  double s = 0.0;
  for (int i = 0; i < n1; i++) s += beta[i] * dfc;
  for (int i = 0; i < n2; i++) {
    const double x = r - g2_rs[i], ex_ = std::exp(-g2_eta[i] * x * x);
    s += beta[n1 + i] * ex_ * (dfc - 2.0 * g2_eta[i] * x * fc);
  }
  for (int i = 0; i < n3; i++) {
    const double kr = g3_kappa[i] * r;
    s += beta[n1 + n2 + i] * (std::cos(kr) * dfc - g3_kappa[i] * std::sin(kr) * fc);
  }
  return s;
}

/* ---------------------------------------------------------------------- */

SIMD_CLONES void NativeSymmetryFunctions::edge_gradients(const double *vectors, int n, const double *beta,
                                                         double *g)
{
  load_edges(vectors, n);
  for (int i = 0; i < n_functions; i++) beta_block[i] = beta[kliff_column[i]];
  const double *b4 = &beta_block[n1 + n2 + n3], *b5 = b4 + n4;
  for (auto *v : {&gx, &gy, &gz}) v->assign(stride, 0.0);

  for (int t = 0; t < m; t++) {
    const double s = radial_gradient(t, beta_block.data()) * einv[t];
    gx[t] += s * ex[t], gy[t] += s * ey[t], gz[t] += s * ez[t];
  }
  if (n4 + n5 > 0)
    for (int a = 0; a < m; a++) {
      const double fa = efc[a], dfa = edfc[a], ra = er[a], ia = einv[a];
      const double uax = ex[a] * ia, uay = ey[a] * ia, uaz = ez[a] * ia;
      Vec gax = splat(0.0), gay = splat(0.0), gaz = splat(0.0);    // dE/dv_a, by lanes
      for (int b0 = a + 1; b0 < m; b0 += PAIR_LANES) {
        pair_factors(a, b0, true);
        const Vec fb = load(&efc[b0]), dfb = load(&edfc[b0]), rb = load(&er[b0]), ib = load(&einv[b0]);
        const Vec c = lanes(pc, 0), rjk = lanes(prjk, 0), fjk = lanes(pfc, 0), dfjk = lanes(pdfc, 0);
        // S = sum_k beta_k A'_p X_q, T = sum_k beta_k A_p X_q, T_eta = sum_k beta_k A_p X_q eta_q
        Vec s4 = splat(0.0), t4 = splat(0.0), te4 = splat(0.0), s5 = splat(0.0), t5 = splat(0.0), te5 = splat(0.0);
        for (int k = 0; k < n4; k++) {
          const Vec wx = b4[k] * lanes(x4, g4_eta[k]), wt = wx * lanes(pa, g4_angle[k]);
          s4 += wx * lanes(pda, g4_angle[k]);
          t4 += wt;
          te4 += wt * eta4[g4_eta[k]];
        }
        for (int k = 0; k < n5; k++) {
          const Vec wx = b5[k] * lanes(x5, g5_eta[k]), wt = wx * lanes(pa, g5_angle[k]);
          s5 += wx * lanes(pda, g5_angle[k]);
          t5 += wt;
          te5 += wt * eta5[g5_eta[k]];
        }
        const Vec f5 = fa * fb, f4 = f5 * fjk;
        const Vec de_dc = s4 * f4 + s5 * f5;
        const Vec de_dra = (t4 * fjk + t5) * (dfa * fb) - 2.0 * ra * (te4 * f4 + te5 * f5);
        const Vec de_drb = (t4 * fjk + t5) * (fa * dfb) - 2.0 * rb * (te4 * f4 + te5 * f5);
        const Vec de_drjk = t4 * f5 * dfjk - 2.0 * rjk * te4 * f4;
        const Vec ijk = de_drjk / rjk;    // r_jk > 0: distinct neighbours (padding lanes: r_jk = r_a)
        const Vec ubx = load(&ex[b0]) * ib, uby = load(&ey[b0]) * ib, ubz = load(&ez[b0]) * ib;
        const Vec djx = (load(&ex[b0]) - ex[a]) * ijk, djy = (load(&ey[b0]) - ey[a]) * ijk,
                  djz = (load(&ez[b0]) - ez[a]) * ijk;
        gax += de_dra * uax + de_dc * (ubx - c * uax) * ia - djx;
        gay += de_dra * uay + de_dc * (uby - c * uay) * ia - djy;
        gaz += de_dra * uaz + de_dc * (ubz - c * uaz) * ia - djz;
        lanes_add(gx, b0, de_drb * ubx + de_dc * (uax - c * ubx) * ib + djx);
        lanes_add(gy, b0, de_drb * uby + de_dc * (uay - c * uby) * ib + djy);
        lanes_add(gz, b0, de_drb * ubz + de_dc * (uaz - c * ubz) * ib + djz);
      }
      gx[a] += sum_lanes(gax), gy[a] += sum_lanes(gay), gz[a] += sum_lanes(gaz);
    }

  std::fill(g, g + 3 * n, 0.0);
  for (int t = 0; t < m; t++) {
    double *gt = g + 3 * edge_index[t];
    gt[0] = gx[t], gt[1] = gy[t], gt[2] = gz[t];
  }
}
