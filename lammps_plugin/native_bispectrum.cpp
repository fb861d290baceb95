/* ----------------------------------------------------------------------
   NativeBispectrum: see native_bispectrum.h. The maths follows
   eip2nn/nn/bispectrum_torch.py line by line (same tables, same order of
   operations where it matters), so values agree with TorchScript to round-off.
------------------------------------------------------------------------- */

#include "native_bispectrum.h"
#include "simd_clones.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <unordered_map>

using eip2nn::EdgeLanes;
using eip2nn::Lanes;
using eip2nn::NativeBispectrum;
using eip2nn::EDGE_LANES;
using eip2nn::LANES;

// the hot loops: SIMD_CLONES (simd_clones.h)

namespace {

const double PI = 3.14159265358979323846;

std::runtime_error table_error(const std::string &what)
{
  return std::runtime_error("bispectrum tables of the model (backbone.descriptor): " + what);
}

c10::IValue attribute(const torch::jit::Module &m, const std::string &name)
{
  if (!m.hasattr(name)) throw table_error("no attribute '" + name + "'");
  return m.attr(name);
}

double attribute_double(const torch::jit::Module &m, const std::string &name)
{
  c10::IValue v = attribute(m, name);
  if (!v.isDouble()) throw table_error("'" + name + "' is not a float");
  return v.toDouble();
}

int attribute_int(const torch::jit::Module &m, const std::string &name)
{
  c10::IValue v = attribute(m, name);
  if (!v.isInt()) throw table_error("'" + name + "' is not an int");
  return (int) v.toInt();
}

// a 1-D copy of buffer `name` (any shape, flattened) in float64 or int64, of `size` entries
torch::Tensor buffer(const torch::jit::Module &m, const std::string &name, int64_t size, bool integer)
{
  c10::IValue v = attribute(m, name);
  if (!v.isTensor()) throw table_error("'" + name + "' is not a tensor");
  torch::Tensor t = v.toTensor();
  if (integer != !t.is_floating_point())
    throw table_error("'" + name + "' has dtype " + std::string(c10::toString(t.scalar_type())));
  if (t.numel() != size)
    throw table_error("'" + name + "' has " + std::to_string(t.numel()) + " entries, expected " +
                      std::to_string(size));
  return t.reshape({-1}).to(integer ? torch::kInt64 : torch::kFloat64).contiguous();
}

// a buffer of doubles (entry-major, LANES or EDGE_LANES per entry) as vectors
eip2nn::Lanes *lanes(std::vector<double> &buffer)
{
  return reinterpret_cast<eip2nn::Lanes *>(buffer.data());
}

eip2nn::EdgeLanes *edge_lanes(std::vector<double> &buffer)
{
  return reinterpret_cast<eip2nn::EdgeLanes *>(buffer.data());
}

std::vector<double> doubles(const torch::Tensor &t)
{
  const double *p = t.data_ptr<double>();
  return std::vector<double>(p, p + t.numel());
}

}    // namespace

/* ---------------------------------------------------------------------- */

