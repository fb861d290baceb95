/* ----------------------------------------------------------------------
   NativeBispectrum: see native_bispectrum.h. The maths follows
   eip2nn/nn/bispectrum_torch.py line by line (same tables, same order of
   operations where it matters), so values agree with TorchScript to round-off.
------------------------------------------------------------------------- */

#include "native_bispectrum.h"

#include <cmath>
#include <stdexcept>
#include <string>

using eip2nn::NativeBispectrum;

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
  terms.resize(n_terms);
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
    terms[t] = {(int32_t) idx[1], (int32_t) idx[2], pc[t]};
    if (groups.empty() || groups.back().j != idx[0] || groups.back().component != pk[t])
      groups.push_back({(int32_t) idx[0], (int32_t) pk[t], (int32_t) t, (int32_t) t});
    groups.back().last = (int32_t) t + 1;
  }

  edge_re.assign(n_u, 0.0);
  edge_im.assign(n_u, 0.0);
  adj_re.assign(n_u, 0.0);
  adj_im.assign(n_u, 0.0);
  folded_re.assign(n_u, 0.0);
  folded_im.assign(n_u, 0.0);
}

/* ----------------------------------------------------------------------
   theta0 = (r - rmin0) rfac0 pi / (rc - rmin0), z0 = r / tan(theta0),
   r0 = sqrt(r^2 + z0^2); (ar + i ai, br + i bi) = ((z0 + i z) / r0, (y + i x) / r0);
   f_c = (cos(pi (r - rmin0) / (rc - rmin0)) + 1) / 2 (1 for r <= rmin0)
------------------------------------------------------------------------- */

bool NativeBispectrum::edge_geometry(const double *v, bool derivatives)
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
  ar = z0 * inv;
  ai = z * inv;
  br = y * inv;
  bi = x * inv;
  const double phase = (r - rmin0) * (PI / (cutoff - rmin0));
  fc = r <= rmin0 ? 1.0 : 0.5 * (std::cos(phase) + 1.0);
  if (!derivatives) return true;

  const double sin0 = std::sin(theta0);
  const double dz0_dr = 1.0 / tan0 - r * rscale0 / (sin0 * sin0);
  const double dr0_dr = (r + z0 * dz0_dr) * inv;
  const double dfc_dr = r <= rmin0 ? 0.0 : -0.5 * (PI / (cutoff - rmin0)) * std::sin(phase);
  for (int k = 0; k < 3; k++) {
    const double dr = v[k] / r;    // dr/dv_k
    const double dinv = -inv * inv * dr0_dr * dr;
    dar[k] = dz0_dr * dr * inv + z0 * dinv;
    dai[k] = (k == 2 ? inv : 0.0) + z * dinv;
    dbr[k] = (k == 1 ? inv : 0.0) + y * dinv;
    dbi[k] = (k == 0 ? inv : 0.0) + x * dinv;
    dfc[k] = dfc_dr * dr;
  }
  return true;
}

/* ----------------------------------------------------------------------
   U^0 = 1; rows 2m' <= j of U^j:
   U^j[m', m] = ca[m', m] (a U^{j-1}[m', m]) - cb[m', m] (b U^{j-1}[m', m-1])
   (terms outside U^{j-1} are 0), with complex products of a = ar + i ai,
   b = br + i bi; for odd j < twojmax also row (j+1)/2 (U^{j+1} reads it),
   the mirror of row (j-1)/2: U^j[j-m', j-m] = (-1)^(m'+m) conj(U^j[m', m])
------------------------------------------------------------------------- */

