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

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

using eip2nn::NativeSymmetryFunctions;

namespace {

const double PI = 3.14159265358979323846;
const double R_MIN = 1e-10;    // an edge this short counts 0 (as in native_bispectrum)
const int MAX_INT_ZETA = 64;   // an integer zeta up to this goes by repeated multiplication, not pow

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

// x^m for m >= 0 by repeated squaring
inline double int_power(double x, int m)
{
  double result = 1.0;
  while (m > 0) {
    if (m & 1) result *= x;
    x *= x;
    m >>= 1;
  }
  return result;
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
  pa.resize(angles.size());
  pda.resize(angles.size());
  x4.resize(eta4.size());
  x5.resize(eta5.size());
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
  ev.clear();
  er.clear();
  einv.clear();
  efc.clear();
  edfc.clear();
  e4.clear();
  e5.clear();
  for (int t = 0; t < n; t++) {
    const double *v = vectors + 3 * t;
    const double r = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (r >= cutoff || r <= R_MIN) continue;
    edge_index.push_back(t);
    ev.insert(ev.end(), v, v + 3);
    er.push_back(r);
    einv.push_back(1.0 / r);
    efc.push_back(0.5 * (std::cos(r * PI / cutoff) + 1.0));
    edfc.push_back(-0.5 * PI / cutoff * std::sin(r * PI / cutoff));
    for (int q = 0; q < q4; q++) e4.push_back(std::exp(-eta4[q] * r * r));
    for (int q = 0; q < q5; q++) e5.push_back(std::exp(-eta5[q] * r * r));
  }
}

/* ---------------------------------------------------------------------- */

bool NativeSymmetryFunctions::pair_factors(int a, int b, bool derivative, double &c, double &r_jk, double &fc_jk,
                                           double &dfc_jk)
{
  const double *va = &ev[3 * a], *vb = &ev[3 * b];
  const double d[3] = {vb[0] - va[0], vb[1] - va[1], vb[2] - va[2]};
  const double rjk2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
  r_jk = std::sqrt(rjk2);
  c = (va[0] * vb[0] + va[1] * vb[1] + va[2] * vb[2]) * einv[a] * einv[b];

  for (size_t p = 0; p < pa.size(); p++) {
    const double base = 1.0 + angle_lambda[p] * c;
    if (base <= 0.0) {    // KLIFF: such a pair counts 0
      pa[p] = pda[p] = 0.0;
      continue;
    }
    const int m = angle_int_zeta[p];
    const double below = m > 0 ? int_power(base, m - 1) : std::pow(base, angle_zeta[p] - 1.0);    // base^(zeta-1)
    pa[p] = angle_scale[p] * below * base;
    if (derivative) pda[p] = angle_scale[p] * angle_zeta[p] * angle_lambda[p] * below;
  }
  const int q4 = (int) eta4.size(), q5 = (int) eta5.size();
  for (int q = 0; q < q5; q++) x5[q] = e5[a * q5 + q] * e5[b * q5 + q];
  if (q4 == 0 || r_jk >= cutoff) return false;
  fc_jk = 0.5 * (std::cos(r_jk * PI / cutoff) + 1.0);
  dfc_jk = -0.5 * PI / cutoff * std::sin(r_jk * PI / cutoff);
  for (int q = 0; q < q4; q++) x4[q] = e4[a * q4 + q] * e4[b * q4 + q] * std::exp(-eta4[q] * rjk2);
  return true;
}

/* ---------------------------------------------------------------------- */

void NativeSymmetryFunctions::values(const double *vectors, int n, double *g)
{
  load_edges(vectors, n);
  const int m = (int) er.size(), o2 = n1, o3 = n1 + n2, o4 = o3 + n3, o5 = o4 + n4;
  std::fill(block.begin(), block.end(), 0.0);
  for (int t = 0; t < m; t++) {
    const double r = er[t], fc = efc[t];
    for (int i = 0; i < n1; i++) block[i] += fc;
    for (int i = 0; i < n2; i++) block[o2 + i] += std::exp(-g2_eta[i] * (r - g2_rs[i]) * (r - g2_rs[i])) * fc;
    for (int i = 0; i < n3; i++) block[o3 + i] += std::cos(g3_kappa[i] * r) * fc;
  }
  if (n4 + n5 > 0)
    for (int a = 0; a < m; a++)
      for (int b = a + 1; b < m; b++) {
        double c, r_jk, fc_jk = 0.0, dfc_jk;
        const bool with_g4 = pair_factors(a, b, false, c, r_jk, fc_jk, dfc_jk);
        const double f5 = efc[a] * efc[b];
        if (with_g4) {
          const double f4 = f5 * fc_jk;
          for (int k = 0; k < n4; k++) block[o4 + k] += pa[g4_angle[k]] * x4[g4_eta[k]] * f4;
        }
        for (int k = 0; k < n5; k++) block[o5 + k] += pa[g5_angle[k]] * x5[g5_eta[k]] * f5;
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
    const double x = r - g2_rs[i], ex = std::exp(-g2_eta[i] * x * x);
    s += beta[n1 + i] * ex * (dfc - 2.0 * g2_eta[i] * x * fc);
  }
  for (int i = 0; i < n3; i++) {
    const double kr = g3_kappa[i] * r;
    s += beta[n1 + n2 + i] * (std::cos(kr) * dfc - g3_kappa[i] * std::sin(kr) * fc);
  }
  return s;
}

/* ---------------------------------------------------------------------- */

void NativeSymmetryFunctions::edge_gradients(const double *vectors, int n, const double *beta, double *g)
{
  load_edges(vectors, n);
  for (int i = 0; i < n_functions; i++) beta_block[i] = beta[kliff_column[i]];
  const int m = (int) er.size(), o4 = n1 + n2 + n3, o5 = o4 + n4;
  const double *b4 = &beta_block[o4], *b5 = &beta_block[o5];
  grad_a.assign(3 * m, 0.0);    // dE/dv of the counted edges

  for (int t = 0; t < m; t++) {
    const double s = radial_gradient(t, beta_block.data()) * einv[t];
    for (int x = 0; x < 3; x++) grad_a[3 * t + x] += s * ev[3 * t + x];
  }
  if (n4 + n5 > 0)
    for (int a = 0; a < m; a++)
      for (int b = a + 1; b < m; b++) {
        double c, r_jk, fc_jk = 0.0, dfc_jk = 0.0;
        const bool with_g4 = pair_factors(a, b, true, c, r_jk, fc_jk, dfc_jk);
        const double fa = efc[a], fb = efc[b], dfa = edfc[a], dfb = edfc[b];
        const double ra = er[a], rb = er[b];
        double de_dc = 0.0, de_dra = 0.0, de_drb = 0.0, de_drjk = 0.0;
        if (with_g4) {
          double s = 0.0, t = 0.0, t_eta = 0.0;
          for (int k = 0; k < n4; k++) {
            const int p = g4_angle[k], q = g4_eta[k];
            const double wx = b4[k] * x4[q], wt = wx * pa[p];
            s += wx * pda[p];
            t += wt;
            t_eta += wt * eta4[q];
          }
          const double f4 = fa * fb * fc_jk;
          de_dc += s * f4;
          de_dra += t * dfa * fb * fc_jk - 2.0 * ra * t_eta * f4;
          de_drb += t * fa * dfb * fc_jk - 2.0 * rb * t_eta * f4;
          de_drjk += t * fa * fb * dfc_jk - 2.0 * r_jk * t_eta * f4;
        }
        if (n5 > 0) {
          double s = 0.0, t = 0.0, t_eta = 0.0;
          for (int k = 0; k < n5; k++) {
            const int p = g5_angle[k], q = g5_eta[k];
            const double wx = b5[k] * x5[q], wt = wx * pa[p];
            s += wx * pda[p];
            t += wt;
            t_eta += wt * eta5[q];
          }
          const double f5 = fa * fb;
          de_dc += s * f5;
          de_dra += t * dfa * fb - 2.0 * ra * t_eta * f5;
          de_drb += t * fa * dfb - 2.0 * rb * t_eta * f5;
        }
        const double *va = &ev[3 * a], *vb = &ev[3 * b];
        const double ia = einv[a], ib = einv[b], ijk = with_g4 ? de_drjk / r_jk : 0.0;
        for (int x = 0; x < 3; x++) {
          const double ua = va[x] * ia, ub = vb[x] * ib, djk = (vb[x] - va[x]) * ijk;
          grad_a[3 * a + x] += de_dra * ua + de_dc * (ub - c * ua) * ia - djk;
          grad_a[3 * b + x] += de_drb * ub + de_dc * (ua - c * ub) * ib + djk;
        }
      }

  std::fill(g, g + 3 * n, 0.0);
  for (int t = 0; t < m; t++)
    for (int x = 0; x < 3; x++) g[3 * edge_index[t] + x] = grad_a[3 * t + x];
}