NativeBispectrum::NativeBispectrum(const torch::jit::Module &m)
{
  cutoff = attribute_double(m, "cutoff");
  rfac0 = attribute_double(m, "rfac0");
  rmin0 = attribute_double(m, "rmin0");
  c10::IValue flag = attribute(m, "bzero");
  if (!flag.isBool()) throw table_error("'bzero' is not a bool");
  bzero = flag.toBool();
  two_jmax = attribute_int(m, "twojmax");
  n_u = attribute_int(m, "n_u");
  n_components = attribute_int(m, "size");
  if (two_jmax < 0 || !(0.0 <= rmin0 && rmin0 < cutoff) || !(0.0 < rfac0 && rfac0 <= 1.0))
    throw table_error("twojmax " + std::to_string(two_jmax) + ", rmin0 " + std::to_string(rmin0) +
                      ", cutoff " + std::to_string(cutoff) + ", rfac0 " + std::to_string(rfac0) +
                      " out of range");

  u_offset.assign(two_jmax + 2, 0);
  coef_offset.assign(two_jmax + 2, 0);
  sign_offset.assign(two_jmax + 2, 0);
  for (int j = 0; j <= two_jmax; j++) {
    u_offset[j + 1] = u_offset[j] + (j + 1) * (j + 1);
    // coef_a, coef_b and signs hold j = 1 ... twojmax (U^0 = 1 needs none)
    coef_offset[j + 1] = coef_offset[j] + (j == 0 ? 0 : (j / 2 + 1) * (j + 1));
    sign_offset[j + 1] = sign_offset[j] + (j == 0 ? 0 : (j + 1) * (j + 1));
  }
  if (n_u != u_offset[two_jmax + 1])
    throw table_error("n_u " + std::to_string(n_u) + " does not match twojmax " + std::to_string(two_jmax));

  coef_a = doubles(buffer(m, "coef_a", coef_offset[two_jmax + 1], false));
  coef_b = doubles(buffer(m, "coef_b", coef_offset[two_jmax + 1], false));
  signs = doubles(buffer(m, "signs", sign_offset[two_jmax + 1], false));
  u_start = doubles(buffer(m, "u_start", 2 * (int64_t) n_u, false));
  bzero_values = doubles(buffer(m, "bzero_values", n_components, false));

  c10::IValue coef_value = attribute(m, "term_coef");
  if (!coef_value.isTensor()) throw table_error("'term_coef' is not a tensor");
  const int64_t n_terms = coef_value.toTensor().numel();
  torch::Tensor coef = buffer(m, "term_coef", n_terms, false);
  torch::Tensor rows = buffer(m, "term_rows", 6 * n_terms, true);
  torch::Tensor component = buffer(m, "term_component", n_terms, true);
  const int64_t *pr = rows.data_ptr<int64_t>(), *pk = component.data_ptr<int64_t>();
  const double *pc = coef.data_ptr<double>();
  // a group's terms c u[j1] u[j2] and c' u[j2] u[j1] (or twice the same pair) are one, (c + c') u[j1] u[j2]:
  // at twojmax 8 the 16,804 terms are 13,544 (the Clebsch-Gordan couplings of j1 = j2 come in swapped pairs)
  std::unordered_map<int64_t, int32_t> pair_term;    // this group's (smaller j, larger j) -> its term
  terms.reserve(n_terms);
  for (int64_t t = 0; t < n_terms; t++) {
    int64_t idx[3];
    for (int block = 0; block < 3; block++) {
      // blocks: Re u_j, Im u_j, Re u_j1, Im u_j1, Re u_j2, Im u_j2 of the real-then-imaginary U_i
      const int64_t re = pr[(2 * block) * n_terms + t], im = pr[(2 * block + 1) * n_terms + t];
      if (re < 0 || re >= n_u || im != re + n_u)
        throw table_error("term_rows entry of term " + std::to_string(t) + " is not a (real, imaginary) "
                          "pair of U_i rows");
      idx[block] = re;
    }
    if (pk[t] < 0 || pk[t] >= n_components)
      throw table_error("term_component of term " + std::to_string(t) + " is out of range");
    if (groups.empty() || groups.back().j != idx[0] || groups.back().component != pk[t]) {
      const int32_t next = (int32_t) terms.size();
      groups.push_back({(int32_t) idx[0], (int32_t) pk[t], next, next});
      pair_term.clear();
    }
    const int64_t pair = std::min(idx[1], idx[2]) * n_u + std::max(idx[1], idx[2]);
    auto found = pair_term.find(pair);
    if (found != pair_term.end()) {
      terms[found->second].coef += pc[t];
    } else {
      pair_term.emplace(pair, (int32_t) terms.size());
      terms.push_back({(int32_t) idx[1], (int32_t) idx[2], pc[t]});
    }
    groups.back().last = (int32_t) terms.size();
  }

  // per-edge U^j: top rows, and for odd j < twojmax the first bottom row, which U^{j+1} reads
  edge_offset.assign(two_jmax + 2, 0);
  int widest = 1;
  for (int j = 0; j <= two_jmax; j++) {
    const int stored = (j / 2 + 1 + (j % 2 == 1 && j < two_jmax ? 1 : 0)) * (j + 1);
    edge_offset[j + 1] = edge_offset[j] + stored;
    widest = std::max(widest, stored);
  }
  edge_re.assign((size_t) edge_offset[two_jmax + 1] * EDGE_LANES, 0.0);
  edge_im.assign(edge_re.size(), 0.0);
  for (auto *level : {&adj_re, &adj_im, &adj_prev_re, &adj_prev_im})
    level->assign((size_t) widest * EDGE_LANES, 0.0);
  density_lanes.assign(2 * (size_t) n_u * EDGE_LANES, 0.0);
  density_atom.assign(2 * (size_t) n_u, 0.0);
  b_lanes.assign((size_t) n_components * LANES, 0.0);
  beta_lanes.assign((size_t) n_components * LANES, 0.0);
  geometry.resize(EDGE_LANES);
  folded_re.assign(n_u, 0.0);
  folded_im.assign(n_u, 0.0);
}