void NativeBispectrum::edge_wigner()
{
  double *ure = edge_re.data(), *uim = edge_im.data();
  ure[0] = 1.0;
  uim[0] = 0.0;
  for (int j = 1; j <= two_jmax; j++) {
    const int rows = j / 2 + 1, prev = u_offset[j - 1], cur = u_offset[j];
    const double *ca = coef_a.data() + coef_offset[j], *cb = coef_b.data() + coef_offset[j];
    for (int mb = 0; mb < rows; mb++) {
      for (int ma = 0; ma <= j; ma++) {
        double re = 0.0, im = 0.0;
        if (ma < j) {
          const double c = ca[mb * (j + 1) + ma];
          const int p = prev + mb * j + ma;
          re = c * (ar * ure[p] - ai * uim[p]);
          im = c * (ar * uim[p] + ai * ure[p]);
        }
        if (ma > 0) {
          const double c = cb[mb * (j + 1) + ma];
          const int q = prev + mb * j + ma - 1;
          re -= c * (br * ure[q] - bi * uim[q]);
          im -= c * (br * uim[q] + bi * ure[q]);
        }
        const int out = cur + mb * (j + 1) + ma;
        ure[out] = re;
        uim[out] = im;
      }
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
   U^j of the current edge (folded_re, folded_im), dE/d(ar, ai, br, bi).
   adj holds dE/dU^j (top rows, and row (j+1)/2 of odd j, which U^{j+1} read);
   j runs down: first the mirror row of U^j goes back onto the row it copies,
   then each top entry U^j[m', m] passes its adjoint A = (A_re, A_im) to the
   inputs of its two products, ca a p and -cb b q (p = U^{j-1}[m', m],
   q = U^{j-1}[m', m-1]): for c x y, dE/dx = c (A_re y_re + A_im y_im,
   A_im y_re - A_re y_im), and the same with x and y swapped
------------------------------------------------------------------------- */

void NativeBispectrum::edge_wigner_backward(double grad_ab[4])
{
  const double *ure = edge_re.data(), *uim = edge_im.data();
  double *are = adj_re.data(), *aim = adj_im.data();
  for (int j = 0; j <= two_jmax; j++) {
    const int cur = u_offset[j], top = cur + (j / 2 + 1) * (j + 1);
    for (int i = cur; i < top; i++) {
      are[i] = folded_re[i];
      aim[i] = folded_im[i];
    }
    for (int i = top; i < cur + (j + 1) * (j + 1); i++) are[i] = aim[i] = 0.0;
  }
  double gar = 0.0, gai = 0.0, gbr = 0.0, gbi = 0.0;
  for (int j = two_jmax; j >= 1; j--) {
    const int rows = j / 2 + 1, prev = u_offset[j - 1], cur = u_offset[j];
    if (j % 2 == 1 && j < two_jmax) {
      const int mb = rows, mirror = j - mb;
      const double *sign = signs.data() + sign_offset[j];
      for (int ma = 0; ma <= j; ma++) {
        const int out = cur + mb * (j + 1) + ma, in = cur + mirror * (j + 1) + (j - ma);
        const double s = sign[mb * (j + 1) + ma];
        are[in] += s * are[out];
        aim[in] -= s * aim[out];
      }
    }
    const double *ca = coef_a.data() + coef_offset[j], *cb = coef_b.data() + coef_offset[j];
    for (int mb = 0; mb < rows; mb++) {
      for (int ma = 0; ma <= j; ma++) {
        const int out = cur + mb * (j + 1) + ma;
        const double a_re = are[out], a_im = aim[out];
        if (ma < j) {
          // re = c (ar pr - ai pi), im = c (ar pi + ai pr)
          const double c = ca[mb * (j + 1) + ma];
          const int p = prev + mb * j + ma;
          const double pr = ure[p], pi = uim[p];
          gar += c * (a_re * pr + a_im * pi);
          gai += c * (a_im * pr - a_re * pi);
          are[p] += c * (a_re * ar + a_im * ai);
          aim[p] += c * (a_im * ar - a_re * ai);
        }
        if (ma > 0) {
          // re -= c (br qr - bi qi), im -= c (br qi + bi qr)
          const double c = cb[mb * (j + 1) + ma];
          const int q = prev + mb * j + ma - 1;
          const double qr = ure[q], qi = uim[q];
          gbr -= c * (a_re * qr + a_im * qi);
          gbi -= c * (a_im * qr - a_re * qi);
          are[q] -= c * (a_re * br + a_im * bi);
          aim[q] -= c * (a_im * br - a_re * bi);
        }
      }
    }
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
   U_i = u_start + sum_edges f_c U^j (top rows accumulated, the rest mirrored)
------------------------------------------------------------------------- */

void NativeBispectrum::density(const double *vectors, int n, double *u)
{
  double *re = u, *im = u + n_u;
  for (int i = 0; i < 2 * n_u; i++) u[i] = 0.0;
  for (int e = 0; e < n; e++) {
    if (!edge_geometry(vectors + 3 * e, false)) continue;
    edge_wigner();
    for (int j = 0; j <= two_jmax; j++) {
      const int first = u_offset[j], last = first + (j / 2 + 1) * (j + 1);
      for (int i = first; i < last; i++) {
        re[i] += fc * edge_re[i];
        im[i] += fc * edge_im[i];
      }
    }
  }
  mirror_density(u);
  for (int i = 0; i < 2 * n_u; i++) u[i] += u_start[i];
}

/* ----------------------------------------------------------------------
   B_k = sum_terms coef (Re u_j Re(u_j1 u_j2) + Im u_j Im(u_j1 u_j2)) [- bzero_k],
   the products summed per group first (z), then one dot with u_j
------------------------------------------------------------------------- */

void NativeBispectrum::components(const double *u, double *b) const
{
  const double *re = u, *im = u + n_u;
  for (int k = 0; k < n_components; k++) b[k] = 0.0;
  const Term *term = terms.data();
  for (const Group &g : groups) {
    double z_re = 0.0, z_im = 0.0;
    for (int t = g.first; t < g.last; t++) {
      const double c = term[t].coef;
      const double r1 = re[term[t].j1], i1 = im[term[t].j1], r2 = re[term[t].j2], i2 = im[term[t].j2];
      z_re += c * (r1 * r2 - i1 * i2);
      z_im += c * (r1 * i2 + i1 * r2);
    }
    b[g.component] += re[g.j] * z_re + im[g.j] * z_im;
  }
  if (bzero)
    for (int k = 0; k < n_components; k++) b[k] -= bzero_values[k];
}

/* ----------------------------------------------------------------------
   Y = d(sum_k beta_k B_k)/d(Re U_i, Im U_i): each term's partial derivatives
   with respect to its six real inputs (u_j's summed per group)
------------------------------------------------------------------------- */

void NativeBispectrum::adjoint(const double *u, const double *beta, double *y) const
{
  const double *re = u, *im = u + n_u;
  double *yre = y, *yim = y + n_u;
  for (int i = 0; i < 2 * n_u; i++) y[i] = 0.0;
  const Term *term = terms.data();
  for (const Group &g : groups) {
    const double w = beta[g.component];
    const double wr = w * re[g.j], wi = w * im[g.j];    // beta conj(u_j): the weight of u_j1 u_j2
    double z_re = 0.0, z_im = 0.0;
    for (int t = g.first; t < g.last; t++) {
      const double c = term[t].coef;
      const int j1 = term[t].j1, j2 = term[t].j2;
      const double r1 = re[j1], i1 = im[j1], r2 = re[j2], i2 = im[j2];
      z_re += c * (r1 * r2 - i1 * i2);
      z_im += c * (r1 * i2 + i1 * r2);
      yre[j1] += c * (wr * r2 + wi * i2);
      yim[j1] += c * (wi * r2 - wr * i2);
      yre[j2] += c * (wr * r1 + wi * i1);
      yim[j2] += c * (wi * r1 - wr * i1);
    }
    yre[g.j] += w * z_re;
    yim[g.j] += w * z_im;
  }
}

/* ----------------------------------------------------------------------
   dE/dv = sum over U_i's entries of Y . d(f_c U^j)/dv, with Y folded onto the
   top rows (a bottom entry is s conj(top entry): its Re adds s Y_re, its Im -s Y_im)
------------------------------------------------------------------------- */

void NativeBispectrum::edge_gradients(const double *vectors, int n, const double *y, double *g)
{
  const double *yre = y, *yim = y + n_u;
  for (int j = 0; j <= two_jmax; j++) {
    const int rows = j / 2 + 1, cur = u_offset[j];
    const double *sign = j > 0 ? signs.data() + sign_offset[j] : nullptr;
    for (int i = cur; i < cur + rows * (j + 1); i++) {
      folded_re[i] = yre[i];
      folded_im[i] = yim[i];
    }
    for (int mb = rows; mb <= j; mb++)
      for (int ma = 0; ma <= j; ma++) {
        const int bottom = cur + mb * (j + 1) + ma, top = cur + (j - mb) * (j + 1) + (j - ma);
        const double s = sign[mb * (j + 1) + ma];
        folded_re[top] += s * yre[bottom];
        folded_im[top] -= s * yim[bottom];
      }
  }

  for (int e = 0; e < n; e++) {
    double *ge = g + 3 * e;
    ge[0] = ge[1] = ge[2] = 0.0;
    if (!edge_geometry(vectors + 3 * e, true)) continue;
    edge_wigner();
    double value = 0.0;    // sum of w . U over the top rows: dE/df_c
    for (int j = 0; j <= two_jmax; j++) {
      const int first = u_offset[j], last = first + (j / 2 + 1) * (j + 1);
      for (int i = first; i < last; i++) value += folded_re[i] * edge_re[i] + folded_im[i] * edge_im[i];
    }
    double grad_ab[4];    // dE/d(ar, ai, br, bi) / f_c
    edge_wigner_backward(grad_ab);
    for (int k = 0; k < 3; k++)
      ge[k] = dfc[k] * value +
          fc * (grad_ab[0] * dar[k] + grad_ab[1] * dai[k] + grad_ab[2] * dbr[k] + grad_ab[3] * dbi[k]);
  }
}