/* ----------------------------------------------------------------------
   theta0 = (r - rmin0) rfac0 pi / (rc - rmin0), z0 = r / tan(theta0),
   r0 = sqrt(r^2 + z0^2); (ar + i ai, br + i bi) = ((z0 + i z) / r0, (y + i x) / r0);
   f_c = (cos(pi (r - rmin0) / (rc - rmin0)) + 1) / 2 (1 for r <= rmin0)
------------------------------------------------------------------------- */

bool NativeBispectrum::edge_geometry(const double *v, bool derivatives, EdgeGeometry &edge) const
{
  const double x = v[0], y = v[1], z = v[2];
  const double r = std::sqrt(x * x + y * y + z * z);
  if (!(r < cutoff && r > 1e-10)) return false;
  const double rscale0 = rfac0 * PI / (cutoff - rmin0);
  const double theta0 = (r - rmin0) * rscale0;
  const double tan0 = std::tan(theta0);
  const double z0 = r / tan0;
  const double r0 = std::sqrt(r * r + z0 * z0);
  const double inv = 1.0 / r0;
  edge.ar = z0 * inv;
  edge.ai = z * inv;
  edge.br = y * inv;
  edge.bi = x * inv;
  const double phase = (r - rmin0) * (PI / (cutoff - rmin0));
  edge.fc = r <= rmin0 ? 1.0 : 0.5 * (std::cos(phase) + 1.0);
  if (!derivatives) return true;

  const double sin0 = std::sin(theta0);
  const double dz0_dr = 1.0 / tan0 - r * rscale0 / (sin0 * sin0);
  const double dr0_dr = (r + z0 * dz0_dr) * inv;
  const double dfc_dr = r <= rmin0 ? 0.0 : -0.5 * (PI / (cutoff - rmin0)) * std::sin(phase);
  for (int k = 0; k < 3; k++) {
    const double dr = v[k] / r;    // dr/dv_k
    const double dinv = -inv * inv * dr0_dr * dr;
    edge.dar[k] = dz0_dr * dr * inv + z0 * dinv;
    edge.dai[k] = (k == 2 ? inv : 0.0) + z * dinv;
    edge.dbr[k] = (k == 1 ? inv : 0.0) + y * dinv;
    edge.dbi[k] = (k == 0 ? inv : 0.0) + x * dinv;
    edge.dfc[k] = dfc_dr * dr;
  }
  return true;
}

/* ---------------------------------------------------------------------- */

void NativeBispectrum::load_lanes(const EdgeGeometry *edges, int count)
{
  ar = ai = br = bi = fc = EdgeLanes{};
  for (int l = 0; l < count; l++) {
    ar[l] = edges[l].ar;
    ai[l] = edges[l].ai;
    br[l] = edges[l].br;
    bi[l] = edges[l].bi;
    fc[l] = edges[l].fc;
  }
}

/* ----------------------------------------------------------------------
   U^0 = 1; rows 2m' <= j of U^j:
   U^j[m', m] = ca[m', m] (a U^{j-1}[m', m]) - cb[m', m] (b U^{j-1}[m', m-1])
   (terms outside U^{j-1} are 0), with complex products of a = ar + i ai,
   b = br + i bi; for odd j < twojmax also row (j+1)/2 (U^{j+1} reads it),
   the mirror of row (j-1)/2: U^j[j-m', j-m] = (-1)^(m'+m) conj(U^j[m', m]).
   visit(i, re, im) sees each top entry once, i its index among U_i's n_u.
   Inlined into its callers, so that it is compiled for their SIMD clone.
------------------------------------------------------------------------- */

template <class Visit> inline __attribute__((always_inline)) void NativeBispectrum::edge_wigner(Visit &&visit)
{
  EdgeLanes *ure = edge_lanes(edge_re), *uim = edge_lanes(edge_im);
  const EdgeLanes ar = this->ar, ai = this->ai, br = this->br, bi = this->bi;    // in registers: the
                                                                                 // stores may alias members
  ure[0] = EdgeLanes{} + 1.0;
  uim[0] = EdgeLanes{};
  visit(0, ure[0], uim[0]);
  for (int j = 1; j <= two_jmax; j++) {
    const int rows = j / 2 + 1, prev = edge_offset[j - 1], cur = edge_offset[j];
    const double *ca = coef_a.data() + coef_offset[j], *cb = coef_b.data() + coef_offset[j];
    for (int mb = 0; mb < rows; mb++) {
      const double *cam = ca + mb * (j + 1), *cbm = cb + mb * (j + 1);
      const EdgeLanes *pre = ure + prev + mb * j, *pim = uim + prev + mb * j;    // row mb of U^{j-1}
      EdgeLanes *out_re = ure + cur + mb * (j + 1), *out_im = uim + cur + mb * (j + 1);
      const int full = u_offset[j] + mb * (j + 1);
      // m = 0: the a term only; m = j: the b term only
      out_re[0] = cam[0] * (ar * pre[0] - ai * pim[0]);
      out_im[0] = cam[0] * (ar * pim[0] + ai * pre[0]);
      visit(full, out_re[0], out_im[0]);
      for (int ma = 1; ma < j; ma++) {
        EdgeLanes re = cam[ma] * (ar * pre[ma] - ai * pim[ma]);
        EdgeLanes im = cam[ma] * (ar * pim[ma] + ai * pre[ma]);
        re -= cbm[ma] * (br * pre[ma - 1] - bi * pim[ma - 1]);
        im -= cbm[ma] * (br * pim[ma - 1] + bi * pre[ma - 1]);
        out_re[ma] = re;
        out_im[ma] = im;
        visit(full + ma, re, im);
      }
      out_re[j] = -(cbm[j] * (br * pre[j - 1] - bi * pim[j - 1]));
      out_im[j] = -(cbm[j] * (br * pim[j - 1] + bi * pre[j - 1]));
      visit(full + j, out_re[j], out_im[j]);
    }
    if (j % 2 == 1 && j < two_jmax) {
      const int mb = rows, mirror = j - mb;
      const double *sign = signs.data() + sign_offset[j];
      for (int ma = 0; ma <= j; ma++) {
        const int out = cur + mb * (j + 1) + ma, in = cur + mirror * (j + 1) + (j - ma);
        const double s = sign[mb * (j + 1) + ma];
        ure[out] = s * ure[in];
        uim[out] = -s * uim[in];
      }
    }
  }
}

/* ----------------------------------------------------------------------
   reverse mode through edge_wigner: given w = dE/dU on the top rows of every
   U^j (folded_re, folded_im, the same for every lane), dE/d(ar, ai, br, bi).
   The adjoint dE/dU^j of one level at a time (top rows, and row (j+1)/2 of
   odd j, which U^{j+1} read); j runs down: first the mirror row of U^j goes
   back onto the row it copies, then each top entry U^j[m', m] passes its
   adjoint A = (A_re, A_im) to the inputs of its two products, ca a p and
   -cb b q (p = U^{j-1}[m', m], q = U^{j-1}[m', m-1]): for c x y,
   dE/dx = c (A_re y_re + A_im y_im, A_im y_re - A_re y_im), and the same with
   x and y swapped. U^{j-1}[m', m] gets its a part from U^j[m', m] and then
   its b part from U^j[m', m+1]: the sum is carried in registers and stored
   once. Needs edge_wigner's U^j of these edges.
------------------------------------------------------------------------- */

inline __attribute__((always_inline)) void NativeBispectrum::edge_wigner_backward(EdgeLanes grad_ab[4])
{
  const EdgeLanes *ure = edge_lanes(edge_re), *uim = edge_lanes(edge_im);
  const EdgeLanes ar = this->ar, ai = this->ai, br = this->br, bi = this->bi;
  EdgeLanes *cur_re = edge_lanes(adj_re), *cur_im = edge_lanes(adj_im);
  EdgeLanes *prev_re = edge_lanes(adj_prev_re), *prev_im = edge_lanes(adj_prev_im);
  // level j's adjoint before U^{j+1} adds to it: w on the top rows, 0 on the mirror row
  auto start_level = [&](int j, EdgeLanes *level_re, EdgeLanes *level_im) {
    const int top = (j / 2 + 1) * (j + 1);
    for (int i = 0; i < top; i++) {
      level_re[i] = EdgeLanes{} + folded_re[u_offset[j] + i];
      level_im[i] = EdgeLanes{} + folded_im[u_offset[j] + i];
    }
    if (j % 2 == 1 && j < two_jmax)
      for (int i = top; i < top + j + 1; i++) level_re[i] = level_im[i] = EdgeLanes{};
  };
  start_level(two_jmax, cur_re, cur_im);
  EdgeLanes gar{}, gai{}, gbr{}, gbi{};
  for (int j = two_jmax; j >= 1; j--) {
    const int rows = j / 2 + 1;
    if (j % 2 == 1 && j < two_jmax) {
      const int mb = rows, mirror = j - mb;
      const double *sign = signs.data() + sign_offset[j];
      for (int ma = 0; ma <= j; ma++) {
        const int out = mb * (j + 1) + ma, in = mirror * (j + 1) + (j - ma);
        const double s = sign[mb * (j + 1) + ma];
        cur_re[in] += s * cur_re[out];
        cur_im[in] -= s * cur_im[out];
      }
    }
    start_level(j - 1, prev_re, prev_im);
    const double *ca = coef_a.data() + coef_offset[j], *cb = coef_b.data() + coef_offset[j];
    for (int mb = 0; mb < rows; mb++) {
      const double *cam = ca + mb * (j + 1), *cbm = cb + mb * (j + 1);
      const int p0 = edge_offset[j - 1] + mb * j;
      const EdgeLanes *pre = ure + p0, *pim = uim + p0;                           // row mb of U^{j-1}
      EdgeLanes *dre = prev_re + mb * j, *dim = prev_im + mb * j;                 // and its adjoint
      const EdgeLanes *a_re = cur_re + mb * (j + 1), *a_im = cur_im + mb * (j + 1);
      EdgeLanes carry_re{}, carry_im{};    // adjoint of U^{j-1}[mb, ma-1] with its a part added
      for (int ma = 0; ma <= j; ma++) {
        const EdgeLanes A_re = a_re[ma], A_im = a_im[ma];
        if (ma > 0) {
          // re -= c (br qr - bi qi), im -= c (br qi + bi qr), q = U^{j-1}[mb, ma-1]
          const double c = cbm[ma];
          const EdgeLanes qr = pre[ma - 1], qi = pim[ma - 1];
          gbr -= c * (A_re * qr + A_im * qi);
          gbi -= c * (A_im * qr - A_re * qi);
          dre[ma - 1] = carry_re - c * (A_re * br + A_im * bi);
          dim[ma - 1] = carry_im - c * (A_im * br - A_re * bi);
        }
        if (ma < j) {
          // re = c (ar pr - ai pi), im = c (ar pi + ai pr), p = U^{j-1}[mb, ma]
          const double c = cam[ma];
          const EdgeLanes pr = pre[ma], pi = pim[ma];
          gar += c * (A_re * pr + A_im * pi);
          gai += c * (A_im * pr - A_re * pi);
          carry_re = dre[ma] + c * (A_re * ar + A_im * ai);
          carry_im = dim[ma] + c * (A_im * ar - A_re * ai);
        }
      }
    }
    std::swap(cur_re, prev_re);
    std::swap(cur_im, prev_im);
  }
  grad_ab[0] = gar;
  grad_ab[1] = gai;
  grad_ab[2] = gbr;
  grad_ab[3] = gbi;
}

/* ---------------------------------------------------------------------- */

void NativeBispectrum::mirror_density(double *u) const
{
  double *re = u, *im = u + n_u;
  for (int j = 1; j <= two_jmax; j++) {
    const int rows = j / 2 + 1, cur = u_offset[j];
    const double *sign = signs.data() + sign_offset[j];
    for (int mb = rows; mb <= j; mb++)
      for (int ma = 0; ma <= j; ma++) {
        const int out = cur + mb * (j + 1) + ma, in = cur + (j - mb) * (j + 1) + (j - ma);
        const double s = sign[mb * (j + 1) + ma];
        re[out] = s * re[in];
        im[out] = -s * im[in];
      }
  }
}

/* ----------------------------------------------------------------------
   U_i = u_start + sum_edges f_c U^j (top rows accumulated EDGE_LANES edges at
   a time, then the lanes summed; the rest mirrored)
------------------------------------------------------------------------- */

SIMD_CLONES void NativeBispectrum::density(const double *vectors, int n, double *u, int lane)
{
  EdgeLanes *sum_re = edge_lanes(density_lanes), *sum_im = sum_re + n_u;
  for (int j = 0; j <= two_jmax; j++) {
    const int first = u_offset[j], last = first + (j / 2 + 1) * (j + 1);
    for (int i = first; i < last; i++) sum_re[i] = sum_im[i] = EdgeLanes{};
  }
  int e = 0;
  while (e < n) {
    int count = 0;
    for (; e < n && count < EDGE_LANES; e++)
      if (edge_geometry(vectors + 3 * e, false, geometry[count])) count++;
    if (count == 0) break;
    load_lanes(geometry.data(), count);
    const EdgeLanes weight = fc;
    edge_wigner([&](int i, EdgeLanes re, EdgeLanes im) __attribute__((always_inline)) {
      sum_re[i] += weight * re;
      sum_im[i] += weight * im;
    });
  }
  // the lanes' sums on the top rows; the bottom rows mirror them
  double *atom_re = density_atom.data(), *atom_im = atom_re + n_u;
  for (int j = 0; j <= two_jmax; j++) {
    const int first = u_offset[j], last = first + (j / 2 + 1) * (j + 1);
    for (int i = first; i < last; i++) {
      double total_re = 0.0, total_im = 0.0;
      for (int l = 0; l < EDGE_LANES; l++) {
        total_re += sum_re[i][l];
        total_im += sum_im[i][l];
      }
      atom_re[i] = total_re;
      atom_im[i] = total_im;
    }
  }
  mirror_density(atom_re);
  for (int i = 0; i < 2 * n_u; i++) u[i * LANES + lane] = atom_re[i] + u_start[i];
}

/* ----------------------------------------------------------------------
   B_k = sum_terms coef (Re u_j Re(u_j1 u_j2) + Im u_j Im(u_j1 u_j2)) [- bzero_k],
   the products summed per group first (z, kept), then one dot with u_j
------------------------------------------------------------------------- */

SIMD_CLONES void NativeBispectrum::components(const double *u, int count, double *b, double *z)
{
  const Lanes *re = reinterpret_cast<const Lanes *>(u), *im = re + n_u;
  Lanes *sums = reinterpret_cast<Lanes *>(z), *bl = lanes(b_lanes);
  for (int k = 0; k < n_components; k++) bl[k] = Lanes{};
  const Term *term = terms.data();
  for (size_t gi = 0; gi < groups.size(); gi++) {
    const Group &g = groups[gi];
    Lanes z_re{}, z_im{};
    for (int t = g.first; t < g.last; t++) {
      const double c = term[t].coef;
      const Lanes r1 = re[term[t].j1], i1 = im[term[t].j1], r2 = re[term[t].j2], i2 = im[term[t].j2];
      z_re += c * (r1 * r2 - i1 * i2);
      z_im += c * (r1 * i2 + i1 * r2);
    }
    bl[g.component] += re[g.j] * z_re + im[g.j] * z_im;
    sums[2 * gi] = z_re;
    sums[2 * gi + 1] = z_im;
  }
  for (int l = 0; l < count; l++)
    for (int k = 0; k < n_components; k++)
      b[l * n_components + k] = bzero ? bl[k][l] - bzero_values[k] : bl[k][l];
}

/* ----------------------------------------------------------------------
   Y = d(sum_k beta_k B_k)/d(Re U_i, Im U_i): each term's partial derivatives
   with respect to its six real inputs (u_j's summed per group: w z)
------------------------------------------------------------------------- */

SIMD_CLONES void NativeBispectrum::adjoint(const double *u, const double *z, const double *beta, int count, double *y)
{
  const Lanes *re = reinterpret_cast<const Lanes *>(u), *im = re + n_u;
  const Lanes *sums = reinterpret_cast<const Lanes *>(z);
  Lanes *yre = reinterpret_cast<Lanes *>(y), *yim = yre + n_u;
  Lanes *w_of = lanes(beta_lanes);
  for (int k = 0; k < n_components; k++) {
    w_of[k] = Lanes{};
    for (int l = 0; l < count; l++) w_of[k][l] = beta[l * n_components + k];
  }
  for (int i = 0; i < 2 * n_u; i++) yre[i] = Lanes{};
  const Term *term = terms.data();
  for (size_t gi = 0; gi < groups.size(); gi++) {
    const Group &g = groups[gi];
    const Lanes w = w_of[g.component];
    const Lanes wr = w * re[g.j], wi = w * im[g.j];    // beta conj(u_j): the weight of u_j1 u_j2
    for (int t = g.first; t < g.last; t++) {
      const Lanes cwr = term[t].coef * wr, cwi = term[t].coef * wi;
      const int j1 = term[t].j1, j2 = term[t].j2;
      const Lanes r1 = re[j1], i1 = im[j1], r2 = re[j2], i2 = im[j2];
      yre[j1] += cwr * r2 + cwi * i2;
      yim[j1] += cwi * r2 - cwr * i2;
      yre[j2] += cwr * r1 + cwi * i1;
      yim[j2] += cwi * r1 - cwr * i1;
    }
    yre[g.j] += w * sums[2 * gi];
    yim[g.j] += w * sums[2 * gi + 1];
  }
}

/* ----------------------------------------------------------------------
   dE/dv = sum over U_i's entries of Y . d(f_c U^j)/dv, with Y folded onto the
   top rows (a bottom entry is s conj(top entry): its Re adds s Y_re, its Im
   -s Y_im); LANES edges at a time: dE/df_c = w . U, dE/d(a, b) by reverse mode
------------------------------------------------------------------------- */

SIMD_CLONES void NativeBispectrum::edge_gradients(const double *vectors, int n, const double *y, int lane, double *g)
{
  for (int j = 0; j <= two_jmax; j++) {
    const int rows = j / 2 + 1, cur = u_offset[j];
    const double *sign = j > 0 ? signs.data() + sign_offset[j] : nullptr;
    for (int i = cur; i < cur + rows * (j + 1); i++) {
      folded_re[i] = y[i * LANES + lane];
      folded_im[i] = y[(n_u + i) * LANES + lane];
    }
    for (int mb = rows; mb <= j; mb++)
      for (int ma = 0; ma <= j; ma++) {
        const int bottom = cur + mb * (j + 1) + ma, top = cur + (j - mb) * (j + 1) + (j - ma);
        const double s = sign[mb * (j + 1) + ma];
        folded_re[top] += s * y[bottom * LANES + lane];
        folded_im[top] -= s * y[(n_u + bottom) * LANES + lane];
      }
  }

  int edge_of[EDGE_LANES];
  int e = 0;
  while (e < n) {
    int count = 0;
    for (; e < n && count < EDGE_LANES; e++) {
      double *ge = g + 3 * e;
      ge[0] = ge[1] = ge[2] = 0.0;
      if (edge_geometry(vectors + 3 * e, true, geometry[count])) edge_of[count++] = e;
    }
    if (count == 0) break;
    load_lanes(geometry.data(), count);
    EdgeLanes value{};    // sum of w . U over the top rows: dE/df_c
    edge_wigner([&](int i, EdgeLanes re, EdgeLanes im) __attribute__((always_inline)) { value += folded_re[i] * re + folded_im[i] * im; });
    EdgeLanes grad_ab[4];    // dE/d(ar, ai, br, bi) / f_c
    edge_wigner_backward(grad_ab);
    for (int l = 0; l < count; l++) {
      const EdgeGeometry &edge = geometry[l];
      double *ge = g + 3 * edge_of[l];
      for (int k = 0; k < 3; k++)
        ge[k] = edge.dfc[k] * value[l] + edge.fc * (grad_ab[0][l] * edge.dar[k] + grad_ab[1][l] * edge.dai[k] +
                                                   grad_ab[2][l] * edge.dbr[k] + grad_ab[3][l] * edge.dbi[k]);
    }
  }
}
